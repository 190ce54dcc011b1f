//! `fabrik watch` against testbed hosts (`tests/testbed/`): one watcher on a git
//! repository in a temporary directory, two real libvirtd hosts.
//!
//! - a commit adding VMs → they run; `fabrik status` shows the commit applied;
//! - with the watcher idle (no pass queued or running), `virsh destroy` of a VM → the
//!   watcher logs the libvirt lifecycle event, the VM runs again, and a pass the event
//!   triggered ran (the drift pass is an hour away);
//! - a commit whose plan has an error (its new VM's name is taken by a domain fabrik does
//!   not own) → refused as a whole: its other host's new VM is not created either;
//!   status shows the plan diagnostic and the last good commit, whose drift is still
//!   healed; the next good commit applies;
//! - h1's pool directory made immutable: the volume of a new VM cannot be made, so that
//!   volume backs off on its own (`failing_resources`) while another new VM on h1 runs and
//!   h1 is not backing off; writable again → the volume's retry makes it, the VM runs;
//! - h2's libvirtd killed (SIGKILL) → its work backs off (unreachable) while h1 keeps
//!   converging a new commit; h2's libvirtd started again → the watcher's event thread
//!   reconnects (`host-events` up), h2 converges, and an out-of-band stop on h2 is
//!   seen through the new event connection;
//! - h1's libvirtd stopped (SIGSTOP: it hangs, as a host whose network drops packets) →
//!   h1 backs off while h2 converges; continued → h1 converges.
//!
//! Without root, /dev/kvm or libvirtd it prints why and passes; with `CI=true` it fails.

#[path = "testbed/mod.rs"]
mod testbed;

#[path = "apply_testbed/factory.rs"]
mod factory;

#[path = "apply_testbed/run.rs"]
mod run;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use factory::{Factory, TINY, Template, Tenant, Vm, commit, git};
use run::HostView;
use testbed::{Host, Testbed, say};

/// A bound on a hang, not a speed requirement (the benchmark in docs/watch.md is).
const PATIENCE: Duration = Duration::from_secs(180);

fn vm(name: &str, host: &str) -> Vm {
    Vm { name: name.into(), tenant: "acme".into(), host: host.into(), template: TINY.into(), disk: None }
}

struct Watcher {
    child: Child,
    state: PathBuf,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Watcher {
    fn start(repo: &Path, state: &Path) -> Watcher {
        let mut child = Command::new(factory::FABRIK)
            .arg("watch")
            .arg(repo)
            .arg("--watch-state")
            .arg(state)
            .args(["--poll-seconds", "1", "--debounce-ms", "200", "--drift-seconds", "3600"])
            .args(["--shutdown-timeout", "1", "--host-timeout", "5", "--format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                }
            }
        });
        Watcher { child, state: state.to_path_buf(), events }
    }

