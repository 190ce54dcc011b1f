//! What fabrik promises about operations cut in half, bridge uplinks and VMs moved
//! between hosts, shown on testbed hosts (`tests/testbed/`): a restart killed between
//! its redefine and its start is finished by the next apply; a bridge network's parent
//! NIC is a port of its bridge, and taking it out by hand is drift that apply repairs; a
//! VM moved to another host never runs twice.
//!
//! Each test starts its own testbed. Without root, /dev/kvm or libvirtd they print why
//! and pass; with `CI=true` they fail.

#[path = "testbed/mod.rs"]
mod testbed;

#[path = "apply_testbed/factory.rs"]
mod factory;

#[path = "apply_testbed/run.rs"]
mod run;

use std::path::Path;

use fabrik::apply::exec::CRASH_AFTER_STEP_ENV;
use run::HostView;
use testbed::{Testbed, say};

/// The guests have no OS, so nothing answers ACPI: a graceful shutdown only times out.
const SHUTDOWN_TIMEOUT: &[&str] = &["--shutdown-timeout", "1"];

fn write(f: &factory::Factory, dir: &Path) -> std::path::PathBuf {
    let path = f.write(dir);
    run::validate(&path);
    path
}

fn apply_ok(what: &str, path: &Path) -> run::Outcome {
    let out = run::apply(path, SHUTDOWN_TIMEOUT);
    out.assert_ok();
    say(&format!("{what}: {:.2}s", out.elapsed.as_secs_f64()));
    out
}

/// `Max memory` of `virsh dominfo`, in KiB: what the running guest was given.
fn running_memory_kib(view: &HostView, vm: &str) -> u64 {
    let info = view.virsh(&["dominfo", vm]);
    info.lines()
        .find_map(|l| l.strip_prefix("Max memory:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no max memory in dominfo:\n{info}"))
}

/// kill -9 right after the redefine of a `restart now`: the guest still runs its old
/// definition, the saved one is new. The next plan reads both and shows the pending
/// restart; the rerun restarts the guest, which then runs the declared memory.
#[test]
fn a_restart_killed_after_its_redefine_is_finished_by_the_next_apply() {
    let Some(tb) = Testbed::start("trrestart", &["h1"]) else { return };
    let h1 = tb.host("h1");
    let dir = tempfile::tempdir().unwrap();
    let mut f = factory::one_host("trrestart", h1, 1);
    let vm = f.vms[0].name.clone();
    let path = write(&f, dir.path());
    apply_ok("first apply", &path);
    let view = HostView::of(h1);
    let first = view.qemu_pid(&vm).expect("the VM runs");
    assert_eq!(running_memory_kib(&view, &vm), 64 * 1024);

    f.template_mut(factory::TINY).memory_mib = 96;
    write(&f, dir.path());
    let plan = run::plan(&path);
    let id = format!("vm:h1/{vm}");
    assert_eq!(plan.action(&id).map(|a| a["class"].clone()), Some("restart-now".into()), "{}", plan.lines().join("\n"));
    let define = format!("define domain `{vm}`");
    let killed = run::ApplyChild::spawn_with(&path, SHUTDOWN_TIMEOUT, &[(CRASH_AFTER_STEP_ENV, &define)]).wait();
    assert_eq!(killed.code, None, "apply died of SIGKILL after the redefine:\n{}", killed.transcript());
    // What the kill left: the saved definition is new, the guest runs the old one.
    assert_eq!(view.qemu_pid(&vm), Some(first), "the guest was not restarted");
    assert_eq!(running_memory_kib(&view, &vm), 64 * 1024, "the guest runs its old definition");
    let saved = view.virsh(&["dumpxml", "--inactive", &vm]);
    assert!(saved.contains("<memory unit='KiB'>98304</memory>"), "the saved definition is the new one:\n{saved}");

    let plan = run::plan(&path);
    assert_eq!(plan.code, 2, "the pending restart is a change:\n{}", plan.stderr);
    let a = plan.action(&id).unwrap_or_else(|| panic!("{id} is planned:\n{}", plan.lines().join("\n")));
    say(&format!("plan after the kill: {} {}", a["symbol"], a["reason"]));
    assert_eq!(
        (a["op"].as_str(), a["class"].as_str(), a["symbol"].as_str()),
        (Some("update"), Some("restart-now"), Some("!"))
    );
    assert!(a["changes"].as_array().unwrap().iter().any(|c| c["field"] == "running memory"), "{a:#}");
    assert_eq!(plan.json["summary"]["vm_restarts"], 1, "{:#}", plan.json["summary"]);

    apply_ok("the rerun", &path);
    let second = view.qemu_pid(&vm).expect("the VM runs again");
    assert_ne!(second, first, "the rerun restarted the guest");
    assert_eq!(running_memory_kib(&view, &vm), 96 * 1024, "the guest runs the declared memory");
    run::assert_converged(&path);
}

