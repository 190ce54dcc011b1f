//! The libvirt driver: [`Virt`] over the `virt` crate, on any libvirt URI
//! (`qemu:///system`, `qemu+ssh://root@gpu01/system`, a test host's
//! `qemu:///system?socket=…`, or libvirt's own `test:///default` for simulated hosts).
//!
//! Thin and blocking: each method is a few libvirt calls and the XML read back from them
//! ([`xml`]); async callers run it on `spawn_blocking`, one connection per host. libvirt's
//! errors become [`DriverError`]s with libvirt's own code (`VIR_ERR_NO_DOMAIN`) kept.

mod domain_read;
pub mod events;
pub mod owner;
pub mod xml;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, Once, mpsc};
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::error::{Error as VirtError, ErrorNumber};
use virt::network::Network;
use virt::nodedev::NodeDevice;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::sys;

use super::{DriverError, ErrorKind, Result, ShutdownOutcome, Virt, VirtReads};
use crate::live::{HostInfo, LiveDomain, LiveNetwork, LiveNumaNode, LivePciDevice, LivePool, PowerState};
use crate::spec::types::{ByteSize, CpuSet, PciAddress};

/// Objects (domains, volumes, node devices) read at once over a host's connection, per
/// concern, under `plan`'s timers-only event implementation ([`events`]); libvirtd serves
/// 20 calls at once by default (`max_workers`), this leaves room for everyone else's.
/// Over ssh or TLS calls in flight together share the network round trips; over a local
/// socket they overlap libvirtd's work with fabrik's at no more CPU than one reader.
///
/// Under libvirt's default loop (every other command) a host is read one call at a time
/// ([`LibvirtDriver::readers`]): there every call from another thread hands the socket
/// over through the loop (8 readers took 1.5–4× the CPU of one, docs/bench.md), and when
/// a host falls silent with several calls in flight libvirt 9.0 hands the dying
/// connection's I/O to a waiting call that polls with no timeout, so `apply`, `watch` or
/// `inventory` would wait for ever (`tests/plan_silent_testbed.rs` froze one under
/// `inventory`); with one call in flight keepalive fails it after `--host-timeout`. Only
/// `plan`'s implementation shuts the socket down for every waiting call.
const READS_IN_PARALLEL: usize = 8;

/// How often a graceful shutdown looks whether the guest is gone.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// Whether a validated define has succeeded in this process. An in-process driver (the
/// twins' `test:///`) validates with libxml2 in fabrik's own process, and libxml2 (2.9)
/// sets up its RelaxNG type library at the first schema it parses without a lock: two
/// threads doing that at once fail with "type 'unsignedLong' is not exported by type
/// library", seen when twins of several hosts were applied in parallel. So defines run
/// one at a time until one has succeeded; after that they run in parallel.
static FIRST_VALIDATION_DONE: Mutex<bool> = Mutex::new(false);

/// How long a host may leave fabrik without an answer before it counts as unreachable,
/// in seconds: a connection that does not open within it fails, and an open one whose
/// keepalive messages go unanswered for about as long is closed, failing the call that
/// waits on it. Without it a host whose network drops packets (rather than refusing)
/// would hold a plan or an apply for as long as TCP keeps trying.
static SILENCE_LIMIT_S: AtomicU64 = AtomicU64::new(SILENCE_LIMIT_DEFAULT.as_secs());
pub const SILENCE_LIMIT_DEFAULT: Duration = Duration::from_secs(30);
/// libvirt's keepalive probes per silence limit (virsh's default is 6, every 5 s).
const KEEPALIVE_PROBES: u64 = 6;

/// Sets how long a host may stay silent (see [`SILENCE_LIMIT_S`]), for connections
/// opened from now on.
pub fn set_silence_limit(limit: Duration) {
    SILENCE_LIMIT_S.store(limit.as_secs().max(1), Ordering::SeqCst);
}

fn silence_limit() -> Duration {
    Duration::from_secs(SILENCE_LIMIT_S.load(Ordering::SeqCst))
}

/// Once per process, before the first connection: libvirt's errors are not printed (fabrik
/// reports them itself), and the event implementation keepalive needs is registered and
/// runs on a thread of its own: libvirt's default loop, or the timers only for a command
/// that chose so ([`events`]).
fn init_libvirt() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        virt::error::clear_error_callback();
        events::register();
    });
}

/// One open connection to a libvirt host.
pub struct LibvirtDriver {
    conn: Connect,
    uri: String,
    /// Calls in flight at once when reading: [`READS_IN_PARALLEL`] under `plan`'s event
    /// implementation, 1 under libvirt's default loop.
    readers: usize,
}

