//! `fabrik::isolation::duplicate-mac`: a MAC given by hand is given once. Two NICs with
//! one address on a segment steal each other's frames; derived MACs never clash (see
//! [`crate::desired::mac`]), so only declared ones are checked. A `mac` on a VM with
//! replicas, or in a template several VMs use, would give each copy the same address.

use std::collections::{BTreeMap, HashSet};

use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::spec::model::Spec;
use crate::spec::source::Span;

pub static RULES: &[Rule] = &[Rule {
    code: "fabrik::isolation::duplicate-mac",
    summary: "one MAC address given to two NICs (by hand, twice; or in a template or a VM with replicas, so every copy would share it)",
    protects: "two VMs with one MAC: on one segment the switch and the bridge send one VM's frames to the other, across tenants too. MACs fabrik derives are unique in the factory; this is about those given in `mac`",
    example: "vms:\n  - { name: a, tenant: acme, vcpus: 4, memory: 16GiB, nics: [{ network: acme-net, mac: \"02:00:00:00:00:01\" }] }\n  - { name: b, tenant: acme, vcpus: 4, memory: 16GiB, nics: [{ network: acme-net, mac: \"02:00:00:00:00:01\" }] }",
    fix: "give each NIC its own `mac`, or leave `mac` out and let fabrik derive one; never give `mac` in a template or on a VM with replicas",
}];

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    // MAC → where it was first given, and the VM (instance) it went to.
    let mut seen: BTreeMap<&str, (Span, String)> = BTreeMap::new();
    // A declaration shared by copies is reported once, not once per copy.
    let mut reported: HashSet<Span> = HashSet::new();
    for e in spec.effective_vms() {
        for instance in e.vm.instance_names() {
            for nic in e.nic_list() {
                let Some(mac) = &nic.mac else { continue };
                let Some((first, owner)) = seen.get(mac.value.as_str()) else {
                    seen.insert(&mac.value, (mac.span, instance.clone()));
                    continue;
                };
                if reported.contains(&mac.span) {
                    continue;
                }
                reported.insert(mac.span);
                let whom = if *owner == instance {
                    format!("two NICs of VM `{instance}`")
                } else {
                    format!("VM `{instance}` and to VM `{owner}`")
                };
                let d = Diagnostic::error(
                    "fabrik::isolation::duplicate-mac",
                    format!("MAC `{}` is given to {whom}", mac.value),
                );
                let d = if *first == mac.span {
                    d.at(mac.span, format!("every VM made from this declaration gets `{}`", mac.value))
                        .help("a `mac` in a template or on a VM with replicas is shared by every copy; leave it out and let fabrik derive one per NIC")
                } else {
                    d.at(mac.span, "given again here")
                        .also(*first, format!("first given here, to VM `{owner}`"))
                        .help("give each NIC its own `mac`, or leave `mac` out and let fabrik derive a unique one")
                };
                out.push(d);
            }
        }
    }
}
