//! Host links (bridges, VXLAN and VLAN devices) and hugepage pools.

use std::collections::BTreeSet;

use super::Out;
use crate::desired::{DesiredHost, DesiredHugepages, DesiredLink, ResourceId, ResourceKind};
use crate::live::{LinkKind, LiveHost};
use crate::plan::ownership::Owner;
use crate::plan::{Action, Change, Class, Op};

/// Whether a live link is the kind of device the desired one is. Addresses libvirt or
/// the kernel fill in (a VXLAN's local address and learned remotes) do not count.
fn same_kind(want: &LinkKind, have: &LinkKind) -> bool {
    match (want, have) {
        (LinkKind::Bridge, LinkKind::Bridge) => true,
        (LinkKind::Vxlan { vni, port, .. }, LinkKind::Vxlan { vni: v, port: p, .. }) => vni == v && port == p,
        (LinkKind::Vlan { id, parent }, LinkKind::Vlan { id: i, parent: p }) => id == i && parent == p,
        (LinkKind::Veth { .. }, LinkKind::Veth { .. }) => true,
        (LinkKind::Macvlan { parent }, LinkKind::Macvlan { parent: p }) => parent == p,
        (LinkKind::Other { kind }, LinkKind::Other { kind: k }) => kind == k,
        (
            LinkKind::Bridge
            | LinkKind::Vxlan { .. }
            | LinkKind::Vlan { .. }
            | LinkKind::Veth { .. }
            | LinkKind::Macvlan { .. }
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
        LinkKind::Other { kind } => kind.clone(),
    }
}

pub fn links(factory: &str, host: &DesiredHost, live: &LiveHost, out: &mut Out) {
    for link in &host.links {
        let DesiredLink { id, name, kind, mtu, master } = link;
        let Some(l) = live.links.iter().find(|l| &l.name == name) else {
            let mut reason = format!("create {}", kind_word(kind));
            if let Some(m) = master {
                reason.push_str(&format!(" as a port of `{m}`"));
            }
            if let Some(m) = mtu {
                reason.push_str(&format!(", MTU {m}"));
            }
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
        if !changes.is_empty() {
            let reason = changes
                .iter()
                .map(|c| {
                    format!("{} {} → {}", c.field, c.from.as_deref().unwrap_or("-"), c.to.as_deref().unwrap_or("-"))
                })
                .collect::<Vec<_>>()
                .join("; ");
            out.actions.push(Action::update(id.clone(), changes, reason));
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
