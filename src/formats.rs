//! The versions of every JSON document fabrik prints, and the stamp that puts the version
//! (and, for events, the time) first in each. A program reading fabrik's output checks
//! `format` and refuses a version it does not know; each format has a JSON Schema in
//! `schema/` and a page in `docs/formats.md`.
//!
//! The version changes when a field is removed, renamed or changes meaning; new fields
//! may be added within a version.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

/// `fabrik validate --format json`.
pub const VALIDATE: &str = "fabrik-validate/1";
/// `fabrik graph --format json`.
pub const GRAPH: &str = "fabrik-graph/1";
/// `fabrik bench --format json`, for each of its four reports (`bench` names which).
pub const BENCH: &str = "fabrik-bench/1";
/// `fabrik inventory --format json`.
pub const INVENTORY: &str = "fabrik-inventory/1";
/// `fabrik import --format json`.
pub const IMPORT: &str = "fabrik-import/1";
/// `fabrik apply --format json`: one event object per line.
pub const APPLY_EVENT: &str = "fabrik-apply-event/1";

/// `value` serialized, with `format` as its first key. A value that is not an object
/// (no fabrik report is one) is returned as it serializes.
pub fn versioned(format: &str, value: &impl Serialize) -> Value {
    let value = serde_json::to_value(value).unwrap_or(Value::Null);
    with_first(value, [("format", Value::String(format.to_string()))])
}

/// `versioned`, with the time it happened as `time` (RFC 3339, UTC, milliseconds).
pub fn stamped(format: &str, value: &impl Serialize, at: SystemTime) -> Value {
    let value = serde_json::to_value(value).unwrap_or(Value::Null);
    with_first(value, [("format", Value::String(format.to_string())), ("time", Value::String(rfc3339(at)))])
}

fn with_first<const N: usize>(value: Value, first: [(&str, Value); N]) -> Value {
    let Value::Object(rest) = value else {
        return value;
    };
    let mut out = Map::new();
    for (k, v) in first {
        out.insert(k.to_string(), v);
    }
    for (k, v) in rest {
        out.entry(k).or_insert(v);
    }
    Value::Object(out)
}

/// `at` as `2026-12-05T03:18:40.123Z`. A time before 1970 prints as the epoch.
pub fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century leap year), 12:34:56.789.
        let t = UNIX_EPOCH + Duration::from_millis(951_827_696_789);
        assert_eq!(rfc3339(t), "2000-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_440_720);
        assert_eq!(rfc3339(t), "2026-12-05T03:18:40.000Z");
    }

    #[test]
    fn format_comes_first_and_keeps_the_rest() {
        let v = stamped("x/1", &serde_json::json!({"event": "done", "id": "vm:h/a"}), UNIX_EPOCH);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["format", "time", "event", "id"]);
        assert_eq!(versioned("x/1", &serde_json::json!([1])), serde_json::json!([1]));
    }
}
