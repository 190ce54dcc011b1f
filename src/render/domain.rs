//! A desired VM → libvirt domain XML.
//!
//! The domain mirrors the host's topology to the guest: vCPUs pinned, memory strict on
//! the GPU's node and backed by its hugepages, guest NUMA cells, and each GPU behind a
//! `pcie-expander-bus` whose `<node>` is the guest cell on the GPU's host node, so the
//! guest's driver sees which CPUs and memory are near its GPU.
//!
//! PCI layout. fabrik numbers only the controllers it needs for that: from index 1 up,
//! per guest cell that has GPUs (in cell order) one `pcie-expander-bus`, then one
//! `pcie-root-port` on it per GPU, and each GPU's guest address is slot 0 of its root
//! port; then one root port per rail VF of those GPUs ([`crate::desired::rails`]), the
//! VF at slot 0 of it (an expander's 16 bus numbers hold 15 such ports: 7 GPUs with a
//! VF each). Everything else (disks, NICs, the root complex's ports) libvirt places itself,
//! after fabrik's indexes; [`super::normalize`] drops those addresses and keeps fabrik's.
//!
//! MIG. A MIG slice reaches a VM as an NVIDIA vGPU mediated device: `<hostdev
//! type='mdev' model='vfio-pci'>` whose UUID is derived from the MIG instance's
//! resource id ([`mdev_uuid`]), so the domain renders before the mdev exists and apply
//! creates the mdev under that UUID. A host that exposes MIG slices as SR-IOV VFs
//! instead (vGPU 17+ on Hopper/Blackwell) is a `type='pci'` hostdev of the VF fabrik
//! writes the type to, named by its address once the host is read
//! ([`crate::desired::vgpu`]).
//!
//! NICs. A virtio NIC joins its network's Linux bridge directly (`type='bridge'`), so a
//! running guest needs no libvirt network of its own. An SR-IOV NIC is `type='network'`
//! on the network's hostdev pool: libvirt picks a free VF at start. An InfiniBand port
//! whose VF is known (its index fixed by the files, its PCI address from the host's
//! SR-IOV layout: [`crate::desired::ib::on_hosts`]) is instead `type='hostdev'` naming
//! that VF by address, so the GUIDs apply wrote to it are the guest's. A VF from a GPU's
//! rail is placed behind its GPU's expander bus (a guest address on a root port there);
//! other VFs go where libvirt places them.

use super::xml::{Writer, a};
use crate::desired::{DesiredHost, DesiredVm, ResourceId};
use crate::driver::libvirt::owner;
use crate::hw::Arch;
use crate::live::Ownership;
use crate::spec::model::{DiskBus, Firmware, ImageFormat};
use crate::spec::types::{CpuSet, PciAddress};

/// The highest PCI bus number of the first expander bus; each expander takes the 16 bus
/// numbers below the previous one (itself and up to 15 root ports). Bus numbers under
/// the lowest `busNr` stay with the root complex, which needs some 20 for libvirt's own
/// ports: 8 cells leave it 126.
const EXPANDER_BUS_TOP: u32 = 254;
const EXPANDER_BUS_STRIDE: u32 = 16;

/// UEFI for aarch64 guests: where Debian's and Ubuntu's `qemu-efi-aarch64` put the
/// firmware and the template of each VM's variable store (libvirt copies it per VM).
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
pub const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

/// The domain XML of a VM on its host. `host` supplies what the VM refers to by name or
/// address: its GPUs' NUMA nodes, its networks' bridges, its volumes' formats.
pub fn domain(factory: &str, host: &DesiredHost, vm: &DesiredVm) -> String {
    domain_with_uuid(factory, host, vm, None)
}

