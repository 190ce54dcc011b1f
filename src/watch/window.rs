//! Maintenance windows: weekly periods (UTC) in which disruptive changes may run without
//! an approval. Pure: the time is a number of seconds since the Unix epoch.

use std::collections::BTreeSet;

const DAY_S: i64 = 86_400;
const WEEK_DAYS: i64 = 7;

/// A day of the week, Monday first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] =
        [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];

    /// The weekday of day `n` after 1970-01-01 (a Thursday).
    pub fn of_day(n: i64) -> Weekday {
        Weekday::ALL[usize::try_from((n + 3).rem_euclid(WEEK_DAYS)).unwrap_or(0)]
    }
}

/// A weekly window: on each of `days`, from `start_minute` (minutes after 00:00 UTC) for
/// `duration_s`. A window may run past midnight.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    pub name: String,
    pub days: BTreeSet<Weekday>,
    pub start_minute: u32,
    pub duration_s: u64,
    /// Tenants whose resources it opens for; empty: every resource.
    pub tenants: BTreeSet<String>,
}

impl Window {
    /// Whether the window is open at `t` (Unix seconds).
    pub fn open_at(&self, t: i64) -> bool {
        let today = t.div_euclid(DAY_S);
        let duration = i64::try_from(self.duration_s).unwrap_or(i64::MAX);
        // A window that began on one of the last seven days may still be open.
        (0..=WEEK_DAYS).any(|back| {
            let day = today - back;
            let start = day * DAY_S + i64::from(self.start_minute) * 60;
            self.days.contains(&Weekday::of_day(day)) && start <= t && t - start < duration
        })
    }

    /// Whether the window covers a resource of `tenant` (`None`: a host-level resource).
    pub fn covers(&self, tenant: Option<&str>) -> bool {
        self.tenants.is_empty() || tenant.is_some_and(|t| self.tenants.contains(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-05 is a Saturday.
    const SAT_2026_12_05: i64 = 1_796_428_800;

    fn at(day_offset: i64, h: i64, m: i64) -> i64 {
        SAT_2026_12_05 + day_offset * DAY_S + h * 3600 + m * 60
    }

    fn window(days: &[Weekday], start: (u32, u32), hours: u64) -> Window {
        Window {
            name: "w".into(),
            days: days.iter().copied().collect(),
            start_minute: start.0 * 60 + start.1,
            duration_s: hours * 3600,
            tenants: BTreeSet::new(),
        }
    }

    #[test]
    fn weekdays_are_right() {
        assert_eq!(Weekday::of_day(0), Weekday::Thu);
        assert_eq!(Weekday::of_day(SAT_2026_12_05 / DAY_S), Weekday::Sat);
        assert_eq!(Weekday::of_day(-1), Weekday::Wed);
    }

    #[test]
    fn a_window_is_open_from_its_start_for_its_duration() {
        let w = window(&[Weekday::Sat], (2, 0), 4);
        assert!(!w.open_at(at(0, 1, 59)));
        assert!(w.open_at(at(0, 2, 0)));
        assert!(w.open_at(at(0, 5, 59)));
        assert!(!w.open_at(at(0, 6, 0)), "closes at the end");
        assert!(!w.open_at(at(1, 3, 0)), "not on Sunday");
        assert!(w.open_at(at(7, 3, 0)), "next Saturday");
    }

    #[test]
    fn a_window_may_run_past_midnight() {
        let w = window(&[Weekday::Fri], (22, 0), 6);
        assert!(w.open_at(at(-1, 23, 0)));
        assert!(w.open_at(at(0, 3, 59)), "Saturday morning is still Friday's window");
        assert!(!w.open_at(at(0, 4, 0)));
    }

    #[test]
    fn tenants_narrow_a_window() {
        let mut w = window(&[Weekday::Sat], (0, 0), 24);
        assert!(w.covers(None) && w.covers(Some("acme")));
        w.tenants.insert("acme".into());
        assert!(w.covers(Some("acme")));
        assert!(!w.covers(Some("globex")));
        assert!(!w.covers(None), "a tenant's window does not open host-level changes");
    }
}
