//! The controller runtime against a real `phoenix serve`: a small test controller converges
//! objects, survives a server restart, relists after its resourceVersion was compacted away,
//! handles finalizers, records conditions and events; leader election on both backends;
//! `promtool check metrics` on what the runtime and the server export.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use phoenix_api::client::{Client, WatchEvent};
use phoenix_api::condition::{READY, RECONCILING, find_condition};
use phoenix_api::kinds::Stack;
use phoenix_api::{Api, ConditionStatus, Kind, Object, ObjectStatus, decode};
use phoenix_e2e::{Backend, Server};
use phoenix_runtime::{
    Action, Context, Controller, LeaderConfig, Manager, ReconcileError, ReconcileResult,
    Reconciler, Running, RuntimeMetrics,
};
use prometheus_client::registry::Registry;

const FINALIZER: &str = "test.phoenix.thinkheads.ai/cleanup";
const WAIT: Duration = Duration::from_secs(30);
/// The test controller's own condition, written with the failure of an invalid compose file.
const COMPOSE_VALID: &str = "ComposeValid";
/// The test controller is the only one reconciling Stacks.
const BARE: &[&str] = &["--no-controllers"];

/// What the test controller did, shared with the test.
#[derive(Debug, Default)]
struct Record {
    /// Reconciles per object name.
    reconciles: Mutex<HashMap<String, u32>>,
    /// Cleanups per object name.
    cleanups: Mutex<HashMap<String, u32>>,
    /// Reconciles running now, per object name; must never exceed 1.
    running: Mutex<HashMap<String, u32>>,
    overlap: AtomicBool,
    /// (instance, start, end) of every reconcile.
    spans: Mutex<Vec<(u32, Instant, Instant)>>,
}

