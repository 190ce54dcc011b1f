//! One reconcile pass of the watcher, on the reconcile core's session: lock → observe →
//! plan → **gate** → execute what may run → verify. Unlike `reconcile::reconcile`, a host
//! that cannot be read or fails never stops the others: its actions and errors are left
//! out and it is reported on its own, for its own backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::apply::{Emit, Limits, Outcome, Settings};
use crate::desired::Desired;
use crate::graph::Graph;
use crate::plan::{self, Class, Plan};
use crate::reconcile::{self, FailureKind, ReconcileError, Session, VerifyOptions};
use crate::spec::model::Host;

use super::gate::{self, Candidate, Gating, Ledger, Verdict, Wait};
use super::state::{Pending, Waiting};

/// A factory that validated: what a pass reconciles the hosts to.
pub struct Factory {
    /// The commit (or `dir` in directory mode) it was read from.
    pub commit: String,
    pub hosts: Vec<Host>,
    pub desired: Desired,
    pub graph: Graph,
    pub plan: plan::Options,
    pub created_path: PathBuf,
    /// The validated files: where each plan error's resource is declared.
    pub spec: crate::spec::model::Spec,
    pub sources: crate::spec::source::Sources,
}

/// Where and how passes run.
#[derive(Clone, Debug)]
pub struct Env {
    pub twins: Option<PathBuf>,
    pub lock_dir: PathBuf,
    pub lock_wait: Duration,
    pub limits: Limits,
    pub verify: VerifyOptions,
    /// Issue 18 hook: the leader epoch passes run under (set by the loop before each pass).
    pub epoch: Option<u64>,
}

/// How one host ended a pass.
#[derive(Clone, Debug, PartialEq)]
pub struct HostResult {
    pub host: String,
    /// Why the host as a whole did not converge (unreachable, locked, timed out, a plan
    /// error): the host backs off.
    pub failure: Option<ReconcileError>,
    /// Resources whose action failed or did not verify, each with why: each backs off
    /// on its own, the rest of the host goes on.
    pub resource_failures: Vec<(String, ReconcileError)>,
    /// Changes the plan had for it.
    pub planned: usize,
    /// Changes carried out.
    pub done: usize,
    /// Changes waiting for approval, a window or a budget.
    pub waiting: usize,
    /// Resources whose action failed.
    pub failed: Vec<String>,
    /// The boot id the pass read (`None`: not read, or the host gives none).
    pub boot_id: Option<String>,
}

/// One action the pass ran, and why it was allowed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Ran {
    pub id: String,
    pub class: Class,
    /// `auto`, `window:<name>` or `approved`.
    pub by: String,
    pub ok: bool,
}

#[derive(Clone, Debug, Default)]
#[must_use]
pub struct PassOutcome {
    pub hosts: Vec<HostResult>,
    pub ran: Vec<Ran>,
    /// What waits for `fabrik approve`.
    pub pending: Option<Pending>,
    /// With `refuse_plan_errors`: the plan's errors about the factory (not a host that
    /// cannot be read). Non-empty means nothing was carried out on any host.
    pub refused: Vec<plan::PlanError>,
}

/// The tenant of each resource a tenant owns (VMs, their volumes' VMs, networks).
fn tenants(desired: &Desired) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for h in &desired.hosts {
        for vm in &h.vms {
            out.insert(vm.id.to_string(), vm.tenant.clone());
        }
        for n in &h.networks {
            if let Some(t) = &n.tenant {
                out.insert(n.id.to_string(), t.clone());
            }
        }
    }
    out
}

/// Whether a failed action says something about its whole host rather than itself.
fn host_wide(kind: FailureKind) -> bool {
    match kind {
        FailureKind::Unreachable | FailureKind::Locked | FailureKind::Timeout | FailureKind::Cancelled => true,
        FailureKind::Refused | FailureKind::Precondition | FailureKind::Failed => false,
    }
}

