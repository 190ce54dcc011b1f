//! The graph as Graphviz a person can read: one cluster per host, nodes coloured and
//! shaped by kind and labelled with their name (the full id is the tooltip), optionally
//! narrowed to some hosts, tenants or kinds.

use std::collections::{BTreeMap, BTreeSet};

use super::Graph;
use crate::desired::{Desired, ResourceId, ResourceKind};

/// Which part of the graph to draw. Empty lists draw everything; filters combine.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub hosts: Vec<String>,
    /// A tenant's VMs and networks, and everything they need.
    pub tenants: Vec<String>,
    pub kinds: Vec<ResourceKind>,
}

/// Which tenant owns each resource a tenant owns directly (VMs, tenant networks).
pub fn owners(d: &Desired) -> BTreeMap<ResourceId, String> {
    let mut out = BTreeMap::new();
    for h in &d.hosts {
        for vm in &h.vms {
            out.insert(vm.id.clone(), vm.tenant.clone());
        }
        for n in &h.networks {
            if let Some(t) = &n.tenant {
                out.insert(n.id.clone(), t.clone());
            }
        }
    }
    out
}

/// Fill colour and shape per kind; colours from ColorBrewer's Pastel1/Set3 so labels
/// stay readable in black.
fn look(kind: ResourceKind) -> (&'static str, &'static str) {
    match kind {
        ResourceKind::Host => ("#d9d9d9", "house"),
        ResourceKind::Gpu => ("#b3de69", "box3d"),
        ResourceKind::Mig => ("#ccebc5", "component"),
        ResourceKind::Hugepages => ("#fdb462", "note"),
        ResourceKind::Vfs => ("#bebada", "septagon"),
        ResourceKind::Link => ("#80b1d3", "cds"),
        ResourceKind::Network => ("#8dd3c7", "ellipse"),
        ResourceKind::Pool => ("#ffffb3", "cylinder"),
        ResourceKind::Volume => ("#fccde5", "cylinder"),
        ResourceKind::Vm => ("#fb8072", "box"),
        ResourceKind::Partitions => ("#d9d9d9", "tab"),
    }
}

const ALL_KINDS: [ResourceKind; 11] = ResourceKind::ALL;

/// A kind from its word in ids (`vm`, `net`, `volume`, …).
pub fn kind_of_word(word: &str) -> Option<ResourceKind> {
    ALL_KINDS.into_iter().find(|k| k.word() == word)
}

