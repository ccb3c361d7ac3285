//! The GitSync controller against real git: bare repositories written with the `git` CLI,
//! served over `git daemon` on 127.0.0.1 (a port chosen at run time) and over `file://`;
//! the controller runs in-process on a `Manager` over a real `phoenix serve
//! --no-controllers`.
//!
//! Needs `git` (Debian `git`) and the binary (`cargo build -p phoenix`).

mod common;

use common::*;

use std::time::{Duration, Instant};

use phoenix_api::Api;
use phoenix_api::ConditionStatus;
use phoenix_api::kinds::git_sync::GITSYNC_LABEL;
use phoenix_api::kinds::{GitSync, Stack};
use phoenix_e2e::{Backend, Server};
use phoenix_gitsync::{GitSyncMetrics, GitSyncOptions};
use phoenix_runtime::{Manager, RuntimeMetrics};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_over_git_daemon_is_applied_updated_pruned_guarded_and_suspended() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    repo.write(
        "phoenix/secrets.yaml",
        &format!("{}---\n{}", secret("a", "v1"), secret("b", "v1")),
    )
    .write("phoenix/apps/demo.yml", &stack("demo", "GOOD"))
    .write("README.md", "not a manifest")
    .write("other/ignored.yaml", "not: [applied");
    let c1 = repo.commit("first");
    let daemon = Daemon::start(tmp.path());
    let url = format!("git://127.0.0.1:{}/estate.git", daemon.port);

    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let mut manager = Manager::new(server.client().await, RuntimeMetrics::unregistered());
    let mut registry = prometheus_client::registry::Registry::default();
    manager.add(phoenix_gitsync::controller(GitSyncOptions {
        cache_dir: tmp.path().join("cache"),
        metrics: GitSyncMetrics::new(&mut registry),
    }));
    let running = manager.spawn();

    // The first commit: every object appears with the label.
    apply_gitsync(
        &client,
        "estate",
        &url,
        "  ref: {branch: main}\n  path: phoenix\n  prune: true\n",
    )
    .await;
    let rev1 = format!("main@sha1:{c1}");
    let gs = wait_gs(&client, "estate", "first sync", |g| {
        applied(g) == Some(&rev1)
    })
    .await;
    let (status, reason, message) = ready(&gs).unwrap();
    assert_eq!((status, reason.as_str()), (ConditionStatus::True, "Synced"));
    assert!(
        message.contains("3 created, 0 configured, 0 unchanged, 0 pruned"),
        "{message}"
    );
    let inventory: Vec<String> = gs
        .status
        .as_ref()
        .unwrap()
        .inventory
        .iter()
        .map(|e| format!("{}/{}", e.kind, e.name))
        .collect();
    assert_eq!(inventory, ["Secret/a", "Secret/b", "Stack/demo"]);
    assert_eq!(
        secret_value(&client, "a").await,
        Some((b64("v1"), Some("estate".into())))
    );
    let demo: Stack = Api::<Stack>::new(client.clone()).get("demo").await.unwrap();
    assert_eq!(demo.metadata.labels[GITSYNC_LABEL], "estate");

    // A commit that edits one object and removes another: updated, and pruned.
    repo.write("phoenix/secrets.yaml", &secret("a", "v2"));
    let c2 = repo.commit("edit a, remove b");
    let rev2 = format!("main@sha1:{c2}");
    let gs = wait_gs(&client, "estate", "second sync", |g| {
        applied(g) == Some(&rev2)
    })
    .await;
    let message = ready(&gs).unwrap().2;
    assert!(
        message.contains("0 created, 1 configured, 1 unchanged, 1 pruned"),
        "{message}"
    );
    assert_eq!(
        secret_value(&client, "a").await,
        Some((b64("v2"), Some("estate".into())))
    );
    assert_eq!(secret_value(&client, "b").await, None);

    // An invalid manifest: nothing of the commit is applied, the status names file and field.
    repo.write("phoenix/secrets.yaml", &secret("a", "v3"))
        .write("phoenix/apps/demo.yml", &stack("demo", "1BAD"));
    let c3 = repo.commit("invalid");
    let rev3 = format!("main@sha1:{c3}");
    let gs = wait_gs(&client, "estate", "invalid commit reported", |g| {
        attempted(g) == Some(&rev3) && ready(g).is_some_and(|r| r.1 == "InvalidManifests")
    })
    .await;
    let (status, _, message) = ready(&gs).unwrap();
    assert_eq!(status, ConditionStatus::False);
    assert!(
        message
            .contains("phoenix/apps/demo.yml (document 1, line 1): stack/demo: spec.env[\"1BAD\"]"),
        "{message}"
    );
    assert_eq!(applied(&gs), Some(rev2.as_str()));
    assert_eq!(
        secret_value(&client, "a").await.unwrap().0,
        b64("v2"),
        "nothing applied"
    );

    // An object someone else made is not taken over; nothing of the commit is applied.
    client
        .apply(
            &phoenix_api::decode::decode_str("t.yaml", &secret("taken", "theirs"))
                .unwrap()
                .remove(0),
            false,
        )
        .await
        .unwrap();
    repo.write("phoenix/apps/demo.yml", &stack("demo", "GOOD"))
        .write("phoenix/taken.yaml", &secret("taken", "ours"));
    let c4 = repo.commit("conflict");
    let rev4 = format!("main@sha1:{c4}");
    let gs = wait_gs(&client, "estate", "conflict reported", |g| {
        attempted(g) == Some(&rev4) && ready(g).is_some_and(|r| r.1 == "Conflict")
    })
    .await;
    let message = ready(&gs).unwrap().2;
    assert!(
        message.contains("secret/taken exists and is not managed by a GitSync"),
        "{message}"
    );
    assert_eq!(
        secret_value(&client, "taken").await,
        Some((b64("theirs"), None))
    );
    assert_eq!(
        secret_value(&client, "a").await.unwrap().0,
        b64("v2"),
        "nothing applied"
    );

    // Suspended: new commits change nothing until it resumes.
    apply_gitsync(
        &client,
        "estate",
        &url,
        "  ref: {branch: main}\n  path: phoenix\n  prune: true\n  suspend: true\n",
    )
    .await;
    // Let any sync that started before the spec change finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    repo.remove("phoenix/taken.yaml");
    let c5 = repo.commit("resolve the conflict");
    let rev5 = format!("main@sha1:{c5}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let gs = Api::<GitSync>::new(client.clone())
        .get("estate")
        .await
        .unwrap();
    assert_eq!(
        attempted(&gs),
        Some(rev4.as_str()),
        "a suspended GitSync fetched"
    );
    assert_eq!(secret_value(&client, "a").await.unwrap().0, b64("v2"));
    apply_gitsync(
        &client,
        "estate",
        &url,
        "  ref: {branch: main}\n  path: phoenix\n  prune: true\n",
    )
    .await;
    wait_gs(&client, "estate", "resumed sync", |g| {
        applied(g) == Some(&rev5)
    })
    .await;
    assert_eq!(secret_value(&client, "a").await.unwrap().0, b64("v3"));

    // The metrics tell the same story: the applied revision, and each failure by its reason
    // (counted before the status is written; polled all the same).
    let series =
        format!("phoenix_gitsync_revision_info{{gitsync=\"estate\",revision=\"{rev5}\"}} 1");
    let start = Instant::now();
    let text = loop {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        if text.contains(&series) {
            break text;
        }
        assert!(start.elapsed() < WAIT, "{series} never appeared: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !text.contains(&rev2),
        "one revision series per GitSync: {text}"
    );
    for result in ["success", "InvalidManifests", "Conflict"] {
        assert!(
            text.contains(&format!(
                "phoenix_gitsync_syncs_total{{gitsync=\"estate\",result=\"{result}\"}}"
            )),
            "{result}: {text}"
        );
    }
    assert!(
        text.contains("phoenix_gitsync_objects{gitsync=\"estate\"} 2"),
        "{text}"
    );

    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_over_file_url_is_applied_and_another_gitsyncs_objects_are_not_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    repo.write("one.yaml", &secret("shared", "first"));
    let c1 = repo.commit("first");
    git(&repo.work, &["tag", "v1"]);
    let bare = repo.bare();
    git(
        &repo.work,
        &["push", "-q", bare.to_str().unwrap(), "refs/tags/v1"],
    );
    let url = format!("file://{}", bare.display());

    let server = Server::start_opts(Backend::Embedded, &["--no-controllers"]).await;
    let client = server.client().await;
    let mut manager = Manager::new(server.client().await, RuntimeMetrics::unregistered());
    manager.add(phoenix_gitsync::controller(GitSyncOptions {
        cache_dir: tmp.path().join("cache"),
        metrics: GitSyncMetrics::unregistered(),
    }));
    let running = manager.spawn();

    apply_gitsync(&client, "first", &url, "  ref: {tag: v1}\n").await;
    let rev = format!("v1@sha1:{c1}");
    wait_gs(&client, "first", "tag applied", |g| {
        applied(g) == Some(&rev)
    })
    .await;
    assert_eq!(
        secret_value(&client, "shared").await,
        Some((b64("first"), Some("first".into())))
    );

    // A new sync-at annotation asks for a sync; the status says it was handled.
    let mut asked = gitsync("first", &url, "  ref: {tag: v1}\n");
    asked.metadata_mut().annotations.insert(
        phoenix_api::kinds::git_sync::SYNC_AT_ANNOTATION.into(),
        "2026-12-06T01:00:00Z".into(),
    );
    client.apply(&asked, false).await.unwrap();
    wait_gs(&client, "first", "sync-at handled", |g| {
        g.status
            .as_ref()
            .and_then(|s| s.last_handled_sync_at.as_deref())
            == Some("2026-12-06T01:00:00Z")
    })
    .await;

    // The same object from a second GitSync (a pinned commit) is a conflict naming the owner.
    apply_gitsync(
        &client,
        "second",
        &url,
        &format!("  ref: {{commit: {c1}}}\n"),
    )
    .await;
    let gs = wait_gs(&client, "second", "conflict", |g| {
        ready(g).is_some_and(|r| r.1 == "Conflict")
    })
    .await;
    assert!(
        ready(&gs)
            .unwrap()
            .2
            .contains("secret/shared belongs to GitSync \"first\"")
    );
    assert_eq!(attempted(&gs), Some(format!("sha1:{c1}").as_str()));
    assert_eq!(
        secret_value(&client, "shared").await.unwrap().1.as_deref(),
        Some("first")
    );

    // A branch that does not exist is a fetch failure naming it.
    apply_gitsync(&client, "missing", &url, "  ref: {branch: nope}\n").await;
    let gs = wait_gs(&client, "missing", "fetch failure", |g| {
        ready(g).is_some_and(|r| r.1 == "FetchFailed")
    })
    .await;
    assert!(
        ready(&gs).unwrap().2.contains("refs/heads/nope"),
        "{:?}",
        ready(&gs)
    );

    // ssh:// without secretRef is an admission error: the host's own keys are never used.
    let e = client
        .apply(
            &gitsync(
                "viassh",
                "ssh://git@127.0.0.1/estate.git",
                "  ref: {branch: main}\n",
            ),
            false,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("spec.secretRef") && e.contains("ssh://"), "{e}");

    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phoenix_serve_hosts_the_controller_with_its_cache_dir_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    repo.write("s.yaml", &secret("hosted", "yes"));
    let c1 = repo.commit("first");
    let url = format!("file://{}", repo.bare().display());
    let cache = tmp.path().join("flag-cache");

    let server = Server::start_opts(
        Backend::Embedded,
        &["--gitsync-cache-dir", cache.to_str().unwrap()],
    )
    .await;
    let client = server.client().await;
    apply_gitsync(&client, "hosted", &url, "  ref: {branch: main}\n").await;
    let rev = format!("main@sha1:{c1}");
    wait_gs(&client, "hosted", "sync by the hosted controller", |g| {
        applied(g) == Some(&rev)
    })
    .await;
    assert!(
        cache.join("hosted.git").is_dir(),
        "the cache is not under the flag's directory"
    );
    assert_eq!(
        secret_value(&client, "hosted").await,
        Some((b64("yes"), Some("hosted".into())))
    );
}
