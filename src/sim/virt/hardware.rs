//! The hardware a twin reports: exactly the host's declaration. libvirt's test driver
//! reports no NUMA topology and no PCI devices for a custom node, so the twin gives what
//! libvirt would read on the declared host.

use crate::live::{HostInfo, LiveNumaNode, LivePciDevice, Sriov};
use crate::spec::model::{Host, NicKind};
use crate::spec::types::PciAddress;

/// ACPI SLIT distances: 10 to itself, 21 to the other nodes (a two-socket server).
const DISTANCE_LOCAL: u32 = 10;
const DISTANCE_REMOTE: u32 = 21;
/// PCI vendor ids: NVIDIA, and Mellanox (NVIDIA networking).
const VENDOR_NVIDIA: u16 = 0x10de;
const VENDOR_MELLANOX: u16 = 0x15b3;
/// ConnectX-7's device id, for every simulated NIC.
const DEVICE_CONNECTX: u16 = 0x1021;
/// PCI classes: 3D controller, Ethernet controller, InfiniBand controller.
const CLASS_3D: u32 = 0x030200;
const CLASS_ETHERNET: u32 = 0x020000;
const CLASS_INFINIBAND: u32 = 0x020700;

pub fn host_info(host: &Host) -> HostInfo {
    let ids: Vec<u32> = host.numa_nodes.iter().map(|n| n.id.value).collect();
    let numa = host
        .numa_nodes
        .iter()
        .map(|n| LiveNumaNode {
            id: n.id.value,
            cpus: n.cpus.value.clone(),
            memory: n.memory.value,
            // The declared row, as the host's SLIT would give it; else local and remote.
            distances: n.distances.as_ref().map(|d| d.value.clone()).unwrap_or_else(|| {
                ids.iter().map(|&o| if o == n.id.value { DISTANCE_LOCAL } else { DISTANCE_REMOTE }).collect()
            }),
            socket: n.socket.as_ref().map(|s| s.value),
        })
        .collect();
    HostInfo {
        hostname: host.name.value.clone(),
        hypervisor: "libvirt test driver (simulated twin)".to_string(),
        cpu_model: None,
        arch: Some(host.arch().to_string()),
        numa,
    }
}

/// The declared GPUs and NICs; those in `detached` are bound to vfio-pci (or their
/// model's VFIO variant).
pub fn devices(host: &Host, detached: &[PciAddress]) -> Vec<LivePciDevice> {
    let mut out = Vec::new();
    for (i, g) in host.gpus.iter().enumerate() {
        let info = g.model.value.info();
        let vfio = detached.contains(&g.address.value);
        out.push(LivePciDevice {
            address: g.address.value,
            nodedev: crate::driver::libvirt::xml::nodedev_name(g.address.value),
            vendor_id: VENDOR_NVIDIA,
            device_id: info.pci_device_id,
            class: CLASS_3D,
            product: Some(info.nvml_name.to_string()),
            numa_node: Some(g.numa_node.value),
            iommu_group: Some(i as u32),
            // A twin's host has the model's VFIO variant driver (GB200), as libvirt binds it.
            driver: Some(match (vfio, g.model.value.vfio_variant()) {
                (true, Some(variant)) => variant.to_string(),
                (true, None) => "vfio-pci".to_string(),
                (false, _) => "nvidia".to_string(),
            }),
            netdevs: Vec::new(),
            sriov: None,
        });
    }
    for (i, n) in host.nics.iter().enumerate() {
        let Some(address) = n.address.as_ref().map(|a| a.value) else { continue };
        out.push(LivePciDevice {
            address,
            nodedev: crate::driver::libvirt::xml::nodedev_name(address),
            vendor_id: VENDOR_MELLANOX,
            device_id: DEVICE_CONNECTX,
            class: match n.kind.value {
                NicKind::Ethernet => CLASS_ETHERNET,
                NicKind::Infiniband => CLASS_INFINIBAND,
            },
            product: Some("ConnectX (simulated)".to_string()),
            numa_node: n.numa_node.as_ref().map(|x| x.value),
            iommu_group: Some((host.gpus.len() + i) as u32),
            driver: Some("mlx5_core".to_string()),
            netdevs: vec![n.name.value.clone()],
            sriov: n.sriov_vfs.as_ref().map(|v| Sriov { total_vfs: v.value, num_vfs: 0, vfs: Vec::new() }),
        });
    }
    out.sort_by_key(|d| d.address);
    out
}

/// Whether a PCI address is one the host declares.
pub fn declared(host: &Host, address: PciAddress) -> bool {
    host.gpus.iter().any(|g| g.address.value == address)
        || host.nics.iter().any(|n| n.address.as_ref().is_some_and(|a| a.value == address))
}
