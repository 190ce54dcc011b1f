//! The hardware paths of the reference factory as rendered: the GB200 VM as an Arm
//! `virt` machine, guest NUMA cells with the host's distances and GPU-memory cells, and
//! every rendered domain, network, pool and volume of every example checked against
//! libvirt's own schemas with `virt-xml-validate` (libvirt-clients + libxml2-utils,
//! installed by scripts/setup.sh). Without the tool the schema test fails under
//! `CI=true` and is skipped with a printed reason elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

use fabrik::desired::{Desired, DesiredHost, DesiredVm};
use fabrik::render;

fn example(name: &str) -> Desired {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    let v = fabrik::check::validate(&path);
    assert!(v.is_valid(), "{name} is valid");
    fabrik::desired::build(&v.spec).unwrap_or_else(|_| panic!("{name} builds"))
}

fn vm<'a>(d: &'a Desired, name: &str) -> (&'a DesiredHost, &'a DesiredVm) {
    d.hosts
        .iter()
        .find_map(|h| h.vms.iter().find(|v| v.name == name).map(|v| (h, v)))
        .unwrap_or_else(|| panic!("no VM {name}"))
}

#[test]
fn the_gb200_vm_is_an_arm_virt_machine() {
    let d = example("ai-factory");
    let (host, vm) = vm(&d, "acme-gb200");
    let xml = render::domain(&d.factory, host, vm);
    for want in [
        "<type arch='aarch64' machine='virt'>hvm</type>",
        "<loader readonly='yes' type='pflash'>/usr/share/AAVMF/AAVMF_CODE.fd</loader>",
        "<nvram template='/usr/share/AAVMF/AAVMF_VARS.fd'/>",
        "<gic version='3'/>",
        "<iommu model='smmuv3'/>",
    ] {
        assert!(xml.contains(want), "missing {want}:\n{xml}");
    }
    for x86 in ["<apic/>", "q35", "x86_64"] {
        assert!(!xml.contains(x86), "x86-only `{x86}` in an aarch64 domain:\n{xml}");
    }
    // Two CPU cells on the Grace nodes, four cells of GPU memory (one per GB200), each
    // with the host's distances.
    let cells: Vec<&str> = xml.match_indices("<cell ").map(|(i, _)| &xml[i..i + xml[i..].find('>').unwrap()]).collect();
    assert_eq!(cells.len(), 6, "{xml}");
    assert_eq!(cells.iter().filter(|c| !c.contains("cpus=")).count(), 4, "{cells:?}");
    assert!(cells.iter().filter(|c| !c.contains("cpus=")).all(|c| c.contains("memory='0'")), "{cells:?}");
    assert_eq!(xml.matches("<distances>").count(), 6, "{xml}");
    assert!(xml.contains("<sibling id='1' value='40'/>"), "{xml}");
    // Guest RAM (and its hugepages) only on the CPU cells, never on GPU memory.
    assert!(xml.contains("<page size='1048576' unit='KiB' nodeset='0-1'/>"), "{xml}");
    assert!(!xml.contains("<memnode cellid='2'"), "{xml}");
}

