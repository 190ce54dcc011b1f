//! Host links (bridges, VXLAN and VLAN devices) and hugepage pools.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::Out;
use crate::desired::{
    DesiredHost, DesiredHugepages, DesiredLink, DesiredNetwork, DesiredVfs, ResourceId, ResourceKind,
};
use crate::live::link::NIC_LAYER_INFINIBAND;
use crate::live::{LinkKind, LiveHost};
use crate::plan::ownership::Owner;
use crate::plan::{Action, Change, Class, Op};
use crate::spec::model::NetKind;

/// Whether a live link is the kind of device the desired one is. A VXLAN's local
/// address and flood entries do not count: [`tunnel`] compares them.
fn same_kind(want: &LinkKind, have: &LinkKind) -> bool {
    match (want, have) {
        (LinkKind::Bridge, LinkKind::Bridge) => true,
        (LinkKind::Vxlan { vni, port, .. }, LinkKind::Vxlan { vni: v, port: p, .. }) => vni == v && port == p,
        (LinkKind::Vlan { id, parent }, LinkKind::Vlan { id: i, parent: p }) => id == i && parent == p,
        (LinkKind::Veth { .. }, LinkKind::Veth { .. }) => true,
        (LinkKind::Macvlan { parent }, LinkKind::Macvlan { parent: p }) => parent == p,
        (LinkKind::Ipoib { parent, pkey }, LinkKind::Ipoib { parent: p, pkey: k }) => parent == p && pkey == k,
        (LinkKind::Other { kind }, LinkKind::Other { kind: k }) => kind == k,
        (
            LinkKind::Bridge
            | LinkKind::Vxlan { .. }
            | LinkKind::Vlan { .. }
            | LinkKind::Veth { .. }
            | LinkKind::Macvlan { .. }
            | LinkKind::Ipoib { .. }
            | LinkKind::Other { .. },
            _,
        ) => false,
    }
}

fn kind_word(kind: &LinkKind) -> String {
    match kind {
        LinkKind::Bridge => "bridge".into(),
        LinkKind::Vxlan { vni, .. } => format!("vxlan {vni}"),
        LinkKind::Vlan { id, parent } => format!("vlan {id} on {parent}"),
        LinkKind::Veth { .. } => "veth".into(),
        LinkKind::Macvlan { parent } => format!("macvlan on {parent}"),
        LinkKind::Ipoib { parent, pkey } => format!("IPoIB child of {parent} for pkey {pkey:#06x}"),
        LinkKind::Other { kind } => kind.clone(),
    }
}

fn addresses(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "none".into();
    }
    ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
}

/// Flood entries in a reason: a long list is cut, since every address is in the change.
fn brief(ips: &[IpAddr]) -> String {
    /// As many addresses as a reason line names before it counts the rest.
    const NAMED_MAX: usize = 4;
    if ips.len() <= NAMED_MAX {
        return addresses(ips);
    }
    format!("{} and {} more", addresses(&ips[..NAMED_MAX - 1]), ips.len() - (NAMED_MAX - 1))
}

/// A VXLAN device's tunnel, live against desired: a local address fabrik did not ask
/// for is a replace (the device is made anew from it); flood entries are added and
/// removed in place. A `None` local is the kernel's to choose, never a change.
enum Tunnel {
    Same,
    /// The live address, or none, and the desired one.
    Local(Option<IpAddr>, IpAddr),
    /// The remotes to add and to remove, and the change to record.
    Remotes {
        add: Vec<IpAddr>,
        remove: Vec<IpAddr>,
        change: Change,
    },
}

fn tunnel(want: &LinkKind, have: &LinkKind) -> Tunnel {
    let (LinkKind::Vxlan { local, remotes, .. }, LinkKind::Vxlan { local: have_local, remotes: have_remotes, .. }) =
        (want, have)
    else {
        return Tunnel::Same;
    };
    if let Some(local) = local
        && have_local.as_ref() != Some(local)
    {
        return Tunnel::Local(*have_local, *local);
    }
    let want: BTreeSet<IpAddr> = remotes.iter().copied().collect();
    let have: BTreeSet<IpAddr> = have_remotes.iter().copied().collect();
    if want == have {
        return Tunnel::Same;
    }
    let list = |s: &BTreeSet<IpAddr>| addresses(&s.iter().copied().collect::<Vec<_>>());
    Tunnel::Remotes {
        add: want.difference(&have).copied().collect(),
        remove: have.difference(&want).copied().collect(),
        change: Change::new("remotes", list(&have), list(&want), Class::Live),
    }
}

