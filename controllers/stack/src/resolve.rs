//! Where a Stack runs (its Docker host, with a connected client cached per endpoint or SSH
//! login) and the variables it is deployed with (`env` plus the `envFrom` Secrets' values).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use phoenix_api::kinds::{Guest, Secret, Stack};
use phoenix_runtime::{Context, ReconcileError};
use phoenix_ssh::{Credentials, CredentialsError, Host};
use sha2::{Digest, Sha256};

use crate::engine::{self, Endpoint};
use crate::reconciler::StackReconciler;
use crate::target::{self, Remote};

/// Where one Stack runs.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// Names the Docker host (shared list key, metrics label).
    pub(crate) key: String,
    pub(crate) endpoint: Endpoint,
    /// `tcp://` targets: the directory with `ca.pem`, `cert.pem`, `key.pem` (0600).
    pub(crate) tls_dir: Option<std::path::PathBuf>,
}

/// The variables of a Stack, and which values are secret.
pub(crate) struct Env {
    pub(crate) vars: BTreeMap<String, String>,
    pub(crate) secrets: Vec<String>,
}

impl StackReconciler {
    /// `spec.env` plus the `envFrom` Secrets' values. With `lenient` (cleanup), a missing
    /// Secret or key gives an empty value instead of an error.
    pub(crate) async fn env(
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
    pub(crate) async fn resolve(
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
