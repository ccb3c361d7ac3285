//! The reconcile of one Mesh: resolve, render for its target, deliver only what changed,
//! report. Cleanup (deletion) delivers an empty configuration unless `deletionPolicy: Retain`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use phoenix_api::ConditionStatus;
use phoenix_api::condition::{Condition, mark_ready, mark_ready_degraded, set_condition};
use phoenix_api::kinds::common::DeletionPolicy;
use phoenix_api::kinds::mesh::{MeshSpec, MeshStatus};
use phoenix_api::kinds::secret::Secret;
use phoenix_api::kinds::{CertificateAuthority, Guest, Mesh};
use phoenix_runtime::{Action, Context, ReconcileError, ReconcileResult, Reconciler};

use crate::caddy::{self, CaddyOptions};
use crate::caddy_admin::{self, CaddyAdminError};
use crate::certs;
use crate::file::{self, Outcome};
use crate::http::HttpProvider;
use crate::plan::{Plan, Rendered};
use crate::resolve::{self, ResolveError};
use crate::traefik::{self, Format};
use crate::{MeshOptions, NAME};

/// Condition type: the proxy accepted the last rendered configuration.
pub const CONFIG_VALID: &str = "ConfigValid";

/// Reconciles Meshes into Traefik and Caddy configurations.
#[derive(Debug)]
pub struct MeshReconciler {
    options: MeshOptions,
    http: HttpProvider,
    caddy: reqwest::Client,
}

impl MeshReconciler {
    /// A reconciler with the operator's `options`.
    pub fn new(options: MeshOptions) -> Self {
        MeshReconciler {
            http: HttpProvider::new(options.metrics.clone()),
            caddy: caddy_admin::client(),
            options,
        }
    }

    /// The HTTP provider's listeners (tests read the bound port from it).
    pub fn http(&self) -> &HttpProvider {
        &self.http
    }
}

/// What a delivery did.
struct Delivered {
    rendered: Rendered,
    outcome: Outcome,
    target: &'static str,
}

fn config_invalid(reason: &str, message: String) -> ReconcileError {
    ReconcileError::invalid("InvalidSpec", &message).with_condition(
        CONFIG_VALID,
        ConditionStatus::False,
        reason,
        &message,
    )
}

fn resolve_error(e: ResolveError) -> ReconcileError {
    match e {
        ResolveError::NoAddress { .. } => {
            ReconcileError::transient("BackendUnresolved", e.to_string())
        }
        ResolveError::Invalid { .. } => config_invalid("RenderFailed", e.to_string()),
    }
}

fn unavailable(e: impl std::fmt::Display) -> ReconcileError {
    ReconcileError::transient("TargetUnavailable", e.to_string())
        .retry_after(Duration::from_secs(5))
}

fn address_of(guests: &phoenix_runtime::Cache<Guest>, name: &str) -> Option<IpAddr> {
    guests.get(name)?.status.as_ref()?.address()
}

impl MeshReconciler {
    fn secret(ctx: &Context<Mesh>, name: &str) -> Option<Secret> {
        ctx.cache_of::<Secret>()?.get(name).map(|s| (*s).clone())
    }

    /// Opaque Secret `name`'s `token`.
    fn token(ctx: &Context<Mesh>, name: &str) -> Result<String, ReconcileError> {
        let s = Self::secret(ctx, name).ok_or_else(|| {
            ReconcileError::transient(
                "SecretNotFound",
                format!("spec.target.http.tokenSecretRef: Secret {name:?} not found"),
            )
        })?;
        s.text("token").ok_or_else(|| {
            ReconcileError::transient(
                "SecretInvalid",
                format!("spec.target.http.tokenSecretRef: Secret {name:?} has no readable token"),
            )
        })
    }

