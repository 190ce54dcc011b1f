//! `fabrik::isolation::shared-device`, `fabrik::isolation::device-is-nic`: every host
//! device a network makes (its bridge, its VXLAN or VLAN uplink) is that network's
//! alone. Two networks on one bridge are one layer-2 segment, whatever their tenants;
//! a bridge named like a NIC would enslave or replace the host's own interface.
//!
//! A network is on its `hosts`; one without `hosts` may land on any host (its VMs' hosts
//! are chosen at placement), so it is held apart from every other network.

use std::collections::{BTreeMap, HashMap};

use super::rules::Rule;
use crate::desired::net::{DeviceRole, devices};
use crate::diag::Diagnostic;
use crate::spec::model::{Host, Network, Nic, Spec};
use crate::spec::source::Span;

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::isolation::shared-device",
        summary: "two networks resolve to one host device (bridge, VXLAN or VLAN uplink) on a host that may carry both",
        protects: "two networks that are one layer-2 segment without anyone asking for it: a tenant network given another tenant's bridge, the management bridge or the storage bridge puts its VMs on that segment, and the second uplink is never created. Derived names never clash (a name cut to 15 bytes ends with a hash of the whole identity); this catches names given in `bridge`, and a given name equal to a derived one",
        example: "networks:\n  - { name: mgmt, purpose: management, kind: bridge, bridge: br-mgmt, parent: mgmt0 }\n  - { name: acme-net, purpose: tenant, kind: vxlan, tenant: acme, vni: 10001, bridge: br-mgmt }",
        fix: "give each network its own `bridge`, or leave `bridge` out and let fabrik derive a unique one; networks that never share a host may reuse a name if both list their `hosts`",
    },
    Rule {
        code: "fabrik::isolation::device-is-nic",
        summary: "a network's bridge or uplink has the name of a NIC declared on a host that may carry the network",
        protects: "a bridge created over, or in place of, one of the host's own interfaces: the NIC's traffic lands on a tenant's segment, or the host loses the link",
        example: "hosts:\n  - { name: gpu01, uri: qemu:///system, nics: [{ name: fe0, kind: ethernet }] }\nnetworks:\n  - { name: acme-net, purpose: tenant, kind: vxlan, tenant: acme, vni: 10001, parent: fe0, bridge: fe0 }",
        fix: "name the bridge differently from every NIC of the network's hosts (or leave `bridge` out)",
    },
];

/// One device of one network, and where its name comes from in the files.
struct Made<'a> {
    net: &'a Network,
    role: DeviceRole,
    span: Span,
}

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    // NIC name → the hosts that declare a NIC of that name, in file order: a device
    // looks up the hosts it could clash on, never scans them all.
    let mut nics: HashMap<&str, Vec<(&Host, &Nic)>> = HashMap::new();
    for host in &spec.hosts {
        for nic in &host.nics {
            nics.entry(nic.name.value.as_str()).or_default().push((host, nic));
        }
    }
    let order = HostOrder::new(spec);
    let mut by_name: BTreeMap<String, Vec<Made<'_>>> = BTreeMap::new();
    for n in &spec.networks {
        for (name, role) in devices(n) {
            let span = source(n, &role);
            by_name.entry(name).or_default().push(Made { net: n, role, span });
        }
    }
    for (name, made) in &by_name {
        for (i, b) in made.iter().enumerate() {
            // Report each later declaration once, against the first it clashes with.
            let Some(a) = made[..i].iter().find(|a| clash(a, b) && !shared_hosts(&order, a.net, b.net).is_empty())
            else {
                continue;
            };
            let on = described(&shared_hosts(&order, a.net, b.net));
            if std::ptr::eq(a.net, b.net) {
                out.push(
                    Diagnostic::error(
                        "fabrik::isolation::shared-device",
                        format!(
                            "network `{}` makes two devices named `{name}` {on}: {} and {}",
                            b.net.name.value,
                            what(&a.role),
                            what(&b.role)
                        ),
                    )
                    .at(b.span, format!("{} `{name}`", what(&b.role)))
                    .also(a.span, format!("{} `{name}`", what(&a.role)))
                    .help("give the network's bridge a name of its own (the VXLAN device is `vx<vni>`)"),
                );
                continue;
            }
            out.push(
                Diagnostic::error(
                    "fabrik::isolation::shared-device",
                    format!(
                        "networks `{}` and `{}` both make device `{name}` {on}",
                        a.net.name.value, b.net.name.value
                    ),
                )
                .at(b.span, format!("`{name}` again, {} of network `{}`", what(&b.role), b.net.name.value))
                .also(a.span, format!("first here, {} of network `{}`", what(&a.role), a.net.name.value))
                .help(format!(
                    "give network `{}` its own `bridge`, or leave `bridge` out for a derived name that is unique",
                    b.net.name.value
                )),
            );
        }
        for m in made {
            nic_clash(nics.get(name.as_str()).map_or(&[][..], Vec::as_slice), name, m, out);
        }
    }
}

/// Two declarations of one device clash unless both stand for the same VNI, or the same
/// VLAN on the same parent: those are the duplicate-VNI and duplicate-VLAN rules' to
/// report, and a `vlan` and an `sriov` network may share a VLAN on purpose.
fn clash(a: &Made<'_>, b: &Made<'_>) -> bool {
    match (&a.role, &b.role) {
        (DeviceRole::Vxlan { vni: x }, DeviceRole::Vxlan { vni: y }) => x != y,
        (DeviceRole::Vlan { parent: p, id: x }, DeviceRole::Vlan { parent: q, id: y }) => (p, x) != (q, y),
        (DeviceRole::Bridge { .. } | DeviceRole::Vxlan { .. } | DeviceRole::Vlan { .. }, _) => true,
    }
}

