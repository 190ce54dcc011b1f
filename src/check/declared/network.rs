//! Networks over the hosts' NICs, and VMs on the hosts their networks span.
//!
//! A network's hosts are its `hosts`, else the hosts its VMs name (where placement
//! chooses, the files do not say which hosts the network will span). On each, the
//! network's `parent` must be a NIC the host declares, of a kind the network can be
//! built on, and a VXLAN network's underlay addresses must be of one family.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use super::{Overlap, Runs, Where, host_set, hosts_phrase};
use crate::check::gpu::Index;
use crate::diag::{Diagnostic, suggest};
use crate::spec::model::{NetKind, Network, Nic, NicKind, Vm};
use crate::spec::source::Span;

/// A host that carries a network, and the line that says so.
struct Member<'a> {
    host: usize,
    at: Span,
    why: Why<'a>,
}

/// Why a host carries a network, in words only for a diagnostic.
enum Why<'a> {
    /// The network's `hosts` names it.
    Listed,
    /// This VM on the network names it as its `host`.
    Vm(&'a str),
}

impl Member<'_> {
    fn label(&self, ix: &Index<'_>, net: &str) -> String {
        let host = &ix.host(self.host).name.value;
        match self.why {
            Why::Listed => format!("`{net}` spans host `{host}`"),
            Why::Vm(vm) => format!("VM `{vm}` on `{net}` runs on host `{host}`"),
        }
    }
}

pub(super) fn check(ix: &Index<'_>, at: &Where, out: &mut Vec<Diagnostic>) {
    // Network name → the hosts its VMs name, each once, in file order: one pass over
    // the VMs instead of one per network.
    let mut attached: HashMap<&str, Vec<Member>> = HashMap::new();
    let mut seen: HashSet<(&str, usize)> = HashSet::new();
    // Network name → the VMs on it that placement puts on one of their tenant's hosts,
    // one per tenant: the network goes wherever they land.
    let mut placed: HashMap<&str, Vec<(&Vm, &[usize])>> = HashMap::new();
    let mut seen_placed: HashSet<(&str, &str)> = HashSet::new();
    for (e, runs) in ix.spec.effective_vms().zip(&at.vms) {
        for nic in e.nic_list() {
            let net = nic.network.value.as_str();
            match runs {
                Runs::On(h, span) => {
                    if seen.insert((net, *h)) {
                        let why = Why::Vm(e.vm.name.value.as_str());
                        attached.entry(net).or_default().push(Member { host: *h, at: *span, why });
                    }
                }
                Runs::Placed(t) => {
                    let candidates = at.tenant_hosts[*t].as_slice();
                    if !candidates.is_empty() && seen_placed.insert((net, e.vm.tenant.value.as_str())) {
                        placed.entry(net).or_default().push((e.vm, candidates));
                    }
                }
                Runs::Unknown => {}
            }
        }
    }
    for net in &ix.spec.networks {
        let Some(parent) = &net.parent else { continue };
        let members: Vec<Member> = if net.hosts.is_empty() {
            attached.remove(net.name.value.as_str()).unwrap_or_default()
        } else {
            let mut once = HashSet::new();
            net.hosts
                .iter()
                .filter_map(|h| Some((*ix.hosts.get(h.value.as_str())?, h)))
                .filter(|(i, _)| once.insert(*i))
                .map(|(host, h)| Member { host, at: h.span, why: Why::Listed })
                .collect()
        };
        if net.hosts.is_empty() {
            // A VM placed by fabrik takes the network to the host it lands on: one of
            // its tenant's, so one of those must have the NIC.
            for (vm, candidates) in placed.remove(net.name.value.as_str()).unwrap_or_default() {
                if !candidates.iter().any(|&h| nic(ix, h, &parent.value).is_some()) {
                    out.push(nowhere(ix, net, &parent.value, parent.span, vm, candidates));
                }
            }
        }
        let mut missing = Vec::new();
        let mut addresses = Vec::new();
        for m in members {
            match nic(ix, m.host, &parent.value) {
                None => missing.push(m),
                Some(nic) => {
                    if let Some(d) = wrong_kind(ix, net, nic, &m, parent.span) {
                        out.push(d);
                    }
                    if let Some(ip) = &nic.ip {
                        addresses.push((ip.value, ip.span, m.host));
                    }
                }
            }
        }
        if !missing.is_empty() {
            out.push(not_declared(ix, net, &parent.value, parent.span, &missing));
        }
        if net.kind.value == NetKind::Vxlan {
            out.extend(mixed_families(ix, net, &parent.value, &addresses));
        }
    }
    on_hosts(ix, at, out);
}

/// Host `host`'s NIC `name`, where the host declares it.
fn nic<'a>(ix: &Index<'a>, host: usize, name: &str) -> Option<&'a Nic> {
    ix.host(host).nics.iter().find(|n| n.name.value == name)
}

