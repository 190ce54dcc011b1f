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
//! [`for_action`] derives an action's operations from the facts the plan holds — the
//! desired object, the live one, the action's op and class — never from the words of its
//! changes. What the executor cannot carry out (replacing a pool or a volume) is an
//! [`OpsError`], which the plan reports as a plan error.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ownership::link_alias;
use super::{Action, Op};
use crate::desired::ib::Guid;
use crate::desired::{DesiredHost, GpuSetup, ResourceId, ResourceKind};
use crate::driver::LinkSpec;
use crate::live::{LinkKind, LiveHost, PowerState};
use crate::render;
use crate::spec::model::Power;
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
                GpuOp::RemoveVgpu { gpu, uuid } => format!("remove vGPU {uuid} from {gpu}"),
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

fn refuse(message: String, help: &str) -> OpsError {
    OpsError { message, help: help.to_string() }
}

fn missing(id: &ResourceId) -> OpsError {
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
        ResourceKind::Vm => vm(factory, host, action, timeout),
        ResourceKind::Partitions => {
            let p = host.partitions.as_ref().filter(|p| &p.id == id).ok_or_else(|| missing(id))?;
            Ok(vec![
                Step::Link(LinkOp::WritePartitions {
                    path: p.path.clone(),
                    factory: factory.to_string(),
                    block: p.block.clone(),
                }),
                Step::Link(LinkOp::ReloadSubnetManager),
            ])
        }
        ResourceKind::Network => network(factory, host, live, action),
        ResourceKind::Pool => pool(host, live, action),
        ResourceKind::Volume => volume(host, live, action),
        ResourceKind::Link => link(factory, host, live, action),
        ResourceKind::Hugepages => {
            let h = host.hugepages.iter().find(|h| &h.id == id).ok_or_else(|| missing(id))?;
            Ok(vec![Step::Link(LinkOp::SetHugepages { numa_node: h.numa_node, size: h.size, count: h.count })])
        }
        ResourceKind::Vfs => {
            let v = host.vfs.iter().find(|v| &v.id == id).ok_or_else(|| missing(id))?;
            let now =
                live.and_then(|l| l.links.iter().find(|l| l.name == v.nic)).and_then(|l| l.sriov_vfs).unwrap_or(0);
            let set = |count| Step::Link(LinkOp::SetSriovVfs { nic: v.nic.clone(), count });
            // The kernel changes a VF count only from or to 0.
            let mut out = Vec::new();
            if now != 0 && v.count != 0 {
                out.push(set(0));
            }
            out.push(set(v.count));
            Ok(out)
        }
        ResourceKind::Gpu => gpu(host, live, action),
        ResourceKind::Mig => mig(host, live, action),
        ResourceKind::Host => Err(refuse(format!("`{id}` is a host: there is nothing to apply to it"), "plan again")),
    }
}

/// A VM's operations when the plan replaces or deletes it; a creation or update keeps
/// the operations the diff made ([`vm_update`], [`vm_create`]).
fn vm(factory: &str, host: &DesiredHost, action: &Action, timeout: Duration) -> Result<Vec<Step>, OpsError> {
    let steps = vm_domain(factory, host, action, timeout)?;
    Ok(with_vf_guids(host, action, with_vgpus(host, action, steps)))
}

/// A VM's InfiniBand ports on fixed VFs: their GUIDs written to the VFs before the
/// domain is defined or started (after a reboot the VFs are new, and the subnet
/// manager knows the ports by these GUIDs only).
fn with_vf_guids(host: &DesiredHost, action: &Action, steps: Vec<Step>) -> Vec<Step> {
    let at = steps.iter().position(|s| {
        matches!(s, Step::Domain(DomainOp::Define { .. } | DomainOp::Start { .. } | DomainOp::Resume { .. }))
    });
    let Some(at) = at else { return steps };
    let mut out = steps;
    let set = host.ib_ports.iter().filter(|p| p.vm == action.id.name).filter_map(|p| {
        // A port whose VF address is unknown stays on the pool: libvirt picks its VF.
        p.vf_address?;
        Some(Step::Link(LinkOp::SetVfGuids {
            pf: p.pf.clone(),
            vf: p.vf?,
            node_guid: p.node_guid,
            port_guid: p.port_guid,
        }))
    });
    out.splice(at..at, set);
    out
}

