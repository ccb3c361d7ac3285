//! One reconcile: read the compose file, resolve the env, look at the host's list, run
//! compose `up` when the file changed or containers drifted, report per service.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bollard::Docker;
use phoenix_api::ConditionStatus;
use phoenix_api::condition::{DEGRADED, mark_failed, mark_progressing, mark_ready};
use phoenix_api::kinds::common::DeletionPolicy;
use phoenix_api::kinds::stack::compose::{self, Service};
use phoenix_api::kinds::{Guest, Secret, Stack};
use phoenix_api::{Condition, condition};
use phoenix_runtime::{Action, Context, ReconcileError, ReconcileResult, Reconciler};
use phoenix_ssh::{Credentials, CredentialsError, Host};
use sha2::{Digest, Sha256};

use crate::StackOptions;
use crate::engine::{self, Container, Endpoint, Observer};
use crate::target::{self, ComposeCall, Remote, TargetError, Verb};
use crate::view::{self, View};

/// The condition naming images that are not on the host.
pub const IMAGES_PRESENT: &str = "ImagesPresent";

/// While services start (healthchecks, dependencies), look again this soon.
const STARTING_RECHECK: Duration = Duration::from_secs(2);
/// While services are not as declared, look again this soon.
const DEGRADED_RECHECK: Duration = Duration::from_secs(10);

/// The reconcile logic of [`crate::controller`].
#[derive(Debug)]
pub struct StackReconciler {
    options: StackOptions,
    observer: Observer,
    apis: Mutex<HashMap<String, Arc<Docker>>>,
    remotes: Mutex<HashMap<String, Arc<Remote>>>,
}

/// Where one Stack runs.
#[derive(Debug, Clone)]
struct Resolved {
    /// Names the Docker host (shared list key, metrics label).
    key: String,
    endpoint: Endpoint,
    /// `tcp://` targets: the directory with `ca.pem`, `cert.pem`, `key.pem` (0600).
    tls_dir: Option<std::path::PathBuf>,
}

/// The variables of a Stack, and which values are secret.
struct Env {
    vars: BTreeMap<String, String>,
    secrets: Vec<String>,
}

impl StackReconciler {
    /// A reconciler with `options`.
    pub fn new(options: StackOptions) -> Self {
        StackReconciler {
            observer: Observer::new(options.list_max_age, options.metrics.clone()),
            options,
            apis: Mutex::new(HashMap::new()),
            remotes: Mutex::new(HashMap::new()),
        }
    }

    /// The Engine API and SSH calls counted so far on `host` (benchmarks, tests).
    pub fn engine_calls(&self, host: &str) -> u64 {
        self.options.metrics.engine_calls_total(host)
    }
}

fn project_of(stack: &Stack) -> String {
    stack
        .spec
        .project_name
        .clone()
        .unwrap_or_else(|| stack.metadata.name.clone())
}

#[async_trait]
impl Reconciler for StackReconciler {
    type Kind = Stack;