/// The NIC kind a network's devices need of its parent, when it needs one.
fn needs(kind: NetKind) -> Option<NicKind> {
    match kind {
        NetKind::IbPartition => Some(NicKind::Infiniband),
        // 802.1Q tags and bridge ports are Ethernet's; a VXLAN underlay is any IP
        // interface, and SR-IOV VFs exist on both kinds.
        NetKind::Vlan | NetKind::Bridge => Some(NicKind::Ethernet),
        NetKind::Vxlan | NetKind::Sriov => None,
    }
}

/// The NIC kind as the files write it.
fn kind_word(kind: NicKind) -> &'static str {
    match kind {
        NicKind::Ethernet => "ethernet",
        NicKind::Infiniband => "infiniband",
    }
}

/// The NIC kind in prose.
fn kind_name(kind: NicKind) -> &'static str {
    match kind {
        NicKind::Ethernet => "Ethernet",
        NicKind::Infiniband => "InfiniBand",
    }
}

fn nowhere(ix: &Index<'_>, net: &Network, parent: &str, at: Span, vm: &Vm, candidates: &[usize]) -> Diagnostic {
    let tenant = &vm.tenant.value;
    let names: Vec<&str> = {
        let mut v: Vec<&str> =
            candidates.iter().flat_map(|&h| &ix.host(h).nics).map(|n| n.name.value.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let which = hosts_phrase(ix, candidates.iter().copied());
    let declare = format!("declare nic `{parent}` on the hosts of tenant `{tenant}` ({which})");
    let help = match suggest(parent, names.iter().copied()) {
        Some(s) => format!("did you mean `{s}`? If not, {declare}"),
        None => format!("{declare}, or give the network a `parent` they have"),
    };
    Diagnostic::error(
        "fabrik::fabric::unknown-parent",
        format!(
            "network `{}` is built on `{parent}`, which none of the hosts of tenant `{tenant}` declares as a NIC",
            net.name.value
        ),
    )
    .at(at, format!("not a NIC of any host of tenant `{tenant}`"))
    .also(vm.name.span, format!("VM `{}` takes the network to a host of tenant `{tenant}`", vm.name.value))
    .help(help)
}

fn not_declared(ix: &Index<'_>, net: &Network, parent: &str, at: Span, missing: &[Member]) -> Diagnostic {
    let which = hosts_phrase(ix, missing.iter().map(|m| m.host));
    let word = if missing.len() == 1 { "host" } else { "hosts" };
    let verb = if missing.len() == 1 { "does not" } else { "do not" };
    let mut d = Diagnostic::error(
        "fabrik::fabric::unknown-parent",
        format!("network `{}` is built on `{parent}`, which {word} {which} {verb} declare as a NIC", net.name.value),
    )
    .at(at, format!("not declared on {word} {which}"));
    for m in missing {
        d = d.also(m.at, m.label(ix, &net.name.value));
    }
    let first = ix.host(missing[0].host);
    let have: Vec<&str> = first.nics.iter().map(|n| n.name.value.as_str()).collect();
    let kind = needs(net.kind.value).map_or("ethernet", kind_word);
    let declare = format!("declare nic `{parent}` (kind {kind}) on {word} {which}");
    let help = match suggest(parent, have.iter().copied()) {
        Some(s) => format!("did you mean `{s}`? If not, {declare}"),
        None if have.is_empty() => declare,
        None => format!("{declare}, or name a NIC host `{}` has: {}", first.name.value, have.join(", ")),
    };
    d.help(help)
}

fn wrong_kind(ix: &Index<'_>, net: &Network, nic: &Nic, m: &Member, at: Span) -> Option<Diagnostic> {
    let need = needs(net.kind.value)?;
    if nic.kind.value == need {
        return None;
    }
    let host = &ix.host(m.host).name.value;
    let (what, why) = match net.kind.value {
        NetKind::IbPartition => ("an InfiniBand partition", "partition keys exist only on InfiniBand"),
        NetKind::Vlan => ("a VLAN", "the kernel refuses 802.1Q VLANs over IPoIB"),
        NetKind::Bridge => ("a bridge uplink", "a Linux bridge takes only Ethernet ports"),
        NetKind::Vxlan | NetKind::Sriov => return None,
    };
    let same: Vec<&str> =
        ix.host(m.host).nics.iter().filter(|n| n.kind.value == need).map(|n| n.name.value.as_str()).collect();
    let help = if same.is_empty() {
        format!(
            "host `{host}` declares no {} NIC: use a network kind its NICs can carry, or correct `kind` of nic `{}` if it is wrong",
            kind_name(need),
            nic.name.value
        )
    } else {
        format!("use an {} NIC of host `{host}` as `parent`: {}", kind_name(need), same.join(", "))
    };
    Some(
        Diagnostic::error(
            "fabrik::fabric::parent-kind",
            format!(
                "network `{}` is {what} on `{}`, an {} NIC of host `{host}`: {why}",
                net.name.value,
                nic.name.value,
                kind_name(nic.kind.value)
            ),
        )
        .at(at, format!("needs an {} NIC", kind_name(need)))
        .also(nic.kind.span, format!("`{}` is {} on host `{host}`", nic.name.value, kind_name(nic.kind.value)))
        .also(m.at, m.label(ix, &net.name.value))
        .help(help),
    )
}

/// The addresses of one family against the first host's: one error naming the first
/// address of the other family.
fn mixed_families(ix: &Index<'_>, net: &Network, parent: &str, addrs: &[(IpAddr, Span, usize)]) -> Option<Diagnostic> {
    let (first, first_span, first_host) = addrs.first()?;
    let other = addrs.iter().find(|(ip, _, _)| ip.is_ipv4() != first.is_ipv4())?;
    let family = |ip: &IpAddr| if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let (ip, span, host) = other;
    let hosts: BTreeMap<bool, Vec<usize>> = addrs.iter().fold(BTreeMap::new(), |mut m, (ip, _, h)| {
        m.entry(ip.is_ipv4()).or_insert_with(Vec::new).push(*h);
        m
    });
    let minority = hosts.get(&ip.is_ipv4()).map_or(1, Vec::len);
    Some(
        Diagnostic::error(
            "fabrik::fabric::underlay-family",
            format!(
                "VXLAN network `{}` has an {} underlay on host `{}` and an {} one on host `{}`",
                net.name.value,
                family(first),
                ix.host(*first_host).name.value,
                family(ip),
                ix.host(*host).name.value
            ),
        )
        .at(*span, format!("an {} address of `{parent}`", family(ip)))
        .also(*first_span, format!("an {} address of `{parent}`", family(first)))
        .help(format!(
            "give `{parent}` an address of one family on every host of the network ({} of {} hosts use {})",
            minority,
            addrs.len(),
            family(ip)
        )),
    )
}

/// VMs attach only to networks that reach their host.
fn on_hosts(ix: &Index<'_>, at: &Where, out: &mut Vec<Diagnostic>) {
    let spans: HashMap<&str, HashSet<usize>> = ix
        .spec
        .networks
        .iter()
        .filter(|n| !n.hosts.is_empty())
        .map(|n| (n.name.value.as_str(), host_set(ix, &n.hosts)))
        .collect();
    // A template's NIC is one line for many VMs: said once per line and host.
    let mut said: HashSet<(Span, Option<usize>)> = HashSet::new();
    let mut overlap = Overlap::default();
    for (e, runs) in ix.spec.effective_vms().zip(&at.vms) {
        for nic in e.nic_list() {
            let Some(net_hosts) = spans.get(nic.network.value.as_str()) else { continue };
            let Some(net) = ix.networks.get(nic.network.value.as_str()) else { continue };
            // Only for a diagnostic: sorting every network's hosts for every NIC would
            // make the check quadratic on a large factory.
            let listed = || {
                let mut v: Vec<usize> = net_hosts.iter().copied().collect();
                v.sort_unstable();
                v
            };
            let name = &e.vm.name.value;
            let d = match runs {
                Runs::On(h, span) if !net_hosts.contains(h) => {
                    if !said.insert((nic.network.span, Some(*h))) {
                        continue;
                    }
                    let host = &ix.host(*h).name.value;
                    Diagnostic::error(
                        "fabrik::fabric::network-not-on-host",
                        format!("VM `{name}` runs on host `{host}`, which network `{}` does not span", net.name.value),
                    )
                    .at(nic.network.span, format!("not on host `{host}`"))
                    .also(*span, "the VM's host")
                    .also(net.name.span, format!("spans {}", hosts_phrase(ix, listed())))
                    .help(format!(
                        "add `{host}` to the `hosts` of network `{}`, or run the VM on {}",
                        net.name.value,
                        hosts_phrase(ix, listed()).replace(" and ", " or ")
                    ))
                }
                Runs::Placed(t) if !overlap.any(at, *t, nic.network.value.as_str(), net_hosts) => {
                    let candidates = &at.tenant_hosts[*t];
                    if !said.insert((nic.network.span, None)) || candidates.is_empty() {
                        continue;
                    }
                    Diagnostic::error(
                        "fabrik::fabric::network-not-on-host",
                        format!(
                            "VM `{name}` may run only on the hosts of tenant `{}`, and network `{}` spans none of them",
                            e.vm.tenant.value, net.name.value
                        ),
                    )
                    .at(nic.network.span, format!("on none of the hosts of tenant `{}`", e.vm.tenant.value))
                    .also(net.name.span, format!("spans {}", hosts_phrase(ix, listed())))
                    .help(format!(
                        "add a host of tenant `{}` ({}) to the network's `hosts`, or give the tenant a host of the network",
                        e.vm.tenant.value,
                        hosts_phrase(ix, candidates.iter().copied())
                    ))
                }
                Runs::On(..) | Runs::Placed(_) | Runs::Unknown => continue,
            };
            out.push(d);
        }
    }
}