/// The VM's MIG instances as vGPU devices.
fn vgpus_of(host: &DesiredHost, vm: &ResourceId) -> Vec<GpuOp> {
    let Some(vm) = host.vms.iter().find(|v| &v.id == vm) else { return Vec::new() };
    vm.mig
        .iter()
        .filter_map(|mig| {
            host.gpus.iter().find_map(|g| match &g.setup {
                GpuSetup::Mig { instances } => instances.iter().find(|i| &i.id == mig).map(|i| GpuOp::CreateVgpu {
                    gpu: g.address,
                    profile: i.profile.clone(),
                    start: i.start,
                    uuid: render::domain::mdev_uuid(mig),
                    vf: i.vgpu_vf,
                }),
                GpuSetup::Passthrough | GpuSetup::TimeSliced => None,
            })
        })
        .collect()
}

/// A VM's vGPU devices around its domain's operations: created before the domain is
/// defined or started (after a reboot they are gone, and a start needs them), removed
/// after it is undefined. A VM being deleted is gone from the desired state, so its
/// devices are found by the MIG instances its live domain names: the plan keeps none of
/// that, so the instance's own action removes the device before destroying it.
fn with_vgpus(host: &DesiredHost, action: &Action, steps: Vec<Step>) -> Vec<Step> {
    let at = steps.iter().position(|s| {
        matches!(s, Step::Domain(DomainOp::Define { .. } | DomainOp::Start { .. } | DomainOp::Resume { .. }))
    });
    let Some(at) = at else { return steps };
    let mut out = steps;
    let create = vgpus_of(host, &action.id).into_iter().map(Step::Gpu);
    out.splice(at..at, create);
    out
}

fn vm_domain(factory: &str, host: &DesiredHost, action: &Action, timeout: Duration) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    let name = id.name.clone();
    let timeout_s = timeout.as_secs();
    let down = || {
        vec![
            Step::Domain(DomainOp::Shutdown { name: name.clone(), timeout_s }),
            Step::Domain(DomainOp::Undefine { name: name.clone() }),
        ]
    };
    let mut out = match action.op {
        Op::Delete => return Ok(down()),
        Op::Create | Op::Update if !action.ops.is_empty() => action.ops.clone(),
        // An update is the diff's to make: one without operations changes nothing.
        Op::Update => return Ok(Vec::new()),
        Op::Create | Op::Replace => {
            let vm = host.vms.iter().find(|v| &v.id == id).ok_or_else(|| missing(id))?;
            // A moved VM's old copy is on another host, shut down by a job of its own.
            let mut out = if action.op == Op::Replace && action.moved_from.is_none() { down() } else { Vec::new() };
            out.extend(vm_create(name.clone(), render::domain(factory, host, vm), vm.autostart, vm.power));
            out
        }
    };
    // The seed is written before the definition that names it: when the VM is created,
    // or its seed changed (read by the guest at its next boot).
    let reseed = match action.op {
        Op::Create | Op::Replace => true,
        Op::Update => action.changes.iter().any(|c| c.field == "seed"),
        Op::Delete => false,
    };
    if reseed {
        let vm = host.vms.iter().find(|v| &v.id == id).ok_or_else(|| missing(id))?;
        if let Some(upload) = seed_upload(vm)? {
            let at = out.iter().position(|s| matches!(s, Step::Domain(DomainOp::Define { .. }))).unwrap_or(out.len());
            out.insert(at, upload);
        }
    }
    Ok(out)
}

/// The upload of a VM's seed image (`None` for a VM without seed), the image built here
/// from the desired VM.
pub fn seed_upload(vm: &crate::desired::DesiredVm) -> Result<Option<Step>, OpsError> {
    let Some(seed) = &vm.seed else { return Ok(None) };
    let image = crate::guest::volume::image(vm, seed).map_err(|e| {
        refuse(format!("cannot build the cloud-init seed of `{}`: {e}", vm.name), "fix the VM's template or parameters")
    })?;
    Ok(Some(Step::Storage(StorageOp::UploadSeed {
        pool: seed.pool.clone(),
        name: seed.volume.clone(),
        vm: vm.name.clone(),
        sha256: seed.sha256.clone(),
        image: Some(image),
    })))
}

