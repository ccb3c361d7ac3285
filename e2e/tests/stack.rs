//! The Stack controller end to end: `phoenix serve` hosting it, `phoenixctl` applying Stacks,
//! a real dockerd (one per test binary, `phoenix_e2e::docker`) running them with compose v2.
//! Services use `network_mode: host` and serve `busybox httpd` on 127.0.0.1 ports picked at
//! run time.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use phoenix_api::Kind;
use phoenix_e2e::docker::{BUSYBOX, Dockerd, compose_binary, free_port};
use phoenix_e2e::{Backend, Server};
use serde_json::Value;
use tokio::sync::RwLock;

#[path = "../../drivers/ssh/tests/support/mod.rs"]
mod ssh_support;

/// Tests take it shared; the dockerd restart takes it alone.
static DAEMON: RwLock<()> = RwLock::const_new(());

const WAIT: Duration = Duration::from_secs(120);

/// `phoenix serve` with the Stack controller resyncing every 2 s; `ssh` targets run the docker
/// CLI and compose against the test daemon's socket.
async fn server() -> Server {
    let d = Dockerd::shared();
    let compose = compose_binary().display().to_string();
    let remote_docker = format!("docker -H {}", d.host());
    let remote_compose = format!("env DOCKER_HOST={} {compose}", d.host());
    Server::start_opts(
        Backend::Embedded,
        &[
            "--stack-compose-binary",
            &compose,
            "--stack-remote-docker",
            &remote_docker,
            "--stack-remote-compose",
            &remote_compose,
            "--stack-resync",
            "2s",
            "--stack-list-max-age",
            "1s",
            "--stack-forbid-privileged",
        ],
    )
    .await
}

fn apply(s: &Server, yaml: &str) {
    s.ctl_stdin(&["apply", "-f", "-"], Some(yaml)).ok();
}

fn get(s: &Server, name: &str) -> Option<Value> {
    let run = s.ctl(&["get", "stack", name, "-o", "json"]);
    if run.code != Some(0) {
        return None;
    }
    serde_json::from_str(&run.stdout).ok()
}

fn condition<'a>(stack: &'a Value, type_: &str) -> Option<&'a Value> {
    stack
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn is_true(stack: &Value, type_: &str) -> bool {
    condition(stack, type_).is_some_and(|c| c["status"] == "True")
}

fn service<'a>(stack: &'a Value, name: &str) -> &'a Value {
    stack
        .pointer("/status/services")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no service {name} in status: {stack:#}"))
}

