//! The dependency graph of a [`Desired`]: resources as nodes, edges meaning "must
//! exist first" (an edge `a → b` says `a` needs `b`).
//!
//! vm → volume, network, gpu, mig instance, hugepages; network → link (its bridge and
//! the bridge's VXLAN or VLAN port), and → the VFs of
//! its physical function (SR-IOV, InfiniBand partitions); link (VXLAN,
//! VLAN) → its bridge; mig → gpu; volume → pool and → its base-image volume. Creation
//! order is topological, ties broken by resource id so it is the same every run;
//! deletion order is its reverse; [`Graph::levels`] groups the nodes that are
//! independent of one another. A cycle, or an edge to a resource nothing declares, is a
//! diagnostic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use petgraph::Direction;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::Serialize;

use crate::desired::{Desired, DesiredHost, GpuSetup, ResourceId, ResourceKind};
use crate::diag::Diagnostic;

pub mod dot;

#[derive(Clone, Debug)]
#[must_use]
pub struct Graph {
    graph: DiGraph<ResourceId, ()>,
    /// The nodes sorted by id, for lookups by binary search: each id is held once, in
    /// the graph (a plan of 10,000 hosts has ~600,000 of them).
    index: Vec<NodeIndex>,
}

impl Graph {
    /// The graph of a desired state. The nodes come first, then each host's edges as
    /// they are made: the edges of 10,000 hosts are never held as ids all at once.
    pub fn of(d: &Desired) -> Result<Graph, Vec<Diagnostic>> {
        let mut g = Graph::with_nodes(node_ids(d));
        let mut diags = Vec::new();
        for h in &d.hosts {
            for (from, to) in host_edges(h) {
                g.add_edge(from, to, &mut diags);
            }
        }
        g.graph.shrink_to_fit();
        g.checked(diags)
    }

    /// A graph of these nodes and "needs" edges. Fails on a cycle or on an edge to an
    /// unknown node.
    pub fn from_edges(nodes: Vec<ResourceId>, edges: Vec<(ResourceId, ResourceId)>) -> Result<Graph, Vec<Diagnostic>> {
        let mut g = Graph::with_nodes(nodes);
        let mut diags = Vec::new();
        for (from, to) in edges {
            g.add_edge(from, to, &mut diags);
        }
        g.checked(diags)
    }

    /// The graph of these nodes without edges; the first of equal ids is the node.
    fn with_nodes(nodes: Vec<ResourceId>) -> Graph {
        // A stable sort keeps equal ids in the given order.
        let mut sorted: Vec<usize> = (0..nodes.len()).collect();
        sorted.sort_by(|&a, &b| nodes[a].cmp(&nodes[b]));
        sorted.dedup_by(|later, first| nodes[*later] == nodes[*first]);
        let mut kept = vec![false; nodes.len()];
        for &i in &sorted {
            kept[i] = true;
        }
        let mut graph = DiGraph::with_capacity(sorted.len(), 0);
        let mut at = vec![NodeIndex::end(); nodes.len()];
        for (i, id) in nodes.into_iter().enumerate() {
            if kept[i] {
                at[i] = graph.add_node(id);
            }
        }
        let index = sorted.into_iter().map(|i| at[i]).collect();
        Graph { graph, index }
    }

    /// Adds `from → to` once; an error when `from` is a node and `to` is not.
    fn add_edge(&mut self, from: ResourceId, to: ResourceId, diags: &mut Vec<Diagnostic>) {
        match (self.node(&from), self.node(&to)) {
            (Some(a), Some(b)) => {
                if self.graph.find_edge(a, b).is_none() {
                    self.graph.add_edge(a, b, ());
                }
            }
            (Some(_), None) => diags.push(
                Diagnostic::error(
                    "fabrik::graph::missing-dependency",
                    format!("`{from}` needs `{to}`, which nothing declares"),
                )
                .help(format!("declare `{}` on host `{}`, or move what needs it", to.name, to.host)),
            ),
            (None, _) => {}
        }
    }

    /// The graph, or the errors found building it and its cycles.
    fn checked(self, mut diags: Vec<Diagnostic>) -> Result<Graph, Vec<Diagnostic>> {
        diags.extend(self.cycles());
        if diags.is_empty() { Ok(self) } else { Err(diags) }
    }

    /// The node of `id`, if the graph has it.
    fn node(&self, id: &ResourceId) -> Option<NodeIndex> {
        self.index.binary_search_by(|&n| self.graph[n].cmp(id)).ok().map(|i| self.index[i])
    }

