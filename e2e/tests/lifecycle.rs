//! The user's path through phoenixctl against a real `phoenix serve`, once per store
//! backend: apply, get, describe, update, diff, delete with finalizers, watch, conflicts,
//! prune, bad input and restarts.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use futures::StreamExt;
use phoenix_api::client::{Client, ClientError, WatchEvent};
use phoenix_api::{Condition, ConditionStatus, Kind, Object};
use phoenix_e2e::{Backend, Server, repo, secret};
use phoenix_store::testing::EtcdCluster;

/// Runs a scenario once per backend.
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name(Backend::Embedded).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                super::$name(Backend::Etcd).await;
            }
        }
    )*};
}

per_backend!(
    apply_get_describe_update_delete,
    finalizers_watch_and_wait,
    stale_resource_version_conflicts,
    prune_deletes_what_left_the_files,
    bad_input_is_rejected_by_the_server,
    objects_and_watches_survive_a_restart,
    batch_creates_reach_watchers_as_whole_runs,
    lists_answer_at_once_after_writes_of_other_kinds,
);

fn guest(name: &str, cores: u32, extra_meta: &str) -> String {
    format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Guest
metadata:
  name: {name}
{extra_meta}spec:
  type: lxc
  source:
    template: local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst
  cores: {cores}
  memoryMiB: 512
  rootfs: {{storage: local-lvm, sizeGiB: 4}}
  networks:
    - {{name: eth0, bridge: vmbr0, ipv4: dhcp}}
"
    )
}

