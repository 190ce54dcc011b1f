//! `fabrik agent`: serve this host's GPUs and links over stdin/stdout (line-delimited
//! JSON, see `fabrik::driver::agent`) for a fabrik on another machine. stdout carries only
//! the protocol; messages go to stderr.

use std::io;
use std::path::{Path, PathBuf};

use crate::cli::exit;
use crate::driver::agent::{self, Unavailable};
use crate::driver::netlink::NetlinkDriver;
use crate::driver::nvml::NvmlDriver;
use crate::driver::sim_gpu::{SimGpuState, SimGpus};
use crate::driver::sim_links::SimLinksFile;
use crate::driver::{Gpus, Links};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Serve a simulated twin instead of this host: the folder holding its
    /// `links.json` and `gpus.json` (as `.fabrik/sim/<host>/` does). Missing files start
    /// empty; every change is saved.
    #[arg(long, value_name = "DIR")]
    pub sim_state: Option<PathBuf>,
    /// Where this host keeps the apply locks it holds for a fabrik (default
    /// `/run/fabrik`; with `--sim-state`, that folder). The leader epochs it has seen and
    /// its lock log are kept there too when given, else in `/var/lib/fabrik`.
    #[arg(long, value_name = "DIR")]
    pub lock_dir: Option<PathBuf>,
}

/// The host's GPUs through NVML; when the library cannot be loaded, every call answers why.
fn local_gpus() -> Box<dyn Gpus> {
    match NvmlDriver::open(None) {
        Ok(driver) => Box::new(driver),
        Err(e) => {
            eprintln!("fabrik agent: {e}");
            Box::new(Unavailable::new(e))
        }
    }
}

/// The two drivers an agent serves.
type Drivers = (Box<dyn Gpus>, Box<dyn Links>);

/// A twin's simulated GPUs, kept in `gpus.json` of its state folder.
fn simulated(dir: &Path) -> Result<Drivers, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let gpus = SimGpus::open(&dir.join("gpus.json"), || SimGpuState::new(Vec::new())).map_err(|e| e.to_string())?;
    let links =
        SimLinksFile::open(&dir.join("links.json")).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    Ok((Box::new(gpus), Box::new(links)))
}

/// The host's links; when netlink cannot be opened, every call answers why.
fn local_links() -> Box<dyn Links> {
    match NetlinkDriver::local() {
        Ok(driver) => Box::new(driver),
        Err(e) => {
            eprintln!("fabrik agent: {e}");
            Box::new(Unavailable::new(e))
        }
    }
}

pub fn run(args: &Args) -> u8 {
    let (gpus, links): Drivers = match &args.sim_state {
        Some(dir) => match simulated(dir) {
            Ok(drivers) => drivers,
            Err(e) => {
                eprintln!("fabrik agent: {e}");
                return exit::INVALID;
            }
        },
        None => (local_gpus(), local_links()),
    };
    let locks = match (&args.lock_dir, &args.sim_state) {
        (Some(dir), _) | (None, Some(dir)) => agent::HostLocks::new(dir.clone()),
        // The locks die with their holders (`/run`); the fencing records must not.
        (None, None) => agent::HostLocks::new(PathBuf::from(agent::HostLocks::DIR_DEFAULT))
            .with_fence_dir(PathBuf::from(crate::coord::fence::DIR_DEFAULT)),
    };
    match agent::serve(io::stdin().lock(), io::stdout().lock(), gpus, links, locks) {
        Ok(()) => exit::OK,
        // The other side went away mid-answer: nothing is left to serve.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("fabrik agent: {e}");
            exit::INVALID
        }
    }
}
