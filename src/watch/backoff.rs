//! Per-key exponential backoff with jitter that resets on success (kube-runtime's error
//! policy): a host or resource that fails waits longer each time, never in lockstep with
//! the others, and is retried at once after it succeeds again.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// How retries space out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackoffPolicy {
    /// The wait after the first failure.
    pub base: Duration,
    /// No wait grows past this.
    pub max: Duration,
    /// Each wait is the exponential delay times a factor drawn from
    /// `[1 - jitter_percent/100, 1 + jitter_percent/100]`, so failing keys spread out.
    pub jitter_percent: u8,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        // 5 s is about one libvirtd restart; 5 min bounds how stale a returning host stays.
        BackoffPolicy { base: Duration::from_secs(5), max: Duration::from_secs(300), jitter_percent: 20 }
    }
}

impl BackoffPolicy {
    /// The un-jittered delay after `failures` consecutive failures (1 = the first).
    pub fn nominal(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << shift).min(self.max)
    }

    /// The delay after `failures` failures, jittered by `sample` (uniform in `[0, 1)`).
    pub fn delay(&self, failures: u32, sample: f64) -> Duration {
        jitter(self.nominal(failures), self.jitter_percent, sample).min(self.max)
    }
}

/// `d` scaled by a factor in `[1 - pct/100, 1 + pct/100)`, picked by `sample` in `[0, 1)`.
pub fn jitter(d: Duration, pct: u8, sample: f64) -> Duration {
    let spread = f64::from(pct.min(100)) / 100.0;
    let factor = 1.0 - spread + 2.0 * spread * sample.clamp(0.0, 1.0);
    d.mul_f64(factor.max(0.0))
}

/// Where one key stands.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Failing {
    /// Consecutive failures.
    pub failures: u32,
    /// The last error, as a person reads it.
    pub error: String,
    /// How long after the last failure the next try waits.
    pub delay: Duration,
    #[serde(skip)]
    pub retry_at: Instant,
}

/// The backoff of every key that is failing now.
#[derive(Debug)]
pub struct Backoff<K: Ord> {
    policy: BackoffPolicy,
    rng: fastrand::Rng,
    failing: BTreeMap<K, Failing>,
}

impl<K: Ord + Clone> Backoff<K> {
    /// `seed` makes the jitter reproducible (tests); the watcher seeds from the clock.
    pub fn new(policy: BackoffPolicy, seed: u64) -> Self {
        Backoff { policy, rng: fastrand::Rng::with_seed(seed), failing: BTreeMap::new() }
    }

    /// Records a failure at `now`; returns when the key may be tried again.
    pub fn failed(&mut self, key: K, error: String, now: Instant) -> Instant {
        let failures = self.failing.get(&key).map_or(0, |f| f.failures) + 1;
        let delay = self.policy.delay(failures, self.rng.f64());
        let retry_at = now + delay;
        self.failing.insert(key, Failing { failures, error, delay, retry_at });
        retry_at
    }

    /// A success forgets the key's failures: its next failure starts from `base` again.
    pub fn succeeded(&mut self, key: &K) {
        self.failing.remove(key);
    }

    /// Whether the key may be tried at `now`.
    pub fn ready(&self, key: &K, now: Instant) -> bool {
        self.failing.get(key).is_none_or(|f| f.retry_at <= now)
    }

    /// The earliest retry of a key that waits, if any.
    pub fn next_retry(&self) -> Option<Instant> {
        self.failing.values().map(|f| f.retry_at).min()
    }

    pub fn failing(&self) -> &BTreeMap<K, Failing> {
        &self.failing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy { base: Duration::from_secs(2), max: Duration::from_secs(60), jitter_percent: 25 }
    }

    #[test]
    fn nominal_doubles_and_stops_at_max() {
        let p = policy();
        let got: Vec<u64> = (1..=8).map(|n| p.nominal(n).as_secs()).collect();
        assert_eq!(got, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.nominal(u32::MAX), Duration::from_secs(60), "no overflow");
    }

    #[test]
    fn jitter_stays_within_its_band_and_spreads() {
        let d = Duration::from_secs(100);
        assert_eq!(jitter(d, 25, 0.0), Duration::from_secs(75));
        assert_eq!(jitter(d, 25, 0.5), Duration::from_secs(100));
        assert!(jitter(d, 25, 0.999_999) < Duration::from_secs(125));
        let mut rng = fastrand::Rng::with_seed(7);
        let samples: Vec<Duration> = (0..200).map(|_| jitter(d, 25, rng.f64())).collect();
        assert!(samples.iter().all(|s| *s >= Duration::from_secs(75) && *s < Duration::from_secs(125)));
        let distinct: std::collections::BTreeSet<_> = samples.iter().collect();
        assert!(distinct.len() > 100, "jitter must spread retries, got {} distinct", distinct.len());
        assert_eq!(jitter(d, 0, 0.9), d, "no jitter asked, none given");
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_while_failing_and_resets_on_success() {
        let mut b = Backoff::new(policy(), 1);
        let key = "gpu01";
        let t0 = Instant::now();
        let r1 = b.failed(key, "unreachable".into(), t0);
        let d1 = r1 - t0;
        assert!(d1 >= Duration::from_millis(1500) && d1 < Duration::from_millis(2500), "{d1:?}");
        assert!(!b.ready(&key, t0));
        tokio::time::advance(d1).await;
        assert!(b.ready(&key, Instant::now()));
        let t1 = Instant::now();
        let d2 = b.failed(key, "unreachable".into(), t1) - t1;
        assert!(d2 >= Duration::from_secs(3) && d2 < Duration::from_secs(5), "second wait doubles: {d2:?}");
        let t2 = Instant::now();
        let d3 = b.failed(key, "unreachable".into(), t2) - t2;
        assert!(d3 >= Duration::from_secs(6) && d3 < Duration::from_secs(10), "third wait doubles: {d3:?}");
        assert_eq!(b.failing()[&key].failures, 3);
        b.succeeded(&key);
        assert!(b.ready(&key, Instant::now()));
        assert!(b.failing().is_empty());
        let t3 = Instant::now();
        let d4 = b.failed(key, "unreachable".into(), t3) - t3;
        assert!(d4 < Duration::from_millis(2500), "after a success the wait starts from base again: {d4:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_back_off_independently() {
        let mut b = Backoff::new(policy(), 3);
        let now = Instant::now();
        for _ in 0..5 {
            b.failed("gpu01", "down".into(), now);
        }
        assert!(b.ready(&"gpu02", now), "a failing host never stalls another");
        assert!(!b.ready(&"gpu01", now + Duration::from_secs(20)));
        assert!(b.ready(&"gpu01", now + Duration::from_secs(41)));
        assert_eq!(b.next_retry(), Some(b.failing()[&"gpu01"].retry_at));
    }
}
