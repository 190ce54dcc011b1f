//! Rendered libvirt XML against a real libvirtd: every VM shape fabrik renders is
//! defined on a testbed host, read back, and must normalize to exactly what was
//! rendered (no spurious changes); a changed field must show.
//!
//! GPUs, VFs and mdevs do not exist on the testbed's machine: libvirt checks those only
//! when a domain starts, so their shapes are defined, never started. With
//! `FABRIK_CAPTURE_FIXTURES=1` the test also writes `fixtures/diff/<case>/` from what
//! libvirtd returned (see tests/render_fixtures.rs).

#[path = "testbed/mod.rs"]
mod testbed;

use std::path::PathBuf;

use fabrik::desired::{
    DesiredDisk, DesiredGpu, DesiredHost, DesiredNetwork, DesiredNic, DesiredPool, DesiredVm, DesiredVolume, GpuSetup,
    GuestCell, ResourceId, ResourceKind,
};
use fabrik::driver::Virt;
use fabrik::driver::libvirt::LibvirtDriver;
use fabrik::hw::GpuModel;
use fabrik::render::{self, normalize};
use fabrik::spec::model::{DiskBus, Firmware, ImageFormat, NetKind, PoolKind, Power};
use fabrik::spec::types::{ByteSize, CpuSet, PageSize, PciAddress};
use testbed::Testbed;

const FACTORY: &str = "testbed";
const MIB: u64 = 1 << 20;

fn id(kind: ResourceKind, name: &str) -> ResourceId {
    ResourceId::new(kind, "h1", name)
}

fn gpu(address: &str, node: u32) -> DesiredGpu {
    DesiredGpu {
        id: id(ResourceKind::Gpu, address),
        address: PciAddress::parse(address).unwrap(),
        model: GpuModel::H100_80GB,
        numa_node: node,
        setup: GpuSetup::Passthrough,
    }
}

fn network(name: &str, kind: NetKind, bridge: Option<&str>, pf: Option<&str>) -> DesiredNetwork {
    DesiredNetwork {
        id: id(ResourceKind::Network, name),
        name: name.into(),
        kind,
        tenant: Some("acme".into()),
        bridge: bridge.map(Into::into),
        pf: pf.map(Into::into),
        vlan: None,
        mtu: None,
    }
}

fn volume(name: &str, format: ImageFormat) -> DesiredVolume {
    DesiredVolume {
        id: id(ResourceKind::Volume, &format!("vms/{name}")),
        pool: "vms".into(),
        name: name.into(),
        capacity: Some(ByteSize(64 * MIB)),
        format,
        image: None,
        deletable: true,
    }
}

/// One host with two NUMA nodes' worth of GPUs, a bridged and an SR-IOV network, and a
/// pool of volumes: what every shape below refers to.
fn host() -> DesiredHost {
    DesiredHost {
        name: "h1".into(),
        uri: "qemu:///system".into(),
        gpus: vec![gpu("0000:3b:00.0", 0), gpu("0000:3c:00.0", 0), gpu("0000:86:00.0", 1)],
        networks: vec![
            network("acme", NetKind::Vxlan, Some("fbr-acme"), None),
            network("storage", NetKind::Bridge, Some("fbr-storage"), None),
            network("acme-ib", NetKind::Sriov, None, Some("eth9")),
        ],
        pools: vec![DesiredPool {
            id: id(ResourceKind::Pool, "vms"),
            name: "vms".into(),
            kind: PoolKind::Dir,
            path: "/var/lib/fabrik/vms".into(),
            source: None,
        }],
        volumes: vec![
            volume("root.qcow2", ImageFormat::Qcow2),
            volume("data.raw", ImageFormat::Raw),
            volume("scratch.raw", ImageFormat::Raw),
        ],
        ..DesiredHost::default()
    }
}

fn vm(name: &str) -> DesiredVm {
    DesiredVm {
        id: id(ResourceKind::Vm, name),
        name: name.into(),
        tenant: "acme".into(),
        vcpus: 2,
        memory: ByteSize(128 * MIB),
        hugepages: None,
        vcpu_pins: vec![],
        emulator_pin: None,
        numa_node: None,
        numa_cells: vec![],
        gpus: vec![],
        mig: vec![],
        time_sliced: vec![],
        nics: vec![],
        disks: vec![],
        firmware: Firmware::Bios,
        power: Power::Stopped,
        autostart: false,
        seed: None,
        spec_hash: format!("hash-of-{name}"),
    }
}

fn nic(network: &str, sriov: bool, n: u8) -> DesiredNic {
    DesiredNic {
        network: network.into(),
        sriov,
        mac: format!("52:54:00:fa:00:{n:02x}"),
        declared: true,
        address: None,
        rail: None,
    }
}

