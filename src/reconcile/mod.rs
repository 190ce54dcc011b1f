//! The reconcile core: lock → observe → plan → execute → observe → verify, as a library
//! call a command, the watch loop or a test can run many times in one process.
//!
//! ```text
//! reconcile(hosts, desired, options, cancel, emit) -> Vec<HostOutcome>
//!   Session::open    the local apply lock, then each host's lock through its agent
//!   Session::observe every host at once, on the session's connections
//!   plan::plan_with  pure: actions carrying their typed operations
//!   Session::execute the operations only (apply::apply), on the same connections
//!   Session::verify  observe again, plan again with `Options::verify_plan` (never
//!                    `--replace`), up to `VerifyOptions::attempts` times
//! ```
//!
//! A [`Session`] owns each host's connections ([`HostConn`]) from the lock to the
//! verification: a host's agent (an ssh session in production) starts once per
//! reconcile, and its apply lock is held by that same agent until the session drops.
//!
//! Async, on the caller's runtime; blocking driver calls run on tokio's blocking pool.
//! Cancellation is a [`CancellationToken`]: once cancelled, no new action starts and the
//! running ones finish their operations. Nothing here creates a runtime or exits the
//! process: the CLI owns both (it exits on a second signal). Failures carry a
//! [`FailureKind`] (unreachable, refused, precondition, locked, timeout, cancelled).
//!
//! The CLI (`fabrik apply`) uses the session's steps one by one, to show the plan and
//! ask before executing; [`reconcile`] runs them all, unattended.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use crate::apply::failure::FailureKind;
use crate::apply::host::HostConn;
use crate::apply::lock::{ApplyLock, Holder};
use crate::apply::{self, Emit, Entry, Limits, NotConverged, Report, Settings};
use crate::desired::Desired;
use crate::driver::agent::{FENCED, LOCKED, Shared};
use crate::graph::Graph;
use crate::live::LiveHost;
use crate::plan::{self, Created, Plan};
use crate::spec::model::Host;

/// How a reconcile runs, beyond the desired state.
#[derive(Clone, Debug)]
pub struct Options {
    /// What to plan: targets, excludes, `--replace`, the shutdown timeout.
    pub plan: plan::Options,
    pub verify: VerifyOptions,
    pub limits: Limits,
    /// Reconcile the simulated twins kept in this state folder instead of the hosts.
    pub twins: Option<PathBuf>,
    /// Where the local apply lock (`apply.lock`) is taken.
    pub lock_dir: PathBuf,
    /// How long to wait for another apply's locks (local and hosts' together).
    pub lock_wait: Duration,
    /// `created.json`: what fabrik recorded making.
    pub created_path: PathBuf,
    /// The leader epoch of a watcher elected through etcd (`None`: not coordinated). Sent
    /// with each host lock; a host that has seen a higher one refuses (`fenced`).
    pub epoch: Option<u64>,
}

/// How the result is verified: a new observation and plan, repeated while it still
/// shows changes, at most `attempts` times, `interval` apart (a guest still shutting
/// down, a link settling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    pub attempts: u32,
    pub interval: Duration,
}

impl Default for VerifyOptions {
    fn default() -> VerifyOptions {
        VerifyOptions { attempts: 3, interval: Duration::from_secs(1) }
    }
}

impl Options {
    /// The plan options verification uses: the same selection, never `--replace` (a
    /// replaced resource is replaced once; planning it again would always show it).
    pub fn verify_plan(&self, created: Created) -> plan::Options {
        plan::Options { replace: Vec::new(), created, ..self.plan.clone() }
    }
}

/// A failure of a reconcile step (not of one action: those are in the [`Report`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct ReconcileError {
    pub kind: FailureKind,
    pub message: String,
}

impl ReconcileError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> ReconcileError {
        ReconcileError { kind, message: message.into() }
    }
}

/// One host's result.
#[derive(Clone, Debug)]
pub struct HostOutcome {
    pub host: String,
    /// Its actions and how each ended, in plan order.
    pub entries: Vec<Entry>,
    /// What a new plan of the host still shows after apply (empty: converged).
    pub remaining: Vec<NotConverged>,
    /// Why the host was not reconciled (locked, unreachable, the plan had errors,
    /// cancelled), or why it did not converge.
    pub failure: Option<ReconcileError>,
}

impl HostOutcome {
    /// Applied and verified.
    pub fn converged(&self) -> bool {
        self.failure.is_none() && self.remaining.is_empty() && self.entries.iter().all(|e| e.outcome.succeeded())
    }
}

