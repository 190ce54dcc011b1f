//! The reference factory's key features, each broken by one change: the rule that
//! protects the feature must fire. Guards the checks against going quiet, and the example
//! against drifting into something the checks no longer look at.

use std::path::Path;

/// (file under examples/ai-factory, text to replace, replacement, code that must fire)
const CASES: &[(&str, &str, &str, &str)] = &[
    // MIG geometry on gpu02's shared GPU.
    (
        "hosts/gpu02.yaml",
        "{ profile: 2g.35gb, placement: 0 }",
        "{ profile: 2g.35gb, placement: 4 }",
        "fabrik::mig::overlap",
    ),
    (
        "hosts/gpu02.yaml",
        "{ profile: 3g.71gb, placement: 4 }",
        "{ profile: 3g.40gb, placement: 4 }",
        "fabrik::mig::unknown-profile",
    ),
    (
        "hosts/gpu02.yaml",
        "{ profile: 3g.71gb, placement: 4 }",
        "{ profile: 3g.71gb, placement: 2 }",
        "fabrik::mig::placement",
    ),
    ("hosts/gpu02.yaml", "        mode: mig\n", "        mode: passthrough\n", "fabrik::mig::mode-conflict"),
    // Exclusive assignment: acme-dev's hand-pinned GPUs.
    (
        "tenants/acme.yaml",
        "gpus: [\"0000:43:00.0\", \"0000:52:00.0\"]",
        "gpus: [\"0000:43:00.0\", \"0000:61:00.0\"]",
        "fabrik::gpu::mode-mismatch",
    ),
    (
        "tenants/acme.yaml",
        "gpus: [\"0000:43:00.0\", \"0000:52:00.0\"]",
        "gpus: [\"0000:43:00.0\"]",
        "fabrik::gpu::count-mismatch",
    ),
    // NUMA: acme-dev's vCPUs pinned on socket 0, beside its GPUs.
    ("tenants/acme.yaml", "cpus: 8-23,120-135", "cpus: 8-23,176-191", "fabrik::numa::split"),
    ("tenants/acme.yaml", "cpus: 8-23,120-135", "cpus: 0-15,120-135", "fabrik::numa::reserved-cpu"),
    ("tenants/acme.yaml", "cpus: 8-23,120-135", "cpus: 8-15,120-127", "fabrik::numa::too-few-cpus"),
    // Capacity: gpu02's hugepage pools back the VMs' 1G pages.
    (
        "hosts/gpu02.yaml",
        "        memory: 1TiB\n        hugepages: { 1G: 768 }\n      - id: 1",
        "        memory: 1TiB\n        hugepages: { 1G: 8 }\n      - id: 1",
        "fabrik::numa::node-hugepages",
    ),
    (
        "hosts/gpu01.yaml",
        "reserved-cpus: 0-3,56-59,112-115,168-171",
        "reserved-cpus: 0-31,56-87,112-143,168-199",
        "fabrik::capacity::host-cpus",
    ),
    ("templates.yaml", "      count: 8", "      count: 9", "fabrik::capacity::host-gpus"),
    // Fabric: gpu02's NVLink domain holds GPUs of three tenants; partitioned, it may not.
    (
        "factory.yaml",
        "factory: ai-factory\n",
        "factory: ai-factory\nnvlink-domains:\n  - { name: gpu02-nvl, partitioned: true }\n",
        "fabrik::fabric::partition-split",
    ),
    // Fabric: the storage VLAN's jumbo frames need a jumbo `stor0` on every host.
    ("hosts/gpu01.yaml", "sriov-vfs: 32, mtu: 9000", "sriov-vfs: 32, mtu: 1500", "fabrik::fabric::mtu-above-parent"),
    // Quotas.
    ("tenants/globex.yaml", "vms: 10", "vms: 2", "fabrik::quota::vms"),
    ("tenants/globex.yaml", "gpus: { H200-141GB: 4 }", "gpus: { H200-141GB: 1 }", "fabrik::quota::gpus"),
    ("tenants/globex.yaml", "mig-slices: 7", "mig-slices: 2", "fabrik::quota::mig-slices"),
    ("tenants/acme.yaml", "vcpus: 512", "vcpus: 64", "fabrik::quota::vcpus"),
    // Tenant isolation.
    (
        "tenants/globex.yaml",
        "nics: [globex-net, storage]",
        "nics: [acme-net, storage]",
        "fabrik::isolation::foreign-network",
    ),
    (
        "tenants/globex.yaml",
        "sharing: [exclusive, mig]",
        "sharing: [exclusive]",
        "fabrik::isolation::sharing-not-accepted",
    ),
    ("tenants/globex.yaml", "hosts: [fe01, gpu02]", "hosts: [fe01, gpu01]", "fabrik::isolation::foreign-host"),
    ("networks.yaml", "vni: 10002", "vni: 10001", "fabrik::isolation::duplicate-vni"),
    ("networks.yaml", "pkey: 0x8002", "pkey: 0x8001", "fabrik::isolation::duplicate-pkey"),
    // What plan and apply rely on, checked offline: the networks' parent NICs.
    ("networks.yaml", "parent: pub0", "parent: pub1", "fabrik::fabric::unknown-parent"),
    ("networks.yaml", "pkey: 0x8001\n    parent: ib0", "pkey: 0x8001\n    parent: fe0", "fabrik::fabric::parent-kind"),
    ("hosts/gb01.yaml", "ip: 10.10.0.14", "ip: \"fd00::14\"", "fabrik::fabric::underlay-family"),
    // VMs on hosts their networks and pools reach.
    ("networks.yaml", "    hosts: [fe01]\n", "    hosts: [gpu01]\n", "fabrik::fabric::network-not-on-host"),
    (
        "storage.yaml",
        "    hosts: [gpu01, gpu02, gb01]\n",
        "    hosts: [gpu01, gb01]\n",
        "fabrik::capacity::pool-not-on-host",
    ),
    ("tenants/acme.yaml", "pool: vms, size: 40GiB", "pool: vms, size: 2GiB", "fabrik::capacity::disk-below-image"),
    (
        "hosts/gb01.yaml",
        "uri: qemu+ssh://root@gb01.factory.example/system",
        "uri: qemu+ssh://root@gpu01.factory.example/system",
        "fabrik::capacity::duplicate-uri",
    ),
    (
        "templates.yaml",
        "memory: 128GiB\n    hugepages: 1G",
        "memory: 127500MiB\n    hugepages: 1G",
        "fabrik::numa::hugepage-fraction",
    ),
    // globex-vllm is placed by fabrik: no node of globex's hosts holds 900 1G pages.
    (
        "templates.yaml",
        "memory: 128GiB\n    hugepages: 1G",
        "memory: 900GiB\n    hugepages: 1G",
        "fabrik::numa::no-node",
    ),
];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn each_broken_feature_is_caught_by_its_rule() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ai-factory");
    let clean = fabrik::check::validate(&example);
    assert!(clean.diags.is_empty(), "the example itself must be clean");
    let mut failures = Vec::new();
    for (file, from, to, code) in CASES {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&example, dir.path());
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(from).count(), 1, "{file}: `{from}` must occur exactly once");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let v = fabrik::check::validate(dir.path());
        let codes: Vec<&str> = v.diags.iter().map(|d| d.code).collect();
        if !codes.contains(code) {
            failures.push(format!("{file}: `{from}` → `{to}` should give {code}, gave {codes:?}"));
        }
        if v.diags.iter().any(|d| d.code.starts_with("fabrik::spec::") || d.code.starts_with("fabrik::ref::")) {
            failures.push(format!("{file}: `{from}` → `{to}` broke the language, not a rule: {codes:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
