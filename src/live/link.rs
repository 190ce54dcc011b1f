//! Host network links as netlink reports them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::spec::types::PciAddress;

/// The link layer the kernel reports for a physical NIC (a link without a kind): an
/// Ethernet NIC, an InfiniBand one (IPoIB). Read into [`LinkKind::Other`].
pub const NIC_LAYER_ETHERNET: &str = "ether";
pub const NIC_LAYER_INFINIBAND: &str = "infiniband";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveLink {
    pub name: String,
    pub kind: LinkKind,
    pub mtu: u32,
    pub up: bool,
    /// The bridge this link is enslaved to.
    pub master: Option<String>,
    /// The interface alias (`ip link set … alias`); fabrik marks links it owns here.
    pub alias: Option<String>,
    /// SR-IOV virtual functions configured (sysfs `sriov_numvfs`), for physical NICs.
    pub sriov_vfs: Option<u32>,
    /// Where the NIC's VFs sit on PCI, for an SR-IOV physical function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sriov_pci: Option<SriovPci>,
}

/// Where a physical function's VFs sit on PCI (sysfs `device`, `device/sriov_offset`,
/// `device/sriov_stride`): VF n has routing id PF + offset + n × stride, as the kernel
/// places it (`pci_iov_virtfn_bus`/`_devfn`), whether or not the VFs exist yet. So a
/// plan made before the VFs are created can name each VF's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SriovPci {
    pub pf: PciAddress,
    pub offset: u16,
    pub stride: u16,
}

impl SriovPci {
    /// The PCI address of VF `n` (from 0), `None` past the last bus.
    pub fn vf(&self, n: u32) -> Option<PciAddress> {
        let PciAddress { domain, bus, device, function } = self.pf;
        let rid = (u32::from(bus) << 8) | (u32::from(device) << 3) | u32::from(function);
        let vf = rid + u32::from(self.offset) + n * u32::from(self.stride);
        let bus = u8::try_from(vf >> 8).ok()?;
        Some(PciAddress { domain, bus, device: ((vf >> 3) & 0x1f) as u8, function: (vf & 0x7) as u8 })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum LinkKind {
    Bridge,
    Vxlan {
        vni: u32,
        local: Option<IpAddr>,
        port: u16,
        parent: Option<String>,
        remotes: Vec<IpAddr>,
    },
    Vlan {
        id: u16,
        parent: String,
    },
    Veth {
        peer: Option<String>,
    },
    Macvlan {
        parent: String,
    },
    /// An IPoIB child interface of an InfiniBand link for a partition
    /// (`ip link add link ib0 name ib0.8001 type ipoib pkey 0x8001`); the kernel sets
    /// the full-membership bit of `pkey`.
    Ipoib {
        parent: String,
        pkey: u16,
    },
    /// A physical NIC or anything else fabrik does not manage the kind of (`ib`, `dummy`).
    Other {
        kind: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vf_addresses_follow_offset_and_stride() {
        let pf = PciAddress::parse("0000:3b:00.0").unwrap();
        let layout = SriovPci { pf, offset: 2, stride: 1 };
        assert_eq!(layout.vf(0).unwrap().to_string(), "0000:3b:00.2");
        assert_eq!(layout.vf(6).unwrap().to_string(), "0000:3b:01.0");
        assert_eq!(layout.vf(254).unwrap().to_string(), "0000:3c:00.0", "past the PF's bus");
        let last = SriovPci { pf: PciAddress::parse("0000:ff:00.0").unwrap(), offset: 1, stride: 1 };
        assert_eq!(last.vf(255), None);
    }
}
