//! Simulated host links for `--sim` twins: bridges, VXLAN, VLAN, veth and macvlan,
//! SR-IOV VF counts and hugepage pools kept in memory, with the rules and the error kinds
//! of the netlink driver on a Linux kernel. The state is plain data (serde both ways), so
//! a twin is saved between runs and an agent can serve it (`fabrik agent --sim-state`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::driver::netlink::check_sriov_change;
use crate::driver::{DriverError, ErrorKind, Guid, LinkSpec, Links, Result};
pub use crate::live::link::{NIC_LAYER_ETHERNET, NIC_LAYER_INFINIBAND};
use crate::live::{LinkKind, LiveHugepages, LiveLink};
use crate::spec::types::PageSize;

/// What the kernel allows: `IFNAMSIZ` less the terminating zero.
const NAME_BYTES_MAX: usize = 15;
/// `ETH_MIN_MTU` and `ETH_MAX_MTU`.
const MTU_MIN: u32 = 68;
const MTU_MAX: u32 = 65_535;
/// A new link's MTU when nothing else decides it (`ETH_DATA_LEN`).
const MTU_DEFAULT: u32 = 1500;
/// VLAN ids 0..4095; 4095 is reserved.
const VLAN_ID_LIMIT: u16 = 4095;
/// VNIs are 24 bits.
const VNI_LIMIT: u32 = 1 << 24;
/// The kernel's VXLAN port when none is given (the `vxlan_port` module parameter).
const VXLAN_PORT_DEFAULT: u16 = 8472;

/// A host's simulated links and hugepage pools.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimLinks {
    /// In creation order, like interface indexes.
    #[serde(default)]
    pub links: Vec<SimLink>,
    #[serde(default)]
    pub hugepages: Vec<SimHugepages>,
    /// The subnet manager the host runs, if any: its partition file and re-reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_manager: Option<SimSubnetManager>,
}

/// A twin's OpenSM: files by path (a partition file among them) and how often it
/// re-read them. `running: false` refuses a reload, as a host without OpenSM does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSubnetManager {
    pub running: bool,
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub reloads: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimLink {
    pub link: LiveLink,
    /// VFs the NIC supports (sysfs `sriov_totalvfs`); `None` without SR-IOV.
    #[serde(default)]
    pub sriov_total: Option<u32>,
    /// Made by `create_link`, so it can be deleted (a physical NIC cannot).
    #[serde(default)]
    pub created: bool,
    /// A bridge whose MTU was set keeps it; otherwise it follows its ports' smallest.
    #[serde(default)]
    pub mtu_fixed: bool,
    /// The InfiniBand node and port GUID written to each VF (by index), for an IB PF.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vf_guids: BTreeMap<u32, VfGuids>,
    /// VFs a guest holds (bound to `vfio-pci` and open): their GUIDs cannot change.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub vfs_in_use: BTreeSet<u32>,
}

/// The GUIDs of one VF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VfGuids {
    pub node: Guid,
    pub port: Guid,
}

/// One page pool of a NUMA node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimHugepages {
    pub numa_node: u32,
    pub size: PageSize,
    pub total: u64,
    pub free: u64,
    /// The most pages the node's memory holds; a larger request gets this many and an
    /// error, as the kernel does when it runs out of contiguous memory.
    #[serde(default)]
    pub capacity: Option<u64>,
}

fn error(kind: ErrorKind, code: &str, message: String) -> DriverError {
    DriverError::new(kind, message).with_code(code)
}

fn not_found(role: &str, name: &str) -> DriverError {
    error(ErrorKind::NotFound, "ENODEV", format!("{role} `{name}` does not exist"))
}

impl SimLinks {
    pub fn new() -> SimLinks {
        SimLinks::default()
    }

