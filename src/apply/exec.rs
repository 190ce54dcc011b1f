//! The executor: runs a plan's actions on tokio, as many at once as the limits allow,
//! each as soon as what it waits for has finished.
//!
//! Driver calls block (libvirt, NVML, netlink), so each action's steps run on tokio's
//! blocking pool; the async side only schedules. Two limits bound the work: the whole
//! apply's (`--parallelism`) and each host's (`--per-host`); an action starts only when
//! both have room, so one waiting for its busy host never holds a slot another host
//! could use, and hosts are taken up in turn (`Hosts`, below).
//!
//! An action is the unit of interruption: once the cancellation token is cancelled (the
//! CLI cancels it on Ctrl-C or SIGTERM) no new action starts, the running ones finish
//! their steps (a VM being restarted is started again, not left off), and everything
//! else is reported as skipped. The executor makes no runtime and never exits the
//! process: the caller owns both (the CLI exits on a second signal).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::failure::FailureKind;
use super::host::{HostConn, Records};
use super::schedule::Waits;
use crate::desired::ResourceId;
use crate::plan::Op;
use crate::plan::ops::Step;

/// One action, ready to run: its operations (the plan's) and its host.
pub struct Job {
    pub id: ResourceId,
    pub op: Op,
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
    let mut remaining: Vec<usize> = waits.iter().map(|w| w.needs.union(&w.after).count()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, w) in waits.iter().enumerate() {
        for &j in w.needs.union(&w.after) {
            dependents[j].push(i);
        }
    }
    let mut hosts = Hosts::new(&jobs, limits);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    let mut jobs: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
    let mut running: JoinSet<(usize, Outcome)> = JoinSet::new();
    let mut finished = 0;
    while finished < n {
        if stop.load(Ordering::SeqCst) {
            // Nothing queued starts any more: it is settled as not started, below.
            ready.extend(hosts.drain_queued());
        }
        while let Some(i) = ready.pop_front() {
            let Some(job) = jobs[i].as_ref() else { continue };
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
            let Some(reason) = skip else {
                hosts.queue(i);
                continue;
            };
            emit(&Event::Skipped { id: job.id.to_string(), op: job.op, reason: reason.clone() });
            // Settled at once: its dependents may become ready (to be skipped in turn).
            jobs[i] = None;
            outcomes[i] = Some(Outcome::Skipped { reason });
            finished += 1;
            hosts.settled(i);
            release(i, &dependents, &mut remaining, &mut ready);
        }
        while let Some(i) = hosts.next() {
            let Some(job) = jobs[i].take() else { continue };
            running.spawn(one(i, job, stop.clone(), records.clone(), emit.clone()));
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
        hosts.ended(i);
        hosts.settled(i);
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

/// Which queued action starts next, within the limits: each host's own (`--per-host`,
/// one on a twin) and the whole apply's (`--parallelism`).
///
/// Hosts are taken up in turn rather than all at once: an action starts on a host already
/// under way when one has room, and a new host is taken up only while fewer hosts than
/// the parallelism have work running or ready. So an apply of 1,000 twins has about
/// `--parallelism` of them open at a time, each finished (saved once, freed) before the
/// next is opened, instead of every twin open from the first action to the last; a few
/// real hosts (no more than the parallelism) all start at once, as before. A host whose
/// next action waits on another host's does not count, so such a wait never stalls the
/// apply.
struct Hosts {
    /// Each job's host, by index into `queues`.
    host_of: Vec<usize>,
    queues: Vec<HostQueue>,
    conns: Vec<Arc<HostConn>>,
    /// Hosts taken up and not yet done.
    active: BTreeSet<usize>,
    /// Hosts not taken up that have an action ready, in the order they first appear.
    waiting: BTreeSet<usize>,
    running: usize,
    parallelism: usize,
}

struct HostQueue {
    ready: VecDeque<usize>,
    running: usize,
    limit: usize,
    /// Actions not yet settled.
    left: usize,
    active: bool,
}

impl Hosts {
    fn new(jobs: &[Job], limits: Limits) -> Hosts {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut queues: Vec<HostQueue> = Vec::new();
        let mut conns = Vec::new();
        let host_of = jobs
            .iter()
            .map(|j| {
                let h = *index.entry(j.host.name.as_str()).or_insert_with(|| {
                    queues.push(HostQueue {
                        ready: VecDeque::new(),
                        running: 0,
                        limit: limits.per_host.max(1).min(j.host.parallelism()),
                        left: 0,
                        active: false,
                    });
                    conns.push(j.host.clone());
                    queues.len() - 1
                });
                queues[h].left += 1;
                h
            })
            .collect();
        Hosts {
            host_of,
            queues,
            conns,
            active: BTreeSet::new(),
            waiting: BTreeSet::new(),
            running: 0,
            parallelism: limits.parallelism.max(1),
        }
    }

    /// Job `i` may start once the limits allow.
    fn queue(&mut self, i: usize) {
        let h = self.host_of[i];
        let q = &mut self.queues[h];
        q.ready.push_back(i);
        if !q.active {
            self.waiting.insert(h);
        }
    }

    /// The next job to start now, if the limits allow one; counted as running.
    fn next(&mut self) -> Option<usize> {
        if self.running >= self.parallelism {
            return None;
        }
        let queues = &self.queues;
        let room = |h: &usize| !queues[*h].ready.is_empty() && queues[*h].running < queues[*h].limit;
        let under_way = self.active.iter().filter(|&&h| room(&h)).min_by_key(|&&h| queues[h].running).copied();
        let busy = self.active.iter().filter(|&&h| queues[h].running > 0 || !queues[h].ready.is_empty()).count();
        let h = match under_way {
            // A host under way with nothing running goes first.
            Some(h) if queues[h].running == 0 => h,
            // Then another host, while fewer than the parallelism are busy…
            _ if busy < self.parallelism && !self.waiting.is_empty() => {
                let h = self.waiting.pop_first()?;
                self.queues[h].active = true;
                self.active.insert(h);
                h
            }
            // …else a second action on a host under way, when it allows one.
            Some(h) => h,
            None => return None,
        };
        let q = &mut self.queues[h];
        let i = q.ready.pop_front()?;
        q.running += 1;
        self.running += 1;
        Some(i)
    }

    /// Job `i`, started by [`Hosts::next`], has ended.
    fn ended(&mut self, i: usize) {
        self.queues[self.host_of[i]].running -= 1;
        self.running -= 1;
    }

    /// Job `i` is settled (ended, or skipped). A twin is given back once its host has
    /// nothing left to run: its libvirt's state is saved then, and its libvirt, GPUs and
    /// links (saved at each change) are freed.
    fn settled(&mut self, i: usize) {
        let h = self.host_of[i];
        let q = &mut self.queues[h];
        q.left -= 1;
        if q.left == 0 {
            self.active.remove(&h);
            if self.conns[h].is_twin() {
                self.conns[h].close_idle_virt();
                self.conns[h].release_agent();
            }
        }
    }

    /// Every queued job, taken off its queue (the apply stops: none of them starts).
    fn drain_queued(&mut self) -> Vec<usize> {
        self.waiting.clear();
        self.queues.iter_mut().flat_map(|q| q.ready.drain(..)).collect()
    }
}

fn release(i: usize, dependents: &[Vec<usize>], remaining: &mut [usize], ready: &mut VecDeque<usize>) {
    for &d in &dependents[i] {
        remaining[d] -= 1;
        if remaining[d] == 0 {
            ready.push_back(d);
        }
    }
}

async fn one(i: usize, job: Job, stop: Arc<AtomicBool>, records: Arc<Records>, emit: Emit) -> (usize, Outcome) {
    let id = job.id.to_string();
    let op = job.op;
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
