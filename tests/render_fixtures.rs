//! Normalization on recorded libvirtd output: `fixtures/diff/<case>/` holds the XML
//! fabrik rendered (`desired.xml`), what a real libvirtd returned for it or for an
//! earlier version of it (`live.xml`, `virsh dumpxml --inactive`), and `expected`:
//! `equal`, or the changed lines of the canonical forms (`-` live, `+` desired).
//!
//! The cases are captured by tests/render_testbed.rs with `FABRIK_CAPTURE_FIXTURES=1`.

use std::path::{Path, PathBuf};

use fabrik::render::normalize;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/diff");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

#[test]
fn fixtures_compare_as_expected() {
    let cases = cases();
    for want in ["pinned", "hugepages", "numa-cells", "gpu-expander", "sriov-nic", "nics-disks", "memory-changed"] {
        assert!(cases.iter().any(|c| c.ends_with(want)), "fixture case {want} is missing");
    }
    for dir in cases {
        let (desired, live, expected) = (read(&dir, "desired.xml"), read(&dir, "live.xml"), read(&dir, "expected"));
        let cmp = normalize::compare(&desired, &live).unwrap();
        let got = if cmp.has_changes() { cmp.changes().join("\n") } else { "equal".to_string() };
        assert_eq!(got, expected.trim_end(), "{}:\n{}", dir.display(), cmp.unified());
    }
}

/// What fabrik renders survives normalization: its devices, its PCI topology, its mark.
#[test]
fn normalization_keeps_what_fabrik_sets() {
    for dir in cases() {
        let desired = read(&dir, "desired.xml");
        let canonical = normalize::domain(&desired).unwrap();
        for tag in ["<hostdev ", "<interface ", "<disk ", "<controller ", "<vcpupin ", "<cell ", "<memnode ", "<mac "] {
            assert_eq!(
                canonical.matches(tag).count(),
                desired.matches(tag).count(),
                "{}: `{tag}` lost or gained in normalization:\n{canonical}",
                dir.display()
            );
        }
        assert!(canonical.contains("<fabrik:owner "), "{}: the mark is dropped", dir.display());
        // Normalizing is idempotent.
        assert_eq!(normalize::domain(&canonical).unwrap(), canonical, "{}", dir.display());
    }
}

/// The canonical form of a GPU VM's live XML, as `fabrik plan --diff` compares it.
#[test]
fn gpu_vm_canonical_form() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/diff/gpu-expander");
    insta::assert_snapshot!(normalize::domain(&read(&dir, "live.xml")).unwrap());
}