/// Runs one pass on the hosts in `ready` (the others are backing off and are left
/// alone). `approved(id, commit, actions)` says whether a pending plan was approved
/// (itself, or an earlier plan of the commit naming all its actions); `ledger` is charged
/// for every disruptive action a window lets run. `observed(host, boot_id)` is called
/// for each host read, after the reading and before any action: the watcher reports a
/// reboot there, before the rebuild it causes. The watcher's one entry to the
/// reconcile core: retarget here when the core's API changes.
///
/// `backing_off`: resources whose last try failed and whose backoff has not run out;
/// their actions (and what needs them) wait.
///
/// `refuse_plan_errors` (a commit not yet in force): a plan error on any host read,
/// other than the host being unreadable, stops the pass before any action and is
/// returned in [`PassOutcome::refused`] — the commit is refused as a whole, like one that
/// does not validate, rather than applied on the hosts it happens to plan cleanly for.
#[allow(clippy::too_many_arguments)]
pub async fn reconcile_once(
    f: &Factory,
    ready: &BTreeSet<String>,
    gating: &Gating,
    now_unix: i64,
    approved: &dyn Fn(&str, &str, &[&str]) -> bool,
    ledger: &mut Ledger,
    env: &Env,
    cancel: CancellationToken,
    emit: Emit,
    observed: &mut (dyn FnMut(&str, Option<&str>) + Send),
    backing_off: &BTreeSet<String>,
    refuse_plan_errors: bool,
) -> PassOutcome {
    let hosts: Vec<Host> = f.hosts.iter().filter(|h| ready.contains(&h.name.value)).cloned().collect();
    let mut out = PassOutcome::default();
    if hosts.is_empty() {
        return out;
    }
    let options = reconcile::Options {
        plan: f.plan.clone(),
        verify: env.verify,
        limits: env.limits,
        twins: env.twins.clone(),
        lock_dir: env.lock_dir.clone(),
        lock_wait: env.lock_wait,
        created_path: f.created_path.clone(),
        // Issue 18 hook: the leader's fencing token.
        epoch: env.epoch,
    };
    let all_fail = |e: ReconcileError| {
        hosts
            .iter()
            .map(|h| HostResult {
                host: h.name.value.clone(),
                failure: Some(e.clone()),
                resource_failures: Vec::new(),
                planned: 0,
                done: 0,
                waiting: 0,
                failed: Vec::new(),
                boot_id: None,
            })
            .collect()
    };
    let session = match Session::open(&f.desired.factory, &hosts, &options).await {
        Ok(s) => s,
        Err(e) => {
            out.hosts = all_fail(e);
            if let Some(twins) = &env.twins {
                crate::sim::release_state(twins);
            }
            return out;
        }
    };
    let live = session.observe().await;
    let boot_ids: BTreeMap<String, Option<String>> =
        live.iter().map(|l| (l.name.clone(), l.info.as_ref().and_then(|i| i.boot_id.clone()))).collect();
    for (host, boot_id) in &boot_ids {
        if ready.contains(host) {
            observed(host, boot_id.as_deref());
        }
    }
    let mut full = plan::plan_with(&f.desired, &f.graph, &live, &f.plan);
    plan::locate::locate_errors(&mut full, &f.spec, &f.sources);
    if refuse_plan_errors {
        let about_factory: Vec<plan::PlanError> = full
            .errors
            .iter()
            .filter(|e| ready.contains(&e.id.host) && reconcile::plan_error_kind(e) != FailureKind::Unreachable)
            .cloned()
            .collect();
        if !about_factory.is_empty() {
            drop(session);
            if let Some(twins) = &env.twins {
                crate::sim::release_state(twins);
            }
            out.refused = about_factory;
            return out;
        }
    }
    // Hosts whose plan has errors (unreadable, a precondition): left out of this pass.
    let mut broken: BTreeMap<String, ReconcileError> = BTreeMap::new();
    for e in &full.errors {
        if !ready.contains(&e.id.host) {
            continue;
        }
        let entry = broken
            .entry(e.id.host.clone())
            .or_insert_with(|| ReconcileError::new(reconcile::plan_error_kind(e), String::new()));
        if !entry.message.is_empty() {
            entry.message.push_str("; ");
        }
        entry.message.push_str(&e.message);
    }
    full.actions.retain(|a| ready.contains(&a.id.host) && !broken.contains_key(&a.id.host));
    full.errors.clear();
    // Gate what is left.
    let tenant_of = tenants(&f.desired);
    let cands: Vec<Candidate> = full
        .actions
        .iter()
        .map(|a| Candidate {
            id: a.id.to_string(),
            host: a.id.host.clone(),
            tenant: tenant_of.get(&a.id.to_string()).cloned(),
            class: a.class,
        })
        .collect();
    // The pending plan's id depends on what waits, before any approval is known.
    let probe = gate::gate(&cands, gating, now_unix, false, &mut ledger.clone());
    let waiting: Vec<(&str, Class)> = cands
        .iter()
        .zip(&probe)
        .filter(|(_, v)| matches!(v, Verdict::Wait(Wait::NeedsApproval { .. } | Wait::BudgetSpent { .. })))
        .map(|(c, _)| (c.id.as_str(), c.class))
        .collect();
    let pending_id = (!waiting.is_empty()).then(|| gate::pending_id(&f.commit, &waiting));
    let waiting_ids: Vec<&str> = waiting.iter().map(|(id, _)| *id).collect();
    let is_approved = pending_id.as_deref().is_some_and(|id| approved(id, &f.commit, &waiting_ids));
    let mut verdicts = gate::gate(&cands, gating, now_unix, is_approved, ledger);
    for (c, v) in cands.iter().zip(verdicts.iter_mut()) {
        if v.runs() && backing_off.contains(&c.id) {
            *v = Verdict::Wait(Wait::Backoff);
        }
    }
    let ids: Vec<String> = cands.iter().map(|c| c.id.clone()).collect();
    let by_text: BTreeMap<String, &crate::desired::ResourceId> = f.graph.nodes().map(|n| (n.to_string(), n)).collect();
    gate::hold_dependents(&mut verdicts, &ids, |id| {
        by_text.get(id).map(|n| f.graph.dependents(n).iter().map(|d| d.to_string()).collect()).unwrap_or_default()
    });
    let mut runs: Plan = full.clone();
    runs.actions = full.actions.iter().zip(&verdicts).filter(|(_, v)| v.runs()).map(|(a, _)| a.clone()).collect();
    let held: BTreeSet<String> =
        cands.iter().zip(&verdicts).filter(|(_, v)| !v.runs()).map(|(c, _)| c.id.clone()).collect();
    // An approved plan still waits where a budget holds it (or what needs it).
    let still_waits =
        verdicts.iter().any(|v| matches!(v, Verdict::Wait(Wait::BudgetSpent { .. } | Wait::After { .. })));
    if let Some(id) = &pending_id
        && (!is_approved || still_waits)
    {
        out.pending = Some(Pending {
            id: id.clone(),
            approved: is_approved,
            commit: f.commit.clone(),
            since: super::state::now_rfc3339(),
            actions: full
                .actions
                .iter()
                .zip(&verdicts)
                .filter_map(|(a, v)| match v {
                    Verdict::Wait(Wait::Backoff) => None,
                    Verdict::Wait(w) => Some(Waiting {
                        id: a.id.to_string(),
                        class: a.class,
                        reason: a.reason.clone(),
                        why: match w {
                            Wait::NeedsApproval { .. } => "needs-approval".into(),
                            Wait::BudgetSpent { per, key, max, period_s } => format!(
                                "budget-spent: {max} per {} `{key}` per {} min",
                                match per {
                                    gate::Per::Host => "host",
                                    gate::Per::Tenant => "tenant",
                                },
                                period_s / 60
                            ),
                            Wait::Excluded => "excluded".into(),
                            Wait::After { id } => format!("after {id}"),
                            Wait::Backoff => "backoff".into(),
                        },
                    }),
                    _ => None,
                })
                .collect(),
        });
    }
    let by: BTreeMap<String, String> = full
        .actions
        .iter()
        .zip(&verdicts)
        .filter_map(|(a, v)| {
            let word = match v {
                Verdict::Auto => "auto".to_string(),
                Verdict::InWindow { window } => format!("window:{window}"),
                Verdict::Approved => "approved".to_string(),
                Verdict::Wait(_) => return None,
            };
            Some((a.id.to_string(), word))
        })
        .collect();
    let report = if runs.actions.is_empty() {
        None
    } else {
        let settings =
            Settings { limits: env.limits, created_path: f.created_path.clone(), created: f.plan.created.clone() };
        Some(session.execute(&runs, Some(&f.graph), settings, emit, cancel.clone()).await)
    };
    // Verify only when something ran: otherwise the plan just made is the verification.
    let remaining: Vec<crate::apply::NotConverged> = if report.is_some() {
        let created = plan::Created::load(&f.created_path).unwrap_or_else(|_| f.plan.created.clone());
        let v = session.verify(&f.desired, &f.graph, &options.verify_plan(created), env.verify, &cancel).await;
        for e in &v.plan.errors {
            if ready.contains(&e.id.host) {
                broken
                    .entry(e.id.host.clone())
                    .or_insert_with(|| ReconcileError::new(reconcile::plan_error_kind(e), e.message.clone()));
            }
        }
        v.remaining
    } else {
        Vec::new()
    };
    drop(session);
    // Between passes the twins belong to whoever wants them (a person's `plan --sim`).
    if let Some(twins) = &env.twins {
        crate::sim::release_state(twins);
    }
    for h in &hosts {
        let name = &h.name.value;
        let on_host = |id: &str| id.split_once(':').and_then(|(_, r)| r.split_once('/')).map(|(h, _)| h) == Some(name);
        let entries: Vec<&crate::apply::Entry> =
            report.iter().flat_map(|r| r.entries.iter()).filter(|e| &e.action.id.host == name).collect();
        let failed: Vec<String> =
            entries.iter().filter(|e| !e.outcome.succeeded()).map(|e| e.action.id.to_string()).collect();
        let still: Vec<&crate::apply::NotConverged> =
            remaining.iter().filter(|r| on_host(&r.id) && !held.contains(&r.id)).collect();
        // A failure of the host itself (it cannot be reached, another apply holds its
        // lock, it stopped answering) backs the host off; any other failed action backs
        // off its resource only. A skipped action (what it needs failed) is no failure
        // of its own: it is tried again with what it needs.
        let mut resource_failures: Vec<(String, ReconcileError)> = Vec::new();
        let mut host_failure = broken.get(name).cloned();
        for e in &entries {
            if let Outcome::Failed { kind, error, .. } = &e.outcome {
                let err = ReconcileError::new(*kind, error.clone());
                if host_wide(*kind) {
                    host_failure.get_or_insert(err);
                } else {
                    resource_failures.push((e.action.id.to_string(), err));
                }
            }
        }
        for r in &still {
            if !resource_failures.iter().any(|(id, _)| id == &r.id) {
                let err = ReconcileError::new(FailureKind::Failed, format!("not converged: {}", r.fields.join("; ")));
                resource_failures.push((r.id.clone(), err));
            }
        }
        let failure = host_failure;
        out.hosts.push(HostResult {
            host: name.clone(),
            failure,
            resource_failures,
            planned: full.actions.iter().filter(|a| &a.id.host == name).count(),
            done: entries.iter().filter(|e| e.outcome.succeeded()).count(),
            waiting: cands.iter().filter(|c| &c.host == name && held.contains(&c.id)).count(),
            failed,
            boot_id: boot_ids.get(name).cloned().flatten(),
        });
    }
    out.ran = report
        .iter()
        .flat_map(|r| r.entries.iter())
        .map(|e| Ran {
            id: e.action.id.to_string(),
            class: e.action.class,
            by: by.get(&e.action.id.to_string()).cloned().unwrap_or_else(|| "auto".into()),
            ok: e.outcome.succeeded(),
        })
        .collect();
    out
}
