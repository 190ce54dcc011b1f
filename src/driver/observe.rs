//! Observing hosts: every read a driver offers, gathered into one [`LiveHost`].
//!
//! A concern that cannot be reached is recorded with its reason and the others are still
//! read; hosts are observed concurrently, and one unreachable host does not hold up or
//! stop the rest.

use crate::driver::{DriverError, Gpus, Links, Opened, Virt, VirtReads};
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
    observe_opening(name, move || virt, move || (gpus, links), partitions_file)
}

/// [`observe`], opening the drivers on the way: libvirt is read as soon as its connection
/// is open, whatever the agent's start (a process, an ssh session) still takes, and the
/// agent read as soon as it answers.
pub fn observe_opening(
    name: &str,
    open_virt: impl FnOnce() -> Opened<dyn Virt> + Send,
    open_agent: impl FnOnce() -> (Opened<dyn Gpus>, Opened<dyn Links>),
    partitions_file: Option<String>,
) -> LiveHost {
    std::thread::scope(|s| {
        let libvirt = s.spawn(move || read_libvirt(name, open_virt()));
        let (gpus, links) = open_agent();
        let agent = read_agent(gpus, links, partitions_file);
        let libvirt = libvirt.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        joined(libvirt, agent)
    })
}

/// [`observe_opening`] for a host whose libvirt concern is already being read
/// ([`start_libvirt`]): the agent opens and is read, then the libvirt read is waited for.
pub fn observe_started(
    libvirt: &Started,
    open_agent: impl FnOnce() -> (Opened<dyn Gpus>, Opened<dyn Links>),
    partitions_file: Option<String>,
) -> LiveHost {
    let (gpus, links) = open_agent();
    let agent = read_agent(gpus, links, partitions_file);
    joined(libvirt.wait(), agent)
}

/// One host's concerns in one [`LiveHost`]: libvirt's reads and the agent's.
fn joined((mut live, mut errors): LibvirtRead, (agent, agent_errors): AgentRead) -> LiveHost {
    let (gpus, links, hugepages, boot_id, partitions) = agent;
    (live.gpus, live.links, live.hugepages, live.partitions) = (gpus, links, hugepages, partitions);
    // libvirt gives a boot id only for a local URI; the agent runs on the host itself.
    if let Some(info) = &mut live.info
        && info.boot_id.is_none()
    {
        info.boot_id = boot_id;
    }
    errors.extend(agent_errors);
    // The first error of a concern says why; repeats of it say nothing more.
    errors.dedup();
    live.errors = errors;
    live
}

/// What the libvirt concern reads (the host, its devices, domains, networks and pools, in
/// a [`LiveHost`] otherwise empty), and its errors.
type LibvirtRead = (LiveHost, Vec<ConcernError>);

/// One host's libvirt concern, read on a thread of its own ([`start_libvirt`]).
pub struct Started {
    name: String,
    /// Taken by the first [`Started::wait`].
    read: std::sync::Mutex<Option<std::sync::mpsc::Receiver<LibvirtRead>>>,
}

impl Started {
    /// The host's libvirt read, once it is done (a read that crashed is recorded as such).
    fn wait(&self) -> LibvirtRead {
        let rx = self.read.lock().unwrap_or_else(|p| p.into_inner()).take();
        rx.and_then(|rx| rx.recv().ok()).unwrap_or_else(|| {
            let live = LiveHost { name: self.name.clone(), ..LiveHost::default() };
            let error = DriverError::new(crate::driver::ErrorKind::Failed, "reading this host's libvirt crashed");
            (live, vec![ConcernError { concern: "libvirt".into(), error }])
        })
    }
}

/// Starts reading the libvirt concern of every host in the background (each opened by
/// `open_virt`, up to [`HOSTS_IN_PARALLEL`] at once) and returns at once, one [`Started`]
/// per host in the order of `hosts`. A plan starts here as soon as its factory is decoded,
/// so the connections open and the reads run while the factory is still checked
/// ([`observe_started`] takes them). Only libvirt: an agent is a process fabrik starts on
/// the host, which must not happen for a factory that does not pass its checks.
pub fn start_libvirt<H: Send + Sync + 'static>(
    hosts: Vec<H>,
    name: impl Fn(&H) -> String + Send + Sync + 'static,
    open_virt: impl Fn(&H) -> Opened<dyn Virt> + Send + Sync + 'static,
) -> Vec<Started> {
    let (senders, started): (Vec<_>, Vec<_>) = hosts
        .iter()
        .map(|h| {
            let (tx, rx) = std::sync::mpsc::channel();
            (tx, Started { name: name(h), read: std::sync::Mutex::new(Some(rx)) })
        })
        .unzip();
    // Not scoped: a plan that stops early (a factory with errors) does not wait for a
    // host that does not answer; the thread ends with the process.
    std::thread::spawn(move || {
        let work: Vec<_> = hosts.into_iter().zip(senders).collect();
        on_hosts(&work, |(h, tx)| {
            // A read that panics drops its sender: `Started::wait` records the crash.
            if let Ok(read) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_libvirt(&name(h), open_virt(h))))
            {
                let _ = tx.send(read);
            }
        });
    });
    started
}

