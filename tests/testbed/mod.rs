//! Private libvirt hosts for integration tests: a guard over `tests/testbed/testbed.sh`
//! that starts a named testbed and stops it when dropped, also when the test fails.
//!
//! Each test names its own testbed, so tests running in parallel never share a host. A
//! testbed left behind by a killed run is stopped before it is started again.
//!
//! Without what the testbed needs (root, /dev/kvm, libvirtd, QEMU), [`Testbed::start`]
//! returns `None` after printing why, so a developer's `cargo test` still runs the rest.
//! With `CI=true` the same is a test failure: CI must not pass by skipping.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// One host of a testbed.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    /// `qemu:///system?socket=…/libvirt-sock`
    pub uri: String,
    /// Its address on the testbed's network (for VXLAN between hosts).
    pub address: String,
    /// Its network namespace, for `ip netns exec`.
    pub netns: String,
    /// Its directory: sockets, libvirt's state, logs. Visible from outside the host.
    pub dir: PathBuf,
}

/// A running testbed; stopped on drop.
#[derive(Debug)]
pub struct Testbed {
    pub name: String,
    pub hosts: Vec<Host>,
    /// How long `start` took.
    pub started_in: Duration,
    /// Held while the testbed is in use: another test process that wants a testbed of
    /// the same name waits for it rather than stopping it under this one. The kernel
    /// drops the lock when a process dies, so a killed run never blocks the next.
    _owner: std::fs::File,
}

fn base_dir() -> PathBuf {
    std::env::var_os("FABRIK_TESTBED_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp/fabrik-testbed"))
}

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/testbed.sh")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Prints a line past the test harness's capture, so a skip or a timing shows in the
/// output of a passing `cargo test` too.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Skips a test outside CI, fails it in CI.
pub fn missing(what: &str) -> Option<Testbed> {
    if in_ci() {
        panic!("CI=true and the testbed cannot run: {what} (run scripts/setup-testbed.sh)");
    }
    say(&format!("skipped: {what} (run scripts/setup-testbed.sh as root, or set CI=true to make this a failure)"));
    None
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
                .any(|d| d.join(tool).is_file())
        })
        .unwrap_or(false)
}

/// What the testbed lacks on this machine, if anything.
pub fn prerequisites() -> Option<String> {
    if !is_root() {
        return Some("not root (network namespaces and mounts need it)".into());
    }
    if !std::path::Path::new("/dev/kvm").exists() {
        return Some("/dev/kvm is missing".into());
    }
    for tool in ["ip", "unshare", "libvirtd", "virsh", "qemu-system-x86_64"] {
        if !on_path(tool) {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new("bash").arg(script()).args(args).output().expect("bash runs tests/testbed/testbed.sh")
}

impl Testbed {
    /// Starts a testbed of fresh hosts, or says why it cannot (see the module's note).
    pub fn start(name: &str, hosts: &[&str]) -> Option<Testbed> {
        if let Some(why) = prerequisites() {
            return missing(&why);
        }
        std::fs::create_dir_all(base_dir()).expect("the testbed directory can be made");
        let owner_path = base_dir().join(format!("{name}.owner"));
        let owner = std::fs::File::create(&owner_path).expect("the testbed's owner file can be made");
        owner.lock().expect("the testbed's owner lock");
        // A testbed of this name left by a killed run goes first: tests start clean.
        let stop = run(&["stop", "-n", name]);
        assert!(stop.status.success(), "testbed {name}: stop failed: {}", String::from_utf8_lossy(&stop.stderr));
        let t0 = Instant::now();
        let mut args = vec!["start", "-n", name];
        args.extend_from_slice(hosts);
        let out = run(&args);
        let started_in = t0.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // From here on the guard exists, so a failure below still stops what started.
        let mut tb = Testbed { name: name.to_string(), hosts: Vec::new(), started_in, _owner: owner };
        assert!(out.status.success(), "testbed {name}: start failed:\n{stderr}");
        for line in stdout.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [host, state, uri, address, netns] = f[..] else { panic!("testbed {name}: odd status line `{line}`") };
            assert_eq!(state, "running", "testbed {name}: host {host} is {state}:\n{stderr}");
            let dir =
                PathBuf::from(uri.split_once("socket=").map(|(_, s)| s).unwrap_or("")).parent().unwrap().to_path_buf();
            tb.hosts.push(Host {
                name: host.into(),
                uri: uri.into(),
                address: address.into(),
                netns: netns.into(),
                dir,
            });
        }
        assert_eq!(tb.hosts.len(), hosts.len(), "testbed {name}: start printed {stdout}");
        say(&format!("testbed {name}: {} host(s) started in {:.2}s", hosts.len(), started_in.as_secs_f64()));
        Some(tb)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name} in testbed {}", self.name))
    }

    /// SIGKILLs a host's libvirtd, as a crash: its guests, networks and state stay, and
    /// clients are refused until [`Testbed::start_libvirtd`].
    pub fn kill_libvirtd(&self, host: &str) {
        let out = run(&["kill-libvirtd", "-n", &self.name, host]);
        assert!(
            out.status.success(),
            "testbed {}: kill-libvirtd {host}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts a killed host's libvirtd again on the same state; it finds its running guests.
    pub fn start_libvirtd(&self, host: &str) {
        let out = run(&["start-libvirtd", "-n", &self.name, host]);
        assert!(
            out.status.success(),
            "testbed {}: start-libvirtd {host}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let out = run(&["stop", "-n", &self.name]);
        if !out.status.success() {
            eprintln!("testbed {}: stop failed: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// Runs a command inside a host's network namespace; returns its stdout.
pub fn in_host(host: &Host, cmd: &[&str]) -> String {
    let out = Command::new("ip").args(["netns", "exec", &host.netns]).args(cmd).output().expect("ip netns exec runs");
    assert!(out.status.success(), "{cmd:?} in {}: {}", host.netns, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