    /// Renders `plan` for `mesh`'s target and delivers it unless the target has it already.
    async fn deliver(
        &self,
        mesh: &Mesh,
        plan: &Plan,
        ctx: &Context<Mesh>,
    ) -> Result<Delivered, ReconcileError> {
        let name = &mesh.metadata.name;
        let spec = &mesh.spec;
        let metrics = &self.options.metrics;
        let started = Instant::now();
        let traefik = |format| {
            traefik::render(plan, &self.options.traefik, format)
                .map_err(|e| ReconcileError::transient("RenderFailed", e.to_string()))
        };
        if let Some(f) = &spec.target.file {
            let rendered = traefik(Format::Yaml)?;
            metrics.rendered(name, started.elapsed(), rendered.body.len());
            let root = self.options.file_root.as_ref().ok_or_else(|| {
                ReconcileError::invalid(
                    "NoFileRoot",
                    "spec.target.file: this controller runs without --mesh-file-root, so it writes no files",
                )
            })?;
            let path = root.join(&f.path);
            let (outcome, target) = match &f.ssh {
                None => {
                    let body = rendered.body.clone();
                    let outcome =
                        tokio::task::spawn_blocking(move || file::write_if_changed(&path, &body))
                            .await
                            .map_err(unavailable)?
                            .map_err(unavailable)?;
                    (outcome, "file")
                }
                Some(ssh) => {
                    let host = match &ssh.host {
                        Some(h) => h.clone(),
                        None => spec
                            .guest
                            .as_deref()
                            .and_then(|g| address_of(&ctx.cache_of::<Guest>()?, g))
                            .ok_or_else(|| {
                                ReconcileError::transient(
                                    "TargetUnresolved",
                                    "spec.target.file.ssh.host: not set, and the guest has no address yet",
                                )
                            })?
                            .to_string(),
                    };
                    let credentials = phoenix_ssh::Credentials::fetch(&ctx.client, &ssh.secret_ref)
                        .await
                        .map_err(|e| {
                            ReconcileError::transient(
                                "SecretInvalid",
                                format!("spec.target.file.ssh.secretRef: {e}"),
                            )
                        })?;
                    let policy = credentials
                        .host_key_policy(self.options.accept_any_host_key)
                        .map_err(|e| {
                            ReconcileError::transient(
                                "SecretInvalid",
                                format!("spec.target.file.ssh.secretRef: {e}"),
                            )
                        })?;
                    let remote = file::RemoteFile {
                        host: phoenix_ssh::Host::new(
                            host,
                            ssh.port,
                            &ssh.user,
                            credentials,
                            policy,
                        ),
                        path: path.display().to_string(),
                    };
                    let outcome = remote.write_if_changed(&rendered).await;
                    remote.host.close().await;
                    (outcome.map_err(unavailable)?, "ssh")
                }
            };
            return Ok(Delivered {
                rendered,
                outcome,
                target,
            });
        }
        if let Some(h) = &spec.target.http {
            let rendered = traefik(Format::Json)?;
            metrics.rendered(name, started.elapsed(), rendered.body.len());
            let listen: SocketAddr = h.listen.parse().map_err(|_| {
                config_invalid(
                    "RenderFailed",
                    format!(
                        "spec.target.http.listen: {:?} is not ADDRESS:PORT",
                        h.listen
                    ),
                )
            })?;
            let token = match &h.token_secret_ref {
                Some(s) => Some(Self::token(ctx, s)?),
                None => None,
            };
            let certificate = match &h.tls_secret_ref {
                None => None,
                Some(secret) => {
                    let field = "spec.target.http.tlsSecretRef";
                    let found = Self::secret(ctx, secret).ok_or_else(|| {
                        ReconcileError::transient(
                            "SecretNotFound",
                            format!("{field}: Secret {secret:?} not found"),
                        )
                    })?;
                    let cert = certs::from_secret(&found).map_err(|reason| {
                        ReconcileError::transient(
                            "SecretInvalid",
                            format!("{field}: Secret {secret:?} {reason}"),
                        )
                    })?;
                    Some((secret.as_str(), cert))
                }
            };
            let outcome = self
                .http
                .publish(
                    listen,
                    name,
                    &rendered,
                    token.as_deref(),
                    certificate.as_ref().map(|(s, c)| (*s, c)),
                )
                .await
                .map_err(unavailable)?;
            return Ok(Delivered {
                rendered,
                outcome,
                target: "http",
            });
        }
        let Some(c) = &spec.target.caddy_admin else {
            return Err(ReconcileError::invalid(
                "InvalidSpec",
                "spec.target: set exactly one of file, http, caddyAdmin",
            ));
        };
        let options = CaddyOptions {
            admin_listen: caddy_admin::admin_listen(&c.url).ok_or_else(|| {
                config_invalid(
                    "RenderFailed",
                    format!(
                        "spec.target.caddyAdmin.url: {:?} has no host and port",
                        c.url
                    ),
                )
            })?,
            listen_address: self.options.listen_address,
            port: spec.entry_point.port,
            tls_port: spec.entry_point.tls_port,
            grace_period: c.grace_period.parse().map_err(|e| {
                config_invalid(
                    "RenderFailed",
                    format!("spec.target.caddyAdmin.gracePeriod: {e}"),
                )
            })?,
        };
        let rendered = caddy::render(plan, &options)
            .map_err(|e| config_invalid("RenderFailed", e.to_string()))?;
        metrics.rendered(name, started.elapsed(), rendered.body.len());
        // Caddy's live configuration, not a memory of the last load, decides: a restarted
        // Caddy (empty) is loaded again, a restarted controller loads nothing new.
        if caddy_admin::is_current(&self.caddy, &c.url, &rendered)
            .await
            .map_err(unavailable)?
        {
            return Ok(Delivered {
                rendered,
                outcome: Outcome::Unchanged,
                target: "caddyAdmin",
            });
        }
        match caddy_admin::load(&self.caddy, &c.url, &rendered).await {
            Ok(()) => {}
            Err(e @ CaddyAdminError::Rejected { .. }) => {
                metrics.failed(name, "rejected");
                let CaddyAdminError::Rejected { message, .. } = &e else {
                    unreachable!()
                };
                return Err(ReconcileError::transient("CaddyRejected", e.to_string())
                    .retry_after(Duration::from_secs(5))
                    .with_condition(
                        CONFIG_VALID,
                        ConditionStatus::False,
                        "CaddyRejected",
                        message,
                    ));
            }
            Err(e) => return Err(unavailable(e)),
        }
        Ok(Delivered {
            rendered,
            outcome: Outcome::Applied,
            target: "caddyAdmin",
        })
    }