/// [`domain`] with the UUID of the domain it redefines, written after the name: without
/// it libvirt makes one up and refuses the definition, since a domain of that name exists
/// with another.
pub fn domain_with_uuid(factory: &str, host: &DesiredHost, vm: &DesiredVm, uuid: Option<&str>) -> String {
    let mut w = Writer::new();
    w.open("domain", &[a("type", "kvm")]);
    w.text("name", &[], &vm.name);
    if let Some(uuid) = uuid {
        w.text("uuid", &[], uuid);
    }
    let mark = Ownership { factory: factory.to_string(), resource: vm.id.to_string(), spec_hash: vm.spec_hash.clone() };
    w.open("metadata", &[]);
    w.raw(&owner::render_with_records(
        &mark,
        &crate::desired::addr::records(vm),
        vm.seed.as_ref().map(|s| s.sha256.as_str()),
    ));
    w.close("metadata");
    w.text("memory", &[a("unit", "KiB")], &(vm.memory.bytes() / 1024).to_string());
    if let Some(page) = vm.hugepages {
        w.open("memoryBacking", &[]);
        w.open("hugepages", &[]);
        let mut attrs = vec![a("size", page.size().bytes() / 1024), a("unit", "KiB")];
        // The nodeset of a page size names guest cells; without cells it is left out.
        // Cells of GPU memory hold no guest RAM, so no pages.
        if vm.numa_cells.iter().any(|c| !c.memory_only()) {
            attrs.push(a("nodeset", cell_ids(vm)));
        }
        w.empty("page", &attrs);
        w.close("hugepages");
        w.close("memoryBacking");
    }
    w.text("vcpu", &[], &vm.vcpus.to_string());
    if !vm.vcpu_pins.is_empty() || vm.emulator_pin.is_some() {
        w.open("cputune", &[]);
        for (vcpu, cpu) in vm.vcpu_pins.iter().enumerate() {
            w.empty("vcpupin", &[a("vcpu", vcpu), a("cpuset", cpu)]);
        }
        if let Some(set) = &vm.emulator_pin {
            w.empty("emulatorpin", &[a("cpuset", set)]);
        }
        w.close("cputune");
    }
    if let Some(node) = vm.numa_node {
        w.open("numatune", &[]);
        w.empty("memory", &[a("mode", "strict"), a("nodeset", node)]);
        for cell in vm.numa_cells.iter().filter(|c| !c.memory_only()) {
            w.empty("memnode", &[a("cellid", cell.id), a("mode", "strict"), a("nodeset", cell.host_node)]);
        }
        w.close("numatune");
    }
    match host.arch {
        Arch::X86_64 => os_x86(&mut w, vm),
        Arch::Aarch64 => os_aarch64(&mut w),
    }
    if vm.numa_cells.is_empty() {
        w.empty("cpu", &[a("mode", "host-passthrough")]);
    } else {
        w.open("cpu", &[a("mode", "host-passthrough")]);
        numa(&mut w, vm);
        w.close("cpu");
    }
    w.open("devices", &[]);
    devices(&mut w, host, vm);
    if host.arch == Arch::Aarch64 {
        // The guest's view of DMA remapping on Arm's `virt` machine (x86's would be
        // intel-iommu, which fabrik does not render): the device nvgrace-gpu guests
        // expect beside their GPU.
        w.empty("iommu", &[a("model", "smmuv3")]);
    }
    w.close("devices");
    w.close("domain");
    w.finish()
}

fn cell_ids(vm: &DesiredVm) -> CpuSet {
    CpuSet::from_cpus(vm.numa_cells.iter().filter(|c| !c.memory_only()).map(|c| c.id).collect())
}

/// q35 with ACPI and the local APIC; UEFI when the VM asks (it requires ACPI).
fn os_x86(w: &mut Writer, vm: &DesiredVm) {
    let os_attrs = match vm.firmware {
        Firmware::Uefi => vec![a("firmware", "efi")],
        Firmware::Bios => vec![],
    };
    w.open("os", &os_attrs);
    w.text("type", &[a("arch", "x86_64"), a("machine", "q35")], "hvm");
    w.empty("boot", &[a("dev", "hd")]);
    w.close("os");
    w.open("features", &[]);
    w.empty("acpi", &[]);
    w.empty("apic", &[]);
    w.close("features");
}

