//! Offline completeness: what plan and apply rely on about references and declared
//! hardware, checked where it is declared. Each rule here stands for a failure that
//! would otherwise surface only when planning (an unlocated graph error) or halfway
//! through apply (the kernel or libvirt refusing): a network's parent NIC the host
//! lacks or that is of the wrong kind, a VXLAN underlay of mixed address families, a VM
//! on a host its network or pool does not reach, a disk smaller than its image, memory
//! that is not a whole number of its hugepages, two hosts at one URI.
//!
//! The rules belong to the families they protect (`fabric`, `capacity`, `numa`); they
//! live together because they share one index of where networks and pools are, built
//! once, so every rule stays linear in the size of the factory.

mod host;
mod network;
mod storage;

use std::collections::{HashMap, HashSet};

use super::gpu::Index;
use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::spec::model::Spec;
use crate::spec::source::Span;

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::fabric::unknown-parent",
        summary: "a network's `parent` is not a NIC that a host carrying the network declares",
        protects: "a network the host cannot build: the VLAN or VXLAN device, InfiniBand partition or SR-IOV pool is made on `parent`, and the kernel or libvirt refuses a parent that does not exist, halfway through apply. The hosts of a network are its `hosts`, else those its VMs name",
        example: "hosts:\n  - name: gpu01\n    nics: [{ name: stor0, kind: ethernet }]\nnetworks:\n  - { name: storage, purpose: storage, kind: vlan, shared: true, vlan: 200, parent: stor1, hosts: [gpu01] }",
        fix: "name a NIC the hosts declare (the help lists them), or declare the NIC on every host of the network",
    },
    Rule {
        code: "fabrik::fabric::parent-kind",
        summary: "a network's `parent` NIC is of a kind the network cannot be built on: an InfiniBand partition on an Ethernet NIC, a VLAN or bridge over an InfiniBand (IPoIB) NIC",
        protects: "a device the kernel refuses: a partition key exists only on InfiniBand, 802.1Q tags only on Ethernet (`ib0.100` is refused), and a Linux bridge takes only Ethernet ports",
        example: "hosts:\n  - name: gpu01\n    nics: [{ name: ens1f0, kind: ethernet }]\nnetworks:\n  - { name: acme-ib, purpose: tenant, kind: ib-partition, tenant: acme, pkey: 0x8001, parent: ens1f0, hosts: [gpu01] }",
        fix: "name a NIC of the right kind as `parent` (InfiniBand for `ib-partition`, Ethernet for `vlan` and `bridge`), or correct the NIC's declared `kind`",
    },
    Rule {
        code: "fabrik::fabric::underlay-family",
        summary: "the hosts of a VXLAN network give its parent NIC addresses of different families (IPv4 and IPv6)",
        protects: "a tunnel that cannot form: a VXLAN device sends from one address family and floods only to peers of the same, so the kernel refuses the flood entries of the others and the hosts on either side never hear each other",
        example: "hosts:\n  - name: gpu01\n    nics: [{ name: fe0, kind: ethernet, ip: 10.10.0.11 }]\n  - name: gpu02\n    nics: [{ name: fe0, kind: ethernet, ip: \"fd00::12\" }]\nnetworks:\n  - { name: acme-net, purpose: tenant, kind: vxlan, tenant: acme, vni: 10001, parent: fe0, hosts: [gpu01, gpu02] }",
        fix: "give the parent NIC of every host of the network an address of one family",
    },
    Rule {
        code: "fabrik::fabric::network-not-on-host",
        summary: "a VM attaches to a network whose `hosts` do not include the VM's host (or, for a VM placed by fabrik, any host of its tenant)",
        protects: "a VM whose network is never made where it runs: the plan stops on a dependency nothing declares, or the VM cannot start",
        example: "networks:\n  - { name: acme-net, purpose: tenant, kind: vxlan, tenant: acme, vni: 10001, hosts: [gpu01] }\nvms:\n  - { name: a, tenant: acme, host: gpu02, nics: [{ network: acme-net }] }",
        fix: "add the VM's host to the network's `hosts` (or drop `hosts`, so the network goes where its VMs are), or run the VM on a host of the network",
    },
    Rule {
        code: "fabrik::capacity::pool-not-on-host",
        summary: "a VM's disk is in a pool (its own, or its image's) whose `hosts` do not include the VM's host (or, for a VM placed by fabrik, any host of its tenant)",
        protects: "a volume that cannot be made: its pool, or the pool holding the base image it is copied from, is not defined on the VM's host, so the plan stops on a dependency nothing declares",
        example: "pools:\n  - { name: fast, type: dir, path: /var/lib/fabrik/fast, hosts: [gpu01] }\nvms:\n  - name: a\n    host: gpu02\n    disks: [{ name: root, size: 100GiB, pool: fast }]",
        fix: "add the VM's host to the pool's `hosts` (or drop `hosts`: every host has the pool), or put the disk in a pool the host has",
    },
    Rule {
        code: "fabrik::capacity::disk-below-image",
        summary: "a disk's `size` is smaller than the virtual size its image declares",
        protects: "a `size` without effect: libvirt makes a copy at least as large as its source, so the disk silently gets the image's size, not the one declared (and a disk really cut to that size would lose the end of the image's file system)",
        example: "images:\n  - { name: ubuntu, pool: images, source: /srv/ubuntu.qcow2, size: 20GiB }\nvms:\n  - name: a\n    disks: [{ name: root, image: ubuntu, size: 10GiB }]",
        fix: "give the disk at least the image's size (or no `size`: it takes the image's)",
    },
    Rule {
        code: "fabrik::capacity::duplicate-uri",
        summary: "two hosts have one libvirt `uri`",
        protects: "one machine managed as two hosts: its capacity is counted twice, and each host's plan deletes the VMs, networks and links the other one's declares, since they are fabrik's and not desired there",
        example: "hosts:\n  - { name: gpu01, uri: \"qemu+ssh://root@gpu01/system\", ... }\n  - { name: gpu02, uri: \"qemu+ssh://root@gpu01/system\", ... }",
        fix: "give each host its own URI (a copied host keeps the original's); if both are one machine, declare it once",
    },
    Rule {
        code: "fabrik::numa::hugepage-fraction",
        summary: "a VM's `memory` is not a whole number of its `hugepages`",
        protects: "a VM that does not start: QEMU refuses guest memory backed by hugepages that is not a multiple of the page size, so the plan looks fine and the start fails",
        example: "vms:\n  - { name: a, tenant: acme, vcpus: 8, memory: 1536MiB, hugepages: 1G }",
        fix: "round `memory` to a multiple of the page size (the help gives the nearest), or use 2M pages",
    },
];

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    let ix = Index::new(spec);
    let at = Where::new(&ix);
    network::check(&ix, &at, out);
    storage::check(&ix, &at, out);
    host::check(spec, out);
}

