//! What runs on a Docker host: one list of the compose-labelled containers per host, shared
//! by every Stack on that host (ADR 0023).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use phoenix_ssh::shell_quote;

use crate::metrics::StackMetrics;
use crate::target::{Remote, TargetError};

/// Compose's project label.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
/// Compose's service label.
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
/// Compose's one-off label (`docker compose run` containers carry `True`).
pub const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";

/// One container as the Engine's list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    /// Container id.
    pub id: String,
    /// `com.docker.compose.project`.
    pub project: String,
    /// `com.docker.compose.service`.
    pub service: String,
    /// Image as the container was created with.
    pub image: String,
    /// `created`, `running`, `exited`, `restarting`, `paused`, `dead`, ...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or `None` without a healthcheck.
    pub health: Option<String>,
    /// Exit code of a container that finished (`Exited (N)`).
    pub exit_code: Option<i64>,
    /// A `docker compose run` container (not part of the service's desired set).
    pub oneoff: bool,
}

impl Container {
    /// From the list's `State`, `Status` (`Up 3 seconds (healthy)`, `Exited (1) 2 seconds
    /// ago`) and labels.
    fn new(
        id: String,
        image: String,
        state: String,
        status: &str,
        labels: &dyn LabelSource,
    ) -> Self {
        let (health, exit_code) = parse_status(status);
        Container {
            id,
            project: labels.get(PROJECT_LABEL).unwrap_or_default(),
            service: labels.get(SERVICE_LABEL).unwrap_or_default(),
            image,
            state,
            health,
            exit_code,
            oneoff: labels.get(ONEOFF_LABEL).as_deref() == Some("True"),
        }
    }

    /// Running and not unhealthy: nothing to look into.
    pub fn steady(&self) -> bool {
        (self.state == "running" && self.health.as_deref() != Some("unhealthy"))
            || (self.state == "exited" && self.exit_code == Some(0))
    }
}

/// Label lookup over either a map (Engine API) or `k=v,k=v` text (`docker ps`).
trait LabelSource {
    fn get(&self, key: &str) -> Option<String>;
}

impl LabelSource for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

struct LabelText<'a>(&'a str);

impl LabelSource for LabelText<'_> {
    fn get(&self, key: &str) -> Option<String> {
        // Values may hold commas (depends_on): a piece without `=` continues the last value.
        let mut found: Option<String> = None;
        for piece in self.0.split(',') {
            match piece.split_once('=') {
                Some((k, v)) => {
                    if found.is_some() {
                        return found;
                    }
                    if k == key {
                        found = Some(v.to_string());
                    }
                }
                None => {
                    if let Some(f) = &mut found {
                        f.push(',');
                        f.push_str(piece);
                    }
                }
            }
        }
        found
    }
}

/// Health and exit code from a container's `Status` text.
pub fn parse_status(status: &str) -> (Option<String>, Option<i64>) {
    let health = if status.contains("(healthy)") {
        Some("healthy")
    } else if status.contains("(unhealthy)") {
        Some("unhealthy")
    } else if status.contains("(health: starting)") {
        Some("starting")
    } else {
        None
    };
    let exit = ["Exited (", "Restarting ("]
        .iter()
        .find_map(|p| status.strip_prefix(p))
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok());
    (health.map(str::to_string), exit)
}

/// Where a Docker host is reached, and how its containers are listed.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The Engine API on a unix socket (`docker` target).
    Api(Arc<Docker>),
    /// `docker ps` over SSH (`ssh` target).
    Ssh(Arc<Remote>),
}

/// Why the containers of a host could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The Engine API answered with an error or could not be reached.
    #[error("Docker Engine API at {endpoint}: {source}")]
    Api {
        /// The endpoint.
        endpoint: String,
        /// bollard's error.
        source: bollard::errors::Error,
    },
    /// The command over SSH failed.
    #[error("{0}")]
    Remote(#[from] TargetError),
    /// `docker ps` printed something that is not its JSON lines.
    #[error("docker ps on {host}: unexpected output: {message}")]
    Parse {
        /// The host.
        host: String,
        /// What did not parse.
        message: String,
    },
}