    /// Reads a saved state.
    pub fn load(path: &Path) -> std::io::Result<SimLinks> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        crate::files::replace(path, (text + "\n").as_bytes())
    }

    /// Adds a physical NIC (up, not deletable), with SR-IOV when `sriov_total` is given.
    pub fn add_nic(&mut self, name: &str, mtu: u32, sriov_total: Option<u32>) -> &mut SimLinks {
        self.add_nic_of(name, NIC_LAYER_ETHERNET, mtu, sriov_total)
    }

    /// Adds a physical NIC of a link layer (`ether`, `infiniband`: what the kernel reports
    /// for a link without a kind).
    pub fn add_nic_of(&mut self, name: &str, layer: &str, mtu: u32, sriov_total: Option<u32>) -> &mut SimLinks {
        self.links.push(SimLink {
            link: LiveLink {
                name: name.to_string(),
                kind: LinkKind::Other { kind: layer.into() },
                mtu,
                up: true,
                master: None,
                alias: None,
                sriov_vfs: sriov_total.map(|_| 0),
                sriov_pci: None,
            },
            sriov_total,
            created: false,
            mtu_fixed: true,
            vf_guids: BTreeMap::new(),
            vfs_in_use: BTreeSet::new(),
        });
        self
    }

    /// Gives a NIC its place on PCI (where its VFs go).
    pub fn set_sriov_pci(&mut self, nic: &str, layout: crate::live::SriovPci) -> &mut SimLinks {
        if let Some(link) = self.find_mut(nic) {
            link.link.sriov_pci = Some(layout);
        }
        self
    }

    /// Adds an empty hugepage pool to a NUMA node.
    pub fn add_hugepages(&mut self, numa_node: u32, size: PageSize, capacity: Option<u64>) -> &mut SimLinks {
        self.hugepages.push(SimHugepages { numa_node, size, total: 0, free: 0, capacity });
        self
    }

    fn find(&self, name: &str) -> Option<&SimLink> {
        self.links.iter().find(|l| l.link.name == name)
    }

    fn find_mut(&mut self, name: &str) -> Option<&mut SimLink> {
        self.links.iter_mut().find(|l| l.link.name == name)
    }

    fn existing(&self, name: &str, role: &str) -> Result<&SimLink> {
        self.find(name).ok_or_else(|| not_found(role, name))
    }

    /// The master a link may be enslaved to: an existing bridge, and not itself one.
    fn check_master(&self, link: &str, link_is_bridge: bool, master: &str) -> Result<()> {
        let m = self.existing(master, "master")?;
        if !matches!(m.link.kind, LinkKind::Bridge) {
            return Err(error(
                ErrorKind::Unsupported,
                "EOPNOTSUPP",
                format!("changing link `{link}`: its new master is not a bridge"),
            ));
        }
        if link_is_bridge || link == master {
            return Err(error(
                ErrorKind::Refused,
                "ELOOP",
                format!("changing link `{link}`: can not enslave a bridge to a bridge"),
            ));
        }
        Ok(())
    }

    /// The MTU a link may have: within the Ethernet bounds and, for VLAN and macvlan,
    /// not above the parent's.
    fn check_mtu(&self, what: &str, kind: &LinkKind, mtu: u32) -> Result<()> {
        if !(MTU_MIN..=MTU_MAX).contains(&mtu) {
            return Err(error(
                ErrorKind::Refused,
                "EINVAL",
                format!("{what}: mtu {mtu} is outside {MTU_MIN}..={MTU_MAX}"),
            ));
        }
        if let LinkKind::Vlan { parent, .. } | LinkKind::Macvlan { parent } = kind
            && let Some(p) = self.find(parent)
            && mtu > p.link.mtu
        {
            return Err(error(
                ErrorKind::Refused,
                "EINVAL",
                format!("{what}: mtu {mtu} is above its parent's ({})", p.link.mtu),
            ));
        }
        Ok(())
    }

    /// A bridge whose MTU was never set takes its ports' smallest (1500 without ports).
    fn adjust_bridge_mtus(&mut self) {
        let mtus: Vec<(usize, u32)> = self
            .links
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l.link.kind, LinkKind::Bridge) && !l.mtu_fixed)
            .map(|(i, bridge)| {
                let ports = self.links.iter().filter(|l| l.link.master.as_deref() == Some(&bridge.link.name));
                (i, ports.map(|p| p.link.mtu).min().unwrap_or(MTU_DEFAULT))
            })
            .collect();
        for (i, mtu) in mtus {
            self.links[i].link.mtu = mtu;
        }
    }

    fn check_create(&self, spec: &LinkSpec) -> Result<Option<String>> {
        let what = format!("creating link `{}`", spec.name);
        check_name(&what, &spec.name)?;
        if self.find(&spec.name).is_some() {
            return Err(error(ErrorKind::Exists, "EEXIST", format!("{what}: a link of that name exists")));
        }
        if let Some(master) = &spec.master {
            self.check_master(&spec.name, matches!(spec.kind, LinkKind::Bridge), master)?;
        }
        let mut peer_name = None;
        match &spec.kind {
            LinkKind::Bridge => {}
            LinkKind::Vxlan { vni, local, port, parent, remotes: _ } => {
                if let Some(parent) = parent {
                    self.existing(parent, "parent link")?;
                }
                if *vni >= VNI_LIMIT {
                    return Err(error(ErrorKind::Refused, "ERANGE", format!("{what}: VNI {vni} is above 24 bits")));
                }
                let port = vxlan_port(*port);
                let v6 = local.is_some_and(|l| l.is_ipv6());
                let clash = self.links.iter().any(|l| match &l.link.kind {
                    LinkKind::Vxlan { vni: v, port: p, local: lo, .. } => {
                        v == vni && *p == port && lo.is_some_and(|l| l.is_ipv6()) == v6
                    }
                    _ => false,
                });
                if clash {
                    return Err(error(
                        ErrorKind::Exists,
                        "EEXIST",
                        format!("{what}: a VXLAN device with the specified VNI already exists"),
                    ));
                }
            }
            LinkKind::Vlan { id, parent } => {
                self.existing(parent, "parent link")?;
                if *id >= VLAN_ID_LIMIT {
                    return Err(error(ErrorKind::Refused, "ERANGE", format!("{what}: VLAN id {id} is out of range")));
                }
                let clash = self
                    .links
                    .iter()
                    .any(|l| matches!(&l.link.kind, LinkKind::Vlan { id: i, parent: p } if i == id && p == parent));
                if clash {
                    return Err(error(
                        ErrorKind::Exists,
                        "EEXIST",
                        format!("{what}: `{parent}` already has VLAN {id}"),
                    ));
                }
            }
            LinkKind::Veth { peer } => {
                let peer = match peer {
                    Some(peer) => {
                        check_name(&what, peer)?;
                        if self.find(peer).is_some() || *peer == spec.name {
                            return Err(error(
                                ErrorKind::Exists,
                                "EEXIST",
                                format!("{what}: its peer `{peer}` exists"),
                            ));
                        }
                        peer.clone()
                    }
                    None => (0..)
                        .map(|n| format!("veth{n}"))
                        .find(|n| self.find(n).is_none() && *n != spec.name)
                        .unwrap_or_default(),
                };
                peer_name = Some(peer);
            }
            LinkKind::Macvlan { parent } => {
                self.existing(parent, "parent link")?;
            }
            // As a kernel does: without an InfiniBand HCA there is no `ib_ipoib` and the
            // kind is unknown (`EOPNOTSUPP`, "Unknown device type", what this machine's
            // kernel says); with it, a parent that is not IPoIB is `ENODEV`
            // (`ipoib_new_child_link`), a pkey of 0 `EINVAL`, a second child of one
            // pkey `ENOTUNIQ`.
            LinkKind::Ipoib { parent, pkey } => {
                let infiniband = LinkKind::Other { kind: NIC_LAYER_INFINIBAND.into() };
                let p = self.existing(parent, "parent link")?;
                if !self.links.iter().any(|l| l.link.kind == infiniband) {
                    return Err(error(
                        ErrorKind::Unsupported,
                        "EOPNOTSUPP",
                        format!(
                            "{what}: this kernel has no IPoIB child interfaces (module ib_ipoib, CONFIG_INFINIBAND_IPOIB) (the kernel says: Unknown device type)"
                        ),
                    ));
                }
                if p.link.kind != infiniband {
                    return Err(error(
                        ErrorKind::NotFound,
                        "ENODEV",
                        format!("{what}: `{parent}` is not an InfiniBand link: an IPoIB child needs an IPoIB parent"),
                    ));
                }
                if pkey & 0x7fff == 0 {
                    return Err(error(
                        ErrorKind::Refused,
                        "EINVAL",
                        format!("{what}: pkey {pkey:#06x} is not a partition"),
                    ));
                }
                let clash = self.links.iter().any(|l| {
                    matches!(&l.link.kind, LinkKind::Ipoib { parent: q, pkey: k } if q == parent && (k | 0x8000) == (pkey | 0x8000))
                });
                if clash {
                    return Err(error(
                        ErrorKind::Exists,
                        "ENOTUNIQ",
                        format!("{what}: `{parent}` already has a child for pkey {:#06x}", pkey | 0x8000),
                    ));
                }
            }
            LinkKind::Other { kind } => {
                return Err(error(
                    ErrorKind::Unsupported,
                    "EOPNOTSUPP",
                    format!("{what}: the simulated host has no `{kind}` links"),
                ));
            }
        }
        if let Some(mtu) = spec.mtu {
            self.check_mtu(&what, &spec.kind, mtu)?;
        }
        let mut remotes = Vec::new();
        if let LinkKind::Vxlan { remotes: wanted, .. } = &spec.kind {
            for remote in wanted {
                if remotes.contains(remote) {
                    return Err(flood_exists(&spec.name, *remote));
                }
                remotes.push(*remote);
            }
        }
        Ok(peer_name)
    }

    /// Deletes links and everything the kernel deletes with them: a veth's peer, and the
    /// VLAN, macvlan and VXLAN links on top; ports of a deleted bridge are released.
    fn remove(&mut self, name: &str) {
        let mut doomed = vec![name.to_string()];
        let mut i = 0;
        while i < doomed.len() {
            let gone = doomed[i].clone();
            for l in &self.links {
                let dependent = match &l.link.kind {
                    LinkKind::Veth { peer } => peer.as_deref() == Some(&gone),
                    LinkKind::Vlan { parent, .. } | LinkKind::Macvlan { parent } | LinkKind::Ipoib { parent, .. } => {
                        *parent == gone
                    }
                    LinkKind::Vxlan { parent, .. } => parent.as_deref() == Some(&gone),
                    LinkKind::Bridge | LinkKind::Other { .. } => false,
                };
                if dependent && !doomed.contains(&l.link.name) {
                    doomed.push(l.link.name.clone());
                }
            }
            i += 1;
        }
        self.links.retain(|l| !doomed.contains(&l.link.name));
        for l in &mut self.links {
            if l.link.master.as_ref().is_some_and(|m| doomed.contains(m)) {
                l.link.master = None;
            }
        }
        self.adjust_bridge_mtus();
    }

    fn vxlan_remotes(&mut self, vxlan: &str) -> Result<&mut Vec<IpAddr>> {
        match self.find_mut(vxlan) {
            None => Err(not_found("VXLAN", vxlan)),
            Some(SimLink { link: LiveLink { kind: LinkKind::Vxlan { remotes, .. }, .. }, .. }) => Ok(remotes),
            Some(_) => Err(error(ErrorKind::Unsupported, "EOPNOTSUPP", format!("`{vxlan}` is not a VXLAN"))),
        }
    }
}