/// Where each VM may run, found once: the host it names, else its tenant's hosts.
pub(super) struct Where {
    /// Per VM entry, in `spec.vms` order.
    pub vms: Vec<Runs>,
    /// The hosts of each tenant, by tenant index: a VM placed by fabrik refers to them,
    /// so that no per-VM work grows with the number of hosts.
    pub tenant_hosts: Vec<Vec<usize>>,
}

/// The hosts a VM entry may run on.
pub(super) enum Runs {
    /// Its `host`, and the line that names it.
    On(usize, Span),
    /// No `host`: placement picks one of the hosts of tenant `.0` (an index into
    /// [`Where::tenant_hosts`]).
    Placed(usize),
    /// A host or tenant that does not exist: reported by the reference checks.
    Unknown,
}

impl Where {
    fn new(ix: &Index<'_>) -> Where {
        let tenant_hosts: Vec<Vec<usize>> = ix.spec.tenants.iter().map(|t| ix.tenant_hosts(t)).collect();
        let mut tenants: HashMap<&str, usize> = HashMap::with_capacity(ix.spec.tenants.len());
        for (i, t) in ix.spec.tenants.iter().enumerate() {
            tenants.entry(t.name.value.as_str()).or_insert(i);
        }
        let vms = ix
            .spec
            .vms
            .iter()
            .map(|vm| match &vm.host {
                Some(h) => ix.hosts.get(h.value.as_str()).map_or(Runs::Unknown, |&i| Runs::On(i, h.span)),
                None => tenants.get(vm.tenant.value.as_str()).map_or(Runs::Unknown, |&t| Runs::Placed(t)),
            })
            .collect();
        Where { vms, tenant_hosts }
    }
}

/// Whether any host of a tenant is in a set of hosts, asked once per tenant and set.
#[derive(Default)]
pub(super) struct Overlap<'a> {
    known: HashMap<(usize, &'a str), bool>,
}

impl<'a> Overlap<'a> {
    pub fn any(&mut self, at: &Where, tenant: usize, name: &'a str, hosts: &HashSet<usize>) -> bool {
        *self.known.entry((tenant, name)).or_insert_with(|| at.tenant_hosts[tenant].iter().any(|h| hosts.contains(h)))
    }
}

/// Hosts by index, as a set, for "is this host one of them".
pub(super) fn host_set(ix: &Index<'_>, names: &[crate::spec::source::Spanned<String>]) -> HashSet<usize> {
    names.iter().filter_map(|h| ix.hosts.get(h.value.as_str()).copied()).collect()
}

/// Host names, back-quoted and joined: "`gpu01` and `gpu02`".
pub(super) fn hosts_phrase(ix: &Index<'_>, hosts: impl IntoIterator<Item = usize>) -> String {
    let names: Vec<String> = hosts.into_iter().map(|h| format!("`{}`", ix.host(h).name.value)).collect();
    super::gpu::and_list(&names)
}

/// Names of the objects `names` declares, by name, for lookups.
pub(super) fn by_name<'a, T>(items: &'a [T], name: impl Fn(&'a T) -> &'a str) -> HashMap<&'a str, &'a T> {
    let mut out = HashMap::with_capacity(items.len());
    for item in items {
        out.entry(name(item)).or_insert(item);
    }
    out
}
