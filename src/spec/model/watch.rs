//! The `watch:` section: how `fabrik watch` runs for this factory (docs/watch.md). Only
//! an operator's file may declare it; the flags of `fabrik watch` override it.

use crate::diag::Diagnostic;
use crate::spec::decode::{Decoder, Word};
use crate::spec::shape::{Shape, Ty, opt, req};
use crate::spec::source::{Span, Spanned};
use crate::spec::tree::Node;
use crate::words;

words! {
    /// A change class, as a plan line shows it (docs/plan.md).
    pub enum ChangeClass {
        /// Done on the running object; nothing restarts.
        Live = "live",
        /// Written to the definition; the guest sees it at its next restart.
        NextRestart = "next-restart",
        /// The running VM restarts now.
        RestartNow = "restart-now",
        /// The object is removed and made again.
        Replace = "replace",
        /// A GPU reset or a MIG layout change that takes instances from VMs.
        GpuRelayout = "gpu-relayout",
        /// Data is deleted.
        DestroysData = "destroys-data",
    }
}

words! {
    /// A day of the week.
    pub enum Day {
        Mon = "mon",
        Tue = "tue",
        Wed = "wed",
        Thu = "thu",
        Fri = "fri",
        Sat = "sat",
        Sun = "sun",
    }
}

