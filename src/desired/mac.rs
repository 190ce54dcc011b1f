//! MAC addresses: unique in the factory by construction, and stable.
//!
//! * A NIC's `mac` is used as given (the checks refuse one given twice:
//!   `fabrik::isolation::duplicate-mac`).
//! * Otherwise the MAC is 46 bits of a hash of factory, tenant, VM and NIC index, in the
//!   locally administered unicast space (first octet `…10` in its low bits). A derived
//!   MAC that another NIC already holds is hashed again with a round number, NICs taken
//!   in key order, so the result is a pure function of the files.
//! * A VM that already runs keeps the MACs it has ([`keep_live`]), whatever scheme made
//!   them: adding a VM, or upgrading fabrik, never changes a running VM's address.

use std::collections::{BTreeMap, BTreeSet};

use super::{Desired, DesiredHost, build};
use crate::live::LiveHost;

/// A NIC, by VM name and index.
type NicKey = (String, usize);

/// The derived MAC of NIC `nic` of a VM, hashed `round` times over.
pub fn derived(factory: &str, tenant: &str, vm: &str, nic: usize, round: u32) -> String {
    let key = format!("mac\0{factory}\0{tenant}\0{vm}\0{nic}\0{round}");
    let h = super::names::mix(crate::hash::fnv1a(key.as_bytes()));
    let mut octets = [0u8; 6];
    for (i, o) in octets.iter_mut().enumerate() {
        *o = (h >> (8 * (5 - i))) as u8;
    }
    // Locally administered (bit 1 set), unicast (bit 0 clear): 46 bits of hash remain.
    octets[0] = (octets[0] & 0xfc) | 0x02;
    format(&octets)
}

fn format(o: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3], o[4], o[5])
}

