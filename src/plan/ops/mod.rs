//! Typed operations: what carrying out one plan action takes, as the driver calls the
//! executor makes, in order. The plan emits them ([`Action::ops`]); the executor only
//! runs them — it never renders, parses an id or reads a plan line.
//!
//! Grouped by concern, which is also the driver that runs them: [`DomainOp`],
//! [`NetworkOp`] and [`StorageOp`] go to libvirt, [`LinkOp`] to netlink (the agent),
//! [`GpuOp`] to NVML (the agent), [`RecordOp`] to fabrik's own records.
//!
//! Every list is ordered to leave the host in a state a re-plan understands: a domain is
//! defined before it starts, shut down before it is undefined, a volume recorded as
//! fabrik's before it is made (docs/apply.md lists every such pair and what a rerun does).
//!
//! [`for_action`] ([`derive`], a module per concern) derives an action's operations from the facts the plan holds — the
//! desired object, the live one, the action's op and class — never from the words of its
//! changes. What the executor cannot carry out (replacing a pool or a volume) is an
//! [`OpsError`], which the plan reports as a plan error.

mod derive;

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use derive::{for_action, seed_upload, vm_create, vm_update};

use crate::desired::ResourceId;
use crate::desired::ib::Guid;
use crate::driver::LinkSpec;
use crate::spec::types::{ByteSize, PageSize, PciAddress};