/// The bridge network the uplink test adds: its bridge, and its parent NIC (a veth in the
/// host's namespace, as a physical NIC would be there).
const UPLINK_BRIDGE: &str = "br-up";
const UPLINK_NIC: &str = "up0";

/// The one-host factory with a bridge network `uplinked` whose parent is `up0`.
fn with_uplink(f: &factory::Factory) -> String {
    let yaml = f.yaml();
    let nic = "    nics:\n      - { name: eth0,";
    assert!(yaml.contains(nic), "the factory declares eth0:\n{yaml}");
    let yaml = yaml.replacen(
        nic,
        &format!("    nics:\n      - {{ name: {UPLINK_NIC}, kind: ethernet }}\n      - {{ name: eth0,"),
        1,
    );
    let hosts: Vec<&str> = f.hosts.iter().map(|h| h.name.as_str()).collect();
    yaml.replacen(
        "\nnetworks:\n",
        &format!(
            "\nnetworks:\n  - {{ name: uplinked, purpose: public, kind: bridge, shared: true, bridge: {UPLINK_BRIDGE}, parent: {UPLINK_NIC}, hosts: [{}] }}\n",
            hosts.join(", ")
        ),
        1,
    )
}

/// A bridge network's parent NIC is its bridge's port after apply; taken out of the
/// bridge by hand (`ip link set up0 nomaster`), it shows as drift and apply repairs it.
#[test]
fn a_bridge_networks_parent_nic_is_its_port_and_its_removal_is_drift() {
    let Some(tb) = Testbed::start("truplink", &["h1"]) else { return };
    let h1 = tb.host("h1");
    testbed::in_host(h1, &["ip", "link", "add", UPLINK_NIC, "type", "veth", "peer", "name", "up0peer"]);
    let dir = tempfile::tempdir().unwrap();
    let f = factory::one_host("truplink", h1, 1);
    std::fs::write(dir.path().join("factory.yaml"), with_uplink(&f)).unwrap();
    let path = dir.path().to_path_buf();
    run::validate(&path);
    let plan = run::plan(&path);
    let id = format!("link:h1/{UPLINK_BRIDGE}");
    let a = plan.action(&id).unwrap_or_else(|| panic!("{id} is planned:\n{}", plan.lines().join("\n")));
    assert!(a["reason"].as_str().unwrap().contains("with NIC `up0` as its uplink port"), "{a:#}");

    apply_ok("first apply", &path);
    let view = HostView::of(h1);
    assert!(
        view.ports(UPLINK_BRIDGE).contains(&UPLINK_NIC.to_string()),
        "up0 is a port of br-up: {:?}",
        view.ports(UPLINK_BRIDGE)
    );
    run::assert_converged(&path);

    testbed::in_host(h1, &["ip", "link", "set", UPLINK_NIC, "nomaster"]);
    assert!(!view.ports(UPLINK_BRIDGE).contains(&UPLINK_NIC.to_string()));
    let plan = run::plan(&path);
    assert_eq!(plan.code, 2, "the detached uplink is drift:\n{}\n{}", plan.lines().join("\n"), plan.stderr);
    assert_eq!(plan.actions().len(), 1, "{}", plan.lines().join("\n"));
    let a = plan.action(&id).unwrap_or_else(|| panic!("{id} is planned:\n{}", plan.lines().join("\n")));
    say(&format!("plan after `ip link set {UPLINK_NIC} nomaster`: {} {}", a["symbol"], a["reason"]));
    assert_eq!((a["op"].as_str(), a["class"].as_str()), (Some("update"), Some("live")), "{a:#}");
    assert_eq!(a["changes"][0]["field"], "uplink", "{a:#}");

    apply_ok("repair", &path);
    assert!(view.ports(UPLINK_BRIDGE).contains(&UPLINK_NIC.to_string()), "up0 is a port again");
    run::assert_converged(&path);
}

