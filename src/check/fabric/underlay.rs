//! The VXLAN underlay: the hosts of a VXLAN network reach each other through the
//! addresses (`ip`) of its parent NIC, each host's device sending from its own and
//! flooding to the others'. A host without an address is cut off from the rest of the
//! network (a warning: the address is missing information, the network still works
//! within the host); two hosts with one address are a fault (an error).
//!
//! The hosts of a network are its `hosts`, else those its VMs name in `host`: where
//! placement chooses, the files do not say which hosts the network will span.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use crate::check::gpu::{Index, and_list};
use crate::diag::Diagnostic;
use crate::spec::model::{NetKind, Network, Nic};
use crate::spec::source::Span;

/// A host that carries a network, and the line that says so.
pub(super) struct Member {
    pub(super) host: usize,
    pub(super) at: Span,
    pub(super) label: String,
}

/// A VXLAN network over one host's parent NIC, and the line that puts it on the host.
struct Use<'a> {
    net: &'a Network,
    at: Span,
    label: String,
}

pub(super) fn check(ix: &Index<'_>, attached: &Attached<'_>, out: &mut Vec<Diagnostic>) {
    // (host, parent NIC) → the VXLAN networks over it that span more than that host.
    let mut uses: BTreeMap<(usize, &str), Vec<Use<'_>>> = BTreeMap::new();
    // (parent NIC, address, first host, second host) → the networks both carry.
    let mut clashes: BTreeMap<(&str, IpAddr, usize, usize), Vec<&Network>> = BTreeMap::new();
    for net in ix.spec.networks.iter().filter(|n| n.kind.value == NetKind::Vxlan) {
        let Some(parent) = &net.parent else { continue };
        let parent = parent.value.as_str();
        let members = members(ix, attached, net);
        if members.len() < 2 {
            continue;
        }
        let mut first_with: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for Member { host, at, label } in members {
            uses.entry((host, parent)).or_default().push(Use { net, at, label });
            let Some(ip) = nic(ix, host, parent).and_then(|n| n.ip.as_ref()) else { continue };
            match first_with.get(&ip.value) {
                Some(&first) => clashes.entry((parent, ip.value, first, host)).or_default().push(net),
                None => {
                    first_with.insert(ip.value, host);
                }
            }
        }
    }
    // Parent NIC name → the highest address given or suggested so far (`None`: none given).
    let mut highest: HashMap<&str, Option<IpAddr>> = HashMap::new();
    for ((h, parent), nets) in &uses {
        // A parent the host does not declare is an error of its own
        // (`fabrik::fabric::unknown-parent`): the device cannot be made at all.
        let Some(declared) = nic(ix, *h, parent) else { continue };
        if declared.ip.is_some() {
            continue;
        }
        let top = highest.entry(parent).or_insert_with(|| highest_given(ix, parent));
        let next = top.and_then(after);
        if next.is_some() {
            *top = next;
        }
        out.push(no_address(ix, *h, parent, declared, nets, next));
    }
    for ((parent, ip, first, second), nets) in clashes {
        out.push(duplicate(ix, parent, ip, first, second, &nets));
    }
}

/// For each network, the hosts its VMs name in `host`, each once, with the first VM
/// that names it: found in one pass over the VMs, so that asking for the hosts of every
/// network stays linear in the size of the factory.
pub(super) struct Attached<'a> {
    by_network: HashMap<&'a str, Vec<(usize, Span, &'a str)>>,
}

impl<'a> Attached<'a> {
    pub(super) fn new(ix: &Index<'a>) -> Attached<'a> {
        let mut by_network: HashMap<&'a str, Vec<(usize, Span, &'a str)>> = HashMap::new();
        let mut seen: HashSet<(&str, usize)> = HashSet::new();
        for e in ix.spec.effective_vms() {
            let (Some(h), Some(host)) = (&e.vm.host, ix.host_of(e.vm)) else { continue };
            for nic in e.nic_list() {
                let net = nic.network.value.as_str();
                if seen.insert((net, host)) {
                    by_network.entry(net).or_default().push((host, h.span, e.vm.name.value.as_str()));
                }
            }
        }
        Attached { by_network }
    }
}

/// The hosts of a network, each once, in the order the files give them.
pub(super) fn members(ix: &Index<'_>, attached: &Attached<'_>, net: &Network) -> Vec<Member> {
    let mut out: Vec<Member> = Vec::new();
    let mut seen = BTreeSet::new();
    let name = &net.name.value;
    if !net.hosts.is_empty() {
        for h in &net.hosts {
            if let Some(&host) = ix.hosts.get(h.value.as_str())
                && seen.insert(host)
            {
                out.push(Member { host, at: h.span, label: format!("`{name}` spans host `{}`", h.value) });
            }
        }
        return out;
    }
    for &(host, at, vm) in attached.by_network.get(name.as_str()).map_or(&[][..], Vec::as_slice) {
        let label = format!("VM `{vm}` on `{name}` runs on host `{}`", ix.host(host).name.value);
        out.push(Member { host, at, label });
    }
    out
}

/// Host `host`'s NIC `name`, where the host declares it.
pub(super) fn nic<'a>(ix: &Index<'a>, host: usize, name: &str) -> Option<&'a Nic> {
    ix.spec.hosts[host].nics.iter().find(|n| n.name.value == name)
}

