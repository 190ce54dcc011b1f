//! The plan against a real libvirtd: every VM of examples/ai-factory, rendered by fabrik,
//! defined on one testbed host and read back, plans no change; a hand-defined domain is
//! left alone, and a desired VM of its name is a name clash.
//!
//! One testbed host stands in for all of the factory's hosts: domain names are unique
//! across the factory, and each VM is rendered against its own desired host. The GPUs
//! and VFs the domains name do not exist here: libvirt checks hostdevs (and the volumes
//! of `type='volume'` disks, and the networks of `type='network'` NICs) only when a
//! domain starts, so nothing here is started.
//!
//! The aarch64 VM of the Grace host: this x86 machine's libvirt refuses `type='kvm'` for
//! an aarch64 emulator, so its domain is defined with `type='qemu'` (TCG) and read back
//! as `type='kvm'`; every other byte is compared as rendered.

#[path = "testbed/mod.rs"]
mod testbed;

use std::path::Path;

use fabrik::desired::{Desired, DesiredHost, DesiredVm, ResourceId, ResourceKind};
use fabrik::driver::Virt;
use fabrik::driver::libvirt::LibvirtDriver;
use fabrik::live::{LiveDomain, LiveHost};
use fabrik::plan::{self, NoticeKind, Op, Options, Plan};
use fabrik::render;
use fabrik::spec::model::Power;
use fabrik::spec::types::ByteSize;
use testbed::Testbed;

/// A domain defined by hand: no fabrik mark.
const HAND_MADE: &str = "hand-made";

