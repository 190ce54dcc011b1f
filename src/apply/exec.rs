//! The executor: runs a plan's actions on tokio, as many at once as the limits allow,
//! each as soon as what it waits for has finished.
//!
//! Driver calls block (libvirt, NVML, netlink), so each action's steps run on tokio's
//! blocking pool; the async side only schedules. Two semaphores bound the work: one for
//! the whole apply (`--parallelism`) and one per host (`--per-host`), taken host first,
//! so an action waiting for its busy host never holds a slot another host could use.
//!
//! An action is the unit of interruption: once the cancellation token is cancelled (the
//! CLI cancels it on Ctrl-C or SIGTERM) no new action starts, the running ones finish
//! their steps (a VM being restarted is started again, not left off), and everything
//! else is reported as skipped. The executor makes no runtime and never exits the
//! process: the caller owns both (the CLI exits on a second signal).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::failure::FailureKind;
use super::host::{HostConn, Records};
use super::schedule::Waits;
use crate::plan::ops::Step;
use crate::plan::{Action, Op};

/// One action, ready to run: its operations (the plan's) and its host.
pub struct Job {
    pub action: Action,
    pub steps: Vec<Step>,
    pub host: Arc<HostConn>,
}

/// How one action ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done { elapsed: Duration },
    Failed { kind: FailureKind, error: String, elapsed: Duration },
    Skipped { reason: String },
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Done { .. })
    }
}

/// What the executor reports as it goes, for progress output and the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Start {
        id: String,
        op: Op,
    },
    Done {
        id: String,
        op: Op,
        elapsed_ms: u64,
    },
    Failed {
        id: String,
        op: Op,
        /// Why, as a kind a program can act on (unreachable, refused, …).
        kind: FailureKind,
        error: String,
        elapsed_ms: u64,
    },
    Skipped {
        id: String,
        op: Op,
        reason: String,
    },
    /// A signal arrived (or the caller cancelled): no new action starts.
    Interrupted {
        signal: String,
    },
}

pub type Emit = Arc<dyn Fn(&Event) + Send + Sync>;

/// How much runs at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub parallelism: usize,
    pub per_host: usize,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs the jobs on the caller's runtime; returns each one's outcome, in the jobs'
/// order, and whether `cancel` stopped the run before everything ran.
pub async fn execute(
    jobs: Vec<Job>,
    waits: Vec<Waits>,
    limits: Limits,
    records: Arc<Records>,
    emit: Emit,
    cancel: CancellationToken,
) -> (Vec<Outcome>, bool) {
    run(jobs, waits, limits, records, emit, cancel).await
}

async fn run(
    jobs: Vec<Job>,
    waits: Vec<Waits>,
    limits: Limits,
    records: Arc<Records>,
    emit: Emit,
    cancel: CancellationToken,
) -> (Vec<Outcome>, bool) {
    let n = jobs.len();
    let stop = Arc::new(AtomicBool::new(cancel.is_cancelled()));
    let watcher = {
        let (stop, cancel) = (stop.clone(), cancel.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let global = Arc::new(Semaphore::new(limits.parallelism.max(1)));
    let mut per_host: std::collections::HashMap<String, Arc<Semaphore>> = std::collections::HashMap::new();
    for j in &jobs {
        per_host
            .entry(j.host.name.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(limits.per_host.max(1).min(j.host.parallelism()))));
    }
    let mut remaining: Vec<usize> = waits.iter().map(|w| w.needs.union(&w.after).count()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, w) in waits.iter().enumerate() {
        for &j in w.needs.union(&w.after) {
            dependents[j].push(i);
        }
    }
    // A twin's libvirt is given back once its host has nothing left to run: its state is
    // saved then, and an apply of 1,000 twins holds only those still at work.
    let mut left_on_host: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for j in &jobs {
        *left_on_host.entry(j.host.name.clone()).or_default() += 1;
    }
    let hosts_of: Vec<Arc<HostConn>> = jobs.iter().map(|j| j.host.clone()).collect();
    let mut settled = |i: usize| {
        let host = &hosts_of[i];
        if let Some(left) = left_on_host.get_mut(&host.name) {
            *left -= 1;
            if *left == 0 && host.is_twin() {
                host.close_idle_virt();
            }
        }
    };
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    let ids: Vec<String> = jobs.iter().map(|j| j.action.id.to_string()).collect();
    let mut jobs: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
    let mut running: JoinSet<(usize, Outcome)> = JoinSet::new();
    let mut finished = 0;
    while finished < n {
        while let Some(i) = ready.pop_front() {
            let Some(job) = jobs[i].take() else { continue };
            let blocked = waits[i].needs.iter().find(|&&d| !outcomes[d].as_ref().is_some_and(Outcome::succeeded));
            let skip = match blocked {
                Some(&d) => Some(format!(
                    "needs `{}`, which {}",
                    ids[d],
                    match outcomes[d] {
                        Some(Outcome::Failed { .. }) => "failed",
                        _ => "was skipped",
                    }
                )),
                None if stop.load(Ordering::SeqCst) => Some(NOT_STARTED.to_string()),
                None => None,
            };
            if let Some(reason) = skip {
                emit(&Event::Skipped { id: job.action.id.to_string(), op: job.action.op, reason: reason.clone() });
                // Settled at once: its dependents may become ready (to be skipped in turn).
                outcomes[i] = Some(Outcome::Skipped { reason });
                finished += 1;
                settled(i);
                release(i, &dependents, &mut remaining, &mut ready);
                continue;
            }
            let host_slots = per_host[&job.host.name].clone();
            running.spawn(one(i, job, host_slots, global.clone(), stop.clone(), records.clone(), emit.clone()));
        }
        let joined = tokio::select! {
            joined = running.join_next() => joined,
            // Wakes the loop so what is ready but not started is skipped at once.
            _ = cancel.cancelled(), if !stop.load(Ordering::SeqCst) => {
                stop.store(true, Ordering::SeqCst);
                continue;
            }
        };
        let Some(joined) = joined else { break };
        let (i, outcome) = match joined {
            Ok(r) => r,
            Err(e) => {
                // `one` catches its steps' panics, so only a cancelled task lands here; its
                // index is lost with it: stop starting new work, and what never ran is
                // reported as not run.
                emit(&Event::Interrupted { signal: format!("an apply task ended abnormally: {e}") });
                stop.store(true, Ordering::SeqCst);
                continue;
            }
        };
        outcomes[i] = Some(outcome);
        finished += 1;
        settled(i);
        release(i, &dependents, &mut remaining, &mut ready);
    }
    watcher.abort();
    let interrupted = stop.load(Ordering::SeqCst);
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Skipped { reason: "not run: the apply stopped".to_string() }))
        .collect();
    (outcomes, interrupted)
}