/// `named`: each NIC called `name` with its host, hosts in file order, a host's NICs in
/// its order; the first on the network's hosts is the clash shown.
fn nic_clash(named: &[(&Host, &Nic)], name: &str, m: &Made<'_>, out: &mut Vec<Diagnostic>) {
    // One host is enough to show it.
    if let Some(&(host, nic)) = named.iter().find(|(h, _)| on_host(m.net, &h.name.value)) {
        out.push(
            Diagnostic::error(
                "fabrik::isolation::device-is-nic",
                format!(
                    "network `{}` makes device `{name}` on host `{}`, which has a NIC of that name",
                    m.net.name.value, host.name.value
                ),
            )
            .at(m.span, format!("{} of network `{}`", what(&m.role), m.net.name.value))
            .also(nic.name.span, format!("NIC `{name}` of host `{}`", host.name.value))
            .help("name the bridge differently from the hosts' NICs, or leave `bridge` out for a derived name"),
        );
    }
}

/// Where a device's name comes from: `bridge` when given, else the network's name (a
/// derived bridge), its `vni` or its `parent`.
fn source(n: &Network, role: &DeviceRole) -> Span {
    let span = match role {
        DeviceRole::Bridge { .. } => n.bridge.as_ref().map(|b| b.span),
        DeviceRole::Vxlan { .. } => n.vni.as_ref().map(|v| v.span),
        DeviceRole::Vlan { .. } => n.parent.as_ref().map(|p| p.span),
    };
    span.unwrap_or(n.name.span)
}

fn what(role: &DeviceRole) -> &'static str {
    match role {
        DeviceRole::Bridge { explicit: true } => "the bridge",
        DeviceRole::Bridge { explicit: false } => "the derived bridge",
        DeviceRole::Vxlan { .. } => "the VXLAN device",
        DeviceRole::Vlan { .. } => "the VLAN uplink",
    }
}

fn on_host(n: &Network, host: &str) -> bool {
    n.hosts.is_empty() || n.hosts.iter().any(|h| h.value == host)
}

/// The declared hosts in file order, and each one's place in it.
struct HostOrder<'s> {
    names: Vec<&'s str>,
    place: HashMap<&'s str, usize>,
}

impl<'s> HostOrder<'s> {
    fn new(spec: &'s Spec) -> HostOrder<'s> {
        let names: Vec<&str> = spec.hosts.iter().map(|h| h.name.value.as_str()).collect();
        let mut place = HashMap::with_capacity(names.len());
        for (i, &n) in names.iter().enumerate() {
            place.entry(n).or_insert(i);
        }
        HostOrder { names, place }
    }
}

/// The declared hosts that may carry both networks, in file order: those a network
/// lists, looked up, rather than every host tested against both lists.
fn shared_hosts<'s>(order: &HostOrder<'s>, a: &Network, b: &Network) -> Vec<&'s str> {
    let (listed, other) = match (a.hosts.is_empty(), b.hosts.is_empty()) {
        (true, true) => return order.names.clone(),
        (false, _) => (a, b),
        (true, false) => (b, a),
    };
    let others: std::collections::HashSet<&str> = other.hosts.iter().map(|h| h.value.as_str()).collect();
    let mut places: Vec<usize> = listed
        .hosts
        .iter()
        .map(|h| h.value.as_str())
        .filter(|h| other.hosts.is_empty() || others.contains(h))
        .filter_map(|h| order.place.get(h).copied())
        .collect();
    places.sort_unstable();
    places.dedup();
    places.into_iter().map(|i| order.names[i]).collect()
}

fn described(hosts: &[&str]) -> String {
    match hosts {
        [one] => format!("on host `{one}`"),
        [first, rest @ ..] => format!("on hosts `{first}` and {} more", rest.len()),
        [] => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::check::gpu::tests::spec;

    fn messages(a_hosts: &str, b_hosts: &str) -> Vec<String> {
        let host = |n: &str| {
            format!(
                "  - {{ name: {n}, uri: qemu:///system, numa-nodes: [{{ id: 0, cpus: 0-3, memory: 8GiB }}], nics: [{{ name: fe0, kind: ethernet }}] }}\n"
            )
        };
        let text = format!(
            "version: 1\nhosts:\n{}{}{}tenants:\n  - {{ name: acme, hosts: [h1, h2, h3], networks: [a, b] }}\nnetworks:\n  - {{ name: a, purpose: tenant, kind: vxlan, tenant: acme, vni: 10001, bridge: br0{a_hosts} }}\n  - {{ name: b, purpose: tenant, kind: vxlan, tenant: acme, vni: 10002, bridge: br0{b_hosts} }}\n",
            host("h1"),
            host("h2"),
            host("h3"),
        );
        let mut out = Vec::new();
        super::check(&spec(&text), &mut out);
        out.into_iter().filter(|d| d.code == "fabrik::isolation::shared-device").map(|d| d.message).collect()
    }

    #[test]
    fn shared_hosts_are_named_in_file_order() {
        let got = messages(", hosts: [h3, h1]", ", hosts: [h2, h3, h1]");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].ends_with("on hosts `h1` and 1 more"), "{got:?}");
        let got = messages("", ", hosts: [h3, h2]");
        assert!(got[0].ends_with("on hosts `h2` and 1 more"), "{got:?}");
        let got = messages("", "");
        assert!(got[0].ends_with("on hosts `h1` and 2 more"), "{got:?}");
        // No host carries both: no clash.
        assert_eq!(messages(", hosts: [h1]", ", hosts: [h2, h3]"), Vec::<String>::new());
    }
}
