//! InfiniBand ports of VMs: the GUIDs of every VF given to a VM on an `ib-partition`
//! network, and the partition membership the subnet manager enforces.
//!
//! A partition key isolates only if the subnet manager knows which ports are members:
//! the switches drop packets whose pkey the port is not a member of. fabrik gives every
//! VM NIC on a partition a node GUID and a port GUID of its own, set on the VF before
//! the VM gets it (`ip link set <pf> vf <n> node_guid … port_guid …`), and lists the
//! port GUIDs under the partition's pkey for the subnet manager
//! ([`crate::render::opensm`]).
//!
//! GUIDs are unique in the factory by construction and stable: 63 bits of a hash of
//! factory, tenant, VM and NIC index, in the locally administered EUI-64 space (bit 1
//! of the first byte set, bit 0 clear); a hash another port already holds is hashed
//! again with a round number, ports taken in key order, so the result is a pure
//! function of the files. The port GUID is the node GUID with its lowest bit set, so
//! the two never collide with each other or with another port's.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Desired, DesiredHost};
use crate::live::LiveHost;
use crate::spec::model::{Membership, NetKind, Spec};
use crate::spec::types::PciAddress;

/// An EUI-64 GUID. In JSON a string, `0x` and 16 hex digits, as OpenSM writes it: a
/// number past 2^53 would lose bits in JavaScript and `jq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Guid(pub u64);

impl From<Guid> for String {
    fn from(g: Guid) -> String {
        g.to_string()
    }
}

impl TryFrom<String> for Guid {
    type Error = String;

    fn try_from(text: String) -> Result<Guid, String> {
        text.strip_prefix("0x")
            .filter(|hex| hex.len() == 16)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .map(Guid)
            .ok_or_else(|| format!("`{text}` is not a GUID (`0x` and 16 hex digits)"))
    }
}

impl Guid {
    /// As `ip link` and sysfs write it: `02:c9:…`, eight bytes.
    pub fn colons(self) -> String {
        let b = self.0.to_be_bytes();
        b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
    }
}

impl std::fmt::Display for Guid {
    /// As OpenSM's `partitions.conf` writes it: `0x02c9…`, 16 hex digits.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:016x}", self.0)
    }
}

/// One VM NIC on an InfiniBand partition: the VF it gets carries these GUIDs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IbPort {
    pub vm: String,
    /// The NIC's index among the VM's NICs.
    pub nic: usize,
    pub network: String,
    pub pkey: u16,
    pub membership: Membership,
    /// The physical function whose VF carries the port.
    pub pf: String,
    /// The VF of `pf` the port is (its index, `ip link set <pf> vf <n>`): fixed, so
    /// the GUIDs can be written to it before the VM starts. `None` when `pf` declares
    /// no `sriov-vfs` or all of them are taken (`fabrik::gpu::sriov-vfs` reports that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vf: Option<u32>,
    /// The PCI address of that VF, from the PF's SR-IOV layout as the host reports it
    /// ([`on_hosts`]); the domain names the VF by it. `None` until the host was read:
    /// the NIC then stays on the network's pool and no GUID is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vf_address: Option<PciAddress>,
    pub node_guid: Guid,
    pub port_guid: Guid,
}

/// The node GUID of NIC `nic` of a VM, hashed `round` times over: locally administered,
/// unicast, lowest bit clear (the port GUID sets it).
pub fn derived(factory: &str, tenant: &str, vm: &str, nic: usize, round: u32) -> Guid {
    let key = format!("guid\0{factory}\0{tenant}\0{vm}\0{nic}\0{round}");
    let h = super::names::mix(crate::hash::fnv1a(key.as_bytes()));
    let first = ((h >> 56) as u8 & 0xfc) | 0x02;
    Guid((u64::from(first) << 56) | (h & 0x00ff_ffff_ffff_fffe))
}

/// GUIDs for every key, in key order: the derived ones, hashed again past any taken.
pub fn allocate<'a>(factory: &str, keys: impl Iterator<Item = (&'a str, &'a str, usize)>) -> Vec<(Guid, Guid)> {
    let mut taken: BTreeSet<u64> = BTreeSet::new();
    keys.map(|(tenant, vm, nic)| {
        let node = (0..)
            .map(|round| derived(factory, tenant, vm, nic, round))
            .find(|g| taken.insert(g.0 >> 1))
            .unwrap_or(Guid(0));
        (node, Guid(node.0 | 1))
    })
    .collect()
}

