//! The examples shipped in `examples/` are valid, each YAML/KDL pair describes the same
//! factory, and the reference AI factory keeps the features it is there to show.

use std::path::{Path, PathBuf};

use fabrik::check::{Validation, validate};
use fabrik::diag::render::{Style, human};
use serde_json::Value;

/// YAML examples and their KDL twins.
const PAIRS: &[(&str, &str)] = &[("ai-factory", "ai-factory-kdl"), ("minimal", "minimal-kdl")];

/// The top-level lists of a factory; each is compared as a set, by `name`.
const LISTS: &[&str] = &["hosts", "tenants", "networks", "pools", "images", "templates", "vms"];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Validates an example and fails the test, with every diagnostic, unless it is
/// free of errors and warnings.
fn validated(name: &str) -> Validation {
    let path = examples_dir().join(name);
    let v = validate(&path);
    if !v.diags.is_empty() {
        let rendered: Vec<String> = v.diags.iter().map(|d| human(d, &v.sources, Style::Plain)).collect();
        panic!(
            "examples/{name}: {} errors, {} warnings\n\n{}",
            v.diags.error_count(),
            v.diags.warning_count(),
            rendered.join("\n")
        );
    }
    v
}

/// The model as JSON, with each top-level list sorted by name so that the order of
/// files and of objects within them does not matter.
fn model(v: &Validation) -> Value {
    let mut json = serde_json::to_value(&v.spec).expect("the model serializes");
    for key in LISTS {
        let Some(Value::Array(items)) = json.get_mut(*key) else {
            panic!("the model has no `{key}` list");
        };
        items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    }
    json
}

#[test]
fn every_example_is_valid_without_warnings() {
    let mut names: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("examples/ is readable")
        .map(|e| e.expect("directory entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for (yaml, kdl) in PAIRS {
        assert!(names.iter().any(|n| n == yaml), "examples/{yaml} is missing");
        assert!(names.iter().any(|n| n == kdl), "examples/{kdl} is missing");
    }
    for name in &names {
        let v = validated(name);
        assert!(!v.spec.hosts.is_empty(), "examples/{name} declares no host");
    }
}

/// The first place where two JSON values differ: its path and both values there.
fn first_difference(a: &Value, b: &Value, path: String) -> Option<(String, String, String)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))).find_map(|k| {
                let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                first_difference(va, vb, format!("{path}/{k}"))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (va, vb))| first_difference(va, vb, format!("{path}/{i}")))
        }
        _ if a == b => None,
        _ => Some((path, a.to_string(), b.to_string())),
    }
}

