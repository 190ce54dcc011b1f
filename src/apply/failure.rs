//! Why something failed, as a kind a program can act on: the watch loop retries an
//! unreachable host with backoff and waits for a change after a refusal; `--format json`
//! events and the journal carry it.

use serde::{Deserialize, Serialize};

use crate::driver::{DriverError, ErrorKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The host, its libvirtd or its agent could not be reached (worth retrying).
    Unreachable,
    /// The host refused the change (the object is in use, exists, or the backend does
    /// not support it): retrying the same plan fails the same way.
    Refused,
    /// What the change needs is not there: a saved plan gone stale, an object that
    /// vanished, an action on a host the factory does not declare, a plan with errors.
    Precondition,
    /// Another apply holds the lock.
    Locked,
    /// A call or a wait ran out of time.
    Timeout,
    /// The reconcile was cancelled (a signal, or its caller) before this could run.
    Cancelled,
    /// Anything else (a crash, a backend's unclassified error).
    Failed,
}

impl FailureKind {
    pub fn word(self) -> &'static str {
        match self {
            FailureKind::Unreachable => "unreachable",
            FailureKind::Refused => "refused",
            FailureKind::Precondition => "precondition",
            FailureKind::Locked => "locked",
            FailureKind::Timeout => "timeout",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Failed => "failed",
        }
    }

    /// The kind of a driver's error.
    pub fn of(e: &DriverError) -> FailureKind {
        match e.kind {
            _ if e.code.as_deref() == Some(crate::driver::agent::TIMED_OUT) => FailureKind::Timeout,
            ErrorKind::Unreachable => FailureKind::Unreachable,
            ErrorKind::Refused | ErrorKind::Exists | ErrorKind::Unsupported => FailureKind::Refused,
            ErrorKind::NotFound => FailureKind::Precondition,
            ErrorKind::Failed => FailureKind::Failed,
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}
