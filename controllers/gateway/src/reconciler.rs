//! The reconcile of one Gateway: resolve backends, gather certificates, render, deliver,
//! report.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_api::ConditionStatus;
use phoenix_api::condition::{Condition, mark_ready, mark_ready_degraded, set_condition};
use phoenix_api::kinds::common::DeletionPolicy;
use phoenix_api::kinds::gateway::GatewayStatus;
use phoenix_api::kinds::{Gateway, Guest, Mesh};
use phoenix_nginx::{
    BackendDirectory, DeliveryError, GatewayInput, GatewayMetrics, Outcome, RenderError,
    ResolveError, SyncError, SyncReport, sync,
};
use phoenix_runtime::{Action, Context, ReconcileError, ReconcileResult, Reconciler};

use crate::backends;
use crate::certs::{self, CertError};
use crate::deletion;
use crate::settings::Settings;
use crate::ssh::SshSettings;
use crate::targets::{TargetError, Targets};

/// Condition type: the last rendered tree was accepted by nginx (`nginx -t` and reload).
pub const CONFIG_VALID: &str = "ConfigValid";

/// Reconciles Gateways into nginx configurations.
#[derive(Debug)]
pub struct GatewayReconciler {
    settings: Settings,
    ssh: SshSettings,
    metrics: GatewayMetrics,
    targets: Targets,
}

impl GatewayReconciler {
    /// A reconciler with the operator's `settings`, recording `metrics`.
    pub fn new(settings: Settings, ssh: SshSettings, metrics: GatewayMetrics) -> Self {
        GatewayReconciler {
            settings,
            ssh,
            metrics,
            targets: Targets::default(),
        }
    }
}

/// The status of a delivered configuration: Ready, ConfigValid=True, and Degraded=True while
/// self-signed certificates serve.
fn converged(
    s: &mut GatewayStatus,
    generation: Option<i64>,
    report: &SyncReport,
    self_signed: &[String],
    reloaded_at: Option<jiff::Timestamp>,
) {
    s.config_hash = Some(report.delivery.hash.clone());
    s.routes = report.routes;
    if reloaded_at.is_some() {
        s.last_reload = reloaded_at;
    }
    let msg = format!("{} routes served", report.routes);
    if self_signed.is_empty() {
        mark_ready(s, generation, "Converged", &msg);
    } else {
        let m = format!(
            "self-signed certificates in use (no tlsSecret, no certificate from the CertificateAuthority): {}",
            self_signed.join(", ")
        );
        mark_ready_degraded(
            s,
            generation,
            "Converged",
            &msg,
            "SelfSignedCertificate",
            &m,
        );
    }
    set_condition(
        &mut s.conditions,
        Condition::new(
            CONFIG_VALID,
            ConditionStatus::True,
            "Accepted",
            "",
            generation,
        ),
    );
}

fn cert_error(e: CertError) -> ReconcileError {
    match e {
        CertError::SecretMissing { .. } => {
            ReconcileError::transient("SecretNotFound", e.to_string())
        }
        CertError::SecretInvalid { .. } => {
            ReconcileError::transient("SecretInvalid", e.to_string())
        }
        CertError::Api { .. } => ReconcileError::transient("ApiUnavailable", e.to_string()),
        CertError::Generate { .. } => ReconcileError::transient("CertificateFailed", e.to_string()),
    }
}

fn target_error(e: TargetError) -> ReconcileError {
    if e.is_spec_error() {
        ReconcileError::invalid("InvalidSpec", e.to_string())
    } else {
        ReconcileError::transient("TargetUnavailable", e.to_string())
    }
}

