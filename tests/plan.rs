//! The plan on hand-made live states: each change class, ownership, MIG re-layouts,
//! stale saved plans, targeting. The live hosts start converged — built from the desired
//! state's own rendered XML — and each test changes one thing.

use std::path::Path;

use fabrik::desired::{Desired, ResourceId};
use fabrik::live::{
    LinkKind, LiveDomain, LiveGpu, LiveHost, LiveMigInstance, LiveVolume, MigMode, PowerState, RunningDefinition,
};
use fabrik::plan::ownership::CreatedVolume;
use fabrik::plan::{self, Class, Created, NoticeKind, Op, Options, Plan, converged};
use fabrik::render;
use fabrik::spec::types::ByteSize;

fn desired() -> Desired {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory"));
    let v = fabrik::check::validate(path);
    assert!(v.is_valid());
    fabrik::desired::build(&v.spec).expect("the example builds")
}

fn id(text: &str) -> ResourceId {
    ResourceId::parse(text).unwrap()
}

fn host<'a>(live: &'a mut [LiveHost], name: &str) -> &'a mut LiveHost {
    live.iter_mut().find(|h| h.name == name).unwrap()
}

fn domain<'a>(live: &'a mut [LiveHost], host_name: &str, vm: &str) -> &'a mut LiveDomain {
    host(live, host_name).domains.iter_mut().find(|d| d.name == vm).unwrap()
}

fn run(d: &Desired, live: &[LiveHost]) -> Plan {
    plan::plan(d, live, &Options::default())
}

fn only<'a>(p: &'a Plan, id_text: &str) -> &'a plan::Action {
    let found: Vec<_> = p.actions.iter().filter(|a| a.id.to_string() == id_text).collect();
    assert_eq!(found.len(), 1, "{}", plan::output::human(p, Default::default()));
    found[0]
}

#[test]
fn converged_hosts_plan_nothing() {
    let d = desired();
    let p = run(&d, &converged(&d));
    assert!(!p.has_changes(), "{}", plan::output::human(&p, Default::default()));
    assert!(!p.has_errors());
    assert_eq!(plan::output::summary_line(&p.summary), "No changes: the hosts match the desired state.");
}

#[test]
fn vm_stopped_out_of_band_is_a_power_change() {
    let d = desired();
    let mut live = converged(&d);
    domain(&mut live, "gpu02", "globex-embed").state = PowerState::ShutOff;
    let p = run(&d, &live);
    let a = only(&p, "vm:gpu02/globex-embed");
    assert_eq!((a.op, a.class, a.symbol.as_str()), (Op::Update, Class::Live, "~"));
    assert_eq!(a.changes[0].field, "power");
    assert_eq!(a.changes[0].from.as_deref(), Some("shut off"));
    assert!(a.reason.contains("out of band: start"), "{}", a.reason);
    assert_eq!(p.actions.len(), 1);
}

#[test]
fn autostart_is_applied_live() {
    let d = desired();
    let mut live = converged(&d);
    domain(&mut live, "fe01", "acme-login").autostart = false;
    let p = run(&d, &live);
    let a = only(&p, "vm:fe01/acme-login");
    assert_eq!((a.class, a.changes[0].field.as_str()), (Class::Live, "autostart"));
}

/// An apply stopped between the redefine and the restart of a `restart now` leaves the
/// saved definition right and the guest on the old one: the plan reads both and restarts.
#[test]
fn a_guest_running_an_older_definition_than_its_saved_one_restarts() {
    let d = desired();
    let mut live = converged(&d);
    let dom = domain(&mut live, "gpu02", "globex-embed");
    let mut running = RunningDefinition::of(dom);
    running.memory = ByteSize(dom.memory.bytes() / 2);
    dom.running = Some(Box::new(running.clone()));
    let p = run(&d, &live);
    let a = only(&p, "vm:gpu02/globex-embed");
    assert_eq!((a.op, a.class, a.symbol.as_str()), (Op::Update, Class::RestartNow, "!"));
    assert_eq!(a.changes[0].field, "running memory");
    assert!(a.reason.contains("runs an older definition than its saved one (memory)"), "{}", a.reason);
    assert_eq!(p.summary.vm_restarts, 1);
    let words: Vec<String> = a.ops.iter().map(|s| s.describe()).collect();
    assert_eq!(
        words,
        [
            // Kept as it is when it exists (a restart after a reboot needs it made).
            "create vGPU bc0e7268-47b8-8dc5-a569-929ad1a1cd24 on MIG instance 2g.35gb@0 of 0000:1b:00.0",
            "define domain `globex-embed`",
            "shut down domain `globex-embed` (forced off after 60s)",
            "start domain `globex-embed`"
        ]
    );
    // Once the guest runs what is saved, nothing is left to do; a stopped VM has no
    // running definition to be stale.
    domain(&mut live, "gpu02", "globex-embed").running = Some(Box::new(RunningDefinition::of(&running_as_saved(&d))));
    assert!(!run(&d, &live).has_changes());
}

