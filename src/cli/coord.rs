//! The `--coordination` flags of `fabrik watch` (issue 18) and starting the backend.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::coord::{Coordinator, Url, etcd::Etcd, local::Local};

#[derive(clap::Args, Debug, Clone)]
pub struct CoordArgs {
    /// Who may act when several watchers run: `local` (one watcher, the default) or
    /// `etcd://HOST:PORT[,HOST:PORT…]/PREFIX` (leader election and fencing through etcd;
    /// every watcher of the factory names the same prefix).
    #[arg(long, value_name = "URL", env = "FABRIK_COORDINATION", default_value = "local")]
    pub coordination: Url,
    /// The leader's etcd lease: a leader that cannot renew it for this long stops
    /// acting, and a standby takes over after about this long.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::coord::LEASE_TTL_DEFAULT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_ttl: u64,
}

impl CoordArgs {
    /// Starts the backend on the current runtime; the task (if any) ends after `cancel`.
    pub fn start(&self, cancel: CancellationToken) -> (Arc<dyn Coordinator>, Option<tokio::task::JoinHandle<()>>) {
        match &self.coordination {
            Url::Local => (Arc::new(Local::new()), None),
            Url::Etcd { endpoints, prefix } => {
                let ttl = Duration::from_secs(self.lease_ttl);
                let (etcd, task) =
                    Etcd::start(endpoints.clone(), prefix.clone(), ttl, crate::coord::instance_name(), cancel);
                (Arc::new(etcd), Some(task))
            }
        }
    }
}

/// `fabrik apply --coordination etcd://…`: the factory's apply lock in etcd, taken
/// before the hosts' locks and let go when dropped (on the CLI's runtime).
pub struct HeldApplyLock {
    lease: Option<crate::coord::etcd::ApplyLease>,
    runtime: tokio::runtime::Handle,
}

impl HeldApplyLock {
    /// Takes the lock for this `fabrik apply`, waiting up to `wait`; refused naming the
    /// holder (the leading watcher, or another operator's apply).
    pub fn take(url: &Url, runtime: &tokio::runtime::Runtime, wait: Duration) -> Result<HeldApplyLock, String> {
        let lease = match url {
            Url::Local => None,
            Url::Etcd { endpoints, prefix } => {
                let me = crate::lockfile::Holder::me();
                let who = format!("fabrik apply by {} on {} (pid {})", me.user, me.host, me.pid);
                Some(runtime.block_on(crate::coord::etcd::ApplyLease::take(endpoints, prefix, &who, wait))?)
            }
        };
        Ok(HeldApplyLock { lease, runtime: runtime.handle().clone() })
    }
}

impl Drop for HeldApplyLock {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.runtime.block_on(lease.release());
        }
    }
}
