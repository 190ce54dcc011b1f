//! A `fabrik watch` child process with `--coordination`, its JSON events collected.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A bound on a hang, not a speed requirement (benches/ha_handover.rs measures).
pub const PATIENCE: Duration = Duration::from_secs(180);

pub struct Watcher {
    pub name: String,
    child: Child,
    pub state: PathBuf,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    stopped: bool,
}

impl Watcher {
    pub fn start(fabrik: &str, name: &str, repo: &Path, state: &Path, url: &str, ttl: u64) -> Watcher {
        let mut child = Command::new(fabrik)
            .arg("watch")
            .arg(repo)
            .arg("--watch-state")
            .arg(state)
            .args(["--coordination", url, "--lease-ttl", &ttl.to_string()])
            .args(["--poll-seconds", "1", "--debounce-ms", "100", "--drift-seconds", "3600"])
            .args(["--shutdown-timeout", "1", "--host-timeout", "5", "--format", "json", "--lock-wait", "120"])
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
        Watcher { name: name.into(), child, state: state.to_path_buf(), events, stopped: false }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn status(&self, fabrik: &str) -> Option<serde_json::Value> {
        let o = Command::new(fabrik)
            .args(["status", "--format", "json", "--watch-state"])
            .arg(&self.state)
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).ok()
    }

    pub fn role(&self, fabrik: &str) -> String {
        self.status(fabrik).and_then(|s| s["coordination"]["role"].as_str().map(String::from)).unwrap_or_default()
    }

    pub fn until(&self, fabrik: &str, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.status(fabrik)
                && ok(&s)
            {
                return s;
            }
            assert!(
                t0.elapsed() < PATIENCE,
                "watcher {} never reached: {what}; status: {:#?}",
                self.name,
                self.status(fabrik)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Ids of the actions this watcher finished.
    pub fn done(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "done")
            .filter_map(|e| e["id"].as_str().map(String::from))
            .collect()
    }

    /// Actions this watcher started.
    pub fn started(&self) -> usize {
        self.events().iter().filter(|e| e["event"] == "start").count()
    }

    pub fn signal(&mut self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
        if signal == nix::sys::signal::SIGKILL {
            let _ = self.child.wait();
            self.stopped = true;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGCONT);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let _ = self.child.wait();
    }
}
