//! The inventory as people read it.

use std::fmt::Write;

use super::{HostReport, Inventory};
use crate::hw::mig::MEMORY_SLICES;
use crate::live::{LinkKind, LiveGpu, PowerState};

/// Width of one MIG memory slice in the picture.
const SLICE_WIDTH: usize = 4;

/// A GPU's MIG instances over its memory slices: `[2g.35gb|1g |1g |3g.71gb        ]`,
/// free slices as dots.
pub fn mig_picture(gpu: &LiveGpu) -> String {
    let mut cells: Vec<String> = Vec::new();
    let mut slice = 0u8;
    let mut instances: Vec<_> = gpu.instances.iter().collect();
    instances.sort_by_key(|i| i.start);
    for inst in instances {
        while slice < inst.start {
            cells.push(".".repeat(SLICE_WIDTH - 1));
            slice += 1;
        }
        let width = usize::from(inst.size.max(1)) * SLICE_WIDTH - 1;
        let short = inst.profile.split('.').next().unwrap_or(&inst.profile);
        let label = if inst.profile.len() <= width { inst.profile.as_str() } else { short };
        cells.push(format!("{label:<width$}"));
        slice = inst.start.saturating_add(inst.size.max(1));
    }
    while slice < MEMORY_SLICES {
        cells.push(".".repeat(SLICE_WIDTH - 1));
        slice += 1;
    }
    format!("[{}]", cells.join("|"))
}

pub fn human(inv: &Inventory) -> String {
    let mut out = String::new();
    for h in &inv.hosts {
        host(&mut out, h, inv.simulated);
        out.push('\n');
    }
    endpoints(&mut out, &inv.endpoints);
    let reachable = inv.hosts.iter().filter(|h| h.reachable).count();
    let _ = writeln!(
        out,
        "{} host{}, {reachable} reachable{}",
        inv.hosts.len(),
        if inv.hosts.len() == 1 { "" } else { "s" },
        if inv.simulated { " (simulated twins)" } else { "" }
    );
    // Names, models and errors come from the hosts: none may act on the terminal.
    crate::diag::printable(&out).into_owned()
}

fn host(out: &mut String, h: &HostReport, simulated: bool) {
    let l = &h.live;
    let state = if h.reachable { "reachable" } else { "UNREACHABLE" };
    let uri = if simulated { "simulated twin".to_string() } else { h.uri.clone() };
    let _ = writeln!(out, "{}  {state}  {uri}", h.name);
    for e in &l.errors {
        let _ = writeln!(out, "  ! {}: {}", e.concern, e.error);
    }
    if let Some(info) = &l.info {
        for n in &info.numa {
            let pages: Vec<String> = l
                .hugepages
                .iter()
                .filter(|p| p.numa_node == n.id)
                .map(|p| format!("{} {}/{} free", p.size, p.free, p.total))
                .collect();
            let pages = if pages.is_empty() { String::new() } else { format!(", hugepages {}", pages.join(", ")) };
            let cpus = if n.cpus.is_empty() {
                "no CPUs (memory only)".to_string()
            } else {
                format!("{} CPUs ({})", n.cpus.len(), n.cpus)
            };
            let _ = writeln!(out, "  numa {}: {cpus}, {}{pages}", n.id, n.memory);
        }
    }
    for g in &l.gpus {
        let model = g.model.map_or_else(|| g.name.clone(), |m| m.to_string());
        let node = g.numa_node.map_or_else(|| "node ?".to_string(), |n| format!("node {n}"));
        let mig = match g.mig {
            None => "no MIG".to_string(),
            Some(m) if m.current => format!("MIG on  {}", mig_picture(g)),
            Some(m) if m.pending => "MIG off (on after reset)".to_string(),
            Some(_) => "MIG off".to_string(),
        };
        let _ = writeln!(out, "  gpu {}  {model:<10}  {node}  {mig}", g.address);
    }
    for link in l.links.iter().filter(|k| matches!(k.kind, LinkKind::Other { .. }) || k.sriov_vfs.is_some()) {
        let vfs = link.sriov_vfs.map(|v| format!("  {v} VFs")).unwrap_or_default();
        let _ = writeln!(out, "  nic {:<8} mtu {}{}{vfs}", link.name, link.mtu, if link.up { "" } else { "  down" });
    }
    let bridges: Vec<&str> =
        l.links.iter().filter(|k| !matches!(k.kind, LinkKind::Other { .. })).map(|k| k.name.as_str()).collect();
    if !bridges.is_empty() {
        let _ = writeln!(out, "  links {}", bridges.join(", "));
    }
    if !l.domains.is_empty() {
        let managed = l.domains.iter().filter(|d| d.owner.is_some()).count();
        let running = l.domains.iter().filter(|d| d.state == PowerState::Running).count();
        let _ = writeln!(
            out,
            "  vms {} ({running} running; {managed} managed by fabrik, {} not)",
            l.domains.len(),
            l.domains.len() - managed
        );
    }
    if !l.networks.is_empty() {
        let names: Vec<&str> = l.networks.iter().map(|n| n.name.as_str()).collect();
        let _ = writeln!(out, "  networks {}", names.join(", "));
    }
    if !h.drift.is_empty() {
        let _ = writeln!(
            out,
            "  drift: {} difference{} from the factory (below)",
            h.drift.len(),
            if h.drift.len() == 1 { "" } else { "s" }
        );
    }
}