/// What verification found.
#[derive(Clone, Debug)]
pub struct Verification {
    /// The last plan made to verify.
    pub plan: Plan,
    pub remaining: Vec<NotConverged>,
    /// Plans made (1 when the first showed no changes).
    pub attempts: u32,
}

impl Verification {
    pub fn converged(&self) -> bool {
        self.remaining.is_empty() && !self.plan.has_errors()
    }
}

/// The connections and locks of one reconcile, host by host; dropping it lets the
/// locks go (and ends the agents).
pub struct Session {
    hosts: Vec<Host>,
    conns: BTreeMap<String, Arc<HostConn>>,
    _lock: ApplyLock,
    /// Hosts whose apply lock could not be taken (their agent is unreachable or too old),
    /// and why: reconciled without it.
    pub unlocked: Vec<(String, String)>,
    /// The leader epoch the hosts' locks are asked with (issue 18).
    epoch: Option<u64>,
}

/// How often a busy host's lock is asked for again (each round restarts no agent: the
/// session keeps them; only a busy round lets its locks go).
const HOST_LOCK_RETRY: Duration = Duration::from_secs(1);

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ReconcileError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReconcileError::new(FailureKind::Failed, format!("a reconcile task crashed: {e}")))
}

impl Session {
    /// Takes the local lock in `options.lock_dir`, then the hosts' locks through their
    /// agents (real hosts only), waiting up to `options.lock_wait` for both together.
    pub async fn open(factory: &str, hosts: &[Host], options: &Options) -> Result<Session, ReconcileError> {
        let deadline = tokio::time::Instant::now() + options.lock_wait;
        let (dir, wait) = (options.lock_dir.clone(), options.lock_wait);
        let lock = blocking(move || apply::lock::acquire(&dir, wait))
            .await?
            .map_err(|e| ReconcileError::new(FailureKind::Locked, crate::diag::error_chain(&e)))?;
        let conns: BTreeMap<String, Arc<HostConn>> = hosts
            .iter()
            .map(|h| {
                let conn = HostConn::new(h, options.twins.clone(), options.limits.per_host);
                (h.name.value.clone(), Arc::new(conn))
            })
            .collect();
        let mut session =
            Session { hosts: hosts.to_vec(), conns, _lock: lock, unlocked: Vec::new(), epoch: options.epoch };
        if options.twins.is_none() {
            session.lock_hosts(factory, deadline).await?;
        }
        Ok(session)
    }

    /// Asks every host with an agent to take the factory's lock, on the session's agent.
    /// When another apply holds one, every lock taken is let go (so two applies each
    /// holding some hosts never wait on each other) and all are asked again until the
    /// deadline.
    async fn lock_hosts(&mut self, factory: &str, deadline: tokio::time::Instant) -> Result<(), ReconcileError> {
        let me = Holder { epoch: self.epoch, ..Holder::me() };
        loop {
            let mut tasks = tokio::task::JoinSet::new();
            for conn in self.conns.values().filter(|c| c.host().agent.is_some()) {
                let (conn, factory, me) = (conn.clone(), factory.to_string(), me.clone());
                tasks.spawn_blocking(move || {
                    let taken = conn.agent().and_then(|a: Shared| a.lock(&factory, &conn.name, &me));
                    (conn.name.clone(), taken)
                });
            }
            let mut busy = Vec::new();
            let mut fenced = Vec::new();
            self.unlocked.clear();
            while let Some(done) = tasks.join_next().await {
                let Ok((host, taken)) = done else { continue };
                match taken {
                    Ok(()) => {}
                    Err(e) if e.code.as_deref() == Some(FENCED) => fenced.push(e.message),
                    Err(e) if e.code.as_deref() == Some(LOCKED) => busy.push(format!("host `{host}`: {}", e.message)),
                    Err(e) => self.unlocked.push((host, e.message)),
                }
            }
            if !fenced.is_empty() {
                for conn in self.conns.values() {
                    conn.release_agent();
                }
                fenced.sort();
                return Err(ReconcileError::new(FailureKind::Refused, fenced.join("\n")));
            }
            if busy.is_empty() {
                self.unlocked.sort();
                return Ok(());
            }
            busy.sort();
            for conn in self.conns.values() {
                conn.release_agent();
            }
            if tokio::time::Instant::now() + HOST_LOCK_RETRY > deadline {
                return Err(ReconcileError::new(
                    FailureKind::Locked,
                    format!("another apply is changing these hosts; nothing was applied:\n{}", busy.join("\n")),
                ));
            }
            tokio::time::sleep(HOST_LOCK_RETRY).await;
        }
    }

