//! `fabrik agent`: serve this host's GPUs and links over stdin/stdout (line-delimited
//! JSON, see `fabrik::driver::agent`) for a fabrik on another machine. stdout carries only
//! the protocol; messages go to stderr.

use std::io;
use std::path::PathBuf;

use crate::cli::exit;
use crate::driver::agent::{self, Unavailable};
use crate::driver::netlink::NetlinkDriver;
use crate::driver::sim_links::SimLinksFile;
use crate::driver::{Gpus, Links};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Serve simulated links kept in this JSON file (created when missing, saved after
    /// every change) instead of the host's.
    #[arg(long, value_name = "FILE")]
    pub sim_state: Option<PathBuf>,
}

/// The GPU driver the agent serves on a real host.
// NVML is not wired in yet: switch this to the NVML driver once it is available.
fn local_gpus() -> Box<dyn Gpus> {
    Box::new(Unavailable::no_nvml("this agent is built without the NVML driver"))
}

/// The GPU driver the agent serves with `--sim-state`.
// Switch this to the simulated GPUs once their state is kept beside the links'.
fn simulated_gpus() -> Box<dyn Gpus> {
    Box::new(Unavailable::no_nvml("the simulated agent has no simulated GPUs yet"))
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
    let (gpus, links): (Box<dyn Gpus>, Box<dyn Links>) = match &args.sim_state {
        Some(path) => match SimLinksFile::open(path) {
            Ok(links) => (simulated_gpus(), Box::new(links)),
            Err(e) => {
                eprintln!("fabrik agent: cannot read simulated state {}: {e}", path.display());
                return exit::INVALID;
            }
        },
        None => (local_gpus(), local_links()),
    };
    match agent::serve(io::stdin().lock(), io::stdout().lock(), gpus, links) {
        Ok(()) => exit::OK,
        // The other side went away mid-answer: nothing is left to serve.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("fabrik agent: {e}");
            exit::INVALID
        }
    }
}
