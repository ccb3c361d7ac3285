//! The cleanup of a deleted Guest: nothing without this object's marker; `Delete` stops and
//! destroys (never a protected guest), `Retain` removes only the marker. The deletion-policy
//! annotation wins over the spec (ADR 0022).

use phoenix_api::kinds::Guest;
use phoenix_api::kinds::common::{DELETION_POLICY_ANNOTATION, DeletionPolicy};
use phoenix_pve::{ConfigUpdate, GuestConfig, GuestRef};
use phoenix_runtime::{Action, Context, ReconcileError, ReconcileResult};
use serde_json::Value;

use super::{GuestReconciler, description, guest_ref};
use crate::classify::classify;
use crate::desired::{self, MANAGED_TAG, marker_uid, normalise_tags, without_marker};

impl GuestReconciler {
    /// Undoes the Guest in PVE by its `deletionPolicy` (see the module documentation).
    pub(super) async fn clean_up(&self, guest: &Guest, ctx: &Context<Guest>) -> ReconcileResult {
        let Some(uid) = guest.metadata.uid.clone() else {
            return Ok(Action::done());
        };
        let vmid = guest
            .status
            .as_ref()
            .and_then(|s| s.vmid)
            .or(guest.spec.vmid);
        let Some(vmid) = vmid else {
            return Ok(Action::done());
        };
        let Some(found) = self
            .pve
            .find_guest(vmid)
            .await
            .map_err(|e| classify("listing /cluster/resources", &e))?
        else {
            return Ok(Action::done());
        };
        let at = guest_ref(&found, vmid)?;
        let config = match self.pve.guest_config(&at, false).await {
            Ok(c) => c,
            Err(e) if e.is_guest_missing() => return Ok(Action::done()),
            Err(e) => return Err(classify(&format!("reading the config of {at}"), &e)),
        };
        if marker_uid(description(&config.values)) != Some(uid.as_str()) {
            ctx.recorder
                .normal(
                    guest,
                    "NotOwned",
                    &format!("{at} does not carry this object's marker; left alone"),
                )
                .await;
            return Ok(Action::done());
        }
        // The annotation (ADR 0022) wins: the spec of an object being deleted cannot change.
        match DeletionPolicy::in_force(&guest.metadata, guest.spec.deletion_policy) {
            DeletionPolicy::Delete => self.destroy(guest, ctx, &at, &config, &uid).await?,
            DeletionPolicy::Retain => self.retain(guest, ctx, &at, &config).await?,
        }
        Ok(Action::done())
    }

    /// `Delete`: stops and destroys (purge) the guest, unless PVE protects it.
    async fn destroy(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        at: &GuestRef,
        config: &GuestConfig,
        uid: &str,
    ) -> Result<(), ReconcileError> {
        let vmid = at.vmid;
        // PVE refuses to destroy a protected guest; stopping it first would only take it down
        // for nothing. Nothing is touched until protection is cleared in PVE (the spec of an
        // object being deleted can no longer be changed).
        if config
            .values
            .get("protection")
            .map(desired::text)
            .as_deref()
            == Some("1")
        {
            return Err(ReconcileError::transient(
                "Protected",
                format!(
                    "{at} has protection enabled in PVE (spec.protection): it is neither stopped nor destroyed; clear protection in PVE (pct/qm set {vmid} --protection 0) and the deletion proceeds, or annotate the Guest {DELETION_POLICY_ANNOTATION}=Retain to keep the guest in PVE and let the object go"
                ),
            ));
        }
        let status = self
            .pve
            .guest_status(at)
            .await
            .map_err(|e| classify(&format!("reading the status of {at}"), &e))?;
        if status.status == "running" {
            self.pve
                .stop_guest(at)
                .await
                .map_err(|e| classify(&format!("stopping {at}"), &e))?;
        }
        let destroyed = self.pve.destroy_guest(at, &Default::default()).await;
        self.inventory.invalidate();
        self.inventory.forget(uid);
        match destroyed {
            Ok(_) => {}
            Err(e) if e.is_guest_missing() => {}
            Err(e) => return Err(classify(&format!("destroying {at}"), &e)),
        }
        ctx.recorder
            .normal(guest, "Destroyed", &format!("{at} stopped and destroyed"))
            .await;
        Ok(())
    }

    /// `Retain`: removes the managed tag and the marker, leaves the guest in place.
    async fn retain(
        &self,
        guest: &Guest,
        ctx: &Context<Guest>,
        at: &GuestRef,
        config: &GuestConfig,
    ) -> Result<(), ReconcileError> {
        let tags = config
            .values
            .get("tags")
            .map(desired::text)
            .unwrap_or_default();
        let kept: Vec<&str> = tags.split(';').filter(|t| *t != MANAGED_TAG).collect();
        let description = without_marker(description(&config.values).unwrap_or(""));
        let mut update = ConfigUpdate {
            digest: config.digest.clone(),
            ..ConfigUpdate::default()
        };
        let tags = normalise_tags(kept);
        if tags.is_empty() {
            update.delete.push("tags".into());
        } else {
            update.set.insert("tags".into(), Value::String(tags));
        }
        if description.trim().is_empty() {
            update.delete.push("description".into());
        } else {
            update
                .set
                .insert("description".into(), Value::String(description));
        }
        self.pve
            .update_guest_config(at, &update)
            .await
            .map_err(|e| classify(&format!("removing the marker of {at}"), &e))?;
        ctx.recorder
            .normal(
                guest,
                "Retained",
                &format!("{at} left in place; marker removed"),
            )
            .await;
        Ok(())
    }
}
