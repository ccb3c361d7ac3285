//! Backups while the server runs (`--backup-dir`) and `restore` into a new data directory:
//! the restored server has the objects at their revisions, and the old client configuration
//! (CA, token) works against it.

mod common;

use common::guest;

use std::path::{Path, PathBuf};
use std::time::Duration;

use phoenix_api::Kind;
use phoenix_api::client::Client;
use phoenix_apiserver::backup::{self, BackupError};
use phoenix_apiserver::serve::{self, ServeArgs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn args(dir: &Path, backup_dir: Option<PathBuf>) -> ServeArgs {
    ServeArgs {
        backup_dir,
        backup_interval: "300ms".into(),
        backup_keep: 2,
        ..ServeArgs::local(dir)
    }
}

/// The revision in a backup's name (`phoenix-<time>-r<revision>`).
fn revision_of(path: &Path) -> i64 {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    name.rsplit_once("-r").unwrap().1.parse().unwrap()
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_while_serving_restore_into_a_new_data_dir() {
    let root = tempfile::tempdir().unwrap();
    let (data, backups, restored) = (
        root.path().join("data"),
        root.path().join("backups"),
        root.path().join("restored"),
    );
    let running = serve::start(args(&data, Some(backups.clone())))
        .await
        .unwrap();
    let client = Client::connect(&running.admin_context).await.unwrap();
    for name in ["web", "db", "cache"] {
        client.apply(&guest(name), false).await.unwrap();
    }
    let web = client.get(Kind::Guest, "web").await.unwrap();
    let web_version = web.metadata().resource_version.clone();
    let written = client
        .get(Kind::Guest, "cache")
        .await
        .unwrap()
        .metadata()
        .resource_version
        .clone()
        .unwrap()
        .parse::<i64>()
        .unwrap();

    // Wait for a backup that holds the three writes; older ones are pruned to --backup-keep.
    let newest = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let all = backup::list(&backups).unwrap_or_default();
            if let Some(last) = all.last()
                && revision_of(last) >= written
                && all.len() >= 2
            {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a backup holding the writes within 30 s");
    assert!(newest.len() <= 2, "--backup-keep 2 keeps two: {newest:?}");
    let chosen = newest.last().unwrap().clone();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&chosen).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "a backup holds the CA key: private");
    let scraped = metrics(running.http_addr).await;
    assert!(
        scraped.contains("phoenix_store_backups_total{result=\"success\"}"),
        "{scraped}"
    );
    assert!(!scraped.contains("phoenix_store_backup_last_success_timestamp_seconds 0\n"));

    // Restore into a new data directory, while the first server still runs.
    let revision = backup::restore(&chosen, &restored).await.unwrap();
    assert_eq!(revision, revision_of(&chosen));
    // Restoring over a store is refused and changes nothing.
    let again = backup::restore(&chosen, &restored).await.unwrap_err();
    assert!(matches!(again, BackupError::TargetNotEmpty(_)), "{again}");
    let not_a_backup = backup::restore(&restored.join("pki"), &root.path().join("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(not_a_backup, BackupError::NotABackup(_)),
        "{not_a_backup}"
    );
    let old_context = running.admin_context.clone();
    running.stop().await;

    let second = serve::start(args(&restored, None)).await.unwrap();
    // The old admin configuration (CA and token) works against the restored server.
    let ctx = phoenix_api::client::Context {
        server: second.admin_context.server.clone(),
        ..old_context
    };
    let c = Client::connect(&ctx).await.unwrap();
    let list = c.list(Kind::Guest, "", 0, "").await.unwrap();
    let mut names: Vec<_> = list
        .items
        .iter()
        .map(|o| o.metadata().name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["cache", "db", "web"]);
    let web = c.get(Kind::Guest, "web").await.unwrap();
    assert_eq!(web.metadata().resource_version, web_version);
    // And it goes on: a new write gets a revision after the restored one.
    let (created, _) = c.apply(&guest("after"), false).await.unwrap();
    let rv: i64 = created
        .metadata()
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv > revision);
    second.stop().await;
}
