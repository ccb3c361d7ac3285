//! One reconcile: resolve the sources, read the target, write the difference, report.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use phoenix_api::condition::{DEGRADED, find_condition, mark_ready, mark_ready_degraded};
use phoenix_api::kinds::DnsZone;
use phoenix_api::kinds::common::DeletionPolicy;
use phoenix_api::kinds::dns_zone::{HostsDirTarget, Rfc2136Target};
use phoenix_api::kinds::secret::Secret;
use phoenix_dns::owner::{self, ChangeKind, Desired};
use phoenix_dns::{DnsError, Rfc2136Client, TsigKey, hosts};
use phoenix_runtime::{Action, Context, ReconcileError, ReconcileResult, Reconciler};

use crate::DnsZoneOptions;
use crate::hostsfile::HostsFile;
use crate::sources::{self, Caches, Wanted};

/// The reconcile logic of [`crate::controller`].
#[derive(Debug)]
pub struct DnsZoneReconciler {
    options: DnsZoneOptions,
}

impl DnsZoneReconciler {
    /// A reconciler with `options`.
    pub fn new(options: DnsZoneOptions) -> Self {
        DnsZoneReconciler { options }
    }
}

/// What one write did.
#[derive(Debug, Default)]
struct Written {
    created: usize,
    changed: usize,
    deleted: usize,
    /// Records (A and AAAA) the target holds for the zone now.
    records: usize,
    /// Names wanted but made by someone else.
    foreign: Vec<String>,
}

impl Written {
    fn summary(&self) -> String {
        format!(
            "{} created, {} changed, {} deleted",
            self.created, self.changed, self.deleted
        )
    }
    fn any(&self) -> bool {
        self.created + self.changed + self.deleted > 0
    }
}

#[async_trait]
impl Reconciler for DnsZoneReconciler {
    type Kind = DnsZone;

    async fn reconcile(&self, dz: Arc<DnsZone>, ctx: &Context<DnsZone>) -> ReconcileResult {
        let name = dz.metadata.name.clone();
        let wanted = self.wanted(&dz, ctx)?;
        let written = if let Some(t) = &dz.spec.target.rfc2136 {
            let ttl = ttl_secs(&dz);
            self.write_rfc2136(&dz, ctx, t, &wanted.records, &wanted.keep, ttl)
                .await?
        } else if let Some(t) = &dz.spec.target.hosts_dir {
            self.write_hosts(&dz, ctx, t, &wanted.records, &wanted.keep)
                .await?
        } else {
            return Err(ReconcileError::invalid(
                "NoTarget",
                "spec.target names neither rfc2136 nor hostsDir",
            ));
        };
        self.options.metrics.records(&name, written.records);

        let previous_foreign = dz
            .status
            .as_ref()
            .map(|s| s.foreign.clone())
            .unwrap_or_default();
        if written.any() {
            ctx.recorder
                .normal(
                    &*dz,
                    "Updated",
                    &format!("{}: {}", dz.spec.zone, written.summary()),
                )
                .await;
        }
        if !written.foreign.is_empty() && written.foreign != previous_foreign {
            ctx.recorder
                .warning(
                    &*dz,
                    "ForeignRecords",
                    &format!(
                        "left alone, made by someone else: {}",
                        written.foreign.join(", ")
                    ),
                )
                .await;
        }
        let conflicts = format!("sources disagree: {}", wanted.conflicts.join("; "));
        let previous_degraded = dz
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, DEGRADED))
            .map(|c| c.message.clone());
        if !wanted.conflicts.is_empty() && previous_degraded.as_deref() != Some(conflicts.as_str())
        {
            ctx.recorder
                .warning(&*dz, "SourceConflict", &wanted.conflicts.join("; "))
                .await;
        }

        let mut message = format!("{} records in {}", written.records, dz.spec.zone);
        if !wanted.pending.is_empty() {
            message.push_str(&format!("; waiting for: {}", wanted.pending.join("; ")));
        }
        let degraded = if !wanted.conflicts.is_empty() {
            Some(("SourceConflict", conflicts.clone()))
        } else if !written.foreign.is_empty() {
            Some((
                "ForeignRecords",
                format!(
                    "records made by someone else are left alone at: {}",
                    written.foreign.join(", ")
                ),
            ))
        } else {
            None
        };
        let generation = dz.metadata.generation;
        let records = u32::try_from(written.records).unwrap_or(u32::MAX);
        ctx.update_status(&dz, |s| {
            s.records = records;
            s.foreign = written.foreign.clone();
            match &degraded {
                Some((reason, m)) => {
                    mark_ready_degraded(s, generation, "Converged", &message, reason, m)
                }
                None => mark_ready(s, generation, "Converged", &message),
            }
        })
        .await?;
        Ok(Action::done())
    }

    async fn cleanup(&self, dz: Arc<DnsZone>, ctx: &Context<DnsZone>) -> ReconcileResult {
        self.remove_records(dz, ctx)
            .await
            .map_err(|e| e.while_deleting("the records"))
    }
}

