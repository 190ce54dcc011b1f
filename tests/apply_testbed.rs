//! `fabrik apply` end to end against testbed hosts (`tests/testbed/`): a factory of two
//! hosts, two tenants with VXLAN networks between the hosts, a shared bridge, a pool and
//! tiny VMs (`apply_testbed/factory.rs`) is applied, changed, shrunk, interrupted with
//! SIGKILL, and applied while a host goes away. What fabrik did is checked from outside:
//! libvirt, the QEMU processes, and the links in each host's network namespace.
//!
//! Each test starts its own testbed, so they run in parallel. Without root, /dev/kvm or
//! libvirtd they print why and pass; with `CI=true` they fail.

#[path = "testbed/mod.rs"]
mod testbed;

#[path = "apply_testbed/factory.rs"]
mod factory;

#[path = "apply_testbed/run.rs"]
mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fabrik::driver::Virt;
use factory::{Disk, Factory, SHARED};
use run::HostView;
use testbed::{Host, Testbed, in_host, say};

/// The guests have no OS, so nothing answers ACPI: a graceful shutdown only ever times
/// out. Waiting a second before powering off keeps the tests short.
const SHUTDOWN_TIMEOUT: &[&str] = &["--shutdown-timeout", "1"];

fn vm_id(host: &str, name: &str) -> String {
    format!("vm:{host}/{name}")
}

/// Writes the factory into a fresh folder; validates it.
fn write(f: &Factory, dir: &Path) -> std::path::PathBuf {
    let path = f.write(dir);
    run::validate(&path);
    path
}

/// Applies; asserts success and a converged host; prints the time it took.
fn apply_ok(what: &str, path: &Path) -> run::Outcome {
    let out = run::apply(path, SHUTDOWN_TIMEOUT);
    out.assert_ok();
    say(&format!(
        "{what}: {:.2}s, {} done",
        out.elapsed.as_secs_f64(),
        out.summary()["done"].as_u64().unwrap_or_default()
    ));
    out
}

/// The QEMU pid of every running VM of the factory, by VM id.
fn qemu_pids(tb: &Testbed, f: &Factory) -> BTreeMap<String, u32> {
    let mut pids = BTreeMap::new();
    for host in &tb.hosts {
        let view = HostView::of(host);
        for vm in f.vms_on(&host.name) {
            let pid = view.qemu_pid(&vm.name).unwrap_or_else(|| panic!("{} has no QEMU process", vm.name));
            pids.insert(vm_id(&vm.host, &vm.name), pid);
        }
    }
    pids
}

