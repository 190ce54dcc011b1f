//! The hosts' apply locks, held by their agents: applies from other checkouts of the
//! factory (another operator, CI) take them too. The local lock file is [`crate::lockfile`].

use std::time::{Duration, Instant};

use crate::driver::agent::{AgentClient, LOCKED};
pub use crate::lockfile::{ApplyLock, Holder, LockError, acquire, acquire_file, host_lock_file};
use crate::spec::model::Host;

/// How long to wait before asking the hosts again when one was busy: each round starts
/// an agent per host (an ssh connection), so not as often as the local lock is tried.
const HOST_LOCK_RETRY: Duration = Duration::from_secs(1);

/// The apply locks on the hosts, each held by that host's agent for as long as this
/// value lives.
#[must_use]
pub struct HostLocks {
    _agents: Vec<AgentClient>,
    /// Hosts whose lock could not be taken, and why: their agent is unreachable or too
    /// old to know the call. Their resources are planned and applied without it.
    pub unlocked: Vec<(String, String)>,
}

/// How one host's lock went.
enum Taken {
    Held(Box<AgentClient>),
    /// Another apply holds it: the message names the holder.
    Busy(String),
    /// The agent could not be asked.
    Unlocked(String),
}

/// Asks the agent of every host that has one to take `factory`'s lock there for this
/// process. When another apply holds a host's lock, every lock taken is let go (so that
/// two applies each holding some hosts never wait on each other) and all are asked again
/// after [`HOST_LOCK_RETRY`], until `wait` has passed; then it fails, naming each busy
/// host and its holder.
pub fn lock_hosts(factory: &str, hosts: &[Host], wait: Duration) -> Result<HostLocks, String> {
    let with_agent: Vec<(&str, &str)> =
        hosts.iter().filter_map(|h| Some((h.name.value.as_str(), h.agent.as_ref()?.value.as_str()))).collect();
    let me = Holder::me();
    let deadline = Instant::now() + wait;
    loop {
        let mut locks = HostLocks { _agents: Vec::new(), unlocked: Vec::new() };
        let mut busy = Vec::new();
        let taken =
            crate::live::observe::on_hosts(&with_agent, |&(host, command)| take_host(factory, host, command, &me));
        for (&(host, _), taken) in with_agent.iter().zip(taken) {
            let host = host.to_string();
            match taken {
                Taken::Held(agent) => locks._agents.push(*agent),
                Taken::Busy(message) => busy.push(format!("host `{host}`: {message}")),
                Taken::Unlocked(why) => locks.unlocked.push((host, why)),
            }
        }
        if busy.is_empty() {
            return Ok(locks);
        }
        drop(locks);
        if Instant::now() + HOST_LOCK_RETRY > deadline {
            return Err(busy.join("\n"));
        }
        std::thread::sleep(HOST_LOCK_RETRY);
    }
}

fn take_host(factory: &str, host: &str, command: &str, me: &Holder) -> Taken {
    let mut agent = match AgentClient::spawn(command) {
        Ok(a) => a,
        Err(e) => return Taken::Unlocked(e.message),
    };
    match agent.lock(factory, host, me) {
        Ok(()) => Taken::Held(Box::new(agent)),
        Err(e) if e.code.as_deref() == Some(LOCKED) => Taken::Busy(e.message),
        Err(e) => Taken::Unlocked(e.message),
    }
}