/// Arm's `virt` machine, as a Grace host runs it: UEFI (there is no BIOS on aarch64;
/// `fabrik::host::arch-firmware` refuses one) from the AAVMF build Debian's and Ubuntu's
/// `qemu-efi-aarch64` install, ACPI for the guest kernel's NUMA and PCI tables, and a
/// GICv3 interrupt controller (Neoverse V2 has no GICv2 compatibility).
fn os_aarch64(w: &mut Writer) {
    w.open("os", &[]);
    w.text("type", &[a("arch", "aarch64"), a("machine", "virt")], "hvm");
    w.text("loader", &[a("readonly", "yes"), a("type", "pflash")], AAVMF_CODE);
    w.empty("nvram", &[a("template", AAVMF_VARS)]);
    w.empty("boot", &[a("dev", "hd")]);
    w.close("os");
    w.open("features", &[]);
    w.empty("acpi", &[]);
    w.empty("gic", &[a("version", 3)]);
    w.close("features");
}

/// Guest NUMA cells: a memory-only cell (GPU memory) has no `cpus`; distances when the
/// host declares them.
fn numa(w: &mut Writer, vm: &DesiredVm) {
    w.open("numa", &[]);
    for cell in &vm.numa_cells {
        let mut attrs = vec![a("id", cell.id)];
        if !cell.memory_only() {
            attrs.push(a("cpus", &cell.vcpus));
        }
        attrs.extend([a("memory", cell.memory.bytes() / 1024), a("unit", "KiB")]);
        if cell.distances.is_empty() {
            w.empty("cell", &attrs);
            continue;
        }
        w.open("cell", &attrs);
        w.open("distances", &[]);
        for (other, d) in vm.numa_cells.iter().zip(&cell.distances) {
            w.empty("sibling", &[a("id", other.id), a("value", d)]);
        }
        w.close("distances");
        w.close("cell");
    }
    w.close("numa");
}

