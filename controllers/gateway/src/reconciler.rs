//! The reconcile of one Gateway: resolve backends, gather certificates, render, deliver,
//! report.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_api::ConditionStatus;
use phoenix_api::condition::set_condition as set;
use phoenix_api::condition::{DEGRADED, READY, RECONCILING};
use phoenix_api::kinds::gateway::GatewayStatus;
use phoenix_api::kinds::{Gateway, Guest, Mesh};
use phoenix_nginx::{
    DeliveryError, GatewayInput, GatewayMetrics, Outcome, RenderError, ResolveError, SyncError,
    SyncReport, sync,
};
use phoenix_runtime::status::{condition, mark_failed};
use phoenix_runtime::{Action, Context, ReconcileError, Reconciler};

use crate::backends;
use crate::certs::{self, CertError};
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

/// Writes `type_` = `status` into the status' conditions (transition time kept when the
/// status did not flip).
fn put(
    s: &mut GatewayStatus,
    generation: Option<i64>,
    type_: &str,
    st: ConditionStatus,
    reason: &str,
    msg: &str,
) {
    set(
        &mut s.conditions,
        condition(type_, st, reason, msg, generation),
    );
}

fn converged(
    s: &mut GatewayStatus,
    generation: Option<i64>,
    report: &SyncReport,
    self_signed: &[String],
    reloaded_at: Option<jiff::Timestamp>,
) {
    use ConditionStatus::{False, True};
    s.config_hash = Some(report.delivery.hash.clone());
    s.routes = report.routes;
    if reloaded_at.is_some() {
        s.last_reload = reloaded_at;
    }
    let msg = format!("{} routes served", report.routes);
    put(s, generation, READY, True, "Converged", &msg);
    put(s, generation, RECONCILING, False, "Converged", "");
    put(s, generation, CONFIG_VALID, True, "Accepted", "");
    if self_signed.is_empty() {
        put(s, generation, DEGRADED, False, "Converged", "");
    } else {
        let m = format!(
            "self-signed certificates in use (no tlsSecret, no certificate from the CertificateAuthority): {}",
            self_signed.join(", ")
        );
        put(s, generation, DEGRADED, True, "SelfSignedCertificate", &m);
    }
    s.observed_generation = generation;
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

#[async_trait]
impl Reconciler for GatewayReconciler {
    type Kind = Gateway;

    async fn reconcile(
        &self,
        gateway: Arc<Gateway>,
        ctx: &Context<Gateway>,
    ) -> Result<Action, ReconcileError> {
        let name = gateway.metadata.name.clone();
        let generation = gateway.metadata.generation;
        if !self.settings.delivers(&gateway.spec) {
            // The other side's controller delivers it (see `Settings::local`); nothing here
            // may write its status or touch an nginx.
            tracing::debug!(gateway = %name, local = self.settings.local, "target on the other side; skipped");
            return Ok(Action::done());
        }
        let options = self
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
        match sync(&name, &input, &*delivery, &self.metrics).await {
            Ok(report) => {
                let reloaded_at =
                    (report.delivery.outcome == Outcome::Reloaded).then(jiff::Timestamp::now);
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
                match report.delivery.outcome {
                    Outcome::Unchanged => {}
                    Outcome::Reloaded => {
                        let m = format!(
                            "nginx reloaded onto {} ({} routes, {} bytes)",
                            report.delivery.hash, report.routes, report.delivery.bytes
                        );
                        ctx.recorder.normal(&*gateway, "Reloaded", &m).await;
                    }
                    Outcome::Installed => {
                        let m = format!(
                            "installed {} ({} routes); nginx is not running and loads it when it starts",
                            report.delivery.hash, report.routes
                        );
                        ctx.recorder.normal(&*gateway, "Installed", &m).await;
                    }
                }
                tracing::debug!(gateway = %name, outcome = report.delivery.outcome.as_str(), "reconciled");
                Ok(Action::done())
            }
            Err(SyncError::Render(e)) => {
                let waiting = matches!(
                    &e,
                    RenderError::Backend {
                        source: ResolveError::UnknownGuest(_) | ResolveError::UnknownMesh(_),
                        ..
                    }
                );
                if waiting {
                    // Not the spec's fault: a Guest or Mesh has no address yet; its watch
                    // brings us back.
                    return Err(ReconcileError::transient(
                        "BackendUnresolved",
                        e.to_string(),
                    ));
                }
                let message = e.to_string();
                let error = ReconcileError::invalid("InvalidSpec", message.clone());
                ctx.update_status(&gateway, |s| {
                    put(
                        s,
                        generation,
                        CONFIG_VALID,
                        ConditionStatus::False,
                        "RenderFailed",
                        &message,
                    );
                    mark_failed(s, generation, &error);
                })
                .await?;
                Err(error)
            }
            Err(SyncError::Deliver(e)) => {
                let (reason, text) = match &e {
                    DeliveryError::Rejected { output, .. } => ("NginxRejected", output.clone()),
                    DeliveryError::ReloadFailed { output, .. } => ("ReloadFailed", output.clone()),
                    _ => ("DeliveryFailed", String::new()),
                };
                let error = ReconcileError::transient(reason, e.to_string())
                    .retry_after(Duration::from_secs(5));
                if !text.is_empty() {
                    // ConfigValid and Ready in one write (the runtime's own Ready=False is
                    // then no change).
                    ctx.update_status(&gateway, |s| {
                        put(
                            s,
                            generation,
                            CONFIG_VALID,
                            ConditionStatus::False,
                            reason,
                            &text,
                        );
                        mark_failed(s, generation, &error);
                    })
                    .await?;
                }
                // The runtime records a Warning event with this message; the last good tree
                // keeps serving. Retried with backoff (a Guest's address or a Secret may be
                // what nginx refused).
                Err(error)
            }
        }
    }
}
