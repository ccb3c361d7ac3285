//! The client's configuration, and the keys of the server config file / flags that give it.
//!
//! [`PveSettings`] is what an operator writes (the `pve:` section of the server config, or the
//! `--pve-*` flags): endpoints, a token file or a user with a password file, a CA file or a
//! fingerprint, `insecureSkipVerify`, the default node, limits. [`PveSettings::resolve`] reads
//! the credential files and checks that the choices fit together, giving a [`PveConfig`].
//! Credentials are never taken from manifests.

use std::path::PathBuf;
use std::time::Duration;

use backon::ExponentialBuilder;
use serde::Deserialize;
use url::Url;

use crate::credentials::{Credentials, CredentialsError};
use crate::limits::Limits;
use crate::tls::{Fingerprint, FingerprintError, TlsVerify};

/// Everything the client needs; build one with [`PveConfig::new`] or [`PveSettings::resolve`].
#[derive(Clone, Debug)]
pub struct PveConfig {
    /// The API endpoints (`https://host:8006`), tried in order; the client moves to the next
    /// when one cannot be connected to (the request was not sent, so any method may move).
    pub endpoints: Vec<Url>,
    /// Token or user and password.
    pub credentials: Credentials,
    /// How the server certificate is verified.
    pub tls: TlsVerify,
    /// The node used when a caller names none.
    pub default_node: Option<String>,
    /// Concurrency and rate limits.
    pub limits: Limits,
    /// Timeouts and task polling.
    pub timeouts: Timeouts,
    /// Backoff for requests refused on lock contention (and tasks that failed on it).
    pub lock_retry: RetryPolicy,
    /// Backoff for idempotent GETs that failed in a retryable way.
    pub get_retry: RetryPolicy,
    /// Lines of a failed task's log kept in its error (default 10).
    pub task_log_lines: usize,
}

/// Timeouts of requests, logins and tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection (default 5 s).
    pub connect: Duration,
    /// One request, from sending to the end of the answer (default 30 s).
    pub request: Duration,
    /// A ticket is renewed when it is older than this (default 100 min; PVE's last 2 h).
    pub ticket_renew_after: Duration,
    /// How long a task is waited for before [`crate::PveError::TaskTimeout`] (default 30 min).
    pub task_wait: Duration,
    /// First interval between two task status polls (default 100 ms); it grows by half each
    /// poll up to `task_poll_max`.
    pub task_poll_min: Duration,
    /// Longest interval between two task status polls (default 2 s).
    pub task_poll_max: Duration,
    /// How long a new task's status may be missing (PVE can answer 400/404/500 for a UPID it
    /// has just handed out) before the wait gives up (default 10 s).
    pub task_status_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
            ticket_renew_after: Duration::from_secs(100 * 60),
            task_wait: Duration::from_secs(30 * 60),
            task_poll_min: Duration::from_millis(100),
            task_poll_max: Duration::from_secs(2),
            task_status_grace: Duration::from_secs(10),
        }
    }
}

/// A jittered exponential backoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First delay.
    pub min_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
    /// Most retries (not counting the first attempt).
    pub max_times: usize,
    /// Most time spent sleeping between attempts.
    pub max_total: Duration,
}

impl RetryPolicy {
    /// The default for lock contention: 250 ms doubling to 5 s, up to 30 retries or 2 min.
    pub fn lock_default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
            max_times: 30,
            max_total: Duration::from_secs(120),
        }
    }

    /// The default for GETs: 100 ms doubling to 2 s, up to 4 retries or 10 s.
    pub fn get_default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_times: 4,
            max_total: Duration::from_secs(10),
        }
    }

    /// No retries.
    pub fn none() -> Self {
        RetryPolicy {
            min_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            max_times: 0,
            max_total: Duration::ZERO,
        }
    }

    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_times)
            .with_total_delay(Some(self.max_total))
    }
}

impl PveConfig {
    /// One endpoint and credentials, verifying TLS with the system trust store and default
    /// limits, timeouts and retries.
    pub fn new(endpoint: Url, credentials: Credentials) -> Self {
        PveConfig {
            endpoints: vec![endpoint],
            credentials,
            tls: TlsVerify::System,
            default_node: None,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            lock_retry: RetryPolicy::lock_default(),
            get_retry: RetryPolicy::get_default(),
            task_log_lines: 10,
        }
    }
}

