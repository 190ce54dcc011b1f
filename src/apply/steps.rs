//! What carrying out one plan action takes: the driver calls, in order.
//!
//! Pure: an [`Action`] of the plan, the desired host it belongs to and what was read from
//! that host become a list of [`Step`]s; nothing here touches a host. The executor runs
//! an action's steps one after the other and stops at the first that fails, so every
//! list is ordered to leave the host in a state a re-plan understands: a domain is
//! defined before it starts, shut down before it is undefined, a volume recorded as
//! fabrik's before it is made (docs/apply.md lists every such pair and what a rerun does).

use std::net::IpAddr;
use std::time::Duration;

use crate::desired::{DesiredHost, GpuSetup, ResourceId, ResourceKind};
use crate::driver::LinkSpec;
use crate::live::{LinkKind, LiveHost};
use crate::plan::ownership::link_alias;
use crate::plan::{Action, Class, Op};
use crate::render;
use crate::spec::model::Power;
use crate::spec::types::{ByteSize, PageSize, PciAddress};

/// One driver call (or one record fabrik keeps of what it made).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    DefineDomain {
        name: String,
        xml: String,
    },
    StartDomain {
        name: String,
    },
    ResumeDomain {
        name: String,
    },
    /// Graceful shutdown; forced off when it has not stopped after `timeout`.
    ShutdownDomain {
        name: String,
        timeout: Duration,
    },
    UndefineDomain {
        name: String,
    },
    DomainAutostart {
        name: String,
        on: bool,
    },
    DefineNetwork {
        name: String,
        xml: String,
    },
    StartNetwork {
        name: String,
    },
    StopNetwork {
        name: String,
    },
    UndefineNetwork {
        name: String,
    },
    NetworkAutostart {
        name: String,
        on: bool,
    },
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
    /// Writes a VM's cloud-init seed image into its volume (see [`super::seed`]).
    UploadSeed {
        pool: String,
        name: String,
        image: crate::guest::SeedImage,
    },
    DeleteVolume {
        pool: String,
        name: String,
    },
    /// Writes the volume into `created.json`: fabrik made it (and may delete it when
    /// `deletable`).
    RecordVolume {
        id: ResourceId,
        deletable: bool,
    },
    /// Removes the volume from `created.json` once it is deleted.
    ForgetVolume {
        id: ResourceId,
    },
    CreateLink(LinkSpec),
    SetLink {
        name: String,
        mtu: Option<u32>,
        up: Option<bool>,
        master: Option<Option<String>>,
    },
    DeleteLink {
        name: String,
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
    DetachDevice {
        address: PciAddress,
    },
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
            Step::DefineDomain { .. }
            | Step::StartDomain { .. }
            | Step::ResumeDomain { .. }
            | Step::ShutdownDomain { .. }
            | Step::UndefineDomain { .. }
            | Step::DomainAutostart { .. }
            | Step::DefineNetwork { .. }
            | Step::StartNetwork { .. }
            | Step::StopNetwork { .. }
            | Step::UndefineNetwork { .. }
            | Step::NetworkAutostart { .. }
            | Step::DefinePool { .. }
            | Step::StartPool { .. }
            | Step::PoolAutostart { .. }
            | Step::CreateVolume { .. }
            | Step::CloneVolume { .. }
            | Step::ResizeVolume { .. }
            | Step::UploadSeed { .. }
            | Step::DeleteVolume { .. }
            | Step::DetachDevice { .. } => Concern::Virt,
            Step::SetMigMode { .. } | Step::CreateMigInstance { .. } | Step::DestroyMigInstance { .. } => Concern::Gpus,
            Step::CreateLink(_)
            | Step::SetLink { .. }
            | Step::DeleteLink { .. }
            | Step::AddFdb { .. }
            | Step::DelFdb { .. }
            | Step::SetHugepages { .. }
            | Step::SetSriovVfs { .. } => Concern::Links,
            Step::RecordVolume { .. } | Step::ForgetVolume { .. } => Concern::Local,
        }
    }

    /// What the step does, in the words of a progress line or an error.
    pub fn describe(&self) -> String {
        match self {
            Step::DefineDomain { name, .. } => format!("define domain `{name}`"),
            Step::StartDomain { name } => format!("start domain `{name}`"),
            Step::ResumeDomain { name } => format!("resume domain `{name}`"),
            Step::ShutdownDomain { name, timeout } => {
                format!("shut down domain `{name}` (forced off after {}s)", timeout.as_secs())
            }
            Step::UndefineDomain { name } => format!("undefine domain `{name}`"),
            Step::DomainAutostart { name, on } => format!("set autostart of domain `{name}` {}", on_off(*on)),
            Step::DefineNetwork { name, .. } => format!("define network `{name}`"),
            Step::StartNetwork { name } => format!("start network `{name}`"),
            Step::StopNetwork { name } => format!("stop network `{name}`"),
            Step::UndefineNetwork { name } => format!("undefine network `{name}`"),
            Step::NetworkAutostart { name, on } => format!("set autostart of network `{name}` {}", on_off(*on)),
            Step::DefinePool { name, .. } => format!("define storage pool `{name}`"),
            Step::StartPool { name } => format!("start storage pool `{name}`"),
            Step::PoolAutostart { name, on } => format!("set autostart of storage pool `{name}` {}", on_off(*on)),
            Step::CreateVolume { pool, name, .. } => format!("create volume `{pool}/{name}`"),
            Step::CloneVolume { pool, name, from_pool, from_volume, .. } => {
                format!("create volume `{pool}/{name}` from `{from_pool}/{from_volume}`")
            }
            Step::ResizeVolume { pool, name, capacity } => format!("grow volume `{pool}/{name}` to {capacity}"),
            Step::UploadSeed { pool, name, image } => {
                format!("write the cloud-init seed ({} bytes) to volume `{pool}/{name}`", image.0.len())
            }
            Step::DeleteVolume { pool, name } => format!("delete volume `{pool}/{name}`"),
            Step::RecordVolume { id, .. } => format!("record `{id}` as made by fabrik"),
            Step::ForgetVolume { id } => format!("forget `{id}`"),
            Step::CreateLink(spec) => format!("create link `{}`", spec.name),
            Step::SetLink { name, .. } => format!("set link `{name}`"),
            Step::DeleteLink { name } => format!("delete link `{name}`"),
            Step::AddFdb { vxlan, remote } => format!("add flood entry towards {remote} on `{vxlan}`"),
            Step::DelFdb { vxlan, remote } => format!("remove flood entry towards {remote} on `{vxlan}`"),
            Step::SetHugepages { numa_node, size, count } => {
                format!("set {count} hugepages of {size} on NUMA node {numa_node}")
            }
            Step::SetSriovVfs { nic, count } => format!("set {count} SR-IOV VFs on `{nic}`"),
            Step::DetachDevice { address } => format!("bind {address} to vfio-pci"),
            Step::SetMigMode { gpu, enabled } => format!("set MIG mode of {gpu} {}", on_off(*enabled)),
            Step::CreateMigInstance { gpu, profile, start, .. } => {
                format!("create MIG instance {profile}@{start} on {gpu}")
            }
            Step::DestroyMigInstance { gpu, profile, start } => {
                format!("destroy MIG instance {profile}@{start} on {gpu}")
            }
        }
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// How long a VM gets to shut down before it is forced off, unless the operator says.
pub const SHUTDOWN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// Why an action cannot be turned into steps (the plan and the desired state disagree,
/// or a saved plan names what this factory no longer has).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

fn missing(id: &ResourceId) -> StepError {
    StepError(format!("`{id}` is not in the desired state: plan again"))
}

/// The steps of one action.
pub fn steps(
    factory: &str,
    host: &DesiredHost,
    live: Option<&LiveHost>,
    action: &Action,
    shutdown_timeout: Duration,
) -> Result<Vec<Step>, StepError> {
    let id = &action.id;
    match id.kind {
        ResourceKind::Vm => vm(factory, host, live, action, shutdown_timeout),
        ResourceKind::Network => network(factory, host, action),
        ResourceKind::Pool => pool(host, action),
        ResourceKind::Volume => volume(host, action),
        ResourceKind::Link => link(factory, host, live, action),
        ResourceKind::Hugepages => {
            let h = host.hugepages.iter().find(|h| &h.id == id).ok_or_else(|| missing(id))?;
            Ok(vec![Step::SetHugepages { numa_node: h.numa_node, size: h.size, count: h.count }])
        }
        ResourceKind::Vfs => {
            let v = host.vfs.iter().find(|v| &v.id == id).ok_or_else(|| missing(id))?;
            let now =
                live.and_then(|l| l.links.iter().find(|l| l.name == v.nic)).and_then(|l| l.sriov_vfs).unwrap_or(0);
            // The kernel changes a VF count only from or to 0.
            let mut out = Vec::new();
            if now != 0 && v.count != 0 {
                out.push(Step::SetSriovVfs { nic: v.nic.clone(), count: 0 });
            }
            out.push(Step::SetSriovVfs { nic: v.nic.clone(), count: v.count });
            Ok(out)
        }
        ResourceKind::Gpu => gpu(host, action),
        ResourceKind::Mig => mig(host, action),
        ResourceKind::Host => Err(StepError(format!("`{id}` is a host: there is nothing to apply to it"))),
    }
}

fn changed(action: &Action, field: &str) -> bool {
    action.changes.iter().any(|c| c.field == field)
}

/// The rendered XML with the live domain's UUID: without it libvirt makes one up and
/// refuses the definition, since a domain of that name exists with another.
fn with_uuid(xml: String, uuid: &str) -> String {
    match xml.find("</name>") {
        Some(end) if !xml.contains("<uuid>") => {
            let at = end + "</name>".len();
            format!("{}<uuid>{uuid}</uuid>{}", &xml[..at], &xml[at..])
        }
        _ => xml,
    }
}

fn vm(
    factory: &str,
    host: &DesiredHost,
    live: Option<&LiveHost>,
    action: &Action,
    timeout: Duration,
) -> Result<Vec<Step>, StepError> {
    let id = &action.id;
    let name = id.name.clone();
    if action.op == Op::Delete {
        return Ok(vec![Step::ShutdownDomain { name: name.clone(), timeout }, Step::UndefineDomain { name }]);
    }
    let vm = host.vms.iter().find(|v| &v.id == id).ok_or_else(|| missing(id))?;
    let xml = render::domain(factory, host, vm);
    let run = vm.power == Power::Running;
    let mut out = Vec::new();
    match action.op {
        Op::Create | Op::Replace => {
            // A moved VM's old copy is on another host, shut down by a job of its own.
            if action.op == Op::Replace && action.moved_from.is_none() {
                out.push(Step::ShutdownDomain { name: name.clone(), timeout });
                out.push(Step::UndefineDomain { name: name.clone() });
            }
            out.extend(super::seed::for_vm(vm, action)?);
            out.push(Step::DefineDomain { name: name.clone(), xml });
            if vm.autostart {
                out.push(Step::DomainAutostart { name: name.clone(), on: true });
            }
            if run {
                out.push(Step::StartDomain { name });
            }
        }
        Op::Update => {
            let definition = action.changes.iter().any(|c| c.field != "power" && c.field != "autostart");
            if definition {
                // The new definition is written while the guest runs; it takes effect at
                // the next start, which a restart-now change makes right away.
                let uuid = live.and_then(|l| l.domains.iter().find(|d| d.name == name)).map(|d| d.uuid.as_str());
                let xml = match uuid {
                    Some(u) => with_uuid(xml, u),
                    None => xml,
                };
                out.extend(super::seed::for_vm(vm, action)?);
                out.push(Step::DefineDomain { name: name.clone(), xml });
            }
            let restart = definition && action.class == Class::RestartNow && run;
            let power = action.changes.iter().find(|c| c.field == "power");
            match power.map(|c| c.from.as_deref().unwrap_or("")) {
                _ if restart => {
                    out.push(Step::ShutdownDomain { name: name.clone(), timeout });
                    out.push(Step::StartDomain { name: name.clone() });
                }
                Some(_) if !run => out.push(Step::ShutdownDomain { name: name.clone(), timeout }),
                Some("paused") => out.push(Step::ResumeDomain { name: name.clone() }),
                Some(_) => out.push(Step::StartDomain { name: name.clone() }),
                None => {}
            }
            if changed(action, "autostart") {
                out.push(Step::DomainAutostart { name, on: vm.autostart });
            }
        }
        Op::Delete => unreachable!("handled above"),
    }
    Ok(out)
}

fn network(factory: &str, host: &DesiredHost, action: &Action) -> Result<Vec<Step>, StepError> {
    let id = &action.id;
    let name = id.name.clone();
    let stop = |out: &mut Vec<Step>| {
        out.push(Step::StopNetwork { name: name.clone() });
        out.push(Step::UndefineNetwork { name: name.clone() });
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
            out.push(Step::DefineNetwork { name: name.clone(), xml: render::network(factory, net) });
            out.push(Step::StartNetwork { name: name.clone() });
            out.push(Step::NetworkAutostart { name, on: true });
        }
        Op::Update => {
            if changed(action, "active") {
                out.push(Step::StartNetwork { name: name.clone() });
            }
            if changed(action, "autostart") {
                out.push(Step::NetworkAutostart { name, on: true });
            }
        }
        Op::Delete => unreachable!("handled above"),
    }
    Ok(out)
}

