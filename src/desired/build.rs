//! `Spec` → `Desired`: placement (see [`crate::place`]) turned into per-host resources.
//!
//! Every list comes out sorted by resource id, and every derived value (MACs, spec
//! hashes) is a pure function of names, so the same files always give the same
//! `Desired`, byte for byte.

use std::collections::BTreeMap;

use super::{
    Desired, DesiredDisk, DesiredGpu, DesiredHost, DesiredHugepages, DesiredMigInstance, DesiredNic, DesiredVfs,
    DesiredVm, GpuSetup, GuestCell, ResourceId, ResourceKind,
};
use crate::diag::Diagnostic;
use crate::place::{self, GpuState, Placement};
use crate::spec::model::{DiskBus, Firmware, NicModel, Power, Spec};
use crate::spec::types::{ByteSize, CpuSet};

/// Builds the desired state of a factory that validates. Fails only where placement
/// does (`fabrik::place::no-host`), or where the rails of the GPUs placed run out of VFs
/// (`fabrik::place::rail-vfs`).
pub fn build(spec: &Spec) -> Result<Desired, Vec<Diagnostic>> {
    let placement = place::place(spec)?;
    let mut hosts: Vec<DesiredHost> = spec
        .hosts
        .iter()
        .map(|h| DesiredHost {
            name: h.name.value.clone(),
            uri: h.uri.value.clone(),
            arch: h.arch(),
            ..DesiredHost::default()
        })
        .collect();
    let vm_ids: Vec<ResourceId> = placement
        .vms
        .iter()
        .map(|v| ResourceId::new(ResourceKind::Vm, &spec.hosts[v.host].name.value, &v.name))
        .collect();
    for (h, out) in hosts.iter_mut().enumerate() {
        out.hugepages = hugepages(spec, h);
        out.vfs = vfs(spec, h);
        out.gpus = gpus(&placement, h, &vm_ids);
    }
    for (i, v) in placement.vms.iter().enumerate() {
        let vm = vm(spec, &placement, i, &vm_ids[i]);
        hosts[v.host].vms.push(vm);
    }
    let factory = spec.factory.as_ref().map_or_else(String::new, |f| f.value.clone());
    // Every VM's spec hash is computed once, by `addr::assign`, when its MACs and
    // addresses are known: the hashed fields are all set by then.
    super::mac::assign(&factory, &mut hosts, &BTreeMap::new(), false);
    let ipam = super::net::ipam(spec);
    super::addr::assign(&factory, &ipam, &mut hosts, &BTreeMap::new());
    super::net::add(spec, &mut hosts);
    super::rails::add_networks(&mut hosts);
    let rail_errors = super::rails::check_vfs(spec, &hosts);
    if !rail_errors.is_empty() {
        return Err(rail_errors);
    }
    super::ib::add(spec, &factory, &mut hosts);
    let block = crate::render::opensm::partitions_conf_of(&factory, &hosts);
    for (h, out) in hosts.iter_mut().enumerate() {
        if let Some(path) = spec.hosts[h].partitions_path() {
            let id = ResourceId::new(ResourceKind::Partitions, &out.name, "opensm");
            out.partitions = Some(super::DesiredPartitions { id, path: path.to_string(), block: block.clone() });
        }
    }
    super::storage::add(spec, &placement, &mut hosts);
    crate::guest::volume::add(spec, &mut hosts);
    for h in &mut hosts {
        h.hugepages.sort_by(|a, b| a.id.cmp(&b.id));
        h.gpus.sort_by(|a, b| a.id.cmp(&b.id));
        h.links.sort_by(|a, b| a.id.cmp(&b.id));
        h.networks.sort_by(|a, b| a.id.cmp(&b.id));
        h.pools.sort_by(|a, b| a.id.cmp(&b.id));
        h.volumes.sort_by(|a, b| a.id.cmp(&b.id));
        h.vms.sort_by(|a, b| a.id.cmp(&b.id));
        // Each list was pushed to one by one: the plan holds them without the room
        // left to grow.
        h.hugepages.shrink_to_fit();
        h.vfs.shrink_to_fit();
        h.gpus.shrink_to_fit();
        h.links.shrink_to_fit();
        h.networks.shrink_to_fit();
        h.pools.shrink_to_fit();
        h.volumes.shrink_to_fit();
        h.vms.shrink_to_fit();
    }
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Desired { factory, hosts, ipam })
}

