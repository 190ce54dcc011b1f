//! `fabrik::numa::*`: a VM's CPUs, memory, hugepages and devices on one NUMA node.
//!
//! Host declarations come first: NUMA nodes' CPUs are disjoint, devices sit on nodes
//! that exist, reserved CPUs are the host's, hugepage pools fit in their node.
//!
//! A VM is then placed by its pins: its `cpus`, its pinned `gpus` and the parent NICs of
//! its SR-IOV interfaces, each on a node of its `host`. With `numa: required` the pins
//! must share one node (`socket`: one socket; `preferred`: a warning). A `required` or
//! `preferred` VM whose pins share one node takes its memory, hugepages and dedicated
//! vCPUs from that node, and the VMs on a node must fit it; `required` VMs are counted
//! first, since a `preferred` one may spill to another node (which earns a warning). A
//! VM without pins is placed later, by `place/`; here it only has to fit the host's
//! largest node.

mod topology;
mod unplaced;

use std::collections::HashMap;

use super::capacity::{Tally, amount, bytes, page_index, pages_for, vm_name};
use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::spec::effective::Effective;
use crate::spec::model::{CpuPolicy, Network, NicModel, NumaPolicy, Spec};
use crate::spec::source::Span;
use crate::spec::types::{CpuSet, PageSize};
use topology::Topology;

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::numa::node-overlap",
        summary: "two NUMA nodes of a host list the same CPU",
        protects: "a host description that cannot be true, which would make every NUMA check after it wrong",
        example: "numa-nodes:\n  - { id: 0, cpus: 0-63, memory: 1TiB }\n  - { id: 1, cpus: 56-111, memory: 1TiB }",
        fix: "give each node the CPUs the host really puts there (`lscpu -p=cpu,node`, or `/sys/devices/system/node/node*/cpulist`)",
    },
    Rule {
        code: "fabrik::numa::unknown-node",
        summary: "a GPU or NIC is on a NUMA node the host does not declare",
        protects: "devices that no VM can be aligned with, from a typo in `numa-node` or a node left out of `numa-nodes`",
        example: "numa-nodes:\n  - { id: 0, cpus: 0-55, memory: 1TiB }\ngpus:\n  - { address: \"0000:9d:00.0\", model: H200-141GB, numa-node: 1 }",
        fix: "fix `numa-node` (`/sys/bus/pci/devices/<address>/numa_node` gives it) or declare the node",
    },
    Rule {
        code: "fabrik::numa::unknown-cpu",
        summary: "`reserved-cpus` or a VM's `cpus` name a CPU that none of the host's NUMA nodes lists",
        protects: "pins to CPUs the host does not have: libvirt refuses to start the VM",
        example: "numa-nodes:\n  - { id: 0, cpus: 0-31, memory: 256GiB }\nreserved-cpus: 0-1,32-33",
        fix: "name CPUs the host has, or add the missing CPUs to the NUMA node they are on",
    },
    Rule {
        code: "fabrik::numa::node-pools",
        summary: "a NUMA node's hugepage pools hold more memory than the node has",
        protects: "pools the kernel cannot allocate: the host boots with fewer pages than promised and hugepage-backed VMs fail to start",
        example: "numa-nodes:\n  - { id: 0, cpus: 0-63, memory: 512GiB, hugepages: { 1G: 600 } }",
        fix: "shrink the node's pools below its memory, leaving some for the host itself",
    },
    Rule {
        code: "fabrik::numa::pin-without-host",
        summary: "a VM pins host CPUs but names no host",
        protects: "CPU numbers are only meaningful on one host; without it the pins cannot be checked or applied",
        example: "vms:\n  - { name: dev, tenant: acme, vcpus: 8, memory: 32GiB, cpus: 8-15 }",
        fix: "give the VM a `host`, or drop `cpus` and let fabrik pin the vCPUs",
    },
    Rule {
        code: "fabrik::numa::reserved-cpu",
        summary: "a VM pins a host CPU that the host reserves for itself",
        protects: "VMs competing with the host's own threads (QEMU emulators, interrupts, fabrik): jitter for the VM, a stalled host",
        example: "reserved-cpus: 0-3\n...\nvms:\n  - { name: dev, host: gpu01, cpus: 0-7, vcpus: 8, memory: 32GiB, tenant: acme }",
        fix: "pin CPUs outside `reserved-cpus`",
    },
    Rule {
        code: "fabrik::numa::cpu-pinned-twice",
        summary: "a host CPU is pinned by two VMs, or by every replica of one VM",
        protects: "two dedicated vCPUs on one host CPU: both VMs run at half speed while claiming a core each",
        example: "vms:\n  - { name: a, host: gpu01, cpus: 8-15, vcpus: 8, memory: 32GiB, tenant: acme }\n  - { name: b, host: gpu01, cpus: 12-19, vcpus: 8, memory: 32GiB, tenant: acme }",
        fix: "give each VM its own CPUs; a VM with replicas cannot pin `cpus` (drop it and let fabrik pin each replica)",
    },
    Rule {
        code: "fabrik::numa::too-few-cpus",
        summary: "a VM with dedicated vCPUs pins them to fewer host CPUs than it has vCPUs",
        protects: "dedicated vCPUs sharing host CPUs, which defeats `cpu-policy: dedicated`",
        example: "vms:\n  - { name: dev, host: gpu01, cpus: 8-15, vcpus: 16, memory: 64GiB, tenant: acme }",
        fix: "list one host CPU per vCPU in `cpus`, or lower `vcpus`",
    },
    Rule {
        code: "fabrik::numa::split",
        summary: "a VM whose NUMA policy asks for one node (or socket) pins CPUs, GPUs or SR-IOV NICs on several",
        protects: "GPU and RDMA traffic crossing the socket interconnect: host-to-device copies and NCCL at a fraction of their bandwidth. `required` and `socket` are errors, `preferred` a warning",
        example: "gpus:\n  - { address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0 }\n...\nvms:\n  - name: dev\n    host: gpu01\n    numa: required\n    cpus: 56-63          # node 1\n    gpus: [\"0000:1b:00.0\"]  # node 0",
        fix: "pin CPUs, GPUs and SR-IOV NICs of one node (the help names them), or relax `numa` when the VM can live with the slower path",
    },
    Rule {
        code: "fabrik::numa::node-cpus",
        summary: "the dedicated vCPUs placed on a NUMA node exceed its CPUs outside `reserved-cpus`, or a VM without pins needs more than the host's largest node has",
        protects: "a `required` VM that cannot get its dedicated CPUs on the node of its GPUs: it does not start. A VM is placed on a node by its pins (`cpus`, pinned `gpus`, SR-IOV NICs) when it has `numa: required` or `preferred`; `required` VMs count first, and a `preferred` one that overfills the node is a warning (it may spill)",
        example: "numa-nodes:\n  - { id: 0, cpus: 0-15, memory: 256GiB }\ngpus:\n  - { address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0, mode: passthrough }\n...\nvms:\n  - { name: a, host: gpu01, gpus: [\"0000:1b:00.0\"], vcpus: 24, cpu-policy: dedicated, numa: required, ... }",
        fix: "move a VM to another node (pin its GPUs or CPUs there), lower its `vcpus`, or relax `numa` to `preferred`",
    },
    Rule {
        code: "fabrik::numa::node-memory",
        summary: "the memory placed on a NUMA node, outside hugepages, exceeds what the node has outside its pools, or a VM without pins needs more than the host's largest node has",
        protects: "a `required` VM whose memory is strict on its node: the host's OOM killer ends it when the node runs out. A VM is placed on a node by its pins (`cpus`, pinned `gpus`, SR-IOV NICs) when it has `numa: required` or `preferred`; `required` VMs count first, and a `preferred` one that overfills the node is a warning (it may spill)",
        example: "numa-nodes:\n  - { id: 0, cpus: 0-31, memory: 256GiB, hugepages: { 1G: 192 } }   # 64GiB left\n...\nvms:\n  - { name: a, host: gpu01, cpus: 8-15, vcpus: 8, memory: 96GiB, numa: required, ... }",
        fix: "move a VM to another node, lower its memory, back it with hugepages, or shrink the node's pools",
    },
    Rule {
        code: "fabrik::numa::node-hugepages",
        summary: "the hugepage-backed memory placed on a NUMA node exceeds the node's pool of that page size, or a VM without pins needs more than the host's largest pool has",
        protects: "a `required` VM that takes its hugepages from its node's pool and fails to start when the pool is short. A VM is placed on a node by its pins (`cpus`, pinned `gpus`, SR-IOV NICs) when it has `numa: required` or `preferred`; `required` VMs count first, and a `preferred` one that overfills the node is a warning (it may spill)",
        example: "numa-nodes:\n  - { id: 0, cpus: 0-31, memory: 1TiB, hugepages: { 1G: 128 } }\n...\nvms:\n  - { name: a, host: gpu01, cpus: 8-15, vcpus: 8, memory: 256GiB, hugepages: 1G, numa: required, ... }",
        fix: "grow the node's pool, move a VM to another node, or lower its memory",
    },
    Rule {
        code: "fabrik::numa::no-node",
        summary: "a `numa: required` VM that placement puts on one of its tenant's hosts fits no single NUMA node of any of them (dedicated vCPUs, memory or hugepages)",
        protects: "a plan that fails on placement: no host can take the VM on one node, and `validate` said nothing. Counted against empty nodes, so a VM that passes may still find its node taken by others at plan time",
        example: "hosts:\n  - name: gpu01\n    numa-nodes:\n      - { id: 0, cpus: 0-15, memory: 256GiB }\n      - { id: 1, cpus: 16-31, memory: 256GiB }\ntenants:\n  - { name: acme, hosts: [gpu01] }\nvms:\n  - { name: big, tenant: acme, vcpus: 24, cpu-policy: dedicated, memory: 64GiB, numa: required }",
        fix: "lower `vcpus` or `memory` to fit one node, give the tenant a host with larger nodes, or relax `numa` (`preferred` may spill, `none` spans nodes)",
    },
];