/// A new domain: defined, autostart set, started when it should run.
pub fn vm_create(name: String, xml: String, autostart: bool, power: Power) -> Vec<Step> {
    let mut out = vec![Step::Domain(DomainOp::Define { name: name.clone(), xml })];
    if autostart {
        out.push(Step::Domain(DomainOp::Autostart { name: name.clone(), on: true }));
    }
    if power == Power::Running {
        out.push(Step::Domain(DomainOp::Start { name }));
    }
    out
}

/// What an update of a domain does, from the diff's facts: `define` is the new definition
/// (with the live UUID) when it changed, `restart` whether the running guest restarts for
/// it, `power` the wanted and the live power state, `autostart` the new setting when it
/// changed.
pub fn vm_update(
    name: &str,
    define: Option<String>,
    restart: bool,
    power: (Power, PowerState),
    autostart: Option<bool>,
    timeout: Duration,
) -> Vec<Step> {
    let name = name.to_string();
    let timeout_s = timeout.as_secs();
    let mut out = Vec::new();
    if let Some(xml) = define {
        // The new definition is written while the guest runs; it takes effect at the
        // next start, which a restart-now change makes right away.
        out.push(Step::Domain(DomainOp::Define { name: name.clone(), xml }));
    }
    match power {
        (Power::Running, _) if restart => {
            out.push(Step::Domain(DomainOp::Shutdown { name: name.clone(), timeout_s }));
            out.push(Step::Domain(DomainOp::Start { name: name.clone() }));
        }
        (Power::Running, PowerState::Running) | (Power::Stopped, PowerState::ShutOff) => {}
        (Power::Running, PowerState::Paused) => out.push(Step::Domain(DomainOp::Resume { name: name.clone() })),
        (Power::Running, PowerState::ShutOff | PowerState::Crashed | PowerState::Other) => {
            out.push(Step::Domain(DomainOp::Start { name: name.clone() }))
        }
        (Power::Stopped, PowerState::Running | PowerState::Paused | PowerState::Crashed | PowerState::Other) => {
            out.push(Step::Domain(DomainOp::Shutdown { name: name.clone(), timeout_s }))
        }
    }
    if let Some(on) = autostart {
        out.push(Step::Domain(DomainOp::Autostart { name, on }));
    }
    out
}

fn network(factory: &str, host: &DesiredHost, live: Option<&LiveHost>, action: &Action) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    let name = id.name.clone();
    let stop = |out: &mut Vec<Step>| {
        out.push(Step::Network(NetworkOp::Stop { name: name.clone() }));
        out.push(Step::Network(NetworkOp::Undefine { name: name.clone() }));
    };
    let mut out = Vec::new();
    if action.op == Op::Delete {
        stop(&mut out);
        return Ok(out);
    }
    let net = host.networks.iter().find(|n| &n.id == id).ok_or_else(|| missing(id))?;
    match action.op {
        Op::Create | Op::Replace => {
            if action.op == Op::Replace {
                stop(&mut out);
            }
            out.push(Step::Network(NetworkOp::Define { name: name.clone(), xml: render::network(factory, net) }));
            out.push(Step::Network(NetworkOp::Start { name: name.clone() }));
            out.push(Step::Network(NetworkOp::Autostart { name, on: true }));
        }
        Op::Update => {
            let l = live.and_then(|l| l.networks.iter().find(|n| n.name == name));
            if l.is_none_or(|l| !l.active) {
                out.push(Step::Network(NetworkOp::Start { name: name.clone() }));
            }
            if l.is_none_or(|l| !l.autostart) {
                out.push(Step::Network(NetworkOp::Autostart { name, on: true }));
            }
        }
        Op::Delete => unreachable!("handled above"),
    }
    Ok(out)
}

