//! `fabrik plan` tells the truth: no "No changes" after errors, unknown ids are usage
//! errors with close matches, the machine formats always come out, and the exit
//! statuses follow the table in docs/plan.md.

use std::path::Path;
use std::process::{Command, Output};

fn fabrik(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("fabrik runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// examples/minimal with its host's libvirt at a socket nobody listens on.
fn unreadable_factory(dir: &Path) -> String {
    let text = std::fs::read_to_string("examples/minimal/factory.yaml").unwrap();
    assert!(text.contains("uri: qemu:///system"), "the example changed: update this test");
    let text = text.replace("uri: qemu:///system", "uri: qemu:///system?socket=/nonexistent/fabrik-test-sock");
    std::fs::write(dir.join("factory.yaml"), text).unwrap();
    dir.to_str().unwrap().to_string()
}

#[test]
fn a_plan_with_errors_never_says_no_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = unreadable_factory(dir.path());
    for format in ["human", "markdown"] {
        let o = fabrik(&["plan", &path, "--host-timeout", "1", "--format", format]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("fabrik::plan::unreadable-host"), "{out}");
        assert!(!out.contains("No changes"), "{format} claims no changes after an error:\n{out}");
        assert!(out.contains("Plan incomplete: 2 errors"), "{out}");
    }
    let o = fabrik(&["plan", &path, "--host-timeout", "1", "--format", "markdown"]);
    assert!(stdout(&o).contains("\n**Plan incomplete: 2 errors;"), "the bold headline says so:\n{}", stdout(&o));
}

#[test]
fn an_unknown_id_is_a_usage_error_with_close_matches() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    for flag in ["--target", "--exclude", "--replace"] {
        let o = fabrik(&["plan", "examples/minimal", "--sim", "--state-dir", state, flag, "vm:kvm01/demo-mv"]);
        assert_eq!(o.status.code(), Some(64), "{flag}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(&format!("{flag} `vm:kvm01/demo-mv` is not a resource of the factory")), "{err}");
        assert!(err.contains("did you mean `vm:kvm01/demo-vm`"), "{err}");
        assert!(stdout(&o).is_empty(), "no plan is shown: {}", stdout(&o));
    }
    let o = fabrik(&["plan", "examples/minimal", "--sim", "--state-dir", state, "--target", "demo-vm"]);
    assert_eq!(o.status.code(), Some(64), "a malformed id is a usage error too: {}", stderr(&o));
    let o = fabrik(&["plan", "examples/minimal", "--sim", "--state-dir", state, "--target", "vm:kvm01/demo-vm"]);
    assert_eq!(o.status.code(), Some(2), "a known id plans: {}", stderr(&o));
}

#[test]
fn the_machine_formats_come_out_when_the_factory_is_invalid() {
    let o = fabrik(&["plan", "fixtures/cli/two-files", "--sim", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("a JSON document on stdout");
    assert_eq!(doc["format"], "fabrik-plan/2");
    assert_eq!(doc["complete"], false);
    assert!(doc["summary"].is_null(), "nothing is said about the hosts: {doc}");
    assert_eq!(doc["diagnostics"][0]["code"], "fabrik::spec::unknown-key", "{doc}");

    let o = fabrik(&["plan", "fixtures/cli/two-files", "--sim", "--format", "markdown"]);
    assert_eq!(o.status.code(), Some(1));
    let md = stdout(&o);
    assert!(md.contains("**No plan: 1 error stopped it; nothing is known about the hosts yet.**"), "{md}");
    assert!(md.contains("`fabrik::spec::unknown-key`"), "{md}");
    assert!(!md.contains("No changes"), "{md}");
}

#[test]
fn changes_exit_two_unless_ci_asks_for_zero() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let o = fabrik(&["plan", "examples/minimal", "--sim", "--state-dir", state]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = fabrik(&["plan", "examples/minimal", "--sim", "--state-dir", state, "--exit-zero-on-changes"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Errors are never turned into success.
    let dir = tempfile::tempdir().unwrap();
    let path = unreadable_factory(dir.path());
    let o = fabrik(&["plan", &path, "--host-timeout", "1", "--exit-zero-on-changes"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}
