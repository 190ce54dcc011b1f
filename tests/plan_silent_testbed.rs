//! `fabrik plan` and a host that goes silent in the middle of its reads (issue 12's
//! event implementation: a plan runs libvirt's timers only, never its socket loop, and
//! must still give up on a silent host after `--host-timeout`).
//!
//! h2's libvirtd is frozen (SIGSTOP) at a chosen call of the plan's reads: fabrik talks to
//! h2 through a small relay on a unix socket of the test's, which passes libvirt's
//! messages both ways and freezes h2's libvirtd just before it passes the client's
//! `FREEZE_AT`-th message (the connection's opening takes a handful; h2 holds
//! `H2_DOMAINS` domains, each read with a call of its own). h1 answers throughout and is
//! read first and then left idle while h2 is silent. h2 is reached both as a local socket
//! and as a remote URI. `fabrik inventory`, which keeps libvirt's default loop, gets the
//! same freeze: it reads a host one call at a time, since under that loop several calls
//! in flight on a frozen host waited for ever (8 at a time, it hung here until killed).

#[path = "testbed/mod.rs"]
mod testbed;

#[path = "apply_testbed/factory.rs"]
mod factory;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use testbed::{Host, Testbed, say};

const HOST_TIMEOUT_S: u64 = 6;
/// Domains made by hand on h2 (read and left alone by the plan).
const H2_DOMAINS: usize = 60;
/// The client message before which h2's libvirtd is frozen: past the opening and the
/// listings, among the domains' reads.
const FREEZE_AT: usize = 40;

/// The factory: both hosts, one tenant, one VM on h1 (the domains made by hand are read all
/// the same); h2 reached at `h2_uri`.
fn factory(tb: &Testbed, h2_uri: &str, dir: &Path) -> PathBuf {
    let mut f = factory::one_host("evsilent", tb.host("h1"), 1);
    let mut h2 = tb.host("h2").clone();
    h2.uri = h2_uri.to_string();
    f.hosts.push(h2);
    f.write(dir)
}

fn define_by_hand(host: &Host, count: usize) {
    let conn = virt::connect::Connect::open(Some(&host.uri)).expect("the host answers");
    for i in 0..count {
        let xml = format!(
            "<domain type='kvm'><name>by-hand-{i:03}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type></os></domain>"
        );
        conn.define_domain_xml(&xml).expect("a domain made by hand is defined");
    }
}

#[test]
fn a_host_frozen_in_the_middle_of_a_plans_reads_is_unreachable_within_the_host_timeout() {
    let Some(tb) = Testbed::start("evsilent", &["h1", "h2"]) else { return };
    let (h1, h2) = (tb.host("h1").clone(), tb.host("h2").clone());
    define_by_hand(&h1, 5);
    define_by_hand(&h2, H2_DOMAINS);
    // `qemu:///…?socket=` is a local host, `qemu+unix://` is read as a remote one (a plan
    // reads both 8 calls at a time over the connection; other commands a local host one
    // call at a time).
    for (scheme, readers) in [("qemu", "local"), ("qemu+unix", "remote")] {
        let dir = tempfile::tempdir().unwrap();
        let relay = Relay::start(&dir.path().join("h2-relay.sock"), &h2);
        let path = factory(&tb, &relay.uri(scheme), dir.path());
        frozen_in_the_middle(&path, &relay, readers);
        inventory_frozen_in_the_middle(&path, &relay, readers);
    }
}

/// `fabrik inventory` keeps libvirt's default loop, and reads a host one call at a time
/// (several calls in flight left waiting for ever on a frozen host under that loop): h2
/// frozen in the middle of its reads is reported after the host timeout, h1 is read.
fn inventory_frozen_in_the_middle(path: &Path, relay: &Relay, readers: &str) {
    relay.freeze_at(FREEZE_AT);
    let run = fabrik("inventory", path, &["--host-timeout", &HOST_TIMEOUT_S.to_string()]);
    let frozen = relay.thaw();
    say(&format!(
        "inventory with h2 frozen at its message {FREEZE_AT} ({readers}): {:.2}s, exit {}",
        run.elapsed.as_secs_f64(),
        run.code
    ));
    assert!(frozen, "{readers}: the relay froze h2's libvirtd (it saw {} messages)", relay.messages());
    assert_eq!(run.code, 1, "{readers}: {:#}\n{}", run.json, run.stderr);
    let hosts = run.json["hosts"].as_array().expect("the inventory's hosts");
    let errors = |name: &str| {
        let host = hosts.iter().find(|h| h["name"] == name).unwrap_or_else(|| panic!("host {name} in {:#}", run.json));
        host["live"]["errors"].as_array().cloned().unwrap_or_default()
    };
    let h2 = errors("h2");
    assert!(!h2.is_empty(), "{readers}: h2 is reported: {:#}", run.json);
    say(&format!("  h2: {}", h2[0]));
    assert!(errors("h1").iter().all(|e| e["concern"] == "nvml"), "{readers}: h1 was read: {:#?}", errors("h1"));
}

