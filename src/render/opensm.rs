//! The InfiniBand partition membership of the factory → OpenSM's `partitions.conf`.
//!
//! One entry per `ib-partition` network that has VM ports: its pkey (the low 15 bits:
//! OpenSM takes membership from each member, not from the pkey's top bit) and the port
//! GUID of every VF fabrik gives a VM on it ([`crate::desired::ib`]), full or limited as
//! the network's `membership` says. The default partition makes every other port a
//! limited member, and only the subnet manager's own port full: ports of two tenants
//! can never reach each other through it, only through a partition both are in.
//!
//! The file is the subnet manager's whole partition table, so fabrik writes all of it;
//! a fabric whose switches or hosts need more (a storage partition of the operator's)
//! is described in docs/infiniband.md, with the hook for subnet managers other than
//! OpenSM (UFM's REST API takes the same pkey → GUID list).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::desired::Desired;
use crate::desired::ib::IbPort;
use crate::spec::model::Membership;

/// The 15 bits of a pkey that name its partition (bit 15 is the membership bit).
const PKEY_BASE_MASK: u16 = 0x7fff;

/// A partition's network name and its ports, each with its host's name.
type Partition<'a> = (String, Vec<(&'a str, &'a IbPort)>);

/// The `partitions.conf` of the factory, deterministic (partitions by pkey, members by
/// GUID).
pub fn partitions_conf(desired: &Desired) -> String {
    let mut by_pkey: BTreeMap<u16, Partition<'_>> = BTreeMap::new();
    for host in &desired.hosts {
        for port in &host.ib_ports {
            let entry = by_pkey.entry(port.pkey & PKEY_BASE_MASK).or_insert_with(|| (port.network.clone(), Vec::new()));
            entry.1.push((host.name.as_str(), port));
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "# OpenSM partitions.conf of factory `{}`, written by fabrik: do not edit.", desired.factory);
    let _ = writeln!(out, "# Every port is a limited member of the default partition; only the SM's is full.");
    let _ = writeln!(out, "Default=0x7fff, ipoib : ALL=limited, SELF=full ;");
    for (pkey, (network, mut ports)) in by_pkey {
        ports.sort_by_key(|(_, p)| p.port_guid);
        let _ = writeln!(out);
        let _ = writeln!(out, "# {network}: {} port(s)", ports.len());
        let _ = writeln!(out, "{}=0x{pkey:04x}, ipoib :", partition_name(&network));
        let last = ports.len() - 1;
        for (i, (host, p)) in ports.iter().enumerate() {
            let member = match p.membership {
                Membership::Full => "full",
                Membership::Limited => "limited",
            };
            let sep = if i == last { " ;" } else { "," };
            let _ = writeln!(out, "  {}={member}{sep} # {host}/{} nic {} on {}", p.port_guid, p.vm, p.nic, p.pf);
        }
    }
    out
}

/// OpenSM partition names are words: letters, digits, `_`, `-`, `.` pass; anything else
/// becomes `_` (fabrik's network names are already such words).
fn partition_name(network: &str) -> String {
    network.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' }).collect()
}