/// How long a VM gets to shut down before it is forced off, unless the operator says.
pub const SHUTDOWN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// One driver call (or one record fabrik keeps of what it made).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "concern", rename_all = "kebab-case")]
pub enum Step {
    Domain(DomainOp),
    Network(NetworkOp),
    Storage(StorageOp),
    Link(LinkOp),
    Gpu(GpuOp),
    /// fabrik's own records, on this machine.
    Record(RecordOp),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum DomainOp {
    /// `xml` is the rendered definition, with the live domain's UUID when it redefines one.
    Define {
        name: String,
        xml: String,
    },
    Start {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Graceful shutdown; forced off when it has not stopped after `timeout_s` seconds.
    Shutdown {
        name: String,
        timeout_s: u64,
    },
    Undefine {
        name: String,
    },
    Autostart {
        name: String,
        on: bool,
    },
    /// Binds a PCI device to vfio-pci for passthrough (a node device of libvirt's).
    Detach {
        address: PciAddress,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum NetworkOp {
    Define { name: String, xml: String },
    Start { name: String },
    Stop { name: String },
    Undefine { name: String },
    Autostart { name: String, on: bool },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum StorageOp {
    DefinePool {
        name: String,
        xml: String,
    },
    StartPool {
        name: String,
    },
    PoolAutostart {
        name: String,
        on: bool,
    },
    CreateVolume {
        pool: String,
        name: String,
        xml: String,
    },
    CloneVolume {
        pool: String,
        name: String,
        xml: String,
        from_pool: String,
        from_volume: String,
    },
    ResizeVolume {
        pool: String,
        name: String,
        capacity: ByteSize,
    },
    /// Writes VM `vm`'s cloud-init seed into its volume. The plan carries the seed's
    /// hash, never its bytes (they hold the guest's secrets): `image` is built when the
    /// plan is made ([`seed_upload`]) or, for a saved plan, from the factory's files
    /// again and checked against `sha256` ([`super::seeds::fill`]). Its `Debug` shows
    /// only the size.
    UploadSeed {
        pool: String,
        name: String,
        vm: String,
        sha256: String,
        #[serde(skip)]
        image: Option<crate::guest::SeedImage>,
    },
    /// Writes a base image fetched from `source` (a URL or `file:`) into its volume. The
    /// front end fetches it and checks `sha256` before any host step runs
    /// ([`crate::image::prepare`]), and sets `file` to where the verified bytes are; the
    /// plan document holds only the source and the hash.
    UploadImage {
        pool: String,
        name: String,
        source: String,
        sha256: String,
        #[serde(skip)]
        file: Option<std::path::PathBuf>,
    },
    DeleteVolume {
        pool: String,
        name: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum LinkOp {
    Create {
        spec: LinkSpec,
    },
    /// `master` is set only when `set_master` (to none when `master` is `None`).
    Set {
        name: String,
        mtu: Option<u32>,
        up: Option<bool>,
        set_master: bool,
        master: Option<String>,
    },
    /// `ports`, for a bridge: the ports it had when the plan was made, all of them
    /// accepted by the plan ([`super::in_use`]); apply refuses to delete the bridge
    /// when it has any other port by then (a guest attached since).
    Delete {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ports: Option<Vec<String>>,
    },
    AddFdb {
        vxlan: String,
        remote: IpAddr,
    },
    DelFdb {
        vxlan: String,
        remote: IpAddr,
    },
    SetHugepages {
        numa_node: u32,
        size: PageSize,
        count: u64,
    },
    SetSriovVfs {
        nic: String,
        count: u32,
    },
    /// Sets fabrik's block of the subnet manager's partition file `path` to `block`,
    /// keeping the operator's lines ([`crate::render::opensm::with_block`]).
    WritePartitions {
        path: String,
        factory: String,
        block: String,
    },
    /// Has the subnet manager re-read its partition file (OpenSM: `SIGHUP`).
    ReloadSubnetManager,
    /// Writes the node and port GUID of a VM NIC's InfiniBand port
    /// ([`crate::desired::ib::IbPort`]) to its fixed VF `vf` of `pf`, before the VM is
    /// defined or started; writing the same GUIDs again changes nothing.
    SetVfGuids {
        pf: String,
        vf: u32,
        node_guid: Guid,
        port_guid: Guid,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum GpuOp {
    SetMigMode {
        gpu: PciAddress,
        enabled: bool,
    },
    CreateMigInstance {
        gpu: PciAddress,
        profile: String,
        profile_id: u32,
        start: u8,
    },
    /// Looks the instance up by its placement when it runs: NVML's ids are not stable.
    DestroyMigInstance {
        gpu: PciAddress,
        profile: String,
        start: u8,
    },
    /// Creates the vGPU device a VM reaches MIG instance `profile@start` through, named
    /// `uuid` (the mdev UUID the domain references; `render::domain::mdev_uuid`): on a
    /// free SR-IOV VF or as an mdev, as the host offers (`driver::vgpu`). Kept when it
    /// exists already.
    CreateVgpu {
        gpu: PciAddress,
        profile: String,
        start: u8,
        uuid: String,
        /// In SR-IOV mode, the VF the domain names ([`crate::desired::DesiredMigInstance::vgpu_vf`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vf: Option<PciAddress>,
    },
    /// Removes the vGPU device `uuid` (one fabrik created: only UUIDs fabrik derives
    /// are ever named); nothing when it is gone already.
    RemoveVgpu {
        gpu: PciAddress,
        uuid: String,
        /// In SR-IOV mode, the VF that carries it (a VF has no UUID in sysfs): the live
        /// VF of the instance's placement, when it carries a vGPU.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vf: Option<PciAddress>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum RecordOp {
    /// Writes the volume into `created.json`: fabrik made it (and may delete it when
    /// `deletable`).
    Volume { id: ResourceId, deletable: bool },
    /// Removes the volume from `created.json` once it is deleted.
    ForgetVolume { id: ResourceId },
}

/// Which of a host's drivers a step needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concern {
    Virt,
    Gpus,
    Links,
    /// fabrik's own records, on this machine.
    Local,
}

impl Step {
    pub fn concern(&self) -> Concern {
        match self {
            Step::Domain(_) | Step::Network(_) | Step::Storage(_) => Concern::Virt,
            Step::Gpu(_) => Concern::Gpus,
            Step::Link(_) => Concern::Links,
            Step::Record(_) => Concern::Local,
        }
    }

    /// What the step does, in the words of a progress line or an error.
    pub fn describe(&self) -> String {
        match self {
            Step::Domain(op) => match op {
                DomainOp::Define { name, .. } => format!("define domain `{name}`"),
                DomainOp::Start { name } => format!("start domain `{name}`"),
                DomainOp::Resume { name } => format!("resume domain `{name}`"),
                DomainOp::Shutdown { name, timeout_s } => {
                    format!("shut down domain `{name}` (forced off after {timeout_s}s)")
                }
                DomainOp::Undefine { name } => format!("undefine domain `{name}`"),
                DomainOp::Autostart { name, on } => format!("set autostart of domain `{name}` {}", on_off(*on)),
                DomainOp::Detach { address } => format!("bind {address} to vfio-pci"),
            },
            Step::Network(op) => match op {
                NetworkOp::Define { name, .. } => format!("define network `{name}`"),
                NetworkOp::Start { name } => format!("start network `{name}`"),
                NetworkOp::Stop { name } => format!("stop network `{name}`"),
                NetworkOp::Undefine { name } => format!("undefine network `{name}`"),
                NetworkOp::Autostart { name, on } => format!("set autostart of network `{name}` {}", on_off(*on)),
            },
            Step::Storage(op) => match op {
                StorageOp::DefinePool { name, .. } => format!("define storage pool `{name}`"),
                StorageOp::StartPool { name } => format!("start storage pool `{name}`"),
                StorageOp::PoolAutostart { name, on } => {
                    format!("set autostart of storage pool `{name}` {}", on_off(*on))
                }
                StorageOp::CreateVolume { pool, name, .. } => format!("create volume `{pool}/{name}`"),
                StorageOp::CloneVolume { pool, name, from_pool, from_volume, .. } => {
                    format!("create volume `{pool}/{name}` from `{from_pool}/{from_volume}`")
                }
                StorageOp::ResizeVolume { pool, name, capacity } => {
                    format!("grow volume `{pool}/{name}` to {capacity}")
                }
                StorageOp::UploadSeed { pool, name, sha256, .. } => format!(
                    "write the cloud-init seed (sha256:{}) to volume `{pool}/{name}`",
                    &sha256[..sha256.len().min(12)]
                ),
                StorageOp::UploadImage { pool, name, source, .. } => {
                    format!("write image from {source} to volume `{pool}/{name}`")
                }
                StorageOp::DeleteVolume { pool, name } => format!("delete volume `{pool}/{name}`"),
            },
            Step::Link(op) => match op {
                LinkOp::Create { spec } => format!("create link `{}`", spec.name),
                LinkOp::Set { name, .. } => format!("set link `{name}`"),
                LinkOp::Delete { name, .. } => format!("delete link `{name}`"),
                LinkOp::AddFdb { vxlan, remote } => format!("add flood entry towards {remote} on `{vxlan}`"),
                LinkOp::DelFdb { vxlan, remote } => format!("remove flood entry towards {remote} on `{vxlan}`"),
                LinkOp::SetHugepages { numa_node, size, count } => {
                    format!("set {count} hugepages of {size} on NUMA node {numa_node}")
                }
                LinkOp::SetSriovVfs { nic, count } => format!("set {count} SR-IOV VFs on `{nic}`"),
                LinkOp::WritePartitions { path, .. } => format!("write fabrik's partitions into {path}"),
                LinkOp::ReloadSubnetManager => "have the subnet manager re-read its partitions".to_string(),
                LinkOp::SetVfGuids { pf, vf, node_guid, port_guid } => {
                    format!("set node GUID {node_guid} and port GUID {port_guid} on VF {vf} of `{pf}`")
                }
            },
            Step::Gpu(op) => match op {
                GpuOp::SetMigMode { gpu, enabled } => format!("set MIG mode of {gpu} {}", on_off(*enabled)),
                GpuOp::CreateMigInstance { gpu, profile, start, .. } => {
                    format!("create MIG instance {profile}@{start} on {gpu}")
                }
                GpuOp::DestroyMigInstance { gpu, profile, start } => {
                    format!("destroy MIG instance {profile}@{start} on {gpu}")
                }
                GpuOp::CreateVgpu { gpu, profile, start, uuid, vf: Some(vf) } => {
                    format!("create vGPU on VF {vf} for MIG instance {profile}@{start} of {gpu} ({uuid})")
                }
                GpuOp::CreateVgpu { gpu, profile, start, uuid, vf: None } => {
                    format!("create vGPU {uuid} on MIG instance {profile}@{start} of {gpu}")
                }
                GpuOp::RemoveVgpu { gpu, uuid, vf: None } => format!("remove vGPU {uuid} from {gpu}"),
                GpuOp::RemoveVgpu { gpu, uuid, vf: Some(vf) } => format!("remove vGPU {uuid} from VF {vf} of {gpu}"),
            },
            Step::Record(op) => match op {
                RecordOp::Volume { id, .. } => format!("record `{id}` as made by fabrik"),
                RecordOp::ForgetVolume { id } => format!("forget `{id}`"),
            },
        }
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// Why an action cannot be carried out: a plan error (`fabrik::plan::cannot-apply`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OpsError {
    pub message: String,
    pub help: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_through_json() {
        let ops = vec![
            Step::Domain(DomainOp::Shutdown { name: "a".into(), timeout_s: 60 }),
            Step::Gpu(GpuOp::CreateMigInstance {
                gpu: PciAddress::parse("0000:1b:00.0").unwrap(),
                profile: "3g.71gb".into(),
                profile_id: 9,
                start: 4,
            }),
            Step::Link(LinkOp::Set { name: "br0".into(), mtu: Some(9000), up: None, set_master: true, master: None }),
        ];
        let text = serde_json::to_string(&ops).unwrap();
        assert!(text.contains(r#""concern":"domain","op":"shutdown""#), "{text}");
        assert_eq!(serde_json::from_str::<Vec<Step>>(&text).unwrap(), ops);
    }
}
