//! Class gating, the GPU safety rule: which of a plan's actions the watcher carries out
//! on its own, and which wait for `fabrik approve` or a maintenance window, within the
//! disruption budgets. Pure: actions, policy, the time and the ledger in; verdicts out.

use std::collections::{BTreeMap, BTreeSet};

use crate::plan::Class;

use super::window::Window;

/// Which changes run unattended, and when the others may.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Gating {
    /// Classes carried out without approval (default: `live`, `next-restart`).
    pub auto: BTreeSet<Class>,
    pub windows: Vec<Window>,
    pub budgets: Vec<Budget>,
    /// Resources the watcher never changes (per-resource opt-out).
    pub exclude: BTreeSet<String>,
}

impl Default for Gating {
    fn default() -> Self {
        Gating {
            auto: [Class::Live, Class::NextRestart].into_iter().collect(),
            windows: Vec::new(),
            budgets: Vec::new(),
            exclude: BTreeSet::new(),
        }
    }
}

/// What a budget counts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    Host,
    Tenant,
}

/// At most `max` disruptive actions per host (or tenant) within any `period_s`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Budget {
    pub per: Per,
    pub max: u32,
    pub period_s: u64,
}

/// An action as gating sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub host: String,
    /// The tenant that owns it, for a tenant's resource.
    pub tenant: Option<String>,
    pub class: Class,
}

/// Why an action waits.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "why", rename_all = "kebab-case")]
pub enum Wait {
    /// Its class needs an approval or an open window.
    NeedsApproval { class: Class },
    /// A window is open, but the budget of this host or tenant is spent.
    BudgetSpent { per: Per, key: String, max: u32, period_s: u64 },
    /// The policy excludes it.
    Excluded,
    /// It needs a change that waits (a MIG instance on a GPU whose MIG mode waits).
    After { id: String },
    /// Its last try failed and it backs off (not part of a pending plan).
    Backoff,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Runs unattended (its class is automatic).
    Auto,
    /// Runs now because a window is open (it counts against the budgets).
    InWindow {
        window: String,
    },
    /// Runs because a person approved the pending plan it is in.
    Approved,
    Wait(Wait),
}

impl Verdict {
    pub fn runs(&self) -> bool {
        match self {
            Verdict::Auto | Verdict::InWindow { .. } | Verdict::Approved => true,
            Verdict::Wait(_) => false,
        }
    }
}

/// The disruptive actions the watcher ran, with when, for the budgets.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// (unix seconds, host, tenant) of each disruptive action run in a window.
    pub runs: Vec<(i64, String, Option<String>)>,
}

impl Ledger {
    fn count(&self, per: Per, key: &str, since: i64) -> usize {
        self.runs
            .iter()
            .filter(|(t, host, tenant)| {
                *t > since
                    && match per {
                        Per::Host => host == key,
                        Per::Tenant => tenant.as_deref() == Some(key),
                    }
            })
            .count()
    }

    /// Drops entries older than any budget can see.
    pub fn prune(&mut self, now: i64, budgets: &[Budget]) {
        let horizon = budgets.iter().map(|b| b.period_s).max().unwrap_or(0);
        let horizon = i64::try_from(horizon).unwrap_or(i64::MAX);
        self.runs.retain(|(t, _, _)| now.saturating_sub(*t) < horizon);
    }
}

/// Decides each candidate. `approved`: the pending plan was approved as a whole, so its
/// waiting actions may run. Whatever runs without being automatic — in a window or
/// approved — is held to the disruption budgets and charged to `ledger` as it is
/// granted, so one plan cannot overspend a budget: an approval says *what* may be
/// disrupted, the budget still says *how much at once*.
pub fn gate(cands: &[Candidate], g: &Gating, now: i64, approved: bool, ledger: &mut Ledger) -> Vec<Verdict> {
    cands
        .iter()
        .map(|c| {
            if g.exclude.contains(&c.id) {
                return Verdict::Wait(Wait::Excluded);
            }
            if g.auto.contains(&c.class) {
                return Verdict::Auto;
            }
            let window = g.windows.iter().find(|w| w.covers(c.tenant.as_deref()) && w.open_at(now));
            if !approved && window.is_none() {
                return Verdict::Wait(Wait::NeedsApproval { class: c.class });
            }
            for b in &g.budgets {
                let key = match b.per {
                    Per::Host => Some(c.host.as_str()),
                    Per::Tenant => c.tenant.as_deref(),
                };
                let Some(key) = key else { continue };
                let since = now.saturating_sub(i64::try_from(b.period_s).unwrap_or(i64::MAX));
                if ledger.count(b.per, key, since) >= b.max as usize {
                    return Verdict::Wait(Wait::BudgetSpent {
                        per: b.per,
                        key: key.to_string(),
                        max: b.max,
                        period_s: b.period_s,
                    });
                }
            }
            ledger.runs.push((now, c.host.clone(), c.tenant.clone()));
            match window {
                Some(w) if !approved => Verdict::InWindow { window: w.name.clone() },
                _ => Verdict::Approved,
            }
        })
        .collect()
}