impl DnsZoneReconciler {
    /// The cleanup itself; see [`Reconciler::cleanup`].
    async fn remove_records(&self, dz: Arc<DnsZone>, ctx: &Context<DnsZone>) -> ReconcileResult {
        let name = dz.metadata.name.clone();
        if DeletionPolicy::in_force(&dz.metadata, dz.spec.deletion_policy) == DeletionPolicy::Retain
        {
            tracing::info!(dnszone = %name, "deletionPolicy Retain: records left in place");
            self.options.metrics.forget(&name);
            return Ok(Action::done());
        }
        if !dz.status.as_ref().is_some_and(|s| s.written) {
            tracing::info!(dnszone = %name, "never wrote to its target: nothing to remove");
            self.options.metrics.forget(&name);
            return Ok(Action::done());
        }
        if let Some(t) = &dz.spec.target.rfc2136 {
            let written = self
                .write_rfc2136(
                    &dz,
                    ctx,
                    t,
                    &Desired::new(),
                    &BTreeSet::new(),
                    ttl_secs(&dz),
                )
                .await?;
            tracing::info!(dnszone = %name, "removed: {}", written.summary());
        } else if let Some(t) = &dz.spec.target.hosts_dir {
            let file = self.hosts_file(&dz, ctx, t).await?;
            let removed = file.remove().await;
            file.close().await;
            removed.map_err(|e| ReconcileError::transient("WriteFailed", e))?;
        }
        self.options.metrics.forget(&name);
        Ok(Action::done())
    }
}

impl DnsZoneReconciler {
    fn wanted(&self, dz: &DnsZone, ctx: &Context<DnsZone>) -> Result<Wanted, ReconcileError> {
        let missing = || ReconcileError::transient("NoCache", "a related cache is not ready");
        let caches = Caches {
            gateways: ctx.cache_of().ok_or_else(missing)?,
            meshes: ctx.cache_of().ok_or_else(missing)?,
            guests: ctx.cache_of().ok_or_else(missing)?,
        };
        Ok(sources::wanted(&dz.spec, &caches))
    }

    /// Reads the zone, plans against what this zone owns, and sends one update per name.
    async fn write_rfc2136(
        &self,
        dz: &DnsZone,
        ctx: &Context<DnsZone>,
        target: &Rfc2136Target,
        desired: &Desired,
        keep: &BTreeSet<String>,
        ttl: u32,
    ) -> Result<Written, ReconcileError> {
        let name = &dz.metadata.name;
        let zone = &dz.spec.zone;
        let client = self.client(ctx, target).await?;
        let fail = |e: DnsError| {
            self.options.metrics.update(name, &e.reason());
            ReconcileError::transient(e.reason(), format!("zone {zone}: {e}"))
        };
        let current = client.read_zone(zone).await.map_err(fail)?;
        // Names whose source has no address right now keep what this zone owns there.
        let mut desired = desired.clone();
        for (n, ips) in owner::owned_addresses(&current, name) {
            if keep.contains(&n) && !desired.contains_key(&n) && !ips.is_empty() {
                desired.insert(n, ips);
            }
        }
        let desired = &desired;
        let plan = owner::plan(&current, name, desired, ttl);
        let mut written = Written {
            foreign: plan.foreign.clone(),
            ..Written::default()
        };
        if !plan.changes.is_empty() {
            mark_written(dz, ctx).await?;
        }
        let mut failures: Vec<(String, DnsError)> = Vec::new();
        let mut failed_names = Vec::new();
        for change in &plan.changes {
            match client
                .apply(zone, &change.prerequisites, &change.updates)
                .await
            {
                Ok(()) => {
                    self.options.metrics.update(name, "ok");
                    match change.kind {
                        ChangeKind::Create => written.created += 1,
                        ChangeKind::Change => written.changed += 1,
                        ChangeKind::Delete => written.deleted += 1,
                    }
                }
                Err(DnsError::PrerequisiteFailed { .. }) if change.kind == ChangeKind::Create => {
                    // Someone wrote addresses there since the transfer: theirs now.
                    self.options.metrics.update(name, "foreign");
                    written.foreign.push(change.name.clone());
                }
                Err(e) => {
                    self.options.metrics.update(name, &e.reason());
                    failed_names.push(change.name.clone());
                    failures.push((change.name.clone(), e));
                }
            }
        }
        written.foreign.sort();
        written.records = desired
            .iter()
            .filter(|(n, _)| !written.foreign.contains(n) && !failed_names.contains(n))
            .map(|(_, ips)| ips.len())
            .sum();
        if let Some((_, first)) = failures.first() {
            let list: Vec<String> = failures.iter().map(|(n, e)| format!("{n}: {e}")).collect();
            return Err(ReconcileError::transient(
                first.reason(),
                format!(
                    "zone {zone}: {} of {} updates failed ({}): {}",
                    failures.len(),
                    plan.changes.len(),
                    written.summary(),
                    list.join("; ")
                ),
            ));
        }
        Ok(written)
    }

