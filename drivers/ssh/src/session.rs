//! Connections: a [`Host`] to reach, [`Session`]s on it, commands and uploads over them.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{Algorithm, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::time::Instant;

use crate::credentials::Credentials;
use crate::known_hosts::{HostKeyVerdict, KnownHosts};

/// Why a connection, command or upload failed. Never carries key material, command lines
/// or uploaded contents.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// TCP connection, SSH handshake or key exchange failed.
    #[error("connecting to {host}:{port}: {source}")]
    Connect {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The error.
        #[source]
        source: russh::Error,
    },
    /// Connecting and logging in took longer than the connect timeout.
    #[error("connecting to {host}:{port}: timed out after {after:?}")]
    ConnectTimeout {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The timeout.
        after: Duration,
    },
    /// `known_hosts` does not name the host.
    #[error("host key of {host}:{port} is unknown: known_hosts has no entry for it; refusing")]
    HostKeyUnknown {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// `known_hosts` names the host with other keys: the key changed, or someone is in between.
    #[error("host key of {host}:{port} does not match known_hosts; refusing")]
    HostKeyMismatch {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// `known_hosts` lists the key as `@revoked`.
    #[error("host key of {host}:{port} is revoked in known_hosts; refusing")]
    HostKeyRevoked {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// Public-key authentication failed in the protocol.
    #[error("authenticating as {user:?}: {source}")]
    Authenticate {
        /// Login user.
        user: String,
        /// The error.
        #[source]
        source: russh::Error,
    },
    /// The server refused the key for the user.
    #[error("the server refused the key for user {user:?}")]
    AuthRejected {
        /// Login user.
        user: String,
    },
    /// Opening a channel for a command failed (the command did not start).
    #[error("opening a channel: {0}")]
    OpenChannel(#[source] russh::Error),
    /// Starting the command or sending its input failed.
    #[error("running a command: {0}")]
    Channel(#[source] russh::Error),
    /// The server refused to start the command.
    #[error("the server refused to run the command")]
    ExecRefused,
    /// The connection ended before the command reported how it exited.
    #[error("the connection ended before the command exited")]
    ConnectionLost,
    /// The command did not finish within its timeout (its process group was killed).
    #[error("the command did not finish within {after:?}")]
    ExecTimeout {
        /// The timeout.
        after: Duration,
    },
    /// The upload's remote commands failed (missing directory, permissions, full disk).
    #[error("uploading {path}: exit {status:?}: {stderr}")]
    UploadFailed {
        /// Remote path.
        path: String,
        /// Exit status, when there was one.
        status: Option<u32>,
        /// The remote stderr, trimmed.
        stderr: String,
    },
}

/// How a server's host key is checked.
#[derive(Debug, Clone)]
pub enum HostKeyPolicy {
    /// Only a key `known_hosts` lists for the host and port (and not `@revoked`).
    KnownHosts(KnownHosts),
    /// Any key, with a warning on every connect. For test set-ups only.
    AcceptAny,
}

/// Output of a remote command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit status; `None` when the command was ended by a signal.
    pub status: Option<u32>,
    /// The signal that ended the command, when one did.
    pub signal: Option<String>,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (invalid UTF-8 replaced), trimmed.
    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// A host reached over SSH as one user with one key: opens [`Session`]s, and keeps one
/// shared session for [`Host::exec`] and [`Host::upload`].
pub struct Host {
    host: String,
    port: u16,
    user: String,
    credentials: Credentials,
    policy: HostKeyPolicy,
    connect_timeout: Duration,
    inactivity_timeout: Option<Duration>,
    shared: tokio::sync::Mutex<Option<Arc<Session>>>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("secret", &self.credentials.secret())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// `user@host:port` with `credentials`' key, host keys checked by `policy`. Connect
    /// timeout 20 s, sessions closed after 300 s without traffic. Does not connect.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        credentials: Credentials,
        policy: HostKeyPolicy,
    ) -> Host {
        Host {
            host: host.into(),
            port,
            user: user.into(),
            credentials,
            policy,
            connect_timeout: Duration::from_secs(20),
            inactivity_timeout: Some(Duration::from_secs(300)),
            shared: tokio::sync::Mutex::new(None),
        }
    }

    /// The limit on connecting and logging in.
    pub fn connect_timeout(mut self, timeout: Duration) -> Host {
        self.connect_timeout = timeout;
        self
    }

    /// Close sessions after this long without traffic (`None`: never).
    pub fn inactivity_timeout(mut self, timeout: Option<Duration>) -> Host {
        self.inactivity_timeout = timeout;
        self
    }

    /// The host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// A new session, logged in, of its own (not the shared one).
    ///
    /// # Guarantees
    /// Nothing is sent to the server under the user's name before its host key passed the
    /// policy. Offers the server only the host key algorithms `known_hosts` lists for it, so
    /// a host with several keys proves the one that is known.
    ///
    /// # Errors
    /// [`SshError::HostKeyUnknown`], [`SshError::HostKeyMismatch`],
    /// [`SshError::HostKeyRevoked`] when the host key is refused; [`SshError::Connect`],
    /// [`SshError::ConnectTimeout`], [`SshError::Authenticate`], [`SshError::AuthRejected`].
    pub async fn connect(&self) -> Result<Session, SshError> {
        match tokio::time::timeout(self.connect_timeout, self.connect_and_login()).await {
            Ok(r) => r,
            Err(_) => Err(SshError::ConnectTimeout {
                host: self.host.clone(),
                port: self.port,
                after: self.connect_timeout,
            }),
        }
    }

    async fn connect_and_login(&self) -> Result<Session, SshError> {
        let mut preferred = russh::Preferred::default();
        if let HostKeyPolicy::KnownHosts(known) = &self.policy {
            let listed = known.algorithms(&self.host, self.port);
            let offered: Vec<Algorithm> = preferred
                .key
                .iter()
                .filter(|a| listed.iter().any(|l| same_key_type(a, l)))
                .cloned()
                .collect();
            if !offered.is_empty() {
                preferred.key = offered.into();
            }
        }
        let config = Arc::new(russh::client::Config {
            inactivity_timeout: self.inactivity_timeout,
            preferred,
            ..Default::default()
        });
        let verdict = Arc::new(Mutex::new(None));
        let check = HostKeyCheck {
            host: self.host.clone(),
            port: self.port,
            policy: self.policy.clone(),
            verdict: verdict.clone(),
        };
        let addr = (self.host.as_str(), self.port);
        let mut handle = match russh::client::connect(config, addr, check).await {
            Ok(h) => h,
            Err(source) => {
                let (host, port) = (self.host.clone(), self.port);
                let verdict = verdict.lock().map(|mut v| v.take()).unwrap_or(None);
                return Err(match verdict {
                    Some(HostKeyVerdict::Unknown) => SshError::HostKeyUnknown { host, port },
                    Some(HostKeyVerdict::Mismatch) => SshError::HostKeyMismatch { host, port },
                    Some(HostKeyVerdict::Revoked) => SshError::HostKeyRevoked { host, port },
                    Some(HostKeyVerdict::Trusted) | None => {
                        SshError::Connect { host, port, source }
                    }
                });
            }
        };
        let auth = |source| SshError::Authenticate {
            user: self.user.clone(),
            source,
        };
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(auth)?
            .flatten();
        let key = PrivateKeyWithHashAlg::new(self.credentials.key(), hash);
        let result = handle
            .authenticate_publickey(self.user.clone(), key)
            .await
            .map_err(auth)?;
        if !result.success() {
            return Err(SshError::AuthRejected {
                user: self.user.clone(),
            });
        }
        Ok(Session { handle })
    }

    /// The shared session: the open one, else a new one ([`Host::connect`]). Callers using
    /// it at once share one connection.
    pub async fn session(&self) -> Result<Arc<Session>, SshError> {
        let mut shared = self.shared.lock().await;
        if let Some(s) = shared.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let s = Arc::new(self.connect().await?);
        *shared = Some(s.clone());
        Ok(s)
    }

    /// Drops `dead` as the shared session, unless another one replaced it already.
    async fn forget(&self, dead: &Arc<Session>) {
        let mut shared = self.shared.lock().await;
        if shared.as_ref().is_some_and(|s| Arc::ptr_eq(s, dead)) {
            *shared = None;
        }
    }

    /// [`Session::exec`] on the shared session.
    ///
    /// # Caveats
    /// When the shared session turns out dead before the command started
    /// ([`SshError::OpenChannel`]), it is reopened and the command started once more. A
    /// session that dies while the command runs fails it ([`SshError::ConnectionLost`]) and
    /// is reopened by the next use: a command is never run twice by this crate.
    pub async fn exec(
        &self,
        command: &str,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<Output, SshError> {
        let s = self.session().await?;
        match s.exec(command, stdin, timeout).await {
            Err(SshError::OpenChannel(_)) => {
                self.forget(&s).await;
                self.session().await?.exec(command, stdin, timeout).await
            }
            r => r,
        }
    }

    /// [`Session::upload`] on the shared session, reopened as for [`Host::exec`].
    pub async fn upload(
        &self,
        path: &str,
        contents: &[u8],
        mode: u32,
        timeout: Duration,
    ) -> Result<(), SshError> {
        let s = self.session().await?;
        match s.upload(path, contents, mode, timeout).await {
            Err(SshError::OpenChannel(_)) => {
                self.forget(&s).await;
                self.session()
                    .await?
                    .upload(path, contents, mode, timeout)
                    .await
            }
            r => r,
        }
    }

    /// Closes the shared session, if any; the next use reconnects.
    pub async fn close(&self) {
        if let Some(s) = self.shared.lock().await.take() {
            s.close().await;
        }
    }
}

/// RSA keys are one key type whatever the signature hash; others must be equal.
fn same_key_type(a: &Algorithm, b: &Algorithm) -> bool {
    match (a, b) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
        _ => a == b,
    }
}

struct HostKeyCheck {
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    /// Why the key was refused, for the error `connect` returns.
    verdict: Arc<Mutex<Option<HostKeyVerdict>>>,
}

impl russh::client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let known = match &self.policy {
            HostKeyPolicy::AcceptAny => {
                tracing::warn!(host = %self.host, port = self.port, "accepting the SSH host key unverified (accept any host key is set)");
                return Ok(true);
            }
            HostKeyPolicy::KnownHosts(known) => known,
        };
        // Host certificates are never asked for; one offered anyway is not trusted.
        let verdict = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                known.verify(&self.host, self.port, key)
            }
            PublicKeyOrCertificate::Certificate(_) => HostKeyVerdict::Unknown,
        };
        if verdict != HostKeyVerdict::Trusted {
            tracing::warn!(host = %self.host, port = self.port, ?verdict, "SSH host key refused");
        }
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some(verdict);
        }
        Ok(verdict == HostKeyVerdict::Trusted)
    }
}

