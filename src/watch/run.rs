//! The watch loop (kube-runtime's controller shape): triggers feed a debouncer; each
//! batch makes one pass over the hosts that are not backing off; the outcome updates the
//! backoff, the pending plan and `status.json`. Async on the caller's runtime; it ends
//! when `cancel` is cancelled, after the pass in flight has finished its actions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::{Backoff, Key, host_of};
use super::engine::{self, Env, Factory};
use super::events::Followers;
use super::git;
use super::policy::{self, Overrides, Policy};
use super::state::{Attempt, CommitRef, FailingHost, FailingResource, HostDrift, StateDir, Status, now_rfc3339};
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
    /// Follow the libvirt lifecycle events of the hosts of the factory in force (false
    /// with twins): one thread per host, started and ended as the host list changes.
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
    /// A commit that validated but is not in force yet: the next pass plans it, and it
    /// replaces `good` only if its plan has no error (else it is refused as a whole).
    candidate: Option<(Factory, Policy)>,
    /// The branch's head as last read, so the poller reports only later commits.
    seen_head: Option<String>,
    /// The event threads, by host.
    followers: Followers,
    /// The policy of the factory in force.
    policy: Policy,
    backoff: Backoff<Key>,
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
                self.seen_head = Some(head.clone());
                let tried = self.status.last_attempted.as_ref().map(|a| a.commit.commit.as_str());
                let in_force = self.good.as_ref().map(|g| g.commit.as_str());
                let trying = self.candidate.as_ref().map(|(c, _)| c.commit.as_str());
                if [in_force, tried, trying].contains(&Some(head.as_str())) {
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
                // Valid; the next pass plans it before it is in force (`accept`), and
                // a plan error there still refuses it.
                let policy = policy::resolve(loaded.watch.as_ref(), &self.cfg.flags);
                self.status.last_attempted = Some(Attempt {
                    commit: CommitRef { commit: commit.clone(), subject: self.subject(&commit), at: now_rfc3339() },
                    ok: true,
                    error: None,
                    diagnostics: Vec::new(),
                });
                event(&self.cfg.sink, serde_json::json!({"event": "commit-valid", "commit": commit}));
                self.candidate = Some((loaded.factory, policy));
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
        // The head is the commit applied before: it was in force, it is again.
        if self.candidate.as_ref().is_some_and(|(c, _)| c.commit == applied.commit) {
            if let Some((f, policy)) = self.candidate.take() {
                self.accept(&f, policy);
                self.good = Some(f);
            }
            return;
        }
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

    /// A candidate whose plan had no error: it is in force from now on.
    fn accept(&mut self, f: &Factory, policy: Policy) {
        self.policy = policy;
        event(&self.cfg.sink, serde_json::json!({"event": "commit-accepted", "commit": f.commit}));
    }

    fn refuse(&mut self, commit: String, error: String, diagnostics: Vec<serde_json::Value>) {
        self.refuse_with(commit, error, diagnostics, self.good.as_ref().map(|g| g.commit.clone()));
    }

    fn refuse_with(
        &mut self,
        commit: String,
        error: String,
        diagnostics: Vec<serde_json::Value>,
        in_force: Option<String>,
    ) {
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

    /// The hosts of `f` a pass reads now: those not backing off, and any whose libvirtd
    /// just came back (after a reboot, say), read at once even while it backs off.
    fn ready(&self, f: &Factory, batch: &trigger::Batch) -> BTreeSet<String> {
        let now = Instant::now();
        let returned = |h: &String| batch.triggers.contains(&Trigger::HostEvents { host: h.clone(), up: true });
        f.hosts
            .iter()
            .map(|h| h.name.value.clone())
            .filter(|h| self.backoff.ready(&Key::Host(h.clone()), now) || returned(h))
            .collect()
    }

    /// One reconcile of `f` on the hosts in `ready`; reports reboots (`rebooted`).
    async fn reconcile(
        &mut self,
        f: &Factory,
        gating: &super::gate::Gating,
        ready: &BTreeSet<String>,
        refuse_plan_errors: bool,
        rebooted: &mut Vec<String>,
        cancel: &CancellationToken,
    ) -> engine::PassOutcome {
        let sink = self.cfg.sink.clone();
        let emit: crate::apply::Emit = Arc::new(move |e: &crate::apply::Event| {
            if let Ok(v) = serde_json::to_value(e) {
                event(&sink, v);
            }
        });
        let state = self.cfg.state.clone();
        let approved = move |id: &str, commit: &str, actions: &[&str]| state.is_approved(id, commit, actions);
        let mut ledger = self.cfg.state.ledger();
        ledger.prune(unix_now(), &gating.budgets);
        let backing_off = self.backoff.resources_waiting(Instant::now());
        // A changed boot id is a reboot: reported before this pass rebuilds what the
        // reboot took (the plan puts it before the VMs that need it).
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
            f,
            ready,
            gating,
            unix_now(),
            &approved,
            &mut ledger,
            &self.cfg.env,
            cancel.clone(),
            emit,
            &mut observed,
            &backing_off,
            refuse_plan_errors,
        )
        .await;
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
        out
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
        if self.good.is_none() && self.candidate.is_none() {
            self.write_status();
            return;
        }
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
        self.pass_as_leader(batch, &pass_cancel).await;
        guard.abort();
        if let Some(l) = apply_lease {
            l.release().await;
        }
    }

    /// The pass proper: the candidate commit planned (refused as a whole on a plan
    /// error), then the commit in force reconciled and recorded.
    async fn pass_as_leader(&mut self, batch: &trigger::Batch, cancel: &CancellationToken) {
        let started = Instant::now();
        let mut rebooted: Vec<String> = Vec::new();
        let mut good = self.good.take();
        let mut outcome = None;
        // A new commit is planned first: any plan error about it refuses it as a whole
        // (nothing changes), and the pass goes on with the commit in force.
        if let Some((candidate, policy)) = self.candidate.take() {
            let ready = self.ready(&candidate, batch);
            event(
                &self.cfg.sink,
                serde_json::json!({
                    "event": "pass-start", "commit": candidate.commit, "candidate": true,
                    "triggers": batch.triggers, "hosts": ready,
                }),
            );
            let out = self.reconcile(&candidate, &policy.gating, &ready, true, &mut rebooted, cancel).await;
            if out.refused.is_empty() {
                self.accept(&candidate, policy);
                good = Some(candidate);
                outcome = Some(out);
            } else {
                let checkout = match &self.cfg.origin {
                    Origin::Git { .. } => Some(self.cfg.state.checkout()),
                    Origin::Dir { .. } => None,
                };
                let diagnostics: Vec<serde_json::Value> =
                    out.refused.iter().map(|e| plan_diagnostic(e, checkout.as_deref())).collect();
                let in_force = good.as_ref().map(|g| g.commit.clone());
                self.refuse_with(
                    candidate.commit.clone(),
                    format!(
                        "the plan of {} has {} error(s); nothing was changed and the last good commit stays in \
                         force: {}",
                        short(&candidate.commit),
                        out.refused.len(),
                        out.refused.iter().map(|e| format!("{}: {}", e.id, e.message)).collect::<Vec<_>>().join("; ")
                    ),
                    diagnostics,
                    in_force,
                );
            }
        }
        let Some(good) = good else {
            self.write_status();
            return;
        };
        let out = match outcome {
            Some(out) => out,
            None => {
                let ready = self.ready(&good, batch);
                event(
                    &self.cfg.sink,
                    serde_json::json!({"event": "pass-start", "commit": good.commit, "triggers": batch.triggers, "hosts": ready}),
                );
                let gating = self.policy.gating.clone();
                self.reconcile(&good, &gating, &ready, false, &mut rebooted, cancel).await
            }
        };
        self.record(&good, out, &rebooted, started);
        self.follow(&good);
        self.good = Some(good);
    }

    /// Updates the backoff, the status and the pending plan from a pass's outcome.
    /// `started`: when the pass began (a resource whose backoff had run out by then was
    /// tried, so one that did not fail again is healthy).
    fn record(&mut self, good: &Factory, out: engine::PassOutcome, rebooted: &[String], started: Instant) {
        let at = now_rfc3339();
        let now = Instant::now();
        for h in &out.hosts {
            let errors: Vec<(String, String)> =
                h.resource_failures.iter().map(|(id, e)| (id.clone(), e.message.clone())).collect();
            self.backoff.record_host(&h.host, h.failure.as_ref().map(|e| e.message.clone()), &errors, started, now);
        }
        let kind_word = |e: &crate::reconcile::ReconcileError| {
            serde_json::to_value(e.kind).ok().and_then(|v| v.as_str().map(String::from))
        };
        let earlier_resources = std::mem::take(&mut self.status.failing_resources);
        self.status.failing_resources = self
            .backoff
            .failing()
            .iter()
            .filter_map(|(k, f)| match k {
                Key::Resource(id) => Some((id, f)),
                Key::Host(_) => None,
            })
            .map(|(id, f)| FailingResource {
                id: id.clone(),
                host: host_of(id).to_string(),
                kind: out
                    .hosts
                    .iter()
                    .flat_map(|h| h.resource_failures.iter())
                    .find(|(r, _)| r == id)
                    .and_then(|(_, e)| kind_word(e))
                    .or_else(|| earlier_resources.iter().find(|p| &p.id == id).map(|p| p.kind.clone()))
                    .unwrap_or_else(|| "failed".into()),
                failures: f.failures,
                error: f.error.clone(),
                retry_in_s: f.delay.as_secs_f64(),
            })
            .collect();
        let previous = std::mem::take(&mut self.status.failing);
        self.status.failing = self
            .backoff
            .failing()
            .iter()
            .filter_map(|(k, f)| match k {
                Key::Host(host) => Some((host, f)),
                Key::Resource(_) => None,
            })
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
                converged: r.failure.is_none() && r.waiting == 0 && r.resource_failures.is_empty(),
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
        self.cfg.state.prune_approvals(out.pending.as_ref());
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
                "pending": self.status.pending, "failing": self.status.failing,
                "failing_resources": self.status.failing_resources, "hosts": self.status.hosts,
            }),
        );
        self.write_status();
        // Wake up for the earliest retry.
        if let Some(h) = self.retry.take() {
            h.abort();
        }
        if let Some(at) = self.backoff.next_retry() {
            let tx = self.tx.clone();
            let hosts: BTreeSet<String> = self.backoff.failing().keys().map(|k| k.host().to_string()).collect();
            self.retry = Some(tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                for host in hosts {
                    let _ = tx.send(Trigger::Retry { host });
                }
            }));
        }
    }

    /// Follows the events of `f`'s hosts (those whose URI fabrik opens): a thread for
    /// each new host (or changed URI), none for a host `f` no longer declares.
    fn follow(&mut self, f: &Factory) {
        if !self.cfg.events {
            return;
        }
        let wanted: BTreeMap<String, String> = f
            .hosts
            .iter()
            .filter(|h| crate::check::trust::uri_refusal(&h.uri.value).is_none())
            .map(|h| (h.name.value.clone(), h.uri.value.clone()))
            .collect();
        for line in self.followers.sync(wanted) {
            event(&self.cfg.sink, line);
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

/// A plan error as a diagnostic object (`validate --format json`'s shape, plus the
/// resource); its file as a path in the repository, not in the watcher's `checkout`.
fn plan_diagnostic(e: &crate::plan::PlanError, checkout: Option<&std::path::Path>) -> serde_json::Value {
    let file = e.at.as_ref().map(|a| {
        let path = std::path::Path::new(&a.file);
        match checkout.and_then(|c| path.strip_prefix(c).ok()) {
            Some(rel) => rel
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect::<PathBuf>()
                .display()
                .to_string(),
            None => a.file.clone(),
        }
    });
    serde_json::json!({
        "severity": "error", "code": e.code, "message": e.message, "help": e.help,
        "resource": e.id.to_string(),
        "file": file,
        "line": e.at.as_ref().map(|a| a.line),
        "column": e.at.as_ref().map(|a| a.column),
    })
}

/// Polls the branch and the control files; sends what changed.
/// `head`: the branch's head as the first pass read it.
async fn poll(
    origin: Origin,
    state: StateDir,
    every: Duration,
    head: Option<String>,
    tx: mpsc::UnboundedSender<Trigger>,
    cancel: CancellationToken,
) {
    // Control files (approvals, suspend/resume) are read every second; the branch
    // every `every`.
    const CONTROL: Duration = Duration::from_secs(1);
    let mut last_head: Option<String> = head;
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
/// its running actions, none starts), or after one pass with `once`.
pub async fn run(cfg: Config, cancel: CancellationToken) -> Status {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The event threads' triggers are logged as they arrive, then passed on.
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<Trigger>();
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
        candidate: None,
        seen_head: None,
        followers: Followers::new(events_tx),
        tx: tx.clone(),
        retry: None,
        boot_ids: cfg.state.boot_ids(),
        cfg,
    };
    // The first pass: load and reconcile at once.
    lp.reload();
    lp.restore_applied();
    // Until a commit is in force, the loop's timings come from the one being tried.
    if let (None, Some((_, policy))) = (&lp.good, &lp.candidate) {
        lp.policy = policy.clone();
    }
    lp.backoff = Backoff::new(lp.policy.backoff, seed);
    let _ = tx.send(Trigger::Forced);
    // Events are followed from the start (the first pass's hosts), then as the host
    // list of the factory in force changes.
    if let Some(f) = lp.candidate.take() {
        lp.follow(&f.0);
        lp.candidate = Some(f);
    } else if let Some(f) = lp.good.take() {
        lp.follow(&f);
        lp.good = Some(f);
    }
    let forward = {
        let (tx, sink) = (tx.clone(), lp.cfg.sink.clone());
        tokio::spawn(async move {
            while let Some(t) = events_rx.recv().await {
                if let Some(v) = super::events::received(&t) {
                    event(&sink, v);
                }
                if tx.send(t).is_err() {
                    return;
                }
            }
        })
    };
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
                let fresh: Vec<(String, String)> =
                    coord.shared_approvals().into_iter().filter(|(id, _)| !mirrored.contains(id)).collect();
                if fresh.is_empty() {
                    continue;
                }
                // The status file is read only when etcd holds an approval not yet mirrored.
                let pending = state.status().ok().flatten().and_then(|s| s.pending);
                for (id, by) in fresh {
                    // Approved as the local command does: with the pending plan's changes,
                    // so what a budget holds back stays approved.
                    let Some(p) = pending.as_ref().filter(|p| p.id == id) else { continue };
                    if super::state::valid_pending_id(&id) && mirrored.insert(id.clone()) {
                        let _ = state.approve(p, &by, &now_rfc3339());
                    }
                }
            }
        })
    };
    let drift = DriftTimer::new(lp.policy.drift_interval, lp.policy.drift_jitter_percent, seed ^ 0x5eed);
    let drift_task = tokio::spawn(drift.run(tx.clone()));
    let poll_task = tokio::spawn(poll(
        lp.cfg.origin.clone(),
        lp.cfg.state.clone(),
        lp.policy.poll,
        lp.seen_head.clone(),
        tx.clone(),
        cancel.clone(),
    ));
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
        if rx.is_empty() {
            // Nothing queued: the next pass waits for a trigger (tests wait for this).
            event(&lp.cfg.sink, serde_json::json!({"event": "idle"}));
        }
    }
    lp.followers.stop_all();
    forward.abort();
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