/// How a created VXLAN device reaches the other hosts, for the reason of its creation.
fn tunnel_words(kind: &LinkKind) -> String {
    match kind {
        LinkKind::Vxlan { local: Some(local), remotes, .. } if !remotes.is_empty() => {
            format!(", from {local}, flooding to {}", brief(remotes))
        }
        LinkKind::Vxlan { local: Some(local), .. } => format!(", from {local}"),
        LinkKind::Bridge
        | LinkKind::Vxlan { .. }
        | LinkKind::Vlan { .. }
        | LinkKind::Veth { .. }
        | LinkKind::Macvlan { .. }
        | LinkKind::Ipoib { .. }
        | LinkKind::Other { .. } => String::new(),
    }
}

pub fn links(factory: &str, host: &DesiredHost, live: &LiveHost, out: &mut Out) {
    for link in &host.links {
        let DesiredLink { id, name, kind, mtu, master, uplink } = link;
        let uplink_master = match uplink {
            Some(nic) => match uplink_state(host, live, id, name, nic, factory) {
                Ok(m) => Some((nic, m)),
                Err((code, message, help)) => {
                    out.error(code, id, message, help);
                    continue;
                }
            },
            None => None,
        };
        let Some(l) = live.links.iter().find(|l| &l.name == name) else {
            let mut reason = format!("create {}", kind_word(kind));
            if let Some(m) = master {
                reason.push_str(&format!(" as a port of `{m}`"));
            }
            if let Some(nic) = uplink {
                reason.push_str(&format!(" with NIC `{nic}` as its uplink port"));
            }
            if let Some(m) = mtu {
                reason.push_str(&format!(", MTU {m}"));
            }
            reason.push_str(&tunnel_words(kind));
            out.actions.push(Action::new(id.clone(), Op::Create, Class::Live, reason));
            continue;
        };
        if !out.owned(id, "link", Owner::of_link(l.alias.as_deref(), factory)) {
            continue;
        }
        if !same_kind(kind, &l.kind) {
            let mut a = Action::new(
                id.clone(),
                Op::Replace,
                Class::Replace,
                format!("is a {}, should be a {}: deleted and created again", kind_word(&l.kind), kind_word(kind)),
            );
            a.changes.push(Change::new("kind", kind_word(&l.kind), kind_word(kind), Class::Replace));
            out.actions.push(a);
            continue;
        }
        let tunnel = tunnel(kind, &l.kind);
        if let Tunnel::Local(have, want) = tunnel {
            let sends = have.map_or_else(|| "has no local address".to_string(), |ip| format!("sends from {ip}"));
            let mut a = Action::new(
                id.clone(),
                Op::Replace,
                Class::Replace,
                format!("{sends}, should send from {want}: deleted and created again"),
            );
            let from = have.map_or_else(|| "none".to_string(), |ip| ip.to_string());
            a.changes.push(Change::new("local", from, want, Class::Replace));
            out.actions.push(a);
            continue;
        }
        let mut changes = Vec::new();
        if let Some(m) = mtu
            && *m != l.mtu
        {
            changes.push(Change::new("mtu", l.mtu, m, Class::Live));
        }
        if master != &l.master {
            let word = |m: &Option<String>| m.clone().unwrap_or_else(|| "none".into());
            changes.push(Change::new("master", word(&l.master), word(master), Class::Live));
        }
        if !l.up {
            changes.push(Change::new("up", false, true, Class::Live));
        }
        let mut uplink_reason = None;
        if let Some((nic, have)) = uplink_master
            && have.as_deref() != Some(name.as_str())
        {
            // The bridge's uplink port: none now (the NIC is elsewhere or nowhere), the NIC.
            changes.push(Change::new("uplink", "none", nic, Class::Live));
            uplink_reason = Some(match have {
                Some(other) => {
                    format!("NIC `{nic}` is a port of `{other}`, which goes: made this bridge's uplink port")
                }
                None => format!("NIC `{nic}` is not a port of the bridge: made its uplink port"),
            });
        }
        let mut reasons: Vec<String> = changes
            .iter()
            .filter(|c| c.field != "uplink")
            .map(|c| format!("{} {} → {}", c.field, c.from.as_deref().unwrap_or("-"), c.to.as_deref().unwrap_or("-")))
            .collect();
        reasons.extend(uplink_reason);
        if let Tunnel::Remotes { add, remove, change } = tunnel {
            let mut parts = Vec::new();
            if !add.is_empty() {
                parts.push(format!("add {}", brief(&add)));
            }
            if !remove.is_empty() {
                parts.push(format!("remove {}", brief(&remove)));
            }
            reasons.push(format!("flood entries: {}", parts.join(", ")));
            changes.push(change);
        }
        if !changes.is_empty() {
            out.actions.push(Action::update(id.clone(), changes, reasons.join("; ")));
        }
    }
    let desired: BTreeSet<&str> = host.links.iter().map(|l| l.name.as_str()).collect();
    for l in live.links.iter().filter(|l| !desired.contains(l.name.as_str())) {
        let id = ResourceId::new(ResourceKind::Link, &host.name, &l.name);
        out.extra(id, "link", Owner::of_link(l.alias.as_deref(), factory), |id| {
            Action::new(id, Op::Delete, Class::Live, "no longer desired: deleted")
        });
    }
}