fn vxlan_port(port: u16) -> u16 {
    if port == 0 { VXLAN_PORT_DEFAULT } else { port }
}

fn flood_exists(vxlan: &str, remote: IpAddr) -> DriverError {
    error(ErrorKind::Exists, "EEXIST", format!("`{vxlan}` already floods to {remote}"))
}

/// The kernel's `dev_valid_name`.
fn check_name(what: &str, name: &str) -> Result<()> {
    // The kernel's netlink policy for IFLA_IFNAME refuses a long name before anything
    // looks at it, with ERANGE.
    if name.len() > NAME_BYTES_MAX {
        return Err(error(
            ErrorKind::Refused,
            "ERANGE",
            format!("{what}: `{name}` is longer than {NAME_BYTES_MAX} bytes: attribute failed policy validation"),
        ));
    }
    let valid = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if valid {
        Ok(())
    } else {
        Err(error(ErrorKind::Refused, "EINVAL", format!("{what}: `{name}` is not a valid interface name")))
    }
}

impl Links for SimLinks {
    fn links(&mut self) -> Result<Vec<LiveLink>> {
        let mut links: Vec<LiveLink> = self.links.iter().map(|l| l.link.clone()).collect();
        links.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(links)
    }

    fn hugepages(&mut self) -> Result<Vec<LiveHugepages>> {
        let mut pools: Vec<LiveHugepages> = self
            .hugepages
            .iter()
            .map(|p| LiveHugepages { numa_node: p.numa_node, size: p.size, total: p.total, free: p.free })
            .collect();
        pools.sort_by_key(|p| (p.numa_node, p.size.size()));
        Ok(pools)
    }