#[test]
fn plan_of_fresh_hosts_creates_everything() {
    let Some(tb) = Testbed::start("applan", &["h1", "h2"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let f = factory::two_hosts("applan", &tb);
    let path = write(&f, dir.path());
    let plan = run::plan(&path);
    assert_eq!(plan.code, 2, "changes to make:\n{}", plan.stderr);
    assert!(plan.errors().is_empty(), "{:#?}\n{}", plan.errors(), f.yaml());
    let ops: BTreeSet<&str> = plan.actions().iter().map(|a| a["op"].as_str().unwrap()).collect();
    assert_eq!(ops, BTreeSet::from(["create"]), "{}", plan.lines().join("\n"));
    for vm in &f.vms {
        assert!(
            plan.action(&vm_id(&vm.host, &vm.name)).is_some(),
            "{} is created:\n{}",
            vm.name,
            plan.lines().join("\n")
        );
    }
    for host in &tb.hosts {
        for t in &f.tenants {
            let id = format!("link:{}/{}", host.name, t.vxlan());
            let reason = plan.action(&id).unwrap_or_else(|| panic!("{id} is created"))["reason"].as_str().unwrap();
            let other = tb.hosts.iter().find(|h| h.name != host.name).unwrap();
            assert!(reason.contains(&host.address) && reason.contains(&other.address), "{id}: {reason}");
        }
    }
    say(&format!("plan of 2 fresh hosts: {} actions in {:.2}s", plan.actions().len(), plan.elapsed.as_secs_f64()));
}

/// (a) Both hosts from nothing: the VMs run with their taps on their networks' bridges,
/// the VXLAN devices flood to the other host and carry traffic, and a second plan is
/// empty.
#[test]
fn apply_builds_both_hosts() {
    let Some(tb) = Testbed::start("apboth", &["h1", "h2"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let f = factory::two_hosts("apboth", &tb);
    let path = write(&f, dir.path());
    let out = apply_ok("apply of 2 hosts, 7 VMs", &path);
    let created: BTreeSet<String> = out.done().into_iter().filter(|(_, op)| op == "create").map(|(id, _)| id).collect();
    for vm in &f.vms {
        assert!(created.contains(&vm_id(&vm.host, &vm.name)), "{} was created:\n{}", vm.name, out.transcript());
    }

    for host in &tb.hosts {
        let mut view = HostView::of(host);
        for vm in f.vms_on(&host.name) {
            assert_eq!(view.state(&vm.name), "running", "{}", vm.name);
            let pid = view.qemu_pid(&vm.name).unwrap_or_else(|| panic!("{} has a QEMU process", vm.name));
            assert!(view.has_kvm_open(pid), "{} runs under KVM (QEMU pid {pid} has /dev/kvm open)", vm.name);
            let d = view.domain(&vm.name).unwrap();
            assert_eq!(d.owner.as_ref().map(|o| o.resource.as_str()), Some(vm_id(&host.name, &vm.name).as_str()));
            // Each NIC's tap is a port of its network's bridge, in the host's namespace.
            let tenant = f.tenant(&vm.tenant);
            let bridges: Vec<&str> = d.interfaces.iter().map(|i| i.source.as_str()).collect();
            assert_eq!(bridges, [tenant.bridge(), format!("br-{SHARED}")], "{}", vm.name);
            for iface in &d.interfaces {
                let tap = iface.target.clone().unwrap_or_else(|| panic!("{}: a running VM's NIC has a tap", vm.name));
                assert!(view.ports(&iface.source).contains(&tap), "{}: {tap} is a port of {}", vm.name, iface.source);
            }
        }
        // The tenants' VXLAN devices: ports of their bridges, flooding to the other host.
        let other = tb.hosts.iter().find(|h| h.name != host.name).unwrap();
        for t in &f.tenants {
            let details = view.link_details(&t.vxlan());
            assert!(details.contains(&format!("vxlan id {} ", t.vni)), "{details}");
            assert!(details.contains(&format!("master {}", t.bridge())), "{details}");
            assert!(view.ports(&t.bridge()).contains(&t.vxlan()));
            for link in [t.bridge(), t.vxlan()] {
                let flags = view.link_details(&link);
                assert!(flags.contains(",UP") || flags.contains("<UP"), "{link} is up: {flags}");
            }
            assert!(details.contains(&format!("local {}", host.address)), "{details}");
            assert_eq!(
                view.flood_remotes(&t.vxlan()),
                std::slice::from_ref(&other.address),
                "{} on {}",
                t.vxlan(),
                host.name
            );
        }
        // Each disk's volume is in the pool and is the domain's disk.
        let volumes = view.volumes(factory::POOL);
        for vm in f.vms_on(&host.name) {
            let Some(volume) = vm.volume() else { continue };
            assert!(volumes.contains(&volume), "{volume} on {}: {volumes:?}", host.name);
            let disks: Vec<Option<String>> =
                view.domain(&vm.name).unwrap().disks.into_iter().map(|d| d.source).collect();
            assert_eq!(disks, [Some(format!("{}/{volume}", factory::POOL))], "{}", vm.name);
        }
    }
    run::assert_converged(&path);

    // The overlay carries traffic: a veth on acme's bridge on each host, addressed inside
    // the tenant's network, reaches the other through VXLAN over eth0. (After the plan
    // check: these ports are not fabrik's.)
    let bridge = f.tenant("acme").bridge();
    for (i, host) in tb.hosts.iter().enumerate() {
        let address = format!("192.168.77.{}/24", i + 1);
        for cmd in [
            &["ip", "link", "add", "probe", "type", "veth", "peer", "name", "probe-port"][..],
            &["ip", "link", "set", "probe-port", "master", &bridge, "up"],
            &["ip", "addr", "add", &address, "dev", "probe"],
            &["ip", "link", "set", "probe", "up"],
        ] {
            in_host(host, cmd);
        }
    }
    // No ping here: a TCP connection to a closed port, answered by h2's kernel
    // with a reset, shows the way there and back.
    let probe = "exec 3<>/dev/tcp/192.168.77.2/9";
    let out = Command::new("ip")
        .args(["netns", "exec", &tb.host("h1").netns, "timeout", "5", "bash", "-c", probe])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("refused"), "h1 reaches h2 over acme's VXLAN: {said}");
}

/// (b) A template's memory changes: exactly its VMs restart (the others keep their QEMU
/// process); then two VMs go: they are undefined, the kept disk stays, the disk declared
/// `delete-with-vm` goes.
#[test]
fn template_change_restarts_its_vms_and_removed_vms_go() {
    let Some(tb) = Testbed::start("apchange", &["h1", "h2"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut f = factory::two_hosts("apchange", &tb);
    let path = write(&f, dir.path());
    apply_ok("first apply", &path);
    let before = qemu_pids(&tb, &f);

    f.template_mut("small").memory_mib = 128;
    write(&f, dir.path());
    let changed: BTreeSet<String> =
        f.vms.iter().filter(|v| v.template == "small").map(|v| vm_id(&v.host, &v.name)).collect();
    let plan = run::plan(&path);
    assert_eq!(plan.code, 2, "{}", plan.stderr);
    let listed: BTreeSet<String> = plan.actions().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(listed, changed, "{}", plan.lines().join("\n"));
    for a in plan.actions() {
        assert_eq!((a["op"].as_str(), a["class"].as_str()), (Some("update"), Some("restart-now")), "{a:#}");
    }
    let out = apply_ok("apply of a template's memory (3 VMs restart)", &path);
    let done: BTreeSet<String> = out.done().into_iter().map(|(id, _)| id).collect();
    assert_eq!(done, changed, "{}", out.transcript());
    let after = qemu_pids(&tb, &f);
    for (id, pid) in &before {
        assert_eq!(changed.contains(id), after[id] != *pid, "{id}: QEMU pid {pid} → {}", after[id]);
    }
    for vm in f.vms.iter().filter(|v| v.template == "small") {
        let d = HostView::of(tb.host(&vm.host)).domain(&vm.name).unwrap();
        assert_eq!(d.memory.bytes(), 128 << 20, "{}", vm.name);
    }
    run::assert_converged(&path);

    let kept = f.remove_vm("acme-db");
    let deleted = f.remove_vm("globex-cache");
    assert_eq!((kept.disk, deleted.disk), (Some(Disk::Kept), Some(Disk::DeletedWithVm)));
    write(&f, dir.path());
    let plan = run::plan(&path);
    let deleted_volume = format!("volume:{}/{}/{}", deleted.host, factory::POOL, deleted.volume().unwrap());
    let deletions: BTreeSet<String> =
        plan.actions().iter().filter(|a| a["op"] == "delete").map(|a| a["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        deletions,
        BTreeSet::from([vm_id(&kept.host, &kept.name), vm_id(&deleted.host, &deleted.name), deleted_volume.clone()]),
        "{}",
        plan.lines().join("\n")
    );
    assert_eq!(plan.actions().len(), 3, "{}", plan.lines().join("\n"));
    let out = apply_ok("apply of 2 VMs fewer", &path);
    let done: BTreeSet<String> = out.done().into_iter().map(|(id, _)| id).collect();
    assert_eq!(done, deletions, "{}", out.transcript());
    for vm in [&kept, &deleted] {
        let mut view = HostView::of(tb.host(&vm.host));
        assert!(view.domain(&vm.name).is_none(), "{} is undefined", vm.name);
        assert_eq!(view.qemu_pid(&vm.name), None, "{} is shut down", vm.name);
    }
    let kept_volumes = HostView::of(tb.host(&kept.host)).volumes(factory::POOL);
    assert!(kept_volumes.contains(&kept.volume().unwrap()), "{} keeps its disk: {kept_volumes:?}", kept.name);
    let volumes = HostView::of(tb.host(&deleted.host)).volumes(factory::POOL);
    assert!(!volumes.contains(&deleted.volume().unwrap()), "{} takes its disk along: {volumes:?}", deleted.name);
    // The VMs that stay were not touched.
    let last = qemu_pids(&tb, &f);
    for (id, pid) in &last {
        assert_eq!(after[id], *pid, "{id} kept running");
    }
    run::assert_converged(&path);
}

/// What a hand-made domain and a hand-made bridge look like from outside.
#[derive(Debug, PartialEq, Eq)]
struct HandMade {
    state: String,
    domain_id: String,
    qemu: Option<u32>,
    xml: String,
    bridge_ifindex: Option<u32>,
    bridge: String,
}

const HAND_DOMAIN: &str = "hand-made";
const HAND_BRIDGE: &str = "br-hand";

fn make_by_hand(host: &Host) {
    let view = HostView::of(host);
    let xml = format!(
        "<domain type='kvm'><name>{HAND_DOMAIN}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os>\
         <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), xml).unwrap();
    view.virsh(&["define", file.path().to_str().unwrap()]);
    view.virsh(&["start", HAND_DOMAIN]);
    in_host(host, &["ip", "link", "add", HAND_BRIDGE, "type", "bridge"]);
    in_host(host, &["ip", "link", "set", HAND_BRIDGE, "up"]);
}

fn hand_made(host: &Host) -> HandMade {
    let view = HostView::of(host);
    HandMade {
        state: view.state(HAND_DOMAIN),
        domain_id: view.virsh(&["domid", HAND_DOMAIN]),
        qemu: view.qemu_pid(HAND_DOMAIN),
        xml: view.virsh(&["dumpxml", "--inactive", HAND_DOMAIN]),
        bridge_ifindex: view.ifindex(HAND_BRIDGE),
        bridge: in_host(host, &["ip", "-o", "link", "show", "dev", HAND_BRIDGE]),
    }
}

/// (c) A domain and a bridge made by hand on each host are left as they are by every
/// apply: creating the factory, restarting VMs, deleting VMs.
#[test]
fn hand_made_domain_and_bridge_are_left_alone() {
    let Some(tb) = Testbed::start("aphand", &["h1", "h2"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut f = factory::two_hosts("aphand", &tb);
    for host in &tb.hosts {
        make_by_hand(host);
    }
    let before: Vec<HandMade> = tb.hosts.iter().map(hand_made).collect();
    assert!(before.iter().all(|h| h.state == "running" && h.qemu.is_some() && h.bridge_ifindex.is_some()));
    let untouched = |after: &str| {
        for (host, was) in tb.hosts.iter().zip(&before) {
            assert_eq!(&hand_made(host), was, "{}: the hand-made objects changed after {after}", host.name);
        }
    };

    let path = write(&f, dir.path());
    apply_ok("apply beside hand-made objects", &path);
    untouched("the first apply");
    f.template_mut("tiny").memory_mib = 80;
    write(&f, dir.path());
    apply_ok("apply of a template change beside hand-made objects", &path);
    untouched("VMs restarted");
    f.vms.retain(|v| v.host != "h1");
    write(&f, dir.path());
    apply_ok("apply of h1's VMs removed beside hand-made objects", &path);
    untouched("VMs deleted");
    run::assert_converged(&path);
}

/// (d) apply killed with SIGKILL after the first VMs are up; the next apply finishes
/// the job: every VM exactly once, nothing of the factory's left over, a plan empty.
#[test]
fn apply_killed_midway_then_applied_again_converges() {
    const VMS: usize = 30;
    /// VMs created before the kill.
    const DONE_BEFORE_KILL: usize = 3;
    let Some(tb) = Testbed::start("apkill", &["h1"]) else { return };
    let h1 = tb.host("h1");
    let dir = tempfile::tempdir().unwrap();
    let f = factory::one_host("apkill", h1, VMS);
    let path = write(&f, dir.path());

    let mut child = run::ApplyChild::spawn(&path, SHUTDOWN_TIMEOUT);
    let vms_done = std::cell::Cell::new(0);
    let reached = child.wait_for(Duration::from_secs(300), |e| {
        if e["event"] == "done" && e["id"].as_str().is_some_and(|id| id.starts_with("vm:")) {
            vms_done.set(vms_done.get() + 1);
        }
        vms_done.get() >= DONE_BEFORE_KILL
    });
    assert!(reached.is_some(), "apply never created {DONE_BEFORE_KILL} VMs: {:#?}", child.seen());
    child.kill();
    let killed = child.wait();
    assert_eq!(killed.code, None, "apply was killed:\n{}", killed.transcript());
    let mut view = HostView::of(h1);
    let at_kill = view.domains().len();
    say(&format!(
        "apply of {VMS} VMs killed after {:.2}s: {} VMs reported done, {at_kill} domains defined",
        killed.elapsed.as_secs_f64(),
        vms_done.get()
    ));
    assert!(at_kill < VMS, "the kill came too late to test anything: {at_kill} domains");
    // What the kill left: the operations libvirtd was carrying out for apply go on.
    for d in view.domains() {
        say(&format!("  {}: {}", d.name, view.virsh(&["domstate", "--reason", &d.name])));
    }

    apply_ok(&format!("apply after the kill ({} domains there)", at_kill), &path);
    let domains = view.domains();
    let names: BTreeSet<&str> = domains.iter().map(|d| d.name.as_str()).collect();
    let wanted: BTreeSet<&str> = f.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(domains.len(), VMS);
    assert_eq!(names, wanted, "exactly the factory's domains, once each");
    for d in &domains {
        assert_eq!(d.state, fabrik::live::PowerState::Running, "{}", d.name);
        let owner = d.owner.as_ref().unwrap_or_else(|| panic!("{} carries fabrik's mark", d.name));
        assert_eq!((owner.factory.as_str(), owner.resource.as_str()), (f.name.as_str(), vm_id("h1", &d.name).as_str()));
    }
    let networks: Vec<String> = view.virt.networks().unwrap().into_iter().map(|n| n.name).collect();
    assert_eq!(networks, [f.tenant("acme").network(), SHARED.to_string()]);
    run::assert_converged(&path);
}

/// (e) h2's libvirtd dies once apply has planned: h2's resources fail, naming the host;
/// h1's are all done; apply exits 1.
#[test]
fn a_host_lost_midway_fails_its_resources_only() {
    let Some(tb) = Testbed::start("apdown", &["h1", "h2"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let f = factory::two_hosts("apdown", &tb);
    let path = write(&f, dir.path());
    let h2 = tb.host("h2");

    let mut child = run::ApplyChild::spawn(&path, SHUTDOWN_TIMEOUT);
    let plan = child.wait_for(Duration::from_secs(120), |e| e["event"] == "plan");
    assert!(plan.is_some(), "apply printed no plan: {:#?}", child.seen());
    kill_libvirtd(h2);
    let out = child.wait();
    say(&format!("apply with h2 lost: {:.2}s, exit {:?}", out.elapsed.as_secs_f64(), out.code));
    assert_eq!(out.code, Some(1), "{}", out.transcript());
    let summary = out.summary();
    assert!(summary["failed"].as_u64().unwrap_or_default() > 0, "{}", out.transcript());
    assert_eq!(summary["converged"], false, "{}", out.transcript());

    let done: BTreeSet<String> = out.done().into_iter().map(|(id, _)| id).collect();
    let failed: Vec<&serde_json::Value> = out.of_kind("failed").collect();
    let skipped: BTreeSet<String> = out.ids("skipped").into_iter().collect();
    let on = |host: &str, id: &str| id.split_once(':').is_some_and(|(_, rest)| rest.starts_with(&format!("{host}/")));
    for e in &failed {
        say(&format!("  failed {}: {}", e["id"], e["error"]));
    }
    for e in &failed {
        let id = e["id"].as_str().unwrap();
        assert!(on("h2", id), "only h2's resources fail: {e}\n{}", out.transcript());
        let error = e["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("host `h2` is unreachable: "),
            "{id}: the error names the host: {error}\n{}",
            out.transcript()
        );
    }
    assert!(skipped.iter().all(|id| on("h2", id)), "only h2's resources are skipped: {skipped:?}");
    for vm in f.vms_on("h1") {
        assert!(done.contains(&vm_id("h1", &vm.name)), "{} is done:\n{}", vm.name, out.transcript());
    }
    // Everything h1 was to get, it got: planning h1 alone finds nothing to do.
    let p = run::plan(&path);
    assert_eq!(p.code, 1, "h2 cannot be read:\n{}", p.stderr);
    assert!(p.actions().iter().all(|a| on("h2", a["id"].as_str().unwrap())), "{}", p.lines().join("\n"));
    assert!(p.errors().iter().any(|e| e["code"] == "fabrik::plan::unreadable-host"), "{:#?}", p.errors());
}

/// Kills a testbed host's libvirtd (its QEMU processes live on, as after a crash).
fn kill_libvirtd(host: &Host) {
    signal_libvirtd(host, "-KILL");
}

/// Sends a signal to a host's libvirtd, checked to be libvirtd; returns its pid.
fn signal_libvirtd(host: &Host, signal: &str) -> String {
    let pid = std::fs::read_to_string(host.dir.join("libvirtd.pid")).expect("the host's libvirtd.pid");
    let pid = pid.trim().to_string();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "libvirtd", "pid {pid} of {} is libvirtd", host.name);
    let status = Command::new("kill").args([signal, &pid]).status().unwrap();
    assert!(status.success());
    pid
}

/// (f) An apply from another checkout of the factory (another operator's machine) holds
/// h1's lock through h1's agent: apply refuses at once, naming the host and the holder,
/// and changes nothing; with `--lock-wait` it waits until the other lets go, then applies.
#[test]
fn an_apply_from_another_checkout_is_kept_out_by_the_hosts_lock() {
    let Some(tb) = Testbed::start("aplock", &["h1"]) else { return };
    let h1 = tb.host("h1");
    let dir = tempfile::tempdir().unwrap();
    let f = factory::one_host("aplock", h1, 2);
    let path = write(&f, dir.path());
    // The other apply's side of it: h1's agent, started as fabrik starts it, holding the
    // factory's lock for someone else.
    let mut other =
        fabrik::driver::agent::AgentClient::spawn(&format!("ip netns exec {} {}", h1.netns, factory::AGENT))
            .expect("h1's agent starts");
    let holder = fabrik::apply::lock::Holder {
        pid: 4242,
        user: "ops".into(),
        host: "other-checkout".into(),
        since: 0,
        epoch: None,
    };
    other.lock(&f.name, "h1", &holder).expect("the other apply takes h1's lock");

    let refused = run::apply(&path, SHUTDOWN_TIMEOUT);
    assert_eq!(refused.code, Some(1), "{}", refused.transcript());
    assert!(
        refused.stderr.contains("host `h1`") && refused.stderr.contains("pid 4242 of ops on other-checkout"),
        "the error names the host and who holds it: {}",
        refused.stderr
    );
    // No plan, no action: only the typed error.
    let kinds: Vec<(&str, &str)> = refused
        .events
        .iter()
        .map(|e| (e["event"].as_str().unwrap_or_default(), e["kind"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(kinds, [("error", "locked")], "{}", refused.transcript());
    let mut view = HostView::of(h1);
    assert!(view.domains().is_empty(), "nothing was applied");
    assert!(view.ifindex(&f.tenant("acme").bridge()).is_none(), "nothing was applied");

    // The other apply finishes two seconds from now; this one waits for it.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        drop(other);
    });
    let waited = run::apply(&path, &[SHUTDOWN_TIMEOUT, &["--lock-wait", "60"]].concat());
    release.join().unwrap();
    waited.assert_ok();
    assert!(waited.elapsed >= Duration::from_secs(2), "it waited: {:?}", waited.elapsed);
    assert_eq!(view.domains().len(), 2);
    run::assert_converged(&path);
}

/// (e') h2 goes silent once apply has started on it: its libvirtd is frozen (SIGSTOP), as
/// a host whose network drops packets rather than refusing them. apply does not hang:
/// the call in flight fails when libvirt's keepalive goes unanswered, later connections
/// give up after `--host-timeout`, h2's resources fail as unreachable and h1's complete.
#[test]
fn a_host_gone_silent_midway_fails_its_resources_within_the_host_timeout() {
    const HOST_TIMEOUT_S: u64 = 4;
    let Some(tb) = Testbed::start("apsilent", &["h1", "h2"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let f = factory::two_hosts("apsilent", &tb);
    let path = write(&f, dir.path());
    let h2 = tb.host("h2");
    let timeout = HOST_TIMEOUT_S.to_string();
    let mut child = run::ApplyChild::spawn(&path, &[SHUTDOWN_TIMEOUT, &["--host-timeout", &timeout]].concat());
    let started = child.wait_for(Duration::from_secs(120), |e| {
        e["event"] == "done" && e["id"].as_str().is_some_and(|id| id.contains(":h2/"))
    });
    assert!(started.is_some(), "apply did nothing on h2: {:#?}", child.seen());
    let frozen = Frozen::libvirtd(h2);
    let out = child.wait();
    drop(frozen);
    say(&format!("apply with h2 silent: {:.2}s, exit {:?}", out.elapsed.as_secs_f64(), out.code));
    assert_eq!(out.code, Some(1), "{}", out.transcript());
    // Generous: a few silence limits (a call in flight, then each connection), never
    // the minutes TCP would wait.
    assert!(out.elapsed < Duration::from_secs(HOST_TIMEOUT_S * 10), "{}", out.transcript());
    let on = |host: &str, id: &str| id.split_once(':').is_some_and(|(_, rest)| rest.starts_with(&format!("{host}/")));
    let failed: Vec<&serde_json::Value> = out.of_kind("failed").collect();
    assert!(!failed.is_empty(), "{}", out.transcript());
    for e in &failed {
        say(&format!("  failed {} after {}ms: {}", e["id"], e["elapsed_ms"], e["error"]));
        let id = e["id"].as_str().unwrap();
        assert!(on("h2", id), "only h2's resources fail: {e}\n{}", out.transcript());
        let error = e["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("host `h2` is unreachable: "), "{id}: {error}\n{}", out.transcript());
    }
    let done: BTreeSet<String> = out.done().into_iter().map(|(id, _)| id).collect();
    for vm in f.vms_on("h1") {
        assert!(done.contains(&vm_id("h1", &vm.name)), "{} is done:\n{}", vm.name, out.transcript());
    }
    assert_eq!(out.summary()["converged"], false, "{}", out.transcript());
}

/// A host's libvirtd stopped (SIGSTOP) until dropped: its socket still accepts, nothing
/// answers.
struct Frozen(String);

impl Frozen {
    fn libvirtd(host: &Host) -> Frozen {
        Frozen(signal_libvirtd(host, "-STOP"))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

/// Many hosts at once (issue 14, in small): five hosts with four defined (stopped) VMs
/// each are applied in one run; every host gets every domain, every host's work overlaps
/// the others' (one session per host, not one host after another), and the next plan of
/// all five is empty. Speed is `benches/many_hosts_testbed.rs`'s (50 hosts).
#[test]
fn five_hosts_are_applied_at_once_and_plan_nothing_after() {
    let names = ["sc1", "sc2", "sc3", "sc4", "sc5"];
    let Some(tb) = Testbed::start("scfive", &names) else { return };
    let mut f = factory::one_host("scfive", &tb.hosts[0], 0);
    f.hosts = tb.hosts.clone();
    f.vms = names
        .iter()
        .flat_map(|h| {
            (0..4).map(move |i| factory::Vm {
                name: format!("{h}-vm{i}"),
                tenant: "acme".into(),
                host: h.to_string(),
                template: factory::TINY.into(),
                disk: None,
            })
        })
        .collect();
    let mut yaml = f.yaml();
    for h in names {
        yaml = yaml.replace(&format!("    host: {h}\n"), &format!("    host: {h}\n    power: stopped\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("factory.yaml"), yaml).unwrap();
    let path = dir.path().to_path_buf();
    let out = run::apply(&path, SHUTDOWN_TIMEOUT);
    out.assert_ok();
    // Each host's first `start` comes before any host's last `done`: the hosts overlap.
    let host_of = |e: &serde_json::Value| {
        let id = e["id"].as_str()?;
        let (_, rest) = id.split_once(':')?;
        Some(rest.split_once('/')?.0.to_string())
    };
    let mut first_start: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_done: BTreeMap<String, usize> = BTreeMap::new();
    for (i, e) in out.events.iter().enumerate() {
        let Some(host) = host_of(e) else { continue };
        if e["event"] == "start" {
            first_start.entry(host.clone()).or_insert(i);
        }
        if e["event"] == "done" {
            last_done.insert(host, i);
        }
    }
    assert_eq!(first_start.len(), names.len(), "{}", out.transcript());
    let latest_first = first_start.values().max().unwrap();
    let earliest_last = last_done.values().min().unwrap();
    assert!(latest_first < earliest_last, "the hosts ran one after another:\n{}", out.transcript());
    for h in &tb.hosts {
        let conn = virt::connect::Connect::open(Some(&h.uri)).expect("the host answers");
        let defined: BTreeSet<String> = conn.list_all_domains(0).unwrap().iter().map(|d| d.name().unwrap()).collect();
        let wanted: BTreeSet<String> = (0..4).map(|i| format!("{}-vm{i}", h.name)).collect();
        assert!(wanted.is_subset(&defined), "{}: {defined:?}", h.name);
    }
    run::assert_converged(&path);
}