/// A VM moved from h1 to h2 is one `-/+` line counted as a VM restart, and through the
/// apply its QEMU never runs on both hosts at once: the QEMU processes of both hosts are
/// sampled every few milliseconds while it runs.
#[test]
fn a_vm_moved_between_hosts_never_runs_twice() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let Some(tb) = Testbed::start("trmove", &["h1", "h2"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut f = factory::one_host("trmove", tb.host("h1"), 1);
    f.hosts = tb.hosts.clone();
    f.vms[0].disk = Some(factory::Disk::Kept);
    let vm = f.vms[0].name.clone();
    let path = write(&f, dir.path());
    apply_ok("first apply", &path);
    assert!(HostView::of(tb.host("h1")).qemu_pid(&vm).is_some());

    f.vms[0].host = "h2".into();
    write(&f, dir.path());
    let plan = run::plan(&path);
    let vm_lines: Vec<&serde_json::Value> =
        plan.actions().iter().filter(|a| a["id"].as_str().is_some_and(|id| id.starts_with("vm:"))).collect();
    assert_eq!(vm_lines.len(), 1, "one line for the move:\n{}", plan.lines().join("\n"));
    let a = vm_lines[0];
    say(&format!("plan of the move: {} {} {}", a["symbol"], a["id"], a["reason"]));
    assert_eq!(
        (a["id"].as_str(), a["op"].as_str(), a["symbol"].as_str()),
        (Some(&*format!("vm:h2/{vm}")), Some("replace"), Some("-/+"))
    );
    assert_eq!(a["moved_from"], format!("vm:h1/{vm}"));
    let reason = a["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("`{}` kept", f.vms[0].volume().map(|v| format!("{}/{v}", factory::POOL)).unwrap())),
        "{reason}"
    );
    assert_eq!(plan.json["summary"]["vm_restarts"], 1, "the move counts as a VM restart: {:#}", plan.json["summary"]);

    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, hosts, vm) = (done.clone(), tb.hosts.clone(), vm.clone());
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let pids: Vec<Option<u32>> = hosts.iter().map(|h| HostView::of(h).qemu_pid(&vm)).collect();
                samples.push(pids);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            samples
        })
    };
    apply_ok("apply of the move", &path);
    done.store(true, Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    let both = samples.iter().filter(|s| s.iter().all(Option::is_some)).count();
    let on = |h: usize| samples.iter().filter(|s| s[h].is_some()).count();
    say(&format!(
        "{} samples through the apply: on h1 in {}, on h2 in {}, on both in {both}",
        samples.len(),
        on(0),
        on(1)
    ));
    assert!(samples.len() >= 10, "too few samples to tell: {}", samples.len());
    assert_eq!(both, 0, "two copies ran at once");
    assert!(HostView::of(tb.host("h1")).qemu_pid(&vm).is_none(), "the old copy is gone");
    assert!(HostView::of(tb.host("h2")).qemu_pid(&vm).is_some(), "the new copy runs");
    let old_volumes = HostView::of(tb.host("h1")).volumes(factory::POOL);
    assert!(old_volumes.contains(&f.vms[0].volume().unwrap()), "the old volume is kept: {old_volumes:?}");
    run::assert_converged(&path);
}