/// A healthy plan through the relay, then one with h2 frozen at the relay's
/// `FREEZE_AT`-th message.
fn frozen_in_the_middle(path: &Path, relay: &Relay, readers: &str) {
    // Healthy: both hosts read through the relay, no freeze (the relay freezes only when
    // told to), the plan has changes (the tenant's networks, h1's VM) and no errors.
    let healthy = plan(path, &["--host-timeout", &HOST_TIMEOUT_S.to_string()]);
    assert_eq!(healthy.code, 2, "{readers}: {:#?}\n{}", healthy.errors(), healthy.stderr);
    assert!(healthy.errors().is_empty(), "{readers}: {:#?}", healthy.errors());
    assert!(relay.messages() > FREEZE_AT, "h2's reads take more than {FREEZE_AT} messages: {}", relay.messages());

    relay.freeze_at(FREEZE_AT);
    let silent = plan(path, &["--host-timeout", &HOST_TIMEOUT_S.to_string()]);
    let frozen = relay.thaw();
    say(&format!(
        "plan with h2 frozen at its message {FREEZE_AT} ({readers}): {:.2}s, exit {}",
        silent.elapsed.as_secs_f64(),
        silent.code
    ));
    assert!(frozen, "{readers}: the relay froze h2's libvirtd (it saw {} messages)", relay.messages());
    // Not hung (`plan` kills it past `HUNG`, generous: a few silence limits, not the
    // minutes TCP would wait nor the forever of libvirt's I/O loop without keepalive).
    assert_eq!(silent.code, 1, "{readers}: {:#?}\n{}", silent.json, silent.stderr);
    let hosts = silent.json["hosts"].as_array().expect("the plan's hosts");
    let of = |name: &str| {
        hosts
            .iter()
            .find(|h| h["host"] == name)
            .unwrap_or_else(|| panic!("host {name} in {:#}\n{}", silent.json, silent.stderr))
    };
    let h2_errors = of("h2")["errors"].as_array().cloned().unwrap_or_default();
    assert!(!h2_errors.is_empty(), "{readers}: h2 is reported: {:#?}", of("h2"));
    say(&format!("  h2: {}", h2_errors[0]["message"]));
    assert_eq!(h2_errors[0]["code"], "fabrik::plan::unreadable-host", "{h2_errors:#?}");
    let message = h2_errors[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("keepalive timeout"), "{readers}: h2's call in flight failed on keepalive: {message}");
    // h1, read first and idle while h2 was silent, is not reported unreachable.
    let h1_errors = of("h1")["errors"].as_array().cloned().unwrap_or_default();
    assert!(h1_errors.is_empty(), "{readers}: h1 was read: {h1_errors:#?}");
}

/// `fabrik plan --format json <path> <extra>`: its exit status, document and stderr, and
/// how long it took.
struct PlanRun {
    code: i32,
    json: serde_json::Value,
    stderr: String,
    elapsed: Duration,
}

impl PlanRun {
    fn errors(&self) -> Vec<serde_json::Value> {
        let hosts = self.json["hosts"].as_array().cloned().unwrap_or_default();
        hosts.iter().flat_map(|h| h["errors"].as_array().cloned().unwrap_or_default()).collect()
    }
}

/// Longer than any plan here may take: a plan still running then is hung, and killed.
const HUNG: Duration = Duration::from_secs(60);

fn plan(path: &Path, extra: &[&str]) -> PlanRun {
    fabrik("plan", path, extra)
}