fn write(dir: &std::path::Path, file: &str, text: &str) -> String {
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn ready_guest(o: &Object, status: ConditionStatus) -> Object {
    let mut o = o.clone();
    let generation = o.metadata().generation;
    let Object::Guest(g) = &mut o else {
        panic!("not a guest: {o:?}")
    };
    let st = g.status.get_or_insert_with(Default::default);
    st.state = Some("running".into());
    st.conditions = vec![Condition {
        type_: "Ready".into(),
        status,
        reason: "Converged".into(),
        message: "e2e".into(),
        last_transition_time: jiff::Timestamp::now(),
        observed_generation: generation,
    }];
    o
}

async fn apply_get_describe_update_delete(backend: Backend) {
    let s = Server::start(backend).await;
    let examples = repo("manifests/examples/phoenix");
    let examples = examples.to_str().unwrap();

    let run = s.ctl(&["apply", "-f", examples]);
    run.ok();
    assert_eq!(run.stdout.lines().count(), 16, "{}", run.stdout);
    assert!(
        run.stdout.lines().all(|l| l.ends_with(" created")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("guest/nginx-gateway created"),
        "{}",
        run.stdout
    );

    let run = s.ctl(&["apply", "-f", examples]);
    run.ok();
    assert!(
        run.stdout.lines().all(|l| l.ends_with(" unchanged")),
        "{}",
        run.stdout
    );

    let run = s.ctl(&["get", "guests"]);
    run.ok();
    let header = run.stdout.lines().next().unwrap();
    for col in ["NAME", "TYPE", "VMID", "NODE", "STATE", "READY", "AGE"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(run.stdout.contains("nginx-gateway"), "{}", run.stdout);
    let guests = s.list(Kind::Guest).await;
    assert_eq!(run.stdout.lines().count(), guests.len() + 1);

    let run = s.ctl(&["get", "g", "-o", "name"]);
    run.ok();
    assert!(
        run.stdout.lines().any(|l| l == "guest/nginx-gateway"),
        "{}",
        run.stdout
    );

    let run = s.ctl(&["get", "guests", "-o", "json"]);
    run.ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"].as_array().unwrap().len(), guests.len());

    let run = s.ctl(&["get", "gateway", "external", "-o", "yaml"]);
    run.ok();
    assert!(run.stdout.contains("name: external"), "{}", run.stdout);
    assert!(run.stdout.contains("generation: 1"), "{}", run.stdout);

    s.ctl(&["get", "guest", "nope"]).expect_code(4);
    s.ctl(&["get", "pods"]).expect_code(4);

    let run = s.ctl(&["describe", "guest", "nginx-gateway"]);
    run.ok();
    for part in [
        "Name:             nginx-gateway",
        "Kind:             Guest",
        "Generation:       1",
        "Spec:",
        "Status:",
        "Conditions:",
        "Events:",
    ] {
        assert!(run.stdout.contains(part), "{part} in\n{}", run.stdout);
    }

    // One field changes: configured, generation 2; diff shows it first.
    let tmp = tempfile::tempdir().unwrap();
    let f1 = write(tmp.path(), "web.yaml", &guest("e2e-web", 1, ""));
    let run = s.ctl(&["apply", "-f", &f1]);
    run.ok();
    assert_eq!(run.stdout, "guest/e2e-web created\n");
    let run = s.ctl(&["diff", "-f", &f1]);
    run.ok();
    assert_eq!(run.stdout, "");
    let f2 = write(tmp.path(), "web2.yaml", &guest("e2e-web", 2, ""));
    let run = s.ctl(&["diff", "-f", &f2]);
    run.expect_code(1);
    assert!(
        run.stdout.contains("--- live/guest/e2e-web"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("-  cores: 1\n+  cores: 2\n"),
        "{}",
        run.stdout
    );

    let run = s.ctl(&["apply", "-f", &f2, "--dry-run=server"]);
    run.ok();
    assert_eq!(run.stdout, "guest/e2e-web configured (server dry run)\n");
    let c = s.client().await;
    assert_eq!(
        c.get(Kind::Guest, "e2e-web")
            .await
            .unwrap()
            .metadata()
            .generation,
        Some(1)
    );

    let run = s.ctl(&["apply", "-f", &f2]);
    run.ok();
    assert_eq!(run.stdout, "guest/e2e-web configured\n");
    let live = c.get(Kind::Guest, "e2e-web").await.unwrap();
    assert_eq!(live.metadata().generation, Some(2));
    let run = s.ctl(&["apply", "-f", &f2]);
    assert_eq!(run.stdout, "guest/e2e-web unchanged\n");

    // Labels are not spec: configured, generation stays.
    let f3 = write(
        tmp.path(),
        "web3.yaml",
        &guest("e2e-web", 2, "  labels: {tier: web}\n"),
    );
    let run = s.ctl(&["apply", "-f", &f3]);
    assert_eq!(run.stdout, "guest/e2e-web configured\n");
    let live = c.get(Kind::Guest, "e2e-web").await.unwrap();
    assert_eq!(live.metadata().generation, Some(2));
    assert_eq!(live.metadata().labels["tier"], "web");
    let run = s.ctl(&["get", "guests", "-l", "tier=web", "-o", "name"]);
    run.ok();
    assert_eq!(run.stdout, "guest/e2e-web\n");

    let run = s.ctl(&["delete", "guest", "e2e-web"]);
    run.ok();
    assert_eq!(run.stdout, "guest/e2e-web deleted\n");
    s.ctl(&["get", "guest", "e2e-web"]).expect_code(4);
    let run = s.ctl(&["delete", "guest", "e2e-web"]);
    run.expect_code(4);
    assert!(
        run.stderr.contains("error: guest/e2e-web:"),
        "{}",
        run.stderr
    );

    // delete -f removes what the files define (--wait: a Gateway goes once the gateway
    // controller let go of its finalizer, ADR 0022).
    let run = s.ctl(&["delete", "-f", examples, "--wait"]);
    run.ok();
    assert!(
        run.stdout.contains("gateway/external deleted"),
        "{}",
        run.stdout
    );
    for kind in Kind::ALL {
        if kind != Kind::Event {
            assert!(s.list(kind).await.is_empty(), "{kind} left");
        }
    }
}

async fn finalizers_watch_and_wait(backend: Backend) {
    let s = Server::start(backend).await;
    let c = s.client().await;
    let start_rv = c.list_all(Kind::Guest, "").await.unwrap().resource_version;
    let mut watch = Box::pin(c.watch(Kind::Guest, "", &start_rv).await.unwrap());

    // `get -w` prints the table, then one row per change.
    let mut getw = s
        .ctl_command()
        .args(["get", "guests", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let out = getw.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let header = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(header.starts_with("NAME"), "{header}");

    let tmp = tempfile::tempdir().unwrap();
    let f = write(
        tmp.path(),
        "held.yaml",
        &guest("held", 1, "  finalizers: [e2e.phoenix/hold]\n"),
    );
    s.ctl(&["apply", "-f", &f]).ok();
    let row = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(row.starts_with("held "), "{row}");

    let run = s.ctl(&["delete", "guest", "held"]);
    run.ok();
    assert_eq!(
        run.stdout,
        "guest/held marked for deletion (waiting for finalizers: e2e.phoenix/hold)\n"
    );
    let marked = c.get(Kind::Guest, "held").await.unwrap();
    assert!(marked.metadata().deletion_timestamp.is_some());

    // Someone waits for the deletion while the finalizer is still there.
    let waiter = s
        .ctl_command()
        .args(["wait", "guest", "held", "--for=delete", "--timeout=30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let short = s.ctl(&["wait", "guest", "held", "--for=delete", "--timeout=1s"]);
    short.expect_code(1);
    assert!(short.stderr.contains("timed out"), "{}", short.stderr);

    let mut cleared = marked.clone();
    cleared.metadata_mut().finalizers.clear();
    c.update_metadata(&cleared).await.unwrap();
    let done = waiter.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        "guest/held deleted\n"
    );
    assert!(matches!(
        c.get(Kind::Guest, "held").await,
        Err(ClientError::NotFound(_))
    ));

    // The watch saw it all, in order.
    let mut seen: Vec<(&str, Object)> = Vec::new();
    while seen.last().is_none_or(|(k, _)| *k != "deleted") {
        let ev = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("watch event in time")
            .expect("watch open")
            .expect("watch event");
        match ev {
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Added(o) => seen.push(("added", o)),
            WatchEvent::Modified(o) => seen.push(("modified", o)),
            WatchEvent::Deleted(o) => seen.push(("deleted", o)),
        }
    }
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds.first(), Some(&"added"), "{kinds:?}");
    assert_eq!(kinds[1], "modified", "{kinds:?}");
    assert!(seen[1].1.metadata().deletion_timestamp.is_some());
    assert!(seen.iter().all(|(_, o)| o.name() == "held"));

    // get -w printed rows for the mark and the deletion.
    for _ in 0..(kinds.len() - 1) {
        let row = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(row.starts_with("held "), "{row}");
    }
    getw.kill().unwrap();
    getw.wait().unwrap();
}

async fn stale_resource_version_conflicts(backend: Backend) {
    let s = Server::start(backend).await;
    let c = s.client().await;
    let tmp = tempfile::tempdir().unwrap();
    let f = write(tmp.path(), "g.yaml", &guest("racy", 1, ""));
    s.ctl(&["apply", "-f", &f]).ok();
    let old = c.get(Kind::Guest, "racy").await.unwrap();
    let new = c
        .update_status(&ready_guest(&old, ConditionStatus::True))
        .await
        .unwrap();
    assert_ne!(
        new.metadata().resource_version,
        old.metadata().resource_version
    );
    assert_eq!(
        new.metadata().generation,
        old.metadata().generation,
        "status writes do not bump the generation"
    );
    match c
        .update_status(&ready_guest(&old, ConditionStatus::False))
        .await
    {
        Err(ClientError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }

    let run = s.ctl(&["get", "guest", "racy"]);
    run.ok();
    let row = run.stdout.lines().nth(1).unwrap();
    assert!(row.contains("running") && row.contains("True"), "{row}");
    s.ctl(&[
        "wait",
        "guest",
        "racy",
        "--for=condition=Ready",
        "--timeout=10s",
    ])
    .ok();
    let run = s.ctl(&[
        "wait",
        "guest",
        "racy",
        "--for=condition=Ready=False",
        "--timeout=1s",
    ]);
    run.expect_code(1);
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    let run = s.ctl(&["describe", "guest", "racy"]);
    assert!(
        run.stdout.contains("Ready") && run.stdout.contains("Converged"),
        "{}",
        run.stdout
    );
}

async fn prune_deletes_what_left_the_files(backend: Backend) {
    let s = Server::start(backend).await;
    let tmp = tempfile::tempdir().unwrap();
    let all = [
        secret("a", "app: e2e"),
        secret("b", "app: e2e"),
        secret("c", "app: e2e"),
    ]
    .join("---\n");
    let f = write(tmp.path(), "s.yaml", &all);
    s.ctl(&["apply", "-f", &f]).ok();
    let other = write(tmp.path(), "other.yaml", &secret("other", "app: else"));
    s.ctl(&["apply", "-f", &other]).ok();

    let fewer = write(
        tmp.path(),
        "s.yaml",
        &[secret("a", "app: e2e"), secret("b", "app: e2e")].join("---\n"),
    );
    let run = s.ctl(&[
        "apply",
        "-f",
        &fewer,
        "--prune",
        "-l",
        "app=e2e",
        "--dry-run=server",
    ]);
    run.ok();
    assert!(
        run.stdout.contains("secret/c pruned (server dry run)"),
        "{}",
        run.stdout
    );
    assert_eq!(s.list(Kind::Secret).await.len(), 4);

    let run = s.ctl(&["apply", "-f", &fewer, "--prune", "-l", "app=e2e"]);
    run.ok();
    assert_eq!(
        run.stdout,
        "secret/a unchanged\nsecret/b unchanged\nsecret/c pruned\n"
    );
    let mut names: Vec<String> = s
        .list(Kind::Secret)
        .await
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "other"]);
    s.ctl(&["apply", "-f", &fewer, "--prune"]).expect_code(2);
}

async fn bad_input_is_rejected_by_the_server(backend: Backend) {
    use phoenix_api::proto::{ApplyRequest, phoenix_client::PhoenixClient};
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

    let s = Server::start(backend).await;
    let ctx = s.context();
    let channel = Endpoint::from_shared(ctx.server.clone())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
            ctx.certificate_authority_data.clone().unwrap(),
        )))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {}", ctx.token).parse().unwrap();
    let mut raw = PhoenixClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", auth.clone());
        Ok(req)
    });

    let mut files: Vec<_> = std::fs::read_dir(repo("api/tests/bad"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() > 50);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        // The document as JSON where it parses as YAML; else the raw bytes.
        let bytes = match phoenix_e2e::yaml_to_json(&text) {
            Some(v) => serde_json::to_vec(&v).unwrap(),
            None => std::fs::read(file).unwrap(),
        };
        let status = raw
            .apply(ApplyRequest {
                object: bytes,
                dry_run: false,
            })
            .await
            .expect_err(&format!("{} was accepted", file.display()));
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{}: {status:?}",
            file.display()
        );
        // phoenixctl refuses it locally, before any server call.
        let run = s.ctl(&["apply", "-f", file.to_str().unwrap(), "--dry-run=server"]);
        assert_eq!(run.code, Some(3), "{}: {run:?}", file.display());
    }
    for kind in Kind::ALL {
        assert!(
            s.list(kind).await.is_empty(),
            "a bad {kind} was stored: {:?}",
            s.list(kind).await
        );
    }
}

