//! The arguments every command that reads hosts shares: the factory, `--sim`,
//! `--state-dir`, and reading the hosts they name.

use std::path::PathBuf;

use crate::driver::observe::{Started, observe_all};
use crate::live::LiveHost;
use crate::spec::model::Spec;

#[derive(clap::Args, Debug)]
pub struct Hosts {
    /// A factory file, or a directory of them.
    #[arg(default_value = ".", env = "FABRIK_FACTORY")]
    pub path: PathBuf,
    /// Use simulated twins of the hosts instead of the hosts themselves.
    #[arg(long)]
    pub sim: bool,
    /// Where the twins keep their state (default: `$XDG_STATE_HOME/fabrik/sim/<factory>-<hash>`,
    /// `~/.local/state/…` without it: never in the factory's directory).
    #[arg(long, value_name = "DIR", env = "FABRIK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds a host may leave fabrik without an answer (a connection that does not
    /// open, or libvirt's keepalive unanswered) before it counts as unreachable.
    #[arg(long, value_name = "SECONDS", env = "FABRIK_HOST_TIMEOUT", default_value_t = crate::driver::libvirt::SILENCE_LIMIT_DEFAULT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub host_timeout: u64,
}

impl Hosts {
    /// The twins' state folder (used with `--sim`).
    pub fn state(&self) -> PathBuf {
        crate::sim::state_dir(&self.path, self.state_dir.as_deref())
    }

    /// Reads every host of the factory, or its twin, concurrently. Every libvirt
    /// connection from here on, apply's included, gives a host `--host-timeout`.
    pub fn observe(&self, spec: &Spec) -> Vec<LiveHost> {
        self.observe_started(spec, None)
    }

    /// Starts reading the libvirt of every real host of `spec` in the background (not the
    /// twins, not the agents), so a plan's connections open and its reads run while the
    /// factory is still checked; [`Hosts::observe_started`] with the same hosts finishes.
    /// A URI that `check::trust` refuses is refused here too, before anything opens, and
    /// a factory where a tenant's file declares a host (`check::scope`) starts nothing:
    /// no host is opened that the checks have not cleared as the operator's.
    pub fn start_reading(&self, spec: &Spec) -> Option<Vec<Started>> {
        if self.sim || crate::check::scope::tenant_declares_a_host(spec) {
            return None;
        }
        crate::driver::libvirt::set_silence_limit(std::time::Duration::from_secs(self.host_timeout));
        Some(crate::driver::connect::start_libvirt(&spec.hosts))
    }

    /// [`Hosts::observe`], taking the libvirt reads [`Hosts::start_reading`] started for
    /// the same hosts.
    pub fn observe_started(&self, spec: &Spec, started: Option<Vec<Started>>) -> Vec<LiveHost> {
        crate::driver::libvirt::set_silence_limit(std::time::Duration::from_secs(self.host_timeout));
        let state = self.state();
        let twins = self.sim.then_some(state.as_path());
        let started = started.filter(|s| s.len() == spec.hosts.len() && twins.is_none());
        let hosts: Vec<(usize, &crate::spec::model::Host)> = spec.hosts.iter().enumerate().collect();
        observe_all(
            &hosts,
            |(_, h)| h.name.value.clone(),
            |&(i, h)| match &started {
                Some(started) => crate::driver::connect::observe_started(h, &started[i]),
                None => crate::driver::connect::observe(h, twins),
            },
        )
    }
}
