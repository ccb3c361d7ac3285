//! `Stack`: a Docker compose stack deployed into a Docker guest (VM 1002).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DeletionPolicy, SshTarget};
use crate::condition::Condition;

/// Desired state of a compose stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackSpec {
    /// The Guest running Docker (default host of the target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// How the controller reaches Docker: exactly one of `ssh` or `docker`.
    pub target: StackTarget,
    /// The compose file (YAML text with a `services` mapping).
    pub compose: String,
    /// Environment for variable substitution in the compose file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables for substitution whose values come from Secrets (never echoed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_from: BTreeMap<String, SecretKeyRef>,
    /// Compose project name (default: `metadata.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    /// `Delete`: `compose down` when the Stack is deleted; `Retain`: leave the containers.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// With `deletionPolicy: Delete`, also remove the stack's named volumes (default: kept).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_volumes: bool,
}

/// One key of a Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub secret_ref: String,
    /// The key in the Secret's data.
    pub key: String,
}

/// Exactly one of `ssh` or `docker`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackTarget {
    /// Run `docker compose` on the guest over SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshTarget>,
    /// Talk to the Docker Engine API directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerTarget>,
}

/// The Docker Engine API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerTarget {
    /// `tcp://HOST:PORT` (TLS) or `unix:///PATH`.
    pub endpoint: String,
    /// Secret of type `tls` with the client certificate (for `tcp://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
}

/// Observed state of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `sha256:` hash of the compose file and env deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_hash: Option<String>,
    /// Services and their state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceStatus>,
    /// Ready and others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// State of one compose service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// Image in use (the compose file's when no container exists).
    pub image: String,
    /// Running containers / desired containers, e.g. `2/2`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replicas: String,
    /// `running`, `exited`, `completed` (a one-shot that exited 0), `missing`, ...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting` or absent (no healthcheck).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Exit code of a container that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Restarts of its containers (counted when a container is not steady).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The parts of a compose file that Phoenix reads: services, their images, replica counts,
/// restart policies, healthchecks; and compose's variable interpolation. Shared by admission
/// and the Stack controller, so both read a compose file the same way.
pub mod compose {
    use serde_json::Value;

    /// Top-level keys of the compose specification (besides `x-` extensions).
    pub const TOP_LEVEL_KEYS: &[&str] = &[
        "version", "name", "services", "networks", "volumes", "configs", "secrets", "models",
    ];

    /// Keys of a service in the compose specification (compose 2.40's schema), besides `x-`
    /// extensions.
    pub const SERVICE_KEYS: &[&str] = &[
        "annotations",
        "attach",
        "blkio_config",
        "build",
        "cap_add",
        "cap_drop",
        "cgroup",
        "cgroup_parent",
        "command",
        "configs",
        "container_name",
        "cpu_count",
        "cpu_percent",
        "cpu_period",
        "cpu_quota",
        "cpu_rt_period",
        "cpu_rt_runtime",
        "cpu_shares",
        "cpus",
        "cpuset",
        "credential_spec",
        "depends_on",
        "deploy",
        "develop",
        "device_cgroup_rules",
        "devices",
        "dns",
        "dns_opt",
        "dns_search",
        "domainname",
        "entrypoint",
        "env_file",
        "environment",
        "expose",
        "extends",
        "external_links",
        "extra_hosts",
        "gpus",
        "group_add",
        "healthcheck",
        "hostname",
        "image",
        "init",
        "ipc",
        "isolation",
        "label_file",
        "labels",
        "links",
        "logging",
        "mac_address",
        "mem_limit",
        "mem_reservation",
        "mem_swappiness",
        "memswap_limit",
        "models",
        "network_mode",
        "networks",
        "oom_kill_disable",
        "oom_score_adj",
        "pid",
        "pids_limit",
        "platform",
        "ports",
        "post_start",
        "pre_stop",
        "privileged",
        "profiles",
        "provider",
        "pull_policy",
        "pull_refresh_after",
        "read_only",
        "restart",
        "runtime",
        "scale",
        "secrets",
        "security_opt",
        "shm_size",
        "stdin_open",
        "stop_grace_period",
        "stop_signal",
        "storage_opt",
        "sysctls",
        "tmpfs",
        "tty",
        "ulimits",
        "use_api_socket",
        "user",
        "userns_mode",
        "uts",
        "volumes",
        "volumes_from",
        "working_dir",
    ];

