//! `fabrik::drift::*`: the codes `fabrik inventory` reports when a host contradicts its
//! declaration (`inventory::drift` compares them), kept here with every other code so that
//! `fabrik explain` and docs/rules.md know them without depending on the inventory.

use super::Rule;

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::drift::gpu-missing",
        summary: "a declared GPU is not on the host",
        protects: "plans that assign a GPU the host no longer has (failed, removed, or the address changed after a BIOS update)",
        example: "",
        fix: "check the host (`lspci -D`, `nvidia-smi`); fix the address in the factory, or remove the GPU",
    },
    Rule {
        code: "fabrik::drift::gpu-model",
        summary: "a GPU is another model than declared",
        protects: "MIG layouts and quotas computed for the wrong GPU",
        example: "",
        fix: "declare the model the host has",
    },
    Rule {
        code: "fabrik::drift::gpu-numa",
        summary: "a GPU sits on another NUMA node than declared",
        protects: "VMs pinned to the wrong node: every GPU transfer crosses the socket interconnect",
        example: "",
        fix: "declare the NUMA node the host reports (`cat /sys/bus/pci/devices/<address>/numa_node`)",
    },
    Rule {
        code: "fabrik::drift::gpu-undeclared",
        summary: "the host has a GPU the factory does not declare (a warning)",
        protects: "capacity nobody plans for, or a GPU fabrik will not protect from other uses",
        example: "",
        fix: "declare it (with `mode: host` if fabrik should leave it alone)",
    },
    Rule {
        code: "fabrik::drift::arch",
        summary: "the host's CPU architecture (libvirt's capabilities) is not the declared or implied `arch`",
        protects: "domains rendered for another machine: x86 `q35` guests on a Grace host, or Arm `virt` guests on an x86 one, which libvirt refuses to start",
        example: "",
        fix: "declare the `arch` the host reports (`virsh capabilities`, `uname -m`); a GB200 host is aarch64",
    },
    Rule {
        code: "fabrik::drift::vfio-variant",
        summary: "a GPU whose model needs a VFIO variant driver (GB200: `nvgrace_gpu_vfio_pci`) is bound to plain `vfio-pci` (a warning)",
        protects: "a guest that sees the GPU but not its memory: plain `vfio-pci` does not expose a GB200's coherent memory region",
        example: "",
        fix: "load the variant module on the host (`modprobe nvgrace_gpu_vfio_pci`, Linux 6.8+) and restart the VM: libvirt 10+ binds the variant for a managed hostdev",
    },
    Rule {
        code: "fabrik::drift::numa-distances",
        summary: "a NUMA node's declared `distances` differ from the ones the host reports",
        protects: "guest NUMA distances that lie about the host: guests place threads and memory by them",
        example: "",
        fix: "copy the node's row from `numactl --hardware` (or `virsh capabilities`)",
    },
    Rule {
        code: "fabrik::drift::numa",
        summary: "the host's NUMA nodes or their CPUs differ from the declared ones",
        protects: "CPU pinning and NUMA checks done against a topology the host does not have",
        example: "",
        fix: "declare the nodes and CPU lists the host reports (`virsh capabilities`, `lscpu`)",
    },
    Rule {
        code: "fabrik::drift::memory",
        summary: "a NUMA node has much less memory than declared (a warning)",
        protects: "capacity checks that count memory the node does not have",
        example: "",
        fix: "declare the memory the node has; the kernel reports a little less than the DIMMs hold",
    },
    Rule {
        code: "fabrik::drift::nic-missing",
        summary: "a declared NIC is not on the host",
        protects: "networks planned on an interface that does not exist",
        example: "",
        fix: "fix the interface name (`ip link`), or remove the NIC",
    },
];
