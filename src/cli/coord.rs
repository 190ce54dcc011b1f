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

fn once<T>(f: impl std::future::Future<Output = T>) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    Ok(rt.block_on(f))
}

/// `fabrik status --coordination etcd://…`: the leader's published status, the same from
/// any machine. `None` for local coordination (the state directory is read instead).
pub fn shared_status(url: &Url) -> Option<Result<crate::watch::state::Status, String>> {
    let Url::Etcd { endpoints, prefix } = url else { return None };
    Some(match once(crate::coord::etcd::read_status(endpoints, prefix)) {
        Ok(Ok(Some(doc))) => {
            serde_json::from_value(doc).map_err(|e| format!("the status in etcd at {prefix}/status: {e}"))
        }
        Ok(Ok(None)) => Err(format!("no leader has published a status in etcd at {prefix}/status yet")),
        Ok(Err(e)) => Err(format!("etcd ({}): {e}", endpoints.join(","))),
        Err(e) => Err(e),
    })
}

/// `fabrik approve ID --coordination etcd://…`: records the approval in etcd, where the
/// leader (whichever instance it is now or later) reads it.
pub fn shared_approve(url: &Url, id: &str, by: &str) -> Option<Result<(), String>> {
    let Url::Etcd { endpoints, prefix } = url else { return None };
    Some(match once(crate::coord::etcd::approve(endpoints, prefix, id, by)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("etcd ({}): {e}", endpoints.join(","))),
        Err(e) => Err(e),
    })
}
