//! Jittered exponential backoff (backon), per key for reconciles and per stream for watches.

use std::collections::HashMap;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

/// Shape of a backoff: the first delay, the cap, and how long things must go well before
/// the next failure starts again from the first delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// First delay.
    pub min: Duration,
    /// Largest delay (jitter included).
    pub max: Duration,
    /// A stream healthy for this long forgets its earlier failures.
    pub reset_after: Duration,
}

impl BackoffConfig {
    /// Watches: 800 ms doubling to 30 s, reset after 30 s of health.
    pub const WATCH: BackoffConfig = BackoffConfig {
        min: Duration::from_millis(800),
        max: Duration::from_secs(30),
        reset_after: Duration::from_secs(30),
    };
    /// Reconcile errors: 1 s doubling to 5 min (reset on success).
    pub const RECONCILE: BackoffConfig = BackoffConfig {
        min: Duration::from_secs(1),
        max: Duration::from_secs(300),
        reset_after: Duration::from_secs(300),
    };

    fn build(&self) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// One sequence of growing delays, e.g. a watch stream's reconnects.
#[derive(Debug)]
pub struct Backoff {
    config: BackoffConfig,
    delays: ExponentialBackoff,
    healthy_since: Option<Instant>,
}

impl Backoff {
    /// A fresh sequence.
    pub fn new(config: BackoffConfig) -> Self {
        Backoff {
            delays: config.build(),
            config,
            healthy_since: None,
        }
    }

    /// Marks the start of a healthy period (a watch stream is established).
    pub fn healthy(&mut self) {
        if self.healthy_since.is_none() {
            self.healthy_since = Some(Instant::now());
        }
    }

    /// The delay before the next attempt after a failure. Starts over from the first delay
    /// when the period since [`Backoff::healthy`] lasted at least `reset_after`.
    pub fn next_delay(&mut self) -> Duration {
        if let Some(since) = self.healthy_since.take()
            && since.elapsed() >= self.config.reset_after
        {
            self.delays = self.config.build();
        }
        self.delays
            .next()
            .unwrap_or(self.config.max)
            .min(self.config.max)
    }

    /// Forgets every failure.
    pub fn reset(&mut self) {
        self.delays = self.config.build();
        self.healthy_since = None;
    }
}

/// Backoff per object key: each key's failures grow its own delay; success resets it.
#[derive(Debug)]
pub struct KeyedBackoff {
    config: BackoffConfig,
    keys: HashMap<String, (ExponentialBackoff, u32)>,
}

impl KeyedBackoff {
    /// No key has failed yet.
    pub fn new(config: BackoffConfig) -> Self {
        KeyedBackoff {
            config,
            keys: HashMap::new(),
        }
    }

    /// Records a failure of `key`; returns the delay before its retry and the number of
    /// consecutive failures so far.
    pub fn failed(&mut self, key: &str) -> (Duration, u32) {
        let config = self.config;
        let (delays, failures) = self
            .keys
            .entry(key.to_string())
            .or_insert_with(|| (config.build(), 0));
        *failures += 1;
        let delay = delays.next().unwrap_or(config.max).min(config.max);
        (delay, *failures)
    }

    /// Forgets `key`'s failures (after a success, or when the object is gone).
    pub fn reset(&mut self, key: &str) {
        self.keys.remove(key);
    }

    /// Consecutive failures of `key`.
    pub fn failures(&self, key: &str) -> u32 {
        self.keys.get(key).map_or(0, |(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_bounds_and_reset() {
        let mut b = KeyedBackoff::new(BackoffConfig::RECONCILE);
        let mut last_base = Duration::ZERO;
        for i in 0..12 {
            let (d, n) = b.failed("a");
            assert_eq!(n, i + 1);
            // Base delay doubles from 1 s; jitter adds up to +100%; the cap holds.
            let base = Duration::from_secs(1 << i.min(9)).min(BackoffConfig::RECONCILE.max);
            assert!(
                d >= base.min(BackoffConfig::RECONCILE.max),
                "{i}: {d:?} < {base:?}"
            );
            assert!(
                d <= (base * 2).min(BackoffConfig::RECONCILE.max),
                "{i}: {d:?}"
            );
            assert!(base >= last_base);
            last_base = base;
        }
        assert_eq!(b.failures("b"), 0, "keys are independent");
        b.reset("a");
        let (d, n) = b.failed("a");
        assert_eq!(n, 1);
        assert!(
            d < Duration::from_secs(2),
            "after reset the first delay again: {d:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_period_resets_the_watch_backoff() {
        let mut b = Backoff::new(BackoffConfig::WATCH);
        for _ in 0..6 {
            b.next_delay();
        }
        let grown = b.next_delay();
        assert!(grown >= Duration::from_secs(25), "{grown:?}");
        // Healthy, but not for long enough: keeps growing (capped).
        b.healthy();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.next_delay() >= Duration::from_secs(25));
        // Healthy for the full period: back to the first delay.
        b.healthy();
        tokio::time::advance(Duration::from_secs(31)).await;
        let d = b.next_delay();
        assert!(
            d >= Duration::from_millis(800) && d <= Duration::from_millis(1600),
            "{d:?}"
        );
    }
}