    fn create_link(&mut self, spec: &LinkSpec) -> Result<()> {
        let peer = self.check_create(spec)?;
        let parent_mtu = match &spec.kind {
            LinkKind::Vlan { parent, .. } | LinkKind::Macvlan { parent } | LinkKind::Ipoib { parent, .. } => {
                self.find(parent).map(|p| p.link.mtu)
            }
            LinkKind::Bridge | LinkKind::Vxlan { .. } | LinkKind::Veth { .. } | LinkKind::Other { .. } => None,
        };
        let mtu = spec.mtu.or(parent_mtu).unwrap_or(MTU_DEFAULT);
        let mut kind = spec.kind.clone();
        match &mut kind {
            LinkKind::Vxlan { port, remotes, .. } => {
                *port = vxlan_port(*port);
                remotes.sort();
            }
            LinkKind::Veth { peer: p } => p.clone_from(&peer),
            // The kernel keeps a child's pkey with the full-membership bit set.
            LinkKind::Ipoib { pkey, .. } => *pkey |= 0x8000,
            LinkKind::Bridge | LinkKind::Vlan { .. } | LinkKind::Macvlan { .. } | LinkKind::Other { .. } => {}
        }
        let link = |name: &str, kind: LinkKind, master: Option<String>, alias: Option<String>| SimLink {
            link: LiveLink {
                name: name.to_string(),
                kind,
                mtu,
                up: false,
                master,
                alias,
                sriov_vfs: None,
                sriov_pci: None,
            },
            sriov_total: None,
            created: true,
            mtu_fixed: spec.mtu.is_some(),
            vf_guids: BTreeMap::new(),
            vfs_in_use: BTreeSet::new(),
        };
        self.links.push(link(&spec.name, kind, spec.master.clone(), spec.alias.clone()));
        if let Some(peer) = peer {
            self.links.push(link(&peer, LinkKind::Veth { peer: Some(spec.name.clone()) }, None, None));
        }
        self.adjust_bridge_mtus();
        Ok(())
    }

    fn delete_link(&mut self, name: &str) -> Result<()> {
        let link = self.existing(name, "link")?;
        if !link.created {
            return Err(error(
                ErrorKind::Unsupported,
                "EOPNOTSUPP",
                format!("link `{name}` cannot be deleted: it is not a virtual link"),
            ));
        }
        self.remove(name);
        Ok(())
    }

    fn set_link(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        up: Option<bool>,
        master: Option<Option<String>>,
    ) -> Result<()> {
        let link = self.existing(name, "link")?;
        let what = format!("changing link `{name}`");
        if let Some(Some(master)) = &master {
            self.check_master(name, matches!(link.link.kind, LinkKind::Bridge), master)?;
        }
        if let Some(mtu) = mtu {
            self.check_mtu(&what, &link.link.kind, mtu)?;
        }
        let link = self.find_mut(name).expect("checked above");
        if let Some(up) = up {
            link.link.up = up;
        }
        if let Some(master) = master {
            link.link.master = master;
        }
        if let Some(mtu) = mtu {
            link.link.mtu = mtu;
            link.mtu_fixed = true;
            // VLAN and macvlan links never exceed their parent's MTU: the kernel lowers them.
            for child in &mut self.links {
                if let LinkKind::Vlan { parent, .. } | LinkKind::Macvlan { parent } = &child.link.kind
                    && parent == name
                {
                    child.link.mtu = child.link.mtu.min(mtu);
                }
            }
        }
        self.adjust_bridge_mtus();
        Ok(())
    }