    async fn reconcile(&self, stack: Arc<Stack>, ctx: &Context<Stack>) -> ReconcileResult {
        let name = stack.metadata.name.clone();
        let generation = stack.metadata.generation;
        let doc = compose::parse(&stack.spec.compose)
            .map_err(|e| ReconcileError::invalid("InvalidCompose", format!("spec.compose: {e}")))?;
        let services = compose::services(&doc);
        if self.options.forbid_privileged {
            let refused: Vec<String> = services
                .iter()
                .filter(|s| s.privileged)
                .map(|s| format!("spec.compose.services.{}.privileged", s.name))
                .collect();
            if !refused.is_empty() {
                return Err(ReconcileError::invalid(
                    "PrivilegedForbidden",
                    format!(
                        "{}: privileged containers are refused by this operator (--stack-forbid-privileged); nothing deployed",
                        refused.join(", ")
                    ),
                ));
            }
        }
        let env = self.env(&stack, ctx, false).await?;
        let secrets: Vec<&str> = env.secrets.iter().map(String::as_str).collect();
        let hash = compose_hash(&stack, &env);
        let images = images(&services, &env.vars);
        let project = project_of(&stack);
        let target = self.resolve(&stack, ctx).await?;

        let mut view = self
            .look(&target, &project, &services, &images, &secrets)
            .await
            .map_err(|e| ReconcileError::transient("DockerUnreachable", e.to_string()))?;
        let deployed_hash = stack.status.as_ref().and_then(|s| s.compose_hash.clone());
        let changed = deployed_hash.as_deref() != Some(hash.as_str());
        if changed || !view.drift.is_empty() {
            if changed && deployed_hash.is_some() {
                // About to act anyway: a fresh list, so drift is not hidden by a list taken
                // before a container went.
                self.observer.forget(&target.key).await;
                view = self
                    .look(&target, &project, &services, &images, &secrets)
                    .await
                    .map_err(|e| ReconcileError::transient("DockerUnreachable", e.to_string()))?;
            }
            // Drift is reported whenever a deployed Stack lost containers, also when the spec
            // changed too (or the cached status lags behind the last deploy).
            if !view.drift.is_empty() && deployed_hash.is_some() {
                self.options.metrics.drift(&name);
                let message = format!(
                    "changed outside Phoenix, bringing back: {}",
                    view.drift.join("; ")
                );
                ctx.recorder.warning(&*stack, "Drift", &message).await;
                ctx.update_status(&stack, |s| s.services = view.services.clone())
                    .await?;
            }
            if changed {
                ctx.progressing(&stack, "Deploying", &format!("compose up ({hash})"))
                    .await?;
            }
            let call = ComposeCall {
                stack: &name,
                project: &project,
                compose: &stack.spec.compose,
                env: &env.vars,
                secrets: &secrets,
                verb: Verb::Up,
            };
            let result = self.compose(&target, &call).await;
            self.observer.forget(&target.key).await;
            self.options
                .metrics
                .compose_run(&name, "up", result.is_ok());
            if let Err(e) = result {
                return Err(self
                    .up_failed(
                        &stack, ctx, &target, &project, &services, &images, &secrets, e,
                    )
                    .await);
            }
            view = self
                .look(&target, &project, &services, &images, &secrets)
                .await
                .map_err(|e| ReconcileError::transient("DockerUnreachable", e.to_string()))?;
            let what = if changed { "deployed" } else { "restored" };
            ctx.recorder
                .normal(
                    &*stack,
                    "Deployed",
                    &format!("compose up: {what}; {}", view.summary()),
                )
                .await;
        }

        let summary = view.summary();
        let why = view.not_ready.join("; ");
        ctx.update_status(&stack, |s| {
            s.services = view.services.clone();
            s.compose_hash = Some(hash.clone());
            condition::set_condition(
                &mut s.conditions,
                Condition::new(
                    IMAGES_PRESENT,
                    ConditionStatus::True,
                    "Present",
                    "",
                    generation,
                ),
            );
            if view.ready() {
                mark_ready(s, generation, "Running", &summary);
            } else if view.only_starting {
                mark_progressing(s, generation, "Starting", &why);
            } else {
                mark_failed(s, generation, "ServicesNotReady", &why, true);
                condition::set_condition(
                    &mut s.conditions,
                    Condition::new(
                        DEGRADED,
                        ConditionStatus::True,
                        "ServicesNotReady",
                        &why,
                        generation,
                    ),
                );
            }
        })
        .await?;
        Ok(if view.ready() {
            Action::done()
        } else if view.only_starting {
            Action::requeue(STARTING_RECHECK)
        } else {
            Action::requeue(DEGRADED_RECHECK)
        })
    }

    async fn cleanup(&self, stack: Arc<Stack>, ctx: &Context<Stack>) -> ReconcileResult {
        let name = stack.metadata.name.clone();
        if stack.spec.deletion_policy == DeletionPolicy::Retain {
            ctx.recorder
                .normal(
                    &*stack,
                    "Retained",
                    "deletionPolicy Retain: containers left running",
                )
                .await;
            return Ok(Action::done());
        }
        let status = stack.status.as_ref();
        let ever_deployed = status.is_some_and(|s| {
            s.compose_hash.is_some() || s.services.iter().any(|svc| svc.state != "missing")
        });
        if !ever_deployed {
            // Nothing was ever created (e.g. the guest never had an address): nothing to undo.
            return Ok(Action::done());
        }
        let target = self.resolve(&stack, ctx).await?;
        let env = self.env(&stack, ctx, true).await?;
        let secrets: Vec<&str> = env.secrets.iter().map(String::as_str).collect();
        let project = project_of(&stack);
        let verb = if stack.spec.remove_volumes {
            Verb::DownWithVolumes
        } else {
            Verb::Down
        };
        let call = ComposeCall {
            stack: &name,
            project: &project,
            compose: &stack.spec.compose,
            env: &env.vars,
            secrets: &secrets,
            verb,
        };
        let result = self.compose(&target, &call).await;
        self.observer.forget(&target.key).await;
        self.options
            .metrics
            .compose_run(&name, "down", result.is_ok());
        result.map_err(|e| ReconcileError::transient("ComposeDownFailed", e.to_string()))?;
        let volumes = if verb == Verb::DownWithVolumes {
            "volumes removed"
        } else {
            "volumes kept"
        };
        ctx.recorder
            .normal(&*stack, "Removed", &format!("compose down ({volumes})"))
            .await;
        Ok(Action::done())
    }
}

