//! The watch loop (kube-runtime's controller shape): triggers feed a debouncer; each
//! batch makes one pass over the hosts that are not backing off; the outcome updates the
//! backoff, the pending plan and `status.json`. Async on the caller's runtime; it ends
//! when `cancel` is cancelled, after the pass in flight has finished its actions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::engine::{self, Env, Factory};
use super::git;
use super::policy::{self, Overrides, Policy};
use super::state::{Attempt, CommitRef, FailingHost, HostDrift, StateDir, Status, now_rfc3339};
use super::trigger::{self, DriftTimer, Trigger};
use crate::spec::model::watch::Watch;

/// Where the factory comes from.
#[derive(Clone, Debug)]
pub enum Origin {
    /// Commits of a branch.
    Git { source: git::Source, allow_rewind: bool },
    /// A plain directory (lab mode): whatever its files say now, no history.
    Dir { path: PathBuf },
}

impl Origin {
    pub fn label(&self) -> String {
        match self {
            Origin::Git { source, .. } => format!("git {}@{}", source.repo.display(), source.branch),
            Origin::Dir { path } => format!("dir {} (lab mode: no history, no rewind check)", path.display()),
        }
    }
}

/// Why a factory was not loaded: the message and the diagnostics.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub message: String,
    pub diagnostics: Vec<serde_json::Value>,
}

/// A loaded factory and its `watch:` section.
pub struct Loaded {
    pub factory: Factory,
    pub watch: Option<Watch>,
}

/// Validates and prepares the factory at a path (for `commit`); given by the CLI, which
/// owns validation's rendering.
pub type Loader = Arc<dyn Fn(&std::path::Path, &str) -> Result<Loaded, Refusal> + Send + Sync>;
/// Receives every event of the JSON stream.
pub type Sink = Arc<dyn Fn(serde_json::Value) + Send + Sync>;