fn running_as_saved(d: &Desired) -> LiveDomain {
    converged(d).into_iter().flat_map(|h| h.domains).find(|x| x.name == "globex-embed").unwrap()
}

/// The desired state with one VM's memory doubled.
fn more_memory(d: &Desired, vm: &str) -> Desired {
    let mut d = d.clone();
    for h in &mut d.hosts {
        for v in h.vms.iter_mut().filter(|v| v.name == vm) {
            v.memory = ByteSize(v.memory.bytes() * 2);
            v.spec_hash = fabrik::desired::build::spec_hash(v);
        }
    }
    d
}

#[test]
fn config_change_on_a_running_vm_restarts_it_now() {
    let d = desired();
    let live = converged(&d);
    let p = run(&more_memory(&d, "globex-embed"), &live);
    let a = only(&p, "vm:gpu02/globex-embed");
    assert_eq!((a.op, a.class, a.symbol.as_str()), (Op::Update, Class::RestartNow, "!"));
    assert!(a.changes.iter().any(|c| c.field == "memory"), "{:?}", a.changes);
    assert!(a.diff.as_deref().unwrap().contains("<memory"));
    assert_eq!(p.summary.vm_restarts, 1);
    assert_eq!(plan::output::summary_line(&p.summary), "Plan: 0 to add, 1 to change, 0 to destroy; 1 VM restart");
}

#[test]
fn config_change_on_a_stopped_vm_waits_for_its_next_start() {
    let d = desired();
    let live = converged(&d);
    // `acme-dev` is declared stopped.
    let p = run(&more_memory(&d, "acme-dev"), &live);
    let a = only(&p, "vm:gpu02/acme-dev");
    assert_eq!((a.class, a.symbol.as_str()), (Class::NextRestart, "~"));
    assert_eq!(p.summary.vm_restarts, 0);
}

#[test]
fn link_mtu_and_hugepages_are_applied_live() {
    let d = desired();
    let mut live = converged(&d);
    host(&mut live, "gpu01").links.iter_mut().find(|l| l.name == "br-acme").unwrap().mtu = 1500;
    host(&mut live, "gpu01").hugepages[0].total = 10;
    let p = run(&d, &live);
    let link = only(&p, "link:gpu01/br-acme");
    assert_eq!((link.class, link.changes[0].field.as_str()), (Class::Live, "mtu"));
    let pages = only(&p, "hugepages:gpu01/node0-1G");
    assert_eq!((pages.class, pages.changes[0].from.as_deref()), (Class::Live, Some("10")));
}

/// A VM that ran on one host and is now declared on another is one `-/+` line on the new
/// host, naming the old copy, counted as a VM restart; the new copy is created without
/// touching the old host (apply stops the old copy first, as a job of its own).
#[test]
fn a_vm_moved_between_hosts_is_one_disruptive_line() {
    let d = desired();
    let mut live = converged(&d);
    let fe01 = host(&mut live, "fe01");
    let i = fe01.domains.iter().position(|x| x.name == "acme-login").unwrap();
    let old = fe01.domains.remove(i);
    host(&mut live, "gpu01").domains.push(old);
    let p = run(&d, &live);
    assert_eq!(p.actions.len(), 1, "{}", plan::output::human(&p, Default::default()));
    let a = only(&p, "vm:fe01/acme-login");
    assert_eq!((a.op, a.class, a.symbol.as_str()), (Op::Replace, Class::Replace, "-/+"));
    assert_eq!(a.moved_from, Some(id("vm:gpu01/acme-login")));
    assert_eq!((a.changes[0].from.as_deref(), a.changes[0].to.as_deref()), (Some("gpu01"), Some("fe01")));
    assert!(
        a.reason.starts_with("moves from host `gpu01` to `fe01`: the copy on `gpu01` is shut down"),
        "{}",
        a.reason
    );
    assert_eq!((p.summary.add, p.summary.destroy, p.summary.vm_restarts), (1, 1, 1));
    let words: Vec<String> = a.ops.iter().map(|s| s.describe()).collect();
    assert_eq!(
        words,
        ["define domain `acme-login`", "set autostart of domain `acme-login` on", "start domain `acme-login`"]
    );
}

