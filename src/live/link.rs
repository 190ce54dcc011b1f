//! Host network links as netlink reports them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

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
    /// A physical NIC or anything else fabrik does not manage the kind of (`ib`, `dummy`).
    Other {
        kind: String,
    },
}
