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