/// Factory files below `dir`, relative to it, in path order.
fn factory_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("example directory is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "kdl") {
                out.push(path.strip_prefix(dir).expect("below dir").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Editors find the schema through the first line of every YAML file; a wrong relative
/// path silently turns completion off, so check that it resolves.
#[test]
fn every_yaml_example_names_the_schema() {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/fabrik.schema.json");
    let schema = schema.canonicalize().expect("schema/fabrik.schema.json exists");
    let examples = examples_dir();
    for file in factory_files(&examples).iter().filter(|f| f.extension().is_some_and(|e| e != "kdl")) {
        let path = examples.join(file);
        let text = std::fs::read_to_string(&path).expect("example is readable");
        let first = text.lines().next().unwrap_or_default();
        let Some(target) = first.strip_prefix("# yaml-language-server: $schema=") else {
            panic!("examples/{} does not start with `# yaml-language-server: $schema=…`", file.display());
        };
        let resolved = path.parent().expect("file has a directory").join(target).canonicalize();
        assert_eq!(
            resolved.ok().as_deref(),
            Some(schema.as_path()),
            "examples/{}: `{target}` is not the path to schema/fabrik.schema.json",
            file.display()
        );
    }
}

#[test]
fn yaml_and_kdl_twins_give_the_same_model() {
    for (yaml, kdl) in PAIRS {
        // The twins keep the same files, so that one can be read beside the other.
        let stems = |name: &str| -> Vec<PathBuf> {
            factory_files(&examples_dir().join(name)).into_iter().map(|f| f.with_extension("")).collect()
        };
        assert_eq!(stems(yaml), stems(kdl), "examples/{yaml} and examples/{kdl} have different files");
        let (a, b) = (model(&validated(yaml)), model(&validated(kdl)));
        if let Some((path, in_yaml, in_kdl)) = first_difference(&a, &b, String::new()) {
            panic!(
                "examples/{yaml} and examples/{kdl} give different models; the first difference is at {path}:\n  \
                 {yaml}: {in_yaml}\n  {kdl}: {in_kdl}"
            );
        }
        assert_eq!(a, b);
    }
}

/// The reference factory must keep showing what it is the reference for; a change
/// that drops one of these fails here instead of shrinking the example silently.
#[test]
fn ai_factory_shows_the_reference_architecture() {
    use fabrik::hw::GpuModel;
    use fabrik::spec::model::{GpuMode, NetKind, NicKind, Power, Purpose, Sharing};

    let v = validated("ai-factory");
    let spec = &v.spec;
    assert_eq!(spec.factory.as_ref().map(|f| f.value.as_str()), Some("ai-factory"));
    assert!(v.sources.len() >= 6, "the factory is split over several files");

    // Hosts: a front end without GPUs, HGX H200 servers, a GB200 NVL4 node.
    assert!(spec.hosts.iter().any(|h| h.gpus.is_empty()), "a front-end host without GPUs");
    let hgx = spec
        .hosts
        .iter()
        .filter(|h| {
            h.numa_nodes.len() == 2
                && h.gpus.len() == 8
                && h.gpus.iter().all(|g| g.model.value == GpuModel::H200_141GB)
                && h.nics.iter().filter(|n| n.kind.value == NicKind::Infiniband).count() == 8
        })
        .count();
    assert!(hgx >= 2, "at least two HGX H200 hosts with 8 InfiniBand NICs, found {hgx}");
    assert!(
        spec.hosts.iter().any(|h| h.gpus.len() == 4 && h.gpus.iter().all(|g| g.model.value == GpuModel::GB200)),
        "a GB200 NVL4 host"
    );
    for h in &spec.hosts {
        assert!(h.uri.value.starts_with("qemu+ssh://"), "host `{}` is reached over ssh", h.name.value);
        assert!(h.agent.is_some(), "host `{}` has an agent command", h.name.value);
        assert!(h.reserved_cpus.is_some(), "host `{}` reserves CPUs", h.name.value);
    }

    // GPUs: one in MIG mode, passthrough GPUs for training.
    let gpus = || spec.hosts.iter().flat_map(|h| &h.gpus);
    assert!(gpus().any(|g| g.mode.value == GpuMode::Mig && g.mig.len() >= 2), "a GPU in MIG mode");
    assert!(gpus().filter(|g| g.mode.value == GpuMode::Passthrough).count() >= 8, "passthrough GPUs");

    // Tenants: at least three, with quotas, one accepting MIG besides exclusive GPUs.
    assert!(spec.tenants.len() >= 3, "at least three tenants");
    assert!(spec.tenants.iter().all(|t| t.quota.is_some()), "every tenant has a quota");
    let accepts_mig = spec.tenants.iter().filter(|t| t.sharing.iter().any(|s| s.value == Sharing::Mig)).count();
    assert!(accepts_mig >= 2, "two tenants accept MIG");

    // Networks of every kind the reference architecture needs.
    let has_net = |purpose: Purpose, kind: NetKind| {
        spec.networks.iter().any(|n| n.purpose.value == purpose && n.kind.value == kind)
    };
    assert!(has_net(Purpose::Management, NetKind::Bridge), "a management bridge");
    assert!(has_net(Purpose::Storage, NetKind::Vlan), "a storage VLAN");
    assert!(spec.networks.iter().any(|n| n.purpose.value == Purpose::Public && n.shared), "a shared public network");
    assert!(spec.networks.iter().any(|n| n.kind.value == NetKind::Sriov), "an SR-IOV network");
    let per_tenant =
        |kind: NetKind| spec.networks.iter().filter(|n| n.kind.value == kind && n.tenant.is_some()).count();
    assert!(per_tenant(NetKind::Vxlan) >= 3, "a VXLAN network per tenant");
    assert!(per_tenant(NetKind::IbPartition) >= 2, "InfiniBand partitions for tenants");

    // Storage and templates.
    assert!(!spec.pools.is_empty() && !spec.images.is_empty(), "pools and images");
    for name in ["vllm-inference", "train-8gpu", "notebook"] {
        assert!(spec.template(name).is_some(), "template `{name}`");
    }

    // VMs: replicas, host and GPU pins, stopped ones, MIG instances of two tenants,
    // an empty scratch disk that goes with its VM.
    let vms = &spec.vms;
    assert!(vms.iter().any(|vm| vm.replicas.as_ref().is_some_and(|r| r.value > 1)), "a VM with replicas");
    assert!(vms.iter().any(|vm| !vm.gpus.is_empty() && vm.host.is_some()), "a VM with GPU pins");
    assert!(vms.iter().any(|vm| vm.cpus.is_some()), "a VM with pinned CPUs");
    assert!(vms.iter().any(|vm| vm.power.value == Power::Stopped), "a stopped VM");
    let mig_tenants: std::collections::BTreeSet<&str> = vms
        .iter()
        .filter(|vm| {
            let template = vm.template.as_ref().and_then(|t| spec.template(&t.value));
            let gpu = vm.workload.gpu.as_ref().or(template.and_then(|t| t.workload.gpu.as_ref()));
            gpu.is_some_and(|g| g.mig.is_some())
        })
        .map(|vm| vm.tenant.value.as_str())
        .collect();
    assert!(mig_tenants.len() >= 2, "MIG instances go to VMs of two tenants, found {mig_tenants:?}");
    let workloads = spec.templates.iter().map(|t| &t.workload).chain(vms.iter().map(|vm| &vm.workload));
    let disks: Vec<_> = workloads.flat_map(|w| w.disks.iter().flatten()).collect();
    assert!(disks.iter().any(|d| d.image.is_some()), "a disk from an image");
    assert!(disks.iter().any(|d| d.image.is_none() && d.delete_with_vm), "an empty scratch disk deleted with its VM");
}