impl std::fmt::Debug for LibvirtDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtDriver").field("uri", &self.uri).finish()
    }
}

impl LibvirtDriver {
    /// Opens a read-write connection. A host that cannot be reached is
    /// [`ErrorKind::Unreachable`], whatever libvirt's reason.
    pub fn connect(uri: &str) -> Result<LibvirtDriver> {
        init_libvirt();
        let limit = silence_limit();
        let unreachable = |e| {
            let mut err = libvirt_error(&format!("cannot connect to {uri}"), e);
            err.kind = ErrorKind::Unreachable;
            err
        };
        // Opening blocks for as long as the transport does (an ssh or TCP connection to a
        // host that drops packets: minutes); it runs on a thread that is left behind,
        // its connection closed when it ends, when the host has not answered in time.
        let (tx, rx) = mpsc::channel();
        let target = uri.to_string();
        std::thread::spawn(move || {
            let _ = tx.send(Connect::open(Some(&target)));
        });
        let conn = match rx.recv_timeout(limit) {
            Ok(opened) => opened.map_err(unreachable)?,
            Err(_) => {
                return Err(DriverError::new(
                    ErrorKind::Unreachable,
                    format!("cannot connect to {uri}: no answer within {}s", limit.as_secs()),
                ));
            }
        };
        // Drivers without keepalive (the in-process test driver) refuse it; they cannot
        // go silent either.
        let interval = (limit.as_secs() / KEEPALIVE_PROBES).max(1);
        let probes = (limit.as_secs() / interval).saturating_sub(1).max(1);
        let _ =
            conn.set_keep_alive(i32::try_from(interval).unwrap_or(i32::MAX), u32::try_from(probes).unwrap_or(u32::MAX));
        let readers = match events::chosen() {
            events::EventLoop::TimersOnly => READS_IN_PARALLEL,
            events::EventLoop::Default => 1,
        };
        Ok(LibvirtDriver { conn, uri: uri.to_string(), readers })
    }

    /// The URI this driver was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The underlying connection, for what the trait does not cover.
    pub fn connection(&self) -> &Connect {
        &self.conn
    }

    fn domain(&self, name: &str) -> Result<Domain> {
        self.conn.lookup_domain_by_name(name).map_err(err(format!("cannot find domain `{name}`")))
    }

    fn network(&self, name: &str) -> Result<Network> {
        self.conn.lookup_network_by_name(name).map_err(err(format!("cannot find network `{name}`")))
    }

    fn pool(&self, name: &str) -> Result<StoragePool> {
        self.conn.lookup_storage_pool_by_name(name).map_err(err(format!("cannot find storage pool `{name}`")))
    }

    fn volume(&self, pool: &str, name: &str) -> Result<StorageVol> {
        let p = self.pool(pool)?;
        p.lookup_storage_vol_by_name(name).map_err(err(format!("cannot find volume `{name}` in pool `{pool}`")))
    }

    fn nodedev(&self, address: PciAddress) -> Result<NodeDevice> {
        self.conn
            .lookup_node_device_by_name(&xml::nodedev_name(address))
            .map_err(err(format!("cannot find PCI device {address}")))
    }

    /// Each domain's power state and autostart flag, from listings filtered by libvirt
    /// (one call per filter for the whole host, not one per domain): a domain libvirt
    /// lists with no id is shut off; an active one is running or paused as the
    /// filtered listings say. Only a domain in neither (shutting down, crashed,
    /// suspended: rare, and passing) costs a state call of its own.
    fn domain_states(&self, doms: &[Domain]) -> Result<Vec<Option<(PowerState, bool)>>> {
        let names = |flags: u32, what: &str| -> Result<HashSet<String>> {
            let listed = self.conn.list_all_domains(flags).map_err(err(format!("cannot list {what} domains")))?;
            Ok(listed.iter().filter_map(|d| d.name().ok()).collect())
        };
        let autostart = names(sys::VIR_CONNECT_LIST_DOMAINS_AUTOSTART, "autostarted")?;
        let any_active = doms.iter().any(|d| d.id().is_some());
        let (running, paused) = if any_active {
            (
                names(sys::VIR_CONNECT_LIST_DOMAINS_RUNNING, "running")?,
                names(sys::VIR_CONNECT_LIST_DOMAINS_PAUSED, "paused")?,
            )
        } else {
            (HashSet::new(), HashSet::new())
        };
        let mut out = Vec::with_capacity(doms.len());
        for dom in doms {
            let name = dom.name().map_err(err("cannot read a domain's name"))?;
            let state = if dom.id().is_none() {
                PowerState::ShutOff
            } else if running.contains(&name) {
                PowerState::Running
            } else if paused.contains(&name) {
                PowerState::Paused
            } else {
                match dom.state() {
                    Ok((s, _)) => power_state(s),
                    Err(e) if e.code().is(ErrorNumber::NoDomain) => {
                        out.push(None);
                        continue;
                    }
                    Err(e) => return Err(libvirt_error(&format!("cannot read domain `{name}`"), e)),
                }
            };
            out.push(Some((state, autostart.contains(&name))));
        }
        Ok(out)
    }
}

