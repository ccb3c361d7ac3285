//! From the compose file's services and the host's containers to per-service status, drift
//! and readiness. Pure: no I/O.

use std::collections::HashMap;

use phoenix_api::kinds::stack::ServiceStatus;
use phoenix_api::kinds::stack::compose::Service;

use crate::engine::Container;

/// What a Stack's containers say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// One entry per service of the compose file, by name.
    pub services: Vec<ServiceStatus>,
    /// Services that need compose `up` (containers missing, stopped, failed), with why.
    pub drift: Vec<String>,
    /// The part of `drift` that is one-shots (restart `no` or `on-failure`) whose containers
    /// all exited with a non-zero code: brought back with backoff ([`crate::rerun`]).
    pub failed_one_shots: Vec<String>,
    /// Services that are not as declared (drift, unhealthy, starting), with why.
    pub not_ready: Vec<String>,
    /// Only healthchecks still starting keep the Stack from Ready.
    pub only_starting: bool,
}

impl View {
    /// Every long-running service runs (healthy where it has a healthcheck) and every
    /// one-shot that ran finished with 0.
    pub fn ready(&self) -> bool {
        self.not_ready.is_empty()
    }

    /// `2 running, 1 completed`.
    pub fn summary(&self) -> String {
        let running = self
            .services
            .iter()
            .filter(|s| s.state == "running")
            .count();
        let completed = self
            .services
            .iter()
            .filter(|s| s.state == "completed")
            .count();
        let mut out = format!("{} service(s): {running} running", self.services.len());
        if completed > 0 {
            out.push_str(&format!(", {completed} completed"));
        }
        out
    }
}

/// The view of `services` from `containers` (those of the Stack's project), with `images`
/// (service -> interpolated image) for services without a container and `restarts` by
/// container id.
pub fn observe(
    services: &[Service],
    images: &HashMap<String, String>,
    containers: &[&Container],
    restarts: &HashMap<String, u64>,
) -> View {
    let mut view = View {
        only_starting: true,
        ..View::default()
    };
    for svc in services {
        let cs: Vec<&&Container> = containers
            .iter()
            .filter(|c| c.service == svc.name && !c.oneoff)
            .collect();
        let running = cs.iter().filter(|c| c.state == "running").count() as u64;
        let completed = svc.may_complete()
            && !cs.is_empty()
            && cs
                .iter()
                .all(|c| c.state == "exited" && c.exit_code == Some(0));
        let worst = cs
            .iter()
            .find(|c| c.state != "running")
            .or_else(|| cs.first());
        let state = if cs.is_empty() {
            "missing".to_string()
        } else if completed {
            "completed".to_string()
        } else {
            worst.map(|c| c.state.clone()).unwrap_or_default()
        };
        let health = ["unhealthy", "starting", "healthy"]
            .iter()
            .find(|h| cs.iter().any(|c| c.health.as_deref() == Some(**h)))
            .map(|h| h.to_string());
        let exit_code = cs
            .iter()
            .find(|c| c.state == "exited" || c.state == "restarting")
            .and_then(|c| c.exit_code);
        let image = worst
            .map(|c| c.image.clone())
            .or_else(|| images.get(&svc.name).cloned())
            .unwrap_or_default();
        let restarts_total = cs.iter().filter_map(|c| restarts.get(&c.id)).sum();

        // Drift: compose `up` brings it back.
        let mut why = None;
        if completed {
        } else if (cs.len() as u64) < svc.replicas {
            why = Some(format!(
                "{}: {}/{} containers exist",
                svc.name,
                cs.len(),
                svc.replicas
            ));
        } else if let Some(c) = cs
            .iter()
            .find(|c| !matches!(c.state.as_str(), "running" | "restarting"))
        {
            let code = c
                .exit_code
                .map(|n| format!(" with code {n}"))
                .unwrap_or_default();
            let w = format!("{}: container {}{code}", svc.name, c.state);
            if svc.may_complete() && cs.iter().all(|c| c.state == "exited") {
                view.failed_one_shots.push(w.clone());
            }
            why = Some(w);
        }
        if let Some(w) = &why {
            view.drift.push(w.clone());
            view.not_ready.push(w.clone());
            view.only_starting = false;
        } else if !completed {
            if running < svc.replicas {
                view.not_ready.push(format!(
                    "{}: {running}/{} running ({state})",
                    svc.name, svc.replicas
                ));
                view.only_starting = false;
            } else if health.as_deref() == Some("unhealthy") {
                view.not_ready
                    .push(format!("{}: healthcheck failing (unhealthy)", svc.name));
                view.only_starting = false;
            } else if health.as_deref() == Some("starting") {
                view.not_ready
                    .push(format!("{}: healthcheck starting", svc.name));
            }
        }
        view.services.push(ServiceStatus {
            name: svc.name.clone(),
            image,
            replicas: format!("{running}/{}", svc.replicas),
            state,
            health,
            exit_code,
            restarts: restarts_total,
        });
    }
    if view.not_ready.is_empty() {
        view.only_starting = false;
    }
    view
}