fn release(i: usize, dependents: &[Vec<usize>], remaining: &mut [usize], ready: &mut VecDeque<usize>) {
    for &d in &dependents[i] {
        remaining[d] -= 1;
        if remaining[d] == 0 {
            ready.push_back(d);
        }
    }
}

async fn one(
    i: usize,
    job: Job,
    host_slots: Arc<Semaphore>,
    global: Arc<Semaphore>,
    stop: Arc<AtomicBool>,
    records: Arc<Records>,
    emit: Emit,
) -> (usize, Outcome) {
    let id = job.action.id.to_string();
    let op = job.action.op;
    let (Ok(_host), Ok(_slot)) = (host_slots.acquire_owned().await, global.acquire_owned().await) else {
        return (i, Outcome::Skipped { reason: "the executor closed".into() });
    };
    if stop.load(Ordering::SeqCst) {
        let reason = NOT_STARTED.to_string();
        emit(&Event::Skipped { id, op, reason: reason.clone() });
        return (i, Outcome::Skipped { reason });
    }
    let steps = job.steps;
    if let Some(why) = job.host.down() {
        let kind = FailureKind::Unreachable;
        emit(&Event::Failed { id, op, kind, error: why.clone(), elapsed_ms: 0 });
        return (i, Outcome::Failed { kind, error: why, elapsed: Duration::ZERO });
    }
    emit(&Event::Start { id: id.clone(), op });
    let t0 = Instant::now();
    let host = job.host.clone();
    let crash_after = std::env::var(CRASH_AFTER_STEP_ENV).ok();
    let result = tokio::task::spawn_blocking(move || {
        for step in &steps {
            host.run(step, &records)?;
            if crash_after.as_deref() == Some(step.describe().as_str()) {
                crash();
            }
        }
        Ok::<(), crate::driver::DriverError>(())
    })
    .await;
    let elapsed = t0.elapsed();
    let outcome = match result {
        Ok(Ok(())) => Outcome::Done { elapsed },
        Ok(Err(e)) => Outcome::Failed { kind: FailureKind::of(&e), error: e.message, elapsed },
        Err(e) => Outcome::Failed { kind: FailureKind::Failed, error: format!("the step crashed: {e}"), elapsed },
    };
    match &outcome {
        Outcome::Done { elapsed } => emit(&Event::Done { id, op, elapsed_ms: ms(*elapsed) }),
        Outcome::Failed { kind, error, elapsed } => {
            emit(&Event::Failed { id, op, kind: *kind, error: error.clone(), elapsed_ms: ms(*elapsed) })
        }
        Outcome::Skipped { reason } => emit(&Event::Skipped { id, op, reason: reason.clone() }),
    }
    (i, outcome)
}

/// Test only: names a step (its [`Step::describe`] words, e.g. ``define domain `vm-0` ``)
/// after which the apply process kills itself with SIGKILL, as `kill -9` would at the
/// worst moment. The testbed tests use it to prove that every two-step operation
/// converges on the next run (docs/apply.md); nothing else may set it.
/// The reason of an action a signal kept from starting (progress counts these rather
/// than printing one line each).
pub const NOT_STARTED: &str = "interrupted before it started";

pub const CRASH_AFTER_STEP_ENV: &str = "FABRIK_TEST_CRASH_AFTER_STEP";

/// Dies at once, with no cleanup: what an operator's `kill -9` does.
fn crash() -> ! {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be caught; should the signal not arrive, abort is as abrupt.
    std::process::abort()
}
