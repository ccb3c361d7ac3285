//! The `ssh` delivery target: the delivery steps of [`phoenix_nginx::NginxHost`] run on the
//! gateway guest over SSH.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use phoenix_api::client::{Client, ClientError};
use phoenix_api::kinds::gateway::SshNginx;
use phoenix_api::kinds::secret::SecretType;
use phoenix_api::{Kind, Object};
use phoenix_nginx::{
    ConfigTree, Delivery, DeliveryError, DeliveryReport, NginxHost, ReloadResult, RenderOptions,
    deliver_with,
};
use sha2::{Digest, Sha256};

/// Operator-side SSH settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshSettings {
    /// Accept any host key when the Secret has no `known_hosts`
    /// (`--gateway-ssh-insecure-accept-any-host-key`; test set-ups only).
    pub accept_any_host_key: bool,
}

/// Why the SSH target could not be set up or used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The Secret named by `secretRef` does not exist (yet).
    #[error("secretRef: Secret {0:?} not found")]
    SecretMissing(String),
    /// The Secret is not of type `ssh` or lacks a readable `ssh-privatekey`.
    #[error("secretRef: Secret {secret:?} {reason}")]
    SecretInvalid {
        /// Secret name.
        secret: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading the Secret failed.
    #[error("reading Secret {secret:?}: {source}")]
    Api {
        /// Secret name.
        secret: String,
        /// The error.
        #[source]
        source: Box<ClientError>,
    },
    /// The Secret has no `known_hosts` and accepting any host key was not allowed.
    #[error(
        "secretRef: Secret {0:?} has no known_hosts; host keys are verified (add the gateway's host key, or run with --gateway-ssh-accept-any-host-key in test set-ups)"
    )]
    NoKnownHosts(String),
    /// The private key could not be read.
    #[error("secretRef: Secret {secret:?}: ssh-privatekey is not a usable private key: {reason}")]
    BadKey {
        /// Secret name.
        secret: String,
        /// Why (no key material).
        reason: String,
    },
}

/// The private key and known host keys from an `ssh` Secret. `Debug` shows no key.
#[derive(Clone)]
pub struct Credentials {
    secret: String,
    key: Arc<russh::keys::PrivateKey>,
    /// `known_hosts` lines, when the Secret has them.
    pub known_hosts: Option<String>,
    fingerprint: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("private_key", &"<redacted>")
            .field("known_hosts", &self.known_hosts.is_some())
            .finish()
    }
}

impl Credentials {
    /// A digest of the credentials (changes when the Secret's content changes; reveals
    /// nothing of it).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Reads the credentials from Secret `name` (type `ssh`: `ssh-privatekey`, optionally
/// `known_hosts`).
pub async fn credentials(client: &Client, name: &str) -> Result<Credentials, SshError> {
    let secret = match client.get(Kind::Secret, name).await {
        Ok(Object::Secret(s)) => s,
        Ok(_) | Err(ClientError::NotFound(_)) => return Err(SshError::SecretMissing(name.into())),
        Err(source) => {
            return Err(SshError::Api {
                secret: name.into(),
                source: Box::new(source),
            });
        }
    };
    let invalid = |reason: &str| SshError::SecretInvalid {
        secret: name.into(),
        reason: reason.into(),
    };
    if secret.type_ != SecretType::Ssh {
        return Err(invalid("is not of type ssh"));
    }
    let read = |key: &str| -> Option<String> {
        let raw = match secret.data.get(key) {
            Some(v) => base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()?,
            None => secret.string_data.get(key)?.as_bytes().to_vec(),
        };
        String::from_utf8(raw).ok()
    };
    let private_key =
        read("ssh-privatekey").ok_or_else(|| invalid("has no readable ssh-privatekey"))?;
    Credentials::new(name, &private_key, read("known_hosts"))
}

impl Credentials {
    /// Credentials from Secret `secret`'s `ssh-privatekey` (OpenSSH or PEM, unencrypted) and
    /// `known_hosts` lines (`HOST` for port 22 or `[HOST]:PORT`, then the key; hashed names
    /// are not supported).
    pub fn new(
        secret: &str,
        private_key: &str,
        known_hosts: Option<String>,
    ) -> Result<Credentials, SshError> {
        let known_hosts = known_hosts.filter(|k| !k.trim().is_empty());
        let key =
            russh::keys::decode_secret_key(private_key, None).map_err(|e| SshError::BadKey {
                secret: secret.into(),
                reason: e.to_string(),
            })?;
        let mut h = Sha256::new();
        h.update(private_key.as_bytes());
        h.update([0]);
        h.update(known_hosts.as_deref().unwrap_or("").as_bytes());
        Ok(Credentials {
            secret: secret.into(),
            key: Arc::new(key),
            known_hosts,
            fingerprint: hex::encode(&h.finalize()[..8]),
        })
    }
}

/// Whether `line` of a `known_hosts` file names `host` (port 22) or `[host]:port`, and its key.
fn known_key(line: &str, host: &str, port: u16) -> Option<russh::keys::PublicKey> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut parts = line.split_whitespace();
    let patterns = parts.next()?;
    let (kind, data) = (parts.next()?, parts.next()?);
    let bracketed = format!("[{host}]:{port}");
    let names = patterns
        .split(',')
        .any(|p| p == bracketed || (port == 22 && p == host));
    if !names {
        return None;
    }
    russh::keys::PublicKey::from_openssh(&format!("{kind} {data}")).ok()
}

struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: Option<String>,
}

impl russh::client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &russh::keys::PublicKey,
    ) -> Result<bool, Self::Error> {
        let Some(known) = &self.known_hosts else {
            tracing::warn!(host = %self.host, "accepting the SSH host key unverified (--gateway-ssh-accept-any-host-key)");
            return Ok(true);
        };
        let ok = known
            .lines()
            .filter_map(|l| known_key(l, &self.host, self.port))
            .any(|k| k.key_data() == server_public_key.key_data());
        if !ok {
            tracing::warn!(host = %self.host, port = self.port, "SSH host key not in known_hosts; refusing");
        }
        Ok(ok)
    }
}

/// `s` quoted for a POSIX shell.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// nginx on a remote host, reached over SSH: the steps of [`NginxHost`] as shell commands
/// (POSIX `sh`, coreutils, `base64`, `find`, `sha256sum`) on that host. Each delivery opens one
/// connection; host keys are checked against the Secret's `known_hosts`.
pub struct SshTarget {
    host: String,
    port: u16,
    user: String,
    credentials: Credentials,
    accept_any_host_key: bool,
    config_dir: String,
    nginx: String,
    pid_file: String,
    error_log: String,
    runtime_dirs: Vec<String>,
    lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("config_dir", &self.config_dir)
            .finish_non_exhaustive()
    }
}

impl SshTarget {
    /// A target for `host` with `remote`'s port, user and paths; nginx's run-time paths from
    /// `options`. Fails when host keys cannot be verified and `settings` do not allow that.
    pub fn new(
        host: String,
        remote: &SshNginx,
        credentials: Credentials,
        options: &RenderOptions,
        settings: &SshSettings,
    ) -> Result<SshTarget, SshError> {
        if credentials.known_hosts.is_none() && !settings.accept_any_host_key {
            return Err(SshError::NoKnownHosts(credentials.secret.clone()));
        }
        let r = &options.runtime;
        let pid_dir = std::path::Path::new(&r.pid_file)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/".into());
        Ok(SshTarget {
            host,
            port: remote.port,
            user: remote.user.clone(),
            credentials,
            accept_any_host_key: settings.accept_any_host_key,
            config_dir: remote.config_dir.trim_end_matches('/').to_string(),
            nginx: remote.nginx_binary.clone(),
            pid_file: r.pid_file.clone(),
            error_log: options.error_log(),
            runtime_dirs: vec![
                r.log_dir.clone(),
                r.temp_dir.clone(),
                r.cache_dir.clone(),
                pid_dir,
            ],
            lock: tokio::sync::Mutex::new(()),
        })
    }

    fn err(&self, step: &'static str, e: impl fmt::Display) -> DeliveryError {
        DeliveryError::Io {
            step,
            path: format!(
                "ssh://{}@{}:{}{}",
                self.user, self.host, self.port, self.config_dir
            ),
            source: std::io::Error::other(e.to_string()),
        }
    }

