//! MTUs over the parent NIC: a network's devices on a host sit on its `parent` NIC, and
//! the kernel refuses a VLAN device, an InfiniBand partition or an SR-IOV VF with an MTU
//! above its parent's, and a VXLAN device whose frames with their encapsulation would
//! not fit the underlay. The NIC's own MTU is set by the host's provisioning, not by
//! fabrik: where a host declares it (`mtu` on the NIC), every network over the NIC must
//! fit it; where it declares none, fabrik does not know it and says nothing.
//!
//! The hosts of a network are found as for the underlay ([`super::underlay::members`]).

use std::collections::BTreeMap;

use super::underlay::{Attached, Member, members, nic};
use crate::check::gpu::{Index, and_list};
use crate::diag::Diagnostic;
use crate::spec::model::{NetKind, Network, Nic};
use crate::spec::source::Spanned;

/// What VXLAN adds to each overlay frame over an IPv4 underlay: the inner Ethernet header
/// (14), VXLAN (8), UDP (8) and outer IPv4 (20) headers. The kernel's `VXLAN_HEADROOM`,
/// and why tenant networks over a 9000-byte underlay use 8950.
const VXLAN_IPV4_OVERHEAD_BYTES: u32 = 50;
/// The same over an IPv6 underlay, whose header is 40 bytes (`VXLAN6_HEADROOM`).
const VXLAN_IPV6_OVERHEAD_BYTES: u32 = 70;
/// The smallest MTU a network may have (`ETH_MIN_MTU`, the language's bound).
const MTU_MIN_BYTES: u32 = 68;

/// A host whose parent NIC is too small for the network.
struct Tight<'a> {
    member: Member,
    /// The NIC's declared MTU.
    mtu: &'a Spanned<u32>,
}

pub(super) fn check(ix: &Index<'_>, attached: &Attached<'_>, out: &mut Vec<Diagnostic>) {
    for net in &ix.spec.networks {
        let (Some(parent), Some(mtu)) = (&net.parent, &net.mtu) else { continue };
        // By encapsulation overhead: a VXLAN network's hosts on IPv4 and on IPv6 need
        // different MTUs, each said in its own diagnostic.
        let mut tight: BTreeMap<u32, Vec<Tight<'_>>> = BTreeMap::new();
        for member in members(ix, attached, net) {
            let Some(nic) = nic(ix, member.host, &parent.value) else { continue };
            let Some(nic_mtu) = &nic.mtu else { continue };
            let overhead = overhead_bytes(net, nic);
            if mtu.value + overhead > nic_mtu.value {
                tight.entry(overhead).or_default().push(Tight { member, mtu: nic_mtu });
            }
        }
        for (overhead, hosts) in tight {
            out.push(above(ix, net, &parent.value, mtu, overhead, &hosts));
        }
    }
}

/// What the network's devices add to its MTU on the parent NIC.
fn overhead_bytes(net: &Network, nic: &Nic) -> u32 {
    match net.kind.value {
        NetKind::Vxlan => match nic.ip.as_ref().map(|ip| ip.value) {
            Some(std::net::IpAddr::V6(_)) => VXLAN_IPV6_OVERHEAD_BYTES,
            Some(std::net::IpAddr::V4(_)) | None => VXLAN_IPV4_OVERHEAD_BYTES,
        },
        NetKind::Bridge | NetKind::Vlan | NetKind::IbPartition | NetKind::Sriov => 0,
    }
}