/// Every NIC that declares `sriov-vfs` gets that many VFs.
fn vfs(spec: &Spec, h: usize) -> Vec<DesiredVfs> {
    let host = &spec.hosts[h];
    let mut out: Vec<DesiredVfs> = host
        .nics
        .iter()
        .filter_map(|n| {
            let count = n.sriov_vfs.as_ref()?.value;
            Some(DesiredVfs {
                id: ResourceId::new(ResourceKind::Vfs, &host.name.value, &n.name.value),
                nic: n.name.value.clone(),
                count,
            })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn hugepages(spec: &Spec, h: usize) -> Vec<DesiredHugepages> {
    let host = &spec.hosts[h];
    let mut out = Vec::new();
    for node in &host.numa_nodes {
        for (size, count) in &node.hugepages {
            out.push(DesiredHugepages {
                id: hugepages_id(&host.name.value, node.id.value, size.value),
                numa_node: node.id.value,
                size: size.value,
                count: count.value,
            });
        }
    }
    out
}

pub(crate) fn hugepages_id(host: &str, node: u32, size: crate::spec::types::PageSize) -> ResourceId {
    ResourceId::new(ResourceKind::Hugepages, host, format!("node{node}-{size}"))
}

pub(crate) fn mig_id(host: &str, address: &crate::spec::types::PciAddress, profile: &str, start: u8) -> ResourceId {
    ResourceId::new(ResourceKind::Mig, host, format!("{address}/{profile}@{start}"))
}

/// The GPUs fabrik owns on host `h`: every one declared in a mode other than `host`.
fn gpus(placement: &Placement<'_>, h: usize, vm_ids: &[ResourceId]) -> Vec<DesiredGpu> {
    let state = &placement.hosts[h];
    let host = state.name();
    state
        .gpus
        .iter()
        .filter_map(|slot| {
            let gpu = slot.gpu;
            let setup = match &slot.state {
                GpuState::Host => return None,
                GpuState::Passthrough { .. } => GpuSetup::Passthrough,
                GpuState::TimeSliced { .. } => GpuSetup::TimeSliced,
                GpuState::Mig { slots } => GpuSetup::Mig {
                    instances: slots
                        .iter()
                        .map(|s| DesiredMigInstance {
                            id: mig_id(host, &gpu.address.value, s.profile.name, s.start),
                            profile: s.profile.name.to_string(),
                            profile_id: s.profile.id,
                            start: s.start,
                            size: s.profile.memory_slices,
                            vm: s.vm.map(|v| vm_ids[v].clone()),
                            vgpu_vf: None,
                        })
                        .collect(),
                },
            };
            Some(DesiredGpu {
                id: ResourceId::new(ResourceKind::Gpu, host, gpu.address.value.to_string()),
                address: gpu.address.value,
                model: gpu.model.value,
                numa_node: gpu.numa_node.value,
                setup,
            })
        })
        .collect()
}

fn vm(spec: &Spec, placement: &Placement<'_>, i: usize, id: &ResourceId) -> DesiredVm {
    let placed = &placement.vms[i];
    let e = &placed.entry;
    let state = &placement.hosts[placed.host];
    let a = &placed.assignment;
    let gpu = |g: usize| state.gpus[g].gpu;
    let host = state.name();
    let mig = a
        .mig
        .iter()
        .map(|&(g, k)| match &state.gpus[g].state {
            GpuState::Mig { slots } => mig_id(host, &gpu(g).address.value, slots[k].profile.name, slots[k].start),
            _ => unreachable!("a MIG assignment names a GPU in MIG mode"),
        })
        .collect();
    let mut numa_cells: Vec<GuestCell> = a
        .cells
        .iter()
        .enumerate()
        .map(|(k, (node, vcpus, memory))| GuestCell {
            id: k as u32,
            vcpus: CpuSet::from_cpus(vcpus.clone()),
            memory: ByteSize(*memory),
            host_node: *node,
            distances: Vec::new(),
        })
        .collect();
    let host_spec = &spec.hosts[placed.host];
    if !numa_cells.is_empty() {
        super::topology::add_memory_cells(host_spec, a.gpus.iter().map(|&g| gpu(g).address.value), &mut numa_cells);
        super::topology::add_distances(host_spec, &mut numa_cells);
    }
    let mut nics: Vec<DesiredNic> = e
        .nic_list()
        .iter()
        .map(|n| DesiredNic {
            network: n.network.value.clone(),
            sriov: n.model.value == NicModel::Sriov,
            // A derived MAC is chosen once every VM is known (`mac::assign`).
            mac: n.mac.as_ref().map(|m| m.value.clone()).unwrap_or_default(),
            declared: n.mac.is_some(),
            // Allocated once every VM is known (`addr::assign`).
            address: n.address.as_ref().map(|a| {
                Box::new(super::addr::NicAddress {
                    ip: a.value,
                    prefix: 0,
                    gateway: None,
                    dns: Vec::new(),
                    declared: true,
                })
            }),
            rail: None,
        })
        .collect();
    let gpu_addresses: Vec<_> = a.gpus.iter().map(|&g| gpu(g).address.value).collect();
    super::rails::expand(spec, host_spec, &gpu_addresses, &mut nics);
    let (mut virtio, mut other) = (0, 0);
    let disks = e
        .disks()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|d| {
            let target = match d.bus.value {
                DiskBus::Virtio => ("vd", &mut virtio),
                DiskBus::Scsi | DiskBus::Sata => ("sd", &mut other),
            };
            let name = format!("{}{}", target.0, disk_letter(*target.1));
            *target.1 += 1;
            DesiredDisk {
                target: name,
                bus: d.bus.value,
                pool: super::storage::disk_pool(spec, d),
                volume: super::storage::volume_name(&placed.name, d),
            }
        })
        .collect();
    let power = e.vm.power.value;
    let mut vm = DesiredVm {
        id: id.clone(),
        name: placed.name.clone(),
        tenant: e.vm.tenant.value.clone(),
        vcpus: e.vcpu_count(),
        memory: ByteSize(e.memory_bytes()),
        hugepages: e.hugepages().map(|h| h.value),
        vcpu_pins: a.vcpu_pins.clone(),
        emulator_pin: emulator_pin(placement, placed.host, a),
        numa_node: a.numa_node,
        numa_cells,
        gpus: a.gpus.iter().map(|&g| gpu(g).address.value).collect(),
        mig,
        time_sliced: a.time_sliced.iter().map(|&g| gpu(g).address.value).collect(),
        nics,
        disks,
        // Arm's `virt` machine boots only UEFI (`fabrik::host::arch-firmware`).
        firmware: e.firmware().map(|f| f.value).unwrap_or(match host_spec.arch() {
            crate::hw::Arch::X86_64 => Firmware::Bios,
            crate::hw::Arch::Aarch64 => Firmware::Uefi,
        }),
        power,
        autostart: false,
        seed: None,
        spec_hash: String::new(),
    };
    // libvirt's autostart would start a VM at boot before fabrik has rebuilt what it
    // needs: those VMs are started by fabrik (`fabrik watch` after a reboot) instead.
    vm.autostart = power == Power::Running && vm.boot_volatile().is_empty();
    // Its spec hash is computed once its MACs and addresses are given (`addr::assign`).
    vm
}

/// `vda`, …, `vdz`, `vdaa`, … as Linux names disks.
pub(crate) fn disk_letter(mut n: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// A pinned VM's emulator threads run on the host's reserved CPUs of the VM's nodes
/// (housekeeping CPUs, away from every vCPU); on a host without reserved CPUs, on the
/// VM's own pinned CPUs, so they never disturb another VM.
fn emulator_pin(placement: &Placement<'_>, h: usize, a: &place::Assignment) -> Option<CpuSet> {
    if a.vcpu_pins.is_empty() {
        return None;
    }
    let state = &placement.hosts[h];
    let mut nodes: Vec<u32> = a.cells.iter().map(|c| c.0).collect();
    nodes.extend(a.numa_node);
    let reserved: Vec<u32> = state
        .host
        .reserved_cpus
        .as_ref()
        .map(|r| {
            r.value
                .cpus()
                .iter()
                .copied()
                .filter(|&c| state.node_of_cpu(c).is_some_and(|n| nodes.contains(&n)))
                .collect()
        })
        .unwrap_or_default();
    Some(if reserved.is_empty() { CpuSet::from_cpus(a.vcpu_pins.clone()) } else { CpuSet::from_cpus(reserved) })
}

/// The hash of a VM's desired fields (its JSON with `spec_hash` empty). The seed is left
/// out: the mark records its own hash, which changes with what the guest is told.
pub fn spec_hash(vm: &DesiredVm) -> String {
    let bare = DesiredVm { spec_hash: String::new(), seed: None, ..vm.clone() };
    format!("{:016x}", crate::hash::json(&bare))
}

/// VMs by name, for tests and tools.
pub fn vms_by_name(d: &Desired) -> BTreeMap<&str, &DesiredVm> {
    d.hosts.iter().flat_map(|h| h.vms.iter()).map(|v| (v.name.as_str(), v)).collect()
}
