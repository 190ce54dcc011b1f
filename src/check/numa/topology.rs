//! A host's NUMA topology as the checks need it, and the checks of what the host
//! declares: nodes' CPUs disjoint, devices on nodes that exist, reserved CPUs the host's,
//! hugepage pools within their node's memory.

use crate::check::capacity::bytes;
use crate::diag::Diagnostic;
use crate::spec::model::Host;
use crate::spec::source::Spanned;
use crate::spec::types::{CpuSet, PageSize};

/// What the checks need to know of a host, built once.
pub(super) struct Topology<'a> {
    pub host: &'a Host,
    /// Node index (into `host.numa_nodes`) of each CPU, by CPU number.
    cpu_node: Vec<Option<u16>>,
    /// Every CPU some node lists.
    pub all: CpuSet,
    /// Per node: its CPUs outside `reserved-cpus`.
    pub usable: Vec<u64>,
}

impl<'a> Topology<'a> {
    pub fn of(host: &'a Host, out: &mut Vec<Diagnostic>) -> Topology<'a> {
        let max = host.numa_nodes.iter().filter_map(|n| n.cpus.value.cpus().last()).max().copied();
        let mut cpu_node: Vec<Option<u16>> = vec![None; max.map_or(0, |m| m as usize + 1)];
        for (ni, node) in host.numa_nodes.iter().enumerate() {
            // CPUs this node shares with earlier ones, by the earlier node.
            let mut shared: Vec<(usize, Vec<u32>)> = Vec::new();
            for &cpu in node.cpus.value.cpus() {
                match cpu_node[cpu as usize] {
                    Some(other) => match shared.iter_mut().find(|(o, _)| *o == other as usize) {
                        Some((_, cpus)) => cpus.push(cpu),
                        None => shared.push((other as usize, vec![cpu])),
                    },
                    None => cpu_node[cpu as usize] = Some(ni as u16),
                }
            }
            for (other, cpus) in shared {
                let first = &host.numa_nodes[other];
                out.push(
                    Diagnostic::error(
                        "fabrik::numa::node-overlap",
                        format!(
                            "NUMA nodes {} and {} of host `{}` both list CPUs {}",
                            first.id.value,
                            node.id.value,
                            host.name.value,
                            CpuSet::from_cpus(cpus)
                        ),
                    )
                    .at(node.cpus.span, format!("node {} lists them again", node.id.value))
                    .also(first.cpus.span, format!("node {} lists them", first.id.value))
                    .help(
                        "a CPU belongs to one NUMA node: give each node the CPUs the host really puts there \
                         (`lscpu -p=cpu,node` shows them)",
                    ),
                );
            }
        }
        let all = CpuSet::from_cpus((0..cpu_node.len() as u32).filter(|&c| cpu_node[c as usize].is_some()).collect());
        let reserved = host.reserved_cpus.as_ref().map(|r| &r.value);
        let usable = (0..host.numa_nodes.len())
            .map(|ni| {
                let on_node = cpu_node.iter().enumerate().filter(|(_, n)| **n == Some(ni as u16));
                on_node.filter(|(c, _)| !reserved.is_some_and(|r| r.contains(*c as u32))).count() as u64
            })
            .collect();
        let topo = Topology { host, cpu_node, all, usable };
        topo.check_declarations(out);
        topo
    }

    pub fn node_of_cpu(&self, cpu: u32) -> Option<usize> {
        self.cpu_node.get(cpu as usize).copied().flatten().map(usize::from)
    }

    /// The CPUs outside `reserved-cpus` of the nodes `on` picks.
    pub fn usable_cpus(&self, on: impl Fn(usize) -> bool) -> CpuSet {
        let cpus = self.all.cpus().iter().copied();
        CpuSet::from_cpus(cpus.filter(|&c| self.node_of_cpu(c).is_some_and(&on) && !self.is_reserved(c)).collect())
    }

    pub fn node_index(&self, id: u32) -> Option<usize> {
        self.host.numa_nodes.iter().position(|n| n.id.value == id)
    }

    pub fn is_reserved(&self, cpu: u32) -> bool {
        self.host.reserved_cpus.as_ref().is_some_and(|r| r.value.contains(cpu))
    }

    fn node_ids(&self) -> String {
        let ids: Vec<String> = self.host.numa_nodes.iter().map(|n| n.id.value.to_string()).collect();
        ids.join(", ")
    }

    /// A node's hugepage pool of one size, in bytes.
    pub fn pool(&self, ni: usize, page: PageSize) -> f64 {
        let node = &self.host.numa_nodes[ni];
        node.hugepages.iter().filter(|(p, _)| p.value == page).map(|(_, n)| n.value as f64).sum::<f64>()
            * page.size().bytes() as f64
    }

    /// A node's memory outside its hugepage pools.
    pub fn free_memory(&self, ni: usize) -> f64 {
        let node = &self.host.numa_nodes[ni];
        let pools: f64 = [PageSize::Size2M, PageSize::Size1G].into_iter().map(|p| self.pool(ni, p)).sum();
        (node.memory.value.bytes() as f64 - pools).max(0.0)
    }

    /// The socket of a node; a node that does not say counts as a socket of its own.
    pub fn socket(&self, ni: usize) -> (bool, u32) {
        let node = &self.host.numa_nodes[ni];
        match &node.socket {
            Some(s) => (true, s.value),
            None => (false, node.id.value),
        }
    }

    fn check_declarations(&self, out: &mut Vec<Diagnostic>) {
        let host = self.host;
        let name = &host.name.value;
        if let Some(reserved) = &host.reserved_cpus {
            let missing: Vec<u32> =
                reserved.value.cpus().iter().copied().filter(|&c| self.node_of_cpu(c).is_none()).collect();
            if !missing.is_empty() {
                out.push(
                    Diagnostic::error(
                        "fabrik::numa::unknown-cpu",
                        format!(
                            "host `{name}` reserves CPUs {}, which none of its NUMA nodes lists",
                            CpuSet::from_cpus(missing)
                        ),
                    )
                    .at(reserved.span, "not CPUs of this host")
                    .help(format!(
                        "reserve CPUs the host has (its NUMA nodes list {}), or add the missing ones to their node",
                        self.all
                    )),
                );
            }
        }
        let unknown = |what: String, node: &Spanned<u32>, sysfs: String| {
            Diagnostic::error(
                "fabrik::numa::unknown-node",
                format!("{what} of host `{name}` is on NUMA node {}, which the host does not declare", node.value),
            )
            .at(node.span, "no such NUMA node on this host")
            .also(host.name.span, format!("NUMA nodes {}", self.node_ids()))
            .help(format!("fix `numa-node` ({sysfs} gives it), or declare NUMA node {} under `numa-nodes`", node.value))
        };
        for g in &host.gpus {
            if self.node_index(g.numa_node.value).is_none() {
                out.push(unknown(
                    format!("GPU {}", g.address.value),
                    &g.numa_node,
                    format!("`/sys/bus/pci/devices/{}/numa_node`", g.address.value),
                ));
            }
        }
        for nic in &host.nics {
            if let Some(n) = &nic.numa_node
                && self.node_index(n.value).is_none()
            {
                out.push(unknown(
                    format!("NIC `{}`", nic.name.value),
                    n,
                    format!("`/sys/class/net/{}/device/numa_node`", nic.name.value),
                ));
            }
        }
        for node in &host.numa_nodes {
            let Some(first) = node.hugepages.first() else { continue };
            let pooled: f64 = node.hugepages.iter().map(|(p, n)| n.value as f64 * p.value.size().bytes() as f64).sum();
            let memory = node.memory.value.bytes() as f64;
            if pooled > memory {
                let last = &node.hugepages[node.hugepages.len() - 1];
                out.push(
                    Diagnostic::error(
                        "fabrik::numa::node-pools",
                        format!(
                            "NUMA node {} of host `{name}` has {} in hugepage pools but only {} of memory",
                            node.id.value,
                            bytes(pooled),
                            node.memory.value
                        ),
                    )
                    .at(first.0.span.join(last.1.span), format!("{} of hugepages", bytes(pooled)))
                    .also(node.memory.span, "the node's memory")
                    .help(
                        "hugepages come out of the node's memory: shrink the pools, and leave some memory for \
                         the host itself",
                    ),
                );
            }
        }
    }
}
