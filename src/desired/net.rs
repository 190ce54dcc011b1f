//! Networks and the host links under them, on the hosts that carry each network: its
//! `hosts`, else the hosts of the VMs attached to it. A VXLAN device sends from its
//! host's `ip` on the network's parent NIC and floods to the other hosts' addresses there.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{DesiredHost, DesiredLink, DesiredNetwork, ResourceId, ResourceKind, names};
use crate::live::LinkKind;
use crate::spec::model::{Host, NetKind, Network, Spec};

/// The IANA port for VXLAN (RFC 7348), used when a network gives none.
const VXLAN_PORT_DEFAULT: u16 = 4789;

pub(super) fn add(spec: &Spec, hosts: &mut [DesiredHost]) {
    let mut attached: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (h, host) in hosts.iter().enumerate() {
        for vm in &host.vms {
            for nic in &vm.nics {
                if let Some(n) = spec.networks.iter().find(|n| n.name.value == nic.network) {
                    attached.entry(n.name.value.as_str()).or_default().insert(h);
                }
            }
        }
    }
    let index: BTreeMap<String, usize> = hosts.iter().enumerate().map(|(i, h)| (h.name.clone(), i)).collect();
    let by_name: BTreeMap<&str, &Host> = spec.hosts.iter().map(|h| (h.name.value.as_str(), h)).collect();
    for n in &spec.networks {
        let on: BTreeSet<usize> = if n.hosts.is_empty() {
            attached.get(n.name.value.as_str()).cloned().unwrap_or_default()
        } else {
            n.hosts.iter().filter_map(|h| index.get(h.value.as_str()).copied()).collect()
        };
        let underlay = underlay(n, on.iter().map(|&h| (h, by_name.get(hosts[h].name.as_str()).copied())));
        for h in on {
            let host = &mut hosts[h];
            host.networks.push(network(&host.name, n));
            for link in links(&host.name, n, tunnel(&underlay, h)).into_iter().chain(ipoib_child(&host.name, n)) {
                if !host.links.iter().any(|l| l.id == link.id) {
                    host.links.push(link);
                }
            }
        }
    }
}

/// The Linux bridge of a bridged network: its `bridge`, else derived from its name
/// ([`names::bridge`]: `br-<name>`, hashed when too long).
pub fn bridge_name(n: &Network) -> Option<String> {
    match n.kind.value {
        NetKind::Bridge | NetKind::Vlan | NetKind::Vxlan => {
            Some(n.bridge.as_ref().map_or_else(|| names::bridge(&n.name.value), |b| b.value.clone()))
        }
        NetKind::IbPartition | NetKind::Sriov => None,
    }
}

fn network(host: &str, n: &Network) -> DesiredNetwork {
    let pf = match n.kind.value {
        NetKind::IbPartition | NetKind::Sriov => n.parent.as_ref().map(|p| p.value.clone()),
        NetKind::Bridge | NetKind::Vlan | NetKind::Vxlan => None,
    };
    DesiredNetwork {
        id: ResourceId::new(ResourceKind::Network, host, &n.name.value),
        name: n.name.value.clone(),
        kind: n.kind.value,
        tenant: n.tenant.as_ref().map(|t| t.value.clone()),
        bridge: bridge_name(n),
        pf,
        vlan: n.vlan.as_ref().map(|v| v.value),
        mtu: n.mtu.as_ref().map(|m| m.value),
    }
}

/// Where a VXLAN device sends from and floods to.
#[derive(Debug, Default)]
struct Tunnel {
    /// The host's `ip` on the network's parent NIC.
    local: Option<IpAddr>,
    /// The `ip`s of that NIC on the network's other hosts, sorted: the flood entries
    /// (broadcast, unknown unicast and multicast go to each).
    remotes: Vec<IpAddr>,
}

/// The addresses of a VXLAN network's parent NIC on the hosts that carry it and give one.
fn underlay<'a>(n: &Network, on: impl Iterator<Item = (usize, Option<&'a Host>)>) -> BTreeMap<usize, IpAddr> {
    let Some(parent) = n.parent.as_ref().filter(|_| n.kind.value == NetKind::Vxlan) else {
        return BTreeMap::new();
    };
    on.filter_map(|(h, host)| {
        let nic = host?.nics.iter().find(|nic| nic.name.value == parent.value)?;
        nic.ip.as_ref().map(|ip| (h, ip.value))
    })
    .collect()
}

/// The tunnel of host `h` in a network's `underlay`. A host without an address on the
/// parent NIC gets no flood entries: the others cannot reach it either, and the checks
/// warn about it (`fabrik::fabric::no-underlay-address`).
fn tunnel(underlay: &BTreeMap<usize, IpAddr>, h: usize) -> Tunnel {
    let Some(&local) = underlay.get(&h) else { return Tunnel::default() };
    // A peer that declares this host's own address is an error the checks report; a
    // flood entry to oneself would only loop.
    let remotes: BTreeSet<IpAddr> = underlay.values().copied().filter(|ip| *ip != local).collect();
    Tunnel { local: Some(local), remotes: remotes.into_iter().collect() }
}