#[test]
fn x86_vms_keep_q35_and_the_8_gpu_vm_has_distances() {
    let d = example("ai-factory");
    let (host, vm) = vm(&d, "acme-train");
    let xml = render::domain(&d.factory, host, vm);
    assert!(xml.contains("<type arch='x86_64' machine='q35'>hvm</type>") && xml.contains("<apic/>"), "{xml}");
    assert!(!xml.contains("smmuv3") && !xml.contains("<gic"), "{xml}");
    assert_eq!(xml.matches("<distances>").count(), 2, "{xml}");
    assert!(xml.contains("<sibling id='0' value='10'/>") && xml.contains("<sibling id='1' value='21'/>"), "{xml}");
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn tool(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Every document fabrik renders for the examples, by kind and name.
fn rendered(d: &Desired) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    for h in &d.hosts {
        for vm in &h.vms {
            out.push((format!("{}/{}", h.name, vm.name), "domain", render::domain(&d.factory, h, vm)));
        }
        for n in &h.networks {
            out.push((format!("{}/{}", h.name, n.name), "network", render::network(&d.factory, n)));
        }
        for p in &h.pools {
            out.push((format!("{}/{}", h.name, p.name), "storagepool", render::pool(p)));
        }
        for v in &h.volumes {
            out.push((format!("{}/{}/{}", h.name, v.pool, v.name), "storagevol", render::volume(h, v)));
        }
    }
    out
}

#[test]
fn every_rendered_document_of_every_example_passes_virt_xml_validate() {
    let (Some(validate), Some(_)) = (tool("virt-xml-validate"), tool("xmllint")) else {
        let why = "virt-xml-validate or xmllint is not installed (libvirt-clients, libxml2-utils: scripts/setup.sh)";
        assert!(!in_ci(), "CI=true and {why}");
        eprintln!("skipped: {why}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for name in ["ai-factory", "ai-factory-kdl", "minimal", "minimal-kdl"] {
        for (what, kind, xml) in rendered(&example(name)) {
            let file = dir.path().join(format!("{checked}.xml"));
            std::fs::write(&file, &xml).unwrap();
            let out = Command::new(&validate).arg(&file).arg(kind).output().unwrap();
            assert!(
                out.status.success(),
                "{name}: {kind} {what} fails libvirt's schema:\n{}{}\n{xml}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
            *kinds.entry(kind).or_default() += 1;
        }
    }
    eprintln!("virt-xml-validate: {checked} documents valid ({kinds:?})");
    for kind in ["domain", "network", "storagepool", "storagevol"] {
        assert!(kinds.get(kind).is_some_and(|&n| n > 0), "no {kind} was rendered: {kinds:?}");
    }
}

/// The guest PCI bus (controller index) of the `n`th element `tag` whose text contains
/// `within`, read from its `<address … bus='0x..'`.
fn buses(xml: &str, open: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for (i, _) in xml.match_indices(open) {
        let end =
            i + xml[i..].find(if open.starts_with("<interface") { "</interface>" } else { "</hostdev>" }).unwrap();
        let part = &xml[i..end];
        let Some(at) = part.rfind("<address type='pci'") else { continue };
        let bus = part[at..].split("bus='0x").nth(1).unwrap()[..2].to_string();
        let what = part.split("network='").nth(1).map_or_else(
            || part.split("<address domain=").nth(1).unwrap_or_default().chars().take(40).collect(),
            |n| n.split('\'').next().unwrap().to_string(),
        );
        out.push((what, u32::from_str_radix(&bus, 16).unwrap()));
    }
    out
}

/// The expander bus (its controller index) a root port of index `port` sits on.
fn expander_of(xml: &str, port: u32) -> u32 {
    let tag = format!("<controller type='pci' index='{port}' model='pcie-root-port'>");
    let at = xml.find(&tag).unwrap_or_else(|| panic!("no root port {port}"));
    let bus = xml[at..].split("bus='0x").nth(1).unwrap();
    u32::from_str_radix(&bus[..2], 16).unwrap()
}

#[test]
fn the_8_gpu_vm_gets_one_ib_vf_per_gpu_from_its_rail_behind_its_gpus_bus() {
    let d = example("ai-factory");
    let (host, vm) = vm(&d, "acme-train");
    let xml = render::domain(&d.factory, host, vm);
    let vfs: Vec<(String, u32)> =
        buses(&xml, "<interface type='network'>").into_iter().filter(|(n, _)| n.starts_with("acme-ib")).collect();
    assert_eq!(vfs.len(), 8, "8 IB VFs behind expander buses:\n{xml}");
    let nets: Vec<&str> = vfs.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["acme-ib", "acme-ib+ib1", "acme-ib+ib7"] {
        assert!(nets.contains(&want), "{nets:?}");
    }
    // Each VF's root port is on the same expander bus as its GPU's root port.
    let gpus = buses(&xml, "<hostdev mode='subsystem' type='pci'");
    assert_eq!(gpus.len(), 8, "{xml}");
    for (k, nic) in vm.nics.iter().enumerate() {
        let Some(rail) = &nic.rail else { continue };
        let gpu = host.gpus.iter().position(|g| g.address == rail.gpu).unwrap();
        let gpu_port = gpus.iter().find(|(a, _)| a.contains(&format!("bus='0x{:02x}'", rail.gpu.bus))).unwrap().1;
        let vf_port = vfs.iter().find(|(n, _)| *n == nic.network).unwrap().1;
        assert_eq!(expander_of(&xml, vf_port), expander_of(&xml, gpu_port), "NIC {k} (GPU {gpu}) off its GPU's bus");
        assert_eq!(rail.pf, format!("ib{gpu}"), "NIC {k}: GPU {gpu}'s rail");
    }
    // Every rail's pool exists on the host, over the rail's HCA.
    for i in 1..8 {
        let net = host.networks.iter().find(|n| n.name == format!("acme-ib+ib{i}")).expect("rail network");
        assert_eq!(net.pf.as_deref(), Some(format!("ib{i}").as_str()));
    }
    // The partition has all 8 ports, each on its rail's HCA.
    let ports: Vec<_> = host.ib_ports.iter().filter(|p| p.vm == "acme-train" && p.network == "acme-ib").collect();
    assert_eq!(ports.len(), 8, "{ports:?}");
}

#[test]
fn a_rail_without_enough_vfs_for_the_vms_placed_on_its_gpus_is_an_error() {
    let factory = |vfs: u32| {
        format!(
            "version: 1
factory: f
hosts:
  - name: gpu01
    uri: qemu+ssh://root@gpu01/system
    numa-nodes: [{{ id: 0, cpus: 0-31, memory: 512GiB }}]
    gpus:
      - {{ address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0, rail: ib0, mode: passthrough }}
      - {{ address: \"0000:43:00.0\", model: H200-141GB, numa-node: 0, rail: ib1, mode: passthrough }}
    nics:
      - {{ name: ib0, kind: infiniband, numa-node: 0, sriov-vfs: 8 }}
      - {{ name: ib1, kind: infiniband, numa-node: 0, sriov-vfs: {vfs} }}
tenants:
  - {{ name: acme, hosts: [gpu01], networks: [acme-ib] }}
networks:
  - {{ name: acme-ib, purpose: tenant, kind: ib-partition, tenant: acme, pkey: 0x8001, parent: ib0, hosts: [gpu01] }}
vms:
  - name: train
    tenant: acme
    host: gpu01
    vcpus: 4
    memory: 16GiB
    gpu: {{ model: H200-141GB, count: 2 }}
    nics: [{{ network: acme-ib, model: sriov }}]
"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("factory.yaml");
    for (vfs, ok) in [(1, true), (0, false)] {
        std::fs::write(&file, factory(vfs)).unwrap();
        let v = fabrik::check::validate(&file);
        // `sriov-vfs: 0` on a rail is also refused offline (`fabrik::fabric::rail`).
        if !ok {
            let codes: Vec<&str> = v.diags.iter().map(|d| d.code).collect();
            assert!(codes.contains(&"fabrik::fabric::rail"), "{codes:?}");
            continue;
        }
        assert!(v.is_valid(), "{:?}", v.diags);
        let d = fabrik::desired::build(&v.spec).expect("one VF per rail is enough");
        let (host, vm) = vm(&d, "train");
        assert_eq!(vm.nics.len(), 2, "{:?}", vm.nics);
        assert!(render::domain(&d.factory, host, vm).contains("<source network='acme-ib+ib1'/>"));
    }
    // Two such VMs need two VFs of ib1.
    // Two such VMs on four GPUs, three of them on rail ib1: it needs three VFs.
    let more_gpus = "      - { address: \"0000:52:00.0\", model: H200-141GB, numa-node: 0, rail: ib1, mode: passthrough }\n      \
                     - { address: \"0000:61:00.0\", model: H200-141GB, numa-node: 0, rail: ib1, mode: passthrough }\n    nics:\n";
    let two = factory(1).replace("  - name: train\n", "  - name: train\n    replicas: 2\n").replacen(
        "    nics:\n",
        more_gpus,
        1,
    );
    std::fs::write(&file, two).unwrap();
    let v = fabrik::check::validate(&file);
    let errors = match fabrik::desired::build(&v.spec) {
        Ok(_) => panic!("two VMs on one VF of ib1 build: {:?}", v.diags),
        Err(e) => e,
    };
    assert!(errors.iter().any(|e| e.code == "fabrik::place::rail-vfs"), "{errors:?}");
}
