//! Leader election and shared state through etcd (`etcd-client`, gRPC).
//!
//! One background task per watcher. It repeats: read `<prefix>/leader`; when someone
//! holds it, be a standby and look again shortly; when it is free, grant a lease of the
//! TTL and create the key bound to it in one transaction (`create_revision == 0`). The
//! winner is the leader, under the epoch = that key's create revision (etcd's revision
//! counter only grows, so each hand-over gives a larger epoch). The leader renews the
//! lease every TTL/3; it stops being leader as soon as a renewal fails or answers that
//! the lease is gone, or its last good renewal is older than the TTL (measured on the
//! monotonic clock, which runs on while the process is stopped), whichever is first.
//! Losing etcd makes every instance `unreachable`; the task retries with backoff.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Coordinator, Role};

/// Commands from the watch loop to the election task.
enum Cmd {
    Fenced,
    Applied(String),
    Status(String),
}

struct Shared {
    endpoints: Vec<String>,
    prefix: String,
    name: String,
    label: String,
    ttl: Duration,
    tx: tokio::sync::watch::Sender<Role>,
    /// While leader: until when the lease is surely ours (last renewal sent + TTL).
    valid_until: Mutex<Option<Instant>>,
    /// `<prefix>/approvals/<id>` as the leader last read them: (id, by).
    approvals: Mutex<Vec<(String, String)>>,
}

impl Shared {
    fn set(&self, role: Role, valid_until: Option<Instant>) {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = valid_until;
        self.tx.send_if_modified(|r| {
            if *r == role {
                false
            } else {
                *r = role;
                true
            }
        });
    }
}

