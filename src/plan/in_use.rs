//! Deletions held back while something fabrik does not own still uses what they remove.
//!
//! When a factory no longer needs a network on a host (its last VM there went), the diff
//! deletes the libvirt network, its bridge and fabrik's ports of that bridge (a VXLAN
//! device). A guest another tool or factory attached to that network or bridge would be
//! cut off. So a deletion is held back, listed as [`NoticeKind::Held`] with the code
//! `fabrik::plan::in-use` and the names of those users, as long as the host has:
//!
//! * a domain not marked by this factory whose interface names the network
//!   (`<source network=…>`) or the bridge (`<source bridge=…>`), running or not;
//! * a port of the bridge (a link whose master it is) that is a veth or a tap — what
//!   guests and containers attach with — and neither a link fabrik marked for this
//!   factory, nor the tap of one of this factory's domains, nor a NIC the factory
//!   declares as a bridge's uplink. Physical NICs, VLAN devices and bonds on the bridge
//!   are uplinks, which deleting the bridge only releases.
//!
//! Held back, not an error: the rest of the plan (the VM's own deletion, other hosts'
//! changes) still runs, and the next plan deletes the network once its users are gone.
//! Everything here is read from what observation already holds (each domain's parsed
//! interfaces, each link's master), so it costs no host call. [`super::file::stale`]
//! asks the same of a saved plan, so `fabrik apply plan.json` refuses a deletion whose
//! network gained such a user after the plan was made.

use std::collections::BTreeSet;

use super::diff::Out;
use super::ownership::{Owner, describe_factory};
use super::{Action, Notice, NoticeKind, Op};
use crate::desired::DesiredHost;
use crate::desired::{ResourceId, ResourceKind};
use crate::live::{LinkKind, LiveHost};

/// The kind netlink reports for a tap device (a guest's NIC, `vnet3`).
const TAP_KIND: &str = "tun";

/// The code of a held-back deletion (`fabrik explain fabrik::plan::in-use`).
pub const CODE: &str = "fabrik::plan::in-use";

/// As many users as a reason names before it counts the rest.
const NAMED_MAX: usize = 4;

/// Something on a host that uses a network or bridge and is not this factory's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct User {
    /// `domain` or `port`.
    pub what: &'static str,
    pub name: String,
    /// Who marked it: never [`Owner::Ours`].
    pub owner: String,
}

impl User {
    fn new(what: &'static str, name: &str, owner: Owner) -> Option<User> {
        let owner = match owner {
            Owner::Ours => return None,
            Owner::Unmarked => "not managed by this factory".to_string(),
            Owner::Other(f) => format!("managed by {}", describe_factory(&f)),
        };
        Some(User { what, name: name.to_string(), owner })
    }

    pub fn describe(&self) -> String {
        format!("{} `{}` ({})", self.what, self.name, self.owner)
    }
}

/// The users in a reason: `domain `a` (…), port `veth9` (…)`, a long list cut.
pub fn describe(users: &[User]) -> String {
    let named: Vec<String> = users.iter().take(NAMED_MAX).map(User::describe).collect();
    match users.len().checked_sub(NAMED_MAX) {
        Some(rest) if rest > 0 => format!("{} and {rest} more", named.join(", ")),
        _ => named.join(", "),
    }
}

/// Domains not this factory's with an interface on libvirt network `network`.
fn network_users(factory: &str, live: &LiveHost, network: &str) -> Vec<User> {
    live.domains
        .iter()
        .filter(|d| d.interfaces.iter().any(|i| i.kind == "network" && i.source == network))
        .filter_map(|d| User::new("domain", &d.name, Owner::of(d.owner.as_ref(), factory)))
        .collect()
}

/// The names of the NICs a desired host declares as bridges' uplinks.
pub fn uplinks(host: &DesiredHost) -> BTreeSet<&str> {
    host.links.iter().filter_map(|l| l.uplink.as_deref()).collect()
}

