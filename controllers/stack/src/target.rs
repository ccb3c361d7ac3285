//! Where a Stack runs and how compose is run there (ADR 0023): `docker` targets run the
//! operator's compose binary locally with `DOCKER_HOST` set; `ssh` targets upload the compose
//! file with the shared SSH transport and run compose on the guest.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use phoenix_ssh::{Host, Output, SshError, shell_quote as q};

/// Output kept from a failing command (the end of stderr, where compose says why).
const TAIL: usize = 2000;

/// Why running something on a target failed. Never carries env values.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The SSH transport failed (connect, host key, login, command start).
    #[error("ssh {host}: {source}")]
    Ssh {
        /// `user@host:port`.
        host: String,
        /// The transport's error.
        source: Box<SshError>,
    },
    /// A command ran and exited non-zero.
    #[error("{what} failed ({status}): {output}")]
    Failed {
        /// What ran (`compose up`, `docker ps`, ...).
        what: String,
        /// Exit status or signal.
        status: String,
        /// The end of its stderr (stdout when stderr is empty), secrets scrubbed.
        output: String,
    },
    /// The local compose binary could not be started.
    #[error("starting {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// Why.
        source: std::io::Error,
    },
    /// Writing the compose file into the work directory failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A local command ran longer than its timeout and was killed.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// What ran.
        what: String,
        /// The timeout.
        after: Duration,
    },
}

/// A Docker host reached over SSH, with one shared session.
pub struct Remote {
    host: Host,
    timeout: Duration,
    docker: String,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("host", &self.host_name())
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// A remote host where `docker` is the docker CLI command; commands end after `timeout`.
    pub fn new(host: Host, timeout: Duration, docker: String) -> Remote {
        Remote {
            host,
            timeout,
            docker,
        }
    }

    /// The docker CLI command on this host (`docker`, or the operator's).
    pub fn docker(&self) -> &str {
        &self.docker
    }

    /// `ssh://user@host:port`.
    pub fn host_name(&self) -> String {
        format!(
            "ssh://{}@{}:{}",
            self.host.user(),
            self.host.host(),
            self.host.port()
        )
    }

    fn ssh_err(&self, source: SshError) -> TargetError {
        TargetError::Ssh {
            host: self.host_name(),
            source: Box::new(source),
        }
    }

    /// Runs `command` with `stdin`; its stdout when it exits 0.
    ///
    /// # Errors
    /// [`TargetError::Ssh`], or [`TargetError::Failed`] with the end of its output.
    pub async fn run(&self, command: &str, stdin: &[u8]) -> Result<String, TargetError> {
        let out = self
            .host
            .exec(command, stdin, self.timeout)
            .await
            .map_err(|e| self.ssh_err(e))?;
        check(command_name(command), &out, &[])
    }

    async fn upload(&self, path: &str, contents: &[u8]) -> Result<(), TargetError> {
        self.host
            .upload(path, contents, 0o600, self.timeout)
            .await
            .map_err(|e| self.ssh_err(e))
    }
}

fn command_name(command: &str) -> String {
    command
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn check(what: String, out: &Output, secrets: &[&str]) -> Result<String, TargetError> {
    if out.success() {
        return Ok(out.stdout_lossy());
    }
    let status = match (&out.status, &out.signal) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "no exit status".into(),
    };
    let text = if out.stderr.is_empty() {
        out.stdout_lossy()
    } else {
        out.stderr_lossy()
    };
    Err(TargetError::Failed {
        what,
        status,
        output: scrub(&tail(&text), secrets),
    })
}

fn tail(text: &str) -> String {
    let t = text.trim();
    if t.len() <= TAIL {
        return t.to_string();
    }
    let mut start = t.len() - TAIL;
    while !t.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &t[start..])
}

/// `text` with every secret value (of 3 bytes or more) replaced by `***`.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(*s, "***");
    }
    out
}

/// The operator's compose settings.
#[derive(Debug, Clone)]
pub struct ComposeSettings {
    /// Local compose v2 binary for `docker` targets (a `docker` binary gets `compose` as its
    /// first argument).
    pub binary: PathBuf,
    /// The compose command on `ssh` targets (`docker compose`).
    pub remote_command: String,
    /// The docker CLI command on `ssh` targets (`docker`), for `ps`, `inspect` and
    /// `image inspect`.
    pub remote_docker: String,
    /// Private directory for the compose files of `docker` targets (`DIR/STACK/compose.yaml`).
    pub work_dir: PathBuf,
    /// How long one compose command may run.
    pub timeout: Duration,
}

/// What compose does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `up -d --remove-orphans`.
    Up,
    /// `down --remove-orphans`.
    Down,
    /// `down --remove-orphans --volumes`.
    DownWithVolumes,
}