    fn cycles(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for scc in tarjan_scc(&self.graph) {
            let looped = scc.len() > 1 || self.graph.contains_edge(scc[0], scc[0]);
            if !looped {
                continue;
            }
            let mut ids: Vec<&ResourceId> = scc.iter().map(|&n| &self.graph[n]).collect();
            ids.sort();
            let path: Vec<String> = ids.iter().map(ToString::to_string).chain([ids[0].to_string()]).collect();
            out.push(
                Diagnostic::error("fabrik::graph::cycle", format!("dependency cycle: {}", path.join(" → ")))
                    .help("each of these resources needs another to exist first; break one of the dependencies"),
            );
        }
        out.sort_by(|a, b| a.message.cmp(&b.message));
        out
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// Every node, sorted.
    pub fn nodes(&self) -> impl Iterator<Item = &ResourceId> {
        self.index.iter().map(|&n| &self.graph[n])
    }

    /// Every edge (needer, needed), sorted.
    pub fn edges(&self) -> Vec<(&ResourceId, &ResourceId)> {
        let mut e: Vec<_> =
            self.graph.edge_references().map(|e| (&self.graph[e.source()], &self.graph[e.target()])).collect();
        e.sort();
        e
    }

    /// What `id` needs, sorted.
    pub fn dependencies(&self, id: &ResourceId) -> Vec<&ResourceId> {
        self.neighbors(id, Direction::Outgoing)
    }

    /// What needs `id`, sorted.
    pub fn dependents(&self, id: &ResourceId) -> Vec<&ResourceId> {
        self.neighbors(id, Direction::Incoming)
    }

    fn neighbors(&self, id: &ResourceId, dir: Direction) -> Vec<&ResourceId> {
        let Some(ix) = self.node(id) else { return Vec::new() };
        let mut v: Vec<&ResourceId> = self.graph.neighbors_directed(ix, dir).map(|n| &self.graph[n]).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Creation order: each resource after everything it needs; among the ready ones,
    /// the smallest id first (kind, then host, then name, in natural order: `vm-9`
    /// before `vm-10`).
    pub fn creation_order(&self) -> Vec<&ResourceId> {
        let mut missing: Vec<usize> =
            self.graph.node_indices().map(|n| self.graph.neighbors_directed(n, Direction::Outgoing).count()).collect();
        let mut ready: BinaryHeap<Reverse<(Natural<'_>, NodeIndex)>> = self
            .graph
            .node_indices()
            .filter(|n| missing[n.index()] == 0)
            .map(|n| Reverse((Natural(&self.graph[n]), n)))
            .collect();
        let mut out = Vec::with_capacity(self.len());
        while let Some(Reverse((Natural(id), n))) = ready.pop() {
            out.push(id);
            for m in self.graph.neighbors_directed(n, Direction::Incoming) {
                missing[m.index()] -= 1;
                if missing[m.index()] == 0 {
                    ready.push(Reverse((Natural(&self.graph[m]), m)));
                }
            }
        }
        out
    }

    /// Deletion order: dependents before what they need.
    pub fn deletion_order(&self) -> Vec<&ResourceId> {
        let mut v = self.creation_order();
        v.reverse();
        v
    }

    /// Waves of creation: every resource in a wave needs only resources of earlier
    /// waves, so the members of one wave are independent and may be made in parallel.
    pub fn levels(&self) -> Vec<Vec<&ResourceId>> {
        let mut level = vec![0usize; self.len()];
        for id in self.creation_order() {
            let Some(n) = self.node(id) else { continue };
            level[n.index()] =
                self.graph.neighbors_directed(n, Direction::Outgoing).map(|m| level[m.index()] + 1).max().unwrap_or(0);
        }
        let mut out: Vec<Vec<&ResourceId>> = Vec::new();
        for &n in &self.index {
            let (id, l) = (&self.graph[n], level[n.index()]);
            if out.len() <= l {
                out.resize_with(l + 1, Vec::new);
            }
            out[l].push(id);
        }
        out
    }

    /// The graph as data: nodes in creation order, edges, and the waves.
    pub fn to_json(&self) -> GraphJson<'_> {
        GraphJson {
            nodes: self.creation_order(),
            edges: self.edges().into_iter().map(|(from, to)| JsonEdge { from, to }).collect(),
            levels: self.levels(),
        }
    }
}

#[derive(Serialize)]
pub struct GraphJson<'a> {
    pub nodes: Vec<&'a ResourceId>,
    pub edges: Vec<JsonEdge<'a>>,
    pub levels: Vec<Vec<&'a ResourceId>>,
}

#[derive(Serialize)]
pub struct JsonEdge<'a> {
    /// The resource that needs `to`.
    pub from: &'a ResourceId,
    pub to: &'a ResourceId,
}

