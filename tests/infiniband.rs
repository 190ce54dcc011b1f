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

/// A twin host `ib09` with one InfiniBand PF of 4 VFs at a declared address, a partition
/// over it, and `vms` VMs with one NIC on the partition.
fn ib_factory(vms: &[&str]) -> String {
    let mut y = String::from(
        "version: 1\nfactory: ibf\nhosts:\n  - name: ib09\n    uri: \"test:///default\"\n    numa-nodes:\n      - { id: 0, socket: 0, cpus: 0-31, memory: 256GiB }\n    nics:\n      - { name: ib0, address: \"0000:18:00.0\", kind: infiniband, numa-node: 0, sriov-vfs: 4 }\ntenants:\n  - { name: t, hosts: [ib09], networks: [t-ib] }\nnetworks:\n  - { name: t-ib, purpose: tenant, kind: ib-partition, tenant: t, pkey: 0x8001, parent: ib0, hosts: [ib09] }\nvms:\n",
    );
    for vm in vms {
        y.push_str(&format!(
            "  - {{ name: {vm}, tenant: t, vcpus: 1, memory: 1GiB, nics: [{{ network: t-ib, model: sriov }}] }}\n"
        ));
    }
    y
}

fn sim(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(args)
        .args(["--sim", "--state-dir"])
        .arg(dir.join("state"))
        .arg(dir.join("factory.yaml"))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn output(o: &std::process::Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Each VM NIC on the partition gets a fixed VF of `ib0`: apply writes the port's GUIDs to
/// that VF (on the twin, as `ip link set ib0 vf N node_guid … port_guid …` would) before
/// the domain is defined, and the domain names that VF by PCI address (VF n of the twin's
/// `0000:18:00.0` is function n + 1), not libvirt's pool. A second plan is empty; after a
/// reboot (VFs gone, GUIDs with them) apply writes them again before the VMs start.
#[test]
fn guids_are_written_to_fixed_vfs_that_the_domains_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("factory.yaml"), ib_factory(&["a", "b"])).unwrap();
    // The plan: each VM's GUIDs written before its domain is defined.
    let plan = sim(dir.path(), &["plan", "--format", "json"]);
    assert_eq!(plan.status.code(), Some(2), "{}", output(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    for vm in ["a", "b"] {
        let ops = vm_ops(&plan, &format!("vm:ib09/{vm}"));
        let set = ops.iter().position(|o| o == "set-vf-guids").unwrap_or_else(|| panic!("{vm}: {ops:?}"));
        let define = ops.iter().position(|o| o == "define").unwrap_or_else(|| panic!("{vm}: {ops:?}"));
        assert!(set < define, "{vm}: {ops:?}");
    }
    let apply = sim(dir.path(), &["apply", "--yes", "--format", "json"]);
    assert_eq!(apply.status.code(), Some(0), "{}", output(&apply));

    let spec = fabrik::spec::load::load(&dir.path().join("factory.yaml")).spec;
    let desired = fabrik::desired::build(&spec).unwrap();
    let ports = &desired.hosts[0].ib_ports;
    assert_eq!(ports.len(), 2);
    let host = &spec.hosts[0];
    let host_dir = fabrik::sim::host_dir(&dir.path().join("state"), host);
    let links = fabrik::driver::sim_links::SimLinks::load(&host_dir.join("links.json")).unwrap();
    let ib0 = links.links.iter().find(|l| l.link.name == "ib0").unwrap();
    let mut virt = fabrik::sim::virt::open(&host_dir, host).unwrap();
    let domains = virt.domains().unwrap();
    for port in ports {
        let vf = port.vf.expect("a fixed VF");
        let written = ib0.vf_guids.get(&vf).unwrap_or_else(|| panic!("no GUIDs on VF {vf}: {:?}", ib0.vf_guids));
        assert_eq!((written.node, written.port), (port.node_guid, port.port_guid), "{port:?}");
        let d = domains.iter().find(|d| d.name == port.vm).unwrap();
        let iface = &d.interfaces[port.nic];
        assert_eq!(iface.kind, "hostdev", "{}", d.xml);
        assert_eq!(iface.source, format!("0000:18:00.{}", vf + 1), "{}", d.xml);
        assert!(d.xml.contains("<interface type='hostdev' managed='yes'>"), "{}", d.xml);
    }
    let vfs: HashSet<u32> = ports.iter().filter_map(|p| p.vf).collect();
    assert_eq!(vfs.len(), 2, "two VMs, two VFs");
    drop(virt);
    fabrik::sim::release_state(&dir.path().join("state"));

    let again = sim(dir.path(), &["plan"]);
    assert_eq!(again.status.code(), Some(0), "a second plan has nothing to do:\n{}", output(&again));

    fabrik::sim::reboot(&dir.path().join("state"), host).unwrap();
    let links = fabrik::driver::sim_links::SimLinks::load(&host_dir.join("links.json")).unwrap();
    assert!(links.links.iter().all(|l| l.vf_guids.is_empty()), "a reboot takes the VFs and their GUIDs");
    let apply = sim(dir.path(), &["apply", "--yes", "--format", "json"]);
    assert_eq!(apply.status.code(), Some(0), "{}", output(&apply));
    let links = fabrik::driver::sim_links::SimLinks::load(&host_dir.join("links.json")).unwrap();
    let ib0 = links.links.iter().find(|l| l.link.name == "ib0").unwrap();
    assert_eq!(ib0.vf_guids.len(), 2, "written again after the reboot: {:?}", ib0.vf_guids);
    fabrik::sim::release_state(&dir.path().join("state"));
}

/// The op names of the action for `id` in a plan's JSON, in order.
fn vm_ops(plan: &serde_json::Value, id: &str) -> Vec<String> {
    find_ops(plan, id).unwrap_or_else(|| panic!("no action for {id} in {plan:#}"))
}

/// The op names of the action for `id`, if the plan has one.
fn find_ops(plan: &serde_json::Value, id: &str) -> Option<Vec<String>> {
    fn walk<'a>(v: &'a serde_json::Value, id: &str, out: &mut Option<&'a Vec<serde_json::Value>>) {
        match v {
            serde_json::Value::Object(m) => {
                if m.get("id").and_then(|i| i.as_str()) == Some(id)
                    && let Some(serde_json::Value::Array(ops)) = m.get("ops")
                {
                    *out = Some(ops);
                }
                m.values().for_each(|x| walk(x, id, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, id, out)),
            _ => {}
        }
    }
    let mut found = None;
    walk(plan, id, &mut found);
    Some(found?.iter().map(|o| o["op"].as_str().unwrap_or_default().to_string()).collect())
}

/// The subnet manager's partition file, kept through the host's agent (its twin here):
/// written with fabrik's block and OpenSM told to re-read it; the operator's lines
/// around the block kept byte for byte; a hand edit inside the block is planned as a
/// rewrite (drift) and undone; a new VM's port appears in the block.
#[test]
fn the_partition_file_is_kept_on_the_subnet_managers_host() {
    const FILE: &str = "/etc/opensm/partitions.conf";
    let dir = tempfile::tempdir().unwrap();
    let factory =
        |vms: &[&str]| ib_factory(vms).replace("  - name: ib09\n", "  - name: ib09\n    subnet-manager: opensm\n");
    std::fs::write(dir.path().join("factory.yaml"), factory(&["a"])).unwrap();
    let state = dir.path().join("state");
    let apply = |want: i32| {
        let o = sim(dir.path(), &["apply", "--yes"]);
        assert_eq!(o.status.code(), Some(want), "{}", output(&o));
        fabrik::sim::release_state(&state);
        output(&o)
    };
    let plan = sim(dir.path(), &["plan"]);
    assert!(
        output(&plan).contains("+   partitions:ib09/opensm  applied live  write /etc/opensm/partitions.conf"),
        "{}",
        output(&plan)
    );
    apply(0);
    let spec = || fabrik::spec::load::load(&dir.path().join("factory.yaml")).spec;
    let links_file = fabrik::sim::host_dir(&state, &spec().hosts[0]).join("links.json");
    let sm = || fabrik::driver::sim_links::SimLinks::load(&links_file).unwrap().subnet_manager.unwrap();
    let block = || fabrik::render::opensm::partitions_conf(&fabrik::desired::build(&spec()).unwrap());
    let file = sm().files[FILE].clone();
    assert_eq!(fabrik::render::opensm::managed_block(&file, "ibf").unwrap(), Some(block().as_str()));
    assert_eq!(sm().reloads, 1, "OpenSM re-read the file once");

    // The operator's lines before and after the block stay; a hand edit inside is drift.
    let theirs = "# storage partition, the operator's\nstorage=0x0100, ipoib : ALL=full ;\n";
    let edited = format!("{theirs}{}# after\n", file.replace("ALL=limited", "ALL=full"));
    let mut links = fabrik::driver::sim_links::SimLinks::load(&links_file).unwrap();
    links.subnet_manager.as_mut().unwrap().files.insert(FILE.into(), edited.clone());
    links.save(&links_file).unwrap();
    let plan = sim(dir.path(), &["plan"]);
    assert_eq!(plan.status.code(), Some(2), "{}", output(&plan));
    assert!(output(&plan).contains("edited by hand"), "{}", output(&plan));
    apply(0);
    let file = sm().files[FILE].clone();
    assert!(file.starts_with(theirs) && file.ends_with("# after\n"), "{file}");
    assert_eq!(fabrik::render::opensm::managed_block(&file, "ibf").unwrap(), Some(block().as_str()));
    assert_eq!(sm().reloads, 2);
    assert_eq!(sim(dir.path(), &["plan"]).status.code(), Some(0), "converged");

    // A new VM: its port joins the partition in the file.
    std::fs::write(dir.path().join("factory.yaml"), factory(&["a", "b"])).unwrap();
    apply(0);
    let d = fabrik::desired::build(&spec()).unwrap();
    let b = d.hosts[0].ib_ports.iter().find(|p| p.vm == "b").unwrap();
    assert!(sm().files[FILE].contains(&format!("{}=full", b.port_guid)), "{}", sm().files[FILE]);

    // OpenSM not running: the write happens, the re-read fails the apply.
    let mut links = fabrik::driver::sim_links::SimLinks::load(&links_file).unwrap();
    let sm_state = links.subnet_manager.as_mut().unwrap();
    sm_state.running = false;
    sm_state.files.insert(FILE.into(), theirs.to_string());
    links.save(&links_file).unwrap();
    let out = apply(1);
    assert!(out.contains("no opensm process runs"), "{out}");
}

/// A partition whose hosts talk on it (`host-interface: true`) gets an IPoIB child of its
/// parent on each host, `ib0.8001`, marked as fabrik's; a second plan is empty.
#[test]
fn a_partition_with_a_host_interface_gets_an_ipoib_child() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = ib_factory(&["a"])
        .replace("parent: ib0, hosts: [ib09] }", "parent: ib0, hosts: [ib09], host-interface: true }");
    std::fs::write(dir.path().join("factory.yaml"), yaml).unwrap();
    let plan = sim(dir.path(), &["plan"]);
    assert!(output(&plan).contains("link:ib09/ib0.8001"), "{}", output(&plan));
    let apply = sim(dir.path(), &["apply", "--yes"]);
    assert_eq!(apply.status.code(), Some(0), "{}", output(&apply));
    fabrik::sim::release_state(&dir.path().join("state"));
    let spec = fabrik::spec::load::load(&dir.path().join("factory.yaml")).spec;
    let links_file = fabrik::sim::host_dir(&dir.path().join("state"), &spec.hosts[0]).join("links.json");
    let links = fabrik::driver::sim_links::SimLinks::load(&links_file).unwrap();
    let child = links.links.iter().find(|l| l.link.name == "ib0.8001").expect("the IPoIB child");
    assert_eq!(child.link.kind, fabrik::live::LinkKind::Ipoib { parent: "ib0".into(), pkey: 0x8001 });
    assert!(child.link.alias.as_deref().is_some_and(|a| a.contains("ibf")), "marked: {:?}", child.link.alias);
    let again = sim(dir.path(), &["plan"]);
    assert_eq!(again.status.code(), Some(0), "{}", output(&again));
}

/// A VM fabrik defined keeps the VF its domain names, as it keeps its MACs: with `a`
/// moved by hand to another free VF the plan is empty (no restart), and a VM added later
/// takes a VF nobody holds.
#[test]
fn a_defined_vm_keeps_its_vf() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("factory.yaml"), ib_factory(&["a", "b"])).unwrap();
    let apply = sim(dir.path(), &["apply", "--yes"]);
    assert_eq!(apply.status.code(), Some(0), "{}", output(&apply));
    fabrik::sim::release_state(&dir.path().join("state"));
    let spec = fabrik::spec::load::load(&dir.path().join("factory.yaml")).spec;
    let ports = fabrik::desired::build(&spec).unwrap().hosts[0].ib_ports.clone();
    let taken: Vec<u32> = ports.iter().filter_map(|p| p.vf).collect();
    let a = ports.iter().find(|p| p.vm == "a").unwrap();
    let free = (0..4).find(|n| !taken.contains(n)).unwrap();
    let host_dir = fabrik::sim::host_dir(&dir.path().join("state"), &spec.hosts[0]);
    {
        let mut virt = fabrik::sim::virt::open(&host_dir, &spec.hosts[0]).unwrap();
        let d = virt.domains().unwrap().into_iter().find(|d| d.name == "a").unwrap();
        let at = |n: u32| format!("bus='0x18' slot='0x00' function='0x{:x}'", n + 1);
        assert!(d.xml.contains(&at(a.vf.unwrap())), "{}", d.xml);
        virt.define_domain(&d.xml.replace(&at(a.vf.unwrap()), &at(free))).unwrap();
    }
    fabrik::sim::release_state(&dir.path().join("state"));
    let plan = sim(dir.path(), &["plan"]);
    assert_eq!(plan.status.code(), Some(0), "`a` keeps the VF its domain names:\n{}", output(&plan));
    // A third VM: a VF neither `a` (now on `free`) nor `b` holds.
    std::fs::write(dir.path().join("factory.yaml"), ib_factory(&["a", "b", "c"])).unwrap();
    let plan = sim(dir.path(), &["plan", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let c_ops = vm_ops(&json, "vm:ib09/c");
    assert!(c_ops.contains(&"set-vf-guids".to_string()), "{c_ops:?}");
    assert_eq!(find_ops(&json, "vm:ib09/a"), None, "`a` is left alone");
    let b = ports.iter().find(|p| p.vm == "b").unwrap().vf.unwrap();
    let c_vf = json.to_string();
    for held in [free, b] {
        assert!(!c_vf.contains(&format!("\"vf\":{held},")), "c took VF {held}: {c_vf}");
    }
}