pub struct Config {
    pub origin: Origin,
    pub state: StateDir,
    pub flags: Overrides,
    pub env: Env,
    pub load: Loader,
    pub sink: Sink,
    /// Follow libvirt lifecycle events of these hosts: (name, uri). Empty with twins.
    pub events: bool,
    /// Stop after the first pass (a cron job, tests).
    pub once: bool,
    /// Notified on SIGHUP: a forced pass (the factory read again, every host observed).
    pub force: Arc<tokio::sync::Notify>,
    /// Issue 18 hook: who may act ([`crate::coord`]); `Local` for one watcher.
    pub coord: Arc<dyn crate::coord::Coordinator>,
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn event(sink: &Sink, value: serde_json::Value) {
    sink(crate::formats::stamped(super::state::EVENT_FORMAT, &value, SystemTime::now()));
}

/// The state of the loop between passes.
struct Loop {
    cfg: Config,
    status: Status,
    /// The factory in force: the last good commit.
    good: Option<Factory>,
    policy: Policy,
    backoff: Backoff<String>,
    tx: mpsc::UnboundedSender<Trigger>,
    retry: Option<tokio::task::JoinHandle<()>>,
    /// Each host's last seen boot id (`boot-ids.json`).
    boot_ids: BTreeMap<String, String>,
}

impl Loop {
    /// Reads the branch (or directory) and, when it changed, validates what it says now.
    /// A broken or rewound commit is recorded as the last attempt; the good one stays.
    fn reload(&mut self) {
        let (commit, path) = match &self.cfg.origin {
            Origin::Dir { path } => ("dir".to_string(), path.clone()),
            Origin::Git { source, allow_rewind } => {
                let head = match source.head() {
                    Ok(h) => h,
                    Err(e) => {
                        self.refuse(String::new(), crate::diag::error_chain(&e), Vec::new());
                        return;
                    }
                };
                let tried = self.status.last_attempted.as_ref().map(|a| a.commit.commit.as_str());
                let in_force = self.good.as_ref().map(|g| g.commit.as_str());
                if in_force == Some(head.as_str()) || tried == Some(head.as_str()) {
                    return;
                }
                if let Some(applied) = &self.status.last_applied
                    && !allow_rewind
                    && applied.commit != head
                {
                    match source.descends(&applied.commit, &head) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.refuse(
                                head.clone(),
                                format!(
                                    "commit {} does not descend from the last applied commit {}; it is not applied \
                                     (a rewind or a force-push); pass --allow-rewind to accept it",
                                    short(&head),
                                    short(&applied.commit)
                                ),
                                Vec::new(),
                            );
                            return;
                        }
                        Err(e) => {
                            self.refuse(head.clone(), crate::diag::error_chain(&e), Vec::new());
                            return;
                        }
                    }
                }
                match source.checkout(&head, &self.cfg.state.checkout()) {
                    Ok(p) => (head, p),
                    Err(e) => {
                        self.refuse(head.clone(), crate::diag::error_chain(&e), Vec::new());
                        return;
                    }
                }
            }
        };
        match (self.cfg.load)(&path, &commit) {
            Ok(loaded) => {
                self.policy = policy::resolve(loaded.watch.as_ref(), &self.cfg.flags);
                self.status.last_attempted = Some(Attempt {
                    commit: CommitRef { commit: commit.clone(), subject: self.subject(&commit), at: now_rfc3339() },
                    ok: true,
                    error: None,
                    diagnostics: Vec::new(),
                });
                event(&self.cfg.sink, serde_json::json!({"event": "commit-accepted", "commit": commit}));
                self.good = Some(loaded.factory);
            }
            Err(r) => self.refuse(commit, r.message, r.diagnostics),
        }
    }

    /// At start, with the branch's head refused: the last applied commit (from
    /// `applied.json`) is loaded again, so drift is healed against it.
    fn restore_applied(&mut self) {
        let (Origin::Git { source, .. }, None, Some(applied)) =
            (&self.cfg.origin, &self.good, self.status.last_applied.clone())
        else {
            return;
        };
        let Ok(path) = source.checkout(&applied.commit, &self.cfg.state.checkout()) else { return };
        if let Ok(loaded) = (self.cfg.load)(&path, &applied.commit) {
            self.policy = policy::resolve(loaded.watch.as_ref(), &self.cfg.flags);
            event(&self.cfg.sink, serde_json::json!({"event": "commit-restored", "commit": applied.commit}));
            self.good = Some(loaded.factory);
        }
    }

    fn subject(&self, commit: &str) -> String {
        match &self.cfg.origin {
            Origin::Git { source, .. } => source.subject(commit),
            Origin::Dir { .. } => String::new(),
        }
    }

    fn refuse(&mut self, commit: String, error: String, diagnostics: Vec<serde_json::Value>) {
        let in_force = self.good.as_ref().map(|g| g.commit.clone());
        event(
            &self.cfg.sink,
            serde_json::json!({
                "event": "commit-refused", "commit": commit, "error": error,
                "diagnostics": diagnostics, "in_force": in_force,
            }),
        );
        self.status.last_attempted = Some(Attempt {
            commit: CommitRef { subject: self.subject(&commit), commit, at: now_rfc3339() },
            ok: false,
            error: Some(error),
            diagnostics,
        });
    }

    async fn pass(&mut self, batch: &trigger::Batch, cancel: &CancellationToken) {
        if batch.reload() {
            self.reload();
        }
        self.status.suspended = self.cfg.state.suspension();
        if self.status.suspended.is_some() {
            event(&self.cfg.sink, serde_json::json!({"event": "suspended", "triggers": batch.triggers}));
            self.write_status();
            return;
        }
        // Issue 18 hook: a standby (or an instance cut off from etcd) validated the commit
        // above and stops here; a leader's pass runs under its epoch and is cancelled (no
        // new action; running ones end) the moment its leadership is in doubt.
        let role = self.cfg.coord.role();
        let coordination = Some(crate::coord::CoordStatus::of(self.cfg.coord.as_ref()));
        let role_changed = self.status.coordination != coordination;
        self.status.coordination = coordination;
        if role.is_leader() && role_changed {
            // Said at once, not after the pass: a new leader is visible when it leads.
            self.write_status();
        }
        if !role.is_leader() {
            event(&self.cfg.sink, serde_json::json!({"event": "standby", "coordination": self.status.coordination}));
            self.write_status();
            return;
        }
        let Some(good) = &self.good else {
            self.write_status();
            return;
        };
        self.cfg.env.epoch = role.epoch();
        let apply_lease = match crate::coord::begin_apply(self.cfg.coord.as_ref(), self.cfg.env.lock_wait).await {
            Ok(l) => l,
            Err(why) => {
                // An operator's `fabrik apply` holds the factory: try again shortly.
                event(&self.cfg.sink, serde_json::json!({"event": "locked", "error": why}));
                self.write_status();
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let _ = tx.send(Trigger::Forced);
                });
                return;
            }
        };
        let pass_cancel = cancel.child_token();
        let guard = crate::coord::guard(self.cfg.coord.clone(), pass_cancel.clone());
        let cancel = &pass_cancel;
        let now = Instant::now();
        // A host whose libvirtd came back (after a reboot, say) is read at once, even while
        // it backs off.
        let returned = |h: &String| batch.triggers.contains(&Trigger::HostEvents { host: h.clone(), up: true });
        let ready: BTreeSet<String> = good
            .hosts
            .iter()
            .map(|h| h.name.value.clone())
            .filter(|h| self.backoff.ready(h, now) || returned(h))
            .collect();
        event(
            &self.cfg.sink,
            serde_json::json!({"event": "pass-start", "commit": good.commit, "triggers": batch.triggers, "hosts": ready}),
        );
        let sink = self.cfg.sink.clone();
        let emit: crate::apply::Emit = Arc::new(move |e: &crate::apply::Event| {
            if let Ok(v) = serde_json::to_value(e) {
                event(&sink, v);
            }
        });
        let state = self.cfg.state.clone();
        let approved = move |id: &str| state.is_approved(id);
        let mut ledger = self.cfg.state.ledger();
        ledger.prune(unix_now(), &self.policy.gating.budgets);
        // A changed boot id is a reboot: reported before this pass rebuilds what the
        // reboot took (the plan puts it before the VMs that need it).
        let mut rebooted: Vec<String> = Vec::new();
        let (known, sink) = (&mut self.boot_ids, self.cfg.sink.clone());
        let mut observed = |host: &str, boot_id: Option<&str>| {
            let Some(id) = boot_id else { return };
            match known.insert(host.to_string(), id.to_string()) {
                Some(before) if before != id => {
                    rebooted.push(host.to_string());
                    event(
                        &sink,
                        serde_json::json!({
                            "event": "host-rebooted", "host": host, "boot_id": id, "boot_id_before": before,
                            "message": format!("host {host} rebooted: rebuilding boot-volatile state"),
                        }),
                    );
                }
                _ => {}
            }
        };
        let out = engine::reconcile_once(
            good,
            &ready,
            &self.policy.gating,
            unix_now(),
            &approved,
            &mut ledger,
            &self.cfg.env,
            cancel.clone(),
            emit,
            &mut observed,
        )
        .await;
        guard.abort();
        if let Some(l) = apply_lease {
            l.release().await;
        }
        // Issue 18 hook: a host refused this leader's epoch: a newer leader acted there.
        if let Some(f) = out.hosts.iter().filter_map(|h| h.failure.as_ref()).find(|f| f.message.starts_with("fenced:"))
        {
            event(&self.cfg.sink, serde_json::json!({"event": "fenced", "error": f.message}));
            self.cfg.coord.fenced(&f.message);
        }
        let _ = self.cfg.state.write_ledger(&ledger);
        if let Err(e) = self.cfg.state.write_boot_ids(&self.boot_ids) {
            event(&self.cfg.sink, serde_json::json!({"event": "error", "error": crate::diag::error_chain(&e)}));
        }
        let at = now_rfc3339();
        let now = Instant::now();
        for h in &out.hosts {
            match &h.failure {
                None => self.backoff.succeeded(&h.host),
                Some(e) => {
                    self.backoff.failed(h.host.clone(), e.message.clone(), now);
                }
            }
        }
        let previous = std::mem::take(&mut self.status.failing);
        self.status.failing = self
            .backoff
            .failing()
            .iter()
            .map(|(host, f)| {
                let r = out.hosts.iter().find(|r| &r.host == host);
                let earlier = previous.iter().find(|p| &p.host == host);
                FailingHost {
                    host: host.clone(),
                    // A host left out of this pass keeps the kind of its last failure.
                    kind: r
                        .and_then(|r| r.failure.as_ref())
                        .and_then(|e| serde_json::to_value(e.kind).ok())
                        .and_then(|v| v.as_str().map(String::from))
                        .or_else(|| earlier.map(|p| p.kind.clone()))
                        .unwrap_or_else(|| "failed".into()),
                    failures: f.failures,
                    error: f.error.clone(),
                    retry_in_s: f.delay.as_secs_f64(),
                    resources: r
                        .map(|r| r.failed.clone())
                        .or_else(|| earlier.map(|p| p.resources.clone()))
                        .unwrap_or_default(),
                }
            })
            .collect();
        for r in &out.hosts {
            let earlier = self.status.hosts.iter().find(|d| d.host == r.host);
            let drift = HostDrift {
                host: r.host.clone(),
                planned: r.planned,
                done: r.done,
                waiting: r.waiting,
                converged: r.failure.is_none() && r.waiting == 0,
                at: at.clone(),
                boot_id: r.boot_id.clone().or_else(|| earlier.and_then(|d| d.boot_id.clone())),
                rebooted: if rebooted.contains(&r.host) {
                    Some(at.clone())
                } else {
                    earlier.and_then(|d| d.rebooted.clone())
                },
            };
            match self.status.hosts.iter_mut().find(|d| d.host == r.host) {
                Some(d) => *d = drift,
                None => self.status.hosts.push(drift),
            }
        }
        self.status.hosts.retain(|d| good.hosts.iter().any(|h| h.name.value == d.host));
        self.status.hosts.sort_by(|a, b| a.host.cmp(&b.host));
        // The commit is in force: it validated and planned; what waits is pending.
        if self.status.last_applied.as_ref().is_none_or(|a| a.commit != good.commit) && good.commit != "dir" {
            let applied =
                CommitRef { commit: good.commit.clone(), subject: self.subject(&good.commit), at: at.clone() };
            let _ = self.cfg.state.write_applied(&applied);
            self.cfg.coord.record_applied(&applied.commit);
            self.status.last_applied = Some(applied);
        } else if good.commit == "dir" {
            self.status.last_applied = Some(CommitRef { commit: "dir".into(), subject: String::new(), at: at.clone() });
        }
        self.cfg.state.prune_approvals(out.pending.as_ref().map(|p| p.id.as_str()));
        // A pending plan keeps the time it first waited while it stays the same.
        self.status.pending = match (out.pending, self.status.pending.take()) {
            (Some(mut new), Some(old)) if old.id == new.id => {
                new.since = old.since;
                Some(new)
            }
            (new, _) => new,
        };
        self.status.passes += 1;
        event(
            &self.cfg.sink,
            serde_json::json!({
                "event": "pass", "commit": good.commit, "ran": out.ran, "rebooted": rebooted,
                "pending": self.status.pending, "failing": self.status.failing, "hosts": self.status.hosts,
            }),
        );
        self.write_status();
        // Wake up for the earliest retry.
        if let Some(h) = self.retry.take() {
            h.abort();
        }
        if let Some(at) = self.backoff.next_retry() {
            let tx = self.tx.clone();
            let hosts: Vec<String> = self.backoff.failing().keys().cloned().collect();
            self.retry = Some(tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                for host in hosts {
                    let _ = tx.send(Trigger::Retry { host });
                }
            }));
        }
    }

    fn write_status(&mut self) {
        self.status.updated = now_rfc3339();
        if let Err(e) = self.cfg.state.write_status(&self.status) {
            event(&self.cfg.sink, serde_json::json!({"event": "error", "error": crate::diag::error_chain(&e)}));
        }
        // Issue 18 hook: the leader's view for `fabrik status --coordination` anywhere.
        if self.status.coordination.as_ref().is_some_and(|c| c.role == "leader")
            && let Ok(doc) = serde_json::to_value(&self.status)
        {
            self.cfg.coord.publish_status(&crate::formats::versioned(super::state::STATUS_FORMAT, &doc));
        }
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Polls the branch and the control files; sends what changed.
async fn poll(
    origin: Origin,
    state: StateDir,
    every: Duration,
    tx: mpsc::UnboundedSender<Trigger>,
    cancel: CancellationToken,
) {
    // Control files (approvals, suspend/resume) are read every second; the branch
    // every `every`.
    const CONTROL: Duration = Duration::from_secs(1);
    let mut last_head: Option<String> = None;
    let mut last_control = (state.suspension().is_some(), approvals(&state));
    let mut next_head = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CONTROL) => {}
            _ = cancel.cancelled() => return,
        }
        let control = (state.suspension().is_some(), approvals(&state));
        if control != last_control {
            let added: Vec<String> = control.1.difference(&last_control.1).cloned().collect();
            let resumed = last_control.0 && !control.0;
            last_control = control;
            for id in added {
                let _ = tx.send(Trigger::Approved { id });
            }
            if resumed {
                let _ = tx.send(Trigger::Forced);
            }
        }
        if Instant::now() < next_head {
            continue;
        }
        next_head = Instant::now() + every;
        if let Origin::Git { source, .. } = &origin {
            let source = source.clone();
            let head = tokio::task::spawn_blocking(move || source.head().ok()).await.ok().flatten();
            if head.is_some() && head != last_head {
                last_head = head.clone();
                let _ = tx.send(Trigger::Commit { commit: head.unwrap_or_default() });
            }
        }
    }
}

