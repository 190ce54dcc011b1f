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
