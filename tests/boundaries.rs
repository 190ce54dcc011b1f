//! Tenant boundaries and what a factory can make fabrik do, through the binary: nothing a
//! refused file names ever runs, a tenant's pull request is held to its own files, no
//! credential reaches any output, and no value acts on the terminal.

use std::path::Path;
use std::process::{Command, Output};

fn fabrik(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabrik")).args(args).env("NO_COLOR", "1").output().expect("fabrik runs")
}

fn all_text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A script that leaves a marker file when anything runs it.
fn marker_script(dir: &Path) -> (String, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let marker = dir.join("ran");
    let script = dir.join("run.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script.display().to_string(), marker)
}

const NUMA: &str = "    numa-nodes: [{ id: 0, cpus: 0-3, memory: 8GiB }]\n";

/// Every command that reads hosts, and validate, with and without twins: each refuses
/// the factory with `code`, and the marker is never made.
fn refused_before_anything_runs(factory: &Path, marker: &Path, code: &str) {
    let f = factory.to_str().unwrap();
    let state = factory.parent().unwrap().join("state");
    let state = state.to_str().unwrap();
    let runs: Vec<Vec<&str>> = vec![
        vec!["validate", f],
        vec!["inventory", "--host-timeout", "2", f],
        vec!["inventory", "--sim", "--state-dir", state, f],
        vec!["plan", "--host-timeout", "2", f],
        vec!["plan", "--sim", "--state-dir", state, f],
        vec!["apply", "--yes", "--host-timeout", "2", f],
        vec!["graph", f],
    ];
    for args in runs {
        let o = fabrik(&args);
        assert_eq!(o.status.code(), Some(1), "fabrik {args:?} must refuse:\n{}", all_text(&o));
        assert!(all_text(&o).contains(code), "fabrik {args:?} must say {code}:\n{}", all_text(&o));
        assert!(!marker.exists(), "fabrik {args:?} ran the factory's command");
    }
}

#[test]
fn an_ext_transport_never_runs_its_command() {
    let dir = tempfile::tempdir().unwrap();
    let (script, marker) = marker_script(dir.path());
    let factory = dir.path().join("f/factory.yaml");
    write(
        &factory,
        &format!(
            "version: 1\nfactory: t\nhosts:\n  - name: h1\n    uri: \"qemu+ext:///system?command={script}\"\n{NUMA}"
        ),
    );
    refused_before_anything_runs(&factory, &marker, "fabrik::trust::transport");
    // The marker script is real: run by hand, it leaves the marker.
    let _ = Command::new(&script).status();
    assert!(marker.exists(), "the marker script works");
}

#[test]
fn an_ssh_command_parameter_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (script, marker) = marker_script(dir.path());
    let factory = dir.path().join("f/factory.yaml");
    write(
        &factory,
        &format!(
            "version: 1\nfactory: t\nhosts:\n  - name: h1\n    uri: \"qemu+ssh://root@h1.invalid/system?command={script}\"\n{NUMA}"
        ),
    );
    refused_before_anything_runs(&factory, &marker, "fabrik::trust::uri-parameter");
}

#[test]
fn a_tenants_agent_command_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (script, marker) = marker_script(dir.path());
    let root = dir.path().join("f");
    write(
        &root.join("operator.yaml"),
        &format!(
            "version: 1\nfactory: t\nhosts:\n  - name: h1\n    uri: \"test:///default\"\n{NUMA}tenants:\n  - {{ name: acme, hosts: [h1] }}\n"
        ),
    );
    write(
        &root.join("tenants/acme/vms.yaml"),
        &format!(
            "version: 1\nfactory: t\nhosts:\n  - name: h2\n    uri: \"test:///default\"\n    agent: {script}\n{NUMA}"
        ),
    );
    refused_before_anything_runs(&root, &marker, "fabrik::trust::tenant-agent");
}

