//! Shared by the netlink and agent tests: throwaway network namespaces, and how a test
//! reports a capability this machine lacks (a line in the output; a failure on CI).

#![allow(dead_code)]

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// `CI=true` turns a missing required capability into a failure.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Writes a line past the test harness's capture, so it shows even for passing tests.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A capability the issue requires is missing: fail on CI, say so loudly otherwise.
pub fn required_missing(capability: &str, why: &str) {
    let line = format!("MISSING: {capability} is not available here ({why}); the test did not run");
    assert!(!ci(), "{line} (CI=true makes this a failure)");
    say(&line);
}

/// A capability the kernel may lack by design (802.1Q here): say so, never fail.
pub fn optional_missing(capability: &str, why: &str) {
    say(&format!("NOT SUPPORTED BY THIS KERNEL: {capability} ({why}); that part of the test did not run"));
}

/// A network namespace that is deleted (with every link in it) when dropped, also when
/// the test panics.
pub struct Netns {
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// A fresh namespace, or `None` (after reporting) when this machine cannot make one.
    pub fn new(tag: &str) -> Option<Netns> {
        let name = format!("fabrik-t{}-{}-{tag}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        match Command::new("ip").args(["netns", "add", &name]).output() {
            Ok(out) if out.status.success() => {
                let netns = Netns { name };
                // Loopback up, as on any host; nothing depends on it.
                netns.exec(&["ip", "link", "set", "lo", "up"]);
                Some(netns)
            }
            Ok(out) => {
                required_missing("network namespaces (`ip netns add`)", String::from_utf8_lossy(&out.stderr).trim());
                None
            }
            Err(e) => {
                required_missing("network namespaces (`ip netns add`)", &format!("cannot run `ip`: {e}"));
                None
            }
        }
    }

    /// Runs a command inside the namespace; returns its stdout, panics on failure.
    pub fn exec(&self, command: &[&str]) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.name]).args(command).output().unwrap();
        assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
