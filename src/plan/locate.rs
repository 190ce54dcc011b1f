//! Where the resource a plan error is about is declared: the line an operator changes
//! when the plan stops on it (a declared GPU the host lacks, a name another object on
//! the host already has). The plan is made from desired and live state, which carry no
//! spans; the errors are located afterwards, from each resource's id, in the factory's
//! files. Pure: a plan, the spec and its sources in, the plan's errors located out.

use serde::{Deserialize, Serialize};

use super::Plan;
use crate::desired::{ResourceId, ResourceKind};
use crate::spec::model::{Host, Spec};
use crate::spec::source::{Sources, Span};

/// A place in a factory file, as people and editors count: 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Errors about what a host is or returned, not about what the files declare.
const LIVE_FAULTS: &[&str] = &["fabrik::plan::unreadable-host", "fabrik::plan::unreadable-object"];

/// Gives every error of `plan` that comes from a declaration its location.
pub fn locate_errors(plan: &mut Plan, spec: &Spec, sources: &Sources) {
    for e in &mut plan.errors {
        if e.at.is_none() && !LIVE_FAULTS.contains(&e.code.as_str()) {
            e.at = span_of(spec, &e.id).map(|span| location(sources, span));
        }
    }
}

pub fn location(sources: &Sources, span: Span) -> Location {
    let file = sources.get(span.file);
    let lc = file.line_col(span.start);
    Location { file: file.path.display().to_string(), line: lc.line, column: lc.column }
}

/// The declaration a resource comes from, where there is one line that makes it.
pub fn span_of(spec: &Spec, id: &ResourceId) -> Option<Span> {
    let host = || spec.host(&id.host);
    match id.kind {
        ResourceKind::Host => host().map(|h| h.name.span),
        ResourceKind::Gpu => gpu(host()?, &id.name),
        // `<address>/<profile>@<start>`: the GPU whose layout it is.
        ResourceKind::Mig => gpu(host()?, id.name.split_once('/')?.0),
        // `node<id>-<size>`: the node's pools.
        ResourceKind::Hugepages => {
            let node: u32 = id.name.strip_prefix("node")?.split_once('-')?.0.parse().ok()?;
            host()?.numa_nodes.iter().find(|n| n.id.value == node).map(|n| n.id.span)
        }
        ResourceKind::Vfs => {
            let nic = host()?.nics.iter().find(|n| n.name.value == id.name)?;
            Some(nic.sriov_vfs.as_ref().map_or(nic.name.span, |v| v.span))
        }
        ResourceKind::Link => link(spec, &id.name),
        ResourceKind::Network => spec.networks.iter().find(|n| n.name.value == id.name).map(|n| n.name.span),
        ResourceKind::Pool => spec.pools.iter().find(|p| p.name.value == id.name).map(|p| p.name.span),
        ResourceKind::Volume => volume(spec, id.name.split_once('/')?.1),
        ResourceKind::Vm => spec.vms.iter().find(|v| v.instance_names().contains(&id.name)).map(|v| v.name.span),
        ResourceKind::Partitions => host()?.subnet_manager.as_ref().map(|s| s.span),
    }
}

fn gpu(host: &Host, address: &str) -> Option<Span> {
    host.gpus.iter().find(|g| g.address.value.to_string() == address).map(|g| g.address.span)
}

/// A link named by a network's own keys: its `bridge`, its VXLAN device `vx<vni>`, its
/// VLAN device `<parent>.<vlan>`. Derived names are not guessed back.
fn link(spec: &Spec, name: &str) -> Option<Span> {
    spec.networks.iter().find_map(|n| {
        if let Some(b) = n.bridge.as_ref().filter(|b| b.value == name) {
            return Some(b.span);
        }
        if let Some(vni) = n.vni.as_ref().filter(|v| format!("vx{}", v.value) == name) {
            return Some(vni.span);
        }
        match (&n.parent, &n.vlan) {
            (Some(p), Some(v)) if format!("{}.{}", p.value, v.value) == name => Some(v.span),
            _ => None,
        }
    })
}

/// A base image's volume is named after the image; a disk's, `<vm>-<disk>`.
fn volume(spec: &Spec, name: &str) -> Option<Span> {
    if let Some(i) = spec.images.iter().find(|i| i.name.value == name) {
        return Some(i.name.span);
    }
    spec.effective_vms().find_map(|e| {
        let disks = e.disks()?;
        e.vm.instance_names()
            .iter()
            .find_map(|vm| disks.iter().find(|d| format!("{vm}-{}", d.name.value) == name).map(|d| d.name.span))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::load::load_bytes;
    use crate::spec::source::Syntax;

    #[test]
    fn resources_are_found_at_their_declaration() {
        let text = "version: 1\nhosts:\n  - name: h\n    uri: qemu:///system\n    numa-nodes: [{ id: 0, cpus: 0-3, memory: 8GiB, hugepages: { 1G: 2 } }]\n    gpus: [{ address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0, mode: passthrough }]\n    nics: [{ name: ib0, kind: infiniband, sriov-vfs: 4 }]\nvms:\n  - name: w\n    tenant: t\n    replicas: 2\n    disks: [{ name: root, size: 1GiB, pool: p }]\n";
        let mut sources = Sources::default();
        let (_, spec, diags) = load_bytes(&mut sources, "f.yaml".into(), Syntax::Yaml, text.into());
        assert!(diags.is_empty(), "{diags:?}");
        let at = |kind, name: &str| {
            span_of(&spec, &ResourceId::new(kind, "h", name)).map(|s| {
                let l = location(&sources, s);
                (l.line, l.column)
            })
        };
        assert_eq!(at(ResourceKind::Host, "h"), Some((3, 11)));
        assert_eq!(at(ResourceKind::Gpu, "0000:1b:00.0"), Some((6, 23)));
        assert_eq!(at(ResourceKind::Mig, "0000:1b:00.0/1g.18gb@0"), Some((6, 23)));
        assert_eq!(at(ResourceKind::Hugepages, "node0-1G"), Some((5, 24)));
        assert_eq!(at(ResourceKind::Vfs, "ib0"), Some((7, 54)));
        assert_eq!(at(ResourceKind::Vm, "w-1"), Some((9, 11)));
        assert_eq!(at(ResourceKind::Volume, "p/w-1-root"), Some((12, 21)));
        assert_eq!(at(ResourceKind::Vm, "w-2"), None);
    }
}