/// The etcd coordinator; its task ends when the token given to [`Etcd::start`] is
/// cancelled (a leader then gives its key up so a standby need not wait out the TTL).
pub struct Etcd {
    shared: Arc<Shared>,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl Etcd {
    /// Starts the election task on the current tokio runtime. `name` is this instance's
    /// name as others see it (the leader key's value).
    /// The returned task ends after `cancel` (a leader's resignation included).
    pub fn start(
        endpoints: Vec<String>,
        prefix: String,
        ttl: Duration,
        name: String,
        cancel: CancellationToken,
    ) -> (Etcd, tokio::task::JoinHandle<()>) {
        let label = format!(
            "etcd://{}{prefix}",
            endpoints.iter().map(|e| e.trim_start_matches("http://")).collect::<Vec<_>>().join(",")
        );
        let shared = Arc::new(Shared {
            endpoints: endpoints.clone(),
            prefix: prefix.clone(),
            name,
            label,
            ttl: ttl.max(Duration::from_secs(1)),
            tx: tokio::sync::watch::Sender::new(Role::Unreachable { error: "not connected yet".into() }),
            valid_until: Mutex::new(None),
            approvals: Mutex::new(Vec::new()),
        });
        let (cmds, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(elect(shared.clone(), endpoints, prefix, rx, cancel));
        (Etcd { shared, cmds }, task)
    }
}

impl Coordinator for Etcd {
    fn role(&self) -> Role {
        let role = self.shared.tx.borrow().clone();
        if role.is_leader() {
            let until = *self.shared.valid_until.lock().unwrap_or_else(|e| e.into_inner());
            if until.is_none_or(|u| Instant::now() >= u) {
                return Role::Standby { leader: None };
            }
        }
        role
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<Role> {
        self.shared.tx.subscribe()
    }
    fn fenced(&self, why: &str) {
        let _ = why;
        let _ = self.cmds.send(Cmd::Fenced);
    }
    fn record_applied(&self, commit: &str) {
        let _ = self.cmds.send(Cmd::Applied(commit.to_string()));
    }
    fn describe(&self) -> String {
        self.shared.label.clone()
    }
    fn shared(&self) -> Option<(Vec<String>, String)> {
        Some((self.shared.endpoints.clone(), self.shared.prefix.clone()))
    }
    fn publish_status(&self, status: &serde_json::Value) {
        let _ = self.cmds.send(Cmd::Status(status.to_string()));
    }
    fn shared_approvals(&self) -> Vec<(String, String)> {
        self.shared.approvals.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

type Res<T> = Result<T, etcd_client::Error>;

/// How often a standby looks at the leader key.
fn standby_poll(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_millis(500))
}

async fn elect(
    shared: Arc<Shared>,
    endpoints: Vec<String>,
    prefix: String,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    cancel: CancellationToken,
) {
    const BACKOFF_MAX: Duration = Duration::from_secs(5);
    let mut backoff = Duration::from_millis(200);
    loop {
        // Not raced against `cancel`: a leader must be let finish its resignation.
        let outcome = session(&shared, &endpoints, &prefix, &mut cmds, &cancel, &mut backoff).await;
        if cancel.is_cancelled() {
            shared.set(Role::Standby { leader: None }, None);
            return;
        }
        if let Err(e) = outcome {
            shared.set(Role::Unreachable { error: format!("etcd at {}: {e}", shared.label) }, None);
        }
        let jitter = Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64 / 4));
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: campaign rounds until etcd fails (an error) or the task is cancelled.
async fn session(
    shared: &Shared,
    endpoints: &[String],
    prefix: &str,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
    cancel: &CancellationToken,
    backoff: &mut Duration,
) -> Res<()> {
    let ttl = shared.ttl;
    let options = ConnectOptions::new().with_connect_timeout(ttl).with_timeout(ttl);
    let mut client = tokio::select! {
        c = Client::connect(endpoints, Some(options)) => c?,
        _ = cancel.cancelled() => return Ok(()),
    };
    let key = format!("{prefix}/leader");
    loop {
        let got = client.get(key.as_str(), None).await?;
        *backoff = Duration::from_millis(200);
        if let Some(kv) = got.kvs().first() {
            let leader = kv.value_str().ok().map(String::from);
            shared.set(Role::Standby { leader }, None);
            // Commands make no sense here (a standby applies nothing): drop them.
            while cmds.try_recv().is_ok() {}
            tokio::select! {
                _ = tokio::time::sleep(standby_poll(ttl)) => {}
                _ = cancel.cancelled() => return Ok(()),
            }
            continue;
        }
        if cancel.is_cancelled() {
            return Ok(());
        }
        let lease = client.lease_grant(ttl.as_secs() as i64, None).await?.id();
        let sent = Instant::now();
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), shared.name.as_str(), Some(PutOptions::new().with_lease(lease)))]);
        let won = client.txn(txn).await?;
        if !won.succeeded() {
            let _ = client.lease_revoke(lease).await;
            continue;
        }
        let epoch = won.header().map(|h| h.revision()).unwrap_or_default() as u64;
        shared.set(Role::Leader { epoch: Some(epoch) }, Some(sent + ttl));
        lead(shared, &mut client, prefix, &key, lease, epoch, cmds, cancel).await?;
        if cancel.is_cancelled() {
            return Ok(());
        }
    }
}