/// The libvirt concern: the host, its devices, domains, networks and pools, read at once
/// ([`Virt::read_all`]).
fn read_libvirt(name: &str, virt: Result<Box<dyn Virt>, DriverError>) -> LibvirtRead {
    let mut live = LiveHost { name: name.to_string(), ..LiveHost::default() };
    let mut errors = Vec::new();
    match virt {
        Ok(mut v) => {
            // Read at once where the driver can; the errors in this order whatever came first.
            let VirtReads { info, devices, domains, networks, pools } = v.read_all();
            keep(&mut errors, "libvirt", info.map(|i| live.info = Some(i)));
            keep(&mut errors, "libvirt", devices.map(|d| live.devices = d));
            keep(&mut errors, "libvirt", domains.map(|d| live.domains = d));
            keep(&mut errors, "libvirt", networks.map(|n| live.networks = n));
            keep(&mut errors, "libvirt", pools.map(|p| live.pools = p));
        }
        Err(e) => errors.push(ConcernError { concern: "libvirt".into(), error: e }),
    }
    (live, errors)
}

/// What the agent reads (GPUs through NVML; links and hugepages through netlink; the
/// boot id; the subnet manager's partition file), and the errors of those concerns,
/// NVML's first.
type AgentRead =
    ((Vec<LiveGpu>, Vec<LiveLink>, Vec<LiveHugepages>, Option<String>, Option<LivePartitions>), Vec<ConcernError>);

fn read_agent(
    gpus: Result<Box<dyn Gpus>, DriverError>,
    links: Result<Box<dyn Links>, DriverError>,
    partitions_file: Option<String>,
) -> AgentRead {
    let mut errors = Vec::new();
    let (mut live_gpus, mut live_links, mut hugepages, mut boot_id) = (Vec::new(), Vec::new(), Vec::new(), None);
    let mut partitions = None;
    match gpus {
        Ok(mut g) => keep(&mut errors, "nvml", g.gpus().map(|g| live_gpus = g)),
        Err(e) => errors.push(ConcernError { concern: "nvml".into(), error: e }),
    }
    match links {
        Ok(mut l) => {
            keep(&mut errors, "netlink", l.links().map(|l| live_links = l));
            keep(&mut errors, "netlink", l.hugepages().map(|h| hugepages = h));
            // Not a concern of its own: an agent without the call leaves reboots unseen
            // on that host (as before), it does not make the host unreadable.
            boot_id = l.boot_id().ok().flatten();
            if let Some(path) = partitions_file {
                let read = l.read_partitions(&path).map(|content| partitions = Some(LivePartitions { path, content }));
                keep(&mut errors, "subnet-manager", read);
            }
        }
        Err(e) => errors.push(ConcernError { concern: "netlink".into(), error: e }),
    }
    ((live_gpus, live_links, hugepages, boot_id, partitions), errors)
}

fn keep(errors: &mut Vec<ConcernError>, concern: &str, result: Result<(), DriverError>) {
    if let Err(e) = result {
        errors.push(ConcernError { concern: concern.to_string(), error: e });
    }
}