/// An InfiniBand partition on a NIC the host reports as Ethernet, or on a NIC the host
/// does not have, stops the plan: apply would otherwise hand out Ethernet VFs, or fail.
#[test]
fn an_infiniband_partition_needs_an_infiniband_nic() {
    let d = desired();
    let (h, net) = d
        .hosts
        .iter()
        .find_map(|h| {
            h.networks
                .iter()
                .find(|n| n.kind == fabrik::spec::model::NetKind::IbPartition)
                .map(|n| (h.name.clone(), n.clone()))
        })
        .expect("the example has an InfiniBand partition");
    let pf = net.pf.clone().unwrap();
    let mut live = converged(&d);
    assert!(!run(&d, &live).has_errors());
    host(&mut live, &h).links.iter_mut().find(|l| l.name == pf).unwrap().kind =
        LinkKind::Other { kind: "ether".into() };
    let p = run(&d, &live);
    let errors: Vec<_> = p.errors.iter().filter(|e| e.id == net.id).collect();
    assert_eq!(errors.len(), 1, "{:#?}", p.errors);
    assert_eq!(errors[0].code, "fabrik::plan::wrong-nic-kind");
    assert!(errors[0].message.contains(&format!("`{pf}` on host `{h}` is a `ether` link")), "{}", errors[0].message);
}

fn pub0(live: &mut [LiveHost]) -> &mut fabrik::live::LiveLink {
    host(live, "fe01").links.iter_mut().find(|l| l.name == "pub0").unwrap()
}

/// A bridge network's parent NIC is its bridge's port: taken out by hand, it is drift
/// that apply repairs by making it the port again; a NIC the host lacks, or one another
/// bridge holds, stops the plan.
#[test]
fn a_bridge_uplink_taken_out_of_its_bridge_is_drift() {
    let d = desired();
    let mut live = converged(&d);
    assert_eq!(pub0(&mut live).master.as_deref(), Some("br-public"), "converged: the NIC is the bridge's port");
    pub0(&mut live).master = None;
    let p = run(&d, &live);
    let a = only(&p, "link:fe01/br-public");
    assert_eq!((a.op, a.class, a.symbol.as_str()), (Op::Update, Class::Live, "~"));
    assert_eq!(
        (a.changes[0].field.as_str(), a.changes[0].from.as_deref(), a.changes[0].to.as_deref()),
        ("uplink", Some("none"), Some("pub0"))
    );
    assert!(a.reason.contains("NIC `pub0` is not a port of the bridge"), "{}", a.reason);
    assert_eq!(
        a.ops,
        [fabrik::plan::ops::Step::Link(fabrik::plan::ops::LinkOp::Set {
            name: "pub0".into(),
            mtu: None,
            up: None,
            set_master: true,
            master: Some("br-public".into())
        })]
    );

    // In a bridge of fabrik's that the plan deletes, the NIC is released by the deletion
    // (done first) and made this bridge's port.
    host(&mut live, "fe01").links.push(fabrik::live::LiveLink {
        name: "br-old".into(),
        kind: LinkKind::Bridge,
        mtu: 1500,
        up: true,
        master: None,
        alias: Some(fabrik::plan::ownership::link_alias(&d.factory, &id("link:fe01/br-old"))),
        sriov_vfs: None,
        sriov_pci: None,
    });
    pub0(&mut live).master = Some("br-old".into());
    let p = run(&d, &live);
    assert!(!p.has_errors(), "{:?}", p.errors);
    assert_eq!(only(&p, "link:fe01/br-old").op, Op::Delete);
    let a = only(&p, "link:fe01/br-public");
    assert!(a.reason.contains("is a port of `br-old`, which goes"), "{}", a.reason);
    host(&mut live, "fe01").links.retain(|l| l.name != "br-old");

    pub0(&mut live).master = Some("br-hand".into());
    let p = run(&d, &live);
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert_eq!(p.errors[0].code, "fabrik::plan::uplink-taken");
    assert!(p.errors[0].message.contains("is a port of `br-hand`"), "{}", p.errors[0].message);

    host(&mut live, "fe01").links.retain(|l| l.name != "pub0");
    let p = run(&d, &live);
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert_eq!(
        (p.errors[0].code.as_str(), p.errors[0].id.to_string()),
        ("fabrik::plan::missing-nic", "link:fe01/br-public".into())
    );
}

