//! Running fabrik (validate, plan, apply, also as a child process to interrupt) and
//! looking at a testbed host from outside: its domains, QEMU processes, links, bridge
//! ports, VXLAN flood entries and volumes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use fabrik::driver::Virt;
use fabrik::driver::libvirt::LibvirtDriver;
use fabrik::live::LiveDomain;
use serde_json::Value;

use super::factory::FABRIK;
use super::testbed::{Host, in_host};

fn fabrik(args: &[&str], path: &Path) -> std::process::Output {
    Command::new(FABRIK).args(args).arg(path).env("NO_COLOR", "1").output().expect("fabrik runs")
}

/// `fabrik validate`: the factory must be valid, warnings and all printed on failure.
pub fn validate(path: &Path) {
    let o = fabrik(&["validate"], path);
    assert_eq!(
        o.status.code(),
        Some(0),
        "fabrik validate {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A `fabrik plan --format json`.
#[derive(Debug)]
pub struct PlanRun {
    pub code: i32,
    pub json: Value,
    /// The document's actions, errors and notices over all its hosts, in order.
    pub all_actions: Vec<Value>,
    pub all_errors: Vec<Value>,
    pub notices: Vec<Value>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl PlanRun {
    pub fn actions(&self) -> &[Value] {
        &self.all_actions
    }
    pub fn errors(&self) -> &[Value] {
        &self.all_errors
    }
    pub fn action(&self, id: &str) -> Option<&Value> {
        self.actions().iter().find(|a| a["id"] == id)
    }
    /// `op class id` per action, for messages and comparisons.
    pub fn lines(&self) -> Vec<String> {
        self.actions().iter().map(|a| format!("{} {} {}", a["op"], a["class"], a["id"])).collect()
    }
}

pub fn plan(path: &Path) -> PlanRun {
    let t0 = Instant::now();
    let o = fabrik(&["plan", "--format", "json"], path);
    let elapsed = t0.elapsed();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let json: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("fabrik plan prints JSON ({e}):\n{}\n{stderr}", String::from_utf8_lossy(&o.stdout)));
    let all = |key: &str| -> Vec<Value> {
        let hosts = json["hosts"].as_array().map(Vec::as_slice).unwrap_or_default();
        hosts.iter().flat_map(|h| h[key].as_array().cloned().unwrap_or_default()).collect()
    };
    let (all_actions, all_errors, notices) = (all("actions"), all("errors"), all("notices"));
    PlanRun { code: o.status.code().unwrap_or(-1), json, all_actions, all_errors, notices, stderr, elapsed }
}

/// Asserts that planning again finds nothing to do.
pub fn assert_converged(path: &Path) {
    let p = plan(path);
    assert!(
        p.code == 0 && p.actions().is_empty() && p.errors().is_empty(),
        "a second plan is not empty (exit {}):\n{}\n{:#?}\n{}",
        p.code,
        p.lines().join("\n"),
        p.errors(),
        p.stderr
    );
}

/// What one `fabrik apply --format json` printed, and how it ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Exit status; `None` when it was killed by a signal.
    pub code: Option<i32>,
    pub events: Vec<Value>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn of_kind<'a>(&'a self, event: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events.iter().filter(move |e| e["event"] == event)
    }
    /// Ids of the resources with an event of this kind, in order.
    pub fn ids(&self, event: &str) -> Vec<String> {
        self.of_kind(event).map(|e| e["id"].as_str().unwrap_or_default().to_string()).collect()
    }
    /// `(id, op)` of the `done` events.
    pub fn done(&self) -> Vec<(String, String)> {
        self.of_kind("done").map(|e| (e["id"].as_str().unwrap().into(), e["op"].as_str().unwrap().into())).collect()
    }
    pub fn summary(&self) -> &Value {
        self.of_kind("summary").last().unwrap_or(&Value::Null)
    }
    /// Everything it printed, for failure messages.
    pub fn transcript(&self) -> String {
        let events: Vec<String> = self.events.iter().map(Value::to_string).collect();
        format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", self.code, events.join("\n"), self.stderr)
    }
    pub fn assert_ok(&self) {
        assert_eq!(self.code, Some(0), "apply failed:\n{}", self.transcript());
        assert_eq!(self.summary()["converged"], true, "{}", self.transcript());
        assert_eq!(self.summary()["failed"], 0, "{}", self.transcript());
    }
}

/// `fabrik apply --yes --format json <path> <extra>`, to its end.
pub fn apply(path: &Path, extra: &[&str]) -> Outcome {
    ApplyChild::spawn(path, extra).wait()
}

/// A `fabrik apply` running as a child process, its JSON events read as they come.
pub struct ApplyChild {
    child: Child,
    events: Receiver<Value>,
    seen: Vec<Value>,
    stderr: std::thread::JoinHandle<String>,
    started: Instant,
}

impl ApplyChild {
    pub fn spawn(path: &Path, extra: &[&str]) -> ApplyChild {
        ApplyChild::spawn_with(path, extra, &[])
    }

