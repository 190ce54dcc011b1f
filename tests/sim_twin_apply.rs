//! The simulated twins against everything fabrik renders for `examples/ai-factory`: every
//! pool, volume, network and VM is made on a twin from fabrik's own rendering, the twin
//! is opened again as the next process would, and a plan of it must have nothing left
//! to do on the libvirt side. This is what `fabrik apply --sim` needs to converge.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fabrik::desired::{Desired, DesiredHost, ResourceKind};
use fabrik::driver::{ErrorKind, ShutdownOutcome, Virt};
use fabrik::live::{LiveHost, PowerState};
use fabrik::plan::{Action, Class, Op, Options, Plan};
use fabrik::spec::model::{Power, Spec};

const FACTORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory");
/// Long enough for the test driver, which stops a guest at once.
const SHUTDOWN: Duration = Duration::from_secs(5);

fn factory() -> (Spec, Desired) {
    let v = fabrik::check::validate(Path::new(FACTORY));
    assert!(v.is_valid(), "examples/ai-factory validates");
    let desired = fabrik::desired::build(&v.spec).expect("examples/ai-factory builds");
    (v.spec, desired)
}

fn open(state: &Path, spec: &Spec, host: &str) -> Box<dyn Virt> {
    let host = spec.hosts.iter().find(|h| h.name.value == host).unwrap();
    fabrik::sim::virt::open(&fabrik::sim::host_dir(state, host), host).unwrap()
}

/// Makes every object of a desired host on its twin, from fabrik's rendering, in the
/// order apply makes them: the links (a twin's libvirt starts no VM on a bridge its links
/// lack, as libvirtd does), pools, volumes (base images before the disks cloned from
/// them), networks, VMs.
fn build(state: &Path, spec: &Spec, factory: &str, host: &DesiredHost) {
    let declared = spec.hosts.iter().find(|h| h.name.value == host.name).unwrap();
    let (gpus, links) = fabrik::sim::open_gpus_links(&fabrik::sim::host_dir(state, declared), declared);
    let mut links = links.unwrap();
    // MIG instances and the VMs' vGPU devices on them, as apply makes them before the
    // VMs start (a twin's libvirt starts no domain whose mdev is missing).
    let mut gpus = gpus.unwrap();
    for g in &host.gpus {
        if let fabrik::desired::GpuSetup::Mig { instances } = &g.setup {
            gpus.set_mig_mode(g.address, true).unwrap();
            for i in instances {
                gpus.create_instance(g.address, i.profile_id, i.start).unwrap();
            }
        }
    }
    for vm in &host.vms {
        for mig in &vm.mig {
            let (gpu, i) = host
                .gpus
                .iter()
                .find_map(|g| match &g.setup {
                    fabrik::desired::GpuSetup::Mig { instances } => {
                        instances.iter().find(|i| &i.id == mig).map(|i| (g.address, i))
                    }
                    _ => None,
                })
                .unwrap();
            gpus.create_vgpu(gpu, &i.profile, i.start, &fabrik::render::domain::mdev_uuid(mig), None)
                .unwrap_or_else(|e| panic!("vGPU of {}: {e:?}", vm.id));
        }
    }
    drop(gpus);
    for l in &host.links {
        let spec = fabrik::driver::LinkSpec {
            name: l.name.clone(),
            kind: l.kind.clone(),
            mtu: l.mtu,
            master: l.master.clone(),
            alias: Some(fabrik::plan::ownership::link_alias(factory, &l.id)),
        };
        links.create_link(&spec).unwrap_or_else(|e| panic!("link {}: {e:?}", l.id));
        links.set_link(&l.name, None, Some(true), None).unwrap();
        if let Some(nic) = &l.uplink {
            links.set_link(nic, None, None, Some(Some(l.name.clone()))).unwrap();
        }
    }
    drop(links);
    let mut v = open(state, spec, &host.name);
    let v = v.as_mut();
    for pool in &host.pools {
        v.define_pool(&fabrik::render::pool(pool)).unwrap();
        v.start_pool(&pool.name).unwrap();
        v.set_pool_autostart(&pool.name, true).unwrap();
    }
    let is_base = |vol: &&fabrik::desired::DesiredVolume| {
        vol.image.as_ref().is_none_or(|i| i.pool == vol.pool && i.volume == vol.name)
    };
    let (bases, copies): (Vec<_>, Vec<_>) = host.volumes.iter().partition(is_base);
    for vol in bases.into_iter().chain(copies) {
        let xml = fabrik::render::volume(host, vol);
        let from = vol.image.as_ref().filter(|i| {
            !(i.pool == vol.pool && i.volume == vol.name)
                && host.volumes.iter().any(|b| b.pool == i.pool && b.name == i.volume)
        });
        let made = match from {
            Some(i) => v.clone_volume(&vol.pool, &xml, &i.pool, &i.volume),
            None => v.create_volume(&vol.pool, &xml),
        };
        made.unwrap_or_else(|e| panic!("volume {}: {e:?}\n{xml}", vol.id));
    }
    for net in &host.networks {
        v.define_network(&fabrik::render::network(factory, net)).unwrap();
        v.start_network(&net.name).unwrap();
        v.set_network_autostart(&net.name, true).unwrap();
    }
    for vm in &host.vms {
        let xml = fabrik::render::domain(factory, host, vm);
        v.define_domain(&xml).unwrap_or_else(|e| panic!("domain {}: {e:?}", vm.id));
        if vm.autostart {
            v.set_domain_autostart(&vm.name, true).unwrap();
        }
        if vm.power == Power::Running {
            v.start_domain(&vm.name).unwrap();
        }
    }
}

