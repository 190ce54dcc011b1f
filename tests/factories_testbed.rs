//! Two factories on one testbed host (`tests/testbed/`, real libvirtd and KVM): each
//! applies its own VMs, networks, bridges and VXLAN devices, and neither plan ever
//! changes or deletes the other's, nor a domain an older, unnamed apply marked with the
//! empty factory name. They are listed as another factory's, and left alone.
//!
//! Without root, /dev/kvm or libvirtd the test prints why and passes; with `CI=true` it
//! fails.

#[path = "testbed/mod.rs"]
mod testbed;

#[path = "apply_testbed/factory.rs"]
mod factory;

#[path = "apply_testbed/run.rs"]
mod run;

use std::path::Path;

use factory::{Factory, Tenant, Vm};
use run::HostView;
use testbed::{Testbed, say};

const SHUTDOWN_TIMEOUT: &[&str] = &["--shutdown-timeout", "1"];

/// Factory B: tenant globex on VXLAN 10002 and a shared bridge of its own, VMs `b-vm-…`.
fn factory_b(host: &testbed::Host) -> String {
    let mut f = factory::one_host("fb", host, 2);
    f.tenants = vec![Tenant { name: "globex".into(), vni: 10002 }];
    for vm in &mut f.vms {
        vm.tenant = "globex".into();
        vm.name = format!("b-{}", vm.name);
    }
    // The shared network is the helper's `shared` in every factory: B's is its own.
    f.yaml()
        .replace(&format!("{}]", factory::SHARED), "b-shared]")
        .replace(&format!("name: {},", factory::SHARED), "name: b-shared,")
        .replace(&format!("bridge: br-{}", factory::SHARED), "bridge: br-b-shared")
}

fn write(dir: &Path, yaml: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("factory.yaml"), yaml).unwrap();
    run::validate(dir);
    dir.to_path_buf()
}

/// Every action of a plan is on one of `ours`' ids; none on another factory's.
fn only_touches(plan: &run::PlanRun, foreign: &[&str]) {
    for a in plan.actions() {
        let id = a["id"].as_str().unwrap();
        assert!(
            !foreign.iter().any(|f| id.ends_with(&format!("/{f}"))),
            "plan touches {id}:\n{}",
            plan.lines().join("\n")
        );
    }
}

fn other_factory_notices(plan: &run::PlanRun) -> Vec<String> {
    plan.notices
        .iter()
        .filter(|n| n["kind"] == "other-factory")
        .map(|n| n["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn two_factories_on_one_host_never_touch_each_other() {
    let Some(tb) = Testbed::start("apfactories", &["h1"]) else { return };
    let host = tb.host("h1");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a: Factory = factory::one_host("fa", host, 2);
    let path_a = write(dir_a.path(), &a.yaml());
    let path_b = write(dir_b.path(), &factory_b(host));
    let b_objects = ["b-vm-00", "b-vm-01", "globex-net", "b-shared", "br-globex", "br-b-shared", "vx10002"];
    let a_objects = ["vm-00", "vm-01", "acme-net", "shared", "br-acme", "br-shared", "vx10001"];

    run::apply(&path_a, SHUTDOWN_TIMEOUT).assert_ok();
    run::apply(&path_b, SHUTDOWN_TIMEOUT).assert_ok();
    // Each plan again: nothing to do, and the other's objects are listed, not touched.
    for (path, foreign) in [(&path_a, &b_objects), (&path_b, &a_objects)] {
        let plan = run::plan(path);
        assert_eq!(plan.code, 0, "no changes:\n{}\n{}", plan.lines().join("\n"), plan.stderr);
        assert!(plan.errors().is_empty(), "{:#?}", plan.errors());
        let notices = other_factory_notices(&plan);
        for f in foreign.iter().filter(|f| f.contains("vm-")) {
            assert!(notices.iter().any(|n| n.ends_with(&format!("/{f}"))), "{f} listed: {notices:?}");
        }
    }

    // An older fabrik's apply of an unnamed factory marked its domain with "".
    let view = HostView::of(host);
    let mark = fabrik::driver::libvirt::owner::render_metadata(&fabrik::live::Ownership {
        factory: String::new(),
        resource: "vm:h1/old-unnamed".into(),
        spec_hash: "0".into(),
    });
    let xml = format!(
        "<domain type='kvm'><name>old-unnamed</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os>{mark}</domain>"
    );
    let file = dir_a.path().join("old-unnamed.xml");
    std::fs::write(&file, xml).unwrap();
    view.virsh(&["define", file.to_str().unwrap()]);

    // A shrinks to one VM: the plan deletes A's VM only — never B's, never the unnamed one.
    let mut shrunk = a.clone();
    shrunk.vms.retain(|v: &Vm| v.name == "vm-00");
    write(dir_a.path(), &shrunk.yaml());
    let plan = run::plan(&path_a);
    only_touches(&plan, &[&b_objects[..], &["old-unnamed"]].concat());
    let deleted: Vec<&str> =
        plan.actions().iter().filter(|a| a["op"] == "delete").map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(deleted, ["vm:h1/vm-01"], "{}", plan.lines().join("\n"));
    assert!(other_factory_notices(&plan).iter().any(|n| n == "vm:h1/old-unnamed"), "the unnamed domain is listed");

    // A VM of A named like the unnamed domain is a plan error, never an update.
    let mut claims = shrunk.clone();
    let mut old = claims.vms[0].clone();
    old.name = "old-unnamed".into();
    claims.vms.push(old);
    write(dir_a.path(), &claims.yaml());
    let plan = run::plan(&path_a);
    assert!(plan.action("vm:h1/old-unnamed").is_none(), "{}", plan.lines().join("\n"));
    let codes: Vec<&str> = plan.errors().iter().map(|e| e["code"].as_str().unwrap_or_default()).collect();
    assert!(codes.contains(&"fabrik::plan::other-factory"), "{:#?}", plan.errors());

    // A applies its shrink; B's VMs still run, the unnamed domain is still defined, and
    // B's plan is still empty.
    write(dir_a.path(), &shrunk.yaml());
    run::apply(&path_a, SHUTDOWN_TIMEOUT).assert_ok();
    for vm in ["b-vm-00", "b-vm-01"] {
        assert_eq!(view.state(vm), "running", "{vm}");
    }
    assert_eq!(view.state("old-unnamed"), "shut off");
    let plan = run::plan(&path_b);
    assert_eq!(plan.code, 0, "{}\n{}", plan.lines().join("\n"), plan.stderr);
    say("two factories and an unnamed domain on one host: neither plan touches another's objects");
}