fn pool(host: &DesiredHost, live: Option<&LiveHost>, action: &Action) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    match action.op {
        Op::Replace | Op::Delete => {
            return Err(refuse(
                format!("fabrik never replaces or deletes a storage pool (`{id}`): its volumes may hold data"),
                "leave it out of --replace; to rebuild it, remove it by hand (virsh pool-destroy, pool-undefine), then apply",
            ));
        }
        Op::Create | Op::Update => {}
    }
    let pool = host.pools.iter().find(|p| &p.id == id).ok_or_else(|| missing(id))?;
    let name = pool.name.clone();
    match action.op {
        Op::Create => Ok(vec![
            Step::Storage(StorageOp::DefinePool { name: name.clone(), xml: render::pool(pool) }),
            Step::Storage(StorageOp::StartPool { name: name.clone() }),
            Step::Storage(StorageOp::PoolAutostart { name, on: true }),
        ]),
        _ => {
            let l = live.and_then(|l| l.pools.iter().find(|p| p.name == name));
            let mut out = Vec::new();
            if l.is_none_or(|l| !l.active) {
                out.push(Step::Storage(StorageOp::StartPool { name: name.clone() }));
            }
            if l.is_none_or(|l| !l.autostart) {
                out.push(Step::Storage(StorageOp::PoolAutostart { name, on: true }));
            }
            Ok(out)
        }
    }
}

fn volume(host: &DesiredHost, live: Option<&LiveHost>, action: &Action) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    if action.op == Op::Replace {
        return Err(refuse(
            format!("fabrik never replaces a volume (`{id}`): it may hold data"),
            "leave it out of --replace; to start it over, delete it by hand (virsh vol-delete), then apply",
        ));
    }
    if action.op == Op::Delete {
        // The live volume the id names, found by the id the diff gave it.
        let found = live.into_iter().flat_map(|l| &l.pools).find_map(|p| {
            p.volumes
                .iter()
                .find(|v| &crate::desired::storage::volume_id(&id.host, &p.name, &v.name) == id)
                .map(|v| (p.name.clone(), v.name.clone()))
        });
        let (pool, name) = found.ok_or_else(|| {
            refuse(format!("volume `{id}` to delete was not seen on its host"), "plan again against the host")
        })?;
        return Ok(vec![
            Step::Storage(StorageOp::DeleteVolume { pool, name }),
            Step::Record(RecordOp::ForgetVolume { id: id.clone() }),
        ]);
    }
    let vol = host.volumes.iter().find(|v| &v.id == id).ok_or_else(|| missing(id))?;
    let (pool, name) = (vol.pool.clone(), vol.name.clone());
    match action.op {
        Op::Create => {
            let xml = render::volume(host, vol);
            let copy = vol.image.as_ref().filter(|i| !(i.pool == vol.pool && i.volume == vol.name));
            let make = match copy {
                // A qcow2 overlay names its base as backing store: created, not cloned.
                Some(_) if render::storage::backing(host, vol).is_some() => StorageOp::CreateVolume { pool, name, xml },
                Some(i) => {
                    StorageOp::CloneVolume { pool, name, xml, from_pool: i.pool.clone(), from_volume: i.volume.clone() }
                }
                None => StorageOp::CreateVolume { pool, name, xml },
            };
            // Recorded before it is made: an apply killed in between leaves a record of a
            // volume that is not there (the next plan creates it, recording it again),
            // never a volume fabrik made but forgot, which it could never delete.
            let mut out =
                vec![Step::Record(RecordOp::Volume { id: id.clone(), deletable: vol.deletable }), Step::Storage(make)];
            // A base image fabrik fetches is written as soon as its volume is made.
            if let Some(i) = vol.image.as_ref().filter(|i| i.pool == vol.pool && i.volume == vol.name)
                && let Some(sha256) = &i.sha256
                && crate::image::Source::parse(&i.source).is_some()
            {
                out.push(Step::Storage(StorageOp::UploadImage {
                    pool: vol.pool.clone(),
                    name: vol.name.clone(),
                    source: i.source.clone(),
                    sha256: sha256.clone(),
                    file: None,
                }));
            }
            // A seed volume is written as soon as it is made.
            let owner =
                host.vms.iter().find(|v| v.seed.as_ref().is_some_and(|s| s.pool == vol.pool && s.volume == vol.name));
            if let Some(vm) = owner {
                out.extend(seed_upload(vm)?);
            }
            Ok(out)
        }
        _ => match vol.capacity {
            Some(capacity) => Ok(vec![Step::Storage(StorageOp::ResizeVolume { pool, name, capacity })]),
            None => Ok(Vec::new()),
        },
    }
}