/// The VF of a PF (of `count`) a port gets: a hash of factory, tenant, VM and NIC
/// index, probed forward past the VFs `used` already (ports are taken in key order, so
/// this is a pure function of the files); `None` when every VF is taken.
pub fn vf_slot(factory: &str, tenant: &str, vm: &str, nic: usize, count: u32, used: &mut BTreeSet<u32>) -> Option<u32> {
    if count == 0 {
        return None;
    }
    let key = format!("vf\0{factory}\0{tenant}\0{vm}\0{nic}");
    let first = (super::names::mix(crate::hash::fnv1a(key.as_bytes())) % u64::from(count)) as u32;
    let vf = (0..count).map(|k| (first + k) % count).find(|vf| !used.contains(vf))?;
    used.insert(vf);
    Some(vf)
}

/// Gives every host the ports of its VMs' NICs on InfiniBand partitions.
pub(super) fn add(spec: &Spec, factory: &str, hosts: &mut [DesiredHost]) {
    let nets: std::collections::HashMap<&str, &crate::spec::model::Network> = spec
        .networks
        .iter()
        .filter(|n| n.kind.value == NetKind::IbPartition)
        .map(|n| (n.name.value.as_str(), n))
        .collect();
    let mut wanted: Vec<(String, String, usize, usize, IbPort)> = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        for vm in &host.vms {
            for (k, nic) in vm.nics.iter().enumerate() {
                // A NIC on a GPU's rail is in its partition, through the rail's HCA.
                let partition = nic.rail.as_ref().map_or(nic.network.as_str(), |r| r.partition.as_str());
                let Some(net) = nets.get(partition) else { continue };
                let (Some(pkey), Some(parent)) = (&net.pkey, &net.parent) else { continue };
                let pf = nic.rail.as_ref().map_or(parent.value.clone(), |r| r.pf.clone());
                let port = IbPort {
                    vm: vm.name.clone(),
                    nic: k,
                    network: partition.to_string(),
                    pkey: pkey.value,
                    membership: net.membership.as_ref().map_or(Membership::Full, |m| m.value),
                    pf,
                    vf: None,
                    vf_address: None,
                    node_guid: Guid(0),
                    port_guid: Guid(0),
                };
                wanted.push((vm.tenant.clone(), vm.name.clone(), k, h, port));
            }
        }
    }
    wanted.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    let guids = allocate(factory, wanted.iter().map(|(t, v, k, _, _)| (t.as_str(), v.as_str(), *k)));
    let mut taken: std::collections::HashMap<(usize, String), BTreeSet<u32>> = std::collections::HashMap::new();
    for ((tenant, vm, nic, h, mut port), (node, port_guid)) in wanted.into_iter().zip(guids) {
        port.node_guid = node;
        port.port_guid = port_guid;
        let count = hosts[h].vfs.iter().find(|v| v.nic == port.pf).map_or(0, |v| v.count);
        let used = taken.entry((h, port.pf.clone())).or_default();
        port.vf = vf_slot(factory, &tenant, &vm, nic, count, used);
        hosts[h].ib_ports.push(port);
    }
    for h in hosts {
        h.ib_ports.sort_by(|a, b| (&a.vm, a.nic).cmp(&(&b.vm, b.nic)));
    }
}

/// The desired state with every port's VF address taken from its host's PF (the
/// kernel's SR-IOV offset and stride, [`crate::live::SriovPci`]): from then on the
/// domain names that VF by address, and apply writes the port's GUIDs to it first.
///
/// A VM fabrik already defined keeps the VF its domain names (as it keeps its MACs and
/// addresses): another VM added whose hash lands on that VF takes the next free one, so
/// no existing VM is moved to another VF (which would restart it).
pub fn on_hosts(desired: &Desired, live: &[LiveHost]) -> Desired {
    let mut out = desired.clone();
    on_hosts_in(&mut out, live);
    out
}