    /// The plan of `spec` from the caches (Guests, CertificateAuthorities, Secrets).
    fn plan(spec: &MeshSpec, ctx: &Context<Mesh>) -> Result<(Plan, Vec<String>), ReconcileError> {
        let guests = ctx
            .cache_of::<Guest>()
            .expect("the mesh controller watches Guests");
        let cas = ctx
            .cache_of::<CertificateAuthority>()
            .expect("the mesh controller watches CertificateAuthorities");
        let ca = spec
            .certificate_authority
            .as_deref()
            .and_then(|n| cas.get(n));
        let gathered = certs::gather(spec, ca.as_deref(), &|n| Self::secret(ctx, n))
            .map_err(|e| ReconcileError::transient("SecretInvalid", e.to_string()))?;
        let plan = resolve::plan(spec, &|g| address_of(&guests, g), &gathered.by_host)
            .map_err(resolve_error)?;
        Ok((plan, gathered.missing))
    }
}

/// `Degraded=True` of a converged Mesh: backends waiting for an address, `tls` services
/// without a certificate.
fn degraded(plan: &Plan, missing: &[String]) -> Option<(&'static str, String)> {
    let mut parts = Vec::new();
    if !plan.waiting.is_empty() {
        parts.push(format!(
            "left out until their Guest has an address: {}",
            plan.waiting.join("; ")
        ));
    }
    if !missing.is_empty() {
        parts.push(format!(
            "no certificate (no tlsSecret, none issued by the CertificateAuthority) for: {}",
            missing.join(", ")
        ));
    }
    let reason = match (plan.waiting.is_empty(), missing.is_empty()) {
        (true, true) => return None,
        (false, true) => "BackendUnresolved",
        (true, false) => "NoCertificate",
        (false, false) => "BackendUnresolvedNoCertificate",
    };
    Some((reason, parts.join(". ")))
}