    fn add_fdb(&mut self, vxlan: &str, remote: IpAddr) -> Result<()> {
        let remotes = self.vxlan_remotes(vxlan)?;
        if remotes.contains(&remote) {
            return Err(flood_exists(vxlan, remote));
        }
        remotes.push(remote);
        remotes.sort();
        Ok(())
    }

    fn del_fdb(&mut self, vxlan: &str, remote: IpAddr) -> Result<()> {
        let remotes = self.vxlan_remotes(vxlan)?;
        let Some(at) = remotes.iter().position(|r| *r == remote) else {
            return Err(error(ErrorKind::NotFound, "ENOENT", format!("`{vxlan}` does not flood to {remote}")));
        };
        remotes.remove(at);
        Ok(())
    }

    fn set_sriov_vfs(&mut self, nic: &str, count: u32) -> Result<()> {
        let link = self.find_mut(nic).ok_or_else(|| not_found("link", nic))?;
        let (Some(total), Some(current)) = (link.sriov_total, link.link.sriov_vfs) else {
            return Err(error(
                ErrorKind::Unsupported,
                "ENOENT",
                format!("link `{nic}` has no SR-IOV capability (no sriov_numvfs in sysfs)"),
            ));
        };
        check_sriov_change(nic, current.into(), count, Some(total.into()))?;
        link.link.sriov_vfs = Some(count);
        // Removed VFs take their GUIDs with them.
        link.vf_guids.retain(|vf, _| *vf < count);
        Ok(())
    }

    /// As the kernel: no such link `ENODEV`; a PF that is not InfiniBand `EOPNOTSUPP`
    /// (this machine's kernel says "Operation not supported" for a veth); a VF the PF does
    /// not have `EINVAL`; and, as the HCA's driver applies GUIDs only to a free VF, a VF a
    /// guest holds is refused (`EBUSY`) rather than changed under it.
    fn set_vf_guids(&mut self, pf: &str, vf: u32, node: Guid, port: Guid) -> Result<()> {
        let link = self.find_mut(pf).ok_or_else(|| not_found("physical function", pf))?;
        if link.link.kind != (LinkKind::Other { kind: NIC_LAYER_INFINIBAND.into() }) {
            return Err(error(
                ErrorKind::Unsupported,
                "EOPNOTSUPP",
                format!("`{pf}` takes no VF GUIDs: it is not an InfiniBand link (or its driver sets none)"),
            ));
        }
        let count = link.link.sriov_vfs.unwrap_or(0);
        if vf >= count {
            return Err(error(
                ErrorKind::NotFound,
                "EINVAL",
                format!("`{pf}` has {count} VFs: there is no VF {vf} to write GUIDs to"),
            ));
        }
        if link.vfs_in_use.contains(&vf) && link.vf_guids.get(&vf) != Some(&VfGuids { node, port }) {
            return Err(error(
                ErrorKind::Refused,
                "EBUSY",
                format!(
                    "VF {vf} of `{pf}` is held by a guest: its GUIDs change only while it is free (stop its VM first)"
                ),
            ));
        }
        link.vf_guids.insert(vf, VfGuids { node, port });
        Ok(())
    }

    fn read_partitions(&mut self, path: &str) -> Result<Option<String>> {
        Ok(self.subnet_manager.as_ref().and_then(|sm| sm.files.get(path).cloned()))
    }

    fn write_partitions(&mut self, path: &str, factory: &str, block: &str) -> Result<()> {
        let sm = self.subnet_manager.get_or_insert_with(SimSubnetManager::default);
        let text = crate::render::opensm::with_block(sm.files.get(path).map(String::as_str), factory, block)
            .map_err(|e| error(ErrorKind::Refused, "EINVAL", format!("{path}: {e}; fix the marker lines by hand")))?;
        sm.files.insert(path.to_string(), text);
        Ok(())
    }

    fn reload_subnet_manager(&mut self) -> Result<()> {
        match &mut self.subnet_manager {
            Some(sm) if sm.running => {
                sm.reloads += 1;
                Ok(())
            }
            _ => Err(error(ErrorKind::NotFound, "ESRCH", "no opensm process runs on this host".into())),
        }
    }