/// The error for the hosts (at least one) whose `parent` cannot carry the network.
fn above(
    ix: &Index<'_>,
    net: &Network,
    parent: &str,
    mtu: &Spanned<u32>,
    overhead: u32,
    hosts: &[Tight<'_>],
) -> Diagnostic {
    let host_name = |t: &Tight<'_>| ix.spec.hosts[t.member.host].name.value.as_str();
    let need = mtu.value + overhead;
    let (whose, label) = match net.kind.value {
        NetKind::Vxlan => (
            format!("VXLAN network `{}`'s MTU {}, plus {overhead} bytes of encapsulation,", net.name.value, mtu.value),
            format!("with {overhead} bytes of VXLAN encapsulation, needs {need} on `{parent}`"),
        ),
        NetKind::Bridge | NetKind::Vlan | NetKind::IbPartition | NetKind::Sriov => {
            (format!("network `{}`'s MTU {}", net.name.value, mtu.value), format!("needs {need} on `{parent}`"))
        }
    };
    let on = on_hosts(&hosts.iter().map(|t| format!("`{}` ({})", host_name(t), t.mtu.value)).collect::<Vec<_>>());
    let mut d = Diagnostic::error(
        "fabrik::fabric::mtu-above-parent",
        format!("{whose} is above the MTU of `{parent}` on {on}"),
    )
    .at(mtu.span, label);
    for t in hosts {
        d = d
            .also(t.mtu.span, format!("`{parent}`'s MTU on host `{}`", host_name(t)))
            .also(t.member.at, &t.member.label);
    }
    let which = on_hosts(&hosts.iter().map(|t| format!("`{}`", host_name(t))).collect::<Vec<_>>());
    let raise = format!("raise the MTU of `{parent}` on {which} to {need} (and declare it: `mtu: {need}`)");
    let fits = hosts.iter().map(|t| t.mtu.value).min().unwrap_or(0).saturating_sub(overhead);
    let lower = format!("lower the network's to {fits}");
    if fits < MTU_MIN_BYTES {
        return d.help(raise);
    }
    d.help(match net.kind.value {
        // A VXLAN network's MTU is fabrik's to choose; the underlay's is usually fixed.
        NetKind::Vxlan => format!("{lower}, or {raise}"),
        NetKind::Bridge | NetKind::Vlan | NetKind::IbPartition | NetKind::Sriov => format!("{raise}, or {lower}"),
    })
}

/// "host `a`" or "hosts `a` and `b`".
fn on_hosts(hosts: &[String]) -> String {
    match hosts {
        [one] => format!("host {one}"),
        _ => format!("hosts {}", and_list(hosts)),
    }
}

#[cfg(test)]
mod tests {
    use crate::check::gpu::tests::spec;

    fn diags(text: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let spec = spec(text);
        let ix = super::Index::new(&spec);
        super::check(&ix, &super::super::underlay::Attached::new(&ix), &mut out);
        out.into_iter().map(|d| (d.message, d.help.unwrap_or_default())).collect()
    }

    /// Two hosts whose `nic` lines are given, and one network over `fe0`.
    fn factory(nics: [&str; 2], net: &str) -> String {
        let host = |name: &str, nic: &str| {
            format!(
                "  - name: {name}\n    uri: qemu:///system\n    numa-nodes: [{{ id: 0, cpus: 0-7, memory: 64GiB }}]\n    nics: [{{ name: fe0, kind: ethernet{nic} }}]\n"
            )
        };
        format!(
            "version: 1\nhosts:\n{}{}tenants:\n  - {{ name: acme, hosts: [h1, h2] }}\nnetworks:\n  - {{ name: n, purpose: tenant, tenant: acme, parent: fe0, hosts: [h1, h2], {net} }}\n",
            host("h1", nics[0]),
            host("h2", nics[1]),
        )
    }

    #[test]
    fn a_vlan_may_reach_its_parents_mtu_but_not_pass_it() {
        let vlan = "kind: vlan, vlan: 200, mtu: 9000";
        assert_eq!(diags(&factory([", mtu: 9000", ", mtu: 9000"], vlan)), vec![]);
        assert_eq!(
            diags(&factory([", mtu: 9000", ", mtu: 1500"], vlan)),
            [(
                "network `n`'s MTU 9000 is above the MTU of `fe0` on host `h2` (1500)".to_string(),
                "raise the MTU of `fe0` on host `h2` to 9000 (and declare it: `mtu: 9000`), or lower the network's to 1500"
                    .to_string()
            )]
        );
    }

    #[test]
    fn vxlan_needs_room_for_its_encapsulation() {
        let vxlan = "kind: vxlan, vni: 10001, mtu: 8950";
        assert_eq!(diags(&factory([", mtu: 9000", ", mtu: 9000"], vxlan)), vec![]);
        let got = diags(&factory([", mtu: 8950", ", mtu: 8990"], vxlan));
        assert_eq!(
            got,
            [(
                "VXLAN network `n`'s MTU 8950, plus 50 bytes of encapsulation, is above the MTU of `fe0` on hosts `h1` (8950) and `h2` (8990)".to_string(),
                "lower the network's to 8900, or raise the MTU of `fe0` on hosts `h1` and `h2` to 9000 (and declare it: `mtu: 9000`)"
                    .to_string()
            )]
        );
        // Over IPv6 the outer header is 20 bytes longer.
        let v6 = diags(&factory([", mtu: 9000, ip: \"fd00::1\"", ", mtu: 9000, ip: \"fd00::2\""], vxlan));
        assert_eq!(v6.len(), 1);
        assert!(v6[0].0.contains("plus 70 bytes"), "{v6:?}");
    }

    #[test]
    fn an_undeclared_mtu_is_not_judged() {
        assert_eq!(diags(&factory(["", ""], "kind: vlan, vlan: 200, mtu: 9000")), vec![]);
        // Nor a network that sets none: its devices take what the host gives them.
        assert_eq!(diags(&factory([", mtu: 1500", ", mtu: 1500"], "kind: vlan, vlan: 200")), vec![]);
    }
}