#[test]
fn a_tenants_pull_request_changes_only_its_files() {
    let root = Path::new("fixtures/scopes");
    let run = |changed: &[&str]| {
        let mut args = vec!["validate", "fixtures/scopes", "--tenant", "acme", "--changed"];
        args.extend_from_slice(changed);
        fabrik(&args)
    };
    let o = run(&["fixtures/scopes/tenants/acme/vms.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", all_text(&o));
    let o = run(&[
        "fixtures/scopes/tenants/acme/vms.yaml",
        "fixtures/scopes/operator.yaml",
        "fixtures/scopes/tenants/globex/vms.yaml",
        "fixtures/scopes/tenants/acme/removed.yaml",
        "fixtures/scopes/hosts/removed.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", all_text(&o));
    insta::assert_snapshot!(
        "tenant_pull_request_outside_its_files",
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout)
    );
    // The factory itself is valid, and its tenant files are the tenants' by their place.
    let o = fabrik(&["validate", root.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", all_text(&o));
    // `--changed -` reads the list from stdin, as `git diff --name-only` prints it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["validate", "fixtures/scopes", "--tenant", "globex", "--changed", "-", "--format", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"fixtures/scopes/tenants/globex/vms.yaml\nfixtures/scopes/tenants/acme/vms.yaml\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let codes: Vec<_> =
        v["diagnostics"].as_array().unwrap().iter().map(|d| (d["code"].clone(), d["file"].clone())).collect();
    assert_eq!(
        codes,
        vec![(
            serde_json::json!("fabrik::review::outside-tenant"),
            serde_json::json!("fixtures/scopes/tenants/acme/vms.yaml")
        )]
    );
}

/// Secrets in a host's URI and in its agent command; the agent echoes its own
/// arguments and environment to stderr before it fails, as a careless wrapper would.
const URI_SECRET: &str = "UriPassw0rdXyz";
const ARG_SECRET: &str = "ArgPassw0rdXyz";
const ENV_SECRET: &str = "EnvTok3nXyz";

#[test]
fn no_credential_reaches_any_output_or_a_saved_plan() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("f");
    let agent = format!(
        "env FABRIK_TOKEN={ENV_SECRET} sh -c 'echo \"agent $0 token $FABRIK_TOKEN\" >&2; exit 3' --password={ARG_SECRET}"
    );
    write(
        &root.join("factory.yaml"),
        &format!(
            "version: 1\nfactory: t\nhosts:\n  - name: h1\n    uri: \"qemu+ssh://root:{URI_SECRET}@h1.invalid/system\"\n    agent: {}\n{NUMA}{}",
            serde_json::to_string(&agent).unwrap(),
            // Something to plan on the host, so that the plan reports why it cannot read it.
            "tenants:\n  - { name: t, hosts: [h1] }\nvms:\n  - { name: v, tenant: t, vcpus: 1, memory: 1GiB }\n",
        ),
    );
    let f = root.to_str().unwrap();
    let saved = dir.path().join("plan.json");
    let mut runs: Vec<Vec<String>> = Vec::new();
    for format in ["human", "json", "github"] {
        runs.push(vec!["validate".into(), "--format".into(), format.into(), f.into()]);
        runs.push(vec![
            "inventory".into(),
            "--host-timeout".into(),
            "3".into(),
            "--format".into(),
            format.into(),
            f.into(),
        ]);
    }
    for format in ["human", "json", "markdown"] {
        runs.push(vec!["plan".into(), "--host-timeout".into(), "3".into(), "--format".into(), format.into(), f.into()]);
    }
    runs.push(vec![
        "plan".into(),
        "--host-timeout".into(),
        "3".into(),
        "--out".into(),
        saved.display().to_string(),
        f.into(),
    ]);
    for format in ["human", "json"] {
        runs.push(vec![
            "apply".into(),
            "--yes".into(),
            "--host-timeout".into(),
            "3".into(),
            "--format".into(),
            format.into(),
            f.into(),
        ]);
    }
    // A file that does not decode still quotes its lines in snippets.
    let broken = dir.path().join("broken.yaml");
    write(
        &broken,
        &format!(
            "version: 1\nfactory: t\nhosts:\n  - name: h1\n    uri: \"qemu+ssh://root:{URI_SECRET}@h1.invalid/system\"\n    agent: {}\n    numa-nodes: [{{ id: 0, cpus: 0-3, memory: 8GiB }}]\n    bogus: [\"qemu+ssh://root:{URI_SECRET}@h1.invalid/system\", 1]\n",
            serde_json::to_string(&agent).unwrap()
        ),
    );
    for format in ["human", "json", "github"] {
        runs.push(vec!["validate".into(), "--format".into(), format.into(), broken.display().to_string()]);
    }
    runs.push(vec!["plan".into(), broken.display().to_string()]);
    runs.push(vec!["inventory".into(), broken.display().to_string()]);
    let mut seen_agent_stderr = false;
    for args in &runs {
        let planned = (args[0] == "plan" || args[0] == "apply") && !args.contains(&broken.display().to_string());
        let o = fabrik(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let text = all_text(&o);
        for secret in [URI_SECRET, ARG_SECRET, ENV_SECRET] {
            assert!(!text.contains(secret), "fabrik {args:?} shows a credential:\n{text}");
        }
        seen_agent_stderr |= text.contains("agent --password=*** token ***");
        // Every plan quotes libvirt's error, which quotes the URI: masked.
        assert!(!planned || text.contains("root:***@h1.invalid"), "fabrik {args:?} does not quote the URI:\n{text}");
    }
    // The test is not vacuous: the agent really ran, and what it said was shown, masked.
    assert!(seen_agent_stderr, "no output quoted the agent's stderr");
    let plan = std::fs::read_to_string(&saved).expect("the plan was saved");
    assert!(plan.contains("root:***@h1.invalid"), "{plan}");
    for secret in [URI_SECRET, ARG_SECRET, ENV_SECRET] {
        assert!(!plan.contains(secret), "the saved plan holds a credential:\n{plan}");
    }
    // The journal and the records beside the factory hold none either.
    for entry in walk(&root.join(".fabrik")) {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        for secret in [URI_SECRET, ARG_SECRET, ENV_SECRET] {
            assert!(!text.contains(secret), "{} holds a credential", entry.display());
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn a_raw_escape_in_a_file_never_reaches_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("f.yaml", "version: 1\npools:\n  - { name: p, type: dir, path: \"/srv/\u{1b}[2J\u{1b}[H\" }\n"),
        ("f.kdl", "version 1\npool p type=dir path=\"/srv/\u{1b}[2J\u{9b}31m\"\n"),
        ("g.yaml", "version: 1\npools:\n  - { name: \"p\u{1b}[2J\", type: dir, path: /srv }\n"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        for format in ["human", "github"] {
            let o = fabrik(&["validate", "--format", format, path.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(1), "{}", all_text(&o));
            let text = all_text(&o);
            assert!(
                !text.contains('\u{1b}') && !text.contains('\u{9b}'),
                "{name}: a raw control reached the output:\n{text:?}"
            );
        }
    }
}

#[test]
fn an_escape_in_what_a_host_runs_never_reaches_the_terminal() {
    use fabrik::driver::Virt;
    // A domain fabrik did not make, named by someone else with a C1 control sequence
    // introducer (XML refuses ESC itself, not U+009B) and a right-to-left override: its
    // name reaches the plan (as an unmanaged object) and the inventory.
    let state = tempfile::tempdir().unwrap();
    let factory = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal"));
    let spec = fabrik::check::validate(factory).spec;
    let hostile = "evil\u{9b}2J\u{202e}name";
    {
        let mut v = fabrik::sim::virt::SimVirt::open(&state.path().join("kvm01"), &spec.hosts[0]).unwrap();
        let xml = format!(
            "<domain type='test'><name>{hostile}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='i686'>hvm</type></os></domain>"
        );
        v.define_domain(&xml).unwrap();
    }
    // The twin's state lock is this process's until let go; the commands below need it.
    fabrik::sim::release_state(state.path());
    let s = state.path().to_str().unwrap();
    let f = factory.to_str().unwrap();
    let mut shown = false;
    for args in [
        vec!["inventory", "--sim", "--state-dir", s, f],
        vec!["plan", "--sim", "--state-dir", s, "--show-unmanaged", f],
        vec!["plan", "--sim", "--state-dir", s, "--show-unmanaged", "--format", "markdown", f],
        vec!["apply", "--sim", "--state-dir", s, "--yes", f],
    ] {
        let o = fabrik(&args);
        let text = all_text(&o);
        assert!(!text.contains(['\u{9b}', '\u{202e}']), "fabrik {args:?} sent a raw control:\n{text:?}");
        shown |= text.contains("evil\\u{9b}2J\\u{202e}name");
    }
    assert!(shown, "the hostile name was shown, escaped, somewhere");
}
