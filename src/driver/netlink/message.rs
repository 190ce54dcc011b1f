//! Translation between rtnetlink messages and fabrik's link types: link and neighbour
//! messages in, [`LiveLink`]s out, and the messages that create and change links.

use std::collections::HashMap;
use std::net::IpAddr;

use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{
    InfoData, InfoIpoib, InfoKind, InfoVeth, InfoVlan, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    LinkVfInfo, VfInfo, VfInfoGuid,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};

use crate::driver::LinkSpec;
use crate::live::{LinkKind, LiveLink};

/// A link as the kernel dumped it, before interface indexes are turned into names.
#[derive(Debug)]
pub(super) struct RawLink {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub master: Option<u32>,
    pub alias: Option<String>,
    /// `IFLA_LINK`: the parent (VLAN, macvlan) or the peer (veth).
    pub link: Option<u32>,
    /// The `IFLA_LINK` index belongs to another namespace (`IFLA_LINK_NETNSID`).
    pub link_elsewhere: bool,
    pub kind: Option<InfoKind>,
    pub data: Option<InfoData>,
    /// The link layer type, for links without a kind (`ether`, `loopback`).
    pub layer: String,
}

impl RawLink {
    pub fn parse(message: LinkMessage) -> Option<RawLink> {
        let mut raw = RawLink {
            index: message.header.index,
            name: String::new(),
            mtu: 0,
            up: message.header.flags.contains(LinkFlags::Up),
            master: None,
            alias: None,
            link: None,
            link_elsewhere: false,
            kind: None,
            data: None,
            layer: message.header.link_layer_type.to_string().to_lowercase(),
        };
        for attribute in message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => raw.name = name,
                LinkAttribute::Mtu(mtu) => raw.mtu = mtu,
                LinkAttribute::Controller(index) => raw.master = Some(index).filter(|&i| i != 0),
                LinkAttribute::IfAlias(alias) => raw.alias = Some(alias).filter(|a| !a.is_empty()),
                LinkAttribute::Link(index) => raw.link = Some(index).filter(|&i| i != 0),
                LinkAttribute::LinkNetNsId(_) => raw.link_elsewhere = true,
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => raw.kind = Some(kind),
                            LinkInfo::Data(data) => raw.data = Some(data),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        (!raw.name.is_empty()).then_some(raw)
    }

    pub fn is_vxlan(&self) -> bool {
        self.kind == Some(InfoKind::Vxlan)
    }

    /// The link in fabrik's terms; `names` maps this namespace's indexes to names,
    /// `remotes` holds the VXLAN flood entries per index.
    pub fn into_live(
        self,
        names: &HashMap<u32, String>,
        remotes: &HashMap<u32, Vec<IpAddr>>,
        sriov_vfs: Option<u32>,
    ) -> LiveLink {
        let name_of = |index: Option<u32>| index.and_then(|i| names.get(&i).cloned());
        let here = if self.link_elsewhere { None } else { self.link };
        let kind = match (&self.kind, self.data) {
            (Some(InfoKind::Bridge), _) => LinkKind::Bridge,
            (Some(InfoKind::Vxlan), data) => {
                let mut vni = 0;
                let mut local = None;
                let mut port = 0;
                let mut parent = None;
                if let Some(InfoData::Vxlan(infos)) = data {
                    for info in infos {
                        match info {
                            InfoVxlan::Id(id) => vni = id,
                            InfoVxlan::Local(ip) => local = Some(IpAddr::V4(ip)),
                            InfoVxlan::Local6(ip) => local = Some(IpAddr::V6(ip)),
                            InfoVxlan::Port(p) => port = p,
                            InfoVxlan::Link(index) => parent = name_of(Some(index).filter(|&i| i != 0)),
                            _ => {}
                        }
                    }
                }
                let mut remotes = remotes.get(&self.index).cloned().unwrap_or_default();
                remotes.sort();
                remotes.dedup();
                LinkKind::Vxlan { vni, local, port, parent, remotes }
            }
            (Some(InfoKind::Vlan), data) => {
                let id = match data {
                    Some(InfoData::Vlan(infos)) => infos
                        .into_iter()
                        .find_map(|i| match i {
                            InfoVlan::Id(id) => Some(id),
                            _ => None,
                        })
                        .unwrap_or(0),
                    _ => 0,
                };
                LinkKind::Vlan { id, parent: name_of(here).unwrap_or_default() }
            }
            (Some(InfoKind::Veth), _) => LinkKind::Veth { peer: name_of(here) },
            (Some(InfoKind::MacVlan), _) => LinkKind::Macvlan { parent: name_of(here).unwrap_or_default() },
            (Some(InfoKind::Ipoib), data) => {
                let pkey = match data {
                    Some(InfoData::Ipoib(infos)) => infos.into_iter().find_map(|i| match i {
                        InfoIpoib::Pkey(p) => Some(p),
                        _ => None,
                    }),
                    _ => None,
                };
                LinkKind::Ipoib { parent: name_of(here).unwrap_or_default(), pkey: pkey.unwrap_or(0) }
            }
            (Some(other), _) => LinkKind::Other { kind: other.to_string() },
            (None, _) => LinkKind::Other { kind: self.layer },
        };
        LiveLink {
            name: self.name,
            kind,
            mtu: self.mtu,
            up: self.up,
            master: name_of(self.master),
            alias: self.alias,
            sriov_vfs,
            sriov_pci: None,
        }
    }
}

