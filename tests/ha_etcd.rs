//! The etcd coordinator in-process against a private etcd on loopback (no testbed):
//! one leader among three candidates; its resignation hands over under a higher epoch;
//! the factory's apply lock in etcd is exclusive and names its holder; etcd stopped →
//! every candidate `unreachable`; back → one leader again.
//!
//! Without `etcd` it prints why and passes; with `CI=true` it fails.

#[path = "ha/etcd.rs"]
mod etcd;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fabrik::coord::etcd::{ApplyLease, Etcd};
use fabrik::coord::{Coordinator, Role, Url};
use tokio_util::sync::CancellationToken;

/// A bound on a hang, not a speed requirement.
const PATIENCE: Duration = Duration::from_secs(60);

struct Candidate {
    coord: Arc<Etcd>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn candidate(url: &str, name: &str) -> Candidate {
    let Ok(Url::Etcd { endpoints, prefix }) = url.parse::<Url>() else { panic!("{url}") };
    let cancel = CancellationToken::new();
    let (coord, task) = Etcd::start(endpoints, prefix, Duration::from_secs(2), name.into(), cancel.clone());
    Candidate { coord: Arc::new(coord), cancel, task }
}

async fn until(what: &str, ok: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < PATIENCE, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn leaders(cs: &[&Candidate]) -> Vec<u64> {
    cs.iter().map(|c| c.coord.role()).filter(Role::is_leader).map(|r| r.epoch().unwrap_or(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_hands_over_under_a_higher_epoch_and_the_apply_lock_is_shared() {
    let Some(mut server) = etcd::Etcd::start() else { return };
    let url = server.url("hatest");
    let cs = [candidate(&url, "w1"), candidate(&url, "w2"), candidate(&url, "w3")];
    let all: Vec<&Candidate> = cs.iter().collect();
    until("one leader", || leaders(&all).len() == 1).await;
    until("two standbys naming it", || {
        cs.iter().filter(|c| matches!(c.coord.role(), Role::Standby { leader: Some(_) })).count() == 2
    })
    .await;
    let first = leaders(&all)[0];
    let i = cs.iter().position(|c| c.coord.role().is_leader()).unwrap();

    // The leader resigns (a clean stop): another leads under a higher epoch.
    cs[i].cancel.cancel();
    let rest: Vec<&Candidate> = cs.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| c).collect();
    until("a new leader", || leaders(&rest).len() == 1).await;
    assert!(leaders(&rest)[0] > first, "epochs grow: {first} → {:?}", leaders(&rest));
    assert!(!cs[i].coord.role().is_leader());

    // The apply lock: exclusive, and a refusal names the holder.
    let Ok(Url::Etcd { endpoints, prefix }) = url.parse::<Url>() else { unreachable!() };
    let held =
        ApplyLease::take(&endpoints, &prefix, "fabrik watch w2 (leader, epoch 9)", Duration::ZERO).await.unwrap();
    let refused = ApplyLease::take(&endpoints, &prefix, "fabrik apply by ops", Duration::ZERO).await.err().unwrap();
    assert!(refused.contains("fabrik watch w2 (leader, epoch 9)"), "{refused}");
    let waiter = {
        let (endpoints, prefix) = (endpoints.clone(), prefix.clone());
        tokio::spawn(async move { ApplyLease::take(&endpoints, &prefix, "ops", Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    held.release().await;
    waiter.await.unwrap().expect("the waiting apply gets the lock once released").release().await;

    // etcd away: nobody leads; back: one leader again.
    server.stop();
    until("all unreachable", || rest.iter().all(|c| matches!(c.coord.role(), Role::Unreachable { .. }))).await;
    server.resume();
    until("one leader after etcd returned", || leaders(&rest).len() == 1).await;
    for c in &cs {
        c.cancel.cancel();
    }
    for c in cs {
        let _ = tokio::time::timeout(Duration::from_secs(5), c.task).await;
    }
}