    /// One service as Phoenix sees it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Service {
        /// The service's name.
        pub name: String,
        /// `image`, as written (before interpolation).
        pub image: Option<String>,
        /// Containers wanted: `deploy.replicas`, else `scale`, else 1.
        pub replicas: u64,
        /// `restart`, as written (`no` when absent).
        pub restart: String,
        /// Has a healthcheck that is not disabled.
        pub healthcheck: bool,
        /// `privileged: true`.
        pub privileged: bool,
    }

    impl Service {
        /// A container of this service that exited 0 finished its job (restart `no` or
        /// `on-failure`): it is a one-shot, not a failure.
        pub fn may_complete(&self) -> bool {
            let r = self.restart.trim_matches('"');
            r == "no" || r.starts_with("on-failure")
        }
    }

    /// Parses compose YAML into a JSON value.
    ///
    /// # Errors
    /// The YAML parser's message and line, without a snippet of the text.
    pub fn parse(text: &str) -> Result<Value, String> {
        let mut options = serde_saphyr::Options::default();
        options.with_snippet = false;
        serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let line = e
                .location()
                .map(|l| format!(" (compose line {})", l.line()))
                .unwrap_or_default();
            let msg = e.without_snippet().to_string();
            let msg = msg.lines().next().unwrap_or_default().to_string();
            format!("is not valid YAML{line}: {msg}")
        })
    }

    /// The services of a parsed compose file, sorted by name (empty without `services`).
    pub fn services(doc: &Value) -> Vec<Service> {
        let Some(map) = doc.get("services").and_then(Value::as_object) else {
            return Vec::new();
        };
        let mut out: Vec<Service> = map
            .iter()
            .map(|(name, s)| {
                let replicas = s
                    .pointer("/deploy/replicas")
                    .and_then(as_u64)
                    .or_else(|| s.get("scale").and_then(as_u64))
                    .unwrap_or(1);
                let hc = s.get("healthcheck");
                let disabled = hc
                    .and_then(|h| h.get("disable"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    || hc
                        .and_then(|h| h.get("test"))
                        .and_then(|t| t.get(0).or(Some(t)))
                        .and_then(Value::as_str)
                        == Some("NONE");
                Service {
                    name: name.clone(),
                    image: s.get("image").and_then(Value::as_str).map(str::to_string),
                    replicas,
                    restart: s
                        .get("restart")
                        .and_then(Value::as_str)
                        .unwrap_or("no")
                        .to_string(),
                    healthcheck: hc.is_some() && !disabled,
                    privileged: s.get("privileged").and_then(Value::as_bool) == Some(true),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn as_u64(v: &Value) -> Option<u64> {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    }

    /// Compose's interpolation of one string: `$$` is `$`; `$NAME`, `${NAME}`,
    /// `${NAME:-default}`, `${NAME-default}`, `${NAME:?err}`, `${NAME?err}`,
    /// `${NAME:+alt}`, `${NAME+alt}`; defaults may hold references themselves.
    ///
    /// # Errors
    /// The name of the first variable that `lookup` does not know and that has no default
    /// (Phoenix refuses what compose would replace with an empty string).
    pub fn interpolate(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = matching_brace(body) else {
                    out.push_str(&rest[i..]);
                    return Ok(out);
                };
                out.push_str(&braced(&body[..end], lookup)?);
                rest = &body[end + 1..];
            } else {
                let n = after
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                if n == 0 || after.as_bytes()[0].is_ascii_digit() {
                    out.push('$');
                    rest = after;
                    continue;
                }
                let name = &after[..n];
                out.push_str(&lookup(name).ok_or_else(|| name.to_string())?);
                rest = &after[n..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Index of the `}` closing a `${` whose body starts `body`.
    fn matching_brace(body: &str) -> Option<usize> {
        let mut depth = 0usize;
        let bytes = body.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'$' if bytes.get(i + 1) == Some(&b'{') => {
                    depth += 1;
                    i += 1;
                }
                b'}' if depth == 0 => return Some(i),
                b'}' => depth -= 1,
                _ => {}
            }
            i += 1;
        }
        None
    }

    fn braced(body: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        let n = body
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let (name, op) = body.split_at(n);
        let value = lookup(name);
        let empty = value.as_deref().is_none_or(str::is_empty);
        let (kind, arg) = if let Some(a) = op.strip_prefix(":-") {
            ("default-empty", a)
        } else if let Some(a) = op.strip_prefix('-') {
            ("default", a)
        } else if let Some(a) = op.strip_prefix(":?") {
            ("required-empty", a)
        } else if let Some(a) = op.strip_prefix('?') {
            ("required", a)
        } else if let Some(a) = op.strip_prefix(":+") {
            ("alt-empty", a)
        } else if let Some(a) = op.strip_prefix('+') {
            ("alt", a)
        } else {
            ("plain", op)
        };
        match kind {
            "default-empty" if empty => interpolate(arg, lookup),
            "default" if value.is_none() => interpolate(arg, lookup),
            "default-empty" | "default" => Ok(value.unwrap_or_default()),
            "required-empty" if empty => Err(name.to_string()),
            "required" if value.is_none() => Err(name.to_string()),
            "alt-empty" if !empty => interpolate(arg, lookup),
            "alt" if value.is_some() => interpolate(arg, lookup),
            "alt-empty" | "alt" => Ok(String::new()),
            _ => value.ok_or_else(|| name.to_string()),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn env(name: &str) -> Option<String> {
            match name {
                "TAG" => Some("1.2".into()),
                "EMPTY" => Some(String::new()),
                _ => None,
            }
        }

        #[test]
        fn interpolation_follows_compose() {
            let i = |s: &str| interpolate(s, &env);
            assert_eq!(i("img:${TAG}").unwrap(), "img:1.2");
            assert_eq!(i("img:$TAG-x").unwrap(), "img:1.2-x");
            assert_eq!(i("cost $$5 and $${TAG}").unwrap(), "cost $5 and ${TAG}");
            assert_eq!(i("${NOPE:-d}").unwrap(), "d");
            assert_eq!(i("${EMPTY:-d}").unwrap(), "d");
            assert_eq!(i("${EMPTY-d}").unwrap(), "");
            assert_eq!(i("${NOPE:-${TAG}}").unwrap(), "1.2");
            assert_eq!(i("${TAG:+on}${NOPE:+off}").unwrap(), "on");
            assert_eq!(i("${NOPE}").unwrap_err(), "NOPE");
            assert_eq!(i("a $NOPE b").unwrap_err(), "NOPE");
            assert_eq!(i("${NOPE:-${ALSO}}").unwrap_err(), "ALSO");
            assert_eq!(i("${EMPTY:?must be set}").unwrap_err(), "EMPTY");
            assert_eq!(i("$1 and $").unwrap(), "$1 and $");
        }

        #[test]
        fn services_read_replicas_restart_and_healthchecks() {
            let doc = parse(
                "services:\n  b: {image: x, scale: 2, healthcheck: {test: [NONE]}}\n  a: {image: y, deploy: {replicas: 3}, restart: always, healthcheck: {test: [CMD, true]}, privileged: true}\n",
            )
            .unwrap();
            let s = services(&doc);
            assert_eq!(s[0].name, "a");
            assert_eq!(
                (s[0].replicas, s[0].healthcheck, s[0].privileged),
                (3, true, true)
            );
            assert!(!s[0].may_complete());
            assert_eq!(
                (s[1].replicas, s[1].healthcheck, s[1].privileged),
                (2, false, false)
            );
            assert!(s[1].may_complete());
        }
    }
}
