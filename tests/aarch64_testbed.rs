//! A guest of the GB200 example VM's shape, as fabrik renders it for the Grace host
//! `gb01`, defined and started on a testbed libvirtd under `qemu-system-aarch64` (TCG:
//! this machine is x86 and has no Grace CPU).
//!
//! Kept from the example's VM: the Arm `virt` machine, UEFI from AAVMF with a per-VM
//! variable store, ACPI, GICv3, the SMMUv3 IOMMU, two guest NUMA cells with the host's
//! distances, the serial console, fabrik's ownership mark.
//!
//! Left out, because this machine lacks them (listed in [`LEFT_OUT`] and printed):
//! the four GB200 GPUs (no GPU, no VFIO, no `nvgrace-gpu-vfio-pci`), the cells of GPU
//! memory that mirror them (a memory-less cell needs QEMU's ACPI generic initiator tied
//! to that GPU), the InfiniBand and RoCE SR-IOV VFs (no HCA), the VXLAN tenant NIC's
//! bridge and the disks (this test is about the machine, not the fabric or storage),
//! 1 GiB hugepages and CPU pinning to Grace cores (2 x86 CPUs here). Size: 2 vCPUs and
//! 256 MiB instead of 128 and 768 GiB.
//!
//! Changed for TCG, on the rendered text: `type='kvm'` → `type='qemu'`, and
//! `host-passthrough` → QEMU's `max` CPU model (no host CPU to pass through under
//! emulation). Everything else is fabrik's rendering, byte for byte.

#[path = "testbed/mod.rs"]
mod testbed;

use std::path::Path;

use fabrik::desired::{Desired, DesiredVm};
use fabrik::driver::Virt;
use fabrik::driver::libvirt::LibvirtDriver;
use fabrik::live::PowerState;
use fabrik::render::{self, normalize};
use fabrik::spec::types::{ByteSize, CpuSet};
use testbed::{Testbed, missing, say};

const LEFT_OUT: &[&str] = &[
    "4x GB200 passthrough hostdevs (no GPU, no VFIO, no nvgrace-gpu-vfio-pci here)",
    "4 memory-less guest cells of GPU memory (need the GPU and QEMU's acpi-generic-initiator)",
    "InfiniBand and RoCE SR-IOV VF interfaces (no HCA)",
    "the VXLAN tenant interface and the disks (fabric and storage are tested elsewhere)",
    "1 GiB hugepages and vCPU pinning to Grace cores (2 x86 CPUs here)",
];

const MIB: u64 = 1 << 20;

fn example() -> Desired {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ai-factory");
    let v = fabrik::check::validate(&path);
    fabrik::desired::build(&v.spec).expect("the example builds")
}

/// The example's GB200 VM cut down to what this machine can run (see the module's note).
fn gb200_shape(vm: &DesiredVm) -> DesiredVm {
    let mut vm = vm.clone();
    assert!(vm.gpus.len() == 4 && vm.numa_cells.len() == 6, "the example VM changed shape: {vm:?}");
    vm.gpus.clear();
    vm.nics.clear();
    vm.disks.clear();
    vm.hugepages = None;
    vm.vcpu_pins.clear();
    vm.emulator_pin = None;
    vm.numa_node = None;
    vm.vcpus = 2;
    vm.memory = ByteSize(256 * MIB);
    vm.numa_cells.retain(|c| !c.memory_only());
    for (i, cell) in vm.numa_cells.iter_mut().enumerate() {
        cell.vcpus = CpuSet::from_cpus(vec![i as u32]);
        cell.memory = ByteSize(128 * MIB);
        cell.distances.truncate(2);
    }
    vm
}

fn tcg(xml: &str) -> String {
    assert!(xml.contains("<domain type='kvm'>") && xml.contains("<cpu mode='host-passthrough'>"), "{xml}");
    xml.replacen("<domain type='kvm'>", "<domain type='qemu'>", 1).replacen(
        "<cpu mode='host-passthrough'>",
        "<cpu mode='custom' match='exact'><model fallback='forbid'>max</model>",
        1,
    )
}

#[test]
fn a_gb200_shaped_guest_starts_under_qemu_system_aarch64() {
    let aavmf = Path::new(render::domain::AAVMF_CODE);
    let emulator = ["/usr/bin/qemu-system-aarch64", "/usr/local/bin/qemu-system-aarch64"];
    if !emulator.iter().any(|p| Path::new(p).is_file()) || !aavmf.is_file() {
        missing("qemu-system-aarch64 or AAVMF firmware is not installed (qemu-system-arm, qemu-efi-aarch64)");
        return;
    }
    let d = example();
    let host = d.hosts.iter().find(|h| h.name == "gb01").expect("gb01");
    let vm = host.vms.iter().find(|v| v.name == "acme-gb200").expect("acme-gb200");
    let shape = gb200_shape(vm);
    let rendered = render::domain(&d.factory, host, &shape);
    for want in ["machine='virt'", "<gic version='3'/>", "<iommu model='smmuv3'/>", "AAVMF_CODE.fd", "<distances>"] {
        assert!(rendered.contains(want), "{want} missing:\n{rendered}");
    }
    say(&format!("aarch64 guest: left out (this machine lacks them): {}", LEFT_OUT.join("; ")));

    let Some(tb) = Testbed::start("hwarm", &["h1"]) else { return };
    let mut v = LibvirtDriver::connect(&tb.host("h1").uri).unwrap();
    let xml = tcg(&rendered);
    v.define_domain(&xml).unwrap_or_else(|e| panic!("define failed: {e}\n{xml}"));
    let live = v.domains().unwrap().into_iter().find(|l| l.name == shape.name).expect("the domain is defined");
    // What libvirt returns must normalize to what was defined: no phantom plan lines on
    // an aarch64 host (`virt-7.2`, the nvram path, the PL011 console).
    let cmp = normalize::compare(&xml, &live.xml).unwrap();
    assert!(!cmp.has_changes(), "spurious changes after define:\n{}", cmp.unified());
    v.start_domain(&shape.name).unwrap_or_else(|e| panic!("start failed: {e}\n{xml}"));
    let live = v.domains().unwrap().into_iter().find(|l| l.name == shape.name).unwrap();
    assert_eq!(live.state, PowerState::Running, "{}", live.xml);
    for want in ["arch='aarch64'", "<gic version='3'/>", "<iommu model='smmuv3'/>", "<sibling id='1' value='40'/>"] {
        assert!(live.xml.contains(want), "the running guest lost {want}:\n{}", live.xml);
    }
    let cmp = normalize::compare(&xml, &live.xml).unwrap();
    assert!(!cmp.has_changes(), "spurious changes while running:\n{}", cmp.unified());
    v.destroy_domain(&shape.name).unwrap();
}
