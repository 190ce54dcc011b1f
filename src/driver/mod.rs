//! Drivers: the only code that touches hosts. One trait per concern, each with a real
//! implementation and a simulated one that keeps the same rules and the same errors.
//!
//! | concern | real | simulated |
//! |---|---|---|
//! | [`Virt`]: domains, networks, storage, node devices | libvirt via the `virt` crate | libvirt's own `test:///` driver |
//! | [`Gpus`]: GPUs and MIG | NVML via `nvml-wrapper` | an in-process GPU model on the MIG catalog |
//! | [`Links`]: links, SR-IOV VFs, hugepages | netlink (`rtnetlink`) and sysfs | in-memory links |
//!
//! The traits are blocking (libvirt and NVML are); async callers run them on
//! `spawn_blocking`, one connection per host. NVML and netlink are host-local: for a
//! remote host the agent (`fabrik agent` over a command's stdio) implements `Gpus` and
//! `Links` by forwarding each call.

pub mod agent;
pub mod connect;
pub mod libvirt;
pub mod netlink;
pub mod nvml;
pub mod observe;
pub mod opensm;
pub mod sim_gpu;
pub mod sim_links;
pub mod vgpu;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::desired::ib::Guid;
use crate::live::{HostInfo, LiveDomain, LiveGpu, LiveHugepages, LiveLink, LiveNetwork, LivePciDevice, LivePool};
use crate::spec::types::{ByteSize, PageSize, PciAddress};

// The error types are the live layer's (a host's observed state records them per
// concern); drivers return them.
pub use crate::live::error::{DriverError, ErrorKind};

pub type Result<T> = std::result::Result<T, DriverError>;

/// A driver as it opened, or why it did not: `Opened<dyn Gpus>`.
pub type Opened<T> = std::result::Result<Box<T>, DriverError>;

/// How a graceful shutdown ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShutdownOutcome {
    /// The guest shut down within the timeout.
    Graceful,
    /// The guest did not; it was left running (the caller decides whether to destroy).
    TimedOut,
    /// It was not running.
    NotRunning,
}

/// libvirt: domains, networks, storage, node devices.
pub trait Virt: Send {
    fn host_info(&mut self) -> Result<HostInfo>;
    fn devices(&mut self) -> Result<Vec<LivePciDevice>>;
    fn domains(&mut self) -> Result<Vec<LiveDomain>>;
    fn networks(&mut self) -> Result<Vec<LiveNetwork>>;
    fn pools(&mut self) -> Result<Vec<LivePool>>;
    /// All five reads above, for observing the host. A driver that can read its concerns
    /// at once (libvirt, over its one connection) does; by default they go one after
    /// another.
    fn read_all(&mut self) -> VirtReads {
        VirtReads {
            info: self.host_info(),
            devices: self.devices(),
            domains: self.domains(),
            networks: self.networks(),
            pools: self.pools(),
        }
    }

    fn define_domain(&mut self, xml: &str) -> Result<()>;
    fn undefine_domain(&mut self, name: &str) -> Result<()>;
    fn start_domain(&mut self, name: &str) -> Result<()>;
    fn shutdown_domain(&mut self, name: &str, timeout: Duration) -> Result<ShutdownOutcome>;
    fn destroy_domain(&mut self, name: &str) -> Result<()>;
    fn set_domain_autostart(&mut self, name: &str, autostart: bool) -> Result<()>;
    /// Resumes a paused domain.
    fn resume_domain(&mut self, name: &str) -> Result<()>;
    /// Sets (replaces) fabrik's element in a domain's `<metadata>`
    /// ([`crate::driver::libvirt::owner`]) in its saved definition and, when it runs, in
    /// the running one: no redefine, so nothing waits for a restart (`fabrik import`).
    fn set_domain_mark(&mut self, name: &str, mark: &str) -> Result<()> {
        let _ = mark;
        Err(DriverError::new(
            ErrorKind::Unsupported,
            format!("cannot mark domain `{name}`: this driver cannot set metadata"),
        ))
    }