    fn set_hugepages(&mut self, numa_node: u32, size: PageSize, count: u64) -> Result<()> {
        if !self.hugepages.iter().any(|p| p.numa_node == numa_node) {
            return Err(error(ErrorKind::NotFound, "ENOENT", format!("NUMA node {numa_node} does not exist")));
        }
        let what = format!("setting {count} {size} hugepages on node {numa_node}");
        let Some(pool) = self.hugepages.iter_mut().find(|p| p.numa_node == numa_node && p.size == size) else {
            return Err(error(
                ErrorKind::Unsupported,
                "ENOENT",
                format!("the kernel has no {size} hugepages on node {numa_node}"),
            ));
        };
        let used = pool.total - pool.free;
        if count < used {
            return Err(error(ErrorKind::Refused, "EBUSY", format!("{what}: {used} pages are in use")));
        }
        let got = pool.capacity.map_or(count, |c| c.min(count));
        pool.free = got - used;
        pool.total = got;
        if got != count {
            return Err(error(
                ErrorKind::Refused,
                "ENOMEM",
                format!("{what}: the kernel allocated {got} (not enough free contiguous memory)"),
            ));
        }
        Ok(())
    }
}

/// Simulated links kept in a file: read when opened, written after every change, so a
/// twin's state outlives the process that changed it (`fabrik agent --sim-state`).
pub struct SimLinksFile {
    links: SimLinks,
    path: std::path::PathBuf,
}

impl SimLinksFile {
    /// Opens a state file; a missing one starts empty and is created on the first change.
    pub fn open(path: &Path) -> std::io::Result<SimLinksFile> {
        let links = match SimLinks::load(path) {
            Ok(links) => links,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SimLinks::new(),
            Err(e) => return Err(e),
        };
        Ok(SimLinksFile { links, path: path.to_path_buf() })
    }

    /// What a reboot does to them: every hugepage pool empty, no SR-IOV VFs (the kernel
    /// sets both at boot; fabrik sets them again).
    pub fn reboot(&mut self) -> std::io::Result<()> {
        for p in &mut self.links.hugepages {
            p.total = 0;
            p.free = 0;
        }
        for l in &mut self.links.links {
            if l.link.sriov_vfs.is_some() {
                l.link.sriov_vfs = Some(0);
            }
            l.vf_guids.clear();
            l.vfs_in_use.clear();
        }
        self.links.save(&self.path)
    }

    fn saved<T>(&mut self, result: Result<T>) -> Result<T> {
        let value = result?;
        self.links.save(&self.path).map_err(|e| {
            DriverError::new(ErrorKind::Failed, format!("saving simulated links to {}: {e}", self.path.display()))
        })?;
        Ok(value)
    }
}