/// A domain whose NIC joins a bridge the host does not have: real libvirtd refuses to
/// start it, and so must a twin, with an error of the same kind — the twin must never
/// start a VM on a bridge that is not there.
#[test]
fn a_domain_on_a_missing_bridge_is_refused_by_libvirtd_and_by_a_twin() {
    use fabrik::driver::Virt;
    let Some(tb) = Testbed::start("trtwinvirt", &["h1"]) else { return };
    let xml = |bridge: &str| {
        format!(
            "<domain type='kvm'><name>on-missing-bridge</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type></os><devices><interface type='bridge'>\
             <mac address='52:54:00:aa:bb:01'/><source bridge='{bridge}'/><model type='virtio'/></interface>\
             </devices></domain>"
        )
    };
    let mut real = HostView::of(tb.host("h1")).virt;
    real.define_domain(&xml("br-missing")).unwrap();
    let host_err = real.start_domain("on-missing-bridge").expect_err("libvirtd refuses a missing bridge");
    say(&format!("libvirtd: {:?} {:?}: {}", host_err.kind, host_err.code, host_err.message));

    let example = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory"));
    let v = fabrik::check::validate(example);
    let host = v.spec.hosts.iter().find(|h| h.name.value == "fe01").unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut twin = fabrik::sim::virt::open(state.path(), host).unwrap();
    twin.define_domain(&xml("br-missing")).unwrap();
    let twin_err = twin.start_domain("on-missing-bridge").expect_err("a twin refuses a missing bridge");
    say(&format!("twin:     {:?} {:?}: {}", twin_err.kind, twin_err.code, twin_err.message));
    assert_eq!((twin_err.kind, &twin_err.code), (host_err.kind, &host_err.code));
    let word = "No such device";
    assert!(host_err.message.contains(word) && twin_err.message.contains(word), "{host_err:?}\n{twin_err:?}");
}

/// The second half of a move cut off: apply killed right after the old copy was
/// undefined on h1. Nothing runs; the next plan creates the VM on h2 (a plain `+`: there
/// is no old copy left to stop), and the rerun starts it there.
#[test]
fn a_move_killed_after_the_old_copy_went_is_finished_by_the_next_apply() {
    let Some(tb) = Testbed::start("trmovekill", &["h1", "h2"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut f = factory::one_host("trmovekill", tb.host("h1"), 1);
    f.hosts = tb.hosts.clone();
    let vm = f.vms[0].name.clone();
    let path = write(&f, dir.path());
    apply_ok("first apply", &path);

    f.vms[0].host = "h2".into();
    write(&f, dir.path());
    let undefine = format!("undefine domain `{vm}`");
    let killed = run::ApplyChild::spawn_with(&path, SHUTDOWN_TIMEOUT, &[(CRASH_AFTER_STEP_ENV, &undefine)]).wait();
    assert_eq!(killed.code, None, "apply died of SIGKILL after the undefine:\n{}", killed.transcript());
    let (mut h1, mut h2) = (HostView::of(tb.host("h1")), HostView::of(tb.host("h2")));
    assert!(h1.domain(&vm).is_none() && h2.domain(&vm).is_none(), "the old copy went, the new one is not there yet");

    let plan = run::plan(&path);
    let id = format!("vm:h2/{vm}");
    let a = plan.action(&id).unwrap_or_else(|| panic!("{id} is planned:\n{}", plan.lines().join("\n")));
    say(&format!("plan after the kill: {} {} {}", a["symbol"], a["id"], a["reason"]));
    assert_eq!((a["op"].as_str(), a["symbol"].as_str()), (Some("create"), Some("+")), "{a:#}");
    apply_ok("the rerun", &path);
    assert!(h2.qemu_pid(&vm).is_some() && h1.qemu_pid(&vm).is_none(), "the VM runs on h2 only");
    run::assert_converged(&path);
}
