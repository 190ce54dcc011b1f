//! Apply: carry out a plan's operations on the hosts, as fast as they allow, and say
//! exactly what happened.
//!
//! * the plan's [`crate::plan::ops`] are what each action does: apply renders, parses
//!   and decides nothing of its own;
//! * [`schedule`] says which actions wait for which (pure): what a creation needs, and on
//!   each host deletions first, in reverse dependency order;
//! * [`exec`] runs them on the caller's tokio runtime within the overall and per-host
//!   limits, skipping only the dependents of what failed, and stops cleanly when
//!   cancelled;
//! * [`host`] holds each host's connections for the whole reconcile and makes the calls;
//! * [`lock`] keeps two applies apart, [`journal`] records the last one as it goes,
//!   [`progress`] shows it, [`failure`] names why something failed.
//!
//! The sequence lock → observe → plan → apply → verify is [`crate::reconcile`].

pub mod exec;
pub mod failure;
pub mod host;
pub mod journal;
pub mod lent;
pub mod lock;
pub mod progress;
pub mod schedule;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use exec::{Emit, Event, Limits, Outcome};
pub use failure::FailureKind;

use crate::graph::Graph;
use crate::plan::{Action, Class, Created, Op, Plan};

/// Everything apply needs to know beyond the plan and the hosts' connections.
#[derive(Clone, Debug)]
pub struct Settings {
    pub limits: Limits,
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

/// Carries out the plan's actions, each by its operations, on the hosts' connections
/// (`conns`, by host name). `graph` orders creations after what they need; without it
/// (a saved plan's own order) only each host's deletions-first order applies.
pub async fn apply(
    plan: &Plan,
    graph: Option<&Graph>,
    conns: &BTreeMap<String, Arc<host::HostConn>>,
    settings: Settings,
    emit: Emit,
    cancel: CancellationToken,
) -> Report {
    let t0 = Instant::now();
    // A move is one line of the plan and two jobs here: the old copy's shutdown and
    // undefine on its host, which the new copy needs done before it is created.
    let mut jobs = Vec::with_capacity(plan.actions.len());
    let mut known = Vec::with_capacity(plan.actions.len());
    let mut unknown = Vec::new();
    for (action, steps) in with_moves(&plan.actions) {
        // Actions on hosts the factory no longer declares cannot run; they fail, named.
        let Some(conn) = conns.get(action.id.host.as_str()) else {
            unknown.push(action);
            continue;
        };
        jobs.push(exec::Job { id: action.id.clone(), op: action.op, steps, host: conn.clone() });
        known.push(action);
    }
    let mut waits = schedule::schedule(&known, graph);
    for (i, a) in known.iter().enumerate() {
        if let Some(old) = &a.moved_from
            && let Some(j) = known.iter().position(|b| &b.id == old && b.op == Op::Delete)
        {
            waits[i].needs.insert(j);
        }
    }
    let records = Arc::new(host::Records::new(settings.created_path.clone(), settings.created.clone()));
    let (outcomes, interrupted) = exec::execute(jobs, waits, settings.limits, records, emit.clone(), cancel).await;
    let mut entries: Vec<Entry> =
        known.into_iter().zip(outcomes).map(|(action, outcome)| Entry { action, outcome }).collect();
    for action in unknown {
        let error = format!("host `{}` is not declared in the factory", action.id.host);
        let kind = FailureKind::Precondition;
        emit(&Event::Failed { id: action.id.to_string(), op: action.op, kind, error: error.clone(), elapsed_ms: 0 });
        entries.push(Entry { action, outcome: Outcome::Failed { kind, error, elapsed: Duration::ZERO } });
    }
    Report { entries, interrupted, signal: None, elapsed: t0.elapsed() }
}

/// The plan's actions, with the old copy of every moved VM as a deletion of its own,
/// just before its move; each with its operations beside it (the action itself without
/// them: the report needs no second copy of every definition).
fn with_moves(actions: &[Action]) -> Vec<(Action, Vec<crate::plan::ops::Step>)> {
    let mut out = Vec::with_capacity(actions.len());
    for a in actions {
        if let Some(old) = &a.moved_from {
            let away = Action::new(old.clone(), Op::Delete, Class::Replace, format!("moves to host `{}`", a.id.host));
            out.push((away, a.moved_from_ops.clone()));
        }
        let without_ops = Action {
            id: a.id.clone(),
            op: a.op,
            class: a.class,
            symbol: a.symbol.clone(),
            reason: a.reason.clone(),
            changes: a.changes.clone(),
            diff: a.diff.clone(),
            moved_from: a.moved_from.clone(),
            ops: Vec::new(),
            moved_from_ops: Vec::new(),
        };
        out.push((without_ops, a.ops.clone()));
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