/// A VXLAN flood entry from a bridge-family neighbour dump: (interface index, remote).
pub(super) fn flood_entry(message: &NeighbourMessage) -> Option<(u32, IpAddr)> {
    let mut all_zeros = false;
    let mut remote = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::LinkLayerAddress(mac) => all_zeros = mac.iter().all(|&b| b == 0),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => remote = Some(IpAddr::V4(*ip)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => remote = Some(IpAddr::V6(*ip)),
            // In a bridge-family message the address family is not the destination's, so
            // the library leaves it as bytes; their length tells.
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                remote = match bytes.len() {
                    4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    remote.filter(|_| all_zeros).map(|r| (message.header.ifindex, r))
}

/// The all-zeros FDB entry of a VXLAN towards `remote`, for `RTM_NEWNEIGH`/`RTM_DELNEIGH`.
pub(super) fn flood_message(index: u32, remote: IpAddr) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Bridge;
    message.header.ifindex = index;
    message.header.state = NeighbourState::Permanent;
    message.header.flags = NeighbourFlags::Own;
    let destination = match remote {
        IpAddr::V4(ip) => NeighbourAddress::Inet(ip),
        IpAddr::V6(ip) => NeighbourAddress::Inet6(ip),
    };
    message.attributes =
        vec![NeighbourAttribute::LinkLayerAddress(vec![0; 6]), NeighbourAttribute::Destination(destination)];
    message
}

/// A bridge-family neighbour dump request.
pub(super) fn fdb_dump_message() -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Bridge;
    message
}

/// A message naming a link by its name (the kernel looks it up when the index is 0).
pub(super) fn by_name(name: &str) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.attributes.push(LinkAttribute::IfName(name.to_string()));
    message
}

