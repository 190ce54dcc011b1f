//! The host side of fencing: the highest leader epoch a host has seen for a factory,
//! kept in a file that outlives the agent (and, in the default folder, a reboot), and
//! a log of every lock request, taken or refused, with its epoch.
//!
//! Called by the agent's lock ([`crate::driver::agent::HostLocks`]) while it holds the
//! host's flock, so two agents never interleave a read and a write of the record.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::lockfile::Holder;

/// Where a host keeps its fencing records when the agent is given no lock folder.
pub const DIR_DEFAULT: &str = "/var/lib/fabrik";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The highest epoch a holder has taken the lock with.
    pub epoch: u64,
    /// Who took it (a [`Holder::describe`] line).
    pub by: String,
}

/// The fence of one factory on one host.
pub struct Fence {
    record: PathBuf,
    log: PathBuf,
}

/// What the fence says about a holder.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// The holder's epoch is below `highest`: a newer leader has acted here.
    Refused {
        epoch: u64,
        highest: u64,
        by: String,
    },
}

impl Fence {
    /// The fence of `lock_name` (a [`crate::lockfile::host_lock_file`] name) in `dir`.
    pub fn new(dir: &Path, lock_name: &str) -> Fence {
        let stem = lock_name.trim_end_matches(".lock");
        Fence { record: dir.join(format!("{stem}.epoch")), log: dir.join(format!("{stem}.log")) }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The record; none (epoch 0) when never written or unreadable.
    pub fn read(&self) -> Record {
        std::fs::read(&self.record).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Whether `holder` may act. A holder without an epoch (a plain `fabrik apply`) is not
    /// fenced: it is kept apart by the lock alone.
    pub fn check(&self, holder: &Holder) -> Verdict {
        let Some(epoch) = holder.epoch else { return Verdict::Allowed };
        let r = self.read();
        if epoch < r.epoch { Verdict::Refused { epoch, highest: r.epoch, by: r.by } } else { Verdict::Allowed }
    }

    /// Records `holder`'s epoch when it is higher than the record's (written to a
    /// temporary file, synced, renamed).
    pub fn raise(&self, holder: &Holder) -> std::io::Result<()> {
        let Some(epoch) = holder.epoch else { return Ok(()) };
        if epoch <= self.read().epoch {
            return Ok(());
        }
        if let Some(dir) = self.record.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_vec(&Record { epoch, by: holder.describe() }).unwrap_or_default();
        let tmp = self.record.with_extension("epoch.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.record)
    }

    /// Appends one line to the log: `{"at","outcome","epoch","holder"}`. Best effort.
    pub fn log(&self, outcome: &str, holder: &Holder) {
        let line = serde_json::json!({
            "at": crate::formats::rfc3339(std::time::SystemTime::now()),
            "outcome": outcome,
            "epoch": holder.epoch,
            "holder": holder.describe(),
            "pid": holder.pid,
        });
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&self.log) {
            let _ = writeln!(f, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(epoch: Option<u64>) -> Holder {
        Holder { pid: 7, user: "ops".into(), host: "w1".into(), since: 0, epoch }
    }

    #[test]
    fn a_lower_epoch_is_refused_once_a_higher_one_was_recorded_and_the_record_survives() {
        let dir = tempfile::tempdir().unwrap();
        let f = Fence::new(dir.path(), "apply-ai@h1.lock");
        assert_eq!(f.check(&holder(Some(5))), Verdict::Allowed);
        f.raise(&holder(Some(9))).unwrap();
        let again = Fence::new(dir.path(), "apply-ai@h1.lock");
        match again.check(&holder(Some(5))) {
            Verdict::Refused { epoch: 5, highest: 9, by } => assert!(by.contains("epoch 9"), "{by}"),
            v => panic!("{v:?}"),
        }
        assert_eq!(again.check(&holder(Some(9))), Verdict::Allowed);
        assert_eq!(again.check(&holder(None)), Verdict::Allowed, "a plain apply is kept apart by the lock");
        f.raise(&holder(Some(3))).unwrap();
        assert_eq!(f.read().epoch, 9, "never lowered");
    }

    #[test]
    fn the_log_has_a_line_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let f = Fence::new(dir.path(), "apply-ai@h1.lock");
        f.log("taken", &holder(Some(4)));
        f.log("fenced", &holder(Some(2)));
        let text = std::fs::read_to_string(f.log_path()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0]["outcome"].as_str(), lines[0]["epoch"].as_u64()), (Some("taken"), Some(4)));
        assert_eq!(lines[1]["outcome"], "fenced");
    }
}
