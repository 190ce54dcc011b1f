//! The one output layer, as a pipeline sees it: every subcommand with its stdout on a
//! pipe whose reader is already gone (`fabrik … | head -c0`) ends quietly with 141, and
//! on a full device (`/dev/full`) reports the error and exits 74 — never a panic, never
//! a lost output with exit 0 (docs/plan.md, "Exit statuses").

use std::path::Path;
use std::process::{Command, Output, Stdio};

const CLOSED_PIPE: i32 = 141;
const IO_ERROR: i32 = 74;

/// Every subcommand, with arguments that make it print something on stdout. The twins'
/// state goes to `state`.
fn commands(state: &Path) -> Vec<Vec<String>> {
    let state = state.to_str().unwrap();
    let sim = |cmd: &str, rest: &[&str]| -> Vec<String> {
        let mut v = vec![cmd, "examples/minimal", "--sim", "--state-dir", state];
        v.extend_from_slice(rest);
        v.into_iter().map(String::from).collect()
    };
    let plain = |args: &[&str]| -> Vec<String> { args.iter().map(|s| s.to_string()).collect() };
    vec![
        plain(&["validate", "examples/ai-factory"]),
        plain(&["validate", "examples/ai-factory", "--format", "json"]),
        plain(&["validate", "fixtures/cli/two-files", "--format", "github"]),
        plain(&["schema"]),
        plain(&["schema", "--format", "markdown"]),
        plain(&["explain", "--list"]),
        plain(&["explain", "mig::layout"]),
        plain(&["graph", "examples/ai-factory"]),
        plain(&["graph", "examples/ai-factory", "--format", "json"]),
        // (`bench` of a synthetic factory is left out: its generator makes an invalid
        // factory on this branch, so it exits 1 before printing.)
        plain(&["bench", "--inventory", "--hosts", "2", "--runs", "1"]),
        plain(&["bench", "--inventory", "--hosts", "2", "--runs", "1", "--format", "json"]),
        sim("inventory", &[]),
        sim("inventory", &["--format", "json"]),
        sim("plan", &[]),
        sim("plan", &["--format", "json"]),
        sim("plan", &["--format", "markdown"]),
        sim("plan", &["--format", "github"]),
        sim("import", &["--format", "json"]),
        sim("apply", &["--yes", "--format", "json"]),
        plain(&["--help"]),
    ]
}

fn run(args: &[String], stdout: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(stdout)
        .stdin(Stdio::null())
        .output()
        .expect("fabrik runs")
}

fn no_panic(args: &[String], o: &Output) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "`fabrik {}` panicked:\n{err}", args.join(" "));
    assert!(o.status.code().is_some(), "`fabrik {}` was killed: {:?}", args.join(" "), o.status);
}

#[test]
fn a_closed_pipe_ends_every_command_quietly_with_141() {
    let state = tempfile::tempdir().unwrap();
    for args in commands(state.path()) {
        // A reader that is gone before the first write: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = run(&args, Stdio::from(writer));
        no_panic(&args, &o);
        let err = String::from_utf8_lossy(&o.stderr);
        if args[0] == "--help" {
            // clap prints help itself; what matters is that it does not panic.
            continue;
        }
        assert_eq!(o.status.code(), Some(CLOSED_PIPE), "`fabrik {}`:\n{err}", args.join(" "));
        assert!(!err.contains("Broken pipe"), "a closed pipe is not an error to report: {err}");
    }
}

#[test]
fn a_full_disk_is_an_error_with_status_74() {
    if !Path::new("/dev/full").exists() {
        assert!(std::env::var("CI").is_err(), "CI needs /dev/full");
        eprintln!("skipped: no /dev/full on this machine");
        return;
    }
    let state = tempfile::tempdir().unwrap();
    for args in commands(state.path()) {
        if args[0] == "--help" {
            continue;
        }
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let o = run(&args, Stdio::from(full));
        no_panic(&args, &o);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(IO_ERROR), "`fabrik {}`:\n{err}", args.join(" "));
        assert!(err.contains("cannot write to stdout"), "`fabrik {}`: {err}", args.join(" "));
    }
}

#[test]
fn validate_prints_its_verdict_on_stdout_and_the_diagnostics_on_stderr() {
    let o = run(&["validate".into(), "fixtures/cli/two-files".into()], Stdio::piped());
    assert_eq!(o.status.code(), Some(1));
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(out, "fixtures/cli/two-files is invalid: 1 error, 0 warnings\n");
    assert!(err.contains("fabrik::spec::unknown-key"), "{err}");
    assert!(!err.contains("is invalid"), "the verdict is printed once: {err}");
}

#[test]
fn color_is_decided_once_from_the_flag_and_the_environment() {
    let validate = |color: &str, env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fabrik"));
        c.args(["validate", "fixtures/cli/two-files", "--color", color]).current_dir(env!("CARGO_MANIFEST_DIR"));
        c.env_remove("NO_COLOR").env_remove("FORCE_COLOR").env_remove("TERM");
        for (k, v) in env {
            c.env(k, v);
        }
        String::from_utf8(c.output().unwrap().stderr).unwrap()
    };
    // Piped: plain unless forced.
    assert!(!validate("auto", &[]).contains('\u{1b}'));
    assert!(validate("always", &[]).contains('\u{1b}'));
    assert!(validate("auto", &[("FORCE_COLOR", "1")]).contains('\u{1b}'));
    assert!(!validate("auto", &[("FORCE_COLOR", "1"), ("NO_COLOR", "1")]).contains('\u{1b}'));
    assert!(!validate("never", &[("FORCE_COLOR", "1")]).contains('\u{1b}'));
}