/// The bridge, and the VXLAN or VLAN device that is its uplink port (for a bridge
/// network, the parent NIC itself, named on the bridge).
fn links(host: &str, n: &Network, tunnel: Tunnel) -> Vec<DesiredLink> {
    let Some(bridge) = bridge_name(n) else { return Vec::new() };
    let mtu = n.mtu.as_ref().map(|m| m.value);
    let link = |name: String, kind: LinkKind, master: Option<String>| DesiredLink {
        id: ResourceId::new(ResourceKind::Link, host, &name),
        name,
        kind,
        mtu,
        master,
        uplink: None,
    };
    let mut out = vec![link(bridge.clone(), LinkKind::Bridge, None)];
    let parent = n.parent.as_ref().map(|p| p.value.clone());
    // A bridge network's parent NIC is the bridge's own port: its way out of the host.
    if n.kind.value == NetKind::Bridge {
        out[0].uplink.clone_from(&parent);
    }
    match n.kind.value {
        NetKind::Vxlan => {
            if let Some(vni) = &n.vni {
                let kind = LinkKind::Vxlan {
                    vni: vni.value,
                    local: tunnel.local,
                    port: n.port.as_ref().map_or(VXLAN_PORT_DEFAULT, |p| p.value),
                    parent,
                    remotes: tunnel.remotes,
                };
                out.push(link(names::vxlan(vni.value), kind, Some(bridge)));
            }
        }
        NetKind::Vlan => {
            if let (Some(vlan), Some(parent)) = (&n.vlan, parent) {
                out.push(link(
                    names::vlan(&parent, vlan.value),
                    LinkKind::Vlan { id: vlan.value, parent },
                    Some(bridge),
                ));
            }
        }
        NetKind::Bridge | NetKind::IbPartition | NetKind::Sriov => {}
    }
    out
}

/// IPoIB's bit of a pkey for full membership, which the kernel sets on a child's pkey.
const PKEY_FULL_MEMBER: u16 = 0x8000;

/// The IPoIB child interface of a partition whose hosts talk on it (`host-interface`):
/// `<parent>.<pkey>`, the name `ip link add … type ipoib pkey` gives it by default.
fn ipoib_child(host: &str, n: &Network) -> Option<DesiredLink> {
    if n.kind.value != NetKind::IbPartition || !n.host_interface {
        return None;
    }
    let (parent, pkey) = (n.parent.as_ref()?.value.clone(), n.pkey.as_ref()?.value | PKEY_FULL_MEMBER);
    let name = format!("{parent}.{pkey:04x}");
    Some(DesiredLink {
        id: ResourceId::new(ResourceKind::Link, host, &name),
        name,
        kind: LinkKind::Ipoib { parent, pkey },
        mtu: n.mtu.as_ref().map(|m| m.value),
        master: None,
        uplink: None,
    })
}

/// A host device a network makes, and what it stands for: two networks may resolve to
/// one device only when they stand for one thing (one VNI, one VLAN on one parent), and
/// those cases have rules of their own (`fabrik::isolation::duplicate-vni`, `…-vlan`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceRole {
    /// The network's bridge, given in `bridge` (`explicit`) or derived from its name.
    Bridge {
        explicit: bool,
    },
    Vxlan {
        vni: u32,
    },
    Vlan {
        parent: String,
        id: u16,
    },
}

/// Every device network `n` makes on each host that carries it, by name.
pub fn devices(n: &Network) -> Vec<(String, DeviceRole)> {
    let Some(bridge) = bridge_name(n) else { return Vec::new() };
    let mut out = vec![(bridge, DeviceRole::Bridge { explicit: n.bridge.is_some() })];
    match n.kind.value {
        NetKind::Vxlan => {
            if let Some(vni) = &n.vni {
                out.push((names::vxlan(vni.value), DeviceRole::Vxlan { vni: vni.value }));
            }
        }
        NetKind::Vlan => {
            if let (Some(vlan), Some(parent)) = (&n.vlan, &n.parent) {
                let role = DeviceRole::Vlan { parent: parent.value.clone(), id: vlan.value };
                out.push((names::vlan(&parent.value, vlan.value), role));
            }
        }
        NetKind::Bridge | NetKind::IbPartition | NetKind::Sriov => {}
    }
    out
}

/// The address plan of every network with a `subnet`, by name.
pub fn ipam(spec: &Spec) -> BTreeMap<String, super::addr::Ipam> {
    spec.networks
        .iter()
        .filter_map(|n| {
            let subnet = n.subnet.as_ref()?.value;
            Some((
                n.name.value.clone(),
                super::addr::Ipam {
                    subnet,
                    gateway: n.gateway.as_ref().map(|g| g.value),
                    dns: n.dns.iter().map(|d| d.value).collect(),
                    ranges: n.ranges.iter().map(|r| r.value).collect(),
                },
            ))
        })
        .collect()
}