/// `read` applied to every item, up to `readers` at once (each call a round trip over the
/// one connection); the results in the order of `items`.
fn in_parallel<T: Sync, R: Send>(readers: usize, items: &[T], read: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = readers.min(items.len());
    if workers <= 1 {
        return items.iter().map(read).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, read(item)));
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().flat_map(joined).collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// A scoped thread's result; its panic goes on in the caller.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// libvirt's states, as fabrik tells them apart: a guest that is shutting down is still
/// running; one suspended by its own power management is neither running nor paused.
fn power_state(state: virt::domain::DomainStateEnum) -> PowerState {
    match state.unwrap_or(DomainState::NoState) {
        DomainState::Running | DomainState::Blocked | DomainState::Shutdown => PowerState::Running,
        DomainState::Paused => PowerState::Paused,
        DomainState::Shutoff => PowerState::ShutOff,
        DomainState::Crashed => PowerState::Crashed,
        DomainState::NoState | DomainState::PMSuspended => PowerState::Other,
    }
}

/// A libvirt error with what fabrik was doing in front of libvirt's own message.
pub fn libvirt_error(what: &str, e: VirtError) -> DriverError {
    DriverError { kind: error_kind(&e), message: format!("{what}: {}", e.message()), code: Some(code_name(&e)) }
}

fn err(what: impl Into<String>) -> impl FnOnce(VirtError) -> DriverError {
    let what = what.into();
    move |e| libvirt_error(&what, e)
}

/// What a libvirt error means to a caller.
pub fn error_kind(e: &VirtError) -> ErrorKind {
    use ErrorNumber as N;
    let virt::enumutil::Enum::Known(code) = e.code() else { return ErrorKind::Failed };
    // The RPC layer's own internal and system errors are the connection's: "connection
    // closed due to keepalive timeout", "client socket is closed", "Cannot recv data:
    // Connection reset by peer".
    if matches!(code, N::InternalError | N::SystemError)
        && matches!(e.domain(), virt::enumutil::Enum::Known(virt::error::ErrorDomain::Rpc))
    {
        return ErrorKind::Unreachable;
    }
    match code {
        N::NoDomain
        | N::NoNetwork
        | N::NoStoragePool
        | N::NoStorageVolume
        | N::NoNodeDevice
        | N::NoInterface
        | N::NoSecret
        | N::NoNwfilter
        | N::NoDomainSnapshot
        | N::NoDomainMetadata
        | N::NoNetworkMetadata
        | N::NoNetworkPort
        | N::DeviceMissing => ErrorKind::NotFound,
        N::DomExist | N::NetworkExist | N::StorageVolExist | N::NetworkPortExists | N::StoragePoolBuilt => {
            ErrorKind::Exists
        }
        N::NoConnect
        | N::InvalidConn
        | N::UnknownHost
        | N::AuthFailed
        | N::AuthCancelled
        | N::AuthUnavailable
        | N::Rpc
        | N::Ssh
        | N::Libssh
        | N::NoServer => ErrorKind::Unreachable,
        N::OperationInvalid | N::OperationDenied | N::AccessDenied | N::ResourceBusy | N::MigrateUnsafe => {
            ErrorKind::Refused
        }
        N::NoSupport | N::OperationUnsupported | N::ArgumentUnsupported | N::ConfigUnsupported => {
            ErrorKind::Unsupported
        }
        _ => ErrorKind::Failed,
    }
}