/// Every host's twin, read as a new process reads it.
fn observe(state: &Path, spec: &Spec) -> Vec<LiveHost> {
    spec.hosts.iter().map(|h| fabrik::driver::observe::observe(&h.name.value, fabrik::sim::drivers(state, h))).collect()
}

fn libvirt_side(a: &Action) -> bool {
    matches!(a.id.kind, ResourceKind::Vm | ResourceKind::Network | ResourceKind::Pool | ResourceKind::Volume)
}

/// The libvirt-side actions of a plan, with what differs in each, for a failure message.
fn explain(actions: &[&Action]) -> String {
    let mut out = String::new();
    for a in actions {
        out.push_str(&format!("{} {} ({:?}): {}\n", a.symbol, a.id, a.class, a.reason));
        for c in &a.changes {
            out.push_str(&format!("    {}: {:?} -> {:?}\n", c.field, c.from, c.to));
        }
        if let Some(diff) = a.shown_diff() {
            out.push_str(&diff);
        }
    }
    out
}

fn libvirt_actions(plan: &Plan) -> Vec<&Action> {
    plan.actions.iter().filter(|a| libvirt_side(a)).collect()
}

/// A factory whose twins have everything made, in a state folder of its own.
fn built() -> (tempfile::TempDir, Spec, Desired) {
    let (spec, desired) = factory();
    let state = tempfile::tempdir().unwrap();
    // Rendered as a plan renders them: with what the hosts report (a VF's PCI address).
    let planned = fabrik::plan::as_planned(&desired, &observe(state.path(), &spec));
    for host in &planned.hosts {
        build(state.path(), &spec, &planned.factory, host);
    }
    (state, spec, desired)
}

