//! A host's hardware as libvirt and sysfs report it: NUMA cells, PCI devices, hugepages.

use serde::{Deserialize, Serialize};

use crate::spec::types::{ByteSize, CpuSet, PageSize, PciAddress};

/// libvirt's capabilities and node info, normalized.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    /// libvirt's hypervisor type and version (`QEMU 7.2.0`).
    pub hypervisor: String,
    pub cpu_model: Option<String>,
    /// The CPU architecture libvirt's capabilities give (`x86_64`, `aarch64`), from a
    /// QEMU/KVM host; `None` from drivers whose capabilities describe no real machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    pub numa: Vec<LiveNumaNode>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveNumaNode {
    pub id: u32,
    pub cpus: CpuSet,
    pub memory: ByteSize,
    /// Distances to every node, indexed by node id.
    pub distances: Vec<u32>,
    /// CPU socket of the node's CPUs, when libvirt says.
    pub socket: Option<u32>,
}

/// One hugepage pool: per NUMA node and page size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveHugepages {
    pub numa_node: u32,
    pub size: PageSize,
    pub total: u64,
    pub free: u64,
}

/// A PCI device from libvirt's node devices (GPUs, NICs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePciDevice {
    pub address: PciAddress,
    /// libvirt's node device name (`pci_0000_3b_00_0`).
    pub nodedev: String,
    pub vendor_id: u16,
    pub device_id: u16,
    pub class: u32,
    pub product: Option<String>,
    pub numa_node: Option<u32>,
    pub iommu_group: Option<u32>,
    /// Bound kernel driver (`nvidia`, `vfio-pci`, `mlx5_core`), if any.
    pub driver: Option<String>,
    /// Network interface names of the device (for NICs).
    pub netdevs: Vec<String>,
    pub sriov: Option<Sriov>,
}

/// SR-IOV capability of a physical function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sriov {
    pub total_vfs: u32,
    pub num_vfs: u32,
    pub vfs: Vec<PciAddress>,
}