    async fn connect(&self) -> Result<russh::client::Handle<HostKeyCheck>, DeliveryError> {
        let config = Arc::new(russh::client::Config {
            inactivity_timeout: Some(Duration::from_secs(300)),
            ..Default::default()
        });
        let check = HostKeyCheck {
            host: self.host.clone(),
            port: self.port,
            known_hosts: if self.accept_any_host_key {
                self.credentials.known_hosts.clone()
            } else {
                Some(self.credentials.known_hosts.clone().unwrap_or_default())
            },
        };
        let addr = (self.host.as_str(), self.port);
        let mut handle = tokio::time::timeout(
            Duration::from_secs(20),
            russh::client::connect(config, addr, check),
        )
        .await
        .map_err(|_| self.err("connect", "timed out"))?
        .map_err(|e| self.err("connect", e))?;
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| self.err("authenticate", e))?
            .flatten();
        let auth = handle
            .authenticate_publickey(
                self.user.clone(),
                russh::keys::PrivateKeyWithHashAlg::new(self.credentials.key.clone(), hash),
            )
            .await
            .map_err(|e| self.err("authenticate", e))?;
        if !auth.success() {
            return Err(self.err(
                "authenticate",
                format!("the server refused the key for user {:?}", self.user),
            ));
        }
        Ok(handle)
    }
}

#[async_trait::async_trait]
impl Delivery for SshTarget {
    /// [`deliver_with`] over one SSH connection; deliveries through one target run one at a
    /// time.
    async fn deliver(&self, tree: &ConfigTree) -> Result<DeliveryReport, DeliveryError> {
        let _one_at_a_time = self.lock.lock().await;
        let handle = self.connect().await?;
        let remote = Remote {
            target: self,
            handle,
            expected: (manifest_of_tree(tree), tree.hash().to_string()),
        };
        let report = deliver_with(&remote, tree).await;
        let _ = remote
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        report
    }
}

/// Output of one remote command.
struct Exec {
    code: Option<u32>,
    stdout: String,
    stderr: String,
}

/// One connection's worth of delivery steps.
struct Remote<'a> {
    target: &'a SshTarget,
    handle: russh::client::Handle<HostKeyCheck>,
    /// The new tree's manifest digest and hash: a live tree with that manifest is that tree.
    expected: (String, String),
}

impl Remote<'_> {
    async fn run(
        &self,
        step: &'static str,
        command: &str,
        stdin: &[u8],
    ) -> Result<Exec, DeliveryError> {
        let t = self.target;
        let mut ch = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| t.err(step, e))?;
        ch.exec(true, command).await.map_err(|e| t.err(step, e))?;
        if !stdin.is_empty() {
            ch.data(stdin).await.map_err(|e| t.err(step, e))?;
        }
        ch.eof().await.map_err(|e| t.err(step, e))?;
        let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
        while let Some(msg) = ch.wait().await {
            match msg {
                russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
                russh::ChannelMsg::ExtendedData { data, ext: 1 } => err.extend_from_slice(&data),
                russh::ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                _ => {}
            }
        }
        Ok(Exec {
            code,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).trim().to_string(),
        })
    }

    /// Runs `command`; any exit but 0 is an error of `step` carrying its stderr.
    async fn ok(
        &self,
        step: &'static str,
        command: &str,
        stdin: &[u8],
    ) -> Result<String, DeliveryError> {
        let e = self.run(step, command, stdin).await?;
        if e.code == Some(0) {
            Ok(e.stdout)
        } else {
            Err(self
                .target
                .err(step, format!("exit {:?}: {}", e.code, e.stderr)))
        }
    }

    fn trees(&self) -> String {
        format!("{}/trees", self.target.config_dir)
    }
}

/// A digest of `(path, mode, sha256)` of every file, sorted by path.
fn manifest(entries: &mut [(String, String, String)]) -> String {
    entries.sort();
    let mut h = Sha256::new();
    for (path, mode, sha) in entries.iter() {
        h.update(format!("{path} {mode} {sha}\n").as_bytes());
    }
    format!("manifest:{}", hex::encode(h.finalize()))
}

fn manifest_of_tree(tree: &ConfigTree) -> String {
    let mut entries: Vec<_> = tree
        .files()
        .map(|(p, f)| {
            (
                p.to_string(),
                format!("{:o}", f.mode),
                hex::encode(Sha256::digest(&f.contents)),
            )
        })
        .collect();
    manifest(&mut entries)
}

