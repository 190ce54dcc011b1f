//! Per-key exponential backoff with jitter that resets on success (kube-runtime's error
//! policy): a host or resource that fails waits longer each time, never in lockstep with
//! the others, and is retried at once after it succeeds again. The watcher's keys are
//! [`Key`]s: a host that cannot be worked on backs off as a whole; a resource whose
//! action failed backs off alone while the rest of its host goes on.

use std::collections::{BTreeMap, BTreeSet};
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

/// What backs off: a whole host (it cannot be reached, its lock is held, it hangs), or
/// one resource whose action failed (`vm:h1/w1`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Host(String),
    Resource(String),
}

impl Key {
    /// The host the key is about.
    pub fn host(&self) -> &str {
        match self {
            Key::Host(h) => h,
            Key::Resource(id) => host_of(id),
        }
    }
}

/// The host of a resource id (`kind:host/name`).
pub fn host_of(id: &str) -> &str {
    id.split_once(':').and_then(|(_, r)| r.split_once('/')).map_or("", |(h, _)| h)
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

impl Backoff<Key> {
    /// Records how a host ended a pass that began at `started`: `host_error` backs the
    /// host off; each of `resource_errors` (id, error) backs its resource off. A host
    /// that was worked on resets its own backoff and that of each of its resources that
    /// was tried (its wait had run out by `started`) and did not fail again.
    pub fn record_host(
        &mut self,
        host: &str,
        host_error: Option<String>,
        resource_errors: &[(String, String)],
        started: Instant,
        now: Instant,
    ) {
        match host_error {
            Some(e) => {
                self.failed(Key::Host(host.to_string()), e, now);
            }
            None => {
                self.succeeded(&Key::Host(host.to_string()));
                let healthy: Vec<Key> = self
                    .failing
                    .iter()
                    .filter(|(k, f)| match k {
                        Key::Resource(id) => {
                            host_of(id) == host
                                && f.retry_at <= started
                                && !resource_errors.iter().any(|(r, _)| r == id)
                        }
                        Key::Host(_) => false,
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in healthy {
                    self.succeeded(&k);
                }
            }
        }
        for (id, e) in resource_errors {
            self.failed(Key::Resource(id.clone()), e.clone(), now);
        }
    }

    /// The resources whose wait has not run out at `now`: a pass leaves them alone.
    pub fn resources_waiting(&self, now: Instant) -> BTreeSet<String> {
        self.failing
            .iter()
            .filter_map(|(k, f)| match k {
                Key::Resource(id) if f.retry_at > now => Some(id.clone()),
                _ => None,
            })
            .collect()
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
    async fn a_failing_resource_backs_off_alone_and_resets_once_it_succeeds() {
        let mut b = Backoff::new(policy(), 5);
        let (vm, other) = ("vm:h1/w1".to_string(), "vm:h1/w2".to_string());
        let t0 = Instant::now();
        b.record_host("h1", None, &[(vm.clone(), "start refused".into())], t0, t0);
        assert!(b.ready(&Key::Host("h1".into()), t0), "the host goes on");
        assert_eq!(b.resources_waiting(t0), BTreeSet::from([vm.clone()]));
        let wait = b.failing()[&Key::Resource(vm.clone())].delay;
        // A pass within the wait: w1 is left alone, so its backoff stays though w2 failed
        // nothing.
        tokio::time::advance(wait / 2).await;
        let t1 = Instant::now();
        b.record_host("h1", None, &[], t1, t1);
        assert_eq!(b.resources_waiting(t1), BTreeSet::from([vm.clone()]), "not tried, not reset");
        // Tried again after its wait, fails again: the wait grows.
        tokio::time::advance(wait).await;
        let t2 = Instant::now();
        assert!(b.resources_waiting(t2).is_empty());
        b.record_host("h1", None, &[(vm.clone(), "start refused".into())], t2, t2);
        assert_eq!(b.failing()[&Key::Resource(vm.clone())].failures, 2);
        // The host becomes unreachable: the host backs off; w1 keeps its own count.
        let t3 = Instant::now();
        b.record_host("h1", Some("unreachable".into()), &[], t3, t3);
        assert!(!b.ready(&Key::Host("h1".into()), t3));
        assert_eq!(b.failing()[&Key::Resource(vm.clone())].failures, 2);
        // Back, and w1 succeeds once its wait is over: both reset.
        tokio::time::advance(Duration::from_secs(60)).await;
        let t4 = Instant::now();
        b.record_host("h1", None, &[], t4, t4);
        assert!(b.failing().is_empty(), "{:?}", b.failing());
        assert!(!b.failing().contains_key(&Key::Resource(other)));
        assert_eq!(host_of("mig:h1/0000:3b:00.0/1g@0"), "h1");
        assert_eq!(Key::Resource(vm).host(), "h1");
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