#[test]
fn a_link_of_another_kind_is_replaced() {
    let d = desired();
    let mut live = converged(&d);
    host(&mut live, "gpu01").links.iter_mut().find(|l| l.name == "vx10001").unwrap().kind = LinkKind::Bridge;
    let p = run(&d, &live);
    let a = only(&p, "link:gpu01/vx10001");
    assert_eq!((a.op, a.class, a.symbol.as_str()), (Op::Replace, Class::Replace, "-/+"));
    assert_eq!((p.summary.add, p.summary.destroy), (1, 1));
}

fn ip(text: &str) -> std::net::IpAddr {
    text.parse().unwrap()
}

/// The local address and flood entries of a VXLAN link, desired or live.
fn vxlan_of(kind: &mut LinkKind) -> (&mut Option<std::net::IpAddr>, &mut Vec<std::net::IpAddr>) {
    match kind {
        LinkKind::Vxlan { local, remotes, .. } => (local, remotes),
        other => panic!("not a VXLAN device: {other:?}"),
    }
}

#[test]
fn a_vxlan_device_sends_from_its_hosts_address_and_floods_to_the_others() {
    let d = desired();
    let gpu01 = d.hosts.iter().find(|h| h.name == "gpu01").unwrap();
    let mut kind = gpu01.links.iter().find(|l| l.name == "vx10001").unwrap().kind.clone();
    let LinkKind::Vxlan { parent, .. } = &kind else { unreachable!() };
    assert_eq!(parent.as_deref(), Some("fe0"));
    // acme-net spans fe01, gpu01, gpu02 and gb01; gpu01's own address is not a remote.
    let (local, remotes) = vxlan_of(&mut kind);
    assert_eq!(*local, Some(ip("10.10.0.12")));
    assert_eq!(*remotes, [ip("10.10.0.11"), ip("10.10.0.13"), ip("10.10.0.14")]);
    // globex-net spans fe01 and gpu02 only.
    let gpu02 = d.hosts.iter().find(|h| h.name == "gpu02").unwrap();
    let mut kind = gpu02.links.iter().find(|l| l.name == "vx10002").unwrap().kind.clone();
    let (local, remotes) = vxlan_of(&mut kind);
    assert_eq!((*local, remotes.as_slice()), (Some(ip("10.10.0.13")), [ip("10.10.0.11")].as_slice()));
}

#[test]
fn flood_entries_that_differ_are_added_and_removed_live() {
    let d = desired();
    let mut live = converged(&d);
    let link = host(&mut live, "gpu01").links.iter_mut().find(|l| l.name == "vx10001").unwrap();
    let (_, remotes) = vxlan_of(&mut link.kind);
    // Live: gb01's entry is missing, a stale one points at a host that left.
    *remotes = vec![ip("10.10.0.99"), ip("10.10.0.13"), ip("10.10.0.11")];
    let p = run(&d, &live);
    let a = only(&p, "link:gpu01/vx10001");
    assert_eq!((a.op, a.class, a.symbol.as_str()), (Op::Update, Class::Live, "~"));
    assert_eq!(a.changes.len(), 1);
    let c = &a.changes[0];
    assert_eq!(c.field, "remotes");
    assert_eq!(c.from.as_deref(), Some("10.10.0.11, 10.10.0.13, 10.10.0.99"));
    assert_eq!(c.to.as_deref(), Some("10.10.0.11, 10.10.0.13, 10.10.0.14"));
    assert_eq!(a.reason, "flood entries: add 10.10.0.14, remove 10.10.0.99");
    assert_eq!(p.actions.len(), 1, "{}", plan::output::human(&p, Default::default()));

    // The same entries in another order are no change.
    let mut live = converged(&d);
    let link = host(&mut live, "gpu01").links.iter_mut().find(|l| l.name == "vx10001").unwrap();
    vxlan_of(&mut link.kind).1.reverse();
    assert!(!run(&d, &live).has_changes());
}