impl Verb {
    fn args(self) -> &'static [&'static str] {
        match self {
            Verb::Up => &["up", "-d", "--remove-orphans"],
            Verb::Down => &["down", "--remove-orphans"],
            Verb::DownWithVolumes => &["down", "--remove-orphans", "--volumes"],
        }
    }

    /// `up` or `down` (metrics).
    pub fn name(self) -> &'static str {
        match self {
            Verb::Up => "up",
            _ => "down",
        }
    }
}

/// One compose command for one Stack.
#[derive(Debug)]
pub struct ComposeCall<'a> {
    /// `metadata.name` (names the work directory).
    pub stack: &'a str,
    /// The compose project.
    pub project: &'a str,
    /// The compose file's text.
    pub compose: &'a str,
    /// Every variable (spec.env and the Secrets' values).
    pub env: &'a BTreeMap<String, String>,
    /// Values to scrub from any output kept.
    pub secrets: &'a [&'a str],
    /// What to do.
    pub verb: Verb,
}

/// Runs compose against a local endpoint (`DOCKER_HOST`), with a cleared environment: only
/// `PATH`, `HOME` (the work directory), `DOCKER_HOST` and the Stack's variables.
///
/// # Errors
/// [`TargetError::Write`], [`TargetError::Spawn`], [`TargetError::Timeout`],
/// [`TargetError::Failed`].
pub async fn compose_local(
    settings: &ComposeSettings,
    docker_host: &str,
    tls_dir: Option<&Path>,
    call: &ComposeCall<'_>,
) -> Result<(), TargetError> {
    let dir = settings.work_dir.join(call.stack);
    let file = dir.join("compose.yaml");
    write_private(&dir, &file, call.compose.as_bytes())?;
    let mut cmd = tokio::process::Command::new(&settings.binary);
    if settings.binary.file_name().is_some_and(|n| n == "docker") {
        cmd.arg("compose");
    }
    cmd.arg("-p")
        .arg(call.project)
        .arg("-f")
        .arg(&file)
        .arg("--project-directory")
        .arg(&dir)
        .args(call.verb.args())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &settings.work_dir)
        .env("DOCKER_HOST", docker_host)
        .envs(call.env)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = tls_dir {
        cmd.env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", dir);
    }
    let what = format!("compose {}", call.verb.name());
    let out = match tokio::time::timeout(settings.timeout, cmd.output()).await {
        Err(_) => {
            return Err(TargetError::Timeout {
                what,
                after: settings.timeout,
            });
        }
        Ok(Err(source)) => {
            return Err(TargetError::Spawn {
                binary: settings.binary.display().to_string(),
                source,
            });
        }
        Ok(Ok(o)) => o,
    };
    let out = Output {
        status: out.status.code().map(|c| c as u32),
        signal: None,
        stdout: out.stdout,
        stderr: out.stderr,
    };
    check(what, &out, call.secrets).map(|_| ())
}

/// Writes `file` in `dir` (made 0700 when absent) with mode 0600, atomically.
///
/// # Errors
/// [`TargetError::Write`].
pub fn write_private(dir: &Path, file: &Path, contents: &[u8]) -> Result<(), TargetError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |p: &Path| {
        let p = p.display().to_string();
        move |source| TargetError::Write { path: p, source }
    };
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err(dir))?;
    }
    phoenix_api::client::write_private(file, contents).map_err(err(file))
}

/// Runs compose on an SSH host: the compose file goes to `~/.phoenix/stacks/STACK/compose.yaml`
/// (mode 0600); the variables go through the command's stdin, never to a file or the command
/// line; compose runs under `env -i` so the login environment cannot change interpolation.
///
/// # Errors
/// [`TargetError::Ssh`], [`TargetError::Failed`].
pub async fn compose_remote(
    settings: &ComposeSettings,
    remote: &Remote,
    call: &ComposeCall<'_>,
) -> Result<(), TargetError> {
    let dir = format!(".phoenix/stacks/{}", call.stack);
    let file = format!("{dir}/compose.yaml");
    remote
        .run(&format!("mkdir -p {d} && chmod 700 {d}", d = q(&dir)), b"")
        .await?;
    remote.upload(&file, call.compose.as_bytes()).await?;
    let mut vars = String::new();
    for (k, v) in call.env {
        vars.push_str(&format!("{k}={}\n", q(v)));
    }
    let inner = format!(
        "set -a; eval \"$(cat)\"; set +a; exec {} -p {} -f {} --project-directory {} {}",
        settings.remote_command,
        q(call.project),
        q(&file),
        q(&dir),
        call.verb.args().join(" ")
    );
    let command = format!(
        "env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=\"$HOME\" sh -c {}",
        q(&inner)
    );
    let out = remote
        .host
        .exec(&command, vars.as_bytes(), settings.timeout)
        .await
        .map_err(|e| remote.ssh_err(e))?;
    check(format!("compose {}", call.verb.name()), &out, call.secrets).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_from_kept_output() {
        assert_eq!(
            scrub("invalid port 's3cret' for web", &["s3cret", "ab"]),
            "invalid port '***' for web"
        );
        let long = "x".repeat(5000);
        assert!(tail(&long).len() < 2100);
    }
}