fn pool(host: &DesiredHost, action: &Action) -> Result<Vec<Step>, StepError> {
    let id = &action.id;
    let pool = host.pools.iter().find(|p| &p.id == id).ok_or_else(|| missing(id))?;
    let name = pool.name.clone();
    match action.op {
        Op::Create => Ok(vec![
            Step::DefinePool { name: name.clone(), xml: render::pool(pool) },
            Step::StartPool { name: name.clone() },
            Step::PoolAutostart { name, on: true },
        ]),
        Op::Update => {
            let mut out = Vec::new();
            if changed(action, "active") {
                out.push(Step::StartPool { name: name.clone() });
            }
            if changed(action, "autostart") {
                out.push(Step::PoolAutostart { name, on: true });
            }
            Ok(out)
        }
        Op::Replace | Op::Delete => Err(StepError(format!("fabrik never replaces or deletes a pool (`{id}`)"))),
    }
}

/// `pool/name` of a volume id.
fn volume_name(id: &ResourceId) -> Result<(String, String), StepError> {
    id.name
        .split_once('/')
        .map(|(p, v)| (p.to_string(), v.to_string()))
        .ok_or_else(|| StepError(format!("`{id}` does not name a volume as `pool/volume`")))
}

fn volume(host: &DesiredHost, action: &Action) -> Result<Vec<Step>, StepError> {
    let id = &action.id;
    let (pool, name) = volume_name(id)?;
    if action.op == Op::Delete {
        return Ok(vec![Step::DeleteVolume { pool, name }, Step::ForgetVolume { id: id.clone() }]);
    }
    let vol = host.volumes.iter().find(|v| &v.id == id).ok_or_else(|| missing(id))?;
    match action.op {
        Op::Create => {
            let xml = render::volume(host, vol);
            let copy = vol.image.as_ref().filter(|i| !(i.pool == vol.pool && i.volume == vol.name));
            let make = match copy {
                // A qcow2 overlay names its base as backing store: created, not cloned.
                Some(_) if xml.contains("<backingStore>") => Step::CreateVolume { pool, name, xml },
                Some(i) => {
                    Step::CloneVolume { pool, name, xml, from_pool: i.pool.clone(), from_volume: i.volume.clone() }
                }
                None => Step::CreateVolume { pool, name, xml },
            };
            // Recorded before it is made: an apply killed in between leaves a record of a
            // volume that is not there (the next plan creates it, recording it again),
            // never a volume fabrik made but forgot, which it could never delete.
            let mut out = vec![Step::RecordVolume { id: id.clone(), deletable: vol.deletable }, make];
            out.extend(super::seed::for_volume(host, vol)?);
            Ok(out)
        }
        Op::Update => match vol.capacity {
            Some(capacity) => Ok(vec![Step::ResizeVolume { pool, name, capacity }]),
            None => Ok(Vec::new()),
        },
        Op::Replace => Err(StepError(format!("fabrik never replaces a volume (`{id}`): it may hold data"))),
        Op::Delete => unreachable!("handled above"),
    }
}