fn approvals(state: &StateDir) -> BTreeSet<String> {
    std::fs::read_dir(state.approvals())
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Watches a directory's files (lab mode) with `notify`; sends [`Trigger::Files`].
fn watch_dir(path: &std::path::Path, tx: mpsc::UnboundedSender<Trigger>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(e) = res
            && !e.kind.is_access()
            && !e.paths.iter().all(|p| p.components().any(|c| c.as_os_str() == ".fabrik"))
        {
            let _ = tx.send(Trigger::Files);
        }
    })
    .ok()?;
    w.watch(path, notify::RecursiveMode::Recursive).ok()?;
    Some(w)
}

/// Runs the watcher until `cancel` is cancelled (SIGTERM: the pass in flight finishes
/// its running actions, none starts), or after one pass with `once`. `hosts_events`:
/// the hosts whose libvirt lifecycle events are followed, by name and URI.
pub async fn run(cfg: Config, hosts_events: Vec<(String, String)>, cancel: CancellationToken) -> Status {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut status = Status {
        source: cfg.origin.label(),
        pid: std::process::id(),
        started: now_rfc3339(),
        last_applied: cfg.state.applied().ok().flatten(),
        ..Status::default()
    };
    status.suspended = cfg.state.suspension();
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    let policy = policy::resolve(None, &cfg.flags);
    let mut lp = Loop {
        backoff: Backoff::new(policy.backoff, seed),
        policy,
        status,
        good: None,
        tx: tx.clone(),
        retry: None,
        boot_ids: cfg.state.boot_ids(),
        cfg,
    };
    // The first pass: load and reconcile at once.
    lp.reload();
    lp.restore_applied();
    lp.backoff = Backoff::new(lp.policy.backoff, seed);
    let _ = tx.send(Trigger::Forced);
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    if lp.cfg.events {
        for (host, uri) in hosts_events {
            let (tx, stop) = (tx.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("events-{host}"))
                    .spawn(move || super::events::follow(host, uri, tx, stop)),
            );
        }
    }
    let _dir_watcher = match &lp.cfg.origin {
        Origin::Dir { path } => watch_dir(path, tx.clone()),
        Origin::Git { .. } => None,
    };
    let force_task = {
        let (force, tx) = (lp.cfg.force.clone(), tx.clone());
        tokio::spawn(async move {
            loop {
                force.notified().await;
                if tx.send(Trigger::Forced).is_err() {
                    return;
                }
            }
        })
    };
    // Issue 18 hook: a change of role runs a pass at once (a new leader acts without
    // waiting for a trigger; a standby's status says so).
    let role_task = {
        let (mut roles, tx) = (lp.cfg.coord.subscribe(), tx.clone());
        tokio::spawn(async move {
            while roles.changed().await.is_ok() {
                if tx.send(Trigger::Forced).is_err() {
                    return;
                }
            }
        })
    };
    // Issue 18 hook: approvals given through etcd become approval files here, which
    // `poll` turns into triggers like a local `fabrik approve`.
    let approvals_task = {
        let (coord, state) = (lp.cfg.coord.clone(), lp.cfg.state.clone());
        tokio::spawn(async move {
            // Each once: a pass prunes approvals of plans no longer pending.
            let mut mirrored = BTreeSet::new();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                for (id, by) in coord.shared_approvals() {
                    if super::state::valid_pending_id(&id) && mirrored.insert(id.clone()) && !state.is_approved(&id) {
                        let _ = state.approve(&id, &by, &now_rfc3339());
                    }
                }
            }
        })
    };
    let drift = DriftTimer::new(lp.policy.drift_interval, lp.policy.drift_jitter_percent, seed ^ 0x5eed);
    let drift_task = tokio::spawn(drift.run(tx.clone()));
    let poll_task =
        tokio::spawn(poll(lp.cfg.origin.clone(), lp.cfg.state.clone(), lp.policy.poll, tx.clone(), cancel.clone()));
    loop {
        let batch = tokio::select! {
            b = trigger::next_batch(&mut rx, lp.policy.debounce) => b,
            _ = cancel.cancelled() => None,
        };
        let Some(batch) = batch else { break };
        lp.pass(&batch, &cancel).await;
        if lp.cfg.once || cancel.is_cancelled() {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    drift_task.abort();
    poll_task.abort();
    force_task.abort();
    role_task.abort();
    approvals_task.abort();
    if let Some(h) = lp.retry.take() {
        h.abort();
    }
    event(&lp.cfg.sink, serde_json::json!({"event": "stopped"}));
    lp.status
}