/// A failed render or delivery as a reconcile error. A rendering the spec causes and a tree
/// nginx refuses carry `ConfigValid=False` (with nginx's own text), written by the runtime
/// with Ready=False; the last good tree keeps serving. Deliveries are retried with backoff (a
/// Guest's address or a Secret may be what nginx refused).
fn sync_error(e: SyncError) -> ReconcileError {
    match e {
        SyncError::Render(e) => {
            let message = e.to_string();
            if matches!(
                &e,
                RenderError::Backend {
                    source: ResolveError::UnknownGuest(_) | ResolveError::UnknownMesh(_),
                    ..
                }
            ) {
                // Not the spec's fault: a Guest or Mesh has no address yet; its watch brings
                // us back.
                return ReconcileError::transient("BackendUnresolved", message);
            }
            ReconcileError::invalid("InvalidSpec", &message).with_condition(
                CONFIG_VALID,
                ConditionStatus::False,
                "RenderFailed",
                &message,
            )
        }
        SyncError::Deliver(e) => {
            let (reason, text) = match &e {
                DeliveryError::Rejected { output, .. } => ("NginxRejected", output.clone()),
                DeliveryError::ReloadFailed { output, .. } => ("ReloadFailed", output.clone()),
                _ => ("DeliveryFailed", String::new()),
            };
            let error = ReconcileError::transient(reason, e.to_string())
                .retry_after(Duration::from_secs(5));
            if text.is_empty() {
                return error;
            }
            error.with_condition(CONFIG_VALID, ConditionStatus::False, reason, &text)
        }
    }
}

/// A Normal event when nginx reloaded onto, or was installed with, a new tree.
async fn announce(ctx: &Context<Gateway>, gateway: &Gateway, report: &SyncReport) {
    let (reason, message) = match report.delivery.outcome {
        Outcome::Unchanged => return,
        Outcome::Reloaded => (
            "Reloaded",
            format!(
                "nginx reloaded onto {} ({} routes, {} bytes)",
                report.delivery.hash, report.routes, report.delivery.bytes
            ),
        ),
        Outcome::Installed => (
            "Installed",
            format!(
                "installed {} ({} routes); nginx is not running and loads it when it starts",
                report.delivery.hash, report.routes
            ),
        ),
    };
    ctx.recorder.normal(gateway, reason, &message).await;
}

#[async_trait]
impl Reconciler for GatewayReconciler {
    type Kind = Gateway;

    async fn reconcile(&self, gateway: Arc<Gateway>, ctx: &Context<Gateway>) -> ReconcileResult {
        let name = gateway.metadata.name.clone();
        let generation = gateway.metadata.generation;
        if !self.settings.delivers(&gateway.spec) {
            // The other side's controller delivers it (see `Settings::local`); nothing here
            // may write its status or touch an nginx.
            tracing::debug!(gateway = %name, local = self.settings.local, "target on the other side; skipped");
            return Ok(Action::done());
        }
        let mut options = self
            .settings
            .render_options(&name, &gateway.spec)
            .map_err(|e| ReconcileError::invalid("InvalidSpec", e.to_string()))?;
        let guests = ctx
            .cache_of::<Guest>()
            .expect("the gateway controller watches Guests");
        let meshes = ctx
            .cache_of::<Mesh>()
            .expect("the gateway controller watches Meshes");
        let directory = backends::directory(&gateway.spec, &guests, &meshes);
        // Before anything is created or written: a Guest or Mesh without an address is not
        // the spec's fault, and its watch brings us back.
        if let Some((field, missing)) = backends::unresolved(&gateway.spec, &directory) {
            return Err(ReconcileError::transient(
                "BackendUnresolved",
                format!("{field}: {missing}"),
            ));
        }
        let certificates = certs::gather(&ctx.client, &gateway)
            .await
            .map_err(cert_error)?;
        options.acme_challenge = certificates.acme_http01;
        for secret in &certificates.created {
            ctx.recorder
                .warning(
                    &*gateway,
                    "SelfSignedCertificate",
                    &format!("generated a self-signed certificate, stored in Secret {secret}"),
                )
                .await;
        }
        let delivery = self
            .targets
            .get(
                &gateway,
                &options,
                &self.settings,
                &self.ssh,
                &ctx.client,
                &guests,
            )
            .await
            .map_err(target_error)?;
        let input = GatewayInput {
            spec: &gateway.spec,
            backends: &directory,
            certificates: &certificates.by_host,
            options: &options,
        };
        let report = sync(&name, &input, &*delivery, &self.metrics)
            .await
            .map_err(sync_error)?;
        let reloaded_at = (report.delivery.outcome == Outcome::Reloaded).then(jiff::Timestamp::now);
        ctx.update_status(&gateway, |s| {
            converged(
                s,
                generation,
                &report,
                &certificates.self_signed,
                reloaded_at,
            )
        })
        .await?;
        announce(ctx, &gateway, &report).await;
        tracing::debug!(gateway = %name, outcome = report.delivery.outcome.as_str(), "reconciled");
        Ok(Action::done())
    }

