//! Apply: carry out a plan on the hosts, as fast as they allow, and say exactly what
//! happened.
//!
//! * [`steps`] turns each action of the plan into driver calls (pure);
//! * [`schedule`] says which actions wait for which (pure): what a creation needs, and on
//!   each host deletions first, in reverse dependency order;
//! * [`exec`] runs them on tokio within the overall and per-host limits, skipping only
//!   the dependents of what failed, and stops cleanly on a signal;
//! * [`host`] holds each host's connections and makes the calls;
//! * [`lock`] keeps two applies apart, [`journal`] records the last one as it goes,
//!   [`progress`] shows it.
//!
//! Verification is a new observation and a new plan, made by the caller with the same
//! options: an apply is done when that plan is empty.

pub mod exec;
pub mod host;
pub mod journal;
pub mod lock;
pub mod progress;
pub mod schedule;
pub mod seed;
pub mod steps;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use exec::{Emit, Event, Limits, Outcome};

use crate::desired::Desired;
use crate::graph::Graph;
use crate::live::LiveHost;
use crate::plan::{Action, Class, Created, Op, Plan};
use crate::spec::model::Host;

/// Everything apply needs to know beyond the plan.
pub struct Settings {
    pub limits: Limits,
    /// How long a VM gets to shut down before it is forced off.
    pub shutdown_timeout: Duration,
    /// Apply to the simulated twins kept in this folder.
    pub twins: Option<PathBuf>,
    /// `created.json`, and what it says now.
    pub created_path: PathBuf,
    pub created: Created,
}

/// One action and how it ended.
#[derive(Clone, Debug)]
pub struct Entry {
    pub action: Action,
    pub outcome: Outcome,
}

/// What an apply did.
#[derive(Clone, Debug)]
#[must_use]
pub struct Report {
    pub entries: Vec<Entry>,
    /// A signal stopped it before everything ran.
    pub interrupted: bool,
    /// The number of the signal that stopped it (SIGINT 2, SIGTERM 15), when one did.
    pub signal: Option<i32>,
    pub elapsed: Duration,
}

/// The counts of a report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Report {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for e in &self.entries {
            match e.outcome {
                Outcome::Done { .. } => c.done += 1,
                Outcome::Failed { .. } => c.failed += 1,
                Outcome::Skipped { .. } => c.skipped += 1,
            }
        }
        c
    }

    /// Every action ran and succeeded.
    pub fn complete(&self) -> bool {
        !self.interrupted && self.entries.iter().all(|e| e.outcome.succeeded())
    }
}

/// Carries out the plan's actions. `live` is what the plan was made from (or, for a
/// saved plan, what was observed to check it is not stale); `hosts` are the factory's
/// declared hosts, to connect to.
pub fn apply(
    plan: &Plan,
    desired: &Desired,
    graph: &Graph,
    live: &[LiveHost],
    hosts: &[Host],
    settings: Settings,
    emit: Emit,
) -> Report {
    let t0 = Instant::now();
    // The same MACs the plan kept for running VMs (a pure function of the same state).
    let desired = &crate::guest::volume::rehash(&crate::desired::addr::keep_live(
        &crate::desired::mac::keep_live(desired, live),
        live,
    ));
    let conns: BTreeMap<&str, Arc<host::HostConn>> = hosts
        .iter()
        .map(|h| {
            (h.name.value.as_str(), Arc::new(host::HostConn::new(h, settings.twins.clone(), settings.limits.per_host)))
        })
        .collect();
    // A move is one line of the plan and two jobs here: the old copy's shutdown and
    // undefine on its host, which the new copy needs done before it is created.
    let actions = with_moves(&plan.actions);
    let mut jobs = Vec::with_capacity(actions.len());
    let mut unknown = Vec::new();
    for (i, action) in actions.iter().enumerate() {
        let conn = conns.get(action.id.host.as_str());
        let dhost = desired.hosts.iter().find(|h| h.name == action.id.host);
        let (Some(conn), Some(dhost)) = (conn, dhost) else {
            unknown.push(i);
            continue;
        };
        let lhost = live.iter().find(|l| l.name == action.id.host);
        jobs.push(exec::Job {
            steps: steps::steps(&desired.factory, dhost, lhost, action, settings.shutdown_timeout),
            action: action.clone(),
            host: conn.clone(),
        });
    }
    // Actions on hosts the factory no longer declares cannot run; they fail, named.
    let known: Vec<Action> = jobs.iter().map(|j| j.action.clone()).collect();
    let mut waits = schedule::schedule(&known, Some(graph));
    for (i, a) in known.iter().enumerate() {
        if let Some(old) = &a.moved_from
            && let Some(j) = known.iter().position(|b| &b.id == old && b.op == Op::Delete)
        {
            waits[i].needs.insert(j);
        }
    }
    let records =
        Arc::new(host::Records { path: settings.created_path.clone(), created: Mutex::new(settings.created.clone()) });
    let (outcomes, interrupted, signal) = exec::execute(jobs, waits, settings.limits, records, emit.clone());
    let mut entries: Vec<Entry> =
        known.into_iter().zip(outcomes).map(|(action, outcome)| Entry { action, outcome }).collect();
    for i in unknown {
        let action = actions[i].clone();
        let error = format!("host `{}` is not declared in the factory", action.id.host);
        emit(&Event::Failed { id: action.id.to_string(), op: action.op, error: error.clone(), elapsed_ms: 0 });
        entries.push(Entry { action, outcome: Outcome::Failed { error, elapsed: Duration::ZERO } });
    }
    Report { entries, interrupted, signal, elapsed: t0.elapsed() }
}

/// The plan's actions, with the old copy of every moved VM as a deletion of its own,
/// just before its move.
fn with_moves(actions: &[Action]) -> Vec<Action> {
    let mut out = Vec::with_capacity(actions.len());
    for a in actions {
        if let Some(old) = &a.moved_from {
            out.push(Action::new(old.clone(), Op::Delete, Class::Replace, format!("moves to host `{}`", a.id.host)));
        }
        out.push(a.clone());
    }
    out
}

/// A resource the plan made after apply still changes, with the fields that differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotConverged {
    pub id: String,
    /// `field: from → to`, one per differing field (or the action's reason).
    pub fields: Vec<String>,
}

/// What the plan made after apply still has: empty when the factory converged.
pub fn unconverged(after: &Plan) -> Vec<NotConverged> {
    after
        .actions
        .iter()
        .map(|a| NotConverged {
            id: a.id.to_string(),
            fields: if a.changes.is_empty() {
                vec![a.reason.clone()]
            } else {
                a.changes
                    .iter()
                    .map(|c| {
                        format!(
                            "{}: {} → {}",
                            c.field,
                            c.from.as_deref().unwrap_or("absent"),
                            c.to.as_deref().unwrap_or("absent")
                        )
                    })
                    .collect()
            },
        })
        .collect()
}