/// The PVE provider keys of the server config file, and of the `--pve-*` flags:
///
/// ```yaml
/// pve:
///   endpoints: [https://pve1.example:8006, https://pve2.example:8006]
///   tokenFile: /etc/phoenix/pve-token          # USER@REALM!TOKENID=SECRET, one line
///   # or: user: phoenix@pve, passwordFile: /etc/phoenix/pve-password
///   caFile: /etc/phoenix/pve-root-ca.pem       # or fingerprint: "AB:CD:..."
///   insecureSkipVerify: false
///   node: pve1
///   tasksPerNode: 16
///   tasksPerStorage: 4                         # storages that are not thin
///   tasksPerThinStorage: 16                    # local zfspool, lvmthin, btrfs
///   requestsPerSecond: 200                     # the adaptive limit's ceiling
///   burst: 20
/// ```
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PveSettings {
    /// `--pve-endpoint URL` (repeatable).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// `--pve-token-file FILE`.
    pub token_file: Option<PathBuf>,
    /// `--pve-token-env VAR`: the token line `USER@REALM!TOKENID=SECRET` from this
    /// environment variable instead of a file.
    pub token_env: Option<String>,
    /// `--pve-user USER@REALM`.
    pub user: Option<String>,
    /// `--pve-password-file FILE`.
    pub password_file: Option<PathBuf>,
    /// `--pve-password-env VAR`: the password from this environment variable instead of a
    /// file.
    pub password_env: Option<String>,
    /// `--pve-ca-file FILE`.
    pub ca_file: Option<PathBuf>,
    /// `--pve-fingerprint SHA256`.
    pub fingerprint: Option<String>,
    /// `--pve-insecure-skip-verify`.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// `--pve-node NAME`.
    pub node: Option<String>,
    /// `--pve-tasks-per-node N` (0: no limit).
    pub tasks_per_node: Option<usize>,
    /// `--pve-tasks-per-storage N`: per storage that is not thin (0: no limit).
    pub tasks_per_storage: Option<usize>,
    /// `--pve-tasks-per-thin-storage N`: per local `zfspool`, `lvmthin` or `btrfs` storage
    /// (0: no limit).
    pub tasks_per_thin_storage: Option<usize>,
    /// `--pve-requests-per-second R`: the adaptive limit's ceiling (0: no limit).
    pub requests_per_second: Option<f64>,
    /// `--pve-burst N`: the most requests at once above the rate.
    pub burst: Option<u32>,
}

