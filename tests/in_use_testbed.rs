//! On a testbed host: a guest fabrik does not own, running on a tenant network the
//! factory stops needing, keeps that network, its bridge and its VXLAN port (the
//! deletions are held back and name the guest); once the guest is gone, the next apply
//! deletes them.
//!
//! Without root, /dev/kvm or libvirtd it prints why and passes; with `CI=true` it fails.

#[path = "testbed/mod.rs"]
mod testbed;

#[path = "apply_testbed/factory.rs"]
mod factory;

#[path = "apply_testbed/run.rs"]
mod run;

use run::HostView;
use testbed::Testbed;

/// The guests have no OS, so nothing answers ACPI: a graceful shutdown only times out.
const SHUTDOWN_TIMEOUT: &[&str] = &["--shutdown-timeout", "1"];

/// A guest another tool started on the tenant's network: no fabrik mark.
fn squatter(network: &str) -> String {
    format!(
        "<domain type='kvm'><name>squatter</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os><devices>\
         <interface type='network'><source network='{network}'/><model type='virtio'/><rom enabled='no'/></interface>\
         </devices></domain>"
    )
}

fn held(p: &run::PlanRun) -> Vec<(String, String)> {
    p.notices
        .iter()
        .filter(|n| n["kind"] == "held")
        .map(|n| {
            assert_eq!(n["code"], "fabrik::plan::in-use", "{n}");
            (n["id"].as_str().unwrap().to_string(), n["reason"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn a_running_unmarked_guest_keeps_its_network_until_it_is_gone() {
    let Some(tb) = Testbed::start("reinuse", &["h1"]) else { return };
    let h1 = tb.host("h1");
    let dir = tempfile::tempdir().unwrap();
    let mut f = factory::one_host("reinuse", h1, 1);
    let tenant = f.tenants[0].clone();
    let path = f.write(dir.path());
    run::validate(&path);
    run::apply(&path, SHUTDOWN_TIMEOUT).assert_ok();

    let view = HostView::of(h1);
    let other = tempfile::tempdir().unwrap();
    let xml = other.path().join("squatter.xml");
    std::fs::write(&xml, squatter(&tenant.network())).unwrap();
    view.virsh(&["define", xml.to_str().unwrap()]);
    view.virsh(&["start", "squatter"]);
    let taps: Vec<String> = view.taps("squatter").into_iter().map(|(tap, _)| tap).collect();
    assert!(taps.iter().all(|t| view.ports(&tenant.bridge()).contains(t)), "the squatter's tap is on the bridge");

    // The factory drops the tenant for another: its last VM, and so its network on h1,
    // go (another tenant's VM comes).
    f.tenants = vec![factory::Tenant { name: "globex".into(), vni: 10002 }];
    f.vms = vec![factory::Vm { name: "vm-10".into(), tenant: "globex".into(), ..f.vms[0].clone() }];
    let path = f.write(dir.path());
    run::validate(&path);
    let p = run::plan(&path);
    assert_eq!(p.code, 2, "{:?}\n{}", p.lines(), p.stderr);
    let gone = [
        format!("net:h1/{}", tenant.network()),
        format!("link:h1/{}", tenant.bridge()),
        format!("link:h1/{}", tenant.vxlan()),
    ];
    assert!(p.action("vm:h1/vm-00").is_some_and(|a| a["op"] == "delete"), "{:?}", p.lines());
    let notices = held(&p);
    for id in &gone {
        assert!(p.action(id).is_none(), "{id} is deleted under a running guest: {:?}", p.lines());
        let (_, reason) = notices.iter().find(|(h, _)| h == id).unwrap_or_else(|| panic!("{id} not held: {notices:?}"));
        assert!(reason.contains("domain `squatter` (not managed by this factory)"), "{reason}");
    }

    let out = run::apply(&path, SHUTDOWN_TIMEOUT);
    out.assert_ok();
    let verify = out.of_kind("verify").last().cloned().unwrap_or_default();
    assert_eq!(verify["held"].as_array().map_or(0, Vec::len), 3, "{}", out.transcript());
    assert_eq!(view.state("squatter"), "running", "the guest was touched");
    assert!(view.ifindex(&tenant.bridge()).is_some() && view.ifindex(&tenant.vxlan()).is_some());
    assert!(taps.iter().all(|t| view.ports(&tenant.bridge()).contains(t)), "the squatter lost its port");

    // The guest goes: the next plan deletes what it held, and apply does.
    view.virsh(&["destroy", "squatter"]);
    view.virsh(&["undefine", "squatter"]);
    let p = run::plan(&path);
    assert!(held(&p).is_empty(), "{:?}", held(&p));
    for id in &gone {
        assert!(p.action(id).is_some_and(|a| a["op"] == "delete"), "{id}: {:?}", p.lines());
    }
    run::apply(&path, SHUTDOWN_TIMEOUT).assert_ok();
    run::assert_converged(&path);
    assert!(view.ifindex(&tenant.bridge()).is_none(), "the bridge is still there");
    assert!(view.ifindex(&tenant.vxlan()).is_none(), "the VXLAN device is still there");
}
