//! A private etcd for a test: loopback, two free ports, a temporary data folder; killed
//! (and its folder removed) on drop. Stopped and started again on the same ports and
//! data to play an outage.
//!
//! Without the `etcd` binary (Debian's `etcd-server`; `scripts/setup.sh` installs it)
//! [`Etcd::start`] prints why and returns `None`; with `CI=true` it panics instead.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    data: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn binary() -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join("etcd")).find(|p| p.is_file())
}

impl Etcd {
    pub fn start() -> Option<Etcd> {
        if binary().is_none() {
            let why = "no `etcd` binary on PATH (apt-get install etcd-server; scripts/setup.sh does)";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and {why}");
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let mut e =
            Etcd { child: None, client_port: free_port(), peer_port: free_port(), data: tempfile::tempdir().unwrap() };
        e.resume();
        Some(e)
    }

    /// `etcd://127.0.0.1:PORT/PREFIX` for `--coordination`.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://127.0.0.1:{}/{prefix}", self.client_port)
    }

    /// Starts it (again) on its ports and data; returns once it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd already runs");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "ha", "--data-dir"])
            .arg(self.data.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("ha={peer}"), "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(60), "etcd did not listen on {client}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it (SIGKILL: an outage, not a clean leave).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