/// What uses bridge `bridge` and is not this factory's: domains on it (directly or
/// through a libvirt network on it), and veths and taps on it that no domain accounts
/// for, that are not fabrik's links and not declared `uplinks`.
pub fn bridge_users(factory: &str, live: &LiveHost, uplinks: &BTreeSet<&str>, bridge: &str) -> Vec<User> {
    let networks: BTreeSet<&str> =
        live.networks.iter().filter(|n| n.bridge.as_deref() == Some(bridge)).map(|n| n.name.as_str()).collect();
    let on_bridge = |kind: &str, source: &str| match kind {
        "bridge" => source == bridge,
        "network" => networks.contains(source),
        _ => false,
    };
    let mut users = Vec::new();
    // Every domain's taps, so a port that is a guest's is named by its guest.
    let mut taps: BTreeSet<&str> = BTreeSet::new();
    for d in &live.domains {
        taps.extend(d.interfaces.iter().filter_map(|i| i.target.as_deref()));
        if d.interfaces.iter().any(|i| on_bridge(&i.kind, &i.source)) {
            users.extend(User::new("domain", &d.name, Owner::of(d.owner.as_ref(), factory)));
        }
    }
    for port in live.links.iter().filter(|l| l.master.as_deref() == Some(bridge)) {
        let guest_side = match &port.kind {
            LinkKind::Veth { .. } => true,
            LinkKind::Other { kind } => kind == TAP_KIND,
            LinkKind::Bridge
            | LinkKind::Vxlan { .. }
            | LinkKind::Vlan { .. }
            | LinkKind::Macvlan { .. }
            | LinkKind::Ipoib { .. } => false,
        };
        if !guest_side || uplinks.contains(port.name.as_str()) || taps.contains(port.name.as_str()) {
            continue;
        }
        users.extend(User::new("port", &port.name, Owner::of_link(port.alias.as_deref(), factory)));
    }
    users
}

/// Whether the live link `name` is a bridge.
fn is_bridge(live: &LiveHost, name: &str) -> bool {
    live.links.iter().any(|l| l.name == name && l.kind == LinkKind::Bridge)
}

/// Why deleting `id` (a network or link of `live`'s host) must wait, when it must:
/// `deleted` says which other resources of the host the same plan deletes.
pub fn blocked(
    factory: &str,
    live: &LiveHost,
    uplinks: &BTreeSet<&str>,
    id: &ResourceId,
    deleted: &dyn Fn(&ResourceId) -> bool,
) -> Option<(String, usize)> {
    let bridge_deleted = |bridge: &str| deleted(&ResourceId::new(ResourceKind::Link, &live.name, bridge));
    match id.kind {
        ResourceKind::Network => {
            let net = live.networks.iter().find(|n| n.name == id.name)?;
            let mut users = network_users(factory, live, &net.name);
            // Its bridge goes too: whatever else the bridge carries is cut off with it.
            if let Some(bridge) = net.bridge.as_deref().filter(|b| bridge_deleted(b)) {
                users.extend(bridge_users(factory, live, uplinks, bridge));
            }
            users.sort();
            users.dedup();
            (!users.is_empty())
                .then(|| (format!("network `{}` still carries {}", net.name, describe(&users)), users.len()))
        }
        ResourceKind::Link if is_bridge(live, &id.name) => {
            let users = bridge_users(factory, live, uplinks, &id.name);
            (!users.is_empty())
                .then(|| (format!("bridge `{}` still carries {}", id.name, describe(&users)), users.len()))
        }
        ResourceKind::Link => {
            // A port of a bridge that is itself held back stays with it: the guests the
            // bridge keeps still reach the other hosts through it.
            let master = live.links.iter().find(|l| l.name == id.name)?.master.as_deref()?;
            if !bridge_deleted(master) || !is_bridge(live, master) {
                return None;
            }
            let users = bridge_users(factory, live, uplinks, master);
            (!users.is_empty()).then(|| {
                (format!("it is a port of bridge `{master}`, which still carries {}", describe(&users)), users.len())
            })
        }
        ResourceKind::Host
        | ResourceKind::Gpu
        | ResourceKind::Mig
        | ResourceKind::Hugepages
        | ResourceKind::Vfs
        | ResourceKind::Pool
        | ResourceKind::Volume
        | ResourceKind::Vm
        | ResourceKind::Partitions => None,
    }
}

/// The line of a held-back deletion: what still uses it and what to do.
pub fn reason(why: &str, users: usize) -> String {
    let them = if users == 1 { "it" } else { "them" };
    format!(
        "no longer desired, but not deleted: {why}: detach {them} first (`virsh detach-interface`, `ip link set DEV \
         nomaster`) or adopt an unmarked domain with `fabrik import`, then plan again"
    )
}