fn devices(w: &mut Writer, host: &DesiredHost, vm: &DesiredVm) {
    for disk in &vm.disks {
        let format = host.volumes.iter().find(|v| v.pool == disk.pool && v.name == disk.volume).map(|v| v.format);
        w.open("disk", &[a("type", "volume"), a("device", "disk")]);
        let mut driver = vec![a("name", "qemu")];
        if let Some(format) = format {
            driver.push(a(
                "type",
                match format {
                    ImageFormat::Qcow2 => "qcow2",
                    ImageFormat::Raw => "raw",
                },
            ));
        }
        w.empty("driver", &driver);
        w.empty("source", &[a("pool", &disk.pool), a("volume", &disk.volume)]);
        w.empty("target", &[a("dev", &disk.target), a("bus", disk_bus(disk.bus))]);
        w.close("disk");
    }
    if let Some(seed) = &vm.seed {
        // The NoCloud seed, read-only: cloud-init finds it by its `CIDATA` label.
        w.open("disk", &[a("type", "volume"), a("device", "disk")]);
        w.empty("driver", &[a("name", "qemu"), a("type", "raw")]);
        w.empty("source", &[a("pool", &seed.pool), a("volume", &seed.volume)]);
        w.empty("target", &[a("dev", &seed.target), a("bus", "virtio")]);
        w.empty("readonly", &[]);
        w.close("disk");
    }
    if vm.disks.iter().any(|d| d.bus == DiskBus::Scsi) {
        w.empty("controller", &[a("type", "scsi"), a("model", "virtio-scsi")]);
    }
    let placed = gpus(w, host, vm);
    // A MIG slice, or a time slice of a shared GPU (an NVIDIA vGPU), is a mediated
    // device; its UUID comes from what it is, so apply creates the mdev under it.
    let time_slices = vm.time_sliced.iter().map(|gpu| time_slice_id(&host.name, *gpu, &vm.name));
    for mdev in vm.mig.iter().cloned().chain(time_slices) {
        // On SR-IOV VFs the vGPU is the VF itself, named by address; the VF keeps the
        // host's vGPU driver, so libvirt must not rebind it (`managed='no'`).
        if let Some(vf) = vgpu_vf(host, &mdev) {
            w.open("hostdev", &[a("mode", "subsystem"), a("type", "pci"), a("managed", "no")]);
            w.open("source", &[]);
            w.empty("address", &host_pci(&vf));
            w.close("source");
            w.close("hostdev");
            continue;
        }
        w.open("hostdev", &[a("mode", "subsystem"), a("type", "mdev"), a("model", "vfio-pci"), a("managed", "no")]);
        w.open("source", &[]);
        w.empty("address", &[a("uuid", mdev_uuid(&mdev))]);
        w.close("source");
        w.close("hostdev");
    }
    // NICs in their order (live state pairs interfaces with NICs by position).
    for (k, nic) in vm.nics.iter().enumerate() {
        let fixed = host.ib_ports.iter().find(|p| p.vm == vm.name && p.nic == k).and_then(|p| p.vf_address.as_ref());
        if let Some(&(_, port)) = placed.iter().find(|(i, _)| *i == k) {
            vf(w, nic, fixed, Some(port));
            continue;
        }
        let network = host.networks.iter().find(|n| n.name == nic.network);
        match (nic.sriov, network.and_then(|n| n.bridge.as_deref())) {
            (false, Some(bridge)) => {
                w.open("interface", &[a("type", "bridge")]);
                w.empty("mac", &[a("address", &nic.mac)]);
                w.empty("source", &[a("bridge", bridge)]);
                w.empty("model", &[a("type", "virtio")]);
                if let Some(mtu) = network.and_then(|n| n.mtu) {
                    w.empty("mtu", &[a("size", mtu)]);
                }
                w.close("interface");
            }
            // A network without a bridge of its own (or not on this host): through
            // libvirt's network, which resolves it at start.
            (false, None) => {
                w.open("interface", &[a("type", "network")]);
                w.empty("mac", &[a("address", &nic.mac)]);
                w.empty("source", &[a("network", &nic.network)]);
                w.empty("model", &[a("type", "virtio")]);
                w.close("interface");
            }
            (true, _) => vf(w, nic, fixed, None),
        }
    }
    w.open("serial", &[a("type", "pty")]);
    w.empty("target", &[a("port", 0)]);
    w.close("serial");
    w.open("console", &[a("type", "pty")]);
    w.empty("target", &[a("type", "serial"), a("port", 0)]);
    w.close("console");
}

/// An SR-IOV VF NIC: the VF at `fixed` (an InfiniBand port whose GUIDs apply wrote to
/// that VF, [`crate::desired::ib`]), else one from its network's pool; at a guest
/// address when fabrik places it. No model: a VF is the guest's NIC itself.
fn vf(w: &mut Writer, nic: &crate::desired::DesiredNic, fixed: Option<&PciAddress>, port: Option<u32>) {
    if let Some(vf) = fixed {
        w.open("interface", &[a("type", "hostdev"), a("managed", "yes")]);
        w.empty("mac", &[a("address", &nic.mac)]);
        w.open("source", &[]);
        // An interface's source address must say its type (a hostdev's need not).
        let mut address = vec![a("type", "pci")];
        address.extend(host_pci(vf));
        w.empty("address", &address);
        w.close("source");
    } else {
        w.open("interface", &[a("type", "network")]);
        w.empty("mac", &[a("address", &nic.mac)]);
        w.empty("source", &[a("network", &nic.network)]);
    }
    if let Some(port) = port {
        w.empty("address", &guest_address(port, 0));
    }
    w.close("interface");
}