/// The bridge a bridge network's uplink NIC is a port of now, or why it cannot be made
/// the port of `bridge`: the host has no such NIC, or another bridge holds it that this
/// plan keeps (a NIC has one master; fabrik never takes one from a bridge it keeps, or
/// from one it does not own). A bridge of fabrik's that the plan deletes lets it go.
fn uplink_state(
    host: &DesiredHost,
    live: &LiveHost,
    id: &ResourceId,
    bridge: &str,
    nic: &str,
    factory: &str,
) -> Result<Option<String>, (&'static str, String, &'static str)> {
    let Some(l) = live.links.iter().find(|l| l.name == nic) else {
        return Err((
            "fabrik::plan::missing-nic",
            format!(
                "NIC `{nic}` is the uplink of bridge `{bridge}` on host `{}`, but the host has no such link",
                id.host
            ),
            "check the network's `parent` against `fabrik inventory`, or fix the host's declaration",
        ));
    };
    let Some(other) = l.master.as_deref().filter(|m| *m != bridge) else { return Ok(l.master.clone()) };
    let kept = host.links.iter().any(|d| d.name == other);
    let ours = live
        .links
        .iter()
        .find(|m| m.name == other)
        .is_some_and(|m| Owner::of_link(m.alias.as_deref(), factory) == Owner::Ours);
    if kept || !ours {
        return Err((
            "fabrik::plan::uplink-taken",
            format!("NIC `{nic}`, the uplink of bridge `{bridge}` on host `{}`, is a port of `{other}`", id.host),
            "a NIC is the port of one bridge: give the networks different parents, or take the NIC out of the other bridge",
        ));
    }
    Ok(l.master.clone())
}