/// Why the PVE settings cannot be used. Each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No endpoint.
    #[error("pve.endpoints: at least one endpoint is needed (https://HOST:8006)")]
    NoEndpoint,
    /// An endpoint is not an https URL.
    #[error("pve.endpoints: {value:?} is not a PVE endpoint: {reason}")]
    Endpoint {
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// Neither a token nor a user with a password.
    #[error(
        "pve: no credentials: give tokenFile (or tokenEnv), or user and passwordFile (or passwordEnv)"
    )]
    NoCredentials,
    /// Both a token and a user/password.
    #[error("pve: give either a token (tokenFile/tokenEnv) or user and a password, not both")]
    TwoCredentials,
    /// A secret given both as a file and as an environment variable.
    #[error("pve: give either {file} or {env}, not both")]
    TwoSources {
        /// The file key.
        file: &'static str,
        /// The environment key.
        env: &'static str,
    },
    /// The environment variable named by `tokenEnv`/`passwordEnv` is unset, empty or not
    /// UTF-8. Its value is never shown.
    #[error("pve.{key}: environment variable {var:?} is {reason}")]
    Env {
        /// The key naming the variable.
        key: &'static str,
        /// The variable's name.
        var: String,
        /// `not set`, `empty`, `not UTF-8`.
        reason: &'static str,
    },
    /// A user without a password file, or the other way round.
    #[error("pve.{missing}: needed with pve.{given}")]
    Incomplete {
        /// The key that is missing.
        missing: &'static str,
        /// The key that needs it.
        given: &'static str,
    },
    /// The credential file is unusable.
    #[error("pve: {0}")]
    Credentials(#[from] CredentialsError),
    /// Both a CA file and a fingerprint.
    #[error("pve: give either caFile or fingerprint, not both")]
    TwoTrustAnchors,
    /// `insecureSkipVerify` together with a CA file or fingerprint.
    #[error("pve.insecureSkipVerify: contradicts pve.{0}; remove one of them")]
    InsecureWith(&'static str),
    /// The fingerprint is malformed.
    #[error("pve.fingerprint: {0}")]
    Fingerprint(#[from] FingerprintError),
    /// The node name is not a host name.
    #[error("pve.node: {0:?} is not a node name (letters, digits, '-')")]
    Node(String),
}

/// Parses an endpoint: `https://host[:port][/api2/json]`, or `host[:port]`; the port defaults
/// to PVE's 8006 when no scheme is given.
pub fn parse_endpoint(value: &str) -> Result<Url, ConfigError> {
    let fail = |reason: &str| ConfigError::Endpoint {
        value: without_userinfo(value),
        reason: reason.to_string(),
    };
    let text = value.trim();
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        let host_port = text.trim_end_matches('/');
        let has_port = host_port
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            && !host_port.ends_with(']');
        if has_port {
            format!("https://{host_port}")
        } else {
            format!("https://{host_port}:8006")
        }
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| fail(&e.to_string()))?;
    if url.scheme() != "https" {
        return Err(fail("PVE serves its API over https only"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(fail("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(fail(
            "credentials do not belong in the URL; use tokenFile or passwordFile",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(fail("no query or fragment allowed"));
    }
    let path = url.path().trim_end_matches('/');
    if !(path.is_empty() || path == "/api2/json") {
        return Err(fail("the path may only be /api2/json"));
    }
    url.set_path("");
    Ok(url)
}

/// The endpoint as given, with any `user:password@` replaced by `***@`, for error messages.
fn without_userinfo(value: &str) -> String {
    let (scheme, rest) = value.split_once("://").unwrap_or(("", value));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let prefix = if scheme.is_empty() {
                String::new()
            } else {
                format!("{scheme}://")
            };
            format!("{prefix}***{}", &rest[at..])
        }
        None => value.to_string(),
    }
}

/// True for a node name PVE accepts (a host name label).
pub fn valid_node_name(node: &str) -> bool {
    let bytes = node.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// Where a secret comes from.
enum Source<'a> {
    /// A file (`tokenFile`, `passwordFile`).
    File(&'a PathBuf),
    /// An environment variable: (key, variable name).
    Env(&'static str, &'a String),
}

/// The value of the environment variable `var` (named by the key `key`), trimmed of a
/// trailing newline; an error naming the key and the variable, never the value.
fn env_secret(key: &'static str, var: &str) -> Result<String, ConfigError> {
    let fail = |reason| ConfigError::Env {
        key,
        var: var.to_string(),
        reason,
    };
    match std::env::var(var) {
        Ok(value) => {
            let value = value.trim_end_matches(['\r', '\n']).to_string();
            if value.is_empty() {
                Err(fail("empty"))
            } else {
                Ok(value)
            }
        }
        Err(std::env::VarError::NotPresent) => Err(fail("not set")),
        Err(std::env::VarError::NotUnicode(_)) => Err(fail("not UTF-8")),
    }
}

impl PveSettings {
    /// Checks the settings and reads the credentials (from their files or environment
    /// variables).
    pub fn resolve(&self) -> Result<PveConfig, ConfigError> {
        if self.endpoints.is_empty() {
            return Err(ConfigError::NoEndpoint);
        }
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| parse_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        let token = match (&self.token_file, &self.token_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::TwoSources {
                    file: "tokenFile",
                    env: "tokenEnv",
                });
            }
            (Some(file), None) => Some(Source::File(file)),
            (None, Some(var)) => Some(Source::Env("tokenEnv", var)),
            (None, None) => None,
        };
        let password = match (&self.password_file, &self.password_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::TwoSources {
                    file: "passwordFile",
                    env: "passwordEnv",
                });
            }
            (Some(file), None) => Some(Source::File(file)),
            (None, Some(var)) => Some(Source::Env("passwordEnv", var)),
            (None, None) => None,
        };
        let credentials = match (token, &self.user, password) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(ConfigError::TwoCredentials);
            }
            (Some(Source::File(file)), None, None) => Credentials::token_from_file(file)?,
            (Some(Source::Env(key, var)), None, None) => {
                Credentials::token(&env_secret(key, var)?, &format!("${var}"))?
            }
            (None, Some(user), Some(Source::File(file))) => {
                Credentials::password_from_file(user, file)?
            }
            (None, Some(user), Some(Source::Env(key, var))) => {
                Credentials::password(user, crate::credentials::Secret::new(env_secret(key, var)?))?
            }
            (None, Some(_), None) => {
                return Err(ConfigError::Incomplete {
                    missing: "passwordFile",
                    given: "user",
                });
            }
            (None, None, Some(_)) => {
                return Err(ConfigError::Incomplete {
                    missing: "user",
                    given: if self.password_env.is_some() {
                        "passwordEnv"
                    } else {
                        "passwordFile"
                    },
                });
            }
            (None, None, None) => return Err(ConfigError::NoCredentials),
        };
        let tls = match (&self.ca_file, &self.fingerprint, self.insecure_skip_verify) {
            (Some(_), Some(_), _) => return Err(ConfigError::TwoTrustAnchors),
            (Some(_), None, true) => return Err(ConfigError::InsecureWith("caFile")),
            (None, Some(_), true) => return Err(ConfigError::InsecureWith("fingerprint")),
            (Some(ca), None, false) => TlsVerify::CaFile(ca.clone()),
            (None, Some(fp), false) => TlsVerify::Fingerprint(fp.parse::<Fingerprint>()?),
            (None, None, true) => TlsVerify::InsecureSkipVerify,
            (None, None, false) => TlsVerify::System,
        };
        if let Some(node) = &self.node
            && !valid_node_name(node)
        {
            return Err(ConfigError::Node(node.clone()));
        }
        let defaults = Limits::default();
        let limits = Limits {
            tasks_per_node: self.tasks_per_node.unwrap_or(defaults.tasks_per_node),
            tasks_per_storage: self.tasks_per_storage.unwrap_or(defaults.tasks_per_storage),
            tasks_per_thin_storage: self
                .tasks_per_thin_storage
                .unwrap_or(defaults.tasks_per_thin_storage),
            requests_per_second: self
                .requests_per_second
                .unwrap_or(defaults.requests_per_second),
            burst: self.burst.unwrap_or(defaults.burst),
        };
        let mut config = PveConfig::new(endpoints[0].clone(), credentials);
        config.endpoints = endpoints;
        config.tls = tls;
        config.default_node = self.node.clone();
        config.limits = limits;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        for (value, url) in [
            ("https://pve1.example:8006", "https://pve1.example:8006/"),
            (
                "https://pve1.example:8006/api2/json/",
                "https://pve1.example:8006/",
            ),
            ("pve1.example", "https://pve1.example:8006/"),
            ("10.0.0.2:8443", "https://10.0.0.2:8443/"),
            ("https://pve.example", "https://pve.example/"),
        ] {
            assert_eq!(parse_endpoint(value).unwrap().as_str(), url, "{value}");
        }
        for (value, reason) in [
            ("http://pve1:8006", "https only"),
            ("https://root:pw@pve1:8006", "credentials"),
            ("https://pve1:8006/other", "path"),
            ("https://pve1:8006/?x=1", "query"),
        ] {
            let err = parse_endpoint(value).unwrap_err().to_string();
            assert!(err.contains(reason), "{value}: {err}");
            assert!(!err.contains(":pw"), "a password in an error: {err}");
        }
    }

    #[test]
    fn resolves_settings_and_names_the_key_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "root@pam!phoenix=abc-123\n").unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "pw\n").unwrap();
        let yaml = format!(
            "endpoints: [https://pve1:8006, pve2]\ntokenFile: {}\nfingerprint: \"{}\"\nnode: pve1\ntasksPerStorage: 2\ntasksPerThinStorage: 6\n",
            token.display(),
            ["AB"; 32].join(":")
        );
        let settings: PveSettings = serde_saphyr::from_str(&yaml).unwrap();
        let config = settings.resolve().unwrap();
        assert_eq!(config.endpoints.len(), 2);
        assert_eq!(config.endpoints[1].as_str(), "https://pve2:8006/");
        assert!(matches!(config.credentials, Credentials::Token { .. }));
        assert!(matches!(config.tls, TlsVerify::Fingerprint(_)));
        assert_eq!(config.limits.tasks_per_storage, 2);
        assert_eq!(config.limits.tasks_per_thin_storage, 6);
        assert_eq!(
            config.limits.tasks_per_node,
            Limits::default().tasks_per_node
        );

        let base = PveSettings {
            endpoints: vec!["pve1".into()],
            ..PveSettings::default()
        };
        let cases: Vec<(PveSettings, &str)> = vec![
            (PveSettings::default(), "pve.endpoints"),
            (base.clone(), "no credentials"),
            (
                PveSettings {
                    token_file: Some(token.clone()),
                    user: Some("a@pve".into()),
                    ..base.clone()
                },
                "not both",
            ),
            (
                PveSettings {
                    user: Some("a@pve".into()),
                    ..base.clone()
                },
                "pve.passwordFile",
            ),
            (
                PveSettings {
                    user: Some("a@pve".into()),
                    password_file: Some(password.clone()),
                    ca_file: Some("ca.pem".into()),
                    insecure_skip_verify: true,
                    ..base.clone()
                },
                "pve.insecureSkipVerify",
            ),
            (
                PveSettings {
                    token_file: Some(token.clone()),
                    ca_file: Some("ca.pem".into()),
                    fingerprint: Some("AB".into()),
                    ..base.clone()
                },
                "caFile or fingerprint",
            ),
            (
                PveSettings {
                    token_file: Some(token.clone()),
                    fingerprint: Some("AB".into()),
                    ..base.clone()
                },
                "pve.fingerprint",
            ),
            (
                PveSettings {
                    token_file: Some(token.clone()),
                    node: Some("pve/1".into()),
                    ..base.clone()
                },
                "pve.node",
            ),
        ];
        for (settings, expected) in cases {
            let err = settings.resolve().unwrap_err().to_string();
            assert!(err.contains(expected), "{settings:?}: {err}");
        }
    }

    #[test]
    fn credentials_come_from_environment_variables_named_in_the_settings() {
        // Variables no test environment has.
        let token_var = "PHOENIX_TEST_PVE_TOKEN_ENV_8d1f";
        let password_var = "PHOENIX_TEST_PVE_PASSWORD_ENV_8d1f";
        let missing_var = "PHOENIX_TEST_PVE_UNSET_ENV_8d1f";
        // (set_var is unsafe in edition 2024, which the workspace forbids: the variables
        // used are ones that are unset, or PATH, which every test environment has.)
        let base = PveSettings {
            endpoints: vec!["pve1".into()],
            ..PveSettings::default()
        };
        let err = PveSettings {
            token_env: Some(missing_var.into()),
            ..base.clone()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("pve.tokenEnv") && err.contains(missing_var) && err.contains("not set"),
            "{err}"
        );
        let err = PveSettings {
            token_env: Some(token_var.into()),
            token_file: Some("t".into()),
            ..base.clone()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains("tokenFile or tokenEnv"), "{err}");
        let err = PveSettings {
            password_env: Some(password_var.into()),
            ..base.clone()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("pve.user: needed with pve.passwordEnv"),
            "{err}"
        );
        // PATH is set in every test environment: as a token it is refused for its format,
        // and the error does not show its value.
        let path = std::env::var("PATH").unwrap_or_default();
        let err = PveSettings {
            token_env: Some("PATH".into()),
            ..base.clone()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains("$PATH"), "{err}");
        assert!(path.is_empty() || !err.contains(&path), "{err}");
        let config = PveSettings {
            user: Some("root@pam".into()),
            password_env: Some("PATH".into()),
            ..base
        }
        .resolve()
        .unwrap();
        assert!(matches!(config.credentials, Credentials::Password { .. }));
    }
}