fn link(factory: &str, host: &DesiredHost, live: Option<&LiveHost>, action: &Action) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    let name = id.name.clone();
    if action.op == Op::Delete {
        let links = live.map(|l| l.links.as_slice()).unwrap_or_default();
        let bridge = links.iter().any(|l| l.name == name && l.kind == LinkKind::Bridge);
        let ports = bridge.then(|| {
            links.iter().filter(|l| l.master.as_deref() == Some(name.as_str())).map(|l| l.name.clone()).collect()
        });
        return Ok(vec![Step::Link(LinkOp::Delete { name, ports })]);
    }
    let link = host.links.iter().find(|l| &l.id == id).ok_or_else(|| missing(id))?;
    let spec = LinkSpec {
        name: name.clone(),
        kind: link.kind.clone(),
        mtu: link.mtu,
        master: link.master.clone(),
        alias: Some(link_alias(factory, id)),
    };
    // The kernel makes links down; fabrik's are up.
    let up = Step::Link(LinkOp::Set { name: name.clone(), mtu: None, up: Some(true), set_master: false, master: None });
    // A bridge network's parent NIC becomes the bridge's port.
    let uplink = |nic: &String| {
        Step::Link(LinkOp::Set { name: nic.clone(), mtu: None, up: None, set_master: true, master: Some(name.clone()) })
    };
    let links = live.map(|l| l.links.as_slice()).unwrap_or_default();
    match action.op {
        Op::Create => {
            Ok([Step::Link(LinkOp::Create { spec }), up].into_iter().chain(link.uplink.iter().map(uplink)).collect())
        }
        Op::Replace => Ok([
            Step::Link(LinkOp::Delete { name: name.clone(), ports: None }),
            Step::Link(LinkOp::Create { spec }),
            up,
        ]
        .into_iter()
        .chain(link.uplink.iter().map(uplink))
        .collect()),
        _ => {
            let l = links.iter().find(|l| l.name == name);
            let mut out = Vec::new();
            if let Some(nic) = &link.uplink
                && links.iter().find(|l| &l.name == nic).is_none_or(|n| n.master.as_deref() != Some(name.as_str()))
            {
                out.push(uplink(nic));
            }
            let mtu = link.mtu.filter(|m| l.is_none_or(|l| l.mtu != *m));
            let set_master = l.is_none_or(|l| l.master != link.master);
            let up = l.is_none_or(|l| !l.up).then_some(true);
            if mtu.is_some() || set_master || up.is_some() {
                let master = link.master.clone();
                out.push(Step::Link(LinkOp::Set { name: name.clone(), mtu, up, set_master, master }));
            }
            if let LinkKind::Vxlan { remotes: want, .. } = &link.kind {
                let have = match l.map(|l| &l.kind) {
                    Some(LinkKind::Vxlan { remotes, .. }) => remotes.clone(),
                    _ => Vec::new(),
                };
                for r in want.iter().filter(|r| !have.contains(r)) {
                    out.push(Step::Link(LinkOp::AddFdb { vxlan: name.clone(), remote: *r }));
                }
                for r in have.iter().filter(|r| !want.contains(r)) {
                    out.push(Step::Link(LinkOp::DelFdb { vxlan: name.clone(), remote: *r }));
                }
            }
            Ok(out)
        }
    }
}

