//! The desired state: what every host should run, with placement decided.
//!
//! Built from a checked [`Spec`](crate::spec::model::Spec) by [`build`]: replicas
//! expanded, each VM on a host, whole GPUs and MIG slices chosen, vCPUs pinned when the
//! policy asks, networks and links on the hosts that need them. Pure data, normalized the
//! way live state is, so plan can compare the two field by field. Rendering to libvirt
//! XML is `render`; ids and ordering are `graph`.

pub mod addr;
pub mod build;
pub mod ib;
pub mod id;
pub mod mac;
pub mod names;
pub mod net;
pub mod rails;
pub mod storage;
pub mod topology;
pub mod vgpu;

pub use build::build;
pub use id::{ResourceId, ResourceKind};

use serde::{Deserialize, Serialize};

use crate::hw::GpuModel;
use crate::spec::model::{DiskBus, Firmware, ImageFormat, NetKind, PoolKind, Power};
use crate::spec::types::{ByteSize, CpuSet, PageSize, PciAddress};

/// The whole factory as it should be.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub factory: String,
    pub hosts: Vec<DesiredHost>,
    /// Networks that hand out addresses, by name: what [`addr::keep_live`] allocates from.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ipam: std::collections::BTreeMap<String, addr::Ipam>,
}

/// Each VM of this factory with its live domain, where its host runs one this factory
/// marked: what plan and apply may read back (MACs, addresses, volume names). A domain
/// another factory marked, or one marked with the empty name by an older unnamed apply, is
/// never ours. Hosts and domains are looked up by name through an index: linear in them.
pub fn marked_domains<'a>(
    desired: &'a Desired,
    live: &'a [crate::live::LiveHost],
) -> Vec<(&'a DesiredHost, &'a DesiredVm, &'a crate::live::LiveDomain)> {
    let by_host: std::collections::HashMap<&str, &crate::live::LiveHost> =
        live.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut out = Vec::new();
    for host in &desired.hosts {
        let Some(l) = by_host.get(host.name.as_str()) else { continue };
        let domains: std::collections::HashMap<&str, &crate::live::LiveDomain> =
            l.domains.iter().map(|d| (d.name.as_str(), d)).collect();
        for vm in &host.vms {
            let Some(domain) = domains.get(vm.name.as_str()) else { continue };
            if domain.owner.as_ref().is_some_and(|o| !o.factory.is_empty() && o.factory == desired.factory) {
                out.push((host, vm, *domain));
            }
        }
    }
    out
}

/// Everything one host should have.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredHost {
    pub name: String,
    pub uri: String,
    /// The CPU architecture its VMs are rendered for ([`Host::arch`](crate::spec::model::Host::arch)).
    #[serde(default)]
    pub arch: crate::hw::Arch,
    pub hugepages: Vec<DesiredHugepages>,
    /// SR-IOV VF counts of physical NICs.
    #[serde(default)]
    pub vfs: Vec<DesiredVfs>,
    pub gpus: Vec<DesiredGpu>,
    pub links: Vec<DesiredLink>,
    pub networks: Vec<DesiredNetwork>,
    pub pools: Vec<DesiredPool>,
    pub volumes: Vec<DesiredVolume>,
    pub vms: Vec<DesiredVm>,
    /// The VM NICs on InfiniBand partitions, with the GUIDs of their VFs ([`ib`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ib_ports: Vec<ib::IbPort>,
    /// The factory's partitions in the partition file of the subnet manager this host
    /// runs (`subnet-manager`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<DesiredPartitions>,
}

/// fabrik's block of a subnet manager's partition file ([`crate::render::opensm`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredPartitions {
    pub id: ResourceId,
    /// The file, absolute, on the host.
    pub path: String,
    /// What the block holds: `fabrik partitions` of the factory.
    pub block: String,
}

/// A hugepage pool: pages of one size on one NUMA node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredHugepages {
    pub id: ResourceId,
    pub numa_node: u32,
    pub size: PageSize,
    pub count: u64,
}

/// The virtual functions a physical NIC should have (its `sriov-vfs`), for SR-IOV and
/// InfiniBand-partition networks to hand out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredVfs {
    pub id: ResourceId,
    pub nic: String,
    pub count: u32,
}

/// What fabrik does with a GPU it owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum GpuSetup {
    /// Bound to vfio-pci, MIG off, for one VM.
    Passthrough,
    /// MIG on, with these instances at these starts.
    Mig { instances: Vec<DesiredMigInstance> },
    /// Shared in turn (vGPU time slicing); MIG off.
    TimeSliced,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredGpu {
    pub id: ResourceId,
    pub address: PciAddress,
    pub model: GpuModel,
    pub numa_node: u32,
    pub setup: GpuSetup,
}

/// One MIG GPU instance at a placement (`mig:gpu01/0000:1b:00.0/3g.71gb@4`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredMigInstance {
    pub id: ResourceId,
    /// The profile's name on this model and its `-lgip` id.
    pub profile: String,
    pub profile_id: u32,
    pub start: u8,
    pub size: u8,
    /// The VM that gets it, when one does.
    pub vm: Option<ResourceId>,
    /// On a GPU whose host offers vGPUs on SR-IOV VFs: the VF its vGPU is on (VF n for
    /// the instance at placement n), from the host ([`vgpu::on_hosts`]); the domain
    /// names it by address. `None`: an mdev, named by UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vgpu_vf: Option<PciAddress>,
}

/// A host link fabrik creates: a bridge, a VXLAN or VLAN device under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredLink {
    pub id: ResourceId,
    pub name: String,
    pub kind: crate::live::LinkKind,
    pub mtu: Option<u32>,
    /// The bridge it is a port of.
    pub master: Option<String>,
    /// For a bridge: the host NIC that must be its port (a `kind: bridge` network's
    /// `parent`), its uplink to the world outside the host. fabrik does not own the NIC;
    /// it only makes it a port of the bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
}