/// Whole GPUs: behind an expander bus on their guest cell when the VM has one on the
/// GPU's host node, else where libvirt places them. Each GPU's rail VFs
/// ([`crate::desired::rails`]) follow it on root ports of the same expander bus.
/// Returns the NICs placed so, by index, with the root port each goes on.
fn gpus(w: &mut Writer, host: &DesiredHost, vm: &DesiredVm) -> Vec<(usize, u32)> {
    let mut placed = Vec::new();
    let host_node = |gpu: &PciAddress| host.gpus.iter().find(|g| g.address == *gpu).map(|g| g.numa_node);
    let cell_of = |gpu: &PciAddress| {
        let node = host_node(gpu)?;
        vm.numa_cells.iter().find(|c| c.host_node == node).map(|c| c.id)
    };
    let mut index = 1u32;
    let mut expander = 0u32;
    let mut cells: Vec<u32> = vm.numa_cells.iter().map(|c| c.id).collect();
    cells.sort_unstable();
    cells.dedup();
    for cell in cells {
        let behind: Vec<&PciAddress> = vm.gpus.iter().filter(|g| cell_of(g) == Some(cell)).collect();
        if behind.is_empty() {
            continue;
        }
        let bus_nr = EXPANDER_BUS_TOP - EXPANDER_BUS_STRIDE * (expander + 1);
        expander += 1;
        let expander_index = index;
        index += 1;
        w.open("controller", &[a("type", "pci"), a("index", expander_index), a("model", "pcie-expander-bus")]);
        w.open("target", &[a("busNr", bus_nr)]);
        w.text("node", &[], &cell.to_string());
        w.close("target");
        w.close("controller");
        for (slot, gpu) in (0u32..).zip(behind.iter().copied()) {
            let port = index;
            index += 1;
            w.open("controller", &[a("type", "pci"), a("index", port), a("model", "pcie-root-port")]);
            w.empty("address", &guest_address(expander_index, slot));
            w.close("controller");
            hostdev(w, gpu, Some(port));
        }
        // The rail VFs of this cell's GPUs, on root ports after the GPUs'.
        let mut slot = behind.len() as u32;
        for gpu in &behind {
            for (k, nic) in vm.nics.iter().enumerate() {
                if nic.rail.as_ref().is_none_or(|r| r.gpu != **gpu) {
                    continue;
                }
                let port = index;
                index += 1;
                w.open("controller", &[a("type", "pci"), a("index", port), a("model", "pcie-root-port")]);
                w.empty("address", &guest_address(expander_index, slot));
                w.close("controller");
                slot += 1;
                placed.push((k, port));
            }
        }
    }
    for gpu in vm.gpus.iter().filter(|g| cell_of(g).is_none()) {
        hostdev(w, gpu, None);
    }
    placed
}

fn hostdev(w: &mut Writer, gpu: &PciAddress, port: Option<u32>) {
    w.open("hostdev", &[a("mode", "subsystem"), a("type", "pci"), a("managed", "yes")]);
    w.open("source", &[]);
    w.empty("address", &host_pci(gpu));
    w.close("source");
    if let Some(port) = port {
        w.empty("address", &guest_address(port, 0));
    }
    w.close("hostdev");
}

/// The VF a MIG instance's vGPU is on, when the host offers vGPUs on VFs.
fn vgpu_vf(host: &DesiredHost, mig: &ResourceId) -> Option<PciAddress> {
    host.gpus.iter().find_map(|g| match &g.setup {
        crate::desired::GpuSetup::Mig { instances } => instances.iter().find(|i| &i.id == mig)?.vgpu_vf,
        crate::desired::GpuSetup::Passthrough | crate::desired::GpuSetup::TimeSliced => None,
    })
}

/// A host PCI device's address, as a hostdev's source names it.
fn host_pci(dev: &PciAddress) -> Vec<(&'static str, String)> {
    vec![
        a("domain", format!("0x{:04x}", dev.domain)),
        a("bus", format!("0x{:02x}", dev.bus)),
        a("slot", format!("0x{:02x}", dev.device)),
        a("function", format!("0x{:x}", dev.function)),
    ]
}

/// A guest PCI address on the bus of controller `bus` (its index).
fn guest_address(bus: u32, slot: u32) -> Vec<(&'static str, String)> {
    vec![
        a("type", "pci"),
        a("domain", "0x0000"),
        a("bus", format!("0x{bus:02x}")),
        a("slot", format!("0x{slot:02x}")),
        a("function", "0x0"),
    ]
}