#[test]
fn a_vxlan_device_with_another_local_address_is_replaced() {
    let d = desired();
    for have in [None, Some(ip("10.10.0.99"))] {
        let mut live = converged(&d);
        let link = host(&mut live, "gpu01").links.iter_mut().find(|l| l.name == "vx10001").unwrap();
        *vxlan_of(&mut link.kind).0 = have;
        let p = run(&d, &live);
        let a = only(&p, "link:gpu01/vx10001");
        assert_eq!((a.op, a.class, a.symbol.as_str()), (Op::Replace, Class::Replace, "-/+"));
        assert_eq!(a.changes[0].field, "local");
        assert_eq!(a.changes[0].to.as_deref(), Some("10.10.0.12"));
        assert!(a.reason.contains("should send from 10.10.0.12"), "{}", a.reason);
    }
    // Where the factory gives no address, the kernel's choice is no change.
    let mut d = d.clone();
    let gpu01 = d.hosts.iter_mut().find(|h| h.name == "gpu01").unwrap();
    let link = gpu01.links.iter_mut().find(|l| l.name == "vx10001").unwrap();
    *vxlan_of(&mut link.kind).0 = None;
    let mut live = converged(&d);
    let link = host(&mut live, "gpu01").links.iter_mut().find(|l| l.name == "vx10001").unwrap();
    *vxlan_of(&mut link.kind).0 = Some(ip("10.10.0.99"));
    assert!(!run(&d, &live).has_changes());
}

/// A domain someone defined by hand: no fabrik mark.
fn hand_made(name: &str) -> LiveDomain {
    let xml = format!("<domain type='kvm'><name>{name}</name><memory unit='KiB'>65536</memory><vcpu>1</vcpu></domain>");
    LiveDomain {
        name: name.into(),
        uuid: "hand".into(),
        state: PowerState::Running,
        autostart: false,
        vcpus: 1,
        memory: ByteSize(64 << 20),
        hugepages: None,
        vcpupin: Vec::new(),
        emulatorpin: None,
        numa_mode: None,
        numa_nodeset: None,
        numa_cells: Vec::new(),
        hostdevs: Vec::new(),
        interfaces: Vec::new(),
        disks: Vec::new(),
        owner: None,
        addresses: Vec::new(),
        xml,
        running: None,
    }
}

#[test]
fn a_hand_made_domain_is_untouched_and_listed_only_on_request() {
    let d = desired();
    let mut live = converged(&d);
    host(&mut live, "gpu01").domains.push(hand_made("bob-scratch"));
    let p = run(&d, &live);
    assert!(!p.has_changes() && !p.has_errors());
    let n = p.notices.iter().find(|n| n.id == id("vm:gpu01/bob-scratch")).unwrap();
    assert_eq!(n.kind, NoticeKind::Unmanaged);
    let quiet = plan::output::human(&p, Default::default());
    assert!(!quiet.contains("bob-scratch"), "{quiet}");
    let shown = plan::output::human(&p, plan::output::Show { unmanaged: true, ..Default::default() });
    assert!(shown.contains("vm:gpu01/bob-scratch") && shown.contains("unmanaged"), "{shown}");
}

#[test]
fn a_name_clash_with_a_hand_made_domain_is_an_error() {
    let d = desired();
    let mut live = converged(&d);
    *domain(&mut live, "gpu01", "acme-train") = hand_made("acme-train");
    let p = run(&d, &live);
    assert!(p.actions.iter().all(|a| a.id != id("vm:gpu01/acme-train")));
    assert_eq!(p.errors.len(), 1);
    assert_eq!(p.errors[0].code, "fabrik::plan::name-clash");
    assert_eq!(p.errors[0].id, id("vm:gpu01/acme-train"));
}