fn disk(target: &str, bus: DiskBus, volume: &str) -> DesiredDisk {
    DesiredDisk { target: target.into(), bus, pool: "vms".into(), volume: volume.into() }
}

fn cell(id: u32, vcpus: &str, mib: u64, host_node: u32) -> GuestCell {
    GuestCell {
        id,
        vcpus: CpuSet::parse(vcpus).unwrap(),
        memory: ByteSize(mib * MIB),
        host_node,
        distances: Vec::new(),
    }
}

/// Every VM shape fabrik renders, by fixture case name.
fn shapes() -> Vec<(&'static str, DesiredVm)> {
    let pinned = DesiredVm {
        vcpu_pins: vec![0, 1],
        emulator_pin: Some(CpuSet::parse("0-1").unwrap()),
        numa_node: Some(0),
        firmware: Firmware::Uefi,
        nics: vec![nic("acme", false, 1)],
        ..vm("pinned")
    };
    let hugepages = DesiredVm {
        hugepages: Some(PageSize::Size2M),
        vcpu_pins: vec![1, 0],
        numa_node: Some(0),
        numa_cells: vec![cell(0, "0-1", 128, 0)],
        ..vm("hugepages")
    };
    let numa_cells = DesiredVm {
        vcpus: 4,
        memory: ByteSize(256 * MIB),
        hugepages: Some(PageSize::Size2M),
        vcpu_pins: vec![0, 0, 1, 1],
        emulator_pin: Some(CpuSet::parse("0").unwrap()),
        numa_node: Some(0),
        numa_cells: vec![cell(0, "0-1", 128, 0), cell(1, "2-3", 128, 1)],
        ..vm("numa-cells")
    };
    let gpu_expander = DesiredVm {
        vcpus: 4,
        memory: ByteSize(256 * MIB),
        hugepages: Some(PageSize::Size2M),
        vcpu_pins: vec![0, 1, 0, 1],
        emulator_pin: Some(CpuSet::parse("0-1").unwrap()),
        numa_node: Some(0),
        numa_cells: vec![cell(0, "0-1", 128, 0), cell(1, "2-3", 128, 1)],
        gpus: ["0000:3b:00.0", "0000:3c:00.0", "0000:86:00.0"].map(|a| PciAddress::parse(a).unwrap()).to_vec(),
        firmware: Firmware::Uefi,
        nics: vec![nic("acme", false, 2)],
        disks: vec![disk("vda", DiskBus::Virtio, "root.qcow2")],
        ..vm("gpu-expander")
    };
    // Rail VFs (one per GPU) on root ports of their GPUs' expander buses, and guest
    // cells with distances and one of GPU memory only.
    let rail = |gpu: &str, n: u8| DesiredNic {
        rail: Some(Box::new(fabrik::desired::rails::NicRail {
            gpu: PciAddress::parse(gpu).unwrap(),
            pf: "eth9".into(),
            partition: "acme-ib".into(),
        })),
        ..nic("acme-ib", true, n)
    };
    let mut rail_cells = vec![cell(0, "0-1", 128, 0), cell(1, "2-3", 128, 1), cell(2, "0", 0, 2)];
    rail_cells[2].vcpus = CpuSet::default();
    for (i, c) in rail_cells.iter_mut().enumerate() {
        c.distances = [[10, 21, 80], [21, 10, 80], [80, 80, 10]][i].to_vec();
    }
    let rail_vfs = DesiredVm {
        vcpus: 4,
        memory: ByteSize(256 * MIB),
        numa_cells: rail_cells,
        gpus: ["0000:3b:00.0", "0000:86:00.0"].map(|a| PciAddress::parse(a).unwrap()).to_vec(),
        nics: vec![rail("0000:3b:00.0", 8), nic("acme", false, 9), rail("0000:86:00.0", 10)],
        ..vm("rail-vfs")
    };
    let sriov_nic = DesiredVm {
        nics: vec![nic("acme-ib", true, 3), nic("acme", false, 4)],
        disks: vec![disk("vda", DiskBus::Virtio, "root.qcow2")],
        ..vm("sriov-nic")
    };
    let nics_disks = DesiredVm {
        nics: vec![nic("acme", false, 5), nic("storage", false, 6), nic("acme-ib", true, 7)],
        disks: vec![
            disk("vda", DiskBus::Virtio, "root.qcow2"),
            disk("sda", DiskBus::Scsi, "data.raw"),
            disk("sdb", DiskBus::Sata, "scratch.raw"),
        ],
        ..vm("nics-disks")
    };
    let mig = DesiredVm {
        mig: vec![ResourceId::new(ResourceKind::Mig, "h1", "0000:3b:00.0/3g.40gb@4")],
        time_sliced: vec![],
        numa_node: Some(0),
        ..vm("mig")
    };
    // The cloud-init seed: a read-only raw disk, its hash a record in the mark.
    let seed = DesiredVm {
        nics: vec![nic("acme", false, 8)],
        disks: vec![disk("vda", DiskBus::Virtio, "root.qcow2")],
        seed: Some(Box::new(fabrik::guest::DesiredSeed {
            pool: "vms".into(),
            volume: "seed+cidata".into(),
            target: "vdb".into(),
            sha256: "5eed".repeat(16),
            inputs: Default::default(),
        })),
        ..vm("seed")
    };
    vec![
        ("seed", seed),
        ("pinned", pinned),
        ("hugepages", hugepages),
        ("numa-cells", numa_cells),
        ("gpu-expander", gpu_expander),
        ("rail-vfs", rail_vfs),
        ("sriov-nic", sriov_nic),
        ("nics-disks", nics_disks),
        ("mig", mig),
    ]
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/diff")
}