/// [`on_hosts`] in place. Live hosts are looked up by name through an index (the first
/// of each name): linear in hosts and domains.
pub fn on_hosts_in(desired: &mut Desired, live: &[LiveHost]) {
    let by_name = crate::live::by_name(live);
    if desired.hosts.iter().all(|h| h.ib_ports.is_empty()) {
        return;
    }
    let mut kept: std::collections::HashMap<(String, String, usize), u32> = std::collections::HashMap::new();
    for (host, vm, domain) in super::marked_domains(desired, live) {
        if host.ib_ports.is_empty() {
            continue;
        }
        let Some(l) = by_name.get(host.name.as_str()) else { continue };
        for port in host.ib_ports.iter().filter(|p| p.vm == vm.name) {
            let Some(layout) = l.links.iter().find(|n| n.name == port.pf).and_then(|n| n.sriov_pci) else { continue };
            let Some(iface) = domain.interfaces.get(port.nic).filter(|i| i.kind == "hostdev") else { continue };
            let count = host.vfs.iter().find(|v| v.nic == port.pf).map_or(0, |v| v.count);
            if let Some(n) = (0..count).find(|n| layout.vf(*n).is_some_and(|a| a.to_string() == iface.source)) {
                kept.insert((host.name.clone(), vm.name.clone(), port.nic), n);
            }
        }
    }
    let Desired { factory, hosts, .. } = desired;
    for host in hosts.iter_mut() {
        if host.ib_ports.is_empty() {
            continue;
        }
        let Some(live) = by_name.get(host.name.as_str()) else { continue };
        if host.ib_ports.iter().any(|p| kept.contains_key(&(host.name.clone(), p.vm.clone(), p.nic))) {
            reslot(factory, host, &kept);
        }
        for port in &mut host.ib_ports {
            let layout = live.links.iter().find(|l| l.name == port.pf).and_then(|l| l.sriov_pci);
            port.vf_address = port.vf.zip(layout).and_then(|(vf, layout)| layout.vf(vf));
        }
    }
}

/// The host's ports' VFs again: the kept ones first, the others hashed past them in key
/// order ([`vf_slot`]).
fn reslot(factory: &str, host: &mut DesiredHost, kept: &std::collections::HashMap<(String, String, usize), u32>) {
    let tenant_of: std::collections::HashMap<String, String> =
        host.vms.iter().map(|v| (v.name.clone(), v.tenant.clone())).collect();
    let mut used: std::collections::HashMap<String, BTreeSet<u32>> = std::collections::HashMap::new();
    for port in &mut host.ib_ports {
        port.vf = kept.get(&(host.name.clone(), port.vm.clone(), port.nic)).copied();
        if let Some(vf) = port.vf {
            used.entry(port.pf.clone()).or_default().insert(vf);
        }
    }
    let mut order: Vec<usize> = (0..host.ib_ports.len()).filter(|&i| host.ib_ports[i].vf.is_none()).collect();
    let key = |p: &IbPort| (tenant_of.get(&p.vm).cloned().unwrap_or_default(), p.vm.clone(), p.nic);
    order.sort_by_key(|&i| key(&host.ib_ports[i]));
    for i in order {
        let (tenant, vm, nic) = key(&host.ib_ports[i]);
        let pf = host.ib_ports[i].pf.clone();
        let count = host.vfs.iter().find(|v| v.nic == pf).map_or(0, |v| v.count);
        host.ib_ports[i].vf = vf_slot(factory, &tenant, &vm, nic, count, used.entry(pf).or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_locally_administered_unicast_and_stable() {
        let g = derived("ai", "acme", "train", 1, 0);
        assert_eq!(g, derived("ai", "acme", "train", 1, 0));
        assert_ne!(g, derived("ai", "acme", "train", 2, 0));
        assert_eq!((g.0 >> 56) as u8 & 0b11, 0b10, "{g}");
        assert_eq!(g.0 & 1, 0);
        assert_eq!(g.to_string().len(), 18);
        assert_eq!(g.colons().len(), 23);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(json, format!("\"{g}\""));
        assert_eq!(serde_json::from_str::<Guid>(&json).unwrap(), g);
        assert!(serde_json::from_str::<Guid>("\"0x12\"").is_err());
    }

    #[test]
    fn vf_slots_are_distinct_stable_and_run_out() {
        let mut used = BTreeSet::new();
        let slots: Vec<Option<u32>> = (0..4).map(|k| vf_slot("ai", "acme", "train", k, 4, &mut used)).collect();
        let mut got: Vec<u32> = slots.iter().map(|s| s.unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3]);
        assert_eq!(vf_slot("ai", "acme", "train", 9, 4, &mut used), None, "all four taken");
        assert_eq!(vf_slot("ai", "acme", "train", 0, 0, &mut BTreeSet::new()), None, "no VFs");
        let mut again = BTreeSet::new();
        assert_eq!(vf_slot("ai", "acme", "train", 0, 4, &mut again), slots[0]);
    }
}