    fn define_network(&mut self, xml: &str) -> Result<()>;
    fn start_network(&mut self, name: &str) -> Result<()>;
    fn stop_network(&mut self, name: &str) -> Result<()>;
    fn undefine_network(&mut self, name: &str) -> Result<()>;
    fn set_network_autostart(&mut self, name: &str, autostart: bool) -> Result<()>;

    fn define_pool(&mut self, xml: &str) -> Result<()>;
    fn start_pool(&mut self, name: &str) -> Result<()>;
    fn stop_pool(&mut self, name: &str) -> Result<()>;
    fn undefine_pool(&mut self, name: &str) -> Result<()>;
    fn set_pool_autostart(&mut self, name: &str, autostart: bool) -> Result<()>;
    fn create_volume(&mut self, pool: &str, xml: &str) -> Result<()>;
    /// Creates a volume as a copy of another (a disk from a base image).
    fn clone_volume(&mut self, pool: &str, xml: &str, from_pool: &str, from_volume: &str) -> Result<()>;
    fn delete_volume(&mut self, pool: &str, name: &str) -> Result<()>;
    /// Grows a volume to a capacity (never shrinks: libvirt refuses without a flag).
    fn resize_volume(&mut self, pool: &str, name: &str, capacity: ByteSize) -> Result<()>;
    /// Writes `len` bytes read from `data` over the start of an existing volume
    /// (libvirt's volume upload, streamed from this process in chunks: the host needs no
    /// access to where they came from, and the bytes are never all in memory). A reader
    /// that ends before `len` bytes fails the upload.
    fn upload_volume(&mut self, pool: &str, name: &str, len: u64, data: &mut dyn std::io::Read) -> Result<()>;

    /// Binds a PCI device to vfio-pci for passthrough, and back.
    fn detach_device(&mut self, address: PciAddress) -> Result<()>;
    fn reattach_device(&mut self, address: PciAddress) -> Result<()>;
}

/// What [`Virt::read_all`] read: each concern's result on its own, so one that fails
/// leaves the others.
#[derive(Debug)]
pub struct VirtReads {
    pub info: Result<HostInfo>,
    pub devices: Result<Vec<LivePciDevice>>,
    pub domains: Result<Vec<LiveDomain>>,
    pub networks: Result<Vec<LiveNetwork>>,
    pub pools: Result<Vec<LivePool>>,
}

impl VirtReads {
    /// Whether any read found the host unreachable.
    pub fn unreachable(&self) -> bool {
        let kind = |e: Option<&DriverError>| e.is_some_and(|e| e.kind == ErrorKind::Unreachable);
        kind(self.info.as_ref().err())
            || kind(self.devices.as_ref().err())
            || kind(self.domains.as_ref().err())
            || kind(self.networks.as_ref().err())
            || kind(self.pools.as_ref().err())
    }
}

/// GPUs and MIG. Instances are created at exact placements, beside the ones that stay.
pub trait Gpus: Send {
    fn gpus(&mut self) -> Result<Vec<LiveGpu>>;
    /// Sets the MIG mode; it may be pending until the GPU is reset.
    fn set_mig_mode(&mut self, gpu: PciAddress, enabled: bool) -> Result<crate::live::MigMode>;
    /// Creates a GPU instance of a profile (by `-lgip` id) at a start slice, with one
    /// compute instance filling it; returns the GPU instance id.
    fn create_instance(&mut self, gpu: PciAddress, profile_id: u32, start: u8) -> Result<u32>;
    /// Destroys a GPU instance and its compute instances.
    fn destroy_instance(&mut self, gpu: PciAddress, instance_id: u32) -> Result<()>;
    /// Creates the vGPU device a VM reaches MIG instance `profile@start` through: on a
    /// free SR-IOV VF with the profile's vGPU type, or as the mdev `uuid`, whichever way
    /// the host offers vGPUs on `gpu` (`vgpu.rs`). A device `uuid` names that exists
    /// already is returned as it is (a rerun).
    /// `vf`: in SR-IOV mode, the VF the plan chose (its domain names it); `None` lets
    /// the host take a free one (mdev mode, or a plan made before the host was read).
    fn create_vgpu(
        &mut self,
        gpu: PciAddress,
        profile: &str,
        start: u8,
        uuid: &str,
        vf: Option<PciAddress>,
    ) -> Result<vgpu::VgpuDevice>;
    /// Removes the vGPU device `uuid` names, or in SR-IOV mode the one on VF `vf`; one
    /// that is not there is already removed.
    fn remove_vgpu(&mut self, gpu: PciAddress, uuid: &str, vf: Option<PciAddress>) -> Result<()>;
}