/// A MAC as written by hand (`:` or `-` between octets, any case), lowercase with `:`;
/// `None` unless it is a unicast address other than all zeros.
pub fn parse(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let mut octets = [0u8; 6];
    for (o, p) in octets.iter_mut().zip(&parts) {
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    let unicast = octets[0] & 1 == 0;
    (unicast && octets != [0; 6]).then(|| format(&octets))
}

/// Gives every NIC without a declared MAC one: the one in `keep` when it is free, else
/// a derived one. The spec hash of every VM whose MACs changed is computed again.
///
/// `rehash`: compute the spec hash of each VM whose MACs changed (off when the caller
/// hashes every VM afterwards anyway, as [`super::build`] does through `addr::assign`).
pub(super) fn assign(factory: &str, hosts: &mut [DesiredHost], keep: &BTreeMap<NicKey, String>, rehash: bool) {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    // Declared MACs first: they are what the operator wrote.
    for vm in hosts.iter().flat_map(|h| &h.vms) {
        taken.extend(vm.nics.iter().filter(|n| n.declared).map(|n| n.mac.clone()));
    }
    // Then MACs kept from running VMs, in VM order; a MAC two live VMs share (made by
    // an older fabrik) stays with the first, the other gets a fresh one.
    let mut chosen: BTreeMap<NicKey, String> = BTreeMap::new();
    for ((vm, k), mac) in keep {
        if taken.insert(mac.clone()) {
            chosen.insert((vm.clone(), *k), mac.clone());
        }
    }
    let mut pending: Vec<(String, String, usize)> = hosts
        .iter()
        .flat_map(|h| &h.vms)
        .flat_map(|vm| {
            vm.nics
                .iter()
                .enumerate()
                .filter(|(_, n)| !n.declared)
                .map(|(k, _)| (vm.tenant.clone(), vm.name.clone(), k))
        })
        .filter(|(_, vm, k)| !chosen.contains_key(&(vm.clone(), *k)))
        .collect();
    pending.sort();
    for (tenant, vm, k) in pending {
        let mac = (0..)
            .map(|round| derived(factory, &tenant, &vm, k, round))
            .find(|mac| !taken.contains(mac))
            .unwrap_or_default();
        taken.insert(mac.clone());
        chosen.insert((vm, k), mac);
    }
    for vm in hosts.iter_mut().flat_map(|h| &mut h.vms) {
        let mut changed = false;
        for (k, nic) in vm.nics.iter_mut().enumerate() {
            if let Some(mac) = chosen.get(&(vm.name.clone(), k)).filter(|m| **m != nic.mac) {
                nic.mac = mac.clone();
                changed = true;
            }
        }
        // A VM whose MACs stay keeps its hash as it was given.
        if changed && rehash {
            vm.spec_hash = build::spec_hash(vm);
        }
    }
}

/// The desired state with the MACs of this factory's running VMs kept: a NIC that is
/// not given a `mac` keeps the address the VM's live definition has at its index.
/// Pure: the planner and the executor call it on the same live state and get the same
/// answer.
pub fn keep_live(desired: &Desired, live: &[LiveHost]) -> Desired {
    let mut out = desired.clone();
    keep_live_in(&mut out, live);
    out
}

/// [`keep_live`] in place.
pub fn keep_live_in(desired: &mut Desired, live: &[LiveHost]) {
    let mut keep: BTreeMap<NicKey, String> = BTreeMap::new();
    for (_, vm, domain) in super::marked_domains(desired, live) {
        for (k, (nic, iface)) in vm.nics.iter().zip(&domain.interfaces).enumerate() {
            if nic.declared {
                continue;
            }
            if let Some(mac) = iface.mac.as_deref().and_then(parse) {
                keep.insert((vm.name.clone(), k), mac);
            }
        }
    }
    if !keep.is_empty() {
        assign(&desired.factory, &mut desired.hosts, &keep, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs_are_locally_administered_unicast() {
        for k in 0..64 {
            let mac = derived("ai", "acme", "vllm-0", k, 0);
            let first = u8::from_str_radix(&mac[..2], 16).unwrap();
            assert_eq!(first & 0b11, 0b10, "{mac}");
            assert_eq!(parse(&mac).as_deref(), Some(mac.as_str()));
        }
        assert_ne!(derived("ai", "acme", "a", 0, 0), derived("ai", "acme", "a", 0, 1));
        assert_ne!(derived("ai", "acme", "a", 0, 0), derived("other", "acme", "a", 0, 0));
    }

    #[test]
    fn parse_takes_unicast_only() {
        assert_eq!(parse("52:54:00:AB:cd:01").as_deref(), Some("52:54:00:ab:cd:01"));
        assert_eq!(parse("02-00-5e-10-00-01").as_deref(), Some("02:00:5e:10:00:01"));
        for bad in [
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0g",
            "525400abcd01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    use crate::desired::{DesiredHost, DesiredVm};
    use crate::live::PowerState;
    use crate::spec::load::load_bytes;
    use crate::spec::source::{Sources, Syntax};

    /// A built VM with four NICs, to copy.
    fn sample() -> DesiredVm {
        let yaml = "version: 1\nfactory: ai\nhosts:\n  - { name: h, uri: \"test:///default\", numa-nodes: [{ id: 0, cpus: 0-3, memory: 8GiB }] }\ntenants:\n  - { name: acme, hosts: [h], networks: [n] }\nnetworks:\n  - { name: n, purpose: tenant, kind: bridge, tenant: acme }\nvms:\n  - { name: v, tenant: acme, vcpus: 1, memory: 1GiB, nics: [n, n, n, n] }\n";
        let mut sources = Sources::default();
        let (_, spec, diags) = load_bytes(&mut sources, "f.yaml".into(), Syntax::Yaml, yaml.into());
        assert!(diags.is_empty(), "{diags:?}");
        let d = crate::desired::build(&spec).unwrap();
        d.hosts[0].vms[0].clone()
    }

    /// `hosts` hosts of `per_host` VMs each, of 37 tenants, no MAC chosen yet.
    fn fleet(hosts: usize, per_host: usize) -> Vec<DesiredHost> {
        let base = sample();
        (0..hosts)
            .map(|h| DesiredHost {
                name: format!("h{h}"),
                vms: (0..per_host)
                    .map(|i| {
                        let mut vm = base.clone();
                        vm.name = format!("vm-{}", h * per_host + i);
                        vm.tenant = format!("t{}", (h * per_host + i) % 37);
                        vm.nics.iter_mut().for_each(|n| n.mac.clear());
                        vm
                    })
                    .collect(),
                ..DesiredHost::default()
            })
            .collect()
    }

    fn macs(hosts: &[DesiredHost]) -> BTreeMap<(String, usize), String> {
        hosts
            .iter()
            .flat_map(|h| &h.vms)
            .flat_map(|vm| vm.nics.iter().enumerate().map(|(k, n)| ((vm.name.clone(), k), n.mac.clone())))
            .collect()
    }

    #[test]
    fn a_hundred_thousand_vms_of_four_nics_have_distinct_stable_macs() {
        let mut hosts = fleet(10, 10_000);
        assign("ai", &mut hosts, &BTreeMap::new(), true);
        let before = macs(&hosts);
        assert_eq!(before.len(), 400_000);
        let distinct: BTreeSet<&String> = before.values().collect();
        assert_eq!(distinct.len(), 400_000, "duplicate MACs");
        assert!(before.values().all(|m| parse(m).as_deref() == Some(m.as_str())));

        // Adding a VM changes no other VM's MAC.
        let mut added = hosts.clone();
        let mut extra = added[3].vms[0].clone();
        extra.name = "vm-new".into();
        added[3].vms.push(extra);
        assign("ai", &mut added, &BTreeMap::new(), true);
        let after = macs(&added);
        assert!(before.iter().all(|(k, m)| after.get(k) == Some(m)), "adding a VM moved a MAC");
        assert!(!before.values().any(|m| after[&("vm-new".to_string(), 0)] == *m));

        // Removing one changes none either.
        let mut removed = hosts.clone();
        removed[5].vms.remove(17);
        assign("ai", &mut removed, &BTreeMap::new(), true);
        let after = macs(&removed);
        assert_eq!(after.len(), 400_000 - 4);
        assert!(after.iter().all(|(k, m)| before.get(k) == Some(m)), "removing a VM moved a MAC");
    }

    #[test]
    fn declared_macs_win_and_collisions_rehash() {
        let mut hosts = fleet(1, 2);
        let taken = derived("ai", "t0", "vm-0", 0, 0);
        hosts[0].vms[1].nics[2].mac = taken.clone();
        hosts[0].vms[1].nics[2].declared = true;
        assign("ai", &mut hosts, &BTreeMap::new(), true);
        assert_eq!(hosts[0].vms[1].nics[2].mac, taken);
        assert_eq!(hosts[0].vms[0].nics[0].mac, derived("ai", "t0", "vm-0", 0, 1), "hashed again, one round on");
    }

    #[test]
    fn a_running_vm_keeps_the_macs_it_has() {
        let mut hosts = fleet(1, 2);
        assign("ai", &mut hosts, &BTreeMap::new(), true);
        let desired = Desired { factory: "ai".into(), hosts, ..Desired::default() };
        // `vm-0` runs with MACs an older fabrik derived (QEMU's range); one of them is
        // the MAC `vm-1` would derive now.
        let mut old = desired.hosts[0].vms[0].clone();
        let stolen = desired.hosts[0].vms[1].nics[1].mac.clone();
        for (k, n) in old.nics.iter_mut().enumerate() {
            n.mac = format!("52:54:00:00:00:{k:02x}");
        }
        old.nics[3].mac = stolen.clone();
        let xml = crate::render::domain("ai", &desired.hosts[0], &old);
        let domain = crate::driver::libvirt::xml::domain(&xml, PowerState::Running, true).unwrap();
        let live = LiveHost { name: "h0".into(), domains: vec![domain.clone()], ..LiveHost::default() };
        let kept = keep_live(&desired, &[live]);
        let vm0: Vec<&str> = kept.hosts[0].vms[0].nics.iter().map(|n| n.mac.as_str()).collect();
        assert_eq!(vm0, ["52:54:00:00:00:00", "52:54:00:00:00:01", "52:54:00:00:00:02", stolen.as_str()]);
        let vm1 = &kept.hosts[0].vms[1];
        assert_ne!(vm1.nics[1].mac, stolen, "the new VM yields the MAC the running one holds");
        assert_eq!(vm1.nics[0].mac, desired.hosts[0].vms[1].nics[0].mac);
        // Another factory's domain of the name gives nothing.
        let mut foreign = domain;
        foreign.owner.as_mut().unwrap().factory = "other".into();
        let live = LiveHost { name: "h0".into(), domains: vec![foreign], ..LiveHost::default() };
        assert_eq!(keep_live(&desired, &[live]), desired);
    }
}