/// A logged-in SSH connection. Commands on it may run at once, each on its own channel.
pub struct Session {
    handle: russh::client::Handle<HostKeyCheck>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// `s` quoted for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Session {
    /// Runs `command` (by the user's login shell), writes `stdin` to it and closes its
    /// input, and collects its output until it exits.
    ///
    /// # Guarantees
    /// A non-zero exit is not an error: see [`Output::status`]. On timeout the command's
    /// process group (the command and what it started, unless they left the group) is killed
    /// with `SIGKILL` before this returns, when the connection still works.
    ///
    /// # Caveats
    /// Output is held in memory. The login shell must be POSIX (`$$`, `printf`); when a
    /// start-up file of it writes to stderr first, the process group is not known and a
    /// timeout only closes the channel, leaving the command running.
    ///
    /// # Errors
    /// [`SshError::OpenChannel`], [`SshError::Channel`], [`SshError::ExecRefused`],
    /// [`SshError::ConnectionLost`], [`SshError::ExecTimeout`].
    pub async fn exec(
        &self,
        command: &str,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<Output, SshError> {
        let deadline = Instant::now() + timeout;
        let timed_out = |_| SshError::ExecTimeout { after: timeout };
        let mut ch = tokio::time::timeout_at(deadline, self.handle.channel_open_session())
            .await
            .map_err(timed_out)?
            .map_err(SshError::OpenChannel)?;
        // sshd starts each command in a process group of its own (setsid); its leader, the
        // login shell, says which, so a command past its timeout can be killed whole (OpenSSH
        // refuses signal requests for root logins).
        let announced = format!("printf '{GROUP_MARK}%s\\n' \"$$\" >&2\n{command}");
        let started = tokio::time::timeout_at(deadline, async {
            ch.exec(true, announced).await?;
            if !stdin.is_empty() {
                ch.data(stdin).await?;
            }
            ch.eof().await
        })
        .await;
        let mut out = Output::default();
        let collected = match started {
            Ok(Ok(())) => tokio::time::timeout_at(deadline, collect(&mut ch, &mut out)).await,
            Ok(Err(e)) => return Err(SshError::Channel(e)),
            Err(elapsed) => Err(elapsed),
        };
        let group = take_group(&mut out.stderr);
        match collected {
            Ok(r) => r.map(|()| out),
            Err(elapsed) => {
                if let Some(group) = group {
                    self.kill_group(group).await;
                }
                let _ = ch.signal(russh::Sig::KILL).await;
                let _ = ch.close().await;
                Err(timed_out(elapsed))
            }
        }
    }

    /// Sends `SIGKILL` to process group `group` and waits (up to 10 s) for that to be done.
    async fn kill_group(&self, group: u32) {
        let kill = async {
            let mut ch = self.handle.channel_open_session().await.ok()?;
            ch.exec(true, format!("kill -9 -{group}")).await.ok()?;
            ch.eof().await.ok()?;
            while ch.wait().await.is_some() {}
            Some(())
        };
        if tokio::time::timeout(Duration::from_secs(10), kill)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            tracing::warn!(group, "could not kill a remote command past its timeout");
        }
    }