    /// ADR 0022: `Delete` leaves nginx serving an empty configuration (the default server's
    /// 404), `Retain` leaves it as it is; then the runtime removes this side's finalizer. A
    /// Gateway of the other side is let go at once. An empty configuration that cannot be
    /// delivered fails like a reconcile (status, event, backoff) and keeps the object.
    async fn cleanup(&self, gateway: Arc<Gateway>, ctx: &Context<Gateway>) -> ReconcileResult {
        let name = gateway.metadata.name.clone();
        if !self.settings.delivers(&gateway.spec) {
            return Ok(Action::done());
        }
        if deletion::policy(&gateway) == DeletionPolicy::Retain {
            self.targets.forget(&name);
            ctx.recorder
                .normal(
                    &*gateway,
                    "Retained",
                    "deletionPolicy Retain: nginx keeps serving its configuration",
                )
                .await;
            return Ok(Action::done());
        }
        let empty = deletion::emptied(&gateway.spec);
        let options = self
            .settings
            .render_options(&name, &empty)
            .map_err(|e| ReconcileError::invalid("InvalidSpec", e.to_string()))?;
        let guests = ctx
            .cache_of::<Guest>()
            .expect("the gateway controller watches Guests");
        let delivery = self
            .targets
            .get(
                &gateway,
                &options,
                &self.settings,
                &self.ssh,
                &ctx.client,
                &guests,
            )
            .await
            .map_err(|e| target_error(e).while_deleting("nginx"))?;
        let input = GatewayInput {
            spec: &empty,
            backends: &BackendDirectory::default(),
            certificates: &Default::default(),
            options: &options,
        };
        let report = sync(&name, &input, &*delivery, &self.metrics)
            .await
            .map_err(|e| sync_error(e).while_deleting("nginx"))?;
        self.targets.forget(&name);
        ctx.recorder
            .normal(
                &*gateway,
                "Emptied",
                &format!(
                    "nginx serves an empty configuration {} (404 for every host)",
                    report.delivery.hash
                ),
            )
            .await;
        Ok(Action::done())
    }
}

#[cfg(test)]
mod tests {
    use phoenix_api::condition::find_condition;
    use phoenix_runtime::ErrorKind;

    use super::*;

    fn config_valid(e: &ReconcileError) -> Option<(ConditionStatus, &str, &str)> {
        find_condition(&e.conditions, CONFIG_VALID)
            .map(|c| (c.status, c.reason.as_str(), c.message.as_str()))
    }

    #[test]
    fn render_and_nginx_failures_carry_config_valid_false_others_do_not() {
        let render = sync_error(SyncError::Render(RenderError::MixedSchemes {
            field: "spec.routes[0]".into(),
        }));
        assert_eq!(render.kind, ErrorKind::InvalidSpec);
        assert_eq!(
            config_valid(&render).map(|c| (c.0, c.1)),
            Some((ConditionStatus::False, "RenderFailed"))
        );

        let waiting = sync_error(SyncError::Render(RenderError::Backend {
            field: "spec.routes[0].backends[0]".into(),
            source: ResolveError::UnknownGuest("web".into()),
        }));
        assert_eq!(
            (waiting.kind, waiting.reason.as_str()),
            (ErrorKind::Transient, "BackendUnresolved")
        );
        assert!(waiting.conditions.is_empty(), "not the config's fault");

        let rejected = sync_error(SyncError::Deliver(DeliveryError::Rejected {
            hash: "h".into(),
            output: "nginx: [emerg] bad".into(),
        }));
        assert_eq!(
            (rejected.kind, rejected.retry_after),
            (ErrorKind::Transient, Some(Duration::from_secs(5)))
        );
        assert_eq!(
            config_valid(&rejected),
            Some((
                ConditionStatus::False,
                "NginxRejected",
                "nginx: [emerg] bad"
            ))
        );

        let timeout = sync_error(SyncError::Deliver(DeliveryError::TestTimeout {
            after: Duration::from_secs(1),
        }));
        assert_eq!(timeout.reason, "DeliveryFailed");
        assert!(timeout.conditions.is_empty(), "no nginx text, no verdict");
    }
}