/// Renews the lease while leading; returns Ok when the leadership ended (lease lost,
/// fenced, cancelled), an error when etcd failed.
#[allow(clippy::too_many_arguments)]
async fn lead(
    shared: &Shared,
    client: &mut Client,
    prefix: &str,
    key: &str,
    lease: i64,
    epoch: u64,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
    cancel: &CancellationToken,
) -> Res<()> {
    let ttl = shared.ttl;
    let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
    // Only while the key is still the one this leader created.
    let ours = || Compare::create_revision(key, CompareOp::Equal, epoch as i64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {
                let sent = Instant::now();
                let renewed = async {
                    keeper.keep_alive().await?;
                    answers.message().await
                };
                match tokio::time::timeout(ttl / 2, renewed).await {
                    Ok(Ok(Some(a))) if a.ttl() > 0 && Instant::now() < sent + ttl => {
                        shared.set(Role::Leader { epoch: Some(epoch) }, Some(sent + ttl));
                        let approvals = approvals(client, prefix).await?;
                        *shared.approvals.lock().unwrap_or_else(|e| e.into_inner()) = approvals;
                    }
                    Ok(Ok(_)) => {
                        // The lease ran out (the process was stopped, or etcd was away).
                        shared.set(Role::Standby { leader: None }, None);
                        return Ok(());
                    }
                    Ok(Err(e)) => {
                        shared.set(Role::Unreachable { error: e.to_string() }, None);
                        return Err(e);
                    }
                    Err(_) => {
                        shared.set(Role::Unreachable { error: "etcd did not renew the lease in time".into() }, None);
                        let _ = tokio::time::timeout(ttl, client.lease_revoke(lease)).await;
                        return Err(etcd_client::Error::LeaseKeepAliveError("lease renewal timed out".into()));
                    }
                }
            }
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Applied(commit)) => {
                    let value = serde_json::json!({"commit": commit, "epoch": epoch, "by": shared.name}).to_string();
                    let txn = Txn::new().when([ours()]).and_then([TxnOp::put(format!("{prefix}/applied"), value, None)]);
                    client.txn(txn).await?;
                }
                Some(Cmd::Status(doc)) => {
                    let txn = Txn::new().when([ours()]).and_then([TxnOp::put(format!("{prefix}/status"), doc, None)]);
                    client.txn(txn).await?;
                }
                Some(Cmd::Fenced) => {
                    shared.set(Role::Standby { leader: None }, None);
                    let txn = Txn::new().when([ours()]).and_then([TxnOp::delete(key, None)]);
                    let _ = client.txn(txn).await;
                    let _ = client.lease_revoke(lease).await;
                    // Let another candidate win before standing again.
                    tokio::time::sleep(ttl).await;
                    return Ok(());
                }
                None => return Ok(()),
            },
            _ = cancel.cancelled() => {
                shared.set(Role::Standby { leader: None }, None);
                let txn = Txn::new().when([ours()]).and_then([TxnOp::delete(key, None)]);
                let _ = tokio::time::timeout(Duration::from_secs(1), client.txn(txn)).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
                return Ok(());
            }
        }
    }
}

/// `<prefix>/approvals/<id>`: (id, who approved).
async fn approvals(client: &mut Client, prefix: &str) -> Res<Vec<(String, String)>> {
    let dir = format!("{prefix}/approvals/");
    let got = client.get(dir.as_str(), Some(etcd_client::GetOptions::new().with_prefix())).await?;
    Ok(got
        .kvs()
        .iter()
        .filter_map(|kv| {
            let id = kv.key_str().ok()?.strip_prefix(dir.as_str())?.to_string();
            Some((id, kv.value_str().unwrap_or_default().to_string()))
        })
        .collect())
}

/// Connects for one command-line call (`status`, `approve`).
async fn connect_once(endpoints: &[String]) -> Res<Client> {
    let options =
        ConnectOptions::new().with_connect_timeout(Duration::from_secs(3)).with_timeout(Duration::from_secs(3));
    Client::connect(endpoints, Some(options)).await
}

/// The leader's published status document (`<prefix>/status`), if any.
pub async fn read_status(endpoints: &[String], prefix: &str) -> Res<Option<serde_json::Value>> {
    let mut client = connect_once(endpoints).await?;
    let got = client.get(format!("{prefix}/status"), None).await?;
    Ok(got.kvs().first().and_then(|kv| serde_json::from_slice(kv.value()).ok()))
}

/// Records an approval for the leader to carry out (`<prefix>/approvals/<id>`).
pub async fn approve(endpoints: &[String], prefix: &str, id: &str, by: &str) -> Res<()> {
    let mut client = connect_once(endpoints).await?;
    client.put(format!("{prefix}/approvals/{id}"), by, None).await?;
    Ok(())
}