/// The `RTM_NEWLINK` message creating `spec`; `master` and `parent` are resolved indexes.
/// The MTU of a bridge is left out: a bridge created with one still follows its ports'
/// MTU, so it is set afterwards, which the kernel keeps.
pub(super) fn create_message(spec: &LinkSpec, master: Option<u32>, parent: Option<u32>) -> LinkMessage {
    let mut message = by_name(&spec.name);
    let bridge = matches!(spec.kind, LinkKind::Bridge);
    if let Some(mtu) = spec.mtu.filter(|_| !bridge) {
        message.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(master) = master {
        message.attributes.push(LinkAttribute::Controller(master));
    }
    let (kind, data) = match &spec.kind {
        LinkKind::Bridge => (InfoKind::Bridge, None),
        LinkKind::Vxlan { vni, local, port, parent: _, remotes: _ } => {
            let mut infos = vec![InfoVxlan::Id(*vni), InfoVxlan::Port(*port)];
            match local {
                Some(IpAddr::V4(ip)) => infos.push(InfoVxlan::Local(*ip)),
                Some(IpAddr::V6(ip)) => infos.push(InfoVxlan::Local6(*ip)),
                None => {}
            }
            if let Some(parent) = parent {
                infos.push(InfoVxlan::Link(parent));
            }
            (InfoKind::Vxlan, Some(InfoData::Vxlan(infos)))
        }
        LinkKind::Vlan { id, parent: _ } => {
            message.attributes.extend(parent.map(LinkAttribute::Link));
            (InfoKind::Vlan, Some(InfoData::Vlan(vec![InfoVlan::Id(*id)])))
        }
        LinkKind::Veth { peer } => {
            let mut peer_message = LinkMessage::default();
            if let Some(peer) = peer {
                peer_message.attributes.push(LinkAttribute::IfName(peer.clone()));
            }
            if let Some(mtu) = spec.mtu {
                peer_message.attributes.push(LinkAttribute::Mtu(mtu));
            }
            (InfoKind::Veth, Some(InfoData::Veth(InfoVeth::Peer(peer_message))))
        }
        LinkKind::Macvlan { parent: _ } => {
            message.attributes.extend(parent.map(LinkAttribute::Link));
            (InfoKind::MacVlan, None)
        }
        LinkKind::Ipoib { parent: _, pkey } => {
            message.attributes.extend(parent.map(LinkAttribute::Link));
            (InfoKind::Ipoib, Some(InfoData::Ipoib(vec![InfoIpoib::Pkey(*pkey)])))
        }
        LinkKind::Other { kind } => (InfoKind::Other(kind.clone()), None),
    };
    let mut infos = vec![LinkInfo::Kind(kind)];
    infos.extend(data.map(LinkInfo::Data));
    message.attributes.push(LinkAttribute::LinkInfo(infos));
    message
}

/// The `RTM_SETLINK` message for [`crate::driver::Links::set_link`] and the alias.
/// The `RTM_SETLINK` message writing the InfiniBand node and port GUID of VF `vf` of
/// `pf`, as `ip link set <pf> vf <vf> node_guid … port_guid …` sends it: one
/// `IFLA_VF_INFO` in `IFLA_VFINFO_LIST` holding `IFLA_VF_IB_NODE_GUID` and
/// `IFLA_VF_IB_PORT_GUID` (`struct ifla_vf_guid`, the GUID as a host-order number).
pub(super) fn vf_guid_message(pf: &str, vf: u32, node: u64, port: u64) -> LinkMessage {
    let mut message = by_name(pf);
    message.attributes.push(LinkAttribute::VfInfoList(vec![LinkVfInfo(vec![
        VfInfo::IbNodeGuid(VfInfoGuid::new(vf, node)),
        VfInfo::IbPortGuid(VfInfoGuid::new(vf, port)),
    ])]));
    message
}

pub(super) fn set_message(
    name: &str,
    mtu: Option<u32>,
    up: Option<bool>,
    master: Option<u32>,
    alias: Option<&str>,
) -> LinkMessage {
    let mut message = by_name(name);
    if let Some(mtu) = mtu {
        message.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(up) = up {
        message.header.change_mask = LinkFlags::Up;
        if up {
            message.header.flags = LinkFlags::Up;
        }
    }
    if let Some(master) = master {
        message.attributes.push(LinkAttribute::Controller(master));
    }
    if let Some(alias) = alias {
        message.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
    }
    message
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Emitable;

    /// The request carries `struct ifla_vf_guid` as iproute2 sends it: the VF index, 4
    /// bytes of padding, the GUID as a host-order 64-bit number, once as the node GUID
    /// (`IFLA_VF_IB_NODE_GUID` = 10) and once as the port GUID (11).
    #[test]
    fn vf_guids_are_encoded_as_iproute2_sends_them() {
        let message = super::vf_guid_message("ib0", 3, 0x0211_2233_4455_6670, 0x0211_2233_4455_6671);
        let mut buf = vec![0u8; message.buffer_len()];
        message.emit(&mut buf);
        for (kind, guid) in [(10u16, 0x0211_2233_4455_6670u64), (11, 0x0211_2233_4455_6671)] {
            let mut nla = Vec::new();
            nla.extend_from_slice(&20u16.to_ne_bytes());
            nla.extend_from_slice(&kind.to_ne_bytes());
            nla.extend_from_slice(&3u32.to_ne_bytes());
            nla.extend_from_slice(&[0; 4]);
            nla.extend_from_slice(&guid.to_ne_bytes());
            assert!(buf.windows(nla.len()).any(|w| w == nla.as_slice()), "attribute {kind} not found in {buf:02x?}");
        }
    }
}