    /// [`ApplyChild::spawn`] with more environment variables (the test-only hooks).
    pub fn spawn_with(path: &Path, extra: &[&str], env: &[(&str, &str)]) -> ApplyChild {
        let mut child = Command::new(FABRIK)
            .args(["apply", "--yes", "--format", "json"])
            .arg(path)
            .args(extra)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fabrik apply starts");
        let (tx, events) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "event": "not-json", "line": line }));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        ApplyChild { child, events, seen: Vec::new(), stderr, started: Instant::now() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads events until one satisfies `until` (returned) or `timeout` passes, or apply
    /// ends (`None` for both).
    pub fn wait_for(&mut self, timeout: Duration, until: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if until(&e) {
                        return Some(e);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Events read so far.
    pub fn seen(&self) -> &[Value] {
        &self.seen
    }

    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL to fabrik apply");
    }

    /// Waits for apply to end (at most 10 minutes, then it is killed): everything it
    /// printed and its exit status.
    pub fn wait(mut self) -> Outcome {
        const APPLY_LIMIT: Duration = Duration::from_secs(600);
        // Every event up to the end of stdout (or the limit).
        let _ = self.wait_for(APPLY_LIMIT.saturating_sub(self.started.elapsed()), |_| false);
        let status = match self.child.try_wait().unwrap() {
            Some(s) => s,
            None if self.started.elapsed() >= APPLY_LIMIT => {
                let _ = self.child.kill();
                self.child.wait().unwrap()
            }
            None => self.child.wait().unwrap(),
        };
        let elapsed = self.started.elapsed();
        // Events still in the channel (stdout closed before the exit was seen).
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        Outcome { code: status.code(), events: self.seen, stderr: self.stderr.join().unwrap(), elapsed }
    }
}

/// A host seen from outside: its libvirt, its processes and its links.
pub struct HostView<'h> {
    pub host: &'h Host,
    pub virt: LibvirtDriver,
}

impl<'h> HostView<'h> {
    pub fn of(host: &'h Host) -> HostView<'h> {
        HostView { host, virt: LibvirtDriver::connect(&host.uri).expect("the host's libvirtd answers") }
    }

    pub fn virsh(&self, args: &[&str]) -> String {
        let o = Command::new("virsh").arg("-q").arg("-c").arg(&self.host.uri).args(args).output().unwrap();
        assert!(o.status.success(), "virsh {args:?} on {}: {}", self.host.name, String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    pub fn domains(&mut self) -> Vec<LiveDomain> {
        self.virt.domains().expect("the host's domains read")
    }

    pub fn domain(&mut self, name: &str) -> Option<LiveDomain> {
        self.domains().into_iter().find(|d| d.name == name)
    }

    /// `virsh domstate`: `running`, `shut off`, …
    pub fn state(&self, name: &str) -> String {
        self.virsh(&["domstate", name])
    }

    /// The pid of a running domain's QEMU: the process in the host's namespace started
    /// with `-name guest=<name>,`.
    pub fn qemu_pid(&self, name: &str) -> Option<u32> {
        let needle = format!("guest={name},");
        self.pids().into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|arg| arg.starts_with(needle.as_bytes())))
                .unwrap_or(false)
        })
    }

    /// Whether a process has `/dev/kvm` open: a QEMU that runs its guest under KVM, not
    /// emulated.
    pub fn has_kvm_open(&self, pid: u32) -> bool {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == Path::new("/dev/kvm"))))
            .unwrap_or(false)
    }

    /// Processes in the host's network namespace.
    pub fn pids(&self) -> Vec<u32> {
        let o = Command::new("ip").args(["netns", "pids", &self.host.netns]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    /// A link's ifindex, if it exists.
    pub fn ifindex(&self, link: &str) -> Option<u32> {
        let o = Command::new("ip").args(["-n", &self.host.netns, "-o", "link", "show", "dev", link]).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        out.split(':').next().and_then(|i| i.trim().parse().ok())
    }

    /// `ip -d link show dev <link>` in the host's namespace.
    pub fn link_details(&self, link: &str) -> String {
        in_host(self.host, &["ip", "-d", "link", "show", "dev", link])
    }

    /// The ports of a bridge.
    pub fn ports(&self, bridge: &str) -> Vec<String> {
        in_host(self.host, &["ip", "-o", "link", "show", "master", bridge])
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
            .collect()
    }

    /// The remote addresses of a VXLAN device's flood entries (all-zero MAC).
    pub fn flood_remotes(&self, vxlan: &str) -> Vec<String> {
        in_host(self.host, &["bridge", "fdb", "show", "dev", vxlan])
            .lines()
            .filter(|l| l.starts_with("00:00:00:00:00:00"))
            .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "dst").nth(1).map(String::from))
            .collect()
    }

    /// Volume names of a pool (`virsh vol-list`).
    pub fn volumes(&self, pool: &str) -> Vec<String> {
        self.virsh(&["vol-list", "--pool", pool])
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    }

    /// The taps of a running domain with the network each is on (`virsh domiflist`).
    pub fn taps(&self, name: &str) -> Vec<(String, String)> {
        self.virsh(&["domiflist", name])
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3).then(|| (f[0].to_string(), f[2].to_string()))
            })
            .collect()
    }
}