#[cfg(test)]
mod tests {
    use phoenix_api::kinds::stack::compose;

    use super::*;

    fn c(service: &str, state: &str, health: Option<&str>, exit: Option<i64>) -> Container {
        Container {
            id: format!("id-{service}-{state}"),
            project: "p".into(),
            service: service.into(),
            image: "img:1".into(),
            state: state.into(),
            health: health.map(str::to_string),
            exit_code: exit,
            oneoff: false,
        }
    }

    fn services() -> Vec<Service> {
        let doc = compose::parse(
            "services:\n  web: {image: img:1, restart: always}\n  db: {image: img:1, healthcheck: {test: [CMD, 'true']}}\n  job: {image: img:1}\n",
        )
        .unwrap();
        compose::services(&doc)
    }

    #[test]
    fn running_healthy_and_a_finished_one_shot_are_ready() {
        let cs = [
            c("web", "running", None, None),
            c("db", "running", Some("healthy"), None),
            c("job", "exited", None, Some(0)),
        ];
        let refs: Vec<&Container> = cs.iter().collect();
        let v = observe(&services(), &HashMap::new(), &refs, &HashMap::new());
        assert!(v.ready(), "{v:?}");
        assert!(v.drift.is_empty());
        let job = v.services.iter().find(|s| s.name == "job").unwrap();
        assert_eq!((job.state.as_str(), job.exit_code), ("completed", Some(0)));
        let db = v.services.iter().find(|s| s.name == "db").unwrap();
        assert_eq!(
            (db.replicas.as_str(), db.health.as_deref()),
            ("1/1", Some("healthy"))
        );
    }

    #[test]
    fn missing_stopped_and_unhealthy_services_are_named() {
        let cs = [
            c("web", "exited", None, Some(137)),
            c("db", "running", Some("unhealthy"), None),
        ];
        let refs: Vec<&Container> = cs.iter().collect();
        let images = HashMap::from([("job".to_string(), "img:2".to_string())]);
        let v = observe(&services(), &images, &refs, &HashMap::new());
        assert!(!v.ready());
        assert_eq!(
            v.drift,
            vec![
                "job: 0/1 containers exist",
                "web: container exited with code 137"
            ]
        );
        assert!(
            v.not_ready
                .iter()
                .any(|m| m.contains("db: healthcheck failing"))
        );
        let job = v.services.iter().find(|s| s.name == "job").unwrap();
        assert_eq!(
            (job.state.as_str(), job.image.as_str()),
            ("missing", "img:2")
        );
        assert!(!v.only_starting);
    }

    #[test]
    fn a_starting_healthcheck_is_only_starting() {
        let cs = [
            c("web", "running", None, None),
            c("db", "running", Some("starting"), None),
            c("job", "exited", None, Some(0)),
        ];
        let refs: Vec<&Container> = cs.iter().collect();
        let v = observe(&services(), &HashMap::new(), &refs, &HashMap::new());
        assert!(!v.ready());
        assert!(v.only_starting);
    }

    #[test]
    fn a_failed_one_shot_is_drift_marked_for_backoff_a_stopped_service_is_plain_drift() {
        let cs = [
            c("web", "exited", None, Some(137)),
            c("db", "running", Some("healthy"), None),
            c("job", "exited", None, Some(4)),
        ];
        let refs: Vec<&Container> = cs.iter().collect();
        let v = observe(&services(), &HashMap::new(), &refs, &HashMap::new());
        assert_eq!(
            v.drift,
            vec![
                "job: container exited with code 4",
                "web: container exited with code 137"
            ]
        );
        assert_eq!(
            v.failed_one_shots,
            vec!["job: container exited with code 4"]
        );
    }
}