    /// Writes `contents` to `path` with `mode` atomically: into a temporary file in the same
    /// directory, flushed to disk, then renamed over `path`. A relative `path` is relative to
    /// the user's home directory.
    ///
    /// # Guarantees
    /// Readers of `path` see the old file or the new one, never a part; a failed upload
    /// leaves `path` as it was and removes its temporary file (unless the connection died).
    ///
    /// # Caveats
    /// The directory must exist. Needs POSIX `sh`, `mktemp`, `cat`, `chmod`, `mv` there.
    ///
    /// # Errors
    /// [`SshError::UploadFailed`] when a remote step fails, else as [`Session::exec`].
    pub async fn upload(
        &self,
        path: &str,
        contents: &[u8],
        mode: u32,
        timeout: Duration,
    ) -> Result<(), SshError> {
        let target = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("./{path}")
        };
        let script = format!(
            r#"set -e; umask 077; p={p}; t=$(mktemp "$(dirname "$p")/.phoenix-upload.XXXXXX"); trap 'rm -f "$t"' EXIT; cat > "$t"; chmod {mode:o} "$t"; sync "$t" 2>/dev/null || sync; mv -f "$t" "$p"; trap - EXIT"#,
            p = shell_quote(&target),
            mode = mode & 0o7777,
        );
        let out = self
            .exec(
                &format!("sh -c {}", shell_quote(&script)),
                contents,
                timeout,
            )
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(SshError::UploadFailed {
                path: path.to_string(),
                status: out.status,
                stderr: out.stderr_lossy(),
            })
        }
    }

    /// Whether the connection has ended (then every use fails).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Ends the connection politely; errors are ignored (it is gone either way).
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// The first line of a command's stderr: its process group, which is not its output.
const GROUP_MARK: &str = "phoenix-ssh-process-group:";

