//! One reconcile: read the compose file, resolve the env, look at the host's list, run
//! compose `up` when the file changed or containers drifted, report per service.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use phoenix_api::ConditionStatus;
use phoenix_api::condition::{DEGRADED, mark_failed, mark_progressing, mark_ready};
use phoenix_api::kinds::Stack;
use phoenix_api::kinds::common::DeletionPolicy;
use phoenix_api::kinds::stack::compose::{self, Service};
use phoenix_api::{Condition, condition};
use phoenix_runtime::{Action, Context, ReconcileError, ReconcileResult, Reconciler};
use sha2::{Digest, Sha256};

use crate::StackOptions;
use crate::engine::{self, Container, Endpoint, Observer};
use crate::rerun::Reruns;
use crate::resolve::{Env, Resolved};
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
    pub(crate) options: StackOptions,
    observer: Observer,
    pub(crate) apis: Mutex<HashMap<String, Arc<Docker>>>,
    pub(crate) remotes: Mutex<HashMap<String, Arc<Remote>>>,
    /// The compose hash this process last deployed, by Stack uid: the cached object's
    /// `status.composeHash` may lag behind the status write that follows a deploy, and a
    /// reconcile reading the stale one would run compose again (and could restore a
    /// container removed meanwhile without reporting it as drift).
    deployed: Mutex<HashMap<String, String>>,
    /// Backoff of failed one-shots' re-runs, by Stack uid.
    reruns: Reruns,
}

impl StackReconciler {
    /// A reconciler with `options`.
    pub fn new(options: StackOptions) -> Self {
        StackReconciler {
            observer: Observer::new(options.list_max_age, options.metrics.clone()),
            options,
            apis: Mutex::new(HashMap::new()),
            remotes: Mutex::new(HashMap::new()),
            deployed: Mutex::new(HashMap::new()),
            reruns: Reruns::default(),
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
        let uid = stack.metadata.uid.clone().unwrap_or_default();
        let deployed_hash = self
            .deployed
            .lock()
            .expect("deployed lock")
            .get(&uid)
            .cloned()
            .or_else(|| stack.status.as_ref().and_then(|s| s.compose_hash.clone()));
        let changed = deployed_hash.as_deref() != Some(hash.as_str());
        if changed {
            self.reruns.forget(&uid);
        }
        // Failed one-shots alone are run again with backoff, not at every look.
        let only_failed_one_shots =
            !changed && !view.drift.is_empty() && view.drift.len() == view.failed_one_shots.len();
        let held_back = if only_failed_one_shots {
            self.reruns.due(&uid, &hash, Instant::now()).err()
        } else {
            None
        };
        if (changed || !view.drift.is_empty()) && held_back.is_none() {
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
            if only_failed_one_shots {
                let next = self.reruns.ran(&uid, &hash, Instant::now());
                let message = format!(
                    "running again after it failed: {} (if it fails again, the next run waits {}s)",
                    view.failed_one_shots.join("; "),
                    next.as_secs()
                );
                ctx.recorder
                    .warning(&*stack, "OneShotRerun", &message)
                    .await;
            } else if !view.drift.is_empty() && deployed_hash.is_some() {
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
            self.deployed
                .lock()
                .expect("deployed lock")
                .insert(uid.clone(), hash.clone());
            let what = if changed { "deployed" } else { "restored" };
            ctx.recorder
                .normal(
                    &*stack,
                    "Deployed",
                    &format!("compose up: {what}; {}", view.summary()),
                )
                .await;
        }

        if view.failed_one_shots.is_empty() {
            self.reruns.forget(&uid);
        }
        let summary = view.summary();
        let mut why = view.not_ready.join("; ");
        if let Some(wait) = held_back {
            why.push_str(&format!(
                "; failed one-shots run again in {}s (backoff)",
                wait.as_secs().max(1)
            ));
        }
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
        } else if let Some(wait) = held_back {
            Action::requeue(wait)
        } else {
            Action::requeue(DEGRADED_RECHECK)
        })
    }

    async fn cleanup(&self, stack: Arc<Stack>, ctx: &Context<Stack>) -> ReconcileResult {
        self.down(stack, ctx)
            .await
            .map_err(|e| e.while_deleting("the containers"))
    }
}

impl StackReconciler {
    /// The cleanup itself (`compose down` unless Retain); see [`Reconciler::cleanup`].
    async fn down(&self, stack: Arc<Stack>, ctx: &Context<Stack>) -> ReconcileResult {
        let name = stack.metadata.name.clone();
        if let Some(uid) = &stack.metadata.uid {
            self.deployed.lock().expect("deployed lock").remove(uid);
            self.reruns.forget(uid);
        }
        if DeletionPolicy::in_force(&stack.metadata, stack.spec.deletion_policy)
            == DeletionPolicy::Retain
        {
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