    fn status(&self) -> Option<serde_json::Value> {
        let o = Command::new(factory::FABRIK)
            .args(["status", "--format", "json", "--watch-state"])
            .arg(&self.state)
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).ok()
    }

    fn until(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.status()
                && ok(&s)
            {
                return s;
            }
            assert!(t0.elapsed() < PATIENCE, "watcher never reached: {what}; status: {:#?}", self.status());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for an event from index `from` on that satisfies `ok`; returns its index.
    fn event_after(&self, from: usize, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> usize {
        let t0 = Instant::now();
        loop {
            if let Some(i) = self.events().iter().skip(from).position(&ok) {
                return from + i;
            }
            assert!(t0.elapsed() < PATIENCE, "no event: {what}; events since: {:#?}", &self.events()[from..]);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the watcher is idle: its last event says no pass is queued or
    /// running (the poll and drift timers send nothing unless something changed).
    /// Returns the number of events so far.
    fn idle(&self) -> usize {
        let t0 = Instant::now();
        loop {
            let events = self.events();
            if events.last().is_some_and(|e| e["event"] == "idle") {
                return events.len();
            }
            assert!(t0.elapsed() < PATIENCE, "the watcher never went idle: {:#?}", events.iter().rev().take(5));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Destroys `vm` on `host` while the watcher is idle; asserts the watcher logged the
    /// lifecycle event, the VM runs again, and a pass the event triggered ran.
    fn heal_from_event(&self, host: &Host, vm: &str) -> Duration {
        let before = self.idle();
        HostView::of(host).virsh(&["destroy", vm]);
        let is_vm = |e: &serde_json::Value| e["host"] == host.name.as_str() && e["domain"] == vm;
        self.event_after(before, &format!("{vm}'s stop received"), |e| {
            e["event"] == "domain" && is_vm(e) && e["lifecycle"] == "stopped"
        });
        let healed = wait_running(host, vm);
        self.event_after(before, &format!("a pass triggered by {vm}'s event"), |e| {
            e["event"] == "pass-start"
                && e["triggers"].as_array().is_some_and(|ts| ts.iter().any(|t| t["trigger"] == "domain" && is_vm(t)))
        });
        healed
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn host_converged(s: &serde_json::Value, host: &str) -> bool {
    s["hosts"].as_array().is_some_and(|hs| hs.iter().any(|h| h["host"] == host && h["converged"] == true))
}

fn running(host: &Host, name: &str) -> bool {
    let o = Command::new("virsh").args(["-q", "-c", &host.uri, "domstate", name]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim() == "running"
}

fn wait_running(host: &Host, name: &str) -> Duration {
    let t0 = Instant::now();
    while !running(host, name) {
        assert!(t0.elapsed() < PATIENCE, "{name} on {} never ran again", host.name);
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

/// Sends a signal to a host's libvirtd, checked to be libvirtd.
fn signal_libvirtd(host: &Host, signal: &str) {
    let pid = std::fs::read_to_string(host.dir.join("libvirtd.pid")).expect("the host's libvirtd.pid");
    let pid = pid.trim().to_string();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "libvirtd", "pid {pid} of {} is libvirtd", host.name);
    assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
}

#[test]
fn watch_heals_from_libvirt_events_and_outlives_a_host_restart() {
    let Some(tb) = Testbed::start("wwatch", &["h1", "h2"]) else { return };
    let (h1, h2) = (tb.host("h1").clone(), tb.host("h2").clone());
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let mut f = Factory {
        name: "wwatch".into(),
        hosts: tb.hosts.clone(),
        tenants: vec![Tenant { name: "acme".into(), vni: 10001 }],
        templates: vec![Template { name: TINY.into(), memory_mib: 64 }],
        vms: vec![vm("w1", "h1"), vm("w2", "h2")],
    };
    run::validate(&f.write(&repo));
    let c1 = commit(&f, &repo, "two VMs");
    let w = Watcher::start(&repo, &dir.path().join("state"));

    // 1. The commit runs; status shows it applied.
    let t0 = Instant::now();
    let s = w.until("first commit applied on both hosts", |s| {
        s["last_applied"]["commit"] == c1.as_str() && host_converged(s, "h1") && host_converged(s, "h2")
    });
    say(&format!("commit → converged on 2 hosts: {:.2}s", t0.elapsed().as_secs_f64()));
    assert!(s["failing"].as_array().unwrap().is_empty(), "{s:#}");
    assert!(running(&h1, "w1") && running(&h2, "w2"));
    let followed: Vec<String> = w
        .events()
        .iter()
        .filter(|e| e["event"] == "follow")
        .map(|e| e["host"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(followed, ["h1", "h2"], "one event connection per host of the commit");

    // 2. An out-of-band stop is healed by the libvirt event.
    let healed = w.heal_from_event(&h1, "w1");
    say(&format!("virsh destroy → running again: {:.2}s", healed.as_secs_f64()));

    // 3b. A commit whose plan has an error is refused as a whole: w5's name is taken on
    // h1 by a domain fabrik does not own, so w6 on h2 is not created either.
    define_foreign(&h1, "w5");
    let mut bad = f.clone();
    bad.vms.push(vm("w5", "h1"));
    bad.vms.push(vm("w6", "h2"));
    let c_bad = commit(&bad, &repo, "a VM whose name is taken");
    let s = w.until("the commit with a plan error refused", |s| s["last_attempted"]["commit"] == c_bad.as_str());
    assert_eq!(s["last_attempted"]["ok"], false, "{s:#}");
    assert_eq!(s["last_applied"]["commit"], c1.as_str(), "the last good commit stays in force: {s:#}");
    let diags = s["last_attempted"]["diagnostics"].as_array().expect("diagnostics");
    assert!(
        diags.iter().any(|d| d["code"] == "fabrik::plan::name-clash" && d["resource"] == "vm:h1/w5"),
        "the plan's error is shown: {s:#}"
    );
    assert!(!defined(&h2, "w6"), "nothing of a refused commit is carried out, on any host");
    let text = String::from_utf8_lossy(
        &Command::new(factory::FABRIK).args(["status", "--watch-state"]).arg(&w.state).output().unwrap().stdout,
    )
    .into_owned();
    assert!(text.contains("REFUSED") && text.contains("fabrik::plan::name-clash"), "{text}");
    // Drift is still healed against the commit in force.
    w.heal_from_event(&h2, "w2");
    assert!(!defined(&h2, "w6"), "healing the last good commit does not apply the refused one");
    HostView::of(&h1).virsh(&["undefine", "w5"]);

    // 4b. A resource whose action fails backs off alone: with h1's pool directory
    // immutable, w8's disk cannot be made; w9, on the same host, still runs, and h1 is
    // not backing off as a whole. Once the directory is writable again, w8's retry makes
    // it.
    let pool_dir = h1.dir.join("lib").join(factory::POOL_PATH.trim_start_matches("/var/lib/libvirt/"));
    let immutable = Immutable::set(&pool_dir);
    f.vms.push(Vm { disk: Some(factory::Disk::DeletedWithVm), ..vm("w8", "h1") });
    f.vms.push(vm("w9", "h1"));
    let c_disk = commit(&f, &repo, "a VM with a disk and one without");
    let volume = format!("volume:h1/{}/w8-data", factory::POOL);
    let s = w.until("w9 runs while w8's disk backs off", |s| {
        s["last_applied"]["commit"] == c_disk.as_str()
            && s["failing_resources"].as_array().is_some_and(|f| f.iter().any(|r| r["id"] == volume.as_str()))
    });
    assert!(running(&h1, "w9"), "the rest of h1 converged: {s:#}");
    assert!(!defined(&h1, "w8"), "{s:#}");
    assert!(s["failing"].as_array().unwrap().iter().all(|x| x["host"] != "h1"), "h1 itself is not backing off: {s:#}");
    let failed = s["failing_resources"].as_array().unwrap().iter().find(|r| r["id"] == volume.as_str()).unwrap();
    say(&format!("w8's disk: {} ({} failure(s)): {}", failed["kind"], failed["failures"], failed["error"]));
    drop(immutable);
    w.until("w8 runs after its backoff", |s| {
        host_converged(s, "h1") && s["failing_resources"].as_array().is_some_and(|f| f.is_empty())
    });
    assert!(running(&h1, "w8"));

    // 5. h2's libvirtd is killed: h2 backs off, h1 keeps converging.
    tb.kill_libvirtd("h2");
    f.vms.push(vm("w3", "h1"));
    f.vms.push(vm("w4", "h2"));
    let c2 = commit(&f, &repo, "one more VM on each host");
    let s = w.until("h1 converged on the new commit while h2 backs off", |s| {
        s["last_applied"]["commit"] == c2.as_str()
            && host_converged(s, "h1")
            && s["failing"].as_array().is_some_and(|f| f.iter().any(|x| x["host"] == "h2"))
    });
    let failing = &s["failing"].as_array().unwrap()[0];
    say(&format!("h2 down: {} ({} failure(s)): {}", failing["kind"], failing["failures"], failing["error"]));
    assert_eq!(failing["kind"], "unreachable", "{s:#}");
    assert!(running(&h1, "w3"), "h1 converged without waiting for h2");
    let text = String::from_utf8_lossy(
        &Command::new(factory::FABRIK).args(["status", "--watch-state"]).arg(&w.state).output().unwrap().stdout,
    )
    .into_owned();
    assert!(text.contains("Failing:\n  h2"), "{text}");

    // h2's libvirtd starts again: the event thread reconnects, h2 converges.
    let back_from = w.events().len();
    tb.start_libvirtd("h2");
    let t0 = Instant::now();
    w.until("h2 converged after its return", |s| {
        s["last_applied"]["commit"] == c2.as_str()
            && host_converged(s, "h2")
            && s["failing"].as_array().is_some_and(|f| f.is_empty())
    });
    say(&format!("h2's libvirtd back → converged: {:.2}s", t0.elapsed().as_secs_f64()));
    assert!(running(&h2, "w2") && running(&h2, "w4"));
    w.event_after(back_from, "h2's event connection back", |e| {
        e["event"] == "host-events" && e["host"] == "h2" && e["up"] == true
    });
    w.heal_from_event(&h2, "w4");

    // h1's libvirtd stops answering (it hangs): h1 backs off, h2 keeps converging.
    signal_libvirtd(&h1, "-STOP");
    f.vms.push(vm("w7", "h2"));
    let c3 = commit(&f, &repo, "one more VM on h2");
    w.until("h2 converged on the new commit while h1 backs off", |s| {
        s["last_applied"]["commit"] == c3.as_str()
            && host_converged(s, "h2")
            && s["failing"].as_array().is_some_and(|f| f.iter().any(|x| x["host"] == "h1"))
    });
    assert!(running(&h2, "w7"), "h2 converged without waiting for h1");
    signal_libvirtd(&h1, "-CONT");
    w.until("h1 converged after it answered again", |s| {
        host_converged(s, "h1") && s["failing"].as_array().is_some_and(|f| f.is_empty())
    });
    assert!(running(&h1, "w1") && running(&h1, "w3"));
}

/// A directory made immutable (`chattr +i`: not even root creates a file in it) until
/// dropped, also when the test fails (else the testbed's directory could not be removed).
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Immutable {
        assert!(dir.is_dir(), "{} is a directory", dir.display());
        assert!(Command::new("chattr").arg("+i").arg(dir).status().unwrap().success(), "chattr +i {}", dir.display());
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

fn defined(host: &Host, name: &str) -> bool {
    Command::new("virsh").args(["-q", "-c", &host.uri, "domstate", name]).output().unwrap().status.success()
}

/// Defines a domain fabrik does not own (no mark), as a person would by hand.
fn define_foreign(host: &Host, name: &str) {
    let xml = format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os></domain>"
    );
    let file = host.dir.join(format!("{name}.xml"));
    std::fs::write(&file, xml).unwrap();
    HostView::of(host).virsh(&["define", file.to_str().unwrap()]);
}