#[test]
fn a_plan_error_from_a_declaration_carries_its_file_line_and_column() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory"));
    let v = fabrik::check::validate(path);
    let d = fabrik::desired::build(&v.spec).expect("the example builds");
    let mut live = converged(&d);
    *domain(&mut live, "gpu01", "acme-train") = hand_made("acme-train");
    // A declared GPU the host does not report.
    host(&mut live, "gpu02").gpus.retain(|g| g.address.to_string() != "0000:1b:00.0");
    let mut p = run(&d, &live);
    plan::locate::locate_errors(&mut p, &v.spec, &v.sources);
    let at = |code: &str| {
        let e = p.errors.iter().find(|e| e.code == code).unwrap_or_else(|| panic!("no {code}: {:?}", p.errors));
        let at = e.at.as_ref().expect("located");
        let file = at.file.strip_prefix(path.to_str().unwrap()).unwrap_or(&at.file).to_string();
        (file, at.line, at.column)
    };
    assert_eq!(at("fabrik::plan::name-clash"), ("/tenants/acme.yaml".to_string(), 21, 11));
    assert_eq!(at("fabrik::plan::missing-gpu"), ("/hosts/gpu02.yaml".to_string(), 32, 18));
    let text = plan::output::human(&p, Default::default());
    assert!(text.contains("  --> ") && text.contains("tenants/acme.yaml:21:11"), "{text}");
}

#[test]
fn objects_of_another_factory_are_never_touched() {
    let d = desired();
    let mut live = converged(&d);
    let mut foreign = hand_made("other-vm");
    foreign.owner = Some(fabrik::live::Ownership {
        factory: "elsewhere".into(),
        resource: "vm:gpu01/other-vm".into(),
        spec_hash: "x".into(),
    });
    host(&mut live, "gpu01").domains.push(foreign);
    let mut ours_renamed = domain(&mut live, "gpu01", "acme-train").clone();
    ours_renamed.name = "acme-old".into();
    host(&mut live, "gpu01").domains.push(ours_renamed);
    let p = run(&d, &live);
    assert!(p.actions.iter().all(|a| a.id != id("vm:gpu01/other-vm")));
    assert_eq!(p.notices.iter().find(|n| n.id == id("vm:gpu01/other-vm")).unwrap().kind, NoticeKind::OtherFactory);
    // fabrik's own domain that is no longer desired is deleted.
    let a = only(&p, "vm:gpu01/acme-old");
    assert_eq!((a.op, a.symbol.as_str()), (Op::Delete, "-"));
}

#[test]
fn volumes_are_deleted_only_when_recorded_deletable() {
    let d = desired();
    let mut live = converged(&d);
    let pool = host(&mut live, "gpu01").pools.iter_mut().find(|p| p.name == "scratch").unwrap();
    for name in ["old-a", "old-b", "old-c"] {
        pool.volumes.push(LiveVolume {
            name: name.into(),
            path: format!("/x/{name}"),
            capacity: ByteSize(1 << 30),
            allocation: ByteSize(0),
            format: None,
            owner: None,
        });
    }
    let created = Created {
        volumes: vec![
            CreatedVolume { id: id("volume:gpu01/scratch/old-a"), deletable: true },
            CreatedVolume { id: id("volume:gpu01/scratch/old-b"), deletable: false },
        ],
    };
    let p = plan::plan(&d, &live, &Options { created, ..Options::default() });
    let a = only(&p, "volume:gpu01/scratch/old-a");
    assert_eq!((a.op, a.class, a.symbol.as_str()), (Op::Delete, Class::DestroysData, "-"));
    let kind = |v: &str| p.notices.iter().find(|n| n.id == id(v)).map(|n| n.kind);
    assert_eq!(kind("volume:gpu01/scratch/old-b"), Some(NoticeKind::Kept));
    assert_eq!(kind("volume:gpu01/scratch/old-c"), Some(NoticeKind::Unmanaged));
    assert_eq!(p.actions.len(), 1);
    assert_eq!(p.summary.data_destroyed, 1);
}

const MIG_GPU: &str = "gpu:gpu02/0000:1b:00.0";

fn mig_gpu(live: &mut [LiveHost]) -> &mut LiveGpu {
    host(live, "gpu02").gpus.iter_mut().find(|g| g.address.to_string() == "0000:1b:00.0").unwrap()
}

fn instance(profile: &str, profile_id: u32, start: u8, size: u8) -> LiveMigInstance {
    LiveMigInstance { id: 99, profile_id, profile: profile.into(), start, size, compute_instances: vec![0] }
}

