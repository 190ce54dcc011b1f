//! The real [`Links`] driver: rtnetlink for links and VXLAN flood entries, sysfs for
//! SR-IOV VF counts and hugepage pools.
//!
//! It speaks netlink through `netlink-packet-route` messages on a plain blocking
//! `netlink-sys` socket rather than through `rtnetlink`: the trait is blocking, every call
//! is one request and one answer, and a blocking socket needs no async runtime. It also
//! makes namespaces simple: a socket belongs to the network namespace it was opened in,
//! so [`NetlinkDriver::in_netns`] opens it on a dedicated thread that has entered the
//! namespace (and mounted that namespace's own sysfs in a private mount namespace, as
//! `ip netns exec` does), and runs every call there. The rest of the process, and other
//! drivers in other namespaces, are untouched.

mod message;
mod socket;
mod sysfs;

use std::collections::HashMap;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage};
use nix::errno::Errno;

use self::message::RawLink;
use self::socket::{NlError, Socket, errno_error};
use crate::driver::{DriverError, ErrorKind, Guid, LinkSpec, Links, Result};
use crate::live::{LinkKind, LiveHugepages, LiveLink};
use crate::spec::types::PageSize;

pub use self::sysfs::check_sriov_change;

/// Where `ip netns add` keeps named network namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Links, VFs and hugepages of one host (one network namespace).
pub struct NetlinkDriver {
    exec: Exec,
}

enum Exec {
    /// Calls run on the caller's thread, in its namespace.
    Here(Box<Host>),
    /// Calls run on a thread that lives in another namespace.
    Thread { jobs: Option<mpsc::Sender<Job>>, worker: Option<thread::JoinHandle<()>>, netns: String },
}

type Job = Box<dyn FnOnce(&mut Host) + Send>;

impl NetlinkDriver {
    /// The network namespace of the calling process, with sysfs at `/sys`.
    pub fn local() -> Result<NetlinkDriver> {
        NetlinkDriver::local_with_sysfs("/sys")
    }

    /// The calling process's namespace, with sysfs read from another root (tests).
    pub fn local_with_sysfs(sysfs: impl Into<PathBuf>) -> Result<NetlinkDriver> {
        let socket = Socket::open().map_err(|e| open_error(e, "this host"))?;
        Ok(NetlinkDriver { exec: Exec::Here(Box::new(Host { socket, sysfs: sysfs.into() })) })
    }

    /// A named network namespace (`ip netns add NAME`).
    pub fn in_netns(name: &str) -> Result<NetlinkDriver> {
        NetlinkDriver::in_netns_path(Path::new(NETNS_DIR).join(name))
    }