async fn objects_and_watches_survive_a_restart(backend: Backend) {
    let mut s = Server::start(backend).await;
    let examples = repo("manifests/examples/phoenix");
    s.ctl(&["apply", "-f", examples.to_str().unwrap()]).ok();
    let tmp = tempfile::tempdir().unwrap();
    let f = write(
        tmp.path(),
        "old.yaml",
        &format!(
            "{}---\n{}",
            secret("will-change", "e2e: a"),
            secret("will-go", "e2e: a")
        ),
    );
    s.ctl(&["apply", "-f", &f]).ok();
    let c = s.client().await;
    let before = c.list_all(Kind::Secret, "").await.unwrap();
    // Events are left out: the controllers of the restarted server may record new ones.
    let mut counts = Vec::new();
    for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::Event) {
        counts.push((kind, s.list(kind).await.len()));
    }
    drop(c);

    s.restart().await;

    let mut after = Vec::new();
    for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::Event) {
        after.push((kind, s.list(kind).await.len()));
    }
    assert_eq!(counts, after);
    let run = s.ctl(&["apply", "-f", examples.to_str().unwrap()]);
    run.ok();
    assert!(
        run.stdout.lines().all(|l| l.ends_with(" unchanged")),
        "{}",
        run.stdout
    );

    // A watch from a revision seen before the restart resumes after it, with every change
    // since (other writes, e.g. controllers' leases, moved the store's revision on in
    // between, so the new server catches the watch up from the store).
    let f = write(
        tmp.path(),
        "new.yaml",
        &format!(
            "{}---\n{}",
            secret("after-restart", "e2e: x"),
            secret("will-change", "e2e: b")
        ),
    );
    s.ctl(&["apply", "-f", &f]).ok();
    s.ctl(&["delete", "secret", "will-go"]).ok();
    let c = s.client().await;
    let mut w = Box::pin(
        c.watch(Kind::Secret, "", &before.resource_version)
            .await
            .unwrap(),
    );
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap_or_else(|_| panic!("events in time; seen {seen:?}"))
            .expect("watch open")
            .expect("event");
        let seen_now = match ev {
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Added(o) => format!("added {}", o.name()),
            WatchEvent::Modified(o) => format!("modified {}", o.name()),
            WatchEvent::Deleted(o) => format!("deleted {}", o.name()),
        };
        assert!(seen.insert(seen_now.clone()), "twice: {seen_now}");
    }
    assert_eq!(
        seen,
        [
            "added after-restart",
            "deleted will-go",
            "modified will-change"
        ]
        .map(String::from)
        .into(),
    );
}

