//! The reconcile core against testbed hosts (`tests/testbed/`): `apply --replace` of a VM
//! is replaced and verified, and one `fabrik apply` starts each host's agent once (lock,
//! observe, apply and verify share it), counted by a wrapper around `fabrik-agent`.
//!
//! Without root, /dev/kvm or libvirtd they print why and pass; with `CI=true` they fail.

#[path = "testbed/mod.rs"]
mod testbed;

#[path = "apply_testbed/factory.rs"]
mod factory;

#[path = "apply_testbed/run.rs"]
mod run;

use std::path::Path;

use run::HostView;
use testbed::Testbed;

/// The guests have no OS: a graceful shutdown only times out; a second is enough.
const SHUTDOWN_TIMEOUT: &[&str] = &["--shutdown-timeout", "1"];

#[test]
fn apply_replace_of_a_vm_on_a_testbed_host_is_replaced_and_verified() {
    let Some(tb) = Testbed::start("rcrepl", &["h1"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let f = factory::one_host("rcrepl", tb.host("h1"), 2);
    let path = f.write(dir.path());
    run::validate(&path);
    run::apply(&path, SHUTDOWN_TIMEOUT).assert_ok();
    let before = HostView::of(tb.host("h1")).qemu_pid("vm-00").expect("vm-00 runs");
    let kept = HostView::of(tb.host("h1")).qemu_pid("vm-01").expect("vm-01 runs");

    let id = "vm:h1/vm-00";
    let out = run::apply(&path, &[SHUTDOWN_TIMEOUT, &["--replace", id]].concat());
    // Exit 0, verified: verification does not plan the replace again.
    out.assert_ok();
    assert_eq!(out.done(), [(id.to_string(), "replace".to_string())], "{}", out.transcript());
    let verify = out.of_kind("verify").next().expect("a verify event");
    assert_eq!(verify["converged"], true, "{}", out.transcript());
    let view = HostView::of(tb.host("h1"));
    assert_eq!(view.state("vm-00"), "running");
    let after = view.qemu_pid("vm-00").expect("vm-00 runs again");
    assert_ne!(before, after, "vm-00 was replaced: a new QEMU process");
    assert_eq!(view.qemu_pid("vm-01"), Some(kept), "vm-01 was left alone");
    run::assert_converged(&path);
}

/// A wrapper around `fabrik-agent` that logs each start to `log`, then is the agent.
fn agent_wrapper(dir: &Path, log: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("counting-agent.sh");
    std::fs::write(&script, format!("#!/bin/sh\necho start >> '{}'\nexec {} \"$@\"\n", log.display(), factory::AGENT))
        .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn starts(log: &Path) -> usize {
    std::fs::read_to_string(log).map(|t| t.lines().count()).unwrap_or(0)
}

#[test]
fn one_apply_starts_each_hosts_agent_once() {
    let Some(tb) = Testbed::start("rcagent", &["h1", "h2"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let f = factory::two_hosts("rcagent", &tb);
    let path = f.write(dir.path());
    let log = dir.path().join("agent-starts.log");
    let wrapper = agent_wrapper(dir.path(), &log);
    // Every host's agent is the wrapper, inside the host's namespace.
    let file = path.join("factory.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    let counted = yaml.replace(factory::AGENT, &wrapper.display().to_string());
    assert_ne!(yaml, counted, "the factory names its agents as expected");
    std::fs::write(&file, counted).unwrap();
    run::validate(&path);

    // An apply with changes: lock, observe, apply and verify on one agent per host.
    run::apply(&path, SHUTDOWN_TIMEOUT).assert_ok();
    assert_eq!(starts(&log), tb.hosts.len(), "agent starts for one apply of {} hosts", tb.hosts.len());
    // An apply with nothing to do: one per host again.
    std::fs::write(&log, "").unwrap();
    let out = run::apply(&path, SHUTDOWN_TIMEOUT);
    out.assert_ok();
    assert_eq!(starts(&log), tb.hosts.len(), "agent starts for a no-op apply:\n{}", out.transcript());
}
