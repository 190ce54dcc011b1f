//! What hosts really run, normalized the same way as the desired state.
//!
//! Drivers produce these values; plan compares them with the desired state. They are
//! plain data (serde both ways) so they cross the agent's pipe and sit in snapshots.

pub mod error;
pub mod gpu;
pub mod host;
pub mod link;
pub mod virt;

pub use gpu::{LiveGpu, LiveMigInstance, LiveVgpu, MigMode};
pub use host::{HostInfo, LiveHugepages, LiveNumaNode, LivePciDevice, Sriov};
pub use link::{LinkKind, LiveLink, SriovPci};
pub use virt::{
    LiveDisk, LiveDomain, LiveInterface, LiveNetwork, LivePool, LiveVolume, Ownership, PowerState, RunningDefinition,
};

use serde::{Deserialize, Serialize};

/// The live hosts by name, the first of each name (as a search from the front finds
/// it): built once, so that looking hosts up stays linear.
pub fn by_name(live: &[LiveHost]) -> std::collections::HashMap<&str, &LiveHost> {
    let mut by_name = std::collections::HashMap::with_capacity(live.len());
    for l in live {
        by_name.entry(l.name.as_str()).or_insert(l);
    }
    by_name
}

/// Everything read from one host.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LiveHost {
    pub name: String,
    pub info: Option<HostInfo>,
    pub devices: Vec<LivePciDevice>,
    pub gpus: Vec<LiveGpu>,
    pub links: Vec<LiveLink>,
    pub hugepages: Vec<LiveHugepages>,
    pub domains: Vec<LiveDomain>,
    pub networks: Vec<LiveNetwork>,
    pub pools: Vec<LivePool>,
    /// The subnet manager's partition file, read where the host declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<LivePartitions>,
    /// What could not be read, per concern (`libvirt`, `nvml`, `netlink`), and why.
    pub errors: Vec<ConcernError>,
}

/// A partition file as read from its host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePartitions {
    pub path: String,
    /// `None`: the file does not exist.
    pub content: Option<String>,
}

/// Why one concern of a host could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcernError {
    /// `libvirt`, `nvml` or `netlink`.
    pub concern: String,
    #[serde(flatten)]
    pub error: error::DriverError,
}

impl LiveHost {
    /// Whether a concern was read without error.
    pub fn read(&self, concern: &str) -> bool {
        !self.errors.iter().any(|e| e.concern == concern)
    }
}
