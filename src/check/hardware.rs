//! A host's declared hardware against itself: its CPU architecture against its GPUs and
//! its VMs' firmware (`fabrik::host::*`), nodes of GPU memory and node distances
//! (`fabrik::numa::*`), and the GPUs' InfiniBand rails (`fabrik::fabric::rail`).

use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::hw::Arch;
use crate::spec::model::{Firmware, Host, NicKind, Spec};

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::host::arch",
        summary: "a host's declared `arch` is not the one its GPU model needs (a GB200 sits beside a Grace CPU: aarch64)",
        protects: "VMs rendered for the wrong machine: an x86 `q35` domain with `<apic/>` on a Grace host does not start, and an Arm `virt` domain on an x86 host neither",
        example: "hosts:\n  - name: gb01\n    arch: x86_64\n    gpus: [{ address: \"0008:01:00.0\", model: GB200, numa-node: 0 }]",
        fix: "declare the architecture the host has (`arch: aarch64` for GB200), or leave `arch` out: the GPU model implies it",
    },
    Rule {
        code: "fabrik::host::arch-firmware",
        summary: "a VM on an aarch64 host asks for `firmware: bios`",
        protects: "a key without effect: Arm's `virt` machine boots only UEFI, so fabrik renders UEFI whatever the file says",
        example: "vms:\n  - { name: a, host: gb01, firmware: bios, vcpus: 4, memory: 8GiB }",
        fix: "write `firmware: uefi`, or leave `firmware` out (UEFI is the default on aarch64), and give the VM an image that boots with it",
    },
    Rule {
        code: "fabrik::numa::memory-node",
        summary: "a NUMA node names a `gpu` the host does not declare, or names one and also has `cpus`",
        protects: "a guest cell of GPU memory that mirrors nothing: the node is given to the VMs of that GPU as a CPU-less cell, so it must be a node of memory only, and of a GPU the host has",
        example: "hosts:\n  - name: gb01\n    numa-nodes:\n      - { id: 2, memory: 186GiB, gpu: \"0008:02:00.0\" }\n    gpus: [{ address: \"0008:01:00.0\", model: GB200, numa-node: 0 }]",
        fix: "name the PCI address of one of the host's GPUs, and leave `cpus` out of a node of GPU memory",
    },
    Rule {
        code: "fabrik::numa::distances",
        summary: "a NUMA node's `distances` do not give one distance per node of the host, or its distance to itself is not 10",
        protects: "guest NUMA distances that lie: guest cells take their `<distances>` from these rows, and the guest's scheduler and allocator place threads and memory by them",
        example: "numa-nodes:\n  - { id: 0, cpus: 0-71, memory: 480GiB, distances: [10] }\n  - { id: 1, cpus: 72-143, memory: 480GiB, distances: [20, 10] }",
        fix: "copy the node's row from `numactl --hardware` on the host: one distance per node, in node-id order, 10 for itself",
    },
    Rule {
        code: "fabrik::fabric::rail",
        summary: "a GPU's `rail` is not an InfiniBand NIC of the host with SR-IOV VFs (`sriov-vfs`)",
        protects: "a rail VF that cannot exist: a multi-GPU VM on an InfiniBand partition takes one VF per GPU from the GPU's rail, so the rail must be an InfiniBand port that has VFs",
        example: "hosts:\n  - name: gpu01\n    gpus: [{ address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0, rail: ib9 }]\n    nics: [{ name: ib0, kind: infiniband, sriov-vfs: 16 }]",
        fix: "name the InfiniBand NIC on the GPU's PCIe switch (`nvidia-smi topo -m` shows it as PIX/PXB), and give it `sriov-vfs`",
    },
];

/// Distance of a node to itself (ACPI SLIT).
const LOCAL_DISTANCE: u32 = 10;

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    for host in &spec.hosts {
        arch(host, out);
        memory_nodes(host, out);
        distances(host, out);
        rails(host, out);
    }
    firmware(spec, out);
}

fn arch(host: &Host, out: &mut Vec<Diagnostic>) {
    let Some(declared) = &host.arch else { return };
    for gpu in &host.gpus {
        let Some(needed) = gpu.model.value.arch() else { continue };
        if needed == declared.value {
            continue;
        }
        out.push(
            Diagnostic::error(
                "fabrik::host::arch",
                format!(
                    "host `{}` is declared {}, but its {} GPU needs an {needed} host",
                    host.name.value, declared.value, gpu.model.value
                ),
            )
            .at(declared.span, "declared here")
            .also(gpu.model.span, format!("needs {needed}"))
            .help(format!("declare `arch: {needed}`, or leave `arch` out: the GPU model implies it")),
        );
        return;
    }
}

