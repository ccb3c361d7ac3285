//! How often a failed one-shot is run again: a service that may complete (`restart: "no"` or
//! `on-failure`) and exited with a non-zero code is brought back by compose `up` like any
//! stopped container, but with exponential backoff, as Kubernetes backs off a crashing pod:
//! a failing migration must not run every few seconds forever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The wait before the first re-run of a failed one-shot.
pub const FIRST_WAIT: Duration = Duration::from_secs(10);
/// The longest wait between re-runs.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// Re-runs per Stack (by uid) of the compose file with one hash. Forgotten when the file
/// changes (a new spec gets a fresh start), when no one-shot is failing any more, and when
/// the Stack goes. Kept in memory: a restarted controller starts counting afresh.
#[derive(Debug, Default)]
pub struct Reruns {
    by_stack: Mutex<HashMap<String, Rerun>>,
}

#[derive(Debug, Clone)]
struct Rerun {
    hash: String,
    runs: u32,
    not_before: Instant,
}

impl Reruns {
    /// `Ok` when the failed one-shots of `uid` at `hash` may run again at `now`, else how long
    /// to wait. A Stack seen failing for the first time waits [`FIRST_WAIT`] from then.
    pub fn due(&self, uid: &str, hash: &str, now: Instant) -> Result<(), Duration> {
        let mut m = self.by_stack.lock().expect("reruns lock");
        let r = m
            .entry(uid.to_string())
            .and_modify(|r| {
                if r.hash != hash {
                    *r = first(hash, now);
                }
            })
            .or_insert_with(|| first(hash, now));
        match r.not_before.checked_duration_since(now) {
            Some(wait) if !wait.is_zero() => Err(wait),
            _ => Ok(()),
        }
    }

    /// Records a re-run at `now`; the next waits twice as long as the last, at most
    /// [`MAX_WAIT`]. Returns that wait.
    pub fn ran(&self, uid: &str, hash: &str, now: Instant) -> Duration {
        let mut m = self.by_stack.lock().expect("reruns lock");
        let r = m.entry(uid.to_string()).or_insert_with(|| first(hash, now));
        r.runs = r.runs.saturating_add(1);
        let wait = FIRST_WAIT
            .saturating_mul(2u32.saturating_pow(r.runs.min(16)))
            .min(MAX_WAIT);
        r.not_before = now + wait;
        wait
    }

    /// Forgets `uid`: nothing of it is failing, its file changed, or it is gone.
    pub fn forget(&self, uid: &str) {
        self.by_stack.lock().expect("reruns lock").remove(uid);
    }
}

fn first(hash: &str, now: Instant) -> Rerun {
    Rerun {
        hash: hash.to_string(),
        runs: 0,
        not_before: now + FIRST_WAIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_runs_back_off_exponentially_up_to_the_cap() {
        let r = Reruns::default();
        let t0 = Instant::now();
        // Seen failing: the first re-run waits FIRST_WAIT.
        assert_eq!(r.due("u", "h", t0), Err(FIRST_WAIT));
        assert_eq!(
            r.due("u", "h", t0 + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
        let t1 = t0 + FIRST_WAIT;
        assert_eq!(r.due("u", "h", t1), Ok(()));
        assert_eq!(r.ran("u", "h", t1), Duration::from_secs(20));
        assert_eq!(
            r.due("u", "h", t1 + Duration::from_secs(19)),
            Err(Duration::from_secs(1))
        );
        let t2 = t1 + Duration::from_secs(20);
        assert_eq!(r.due("u", "h", t2), Ok(()));
        assert_eq!(r.ran("u", "h", t2), Duration::from_secs(40));
        let mut t = t2;
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            t += MAX_WAIT;
            last = r.ran("u", "h", t);
        }
        assert_eq!(last, MAX_WAIT);
    }

    #[test]
    fn a_new_file_or_forgetting_starts_afresh() {
        let r = Reruns::default();
        let t0 = Instant::now();
        let _ = r.due("u", "h", t0);
        r.ran("u", "h", t0 + FIRST_WAIT);
        r.ran("u", "h", t0 + FIRST_WAIT * 3);
        // A changed compose file: waits FIRST_WAIT again, from now.
        let t = t0 + Duration::from_secs(100);
        assert_eq!(r.due("u", "h2", t), Err(FIRST_WAIT));
        r.forget("u");
        assert_eq!(r.due("u", "h2", t), Err(FIRST_WAIT));
        // Other Stacks are apart.
        assert_eq!(r.due("v", "h", t + FIRST_WAIT), Err(FIRST_WAIT));
    }
}