/// A thing a VM pins, and the node it is on.
struct Pin {
    node: usize,
    /// A GPU or NIC, rather than CPUs.
    device: bool,
    span: Span,
    what: String,
}

/// What a VM placed on one node takes from it.
struct Load {
    vm: usize,
    /// `numa: required` (else `preferred`, which may spill to another node).
    strict: bool,
    /// Dedicated vCPUs not pinned by `cpus` (pinned CPUs are counted by number).
    cpus: f64,
    memory: f64,
    hugepages: [f64; 2],
}

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    let topologies: Vec<Topology<'_>> = spec.hosts.iter().map(|h| Topology::of(h, out)).collect();
    let mut hosts: HashMap<&str, usize> = HashMap::new();
    for (i, h) in spec.hosts.iter().enumerate() {
        hosts.entry(h.name.value.as_str()).or_insert(i);
    }
    let mut networks: HashMap<&str, &Network> = HashMap::new();
    for n in &spec.networks {
        networks.entry(n.name.value.as_str()).or_insert(n);
    }
    let mut tenant_hosts: HashMap<&str, Vec<usize>> = HashMap::new();
    for t in &spec.tenants {
        let mut hs: Vec<usize> = t.hosts.iter().filter_map(|h| hosts.get(h.value.as_str()).copied()).collect();
        hs.dedup();
        tenant_hosts.entry(t.name.value.as_str()).or_insert(hs);
    }
    let mut known = unplaced::Known::default();
    // Per host: which VM pinned each CPU.
    let mut owners: Vec<HashMap<u32, usize>> = spec.hosts.iter().map(|_| HashMap::new()).collect();
    let mut loads: HashMap<(usize, usize), Vec<Load>> = HashMap::new();
    let vms: Vec<Effective<'_>> = spec.effective_vms().collect();
    for (i, e) in vms.iter().enumerate() {
        if e.count() == 0 {
            continue;
        }
        let Some(host_name) = &e.vm.host else {
            if e.vm.cpus.is_none() && e.numa_policy() == NumaPolicy::Required {
                let candidates = tenant_hosts.get(e.vm.tenant.value.as_str()).map_or(&[][..], Vec::as_slice);
                unplaced::check(e, &load_of(e, i, NumaPolicy::Required), &topologies, candidates, &mut known, out);
            }
            if let Some(cpus) = &e.vm.cpus {
                out.push(
                    Diagnostic::error(
                        "fabrik::numa::pin-without-host",
                        format!("VM `{}` pins CPUs {} but names no host", e.vm.name.value, cpus.value),
                    )
                    .at(cpus.span, "CPU numbers are only meaningful on one host")
                    .help(
                        "give the VM a `host`: the host these CPUs are on; or drop `cpus` and let fabrik pin the vCPUs",
                    ),
                );
            }
            continue;
        };
        let Some(&hi) = hosts.get(host_name.value.as_str()) else { continue };
        let topo = &topologies[hi];
        let mut pins = cpu_pins(e, i, topo, &vms, &mut owners[hi], out);
        pins.extend(device_pins(e, topo, &networks));
        let policy = e.numa_policy();
        let mut nodes: Vec<usize> = pins.iter().map(|p| p.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        match policy {
            NumaPolicy::Required | NumaPolicy::Preferred if nodes.len() > 1 => {
                split(e, topo, &pins, policy, out);
            }
            NumaPolicy::Socket => {
                let home = pins.first().map(|p| topo.socket(p.node));
                if pins.iter().any(|p| Some(topo.socket(p.node)) != home) {
                    split(e, topo, &pins, policy, out);
                }
            }
            NumaPolicy::Required | NumaPolicy::Preferred => {
                let load = load_of(e, i, policy);
                match nodes.first() {
                    Some(&ni) => loads.entry((hi, ni)).or_default().push(load),
                    None => fits_some_node(e, topo, &load, out),
                }
            }
            NumaPolicy::None => {}
        }
    }
    let mut keys: Vec<(usize, usize)> = loads.keys().copied().collect();
    keys.sort_unstable();
    for (hi, ni) in keys {
        let topo = &topologies[hi];
        let pinned = owners[hi].keys().filter(|&&c| topo.node_of_cpu(c) == Some(ni) && !topo.is_reserved(c)).count();
        let mut on_node = loads.remove(&(hi, ni)).unwrap_or_default();
        // `required` VMs first: they cannot spill to another node, `preferred` ones can.
        on_node.sort_by_key(|l| !l.strict);
        node_sums(topo, ni, pinned as f64, &on_node, &vms, out);
    }
}