    /// The session's connection to each host, by name.
    pub fn conns(&self) -> &BTreeMap<String, Arc<HostConn>> {
        &self.conns
    }

    /// Reads every host at once, in the order they were given.
    pub async fn observe(&self) -> Vec<LiveHost> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            if let Some(conn) = self.conns.get(&h.name.value) {
                let conn = conn.clone();
                tasks.spawn_blocking(move || (i, conn.observe()));
            }
        }
        let mut out: Vec<Option<LiveHost>> = vec![None; self.hosts.len()];
        while let Some(done) = tasks.join_next().await {
            if let Ok((i, live)) = done {
                out[i] = Some(live);
            }
        }
        out.into_iter()
            .zip(&self.hosts)
            .map(|(live, h)| live.unwrap_or_else(|| LiveHost { name: h.name.value.clone(), ..LiveHost::default() }))
            .collect()
    }

    /// Carries out the plan's operations on the session's connections.
    pub async fn execute(
        &self,
        plan: &Plan,
        graph: Option<&Graph>,
        settings: Settings,
        emit: Emit,
        cancel: CancellationToken,
    ) -> Report {
        apply::apply(plan, graph, &self.conns, settings, emit, cancel).await
    }

    /// Observes again and plans again with `plan_options` (see [`Options::verify_plan`])
    /// until the plan is empty, at most `verify.attempts` times.
    pub async fn verify(
        &self,
        desired: &Desired,
        graph: &Graph,
        plan_options: &plan::Options,
        verify: VerifyOptions,
        cancel: &CancellationToken,
    ) -> Verification {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let live = self.observe().await;
            let after = plan::plan_with(desired, graph, &live, plan_options);
            let remaining = apply::unconverged(&after);
            let done = remaining.is_empty() && !after.has_errors();
            if done || attempts >= verify.attempts.max(1) || cancel.is_cancelled() {
                return Verification { plan: after, remaining, attempts };
            }
            tokio::select! {
                _ = tokio::time::sleep(verify.interval) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }
}

/// The kind of a plan error: a host that could not be read is unreachable; anything
/// else in the plan is a precondition that does not hold.
pub fn plan_error_kind(e: &plan::PlanError) -> FailureKind {
    if e.code == "fabrik::plan::unreadable-host" { FailureKind::Unreachable } else { FailureKind::Precondition }
}

/// Runs lock → observe → plan → execute → verify for `hosts` (the factory's declared
/// hosts; `desired` its desired state), unattended, and says how each host ended.
/// Cancelling `cancel` stops it between actions; the locks are let go on return, so a
/// later reconcile in the same process takes them again.
pub async fn reconcile(
    hosts: &[Host],
    desired: &Desired,
    options: &Options,
    cancel: CancellationToken,
    emit: Emit,
) -> Vec<HostOutcome> {
    let all_fail = |e: ReconcileError| {
        hosts
            .iter()
            .map(|h| HostOutcome {
                host: h.name.value.clone(),
                entries: Vec::new(),
                remaining: Vec::new(),
                failure: Some(e.clone()),
            })
            .collect()
    };
    let graph = match Graph::of(desired) {
        Ok(g) => g,
        Err(_) => return all_fail(ReconcileError::new(FailureKind::Precondition, "the desired state has a cycle")),
    };
    if cancel.is_cancelled() {
        return all_fail(ReconcileError::new(FailureKind::Cancelled, "cancelled before it started"));
    }
    let session = match Session::open(&desired.factory, hosts, options).await {
        Ok(s) => s,
        Err(e) => return all_fail(e),
    };
    let live = session.observe().await;
    let mut plan = plan::plan_with(desired, &graph, &live, &options.plan);
    if plan.has_errors() {
        return hosts
            .iter()
            .map(|h| {
                let name = &h.name.value;
                let errors: Vec<&plan::PlanError> = plan.errors.iter().filter(|e| &e.id.host == name).collect();
                let failure = match errors.first() {
                    Some(first) => ReconcileError::new(
                        plan_error_kind(first),
                        errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; "),
                    ),
                    None => ReconcileError::new(FailureKind::Precondition, "the plan has errors on other hosts"),
                };
                HostOutcome { host: name.clone(), entries: Vec::new(), remaining: Vec::new(), failure: Some(failure) }
            })
            .collect();
    }
    // Images are fetched and checked before any host is changed (kept until the end).
    let _images = match crate::image::prepare(&mut plan, &mut |_, _, _| {}) {
        Ok(images) => images,
        Err(e) => return all_fail(ReconcileError::new(FailureKind::Precondition, e.to_string())),
    };
    let settings = Settings {
        limits: options.limits,
        created_path: options.created_path.clone(),
        created: options.plan.created.clone(),
    };
    let report = session.execute(&plan, Some(&graph), settings, emit, cancel.clone()).await;
    let created = Created::load(&options.created_path).unwrap_or_else(|_| options.plan.created.clone());
    let verified = session.verify(desired, &graph, &options.verify_plan(created), options.verify, &cancel).await;
    drop(session);
    outcomes(hosts, &report, &verified)
}