/// Holds every action that needs (transitively, through `dependents`) one that waits:
/// a MIG instance is not made on a GPU whose mode switch waits for approval, and a VM
/// is not started on that instance. `ids[i]` is the resource of `verdicts[i]`.
pub fn hold_dependents(verdicts: &mut [Verdict], ids: &[String], dependents: impl Fn(&str) -> Vec<String>) {
    let mut stack: Vec<(String, String)> =
        ids.iter().zip(verdicts.iter()).filter(|(_, v)| !v.runs()).map(|(id, _)| (id.clone(), id.clone())).collect();
    let mut seen: BTreeSet<String> = stack.iter().map(|(id, _)| id.clone()).collect();
    while let Some((id, root)) = stack.pop() {
        for d in dependents(&id) {
            if !seen.insert(d.clone()) {
                continue;
            }
            if let Some(i) = ids.iter().position(|x| *x == d)
                && verdicts[i].runs()
            {
                verdicts[i] = Verdict::Wait(Wait::After { id: root.clone() });
            }
            stack.push((d, root.clone()));
        }
    }
}

/// A stable id for a set of waiting actions: the same changes give the same id, so an
/// approval given for one plan never carries over to different changes.
pub fn pending_id(commit: &str, waiting: &[(&str, Class)]) -> String {
    let mut parts: BTreeMap<&str, Class> = BTreeMap::new();
    for (id, class) in waiting {
        parts.insert(id, *class);
    }
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(commit.as_bytes());
    for (id, class) in parts {
        feed(b"\n");
        feed(id.as_bytes());
        feed(format!("{class:?}").as_bytes());
    }
    format!("p-{:08x}", h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::window::Weekday;

    const SAT_NOON: i64 = 1_796_428_800 + 12 * 3600;

    fn cand(id: &str, host: &str, tenant: Option<&str>, class: Class) -> Candidate {
        Candidate { id: id.into(), host: host.into(), tenant: tenant.map(Into::into), class }
    }

    fn weekend(tenants: &[&str]) -> Window {
        Window {
            name: "weekend".into(),
            days: [Weekday::Sat, Weekday::Sun].into_iter().collect(),
            start_minute: 0,
            duration_s: 86_400,
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn by_default_only_live_and_next_restart_run() {
        let all = [
            Class::Live,
            Class::NextRestart,
            Class::RestartNow,
            Class::Replace,
            Class::GpuRelayout,
            Class::DestroysData,
        ];
        let cands: Vec<_> = all.iter().map(|c| cand(&format!("vm:h/{c:?}"), "h", None, *c)).collect();
        let v = gate(&cands, &Gating::default(), SAT_NOON, false, &mut Ledger::default());
        let runs: Vec<bool> = v.iter().map(Verdict::runs).collect();
        assert_eq!(runs, [true, true, false, false, false, false]);
        assert_eq!(v[4], Verdict::Wait(Wait::NeedsApproval { class: Class::GpuRelayout }));
    }

    #[test]
    fn an_approval_runs_the_waiting_actions_but_not_the_excluded() {
        let mut g = Gating::default();
        g.exclude.insert("vm:h/b".into());
        let cands = [cand("vm:h/a", "h", None, Class::RestartNow), cand("vm:h/b", "h", None, Class::Live)];
        let v = gate(&cands, &g, SAT_NOON, true, &mut Ledger::default());
        assert_eq!(v, [Verdict::Approved, Verdict::Wait(Wait::Excluded)]);
    }

    #[test]
    fn a_window_opens_disruptive_changes_for_its_tenants_only() {
        let g = Gating { windows: vec![weekend(&["acme"])], ..Gating::default() };
        let cands = [
            cand("vm:h/acme-0", "h", Some("acme"), Class::RestartNow),
            cand("vm:h/globex-0", "h", Some("globex"), Class::RestartNow),
            cand("gpu:h/0000:3b:00.0", "h", None, Class::GpuRelayout),
        ];
        let v = gate(&cands, &g, SAT_NOON, false, &mut Ledger::default());
        assert_eq!(v[0], Verdict::InWindow { window: "weekend".into() });
        assert!(!v[1].runs() && !v[2].runs());
        let monday = SAT_NOON + 2 * 86_400;
        let v = gate(&cands[..1], &g, monday, false, &mut Ledger::default());
        assert_eq!(v[0], Verdict::Wait(Wait::NeedsApproval { class: Class::RestartNow }), "window closed");
    }

    #[test]
    fn budgets_cap_restarts_per_host_within_their_period() {
        let g = Gating {
            windows: vec![weekend(&[])],
            budgets: vec![Budget { per: Per::Host, max: 2, period_s: 3600 }],
            ..Gating::default()
        };
        let cands: Vec<_> = (0..3).map(|i| cand(&format!("vm:a/{i}"), "a", None, Class::RestartNow)).collect();
        let other = [cand("vm:b/0", "b", None, Class::RestartNow)];
        let mut ledger = Ledger::default();
        let v = gate(&cands, &g, SAT_NOON, false, &mut ledger);
        assert_eq!(v.iter().filter(|v| v.runs()).count(), 2, "{v:?}");
        assert!(matches!(&v[2], Verdict::Wait(Wait::BudgetSpent { key, max: 2, .. }) if key == "a"));
        assert!(gate(&other, &g, SAT_NOON, false, &mut ledger)[0].runs(), "host b has its own budget");
        let v = gate(&cands[2..], &g, SAT_NOON + 1800, false, &mut ledger);
        assert!(!v[0].runs(), "still within the hour");
        let v = gate(&cands[2..], &g, SAT_NOON + 3600, false, &mut ledger);
        assert!(v[0].runs(), "the hour has passed");
        ledger.prune(SAT_NOON + 3 * 3600, &g.budgets);
        assert!(ledger.runs.is_empty());
    }

    #[test]
    fn an_approval_is_held_to_the_budgets_too() {
        let g = Gating { budgets: vec![Budget { per: Per::Host, max: 1, period_s: 3600 }], ..Gating::default() };
        let cands: Vec<_> = (0..3).map(|i| cand(&format!("vm:a/{i}"), "a", None, Class::RestartNow)).collect();
        let mut ledger = Ledger::default();
        let v = gate(&cands, &g, SAT_NOON, true, &mut ledger);
        assert_eq!(v[0], Verdict::Approved);
        assert!(v[1..].iter().all(|v| matches!(v, Verdict::Wait(Wait::BudgetSpent { max: 1, .. }))), "{v:?}");
        let v = gate(&cands[1..], &g, SAT_NOON + 3600, true, &mut ledger);
        assert_eq!(v[0], Verdict::Approved, "the next one once the hour has passed");
        assert!(!v[1].runs());
        let v = gate(&cands[..1], &g, SAT_NOON, false, &mut Ledger::default());
        assert_eq!(v[0], Verdict::Wait(Wait::NeedsApproval { class: Class::RestartNow }), "a budget is no approval");
    }

    #[test]
    fn tenant_budgets_count_by_tenant_across_hosts() {
        let g = Gating {
            windows: vec![weekend(&[])],
            budgets: vec![Budget { per: Per::Tenant, max: 1, period_s: 600 }],
            ..Gating::default()
        };
        let cands = [
            cand("vm:a/acme-0", "a", Some("acme"), Class::Replace),
            cand("vm:b/acme-1", "b", Some("acme"), Class::Replace),
            cand("vm:b/globex-0", "b", Some("globex"), Class::Replace),
        ];
        let v = gate(&cands, &g, SAT_NOON, false, &mut Ledger::default());
        assert_eq!(v.iter().map(Verdict::runs).collect::<Vec<_>>(), [true, false, true]);
    }

    #[test]
    fn what_needs_a_waiting_change_waits_too() {
        let ids: Vec<String> = ["gpu:h/g", "mig:h/g/1g@0", "vm:h/a", "vm:h/b"].iter().map(|s| s.to_string()).collect();
        let mut v = vec![
            Verdict::Wait(Wait::NeedsApproval { class: Class::GpuRelayout }),
            Verdict::Auto,
            Verdict::Auto,
            Verdict::Auto,
        ];
        let deps = |id: &str| -> Vec<String> {
            match id {
                "gpu:h/g" => vec!["mig:h/g/1g@0".into()],
                "mig:h/g/1g@0" => vec!["vm:h/a".into()],
                _ => vec![],
            }
        };
        hold_dependents(&mut v, &ids, deps);
        assert_eq!(v[1], Verdict::Wait(Wait::After { id: "gpu:h/g".into() }));
        assert_eq!(v[2], Verdict::Wait(Wait::After { id: "gpu:h/g".into() }), "transitively");
        assert_eq!(v[3], Verdict::Auto, "an independent VM still runs");
    }

    #[test]
    fn pending_ids_follow_the_changes() {
        let a = pending_id("c1", &[("vm:h/a", Class::RestartNow), ("vm:h/b", Class::Replace)]);
        let b = pending_id("c1", &[("vm:h/b", Class::Replace), ("vm:h/a", Class::RestartNow)]);
        assert_eq!(a, b, "order does not matter");
        assert_ne!(a, pending_id("c2", &[("vm:h/a", Class::RestartNow), ("vm:h/b", Class::Replace)]));
        assert_ne!(a, pending_id("c1", &[("vm:h/a", Class::RestartNow)]));
        assert!(a.starts_with("p-") && a.len() == 10, "{a}");
    }
}