/// Connects to a unix-socket Engine API and negotiates the API version (Debian's engine speaks
/// 1.41; bollard's default is newer).
///
/// # Errors
/// [`EngineError::Api`] when the socket does not answer `/version`.
pub async fn connect_unix(endpoint: &str) -> Result<Docker, EngineError> {
    let err = |source| EngineError::Api {
        endpoint: endpoint.to_string(),
        source,
    };
    let docker =
        Docker::connect_with_unix(endpoint, 120, bollard::API_DEFAULT_VERSION).map_err(err)?;
    docker.negotiate_version().await.map_err(err)
}

/// Connects to a `tcp://` Engine API with client TLS (`ca.pem`, `cert.pem`, `key.pem` in
/// `dir`) and negotiates the API version.
///
/// # Caveats
/// bollard trusts the system's roots besides `ca.pem`.
///
/// # Errors
/// [`EngineError::Api`] when the files do not load or the endpoint does not answer.
pub async fn connect_tls(endpoint: &str, dir: &std::path::Path) -> Result<Docker, EngineError> {
    let err = |source| EngineError::Api {
        endpoint: endpoint.to_string(),
        source,
    };
    let docker = Docker::connect_with_ssl(
        endpoint,
        &dir.join("key.pem"),
        &dir.join("cert.pem"),
        &dir.join("ca.pem"),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(err)?;
    docker.negotiate_version().await.map_err(err)
}

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Arc<Vec<Container>>)>>>;

/// The lists of every Docker host, shared by the Stacks on it.
///
/// # Guarantees
/// Concurrent reconciles of Stacks on one host wait for one list instead of each making
/// their own; a list younger than `max_age` is reused; [`Observer::forget`] (after a compose
/// command on the host) makes the next caller list again.
#[derive(Debug)]
pub struct Observer {
    max_age: Duration,
    hosts: Mutex<HashMap<String, Slot>>,
    metrics: StackMetrics,
}

impl Observer {
    /// An observer reusing lists younger than `max_age`.
    pub fn new(max_age: Duration, metrics: StackMetrics) -> Self {
        Observer {
            max_age,
            hosts: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn slot(&self, host: &str) -> Slot {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.entry(host.to_string()).or_default().clone()
    }

    /// Every compose-labelled container on `host` (the key naming the endpoint).
    ///
    /// # Errors
    /// As the list call: [`EngineError`].
    pub async fn list(
        &self,
        host: &str,
        endpoint: &Endpoint,
    ) -> Result<Arc<Vec<Container>>, EngineError> {
        let slot = self.slot(host);
        let mut guard = slot.lock().await;
        if let Some((at, list)) = guard.as_ref()
            && at.elapsed() < self.max_age
        {
            return Ok(list.clone());
        }
        self.metrics.engine_call(host, "list");
        let list = Arc::new(list_now(endpoint).await?);
        *guard = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// Drops `host`'s list: the next [`Observer::list`] asks the host again.
    pub async fn forget(&self, host: &str) {
        *self.slot(host).lock().await = None;
    }

    /// Restart counts of `ids` (one inspect per container; used for containers that are not
    /// steady only).
    pub async fn restarts(
        &self,
        host: &str,
        endpoint: &Endpoint,
        ids: &[String],
    ) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return out;
        }
        match endpoint {
            Endpoint::Api(docker) => {
                for id in ids {
                    self.metrics.engine_call(host, "inspect");
                    if let Ok(c) = docker
                        .inspect_container(id, None::<InspectContainerOptions>)
                        .await
                    {
                        let n = c.restart_count.unwrap_or(0).max(0) as u64;
                        out.insert(id.clone(), n);
                    }
                }
            }
            Endpoint::Ssh(remote) => {
                self.metrics.engine_call(host, "inspect");
                let quoted: Vec<String> = ids.iter().map(|i| shell_quote(i)).collect();
                let cmd = format!(
                    "{} inspect --format '{{{{.Id}}}} {{{{.RestartCount}}}}' {}",
                    remote.docker(),
                    quoted.join(" ")
                );
                if let Ok(text) = remote.run(&cmd, b"").await {
                    for line in text.lines() {
                        if let Some((id, n)) = line.split_once(' ')
                            && let Ok(n) = n.trim().parse()
                        {
                            out.insert(id.to_string(), n);
                        }
                    }
                }
            }
        }
        out
    }
}

async fn list_now(endpoint: &Endpoint) -> Result<Vec<Container>, EngineError> {
    match endpoint {
        Endpoint::Api(docker) => {
            let filters = HashMap::from([("label".to_string(), vec![PROJECT_LABEL.to_string()])]);
            let options = ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            };
            let list = docker
                .list_containers(Some(options))
                .await
                .map_err(|source| EngineError::Api {
                    endpoint: "the Docker host".into(),
                    source,
                })?;
            Ok(list
                .into_iter()
                .map(|c| {
                    let labels = c.labels.unwrap_or_default();
                    Container::new(
                        c.id.unwrap_or_default(),
                        c.image.unwrap_or_default(),
                        c.state.map(|s| s.to_string()).unwrap_or_default(),
                        c.status.as_deref().unwrap_or_default(),
                        &labels,
                    )
                })
                .collect())
        }
        Endpoint::Ssh(remote) => {
            let cmd = format!(
                "{} ps -a --no-trunc --filter label={PROJECT_LABEL} --format '{{{{json .}}}}'",
                remote.docker()
            );
            let text = remote.run(&cmd, b"").await?;
            parse_ps(&text).map_err(|message| EngineError::Parse {
                host: remote.host_name(),
                message,
            })
        }
    }
}

