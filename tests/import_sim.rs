//! `fabrik import` on simulated twins (no root, no KVM): a VM applied to a twin loses its
//! mark, as if made by hand; the factory no longer declares it. Import adopts it through
//! the twin's libvirt (its metadata, no redefine), and with the printed declaration added
//! the plan has nothing to do. `tests/import_testbed.rs` does the same on a real libvirtd.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn fabrik(args: &[&str], factory: &Path, state: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(args)
        .arg("--sim")
        .arg("--state-dir")
        .arg(state)
        .arg(factory)
        .env("NO_COLOR", "1")
        .output()
        .expect("fabrik runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Removes fabrik's mark from every domain of a twin's saved libvirt state.
fn unmark(state: &Path, host: &str) {
    let path = state.join(host).join("libvirt.json");
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for d in doc["domains"].as_array_mut().unwrap() {
        let xml = d["xml"].as_str().unwrap();
        let start = xml.find("<fabrik:owner").expect("a marked domain");
        let end = start + xml[start..].find("/>").unwrap() + 2;
        d["xml"] = format!("{}{}", &xml[..start], &xml[end..]).into();
    }
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
}

#[test]
fn import_adopts_an_unmarked_twin_domain_and_the_plan_is_empty() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (dir, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let o = fabrik(&["apply", "--yes"], &root.join("examples/minimal"), state.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    unmark(state.path(), "kvm01");

    // The same factory without its VM.
    let full = std::fs::read_to_string(root.join("examples/minimal/factory.yaml")).unwrap();
    let without = format!("{}\nvms: []\n", &full[..full.rfind("\nvms:").unwrap()]);
    std::fs::write(dir.path().join("factory.yaml"), without).unwrap();
    // (Without VMs the tenant's network is not desired on the host, but the unmarked
    // domain still uses it: its deletion is held back, naming the domain, and the domain
    // itself is never the factory's to touch.)
    let o = fabrik(&["plan"], dir.path(), state.path());
    let out = text(&o.stdout);
    assert!(!out.contains("vm:kvm01/demo-vm"), "the unmarked domain is not the factory's: {out}");
    assert!(out.contains("held") && out.contains("still carries domain `demo-vm`"), "{out}");

    let dry = fabrik(&["import"], dir.path(), state.path());
    assert_eq!(dry.code(), 0, "{}", text(&dry.stderr));
    assert!(text(&dry.stderr).contains("would mark `demo-vm` on host `kvm01` as `vm:kvm01/demo-vm`"));
    let done = fabrik(&["import", "--yes"], dir.path(), state.path());
    assert_eq!(done.code(), 0, "{}", text(&done.stderr));
    assert!(text(&done.stderr).contains("verified: 1 domain(s)"), "{}", text(&done.stderr));
    let declarations = text(&done.stdout);
    assert!(declarations.contains("name: \"demo-vm\"") && declarations.contains("mac: "), "{declarations}");
    assert_eq!(declarations, text(&dry.stdout), "the dry run showed the same declarations");

    std::fs::write(dir.path().join("imported.yaml"), &declarations).unwrap();
    let plan = fabrik(&["plan", "--format", "json"], dir.path(), state.path());
    let doc: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("a plan document");
    assert_eq!(plan.status.code(), Some(0), "{doc:#}\n{}", text(&plan.stderr));
    assert_eq!(common::all(&doc, "actions"), serde_json::json!([]), "{doc:#}");
    assert_eq!(common::all(&doc, "errors"), serde_json::json!([]), "{doc:#}");
}

trait Code {
    fn code(&self) -> i32;
}

impl Code for Output {
    fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// A host whose libvirt cannot be read is a failure, with libvirt's reason; a `--host`
/// the factory lacks is a usage error. Nothing is marked anywhere.
#[test]
fn an_unreadable_host_fails_and_an_unknown_host_is_a_usage_error() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read_to_string(root.join("examples/minimal/factory.yaml")).unwrap();
    std::fs::write(
        dir.path().join("factory.yaml"),
        full.replace("qemu:///system", "qemu+unix:///system?socket=/nonexistent/fabrik-import-test-sock"),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fabrik"))
            .arg("import")
            .args(extra)
            .arg(dir.path())
            .args(["--host-timeout", "5"])
            .env("NO_COLOR", "1")
            .output()
            .expect("fabrik runs")
    };
    let o = run(&[]);
    assert_eq!(o.code(), 1, "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("nothing on host `kvm01` is imported"), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("its libvirt could not be read"), "{}", text(&o.stderr));
    let o = run(&["--host", "nope"]);
    assert_eq!(o.code(), 64, "{}", text(&o.stderr));
}

/// The factory declares the VM already (today's name clash): plan refuses it and points at
/// import; import marks it with nothing to add, and the plan is empty.
#[test]
fn a_name_clash_is_resolved_by_import_with_nothing_to_add() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (dir, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let o = fabrik(&["apply", "--yes"], &root.join("examples/minimal"), state.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    unmark(state.path(), "kvm01");
    // The declaration import prints, in place of the example's own (whose MAC is derived).
    let full = std::fs::read_to_string(root.join("examples/minimal/factory.yaml")).unwrap();
    std::fs::write(dir.path().join("factory.yaml"), format!("{}\nvms: []\n", &full[..full.rfind("\nvms:").unwrap()]))
        .unwrap();
    let dry = fabrik(&["import"], dir.path(), state.path());
    std::fs::write(dir.path().join("vms.yaml"), &dry.stdout).unwrap();

    let plan = fabrik(&["plan"], dir.path(), state.path());
    assert_eq!(plan.code(), 1, "{}", text(&plan.stderr));
    let said = format!("{}{}", text(&plan.stdout), text(&plan.stderr));
    assert!(said.contains("fabrik::plan::name-clash") && said.contains("fabrik import --domain demo-vm"), "{said}");

    let done = fabrik(&["import", "--yes"], dir.path(), state.path());
    assert_eq!(done.code(), 0, "{}", text(&done.stderr));
    assert!(text(&done.stderr).contains("the factory declares it already"), "{}", text(&done.stderr));
    assert!(text(&done.stdout).is_empty(), "nothing to add: {}", text(&done.stdout));
    let plan = fabrik(&["plan"], dir.path(), state.path());
    assert_eq!(plan.code(), 0, "{}{}", text(&plan.stdout), text(&plan.stderr));
}