impl Links for SimLinksFile {
    fn links(&mut self) -> Result<Vec<LiveLink>> {
        self.links.links()
    }
    fn hugepages(&mut self) -> Result<Vec<LiveHugepages>> {
        self.links.hugepages()
    }
    fn create_link(&mut self, spec: &LinkSpec) -> Result<()> {
        let result = self.links.create_link(spec);
        self.saved(result)
    }
    fn delete_link(&mut self, name: &str) -> Result<()> {
        let result = self.links.delete_link(name);
        self.saved(result)
    }
    fn set_link(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        up: Option<bool>,
        master: Option<Option<String>>,
    ) -> Result<()> {
        let result = self.links.set_link(name, mtu, up, master);
        self.saved(result)
    }
    fn add_fdb(&mut self, vxlan: &str, remote: IpAddr) -> Result<()> {
        let result = self.links.add_fdb(vxlan, remote);
        self.saved(result)
    }
    fn del_fdb(&mut self, vxlan: &str, remote: IpAddr) -> Result<()> {
        let result = self.links.del_fdb(vxlan, remote);
        self.saved(result)
    }
    fn set_sriov_vfs(&mut self, nic: &str, count: u32) -> Result<()> {
        let result = self.links.set_sriov_vfs(nic, count);
        self.saved(result)
    }
    fn set_vf_guids(&mut self, pf: &str, vf: u32, node: Guid, port: Guid) -> Result<()> {
        let result = self.links.set_vf_guids(pf, vf, node, port);
        self.saved(result)
    }
    fn read_partitions(&mut self, path: &str) -> Result<Option<String>> {
        self.links.read_partitions(path)
    }
    fn write_partitions(&mut self, path: &str, factory: &str, block: &str) -> Result<()> {
        let result = self.links.write_partitions(path, factory, block);
        self.saved(result)
    }
    fn reload_subnet_manager(&mut self) -> Result<()> {
        let result = self.links.reload_subnet_manager();
        self.saved(result)
    }
    fn set_hugepages(&mut self, numa_node: u32, size: PageSize, count: u64) -> Result<()> {
        // A short allocation changes the pool and is still an error: save either way.
        let result = self.links.set_hugepages(numa_node, size, count);
        let saved = self.saved(Ok(()));
        result.and(saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: LinkKind) -> LinkSpec {
        LinkSpec { name: name.into(), kind, mtu: None, master: None, alias: None }
    }

    fn host() -> SimLinks {
        let mut sim = SimLinks::new();
        sim.add_nic("eth0", 9000, Some(8)).add_hugepages(0, PageSize::Size2M, Some(1024));
        sim
    }

    fn link(sim: &mut SimLinks, name: &str) -> LiveLink {
        sim.links().unwrap().into_iter().find(|l| l.name == name).unwrap()
    }

    #[test]
    fn ipoib_children_are_refused_as_the_kernel_refuses_them() {
        let child = |parent: &str, pkey: u16| LinkSpec {
            name: format!("{parent}.{:04x}", pkey | 0x8000),
            kind: LinkKind::Ipoib { parent: parent.into(), pkey },
            mtu: None,
            master: None,
            alias: None,
        };
        let code = |r: Result<()>| r.map_err(|e| (e.kind, e.code.unwrap_or_default())).err();
        let mut sim = SimLinks::new();
        sim.add_nic("eth0", 1500, None);
        // No HCA, no ib_ipoib: the kind is unknown, as on this machine's kernel.
        assert_eq!(code(sim.create_link(&child("eth0", 0x8001))), Some((ErrorKind::Unsupported, "EOPNOTSUPP".into())));
        sim.add_nic_of("ib0", NIC_LAYER_INFINIBAND, 2044, Some(4));
        assert_eq!(code(sim.create_link(&child("eth0", 0x8001))), Some((ErrorKind::NotFound, "ENODEV".into())));
        assert_eq!(code(sim.create_link(&child("ib9", 0x8001))), Some((ErrorKind::NotFound, "ENODEV".into())));
        sim.create_link(&child("ib0", 0x0001)).unwrap();
        let made = sim.find("ib0.8001").unwrap();
        assert_eq!(made.link.kind, LinkKind::Ipoib { parent: "ib0".into(), pkey: 0x8001 }, "full-member bit set");
        assert_eq!(made.link.mtu, 2044, "the parent's MTU");
        let again = LinkSpec { name: "ib0.x".into(), ..child("ib0", 0x8001) };
        assert_eq!(code(sim.create_link(&again)), Some((ErrorKind::Exists, "ENOTUNIQ".into())));
    }

    #[test]
    fn vf_guids_are_refused_as_the_kernel_refuses_them() {
        let (node, port) = (Guid(0x0200_0000_0000_0010), Guid(0x0200_0000_0000_0011));
        let mut sim = SimLinks::new();
        sim.add_nic_of("ib0", NIC_LAYER_INFINIBAND, 2044, Some(4)).add_nic("eth0", 1500, Some(4));
        let code = |r: Result<()>| r.map_err(|e| (e.kind, e.code.unwrap_or_default())).err();
        assert_eq!(code(sim.set_vf_guids("ib9", 0, node, port)), Some((ErrorKind::NotFound, "ENODEV".into())));
        sim.set_sriov_vfs("eth0", 4).unwrap();
        assert_eq!(code(sim.set_vf_guids("eth0", 0, node, port)), Some((ErrorKind::Unsupported, "EOPNOTSUPP".into())));
        // No VFs yet: VF 0 does not exist.
        assert_eq!(code(sim.set_vf_guids("ib0", 0, node, port)), Some((ErrorKind::NotFound, "EINVAL".into())));
        sim.set_sriov_vfs("ib0", 4).unwrap();
        sim.set_vf_guids("ib0", 3, node, port).unwrap();
        assert_eq!(code(sim.set_vf_guids("ib0", 4, node, port)), Some((ErrorKind::NotFound, "EINVAL".into())));
        let ib0 = sim.find_mut("ib0").unwrap();
        assert_eq!(ib0.vf_guids[&3], VfGuids { node, port });
        // A VF a guest holds keeps its GUIDs: the same again is fine, others are refused.
        ib0.vfs_in_use.insert(3);
        sim.set_vf_guids("ib0", 3, node, port).unwrap();
        let other = Guid(0x0200_0000_0000_0020);
        assert_eq!(
            code(sim.set_vf_guids("ib0", 3, other, Guid(other.0 | 1))),
            Some((ErrorKind::Refused, "EBUSY".into()))
        );
        // Removing the VFs takes their GUIDs.
        sim.find_mut("ib0").unwrap().vfs_in_use.clear();
        sim.set_sriov_vfs("ib0", 0).unwrap();
        assert!(sim.find("ib0").unwrap().vf_guids.is_empty());
    }

    #[test]
    fn links_are_created_with_the_kernels_rules() {
        let mut sim = host();
        sim.create_link(&LinkSpec { alias: Some("fabrik:net:acme".into()), ..spec("br0", LinkKind::Bridge) }).unwrap();
        let err = sim.create_link(&spec("br0", LinkKind::Bridge)).unwrap_err();
        assert_eq!((err.kind, err.code.as_deref()), (ErrorKind::Exists, Some("EEXIST")));
        let vlan = LinkKind::Vlan { id: 10, parent: "eth9".into() };
        assert_eq!(sim.create_link(&spec("eth9.10", vlan)).unwrap_err().kind, ErrorKind::NotFound);
        let vlan = LinkKind::Vlan { id: 10, parent: "eth0".into() };
        sim.create_link(&LinkSpec { master: Some("br0".into()), ..spec("eth0.10", vlan.clone()) }).unwrap();
        assert_eq!(sim.create_link(&spec("v10", vlan)).unwrap_err().kind, ErrorKind::Exists);
        let l = link(&mut sim, "eth0.10");
        assert_eq!((l.mtu, l.master.as_deref()), (9000, Some("br0")));
        // An unset bridge MTU follows its ports.
        assert_eq!(link(&mut sim, "br0").mtu, 9000);
        assert_eq!(link(&mut sim, "br0").alias.as_deref(), Some("fabrik:net:acme"));
        let err = sim.create_link(&spec("toolongname12345", LinkKind::Bridge)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Refused);
        let err = sim.create_link(&spec("d0", LinkKind::Other { kind: "dummy".into() })).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unsupported);
    }

