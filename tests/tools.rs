//! The conveniences around fabrik's commands: shell completions and the man page made from
//! the CLI definition, `FABRIK_*` variables, `--version` with the commit, `fabrik init`,
//! and the readable graph.

use std::path::Path;
use std::process::{Command, Output};

fn fabrik_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fabrik"));
    cmd.args(args).current_dir(dir);
    for var in ["FABRIK_FACTORY", "FABRIK_FORMAT", "FABRIK_STATE_DIR", "FABRIK_HOST_TIMEOUT", "FABRIK_PARALLELISM"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).output().expect("fabrik runs")
}

fn fabrik(args: &[&str], env: &[(&str, &str)]) -> Output {
    fabrik_in(Path::new(env!("CARGO_MANIFEST_DIR")), args, env)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

#[test]
fn completions_know_every_subcommand_and_flag() {
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef fabrik"), ("fish", "complete -c fabrik")] {
        let o = fabrik(&["completions", shell], &[]);
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", text(&o.stderr));
        let script = text(&o.stdout);
        assert!(script.contains(marker), "{shell} script:\n{script}");
        for word in ["validate", "plan", "apply", "inventory", "host-timeout", "parallelism", "completions"] {
            assert!(script.contains(word), "{shell} completions lack `{word}`");
        }
    }
    assert_eq!(fabrik(&["completions", "tcsh"], &[]).status.code(), Some(64));
}

#[test]
fn bash_completion_script_loads_in_bash() {
    let o = fabrik(&["completions", "bash"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fabrik.bash");
    std::fs::write(&file, &o.stdout).unwrap();
    // Load it and ask for completions of `fabrik pl`.
    let script = format!(
        "source {}; COMP_WORDS=(fabrik pl); COMP_CWORD=1; COMP_LINE='fabrik pl'; COMP_POINT=9; _fabrik fabrik pl fabrik; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let o = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), "plan");
}

#[test]
fn man_page_covers_the_commands() {
    let o = fabrik(&["man"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let page = text(&o.stdout);
    assert!(page.starts_with(".ie") || page.contains(".TH fabrik 1"), "{}", &page[..page.len().min(400)]);
    for section in [".SH \"FABRIK PLAN\"", ".SH \"FABRIK APPLY\"", ".SH \"FABRIK VALIDATE\""] {
        assert!(page.contains(section), "no {section}");
    }
    assert!(page.contains(".SH ENVIRONMENT"), "the man page names the environment variables");
    assert!(page.contains("FABRIK_PARALLELISM"), "the man page names the environment variables");
    // roff that man(1) renders without complaint, where man is installed.
    if Command::new("man").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fabrik.1");
        std::fs::write(&file, &o.stdout).unwrap();
        let o = Command::new("man").arg("-l").arg(&file).env("MANWIDTH", "80").env("MANPAGER", "cat").output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(text(&o.stdout).contains("--parallelism"));
    } else {
        println!("man(1) is not installed: the page is checked as text only");
    }
}

#[test]
fn version_names_the_commit() {
    let o = fabrik(&["--version"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let v = text(&o.stdout);
    assert!(v.starts_with(&format!("fabrik {} (commit ", env!("CARGO_PKG_VERSION"))), "{v}");
    let head = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output();
    match head {
        Ok(h) if h.status.success() => {
            let head = text(&h.stdout);
            assert!(v.contains(head.trim()), "`{v}` is not HEAD {head}");
        }
        _ => assert!(v.contains("commit unknown"), "{v}"),
    }
}

#[test]
fn environment_stands_for_flags_and_flags_win() {
    let o = fabrik(&["validate", "examples/minimal"], &[("FABRIK_FORMAT", "json")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("FABRIK_FORMAT=json gives JSON");
    assert_eq!(v["valid"], true);
    let o = fabrik(&["validate", "--format", "human", "examples/minimal"], &[("FABRIK_FORMAT", "json")]);
    assert!(
        serde_json::from_slice::<serde_json::Value>(&o.stdout).is_err() && !o.stdout.is_empty(),
        "--format human wins over FABRIK_FORMAT: the verdict is text, not JSON"
    );
    let o = fabrik(&["validate"], &[("FABRIK_FACTORY", "fixtures/cli/two-files")]);
    assert_eq!(o.status.code(), Some(1), "FABRIK_FACTORY names the factory");
    let o = fabrik(&["validate", "examples/minimal"], &[("FABRIK_FORMAT", "yaml")]);
    assert_eq!(o.status.code(), Some(64), "a bad value is a usage error");
    assert!(text(&o.stderr).contains("FABRIK_FORMAT") || text(&o.stderr).contains("yaml"), "{}", text(&o.stderr));
    let help = text(&fabrik(&["apply", "--help"], &[]).stdout);
    for var in ["FABRIK_PARALLELISM", "FABRIK_HOST_TIMEOUT", "FABRIK_FORMAT", "FABRIK_STATE_DIR"] {
        assert!(help.contains(&format!("env: {var}")), "apply --help names {var}:\n{help}");
    }
}

#[test]
fn init_writes_a_valid_factory_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("lab-1");
    let t = target.to_str().unwrap();
    let o = fabrik(&["init", t], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let factory = std::fs::read_to_string(target.join("factory.yaml")).unwrap();
    assert!(factory.contains("factory: lab-1"), "named after its directory:\n{factory}");
    assert!(factory.starts_with("# yaml-language-server: $schema=fabrik.schema.json"));
    let schema = std::fs::read_to_string(target.join("fabrik.schema.json")).unwrap();
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/fabrik.schema.json")).unwrap();
    assert_eq!(schema.trim_end(), checked_in.trim_end());

    let o = fabrik(&["validate", t], &[]);
    assert_eq!(o.status.code(), Some(0), "the starter factory is valid:\n{}", text(&o.stderr));
    let state = dir.path().join("state");
    let o = fabrik(&["plan", "--sim", "--state-dir", state.to_str().unwrap(), t], &[]);
    assert_eq!(o.status.code(), Some(2), "it plans (changes to make):\n{}", text(&o.stderr));

    let o = fabrik(&["init", t], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("never overwrites"), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(target.join("factory.yaml")).unwrap(), factory);

    let o = fabrik(&["init", "--name", "bad name", dir.path().join("x").to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(64));
}

#[test]
fn graph_draws_one_tenant_coloured_by_kind() {
    let all = text(&fabrik(&["graph", "examples/ai-factory"], &[]).stdout);
    let o = fabrik(&["graph", "examples/ai-factory", "--tenant", "globex"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let dot = text(&o.stdout);
    assert!(dot.len() < all.len() / 2, "one tenant is a small part of the picture");
    assert!(dot.contains("\"vm:gpu02/globex-embed\""), "{dot}");
    assert!(!dot.contains("tenant acme"), "another tenant's resources are left out:\n{dot}");
    assert!(dot.contains("subgraph \"cluster_gpu02\""), "grouped by host");
    assert!(dot.contains("fillcolor="), "coloured by kind");
    let o = fabrik(&["graph", "examples/ai-factory", "--kind", "vm", "--host", "gpu02"], &[]);
    let dot = text(&o.stdout);
    assert!(
        dot.lines().filter(|l| l.contains("[label=")).all(|l| l.contains("\"vm:gpu02/") || l.contains("legend:")),
        "{dot}"
    );
    let o = fabrik(&["graph", "examples/ai-factory", "--kind", "vms"], &[]);
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o.stderr).contains("expected one of"), "{}", text(&o.stderr));
}