fn link(factory: &str, host: &DesiredHost, live: Option<&LiveHost>, action: &Action) -> Result<Vec<Step>, StepError> {
    let id = &action.id;
    let name = id.name.clone();
    if action.op == Op::Delete {
        return Ok(vec![Step::DeleteLink { name }]);
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
    let up = Step::SetLink { name: name.clone(), mtu: None, up: Some(true), master: None };
    // A bridge network's parent NIC becomes the bridge's port.
    let uplink =
        |nic: &String| Step::SetLink { name: nic.clone(), mtu: None, up: None, master: Some(Some(name.clone())) };
    match action.op {
        Op::Create => Ok([Step::CreateLink(spec), up].into_iter().chain(link.uplink.iter().map(uplink)).collect()),
        Op::Replace => Ok([Step::DeleteLink { name: name.clone() }, Step::CreateLink(spec), up]
            .into_iter()
            .chain(link.uplink.iter().map(uplink))
            .collect()),
        Op::Update => {
            let mut out = Vec::new();
            if changed(action, "uplink") {
                out.extend(link.uplink.iter().map(uplink));
            }
            let (mtu, master, up) = (changed(action, "mtu"), changed(action, "master"), changed(action, "up"));
            if mtu || master || up {
                out.push(Step::SetLink {
                    name: name.clone(),
                    mtu: if mtu { link.mtu } else { None },
                    up: up.then_some(true),
                    master: master.then(|| link.master.clone()),
                });
            }
            if changed(action, "remotes")
                && let LinkKind::Vxlan { remotes: want, .. } = &link.kind
            {
                let have = live
                    .and_then(|l| l.links.iter().find(|l| l.name == name))
                    .map(|l| match &l.kind {
                        LinkKind::Vxlan { remotes, .. } => remotes.clone(),
                        _ => Vec::new(),
                    })
                    .unwrap_or_default();
                for r in want.iter().filter(|r| !have.contains(r)) {
                    out.push(Step::AddFdb { vxlan: name.clone(), remote: *r });
                }
                for r in have.iter().filter(|r| !want.contains(r)) {
                    out.push(Step::DelFdb { vxlan: name.clone(), remote: *r });
                }
            }
            Ok(out)
        }
        Op::Delete => unreachable!("handled above"),
    }
}

fn gpu(host: &DesiredHost, action: &Action) -> Result<Vec<Step>, StepError> {
    let id = &action.id;
    let gpu = host.gpus.iter().find(|g| &g.id == id).ok_or_else(|| missing(id))?;
    let mut out = Vec::new();
    if changed(action, "mig mode") {
        out.push(Step::SetMigMode { gpu: gpu.address, enabled: matches!(gpu.setup, GpuSetup::Mig { .. }) });
    }
    if changed(action, "driver") {
        out.push(Step::DetachDevice { address: gpu.address });
    }
    Ok(out)
}

/// `0000:1b:00.0/3g.71gb@4` → the GPU, the profile and the start.
fn mig_placement(id: &ResourceId) -> Result<(PciAddress, String, u8), StepError> {
    let bad = || StepError(format!("`{id}` does not name a MIG instance as `gpu/profile@start`"));
    let (gpu, rest) = id.name.split_once('/').ok_or_else(bad)?;
    let (profile, start) = rest.rsplit_once('@').ok_or_else(bad)?;
    let gpu = PciAddress::parse(gpu).map_err(|_| bad())?;
    Ok((gpu, profile.to_string(), start.parse().map_err(|_| bad())?))
}

fn mig(host: &DesiredHost, action: &Action) -> Result<Vec<Step>, StepError> {
    let id = &action.id;
    let (gpu, profile, start) = mig_placement(id)?;
    match action.op {
        Op::Delete => Ok(vec![Step::DestroyMigInstance { gpu, profile, start }]),
        Op::Create | Op::Replace | Op::Update => {
            let want = host
                .gpus
                .iter()
                .filter_map(|g| match &g.setup {
                    GpuSetup::Mig { instances } => Some(instances),
                    GpuSetup::Passthrough | GpuSetup::TimeSliced => None,
                })
                .flatten()
                .find(|i| &i.id == id)
                .ok_or_else(|| missing(id))?;
            let mut out = Vec::new();
            if action.op == Op::Replace {
                out.push(Step::DestroyMigInstance { gpu, profile: profile.clone(), start });
            }
            out.push(Step::CreateMigInstance { gpu, profile, profile_id: want.profile_id, start });
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mig_placements_parse() {
        let id = ResourceId::parse("mig:gpu01/0000:1b:00.0/3g.71gb@4").unwrap();
        let (gpu, profile, start) = mig_placement(&id).unwrap();
        assert_eq!(gpu.to_string(), "0000:1b:00.0");
        assert_eq!((profile.as_str(), start), ("3g.71gb", 4));
        assert!(mig_placement(&ResourceId::parse("mig:gpu01/nonsense").unwrap()).is_err());
    }

    #[test]
    fn the_live_uuid_goes_after_the_name() {
        let xml = with_uuid("<domain type='kvm'><name>a</name><memory/></domain>".into(), "u-1");
        assert_eq!(xml, "<domain type='kvm'><name>a</name><uuid>u-1</uuid><memory/></domain>");
    }

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
        };
        let action = Action::new(id, Op::Update, Class::Replace, "test");
        let set = |count| Step::SetSriovVfs { nic: "stor0".into(), count };
        for (now, want) in [(0, vec![set(16)]), (8, vec![set(0), set(16)])] {
            let live = LiveHost { name: "h1".into(), links: vec![nic(now)], ..LiveHost::default() };
            assert_eq!(steps("f", &host, Some(&live), &action, Duration::ZERO).unwrap(), want);
        }
    }

    #[test]
    fn volume_ids_split_at_the_first_slash() {
        let id = ResourceId::parse("volume:h1/vms/a-root").unwrap();
        assert_eq!(volume_name(&id).unwrap(), ("vms".to_string(), "a-root".to_string()));
    }
}