/// What a link should be, for [`Links::create_link`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSpec {
    pub name: String,
    pub kind: crate::live::LinkKind,
    pub mtu: Option<u32>,
    pub master: Option<String>,
    /// Ownership mark, set as the interface alias.
    pub alias: Option<String>,
}

/// Host links, SR-IOV VF counts and hugepage pools.
pub trait Links: Send {
    fn links(&mut self) -> Result<Vec<LiveLink>>;
    fn hugepages(&mut self) -> Result<Vec<LiveHugepages>>;
    fn create_link(&mut self, spec: &LinkSpec) -> Result<()>;
    fn delete_link(&mut self, name: &str) -> Result<()>;
    fn set_link(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        up: Option<bool>,
        master: Option<Option<String>>,
    ) -> Result<()>;
    /// Adds a VXLAN flood entry (all-zeros MAC) towards a remote VTEP.
    fn add_fdb(&mut self, vxlan: &str, remote: std::net::IpAddr) -> Result<()>;
    fn del_fdb(&mut self, vxlan: &str, remote: std::net::IpAddr) -> Result<()>;
    fn set_sriov_vfs(&mut self, nic: &str, count: u32) -> Result<()>;
    /// Writes the InfiniBand node and port GUID of VF `vf` of the physical function `pf`
    /// (`ip link set <pf> vf <vf> node_guid … port_guid …`): netlink's
    /// `IFLA_VF_IB_NODE_GUID` / `IFLA_VF_IB_PORT_GUID` on the PF. Refused for a PF that is
    /// not InfiniBand, a VF it does not have, or a VF a guest holds.
    fn set_vf_guids(&mut self, pf: &str, vf: u32, node: Guid, port: Guid) -> Result<()>;
    /// The subnet manager's partition file; `None` when it does not exist.
    fn read_partitions(&mut self, path: &str) -> Result<Option<String>>;
    /// Sets fabrik's block of factory `factory` in the partition file to `block`,
    /// keeping every other line ([`crate::render::opensm::with_block`]); the file is
    /// replaced atomically (a temporary file beside it, renamed over it).
    fn write_partitions(&mut self, path: &str, factory: &str, block: &str) -> Result<()>;
    /// Has the subnet manager re-read its partition file (OpenSM: `SIGHUP`).
    fn reload_subnet_manager(&mut self) -> Result<()>;
    fn set_hugepages(&mut self, numa_node: u32, size: PageSize, count: u64) -> Result<()>;
    /// The host's boot id (`/proc/sys/kernel/random/boot_id`, new at every boot), read
    /// where the driver runs: through the agent for a remote host, so a reboot is seen
    /// whatever the libvirt URI. `None` where the driver cannot tell (twins, no agent).
    fn boot_id(&mut self) -> Result<Option<String>> {
        Ok(None)
    }
}

/// Memory a hugepage pool holds.
pub fn pool_bytes(size: PageSize, count: u64) -> ByteSize {
    ByteSize(size.size().bytes().saturating_mul(count))
}
