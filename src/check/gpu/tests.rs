//! Tests of the module beside it.

use super::*;
use crate::spec::load::load_bytes;
use crate::spec::source::{Sources, Syntax};

pub(in crate::check) fn spec(text: &str) -> Spec {
    let mut sources = Sources::default();
    let (_, spec, diags) = load_bytes(&mut sources, "f.yaml".into(), Syntax::Yaml, text.into());
    assert!(diags.is_empty(), "{diags:?}");
    spec
}

fn codes(text: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    check(&spec(text), &mut out);
    out.iter().map(|d| d.code).collect()
}

const HOST: &str = "version: 1
hosts:
  - name: gpu01
    uri: qemu:///system
    numa-nodes: [{ id: 0, cpus: 0-31, memory: 512GiB }]
    gpus:
      - { address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0, mig: [3g.71gb, 1g.18gb, 1g.18gb] }
      - { address: \"0000:43:00.0\", model: H200-141GB, numa-node: 0, mig: [3g.71gb, 1g.18gb, 1g.18gb] }
      - { address: \"0000:52:00.0\", model: H200-141GB, numa-node: 0, mode: passthrough }
tenants:
  - { name: t, hosts: [gpu01], sharing: [exclusive, mig] }
vms:
";

#[test]
fn requests_read_as_an_operator_would_say_them() {
    let s = spec(&format!(
        "{HOST}  - {{ name: a, tenant: t, vcpus: 1, memory: 1GiB, gpu: {{ model: GB200, count: 2 }} }}
  - {{ name: b, tenant: t, vcpus: 1, memory: 1GiB, gpu: {{ model: H200-141GB, mig: 1g.18gb }} }}
  - {{ name: c, tenant: t, vcpus: 1, memory: 1GiB, gpu: {{ model: H200-141GB, time-sliced: true }} }}
"
    ));
    let said: Vec<String> = s.vms.iter().map(|vm| describe(vm.workload.gpu.as_ref().unwrap())).collect();
    assert_eq!(
        said,
        ["2 whole GB200 GPUs", "a `1g.18gb` MIG instance of an H200-141GB", "a time slice of an H200-141GB"]
    );
}

#[test]
fn a_defaulted_count_is_told_from_a_written_one() {
    let s = spec(&format!(
        "{HOST}  - {{ name: a, tenant: t, vcpus: 1, memory: 1GiB, gpu: {{ model: H200-141GB }} }}
  - {{ name: b, tenant: t, vcpus: 1, memory: 1GiB, gpu: {{ model: H200-141GB, count: 1 }} }}
  - {{ name: c, tenant: t, vcpus: 1, memory: 1GiB, gpu: {{ count: 1, model: H200-141GB }} }}
"
    ));
    let written: Vec<bool> = s.vms.iter().map(|vm| count_written(vm.workload.gpu.as_ref().unwrap())).collect();
    assert_eq!(written, [false, true, true]);
}

#[test]
fn mig_instances_over_several_pinned_gpus_count_one_per_gpu_and_replica() {
    // Three instances over two GPUs: one GPU may give two. Two `1g.18gb` each: fits.
    let fits = "  - name: a
    tenant: t
    host: gpu01
    vcpus: 1
    memory: 1GiB
    gpus: [\"0000:1b:00.0\", \"0000:43:00.0\"]
    gpu: { model: H200-141GB, mig: 1g.18gb, count: 3 }
";
    assert_eq!(codes(&format!("{HOST}{fits}")), Vec::<&str>::new());
    // Three replicas need at least three instances on each pinned GPU, which has two.
    let over = fits.replace("    tenant: t\n", "    tenant: t\n    replicas: 3\n");
    assert_eq!(codes(&format!("{HOST}{over}")), ["fabrik::gpu::mig-instances", "fabrik::gpu::mig-instances"]);
}

#[test]
fn a_vm_scaled_to_zero_holds_no_gpu() {
    let vms = "  - { name: a, tenant: t, host: gpu01, vcpus: 1, memory: 1GiB, gpus: [\"0000:52:00.0\"], gpu: { model: H200-141GB } }
  - { name: b, tenant: t, replicas: 0, host: gpu01, vcpus: 1, memory: 1GiB, gpus: [\"0000:52:00.0\"], gpu: { model: H200-141GB } }
";
    assert_eq!(codes(&format!("{HOST}{vms}")), Vec::<&str>::new());
    let both = vms.replace("replicas: 0, ", "");
    assert_eq!(codes(&format!("{HOST}{both}")), ["fabrik::gpu::pinned-twice"]);
}

#[test]
fn a_time_slice_without_a_host_looks_at_every_host_of_the_tenant() {
    let two_hosts = HOST.replace(
        "tenants:",
        "  - name: gpu02
    uri: qemu:///system
    numa-nodes: [{ id: 0, cpus: 0-31, memory: 512GiB }]
    gpus:
      - { address: \"0000:61:00.0\", model: H200-141GB, numa-node: 0, mode: time-sliced }
tenants:",
    );
    let vm = "  - { name: v, tenant: t, vcpus: 1, memory: 1GiB, gpu: { model: H200-141GB, time-sliced: true } }\n";
    assert_eq!(codes(&format!("{HOST}{vm}")), ["fabrik::gpu::no-time-sliced-gpu"]);
    let with_gpu02 = two_hosts.replace("hosts: [gpu01]", "hosts: [gpu01, gpu02]");
    assert_eq!(codes(&format!("{with_gpu02}{vm}")), Vec::<&str>::new());
}