    /// The network namespace at a path (`/run/netns/NAME`, `/proc/PID/ns/net`).
    pub fn in_netns_path(path: impl Into<PathBuf>) -> Result<NetlinkDriver> {
        let path = path.into();
        let netns = path.display().to_string();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (jobs, inbox) = mpsc::channel::<Job>();
        let worker = thread::Builder::new()
            .name(format!("netlink {}", path.file_name().unwrap_or_default().to_string_lossy()))
            .spawn(move || {
                let mut host = match Host::enter(&path) {
                    Ok(host) => {
                        let _ = ready_tx.send(Ok(()));
                        host
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for job in inbox {
                    job(&mut host);
                }
            })
            .map_err(|e| DriverError::new(ErrorKind::Failed, format!("starting a thread for `{netns}`: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(NetlinkDriver { exec: Exec::Thread { jobs: Some(jobs), worker: Some(worker), netns } }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DriverError::new(ErrorKind::Failed, format!("the thread entering `{netns}` died"))),
        }
    }

    fn run<R: Send + 'static>(&mut self, job: impl FnOnce(&mut Host) -> Result<R> + Send + 'static) -> Result<R> {
        match &mut self.exec {
            Exec::Here(host) => job(host),
            Exec::Thread { jobs, netns, .. } => {
                let gone =
                    || DriverError::new(ErrorKind::Failed, format!("the netlink thread of `{netns}` has stopped"));
                let (reply, answer) = mpsc::sync_channel(1);
                let jobs = jobs.as_ref().ok_or_else(gone)?;
                jobs.send(Box::new(move |host: &mut Host| {
                    let _ = reply.send(job(host));
                }))
                .map_err(|_| gone())?;
                answer.recv().map_err(|_| gone())?
            }
        }
    }
}

impl Drop for NetlinkDriver {
    fn drop(&mut self) {
        if let Exec::Thread { jobs, worker, .. } = &mut self.exec {
            jobs.take();
            if let Some(worker) = worker.take() {
                let _ = worker.join();
            }
        }
    }
}

fn open_error(e: std::io::Error, place: &str) -> DriverError {
    let what = format!("opening a netlink socket in {place}");
    match e.raw_os_error() {
        Some(raw) => errno_error(Errno::from_raw(raw), format!("{what}: {e}")),
        None => DriverError::new(ErrorKind::Failed, format!("{what}: {e}")),
    }
}

/// A route socket and a sysfs tree, both of one network namespace.
struct Host {
    socket: Socket,
    sysfs: PathBuf,
}

impl Host {
    /// Enters a network namespace on the calling thread, and gives the thread a private
    /// mount namespace with that network namespace's sysfs (whose `class/net` shows the
    /// namespace of whoever mounted it).
    fn enter(path: &Path) -> Result<Host> {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        use nix::sched::{CloneFlags, setns, unshare};

        let netns = path.display();
        let fail = |what: &str, errno: Errno| errno_error(errno, format!("{what} for network namespace `{netns}`"));
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                DriverError::new(ErrorKind::NotFound, format!("network namespace `{netns}` does not exist"))
            }
            _ => DriverError::new(ErrorKind::Failed, format!("opening network namespace `{netns}`: {e}")),
        })?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| fail("entering", e))?;
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| fail("making a mount namespace", e))?;
        let none = None::<&str>;
        mount(none, "/", none, MsFlags::MS_SLAVE | MsFlags::MS_REC, none)
            .map_err(|e| fail("making mounts private", e))?;
        match umount2("/sys", MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(fail("unmounting /sys", e)),
        }
        mount(Some("sysfs"), "/sys", Some("sysfs"), MsFlags::empty(), none).map_err(|e| fail("mounting sysfs", e))?;
        let socket = Socket::open().map_err(|e| open_error(e, &format!("network namespace `{netns}`")))?;
        Ok(Host { socket, sysfs: PathBuf::from("/sys") })
    }

    fn dump_links(&mut self) -> std::result::Result<Vec<RawLink>, NlError> {
        // Counters are most of a link message and fabrik reads none of them.
        let mut request = LinkMessage::default();
        request.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let request = RouteNetlinkMessage::GetLink(request);
        Ok(self
            .socket
            .dump(request)?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => RawLink::parse(link),
                _ => None,
            })
            .collect())
    }

    /// VXLAN flood entries (all-zeros MAC) per interface index.
    fn flood_entries(&mut self) -> std::result::Result<HashMap<u32, Vec<IpAddr>>, NlError> {
        let request = RouteNetlinkMessage::GetNeighbour(message::fdb_dump_message());
        let mut remotes: HashMap<u32, Vec<IpAddr>> = HashMap::new();
        for reply in self.socket.dump(request)? {
            if let RouteNetlinkMessage::NewNeighbour(entry) = reply
                && let Some((index, remote)) = message::flood_entry(&entry)
            {
                remotes.entry(index).or_default().push(remote);
            }
        }
        Ok(remotes)
    }

    /// A link by name, or `None` when there is none.
    fn link(&mut self, name: &str) -> Result<Option<RawLink>> {
        let request = RouteNetlinkMessage::GetLink(message::by_name(name));
        match self.socket.query(request) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => RawLink::parse(link),
                _ => None,
            })),
            Err(e) if matches!(e.errno(), Some(Errno::ENODEV)) => Ok(None),
            Err(e) => Err(e.into_driver(&format!("looking up link `{name}`"))),
        }
    }

    fn existing(&mut self, name: &str, role: &str) -> Result<RawLink> {
        self.link(name)?.ok_or_else(|| {
            DriverError::new(ErrorKind::NotFound, format!("{role} `{name}` does not exist")).with_code("ENODEV")
        })
    }

    fn links(&mut self) -> Result<Vec<LiveLink>> {
        let raws = self.dump_links().map_err(|e| e.into_driver("listing links"))?;
        let remotes = if raws.iter().any(RawLink::is_vxlan) {
            self.flood_entries().map_err(|e| e.into_driver("listing VXLAN flood entries"))?
        } else {
            HashMap::new()
        };
        let names: HashMap<u32, String> = raws.iter().map(|r| (r.index, r.name.clone())).collect();
        let mut links: Vec<LiveLink> = raws
            .into_iter()
            .map(|raw| {
                let vfs = sysfs::sriov_vfs(&self.sysfs, &raw.name);
                let pci = vfs.and_then(|_| sysfs::sriov_pci(&self.sysfs, &raw.name));
                LiveLink { sriov_pci: pci, ..raw.into_live(&names, &remotes, vfs) }
            })
            .collect();
        links.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(links)
    }

    fn create_link(&mut self, spec: &LinkSpec) -> Result<()> {
        let master = match &spec.master {
            Some(master) => Some(self.existing(master, "master")?.index),
            None => None,
        };
        let parent = match &spec.kind {
            LinkKind::Vlan { parent, .. } | LinkKind::Macvlan { parent } | LinkKind::Ipoib { parent, .. } => {
                Some(self.existing(parent, "parent link")?.index)
            }
            LinkKind::Vxlan { parent: Some(parent), .. } => Some(self.existing(parent, "parent link")?.index),
            LinkKind::Vxlan { parent: None, .. }
            | LinkKind::Bridge
            | LinkKind::Veth { .. }
            | LinkKind::Other { .. } => None,
        };
        let request = RouteNetlinkMessage::NewLink(message::create_message(spec, master, parent));
        let what = format!("creating link `{}`", spec.name);
        self.socket.request(request, NLM_F_CREATE | NLM_F_EXCL).map_err(|e| create_error(e, &what, &spec.kind))?;
        // The alias (and a bridge's MTU) are set once the link exists; if that fails the
        // link goes again, so a failed create leaves nothing behind.
        let bridge_mtu = spec.mtu.filter(|_| matches!(spec.kind, LinkKind::Bridge));
        let finish = (|| {
            if bridge_mtu.is_some() || spec.alias.is_some() {
                let set = message::set_message(&spec.name, bridge_mtu, None, None, spec.alias.as_deref());
                self.socket
                    .request(RouteNetlinkMessage::SetLink(set), 0)
                    .map_err(|e| e.into_driver(&format!("{what}: setting its alias and MTU")))?;
            }
            if let LinkKind::Vxlan { remotes, .. } = &spec.kind {
                for remote in remotes {
                    self.add_fdb(&spec.name, *remote)?;
                }
            }
            Ok(())
        })();
        if finish.is_err() {
            let _ = self.delete_link(&spec.name);
        }
        finish
    }

    fn delete_link(&mut self, name: &str) -> Result<()> {
        let request = RouteNetlinkMessage::DelLink(message::by_name(name));
        self.socket.request(request, 0).map_err(|e| match e.errno() {
            Some(Errno::ENODEV) => {
                DriverError::new(ErrorKind::NotFound, format!("link `{name}` does not exist")).with_code("ENODEV")
            }
            Some(Errno::EOPNOTSUPP) => DriverError::new(
                ErrorKind::Unsupported,
                format!("link `{name}` cannot be deleted: it is not a virtual link"),
            )
            .with_code("EOPNOTSUPP"),
            _ => e.into_driver(&format!("deleting link `{name}`")),
        })
    }

    fn set_link(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        up: Option<bool>,
        master: Option<Option<String>>,
    ) -> Result<()> {
        let master = match master {
            Some(Some(master)) => Some(self.existing(&master, "master")?.index),
            Some(None) => Some(0),
            None => None,
        };
        let request = RouteNetlinkMessage::SetLink(message::set_message(name, mtu, up, master, None));
        self.socket.request(request, 0).map_err(|e| match e.errno() {
            Some(Errno::ENODEV) => {
                DriverError::new(ErrorKind::NotFound, format!("link `{name}` does not exist")).with_code("ENODEV")
            }
            Some(Errno::EOPNOTSUPP) if master.is_some_and(|m| m != 0) => DriverError::new(
                ErrorKind::Unsupported,
                format!("changing link `{name}`: its new master is not a bridge"),
            )
            .with_code("EOPNOTSUPP"),
            _ => e.into_driver(&format!("changing link `{name}`")),
        })
    }

    /// Writes a VF's GUIDs. The kernel refuses a PF that is not InfiniBand
    /// (`EOPNOTSUPP`: only an IPoIB device's driver sets VF GUIDs, checked before the VF)
    /// and a VF the PF does not have (`EINVAL`, from the HCA's driver); on an IB link the
    /// VF count is checked first so the message can say how many there are.
    fn set_vf_guids(&mut self, pf: &str, vf: u32, node: u64, port: u64) -> Result<()> {
        let link = self.existing(pf, "physical function")?;
        if link.kind.is_none()
            && link.layer == crate::live::link::NIC_LAYER_INFINIBAND
            && let Some(count) = sysfs::sriov_vfs(&self.sysfs, pf)
            && vf >= count
        {
            return Err(DriverError::new(
                ErrorKind::NotFound,
                format!("`{pf}` has {count} VFs: there is no VF {vf} to write GUIDs to"),
            )
            .with_code("EINVAL"));
        }
        let request = RouteNetlinkMessage::SetLink(message::vf_guid_message(pf, vf, node, port));
        self.socket.request(request, 0).map_err(|e| match e.errno() {
            Some(Errno::EOPNOTSUPP) => DriverError::new(
                ErrorKind::Unsupported,
                format!("`{pf}` takes no VF GUIDs: it is not an InfiniBand link (or its driver sets none)"),
            )
            .with_code("EOPNOTSUPP"),
            Some(Errno::EINVAL) => {
                DriverError::new(ErrorKind::NotFound, format!("`{pf}` has no VF {vf}")).with_code("EINVAL")
            }
            _ => e.into_driver(&format!("writing the GUIDs of VF {vf} of `{pf}`")),
        })
    }

    fn vxlan_remotes(&mut self, vxlan: &str) -> Result<(u32, Vec<IpAddr>)> {
        let link = self.existing(vxlan, "VXLAN")?;
        if !link.is_vxlan() {
            return Err(
                DriverError::new(ErrorKind::Unsupported, format!("`{vxlan}` is not a VXLAN")).with_code("EOPNOTSUPP")
            );
        }
        let index = link.index;
        let mut remotes = self.flood_entries().map_err(|e| e.into_driver("listing VXLAN flood entries"))?;
        Ok((index, remotes.remove(&index).unwrap_or_default()))
    }

    /// Adds a flood entry. The kernel accepts a remote twice without a word; fabrik
    /// reports it as existing, like the simulated links.
    fn add_fdb(&mut self, vxlan: &str, remote: IpAddr) -> Result<()> {
        let (index, remotes) = self.vxlan_remotes(vxlan)?;
        if remotes.contains(&remote) {
            return Err(DriverError::new(ErrorKind::Exists, format!("`{vxlan}` already floods to {remote}"))
                .with_code("EEXIST"));
        }
        let request = RouteNetlinkMessage::NewNeighbour(message::flood_message(index, remote));
        self.socket
            .request(request, NLM_F_CREATE | NLM_F_APPEND)
            .map_err(|e| e.into_driver(&format!("adding remote {remote} to `{vxlan}`")))
    }

    /// Deletes a flood entry; the kernel says nothing when the remote is absent, fabrik
    /// reports it as not found.
    fn del_fdb(&mut self, vxlan: &str, remote: IpAddr) -> Result<()> {
        let (index, remotes) = self.vxlan_remotes(vxlan)?;
        if !remotes.contains(&remote) {
            return Err(DriverError::new(ErrorKind::NotFound, format!("`{vxlan}` does not flood to {remote}"))
                .with_code("ENOENT"));
        }
        let request = RouteNetlinkMessage::DelNeighbour(message::flood_message(index, remote));
        self.socket.request(request, 0).map_err(|e| e.into_driver(&format!("removing remote {remote} from `{vxlan}`")))
    }
}

