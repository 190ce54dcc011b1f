//! Coordination of several `fabrik watch` instances of one factory (issue 18): which one
//! may act (leader election) and the fencing token it acts under (the epoch).
//!
//! - [`local::Local`]: the default, one watcher; always the leader, no epoch (the local
//!   lock file and the hosts' locks keep applies apart, as before).
//! - [`etcd::Etcd`]: `--coordination etcd://h:p[,h:p]/prefix`. Candidates race to create
//!   the leader key `<prefix>/leader` bound to their lease; the winner leads while it
//!   renews the lease; the epoch is the leader key's create revision, which etcd makes
//!   larger at each hand-over, so hosts can refuse an older leader ([`crate::lockfile`]).
//!
//! Pure parsing ([`Url`]) is here; the I/O lives in `etcd.rs`.

pub mod etcd;
pub mod fence;
pub mod local;

use std::time::Duration;

use serde::Serialize;

/// The lease's TTL when none is given.
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(5);

/// What this instance may do now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "kebab-case")]
pub enum Role {
    /// Plans and applies, under `epoch` (`None`: local coordination, no fencing token).
    Leader { epoch: Option<u64> },
    /// Another instance leads (`leader` names it when known): validate, do not act.
    Standby { leader: Option<String> },
    /// The coordination service cannot be reached: nobody here acts until it answers.
    Unreachable { error: String },
}

impl Role {
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }

    pub fn epoch(&self) -> Option<u64> {
        match self {
            Role::Leader { epoch } => *epoch,
            _ => None,
        }
    }

    /// `leader`, `standby` or `unreachable`.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Leader { .. } => "leader",
            Role::Standby { .. } => "standby",
            Role::Unreachable { .. } => "unreachable",
        }
    }
}

/// What `status.json` (and so `fabrik status`, `/metrics`) says about coordination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CoordStatus {
    /// `local` or `etcd://…`.
    pub backend: String,
    /// `leader`, `standby` or `unreachable`.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Who leads, when another instance does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CoordStatus {
    pub fn of(c: &dyn Coordinator) -> CoordStatus {
        let role = c.role();
        let (leader, error) = match &role {
            Role::Standby { leader } => (leader.clone(), None),
            Role::Unreachable { error } => (None, Some(error.clone())),
            Role::Leader { .. } => (None, None),
        };
        CoordStatus { backend: c.describe(), role: role.name().into(), epoch: role.epoch(), leader, error }
    }
}

/// A coordination backend, shared by the watch loop and its tasks.
pub trait Coordinator: Send + Sync {
    /// The role now. A leader whose lease may have run out (its last renewal is older
    /// than the TTL, e.g. after the process was stopped) is no longer reported leader,
    /// even before the renewal task has noticed.
    fn role(&self) -> Role;
    /// Changes of [`Coordinator::role`], as the renewal task sees them.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<Role>;
    /// A host refused this leader's epoch: a newer leader has acted. Give up the
    /// leadership now (the next election decides again).
    fn fenced(&self, why: &str);
    /// Records the commit the leader has applied, for any instance's `fabrik status`.
    fn record_applied(&self, commit: &str);
    /// `local` or `etcd://…` for status lines.
    fn describe(&self) -> String;
    /// The etcd endpoints and prefix, for the shared apply lock; `None` when local.
    fn shared(&self) -> Option<(Vec<String>, String)> {
        None
    }
    /// The leader publishes its status (`status.json`'s document) for
    /// `fabrik status --coordination …` on any machine.
    fn publish_status(&self, _status: &serde_json::Value) {}
    /// Approvals given through `fabrik approve --coordination …`, as (id, by), read by
    /// the leader; none when local.
    fn shared_approvals(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Takes the shared apply lock for a leader's pass (nothing to take when local).
pub async fn begin_apply(c: &dyn Coordinator, wait: Duration) -> Result<Option<etcd::ApplyLease>, String> {
    let Some((endpoints, prefix)) = c.shared() else { return Ok(None) };
    let epoch = c.role().epoch().map(|e| format!(", epoch {e}")).unwrap_or_default();
    let who = format!("fabrik watch {} (leader{epoch})", instance_name());
    etcd::ApplyLease::take(&endpoints, &prefix, &who, wait).await.map(Some)
}

/// Cancels `token` as soon as `coord` no longer says this instance leads (checked
/// every 50 ms and at each role change); abort the returned task when the pass ends.
pub fn guard(
    coord: std::sync::Arc<dyn Coordinator>,
    token: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut roles = coord.subscribe();
    tokio::spawn(async move {
        loop {
            if !coord.role().is_leader() {
                token.cancel();
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = roles.changed() => {}
            }
        }
    })
}

/// A parsed `--coordination` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Url {
    Local,
    Etcd { endpoints: Vec<String>, prefix: String },
}

/// Why a `--coordination` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--coordination `{value}`: {why}; expected `local` or `etcd://HOST:PORT[,HOST:PORT…]/PREFIX`")]
pub struct UrlError {
    pub value: String,
    pub why: String,
}

impl std::str::FromStr for Url {
    type Err = UrlError;

    fn from_str(value: &str) -> Result<Url, UrlError> {
        let err = |why: &str| UrlError { value: value.to_string(), why: why.to_string() };
        if value == "local" {
            return Ok(Url::Local);
        }
        let Some(rest) = value.strip_prefix("etcd://") else {
            return Err(err("unknown scheme"));
        };
        let (hosts, prefix) = rest.split_once('/').ok_or_else(|| err("no /PREFIX after the endpoints"))?;
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(err("an empty prefix (watchers of different factories would elect one leader)"));
        }
        let mut endpoints = Vec::new();
        for h in hosts.split(',') {
            let (host, port) = h.rsplit_once(':').ok_or_else(|| err(&format!("endpoint `{h}` has no :PORT")))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(err(&format!("endpoint `{h}` is not HOST:PORT")));
            }
            endpoints.push(format!("http://{h}"));
        }
        Ok(Url::Etcd { endpoints, prefix: format!("/{}", prefix.trim_start_matches('/')) })
    }
}

/// This instance's name in the election: `host:pid`.
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{}:{}", if host.is_empty() { "unknown" } else { &host }, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_endpoints_and_a_rooted_prefix() {
        assert_eq!("local".parse::<Url>().unwrap(), Url::Local);
        assert_eq!(
            "etcd://10.0.0.1:2379,10.0.0.2:2379/fabrik/ai".parse::<Url>().unwrap(),
            Url::Etcd {
                endpoints: vec!["http://10.0.0.1:2379".into(), "http://10.0.0.2:2379".into()],
                prefix: "/fabrik/ai".into()
            }
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (v, why) in [
            ("zk://h:1/p", "unknown scheme"),
            ("etcd://h:1", "no /PREFIX"),
            ("etcd://h:1/", "empty prefix"),
            ("etcd://h/p", "has no :PORT"),
            ("etcd://h:x/p", "not HOST:PORT"),
        ] {
            let e = v.parse::<Url>().unwrap_err().to_string();
            assert!(e.contains(why), "{v}: {e}");
        }
    }
}