    /// The client of `target`, with the key from its Secret.
    async fn client(
        &self,
        ctx: &Context<DnsZone>,
        target: &Rfc2136Target,
    ) -> Result<Rfc2136Client, ReconcileError> {
        let server: SocketAddr = target.server.parse().map_err(|_| {
            ReconcileError::invalid(
                "InvalidServer",
                format!(
                    "spec.target.rfc2136.server {:?} is not ADDRESS:PORT",
                    target.server
                ),
            )
        })?;
        let secret_name = &target.tsig_secret_ref;
        let secret = ctx
            .api::<Secret>()
            .get_opt(secret_name)
            .await
            .map_err(|e| {
                ReconcileError::transient("ApiError", format!("reading Secret {secret_name}: {e}"))
            })?
            .ok_or_else(|| {
                ReconcileError::transient(
                    "SecretMissing",
                    format!(
                        "Secret {secret_name} (spec.target.rfc2136.tsigSecretRef) does not exist"
                    ),
                )
            })?;
        let key = TsigKey::from_secret_data(&secret.data).map_err(|e| {
            ReconcileError::invalid("InvalidTsigSecret", format!("Secret {secret_name}: {e}"))
        })?;
        Ok(Rfc2136Client::new(server, key).with_timeout(self.options.timeout))
    }

    /// Writes the hosts file when its content differs.
    async fn write_hosts(
        &self,
        dz: &DnsZone,
        ctx: &Context<DnsZone>,
        target: &HostsDirTarget,
        desired: &Desired,
        keep: &BTreeSet<String>,
    ) -> Result<Written, ReconcileError> {
        let file = self.hosts_file(dz, ctx, target).await?;
        let result = self.write_hosts_to(dz, ctx, &file, desired, keep).await;
        file.close().await;
        result
    }

    async fn hosts_file(
        &self,
        dz: &DnsZone,
        ctx: &Context<DnsZone>,
        target: &HostsDirTarget,
    ) -> Result<HostsFile, ReconcileError> {
        HostsFile::of(
            dz,
            target,
            self.options.hosts_root.as_deref(),
            &ctx.client,
            self.options.timeout,
        )
        .await
    }

    async fn write_hosts_to(
        &self,
        dz: &DnsZone,
        ctx: &Context<DnsZone>,
        file: &HostsFile,
        desired: &Desired,
        keep: &BTreeSet<String>,
    ) -> Result<Written, ReconcileError> {
        let name = &dz.metadata.name;
        let before = file.read().await.map_err(|e| {
            self.options.metrics.update(name, "ReadFailed");
            ReconcileError::transient("ReadFailed", e)
        })?;
        // Names whose source has no address right now keep the lines the file has.
        let mut desired = desired.clone();
        for (n, ips) in hosts::parse(before.as_deref().unwrap_or_default()) {
            if keep.contains(&n) && !desired.contains_key(&n) {
                desired.insert(n, ips);
            }
        }
        let entries: BTreeMap<_, _> = desired
            .iter()
            .filter(|(n, _)| !n.starts_with("*."))
            .map(|(n, ips)| (n.clone(), ips.clone()))
            .collect();
        let text = hosts::render(name, &entries)
            .map_err(|e| ReconcileError::invalid("UnsafeName", e.to_string()))?;
        let mut written = Written {
            records: entries.values().map(|ips| ips.len()).sum(),
            ..Written::default()
        };
        if before.as_deref() != Some(text.as_str()) {
            mark_written(dz, ctx).await?;
            if let Err(e) = file.write(&text).await {
                self.options.metrics.update(name, "WriteFailed");
                return Err(ReconcileError::transient("WriteFailed", e));
            }
            self.options.metrics.update(name, "ok");
            // Count names as the rfc2136 target does: new, changed, gone.
            let old = hosts::parse(before.as_deref().unwrap_or_default());
            for (n, ips) in &entries {
                match old.get(n) {
                    None => written.created += 1,
                    Some(was) if was != ips => written.changed += 1,
                    Some(_) => {}
                }
            }
            written.deleted = old.keys().filter(|n| !entries.contains_key(*n)).count();
        }
        Ok(written)
    }
}

/// Records in status that the zone may have written to its target, before it does: the
/// finalizer then knows there is something to remove.
async fn mark_written(dz: &DnsZone, ctx: &Context<DnsZone>) -> Result<(), ReconcileError> {
    if dz.status.as_ref().is_some_and(|s| s.written) {
        return Ok(());
    }
    ctx.update_status(dz, |s| s.written = true).await.map(drop)
}

/// `spec.ttl` in seconds (admission guarantees it parses and fits).
fn ttl_secs(dz: &DnsZone) -> u32 {
    dz.spec
        .ttl
        .parse()
        .ok()
        .and_then(|d| u32::try_from(d.as_secs()).ok())
        .unwrap_or(300)
}
