//! Networks: management, storage, public and tenant networks over bridges, VLANs,
//! VXLAN, InfiniBand partitions and SR-IOV.

use std::net::IpAddr;

use crate::diag::Diagnostic;
use crate::spec::decode::{Decoder, Word};
use crate::spec::shape::{Shape, Ty, opt, req};
use crate::spec::source::{Span, Spanned};
use crate::spec::tree::Node;
use crate::words;

words! {
    /// What a network is for.
    pub enum Purpose {
        Management = "management",
        Storage = "storage",
        Public = "public",
        Tenant = "tenant",
    }
}

words! {
    /// How the VM ports of an InfiniBand partition belong to it (the pkey's top bit).
    pub enum Membership {
        /// Full members talk to every member.
        Full = "full",
        /// Limited members talk to full members only, never to each other.
        Limited = "limited",
    }
}

words! {
    /// How a network is built on the hosts.
    pub enum NetKind {
        /// A Linux bridge on each host.
        Bridge = "bridge",
        /// An 802.1Q VLAN on a host interface, bridged.
        Vlan = "vlan",
        /// A VXLAN segment (VNI) across hosts, bridged.
        Vxlan = "vxlan",
        /// An InfiniBand partition (pkey) on an IB interface.
        IbPartition = "ib-partition",
        /// A pool of SR-IOV virtual functions of a physical NIC.
        Sriov = "sriov",
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Network {
    pub name: Spanned<String>,
    pub description: Option<Spanned<String>>,
    pub purpose: Spanned<Purpose>,
    pub kind: Spanned<NetKind>,
    /// Owner; `None` for infrastructure networks.
    pub tenant: Option<Spanned<String>>,
    /// Open to every tenant's VMs.
    pub shared: bool,
    pub mtu: Option<Spanned<u32>>,
    /// Linux bridge name on the hosts (default: derived from the network name).
    pub bridge: Option<Spanned<String>>,
    pub vlan: Option<Spanned<u16>>,
    pub vni: Option<Spanned<u32>>,
    pub pkey: Option<Spanned<u16>>,
    /// How its VMs' ports are members of the partition (ib-partition; default full).
    pub membership: Option<Spanned<Membership>>,
    /// The hosts talk on the partition themselves, through an IPoIB child interface
    /// of `parent` (`ib0.8001`; ib-partition).
    pub host_interface: bool,
    /// VXLAN UDP port.
    pub port: Option<Spanned<u16>>,
    /// Host interface underneath: VLAN/VXLAN underlay, IB device, SR-IOV physical function.
    pub parent: Option<Spanned<String>>,
    /// Hosts that carry the network; empty means the hosts of the VMs attached to it.
    pub hosts: Vec<Spanned<String>>,
    /// The subnet VM NICs get addresses in; the keys below need it.
    pub subnet: Option<Spanned<crate::desired::addr::Subnet>>,
    pub gateway: Option<Spanned<IpAddr>>,
    pub dns: Vec<Spanned<IpAddr>>,
    /// Where fabrik allocates addresses from; empty means the whole subnet.
    pub ranges: Vec<Spanned<crate::desired::addr::IpRange>>,
    #[serde(skip)]
    pub span: Span,
}

pub static NETWORK: Shape = Shape {
    name: "network",
    doc: "A network VMs attach to.",
    label: Some("name"),
    more: &[],
    fields: &[
        req("name", Ty::Name, "the network's name"),
        opt("description", Ty::Str, "free text"),
        req("purpose", Ty::Enum(Purpose::NAMES), "management, storage, public or tenant"),
        req("kind", Ty::Enum(NetKind::NAMES), "bridge, vlan, vxlan, ib-partition or sriov"),
        opt("tenant", Ty::Name, "owning tenant (required for tenant networks)"),
        opt("shared", Ty::Bool, "open to every tenant's VMs"),
        opt("mtu", Ty::Int { min: 68, max: 65535 }, "MTU in bytes"),
        opt("bridge", Ty::IfName, "Linux bridge name on the hosts (at most 15 bytes)"),
        opt("vlan", Ty::Int { min: 1, max: 4094 }, "802.1Q VLAN id (vlan, sriov)"),
        opt("vni", Ty::Int { min: 1, max: 16_777_215 }, "VXLAN network identifier (vxlan)"),
        opt("pkey", Ty::Int { min: 1, max: 0xfffe }, "InfiniBand partition key, e.g. `0x8001` (ib-partition)"),
        opt(
            "membership",
            Ty::Enum(Membership::NAMES),
            "full or limited: how the VMs' ports are members of the partition in the subnet manager's `partitions.conf` (ib-partition; default full; limited members reach only full ones)",
        ),
        opt(
            "host-interface",
            Ty::Bool,
            "the hosts talk on the partition themselves: each gets an IPoIB child interface of `parent` for the pkey, `ib0.8001` (ib-partition; default false)",
        ),
        opt("port", Ty::Int { min: 1, max: 65535 }, "VXLAN UDP port (default 4789)"),
        opt(
            "parent",
            Ty::IfName,
            "host interface underneath: a bridge network's uplink (made a port of its bridge), VLAN/VXLAN underlay, IB device or SR-IOV physical function",
        ),
        opt("hosts", Ty::List(&Ty::Name), "hosts that carry the network"),
        opt(
            "subnet",
            Ty::Str,
            "IPv4 or IPv6 subnet VM NICs get addresses in, `10.20.0.0/16` (each NIC gets a stable address from it, kept while the VM exists)",
        ),
        opt("gateway", Ty::Str, "default gateway guests are told, an address in `subnet`"),
        opt("dns", Ty::List(&Ty::Str), "DNS servers guests are told"),
        opt(
            "ranges",
            Ty::List(&Ty::Str),
            "where fabrik allocates addresses from, `first-last` inside `subnet` (default: the whole subnet)",
        ),
    ],
};

pub fn decode_network(d: &mut Decoder, n: &Node) -> Option<Network> {
    let o = d.object(n, &NETWORK, "network")?;
    let name = o.get("name").and_then(|n| d.name(n, "name"));
    let description = o.get("description").and_then(|n| d.string(n, "description"));
    let purpose = o.get("purpose").and_then(|n| d.word::<Purpose>(n, "purpose"));
    let kind = o.get("kind").and_then(|n| d.word::<NetKind>(n, "kind"));
    let tenant = o.get("tenant").and_then(|n| d.name(n, "tenant"));
    let shared = o.get("shared").and_then(|n| d.bool(n, "shared")).is_some_and(|b| b.value);
    let mtu = o.get("mtu").and_then(|n| d.uint(n, "mtu", 68, 65535));
    let bridge = o.get("bridge").and_then(|n| d.string(n, "bridge")).and_then(|b| check_ifname(d, b, "bridge"));
    let vlan = o.get("vlan").and_then(|n| d.uint(n, "vlan", 1, 4094));
    let vni = o.get("vni").and_then(|n| d.uint(n, "vni", 1, 16_777_215));
    let pkey = o.get("pkey").and_then(|n| d.uint::<u16>(n, "pkey", 1, 0xfffe)).and_then(|p| check_pkey(d, p));
    let port = o.get("port").and_then(|n| d.uint(n, "port", 1, 65535));
    let membership = o.get("membership").and_then(|n| d.word::<Membership>(n, "membership"));
    let host_interface = o.get("host-interface").and_then(|n| d.bool(n, "host-interface")).is_some_and(|b| b.value);
    let parent = o.get("parent").and_then(|n| d.string(n, "parent")).and_then(|p| check_ifname(d, p, "parent"));
    let hosts = o.get("hosts").map(|n| d.list(n, "hosts", |d, n| d.name(n, "hosts"))).unwrap_or_default();
    let subnet = o.get("subnet").and_then(|n| d.string(n, "subnet")).and_then(|s| {
        let parsed = crate::desired::addr::parse_subnet(&s.value);
        bad_address(d, &s, parsed, "fabrik::spec::bad-subnet", "subnet", "write a subnet as its first address and prefix length, `10.20.0.0/16` or `fd00:20::/64`, with no host bits set")
    });
    let gateway = o.get("gateway").and_then(|n| d.ip(n, "gateway"));
    let dns = o.get("dns").map(|n| d.list(n, "dns", |d, n| d.ip(n, "dns"))).unwrap_or_default();
    let ranges = o
        .get("ranges")
        .map(|n| {
            d.list(n, "ranges", |d, n| {
                let s = d.string(n, "ranges")?;
                let parsed = crate::desired::addr::parse_range(&s.value);
                bad_address(
                    d,
                    &s,
                    parsed,
                    "fabrik::spec::bad-ip-range",
                    "ranges",
                    "write a range as `first-last`, both addresses of one family, the first not after the last",
                )
            })
        })
        .unwrap_or_default();
    for key in ["gateway", "dns", "ranges"] {
        if o.has(key) {
            d.required_because(&o, "subnet", &format!("for `{key}`"));
        }
    }

    if let Some(kind) = &kind {
        let because = format!("to a {} network", kind.value);
        let (needs, ignores) = kind_keys(kind.value);
        for key in needs {
            d.required_because(&o, key, &format!("for a {} network", kind.value));
        }
        for key in ignores {
            let users: Vec<&str> = NetKind::NAMES
                .iter()
                .enumerate()
                .filter(|&(i, _)| !kind_keys(NetKind::from_index(i)).1.contains(key))
                .map(|(_, w)| *w)
                .collect();
            let help = format!("remove `{key}`: only {} networks use it", users.join(" and "));
            d.irrelevant(&o, key, &because, &help);
        }
    }
    if purpose.as_ref().is_some_and(|p| p.value == Purpose::Tenant) {
        d.required_because(&o, "tenant", "for a tenant network");
    }
    if tenant.is_some() && shared {
        d.conflict(
            &o,
            "tenant",
            "shared",
            "a network is either owned by one tenant or shared by all; drop one of the keys",
        );
    }
    Some(Network {
        name: name?,
        description,
        purpose: purpose?,
        kind: kind?,
        tenant,
        shared,
        mtu,
        bridge,
        vlan,
        vni,
        pkey,
        membership,
        host_interface,
        port,
        parent,
        hosts,
        subnet,
        gateway,
        dns,
        ranges,
        span: o.span,
    })
}

/// `parsed`, located, or a `fabrik::spec::bad-address` at `text`.
fn bad_address<T>(
    d: &mut Decoder,
    text: &Spanned<String>,
    parsed: Option<T>,
    code: &'static str,
    key: &str,
    help: &str,
) -> Option<Spanned<T>> {
    if let Some(v) = parsed {
        return Some(Spanned::new(v, text.span));
    }
    d.diags.push(
        Diagnostic::error(code, format!("`{}` is not a valid `{key}`", text.value)).at(text.span, "here").help(help),
    );
    None
}

/// Keys a network kind needs, and keys it has no use for (the JSON Schema says the same).
pub(crate) fn kind_keys(kind: NetKind) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        NetKind::Bridge => (&[], &["vlan", "vni", "pkey", "membership", "host-interface", "port"]),
        NetKind::Vlan => (&["vlan", "parent"], &["vni", "pkey", "membership", "host-interface", "port"]),
        NetKind::Vxlan => (&["vni"], &["vlan", "pkey", "membership", "host-interface"]),
        NetKind::IbPartition => (&["pkey", "parent"], &["vlan", "vni", "port", "bridge"]),
        NetKind::Sriov => (&["parent"], &["vni", "pkey", "membership", "host-interface", "port", "bridge"]),
    }
}