#[test]
fn mig_relayout_keeps_running_instances() {
    // Live: 3g.71gb@4 (in use by globex-vllm-small) and an unused 4g.71gb@0 where the
    // desired 2g@0, 1g@2, 1g@3 go.
    let d = desired();
    let mut live = converged(&d);
    let g = mig_gpu(&mut live);
    g.instances.retain(|i| i.start == 4);
    g.instances.push(instance("4g.71gb", 5, 0, 4));
    let p = run(&d, &live);
    let old = only(&p, "mig:gpu02/0000:1b:00.0/4g.71gb@0");
    assert_eq!((old.op, old.class), (Op::Delete, Class::Live));
    for new in ["2g.35gb@0", "1g.18gb@2", "1g.18gb@3"] {
        let a = only(&p, &format!("mig:gpu02/0000:1b:00.0/{new}"));
        assert_eq!((a.op, a.class), (Op::Create, Class::Live));
    }
    assert!(p.actions.iter().all(|a| a.id != id("mig:gpu02/0000:1b:00.0/3g.71gb@4")));
    assert!(p.actions.iter().all(|a| a.id != id(MIG_GPU)));
    assert_eq!(p.summary.gpu_relayouts, 0);
    // Deletions come before the creations that reuse their slices.
    let pos = |s: &str| p.actions.iter().position(|a| a.id.to_string() == s).unwrap();
    assert!(pos("mig:gpu02/0000:1b:00.0/4g.71gb@0") < pos("mig:gpu02/0000:1b:00.0/2g.35gb@0"));
}

#[test]
fn mig_relayout_that_takes_an_instance_from_a_vm_that_stays() {
    // Live: globex-embed runs on a 4g.71gb@0 the desired layout no longer has.
    let d = desired();
    let mut live = converged(&d);
    let old = id("mig:gpu02/0000:1b:00.0/4g.71gb@0");
    let want = id("mig:gpu02/0000:1b:00.0/2g.35gb@0");
    let g = mig_gpu(&mut live);
    g.instances.retain(|i| i.start == 4);
    g.instances.push(instance("4g.71gb", 5, 0, 4));
    let embed = domain(&mut live, "gpu02", "globex-embed");
    embed.xml = embed.xml.replace(&render::domain::mdev_uuid(&want), &render::domain::mdev_uuid(&old));
    let p = run(&d, &live);
    let a = only(&p, &old.to_string());
    assert_eq!((a.op, a.class, a.symbol.as_str()), (Op::Delete, Class::GpuRelayout, "-"));
    assert!(a.reason.contains("globex-embed"), "{}", a.reason);
    assert_eq!(p.summary.gpu_relayouts, 1);
    // The VM's own definition changes to the new instance: a restart.
    assert_eq!(only(&p, "vm:gpu02/globex-embed").class, Class::RestartNow);
}

#[test]
fn switching_mig_mode_resets_the_gpu_under_its_vms() {
    let d = desired();
    let mut live = converged(&d);
    let g = mig_gpu(&mut live);
    g.mig = Some(MigMode { current: false, pending: false });
    let instances = std::mem::take(&mut g.instances);
    let p = run(&d, &live);
    let a = only(&p, MIG_GPU);
    assert_eq!((a.class, a.symbol.as_str()), (Class::GpuRelayout, "!"));
    assert_eq!(p.actions.iter().filter(|a| a.op == Op::Create).count(), instances.len());
}

#[test]
fn a_saved_plan_goes_stale_when_a_live_object_changes() {
    let d = desired();
    let mut live = converged(&d);
    host(&mut live, "gpu01").domains.retain(|x| x.name != "acme-train");
    let p = run(&d, &live);
    assert!(!plan::file::stale(&p, &d, &live).is_stale());
    assert_eq!(p.fingerprints["vm:gpu01/acme-train"], plan::file::Fingerprint::Absent);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    plan::file::save(&p, &path).unwrap();
    let saved = plan::file::load(&path).unwrap();
    assert_eq!(saved, p);

    let mut changed = live.clone();
    domain(&mut changed, "gpu02", "globex-embed").state = PowerState::ShutOff;
    let s = plan::file::stale(&saved, &d, &changed);
    assert_eq!(s.reasons, ["`vm:gpu02/globex-embed` changed since the plan was made"]);

    let mut appeared = live.clone();
    host(&mut appeared, "gpu01").domains.push(hand_made("acme-train"));
    let s = plan::file::stale(&saved, &d, &appeared);
    assert_eq!(s.reasons, ["`vm:gpu01/acme-train` now exists; the plan expected it absent"]);

    let s = plan::file::stale(&saved, &more_memory(&d, "acme-train"), &live);
    assert_eq!(s.reasons, ["the factory's files changed since the plan was made"]);
}