/// Observes many hosts concurrently ([`on_hosts`]); `observe_one` opens one host's
/// drivers and reads it ([`observe`], [`observe_opening`]; it may block: ssh, a remote
/// libvirtd); results come back in the order of `hosts`. A host whose reading panics is
/// recorded as failed, the others still read.
pub fn observe_all<H: Sync>(
    hosts: &[H],
    name: impl Fn(&H) -> String + Sync,
    observe_one: impl Fn(&H) -> LiveHost + Sync,
) -> Vec<LiveHost> {
    on_hosts(hosts, |h| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| observe_one(h))).unwrap_or_else(|_| LiveHost {
            name: name(h),
            errors: vec![ConcernError {
                concern: "fabrik".into(),
                error: DriverError::new(crate::driver::ErrorKind::Failed, "reading this host crashed"),
            }],
            ..LiveHost::default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::ib::Guid;
    use crate::driver::libvirt::LibvirtDriver;
    use crate::driver::{LinkSpec, Result};
    use crate::spec::types::PageSize;

    /// A host's links as an agent reads them: nothing but its boot id.
    struct BootOnly(&'static str);

    impl Links for BootOnly {
        fn links(&mut self) -> Result<Vec<LiveLink>> {
            Ok(Vec::new())
        }
        fn hugepages(&mut self) -> Result<Vec<LiveHugepages>> {
            Ok(Vec::new())
        }
        fn create_link(&mut self, _: &LinkSpec) -> Result<()> {
            Ok(())
        }
        fn delete_link(&mut self, _: &str) -> Result<()> {
            Ok(())
        }
        fn set_link(&mut self, _: &str, _: Option<u32>, _: Option<bool>, _: Option<Option<String>>) -> Result<()> {
            Ok(())
        }
        fn add_fdb(&mut self, _: &str, _: std::net::IpAddr) -> Result<()> {
            Ok(())
        }
        fn del_fdb(&mut self, _: &str, _: std::net::IpAddr) -> Result<()> {
            Ok(())
        }
        fn set_sriov_vfs(&mut self, _: &str, _: u32) -> Result<()> {
            Ok(())
        }
        fn set_hugepages(&mut self, _: u32, _: PageSize, _: u64) -> Result<()> {
            Ok(())
        }
        fn set_vf_guids(&mut self, _: &str, _: u32, _: Guid, _: Guid) -> Result<()> {
            Ok(())
        }
        fn read_partitions(&mut self, _: &str) -> Result<Option<String>> {
            Ok(None)
        }
        fn write_partitions(&mut self, _: &str, _: &str, _: &str) -> Result<()> {
            Ok(())
        }
        fn reload_subnet_manager(&mut self) -> Result<()> {
            Ok(())
        }
        fn boot_id(&mut self) -> Result<Option<String>> {
            Ok(Some(self.0.to_string()))
        }
    }

    fn drivers(links: Box<dyn Links>) -> HostDrivers {
        // libvirt's test driver: a URI that is not this machine's, so libvirt gives no
        // boot id, as for `qemu+ssh://`.
        let virt: Box<dyn Virt> = Box::new(LibvirtDriver::connect("test:///default").expect("the test driver opens"));
        let gpus = Err(DriverError::new(crate::driver::ErrorKind::Unreachable, "no NVML here"));
        HostDrivers { virt: Ok(virt), gpus, links: Ok(links), partitions_file: None }
    }

    #[test]
    fn a_remote_hosts_boot_id_comes_from_its_agent() {
        let live = observe("far", drivers(Box::new(BootOnly("8d3e0000-0000-4000-8000-000000000001"))));
        let info = live.info.expect("libvirt read");
        assert_eq!(info.boot_id.as_deref(), Some("8d3e0000-0000-4000-8000-000000000001"));
        let unavailable =
            crate::driver::agent::Unavailable::new(DriverError::new(crate::driver::ErrorKind::Unreachable, "no agent"));
        let live = observe("far", drivers(Box::new(unavailable)));
        assert_eq!(live.info.expect("libvirt read").boot_id, None, "no agent, no boot id: no reboot is claimed");
    }

    #[test]
    fn a_libvirt_read_started_early_is_joined_with_the_agent_and_a_crash_is_recorded() {
        let started = start_libvirt(
            vec!["ok", "crashes"],
            |h: &&str| h.to_string(),
            |h: &&str| match *h {
                "ok" => Ok(Box::new(LibvirtDriver::connect("test:///default").expect("the test driver opens"))
                    as Box<dyn Virt>),
                _ => panic!("opening crashed"),
            },
        );
        let agent = || {
            let boot: Box<dyn Links> = Box::new(BootOnly("8d3e0000-0000-4000-8000-000000000002"));
            (Err(DriverError::new(crate::driver::ErrorKind::Unreachable, "no NVML here")), Ok(boot))
        };
        let ok = observe_started(&started[0], agent, None);
        assert_eq!(ok.name, "ok");
        assert_eq!(ok.info.expect("libvirt read").boot_id.as_deref(), Some("8d3e0000-0000-4000-8000-000000000002"));
        assert_eq!(ok.errors.iter().map(|e| e.concern.as_str()).collect::<Vec<_>>(), ["nvml"]);
        let crashed = observe_started(&started[1], agent, None);
        assert_eq!(crashed.name, "crashes");
        assert!(crashed.info.is_none());
        let libvirt: Vec<_> = crashed.errors.iter().filter(|e| e.concern == "libvirt").collect();
        assert_eq!(libvirt.len(), 1, "{:?}", crashed.errors);
        assert!(libvirt[0].error.message.contains("crashed"), "{:?}", libvirt[0]);
    }
}
