//! A `numa: required` VM that names no host: placement puts it on one node of one of its
//! tenant's hosts, so at least one node must hold its dedicated vCPUs, memory and
//! hugepages on its own, or the plan fails on placement. Nodes are taken empty: what
//! other VMs take first is placement's to find.

use std::collections::HashMap;

use super::{Load, Topology};
use crate::check::capacity::{amount, bytes, exceeds, page_index};
use crate::diag::Diagnostic;
use crate::spec::effective::Effective;
use crate::spec::types::PageSize;

/// Whether some node of a tenant's hosts holds a VM of a shape, asked once per tenant
/// and shape: VMs of one template share it, so the work does not grow with VMs × hosts.
pub(super) type Known<'a> = HashMap<(&'a str, [u64; 4]), bool>;

pub(super) fn check<'a>(
    e: &Effective<'a>,
    load: &Load,
    topologies: &[Topology<'_>],
    candidates: &[usize],
    known: &mut Known<'a>,
    out: &mut Vec<Diagnostic>,
) {
    if candidates.is_empty() || e.count() == 0 {
        return; // no host at all is the isolation and placement checks' to say
    }
    let count = f64::from(e.count());
    let need = Need {
        cpus: load.cpus / count,
        memory: load.memory / count,
        pages: [PageSize::Size2M, PageSize::Size1G].map(|p| (p, load.hugepages[page_index(p)] / count)),
    };
    let shape = [need.cpus, need.memory, need.pages[0].1, need.pages[1].1].map(f64::to_bits);
    let fits_one = *known
        .entry((e.vm.tenant.value.as_str(), shape))
        .or_insert_with(|| candidates.iter().any(|&h| fits(&topologies[h], &need)));
    if fits_one {
        return;
    }
    let mut what = Vec::new();
    if need.cpus > 0.0 {
        what.push(format!("{} dedicated vCPUs", amount(need.cpus)));
    }
    if need.memory > 0.0 {
        what.push(format!("{} of memory", bytes(need.memory)));
    }
    for (page, b) in need.pages {
        if b > 0.0 {
            what.push(format!("{} {page} hugepages", amount(b / page.size().bytes() as f64)));
        }
    }
    let largest: Vec<String> = candidates.iter().map(|&h| largest(&topologies[h])).collect();
    let tenant = &e.vm.tenant.value;
    let mut d = Diagnostic::error(
        "fabrik::numa::no-node",
        format!(
            "VM `{}` needs {} on one NUMA node (`numa: required`), but no node of tenant `{tenant}`'s hosts has that much",
            e.vm.name.value,
            what.join(", ")
        ),
    );
    d = match e.numa() {
        Some(p) => d.at(p.span, "on one node").also(e.vm.name.span, "placed on a host of its tenant"),
        None => d.at(e.vm.name.span, "on one node"),
    };
    out.push(d.help(format!(
        "{}\nlower `vcpus` or `memory` to fit one node, give the tenant a host with larger nodes, or relax `numa` (`preferred` may spill to another node)",
        largest.join("\n")
    )));
}

/// What one VM takes from the node it lands on.
struct Need {
    cpus: f64,
    memory: f64,
    pages: [(PageSize, f64); 2],
}

fn fits(topo: &Topology<'_>, need: &Need) -> bool {
    (0..topo.host.numa_nodes.len()).any(|ni| {
        !exceeds(need.cpus, topo.usable[ni] as f64)
            && !exceeds(need.memory, topo.free_memory(ni))
            && need.pages.iter().all(|&(p, b)| b == 0.0 || !exceeds(b, topo.pool(ni, p)))
    })
}

/// "gpu01: at most 28 CPUs, 200GiB of memory on a node".
fn largest(topo: &Topology<'_>) -> String {
    let n = topo.host.numa_nodes.len();
    let cpus = (0..n).map(|ni| topo.usable[ni]).max().unwrap_or(0);
    let memory = (0..n).map(|ni| topo.free_memory(ni)).fold(0.0, f64::max);
    format!("{}: at most {cpus} CPUs and {} outside hugepages on a node", topo.host.name.value, bytes(memory))
}