#[test]
fn twins_take_everything_fabrik_renders_and_plan_nothing_more() {
    let (state, spec, desired) = built();
    let live = observe(state.path(), &spec);
    for host in &live {
        let libvirt: Vec<_> = host.errors.iter().filter(|e| e.concern == "libvirt").collect();
        assert!(libvirt.is_empty(), "{}: {libvirt:?}", host.name);
    }
    let plan = fabrik::plan::plan(&desired, &live, &Options::default());
    let errors: Vec<_> = plan.errors.iter().filter(|e| e.id.kind != ResourceKind::Gpu).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let actions = libvirt_actions(&plan);
    assert!(actions.is_empty(), "a twin that has everything still plans:\n{}", explain(&actions));

    // Everything counted: the twins hold exactly the desired objects, in their state.
    for (want, have) in desired.hosts.iter().zip(&live) {
        assert_eq!(have.domains.len(), want.vms.len(), "{}", want.name);
        assert_eq!(have.networks.len(), want.networks.len(), "{}", want.name);
        let volumes: usize = have.pools.iter().map(|p| p.volumes.len()).sum();
        assert_eq!(volumes, want.volumes.len(), "{}", want.name);
        for vm in &want.vms {
            let d = have.domains.iter().find(|d| d.name == vm.name).unwrap();
            let running = vm.power == Power::Running;
            assert_eq!(d.state == PowerState::Running, running, "{}", vm.id);
            assert!(d.xml.starts_with("<domain type='kvm'"), "{}: {}", vm.id, d.xml);
            assert!(!d.xml.contains(fabrik::sim::virt::translate::NAMESPACE), "{}", d.xml);
        }
    }
}