#[async_trait::async_trait]
impl NginxHost for Remote<'_> {
    /// The live tree's manifest (path, mode, SHA-256 of every file, read on the host); when it
    /// equals the new tree's, the new tree's hash.
    async fn live_hash(&self) -> Result<Option<String>, DeliveryError> {
        let cur = format!("{}/current", self.target.config_dir);
        let cmd = format!(
            "cd {} 2>/dev/null || exit 0; echo HASHES; find . -type f -print0 | xargs -0 -r sha256sum; echo MODES; find . -type f -printf '%m %p\\n'",
            q(&cur)
        );
        let out = self.ok("read", &cmd, b"").await?;
        if !out.starts_with("HASHES") {
            return Ok(None);
        }
        let (hashes, modes) = out.split_once("MODES\n").unwrap_or((&out, ""));
        let mut sha = std::collections::BTreeMap::new();
        for l in hashes.lines().skip(1) {
            if let Some((h, p)) = l.split_once("  ") {
                sha.insert(p.trim_start_matches("./").to_string(), h.to_string());
            }
        }
        let mut entries = Vec::new();
        for l in modes.lines() {
            if let Some((m, p)) = l.split_once(' ') {
                let p = p.trim_start_matches("./").to_string();
                let h = sha.get(&p).cloned().unwrap_or_default();
                entries.push((p, m.to_string(), h));
            }
        }
        let live = manifest(&mut entries);
        Ok(Some(if live == self.expected.0 {
            self.expected.1.clone()
        } else {
            live
        }))
    }

    async fn stage(&self, tree: &ConfigTree) -> Result<String, DeliveryError> {
        use base64::Engine as _;
        let nanos = jiff::Timestamp::now().as_nanosecond();
        let id = format!("{}-{nanos}", &tree.hash_hex()[..16]);
        let dir = format!("{}/.staging-{id}", self.trees());
        let mut script = String::from("set -e\numask 077\n");
        for d in &self.target.runtime_dirs {
            script.push_str(&format!("mkdir -p {}\n", q(d)));
        }
        script.push_str(&format!(
            "mkdir -p {}\nmkdir {}\ncd {}\nchmod 755 .\n",
            q(&self.trees()),
            q(&dir),
            q(&dir)
        ));
        let mut dirs = std::collections::BTreeSet::new();
        for (path, file) in tree.files() {
            if let Some((parent, _)) = path.rsplit_once('/')
                && dirs.insert(parent.to_string())
            {
                let mode = if parent.ends_with("tls") {
                    "700"
                } else {
                    "755"
                };
                script.push_str(&format!("mkdir -p {p}\nchmod {mode} {p}\n", p = q(parent)));
            }
            let b64 = base64::engine::general_purpose::STANDARD.encode(&file.contents);
            script.push_str(&format!("base64 -d > {} <<'__PHOENIX_EOF__'\n", q(path)));
            for chunk in b64.as_bytes().chunks(76) {
                script.push_str(std::str::from_utf8(chunk).unwrap_or_default());
                script.push('\n');
            }
            script.push_str(&format!(
                "__PHOENIX_EOF__\nchmod {:o} {}\n",
                file.mode,
                q(path)
            ));
        }
        script.push_str("sync\n");
        self.ok("stage", "sh -s", script.as_bytes()).await?;
        Ok(id)
    }

    async fn test(&self, staged: &str) -> Result<Result<(), String>, DeliveryError> {
        let conf = format!("{}/.staging-{staged}/nginx.conf", self.trees());
        let cmd = format!("{} -t -q -e stderr -c {}", q(&self.target.nginx), q(&conf));
        let e = tokio::time::timeout(Duration::from_secs(120), self.run("test", &cmd, b""))
            .await
            .map_err(|_| DeliveryError::TestTimeout {
                after: Duration::from_secs(120),
            })??;
        match e.code {
            Some(0) => Ok(Ok(())),
            Some(127) => Err(self.target.err(
                "test",
                format!("{} not found on the host", self.target.nginx),
            )),
            code => Ok(Err(if e.stderr.is_empty() {
                format!("nginx -t exited with {code:?}")
            } else {
                e.stderr
            })),
        }
    }

    async fn discard(&self, staged: &str) -> Result<(), DeliveryError> {
        let t = self.trees();
        let cmd = format!(
            "rm -rf -- {} {}",
            q(&format!("{t}/.staging-{staged}")),
            q(&format!("{t}/{staged}"))
        );
        self.ok("discard", &cmd, b"").await.map(|_| ())
    }

    async fn activate(&self, staged: &str) -> Result<Option<String>, DeliveryError> {
        let cmd = format!(
            "set -e; cd {dir}; mv trees/.staging-{id} trees/{id}; prev=$(readlink current 2>/dev/null || true); ln -sfn trees/{id} .current.new; mv -T .current.new current; if [ -n \"$prev\" ]; then ln -sfn \"$prev\" .previous.new; mv -T .previous.new previous; fi; echo \"${{prev#trees/}}\"",
            dir = q(&self.target.config_dir),
            id = q(staged),
        );
        let out = self.ok("swap", &cmd, b"").await?;
        let prev = out.trim();
        Ok((!prev.is_empty()).then(|| prev.to_string()))
    }

    async fn restore(&self, previous: Option<&str>) -> Result<(), DeliveryError> {
        let dir = q(&self.target.config_dir);
        let cmd = match previous {
            Some(p) => format!(
                "set -e; cd {dir}; ln -sfn trees/{} .current.new; mv -T .current.new current",
                q(p)
            ),
            None => format!("rm -f {dir}/current"),
        };
        self.ok("restore", &cmd, b"").await.map(|_| ())
    }

    /// `SIGHUP` to the master in the PID file; done when it has new children, failed when
    /// nginx logs `[emerg]` after its `reconfiguring` line or no new workers appear in 10 s.
    async fn reload(&self) -> Result<ReloadResult, DeliveryError> {
        let script = format!(
            r#"pidfile={pid}; log={log}
pid=$(cat "$pidfile" 2>/dev/null) || {{ echo RESULT notrunning; exit 0; }}
kill -0 "$pid" 2>/dev/null || {{ echo RESULT notrunning; exit 0; }}
kids() {{ cat /proc/"$pid"/task/*/children 2>/dev/null; }}
before=" $(kids | tr '\n' ' ') "
off=$(stat -c %s "$log" 2>/dev/null || echo 0)
kill -HUP "$pid"
i=0
while [ $i -lt 2000 ]; do
  sleep 0.005
  for c in $(kids); do case "$before" in *" $c "*) ;; *) new=1 ;; esac; done
  if [ -n "$new" ]; then
    j=0
    while [ $j -lt 400 ]; do
      old=
      for c in $(kids); do case "$before" in *" $c "*) old=1 ;; esac; done
      [ -z "$old" ] && break
      sleep 0.005; j=$((j+1))
    done
    echo RESULT reloaded; exit 0
  fi
  emerg=$(tail -c +$((off+1)) "$log" 2>/dev/null | sed -n '/reconfiguring/,$p' | grep '\[emerg\]' || true)
  if [ -n "$emerg" ]; then printf '%s\n' "$emerg"; echo RESULT failed; exit 0; fi
  kill -0 "$pid" 2>/dev/null || {{ echo "the nginx master exited"; echo RESULT failed; exit 0; }}
  i=$((i+1))
done
echo "nginx started no new worker processes within 10s"; echo RESULT failed
"#,
            pid = q(&self.target.pid_file),
            log = q(&self.target.error_log),
        );
        let started = Instant::now();
        let out = self.ok("reload", "sh -s", script.as_bytes()).await?;
        tracing::debug!(took = ?started.elapsed(), "remote reload");
        let (text, result) = out
            .trim_end()
            .rsplit_once("RESULT ")
            .unwrap_or(("", out.trim()));
        Ok(match result.trim() {
            "reloaded" => ReloadResult::Reloaded,
            "notrunning" => ReloadResult::NotRunning,
            _ => ReloadResult::Failed(text.trim().to_string()),
        })
    }

    async fn prune(&self) -> Result<(), DeliveryError> {
        let cmd = format!(
            "cd {dir} || exit 0; cur=$(readlink current 2>/dev/null | sed 's#.*/##'); prev=$(readlink previous 2>/dev/null | sed 's#.*/##'); cd trees || exit 0; for d in * .staging-*; do [ -e \"$d\" ] || continue; [ \"$d\" = \"$cur\" ] || [ \"$d\" = \"$prev\" ] || rm -rf -- \"$d\"; done",
            dir = q(&self.target.config_dir)
        );
        self.ok("prune", &cmd, b"").await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_lines_match_host_and_port() {
        let line = "[127.0.0.1]:2222,gw.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops";
        assert!(known_key(line, "127.0.0.1", 2222).is_some());
        assert!(known_key(line, "127.0.0.1", 22).is_none());
        assert!(known_key(line, "10.0.0.1", 2222).is_none());
        assert!(known_key("# comment", "x", 22).is_none());
        let plain = "gw.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        assert!(known_key(plain, "gw.example", 22).is_some());
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(q("/etc/nginx"), "'/etc/nginx'");
        assert_eq!(q("a'b"), "'a'\\''b'");
    }
}
