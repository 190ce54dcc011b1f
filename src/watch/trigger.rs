//! Why a pass runs, and the debouncer that merges a burst of reasons into one pass
//! (kube-runtime's scheduler): a commit that touches ten files, or a host whose VMs all
//! stop at once, makes one pass, not ten.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// One reason to reconcile.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(tag = "trigger", rename_all = "kebab-case")]
pub enum Trigger {
    /// The branch moved to a new commit.
    Commit { commit: String },
    /// A file of the factory changed (directory mode).
    Files,
    /// The periodic drift pass.
    Drift,
    /// libvirt reported a domain lifecycle event on a host.
    Domain { host: String, domain: String, event: String },
    /// A host's event connection dropped or came back.
    HostEvents { host: String, up: bool },
    /// SIGHUP, or the first pass at start.
    Forced,
    /// A pending plan was approved, or the watcher resumed.
    Approved { id: String },
    /// A host waited out its backoff.
    Retry { host: String },
}

impl Trigger {
    pub fn word(&self) -> &'static str {
        match self {
            Trigger::Commit { .. } => "commit",
            Trigger::Files => "files",
            Trigger::Drift => "drift",
            Trigger::Domain { .. } => "domain",
            Trigger::HostEvents { .. } => "host-events",
            Trigger::Forced => "forced",
            Trigger::Approved { .. } => "approved",
            Trigger::Retry { .. } => "retry",
        }
    }
}

/// The triggers of one pass, each once, in the order they first came.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub triggers: Vec<Trigger>,
}

impl Batch {
    fn add(&mut self, t: Trigger) {
        if !self.triggers.contains(&t) {
            self.triggers.push(t);
        }
    }

    /// Whether the factory must be read again (a new commit or changed files), rather
    /// than the last good one healed.
    pub fn reload(&self) -> bool {
        self.triggers.iter().any(|t| matches!(t, Trigger::Commit { .. } | Trigger::Files | Trigger::Forced))
    }
}

/// How triggers are merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Debounce {
    /// A pass starts once no trigger came for this long...
    pub quiet: Duration,
    /// ...or this long after the first trigger of the burst, whichever is first, so a
    /// steady stream of events cannot postpone a pass for ever.
    pub max_delay: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        // 1 s merges a commit's file events and a host's burst of domain events while
        // keeping an out-of-band stop healed within seconds.
        Debounce { quiet: Duration::from_secs(1), max_delay: Duration::from_secs(10) }
    }
}

/// Waits for the next burst of triggers and returns it merged; `None` once every sender
/// is gone and nothing is left.
pub async fn next_batch(rx: &mut mpsc::UnboundedReceiver<Trigger>, debounce: Debounce) -> Option<Batch> {
    let first = rx.recv().await?;
    let start = Instant::now();
    let mut batch = Batch::default();
    batch.add(first);
    loop {
        let deadline = (Instant::now() + debounce.quiet).min(start + debounce.max_delay);
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(t)) => batch.add(t),
            Ok(None) | Err(_) => return Some(batch),
        }
    }
}

/// The delays of the periodic drift pass: `interval`, jittered, so that many watchers
/// (or one watcher's hosts) do not read their hosts in lockstep.
#[derive(Debug)]
pub struct DriftTimer {
    pub interval: Duration,
    pub jitter_percent: u8,
    rng: fastrand::Rng,
}

impl DriftTimer {
    pub fn new(interval: Duration, jitter_percent: u8, seed: u64) -> Self {
        DriftTimer { interval, jitter_percent, rng: fastrand::Rng::with_seed(seed) }
    }

    pub fn next_delay(&mut self) -> Duration {
        super::backoff::jitter(self.interval, self.jitter_percent, self.rng.f64())
    }

    /// Sends [`Trigger::Drift`] after each delay until the receiver is gone.
    pub async fn run(mut self, tx: mpsc::UnboundedSender<Trigger>) {
        loop {
            tokio::time::sleep(self.next_delay()).await;
            if tx.send(Trigger::Drift).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(d: &str) -> Trigger {
        Trigger::Domain { host: "gpu01".into(), domain: d.into(), event: "stopped".into() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_makes_one_batch_after_the_quiet_time() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let d = Debounce { quiet: Duration::from_secs(1), max_delay: Duration::from_secs(10) };
        let sender = tokio::spawn(async move {
            for i in 0..5 {
                tx.send(domain(&format!("vm{i}"))).unwrap();
                tx.send(domain(&format!("vm{i}"))).unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            tx.send(Trigger::Drift).unwrap();
        });
        let t0 = Instant::now();
        let b = next_batch(&mut rx, d).await.unwrap();
        assert_eq!(b.triggers.len(), 5, "duplicates merged: {b:?}");
        // Last trigger at 1.2 s, quiet for 1 s after it.
        assert_eq!(Instant::now() - t0, Duration::from_millis(2200));
        let b = next_batch(&mut rx, d).await.unwrap();
        assert_eq!(b.triggers, vec![Trigger::Drift]);
        assert!(!b.reload());
        sender.await.unwrap();
        assert_eq!(next_batch(&mut rx, d).await, None, "no senders, no batch");
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_cannot_postpone_a_pass_past_max_delay() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let d = Debounce { quiet: Duration::from_secs(1), max_delay: Duration::from_secs(3) };
        tokio::spawn(async move {
            for i in 0.. {
                if tx.send(domain(&format!("vm{i}"))).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let t0 = Instant::now();
        let b = next_batch(&mut rx, d).await.unwrap();
        assert_eq!(Instant::now() - t0, Duration::from_secs(3));
        assert_eq!(b.triggers.len(), 6, "{b:?}");
        let b2 = next_batch(&mut rx, d).await.unwrap();
        assert!(b2.triggers.iter().all(|t| !b.triggers.contains(t)), "each trigger in one batch only");
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_batch_reloads_the_factory() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(Trigger::Commit { commit: "abc".into() }).unwrap();
        tx.send(Trigger::Files).unwrap();
        let b = next_batch(&mut rx, Debounce::default()).await.unwrap();
        assert!(b.reload());
    }

    #[tokio::test(start_paused = true)]
    async fn drift_passes_are_jittered_around_the_interval() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let timer = DriftTimer::new(Duration::from_secs(60), 10, 42);
        tokio::spawn(timer.run(tx));
        let mut gaps = Vec::new();
        let mut last = Instant::now();
        for _ in 0..20 {
            assert_eq!(rx.recv().await, Some(Trigger::Drift));
            gaps.push(Instant::now() - last);
            last = Instant::now();
        }
        assert!(gaps.iter().all(|g| *g >= Duration::from_secs(54) && *g < Duration::from_secs(66)), "{gaps:?}");
        let distinct: std::collections::BTreeSet<_> = gaps.iter().collect();
        assert!(distinct.len() > 15, "passes do not run in lockstep: {gaps:?}");
    }
}