/// The physical functions of SR-IOV and InfiniBand-partition networks, as the host
/// reports them: one the host lacks, or an InfiniBand partition on a NIC whose link layer
/// is not InfiniBand (the kernel would hand Ethernet VFs to the VMs, with no partition
/// key), stops the plan instead of failing, or silently misbehaving, in apply. A NIC
/// with `sriov-vfs` is reported missing by [`vfs`] already.
pub fn network_nics(host: &DesiredHost, live: &LiveHost, out: &mut Out) {
    for net in &host.networks {
        let DesiredNetwork { id, name, kind, tenant: _, bridge: _, pf, vlan: _, mtu: _ } = net;
        let Some(pf) = pf else { continue };
        let Some(l) = live.links.iter().find(|l| &l.name == pf) else {
            if !host.vfs.iter().any(|v| &v.nic == pf) {
                out.error(
                    "fabrik::plan::missing-nic",
                    id,
                    format!(
                        "NIC `{pf}`, the physical function of {kind} network `{name}`, is not on host `{}`",
                        id.host
                    ),
                    "check the network's `parent` against `fabrik inventory`, or fix the host's declaration",
                );
            }
            continue;
        };
        let layer = match &l.kind {
            LinkKind::Other { kind } => kind.as_str(),
            LinkKind::Bridge
            | LinkKind::Vxlan { .. }
            | LinkKind::Vlan { .. }
            | LinkKind::Veth { .. }
            | LinkKind::Macvlan { .. }
            | LinkKind::Ipoib { .. } => "virtual",
        };
        let needs_infiniband = match kind {
            NetKind::IbPartition => true,
            NetKind::Sriov | NetKind::Bridge | NetKind::Vlan | NetKind::Vxlan => false,
        };
        if needs_infiniband && layer != NIC_LAYER_INFINIBAND {
            out.error(
                "fabrik::plan::wrong-nic-kind",
                id,
                format!(
                    "{kind} network `{name}` needs an InfiniBand NIC, but `{pf}` on host `{}` is a `{layer}` link",
                    id.host
                ),
                "give the partition an InfiniBand NIC as `parent`, or make the network `kind: sriov`",
            );
        }
    }
}

/// SR-IOV VF counts. The kernel changes a count only from or to 0: going from some VFs
/// to another number removes them all first, under any VM using one.
pub fn vfs(host: &DesiredHost, live: &LiveHost, out: &mut Out) {
    for want in &host.vfs {
        let DesiredVfs { id, nic, count } = want;
        let Some(l) = live.links.iter().find(|l| &l.name == nic) else {
            out.error(
                "fabrik::plan::missing-nic",
                id,
                format!("NIC `{nic}` is declared on host `{}` with SR-IOV VFs, but the host has no such link", id.host),
                "check the name with `fabrik inventory`, or fix the host's declaration",
            );
            continue;
        };
        let Some(now) = l.sriov_vfs else {
            out.error(
                "fabrik::plan::missing-nic",
                id,
                format!(
                    "NIC `{nic}` on host `{}` has no SR-IOV capability, but declares `sriov-vfs: {count}`",
                    id.host
                ),
                "enable SR-IOV in the NIC's firmware and BIOS, or remove `sriov-vfs`",
            );
            continue;
        };
        out.present.insert(id.clone());
        if now == *count {
            continue;
        }
        let (class, reason) = if now == 0 {
            (Class::Live, format!("create {count} VFs on `{nic}`"))
        } else {
            (
                Class::Replace,
                format!("{now} → {count} VFs on `{nic}`: the kernel removes all VFs first; VMs using them lose them"),
            )
        };
        out.actions.push(Action::update(id.clone(), vec![Change::new("vfs", now, count, class)], reason));
    }
}

pub fn hugepages(host: &DesiredHost, live: &LiveHost, out: &mut Out) {
    for pool in &host.hugepages {
        let DesiredHugepages { id, numa_node, size, count } = pool;
        let have = live.hugepages.iter().find(|h| h.numa_node == *numa_node && h.size == *size);
        let total = have.map_or(0, |h| h.total);
        if total == *count {
            out.present.insert(id.clone());
            continue;
        }
        let mut reason = format!("{count} pages of {size} on NUMA node {numa_node} (now {total})");
        if let Some(h) = have
            && *count < total
            && total - count > h.free
        {
            reason.push_str(&format!("; only {} are free, the kernel frees the rest as VMs release them", h.free));
        }
        out.present.insert(id.clone());
        out.actions.push(Action::update(id.clone(), vec![Change::new("pages", total, count, Class::Live)], reason));
    }
}

