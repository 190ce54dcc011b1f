use std::path::Path;

use crate::desired::build::vms_by_name;
use crate::desired::{GpuSetup, build};
use crate::spec::model::Spec;

fn example() -> Spec {
    let v = crate::check::validate(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory")));
    assert!(v.is_valid(), "{:?}", v.diags);
    v.spec
}

fn factory(vms: &str) -> Spec {
    let spec = unchecked(vms);
    assert!(!crate::check::run(&spec).iter().any(|d| d.is_error()), "{:?}", crate::check::run(&spec));
    spec
}

/// The factory of [`factory`], without asserting that it validates.
fn unchecked(vms: &str) -> Spec {
    let text = format!(
        "version: 1\nhosts:\n  - name: h1\n    uri: test:///default\n    numa-nodes:\n      - {{ id: 0, cpus: 0-7, memory: 64GiB, hugepages: {{ 1G: 32 }} }}\n      - {{ id: 1, cpus: 8-15, memory: 64GiB, hugepages: {{ 1G: 32 }} }}\n    gpus:\n      - {{ address: \"0000:01:00.0\", model: H200-141GB, numa-node: 0, mode: passthrough }}\n      - {{ address: \"0000:81:00.0\", model: H200-141GB, numa-node: 1, mode: passthrough }}\n  - name: h2\n    uri: test:///default\n    numa-nodes:\n      - {{ id: 0, cpus: 0-7, memory: 64GiB }}\ntenants:\n  - {{ name: t, hosts: [h2, h1] }}\nvms:\n{vms}"
    );
    let mut sources = crate::spec::source::Sources::default();
    let (_, spec, diags) =
        crate::spec::load::load_bytes(&mut sources, "f.yaml".into(), crate::spec::source::Syntax::Yaml, text.into());
    assert!(diags.is_empty(), "{diags:?}");
    spec
}

#[test]
fn the_example_places_every_vm_and_gives_mig_instances_to_the_vms_that_ask() {
    let spec = example();
    let d = build(&spec).expect("the example places");
    let vms = vms_by_name(&d);
    let expected: u32 = spec.vms.iter().map(|v| v.replicas.as_ref().map_or(1, |r| r.value)).sum();
    assert_eq!(vms.len(), expected as usize);
    let gpu02 = d.hosts.iter().find(|h| h.name == "gpu02").unwrap();
    let gpu0 = gpu02.gpus.iter().find(|g| g.address.to_string() == "0000:1b:00.0").unwrap();
    let GpuSetup::Mig { instances } = &gpu0.setup else { panic!("gpu02's GPU 0 is in MIG mode") };
    let got: Vec<(String, Option<String>)> =
        instances.iter().map(|m| (m.id.to_string(), m.vm.as_ref().map(|v| v.name.clone()))).collect();
    assert_eq!(
        got,
        [
            ("mig:gpu02/0000:1b:00.0/2g.35gb@0".to_string(), Some("globex-embed".to_string())),
            ("mig:gpu02/0000:1b:00.0/1g.18gb@2".to_string(), Some("initech-notebook-0".to_string())),
            ("mig:gpu02/0000:1b:00.0/1g.18gb@3".to_string(), Some("initech-notebook-1".to_string())),
            ("mig:gpu02/0000:1b:00.0/3g.71gb@4".to_string(), Some("globex-vllm-small".to_string())),
        ]
    );
    assert_eq!(vms["globex-embed"].mig[0].to_string(), "mig:gpu02/0000:1b:00.0/2g.35gb@0");
    // The replicas without a host find the free passthrough GPUs of gpu02's node 1.
    for i in 0..4 {
        let vm = vms[format!("globex-vllm-{i}").as_str()];
        assert_eq!(vm.id.host, "gpu02");
        assert_eq!(vm.gpus.len(), 1);
        assert_eq!(vm.numa_node, Some(1));
    }
    assert_eq!(vms["acme-train"].gpus.len(), 8);
    assert_eq!(vms["initech-viz-0"].time_sliced[0].to_string(), "0000:61:00.0");
}

#[test]
fn numa_required_vms_get_cpus_memory_and_gpus_of_one_node() {
    let spec = example();
    let d = build(&spec).unwrap();
    for h in &d.hosts {
        let host = spec.host(&h.name).unwrap();
        let node_of_cpu = |c: u32| host.numa_nodes.iter().find(|n| n.cpus.value.contains(c)).map(|n| n.id.value);
        let node_of_gpu = |a| host.gpus.iter().find(|g| g.address.value == a).map(|g| g.numa_node.value);
        for vm in &h.vms {
            let entry = spec.vms.iter().find(|v| vm.name.starts_with(v.name.value.as_str())).unwrap();
            let e = crate::spec::effective::Effective::of(&spec, entry);
            if e.numa_policy() != crate::spec::model::NumaPolicy::Required {
                continue;
            }
            let node = vm.numa_node.unwrap_or_else(|| panic!("{} has a node", vm.name));
            assert_eq!(vm.vcpu_pins.len(), vm.vcpus as usize, "{}", vm.name);
            assert!(vm.vcpu_pins.iter().all(|&c| node_of_cpu(c) == Some(node)), "{}", vm.name);
            assert!(vm.gpus.iter().all(|&a| node_of_gpu(a) == Some(node)), "{}", vm.name);
            assert_eq!(vm.numa_cells.len(), 1);
            assert_eq!(vm.numa_cells[0].host_node, node);
        }
    }
    // No CPU is pinned twice, and none is reserved.
    for h in &d.hosts {
        let mut all: Vec<u32> = h.vms.iter().flat_map(|v| v.vcpu_pins.iter().copied()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a CPU pinned twice on {}", h.name);
        let reserved = spec.host(&h.name).unwrap().reserved_cpus.as_ref();
        assert!(all.iter().all(|&c| !reserved.is_some_and(|r| r.value.contains(c))));
    }
}

#[test]
fn placement_is_deterministic() {
    let spec = example();
    let a = serde_json::to_string(&build(&spec).unwrap()).unwrap();
    let b = serde_json::to_string(&build(&spec).unwrap()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn adding_a_vm_does_not_move_the_others() {
    let base = "  - { name: b, tenant: t, vcpus: 2, memory: 4GiB, cpu-policy: dedicated, numa: required, gpu: { model: H200-141GB } }\n  - { name: c, tenant: t, vcpus: 2, memory: 4GiB }\n";
    let before = build(&factory(base)).unwrap();
    let more = format!(
        "{base}  - {{ name: d, tenant: t, vcpus: 2, memory: 4GiB, cpu-policy: dedicated, gpu: {{ model: H200-141GB }} }}\n"
    );
    let after = build(&factory(&more)).unwrap();
    let (b, a) = (vms_by_name(&before), vms_by_name(&after));
    for name in ["b", "c"] {
        assert_eq!(b[name], a[name], "{name} moved");
    }
    assert_eq!(a["b"].id.host, "h1");
    assert_eq!(a["c"].id.host, "h1", "first fit in host-name order");
    assert_ne!(a["d"].gpus, a["b"].gpus);
}

#[test]
fn a_vm_that_fits_nowhere_says_why_for_each_host() {
    // Two GPUs in all, but one per NUMA node: the checks cannot see it, placement can.
    let spec = factory(
        "  - { name: big, tenant: t, vcpus: 2, memory: 4GiB, numa: required, gpu: { model: H200-141GB, count: 2 } }\n",
    );
    let diags = build(&spec).unwrap_err();
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].code, "fabrik::place::no-host");
    let help = diags[0].help.as_deref().unwrap();
    assert!(
        help.contains(
            "h1: 1 free passthrough H200-141GB GPUs on NUMA node 0, needs 2; 1 free passthrough H200-141GB GPUs on NUMA node 1, needs 2"
        ),
        "{help}"
    );
    assert!(help.contains("h2: 0 free passthrough H200-141GB GPUs on NUMA node 0, needs 2"), "{help}");
}

#[test]
fn a_required_vm_takes_hugepages_from_its_node_only() {
    let spec = unchecked(
        "  - { name: a, tenant: t, vcpus: 4, memory: 40GiB, hugepages: 1G, numa: required, cpu-policy: dedicated }\n",
    );
    // `validate` already says so, offline; placement says it again for each host.
    let codes: Vec<&str> = crate::check::run(&spec).iter().map(|d| d.code).collect();
    assert_eq!(codes, ["fabrik::numa::no-node"]);
    let diags = build(&spec).unwrap_err();
    assert!(
        diags[0].help.as_deref().unwrap().contains("32 free 1G hugepages on NUMA node 0, needs 40"),
        "{:?}",
        diags[0].help
    );
    let spread = factory("  - { name: a, tenant: t, vcpus: 4, memory: 40GiB, hugepages: 1G, cpu-policy: dedicated }\n");
    let d = build(&spread).unwrap();
    let vm = vms_by_name(&d)["a"];
    assert_eq!(vm.numa_node, None);
    assert_eq!(vm.numa_cells.len(), 2);
}

#[test]
fn a_placed_vm_goes_only_where_its_networks_and_pools_are() {
    let text = "version: 1\nhosts:\n  - name: h1\n    uri: test:///default\n    numa-nodes: [{ id: 0, cpus: 0-7, memory: 64GiB }]\n  - name: h2\n    uri: test:///default\n    numa-nodes: [{ id: 0, cpus: 0-7, memory: 64GiB }]\n    nics: [{ name: fe0, kind: ethernet }]\n  - name: h3\n    uri: test:///default\n    numa-nodes: [{ id: 0, cpus: 0-7, memory: 64GiB }]\n    nics: [{ name: fe0, kind: ethernet }]\ntenants:\n  - { name: t, hosts: [h2, h3, h1], networks: [net] }\nnetworks:\n  - { name: net, purpose: tenant, kind: vxlan, tenant: t, vni: 7, parent: fe0 }\npools:\n  - { name: fast, type: dir, path: /fast, hosts: [h1, h3] }\nvms:\n  - { name: a, tenant: t, vcpus: 1, memory: 1GiB, nics: [net] }\n  - { name: b, tenant: t, vcpus: 1, memory: 1GiB, nics: [net], disks: [{ name: d, size: 1GiB, pool: fast }] }\n";
    let mut sources = crate::spec::source::Sources::default();
    let (_, spec, diags) =
        crate::spec::load::load_bytes(&mut sources, "f.yaml".into(), crate::spec::source::Syntax::Yaml, text.into());
    assert!(diags.is_empty(), "{diags:?}");
    assert!(!crate::check::run(&spec).iter().any(|d| d.is_error()), "{:?}", crate::check::run(&spec));
    let d = build(&spec).expect("both VMs place");
    let vms = vms_by_name(&d);
    // h1 comes first but has no `fe0` for the network; h2 has it but not the pool.
    assert_eq!(vms["a"].id.host, "h2");
    assert_eq!(vms["b"].id.host, "h3");
    let graph = crate::graph::Graph::of(&d).expect("every dependency is declared on the VM's host");
    assert!(!graph.is_empty());
}