/// A VM shape: what it is called, and whether a VM has it.
type Shape = (&'static str, fn(&DesiredVm) -> bool);

/// The VM shapes the example must have, so that this test covers each.
const SHAPES: [Shape; 9] = [
    ("pinned", |vm| !vm.vcpu_pins.is_empty() && vm.emulator_pin.is_some()),
    ("on hugepages", |vm| vm.hugepages.is_some()),
    ("bound to a NUMA node", |vm| vm.numa_node.is_some()),
    ("of several guest NUMA cells", |vm| vm.numa_cells.len() > 1),
    ("given GPUs", |vm| vm.gpus.len() > 1),
    ("given a MIG slice", |vm| !vm.mig.is_empty()),
    ("given an SR-IOV NIC", |vm| vm.nics.iter().any(|n| n.sriov)),
    ("of several NICs", |vm| vm.nics.len() > 2),
    ("of several disks", |vm| vm.disks.len() > 1),
];

fn desired() -> Desired {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory"));
    let v = fabrik::check::validate(path);
    assert!(v.is_valid(), "the example is valid");
    fabrik::desired::build(&v.spec).expect("the example builds")
}

fn hand_made_xml() -> String {
    format!(
        "<domain type='kvm'><name>{HAND_MADE}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os></domain>"
    )
}

/// What one desired host sees of the testbed host: the domains of its own VMs, and every
/// domain fabrik did not make (the hand-made one). The other hosts' VMs, which share the
/// testbed host, are left out so they do not show as deletions.
fn live_of(host: &DesiredHost, domains: &[LiveDomain]) -> LiveHost {
    let domains =
        domains.iter().filter(|d| d.owner.is_none() || host.vms.iter().any(|vm| vm.name == d.name)).cloned().collect();
    LiveHost { name: host.name.clone(), domains, ..LiveHost::default() }
}

/// The plan's word on VMs only: the testbed host has none of the factory's links, GPUs,
/// networks or volumes, whose creation is not what this test is about.
fn vm_actions(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter(|a| a.id.kind == ResourceKind::Vm)
        .map(|a| format!("{} {} {}\n{}", a.symbol, a.id, a.reason, a.shown_diff().unwrap_or_default()))
        .collect()
}

#[test]
fn every_example_vm_defined_from_its_rendered_xml_plans_no_change() {
    let Some(tb) = Testbed::start("plan", &["h1"]) else { return };
    let mut v = LibvirtDriver::connect(&tb.host("h1").uri).unwrap();
    let mut d = desired();
    let mut defined = 0;
    for host in &mut d.hosts {
        for vm in &mut host.vms {
            // Nothing can start here (see the module's note): the desired power state is
            // what the testbed can hold, so any change left is the definition's. (Its mark's
            // hash follows, as building the desired state would have made it.)
            vm.power = Power::Stopped;
            vm.spec_hash = fabrik::desired::build::spec_hash(vm);
        }
    }
    for host in &d.hosts {
        for vm in &host.vms {
            let mut xml = render::domain(&d.factory, host, vm);
            if host.arch == fabrik::hw::Arch::Aarch64 {
                xml = xml.replacen("<domain type='kvm'>", "<domain type='qemu'>", 1);
            }
            v.define_domain(&xml).unwrap_or_else(|e| panic!("{}: define failed: {e}\n{xml}", vm.id));
            v.set_domain_autostart(&vm.name, vm.autostart).unwrap();
            defined += 1;
        }
    }
    let vms: Vec<&DesiredVm> = d.hosts.iter().flat_map(|h| &h.vms).collect();
    for (shape, has) in SHAPES {
        assert!(vms.iter().any(|vm| has(vm)), "no VM of the example is {shape}");
    }
    v.define_domain(&hand_made_xml()).expect("a hand-made domain defines");
    let mut domains = v.domains().unwrap();
    assert_eq!(domains.len(), defined + 1, "every domain reads back");
    let aarch64: Vec<&str> = d
        .hosts
        .iter()
        .filter(|h| h.arch == fabrik::hw::Arch::Aarch64)
        .flat_map(|h| &h.vms)
        .map(|v| v.name.as_str())
        .collect();
    assert!(!aarch64.is_empty(), "the example has an aarch64 VM");
    for dom in domains.iter_mut().filter(|dom| aarch64.contains(&dom.name.as_str())) {
        assert!(dom.xml.contains("<domain type='qemu'"), "{}", dom.xml);
        dom.xml = dom.xml.replacen("<domain type='qemu'", "<domain type='kvm'", 1);
    }
    let hand_made = domains.iter().find(|d| d.name == HAND_MADE).unwrap().clone();
    assert_eq!(hand_made.owner, None);

    let live: Vec<LiveHost> = d.hosts.iter().map(|h| live_of(h, &domains)).collect();
    let p = plan::plan(&d, &live, &Options::default());
    let spurious = vm_actions(&p);
    assert!(spurious.is_empty(), "spurious changes after define:\n{}", spurious.join("\n"));
    let vm_errors: Vec<_> = p.errors.iter().filter(|e| e.id.kind == ResourceKind::Vm).collect();
    assert!(vm_errors.is_empty(), "{vm_errors:#?}");
    // The comparison is not blind: a changed field of one VM shows, on that VM only.
    let mut bigger = d.clone();
    let vm = &mut bigger.hosts[0].vms[0];
    vm.memory = ByteSize(vm.memory.bytes() * 2);
    vm.spec_hash = fabrik::desired::build::spec_hash(vm);
    let changed = vm.id.clone();
    let p2 = plan::plan(&bigger, &live, &Options::default());
    let actions: Vec<_> = p2.actions.iter().filter(|a| a.id.kind == ResourceKind::Vm).collect();
    assert_eq!(actions.len(), 1, "{actions:#?}");
    assert_eq!((&actions[0].id, actions[0].op), (&changed, Op::Update));
    // The memory, and the mark that records the VM's new spec hash.
    assert_eq!(actions[0].changes.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(), ["memory", "fabrik:owner"]);
    // The hand-made domain is listed (once per host that sees it), never acted on.
    let notices: Vec<_> = p.notices.iter().filter(|n| n.id.name == HAND_MADE).collect();
    assert_eq!(notices.len(), d.hosts.len(), "{notices:#?}");
    assert!(notices.iter().all(|n| n.kind == NoticeKind::Unmanaged), "{notices:#?}");

    // A desired VM of the hand-made domain's name clashes: an error, never an update.
    let mut clashing = d.clone();
    let vm = &mut clashing.hosts[0].vms[0];
    vm.name = HAND_MADE.into();
    vm.id = ResourceId::new(ResourceKind::Vm, &vm.id.host, HAND_MADE);
    let clash_id = vm.id.clone();
    let live: Vec<LiveHost> = clashing.hosts.iter().map(|h| live_of(h, &domains)).collect();
    let p = plan::plan(&clashing, &live, &Options::default());
    let clash: Vec<_> = p.errors.iter().filter(|e| e.id == clash_id).collect();
    assert_eq!(clash.len(), 1, "{:#?}", p.errors);
    assert_eq!(clash[0].code, "fabrik::plan::name-clash");
    assert!(!p.actions.iter().any(|a| a.id.name == HAND_MADE), "{:#?}", p.actions);

    // Planning touched nothing on the host.
    let after = v.domains().unwrap();
    assert_eq!(after.iter().find(|d| d.name == HAND_MADE), Some(&hand_made));
    assert_eq!(after.len(), domains.len());
}

/// The example's base image and a VM disk made from it, created from fabrik's rendered
/// volume XML in pools under the testbed host's directory: the image is a volume of its
/// own (no backing store: one naming itself cannot be created), the disk a thin qcow2
/// overlay on it.
#[test]
fn a_base_image_and_a_disk_made_from_it_create() {
    let Some(tb) = Testbed::start("planvol", &["h1"]) else { return };
    let h1 = tb.host("h1");
    let mut v = LibvirtDriver::connect(&h1.uri).unwrap();
    let d = desired();
    let mut host = d.hosts.iter().find(|h| h.name == "fe01").expect("the example has fe01").clone();
    for pool in &mut host.pools {
        pool.path = h1.dir.join("pools").join(&pool.name).display().to_string();
    }
    let disk = host.volumes.iter().find(|v| v.image.is_some() && v.pool == "vms").expect("a disk from an image");
    let image = disk.image.as_ref().unwrap();
    let base = host.volumes.iter().find(|v| v.pool == image.pool && v.name == image.volume).expect("its base image");
    for pool in host.pools.iter().filter(|p| p.name == base.pool || p.name == disk.pool) {
        v.define_pool(&render::pool(pool)).unwrap();
        v.start_pool(&pool.name).unwrap();
    }
    for vol in [base, disk] {
        let xml = render::volume(&host, vol);
        v.create_volume(&vol.pool, &xml).unwrap_or_else(|e| panic!("{}: create failed: {e}\n{xml}", vol.id));
    }
    let read = |pool: &str, name: &str| {
        let p = v.connection().lookup_storage_pool_by_name(pool).unwrap();
        p.lookup_storage_vol_by_name(name).unwrap().xml_desc(0).unwrap()
    };
    let base_xml = read(&base.pool, &base.name);
    assert!(!base_xml.contains("<backingStore>"), "{base_xml}");
    let disk_xml = read(&disk.pool, &disk.name);
    let pool_path = &host.pools.iter().find(|p| p.name == base.pool).unwrap().path;
    let backing = format!("<path>{pool_path}/{}</path>", base.name);
    let store = disk_xml.split_once("<backingStore>").map(|(_, s)| s).unwrap_or_default();
    assert!(store.contains(&backing), "backed by {backing}:\n{disk_xml}");
}
