//! The `ssh` delivery target: the delivery steps of [`phoenix_nginx::NginxHost`] run on the
//! gateway guest over SSH. The transport (credentials, host keys, commands) is
//! [`phoenix_ssh`]; what is nginx's (the steps, `nginx -t`, swap, reload) is here.

use std::fmt;
use std::time::{Duration, Instant};

use phoenix_api::client::Client;
use phoenix_api::kinds::gateway::SshNginx;
use phoenix_nginx::{
    ConfigTree, Delivery, DeliveryError, DeliveryReport, NginxHost, ReloadResult, RenderOptions,
    deliver_with,
};
use phoenix_ssh::{CredentialsError, Host, Output, Session, shell_quote as q};
use sha2::{Digest, Sha256};

pub use phoenix_ssh::Credentials;

/// Operator-side SSH settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshSettings {
    /// Accept any host key when the Secret has no `known_hosts`
    /// (`--gateway-ssh-insecure-accept-any-host-key`; test set-ups only).
    pub accept_any_host_key: bool,
}

/// Why the SSH target could not be set up. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The Secret named by `secretRef` is missing, unreadable, or holds no usable key.
    #[error("secretRef: {0}")]
    Credentials(#[from] CredentialsError),
    /// The Secret has no `known_hosts` and accepting any host key was not allowed.
    #[error(
        "secretRef: Secret {0:?} has no known_hosts; host keys are verified (add the gateway's host key, or run with --gateway-ssh-accept-any-host-key in test set-ups)"
    )]
    NoKnownHosts(String),
}

/// Reads the credentials from Secret `name` (type `ssh`: `ssh-privatekey`, optionally
/// `known_hosts`).
pub async fn credentials(client: &Client, name: &str) -> Result<Credentials, SshError> {
    Ok(Credentials::fetch(client, name).await?)
}

/// Commands other than `nginx -t` (staging, swap, reload, prune) end after this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// `nginx -t` ends after this long.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// nginx on a remote host, reached over SSH: the steps of [`NginxHost`] as shell commands
/// (POSIX `sh`, coreutils, `base64`, `find`, `sha256sum`) on that host. Each delivery opens one
/// connection; host keys are checked against the Secret's `known_hosts`.
pub struct SshTarget {
    ssh: Host,
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
            .field("host", &self.ssh.host())
            .field("port", &self.ssh.port())
            .field("user", &self.ssh.user())
            .field("config_dir", &self.config_dir)
            .finish_non_exhaustive()
    }
}

/// Where nginx and the Gateway's trees are on the host: the operator's (ADR 0021).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePaths {
    /// The Gateway's directory (`--gateway-ssh-config-root` joined with `configDir`).
    pub config_dir: String,
    /// The nginx binary (`--gateway-ssh-nginx-binary`).
    pub nginx: String,
}

impl SshTarget {
    /// A target for `host` with `remote`'s port and user, the operator's `paths` on the host
    /// and nginx's run-time paths from `options`. Fails when host keys cannot be verified
    /// and `settings` do not allow that.
    pub fn new(
        host: String,
        remote: &SshNginx,
        paths: RemotePaths,
        credentials: Credentials,
        options: &RenderOptions,
        settings: &SshSettings,
    ) -> Result<SshTarget, SshError> {
        let policy = credentials
            .host_key_policy(settings.accept_any_host_key)
            .map_err(|e| match e {
                CredentialsError::NoKnownHosts(secret) => SshError::NoKnownHosts(secret),
                e => SshError::Credentials(e),
            })?;
        let r = &options.runtime;
        let pid_dir = std::path::Path::new(&r.pid_file)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/".into());
        Ok(SshTarget {
            ssh: Host::new(host, remote.port, remote.user.clone(), credentials, policy),
            config_dir: paths.config_dir.trim_end_matches('/').to_string(),
            nginx: paths.nginx,
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
                self.ssh.user(),
                self.ssh.host(),
                self.ssh.port(),
                self.config_dir
            ),
            source: std::io::Error::other(e.to_string()),
        }
    }
}

#[async_trait::async_trait]
impl Delivery for SshTarget {
    /// [`deliver_with`] over one SSH connection of its own; deliveries through one target run
    /// one at a time.
    async fn deliver(&self, tree: &ConfigTree) -> Result<DeliveryReport, DeliveryError> {
        let _one_at_a_time = self.lock.lock().await;
        let session = self.ssh.connect().await.map_err(|e| {
            let step = match e {
                phoenix_ssh::SshError::Authenticate { .. }
                | phoenix_ssh::SshError::AuthRejected { .. } => "authenticate",
                _ => "connect",
            };
            self.err(step, e)
        })?;
        let remote = Remote {
            target: self,
            session,
            expected: (manifest_of_tree(tree), tree.hash().to_string()),
        };
        let report = deliver_with(&remote, tree).await;
        remote.session.close().await;
        report
    }
}

/// One connection's worth of delivery steps.
struct Remote<'a> {
    target: &'a SshTarget,
    session: Session,
    /// The new tree's manifest digest and hash: a live tree with that manifest is that tree.
    expected: (String, String),
}

impl Remote<'_> {
    async fn run(
        &self,
        step: &'static str,
        command: &str,
        stdin: &[u8],
    ) -> Result<Output, DeliveryError> {
        self.session
            .exec(command, stdin, COMMAND_TIMEOUT)
            .await
            .map_err(|e| self.target.err(step, e))
    }

    /// Runs `command`; any exit but 0 is an error of `step` carrying its stderr.
    async fn ok(
        &self,
        step: &'static str,
        command: &str,
        stdin: &[u8],
    ) -> Result<String, DeliveryError> {
        let e = self.run(step, command, stdin).await?;
        if e.success() {
            Ok(e.stdout_lossy())
        } else {
            Err(self
                .target
                .err(step, format!("exit {}: {}", exit(&e), e.stderr_lossy())))
        }
    }

    fn trees(&self) -> String {
        format!("{}/trees", self.target.config_dir)
    }
}

/// How a command ended: its status, or the signal that ended it.
fn exit(o: &Output) -> String {
    match (o.status, &o.signal) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown".into(),
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
        let e = match self.session.exec(&cmd, b"", TEST_TIMEOUT).await {
            Ok(e) => e,
            Err(phoenix_ssh::SshError::ExecTimeout { after }) => {
                return Err(DeliveryError::TestTimeout { after });
            }
            Err(e) => return Err(self.target.err("test", e)),
        };
        match e.status {
            Some(0) => Ok(Ok(())),
            Some(127) => Err(self.target.err(
                "test",
                format!("{} not found on the host", self.target.nginx),
            )),
            _ => Ok(Err(match e.stderr_lossy() {
                stderr if stderr.is_empty() => format!("nginx -t exited with {}", exit(&e)),
                stderr => stderr,
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
    fn a_command_ends_with_its_status_or_its_signal() {
        let out = |status, signal: Option<&str>| Output {
            status,
            signal: signal.map(str::to_string),
            ..Output::default()
        };
        assert_eq!(exit(&out(Some(1), None)), "1");
        assert_eq!(exit(&out(None, Some("KILL"))), "signal KILL");
        assert_eq!(exit(&out(None, None)), "unknown");
    }
}
