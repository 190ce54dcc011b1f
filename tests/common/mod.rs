//! Helpers the CLI tests share: a command's output as one text, and a factory copied
//! into a temporary folder to change it there.

// Each test crate uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::Output;

/// A command's stdout and stderr, labelled, for assertion messages and searches.
pub fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Copies the folder `from` into `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A plan document's `key` (`actions`, `errors`, `notices`) over all its hosts, in the
/// document's order, as one JSON array.
pub fn all(plan: &serde_json::Value, key: &str) -> serde_json::Value {
    let hosts = plan["hosts"].as_array().map(Vec::as_slice).unwrap_or_default();
    serde_json::Value::Array(hosts.iter().flat_map(|h| h[key].as_array().cloned().unwrap_or_default()).collect())
}

/// A plan document's fingerprints over all its hosts, as one JSON object.
pub fn fingerprints(plan: &serde_json::Value) -> serde_json::Value {
    let hosts = plan["hosts"].as_array().map(Vec::as_slice).unwrap_or_default();
    serde_json::Value::Object(
        hosts.iter().flat_map(|h| h["fingerprints"].as_object().cloned().unwrap_or_default()).collect(),
    )
}

/// Where the apply event of `kind` for the action `id` is in `events`.
pub fn position(events: &[serde_json::Value], kind: &str, id: &str) -> usize {
    events
        .iter()
        .position(|e| e["event"] == kind && e["id"] == id)
        .unwrap_or_else(|| panic!("no `{kind}` event for {id} in {events:#?}"))
}

/// The vGPU tests' first layout of the H200 and the VM on each of its instances.
pub const VGPU_LAYOUT: [&str; 3] = ["2g.35gb@0", "2g.35gb@2", "3g.71gb@4"];
pub const VGPU_VMS: [(&str, &str); 3] = [("a", "2g.35gb"), ("b", "2g.35gb"), ("c", "3g.71gb")];

/// The vGPU tests' factory: host `gpu09` (reached through `agent` when given) with one
/// H200 at 0000:3b:00.0 split as `layout` (`profile@start`), one VM per `(name, profile)`.
pub fn vgpu_factory(agent: Option<&str>, layout: &[&str], vms: &[(&str, &str)]) -> String {
    let agent = agent.map(|a| format!("    agent: {}\n", serde_json::to_string(a).unwrap())).unwrap_or_default();
    let mut y = format!(
        "version: 1\nfactory: vgpu\nhosts:\n  - name: gpu09\n    uri: \"test:///default\"\n{agent}    numa-nodes:\n      - {{ id: 0, socket: 0, cpus: 0-31, memory: 256GiB }}\n    gpus:\n      - address: \"0000:3b:00.0\"\n        model: H200-141GB\n        numa-node: 0\n        mode: mig\n        mig:{}\n",
        if layout.is_empty() { " []" } else { "" }
    );
    for slot in layout {
        let (p, start) = slot.split_once('@').unwrap();
        y.push_str(&format!("          - {{ profile: {p}, placement: {start} }}\n"));
    }
    y.push_str("tenants:\n  - name: t\n    hosts: [gpu09]\n    sharing: [mig]\n");
    if !vms.is_empty() {
        y.push_str("vms:\n");
    }
    for (name, profile) in vms {
        y.push_str(&format!(
            "  - {{ name: {name}, tenant: t, vcpus: 2, memory: 4GiB, gpu: {{ model: H200-141GB, mig: {profile} }} }}\n"
        ));
    }
    y
}
