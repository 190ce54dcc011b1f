//! The files a watcher shares with `fabrik status`, `fabrik approve` and
//! `fabrik watch suspend|resume`, in its state directory. Every write is atomic
//! ([`crate::files::replace`]): a reader sees the old file or the new one.
//!
//! ```text
//! <state>/status.json        written by the watcher after each pass (fabrik-watch-status/1)
//! <state>/applied.json       the last commit applied, for the descent check across restarts
//! <state>/ledger.json        disruptive changes run in windows, for the budgets
//! <state>/boot-ids.json      each host's last seen boot id, to know a reboot across restarts
//! <state>/suspend.json       present while suspended (who, why, when)
//! <state>/approvals/<id>.json one per approved pending plan
//! <state>/checkout/          the commit being validated, read from git objects only
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::Class;

/// `fabrik status --format json` and `status.json`.
pub const STATUS_FORMAT: &str = "fabrik-watch-status/1";
/// `fabrik watch --format json`: one event object per line.
pub const EVENT_FORMAT: &str = "fabrik-watch-event/1";

/// A commit and when it was applied or tried.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRef {
    pub commit: String,
    /// Its subject line.
    #[serde(default)]
    pub subject: String,
    /// RFC 3339, UTC.
    pub at: String,
}

/// The last commit the watcher tried, and why it was refused if it was.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    #[serde(flatten)]
    pub commit: CommitRef,
    pub ok: bool,
    /// Why it is not in force (validation, a rewind, an unreadable commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The diagnostics, one JSON object each (`validate --format json`'s shape).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<serde_json::Value>,
}

/// An action waiting for approval or a window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub id: String,
    pub class: Class,
    pub reason: String,
    /// Why it waits (`needs-approval`, `budget-spent`, `excluded`).
    pub why: String,
}

/// The plan that waits for `fabrik approve <id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    /// Approved already: what is left waits for a disruption budget.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approved: bool,
    pub commit: String,
    pub since: String,
    pub actions: Vec<Waiting>,
}

/// A host whose work is backing off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailingHost {
    pub host: String,
    /// unreachable, refused, precondition, locked, timeout, failed, cancelled.
    pub kind: String,
    pub failures: u32,
    pub error: String,
    /// Seconds from the failure to the next try.
    pub retry_in_s: f64,
    /// Resources whose actions failed on that host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
}

/// A resource whose action failed (or did not verify) and backs off on its own, while
/// the rest of its host goes on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailingResource {
    pub id: String,
    pub host: String,
    /// refused, precondition, failed.
    pub kind: String,
    pub failures: u32,
    pub error: String,
    /// Seconds from the failure to the next try.
    pub retry_in_s: f64,
}

/// What the last pass found on a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDrift {
    pub host: String,
    /// Changes the last plan had for it (drift and new commits alike).
    pub planned: usize,
    /// Changes carried out in the last pass.
    pub done: usize,
    /// Changes waiting for approval.
    pub waiting: usize,
    pub converged: bool,
    pub at: String,
    /// The host's boot id as last read (`None` where the host gives none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// When the watcher last saw the boot id change (a reboot) and rebuilt the host's
    /// boot-volatile state; RFC 3339, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebooted: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    pub reason: String,
    pub by: String,
    pub at: String,
}

/// The watcher's whole state as `fabrik status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `git <repo>@<branch>` or `dir <path> (lab mode)`.
    pub source: String,
    pub pid: u32,
    pub started: String,
    /// The last pass's end.
    #[serde(default)]
    pub updated: String,
    pub passes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<CommitRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted: Option<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<Suspension>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    #[serde(default)]
    pub failing: Vec<FailingHost>,
    /// Resources backing off on their own (their hosts are not in `failing`).
    #[serde(default)]
    pub failing_resources: Vec<FailingResource>,
    #[serde(default)]
    pub hosts: Vec<HostDrift>,
    /// Reserved for endpoint probes (src/endpoints.rs): one entry per probed endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<serde_json::Value>,
    /// Issue 18 hook: leader, standby or unreachable, and the epoch (absent before a
    /// watcher of this version wrote it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination: Option<crate::coord::CoordStatus>,
}