/// A libvirt network on a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredNetwork {
    pub id: ResourceId,
    /// libvirt's name for it (the factory network's name).
    pub name: String,
    pub kind: NetKind,
    pub tenant: Option<String>,
    /// The Linux bridge VMs' taps join (bridge, VLAN, VXLAN networks).
    pub bridge: Option<String>,
    /// The SR-IOV physical function whose VFs form the pool (sriov, ib-partition).
    pub pf: Option<String>,
    pub vlan: Option<u16>,
    pub mtu: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredPool {
    pub id: ResourceId,
    pub name: String,
    pub kind: PoolKind,
    pub path: String,
    pub source: Option<String>,
}

/// A volume: a copy of a base image, or an empty disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredVolume {
    pub id: ResourceId,
    pub pool: String,
    pub name: String,
    pub capacity: Option<ByteSize>,
    pub format: ImageFormat,
    /// The base image: its pool and volume name, or its source path/URL.
    pub image: Option<DesiredImage>,
    /// May be deleted when its VM goes (the disk says `delete-with-vm`).
    pub deletable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredImage {
    pub pool: String,
    pub volume: String,
    pub source: String,
    /// The declared SHA-256 (hex) an image fetched from a URL or `file:` must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A VM as it should be defined and run on its host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesiredVm {
    pub id: ResourceId,
    /// The domain's name (`acme-vllm-0` for a replica).
    pub name: String,
    pub tenant: String,
    pub vcpus: u32,
    pub memory: ByteSize,
    pub hugepages: Option<PageSize>,
    /// Host CPU of each vCPU, when pinned (index = vCPU).
    pub vcpu_pins: Vec<u32>,
    /// Host CPUs for QEMU's emulator threads, when pinned.
    pub emulator_pin: Option<CpuSet>,
    /// NUMA node the memory is bound to strictly (`<numatune>`), when the policy asks.
    pub numa_node: Option<u32>,
    /// Guest NUMA cells: (guest cell id, vCPUs, memory, host node its devices sit on).
    pub numa_cells: Vec<GuestCell>,
    /// Whole GPUs passed through.
    pub gpus: Vec<PciAddress>,
    /// MIG instances it gets (ids of `DesiredMigInstance`).
    pub mig: Vec<ResourceId>,
    /// GPUs in `time-sliced` mode it gets a slice of (a vGPU on each).
    #[serde(default)]
    pub time_sliced: Vec<PciAddress>,
    pub nics: Vec<DesiredNic>,
    pub disks: Vec<DesiredDisk>,
    pub firmware: Firmware,
    pub power: Power,
    pub autostart: bool,
    /// Its cloud-init NoCloud seed, when its guest has something to be told (see
    /// [`crate::guest::volume`]). Boxed: a VM without one holds a pointer rather than
    /// 160 bytes (100,000 VMs, issue 14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Box<crate::guest::DesiredSeed>>,
    /// Hash of everything above, recorded in the domain's ownership metadata.
    pub spec_hash: String,
}

impl DesiredVm {
    /// What the VM needs that a host reboot takes away and fabrik must rebuild before
    /// the VM starts: `hugepages`, `sr-iov VFs`, `MIG instances`, `vGPU devices`. Such a
    /// VM has libvirt's autostart off (it would race the rebuild); empty for the others.
    pub fn boot_volatile(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.hugepages.is_some() {
            out.push("hugepages");
        }
        if self.nics.iter().any(|n| n.sriov) {
            out.push("SR-IOV VFs");
        }
        if !self.mig.is_empty() {
            out.push("MIG instances");
        }
        if !self.mig.is_empty() || !self.time_sliced.is_empty() {
            out.push("vGPU devices");
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestCell {
    pub id: u32,
    pub vcpus: CpuSet,
    pub memory: ByteSize,
    /// The host NUMA node whose GPUs/NICs sit behind this cell's PCIe expander bus; for
    /// a cell of memory only (no vCPUs, no memory of the guest's), the host node of GPU
    /// memory it mirrors (GB200), so in-guest MIG sees its memory nodes.
    pub host_node: u32,
    /// Distance to every guest cell, by cell id, from the host's node distances; empty
    /// when the host declares none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distances: Vec<u32>,
}

impl GuestCell {
    /// A cell that mirrors a host node of GPU memory: no vCPUs, no guest memory.
    pub fn memory_only(&self) -> bool {
        self.vcpus.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredNic {
    pub network: String,
    /// `virtio` on the network's bridge, or an SR-IOV VF from its pool.
    pub sriov: bool,
    /// The NIC's `mac`, else one derived from factory, tenant, VM and index, unique in
    /// the factory and kept while the VM runs (see [`mac`]).
    pub mac: String,
    /// The MAC was given in the files (`mac`), not derived.
    #[serde(default)]
    pub declared: bool,
    /// The NIC's IPv4/IPv6 address on a network with a `subnet`: its `address`, else one
    /// allocated from the network's ranges and kept while the VM exists (see [`addr`]).
    /// Guest configuration reads it (with prefix, gateway and DNS) from here. Boxed, as
    /// `rail`: a NIC without one holds a pointer, not 64 bytes (and 56 for the rail), which
    /// 200,000 NICs of 10,000 hosts feel (issue 14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Box<addr::NicAddress>>,
    /// The GPU rail its VF comes from, for a multi-GPU VM on an InfiniBand partition
    /// ([`rails`]); `network` is then that rail's pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rail: Option<Box<rails::NicRail>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredDisk {
    /// Guest device name (`vda`, `sda`).
    pub target: String,
    pub bus: DiskBus,
    pub pool: String,
    pub volume: String,
}