/// The VM's `cpus`, checked against the host and against other VMs' pins, as pins by node.
fn cpu_pins(
    e: &Effective<'_>,
    i: usize,
    topo: &Topology<'_>,
    vms: &[Effective<'_>],
    owners: &mut HashMap<u32, usize>,
    out: &mut Vec<Diagnostic>,
) -> Vec<Pin> {
    let Some(cpus) = &e.vm.cpus else { return Vec::new() };
    let host = topo.host;
    let vm = &e.vm.name.value;
    let mut unknown = Vec::new();
    let mut reserved = Vec::new();
    let mut by_node: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut clashes: Vec<(usize, Vec<u32>)> = Vec::new();
    for &cpu in cpus.value.cpus() {
        match topo.node_of_cpu(cpu) {
            None => unknown.push(cpu),
            Some(_) if topo.is_reserved(cpu) => reserved.push(cpu),
            Some(ni) => match by_node.iter_mut().find(|(n, _)| *n == ni) {
                Some((_, list)) => list.push(cpu),
                None => by_node.push((ni, vec![cpu])),
            },
        }
        match owners.get(&cpu) {
            Some(&other) => match clashes.iter_mut().find(|(o, _)| *o == other) {
                Some((_, list)) => list.push(cpu),
                None => clashes.push((other, vec![cpu])),
            },
            None => {
                owners.insert(cpu, i);
            }
        }
    }
    if !unknown.is_empty() {
        out.push(
            Diagnostic::error(
                "fabrik::numa::unknown-cpu",
                format!(
                    "VM `{vm}` pins CPUs {}, which host `{}` does not have",
                    CpuSet::from_cpus(unknown),
                    host.name.value
                ),
            )
            .at(cpus.span, "not CPUs of the host")
            .also(host.name.span, format!("CPUs {}", topo.all))
            .help(format!("pin CPUs of host `{}`: its NUMA nodes list {}", host.name.value, topo.all)),
        );
    }
    if !reserved.is_empty() {
        let mut d = Diagnostic::error(
            "fabrik::numa::reserved-cpu",
            format!(
                "VM `{vm}` pins CPUs {}, which host `{}` reserves for itself",
                CpuSet::from_cpus(reserved),
                host.name.value
            ),
        )
        .at(cpus.span, "includes reserved CPUs");
        if let Some(r) = &host.reserved_cpus {
            d = d.also(r.span, "reserved for the host");
        }
        out.push(d.help(
            "pin CPUs outside the host's `reserved-cpus`: those run QEMU's emulator threads, interrupts and the host itself",
        ));
    }
    for (other, shared) in clashes {
        let shared = CpuSet::from_cpus(shared);
        let first = &vms[other].vm;
        let mut d = Diagnostic::error(
            "fabrik::numa::cpu-pinned-twice",
            format!("VMs `{}` and `{vm}` both pin CPUs {shared} of host `{}`", first.name.value, host.name.value),
        )
        .at(cpus.span, "pinned again here");
        if let Some(c) = &first.cpus {
            d = d.also(c.span, format!("already pinned by `{}`", first.name.value));
        }
        out.push(d.help("give each VM its own host CPUs: a dedicated vCPU needs a host CPU to itself"));
    }
    if let Some(r) = e.vm.replicas.as_ref().filter(|r| r.value > 1) {
        out.push(
            Diagnostic::error(
                "fabrik::numa::cpu-pinned-twice",
                format!(
                    "the {} replicas of VM `{vm}` all pin the same CPUs {} of host `{}`",
                    r.value, cpus.value, host.name.value
                ),
            )
            .at(cpus.span, "every replica pins these CPUs")
            .also(r.span, format!("{} replicas", r.value))
            .help("pinned CPUs fit one VM: drop `cpus` and let fabrik pin each replica, or write one VM per CPU set"),
        );
    }
    let shared_policy = e.cpu_policy().is_some_and(|p| p.value == CpuPolicy::Shared);
    let vcpus = e.vcpu_count() as usize;
    if !shared_policy && cpus.value.len() < vcpus {
        let mut d = Diagnostic::error(
            "fabrik::numa::too-few-cpus",
            format!("VM `{vm}` has {vcpus} dedicated vCPUs but pins them to {} host CPUs", cpus.value.len()),
        )
        .at(cpus.span, format!("{} CPUs", cpus.value.len()));
        if let Some(v) = e.vcpus() {
            d = d.also(v.span, format!("{vcpus} vCPUs"));
        }
        out.push(
            d.help(format!("list {vcpus} host CPUs in `cpus`, one per vCPU, or lower `vcpus` to {}", cpus.value.len())),
        );
    }
    by_node
        .into_iter()
        .map(|(node, list)| Pin {
            node,
            device: false,
            span: cpus.span,
            what: format!("CPUs {}", CpuSet::from_cpus(list)),
        })
        .collect()
}

/// The VM's pinned GPUs and the parent NICs of its SR-IOV interfaces, by node.
fn device_pins(e: &Effective<'_>, topo: &Topology<'_>, networks: &HashMap<&str, &Network>) -> Vec<Pin> {
    let host = topo.host;
    let mut pins = Vec::new();
    for addr in &e.vm.gpus {
        let Some(gpu) = host.gpus.iter().find(|g| g.address.value == addr.value) else { continue };
        if let Some(node) = topo.node_index(gpu.numa_node.value) {
            pins.push(Pin { node, device: true, span: addr.span, what: format!("GPU {}", addr.value) });
        }
    }
    for nic in e.nic_list().iter().filter(|n| n.model.value == NicModel::Sriov) {
        let Some(parent) = networks.get(nic.network.value.as_str()).and_then(|n| n.parent.as_ref()) else { continue };
        let Some(pf) = host.nics.iter().find(|n| n.name.value == parent.value) else { continue };
        if let Some(node) = pf.numa_node.as_ref().and_then(|n| topo.node_index(n.value)) {
            pins.push(Pin {
                node,
                device: true,
                span: nic.network.span,
                what: format!("the SR-IOV NIC on `{}` (a VF of `{}`)", nic.network.value, pf.name.value),
            });
        }
    }
    pins
}

fn split(e: &Effective<'_>, topo: &Topology<'_>, pins: &[Pin], policy: NumaPolicy, out: &mut Vec<Diagnostic>) {
    let host = &topo.host.name.value;
    let vm = &e.vm.name.value;
    let by_socket = policy == NumaPolicy::Socket;
    let home = &pins[0];
    let same = |p: &Pin| if by_socket { topo.socket(p.node) == topo.socket(home.node) } else { p.node == home.node };
    let Some(away) = pins.iter().find(|p| !same(p)) else { return };
    let place = |p: &Pin| {
        let node = &topo.host.numa_nodes[p.node];
        match (by_socket, topo.socket(p.node)) {
            (true, (true, s)) => format!("socket {s} (node {})", node.id.value),
            (true, (false, _)) => format!("node {}, of no declared socket", node.id.value),
            (false, _) => format!("node {}", node.id.value),
        }
    };
    let unit = if by_socket { "socket" } else { "NUMA node" };
    let message = format!(
        "VM `{vm}` has `numa: {policy}` but spans more than one {unit} of host `{host}`: {} on {}, {} on {}",
        home.what,
        place(home),
        away.what,
        place(away)
    );
    let mut d = match policy {
        NumaPolicy::Preferred => Diagnostic::warning("fabrik::numa::split", message),
        _ => Diagnostic::error("fabrik::numa::split", message),
    };
    if away.span == home.span {
        // One `cpus` list over two nodes.
        d = d.at(away.span, format!("{} on {}, {} on {}", home.what, place(home), away.what, place(away)));
    } else {
        d = d.at(away.span, format!("{} on {}", away.what, place(away)));
        d = d.also(home.span, format!("{} on {}", home.what, place(home)));
    }
    if let Some(n) = e.numa() {
        d = d.also(n.span, format!("one {unit}"));
    }
    // Devices are harder to move than CPUs: suggest the node of the first one.
    let anchor = pins.iter().find(|p| p.device).unwrap_or(home);
    let on_anchor = |ni: usize| if by_socket { topo.socket(ni) == topo.socket(anchor.node) } else { ni == anchor.node };
    let free = topo.usable_cpus(on_anchor);
    let mut help = format!("pin CPUs, GPUs and SR-IOV NICs of one {unit}");
    if !free.is_empty() {
        let name = match (by_socket, topo.socket(anchor.node)) {
            (true, (true, s)) => format!("socket {s}"),
            _ => format!("node {}", topo.host.numa_nodes[anchor.node].id.value),
        };
        help.push_str(&format!(" (the CPUs of {name} outside `reserved-cpus` are {free})"));
    }
    if by_socket && !topo.host.numa_nodes.iter().all(|n| n.socket.is_some()) {
        help.push_str("; declare `socket` on the host's NUMA nodes if some share a socket");
    }
    help.push_str(match policy {
        NumaPolicy::Preferred => ", or set `numa: none` if crossing nodes is intended",
        _ => ", or relax `numa` (`preferred`, `none`) if the VM can take the slower path across the interconnect",
    });
    out.push(d.help(help));
}

fn load_of(e: &Effective<'_>, i: usize, policy: NumaPolicy) -> Load {
    let count = f64::from(e.count());
    let dedicated_unpinned = e.vm.cpus.is_none() && e.dedicated();
    let mut load = Load {
        vm: i,
        strict: policy == NumaPolicy::Required,
        cpus: if dedicated_unpinned { f64::from(e.vcpu_count()) * count } else { 0.0 },
        memory: 0.0,
        hugepages: [0.0; 2],
    };
    match e.hugepages() {
        Some(p) => {
            load.hugepages[page_index(p.value)] =
                pages_for(e.memory_bytes(), p.value) as f64 * p.value.size().bytes() as f64 * count
        }
        None => load.memory = e.memory_bytes() as f64 * count / e.memory_overcommit(),
    }
    load
}

/// The VMs placed on one node fit it: dedicated vCPUs, memory, hugepages.
fn node_sums(
    topo: &Topology<'_>,
    ni: usize,
    pinned: f64,
    loads: &[Load],
    vms: &[Effective<'_>],
    out: &mut Vec<Diagnostic>,
) {
    let node = &topo.host.numa_nodes[ni];
    let place = format!("NUMA node {} of host `{}`", node.id.value, topo.host.name.value);
    let over = |start: f64, limit: f64, get: &dyn Fn(&Load) -> f64| {
        let mut t = Tally { total: start, crossing: None };
        for (k, l) in loads.iter().enumerate() {
            t.add(get(l), limit, k);
        }
        t
    };
    // The diagnostic for a sum that went over: at the VM that took it over, an error
    // when that VM is `required`, a warning when it is `preferred`.
    let report = |t: &Tally, code: &'static str, message: String, what: &str| {
        let l = &loads[t.crossing?];
        let e = &vms[l.vm];
        let d = if l.strict {
            Diagnostic::error(code, message)
        } else {
            Diagnostic::warning(code, format!("{message} (`numa: preferred`: it may spill to another node)"))
        };
        Some(d.at(e.vm.name.span, format!("{} takes the node past its {what}", vm_name(e))))
    };
    let usable = topo.usable[ni] as f64;
    let t = over(pinned, usable, &|l| l.cpus);
    let message = format!(
        "the VMs on {place} need {} dedicated CPUs ({} pinned by `cpus`); the node has {} outside `reserved-cpus`",
        amount(t.total),
        amount(pinned),
        amount(usable)
    );
    if let Some(d) = report(&t, "fabrik::numa::node-cpus", message, "CPUs") {
        out.push(d.also(node.cpus.span, format!("{} CPUs for VMs", amount(usable))).help(
            "move a VM to another node (pin its GPUs or CPUs there), lower its `vcpus`, or relax `numa` to `preferred`",
        ));
    }
    let free = topo.free_memory(ni);
    let t = over(0.0, free, &|l| l.memory);
    let message = format!(
        "the VMs on {place} need {} of memory outside hugepages; the node has {} outside its pools",
        bytes(t.total),
        bytes(free)
    );
    if let Some(d) = report(&t, "fabrik::numa::node-memory", message, "memory") {
        out.push(
            d.also(node.memory.span, format!("{} outside hugepage pools", bytes(free))).help(
                "move a VM to another node, lower its `memory`, back it with hugepages, or shrink the node's pools",
            ),
        );
    }
    for page in [PageSize::Size2M, PageSize::Size1G] {
        let pool = topo.pool(ni, page);
        let size = page.size().bytes() as f64;
        let t = over(0.0, pool, &|l| l.hugepages[page_index(page)]);
        let message = format!(
            "the VMs on {place} need {} {page} hugepages ({}); the node's pool has {}",
            amount(t.total / size),
            bytes(t.total),
            amount(pool / size)
        );
        let Some(d) = report(&t, "fabrik::numa::node-hugepages", message, &format!("{page} pool")) else { continue };
        let d = match node.hugepages.iter().find(|(p, _)| p.value == page) {
            Some((p, n)) => d.also(p.span.join(n.span), format!("{} pages of {page}", amount(pool / size))),
            None => d.also(node.span, format!("no {page} pool")),
        };
        out.push(d.help(format!("grow the node's `{page}` pool, move a VM to another node, or lower its `memory`")));
    }
}

/// A VM without pins is placed later; with `required` (or `preferred`) it must at least
/// fit the largest node of its host.
fn fits_some_node(e: &Effective<'_>, topo: &Topology<'_>, load: &Load, out: &mut Vec<Diagnostic>) {
    let n = topo.host.numa_nodes.len();
    if n == 0 {
        return;
    }
    let count = f64::from(e.count());
    let host = &topo.host.name.value;
    let policy = e.numa_policy();
    let best = |f: &dyn Fn(usize) -> f64| (0..n).map(f).fold(0.0, f64::max);
    let mut finding = |code: &'static str, need: String, have: String, help: &str| {
        let message = format!(
            "VM `{}` needs {need} on one NUMA node (`numa: {policy}`), but the largest node of host `{host}` has {have}",
            e.vm.name.value
        );
        let d = if load.strict { Diagnostic::error(code, message) } else { Diagnostic::warning(code, message) };
        let mut d = d.at(e.vm.name.span, format!("needs {need} on one node"));
        if let Some(p) = e.numa() {
            d = d.also(p.span, "one NUMA node");
        }
        out.push(d.help(help.to_string()));
    };
    let cpus = load.cpus / count;
    let most = best(&|ni| topo.usable[ni] as f64);
    if super::capacity::exceeds(cpus, most) {
        finding(
            "fabrik::numa::node-cpus",
            format!("{} dedicated vCPUs", amount(cpus)),
            format!("{} CPUs outside `reserved-cpus`", amount(most)),
            "lower `vcpus` to fit one node, or relax `numa` (`none` lets the VM span nodes)",
        );
    }
    let memory = load.memory / count;
    let most = best(&|ni| topo.free_memory(ni));
    if super::capacity::exceeds(memory, most) {
        finding(
            "fabrik::numa::node-memory",
            format!("{} of memory", bytes(memory)),
            format!("{} outside its hugepage pools", bytes(most)),
            "lower `memory` to fit one node, back it with hugepages, or relax `numa` (`none` lets the VM span nodes)",
        );
    }
    for page in [PageSize::Size2M, PageSize::Size1G] {
        let need = load.hugepages[page_index(page)] / count;
        let most = best(&|ni| topo.pool(ni, page));
        if need > 0.0 && super::capacity::exceeds(need, most) {
            let size = page.size().bytes() as f64;
            finding(
                "fabrik::numa::node-hugepages",
                format!("{} {page} hugepages", amount(need / size)),
                format!("{} in its pool", amount(most / size)),
                "lower `memory` to fit one node's pool, grow the pools, or relax `numa` (`none` lets the VM span nodes)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::capacity::tests::spec;
    use crate::diag::Severity;

    const HOST: &str = "version: 1
hosts:
  - name: gpu01
    uri: qemu:///system
    numa-nodes:
      - { id: 0, cpus: 0-15, memory: 256GiB, hugepages: { 1G: 128 } }
      - { id: 1, cpus: 16-31, memory: 256GiB, hugepages: { 1G: 128 } }
    reserved-cpus: 0-1,16-17
    gpus:
      - { address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0, mode: passthrough }
vms:
";

    fn run(vms: &str) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        check(&spec(&format!("{HOST}{vms}")), &mut out);
        out
    }

    /// (code, severity, the VM named by the primary label).
    fn findings(out: &[Diagnostic]) -> Vec<(&str, Severity, String)> {
        out.iter().map(|d| (d.code, d.severity, d.primary.as_ref().unwrap().text.clone())).collect()
    }

    #[test]
    fn required_vms_are_counted_before_preferred_ones() {
        // `a` (preferred) comes first, but `b` and `c` cannot spill: 96 + 64 > 128 pages
        // is theirs alone, an error at `c`.
        let out = run("  - { name: a, tenant: t, host: gpu01, numa: preferred, cpus: 2-3, vcpus: 2, memory: 64GiB, hugepages: 1G }
  - { name: b, tenant: t, host: gpu01, numa: required, cpus: 4-5, vcpus: 2, memory: 96GiB, hugepages: 1G }
  - { name: c, tenant: t, host: gpu01, numa: required, cpus: 6-7, vcpus: 2, memory: 64GiB, hugepages: 1G }
");
        let f = findings(&out);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].0, f[0].1), ("fabrik::numa::node-hugepages", Severity::Error));
        assert!(f[0].2.contains("`c`"), "{f:?}");
        assert!(out[0].message.contains("need 224 1G hugepages"), "{}", out[0].message);
    }

    #[test]
    fn a_preferred_vm_that_overfills_a_node_is_a_warning() {
        let out = run("  - { name: a, tenant: t, host: gpu01, numa: preferred, cpus: 2-3, vcpus: 2, memory: 64GiB, hugepages: 1G }
  - { name: b, tenant: t, host: gpu01, numa: required, cpus: 4-5, vcpus: 2, memory: 96GiB, hugepages: 1G }
");
        let f = findings(&out);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].0, f[0].1), ("fabrik::numa::node-hugepages", Severity::Warning));
        assert!(f[0].2.contains("`a`"), "{f:?}");
    }

    #[test]
    fn cpus_pinned_by_any_vm_are_taken_from_the_node() {
        // `pinned` has no NUMA policy, but its 10 CPUs of node 0 are gone all the same:
        // node 0 has 14 outside reserved-cpus, and `gpu-vm` needs 6 dedicated more.
        let out = run("  - { name: pinned, tenant: t, host: gpu01, cpus: 2-11, vcpus: 10, memory: 8GiB }
  - name: gpu-vm
    tenant: t
    host: gpu01
    numa: required
    cpu-policy: dedicated
    gpus: [\"0000:1b:00.0\"]
    gpu: { model: H200-141GB }
    vcpus: 6
    memory: 8GiB
");
        let f = findings(&out);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, "fabrik::numa::node-cpus");
        assert!(out[0].message.contains("need 16 dedicated CPUs (10 pinned by `cpus`)"), "{}", out[0].message);
    }

    #[test]
    fn vms_on_different_nodes_do_not_add_up() {
        let out = run("  - { name: a, tenant: t, host: gpu01, numa: required, cpus: 2-9, vcpus: 8, memory: 100GiB, hugepages: 1G }
  - { name: b, tenant: t, host: gpu01, numa: required, cpus: 18-25, vcpus: 8, memory: 100GiB, hugepages: 1G }
");
        assert!(out.is_empty(), "{:?}", findings(&out));
    }

    #[test]
    fn a_split_vm_is_not_counted_on_either_node() {
        let out = run("  - { name: a, tenant: t, host: gpu01, numa: required, cpus: '14-15,18-19', vcpus: 4, memory: 200GiB, hugepages: 1G }
");
        let f = findings(&out);
        assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), ["fabrik::numa::split"], "{f:?}");
    }

    #[test]
    fn replicas_multiply_what_a_placed_vm_takes() {
        let out = run("  - name: nb
    tenant: t
    host: gpu01
    replicas: 3
    numa: required
    gpus: [\"0000:1b:00.0\"]
    gpu: { model: H200-141GB }
    vcpus: 2
    memory: 48GiB
");
        let f = findings(&out);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, "fabrik::numa::node-memory");
        assert!(out[0].message.contains("need 144GiB"), "{}", out[0].message);
    }
}