/// `fabrik <command> --format json <path> <extra>`, killed (and the test failed) if it
/// hangs.
fn fabrik(command: &str, path: &Path, extra: &[&str]) -> PlanRun {
    let t0 = std::time::Instant::now();
    let mut child = Command::new(factory::FABRIK)
        .args([command, "--format", "json"])
        .args(extra)
        .arg(path)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fabrik runs");
    let read = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = from.read_to_end(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().expect("fabrik plan is waited for") {
            break status;
        }
        if t0.elapsed() > HUNG {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!("fabrik {command} hung: still running after {}s, killed\n{stderr}", HUNG.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = t0.elapsed();
    let (stdout, stderr) = (stdout.join().unwrap(), String::from_utf8_lossy(&stderr.join().unwrap()).into_owned());
    let json = serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!("fabrik {command} prints JSON ({e}):\n{}\n{stderr}", String::from_utf8_lossy(&stdout))
    });
    PlanRun { code: status.code().unwrap_or(-1), json, stderr, elapsed }
}

/// A relay between fabrik and a host's libvirtd socket, counting the client's libvirt
/// messages (each a 4-byte big-endian length, itself included, then the rest) and, once
/// told to, freezing the host's libvirtd before passing the message of that number.
struct Relay {
    path: PathBuf,
    messages: Arc<AtomicUsize>,
    /// 0: never freeze.
    freeze_at: Arc<AtomicUsize>,
    frozen: Arc<std::sync::Mutex<Option<String>>>,
}

impl Relay {
    fn start(path: &Path, host: &Host) -> Relay {
        let listener = UnixListener::bind(path).expect("the relay's socket");
        let target = host.dir.join("libvirt-sock");
        let pid_file = host.dir.join("libvirtd.pid");
        let relay = Relay {
            path: path.to_path_buf(),
            messages: Arc::new(AtomicUsize::new(0)),
            freeze_at: Arc::new(AtomicUsize::new(0)),
            frozen: Arc::new(std::sync::Mutex::new(None)),
        };
        let (messages, freeze_at, frozen) = (relay.messages.clone(), relay.freeze_at.clone(), relay.frozen.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = UnixStream::connect(&target) else { continue };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump_plain(s2, c2));
                let (messages, freeze_at, frozen, pid_file) =
                    (messages.clone(), freeze_at.clone(), frozen.clone(), pid_file.clone());
                std::thread::spawn(move || {
                    messages.store(0, Ordering::SeqCst);
                    pump_counted(client, server, |n| {
                        messages.store(n, Ordering::SeqCst);
                        let at = freeze_at.load(Ordering::SeqCst);
                        if at != 0 && n == at {
                            let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
                            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                            assert_eq!(comm.trim(), "libvirtd", "pid {pid} is libvirtd");
                            assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
                            *frozen.lock().unwrap() = Some(pid);
                        }
                    })
                });
            }
        });
        relay
    }

    fn uri(&self, scheme: &str) -> String {
        format!("{scheme}:///system?socket={}", self.path.display())
    }

    /// The client's messages on the latest connection so far.
    fn messages(&self) -> usize {
        self.messages.load(Ordering::SeqCst)
    }

    fn freeze_at(&self, n: usize) {
        self.freeze_at.store(n, Ordering::SeqCst);
    }

    /// Lets the libvirtd it froze run again; whether it had frozen it.
    fn thaw(&self) -> bool {
        self.freeze_at.store(0, Ordering::SeqCst);
        let frozen = self.frozen.lock().unwrap().take();
        if let Some(pid) = &frozen {
            let _ = Command::new("kill").args(["-CONT", pid]).status();
        }
        frozen.is_some()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.thaw();
    }
}

/// Passes bytes from `from` to `to` until either end closes.
fn pump_plain(mut from: UnixStream, mut to: UnixStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// Passes libvirt's messages from `from` to `to`, calling `before(n)` before passing the
/// `n`-th (from 1).
fn pump_counted(mut from: UnixStream, mut to: UnixStream, mut before: impl FnMut(usize)) {
    let mut n = 0;
    loop {
        let mut len = [0u8; 4];
        if from.read_exact(&mut len).is_err() {
            break;
        }
        let total = u32::from_be_bytes(len) as usize;
        let mut rest = vec![0u8; total.saturating_sub(4)];
        if from.read_exact(&mut rest).is_err() {
            break;
        }
        n += 1;
        before(n);
        if to.write_all(&len).is_err() || to.write_all(&rest).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
