//! Operating Phoenix as an operator would: a real Prometheus scraping a real `phoenix serve`
//! with the shipped configuration and alert rules (deploy/prometheus; docs/operations.md),
//! and `phoenixctl get all` against a real server.
//!
//! The Prometheus test needs the `prometheus` binary (Debian package `prometheus`, which
//! `hack/install-deps.sh` installs); it fails, saying so, when it is missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use phoenix_e2e::{Backend, Server, repo, secret};
use serde_json::Value;

/// How long Prometheus may take to start, scrape and evaluate every rule.
const WAIT: Duration = Duration::from_secs(60);

/// Alerts whose signal (the expression without its final comparison) has no series in this
/// set-up (a `phoenix serve` whose PVE does not answer, delivering no Gateway): their metrics
/// appear only once a watch failed, a delivery ran, PVE answered (a lock refusal, a task), a
/// ticket login was tried, a backup failed, a guest drifted or a GitSync synced. Every other alert's signal must return series.
const SIGNAL_EMPTY_HERE: &[&str] = &[
    "PhoenixWatchRestarting",
    "PhoenixGatewayConfigRejected",
    "PhoenixGatewayDeliveryFailing",
    "PhoenixPveLockRetries",
    "PhoenixPveTasksFailing",
    "PhoenixPveLoginFailing",
    "PhoenixBackupFailing",
    "PhoenixGuestDrifting",
    "PhoenixGitSyncFailing",
    "PhoenixMeshConfigRejected",
    "PhoenixMeshDeliveryFailing",
    "PhoenixCertificateRenewalOverdue",
    "PhoenixCertificateExpiringSoon",
    "PhoenixStackComposeFailing",
    "PhoenixStackDrifting",
];

/// A running Prometheus, stopped (SIGTERM, then SIGKILL) when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Prometheus {
    /// The `prometheus` binary on `$PATH`; panics with how to install it.
    fn binary() -> PathBuf {
        which("prometheus").unwrap_or_else(|| {
            panic!(
                "prometheus is not installed: run hack/install-deps.sh (Debian package prometheus)"
            )
        })
    }

    /// Starts Prometheus on a free loopback port with `config` and storage in `dir`.
    fn start(bin: &Path, dir: &Path, config: &Path) -> Prometheus {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("spawning prometheus");
        Prometheus { child, addr, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `GET /api/v1/PATH`: the `data` of a `success` answer, or the whole answer as an error.
    async fn api(&self, path: &str) -> Result<Value, String> {
        let body = http_get(&self.addr, &format!("/api/v1/{path}")).await?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(body)
        }
    }

    /// An instant query: the result vector.
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("query?query={}", encode(promql))).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Polls `f` until it returns `Some`, or panics with `what` and Prometheus's log.
    async fn wait_for<T, F, Fut>(&self, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(t) = f().await {
                return t;
            }
            assert!(
                start.elapsed() < WAIT,
                "{what} not within {WAIT:?}; prometheus log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` on `$PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A port free right now on 127.0.0.1 (Prometheus binds it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.0 GET on loopback (no chunked answers): the body of a 200.
async fn http_get(addr: &str, path: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or(out.clone())?;
    if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") {
        Ok(body.to_string())
    } else {
        Err(format!("GET {path}: {head}\n{body}"))
    }
}

/// The alerting rules of deploy/prometheus/phoenix-rules.yml: (name, expression).
fn alert_rules(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).expect("phoenix-rules.yml");
    let v = phoenix_e2e::yaml_to_json(&text).expect("phoenix-rules.yml is YAML");
    let mut rules = Vec::new();
    for group in v["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("alerting rules only");
            let expr = rule["expr"].as_str().expect("expr");
            rules.push((name.to_string(), expr.trim().to_string()));
        }
    }
    rules
}