/// Every kind's word, for help and errors.
pub fn kind_words() -> Vec<&'static str> {
    ALL_KINDS.iter().map(|k| k.word()).collect()
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Graph {
    /// The nodes `view` keeps: by host and kind, and for tenants their resources and
    /// everything those need, transitively.
    pub fn visible(&self, view: &View, owners: &BTreeMap<ResourceId, String>) -> BTreeSet<&ResourceId> {
        let mut keep: BTreeSet<&ResourceId> = self.nodes().collect();
        if !view.tenants.is_empty() {
            let mut reached: BTreeSet<&ResourceId> = BTreeSet::new();
            let mut todo: Vec<&ResourceId> =
                owners.iter().filter(|(_, t)| view.tenants.contains(t)).map(|(id, _)| id).collect();
            let needs: Vec<(&ResourceId, &ResourceId)> = self.edges();
            while let Some(id) = todo.pop() {
                if reached.insert(id) {
                    todo.extend(needs.iter().filter(|(from, _)| *from == id).map(|(_, to)| *to));
                }
            }
            keep.retain(|id| reached.contains(id));
        }
        if !view.hosts.is_empty() {
            keep.retain(|id| view.hosts.contains(&id.host));
        }
        if !view.kinds.is_empty() {
            keep.retain(|id| view.kinds.contains(&id.kind));
        }
        keep
    }

    /// Graphviz: one cluster per host, edges from needer to needed, a legend of the kinds
    /// drawn.
    pub fn to_dot_view(&self, view: &View, owners: &BTreeMap<ResourceId, String>) -> String {
        let keep = self.visible(view, owners);
        let mut out = String::from(
            "digraph fabrik {\n  rankdir=LR;\n  newrank=true;\n  node [shape=box, style=\"filled,rounded\", fontname=\"monospace\", fontsize=10];\n  edge [color=\"#666666\", arrowsize=0.6];\n",
        );
        let mut by_host: BTreeMap<&str, Vec<&ResourceId>> = BTreeMap::new();
        for id in &keep {
            by_host.entry(id.host.as_str()).or_default().push(id);
        }
        for (host, ids) in &by_host {
            out.push_str(&format!(
                "  subgraph {} {{\n    label={};\n    style=\"rounded\";\n    color=\"#999999\";\n",
                quote(&format!("cluster_{host}")),
                quote(&format!("host {host}"))
            ));
            for id in ids {
                let (color, shape) = look(id.kind);
                let owner = owners.get(*id).map(|t| format!("\\ntenant {t}")).unwrap_or_default();
                out.push_str(&format!(
                    "    {} [label=\"{}\\n{}{owner}\", shape={shape}, fillcolor=\"{color}\", tooltip={}];\n",
                    quote(&id.to_string()),
                    id.kind.word(),
                    id.name.replace('\\', "\\\\").replace('"', "\\\""),
                    quote(&id.to_string()),
                ));
            }
            out.push_str("  }\n");
        }
        for (a, b) in self.edges() {
            if keep.contains(a) && keep.contains(b) {
                out.push_str(&format!("  {} -> {};\n", quote(&a.to_string()), quote(&b.to_string())));
            }
        }
        let kinds: BTreeSet<ResourceKind> = keep.iter().map(|id| id.kind).collect();
        if !kinds.is_empty() {
            out.push_str("  subgraph cluster_legend {\n    label=\"kinds\";\n    style=\"dashed\";\n");
            for k in ALL_KINDS.into_iter().filter(|k| kinds.contains(k)) {
                let (color, shape) = look(k);
                out.push_str(&format!(
                    "    \"legend:{w}\" [label=\"{w}\", shape={shape}, fillcolor=\"{color}\"];\n",
                    w = k.word()
                ));
            }
            out.push_str("  }\n");
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: ResourceKind, host: &str, name: &str) -> ResourceId {
        ResourceId::new(kind, host, name)
    }

    fn sample() -> (Graph, BTreeMap<ResourceId, String>) {
        let vm_a = id(ResourceKind::Vm, "h1", "a-vm");
        let vm_b = id(ResourceKind::Vm, "h2", "b-vm");
        let net_a = id(ResourceKind::Network, "h1", "a-net");
        let net_b = id(ResourceKind::Network, "h2", "b-net");
        let pool = id(ResourceKind::Pool, "h1", "default");
        let g = Graph::from_edges(
            vec![vm_a.clone(), vm_b.clone(), net_a.clone(), net_b.clone(), pool.clone()],
            vec![(vm_a.clone(), net_a.clone()), (vm_b.clone(), net_b.clone())],
        )
        .unwrap();
        let owners = BTreeMap::from([(vm_a, "a".into()), (vm_b, "b".into()), (net_a, "a".into()), (net_b, "b".into())]);
        (g, owners)
    }

    fn names(keep: BTreeSet<&ResourceId>) -> Vec<String> {
        keep.into_iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_tenant_keeps_what_its_resources_need() {
        let (g, owners) = sample();
        let view = View { tenants: vec!["a".into()], ..View::default() };
        assert_eq!(names(g.visible(&view, &owners)), ["net:h1/a-net", "vm:h1/a-vm"]);
    }

    #[test]
    fn host_and_kind_filters_combine() {
        let (g, owners) = sample();
        let view =
            View { hosts: vec!["h1".into()], kinds: vec![ResourceKind::Vm, ResourceKind::Pool], ..View::default() };
        assert_eq!(names(g.visible(&view, &owners)), ["pool:h1/default", "vm:h1/a-vm"]);
        let dot = g.to_dot_view(&view, &owners);
        assert!(!dot.contains("->"), "the VM's network is filtered out, so is its edge:\n{dot}");
        assert!(dot.contains("\"legend:vm\""), "{dot}");
        assert!(!dot.contains("\"legend:net\""), "{dot}");
    }

    #[test]
    fn every_kind_has_its_word() {
        for w in kind_words() {
            assert_eq!(kind_of_word(w).map(ResourceKind::word), Some(w));
        }
    }
}
