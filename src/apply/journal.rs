//! The journal of the last apply: one JSON line per event, written as it happens, in
//! `last-apply.jsonl` beside the lock.
//!
//! fabrik never resumes from the journal (the next plan starts from the live hosts,
//! which are the truth); the journal says what the previous apply was doing when it was
//! killed, so the operator is told, and can see which actions had started.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

/// The last event of an apply that finished.
const FINISHED: &str = "\"event\":\"summary\"";

pub struct Journal {
    file: Mutex<File>,
    pub path: PathBuf,
}

/// What the previous journal says, when that apply did not finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfinished {
    /// Actions it started and never reported finished.
    pub in_flight: Vec<String>,
    pub started_line: Option<String>,
}

/// Reads the previous journal in `dir`: `Some` when that apply never wrote its summary.
pub fn previous(dir: &Path) -> Option<Unfinished> {
    let text = std::fs::read_to_string(dir.join("last-apply.jsonl")).ok()?;
    if text.trim().is_empty() || text.lines().any(|l| l.contains(FINISHED)) {
        return None;
    }
    let mut in_flight: Vec<String> = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let id = v.get("id").and_then(|i| i.as_str()).unwrap_or_default().to_string();
        match v.get("event").and_then(|e| e.as_str()) {
            Some("start") => in_flight.push(id),
            Some("done" | "failed" | "skipped") => in_flight.retain(|x| *x != id),
            _ => {}
        }
    }
    Some(Unfinished { in_flight, started_line: text.lines().next().map(str::to_string) })
}

impl Journal {
    /// Starts a new journal in `dir`, replacing the previous one.
    pub fn create(dir: &Path) -> std::io::Result<Journal> {
        let path = dir.join("last-apply.jsonl");
        let file = crate::files::replace_with_new(&path)?;
        Ok(Journal { file: Mutex::new(file), path })
    }

    /// Appends one event. A journal that cannot be written does not stop the apply: the
    /// hosts, not the journal, are the record.
    pub fn write(&self, event: &impl Serialize) {
        let Ok(mut line) = serde_json::to_string(event) else { return };
        line.push('\n');
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apply_without_its_summary_is_unfinished_with_what_it_had_started() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(previous(dir.path()), None);
        let j = Journal::create(dir.path()).unwrap();
        j.write(&serde_json::json!({"event": "begin", "pid": 1}));
        j.write(&serde_json::json!({"event": "start", "id": "vm:h1/a"}));
        j.write(&serde_json::json!({"event": "start", "id": "vm:h1/b"}));
        j.write(&serde_json::json!({"event": "done", "id": "vm:h1/a"}));
        let u = previous(dir.path()).expect("unfinished");
        assert_eq!(u.in_flight, vec!["vm:h1/b".to_string()]);
        j.write(&serde_json::json!({"event": "summary"}));
        assert_eq!(previous(dir.path()), None);
    }
}