impl StackReconciler {
    /// The view of the Stack's project from its host's (shared) list.
    async fn look(
        &self,
        target: &Resolved,
        project: &str,
        services: &[Service],
        images: &HashMap<String, String>,
        secrets: &[&str],
    ) -> Result<View, engine::EngineError> {
        let list = self.observer.list(&target.key, &target.endpoint).await?;
        let mine: Vec<&Container> = list.iter().filter(|c| c.project == project).collect();
        let unsteady: Vec<String> = mine
            .iter()
            .filter(|c| !c.steady())
            .map(|c| c.id.clone())
            .collect();
        let restarts = self
            .observer
            .restarts(&target.key, &target.endpoint, &unsteady)
            .await;
        let mut view = view::observe(services, images, &mine, &restarts);
        for s in &mut view.services {
            s.image = target::scrub(&s.image, secrets);
        }
        for line in view.drift.iter_mut().chain(view.not_ready.iter_mut()) {
            *line = target::scrub(line, secrets);
        }
        Ok(view)
    }

    async fn compose(&self, target: &Resolved, call: &ComposeCall<'_>) -> Result<(), TargetError> {
        match &target.endpoint {
            Endpoint::Api(_) => {
                target::compose_local(
                    &self.options.compose,
                    &target.key,
                    target.tls_dir.as_deref(),
                    call,
                )
                .await
            }
            Endpoint::Ssh(remote) => {
                target::compose_remote(&self.options.compose, remote, call).await
            }
        }
    }

    /// After a failed `up`: status from what runs now, the images missing on the host named.
    #[allow(clippy::too_many_arguments)]
    async fn up_failed(
        &self,
        stack: &Stack,
        ctx: &Context<Stack>,
        target: &Resolved,
        project: &str,
        services: &[Service],
        images: &HashMap<String, String>,
        secrets: &[&str],
        error: TargetError,
    ) -> ReconcileError {
        let missing = self.missing_images(target, images).await;
        if let Ok(view) = self.look(target, project, services, images, secrets).await {
            let _ = ctx
                .update_status(stack, |s| s.services = view.services.clone())
                .await;
        }
        if !missing.is_empty() {
            let message = target::scrub(
                &format!("not on the host and not pulled: {}", missing.join(", ")),
                secrets,
            );
            let full = target::scrub(&format!("{message}; {error}"), secrets);
            return ReconcileError::transient("ImageMissing", full)
                .with_condition(
                    IMAGES_PRESENT,
                    ConditionStatus::False,
                    "ImageMissing",
                    &message,
                )
                .with_condition(DEGRADED, ConditionStatus::True, "ImageMissing", &message);
        }
        let message = target::scrub(&error.to_string(), secrets);
        ReconcileError::transient("ComposeFailed", message.clone()).with_condition(
            DEGRADED,
            ConditionStatus::True,
            "ComposeFailed",
            &message,
        )
    }