words! {
    /// What a disruption budget counts by.
    pub enum BudgetPer {
        Host = "host",
        Tenant = "tenant",
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Watch {
    pub auto: Option<Vec<Spanned<ChangeClass>>>,
    pub poll_seconds: Option<Spanned<u64>>,
    pub debounce_ms: Option<Spanned<u64>>,
    pub drift_seconds: Option<Spanned<u64>>,
    pub drift_jitter_percent: Option<Spanned<u8>>,
    pub backoff_base_seconds: Option<Spanned<u64>>,
    pub backoff_max_seconds: Option<Spanned<u64>>,
    pub exclude: Vec<Spanned<String>>,
    pub windows: Vec<WatchWindow>,
    pub budgets: Vec<WatchBudget>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct WatchWindow {
    pub name: Spanned<String>,
    pub days: Vec<Spanned<Day>>,
    /// Minutes after 00:00 UTC.
    pub start_minute: Spanned<u32>,
    pub hours: Spanned<u64>,
    pub tenants: Vec<Spanned<String>>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct WatchBudget {
    pub per: Spanned<BudgetPer>,
    pub max: Spanned<u32>,
    pub period_minutes: Spanned<u64>,
}

/// A day in seconds: the longest poll, drift or backoff interval accepted.
const DAY_S: i64 = 86_400;
/// A week in hours: the longest window.
const WEEK_H: i64 = 168;

pub static WATCH: Shape = Shape {
    name: "watch",
    doc: "How `fabrik watch` runs: which change classes it carries out unattended, when the others \
          may run, and its timings. Flags of `fabrik watch` override these keys (docs/watch.md).",
    label: None,
    more: &[],
    fields: &[
        opt(
            "auto",
            Ty::List(&Ty::Enum(ChangeClass::NAMES)),
            "change classes carried out without approval (default: `[live, next-restart]`)",
        ),
        opt(
            "poll-seconds",
            Ty::Int { min: 1, max: DAY_S },
            "how often the branch is read for new commits (default 15)",
        ),
        opt(
            "debounce-ms",
            Ty::Int { min: 0, max: 600_000 },
            "a pass starts once triggers stop for this long (default 1000)",
        ),
        opt("drift-seconds", Ty::Int { min: 1, max: DAY_S }, "the periodic drift pass, on average (default 300)"),
        opt(
            "drift-jitter-percent",
            Ty::Int { min: 0, max: 100 },
            "each drift interval varies by up to this share (default 10)",
        ),
        opt(
            "backoff-base-seconds",
            Ty::Int { min: 1, max: DAY_S },
            "a failing host's first retry waits this long, doubling after each failure (default 5)",
        ),
        opt("backoff-max-seconds", Ty::Int { min: 1, max: DAY_S }, "the longest retry wait (default 300)"),
        opt("exclude", Ty::List(&Ty::Str), "resource ids the watcher never changes (`vm:gpu01/lab-0`)"),
        opt(
            "windows",
            Ty::Items { shape: &WINDOW, singular: "window" },
            "maintenance windows in which the other classes run without approval",
        ),
        opt("budgets", Ty::Items { shape: &BUDGET, singular: "budget" }, "limits on disruptive changes run in windows"),
    ],
};

pub static WINDOW: Shape = Shape {
    name: "window",
    doc: "A weekly maintenance window (UTC).",
    label: Some("name"),
    more: &[],
    fields: &[
        req("name", Ty::Name, "the window's name, shown in status and events"),
        req("days", Ty::List(&Ty::Enum(Day::NAMES)), "days it opens on"),
        req("start", Ty::Str, "when it opens, `HH:MM` in UTC"),
        req("hours", Ty::Int { min: 1, max: WEEK_H }, "how long it stays open"),
        opt("tenants", Ty::List(&Ty::Name), "tenants whose resources it opens for (default: every resource)"),
    ],
};

pub static BUDGET: Shape = Shape {
    name: "budget",
    doc: "At most `max` disruptive changes per host or tenant within any `period-minutes`.",
    label: None,
    more: &[],
    fields: &[
        req("per", Ty::Enum(BudgetPer::NAMES), "`host` or `tenant`"),
        req("max", Ty::Int { min: 0, max: 10_000 }, "disruptive changes allowed per period"),
        req("period-minutes", Ty::Int { min: 1, max: WEEK_H * 60 }, "the sliding period"),
    ],
};

pub fn decode_watch(d: &mut Decoder, n: &Node) -> Option<Watch> {
    let o = d.object(n, &WATCH, "watch")?;
    let secs = |d: &mut Decoder, key: &str| o.get(key).and_then(|n| d.uint::<u64>(n, key, 1, DAY_S));
    let auto = o.get("auto").map(|n| d.list(n, "auto", |d, n| d.word::<ChangeClass>(n, "auto")));
    let poll_seconds = secs(d, "poll-seconds");
    let drift_seconds = secs(d, "drift-seconds");
    let backoff_base_seconds = secs(d, "backoff-base-seconds");
    let backoff_max_seconds = secs(d, "backoff-max-seconds");
    let debounce_ms = o.get("debounce-ms").and_then(|n| d.uint::<u64>(n, "debounce-ms", 0, 600_000));
    let drift_jitter_percent =
        o.get("drift-jitter-percent").and_then(|n| d.uint::<u8>(n, "drift-jitter-percent", 0, 100));
    let exclude = o.get("exclude").map(|n| d.list(n, "exclude", |d, n| d.string(n, "exclude"))).unwrap_or_default();
    if let (Some(base), Some(max)) = (&backoff_base_seconds, &backoff_max_seconds)
        && base.value > max.value
    {
        d.diags.push(
            Diagnostic::error(
                "fabrik::watch::backoff",
                format!("`backoff-base-seconds` ({}) is more than `backoff-max-seconds` ({})", base.value, max.value),
            )
            .at(base.span, "the first wait")
            .also(max.span, "the longest wait")
            .help("make `backoff-base-seconds` at most `backoff-max-seconds`"),
        );
    }
    Some(Watch {
        auto,
        poll_seconds,
        debounce_ms,
        drift_seconds,
        drift_jitter_percent,
        backoff_base_seconds,
        backoff_max_seconds,
        exclude,
        windows: d.items(&o, "windows", decode_window),
        budgets: d.items(&o, "budgets", decode_budget),
        span: o.span,
    })
}

fn decode_window(d: &mut Decoder, n: &Node) -> Option<WatchWindow> {
    let o = d.object(n, &WINDOW, "window")?;
    let name = o.get("name").and_then(|n| d.name(n, "name"));
    let days = o.get("days").map(|n| d.list(n, "days", |d, n| d.word::<Day>(n, "days"))).unwrap_or_default();
    let start = o.get("start").and_then(|n| d.string(n, "start")).and_then(|s| match clock_minute(&s.value) {
        Some(m) => Some(Spanned::new(m, s.span)),
        None => {
            d.diags.push(
                Diagnostic::error("fabrik::watch::bad-time", format!("`{}` is not a time of day", s.value))
                    .at(s.span, "expected `HH:MM`")
                    .help("write the hour and minute in UTC, 24-hour clock: `start: \"02:30\"`"),
            );
            None
        }
    });
    let hours = o.get("hours").and_then(|n| d.uint::<u64>(n, "hours", 1, WEEK_H));
    let tenants = o.get("tenants").map(|n| d.list(n, "tenants", |d, n| d.name(n, "tenants"))).unwrap_or_default();
    Some(WatchWindow { name: name?, days, start_minute: start?, hours: hours?, tenants })
}

fn decode_budget(d: &mut Decoder, n: &Node) -> Option<WatchBudget> {
    let o = d.object(n, &BUDGET, "budget")?;
    let per = o.get("per").and_then(|n| d.word::<BudgetPer>(n, "per"));
    let max = o.get("max").and_then(|n| d.uint::<u32>(n, "max", 0, 10_000));
    let period = o.get("period-minutes").and_then(|n| d.uint::<u64>(n, "period-minutes", 1, WEEK_H * 60));
    Some(WatchBudget { per: per?, max: max?, period_minutes: period? })
}

/// `HH:MM` (24-hour) as minutes after midnight.
pub fn clock_minute(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let digits = |x: &str| x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::clock_minute;

    #[test]
    fn clock_times() {
        assert_eq!(clock_minute("00:00"), Some(0));
        assert_eq!(clock_minute("23:59"), Some(1439));
        for bad in ["24:00", "2:00", "02:60", "0200", "02:0a", "", "-1:00"] {
            assert_eq!(clock_minute(bad), None, "{bad}");
        }
    }
}
