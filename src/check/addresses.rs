//! `fabrik::address::*`: a network's address plan holds together, and every VM NIC on it
//! can get an address. Derived addresses never clash (see [`crate::desired::addr`]);
//! these rules are about what the files declare: a subnet's gateway and ranges, a NIC's
//! `address`, and a pool large enough for the NICs that draw from it.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use super::rules::Rule;
use crate::desired::addr::Ipam;
use crate::diag::Diagnostic;
use crate::spec::model::Spec;
use crate::spec::source::Span;

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::address::outside-subnet",
        summary: "a gateway, an allocation range or a NIC's `address` outside its network's `subnet`",
        protects: "a guest told an address or a gateway off its subnet has no route: it boots without a network, or sends its traffic to a host that is not the gateway",
        example: "networks:\n  - { name: acme-net, purpose: tenant, kind: bridge, tenant: acme, subnet: 10.20.0.0/24, gateway: 10.30.0.1 }",
        fix: "move the gateway, the range or the address into the subnet, or widen the subnet",
    },
    Rule {
        code: "fabrik::address::outside-ranges",
        summary: "a NIC's `address` inside the subnet but outside the network's allocation `ranges`",
        protects: "addresses outside the ranges belong to someone else (routers, storage, hosts on the segment): a VM given one clashes with a machine fabrik does not know",
        example: "networks:\n  - { name: acme-net, purpose: tenant, kind: bridge, tenant: acme, subnet: 10.20.0.0/24, ranges: [10.20.0.100-10.20.0.199] }\nvms:\n  - { name: a, tenant: acme, vcpus: 4, memory: 16GiB, nics: [{ network: acme-net, address: 10.20.0.7 }] }",
        fix: "give an address inside one of the `ranges`, or widen a range to cover it",
    },
    Rule {
        code: "fabrik::address::duplicate",
        summary: "one IP address given to two NICs, or a NIC's `address` that is the network's gateway or a DNS server (also: an `address` in a template or on a VM with replicas, shared by every copy)",
        protects: "two hosts with one address on a segment: ARP answers race, connections go to either, and a tenant's traffic reaches another VM",
        example: "vms:\n  - { name: a, tenant: acme, vcpus: 4, memory: 16GiB, nics: [{ network: acme-net, address: 10.20.0.10 }] }\n  - { name: b, tenant: acme, vcpus: 4, memory: 16GiB, nics: [{ network: acme-net, address: 10.20.0.10 }] }",
        fix: "give each NIC its own `address`, or leave `address` out and let fabrik allocate one",
    },
    Rule {
        code: "fabrik::address::exhausted",
        summary: "a network's allocation pool has fewer free addresses than the NICs that draw from it",
        protects: "a NIC fabrik cannot give an address to would boot without a network; the apply must not start a VM it cannot address",
        example: "networks:\n  - { name: acme-net, purpose: tenant, kind: bridge, tenant: acme, subnet: 10.20.0.0/24, ranges: [10.20.0.10-10.20.0.10] }\nvms:\n  - { name: a, tenant: acme, replicas: 2, vcpus: 4, memory: 16GiB, nics: [acme-net] }",
        fix: "widen the `ranges` (or the `subnet`), add a range, or attach fewer NICs to the network",
    },
    Rule {
        code: "fabrik::address::no-subnet",
        summary: "a NIC's `address` on a network that declares no `subnet`",
        protects: "without a subnet fabrik cannot tell the guest its prefix and gateway, nor check the address against the others on the segment",
        example: "vms:\n  - { name: a, tenant: acme, vcpus: 4, memory: 16GiB, nics: [{ network: acme-net, address: 10.20.0.10 }] }",
        fix: "declare the network's `subnet` (and `gateway`), or drop the NIC's `address`",
    },
];

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    let ipam = crate::desired::net::ipam(spec);
    for n in &spec.networks {
        let (Some(subnet), Some(pool)) = (&n.subnet, ipam.get(&n.name.value)) else { continue };
        let outside = |ip: IpAddr| !subnet.value.contains(ip);
        if let Some(g) = n.gateway.as_ref().filter(|g| outside(g.value)) {
            out.push(
                outside_subnet(g.span, &format!("gateway {}", g.value), &n.name.value, pool)
                    .also(subnet.span, "the subnet"),
            );
        }
        for r in n.ranges.iter().filter(|r| outside(r.value.first) || outside(r.value.last)) {
            let what = format!("range {}-{}", r.value.first, r.value.last);
            out.push(outside_subnet(r.span, &what, &n.name.value, pool).also(subnet.span, "the subnet"));
        }
    }

    // Address → where it was first given, and the VM (instance) it went to.
    let mut seen: BTreeMap<(&str, IpAddr), (Span, String)> = BTreeMap::new();
    let mut reported: HashSet<Span> = HashSet::new();
    // NICs that draw from each network's pool.
    let mut drawing: BTreeMap<&str, u128> = BTreeMap::new();
    for e in spec.effective_vms() {
        for instance in e.vm.instance_names() {
            for nic in e.nic_list() {
                let network = nic.network.value.as_str();
                let Some(a) = &nic.address else {
                    if ipam.contains_key(network) {
                        *drawing.entry(network).or_default() += 1;
                    }
                    continue;
                };
                if reported.contains(&a.span) {
                    continue;
                }
                let Some(pool) = ipam.get(network) else {
                    reported.insert(a.span);
                    out.push(
                        Diagnostic::error(
                            "fabrik::address::no-subnet",
                            format!("NIC address {} is on network `{network}`, which declares no subnet", a.value),
                        )
                        .at(a.span, "here")
                        .help(format!(
                            "declare `subnet` (and `gateway`) on network `{network}`, or drop the NIC's `address`"
                        )),
                    );
                    continue;
                };
                if !pool.subnet.contains(a.value) {
                    reported.insert(a.span);
                    out.push(outside_subnet(a.span, &format!("address {}", a.value), network, pool));
                    continue;
                }
                if !pool.ranges.is_empty() && !pool.in_pool(a.value) {
                    reported.insert(a.span);
                    let ranges: Vec<String> = pool.ranges.iter().map(|r| format!("{}-{}", r.first, r.last)).collect();
                    out.push(
                        Diagnostic::error(
                            "fabrik::address::outside-ranges",
                            format!("address {} is outside the ranges of network `{network}`", a.value),
                        )
                        .at(a.span, "here")
                        .help(format!("give an address in {}, or widen a range to cover it", ranges.join(", "))),
                    );
                    continue;
                }
                if let Some(role) = reserved_role(pool, a.value) {
                    reported.insert(a.span);
                    out.push(
                        Diagnostic::error(
                            "fabrik::address::duplicate",
                            format!("address {} of VM `{instance}` is the {role} of network `{network}`", a.value),
                        )
                        .at(a.span, "here")
                        .help("give the NIC another `address`, or leave it out and let fabrik allocate one"),
                    );
                    continue;
                }
                let Some((first, owner)) = seen.get(&(network, a.value)) else {
                    seen.insert((network, a.value), (a.span, instance.clone()));
                    continue;
                };
                reported.insert(a.span);
                let d = Diagnostic::error(
                    "fabrik::address::duplicate",
                    format!("address {} is given to VM `{instance}` and to VM `{owner}`", a.value),
                );
                out.push(if *first == a.span {
                    d.at(a.span, format!("every VM made from this declaration gets {}", a.value))
                        .help("an `address` in a template or on a VM with replicas is shared by every copy; leave it out and let fabrik allocate one per NIC")
                } else {
                    d.at(a.span, "given again here")
                        .also(*first, format!("first given here, to VM `{owner}`"))
                        .help("give each NIC its own `address`, or leave `address` out and let fabrik allocate one")
                });
            }
        }
    }

    for n in &spec.networks {
        let name = n.name.value.as_str();
        let (Some(pool), Some(&needed)) = (ipam.get(name), drawing.get(name)) else { continue };
        let held = seen
            .keys()
            .filter(|(net, _)| *net == name)
            .map(|(_, ip)| *ip)
            .chain(pool.reserved())
            .filter(|ip| pool.in_pool(*ip))
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u128;
        let free = pool.pool_size().saturating_sub(held);
        if needed > free {
            let span = n.ranges.first().map_or_else(|| n.subnet.as_ref().map_or(n.span, |s| s.span), |r| r.span);
            out.push(
                Diagnostic::error(
                    "fabrik::address::exhausted",
                    format!("network `{name}` has {free} free addresses for {needed} NICs"),
                )
                .at(span, "the pool addresses are allocated from")
                .help("widen the `ranges` (or the `subnet`), add a range, or attach fewer NICs to the network"),
            );
        }
    }
}

fn reserved_role(pool: &Ipam, ip: IpAddr) -> Option<&'static str> {
    if pool.gateway == Some(ip) {
        return Some("gateway");
    }
    pool.dns.contains(&ip).then_some("DNS server")
}

fn outside_subnet(span: Span, what: &str, network: &str, pool: &Ipam) -> Diagnostic {
    Diagnostic::error(
        "fabrik::address::outside-subnet",
        format!("{what} is outside subnet {} of network `{network}`", pool.subnet),
    )
    .at(span, "here")
    .help(format!("use an address in {}, or widen the subnet", pool.subnet))
}