/// `endpoints` and one line per endpoint: VM, name, URL, probe.
fn endpoints(out: &mut String, eps: &[crate::endpoints::Report]) {
    if eps.is_empty() {
        return;
    }
    let _ = writeln!(out, "endpoints");
    for line in endpoint_lines(eps) {
        let _ = writeln!(out, "  {line}");
    }
    out.push('\n');
}

/// One aligned line per endpoint, `vm/name  url  probe (detail)`: inventory and
/// `fabrik status` print them the same way.
pub fn endpoint_lines(eps: &[crate::endpoints::Report]) -> Vec<String> {
    let vm_w = eps.iter().map(|e| e.endpoint.vm.len() + 1 + e.endpoint.name.len()).max().unwrap_or(0);
    let url_w = eps.iter().map(|e| e.endpoint.url.as_deref().unwrap_or("-").len()).max().unwrap_or(0);
    eps.iter()
        .map(|e| {
            let who = format!("{}/{}", e.endpoint.vm, e.endpoint.name);
            let url = e.endpoint.url.as_deref().unwrap_or("-");
            let detail = match &e.probe {
                crate::endpoints::Probe::Healthy | crate::endpoints::Probe::Simulated => String::new(),
                crate::endpoints::Probe::Unhealthy(d) | crate::endpoints::Probe::NoAddress(d) => format!(" ({d})"),
            };
            format!("{who:<vm_w$}  {url:<url_w$}  {}{detail}", e.probe.word())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{LiveMigInstance, MigMode};
    use crate::spec::types::{ByteSize, PciAddress};

    fn inst(profile: &str, start: u8, size: u8) -> LiveMigInstance {
        LiveMigInstance { id: 1, profile_id: 0, profile: profile.into(), start, size, compute_instances: vec![] }
    }

    #[test]
    fn mig_picture_spans_slices() {
        let gpu = LiveGpu {
            address: PciAddress::parse("0000:1b:00.0").unwrap(),
            uuid: String::new(),
            name: "NVIDIA H200".into(),
            model: None,
            memory: ByteSize(0),
            numa_node: Some(0),
            cpu_affinity: None,
            nvlink_peers: vec![],
            mig: Some(MigMode { current: true, pending: true }),
            instances: vec![inst("3g.71gb", 4, 4), inst("2g.35gb", 0, 2), inst("1g.18gb", 2, 1)],
            vgpu: None,
        };
        assert_eq!(mig_picture(&gpu), "[2g.35gb|1g |...|3g.71gb        ]");
    }
}