fn gpu(host: &DesiredHost, live: Option<&LiveHost>, action: &Action) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    let gpu = host.gpus.iter().find(|g| &g.id == id).ok_or_else(|| missing(id))?;
    let want_mig = matches!(gpu.setup, GpuSetup::Mig { .. });
    let mut out = Vec::new();
    let mode = live.and_then(|l| l.gpus.iter().find(|g| g.address == gpu.address)).and_then(|g| g.mig);
    if mode.is_some_and(|m| m.current != want_mig) {
        out.push(Step::Gpu(GpuOp::SetMigMode { gpu: gpu.address, enabled: want_mig }));
    }
    let driver =
        live.and_then(|l| l.devices.iter().find(|d| d.address == gpu.address)).and_then(|d| d.driver.as_deref());
    if matches!(gpu.setup, GpuSetup::Passthrough) && driver != Some(super::diff::gpu::VFIO_DRIVER) {
        out.push(Step::Domain(DomainOp::Detach { address: gpu.address }));
    }
    Ok(out)
}

fn mig(host: &DesiredHost, live: Option<&LiveHost>, action: &Action) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    // The live instance the id names (to destroy), found by the id the diff gave it.
    let have = live.into_iter().flat_map(|l| &l.gpus).find_map(|g| {
        g.instances
            .iter()
            .find(|i| &crate::desired::build::mig_id(&id.host, &g.address, &i.profile, i.start) == id)
            .map(|i| (g.address, i.profile.clone(), i.start))
    });
    let destroy =
        |(gpu, profile, start): (PciAddress, String, u8)| Step::Gpu(GpuOp::DestroyMigInstance { gpu, profile, start });
    // The vGPU a VM had on the instance goes first (the host refuses to destroy an
    // instance that carries one); its UUID is fabrik's, derived from the instance's id.
    let unplug = |gpu: PciAddress| Step::Gpu(GpuOp::RemoveVgpu { gpu, uuid: render::domain::mdev_uuid(id) });
    if action.op == Op::Delete {
        let have = have.ok_or_else(|| {
            refuse(format!("MIG instance `{id}` to destroy was not seen on its host"), "plan again against the host")
        })?;
        return Ok(vec![unplug(have.0), destroy(have)]);
    }
    let (gpu, want) = host
        .gpus
        .iter()
        .filter_map(|g| match &g.setup {
            GpuSetup::Mig { instances } => Some(instances.iter().map(move |i| (g.address, i))),
            GpuSetup::Passthrough | GpuSetup::TimeSliced => None,
        })
        .flatten()
        .find(|(_, i)| &i.id == id)
        .ok_or_else(|| missing(id))?;
    let mut out = Vec::new();
    if action.op == Op::Replace
        && let Some(have) = have
    {
        out.push(unplug(have.0));
        out.push(destroy(have));
    }
    out.push(Step::Gpu(GpuOp::CreateMigInstance {
        gpu,
        profile: want.profile.clone(),
        profile_id: want.profile_id,
        start: want.start,
    }));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Class;

    #[test]
    fn a_vf_count_changes_through_zero() {
        let id = ResourceId::parse("vfs:h1/stor0").unwrap();
        let host = DesiredHost {
            name: "h1".into(),
            vfs: vec![crate::desired::DesiredVfs { id: id.clone(), nic: "stor0".into(), count: 16 }],
            ..DesiredHost::default()
        };
        let nic = |n: u32| crate::live::LiveLink {
            name: "stor0".into(),
            kind: LinkKind::Other { kind: "device".into() },
            mtu: 9000,
            up: true,
            master: None,
            alias: None,
            sriov_vfs: Some(n),
            sriov_pci: None,
        };
        let action = Action::new(id, Op::Update, Class::Replace, "test");
        let set = |count| Step::Link(LinkOp::SetSriovVfs { nic: "stor0".into(), count });
        for (now, want) in [(0, vec![set(16)]), (8, vec![set(0), set(16)])] {
            let live = LiveHost { name: "h1".into(), links: vec![nic(now)], ..LiveHost::default() };
            assert_eq!(for_action("f", Some(&host), Some(&live), &action, Duration::ZERO).unwrap(), want);
        }
    }

    #[test]
    fn a_pool_or_volume_is_never_replaced() {
        for id in ["pool:h1/vms", "volume:h1/vms/a-root"] {
            let action = Action::new(ResourceId::parse(id).unwrap(), Op::Replace, Class::Replace, "test");
            let e = for_action("f", Some(&DesiredHost::default()), None, &action, Duration::ZERO).unwrap_err();
            assert!(e.message.contains("never replaces"), "{e:?}");
        }
    }

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