/// Every resource of `d`.
fn node_ids(d: &Desired) -> Vec<ResourceId> {
    let mut nodes = Vec::new();
    for h in &d.hosts {
        nodes.extend(h.hugepages.iter().map(|p| p.id.clone()));
        for g in &h.gpus {
            nodes.push(g.id.clone());
            if let GpuSetup::Mig { instances } = &g.setup {
                nodes.extend(instances.iter().map(|m| m.id.clone()));
            }
        }
        nodes.extend(h.links.iter().map(|l| l.id.clone()));
        nodes.extend(h.vfs.iter().map(|v| v.id.clone()));
        nodes.extend(h.networks.iter().map(|n| n.id.clone()));
        nodes.extend(h.pools.iter().map(|p| p.id.clone()));
        nodes.extend(h.volumes.iter().map(|v| v.id.clone()));
        nodes.extend(h.vms.iter().map(|vm| vm.id.clone()));
    }
    nodes
}

/// The "needs" edges of one host's resources.
fn host_edges(h: &DesiredHost) -> Vec<(ResourceId, ResourceId)> {
    let mut edges = Vec::new();
    let host = h.name.as_str();
    for g in &h.gpus {
        if let GpuSetup::Mig { instances } = &g.setup {
            for m in instances {
                edges.push((m.id.clone(), g.id.clone()));
            }
        }
    }
    for l in &h.links {
        if let Some(master) = &l.master {
            edges.push((l.id.clone(), ResourceId::new(ResourceKind::Link, host, master)));
        }
    }
    for n in &h.networks {
        if let Some(bridge) = &n.bridge {
            edges.push((n.id.clone(), ResourceId::new(ResourceKind::Link, host, bridge)));
            // And its uplink ports: a VM is not started on a bridge that reaches nothing
            // because its VXLAN or VLAN device could not be made.
            for port in h.links.iter().filter(|l| l.master.as_deref() == Some(bridge.as_str())) {
                edges.push((n.id.clone(), port.id.clone()));
            }
        }
        // A network handing out VFs needs them made on its physical function.
        if let Some(vfs) = n.pf.as_ref().and_then(|pf| h.vfs.iter().find(|v| &v.nic == pf)) {
            edges.push((n.id.clone(), vfs.id.clone()));
        }
    }
    for v in &h.volumes {
        edges.push((v.id.clone(), ResourceId::new(ResourceKind::Pool, host, &v.pool)));
        if let Some(img) = &v.image
            && (img.pool != v.pool || img.volume != v.name)
        {
            edges.push((v.id.clone(), volume(host, &img.pool, &img.volume)));
        }
    }
    for vm in &h.vms {
        let mut need = |to: ResourceId| edges.push((vm.id.clone(), to));
        for disk in &vm.disks {
            need(volume(host, &disk.pool, &disk.volume));
        }
        if let Some(seed) = &vm.seed {
            need(volume(host, &seed.pool, &seed.volume));
        }
        for nic in &vm.nics {
            need(ResourceId::new(ResourceKind::Network, host, &nic.network));
        }
        for g in vm.gpus.iter().chain(&vm.time_sliced) {
            need(ResourceId::new(ResourceKind::Gpu, host, g.to_string()));
        }
        for m in &vm.mig {
            need(m.clone());
        }
        if let Some(size) = vm.hugepages {
            let mut vm_nodes: Vec<u32> = vm.numa_cells.iter().map(|c| c.host_node).collect();
            vm_nodes.extend(vm.numa_node);
            for p in h.hugepages.iter().filter(|p| p.size == size) {
                if vm_nodes.is_empty() || vm_nodes.contains(&p.numa_node) {
                    need(p.id.clone());
                }
            }
        }
    }
    edges
}

fn volume(host: &str, pool: &str, name: &str) -> ResourceId {
    ResourceId::new(ResourceKind::Volume, host, format!("{pool}/{name}"))
}

#[cfg(test)]
mod tests;

/// A resource id ordered by [`ResourceId::natural_cmp`].
#[derive(PartialEq, Eq)]
struct Natural<'a>(&'a ResourceId);

impl Ord for Natural<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.natural_cmp(other.0)
    }
}

impl PartialOrd for Natural<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
