//! Deriving an action's operations ([`for_action`]) from the facts the plan holds: the
//! desired object, the live one, the action's op and class — never from the words of its
//! changes. One module per concern: [`vm`] (domains, their seeds and vGPUs), [`network`],
//! [`storage`] (pools and volumes), [`link`] (links, VFs, hugepages), [`gpu`] (MIG mode,
//! passthrough binding, MIG instances).

mod gpu;
mod link;
mod network;
mod storage;
mod vm;

use std::time::Duration;

pub use vm::{seed_upload, vm_create, vm_update};

use super::{OpsError, Step};
use crate::desired::{DesiredHost, ResourceId, ResourceKind};
use crate::live::LiveHost;
use crate::plan::{Action, Op};

pub(super) fn refuse(message: String, help: &str) -> OpsError {
    OpsError { message, help: help.to_string() }
}

pub(super) fn missing(id: &ResourceId) -> OpsError {
    refuse(format!("`{id}` is not in the desired state"), "plan again")
}

/// The operations of one action. `host` is the desired host (absent when the factory no
/// longer declares it: only deletions are possible then), `live` what was read from it.
/// A VM's creation or update keeps the operations the diff gave it (it rendered the
/// definition once, with the live UUID).
pub fn for_action(
    factory: &str,
    host: Option<&DesiredHost>,
    live: Option<&LiveHost>,
    action: &Action,
    timeout: Duration,
) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    let absent = DesiredHost::default();
    let host = match host {
        Some(h) => h,
        None if action.op == Op::Delete => &absent,
        None => return Err(refuse(format!("host `{}` is not declared in the factory", id.host), "plan again")),
    };
    match id.kind {
        ResourceKind::Vm => vm::vm(factory, host, action, timeout),
        ResourceKind::Partitions => link::partitions(factory, host, id),
        ResourceKind::Network => network::network(factory, host, live, action),
        ResourceKind::Pool => storage::pool(host, live, action),
        ResourceKind::Volume => storage::volume(host, live, action),
        ResourceKind::Link => link::link(factory, host, live, action),
        ResourceKind::Hugepages => link::hugepages(host, id),
        ResourceKind::Vfs => link::vfs(host, live, id),
        ResourceKind::Gpu => gpu::gpu(host, live, action),
        ResourceKind::Mig => gpu::mig(host, live, action),
        ResourceKind::Host => Err(refuse(format!("`{id}` is a host: there is nothing to apply to it"), "plan again")),
    }
}