/// A batch apply's creates (several share one revision on etcd, where they are written in
/// transactions of up to 64) reach watchers as runs: every event but the last of a run with
/// one resourceVersion is marked `continued`, the typed client yields whole runs, and
/// resuming from a run's resourceVersion starts after all of it.
async fn batch_creates_reach_watchers_as_whole_runs(backend: Backend) {
    let s = Server::start(backend).await;
    let c = s.client().await;
    let rv = c.list_all(Kind::Guest, "").await.unwrap().resource_version;
    let mut raw = s.raw_client().await;
    let mut wire = raw
        .watch(phoenix_api::proto::WatchRequest {
            kind: "Guest".into(),
            label_selector: String::new(),
            resource_version: rv.clone(),
            allow_bookmarks: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut typed = Box::pin(c.watch(Kind::Guest, "", &rv).await.unwrap());

    let n = 150;
    let objects: Vec<Object> = (0..n)
        .map(|i| {
            phoenix_api::decode::decode_str("b.yaml", &guest(&format!("run-{i:03}"), 1, ""))
                .unwrap()
                .remove(0)
        })
        .collect();
    let results = c.apply_batch(&objects, false).await.unwrap();
    let created_rv: Vec<String> = results
        .into_iter()
        .map(|r| r.unwrap().0.metadata().resource_version.clone().unwrap())
        .collect();

    // On the wire: `continued` exactly when the next event has the same resourceVersion.
    let mut events = Vec::new();
    while events.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(10), wire.message())
            .await
            .expect("watch event in time")
            .unwrap()
            .expect("watch open");
        events.push(ev);
    }
    let mut longest_run = 1;
    let mut run = 1;
    for pair in events.windows(2) {
        let same = pair[0].resource_version == pair[1].resource_version;
        assert_eq!(
            pair[0].continued, same,
            "continued flag at {}",
            pair[0].resource_version
        );
        run = if same { run + 1 } else { 1 };
        longest_run = longest_run.max(run);
    }
    assert!(
        !events[n - 1].continued,
        "the batch's last event ends its run"
    );
    match backend {
        // One transaction of up to 64 creates shares one revision.
        Backend::Etcd => assert!(longest_run > 1, "no shared revision on etcd"),
        Backend::Embedded => assert_eq!(longest_run, 1, "embedded revisions are unique"),
    }

    // The typed client yields every create once, with the revision it was created at.
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(10), typed.next())
            .await
            .expect("watch event in time")
            .expect("watch open")
            .expect("watch event");
        match ev {
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Added(o) => {
                let rv = o.metadata().resource_version.clone().unwrap();
                assert!(seen.insert(o.name().to_string(), rv).is_none(), "repeated");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for (i, rv) in created_rv.iter().enumerate() {
        assert_eq!(seen.get(&format!("run-{i:03}")), Some(rv));
    }

    // Resuming from the last run's resourceVersion: the next event is a later write.
    let last = events[n - 1].resource_version.clone();
    let mut resumed = Box::pin(c.watch(Kind::Guest, "", &last).await.unwrap());
    let after = phoenix_api::decode::decode_str("a.yaml", &guest("after", 1, ""))
        .unwrap()
        .remove(0);
    c.apply(&after, false).await.unwrap();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), resumed.next())
            .await
            .expect("watch event in time")
            .expect("watch open")
            .expect("watch event");
        match ev {
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Added(o) => {
                assert_eq!(o.name(), "after", "nothing of the batch again");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The sorted names of `kind`'s objects, listed within `bound`; panics naming `at` otherwise.
async fn list_within(c: &Client, kind: Kind, bound: Duration, at: &str) -> Vec<String> {
    let page = tokio::time::timeout(bound, c.list_all(kind, ""))
        .await
        .unwrap_or_else(|_| panic!("{at} took over {bound:?}"))
        .unwrap_or_else(|e| panic!("{at}: {e}"));
    let mut names: Vec<String> = page.items.iter().map(|o| o.name().to_string()).collect();
    names.sort();
    names
}

/// Right after a write of one kind, a List of any other kind answers at once and sees every
/// write made before it. (It used to wait until that kind's watch cache heard of the write's
/// revision from a periodic progress notification: up to 5 s on the embedded store; on etcd,
/// run here with etcd's default progress interval as deployed, a failure after 10 s.)
async fn lists_answer_at_once_after_writes_of_other_kinds(backend: Backend) {
    // Declared before the server, so the server stops first.
    let etcd = match backend {
        Backend::Embedded => None,
        Backend::Etcd => Some(
            EtcdCluster::single_with_default_progress()
                .await
                .expect("starting etcd"),
        ),
    };
    let s = match &etcd {
        None => Server::start(backend).await,
        Some(etcd) => Server::start_on_etcd(etcd.endpoints().join(",")).await,
    };
    let c = s.client().await;
    // Generous: the bug was seconds or a failure; a List normally takes milliseconds.
    let bound = Duration::from_secs(2);
    let mut guests = Vec::new();
    let mut secrets = Vec::new();
    // Several rounds: a cache that learned of one write from a progress notification has
    // just been notified, so the next round would wait for the following one.
    for round in 0..3 {
        let name = format!("s-{round}");
        let secret = phoenix_api::decode::decode_str("s.yaml", &secret(&name, "app: e2e"))
            .unwrap()
            .remove(0);
        c.apply(&secret, false).await.unwrap();
        secrets.push(name);
        for (kind, want) in [(Kind::Guest, &guests), (Kind::Gateway, &Vec::new())] {
            let at = format!("round {round}: listing {kind} after a Secret write");
            assert_eq!(&list_within(&c, kind, bound, &at).await, want, "{at}");
        }

        let name = format!("web-{round}");
        let guest = phoenix_api::decode::decode_str("g.yaml", &guest(&name, 1, ""))
            .unwrap()
            .remove(0);
        c.apply(&guest, false).await.unwrap();
        guests.push(name);
        for (kind, want) in [(Kind::Secret, &secrets), (Kind::Gateway, &Vec::new())] {
            let at = format!("round {round}: listing {kind} after a Guest write");
            assert_eq!(&list_within(&c, kind, bound, &at).await, want, "{at}");
        }
    }
}