fn converged(
    s: &mut MeshStatus,
    generation: Option<i64>,
    d: &Delivered,
    degraded: Option<&(&'static str, String)>,
) {
    s.config_hash = Some(d.rendered.hash.clone());
    s.services = d.rendered.services;
    if d.outcome == Outcome::Applied || s.last_applied.is_none() {
        s.last_applied = Some(jiff::Timestamp::now());
    }
    let msg = format!("{} services routed ({})", d.rendered.services, d.target);
    match degraded {
        None => mark_ready(s, generation, "Converged", &msg),
        Some((reason, m)) => mark_ready_degraded(s, generation, "Converged", &msg, reason, m),
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

/// What a Mesh's configuration lands in, when two Meshes could collide there: a file (by
/// host and path) or a Caddy (by admin URL). HTTP targets share listeners by path: `None`.
fn target_key(spec: &MeshSpec) -> Option<String> {
    if let Some(f) = &spec.target.file {
        let host = match &f.ssh {
            None => "local".to_string(),
            Some(ssh) => {
                let h = ssh
                    .host
                    .clone()
                    .or_else(|| spec.guest.as_ref().map(|g| format!("guest {g}")))
                    .unwrap_or_default();
                format!("{}@{h}:{}", ssh.user, ssh.port)
            }
        };
        return Some(format!("file {host} {}", f.path));
    }
    spec.target
        .caddy_admin
        .as_ref()
        .map(|c| format!("Caddy {}", c.url.trim_end_matches('/')))
}

/// The live Mesh other than `mesh` that owns `mesh`'s target: the oldest one naming the same
/// target (by creation time, then name). `None` when `mesh` is that one, or alone there.
fn owner_of_target(mesh: &Mesh, meshes: &phoenix_runtime::Cache<Mesh>) -> Option<String> {
    let key = target_key(&mesh.spec)?;
    let rank = |m: &Mesh| (m.metadata.creation_timestamp, m.metadata.name.clone());
    meshes
        .find(|m| {
            m.metadata.name != mesh.metadata.name
                && m.metadata.deletion_timestamp.is_none()
                && target_key(&m.spec).as_ref() == Some(&key)
        })
        .into_iter()
        .filter(|m| rank(m) < rank(mesh))
        .min_by_key(|m| rank(m))
        .map(|m| m.metadata.name.clone())
}

#[async_trait]
impl Reconciler for MeshReconciler {
    type Kind = Mesh;

    async fn reconcile(&self, mesh: Arc<Mesh>, ctx: &Context<Mesh>) -> ReconcileResult {
        let name = mesh.metadata.name.clone();
        let metrics = &self.options.metrics;
        if !self.options.delivers(&mesh.spec) {
            // The other side's controller delivers it (see `MeshOptions::local`); nothing
            // here may write its status or touch a proxy.
            tracing::debug!(mesh = %name, local = self.options.local, "target on the other side; skipped");
            return Ok(Action::done());
        }
        if let Some(owner) = owner_of_target(&mesh, &ctx.cache) {
            // Two Meshes writing one file or loading one Caddy would replace each other's
            // configuration at every reconcile: the older one keeps it.
            metrics.failed(&name, "conflict");
            return Err(ReconcileError::transient(
                "TargetConflict",
                format!(
                    "spec.target: Mesh {owner:?} already delivers to {}; give this Mesh its own file or Caddy",
                    target_key(&mesh.spec).unwrap_or_default()
                ),
            )
            .retry_after(std::time::Duration::from_secs(30)));
        }
        let (plan, missing) =
            Self::plan(&mesh.spec, ctx).inspect_err(|_| metrics.failed(&name, "resolve"))?;
        let delivered = self.deliver(&mesh, &plan, ctx).await.inspect_err(|e| {
            if e.reason != "CaddyRejected" {
                metrics.failed(&name, "deliver")
            }
        })?;
        let applied = delivered.outcome == Outcome::Applied;
        metrics.succeeded(&name, delivered.target, applied);
        let generation = mesh.metadata.generation;
        let degraded = degraded(&plan, &missing);
        ctx.update_status(&mesh, |s| {
            converged(s, generation, &delivered, degraded.as_ref())
        })
        .await?;
        if applied {
            let message = format!(
                "delivered {} ({} services, {} bytes) to {}",
                delivered.rendered.hash,
                delivered.rendered.services,
                delivered.rendered.body.len(),
                delivered.target
            );
            ctx.recorder.normal(&*mesh, "Applied", &message).await;
        }
        tracing::debug!(mesh = %name, applied, "reconciled");
        Ok(Action::done())
    }

    /// `deletionPolicy: Delete`: delivers an empty configuration (no routes), then lets the
    /// Mesh go; an unreachable target keeps it (retried with backoff). `Retain`: nothing.
    async fn cleanup(&self, mesh: Arc<Mesh>, ctx: &Context<Mesh>) -> ReconcileResult {
        self.empty_before_deletion(mesh, ctx)
            .await
            .map_err(|e| e.while_deleting("the proxy's configuration"))
    }
}

impl MeshReconciler {
    /// The cleanup itself; see [`Reconciler::cleanup`].
    async fn empty_before_deletion(&self, mesh: Arc<Mesh>, ctx: &Context<Mesh>) -> ReconcileResult {
        let name = mesh.metadata.name.clone();
        if !self.options.delivers(&mesh.spec) {
            // Only this side's finalizer goes; the other side empties its own target.
            return Ok(Action::done());
        }
        if DeletionPolicy::in_force(&mesh.metadata, mesh.spec.deletion_policy)
            == DeletionPolicy::Retain
        {
            tracing::info!(mesh = %name, "deletionPolicy Retain: the proxy keeps its configuration");
            return Ok(Action::done());
        }
        let key = target_key(&mesh.spec);
        let shared = ctx.cache.find(|m| {
            m.metadata.name != name
                && m.metadata.deletion_timestamp.is_none()
                && key.is_some()
                && target_key(&m.spec) == key
        });
        if let Some(other) = shared.first() {
            // Emptying would take another live Mesh's routes away.
            tracing::info!(mesh = %name, other = %other.metadata.name, "target shared: not emptied");
            return Ok(Action::done());
        }
        let delivered = self.deliver(&mesh, &Plan::default(), ctx).await?;
        self.options.metrics.succeeded(
            &name,
            delivered.target,
            delivered.outcome == Outcome::Applied,
        );
        ctx.recorder
            .normal(
                &*mesh,
                "Emptied",
                &format!(
                    "delivered an empty configuration to {} before deletion",
                    delivered.target
                ),
            )
            .await;
        tracing::info!(mesh = %name, controller = NAME, "emptied before deletion");
        Ok(Action::done())
    }
}