/// Names the kernel feature behind a link kind, for a kernel that lacks it.
fn kernel_feature(kind: &LinkKind) -> String {
    match kind {
        LinkKind::Bridge => "bridges (module bridge, CONFIG_BRIDGE)".into(),
        LinkKind::Vxlan { .. } => "VXLAN (module vxlan, CONFIG_VXLAN)".into(),
        LinkKind::Vlan { .. } => "802.1Q VLANs (module 8021q, CONFIG_VLAN_8021Q)".into(),
        LinkKind::Veth { .. } => "veth pairs (module veth, CONFIG_VETH)".into(),
        LinkKind::Macvlan { .. } => "macvlan (module macvlan, CONFIG_MACVLAN)".into(),
        LinkKind::Ipoib { .. } => "IPoIB child interfaces (module ib_ipoib, CONFIG_INFINIBAND_IPOIB)".into(),
        LinkKind::Other { kind } => format!("`{kind}` links"),
    }
}

fn create_error(e: NlError, what: &str, kind: &LinkKind) -> DriverError {
    match e.errno() {
        Some(Errno::EOPNOTSUPP) => {
            let said = e.text().map(|t| format!(" (the kernel says: {})", t.trim_end_matches('.'))).unwrap_or_default();
            DriverError::new(
                ErrorKind::Unsupported,
                format!("{what}: this kernel has no {}{said}", kernel_feature(kind)),
            )
            .with_code("EOPNOTSUPP")
        }
        _ => e.into_driver(what),
    }
}