fn capture(case: &str, desired: &str, live: &str, cmp: &normalize::Comparison) {
    if std::env::var_os("FABRIK_CAPTURE_FIXTURES").is_none() {
        return;
    }
    let dir = fixtures().join(case);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("desired.xml"), desired).unwrap();
    std::fs::write(dir.join("live.xml"), live).unwrap();
    let expected = if cmp.has_changes() { cmp.changes().join("\n") + "\n" } else { "equal\n".to_string() };
    std::fs::write(dir.join("expected"), expected).unwrap();
}

#[test]
fn every_vm_shape_reads_back_without_changes() {
    let Some(tb) = Testbed::start("render", &["h1"]) else { return };
    let mut v = LibvirtDriver::connect(&tb.host("h1").uri).unwrap();
    let host = host();
    for (case, vm) in shapes() {
        let desired = render::domain(FACTORY, &host, &vm);
        assert_eq!(desired, render::domain(FACTORY, &host, &vm), "{case}: rendering is deterministic");
        v.define_domain(&desired).unwrap_or_else(|e| panic!("{case}: define failed: {e}\n{desired}"));
        let live = v.domains().unwrap().into_iter().find(|d| d.name == vm.name).unwrap();
        assert_eq!(live.owner.as_ref().map(|o| o.resource.as_str()), Some(vm.id.to_string().as_str()));
        let cmp = normalize::compare(&desired, &live.xml).unwrap();
        capture(case, &desired, &live.xml, &cmp);
        assert!(!cmp.has_changes(), "{case}: spurious changes after define:\n{}", cmp.unified());
    }

    // A changed field shows, and only it.
    let (_, base) = shapes().into_iter().find(|(c, _)| *c == "gpu-expander").unwrap();
    let live = v.domains().unwrap().into_iter().find(|d| d.name == base.name).unwrap().xml;
    let mut bigger = base.clone();
    bigger.memory = ByteSize(512 * MIB);
    let mut repinned = base.clone();
    repinned.vcpu_pins[2] = 1;
    for (case, changed, want) in [
        (
            "memory-changed",
            bigger,
            vec!["- <memory unit='B'>268435456</memory>", "+ <memory unit='B'>536870912</memory>"],
        ),
        ("vcpupin-changed", repinned, vec!["- <vcpupin cpuset='0' vcpu='2'/>", "+ <vcpupin cpuset='1' vcpu='2'/>"]),
    ] {
        let desired = render::domain(FACTORY, &host, &changed);
        let cmp = normalize::compare(&desired, &live).unwrap();
        capture(case, &desired, &live, &cmp);
        assert_eq!(cmp.changes(), want, "{case}:\n{}", cmp.unified());
    }
}

#[test]
fn networks_and_pools_define() {
    let Some(tb) = Testbed::start("rendernet", &["h1"]) else { return };
    let mut v = LibvirtDriver::connect(&tb.host("h1").uri).unwrap();
    let host = host();
    for net in &host.networks {
        let desired = render::network(FACTORY, net);
        v.define_network(&desired).unwrap_or_else(|e| panic!("{}: define failed: {e}\n{desired}", net.name));
        let live = v.networks().unwrap().into_iter().find(|n| n.name == net.name).unwrap();
        assert_eq!(live.owner.as_ref().map(|o| o.resource.clone()), Some(net.id.to_string()));
        assert_eq!(
            normalize::network(&desired).unwrap(),
            normalize::network(&live.xml).unwrap(),
            "{}: spurious changes",
            net.name
        );
    }
    let pool = &host.pools[0];
    v.define_pool(&render::pool(pool)).unwrap();
    let live = v.pools().unwrap().into_iter().find(|p| p.name == pool.name).unwrap();
    assert_eq!(live.path.as_deref(), Some(pool.path.as_str()));
}
