//! The watcher's settings, resolved once: defaults, then the factory's `watch:` section,
//! then the flags of `fabrik watch` (a flag wins).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::plan::Class;
use crate::spec::model::watch::{BudgetPer, ChangeClass, Day, Watch};

use super::backoff::BackoffPolicy;
use super::gate::{Budget, Gating, Per};
use super::trigger::Debounce;
use super::window::{Weekday, Window};

/// Everything the loop needs to know about how to run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    /// How often the branch (or directory) is read for a change.
    pub poll: Duration,
    pub debounce: Debounce,
    pub drift_interval: Duration,
    pub drift_jitter_percent: u8,
    pub backoff: BackoffPolicy,
    pub gating: Gating,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            // A commit is picked up within a quarter minute; `git rev-parse` is cheap.
            poll: Duration::from_secs(15),
            debounce: Debounce::default(),
            // Out-of-band changes libvirt does not report (a link, a MIG instance) are healed
            // within five minutes; every pass reads every host.
            drift_interval: Duration::from_secs(300),
            drift_jitter_percent: 10,
            backoff: BackoffPolicy::default(),
            gating: Gating::default(),
        }
    }
}

/// Flags of `fabrik watch` that override the factory; `None` leaves it.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub poll: Option<Duration>,
    pub debounce: Option<Duration>,
    pub drift_interval: Option<Duration>,
    pub auto: Option<Vec<Class>>,
    pub exclude: Vec<String>,
}

pub fn class_of(c: ChangeClass) -> Class {
    match c {
        ChangeClass::Live => Class::Live,
        ChangeClass::NextRestart => Class::NextRestart,
        ChangeClass::RestartNow => Class::RestartNow,
        ChangeClass::Replace => Class::Replace,
        ChangeClass::GpuRelayout => Class::GpuRelayout,
        ChangeClass::DestroysData => Class::DestroysData,
    }
}

fn weekday(d: Day) -> Weekday {
    match d {
        Day::Mon => Weekday::Mon,
        Day::Tue => Weekday::Tue,
        Day::Wed => Weekday::Wed,
        Day::Thu => Weekday::Thu,
        Day::Fri => Weekday::Fri,
        Day::Sat => Weekday::Sat,
        Day::Sun => Weekday::Sun,
    }
}

/// The policy for a factory's `watch:` section (if any) and the flags.
pub fn resolve(watch: Option<&Watch>, flags: &Overrides) -> Policy {
    let mut p = Policy::default();
    if let Some(w) = watch {
        let Watch {
            auto,
            poll_seconds,
            debounce_ms,
            drift_seconds,
            drift_jitter_percent,
            backoff_base_seconds,
            backoff_max_seconds,
            exclude,
            windows,
            budgets,
            span: _,
        } = w;
        if let Some(a) = auto {
            p.gating.auto = a.iter().map(|c| class_of(c.value)).collect();
        }
        if let Some(s) = poll_seconds {
            p.poll = Duration::from_secs(s.value);
        }
        if let Some(ms) = debounce_ms {
            p.debounce.quiet = Duration::from_millis(ms.value);
        }
        if let Some(s) = drift_seconds {
            p.drift_interval = Duration::from_secs(s.value);
        }
        if let Some(j) = drift_jitter_percent {
            p.drift_jitter_percent = j.value;
        }
        if let Some(s) = backoff_base_seconds {
            p.backoff.base = Duration::from_secs(s.value);
        }
        if let Some(s) = backoff_max_seconds {
            p.backoff.max = Duration::from_secs(s.value);
        }
        p.backoff.max = p.backoff.max.max(p.backoff.base);
        p.gating.exclude.extend(exclude.iter().map(|e| e.value.clone()));
        p.gating.windows = windows
            .iter()
            .map(|w| Window {
                name: w.name.value.clone(),
                days: w.days.iter().map(|d| weekday(d.value)).collect(),
                start_minute: w.start_minute.value,
                duration_s: w.hours.value * 3600,
                tenants: w.tenants.iter().map(|t| t.value.clone()).collect::<BTreeSet<_>>(),
            })
            .collect();
        p.gating.budgets = budgets
            .iter()
            .map(|b| Budget {
                per: match b.per.value {
                    BudgetPer::Host => Per::Host,
                    BudgetPer::Tenant => Per::Tenant,
                },
                max: b.max.value,
                period_s: b.period_minutes.value * 60,
            })
            .collect();
    }
    let Overrides { poll, debounce, drift_interval, auto, exclude } = flags;
    if let Some(d) = poll {
        p.poll = *d;
    }
    if let Some(d) = debounce {
        p.debounce.quiet = *d;
    }
    if let Some(d) = drift_interval {
        p.drift_interval = *d;
    }
    if let Some(a) = auto {
        p.gating.auto = a.iter().copied().collect();
    }
    p.gating.exclude.extend(exclude.iter().cloned());
    // A burst may postpone a pass by at most ten quiet periods (and never less than 10 s).
    p.debounce.max_delay = (p.debounce.quiet * 10).max(Duration::from_secs(10));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch_of(yaml: &str) -> Watch {
        crate::spec::load::clean_yaml(yaml).watch.expect("a watch section")
    }

    #[test]
    fn defaults_gate_all_but_live_and_next_restart() {
        let p = resolve(None, &Overrides::default());
        assert_eq!(p.gating.auto, [Class::Live, Class::NextRestart].into_iter().collect());
        assert_eq!(p.poll, Duration::from_secs(15));
    }

    #[test]
    fn the_factory_sets_and_flags_override() {
        let w = watch_of(
            "version: 1\nwatch:\n  auto: [live]\n  poll-seconds: 30\n  drift-seconds: 60\n  exclude: [vm:h/a]\n  \
             windows:\n    - { name: sat, days: [sat], start: \"02:00\", hours: 3, tenants: [acme] }\n  \
             budgets:\n    - { per: tenant, max: 2, period-minutes: 60 }\n",
        );
        let p = resolve(Some(&w), &Overrides::default());
        assert_eq!(p.gating.auto, [Class::Live].into_iter().collect());
        assert_eq!(p.poll, Duration::from_secs(30));
        assert_eq!(p.drift_interval, Duration::from_secs(60));
        assert!(p.gating.exclude.contains("vm:h/a"));
        assert_eq!(p.gating.windows[0].start_minute, 120);
        assert_eq!(p.gating.windows[0].duration_s, 3 * 3600);
        assert_eq!(p.gating.budgets, [Budget { per: Per::Tenant, max: 2, period_s: 3600 }]);
        let flags = Overrides {
            poll: Some(Duration::from_secs(2)),
            auto: Some(vec![Class::Live, Class::NextRestart, Class::RestartNow]),
            ..Overrides::default()
        };
        let p = resolve(Some(&w), &flags);
        assert_eq!(p.poll, Duration::from_secs(2));
        assert!(p.gating.auto.contains(&Class::RestartNow));
    }
}