impl Links for NetlinkDriver {
    fn links(&mut self) -> Result<Vec<LiveLink>> {
        self.run(Host::links)
    }

    /// The boot id of the kernel this runs on (a network namespace shares it).
    fn boot_id(&mut self) -> Result<Option<String>> {
        Ok(crate::driver::libvirt::read_boot_id(std::path::Path::new(crate::driver::libvirt::BOOT_ID_PATH)))
    }

    fn hugepages(&mut self) -> Result<Vec<LiveHugepages>> {
        self.run(|host| sysfs::hugepages(&host.sysfs))
    }

    fn create_link(&mut self, spec: &LinkSpec) -> Result<()> {
        let spec = spec.clone();
        self.run(move |host| host.create_link(&spec))
    }

    fn delete_link(&mut self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.run(move |host| host.delete_link(&name))
    }

    fn set_link(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        up: Option<bool>,
        master: Option<Option<String>>,
    ) -> Result<()> {
        let name = name.to_string();
        self.run(move |host| host.set_link(&name, mtu, up, master))
    }

    fn add_fdb(&mut self, vxlan: &str, remote: IpAddr) -> Result<()> {
        let vxlan = vxlan.to_string();
        self.run(move |host| host.add_fdb(&vxlan, remote))
    }

    fn del_fdb(&mut self, vxlan: &str, remote: IpAddr) -> Result<()> {
        let vxlan = vxlan.to_string();
        self.run(move |host| host.del_fdb(&vxlan, remote))
    }

    fn set_sriov_vfs(&mut self, nic: &str, count: u32) -> Result<()> {
        let nic = nic.to_string();
        self.run(move |host| sysfs::set_sriov_vfs(&host.sysfs, &nic, count))
    }

    fn set_vf_guids(&mut self, pf: &str, vf: u32, node: Guid, port: Guid) -> Result<()> {
        let pf = pf.to_string();
        self.run(move |host| host.set_vf_guids(&pf, vf, node.0, port.0))
    }

    // The partition file is the host's, not the namespace's: read and written here.
    fn read_partitions(&mut self, path: &str) -> Result<Option<String>> {
        crate::driver::opensm::read(path)
    }

    fn write_partitions(&mut self, path: &str, factory: &str, block: &str) -> Result<()> {
        crate::driver::opensm::write(path, factory, block)
    }

    fn reload_subnet_manager(&mut self) -> Result<()> {
        crate::driver::opensm::reload(Path::new("/proc"))
    }

    fn set_hugepages(&mut self, numa_node: u32, size: PageSize, count: u64) -> Result<()> {
        self.run(move |host| sysfs::set_hugepages(&host.sysfs, numa_node, size, count))
    }
}
