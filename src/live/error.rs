//! Why a read or a change on a host failed: plain data, so it crosses the agent's pipe
//! and sits in a host's observed state ([`super::ConcernError`]) unchanged. Drivers
//! return it; this layer holds it because the observed state does.

use serde::{Deserialize, Serialize};

/// A driver failure, as plain data so it crosses the agent's pipe unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct DriverError {
    pub kind: ErrorKind,
    /// What failed, in words, with the underlying library's own message.
    pub message: String,
    /// The backend's own error code, when it has one (`NVML_ERROR_INSUFFICIENT_RESOURCES`,
    /// libvirt's `VIR_ERR_NO_DOMAIN`).
    pub code: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The host, its libvirtd, its agent or its library cannot be reached or loaded.
    Unreachable,
    /// The object does not exist.
    NotFound,
    /// The object exists already.
    Exists,
    /// The request is not possible in the current state (overlap, in use, wrong mode).
    Refused,
    /// The backend does not support this (no MIG on the GPU, no kernel module).
    Unsupported,
    /// Anything else the backend reported.
    Failed,
}

impl DriverError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> DriverError {
        DriverError { kind, message: message.into(), code: None }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> DriverError {
        self.code = Some(code.into());
        self
    }
}
