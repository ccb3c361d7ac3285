//! Crash-test child: writes to an embedded store as fast as it can and prints one line per
//! acknowledged write, until it is killed. Used by `tests/crash.rs`.
//!
//! Usage: `store-crash-child <data-dir> <trial>`. Output lines:
//! `ACK create <key> <value> <revision>` and `ACK update <key> <value> <revision>`.

use std::io::Write;
use std::sync::Arc;

use phoenix_store::embedded::{EmbeddedConfig, EmbeddedStore};
use phoenix_store::{Store, StoreError};

const WRITERS: usize = 8;

fn ack(line: String) {
    let mut out = std::io::stdout().lock();
    // A failed print means the parent is gone; nothing to report to.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(trial)) = (args.next(), args.next()) else {
        eprintln!("usage: store-crash-child <data-dir> <trial>");
        std::process::exit(2);
    };
    let store =
        Arc::new(EmbeddedStore::open(&dir, EmbeddedConfig::default()).expect("opening the store"));
    ack("READY".to_string());
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let trial = trial.clone();
            tokio::spawn(async move {
                let counter = format!("counter/{trial}/{w}");
                let mut rev = store
                    .create(counter.as_bytes(), b"0".to_vec(), None)
                    .await?;
                ack(format!("ACK create {counter} 0 {rev}"));
                for i in 1u64.. {
                    let key = format!("k/{trial}/{w}/{i}");
                    let value = format!("v{i}");
                    let r = store
                        .create(key.as_bytes(), value.clone().into_bytes(), None)
                        .await?;
                    ack(format!("ACK create {key} {value} {r}"));
                    rev = store
                        .update(counter.as_bytes(), i.to_string().into_bytes(), rev)
                        .await?;
                    ack(format!("ACK update {counter} {i} {rev}"));
                }
                Ok::<(), StoreError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer task").expect("write failed");
    }
}