/// libvirt's name of an error code, as in its headers (`VIR_ERR_NO_DOMAIN`).
pub fn code_name(e: &VirtError) -> String {
    use ErrorNumber as N;
    let code = match e.code() {
        virt::enumutil::Enum::Known(code) => code,
        virt::enumutil::Enum::Unknown(raw) => return format!("VIR_ERR_{raw}"),
    };
    // The few whose Rust name does not spell the C one.
    let exact = match code {
        N::SExprSerial => "VIR_ERR_SEXPR_SERIAL",
        N::NoXenStore => "VIR_ERR_NO_XENSTORE",
        N::NoNetworkStart => "VIR_WAR_NO_NETWORK",
        N::NoStorage => "VIR_WAR_NO_STORAGE",
        N::NoStorageVolume => "VIR_ERR_NO_STORAGE_VOL",
        N::NoNode => "VIR_WAR_NO_NODE",
        N::NoInterfaceStart => "VIR_WAR_NO_INTERFACE",
        N::NoNwfilterStart => "VIR_WAR_NO_NWFILTER",
        N::NoSecretStart => "VIR_WAR_NO_SECRET",
        N::NetworkPortExists => "VIR_ERR_NETWORK_PORT_EXIST",
        _ => "",
    };
    if !exact.is_empty() {
        return exact.to_string();
    }
    let mut out = String::from("VIR_ERR");
    for c in format!("{code:?}").chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Where Linux gives the id of the current boot.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// Whether a URI names a hypervisor on this machine (`qemu:///system`, no host part):
/// only then is this machine's boot id the host's.
pub fn local_uri(uri: &str) -> bool {
    uri.split_once("://").is_some_and(|(scheme, rest)| !scheme.contains('+') && rest.starts_with('/'))
        && !uri.starts_with("test:")
}

/// The boot id in a file like [`BOOT_ID_PATH`], trimmed; `None` when unreadable or empty.
pub fn read_boot_id(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_string())
}

impl LibvirtDriver {
    /// Defines a domain whose XML the caller has already checked against libvirt's schema
    /// exactly as `VIR_DOMAIN_DEFINE_VALIDATE` would (the twins: [`crate::sim::virt`]);
    /// everything else is [`Virt::define_domain`]'s.
    pub fn define_domain_validated(&mut self, xml: &str) -> Result<()> {
        self.conn
            .define_domain_xml_flags(xml, 0)
            .map(drop)
            .map_err(err(format!("cannot define domain `{}`", name_in(xml))))
    }

    fn read_host_info(&self) -> Result<HostInfo> {
        let caps_xml = self.conn.capabilities().map_err(err("cannot read the host's capabilities"))?;
        let caps = xml::capabilities(&caps_xml)?;
        let hostname = self.conn.hostname().map_err(err("cannot read the host's name"))?;
        let driver = self.conn.driver_type().map_err(err("cannot read the hypervisor type"))?;
        // The test driver has no hypervisor version; QEMU's is major*1e6 + minor*1e3 + micro.
        let hypervisor = match self.conn.hyp_version() {
            Ok(v) if v > 0 => format!("{driver} {}.{}.{}", v / 1_000_000, v / 1_000 % 1_000, v % 1_000),
            _ => driver,
        };
        let mut numa = caps.numa;
        if numa.is_empty() {
            // Some drivers (the test driver on a custom file) report no NUMA topology: the
            // host is then one node holding every CPU and all memory.
            let info = self.conn.node_info().map_err(err("cannot read the host's node info"))?;
            numa.push(LiveNumaNode {
                id: 0,
                cpus: CpuSet::from_cpus((0..info.cpus).collect()),
                memory: ByteSize(info.memory.saturating_mul(ByteSize::KIB)),
                distances: vec![10],
                socket: None,
            });
        }
        // libvirt's test driver reports a made-up i686 host: no architecture to check.
        let arch = if hypervisor.starts_with("QEMU") { caps.arch } else { None };
        let boot_id = if local_uri(&self.uri) { read_boot_id(Path::new(BOOT_ID_PATH)) } else { None };
        Ok(HostInfo { hostname, hypervisor, cpu_model: caps.cpu_model, arch, numa, boot_id })
    }