#[test]
fn the_test_driver_holds_the_translated_domain() {
    let (spec, desired) = factory();
    let state = tempfile::tempdir().unwrap();
    let host = desired.hosts.iter().find(|h| !h.vms.is_empty()).unwrap();
    build(state.path(), &spec, &desired.factory, host);
    let dir: PathBuf = state.path().join(&host.name);
    let saved = std::fs::read_to_string(dir.join("libvirt.json")).unwrap();
    assert!(saved.contains(r#"<domain type='test'>"#), "{saved}");
    assert!(saved.contains(fabrik::sim::virt::translate::NAMESPACE), "{saved}");
    assert!(saved.contains("<type arch='i686'>hvm</type>"), "the test driver lists no machine types: {saved}");
}

#[test]
fn a_changed_memory_restarts_the_vm_now() {
    let (state, spec, mut desired) = built();
    let live = observe(state.path(), &spec);
    let vm = desired.hosts.iter_mut().flat_map(|h| &mut h.vms).find(|v| v.power == Power::Running).unwrap();
    vm.memory = fabrik::spec::types::ByteSize(vm.memory.bytes() * 2);
    let id = vm.id.clone();
    let plan = fabrik::plan::plan(&desired, &live, &Options::default());
    let actions = libvirt_actions(&plan);
    assert_eq!(actions.len(), 1, "{}", explain(&actions));
    let a = actions[0];
    assert_eq!((&a.id, a.op, a.class), (&id, Op::Update, Class::RestartNow), "{}", explain(&actions));
    // The mark's spec hash may change with it (it does wherever the plan re-hashes VMs,
    // e.g. when a factory keeps recorded addresses); nothing else may.
    let fields: Vec<&str> = a.changes.iter().map(|c| c.field.as_str()).filter(|f| *f != "fabrik:owner").collect();
    assert_eq!(fields, ["memory"], "{}", explain(&actions));
}

/// Plans one host of the factory against its twin, reopened.
fn plan_host(state: &Path, spec: &Spec, desired: &Desired, host: &str) -> Vec<Action> {
    let h = spec.hosts.iter().find(|h| h.name.value == host).unwrap();
    let live = fabrik::driver::observe::observe(host, fabrik::sim::drivers(state, h));
    let plan = fabrik::plan::plan(desired, &[live], &Options::default());
    plan.actions.into_iter().filter(|a| a.id.host == host && libvirt_side(a)).collect()
}

#[test]
fn power_and_definition_round_trip_through_reopening() {
    let (spec, desired) = factory();
    let state = tempfile::tempdir().unwrap();
    let host = desired.hosts.iter().find(|h| h.vms.iter().any(|v| v.power == Power::Running)).unwrap();
    let vm = host.vms.iter().find(|v| v.power == Power::Running).unwrap();
    build(state.path(), &spec, &desired.factory, host);
    let power_only = |actions: &[Action], from: &str| {
        let a: Vec<&Action> = actions.iter().collect();
        assert_eq!(a.len(), 1, "{}", explain(&a));
        let changes: Vec<_> = a[0].changes.iter().map(|c| (c.field.as_str(), c.from.as_deref())).collect();
        assert_eq!((&a[0].id, changes), (&vm.id, vec![("power", Some(from))]), "{}", explain(&a));
    };

    // Stopped gracefully, then forced off: each shows as the one change, after a reopen.
    let mut v = open(state.path(), &spec, &host.name);
    assert_eq!(v.shutdown_domain(&vm.name, SHUTDOWN).unwrap(), ShutdownOutcome::Graceful);
    drop(v);
    power_only(&plan_host(state.path(), &spec, &desired, &host.name), "shut off");
    let mut v = open(state.path(), &spec, &host.name);
    v.start_domain(&vm.name).unwrap();
    drop(v);
    assert!(plan_host(state.path(), &spec, &desired, &host.name).is_empty());
    let mut v = open(state.path(), &spec, &host.name);
    v.destroy_domain(&vm.name).unwrap();
    assert_eq!(v.destroy_domain(&vm.name).unwrap_err().kind, ErrorKind::Refused);
    drop(v);
    power_only(&plan_host(state.path(), &spec, &desired, &host.name), "shut off");

    // Autostart survives a reopen either way.
    let mut v = open(state.path(), &spec, &host.name);
    v.start_domain(&vm.name).unwrap();
    v.set_domain_autostart(&vm.name, !vm.autostart).unwrap();
    drop(v);
    let actions = plan_host(state.path(), &spec, &desired, &host.name);
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].changes.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(), ["autostart"]);
    open(state.path(), &spec, &host.name).set_domain_autostart(&vm.name, vm.autostart).unwrap();

    // Redefined while it runs. libvirt gives a document without a UUID a new one, so
    // it refuses it for a name that exists; with the domain's own UUID, the same
    // document changes nothing.
    let xml = fabrik::render::domain(&desired.factory, host, vm);
    let mut v = open(state.path(), &spec, &host.name);
    let e = v.define_domain(&xml).unwrap_err();
    assert!(e.message.contains("already exists with uuid"), "{e:?}");
    let uuid = v.domains().unwrap().into_iter().find(|d| d.name == vm.name).unwrap().uuid;
    v.define_domain(&xml.replacen("</name>", &format!("</name>\n  <uuid>{uuid}</uuid>"), 1)).unwrap();
    drop(v);
    assert!(plan_host(state.path(), &spec, &desired, &host.name).is_empty());

    // Undefined: gone after a reopen, and the plan makes it again.
    let mut v = open(state.path(), &spec, &host.name);
    v.destroy_domain(&vm.name).unwrap();
    v.undefine_domain(&vm.name).unwrap();
    let e = v.undefine_domain(&vm.name).unwrap_err();
    assert_eq!((e.kind, e.code.as_deref()), (ErrorKind::NotFound, Some("VIR_ERR_NO_DOMAIN")));
    drop(v);
    let actions = plan_host(state.path(), &spec, &desired, &host.name);
    assert_eq!(actions.iter().map(|a| (&a.id, a.op)).collect::<Vec<_>>(), [(&vm.id, Op::Create)]);
}

#[test]
fn libvirt_still_judges_what_the_twin_is_given() {
    let (spec, desired) = factory();
    let state = tempfile::tempdir().unwrap();
    let host = desired.hosts.iter().find(|h| !h.vms.is_empty()).unwrap();
    let vm = &host.vms[0];
    build(state.path(), &spec, &desired.factory, host);
    let mut v = open(state.path(), &spec, &host.name);
    let xml = fabrik::render::domain(&desired.factory, host, vm);

    // The same name under another UUID is libvirt's refusal.
    let other = xml.replacen("</name>", "</name>\n  <uuid>00000000-0000-4000-8000-000000000001</uuid>", 1);
    let e = v.define_domain(&other).unwrap_err();
    assert!(e.code.is_some() && e.message.contains(&vm.name), "{e:?}");
    assert!(e.message.contains("already"), "{e:?}");

    // An element libvirt's schema does not know is libvirt's refusal too.
    let typo = xml.replacen("<vcpu>", "<vcpus_typo/><vcpu>", 1);
    let e = v.define_domain(&typo).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Failed, "{e:?}");
    assert!(e.code.is_some(), "{e:?}");

    // Not XML at all.
    let e = v.define_domain("<domain type='kvm'>").unwrap_err();
    assert!(e.code.is_some(), "{e:?}");
}

