//! Crash safety of the embedded store: a child process writing with acknowledgements is
//! SIGKILLed at a random moment; reopening must find every acknowledged write.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use phoenix_store::Store;
use phoenix_store::embedded::{EmbeddedConfig, EmbeddedStore};
use rand::Rng;

const TRIALS: usize = 20;

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // key -> (value, revision) of every acknowledged write, across all trials.
    let mut acked: BTreeMap<String, (String, i64)> = BTreeMap::new();
    let mut max_rev = 0;
    let mut rng = rand::rng();
    for trial in 0..TRIALS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_store-crash-child"))
            .arg(dir.path())
            .arg(trial.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning store-crash-child");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        let run_for = Duration::from_millis(rng.random_range(50..=400));
        std::thread::sleep(run_for);
        child.kill().expect("SIGKILL"); // std's kill sends SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(!status.success(), "child exited on its own: {status}");
        let lines = reader.join().unwrap();
        let mut trial_acks = 0;
        for line in &lines {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["ACK", _, key, value, rev] => {
                    let rev: i64 = rev.parse().unwrap();
                    max_rev = max_rev.max(rev);
                    acked.insert(key.to_string(), (value.to_string(), rev));
                    trial_acks += 1;
                }
                ["READY"] => {}
                // The kill may cut the last line short: it was never fully acknowledged.
                _ if line == lines.last().unwrap() => {}
                _ => panic!("unexpected child output {line:?}"),
            }
        }
        eprintln!("trial {trial}: killed after {run_for:?}, {trial_acks} acknowledged writes");

        let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
            .unwrap_or_else(|e| panic!("trial {trial}: reopening after SIGKILL: {e}"));
        rt.block_on(async {
            assert!(store.current_revision().await.unwrap() >= max_rev);
            for (key, (value, rev)) in &acked {
                let kv = store.get(key.as_bytes()).await.unwrap().kv;
                let kv = kv.unwrap_or_else(|| panic!("trial {trial}: acknowledged {key} lost"));
                if key.starts_with("counter/") {
                    // Later, unacknowledged increments may have landed too.
                    let n: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                    assert!(
                        n >= value.parse().unwrap(),
                        "trial {trial}: {key} went back"
                    );
                    assert!(kv.mod_revision >= *rev);
                } else {
                    assert_eq!(kv.value, value.as_bytes(), "trial {trial}: {key}");
                    assert_eq!(kv.mod_revision, *rev, "trial {trial}: {key}");
                }
            }
        });
        drop(store);
    }
    assert!(
        acked.len() > 100,
        "too few acknowledged writes ({}) to mean anything",
        acked.len()
    );
}