    #[test]
    fn vxlan_vnis_are_unique_per_port_and_remotes_are_kept() {
        let mut sim = host();
        let remote: IpAddr = "10.0.0.2".parse().unwrap();
        let vx = |vni, port| LinkKind::Vxlan {
            vni,
            local: Some("10.0.0.1".parse().unwrap()),
            port,
            parent: Some("eth0".into()),
            remotes: vec![remote],
        };
        sim.create_link(&spec("vx100", vx(100, 4789))).unwrap();
        assert_eq!(sim.create_link(&spec("vx100b", vx(100, 4789))).unwrap_err().kind, ErrorKind::Exists);
        sim.create_link(&spec("vx100c", vx(100, 0))).unwrap();
        assert!(matches!(link(&mut sim, "vx100c").kind, LinkKind::Vxlan { port: 8472, .. }));
        assert_eq!(sim.add_fdb("vx100", remote).unwrap_err().kind, ErrorKind::Exists);
        let other: IpAddr = "10.0.0.3".parse().unwrap();
        sim.add_fdb("vx100", other).unwrap();
        sim.del_fdb("vx100", remote).unwrap();
        assert_eq!(sim.del_fdb("vx100", remote).unwrap_err().kind, ErrorKind::NotFound);
        assert!(matches!(link(&mut sim, "vx100").kind, LinkKind::Vxlan { ref remotes, .. } if *remotes == vec![other]));
        assert_eq!(sim.add_fdb("eth0", other).unwrap_err().kind, ErrorKind::Unsupported);
    }

    #[test]
    fn deleting_takes_dependents_and_releases_ports() {
        let mut sim = host();
        sim.create_link(&spec("br0", LinkKind::Bridge)).unwrap();
        sim.create_link(&spec("ve0", LinkKind::Veth { peer: Some("ve1".into()) })).unwrap();
        sim.create_link(&spec("mv0", LinkKind::Macvlan { parent: "ve1".into() })).unwrap();
        sim.set_link("ve0", Some(4000), Some(true), Some(Some("br0".into()))).unwrap();
        assert_eq!(link(&mut sim, "br0").mtu, 4000);
        assert_eq!(sim.set_link("br0", None, None, Some(Some("br0".into()))).unwrap_err().kind, ErrorKind::Refused);
        assert_eq!(
            sim.set_link("ve1", None, None, Some(Some("eth0".into()))).unwrap_err().kind,
            ErrorKind::Unsupported
        );
        assert_eq!(sim.set_link("mv0", Some(1501), None, None).unwrap_err().kind, ErrorKind::Refused);
        sim.delete_link("ve1").unwrap();
        let names: Vec<String> = sim.links().unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["br0", "eth0"]);
        assert_eq!(link(&mut sim, "br0").mtu, 1500);
        assert_eq!(sim.delete_link("eth0").unwrap_err().kind, ErrorKind::Unsupported);
        assert_eq!(sim.delete_link("ve0").unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn vfs_and_hugepages_follow_the_kernels_rules() {
        let mut sim = host();
        sim.set_sriov_vfs("eth0", 4).unwrap();
        assert_eq!(sim.set_sriov_vfs("eth0", 2).unwrap_err().kind, ErrorKind::Refused);
        assert_eq!(link(&mut sim, "eth0").sriov_vfs, Some(4));
        sim.create_link(&spec("br0", LinkKind::Bridge)).unwrap();
        assert_eq!(sim.set_sriov_vfs("br0", 1).unwrap_err().kind, ErrorKind::Unsupported);

        sim.set_hugepages(0, PageSize::Size2M, 512).unwrap();
        let err = sim.set_hugepages(0, PageSize::Size2M, 2048).unwrap_err();
        assert_eq!((err.kind, err.code.as_deref()), (ErrorKind::Refused, Some("ENOMEM")));
        assert_eq!(sim.hugepages().unwrap()[0].total, 1024);
        assert_eq!(sim.set_hugepages(1, PageSize::Size2M, 1).unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(sim.set_hugepages(0, PageSize::Size1G, 1).unwrap_err().kind, ErrorKind::Unsupported);
    }

    #[test]
    fn the_state_round_trips_through_json() {
        let mut sim = host();
        sim.create_link(&spec("ve0", LinkKind::Veth { peer: None })).unwrap();
        assert_eq!(link(&mut sim, "veth0").kind, LinkKind::Veth { peer: Some("ve0".into()) });
        let text = serde_json::to_string(&sim).unwrap();
        assert_eq!(serde_json::from_str::<SimLinks>(&text).unwrap(), sim);
    }
}
