//! What `fabrik apply` costs over doing it by hand: 50 tiny VMs applied by fabrik
//! (default parallelism) on a fresh testbed host, against the same 50 domains (fabrik's
//! rendered XML) defined and started by a shell loop of `virsh define && virsh start` on
//! another fresh host. Prints both wall times and their ratio.
//!
//! `cargo bench --bench apply_testbed`. Without the testbed (root, /dev/kvm, libvirtd)
//! it prints why and does nothing. `cargo test --all-targets` builds it and runs it without
//! `--bench`: then it only says how to run it, since a measurement taken while the test
//! suite loads the machine says little, and tests check behaviour, not speed.

#[path = "../tests/testbed/mod.rs"]
mod testbed;

#[path = "../tests/apply_testbed/factory.rs"]
mod factory;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use testbed::{Testbed, in_host, say};

const VMS: usize = 50;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        say("apply_testbed bench: not measured under `cargo test`; run `cargo bench --bench apply_testbed`");
        return;
    }
    if let Some(why) = testbed::prerequisites() {
        say(&format!("apply_testbed bench skipped: {why} (run scripts/setup-testbed.sh as root)"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let xml_dir = dir.path().join("xml");
    std::fs::create_dir(&xml_dir).unwrap();

    // fabrik: the whole factory (links, networks, VMs) from nothing.
    let (fabrik_time, f) = {
        let Some(tb) = Testbed::start("apbench", &["h1"]) else { return };
        let f = factory::one_host("apbench", tb.host("h1"), VMS);
        let path = f.write(dir.path());
        render_domains(&path, &xml_dir);
        let t0 = Instant::now();
        let out = Command::new(factory::FABRIK).args(["apply", "--yes"]).arg(&path).output().unwrap();
        let took = t0.elapsed();
        assert!(
            out.status.success(),
            "fabrik apply failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        say(&format!("fabrik apply of {VMS} VMs: {}", secs(took)));
        assert_all_running(tb.host("h1"), &f);
        (took, f)
        // The testbed stops here: the second host does not share the machine with these VMs.
    };

    // By hand: the bridges the domains need, untimed; then define and start, one by one.
    let Some(tb) = Testbed::start("apbench2", &["h1"]) else { return };
    let host = tb.host("h1");
    for bridge in [f.tenant("acme").bridge(), format!("br-{}", factory::SHARED)] {
        in_host(host, &["ip", "link", "add", &bridge, "type", "bridge"]);
        in_host(host, &["ip", "link", "set", &bridge, "up"]);
    }
    let script = format!(
        "set -e; for x in '{}'/*.xml; do n=$(basename \"$x\" .xml); virsh -q -c \"$URI\" define \"$x\" >/dev/null && virsh -q -c \"$URI\" start \"$n\" >/dev/null; done",
        xml_dir.display()
    );
    let t0 = Instant::now();
    let out = Command::new("bash").args(["-c", &script]).env("URI", &host.uri).output().unwrap();
    let shell_time = t0.elapsed();
    assert!(out.status.success(), "the shell loop failed: {}", String::from_utf8_lossy(&out.stderr));
    say(&format!("virsh define && virsh start of {VMS} VMs: {}", secs(shell_time)));
    assert_all_running(host, &f);

    println!("{VMS} tiny VMs on one testbed host:");
    println!("  fabrik apply (default parallelism, links and networks too): {}", secs(fabrik_time));
    println!("  virsh define && virsh start, one after another:              {}", secs(shell_time));
    println!("  ratio fabrik / shell: {:.2}", fabrik_time.as_secs_f64() / shell_time.as_secs_f64());
}

/// Writes fabrik's XML of every VM of the factory at `path` to `<out>/<name>.xml`.
fn render_domains(path: &Path, out: &Path) {
    let v = fabrik::check::validate(path);
    assert!(v.is_valid(), "the bench's factory is valid");
    let d = fabrik::desired::build(&v.spec).expect("the bench's factory builds");
    for host in &d.hosts {
        for vm in &host.vms {
            std::fs::write(out.join(format!("{}.xml", vm.name)), fabrik::render::domain(&d.factory, host, vm)).unwrap();
        }
    }
}

/// Every VM of the factory runs on `host`; else says how each other one is and why
/// (the end of QEMU's log).
fn assert_all_running(host: &testbed::Host, f: &factory::Factory) {
    let mut not_running = Vec::new();
    for vm in &f.vms {
        let state = virsh(&host.uri, &["domstate", "--reason", &vm.name]);
        if !state.starts_with("running") {
            let log = std::fs::read_to_string(host.dir.join(format!("log/qemu/{}.log", vm.name))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            not_running.push(format!("{}: {}\n    {}", vm.name, state.trim(), tail.join("\n    ")));
        }
    }
    assert!(not_running.is_empty(), "not running on {}:\n{}", host.name, not_running.join("\n"));
}

fn virsh(uri: &str, args: &[&str]) -> String {
    let o = Command::new("virsh").args(["-q", "-c", uri]).args(args).output().unwrap();
    assert!(o.status.success(), "virsh {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}