/// fabrik's block of the subnet manager's partition file: written when the file or the
/// block is missing, rewritten when it differs from the factory's (a hand edit inside
/// it is drift, said so); the operator's lines around it are never compared.
pub fn partitions(factory: &str, want: &crate::desired::DesiredPartitions, live: &LiveHost, out: &mut Out) {
    let crate::desired::DesiredPartitions { id, path, block } = want;
    let content = live.partitions.as_ref().filter(|p| &p.path == path).and_then(|p| p.content.as_deref());
    let ports = block.lines().filter(|l| l.trim_start().starts_with("0x")).count();
    let (op, reason) = match content.map(|c| crate::render::opensm::managed_block(c, factory)) {
        None => (
            Op::Create,
            format!("write {path} with the factory's partitions ({ports} VM port(s)) and have OpenSM re-read it"),
        ),
        Some(Ok(None)) => (
            Op::Create,
            format!(
                "add fabrik's block to {path} ({ports} VM port(s)), keeping the lines there, and have OpenSM re-read it"
            ),
        ),
        Some(Ok(Some(now))) if now == block => {
            out.present.insert(id.clone());
            return;
        }
        Some(Ok(Some(_))) => {
            out.present.insert(id.clone());
            (
                Op::Update,
                format!(
                    "fabrik's block of {path} differs from the factory's partitions (edited by hand, or the factory changed): rewrite it and have OpenSM re-read it"
                ),
            )
        }
        Some(Err(e)) => {
            out.error(
                "fabrik::plan::partitions-file",
                id,
                format!("{path} on host `{}`: {e}", id.host),
                "fix or remove the `# BEGIN fabrik`/`# END fabrik` lines by hand, then plan again",
            );
            return;
        }
    };
    let action = match op {
        Op::Update => {
            Action::update(id.clone(), vec![Change::new("partitions", "edited", "the factory's", Class::Live)], reason)
        }
        _ => Action::new(id.clone(), op, Class::Live, reason),
    };
    out.actions.push(action);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(text: &str) -> Vec<IpAddr> {
        text.split_whitespace().map(|t| t.parse().unwrap()).collect()
    }

    fn vxlan(local: Option<&str>, remotes: &str) -> LinkKind {
        LinkKind::Vxlan {
            vni: 10001,
            local: local.map(|l| l.parse().unwrap()),
            port: 4789,
            parent: Some("fe0".into()),
            remotes: ips(remotes),
        }
    }

    #[test]
    fn a_long_list_of_flood_entries_is_counted_in_a_reason() {
        assert_eq!(brief(&ips("10.0.0.1 10.0.0.2")), "10.0.0.1, 10.0.0.2");
        assert_eq!(
            brief(&ips("10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5")),
            "10.0.0.1, 10.0.0.2, 10.0.0.3 and 2 more"
        );
    }

    #[test]
    fn flood_entries_compare_as_sets_and_the_local_address_only_when_desired() {
        let want = vxlan(Some("10.0.0.1"), "10.0.0.2 10.0.0.3");
        assert!(matches!(tunnel(&want, &vxlan(Some("10.0.0.1"), "10.0.0.3 10.0.0.2")), Tunnel::Same));
        assert!(matches!(tunnel(&vxlan(None, ""), &vxlan(Some("10.0.0.9"), "")), Tunnel::Same));
        let Tunnel::Local(None, to) = tunnel(&want, &vxlan(None, "10.0.0.2 10.0.0.3")) else { panic!("a new local") };
        assert_eq!(to.to_string(), "10.0.0.1");
        let Tunnel::Remotes { add, remove, change } = tunnel(&want, &vxlan(Some("10.0.0.1"), "10.0.0.3 10.0.0.4"))
        else {
            panic!("other remotes")
        };
        assert_eq!((add, remove), (ips("10.0.0.2"), ips("10.0.0.4")));
        assert_eq!(
            (change.from.as_deref(), change.to.as_deref()),
            (Some("10.0.0.3, 10.0.0.4"), Some("10.0.0.2, 10.0.0.3"))
        );
        // Other kinds have no tunnel; `same_kind` judges them.
        assert!(matches!(tunnel(&LinkKind::Bridge, &want), Tunnel::Same));
    }
}
