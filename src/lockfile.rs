//! Lock files: one apply at a time per factory (per twins' state folder with `--sim`),
//! so two applies never interleave their changes; the agents take the same kind of lock
//! on their hosts ([`host_lock_file`]). Kept apart from `apply` and `driver` so both
//! use it without needing each other.
//!
//! An advisory lock (`flock`) on `apply.lock`, which also holds who took it. The kernel
//! drops the lock when its process dies, so a killed apply never leaves a stale lock;
//! its journal tells the next apply what it was doing.
//!
//! The same lock guards each host that has an agent: apply asks every host's agent to
//! take [`host_lock_file`] in its lock folder (`/run/fabrik`) for the factory, and the
//! agent holds it until apply closes the connection or dies. That keeps apart applies
//! made from two checkouts of the factory, which the local lock cannot see.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How often a waiting apply tries the lock again.
const LOCK_POLL: Duration = Duration::from_millis(100);

/// Who holds the lock, written into the lock file by its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub user: String,
    pub host: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
    /// The fencing token of a watcher elected through etcd (issue 18, [`crate::coord`]):
    /// a host refuses a holder whose epoch is lower than the highest it has seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl Holder {
    /// This process, as another apply would be told it holds the lock.
    pub fn me() -> Holder {
        let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let since = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Holder { pid: std::process::id(), user, host, since, epoch: None }
    }

    pub fn describe(&self) -> String {
        let age = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).saturating_sub(self.since);
        let epoch = self.epoch.map(|e| format!(", leader epoch {e}")).unwrap_or_default();
        format!("pid {} of {} on {}, for {age}s{epoch}", self.pid, self.user, self.host)
    }
}

/// The lock, held until dropped.
#[derive(Debug)]
pub struct ApplyLock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another apply holds {path} ({holder}); wait for it, or pass --lock-wait SECONDS")]
    Held { path: String, holder: String },
    #[error("cannot use the apply lock {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Takes the lock in `dir`, waiting up to `wait` for another apply to finish.
pub fn acquire(dir: &Path, wait: Duration) -> Result<ApplyLock, LockError> {
    acquire_file(&dir.join("apply.lock"), wait, &Holder::me())
}

/// The name of the lock a host's agent takes for an apply of `factory` to `host`, in its
/// lock folder. The host's name is in it because testbed hosts share one machine's
/// `/run`; anything but letters, digits, `.`, `_` and `-` becomes `_`.
pub fn host_lock_file(factory: &str, host: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect()
    };
    format!("apply-{}@{}.lock", clean(factory), clean(host))
}

/// Takes the lock file at `path` for `holder`, waiting up to `wait`; writes the holder
/// into it once taken.
pub fn acquire_file(path: &Path, wait: Duration, holder: &Holder) -> Result<ApplyLock, LockError> {
    let path = path.to_path_buf();
    let io = |source| LockError::Io { path: path.display().to_string(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Not through a link: a link planted here would have its target truncated.
    let mut file = crate::files::open_in_place(&path).map_err(io)?;
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => std::thread::sleep(LOCK_POLL),
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = serde_json::from_str::<Holder>(&text)
                    .map(|h| h.describe())
                    .unwrap_or_else(|_| "holder unknown".to_string());
                return Err(LockError::Held { path: path.display().to_string(), holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    let me = serde_json::to_string(holder).unwrap_or_default();
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(me.as_bytes()))
        .map_err(io)?;
    Ok(ApplyLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_who_holds_it_and_gets_it_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), Duration::ZERO).unwrap();
        let err = acquire(dir.path(), Duration::from_millis(150)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        drop(first);
        acquire(dir.path(), Duration::ZERO).expect("free once the first is dropped");
    }

    #[test]
    fn a_host_lock_is_named_by_factory_and_host_in_plain_characters() {
        assert_eq!(host_lock_file("ai-factory", "gpu01"), "apply-ai-factory@gpu01.lock");
        assert_eq!(host_lock_file("", "h1"), "apply-@h1.lock");
        assert_eq!(host_lock_file("../etc", "a/b c"), "apply-.._etc@a_b_c.lock");
    }
}
