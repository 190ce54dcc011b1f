//! Addresses on the twins (`--sim`): apply records each NIC's address in its domain's
//! mark, and VMs added or removed around a VM never move its address, even in a pool so
//! small that a new VM's hash lands on an address already held.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::text;

fn fabrik(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(args)
        .arg(dir.join("factory"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A factory whose network hands out 10.20.0.10 to 10.20.0.14, with these VMs on it.
fn write(dir: &Path, vms: &[&str]) {
    let mut f = String::from(
        "version: 1\nfactory: addr\nhosts:\n  - { name: kvm01, uri: \"qemu:///system\", numa-nodes: [{ id: 0, cpus: 0-15, memory: 64GiB }] }\ntenants:\n  - { name: demo, hosts: [kvm01], networks: [demo-net] }\nnetworks:\n  - { name: demo-net, purpose: tenant, kind: bridge, tenant: demo, subnet: 10.20.0.0/24, gateway: 10.20.0.1, ranges: [10.20.0.10-10.20.0.14] }\nvms:\n",
    );
    for vm in vms {
        f.push_str(&format!("  - {{ name: {vm}, tenant: demo, vcpus: 1, memory: 1GiB, nics: [demo-net] }}\n"));
    }
    std::fs::create_dir_all(dir.join("factory")).unwrap();
    std::fs::write(dir.join("factory/factory.yaml"), f).unwrap();
}

fn apply(dir: &Path) {
    let o = fabrik(&["apply", "--sim", "--yes"], dir);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Verified"), "{}", text(&o));
}

/// Each domain's recorded address, from `fabrik inventory --format json`.
fn recorded(dir: &Path) -> BTreeMap<String, String> {
    let o = fabrik(&["inventory", "--sim", "--format", "json"], dir);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let mut out = BTreeMap::new();
    for d in v["hosts"][0]["live"]["domains"].as_array().unwrap() {
        let addr = &d["addresses"][0];
        assert_eq!(addr[0], 0, "{d}");
        out.insert(d["name"].as_str().unwrap().to_string(), addr[1].as_str().unwrap().to_string());
    }
    out
}

#[test]
fn addresses_are_recorded_and_never_move_when_vms_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &["web"]);
    apply(dir.path());
    let first = recorded(dir.path());
    let web = first["web"].clone();
    assert!(web.starts_with("10.20.0.1") && web.len() == 10, "{web}");

    // Four more VMs fill the pool; names sorting before `web` are allocated first, so
    // without the record one of them would often take `web`'s hash slot.
    write(dir.path(), &["a", "b", "c", "d", "web"]);
    // The case is meaningful: from nothing, these files give `web` another address.
    let fresh = tempfile::tempdir().unwrap();
    write(fresh.path(), &["a", "b", "c", "d", "web"]);
    let o = fabrik(&["plan", "--sim"], fresh.path());
    let line = String::from_utf8_lossy(&o.stdout).lines().find(|l| l.contains("vm:kvm01/web")).map(str::to_string);
    let line = line.unwrap_or_else(|| panic!("{}", text(&o)));
    assert!(line.contains("address 10.20.0.1") && !line.contains(&format!("address {web}/24")), "{line}");
    apply(dir.path());
    let full = recorded(dir.path());
    assert_eq!(full["web"], web, "web moved");
    let mut all: Vec<&String> = full.values().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 5, "{full:?}");

    // Removing VMs moves none of the others.
    write(dir.path(), &["b", "d", "web"]);
    apply(dir.path());
    let after = recorded(dir.path());
    for vm in ["b", "d", "web"] {
        assert_eq!(after[vm], full[vm], "{vm} moved");
    }

    // One VM too many for the pool is refused offline, naming the rule.
    write(dir.path(), &["a", "b", "c", "d", "e", "web"]);
    let o = fabrik(&["plan", "--sim"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("fabrik::address::exhausted"), "{}", text(&o));
}

#[test]
fn plans_name_new_addresses_and_a_changed_declared_one() {
    let dir = tempfile::tempdir().unwrap();
    let factory = |declared: &str| {
        let f = format!(
            "version: 1\nfactory: addr\nhosts:\n  - {{ name: kvm01, uri: \"qemu:///system\", numa-nodes: [{{ id: 0, cpus: 0-15, memory: 64GiB }}] }}\ntenants:\n  - {{ name: demo, hosts: [kvm01], networks: [demo-net, v6] }}\nnetworks:\n  - {{ name: demo-net, purpose: tenant, kind: bridge, tenant: demo, subnet: 10.20.0.0/24, gateway: 10.20.0.1, dns: [10.20.0.2] }}\n  - {{ name: v6, purpose: tenant, kind: bridge, tenant: demo, subnet: \"fd00:20::/64\" }}\nvms:\n  - {{ name: db, tenant: demo, vcpus: 1, memory: 1GiB, nics: [{{ network: demo-net, address: {declared} }}, v6] }}\n  - {{ name: web, tenant: demo, vcpus: 1, memory: 1GiB, nics: [demo-net] }}\n"
        );
        std::fs::create_dir_all(dir.path().join("factory")).unwrap();
        std::fs::write(dir.path().join("factory/factory.yaml"), f).unwrap();
    };
    factory("10.20.0.11");
    let fresh = fabrik(&["plan", "--sim"], dir.path());
    assert_eq!(fresh.status.code(), Some(2), "{}", text(&fresh));
    insta::assert_snapshot!("fresh_plan", String::from_utf8_lossy(&fresh.stdout));
    apply(dir.path());
    factory("10.20.0.12");
    let moved = fabrik(&["plan", "--sim"], dir.path());
    assert_eq!(moved.status.code(), Some(2), "{}", text(&moved));
    insta::assert_snapshot!("declared_address_changed", String::from_utf8_lossy(&moved.stdout));
}