/// The process group announced at the start of `stderr`, taken out of it.
fn take_group(stderr: &mut Vec<u8>) -> Option<u32> {
    let rest = stderr.strip_prefix(GROUP_MARK.as_bytes())?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let group = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    stderr.drain(..GROUP_MARK.len() + end + 1);
    Some(group)
}

/// Reads the channel into `out` until it closes: output, then exit status or signal.
async fn collect(
    ch: &mut russh::Channel<russh::client::Msg>,
    out: &mut Output,
) -> Result<(), SshError> {
    let mut exited = false;
    while let Some(msg) = ch.wait().await {
        match msg {
            russh::ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
            russh::ChannelMsg::ExtendedData { data, ext: 1 } => out.stderr.extend_from_slice(&data),
            russh::ChannelMsg::ExitStatus { exit_status } => {
                out.status = Some(exit_status);
                exited = true;
            }
            russh::ChannelMsg::ExitSignal { signal_name, .. } => {
                out.signal = Some(match signal_name {
                    russh::Sig::Custom(name) => name,
                    other => format!("{other:?}"),
                });
                exited = true;
            }
            russh::ChannelMsg::Failure => return Err(SshError::ExecRefused),
            _ => {}
        }
    }
    if exited {
        Ok(())
    } else {
        Err(SshError::ConnectionLost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announced_process_group_is_not_part_of_stderr() {
        let mut stderr = format!("{GROUP_MARK}4242\nwarning: x\n").into_bytes();
        assert_eq!(take_group(&mut stderr), Some(4242));
        assert_eq!(stderr, b"warning: x\n");
        let mut plain = b"no mark\n".to_vec();
        assert_eq!(take_group(&mut plain), None);
        assert_eq!(plain, b"no mark\n");
        let mut partial = format!("{GROUP_MARK}42").into_bytes();
        assert_eq!(take_group(&mut partial), None);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/etc/nginx"), "'/etc/nginx'");
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }

    #[test]
    fn rsa_is_one_key_type_whatever_the_hash() {
        use russh::keys::HashAlg;
        let rsa = |hash| Algorithm::Rsa { hash };
        assert!(same_key_type(&rsa(Some(HashAlg::Sha512)), &rsa(None)));
        assert!(!same_key_type(&Algorithm::Ed25519, &rsa(None)));
        assert!(same_key_type(&Algorithm::Ed25519, &Algorithm::Ed25519));
    }
}
