//! `fabrik::drift::*`: declared hardware against what the host reports.
//!
//! Each diagnostic points at the declaration in the factory that the host contradicts.
//! A concern that could not be read (no NVML, host unreachable) is not drift: nothing is
//! compared for it. The codes and their explanations are in `check::rules::drift`.

use crate::diag::Diagnostic;
use crate::live::LiveHost;
use crate::spec::model::Host;

/// The kernel reserves some memory: a node reporting this much less than declared is fine.
const MEMORY_TOLERANCE_PERCENT: u64 = 5;

pub fn compare(host: &Host, live: &LiveHost) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let what = |s: &str| format!("host `{}`: {s}", host.name.value);
    if let Some(info) = &live.info
        && let Some(arch) = &info.arch
        && arch != host.arch().word()
    {
        let d = Diagnostic::error(
            "fabrik::drift::arch",
            what(&format!("the host is {arch}, but its VMs are rendered for {}", host.arch())),
        );
        out.push(match &host.arch {
            Some(a) => d.at(a.span, "declared here").help(format!("declare `arch: {arch}`")),
            None => d.at(host.name.span, "implied by its GPUs, or x86_64").help(format!("declare `arch: {arch}`")),
        });
    }
    if let Some(info) = &live.info
        && !info.numa.is_empty()
    {
        for node in &host.numa_nodes {
            match info.numa.iter().find(|n| n.id == node.id.value) {
                None => out.push(
                    Diagnostic::error(
                        "fabrik::drift::numa",
                        what(&format!("NUMA node {} does not exist", node.id.value)),
                    )
                    .at(node.id.span, "declared here")
                    .help(format!("the host has nodes {}", list(info.numa.iter().map(|n| n.id)))),
                ),
                Some(n) => {
                    if let Some(row) = &node.distances
                        && !n.distances.is_empty()
                        && n.distances != row.value
                    {
                        out.push(
                            Diagnostic::error(
                                "fabrik::drift::numa-distances",
                                what(&format!(
                                    "NUMA node {} has distances {:?}, not {:?}",
                                    node.id.value, n.distances, row.value
                                )),
                            )
                            .at(row.span, "declared distances")
                            .help(format!("declare `distances: {:?}`", n.distances)),
                        );
                    }
                    if n.cpus != node.cpus.value && !n.cpus.is_empty() {
                        out.push(
                            Diagnostic::error(
                                "fabrik::drift::numa",
                                what(&format!(
                                    "NUMA node {} has CPUs {}, not {}",
                                    node.id.value, n.cpus, node.cpus.value
                                )),
                            )
                            .at(node.cpus.span, "declared CPUs")
                            .help(format!("declare `cpus: {}`", n.cpus)),
                        );
                    }
                    let declared = node.memory.value.bytes();
                    if n.memory.bytes() > 0 && n.memory.bytes() * 100 < declared * (100 - MEMORY_TOLERANCE_PERCENT) {
                        out.push(
                            Diagnostic::warning(
                                "fabrik::drift::memory",
                                what(&format!(
                                    "NUMA node {} has {} of memory, not {}",
                                    node.id.value, n.memory, node.memory.value
                                )),
                            )
                            .at(node.memory.span, "declared memory")
                            .help(format!("declare the memory the node has, about {}", n.memory)),
                        );
                    }
                }
            }
        }
    }
    let gpus_read = live.read("nvml");
    if gpus_read {
        for gpu in &host.gpus {
            match live.gpus.iter().find(|g| g.address == gpu.address.value) {
                None => out.push(
                    Diagnostic::error("fabrik::drift::gpu-missing", what(&format!("no GPU at {}", gpu.address.value)))
                        .at(gpu.address.span, "declared here")
                        .help(if live.gpus.is_empty() {
                            "the host reports no GPUs".to_string()
                        } else {
                            format!("the host's GPUs are at {}", list(live.gpus.iter().map(|g| g.address)))
                        }),
                ),
                Some(g) => {
                    if let Some(model) = g.model
                        && model != gpu.model.value
                    {
                        out.push(
                            Diagnostic::error(
                                "fabrik::drift::gpu-model",
                                what(&format!(
                                    "GPU {} is an {model} ({}), not an {}",
                                    gpu.address.value, g.name, gpu.model.value
                                )),
                            )
                            .at(gpu.model.span, "declared model")
                            .help(format!("declare `model: {model}`")),
                        );
                    }
                    if let Some(node) = g.numa_node
                        && node != gpu.numa_node.value
                    {
                        out.push(
                            Diagnostic::error(
                                "fabrik::drift::gpu-numa",
                                what(&format!(
                                    "GPU {} is on NUMA node {node}, not {}",
                                    gpu.address.value, gpu.numa_node.value
                                )),
                            )
                            .at(gpu.numa_node.span, "declared node")
                            .help(format!("declare `numa-node: {node}`")),
                        );
                    }
                }
            }
        }
        for g in &live.gpus {
            if !host.gpus.iter().any(|d| d.address.value == g.address) {
                out.push(
                    Diagnostic::warning(
                        "fabrik::drift::gpu-undeclared",
                        what(&format!("GPU {} ({}) is not declared", g.address, g.name)),
                    )
                    .at(host.name.span, "this host")
                    .help("declare it, with `mode: host` if fabrik should leave it alone"),
                );
            }
        }
    }
    if live.read("libvirt") {
        for gpu in &host.gpus {
            let Some(variant) = gpu.model.value.vfio_variant() else { continue };
            let Some(dev) = live.devices.iter().find(|d| d.address == gpu.address.value) else { continue };
            if dev.driver.as_deref() == Some("vfio-pci") {
                out.push(
                    Diagnostic::warning(
                        "fabrik::drift::vfio-variant",
                        what(&format!(
                            "GPU {} is bound to vfio-pci, not {variant}: its guest cannot use the GPU's memory",
                            gpu.address.value
                        )),
                    )
                    .at(gpu.model.span, "this model needs a VFIO variant driver")
                    .help(format!(
                        "load `{variant}` on the host (Linux 6.8+) and restart the VM; libvirt binds it for a managed hostdev"
                    )),
                );
            }
        }
    }
    let links_read = live.read("netlink");
    if links_read {
        for nic in &host.nics {
            if !live.links.iter().any(|l| l.name == nic.name.value) {
                out.push(
                    Diagnostic::error(
                        "fabrik::drift::nic-missing",
                        what(&format!("no interface `{}`", nic.name.value)),
                    )
                    .at(nic.name.span, "declared here")
                    .help("check `ip link` on the host and fix the name"),
                );
            }
        }
    }
    out
}

fn list<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}