/// Polls the Stack until `done` holds; panics with the last status and the server's log.
async fn wait_for(s: &Server, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(v) = get(s, name) {
            if done(&v) {
                return v;
            }
            last = Some(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{name}: {what} did not happen within {WAIT:?}\nlast: {:#}\nserver log:\n{}",
        last.unwrap_or_default(),
        s.log_tail()
    );
}

async fn wait_gone(s: &Server, name: &str) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if get(s, name).is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{name} was not deleted\nserver log:\n{}", s.log_tail());
}

/// `GET /` on 127.0.0.1:port; the response. A running container's httpd may bind a moment
/// after it started: connecting is retried for a few seconds.
fn http_get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("connect to 127.0.0.1:{port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

async fn events(s: &Server, stack: &str, reason: &str) -> Vec<String> {
    s.list(Kind::Event)
        .await
        .into_iter()
        .filter_map(|o| match o {
            phoenix_api::Object::Event(e)
                if e.involved_object.name == stack && e.reason == reason =>
            {
                Some(e.message)
            }
            _ => None,
        })
        .collect()
}

fn header(name: &str, d: &Dockerd) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Stack
metadata: {{name: {name}}}
spec:
  target: {{docker: {{endpoint: \"{}\"}}}}
",
        d.host()
    )
}

/// A Stack header with an `ssh` target on the test sshd (its host key in the Secret), whose
/// host comes from the Guest `docker-vm`'s status.
fn ssh_header(name: &str, port: u16) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Stack
metadata: {{name: {name}}}
spec:
  guest: docker-vm
  target: {{ssh: {{port: {port}, user: root, secretRef: docker-ssh}}}}
"
    )
}

/// The Guest `docker-vm` reporting `ip`, as the guest controller would.
async fn docker_vm_at(s: &Server, ip: &str) {
    apply(
        s,
        "apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Guest
metadata: {name: docker-vm}
spec:
  type: lxc
  source: {template: local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst}
  cores: 1
  memoryMiB: 512
  rootfs: {storage: local-lvm, sizeGiB: 4}
",
    );
    let client = s.client().await;
    let mut g = client.get(Kind::Guest, "docker-vm").await.unwrap();
    let phoenix_api::Object::Guest(guest) = &mut g else {
        panic!("not a guest")
    };
    guest.status = Some(
        serde_json::from_value(serde_json::json!({
            "state": "running",
            "addresses": [{"interface": "eth0", "ipv4": ip}]
        }))
        .unwrap(),
    );
    client.update_status(&g).await.unwrap();
}

/// db (healthcheck, named volume) <- web (depends_on db healthy), and a one-shot job.
fn three_services(name: &str, d: &Dockerd, db: u16, web: u16, greeting: &str) -> String {
    three_services_with(&header(name, d), db, web, greeting)
}

fn three_services_with(header: &str, db: u16, web: u16, greeting: &str) -> String {
    format!(
        "{}  env: {{DB_PORT: \"{db}\", WEB_PORT: \"{web}\", GREETING: \"{greeting}\"}}
  compose: |
    services:
      db:
        image: {BUSYBOX}
        network_mode: host
        restart: unless-stopped
        command: [httpd, -f, -p, \"127.0.0.1:${{DB_PORT}}\", -h, /www]
        healthcheck:
          test: [CMD, wget, -q, -O, /dev/null, \"http://127.0.0.1:${{DB_PORT}}/\"]
          interval: 1s
          timeout: 2s
          retries: 3
        volumes: [\"data:/data\"]
      web:
        image: {BUSYBOX}
        network_mode: host
        restart: unless-stopped
        command: [httpd, -f, -p, \"127.0.0.1:${{WEB_PORT}}\", -h, /www]
        environment: {{GREETING: \"${{GREETING}}\"}}
        depends_on: {{db: {{condition: service_healthy}}}}
      job:
        image: {BUSYBOX}
        network_mode: none
        command: [\"true\"]
    volumes: {{data: {{}}}}
",
        header
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_service_stack_deploys_reports_recreates_only_what_changed_heals_and_deletes() {
    let _shared = DAEMON.read().await;
    let d = Dockerd::shared();
    let s = server().await;
    let head = header("lc", d);
    lifecycle(&s, d, "lc", &head).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ssh_a_three_service_stack_deploys_reports_recreates_only_what_changed_heals_and_deletes()
 {
    let _shared = DAEMON.read().await;
    let d = Dockerd::shared();
    let dir = tempfile::tempdir().unwrap();
    let sshd = ssh_support::Sshd::start(dir.path());
    assert_eq!(sshd.user, "root", "the docker socket needs root here");
    let s = server().await;
    let secret = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Secret
metadata: {{name: docker-ssh}}
type: ssh
stringData:
  ssh-privatekey: {:?}
  known_hosts: {:?}
",
        sshd.client_private,
        sshd.known_hosts()
    );
    apply(&s, &secret);
    let head = ssh_header("remote", sshd.port);
    // No address yet: the Stack waits for the Guest, and deploys once it reports one.
    apply(
        &s,
        &three_services_with(&head, free_port(), free_port(), "early"),
    );
    let v = wait_for(&s, "remote", "GuestAddressUnknown", |v| {
        condition(v, "Ready").is_some_and(|c| c["reason"] == "GuestAddressUnknown")
    })
    .await;
    assert!(!is_true(&v, "Ready"));
    s.ctl(&["delete", "stack", "remote"]).ok();
    wait_gone(&s, "remote").await;
    docker_vm_at(&s, "127.0.0.1").await;
    lifecycle(&s, d, "remote", &head).await;
}

/// Deploy, status, HTTP; edit one service; remove a container outside; delete.
async fn lifecycle(s: &Server, d: &Dockerd, name: &str, head: &str) {
    let (db, web) = (free_port(), free_port());
    apply(s, &three_services_with(head, db, web, "hello"));

    let v = wait_for(s, name, "Ready", |v| is_true(v, "Ready")).await;
    assert!(http_get(web).contains("phoenix"), "web answers HTTP");
    assert!(http_get(db).contains("phoenix"), "db answers HTTP");
    let dbs = service(&v, "db");
    assert_eq!(dbs["state"], "running");
    assert_eq!(dbs["health"], "healthy");
    assert_eq!(dbs["replicas"], "1/1");
    assert_eq!(dbs["image"], BUSYBOX);
    assert_eq!(service(&v, "web")["state"], "running");
    let job = service(&v, "job");
    assert_eq!(job["state"], "completed");
    assert_eq!(job["exitCode"], 0);
    let hash = v
        .pointer("/status/composeHash")
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    assert!(hash.starts_with("sha256:"));

    // Edit only web's environment: only web's container is recreated.
    let (db_id, web_id) = (d.container_ids(name, "db"), d.container_ids(name, "web"));
    assert_eq!((db_id.len(), web_id.len()), (1, 1));
    apply(s, &three_services_with(head, db, web, "changed"));
    wait_for(s, name, "the new hash deployed", |v| {
        is_true(v, "Ready") && v.pointer("/status/composeHash").unwrap() != hash.as_str()
    })
    .await;
    assert_eq!(d.container_ids(name, "db"), db_id, "db was left alone");
    let new_web = d.container_ids(name, "web");
    assert_eq!(new_web.len(), 1);
    assert_ne!(new_web, web_id, "web was recreated");
    assert!(http_get(web).contains("phoenix"));

    // Removed outside Phoenix: reported and brought back.
    d.docker(&["rm", "-f", &new_web[0]]).ok();
    let deadline = Instant::now() + WAIT;
    let restored = loop {
        let ids = d.container_ids(name, "web");
        if ids.len() == 1 && ids != new_web {
            break ids;
        }
        assert!(
            Instant::now() < deadline,
            "web was not restored\n{}",
            s.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    wait_for(s, name, "Ready after the repair", |v| is_true(v, "Ready")).await;
    assert_eq!(d.container_ids(name, "web"), restored);
    let drift = events(s, name, "Drift").await;
    assert!(
        drift
            .iter()
            .any(|m| m.contains("web: 0/1 containers exist")),
        "a Drift event names web: {drift:?}\nDeployed: {:?}\nlog:\n{}",
        events(s, name, "Deployed").await,
        std::fs::read_to_string(s.data_dir().join("server-1.log")).unwrap_or_default()
    );
    assert!(http_get(web).contains("phoenix"));

    // Delete: containers gone, the named volume kept.
    s.ctl(&["delete", "stack", name]).ok();
    wait_gone(s, name).await;
    for svc in ["db", "web", "job"] {
        assert!(d.container_ids(name, svc).is_empty(), "{svc} removed");
    }
    let vols = d.docker(&["volume", "ls", "-q"]);
    assert!(
        vols.stdout.lines().any(|l| l == format!("{name}_data")),
        "named volume kept: {}",
        vols.stdout
    );
    d.docker(&["volume", "rm", &format!("{name}_data")]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_healthcheck_is_degraded_naming_the_service_and_retain_leaves_it_running() {
    let _shared = DAEMON.read().await;
    let d = Dockerd::shared();
    let s = server().await;
    let (port, wrong) = (free_port(), free_port());
    apply(
        &s,
        &format!(
            "{}  deletionPolicy: Retain
  compose: |
    services:
      api:
        image: {BUSYBOX}
        network_mode: host
        restart: unless-stopped
        command: [httpd, -f, -p, \"127.0.0.1:{port}\", -h, /www]
        healthcheck:
          test: [CMD, wget, -q, -O, /dev/null, \"http://127.0.0.1:{wrong}/\"]
          interval: 1s
          timeout: 1s
          retries: 2
",
            header("sick", d)
        ),
    );
    let v = wait_for(&s, "sick", "Degraded", |v| is_true(v, "Degraded")).await;
    let message = condition(&v, "Degraded").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("api: healthcheck failing (unhealthy)"),
        "{message}"
    );
    assert!(!is_true(&v, "Ready"));
    assert_eq!(service(&v, "api")["health"], "unhealthy");
    assert_eq!(service(&v, "api")["state"], "running");

    // Retain: the Stack goes, its container stays.
    let ids = d.container_ids("sick", "api");
    s.ctl(&["delete", "stack", "sick"]).ok();
    wait_gone(&s, "sick").await;
    assert_eq!(
        d.container_ids("sick", "api"),
        ids,
        "Retain leaves the container"
    );
    d.docker(&["rm", "-f", &ids[0]]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_does_not_exist_is_named_in_a_condition() {
    let _shared = DAEMON.read().await;
    let d = Dockerd::shared();
    let s = server().await;
    apply(
        &s,
        &format!(
            "{}  compose: |
    services:
      ghost:
        image: phoenix-test/does-not-exist:1
        network_mode: none
        pull_policy: missing
",
            header("ghost", d)
        ),
    );
    let v = wait_for(&s, "ghost", "ImagesPresent=False", |v| {
        condition(v, "ImagesPresent").is_some_and(|c| c["status"] == "False")
    })
    .await;
    let c = condition(&v, "ImagesPresent").unwrap();
    assert_eq!(c["reason"], "ImageMissing");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("phoenix-test/does-not-exist:1 (service ghost)"),
        "{c:#}"
    );
    assert!(!is_true(&v, "Ready"));
    assert!(is_true(&v, "Degraded"));
    s.ctl(&["delete", "stack", "ghost"]).ok();
    wait_gone(&s, "ghost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_is_refused_when_the_operator_forbids_it_and_nothing_is_deployed() {
    let _shared = DAEMON.read().await;
    let d = Dockerd::shared();
    let s = server().await;
    apply(
        &s,
        &format!(
            "{}  compose: |
    services:
      root:
        image: {BUSYBOX}
        network_mode: none
        privileged: true
        command: [sleep, \"600\"]
",
            header("priv", d)
        ),
    );
    let v = wait_for(&s, "priv", "Ready=False", |v| {
        condition(v, "Ready").is_some_and(|c| c["reason"] == "PrivilegedForbidden")
    })
    .await;
    let message = condition(&v, "Ready").unwrap()["message"].as_str().unwrap();
    assert!(
        message.contains("spec.compose.services.root.privileged"),
        "{message}"
    );
    assert!(
        d.container_ids("priv", "root").is_empty(),
        "nothing deployed"
    );
    s.ctl(&["delete", "stack", "priv"]).ok();
    wait_gone(&s, "priv").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_compose_is_rejected_with_the_field_path_and_nothing_is_stored() {
    let d = Dockerd::shared();
    let s = server().await;
    let cases = [
        (
            "  compose: |\n    services:\n      web: {image: [broken\n",
            "spec.compose: is not valid YAML",
        ),
        (
            "  compose: |\n    services:\n      web: {image: x}\n    servics: {}\n",
            "spec.compose.servics: is not a top-level key of the compose specification",
        ),
        (
            "  compose: |\n    services:\n      web: {image: \"x:${TAG}\"}\n",
            "spec.compose.services.web.image: variable TAG is not set in spec.env or spec.envFrom",
        ),
    ];
    for (body, expect) in cases {
        let yaml = format!("{}{body}", header("bad", d));
        let run = s.ctl_stdin(&["apply", "-f", "-"], Some(&yaml));
        assert_ne!(run.code, Some(0), "{yaml}");
        assert!(
            run.stderr.contains(expect),
            "{expect}\n got: {}",
            run.stderr
        );
        assert!(get(&s, "bad").is_none(), "nothing stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_dockerd_restarts_the_stack_converges_again_without_duplicates() {
    let d = Dockerd::shared();
    let s = server().await;
    let (db, web) = (free_port(), free_port());
    {
        let _shared = DAEMON.read().await;
        apply(&s, &three_services("rs", d, db, web, "hi"));
        wait_for(&s, "rs", "Ready", |v| is_true(v, "Ready")).await;
    }
    {
        let _alone = DAEMON.write().await;
        d.restart()
            .unwrap_or_else(|e| panic!("restarting dockerd: {e}"));
        // Readiness needs a fresh look after the restart: wait for the containers to be
        // running again (Phoenix starts them; nothing else restarts db's dependants).
        let deadline = Instant::now() + WAIT;
        loop {
            let ids: Vec<String> = ["db", "web"]
                .iter()
                .flat_map(|svc| d.container_ids("rs", svc))
                .collect();
            let running = d.docker(&[
                "ps",
                "-q",
                "--filter",
                "label=com.docker.compose.project=rs",
            ]);
            if ids.len() == 2 && running.stdout.lines().count() == 2 && http_get_ok(web) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "rs did not come back\n{}",
                s.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        wait_for(&s, "rs", "Ready", |v| is_true(v, "Ready")).await;
        for svc in ["db", "web", "job"] {
            assert_eq!(
                d.container_ids("rs", svc).len(),
                1,
                "one {svc}, no duplicates"
            );
        }
    }
    let _shared = DAEMON.read().await;
    s.ctl(&["delete", "stack", "rs"]).ok();
    wait_gone(&s, "rs").await;
    let _ = d.docker(&["volume", "rm", "rs_data"]);
}

fn http_get_ok(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && http_get(port).contains("phoenix")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_stack_runs_on_the_test_images() {
    let _shared = DAEMON.read().await;
    let d = Dockerd::shared();
    let s = server().await;
    let sample =
        std::fs::read_to_string(phoenix_e2e::repo("manifests/samples/stack.yaml")).unwrap();
    let (db, web) = (free_port(), free_port());
    let yaml = sample
        .replace("unix:///var/run/docker.sock", &d.host())
        .replace("DB_PORT: \"8080\"", &format!("DB_PORT: \"{db}\""))
        .replace("WEB_PORT: \"8081\"", &format!("WEB_PORT: \"{web}\""));
    assert_ne!(yaml, sample);
    apply(&s, &yaml);
    let v = wait_for(&s, "demo", "Ready", |v| is_true(v, "Ready")).await;
    assert_eq!(service(&v, "db")["health"], "healthy");
    assert!(http_get(web).contains("phoenix"));
    s.ctl(&["delete", "stack", "demo"]).ok();
    wait_gone(&s, "demo").await;
    let _ = d.docker(&["volume", "rm", "demo_data"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_from_a_secret_reaches_the_container_and_never_status_events_or_logs() {
    let _shared = DAEMON.read().await;
    let d = Dockerd::shared();
    let s = server().await;
    let value = "hunter2-very-secret";
    apply(
        &s,
        &format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Secret
metadata: {{name: app-secret}}
type: Opaque
stringData: {{token: {value}}}
"
        ),
    );
    let with_env = |name: &str, image: &str| {
        format!(
            "{}  envFrom: {{TOKEN: {{secretRef: app-secret, key: token}}}}
  compose: |
    services:
      app:
        image: \"{image}\"
        network_mode: none
        restart: unless-stopped
        command: [sleep, \"600\"]
        environment: {{TOKEN: \"${{TOKEN}}\"}}
",
            header(name, d)
        )
    };
    apply(&s, &with_env("sec", BUSYBOX));
    wait_for(&s, "sec", "Ready", |v| is_true(v, "Ready")).await;
    let ids = d.container_ids("sec", "app");
    let env = d.docker(&["inspect", "--format", "{{json .Config.Env}}", &ids[0]]);
    assert!(
        env.stdout.contains(&format!("TOKEN={value}")),
        "the container got the value"
    );

    // The value inside an image name: the failure is reported with the value masked.
    apply(&s, &with_env("leak", "phoenix-test/${TOKEN}:1"));
    let v = wait_for(&s, "leak", "ImagesPresent=False", |v| {
        condition(v, "ImagesPresent").is_some_and(|c| c["status"] == "False")
    })
    .await;
    let message = condition(&v, "ImagesPresent").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("phoenix-test/***:1 (service app)"),
        "{message}"
    );

    let stacks = s.ctl(&["get", "stacks", "-o", "yaml"]);
    let events = s.ctl(&["get", "events", "-o", "yaml"]);
    stacks.ok();
    events.ok();
    let log = std::fs::read_to_string(s.data_dir().join("server-1.log")).unwrap();
    assert!(log.contains("ImageMissing"), "the whole log is read");
    for (what, text) in [
        ("stacks", &stacks.stdout),
        ("events", &events.stdout),
        ("server log", &log),
    ] {
        assert!(!text.contains(value), "{what} show the Secret's value");
    }
    for name in ["sec", "leak"] {
        s.ctl(&["delete", "stack", name]).ok();
        wait_gone(&s, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_endpoint_with_client_tls_from_a_secret_deploys_and_deletes() {
    let _shared = DAEMON.read().await;
    let d = Dockerd::shared();
    let s = server().await;
    let (ca, cert, key) = d.client_tls();
    apply(
        &s,
        &format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Secret
metadata: {{name: docker-tls}}
type: tls
stringData:
  ca.crt: {ca:?}
  tls.crt: {cert:?}
  tls.key: {key:?}
"
        ),
    );
    let port = free_port();
    apply(
        &s,
        &format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Stack
metadata: {{name: tcp}}
spec:
  target: {{docker: {{endpoint: \"{}\", secretRef: docker-tls}}}}
  compose: |
    services:
      web:
        image: {BUSYBOX}
        network_mode: host
        restart: unless-stopped
        command: [httpd, -f, -p, \"127.0.0.1:{port}\", -h, /www]
",
            d.tcp_host()
        ),
    );
    let v = wait_for(&s, "tcp", "Ready", |v| is_true(v, "Ready")).await;
    assert_eq!(service(&v, "web")["state"], "running");
    assert!(http_get(port).contains("phoenix"));
    assert_eq!(d.container_ids("tcp", "web").len(), 1);
    s.ctl(&["delete", "stack", "tcp"]).ok();
    wait_gone(&s, "tcp").await;
    assert!(d.container_ids("tcp", "web").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_service_is_degraded_with_its_exit_code_and_restarts_unlike_a_finished_one_shot()
{
    let _shared = DAEMON.read().await;
    let d = Dockerd::shared();
    let s = server().await;
    apply(
        &s,
        &format!(
            "{}  compose: |
    services:
      crash:
        image: {BUSYBOX}
        network_mode: none
        restart: always
        command: [sh, -c, \"exit 3\"]
      once:
        image: {BUSYBOX}
        network_mode: none
        command: [\"true\"]
",
            header("crashy", d)
        ),
    );
    let service_in = |v: &Value, name: &str| -> Option<Value> {
        v.pointer("/status/services")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
    };
    // The one-shot may still be seen running in the first status that counts a restart.
    let v = wait_for(
        &s,
        "crashy",
        "Degraded with restarts counted, the one-shot done",
        |v| {
            is_true(v, "Degraded")
                && service_in(v, "crash").is_some_and(|c| c["restarts"].as_u64().unwrap_or(0) >= 1)
                && service_in(v, "once").is_some_and(|o| o["state"] != "running")
        },
    )
    .await;
    let crash = service(&v, "crash");
    assert_eq!(crash["exitCode"], 3, "{crash:#}");
    assert_eq!(crash["replicas"], "0/1");
    let message = condition(&v, "Degraded").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("crash: 0/1 running"), "{message}");
    assert!(
        !message.contains("once"),
        "a finished one-shot is no failure: {message}"
    );
    let once = service(&v, "once");
    assert_eq!(
        (once["state"].as_str(), once["exitCode"].as_i64()),
        (Some("completed"), Some(0))
    );
    s.ctl(&["delete", "stack", "crashy"]).ok();
    wait_gone(&s, "crashy").await;
    assert!(d.container_ids("crashy", "crash").is_empty());
}

/// A one-shot (restart `no`) that fails is run again with backoff, not at every look: the
/// status says when, and each re-run is a Warning event saying how long the next one waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_one_shot_is_run_again_with_backoff() {
    let _shared = DAEMON.read().await;
    let d = Dockerd::shared();
    let s = server().await;
    apply(
        &s,
        &format!(
            "{}  compose: |
    services:
      migrate:
        image: {BUSYBOX}
        network_mode: none
        command: [sh, -c, \"exit 4\"]
",
            header("failing-job", d)
        ),
    );
    let v = wait_for(&s, "failing-job", "the failure held back", |v| {
        condition(v, "Ready").is_some_and(|c| {
            c["message"]
                .as_str()
                .is_some_and(|m| m.contains("run again in"))
        })
    })
    .await;
    let migrate = service(&v, "migrate");
    assert_eq!(migrate["exitCode"], 4, "{migrate:#}");
    let message = condition(&v, "Ready").unwrap()["message"].as_str().unwrap();
    assert!(
        message.contains("migrate: container exited with code 4"),
        "{message}"
    );
    // The first re-run comes after the first wait and announces the doubled one.
    let deadline = Instant::now() + WAIT;
    let reruns = loop {
        let e = events(&s, "failing-job", "OneShotRerun").await;
        if !e.is_empty() {
            break e;
        }
        assert!(Instant::now() < deadline, "no re-run\n{}", s.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        reruns[0].contains("migrate: container exited with code 4")
            && reruns[0].contains("the next run waits 20s"),
        "{reruns:?}"
    );
    // It is not reported as a change made outside Phoenix.
    assert!(events(&s, "failing-job", "Drift").await.is_empty());
    s.ctl(&["delete", "stack", "failing-job"]).ok();
    wait_gone(&s, "failing-job").await;
}