/// Takes out of `out` the deletions of networks and links that something this factory
/// does not own still uses, and lists each as held back.
pub fn hold(factory: &str, desired: &DesiredHost, live: &LiveHost, out: &mut Out) {
    let uplinks = uplinks(desired);
    let doomed: BTreeSet<ResourceId> = out
        .actions
        .iter()
        .filter(|a| a.op == Op::Delete && a.id.host == live.name)
        .filter(|a| matches!(a.id.kind, ResourceKind::Network | ResourceKind::Link))
        .map(|a| a.id.clone())
        .collect();
    if doomed.is_empty() {
        return;
    }
    let deleted = |id: &ResourceId| doomed.contains(id);
    let held: Vec<(ResourceId, String)> = doomed
        .iter()
        .filter_map(|id| blocked(factory, live, &uplinks, id, &deleted).map(|(why, n)| (id.clone(), reason(&why, n))))
        .collect();
    if held.is_empty() {
        return;
    }
    out.actions.retain(|a: &Action| !(a.op == Op::Delete && held.iter().any(|(id, _)| id == &a.id)));
    for (id, why) in held {
        out.notices.push(Notice { id, kind: NoticeKind::Held, reason: why, code: Some(CODE.to_string()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{LiveDomain, LiveInterface, LiveLink, LiveNetwork, Ownership, PowerState};

    fn link(name: &str, kind: LinkKind, master: Option<&str>, alias: Option<String>) -> LiveLink {
        LiveLink {
            name: name.into(),
            kind,
            mtu: 1500,
            up: true,
            master: master.map(Into::into),
            alias,
            sriov_vfs: None,
            sriov_pci: None,
        }
    }

    fn domain(name: &str, owner: Option<&str>, kind: &str, source: &str, tap: Option<&str>) -> LiveDomain {
        LiveDomain {
            name: name.into(),
            uuid: String::new(),
            state: PowerState::Running,
            autostart: false,
            vcpus: 1,
            memory: crate::spec::types::ByteSize::parse("64MiB").unwrap(),
            hugepages: None,
            vcpupin: Vec::new(),
            emulatorpin: None,
            numa_mode: None,
            numa_nodeset: None,
            numa_cells: Vec::new(),
            hostdevs: Vec::new(),
            interfaces: vec![LiveInterface {
                mac: None,
                kind: kind.into(),
                source: source.into(),
                model: None,
                target: tap.map(Into::into),
            }],
            disks: Vec::new(),
            owner: owner.map(|f| Ownership {
                factory: f.into(),
                resource: format!("vm:h1/{name}"),
                spec_hash: String::new(),
            }),
            addresses: Vec::new(),
            xml: String::new(),
            running: None,
        }
    }

    /// Host `h1`: fabrik's network `acme` on bridge `br-acme` with a VXLAN port and an
    /// uplink NIC.
    fn host(domains: Vec<LiveDomain>, extra_links: Vec<LiveLink>) -> LiveHost {
        let ours = |id: &str| Some(super::super::ownership::link_alias("ai", &ResourceId::parse(id).unwrap()));
        let mut links = vec![
            link("br-acme", LinkKind::Bridge, None, ours("link:h1/br-acme")),
            link("vx-acme", LinkKind::Other { kind: "vxlan".into() }, Some("br-acme"), ours("link:h1/vx-acme")),
            link("eth1", LinkKind::Other { kind: crate::live::link::NIC_LAYER_ETHERNET.into() }, Some("br-acme"), None),
        ];
        links.extend(extra_links);
        LiveHost {
            name: "h1".into(),
            links,
            domains,
            networks: vec![LiveNetwork {
                name: "acme".into(),
                uuid: String::new(),
                active: true,
                autostart: true,
                bridge: Some("br-acme".into()),
                forward: Some("bridge".into()),
                owner: None,
                xml: String::new(),
            }],
            ..LiveHost::default()
        }
    }

    fn id(text: &str) -> ResourceId {
        ResourceId::parse(text).unwrap()
    }

    fn held(live: &LiveHost) -> (Vec<String>, Vec<String>) {
        let mut out = Out::default();
        for i in ["net:h1/acme", "link:h1/br-acme", "link:h1/vx-acme"] {
            out.actions.push(Action::new(id(i), Op::Delete, super::super::Class::Live, "no longer desired"));
        }
        hold("ai", &DesiredHost::default(), live, &mut out);
        (
            out.actions.iter().map(|a| a.id.to_string()).collect(),
            out.notices.iter().map(|n| format!("{}: {}", n.id, n.reason)).collect(),
        )
    }

    #[test]
    fn a_network_only_fabrik_uses_is_deleted() {
        let ours = domain("vm-a", Some("ai"), "network", "acme", Some("vnet0"));
        let tap = link("vnet0", LinkKind::Other { kind: "tun".into() }, Some("br-acme"), None);
        let (actions, notices) = held(&host(vec![ours], vec![tap]));
        assert_eq!(actions.len(), 3, "{notices:?}");
        assert!(notices.is_empty());
    }

    #[test]
    fn an_unmarked_domain_holds_the_network_its_bridge_and_the_bridges_ports() {
        for (kind, source) in [("network", "acme"), ("bridge", "br-acme")] {
            // Shut off: no tap, still defined on the network.
            let (actions, notices) = held(&host(vec![domain("vm-foo", None, kind, source, None)], Vec::new()));
            assert!(actions.is_empty(), "{actions:?}");
            assert_eq!(notices.len(), 3);
            assert!(notices.iter().all(|n| n.contains("domain `vm-foo` (not managed by this factory)")), "{notices:?}");
            assert!(
                notices
                    .iter()
                    .any(|n| n.starts_with("link:h1/br-acme: ") && n.contains("bridge `br-acme` still carries"))
            );
        }
    }

    #[test]
    fn a_domain_of_another_factory_holds_them_too() {
        let (actions, notices) = held(&host(vec![domain("vm-b", Some("other"), "network", "acme", None)], Vec::new()));
        assert!(actions.is_empty());
        assert!(notices[0].contains("managed by factory `other`"), "{notices:?}");
    }

    #[test]
    fn a_foreign_port_is_named_and_a_foreign_guests_tap_is_named_by_its_guest() {
        let veth = link("veth9", LinkKind::Veth { peer: None }, Some("br-acme"), None);
        let (actions, notices) = held(&host(Vec::new(), vec![veth]));
        assert!(actions.is_empty());
        assert!(notices.iter().all(|n| n.contains("port `veth9`")), "{notices:?}");
        let tap = link("vnet7", LinkKind::Other { kind: "tun".into() }, Some("br-acme"), None);
        let (_, notices) = held(&host(vec![domain("vm-x", None, "bridge", "br-acme", Some("vnet7"))], vec![tap]));
        assert!(notices.iter().all(|n| n.contains("domain `vm-x`") && !n.contains("vnet7")), "{notices:?}");
        // A veth the factory declares as an uplink is not a user.
        let veth = link("up0", LinkKind::Veth { peer: None }, Some("br-acme"), None);
        let live = host(Vec::new(), vec![veth]);
        let declared: BTreeSet<&str> = ["up0"].into();
        assert_eq!(blocked("ai", &live, &declared, &id("link:h1/br-acme"), &|_| true), None);
        assert!(blocked("ai", &live, &BTreeSet::new(), &id("link:h1/br-acme"), &|_| true).is_some());
    }

    #[test]
    fn a_port_deleted_from_a_bridge_that_stays_is_not_held() {
        let live = host(vec![domain("vm-foo", None, "bridge", "br-acme", None)], Vec::new());
        let deleted = |i: &ResourceId| i == &id("link:h1/vx-acme");
        assert_eq!(blocked("ai", &live, &BTreeSet::new(), &id("link:h1/vx-acme"), &deleted), None);
        // The network alone goes, and nobody names it: the guest on the bridge keeps it.
        assert_eq!(blocked("ai", &live, &BTreeSet::new(), &id("net:h1/acme"), &|i| i == &id("net:h1/acme")), None);
    }

    #[test]
    fn a_long_list_of_users_is_counted() {
        let users: Vec<User> = (0..6).map(|i| User::new("port", &format!("p{i}"), Owner::Unmarked).unwrap()).collect();
        assert!(describe(&users).ends_with("and 2 more"), "{}", describe(&users));
    }
}
