//! InfiniBand partitions enforced: every VM port on a partition has GUIDs of its own,
//! and the subnet manager's partition table lists them under the partition's pkey.
//!
//! `fixtures/opensm/ai-factory.partitions.conf` is the golden `partitions.conf` of the
//! reference factory; `FABRIK_BLESS=1` writes it again (review the diff). No
//! InfiniBand fabric or subnet manager runs here: what OpenSM does with the file is
//! not exercised, only what fabrik writes.

use std::collections::HashSet;
use std::path::Path;

use fabrik::desired::ib::{Guid, allocate};

fn example() -> fabrik::desired::Desired {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ai-factory");
    let v = fabrik::check::validate(&path);
    fabrik::desired::build(&v.spec).expect("the example builds")
}

#[test]
fn the_reference_factorys_partitions_conf_is_golden() {
    let text = fabrik::render::opensm::partitions_conf(&example());
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/opensm/ai-factory.partitions.conf");
    if std::env::var_os("FABRIK_BLESS").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("the golden file (FABRIK_BLESS=1 writes it)");
    assert_eq!(text, want, "partitions.conf changed; review and bless with FABRIK_BLESS=1");
    // Every VM NIC on acme-ib and globex-ib is a member, under the pkey's low 15 bits.
    assert!(text.contains("acme-ib=0x0001, ipoib :") && text.contains("globex-ib=0x0002, ipoib :"), "{text}");
    assert!(text.contains("Default=0x7fff, ipoib : ALL=limited, SELF=full ;"), "{text}");
}

#[test]
fn every_vm_port_on_a_partition_has_its_own_guids() {
    let d = example();
    let ports: Vec<_> = d.hosts.iter().flat_map(|h| &h.ib_ports).collect();
    let nics_on_ib = d
        .hosts
        .iter()
        .flat_map(|h| &h.vms)
        .flat_map(|v| &v.nics)
        .map(|n| n.rail.as_ref().map_or(n.network.as_str(), |r| r.partition.as_str()))
        .filter(|net| *net == "acme-ib" || *net == "globex-ib")
        .count();
    assert_eq!(ports.len(), nics_on_ib, "one port per VM NIC on a partition");
    let mut seen = HashSet::new();
    for p in &ports {
        assert!(seen.insert(p.node_guid) && seen.insert(p.port_guid), "{p:?}");
    }
    // Stable: building again gives the same GUIDs.
    let again: Vec<_> = example().hosts.iter().flat_map(|h| h.ib_ports.clone()).collect();
    assert_eq!(ports.into_iter().cloned().collect::<Vec<_>>(), again);
}

#[test]
fn guids_are_unique_over_100_000_vfs() {
    const VFS: usize = 100_000;
    let names: Vec<(String, String)> = (0..VFS / 4).map(|i| (format!("t{}", i % 97), format!("vm-{i}"))).collect();
    let keys = names.iter().flat_map(|(t, v)| (0..4).map(move |k| (t.as_str(), v.as_str(), k)));
    let guids = allocate("ai-factory", keys);
    assert_eq!(guids.len(), VFS);
    let mut seen: HashSet<Guid> = HashSet::with_capacity(2 * VFS);
    for (node, port) in &guids {
        assert!(seen.insert(*node), "node GUID {node} twice");
        assert!(seen.insert(*port), "port GUID {port} twice");
        assert_eq!((node.0 >> 56) as u8 & 0b11, 0b10, "locally administered unicast: {node}");
    }
    assert_eq!(seen.len(), 2 * VFS);
}

#[test]
fn fabrik_partitions_prints_the_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["partitions", "examples/ai-factory"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let golden = std::fs::read_to_string(root.join("fixtures/opensm/ai-factory.partitions.conf")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), golden);
}