/// The highest address any host gives a NIC of this name; `None` when no host gives one.
/// Addresses to suggest count up from it, past those already suggested: each is higher
/// than every address taken, so none is.
fn highest_given(ix: &Index<'_>, parent: &str) -> Option<IpAddr> {
    ix.spec
        .hosts
        .iter()
        .flat_map(|h| &h.nics)
        .filter(|n| n.name.value == parent)
        .filter_map(|n| n.ip.as_ref().map(|ip| ip.value))
        .max()
}

/// The address after `ip`, `None` past the last one.
fn after(ip: IpAddr) -> Option<IpAddr> {
    Some(match ip {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).checked_add(1)?.into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).checked_add(1)?.into()),
    })
}

fn networks_phrase(nets: &[&Network]) -> String {
    let names: Vec<String> = nets.iter().map(|n| format!("`{}`", n.name.value)).collect();
    let word = if names.len() == 1 { "network" } else { "networks" };
    format!("VXLAN {word} {}", and_list(&names))
}

/// The warning for a host whose `parent` NIC has no address; `uses` are the networks
/// over it, never empty.
fn no_address(
    ix: &Index<'_>,
    h: usize,
    parent: &str,
    declared: &Nic,
    uses: &[Use<'_>],
    next: Option<IpAddr>,
) -> Diagnostic {
    let host = &ix.spec.hosts[h];
    let name = &host.name.value;
    let nets: Vec<&Network> = uses.iter().map(|u| u.net).collect();
    let message = format!(
        "host `{name}` has no address on `{parent}`, the underlay of {}: its VMs there cannot reach the other hosts",
        networks_phrase(&nets)
    );
    let ip = next.map_or_else(|| "`ip: <address>`".to_string(), |ip| format!("`ip: {ip}`"));
    let mut d = Diagnostic::warning("fabrik::fabric::no-underlay-address", message).at(declared.name.span, "no `ip`");
    for u in uses {
        d = d.also(u.at, u.label.clone());
    }
    d.help(format!("give nic `{parent}` of host `{name}` its address: {ip}"))
}

fn duplicate(ix: &Index<'_>, parent: &str, ip: IpAddr, first: usize, second: usize, nets: &[&Network]) -> Diagnostic {
    let (a, b) = (&ix.spec.hosts[first].name.value, &ix.spec.hosts[second].name.value);
    let span = |h: usize| nic(ix, h, parent).and_then(|n| n.ip.as_ref()).map(|ip| ip.span);
    let mut d = Diagnostic::error(
        "fabrik::fabric::duplicate-underlay-address",
        format!(
            "hosts `{a}` and `{b}` both give `{parent}` the address {ip}, the underlay of {}",
            networks_phrase(nets)
        ),
    );
    if let (Some(at), Some(also)) = (span(second), span(first)) {
        d = d.at(at, format!("also the address of host `{a}`")).also(also, format!("host `{a}`'s address"));
    }
    d.help(format!(
        "give nic `{parent}` of host `{b}` its own address: the other hosts' tunnel traffic for either host goes to one of them"
    ))
}

#[cfg(test)]
mod tests {
    use crate::check::gpu::tests::spec;

    fn diags(text: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let spec = spec(text);
        let ix = super::Index::new(&spec);
        super::check(&ix, &super::Attached::new(&ix), &mut out);
        out.iter().map(|d| (d.code, d.help.clone().unwrap_or_default())).collect()
    }

    fn factory(ips: [&str; 3], hosts: &str) -> String {
        let host = |name: &str, ip: &str| {
            format!(
                "  - name: {name}\n    uri: qemu:///system\n    numa-nodes: [{{ id: 0, cpus: 0-7, memory: 64GiB }}]\n    nics: [{{ name: fe0, kind: ethernet{ip} }}]\n"
            )
        };
        let ip = |s: &str| if s.is_empty() { String::new() } else { format!(", ip: {s}") };
        format!(
            "version: 1\nhosts:\n{}{}{}tenants:\n  - {{ name: acme, hosts: [h1, h2, h3] }}\nnetworks:\n  - {{ name: acme-net, purpose: tenant, kind: vxlan, tenant: acme, vni: 10001, parent: fe0{hosts} }}\n",
            host("h1", &ip(ips[0])),
            host("h2", &ip(ips[1])),
            host("h3", &ip(ips[2])),
        )
    }

    #[test]
    fn every_host_without_an_address_is_told_a_free_one() {
        let got = diags(&factory(["10.0.0.11", "", ""], ", hosts: [h1, h2, h3]"));
        let helps: Vec<&str> = got.iter().map(|(_, h)| h.as_str()).collect();
        assert_eq!(
            helps,
            [
                "give nic `fe0` of host `h2` its address: `ip: 10.0.0.12`",
                "give nic `fe0` of host `h3` its address: `ip: 10.0.0.13`",
            ]
        );
    }

    #[test]
    fn a_network_on_one_host_needs_no_underlay() {
        assert_eq!(diags(&factory(["", "", ""], ", hosts: [h1]")), vec![]);
        // Without `hosts`, and no VM naming a host, the files do not say where it runs.
        assert_eq!(diags(&factory(["", "", ""], "")), vec![]);
    }

    #[test]
    fn one_address_on_two_hosts_is_an_error() {
        let got = diags(&factory(["10.0.0.11", "10.0.0.12", "10.0.0.11"], ", hosts: [h1, h2, h3]"));
        let codes: Vec<&str> = got.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, ["fabrik::fabric::duplicate-underlay-address"]);
        // Only hosts that share a network are compared: the check is about its tunnels.
        assert_eq!(diags(&factory(["10.0.0.11", "10.0.0.12", "10.0.0.11"], ", hosts: [h1, h2]")), vec![]);
    }
}