pub(super) fn check_ifname(d: &mut Decoder, name: Spanned<String>, key: &str) -> Option<Spanned<String>> {
    if crate::desired::names::valid_ifname(&name.value) {
        return Some(name);
    }
    d.diags.push(
        Diagnostic::error(
            "fabrik::spec::bad-ifname",
            format!("`{}` is not a valid Linux interface name for `{key}`", name.value),
        )
        .at(name.span, "here")
        .help("interface names are 1 to 15 bytes of printable ASCII, without spaces, `/` or `:`, and not `.` or `..`"),
    );
    None
}

/// Partition keys 0x0000, 0x7fff/0xffff (the default partition) and 0x8000 are reserved
/// (InfiniBand Architecture Specification, vol. 1, 10.9.1).
fn check_pkey(d: &mut Decoder, pkey: Spanned<u16>) -> Option<Spanned<u16>> {
    if matches!(pkey.value, 0x7fff | 0x8000) {
        d.diags.push(
            Diagnostic::error("fabrik::spec::reserved-pkey", format!("pkey {:#06x} is reserved", pkey.value))
                .at(pkey.span, "reserved partition key")
                .help("use a pkey from 0x0001 to 0x7ffe (limited) or 0x8001 to 0xfffe (full membership)"),
        );
        return None;
    }
    Some(pkey)
}