    /// `image (service S)` for every image of the compose file that the host does not have.
    async fn missing_images(
        &self,
        target: &Resolved,
        images: &HashMap<String, String>,
    ) -> Vec<String> {
        let mut by_image: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (service, image) in images {
            by_image.entry(image).or_default().push(service);
        }
        let mut missing = Vec::new();
        match &target.endpoint {
            Endpoint::Api(docker) => {
                for (image, services) in &by_image {
                    self.options.metrics.engine_call(&target.key, "images");
                    if let Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) = docker.inspect_image(image).await
                    {
                        missing.push(format!("{image} (service {})", services.join(", ")));
                    }
                }
            }
            Endpoint::Ssh(remote) => {
                self.options.metrics.engine_call(&target.key, "images");
                let list: Vec<String> = by_image
                    .keys()
                    .map(|i| phoenix_ssh::shell_quote(i))
                    .collect();
                let cmd = format!(
                    "for i in {}; do {} image inspect \"$i\" >/dev/null 2>&1 || echo \"$i\"; done",
                    list.join(" "),
                    remote.docker()
                );
                if let Ok(out) = remote.run(&cmd, b"").await {
                    for image in out.lines().filter(|l| !l.is_empty()) {
                        let services = by_image.get(image).cloned().unwrap_or_default();
                        missing.push(format!("{image} (service {})", services.join(", ")));
                    }
                }
            }
        }
        missing
    }

    /// `spec.env` plus the `envFrom` Secrets' values. With `lenient` (cleanup), a missing
    /// Secret or key gives an empty value instead of an error.
    async fn env(
        &self,
        stack: &Stack,
        ctx: &Context<Stack>,
        lenient: bool,
    ) -> Result<Env, ReconcileError> {
        let mut vars = stack.spec.env.clone();
        let mut secrets = Vec::new();
        for (var, r) in &stack.spec.env_from {
            let at = format!("spec.envFrom[{var:?}]");
            let value = match ctx.api::<Secret>().get_opt(&r.secret_ref).await {
                Ok(Some(secret)) => match secret.data.get(&r.key) {
                    Some(b64) => base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| {
                            format!(
                                "{at}: key {:?} of Secret {:?} is not UTF-8 text",
                                r.key, r.secret_ref
                            )
                        }),
                    None => Err(format!(
                        "{at}: Secret {:?} has no key {:?}",
                        r.secret_ref, r.key
                    )),
                },
                Ok(None) => Err(format!("{at}: Secret {:?} does not exist", r.secret_ref)),
                Err(e) => Err(format!("{at}: reading Secret {:?}: {e}", r.secret_ref)),
            };
            match value {
                Ok(v) => {
                    secrets.push(v.clone());
                    vars.insert(var.clone(), v);
                }
                Err(_) if lenient => {
                    vars.insert(var.clone(), String::new());
                }
                Err(m) => return Err(ReconcileError::transient("SecretUnavailable", m)),
            }
        }
        Ok(Env { vars, secrets })
    }

    /// The Docker host of `stack`, with a connected client (cached per endpoint / SSH login).
    async fn resolve(
        &self,
        stack: &Stack,
        ctx: &Context<Stack>,
    ) -> Result<Resolved, ReconcileError> {
        let spec = &stack.spec;
        if let Some(d) = &spec.target.docker {
            if d.endpoint.starts_with("tcp://") {
                return self
                    .resolve_tcp(stack, ctx, &d.endpoint, d.secret_ref.as_deref())
                    .await;
            }
            let Some(path) = d.endpoint.strip_prefix("unix://") else {
                return Err(ReconcileError::invalid(
                    "UnsupportedEndpoint",
                    format!(
                        "spec.target.docker.endpoint: {} is neither unix:// nor tcp://",
                        d.endpoint
                    ),
                ));
            };
            let key = format!("unix://{path}");
            let cached = self
                .apis
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned();
            let docker = match cached {
                Some(d) => d,
                None => {
                    let d = Arc::new(engine::connect_unix(&key).await.map_err(|e| {
                        ReconcileError::transient("DockerUnreachable", e.to_string())
                    })?);
                    self.apis
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key.clone(), d.clone());
                    d
                }
            };
            return Ok(Resolved {
                key,
                endpoint: Endpoint::Api(docker),
                tls_dir: None,
            });
        }
        let Some(ssh) = &spec.target.ssh else {
            return Err(ReconcileError::invalid(
                "NoTarget",
                "spec.target: exactly one of ssh or docker must be set",
            ));
        };
        let host = match &ssh.host {
            Some(h) => h.clone(),
            None => {
                let guest_name = spec.guest.clone().unwrap_or_default();
                let guest = ctx.cache_of::<Guest>().and_then(|c| c.get(&guest_name));
                let address = guest
                    .as_ref()
                    .and_then(|g| g.status.as_ref())
                    .and_then(|s| s.address());
                match address {
                    Some(a) => a.to_string(),
                    None => {
                        return Err(ReconcileError::transient(
                            "GuestAddressUnknown",
                            format!("spec.guest: Guest {guest_name:?} reports no address yet"),
                        ));
                    }
                }
            }
        };
        let credentials = Credentials::fetch(&ctx.client, &ssh.secret_ref)
            .await
            .map_err(|e| {
                ReconcileError::transient(
                    "SecretUnavailable",
                    format!("spec.target.ssh.secretRef: {e}"),
                )
            })?;
        let policy = credentials
            .host_key_policy(self.options.ssh_accept_any_host_key)
            .map_err(|e| match e {
                CredentialsError::NoKnownHosts(s) => ReconcileError::invalid(
                    "NoKnownHosts",
                    format!("spec.target.ssh.secretRef: Secret {s:?} has no known_hosts; host keys are verified (add the guest's host key, or run with --stack-ssh-accept-any-host-key in test set-ups)"),
                ),
                e => ReconcileError::transient("SecretUnavailable", format!("spec.target.ssh.secretRef: {e}")),
            })?;
        let key = format!(
            "ssh://{}@{}:{}#{}",
            ssh.user,
            host,
            ssh.port,
            credentials.fingerprint()
        );
        let cached = self
            .remotes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let remote = match cached {
            Some(r) => r,
            None => {
                let h = Host::new(
                    host.clone(),
                    ssh.port,
                    ssh.user.clone(),
                    credentials,
                    policy,
                );
                let r = Arc::new(Remote::new(
                    h,
                    self.options.compose.timeout,
                    self.options.compose.remote_docker.clone(),
                ));
                self.remotes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone(), r.clone());
                r
            }
        };
        Ok(Resolved {
            key: format!("ssh://{}@{}:{}", ssh.user, host, ssh.port),
            endpoint: Endpoint::Ssh(remote),
            tls_dir: None,
        })
    }

    /// A `tcp://` Engine API with client TLS: the Secret (type `tls`: `tls.crt`, `tls.key`,
    /// `ca.crt`) is written to a private directory of the work directory, used by bollard and,
    /// as `DOCKER_CERT_PATH`, by compose.
    async fn resolve_tcp(
        &self,
        stack: &Stack,
        ctx: &Context<Stack>,
        endpoint: &str,
        secret_ref: Option<&str>,
    ) -> Result<Resolved, ReconcileError> {
        let at = "spec.target.docker.secretRef";
        let Some(secret_name) = secret_ref else {
            return Err(ReconcileError::invalid(
                "NoClientCertificate",
                format!(
                    "{at}: a Secret of type tls is required for {endpoint} (the Engine API over TCP is only spoken with client TLS)"
                ),
            ));
        };
        let unavailable =
            |m: String| ReconcileError::transient("SecretUnavailable", format!("{at}: {m}"));
        let secret = ctx
            .api::<Secret>()
            .get_opt(secret_name)
            .await
            .map_err(|e| unavailable(format!("reading Secret {secret_name:?}: {e}")))?
            .ok_or_else(|| unavailable(format!("Secret {secret_name:?} does not exist")))?;
        let mut files = Vec::new();
        for (key, file) in [
            ("ca.crt", "ca.pem"),
            ("tls.crt", "cert.pem"),
            ("tls.key", "key.pem"),
        ] {
            let bytes = secret
                .data
                .get(key)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .ok_or_else(|| unavailable(format!("Secret {secret_name:?} has no {key}")))?;
            files.push((file, bytes));
        }
        let mut h = Sha256::new();
        for (_, b) in &files {
            h.update(Sha256::digest(b));
        }
        let fingerprint = hex::encode(&h.finalize()[..8]);
        let dir = self
            .options
            .compose
            .work_dir
            .join(".tls")
            .join(format!("{}-{fingerprint}", stack.metadata.name));
        for (file, bytes) in &files {
            target::write_private(&dir, &dir.join(file), bytes)
                .map_err(|e| ReconcileError::transient("WorkDirUnwritable", e.to_string()))?;
        }
        let cache_key = format!("{endpoint}#{fingerprint}");
        let cached = self
            .apis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
            .cloned();
        let docker = match cached {
            Some(d) => d,
            None => {
                let d =
                    Arc::new(engine::connect_tls(endpoint, &dir).await.map_err(|e| {
                        ReconcileError::transient("DockerUnreachable", e.to_string())
                    })?);
                self.apis
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(cache_key, d.clone());
                d
            }
        };
        Ok(Resolved {
            key: endpoint.to_string(),
            endpoint: Endpoint::Api(docker),
            tls_dir: Some(dir),
        })
    }
}

/// `sha256:` over the project, the compose text and every variable (Secret values enter as
/// their own hash, so the status never carries anything derived from them alone).
fn compose_hash(stack: &Stack, env: &Env) -> String {
    let mut h = Sha256::new();
    h.update(project_of(stack).as_bytes());
    h.update([0]);
    h.update(stack.spec.compose.as_bytes());
    for (k, v) in &env.vars {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([b'=']);
        h.update(Sha256::digest(v.as_bytes()));
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Each service's image with the variables filled in.
fn images(services: &[Service], vars: &BTreeMap<String, String>) -> HashMap<String, String> {
    services
        .iter()
        .filter_map(|s| {
            let image =
                compose::interpolate(s.image.as_deref()?, &|k| vars.get(k).cloned()).ok()?;
            Some((s.name.clone(), image))
        })
        .collect()
}