/// The state directory and its files.
#[derive(Clone, Debug)]
pub struct StateDir {
    pub root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not a file this fabrik reads")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn status_path(&self) -> PathBuf {
        self.root.join("status.json")
    }
    pub fn applied_path(&self) -> PathBuf {
        self.root.join("applied.json")
    }
    pub fn ledger_path(&self) -> PathBuf {
        self.root.join("ledger.json")
    }
    pub fn boot_ids_path(&self) -> PathBuf {
        self.root.join("boot-ids.json")
    }
    pub fn suspend_path(&self) -> PathBuf {
        self.root.join("suspend.json")
    }
    pub fn approvals(&self) -> PathBuf {
        self.root.join("approvals")
    }
    pub fn checkout(&self) -> PathBuf {
        self.root.join("checkout")
    }

    fn write<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StateError> {
        let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
        text.push('\n');
        crate::files::replace(path, text.as_bytes()).map_err(|source| StateError::Write { path: path.into(), source })
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, path: &Path) -> Result<Option<T>, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt { path: path.into(), source }),
            Err(_) => Ok(None),
        }
    }

    pub fn write_status(&self, s: &Status) -> Result<(), StateError> {
        self.write(&self.status_path(), &crate::formats::versioned(STATUS_FORMAT, s))
    }

    pub fn status(&self) -> Result<Option<Status>, StateError> {
        self.read(&self.status_path())
    }

    pub fn write_applied(&self, c: &CommitRef) -> Result<(), StateError> {
        self.write(&self.applied_path(), c)
    }

    pub fn applied(&self) -> Result<Option<CommitRef>, StateError> {
        self.read(&self.applied_path())
    }

    pub fn write_ledger(&self, l: &super::gate::Ledger) -> Result<(), StateError> {
        self.write(&self.ledger_path(), l)
    }

    pub fn ledger(&self) -> super::gate::Ledger {
        self.read(&self.ledger_path()).ok().flatten().unwrap_or_default()
    }

    pub fn write_boot_ids(&self, ids: &std::collections::BTreeMap<String, String>) -> Result<(), StateError> {
        self.write(&self.boot_ids_path(), ids)
    }

    /// Each host's last seen boot id; empty when none was recorded (or unreadable).
    pub fn boot_ids(&self) -> std::collections::BTreeMap<String, String> {
        self.read(&self.boot_ids_path()).ok().flatten().unwrap_or_default()
    }

    pub fn suspend(&self, s: &Suspension) -> Result<(), StateError> {
        self.write(&self.suspend_path(), s)
    }

    pub fn suspension(&self) -> Option<Suspension> {
        self.read(&self.suspend_path()).ok().flatten()
    }

    /// Ends a suspension; `false` when there was none.
    pub fn resume(&self) -> bool {
        std::fs::remove_file(self.suspend_path()).is_ok()
    }

    /// Records the approval of `plan`, with the changes it names: a later pending plan
    /// of the same commit that names only some of them (the rest ran, within a budget)
    /// stays approved.
    pub fn approve(&self, plan: &Pending, by: &str, at: &str) -> Result<(), StateError> {
        let path = self.approvals().join(format!("{}.json", plan.id));
        let actions: Vec<&str> = plan.actions.iter().map(|a| a.id.as_str()).collect();
        self.write(
            &path,
            &serde_json::json!({"id": plan.id, "by": by, "at": at, "commit": plan.commit, "actions": actions}),
        )
    }

    /// Whether the plan `id` (of `commit`, naming `actions`) was approved: itself, or a
    /// plan of the same commit whose changes include all of these.
    pub fn is_approved(&self, id: &str, commit: &str, actions: &[&str]) -> bool {
        if valid_pending_id(id) && self.approvals().join(format!("{id}.json")).is_file() {
            return true;
        }
        self.approvals_read().iter().any(|a| a.covers(commit, actions))
    }

    fn approvals_read(&self) -> Vec<Approval> {
        let Ok(entries) = std::fs::read_dir(self.approvals()) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<Approval>(&b).ok())
            .collect()
    }

    /// Forgets approvals that no longer cover the pending plan (or all, with none).
    pub fn prune_approvals(&self, keep: Option<&Pending>) {
        let Ok(entries) = std::fs::read_dir(self.approvals()) else { return };
        let waiting: Vec<&str> = keep.map(|p| p.actions.iter().map(|a| a.id.as_str()).collect()).unwrap_or_default();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let covers = || {
                std::fs::read(e.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Approval>(&b).ok())
                    .zip(keep)
                    .is_some_and(|(a, p)| a.covers(&p.commit, &waiting))
            };
            if keep.is_none_or(|k| name != format!("{}.json", k.id)) && !covers() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// An approval as `approvals/<id>.json` holds it.
#[derive(Clone, Debug, Deserialize)]
struct Approval {
    #[serde(default)]
    commit: String,
    #[serde(default)]
    actions: Vec<String>,
}

impl Approval {
    fn covers(&self, commit: &str, actions: &[&str]) -> bool {
        !actions.is_empty() && self.commit == commit && actions.iter().all(|a| self.actions.iter().any(|b| b == a))
    }
}

/// A pending plan's id as [`super::gate::pending_id`] makes it: `p-` and 8 hex digits.
pub fn valid_pending_id(id: &str) -> bool {
    id.len() == 10 && id.starts_with("p-") && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Who runs this command, for the records (`$SUDO_USER`, `$USER`, or the uid).
pub fn who() -> String {
    std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "unknown user".to_string())
}

pub fn now_rfc3339() -> String {
    crate::formats::rfc3339(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_approvals_are_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path());
        assert_eq!(s.status().unwrap(), None);
        let status = Status {
            source: "git /r@main".into(),
            passes: 3,
            last_applied: Some(CommitRef { commit: "abc".into(), subject: "add vm".into(), at: "t".into() }),
            ..Status::default()
        };
        s.write_status(&status).unwrap();
        let text = std::fs::read_to_string(s.status_path()).unwrap();
        assert!(text.starts_with("{\n  \"format\": \"fabrik-watch-status/1\""), "{text}");
        assert_eq!(s.status().unwrap(), Some(status));
        let waiting = |id: &str| Waiting {
            id: id.into(),
            class: Class::RestartNow,
            reason: "memory".into(),
            why: "needs-approval".into(),
        };
        let plan = |id: &str, actions: &[&str]| Pending {
            id: id.into(),
            approved: false,
            commit: "abc".into(),
            since: "t".into(),
            actions: actions.iter().map(|a| waiting(a)).collect(),
        };
        let (all, rest) = (plan("p-0000abcd", &["vm:h/a", "vm:h/b"]), plan("p-0000beef", &["vm:h/b"]));
        assert!(!s.is_approved("p-0000abcd", "abc", &["vm:h/a", "vm:h/b"]));
        s.approve(&all, "me", "now").unwrap();
        assert!(s.is_approved("p-0000abcd", "abc", &["vm:h/a", "vm:h/b"]));
        assert!(s.is_approved("p-0000beef", "abc", &["vm:h/b"]), "what is left of an approved plan stays approved");
        assert!(!s.is_approved("p-00000001", "abc", &["vm:h/b", "vm:h/c"]), "a new change is not approved");
        assert!(!s.is_approved("p-00000002", "def", &["vm:h/b"]), "nor the same change of another commit");
        assert!(!s.is_approved("../x", "x", &[]), "ids are checked before they name a file");
        s.prune_approvals(Some(&rest));
        assert!(s.is_approved("p-0000beef", "abc", &["vm:h/b"]), "kept while it covers the pending plan");
        s.prune_approvals(None);
        assert!(!s.is_approved("p-0000abcd", "abc", &["vm:h/a", "vm:h/b"]));
        assert!(s.suspension().is_none() && !s.resume());
        s.suspend(&Suspension { reason: "maintenance".into(), by: "me".into(), at: "now".into() }).unwrap();
        assert_eq!(s.suspension().unwrap().reason, "maintenance");
        assert!(s.resume());
    }

    #[test]
    fn boot_ids_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path());
        assert!(s.boot_ids().is_empty(), "none recorded yet");
        let ids: std::collections::BTreeMap<String, String> = [("gpu01".to_string(), "b-1".to_string())].into();
        s.write_boot_ids(&ids).unwrap();
        assert_eq!(s.boot_ids(), ids);
    }
}