    fn read_devices(&self) -> Result<Vec<LivePciDevice>> {
        let pci = self
            .conn
            .list_all_node_devices(sys::VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
            .map_err(err("cannot list the host's PCI devices"))?;
        let nets = self
            .conn
            .list_all_node_devices(sys::VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET)
            .map_err(err("cannot list the host's network devices"))?;
        // A device that went away between the list and the read is simply not there.
        let read = |list: &[NodeDevice]| in_parallel(self.readers, list, |d| d.xml_desc(0).ok());
        let (nets, pci) = if self.readers <= 1 {
            (read(&nets), read(&pci))
        } else {
            std::thread::scope(|s| {
                let nets = s.spawn(|| read(&nets));
                (joined(nets), read(&pci))
            })
        };
        let mut netdevs: Vec<(String, String)> = Vec::new();
        for desc in nets.iter().flatten() {
            if let Some(pair) = xml::net_device(desc)? {
                netdevs.push(pair);
            }
        }
        let mut out = Vec::new();
        for desc in pci.iter().flatten() {
            if let Some(mut d) = xml::pci_device(desc)? {
                d.netdevs = netdevs.iter().filter(|(parent, _)| *parent == d.nodedev).map(|(_, n)| n.clone()).collect();
                d.netdevs.sort();
                out.push(d);
            }
        }
        out.sort_by_key(|d| d.address);
        Ok(out)
    }

    fn read_domains(&self) -> Result<Vec<LiveDomain>> {
        let doms = self.conn.list_all_domains(0).map_err(err("cannot list domains"))?;
        let states = self.domain_states(&doms)?;
        let todo: Vec<(&Domain, PowerState, bool)> =
            doms.iter().zip(states).filter_map(|(d, s)| s.map(|(state, autostart)| (d, state, autostart))).collect();
        // The reads go out together over the one connection: the host costs about one
        // round trip per `READS_IN_PARALLEL` domains, not one per domain, which is what
        // counts over ssh.
        let read = if self.readers <= 1 && todo.len() >= domain_read::PARSE_BESIDE_MIN {
            domain_read::read_then_parse(&todo)
        } else {
            in_parallel(self.readers, &todo, |&(dom, state, autostart)| domain_read::read(dom, state, autostart))
        };
        let mut out = Vec::with_capacity(read.len());
        for d in read {
            if let Some(d) = d? {
                out.push(d);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read_networks(&self) -> Result<Vec<LiveNetwork>> {
        let nets = self.conn.list_all_networks(0).map_err(err("cannot list networks"))?;
        let mut out = Vec::with_capacity(nets.len());
        for net in &nets {
            let name = net.name().map_err(err("cannot read a network's name"))?;
            let what = format!("cannot read network `{name}`");
            let read = || -> std::result::Result<(String, bool, bool), VirtError> {
                let desc = inactive_xml(|flags| net.xml_desc(flags), sys::VIR_NETWORK_XML_INACTIVE)?;
                Ok((desc, net.is_active()?, net.autostart()?))
            };
            match read() {
                Ok((desc, active, autostart)) => out.push(xml::network(&desc, active, autostart)?),
                Err(e) if e.code().is(ErrorNumber::NoNetwork) => continue,
                Err(e) => return Err(libvirt_error(&what, e)),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read_pools(&self) -> Result<Vec<LivePool>> {
        let pools = self.conn.list_all_storage_pools(0).map_err(err("cannot list storage pools"))?;
        let mut out = Vec::with_capacity(pools.len());
        for pool in &pools {
            let name = pool.name().map_err(err("cannot read a storage pool's name"))?;
            let what = format!("cannot read storage pool `{name}`");
            let active = match pool.is_active() {
                Ok(a) => a,
                Err(e) if e.code().is(ErrorNumber::NoStoragePool) => continue,
                Err(e) => return Err(libvirt_error(&what, e)),
            };
            if active {
                // Files made outside libvirt show up only after a refresh; a refresh that
                // fails (a volume being built) leaves the last known list, still true.
                let _ = pool.refresh(0);
            }
            let read = || -> std::result::Result<(String, String, bool), VirtError> {
                let inactive = inactive_xml(|flags| pool.xml_desc(flags), sys::VIR_STORAGE_XML_INACTIVE)?;
                Ok((pool.xml_desc(0)?, inactive, pool.autostart()?))
            };
            let (live_xml, inactive_xml, autostart) = match read() {
                Ok(r) => r,
                Err(e) if e.code().is(ErrorNumber::NoStoragePool) => continue,
                Err(e) => return Err(libvirt_error(&what, e)),
            };
            let mut live = xml::pool(&live_xml, &inactive_xml, active, autostart)?;
            if active {
                let vols = pool.list_all_volumes(0).map_err(err(format!("cannot list volumes of pool `{name}`")))?;
                for read in in_parallel(self.readers, &vols, |v| v.xml_desc(0)) {
                    match read {
                        Ok(desc) => live.volumes.push(xml::volume(&desc)?),
                        Err(e) if e.code().is(ErrorNumber::NoStorageVolume) => continue,
                        Err(e) => return Err(libvirt_error(&what, e)),
                    }
                }
                live.volumes.sort_by(|a, b| a.name.cmp(&b.name));
            }
            out.push(live);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

impl Virt for LibvirtDriver {
    fn host_info(&mut self) -> Result<HostInfo> {
        self.read_host_info()
    }

    fn devices(&mut self) -> Result<Vec<LivePciDevice>> {
        self.read_devices()
    }

    fn domains(&mut self) -> Result<Vec<LiveDomain>> {
        self.read_domains()
    }

    fn networks(&mut self) -> Result<Vec<LiveNetwork>> {
        self.read_networks()
    }

    fn pools(&mut self) -> Result<Vec<LivePool>> {
        self.read_pools()
    }

    /// The five reads at once over a remote host's one connection (libvirt's client
    /// matches answers to calls by serial; the daemon serves them on its workers): the
    /// host costs its slowest concern — the domains — rather than the sum of all five.
    /// A local host's, one after another ([`READS_IN_PARALLEL`] says why).
    fn read_all(&mut self) -> VirtReads {
        if self.readers <= 1 {
            return VirtReads {
                info: self.read_host_info(),
                devices: self.read_devices(),
                domains: self.read_domains(),
                networks: self.read_networks(),
                pools: self.read_pools(),
            };
        }
        let this = &*self;
        std::thread::scope(|s| {
            let info = s.spawn(|| this.read_host_info());
            let devices = s.spawn(|| this.read_devices());
            let networks = s.spawn(|| this.read_networks());
            let pools = s.spawn(|| this.read_pools());
            let domains = this.read_domains();
            VirtReads {
                info: joined(info),
                devices: joined(devices),
                domains,
                networks: joined(networks),
                pools: joined(pools),
            }
        })
    }

    fn define_domain(&mut self, xml: &str) -> Result<()> {
        // VALIDATE checks the XML against libvirt's schema: without it libvirt drops what
        // it does not know silently, and a typo would never show as drift.
        let define = || {
            self.conn
                .define_domain_xml_flags(xml, sys::VIR_DOMAIN_DEFINE_VALIDATE)
                .map(drop)
                .map_err(err(format!("cannot define domain `{}`", name_in(xml))))
        };
        let mut first = FIRST_VALIDATION_DONE.lock().unwrap_or_else(|p| p.into_inner());
        if *first {
            drop(first);
            return define();
        }
        let result = define();
        *first = result.is_ok();
        result
    }

    fn undefine_domain(&mut self, name: &str) -> Result<()> {
        let dom = self.domain(name)?;
        let what = format!("cannot undefine domain `{name}`");
        // Managed save images, snapshot and checkpoint metadata and NVRAM belong to the
        // definition; without these flags libvirt refuses to undefine a domain that has
        // them. Drivers that know none of them (the test driver) refuse the flags.
        let flags = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
            | sys::VIR_DOMAIN_UNDEFINE_NVRAM;
        match dom.undefine_flags(flags) {
            Ok(()) => Ok(()),
            Err(e) if e.code().is_any(vec![ErrorNumber::InvalidArg, ErrorNumber::NoSupport]) => {
                dom.undefine().map_err(err(what))
            }
            Err(e) => Err(libvirt_error(&what, e)),
        }
    }

    fn start_domain(&mut self, name: &str) -> Result<()> {
        let dom = self.domain(name)?;
        let what = format!("cannot start domain `{name}`");
        // The QEMU driver refuses a second start as an invalid operation, the test driver
        // as an internal error: both are the same refusal to a caller.
        if dom.is_active().map_err(err(what.clone()))? {
            return Err(DriverError::new(ErrorKind::Refused, format!("{what}: it is already running")));
        }
        dom.create().map_err(err(what))
    }

    fn shutdown_domain(&mut self, name: &str, timeout: Duration) -> Result<ShutdownOutcome> {
        let dom = self.domain(name)?;
        let what = format!("cannot shut down domain `{name}`");
        let gone = |e: &VirtError| e.code().is(ErrorNumber::NoDomain);
        match dom.is_active() {
            Ok(false) => return Ok(ShutdownOutcome::NotRunning),
            Ok(true) => {}
            Err(e) => return Err(libvirt_error(&what, e)),
        }
        match dom.shutdown() {
            Ok(_) => {}
            // It stopped between the two calls.
            Err(e) if e.code().is(ErrorNumber::OperationInvalid) && !dom.is_active().unwrap_or(true) => {
                return Ok(ShutdownOutcome::NotRunning);
            }
            Err(e) => return Err(libvirt_error(&what, e)),
        }
        let deadline = Instant::now() + timeout;
        loop {
            match dom.is_active() {
                Ok(false) => return Ok(ShutdownOutcome::Graceful),
                // A transient domain is gone once it stops.
                Err(e) if gone(&e) => return Ok(ShutdownOutcome::Graceful),
                Err(e) => return Err(libvirt_error(&what, e)),
                Ok(true) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                // Left running: forcing it off is the caller's decision, in the plan.
                return Ok(ShutdownOutcome::TimedOut);
            }
            std::thread::sleep(SHUTDOWN_POLL.min(deadline - now));
        }
    }

    fn destroy_domain(&mut self, name: &str) -> Result<()> {
        self.domain(name)?.destroy().map_err(err(format!("cannot destroy domain `{name}`")))
    }

    fn set_domain_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        self.domain(name)?
            .set_autostart(autostart)
            .map(drop)
            .map_err(err(format!("cannot set autostart of domain `{name}`")))
    }

    fn resume_domain(&mut self, name: &str) -> Result<()> {
        self.domain(name)?.resume().map(drop).map_err(err(format!("cannot resume domain `{name}`")))
    }

    fn set_domain_mark(&mut self, name: &str, mark: &str) -> Result<()> {
        let dom = self.domain(name)?;
        let what = format!("cannot mark domain `{name}`");
        let active = dom.is_active().map_err(err(what.clone()))?;
        // The saved definition and, while it runs, the running one: a metadata change
        // takes effect at once and leaves nothing for the next start.
        let mut flags = sys::VIR_DOMAIN_AFFECT_CONFIG;
        if active {
            flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
        }
        dom.set_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(&owner::for_set_metadata(mark)),
            Some(owner::PREFIX),
            Some(owner::NAMESPACE),
            flags,
        )
        .map_err(err(what))
    }

    fn define_network(&mut self, xml: &str) -> Result<()> {
        self.conn.define_network_xml(xml).map(drop).map_err(err(format!("cannot define network `{}`", name_in(xml))))
    }

    fn start_network(&mut self, name: &str) -> Result<()> {
        self.network(name)?.create().map(drop).map_err(err(format!("cannot start network `{name}`")))
    }

    fn stop_network(&mut self, name: &str) -> Result<()> {
        self.network(name)?.destroy().map_err(err(format!("cannot stop network `{name}`")))
    }

    fn undefine_network(&mut self, name: &str) -> Result<()> {
        self.network(name)?.undefine().map_err(err(format!("cannot undefine network `{name}`")))
    }

    fn set_network_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        self.network(name)?
            .set_autostart(autostart)
            .map(drop)
            .map_err(err(format!("cannot set autostart of network `{name}`")))
    }

    fn define_pool(&mut self, xml: &str) -> Result<()> {
        let name = name_in(xml);
        // libvirt reports a second definition of a name as a generic failure; say Exists.
        if self.conn.lookup_storage_pool_by_name(&name).is_ok() {
            return Err(DriverError::new(ErrorKind::Exists, format!("storage pool `{name}` already exists")));
        }
        self.conn.define_storage_pool_xml(xml, 0).map(drop).map_err(err(format!("cannot define storage pool `{name}`")))
    }

    fn start_pool(&mut self, name: &str) -> Result<()> {
        let pool = self.pool(name)?;
        let what = format!("cannot start storage pool `{name}`");
        let desc = pool.xml_desc(0).map_err(err(what.clone()))?;
        // A `dir` pool's build makes its directory and never touches what is in it. Other
        // kinds format disks or volume groups when built: never implicitly.
        if xml::pool_kind(&desc)? == "dir" {
            pool.build(0).map_err(err(format!("cannot build storage pool `{name}`")))?;
        }
        pool.create(0).map(drop).map_err(err(what))
    }

    fn stop_pool(&mut self, name: &str) -> Result<()> {
        self.pool(name)?.destroy().map_err(err(format!("cannot stop storage pool `{name}`")))
    }

    fn undefine_pool(&mut self, name: &str) -> Result<()> {
        // Undefining keeps the pool's directory and volumes on disk.
        self.pool(name)?.undefine().map_err(err(format!("cannot undefine storage pool `{name}`")))
    }

    fn set_pool_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        self.pool(name)?
            .set_autostart(autostart)
            .map(drop)
            .map_err(err(format!("cannot set autostart of storage pool `{name}`")))
    }

    fn create_volume(&mut self, pool: &str, xml: &str) -> Result<()> {
        let p = self.pool(pool)?;
        let name = name_in(xml);
        refuse_existing_volume(&p, pool, &name)?;
        StorageVol::create_xml(&p, xml, 0)
            .map(drop)
            .map_err(err(format!("cannot create volume `{name}` in pool `{pool}`")))
    }

    fn clone_volume(&mut self, pool: &str, xml: &str, from_pool: &str, from_volume: &str) -> Result<()> {
        let p = self.pool(pool)?;
        let name = name_in(xml);
        refuse_existing_volume(&p, pool, &name)?;
        let from = self.volume(from_pool, from_volume)?;
        StorageVol::create_xml_from(&p, xml, &from, 0)
            .map(drop)
            .map_err(err(format!("cannot create volume `{name}` in pool `{pool}` from `{from_pool}/{from_volume}`")))
    }

    fn delete_volume(&mut self, pool: &str, name: &str) -> Result<()> {
        self.volume(pool, name)?.delete(0).map_err(err(format!("cannot delete volume `{name}` in pool `{pool}`")))
    }

    fn resize_volume(&mut self, pool: &str, name: &str, capacity: ByteSize) -> Result<()> {
        self.volume(pool, name)?
            .resize(capacity.bytes(), 0)
            .map(drop)
            .map_err(err(format!("cannot grow volume `{name}` in pool `{pool}` to {capacity}")))
    }

    fn upload_volume(&mut self, pool: &str, name: &str, len: u64, data: &mut dyn std::io::Read) -> Result<()> {
        let what = format!("cannot upload {len} bytes to volume `{name}` in pool `{pool}`");
        let vol = self.volume(pool, name)?;
        let stream = virt::stream::Stream::new(self.connection(), 0).map_err(err(what.clone()))?;
        vol.upload(&stream, 0, len, 0).map_err(err(what.clone()))?;
        match send_all(&stream, len, data, &what) {
            Ok(()) => stream.finish().map_err(err(what)),
            Err(e) => {
                let _ = stream.abort();
                Err(e)
            }
        }
    }

    fn detach_device(&mut self, address: PciAddress) -> Result<()> {
        self.nodedev(address)?
            .detach_flags(Some("vfio"), 0)
            .map_err(err(format!("cannot bind PCI device {address} to vfio-pci")))
    }

    fn reattach_device(&mut self, address: PciAddress) -> Result<()> {
        self.nodedev(address)?.reattach().map_err(err(format!("cannot give PCI device {address} back to its driver")))
    }
}

/// Sends `len` bytes of `data` down an upload's stream: a chunk read, then sent whole,
/// then the next — never more than a chunk in memory.
fn send_all(stream: &virt::stream::Stream, len: u64, data: &mut dyn std::io::Read, what: &str) -> Result<()> {
    let failed = |message: String| DriverError::new(ErrorKind::Failed, format!("{what}: {message}"));
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match data.read(&mut buf[..want]) {
            Ok(0) => return Err(failed(format!("the data ended after {} bytes", len - left))),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed(format!("cannot read the data: {e}"))),
        };
        let mut sent = 0;
        while sent < n {
            match stream.send(&buf[sent..n]) {
                Ok(k) if k > 0 => sent += k as usize,
                Ok(_) => return Err(failed("the stream took nothing".into())),
                Err(e) => return Err(libvirt_error(what, e)),
            }
        }
        left -= n as u64;
    }
    Ok(())
}

/// A volume that exists already is [`ErrorKind::Exists`]: the QEMU driver says so with
/// its own code, the test driver as a generic failure.
fn refuse_existing_volume(pool: &StoragePool, pool_name: &str, name: &str) -> Result<()> {
    match pool.lookup_storage_vol_by_name(name) {
        Ok(_) => {
            Err(DriverError::new(ErrorKind::Exists, format!("volume `{name}` already exists in pool `{pool_name}`")))
        }
        Err(_) => Ok(()),
    }
}

/// An object's inactive XML (its persistent definition). Drivers without the distinction
/// (the test driver, for networks and pools) refuse the flag; their only XML is then it.
fn inactive_xml(
    desc: impl Fn(u32) -> std::result::Result<String, VirtError>,
    flag: u32,
) -> std::result::Result<String, VirtError> {
    match desc(flag) {
        Err(e) if e.code().is(ErrorNumber::InvalidArg) => desc(0),
        other => other,
    }
}

/// The `<name>` of an object's XML, for messages; `?` when there is none.
fn name_in(xml: &str) -> String {
    roxmltree::Document::parse(xml)
        .ok()
        .and_then(|d| {
            d.root_element()
                .children()
                .find(|n| n.has_tag_name("name"))
                .and_then(|n| n.text())
                .map(|t| t.trim().to_string())
        })
        .unwrap_or_else(|| "?".to_string())
}

#[cfg(test)]
mod boot_id_tests {
    use super::*;

    #[test]
    fn only_a_local_uri_reads_this_machines_boot_id() {
        assert!(local_uri("qemu:///system") && local_uri("qemu:///session"));
        assert!(!local_uri("qemu+ssh://root@gpu01/system"));
        assert!(!local_uri("qemu://gpu01/system"));
        assert!(!local_uri("test:///default"));
    }

    #[test]
    fn the_boot_id_file_is_read_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("boot_id");
        assert_eq!(read_boot_id(&p), None);
        std::fs::write(&p, "3f1c0b8e-0000-4000-8000-000000000001\n").unwrap();
        assert_eq!(read_boot_id(&p).as_deref(), Some("3f1c0b8e-0000-4000-8000-000000000001"));
        std::fs::write(&p, "\n").unwrap();
        assert_eq!(read_boot_id(&p), None);
        if Path::new(BOOT_ID_PATH).exists() {
            assert!(read_boot_id(Path::new(BOOT_ID_PATH)).is_some(), "this Linux machine gives a boot id");
        }
    }
}