/// Parses `docker ps --format '{{json .}}'` lines.
pub fn parse_ps(text: &str) -> Result<Vec<Container>, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Line {
        #[serde(rename = "ID")]
        id: String,
        image: String,
        #[serde(default)]
        labels: String,
        #[serde(default)]
        state: String,
        #[serde(default)]
        status: String,
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let line: Line = serde_json::from_str(l).map_err(|e| e.to_string())?;
            let labels = LabelText(&line.labels);
            let c = Container::new(
                line.id.clone(),
                line.image.clone(),
                line.state.clone(),
                &line.status,
                &labels,
            );
            Ok(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_gives_health_and_exit_code() {
        assert_eq!(
            parse_status("Up 3 seconds (healthy)"),
            (Some("healthy".into()), None)
        );
        assert_eq!(
            parse_status("Up 3 seconds (unhealthy)"),
            (Some("unhealthy".into()), None)
        );
        assert_eq!(
            parse_status("Up 1 second (health: starting)"),
            (Some("starting".into()), None)
        );
        assert_eq!(
            parse_status("Exited (137) 2 seconds ago"),
            (None, Some(137))
        );
        assert_eq!(parse_status("Restarting (1) 1 second ago"), (None, Some(1)));
        assert_eq!(parse_status("Created"), (None, None));
    }

    #[test]
    fn docker_ps_lines_parse_with_commas_in_label_values() {
        let line = r#"{"ID":"abc","Image":"phoenix-test/busybox:1","Labels":"com.docker.compose.depends_on=db:service_healthy:false,job:service_started:false,com.docker.compose.project=t1,com.docker.compose.service=web,com.docker.compose.oneoff=False","State":"exited","Status":"Exited (0) 2 seconds ago"}"#;
        let c = &parse_ps(line).unwrap()[0];
        assert_eq!((c.project.as_str(), c.service.as_str()), ("t1", "web"));
        assert_eq!(
            (c.state.as_str(), c.exit_code, c.oneoff),
            ("exited", Some(0), false)
        );
        assert!(c.steady());
        assert_eq!(
            LabelText("a=1,b=x,y,c=3").get("b").as_deref(),
            Some("x,y"),
            "a value with a comma"
        );
    }
}
