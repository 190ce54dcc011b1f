//! A converged live state made from the desired state alone, in memory.

use crate::desired::{Desired, GpuSetup};
use crate::driver::libvirt::owner;
use crate::live::link::{NIC_LAYER_ETHERNET, NIC_LAYER_INFINIBAND};
use crate::live::{
    LiveDomain, LiveGpu, LiveHost, LiveHugepages, LiveLink, LiveMigInstance, LiveNetwork, LivePciDevice, LivePool,
    LiveVolume, MigMode, PowerState,
};
use crate::plan::ownership::link_alias;
use crate::render;
use crate::spec::model::{NetKind, Power};
use crate::spec::types::ByteSize;

/// Live hosts that already run exactly the desired state: every object present, marked
/// as fabrik's, running or stopped as declared, its XML fabrik's own rendering.
///
/// For tests and benchmarks, which need a converged starting point without a host
/// (apply does not exist yet to converge simulated twins). Fields the plan does not
/// compare are filled with plausible constants (`uuid-<name>`, a 1 PiB pool).
pub fn converged(d: &Desired) -> Vec<LiveHost> {
    d.hosts
        .iter()
        .map(|h| {
            let mut live = LiveHost { name: h.name.clone(), ..LiveHost::default() };
            live.domains.reserve_exact(h.vms.len());
            for vm in &h.vms {
                let xml = exact(render::domain(&d.factory, h, vm));
                live.domains.push(LiveDomain {
                    name: vm.name.clone(),
                    uuid: format!("uuid-{}", vm.name),
                    state: if vm.power == Power::Running { PowerState::Running } else { PowerState::ShutOff },
                    autostart: vm.autostart,
                    vcpus: vm.vcpus,
                    memory: vm.memory,
                    hugepages: vm.hugepages,
                    vcpupin: Vec::new(),
                    emulatorpin: None,
                    numa_mode: None,
                    numa_nodeset: None,
                    numa_cells: Vec::new(),
                    hostdevs: vm.gpus.clone(),
                    interfaces: Vec::new(),
                    disks: Vec::new(),
                    owner: owner::parse_xml(&xml),
                    addresses: crate::desired::addr::records(vm),
                    xml,
                    running: None,
                });
            }
            for n in &h.networks {
                let xml = exact(render::network(&d.factory, n));
                live.networks.push(LiveNetwork {
                    name: n.name.clone(),
                    uuid: format!("uuid-{}", n.name),
                    active: true,
                    autostart: true,
                    bridge: n.bridge.clone(),
                    forward: None,
                    owner: owner::parse_xml(&xml),
                    xml,
                });
            }
            for p in &h.pools {
                live.pools.push(LivePool {
                    name: p.name.clone(),
                    uuid: format!("uuid-{}", p.name),
                    kind: p.kind.word().to_string(),
                    path: Some(p.path.clone()),
                    active: true,
                    autostart: true,
                    capacity: ByteSize(1 << 50),
                    available: ByteSize(1 << 49),
                    volumes: h
                        .volumes
                        .iter()
                        .filter(|v| v.pool == p.name)
                        .map(|v| LiveVolume {
                            name: v.name.clone(),
                            path: format!("{}/{}", p.path, v.name),
                            capacity: v.capacity.unwrap_or(ByteSize(0)),
                            allocation: ByteSize(0),
                            format: None,
                            owner: None,
                        })
                        .collect(),
                    owner: None,
                    xml: exact(render::pool(p)),
                });
            }
            for l in &h.links {
                live.links.push(LiveLink {
                    name: l.name.clone(),
                    kind: l.kind.clone(),
                    mtu: l.mtu.unwrap_or(1500),
                    up: true,
                    master: l.master.clone(),
                    alias: Some(link_alias(&d.factory, &l.id)),
                    sriov_vfs: None,
                    sriov_pci: None,
                });
            }
            for v in &h.vfs {
                // The NIC of an InfiniBand partition is an InfiniBand one.
                let infiniband =
                    h.networks.iter().any(|n| n.kind == NetKind::IbPartition && n.pf.as_ref() == Some(&v.nic));
                let layer = if infiniband { NIC_LAYER_INFINIBAND } else { NIC_LAYER_ETHERNET };
                live.links.push(LiveLink {
                    name: v.nic.clone(),
                    kind: crate::live::LinkKind::Other { kind: layer.into() },
                    mtu: 1500,
                    up: true,
                    master: None,
                    alias: None,
                    sriov_vfs: Some(v.count),
                    sriov_pci: None,
                });
            }
            // A bridge network's parent NIC: the bridge's port.
            for l in &h.links {
                let Some(nic) = &l.uplink else { continue };
                match live.links.iter_mut().find(|x| &x.name == nic) {
                    Some(x) => x.master = Some(l.name.clone()),
                    None => live.links.push(LiveLink {
                        name: nic.clone(),
                        kind: crate::live::LinkKind::Other { kind: "device".into() },
                        mtu: 1500,
                        up: true,
                        master: Some(l.name.clone()),
                        alias: None,
                        sriov_vfs: None,
                        sriov_pci: None,
                    }),
                }
            }
            for p in &h.hugepages {
                live.hugepages.push(LiveHugepages { numa_node: p.numa_node, size: p.size, total: p.count, free: 0 });
            }
            for g in &h.gpus {
                let instances = match &g.setup {
                    GpuSetup::Mig { instances } => instances
                        .iter()
                        .enumerate()
                        .map(|(k, i)| LiveMigInstance {
                            id: k as u32 + 1,
                            profile_id: i.profile_id,
                            profile: i.profile.clone(),
                            start: i.start,
                            size: i.size,
                            compute_instances: vec![0],
                        })
                        .collect(),
                    GpuSetup::Passthrough | GpuSetup::TimeSliced => Vec::new(),
                };
                let mig = matches!(g.setup, GpuSetup::Mig { .. });
                live.gpus.push(LiveGpu {
                    address: g.address,
                    uuid: format!("GPU-{}", g.address),
                    name: "NVIDIA".into(),
                    model: Some(g.model),
                    memory: ByteSize(0),
                    numa_node: Some(g.numa_node),
                    cpu_affinity: None,
                    nvlink_peers: Vec::new(),
                    mig: Some(MigMode { current: mig, pending: mig }),
                    instances,
                    vgpu: None,
                });
                live.devices.push(LivePciDevice {
                    address: g.address,
                    nodedev: String::new(),
                    vendor_id: 0x10de,
                    device_id: 0,
                    class: 0x030200,
                    product: None,
                    numa_node: Some(g.numa_node),
                    iommu_group: None,
                    driver: Some(if matches!(g.setup, GpuSetup::Passthrough) { "vfio-pci" } else { "nvidia" }.into()),
                    netdevs: Vec::new(),
                    sriov: None,
                });
            }
            shrink(&mut live);
            live
        })
        .collect()
}

/// A rendered document as a host returns it: its length, no spare capacity.
fn exact(mut xml: String) -> String {
    xml.shrink_to_fit();
    xml
}

/// The host's lists as an observation holds them (each read whole, at its length), not
/// with the spare room of being pushed to one by one.
fn shrink(live: &mut LiveHost) {
    live.networks.shrink_to_fit();
    live.pools.shrink_to_fit();
    live.links.shrink_to_fit();
    live.hugepages.shrink_to_fit();
    live.gpus.shrink_to_fit();
    live.devices.shrink_to_fit();
}