fn memory_nodes(host: &Host, out: &mut Vec<Diagnostic>) {
    for node in &host.numa_nodes {
        let Some(gpu) = &node.gpu else { continue };
        if !host.gpus.iter().any(|g| g.address.value == gpu.value) {
            let known: Vec<String> = host.gpus.iter().map(|g| format!("`{}`", g.address.value)).collect();
            out.push(
                Diagnostic::error(
                    "fabrik::numa::memory-node",
                    format!(
                        "NUMA node {} of host `{}` is the memory of GPU {}, which the host does not declare",
                        node.id.value, host.name.value, gpu.value
                    ),
                )
                .at(gpu.span, "no such GPU on this host")
                .help(if known.is_empty() {
                    "declare the GPU under the host's `gpus`".to_string()
                } else {
                    format!("name one of the host's GPUs: {}", known.join(", "))
                }),
            );
        } else if !node.cpus.value.is_empty() {
            out.push(
                Diagnostic::error(
                    "fabrik::numa::memory-node",
                    format!(
                        "NUMA node {} of host `{}` has CPUs, so it is not a node of GPU memory",
                        node.id.value, host.name.value
                    ),
                )
                .at(node.cpus.span, "CPUs of a node that names a GPU")
                .also(gpu.span, "names a GPU")
                .help("leave `cpus` out of a node of GPU memory (GB200 HBM has none), or drop its `gpu`"),
            );
        }
    }
}

fn distances(host: &Host, out: &mut Vec<Diagnostic>) {
    let count = host.numa_nodes.len();
    for node in &host.numa_nodes {
        let Some(row) = &node.distances else { continue };
        let own = row.value.get(node.id.value as usize).copied();
        let problem = if row.value.len() != count {
            format!("gives a row of {} for a host of {count} NUMA nodes", row.value.len())
        } else if own != Some(LOCAL_DISTANCE) {
            format!("gives {} as its distance to itself", own.map_or("nothing".into(), |d| d.to_string()))
        } else {
            continue;
        };
        out.push(
            Diagnostic::error(
                "fabrik::numa::distances",
                format!("NUMA node {} of host `{}` {problem}", node.id.value, host.name.value),
            )
            .at(row.span, "this row")
            .help(format!(
                "copy node {}'s row from `numactl --hardware`: {count} distances in node-id order, {LOCAL_DISTANCE} for itself",
                node.id.value
            )),
        );
    }
}

fn firmware(spec: &Spec, out: &mut Vec<Diagnostic>) {
    for e in spec.effective_vms() {
        let Some(fw) = e.firmware() else { continue };
        let Some(host) = e.vm.host.as_ref().and_then(|h| spec.hosts.iter().find(|x| x.name.value == h.value)) else {
            continue;
        };
        if fw.value != Firmware::Bios || host.arch() != Arch::Aarch64 {
            continue;
        }
        out.push(
            Diagnostic::error(
                "fabrik::host::arch-firmware",
                format!("VM `{}` asks for BIOS on aarch64 host `{}`", e.vm.name.value, host.name.value),
            )
            .at(fw.span, "no BIOS on aarch64")
            .help("write `firmware: uefi`, or leave `firmware` out: aarch64 VMs boot UEFI"),
        );
    }
}

fn rails(host: &Host, out: &mut Vec<Diagnostic>) {
    for gpu in &host.gpus {
        let Some(rail) = &gpu.rail else { continue };
        let nic = host.nics.iter().find(|n| n.name.value == rail.value);
        let problem = match nic {
            None => "is not a NIC of the host",
            Some(n) if n.kind.value != NicKind::Infiniband => "is not an InfiniBand NIC",
            Some(n) if n.sriov_vfs.as_ref().is_none_or(|v| v.value == 0) => "has no SR-IOV VFs (`sriov-vfs`)",
            Some(_) => continue,
        };
        let ib: Vec<String> = host
            .nics
            .iter()
            .filter(|n| n.kind.value == NicKind::Infiniband)
            .map(|n| format!("`{}`", n.name.value))
            .collect();
        out.push(
            Diagnostic::error(
                "fabrik::fabric::rail",
                format!(
                    "the rail of GPU {} on host `{}`, `{}`, {problem}",
                    gpu.address.value, host.name.value, rail.value
                ),
            )
            .at(rail.span, "this rail")
            .help(if ib.is_empty() {
                "declare the InfiniBand NIC beside the GPU, with `sriov-vfs`".to_string()
            } else {
                format!("name the InfiniBand NIC beside the GPU ({}), with `sriov-vfs`", ib.join(", "))
            }),
        );
    }
}