#[test]
fn volumes_copy_across_pools_and_grow_as_libvirt_does() {
    let (spec, desired) = factory();
    let state = tempfile::tempdir().unwrap();
    let host = desired.hosts.iter().find(|h| h.pools.iter().any(|p| p.name == "vms")).unwrap();
    let mut v = open(state.path(), &spec, &host.name);
    for pool in host.pools.iter().filter(|p| p.name == "images" || p.name == "vms") {
        v.define_pool(&fabrik::render::pool(pool)).unwrap();
        v.start_pool(&pool.name).unwrap();
    }
    let vol = |name: &str, gib: u64| {
        format!(
            "<volume><name>{name}</name><capacity unit='GiB'>{gib}</capacity><target><format type='qcow2'/></target></volume>"
        )
    };
    v.create_volume("images", &vol("base", 4)).unwrap();
    // A copy is at least as large as its source; a missing source is libvirt's error.
    v.clone_volume("vms", &vol("small", 1), "images", "base").unwrap();
    v.clone_volume("vms", &vol("large", 8192), "images", "base").unwrap();
    let e = v.clone_volume("vms", &vol("none", 1), "images", "missing").unwrap_err();
    assert_eq!((e.kind, e.code.as_deref()), (ErrorKind::NotFound, Some("VIR_ERR_NO_STORAGE_VOL")), "{e:?}");
    assert_eq!(v.clone_volume("vms", &vol("small", 1), "images", "base").unwrap_err().kind, ErrorKind::Exists);

    let gib = fabrik::spec::types::ByteSize(1 << 30);
    v.resize_volume("vms", "small", fabrik::spec::types::ByteSize(16 * gib.bytes())).unwrap();
    let e = v.resize_volume("vms", "small", gib).unwrap_err();
    assert_eq!(e.code.as_deref(), Some("VIR_ERR_INVALID_ARG"), "{e:?}");
    drop(v);

    let pools = open(state.path(), &spec, &host.name).pools().unwrap();
    let capacity = |pool: &str, name: &str| {
        let p = pools.iter().find(|p| p.name == pool).unwrap();
        p.volumes.iter().find(|v| v.name == name).map(|v| (v.capacity.bytes() >> 30, v.format.clone()))
    };
    let qcow2 = Some("qcow2".to_string());
    assert_eq!(capacity("images", "base"), Some((4, qcow2.clone())));
    assert_eq!(capacity("vms", "small"), Some((16, qcow2.clone())), "grown, and kept across a reopen");
    assert_eq!(capacity("vms", "large"), Some((8192, qcow2)), "a volume larger than the test driver's pool");
}

#[test]
fn a_stopped_pool_keeps_its_volumes() {
    let (spec, desired) = factory();
    let state = tempfile::tempdir().unwrap();
    let host = &desired.hosts[0];
    let pool = &host.pools[0];
    let mut v = open(state.path(), &spec, &host.name);
    v.define_pool(&fabrik::render::pool(pool)).unwrap();
    v.start_pool(&pool.name).unwrap();
    v.create_volume(&pool.name, "<volume><name>kept</name><capacity unit='GiB'>1</capacity></volume>").unwrap();
    v.stop_pool(&pool.name).unwrap();
    drop(v);
    let mut v = open(state.path(), &spec, &host.name);
    assert!(!v.pools().unwrap()[0].active, "stays stopped");
    v.start_pool(&pool.name).unwrap();
    let names: Vec<String> = v.pools().unwrap()[0].volumes.iter().map(|v| v.name.clone()).collect();
    assert_eq!(names, ["kept"]);
}