/// The last applied commit as the leader recorded it in etcd (`<prefix>/applied`), for
/// `fabrik status --coordination`: `(commit, epoch, by)`.
pub async fn read_shared(endpoints: &[String], prefix: &str) -> Res<(Option<serde_json::Value>, Option<String>)> {
    let options =
        ConnectOptions::new().with_connect_timeout(Duration::from_secs(3)).with_timeout(Duration::from_secs(3));
    let mut client = Client::connect(endpoints, Some(options)).await?;
    let applied = client.get(format!("{prefix}/applied"), None).await?;
    let applied = applied.kvs().first().and_then(|kv| serde_json::from_slice(kv.value()).ok());
    let leader = client.get(format!("{prefix}/leader"), None).await?;
    let leader = leader.kvs().first().and_then(|kv| kv.value_str().ok().map(String::from));
    Ok((applied, leader))
}

/// The factory's apply lock in etcd (`<prefix>/apply-lock`): held by the leading watcher
/// for each pass and by a `fabrik apply --coordination …`, so one waits for (or is
/// refused by) the other whichever machine it runs on. Bound to a lease of its own, kept
/// alive while held: a holder that dies frees it after the TTL.
pub struct ApplyLease {
    client: Client,
    key: String,
    lease: i64,
    revision: i64,
    keeper: tokio::task::JoinHandle<()>,
}

/// The lease TTL of the apply lock.
const APPLY_LEASE_TTL: i64 = 5;

impl ApplyLease {
    /// Takes the lock for `who` (a line naming the holder, shown to whoever waits),
    /// waiting up to `wait`; refused with the holder's line.
    pub async fn take(endpoints: &[String], prefix: &str, who: &str, wait: Duration) -> Result<ApplyLease, String> {
        let options =
            ConnectOptions::new().with_connect_timeout(Duration::from_secs(3)).with_timeout(Duration::from_secs(3));
        let fail = |e: etcd_client::Error| format!("the apply lock in etcd ({prefix}/apply-lock) cannot be used: {e}");
        let mut client = Client::connect(endpoints, Some(options)).await.map_err(fail)?;
        let key = format!("{prefix}/apply-lock");
        let deadline = tokio::time::Instant::now() + wait;
        let lease = client.lease_grant(APPLY_LEASE_TTL, None).await.map_err(fail)?.id();
        let (mut k, mut answers) = client.lease_keep_alive(lease).await.map_err(fail)?;
        loop {
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), who, Some(PutOptions::new().with_lease(lease)))])
                .or_else([TxnOp::get(key.as_str(), None)]);
            // The lease stays alive while waiting.
            k.keep_alive().await.map_err(fail)?;
            let _ = answers.message().await.map_err(fail)?;
            let r = client.txn(txn).await.map_err(fail)?;
            if r.succeeded() {
                let revision = r.header().map(|h| h.revision()).unwrap_or_default();
                let keeper = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(APPLY_LEASE_TTL as u64) / 3).await;
                        if k.keep_alive().await.is_err() || answers.message().await.is_err() {
                            return;
                        }
                    }
                });
                return Ok(ApplyLease { client, key, lease, revision, keeper });
            }
            let holder = r
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    etcd_client::TxnOpResponse::Get(g) => {
                        g.kvs().first().and_then(|kv| kv.value_str().ok().map(String::from))
                    }
                    _ => None,
                })
                .unwrap_or_else(|| "someone".into());
            if tokio::time::Instant::now() + Duration::from_millis(200) > deadline {
                let _ = client.lease_revoke(lease).await;
                return Err(format!(
                    "another apply holds the factory's apply lock in etcd ({key}): {holder}; wait for it, or pass \
                     --lock-wait SECONDS"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Lets the lock go at once (else it frees itself when the lease runs out).
    pub async fn release(mut self) {
        self.keeper.abort();
        let txn = Txn::new()
            .when([Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.revision)])
            .and_then([TxnOp::delete(self.key.as_str(), None)]);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.txn(txn)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.lease_revoke(self.lease)).await;
    }
}

impl Drop for ApplyLease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}
