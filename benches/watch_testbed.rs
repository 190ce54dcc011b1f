//! How fast `fabrik watch` reacts, on a testbed host: commit → first action started
//! (the branch is read every second), and out-of-band `virsh destroy` → the VM's start
//! done (from the libvirt lifecycle event), each as a distribution over `TRIALS` trials.
//! Times are taken when the watcher's JSON event line arrives.
//!
//! `cargo bench --bench watch_testbed`. Without the testbed (root, /dev/kvm, libvirtd)
//! it prints why and does nothing; under `cargo test` it only says how to run it.

#[path = "../tests/testbed/mod.rs"]
mod testbed;

#[path = "../tests/apply_testbed/factory.rs"]
mod factory;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use factory::{Factory, TINY, Template, Tenant, Vm};
use testbed::{Testbed, say};

const TRIALS: usize = 20;
/// A bound on a hang.
const PATIENCE: Duration = Duration::from_secs(120);

fn vm(name: &str) -> Vm {
    Vm { name: name.into(), tenant: "acme".into(), host: "h1".into(), template: TINY.into(), disk: None }
}

fn git(repo: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=b", "-c", "user.email=b@b", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "git {args:?}");
}

fn commit(f: &Factory, repo: &Path) {
    f.write(repo);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", "bench"]);
}

/// Waits for an event matching `ok`; returns when it arrived.
fn wait(rx: &mpsc::Receiver<(Instant, serde_json::Value)>, ok: impl Fn(&serde_json::Value) -> bool) -> Instant {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, e) = rx.recv_timeout(left).expect("the watcher's event came in time");
        if ok(&e) {
            return at;
        }
    }
}

fn report(what: &str, mut xs: Vec<Duration>) {
    xs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let q = |p: f64| xs[((xs.len() - 1) as f64 * p).round() as usize];
    say(&format!(
        "{what} ({} trials): min {:.0} ms, median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        xs.len(),
        ms(xs[0]),
        ms(q(0.5)),
        ms(q(0.9)),
        ms(xs[xs.len() - 1])
    ));
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        say("watch_testbed bench: not measured under `cargo test`; run `cargo bench --bench watch_testbed`");
        return;
    }
    if let Some(why) = testbed::prerequisites() {
        say(&format!("watch_testbed bench skipped: {why} (run scripts/setup-testbed.sh as root)"));
        return;
    }
    let Some(tb) = Testbed::start("wbench", &["h1"]) else { return };
    let h1 = tb.host("h1").clone();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let mut f = Factory {
        name: "wbench".into(),
        hosts: tb.hosts.clone(),
        tenants: vec![Tenant { name: "acme".into(), vni: 10001 }],
        templates: vec![Template { name: TINY.into(), memory_mib: 64 }],
        vms: vec![vm("w00")],
    };
    commit(&f, &repo);
    let mut child = Command::new(factory::FABRIK)
        .arg("watch")
        .arg(&repo)
        .arg("--watch-state")
        .arg(dir.path().join("state"))
        .args(["--poll-seconds", "1", "--debounce-ms", "100", "--drift-seconds", "3600", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let _ = tx.send((Instant::now(), v));
            }
        }
    });
    // Converged on the first commit.
    wait(&rx, |e| e["event"] == "done" && e["id"] == "vm:h1/w00");
    wait(&rx, |e| e["event"] == "pass");
    std::thread::sleep(Duration::from_secs(2));
    while rx.try_recv().is_ok() {}

    let mut commit_to_action = Vec::new();
    for i in 1..=TRIALS {
        let name = format!("w{i:02}");
        f.vms.push(vm(&name));
        let t0 = Instant::now();
        commit(&f, &repo);
        let started = wait(&rx, |e| e["event"] == "start");
        commit_to_action.push(started - t0);
        let id = format!("vm:h1/{name}");
        wait(&rx, |e| e["event"] == "done" && e["id"] == id.as_str());
        wait(&rx, |e| e["event"] == "pass");
    }
    let mut stop_to_running = Vec::new();
    for i in 0..TRIALS {
        let name = format!("w{:02}", i % (TRIALS + 1));
        let id = format!("vm:h1/{name}");
        while rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        let ok = Command::new("virsh").args(["-q", "-c", &h1.uri, "destroy", &name]).output().unwrap().status.success();
        assert!(ok, "virsh destroy {name}");
        let done = wait(&rx, |e| e["event"] == "done" && e["id"] == id.as_str());
        stop_to_running.push(done - t0);
        wait(&rx, |e| e["event"] == "pass");
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM);
    let _ = child.wait();
    report("commit → first action started (poll 1 s)", commit_to_action);
    report("virsh destroy → VM started again (libvirt event)", stop_to_running);
}