fn disk_bus(bus: DiskBus) -> &'static str {
    match bus {
        DiskBus::Virtio => "virtio",
        DiskBus::Scsi => "scsi",
        DiskBus::Sata => "sata",
    }
}

/// A VM's time slice of a shared GPU, as a resource: `gpu:<host>/<address>/<vm>`.
pub fn time_slice_id(host: &str, gpu: crate::spec::types::PciAddress, vm: &str) -> ResourceId {
    ResourceId::new(crate::desired::ResourceKind::Gpu, host, format!("{gpu}/{vm}"))
}

/// The UUID of the mediated device that carries a MIG instance (or a time slice) to its
/// VM: a name-based UUID (RFC 9562 version 8) of the resource id, so it is the same on
/// every render and apply can create the mdev under it.
pub fn mdev_uuid(mig: &ResourceId) -> String {
    let (hi, lo) = crate::hash::fnv1a_128(mig.to_string().as_bytes());
    let hi = (hi & !0xf000) | 0x8000; // version 8
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // RFC variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{DesiredGpu, GpuSetup, ResourceKind};
    use crate::hw::GpuModel;
    use crate::spec::model::Power;
    use crate::spec::types::ByteSize;

    fn vm() -> DesiredVm {
        DesiredVm {
            id: ResourceId::new(ResourceKind::Vm, "h1", "v"),
            name: "v".into(),
            tenant: "t".into(),
            vcpus: 1,
            memory: ByteSize(64 << 20),
            hugepages: None,
            vcpu_pins: vec![],
            emulator_pin: None,
            numa_node: None,
            numa_cells: vec![],
            gpus: vec![PciAddress::parse("0000:3b:00.0").unwrap()],
            mig: vec![],
            time_sliced: vec![],
            nics: vec![],
            disks: vec![],
            firmware: Firmware::Bios,
            power: Power::Running,
            autostart: false,
            seed: None,
            spec_hash: "h".into(),
        }
    }

    #[test]
    fn a_gpu_without_a_guest_cell_is_placed_by_libvirt() {
        let host = DesiredHost {
            gpus: vec![DesiredGpu {
                id: ResourceId::new(ResourceKind::Gpu, "h1", "0000:3b:00.0"),
                address: PciAddress::parse("0000:3b:00.0").unwrap(),
                model: GpuModel::H100_80GB,
                numa_node: 0,
                setup: GpuSetup::Passthrough,
            }],
            ..DesiredHost::default()
        };
        let xml = domain("f", &host, &vm());
        assert!(!xml.contains("pcie-expander-bus"), "{xml}");
        assert_eq!(xml.matches("<address ").count(), 1, "only the host address: {xml}");
        assert!(xml.contains("<address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/>"), "{xml}");
    }

    #[test]
    fn time_sliced_gpus_render_as_mdevs() {
        let mut vm = vm();
        let gpu = PciAddress::parse("0000:61:00.0").unwrap();
        vm.gpus = vec![];
        vm.time_sliced = vec![gpu];
        let host = DesiredHost { name: "h1".into(), ..DesiredHost::default() };
        let xml = domain("f", &host, &vm);
        let uuid = mdev_uuid(&time_slice_id("h1", gpu, &vm.name));
        assert!(xml.contains(&format!("<address uuid='{uuid}'/>")), "{xml}");
        assert!(xml.contains("type='mdev'"));
    }

    #[test]
    fn mdev_uuids_are_stable_version_8() {
        let mig = ResourceId::parse("mig:gpu01/0000:3b:00.0/3g.40gb@4").unwrap();
        let uuid = mdev_uuid(&mig);
        assert_eq!(uuid, mdev_uuid(&mig));
        assert_ne!(uuid, mdev_uuid(&ResourceId::parse("mig:gpu01/0000:3b:00.0/3g.40gb@0").unwrap()));
        let groups: Vec<&str> = uuid.split('-').collect();
        assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{uuid}");
        assert!(groups[2].starts_with('8') && "89ab".contains(&groups[3][..1]), "{uuid}");
    }
}