#[test]
fn targets_bring_what_they_need_and_excludes_take_their_dependents() {
    let d = desired();
    // Hardware in place, nothing else made yet.
    let mut live = converged(&d);
    for h in &mut live {
        h.domains.clear();
        h.networks.clear();
        h.links.clear();
        h.pools.clear();
    }
    mig_gpu(&mut live).instances.clear();
    let all = run(&d, &live);
    let target = plan::plan(&d, &live, &Options { targets: vec![id("vm:gpu02/globex-embed")], ..Options::default() });
    let ids: Vec<String> = target.actions.iter().map(|a| a.id.to_string()).collect();
    assert!(ids.contains(&"vm:gpu02/globex-embed".to_string()));
    assert!(ids.contains(&"mig:gpu02/0000:1b:00.0/2g.35gb@0".to_string()));
    assert!(ids.contains(&"net:gpu02/globex-net".to_string()));
    assert!(!ids.iter().any(|i| i.starts_with("vm:") && i != "vm:gpu02/globex-embed"), "{ids:?}");
    assert!(target.actions.len() < all.actions.len());

    let excluded = plan::plan(&d, &live, &Options { excludes: vec![id("link:gpu02/br-globex")], ..Options::default() });
    let ids: Vec<String> = excluded.actions.iter().map(|a| a.id.to_string()).collect();
    for gone in ["link:gpu02/br-globex", "link:gpu02/vx10002", "net:gpu02/globex-net", "vm:gpu02/globex-embed"] {
        assert!(!ids.contains(&gone.to_string()), "{gone}");
    }
    assert!(ids.contains(&"vm:gpu02/initech-viz-0".to_string()));
}

#[test]
fn replace_forces_a_replacement() {
    let d = desired();
    let live = converged(&d);
    let p = plan::plan(&d, &live, &Options { replace: vec![id("vm:gpu01/acme-train")], ..Options::default() });
    let a = only(&p, "vm:gpu01/acme-train");
    assert_eq!((a.op, a.class, a.symbol.as_str()), (Op::Replace, Class::Replace, "-/+"));
}

#[test]
fn an_unreadable_host_is_an_error_not_a_plan_to_create_everything() {
    let d = desired();
    let mut live = converged(&d);
    let h = host(&mut live, "fe01");
    h.domains.clear();
    h.errors.push(fabrik::live::ConcernError {
        concern: "libvirt".into(),
        error: fabrik::driver::DriverError::new(fabrik::driver::ErrorKind::Unreachable, "connection refused"),
    });
    let p = run(&d, &live);
    assert!(p.actions.iter().all(|a| a.id.host != "fe01"));
    assert_eq!(p.errors[0].code, "fabrik::plan::unreadable-host");
}

#[test]
fn sriov_vfs_are_made_live_from_zero_and_replaced_from_another_count() {
    let d = desired();
    let mut live = converged(&d);
    let nic = |live: &mut [LiveHost], n: u32| {
        host(live, "gpu01").links.iter_mut().find(|l| l.name == "stor0").unwrap().sriov_vfs = Some(n);
    };
    nic(&mut live, 0);
    let p = run(&d, &live);
    let a = only(&p, "vfs:gpu01/stor0");
    assert_eq!((a.op, a.class), (Op::Update, Class::Live));
    assert_eq!(a.reason, "create 32 VFs on `stor0`");
    nic(&mut live, 8);
    let p = run(&d, &live);
    let a = only(&p, "vfs:gpu01/stor0");
    assert_eq!(a.class, Class::Replace);
    assert!(a.reason.contains("removes all VFs first"), "{}", a.reason);
    // The SR-IOV network on that NIC waits for its VFs.
    let graph = fabrik::graph::Graph::of(&d).unwrap();
    assert!(graph.dependencies(&id("net:gpu01/storage-rdma")).contains(&&id("vfs:gpu01/stor0")));
}
