//! Observing hosts: every read a driver offers, gathered into one [`LiveHost`].
//!
//! A concern that cannot be reached is recorded with its reason and the others are still
//! read; hosts are observed concurrently, and one unreachable host does not hold up or
//! stop the rest.

use crate::driver::{DriverError, Gpus, Links, Virt};
use crate::live::{ConcernError, LiveGpu, LiveHost, LiveHugepages, LiveLink, LivePartitions};

/// The drivers of one host; each may have failed to open.
pub struct HostDrivers {
    pub virt: Result<Box<dyn Virt>, DriverError>,
    pub gpus: Result<Box<dyn Gpus>, DriverError>,
    pub links: Result<Box<dyn Links>, DriverError>,
    /// The subnet manager's partition file to read through the agent, where the host
    /// runs one ([`crate::spec::model::Host::partitions_path`]).
    pub partitions_file: Option<String>,
}

/// Hosts worked on at once; each blocks on its own libvirt connection and agent.
const HOSTS_IN_PARALLEL: usize = 16;

/// Reads everything the drivers can tell about one host. libvirt and the agent answer
/// independently (a libvirtd socket, an agent process), so they are read at once: the
/// host costs the slower of the two, not their sum.
pub fn observe(name: &str, drivers: HostDrivers) -> LiveHost {
    let HostDrivers { virt, gpus, links, partitions_file } = drivers;
    let (mut live, mut errors, (agent, agent_errors)) = std::thread::scope(|s| {
        let libvirt = s.spawn(move || read_libvirt(name, virt));
        let agent = read_agent(gpus, links, partitions_file);
        let (live, errors) = libvirt.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (live, errors, agent)
    });
    let (gpus, links, hugepages, partitions) = agent;
    (live.gpus, live.links, live.hugepages, live.partitions) = (gpus, links, hugepages, partitions);
    errors.extend(agent_errors);
    // The first error of a concern says why; repeats of it say nothing more.
    errors.dedup();
    live.errors = errors;
    live
}

/// The libvirt concern: the host, its devices, domains, networks and pools.
fn read_libvirt(name: &str, virt: Result<Box<dyn Virt>, DriverError>) -> (LiveHost, Vec<ConcernError>) {
    let mut live = LiveHost { name: name.to_string(), ..LiveHost::default() };
    let mut errors = Vec::new();
    match virt {
        Ok(mut v) => {
            keep(&mut errors, "libvirt", v.host_info().map(|i| live.info = Some(i)));
            keep(&mut errors, "libvirt", v.devices().map(|d| live.devices = d));
            keep(&mut errors, "libvirt", v.domains().map(|d| live.domains = d));
            keep(&mut errors, "libvirt", v.networks().map(|n| live.networks = n));
            keep(&mut errors, "libvirt", v.pools().map(|p| live.pools = p));
        }
        Err(e) => errors.push(ConcernError { concern: "libvirt".into(), error: e }),
    }
    (live, errors)
}

/// What the agent reads (GPUs through NVML; links and hugepages through netlink), and
/// the errors of those concerns, NVML's first.
type AgentRead = ((Vec<LiveGpu>, Vec<LiveLink>, Vec<LiveHugepages>, Option<LivePartitions>), Vec<ConcernError>);

fn read_agent(
    gpus: Result<Box<dyn Gpus>, DriverError>,
    links: Result<Box<dyn Links>, DriverError>,
    partitions_file: Option<String>,
) -> AgentRead {
    let mut errors = Vec::new();
    let (mut live_gpus, mut live_links, mut hugepages) = (Vec::new(), Vec::new(), Vec::new());
    let mut partitions = None;
    match gpus {
        Ok(mut g) => keep(&mut errors, "nvml", g.gpus().map(|g| live_gpus = g)),
        Err(e) => errors.push(ConcernError { concern: "nvml".into(), error: e }),
    }
    match links {
        Ok(mut l) => {
            keep(&mut errors, "netlink", l.links().map(|l| live_links = l));
            keep(&mut errors, "netlink", l.hugepages().map(|h| hugepages = h));
            if let Some(path) = partitions_file {
                let read = l.read_partitions(&path).map(|content| partitions = Some(LivePartitions { path, content }));
                keep(&mut errors, "subnet-manager", read);
            }
        }
        Err(e) => errors.push(ConcernError { concern: "netlink".into(), error: e }),
    }
    ((live_gpus, live_links, hugepages, partitions), errors)
}

fn keep(errors: &mut Vec<ConcernError>, concern: &str, result: Result<(), DriverError>) {
    if let Err(e) = result {
        errors.push(ConcernError { concern: concern.to_string(), error: e });
    }
}

/// Observes many hosts concurrently ([`on_hosts`]); `open` connects one host's drivers
/// (it may block: ssh, a remote libvirtd); results come back in the order of `hosts`.
pub fn observe_all<H: Sync>(
    hosts: &[H],
    name: impl Fn(&H) -> String + Sync,
    open: impl Fn(&H) -> HostDrivers + Sync,
) -> Vec<LiveHost> {
    on_hosts(hosts, |h| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| observe(&name(h), open(h)))).unwrap_or_else(|_| {
            LiveHost {
                name: name(h),
                errors: vec![ConcernError {
                    concern: "fabrik".into(),
                    error: DriverError::new(crate::driver::ErrorKind::Failed, "reading this host crashed"),
                }],
                ..LiveHost::default()
            }
        })
    })
}

/// Runs `f` on every host, up to [`HOSTS_IN_PARALLEL`] at once: each worker takes the next
/// host as soon as it finishes one, so a slow host holds up only its own worker. Results
/// come back in the order of `hosts`.
pub fn on_hosts<H: Sync, T: Send>(hosts: &[H], f: impl Fn(&H) -> T + Sync) -> Vec<T> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..hosts.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..HOSTS_IN_PARALLEL.min(hosts.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(h) = hosts.get(i) else { break };
                    let out = f(h);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(out);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner()).into_iter().flatten().collect()
}