/// Groups a report and its verification by host.
pub fn outcomes(hosts: &[Host], report: &Report, verified: &Verification) -> Vec<HostOutcome> {
    hosts
        .iter()
        .map(|h| {
            let name = &h.name.value;
            let entries: Vec<Entry> = report.entries.iter().filter(|e| &e.action.id.host == name).cloned().collect();
            let remaining: Vec<NotConverged> =
                verified.remaining.iter().filter(|r| plan_host_of(&r.id) == Some(name.as_str())).cloned().collect();
            let errors: Vec<&plan::PlanError> = verified.plan.errors.iter().filter(|e| &e.id.host == name).collect();
            let failed = entries.iter().find_map(|e| match &e.outcome {
                apply::Outcome::Failed { kind, error, .. } => Some((*kind, format!("{}: {error}", e.action.id))),
                apply::Outcome::Done { .. } | apply::Outcome::Skipped { .. } => None,
            });
            let failure = if let Some((kind, message)) = failed {
                Some(ReconcileError::new(kind, message))
            } else if report.interrupted && entries.iter().any(|e| !e.outcome.succeeded()) {
                Some(ReconcileError::new(FailureKind::Cancelled, "cancelled before every action ran"))
            } else if let Some(e) = errors.first() {
                Some(ReconcileError::new(plan_error_kind(e), e.message.clone()))
            } else if !remaining.is_empty() {
                Some(ReconcileError::new(
                    FailureKind::Failed,
                    format!("not converged: a new plan still has {} change(s)", remaining.len()),
                ))
            } else {
                None
            };
            HostOutcome { host: name.clone(), entries, remaining, failure }
        })
        .collect()
}

/// The host of a resource id as text (`kind:host/name`).
fn plan_host_of(id: &str) -> Option<&str> {
    id.split_once(':')?.1.split_once('/').map(|(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::ResourceId;

    #[test]
    fn verification_plans_the_same_selection_but_never_replaces() {
        let id = ResourceId::parse("vm:h1/a").unwrap();
        let options = Options {
            plan: plan::Options { replace: vec![id.clone()], targets: vec![id.clone()], ..plan::Options::default() },
            verify: VerifyOptions::default(),
            limits: Limits { parallelism: 1, per_host: 1 },
            twins: None,
            lock_dir: PathBuf::from("/nonexistent"),
            lock_wait: Duration::ZERO,
            created_path: PathBuf::from("/nonexistent/created.json"),
            epoch: None,
        };
        let verify = options.verify_plan(Created::default());
        assert!(verify.replace.is_empty());
        assert_eq!(verify.targets, [id]);
    }

    #[test]
    fn an_unreadable_host_is_unreachable_and_other_plan_errors_are_preconditions() {
        let error = |code: &str| plan::PlanError {
            code: code.into(),
            id: ResourceId::parse("host:h1/h1").unwrap(),
            message: String::new(),
            help: String::new(),
            at: None,
        };
        assert_eq!(plan_error_kind(&error("fabrik::plan::unreadable-host")), FailureKind::Unreachable);
        assert_eq!(plan_error_kind(&error("fabrik::plan::cannot-apply")), FailureKind::Precondition);
    }

    #[test]
    fn ids_name_their_host() {
        assert_eq!(plan_host_of("vm:gpu01/a"), Some("gpu01"));
        assert_eq!(plan_host_of("volume:gpu01/vms/a-root"), Some("gpu01"));
        assert_eq!(plan_host_of("nonsense"), None);
    }
}