impl Record {
    fn count(&self, name: &str) -> u32 {
        self.reconciles
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

/// Stacks: `Ready` once reconciled. Annotations drive failures: `test/fail-times: N` fails
/// the first N reconciles (transient), `test/cleanup-fails: N` fails the first N cleanups; a
/// compose file containing `invalid` is an invalid spec.
struct TestReconciler {
    instance: u32,
    record: Arc<Record>,
    /// Slows reconciles down (leader election test).
    delay: Duration,
}

fn annotation(s: &Stack, key: &str) -> u32 {
    s.metadata
        .annotations
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[async_trait]
impl Reconciler for TestReconciler {
    type Kind = Stack;

    async fn reconcile(&self, stack: Arc<Stack>, ctx: &Context<Stack>) -> ReconcileResult {
        let name = stack.metadata.name.clone();
        let start = Instant::now();
        {
            let mut running = self.record.running.lock().unwrap();
            let n = running.entry(name.clone()).or_default();
            *n += 1;
            if *n > 1 {
                self.record.overlap.store(true, Ordering::SeqCst);
            }
        }
        let n = {
            let mut r = self.record.reconciles.lock().unwrap();
            let n = r.entry(name.clone()).or_default();
            *n += 1;
            *n
        };
        tokio::time::sleep(self.delay).await;
        let result = if stack.spec.compose.contains("invalid") {
            Err(
                ReconcileError::invalid("InvalidCompose", "compose file says it is invalid")
                    .with_condition(
                        COMPOSE_VALID,
                        ConditionStatus::False,
                        "InvalidCompose",
                        "compose file says it is invalid",
                    ),
            )
        } else if n <= annotation(&stack, "test/fail-times") {
            Err(ReconcileError::transient(
                "BackendDown",
                "the backend is not answering",
            ))
        } else {
            ctx.ready(&stack, "Converged", "deployed")
                .await
                .map(|_| Action::done())
        };
        *self.record.running.lock().unwrap().get_mut(&name).unwrap() -= 1;
        self.record
            .spans
            .lock()
            .unwrap()
            .push((self.instance, start, Instant::now()));
        result
    }

    async fn cleanup(&self, stack: Arc<Stack>, _ctx: &Context<Stack>) -> ReconcileResult {
        let n = {
            let mut c = self.record.cleanups.lock().unwrap();
            let n = c.entry(stack.metadata.name.clone()).or_default();
            *n += 1;
            *n
        };
        if n <= annotation(&stack, "test/cleanup-fails") {
            return Err(ReconcileError::transient(
                "CleanupFailed",
                "cannot remove it yet",
            ));
        }
        Ok(Action::done())
    }
}

fn stack(name: &str, compose_image: &str, annotations: &[(&str, &str)]) -> Object {
    let ann: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let ann = if ann.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{ann}")
    };
    let yaml = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Stack\nmetadata:\n  name: {name}\n{ann}spec:\n  target:\n    docker: {{endpoint: \"unix:///var/run/docker.sock\"}}\n  compose: |\n    services:\n      web:\n        image: {compose_image}\n"
    );
    decode::decode_str("test", &yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
}

fn start_controller(
    client: Client,
    reconciler: TestReconciler,
    leader: Option<LeaderConfig>,
    metrics: Arc<RuntimeMetrics>,
) -> Running {
    let mut manager = Manager::new(client, metrics);
    manager.add(
        Controller::new("test-stacks", reconciler)
            .finalizer(FINALIZER)
            .concurrency(4)
            .leader(leader)
            .backoff(phoenix_runtime::backoff::BackoffConfig {
                min: Duration::from_millis(200),
                max: Duration::from_secs(2),
                reset_after: Duration::from_secs(10),
            }),
    );
    manager.spawn()
}

async fn get_stack(client: &Client, name: &str) -> Option<Stack> {
    Api::<Stack>::new(client.clone())
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e}"))
}

fn condition(s: &Stack, type_: &str) -> Option<(ConditionStatus, String)> {
    let st = s.status.as_ref()?;
    find_condition(st.conditions(), type_).map(|c| (c.status, c.reason.clone()))
}

/// Waits until `pred` holds for the stored object.
async fn wait_for(client: &Client, name: &str, what: &str, pred: impl Fn(Option<&Stack>) -> bool) {
    let start = Instant::now();
    loop {
        let s = get_stack(client, name).await;
        if pred(s.as_ref()) {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{name}: not {what} after {WAIT:?}; last: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_ready_at_generation(s: Option<&Stack>) -> bool {
    s.is_some_and(|s| {
        condition(s, READY).is_some_and(|(st, _)| st == ConditionStatus::True)
            && s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_converges_records_failures_and_finalizes() {
    let server = Server::start_opts(Backend::Embedded, BARE).await;
    let client = server.client().await;
    let record = Arc::new(Record::default());
    let ctl = start_controller(
        server.client().await,
        TestReconciler {
            instance: 0,
            record: record.clone(),
            delay: Duration::ZERO,
        },
        Some(LeaderConfig::new("test-stacks")),
        RuntimeMetrics::unregistered(),
    );

    // Ten objects converge; each carries the finalizer.
    for i in 0..10 {
        client
            .apply(&stack(&format!("s{i}"), "nginx:1", &[]), false)
            .await
            .unwrap();
    }
    for i in 0..10 {
        let name = format!("s{i}");
        wait_for(&client, &name, "Ready", is_ready_at_generation).await;
        let s = get_stack(&client, &name).await.unwrap();
        assert_eq!(s.metadata.finalizers, [FINALIZER]);
    }

    // A spec change bumps the generation; the controller reports the new one.
    client
        .apply(&stack("s0", "nginx:2", &[]), false)
        .await
        .unwrap();
    wait_for(&client, "s0", "Ready at generation 2", |s| {
        is_ready_at_generation(s) && s.unwrap().metadata.generation == Some(2)
    })
    .await;

    // Our own status writes do not trigger reconciles: quiet objects stay at their count.
    let before = record.count("s5");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        record.count("s5"),
        before,
        "status-only writes caused reconciles"
    );

    // Transient failures: Ready=False with the reason while failing, a counted Warning
    // event, then converged.
    client
        .apply(
            &stack("flaky", "nginx:1", &[("test/fail-times", "3")]),
            false,
        )
        .await
        .unwrap();
    wait_for(&client, "flaky", "failing", |s| {
        s.and_then(|s| condition(s, READY))
            .is_some_and(|(st, r)| st == ConditionStatus::False && r == "BackendDown")
    })
    .await;
    wait_for(&client, "flaky", "Ready", is_ready_at_generation).await;
    assert_eq!(record.count("flaky"), 4, "three failures, one success");
    let events = client.list_all(Kind::Event, "").await.unwrap().items;
    let warning = events
        .iter()
        .filter_map(|o| match o {
            Object::Event(e) if e.involved_object.name == "flaky" && e.reason == "BackendDown" => {
                Some(e)
            }
            _ => None,
        })
        .next()
        .expect("a BackendDown event about flaky");
    assert_eq!(warning.count, 3, "repeats are counted in one event");
    let out = server.ctl(&["describe", "stack", "flaky"]);
    out.ok();
    assert!(out.stdout.contains("BackendDown"), "{}", out.stdout);

    // An invalid spec: Ready=False, Reconciling=False, and no retries until it changes.
    client
        .apply(&stack("broken", "invalid", &[]), false)
        .await
        .unwrap();
    wait_for(&client, "broken", "failed", |s| {
        s.and_then(|s| condition(s, RECONCILING))
            .is_some_and(|(st, r)| st == ConditionStatus::False && r == "WaitingForSpecChange")
    })
    .await;
    let broken = get_stack(&client, "broken").await.unwrap();
    let invalid = Some((ConditionStatus::False, "InvalidCompose".to_string()));
    assert_eq!(condition(&broken, READY), invalid);
    assert_eq!(
        condition(&broken, COMPOSE_VALID),
        invalid,
        "the error's own condition is recorded with Ready=False"
    );
    let n = record.count("broken");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(record.count("broken"), n, "an invalid spec was retried");
    // The typed client: list, then watch from the list's revision; the fix arrives as a Stack.
    let stacks = Api::<Stack>::new(client.clone());
    let listed = stacks.list("").await.unwrap();
    assert!(listed.items.iter().any(|s| s.metadata.name == "broken"));
    let mut changes = Box::pin(stacks.watch("", &listed.resource_version).await.unwrap());
    client
        .apply(&stack("broken", "nginx:1", &[]), false)
        .await
        .unwrap();
    let fixed = tokio::time::timeout(WAIT, async {
        loop {
            match changes.next().await {
                Some(Ok(WatchEvent::Modified(s))) if s.metadata.name == "broken" => break s,
                Some(Ok(_)) => {}
                other => panic!("watch ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the fix of broken is watched");
    assert!(fixed.spec.compose.contains("nginx:1"), "{fixed:?}");
    wait_for(
        &client,
        "broken",
        "Ready after the fix",
        is_ready_at_generation,
    )
    .await;

    // Delete: the object waits for the cleanup; a failing cleanup keeps it.
    client
        .apply(
            &stack("sticky", "nginx:1", &[("test/cleanup-fails", "2")]),
            false,
        )
        .await
        .unwrap();
    wait_for(&client, "sticky", "Ready", is_ready_at_generation).await;
    let (_, gone) = client
        .delete(Kind::Stack, "sticky", None, false)
        .await
        .unwrap();
    assert!(!gone, "a finalizer holds the object");
    wait_for(&client, "sticky", "deleted", |s| s.is_none()).await;
    assert_eq!(
        record.cleanups.lock().unwrap().get("sticky").copied(),
        Some(3),
        "two failed cleanups, then one that let it go"
    );
    let (_, gone) = client.delete(Kind::Stack, "s1", None, false).await.unwrap();
    assert!(!gone);
    wait_for(&client, "s1", "deleted", |s| s.is_none()).await;

    assert!(
        !record.overlap.load(Ordering::SeqCst),
        "two reconciles of one object ran at once"
    );
    ctl.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_survives_restarts_and_relists_when_its_version_is_too_old() {
    let mut server = Server::start_opts(Backend::Embedded, BARE).await;
    server.pin_port();
    let client = server.client().await;
    let record = Arc::new(Record::default());
    let mut manager = Manager::new(server.client().await, RuntimeMetrics::unregistered());
    let cache = manager.cache::<Stack>();
    manager.add(
        Controller::new(
            "test-stacks",
            TestReconciler {
                instance: 0,
                record: record.clone(),
                delay: Duration::ZERO,
            },
        )
        .leader(Some(LeaderConfig::new("test-stacks"))),
    );
    let ctl = manager.spawn();

    client
        .apply(&stack("before", "nginx:1", &[]), false)
        .await
        .unwrap();
    wait_for(&client, "before", "Ready", is_ready_at_generation).await;
    let relists = cache.relists();

    // A plain restart: the watch resumes from its resourceVersion, no relist needed.
    server.restart().await;
    client
        .apply(&stack("after-restart", "nginx:1", &[]), false)
        .await
        .unwrap();
    wait_for(&client, "after-restart", "Ready", is_ready_at_generation).await;
    assert_eq!(cache.relists(), relists, "resumed, not relisted");

    // While the server is down, the store moves on (another writer) and compacts its
    // history: the controller's resourceVersion is older than anything the new server can
    // replay, so it relists.
    assert!(server.stop());
    {
        let store = phoenix_store::embedded::EmbeddedStore::open(
            server.data_dir().join("store"),
            Default::default(),
        )
        .unwrap();
        use phoenix_store::Store;
        let mut last = 0;
        for i in 0..5 {
            last = store
                .put(format!("/elsewhere/{i}").as_bytes(), b"x".to_vec(), None)
                .await
                .unwrap();
        }
        store.compact(last).await.unwrap();
    }
    server.restart().await;
    client
        .apply(&stack("after-compaction", "nginx:1", &[]), false)
        .await
        .unwrap();
    wait_for(&client, "after-compaction", "Ready", is_ready_at_generation).await;
    assert!(
        cache.relists() > relists,
        "the watcher relisted after \"too old\""
    );
    assert!(cache.get("after-compaction").is_some());
    ctl.stop().await.expect("controllers stop cleanly");
}

/// Two instances of one controller on one server: one reconciles at a time; when the
/// leader dies (no lease release, like a killed process), the other takes over within the
/// TTL; reconciles of the two instances never overlap in time.
async fn leader_election(server: Server) {
    let client = server.client().await;
    // Long enough that a loaded machine (the whole suite runs at once) renews in time.
    let ttl = Duration::from_secs(6);
    let record = Arc::new(Record::default());
    let start_instance = |instance: u32, c: Client| {
        let mut manager = Manager::new(c, RuntimeMetrics::unregistered());
        manager.add(
            Controller::new(
                "test-stacks",
                TestReconciler {
                    instance,
                    record: record.clone(),
                    delay: Duration::from_millis(100),
                },
            )
            .leader(Some(LeaderConfig::new("test-stacks").with_ttl(ttl))),
        );
        manager.spawn()
    };
    let mut instances: HashMap<u32, Running> = HashMap::new();
    instances.insert(1, start_instance(1, server.client().await));
    tokio::time::sleep(Duration::from_millis(500)).await;
    instances.insert(2, start_instance(2, server.client().await));

    for i in 0..5 {
        client
            .apply(&stack(&format!("l{i}"), "nginx:1", &[]), false)
            .await
            .unwrap();
    }
    for i in 0..5 {
        wait_for(&client, &format!("l{i}"), "Ready", is_ready_at_generation).await;
    }
    // The leader is whoever reconciled last (normally instance 1 throughout; on a badly
    // loaded machine leadership may have moved, which is allowed, overlap is not).
    let leader = record
        .spans
        .lock()
        .unwrap()
        .iter()
        .max_by_key(|(_, _, end)| *end)
        .map(|(i, _, _)| *i)
        .expect("someone reconciled");
    let survivor = 3 - leader;

    // Kill the leader: abort it (no graceful release).
    let killed_at = Instant::now();
    instances.remove(&leader).unwrap().kill().await;
    client
        .apply(&stack("l-new", "nginx:1", &[]), false)
        .await
        .unwrap();
    wait_for(&client, "l-new", "Ready", is_ready_at_generation).await;
    let took_over = record
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|(i, s, _)| *i == survivor && *s >= killed_at)
        .map(|(_, s, _)| *s)
        .min()
        .expect("the standby reconciled");
    let after = took_over - killed_at;
    // Within the TTL, plus one standby retry period (TTL/5) and slack for a loaded machine.
    assert!(
        after <= ttl + ttl / 5 + Duration::from_secs(3),
        "took over after {after:?}"
    );
    // Never both at once: every reconcile of one instance lies outside those of the other.
    let spans = record.spans.lock().unwrap().clone();
    for (i, s1, e1) in &spans {
        for (j, s2, e2) in &spans {
            assert!(
                i == j || e1 <= s2 || e2 <= s1,
                "instances {i} and {j} reconciled at the same time"
            );
        }
    }
    let last = instances.remove(&survivor).unwrap();
    last.stop().await.expect("controllers stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_on_the_embedded_store() {
    leader_election(Server::start_opts(Backend::Embedded, BARE).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_on_etcd() {
    leader_election(Server::start_opts(Backend::Etcd, BARE).await).await;
}

/// Starts background work on its first reconcile and returns at once; the work wakes the
/// object when it ends, and the reconcile after that reports Ready.
#[derive(Clone, Default)]
struct BackgroundReconciler(Arc<Background>);

#[derive(Default)]
struct Background {
    started: Mutex<HashMap<String, bool>>,
    in_flight: AtomicU32,
    most_in_flight: AtomicU32,
    reconciles: AtomicU32,
}

#[async_trait]
impl Reconciler for BackgroundReconciler {
    type Kind = Stack;

    async fn reconcile(&self, stack: Arc<Stack>, ctx: &Context<Stack>) -> ReconcileResult {
        let me = self.0.clone();
        me.reconciles.fetch_add(1, Ordering::SeqCst);
        let name = stack.metadata.name.clone();
        let first = {
            let mut started = me.started.lock().unwrap();
            match started.get(&name) {
                Some(true) => None,
                Some(false) => return Ok(Action::done()),
                None => {
                    started.insert(name.clone(), false);
                    Some(())
                }
            }
        };
        if first.is_none() {
            return ctx
                .ready(&stack, "Converged", "background work done")
                .await
                .map(|_| Action::done());
        }
        let waker = ctx.waker();
        let n = me.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        me.most_in_flight.fetch_max(n, Ordering::SeqCst);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            me.in_flight.fetch_sub(1, Ordering::SeqCst);
            me.started.lock().unwrap().insert(name.clone(), true);
            waker.wake(&name);
        });
        // No requeue: only the wake brings the object back.
        Ok(Action::done())
    }

    async fn cleanup(&self, _stack: Arc<Stack>, _ctx: &Context<Stack>) -> ReconcileResult {
        Ok(Action::done())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waker_brings_objects_back_after_work_their_reconciles_did_not_wait_for() {
    let server = Server::start_opts(Backend::Embedded, BARE).await;
    let client = server.client().await;
    let reconciler = BackgroundReconciler::default();
    let mut manager = Manager::new(server.client().await, RuntimeMetrics::unregistered());
    // One worker, no resync: four objects' work runs at once only if each reconcile returns
    // while its work goes on, and they become Ready only through the wakes.
    manager.add(
        Controller::new("test-background", reconciler.clone())
            .concurrency(1)
            .resync(None),
    );
    let ctl = manager.spawn();
    for i in 0..4 {
        client
            .apply(&stack(&format!("bg{i}"), "nginx:1", &[]), false)
            .await
            .unwrap();
    }
    for i in 0..4 {
        wait_for(&client, &format!("bg{i}"), "Ready", is_ready_at_generation).await;
    }
    assert!(
        reconciler.0.most_in_flight.load(Ordering::SeqCst) >= 2,
        "the one worker waited for each object's work in turn"
    );
    assert_eq!(
        reconciler.0.reconciles.load(Ordering::SeqCst),
        8,
        "two reconciles per object"
    );
    ctl.stop().await.unwrap();
}

fn promtool() -> std::path::PathBuf {
    let p = std::path::PathBuf::from("/usr/bin/promtool");
    assert!(
        p.exists(),
        "promtool is missing: run hack/install-deps.sh (Debian package prometheus)"
    );
    p
}

fn promtool_check(text: &str) {
    let run = phoenix_e2e::run_with_stdin(
        {
            let mut c = std::process::Command::new(promtool());
            c.args(["check", "metrics"]);
            c
        },
        Some(text),
    );
    assert_eq!(
        run.code,
        Some(0),
        "promtool check metrics failed:\n{}{}\n--- input ---\n{text}",
        run.stdout,
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_carry_controller_runtime_names() {
    let server = Server::start_opts(Backend::Embedded, BARE).await;
    let client = server.client().await;
    let mut registry = Registry::default();
    let metrics = RuntimeMetrics::register(&mut registry);
    let record = Arc::new(Record::default());
    let ctl = start_controller(
        server.client().await,
        TestReconciler {
            instance: 0,
            record: record.clone(),
            delay: Duration::ZERO,
        },
        Some(LeaderConfig::new("test-stacks")),
        metrics,
    );
    client
        .apply(&stack("m", "nginx:1", &[("test/fail-times", "1")]), false)
        .await
        .unwrap();
    wait_for(&client, "m", "Ready", is_ready_at_generation).await;

    // The reconcile that wrote Ready is counted just after its status write: poll.
    let expected = [
        "controller_runtime_reconcile_total{controller=\"test-stacks\",result=\"success\"}",
        "controller_runtime_reconcile_total{controller=\"test-stacks\",result=\"error\"} 1",
        "controller_runtime_reconcile_errors_total{controller=\"test-stacks\"} 1",
        "controller_runtime_reconcile_time_seconds_bucket",
        "workqueue_depth{name=\"test-stacks\"}",
        "workqueue_adds_total{name=\"test-stacks\"}",
        "workqueue_queue_duration_seconds_bucket",
        "workqueue_retries_total{name=\"test-stacks\"} 1",
        "leader_election_master_status{name=\"test-stacks\"} 1",
        "phoenix_objects_cached{kind=\"Stack\"} 1",
    ];
    let start = Instant::now();
    let text = loop {
        let (_, text) = phoenix_runtime::metrics::exposition(&[&registry], None);
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|n| !text.contains(n))
            .collect();
        if missing.is_empty() {
            break text;
        }
        assert!(start.elapsed() < WAIT, "missing {missing:?} in:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    promtool_check(&text);

    // The server's own /metrics (hosted controllers' families join it when it hosts some).
    let body = http_get(&server.http_addr, "/metrics").await;
    assert!(
        body.contains("phoenix_apiserver_requests_total{method=\"AcquireLease\""),
        "{body}"
    );
    promtool_check(&body);
    ctl.stop().await.expect("controllers stop cleanly");
}

/// A plain HTTP/1.1 GET on loopback.
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

#[test]
fn phoenix_controller_refuses_unknown_controllers_by_name() {
    let out = std::process::Command::new(phoenix_e2e::phoenix_bin())
        .args([
            "controller",
            "--only",
            "no-such-controller",
            "--config",
            "/nonexistent",
        ])
        .output()
        .expect("running phoenix controller");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--only: unknown controller \"no-such-controller\""),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phoenix_apiserver_serves_the_api_and_hosts_no_controllers() {
    let api = Server::start_apiserver().await;
    let full = Server::start(Backend::Embedded).await;
    // `phoenix serve` elects its gateway controller's leader; once it has, the API server
    // alone, started first, has had as long and still hosts nothing.
    let leader = "leader_election_master_status{name=\"gateway\"} 1";
    let start = Instant::now();
    while !http_get(&full.http_addr, "/metrics").await.contains(leader) {
        assert!(
            start.elapsed() < WAIT,
            "phoenix serve elected no gateway leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = http_get(&api.http_addr, "/metrics").await;
    assert!(!body.contains("leader_election_master_status{"), "{body}");
    assert!(body.contains("phoenix_apiserver_requests_total"), "{body}");
    // The API itself works.
    let c = api.client().await;
    c.apply(&stack("a", "nginx:1", &[]), false).await.unwrap();
    assert_eq!(c.list_all(Kind::Stack, "").await.unwrap().items.len(), 1);
}