/// `SIGNAL OP NUMBER` (the convention of phoenix-rules.yml): SIGNAL.
fn signal(expr: &str) -> &str {
    let (rest, number) = expr.rsplit_once(' ').expect("SIGNAL OP NUMBER");
    assert!(number.parse::<f64>().is_ok(), "{expr}: ends with a number");
    let (signal, op) = rest.rsplit_once(' ').expect("SIGNAL OP NUMBER");
    assert!(
        ["==", "!=", ">", "<", ">=", "<="].contains(&op),
        "{expr}: ends with a comparison"
    );
    signal
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_phoenix_and_evaluates_every_alert_rule() {
    let prometheus = Prometheus::binary();
    let dir = tempfile::Builder::new()
        .prefix("phoenix-prometheus-")
        .tempdir()
        .expect("temp dir");
    // The guest controller runs against a PVE that does not answer (a free port): its
    // reconciles fail and its PVE requests count as errors, as when PVE is down.
    let token = dir.path().join("pve-token");
    std::fs::write(
        &token,
        "root@pam!e2e=00000000-0000-0000-0000-000000000000\n",
    )
    .unwrap();
    let pve = format!("https://127.0.0.1:{}", free_port());
    let (mesh_root, hosts_root) = (dir.path().join("traefik"), dir.path().join("hosts"));
    std::fs::create_dir_all(&mesh_root).unwrap();
    std::fs::create_dir_all(hosts_root.join("ops")).unwrap();
    // Default flags: the hosted controllers elect leaders (and export
    // `leader_election_master_status`) without any `--leader-ttl`.
    let server = Server::start_opts(
        Backend::Embedded,
        &[
            "--pve-endpoint",
            &pve,
            "--pve-token-file",
            token.to_str().unwrap(),
            "--pve-insecure-skip-verify",
            "--pve-node",
            "pve1",
            // Backups on: PhoenixBackupStale's signal has the first backup's time.
            "--backup-dir",
            dir.path().join("backups").to_str().unwrap(),
            "--mesh-local",
            "--mesh-file-root",
            mesh_root.to_str().unwrap(),
            "--dnszone-hosts-root",
            hosts_root.to_str().unwrap(),
        ],
    )
    .await;
    let examples = repo("manifests/examples/phoenix");
    server
        .ctl(&["apply", "-f", examples.to_str().unwrap()])
        .ok();
    // A GitSync syncing a local repository: the GitSync panels and alert have series.
    let git_url = git_repository_with_a_secret(&dir.path().join("estate"));
    let gitsync = dir.path().join("gitsync.yaml");
    std::fs::write(
        &gitsync,
        format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: GitSync\nmetadata: {{name: estate}}\nspec:\n  url: {git_url}\n  ref: {{branch: main}}\n  interval: 1m\n"
        ),
    )
    .unwrap();
    server.ctl(&["apply", "-f", gitsync.to_str().unwrap()]).ok();
    // A Mesh delivered as a Traefik file under --mesh-file-root and a DnsZone written as a
    // hosts file under --dnszone-hosts-root: the Mesh and DNS panels have series.
    let more = dir.path().join("mesh-dns.yaml");
    std::fs::write(
        &more,
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Mesh\nmetadata: {name: ops}\nspec:\n  domain: ops.internal\n  target: {file: {path: ops.yaml}}\n  entryPoint: {host: 127.0.0.1, port: 8081}\n  services:\n    - {name: web, backends: [{url: 'http://127.0.0.1:8080'}]}\n---\napiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: DnsZone\nmetadata: {name: ops}\nspec:\n  zone: ops.test\n  target: {hostsDir: {path: ops}}\n  records:\n    static: [{name: pve1, type: A, value: 10.0.0.2}]\n",
    )
    .unwrap();
    server.ctl(&["apply", "-f", more.to_str().unwrap()]).ok();
    server.ctl(&["get", "guests"]).ok();
    server
        .ctl(&["get", "guest", "no-such-guest"])
        .expect_code(4);

    let rules_file = repo("deploy/prometheus/phoenix-rules.yml");
    // The shipped configuration with 1 s intervals, this server as the API server target and
    // a free port (nothing listening) as the controller target: PhoenixTargetDown goes
    // pending for it, and only for it.
    let no_controller = format!("127.0.0.1:{}", free_port());
    let shipped = std::fs::read_to_string(repo("deploy/prometheus/prometheus.yml"))
        .expect("deploy/prometheus/prometheus.yml");
    let config = shipped
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("phoenix-rules.yml", &rules_file.display().to_string())
        .replace("127.0.0.1:7080", &server.http_addr)
        .replace("127.0.0.1:7081", &no_controller);
    assert!(config.contains(&server.http_addr), "{config}");
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, &config).unwrap();
    let started = Instant::now();
    let prom = Prometheus::start(&prometheus, dir.path(), &config_file);

    // The server's target is up.
    prom.wait_for("the phoenix serve target up", || async {
        let targets = prom.api("targets").await.ok()?;
        targets["activeTargets"]
            .as_array()?
            .iter()
            .find(|t| {
                t["labels"]["job"] == "phoenix-apiserver"
                    && t["scrapeUrl"] == format!("http://{}/metrics", server.http_addr)
                    && t["health"] == "up"
            })
            .map(|_| ())
    })
    .await;
    // Rates need two samples of what the apply did.
    prom.wait_for("two scrapes of the API requests", || async {
        let r = prom
            .query(
                "count_over_time(phoenix_apiserver_requests_total{method=\"ApplyBatch\"}[1m]) >= 2",
            )
            .await
            .ok()?;
        (!r.is_empty()).then_some(())
    })
    .await;

    // Prometheus evaluated every rule of the file without error.
    let rules = alert_rules(&rules_file);
    assert!(rules.len() >= 10, "{rules:?}");
    let evaluated = prom
        .wait_for("every rule evaluated", || async {
            let groups = prom.api("rules").await.ok()?;
            let loaded: Vec<Value> = groups["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let all_ran = loaded.len() == rules.len()
                && loaded.iter().all(|r| {
                    r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
                });
            all_ran.then_some(loaded)
        })
        .await;
    for r in &evaluated {
        assert_eq!(r["health"], "ok", "rule failed to evaluate: {r}");
    }

    // Each expression queries without error; each signal has series unless its metrics
    // need PVE, deliveries or failures.
    let mut failures = Vec::new();
    for (name, expr) in &rules {
        if let Err(e) = prom.query(expr).await {
            failures.push(format!("{name}: {expr}: {e}"));
            continue;
        }
        match prom.query(signal(expr)).await {
            Err(e) => failures.push(format!("{name}: signal {}: {e}", signal(expr))),
            Ok(series) => {
                let expect_empty = SIGNAL_EMPTY_HERE.contains(&name.as_str());
                if series.is_empty() != expect_empty {
                    failures.push(format!(
                        "{name}: signal {} returned {} series (expected {})",
                        signal(expr),
                        series.len(),
                        if expect_empty { "none" } else { "some" }
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // What is wrong goes pending (every rule here has a `for`): the missing controller
    // process, the guest controller's failing reconciles, the unanswered PVE requests, and
    // the dnszone controller's failing reconciles and refused updates (the example zones' DNS
    // server does not answer here).
    let expected = [
        "PhoenixDnsZoneUpdatesFailing",
        "PhoenixPveRequestErrors",
        "PhoenixReconcileErrors",
        "PhoenixReconcileErrors",
        "PhoenixTargetDown",
    ];
    let alerts = prom
        .wait_for("the expected alerts pending", || async {
            let alerts = prom.api("alerts").await.ok()?;
            let alerts = alerts["alerts"].as_array()?.clone();
            let mut names: Vec<&str> = alerts
                .iter()
                .filter_map(|a| a["labels"]["alertname"].as_str())
                .collect();
            names.sort();
            (names == expected).then_some(alerts)
        })
        .await;
    for a in &alerts {
        assert_eq!(a["state"], "pending", "no `for` has passed yet: {a}");
        match a["labels"]["alertname"].as_str() {
            Some("PhoenixTargetDown") => {
                assert_eq!(a["labels"]["instance"], no_controller.as_str(), "{a}")
            }
            Some("PhoenixReconcileErrors") => assert!(
                a["labels"]["controller"] == "guest" || a["labels"]["controller"] == "dnszone",
                "{a}"
            ),
            _ => assert_eq!(a["labels"]["instance"], server.http_addr.as_str(), "{a}"),
        }
    }

    // The Grafana dashboard: every panel's query parses and returns series.
    let dashboard = check_dashboard(&prom).await;
    eprintln!(
        "prometheus: started, scraped, evaluated every rule and {dashboard} dashboard queries in {:?}",
        started.elapsed()
    );
}

/// Panels of deploy/grafana/phoenix.json whose metrics this set-up cannot produce: no Gateway
/// is delivered (no nginx here), PVE does not answer (no task, no lock refusal), nothing
/// drifts, no certificate is issued, no Stack runs. Every other panel's query must return
/// series.
const PANELS_EMPTY_HERE: &[&str] = &[
    // No certificate is issued (the examples' step-ca does not answer) and no Stack runs (the
    // stack controller needs --stack-compose-binary and a dockerd).
    "Time to expiry",
    "Stack drift and compose runs",
    // The Mesh here is delivered (a Traefik file) without a failure.
    "Mesh failures",
    "nginx reloads",
    "Delivery failures",
    "Since the last delivery",
    "PVE tasks",
    "PVE lock retries",
    "Guest drift corrections",
];

/// Checks deploy/grafana/phoenix.json's structure and runs every panel query against `prom`
/// (Grafana's `$job` as its All value, `$__rate_interval` as 1m); returns how many queries ran.
async fn check_dashboard(prom: &Prometheus) -> usize {
    let text = std::fs::read_to_string(repo("deploy/grafana/phoenix.json"))
        .expect("deploy/grafana/phoenix.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "job"], "dashboard variables");
    let job_all = dashboard["templating"]["list"][1]["allValue"]
        .as_str()
        .expect("$job has an allValue");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = std::collections::BTreeSet::new();
    let mut titles = Vec::new();
    let mut failures = Vec::new();
    let mut queries = 0;
    for panel in panels {
        let id = panel["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} twice");
        let pos = &panel["gridPos"];
        let (x, w) = (pos["x"].as_u64().unwrap(), pos["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {id} is wider than the grid: {pos}");
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("title").to_string();
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title}: says what it shows"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let promql = expr
                .replace("$job", job_all)
                .replace("$__rate_interval", "1m");
            assert!(!promql.contains('$'), "{title}: unknown variable in {expr}");
            queries += 1;
            match prom.query(&promql).await {
                Err(e) => failures.push(format!("{title}: {promql}: {e}")),
                Ok(series) => {
                    let expect_empty = PANELS_EMPTY_HERE.contains(&title.as_str());
                    if series.is_empty() != expect_empty {
                        failures.push(format!(
                            "{title}: {promql} returned {} series (expected {})",
                            series.len(),
                            if expect_empty { "none" } else { "some" }
                        ));
                    }
                }
            }
        }
        titles.push(title);
    }
    for name in PANELS_EMPTY_HERE {
        assert!(titles.iter().any(|t| t == name), "no panel {name:?}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    queries
}

/// A git repository at `dir` with one commit on `main` holding a Secret; its file:// URL.
fn git_repository_with_a_secret(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("secret.yaml"),
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {name: from-git}\ntype: Opaque\nstringData: {k: v}\n",
    )
    .unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &[
            "-c",
            "user.name=e2e",
            "-c",
            "user.email=e2e@example.test",
            "commit",
            "-q",
            "-m",
            "one",
        ],
    ] {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir)
            .status()
            .expect("git not runnable: install it with hack/install-deps.sh");
        assert!(status.success(), "git {args:?}");
    }
    format!("file://{}", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_all_lists_every_kind_with_objects_one_table_each() {
    let s = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let run = s.ctl(&["get", "all"]);
    run.ok();
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.trim(), "No objects found.");

    let examples = repo("manifests/examples/phoenix");
    s.ctl(&["apply", "-f", examples.to_str().unwrap()]).ok();
    s.ctl_stdin(
        &["apply", "-f", "-"],
        Some(&secret("e2e-basic", "app: e2e")),
    )
    .ok();

    let run = s.ctl(&["get", "all"]);
    run.ok();
    let tables: Vec<&str> = run.stdout.split("\n\n").collect();
    let heads: Vec<&str> = tables
        .iter()
        .map(|t| t.lines().next().unwrap_or_default())
        .collect();
    assert_eq!(
        tables.len(),
        7,
        "one table per kind with objects:\n{}",
        run.stdout
    );
    assert!(
        heads[0].starts_with("NAME") && heads[0].contains("TYPE"),
        "{heads:?}"
    );
    assert!(tables[0].contains("secret/e2e-basic"), "{}", run.stdout);
    assert!(heads[1].contains("VMID"), "{heads:?}");
    assert!(tables[1].contains("guest/nginx-gateway "), "{}", run.stdout);
    assert!(
        tables[2].contains("certificateauthority/step-ca"),
        "{}",
        run.stdout
    );
    assert!(tables[3].contains("mesh/internal"), "{}", run.stdout);
    assert!(tables[4].contains("gateway/external"), "{}", run.stdout);
    assert!(tables[5].contains("stack/n8n"), "{}", run.stdout);
    assert!(tables[6].contains("dnszone/prox-local"), "{}", run.stdout);
    assert!(!run.stdout.contains("event/"), "{}", run.stdout);

    let run = s.ctl(&["get", "all", "-o", "name"]);
    run.ok();
    let names: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(names.len(), 17, "{}", run.stdout);
    assert_eq!(names[0], "secret/e2e-basic");
    assert_eq!(names[1], "guest/base-template");
    assert_eq!(names[13], "stack/vllm");
    assert_eq!(names[16], "dnszone/prox-local");

    // -l: only what matches, in every kind.
    let run = s.ctl(&["get", "all", "-l", "app=e2e", "-o", "name"]);
    assert_eq!(run.ok().stdout, "secret/e2e-basic\n");
    let run = s.ctl(&[
        "get",
        "all",
        "-l",
        "phoenix.thinkheads.ai/estate=phoenix",
        "-o",
        "name",
    ]);
    assert_eq!(run.ok().stdout.lines().count(), 16, "{}", run.stdout);
    assert!(!run.stdout.contains("secret/"), "{}", run.stdout);
    let run = s.ctl(&["get", "all", "-l", "app=nothing"]);
    assert_eq!(run.ok().stdout, "");
    assert_eq!(run.stderr.trim(), "No objects found.");

    // -o json: one List of everything.
    let run = s.ctl(&["get", "all", "-o", "json"]);
    let list: Value = serde_json::from_str(&run.ok().stdout).expect("JSON");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(17));

    // No name, no watch.
    s.ctl(&["get", "all", "external"]).expect_code(3);
    s.ctl(&["get", "all", "-w"]).expect_code(3);
}
