//! The `fabrik` binary as CI and operators run it: exit codes, output formats, schema.

use std::path::Path;
use std::process::{Command, Output};

fn fabrik(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("NO_COLOR")
        .output()
        .expect("fabrik runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

const BROKEN: &str = "fixtures/cli/two-files";

#[test]
fn valid_factory_exits_zero_and_says_so() {
    let o = fabrik(&["validate", "examples/minimal"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "no diagnostics: {}", stderr(&o));
    assert!(
        stdout(&o).contains("examples/minimal is valid: 1 file; 1 host, 1 tenant, 1 network, 1 VM"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn invalid_factory_exits_one_and_reports_every_error() {
    let o = fabrik(&["validate", BROKEN]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("fabrik::spec::unknown-key"), "{err}");
    assert!(err.contains("did you mean `quota`?"), "{err}");
    assert!(stdout(&o).contains("is invalid: 1 error"), "the verdict is on stdout: {}", stdout(&o));
    assert!(!err.contains('\u{1b}'), "piped output has no colour codes");
}

#[test]
fn checks_run_once_files_decode() {
    // The duplicate host is only reported once the unknown key is fixed: decode errors
    // stop the checks so one typo does not cascade.
    let dir = tempfile::tempdir().unwrap();
    for f in ["hosts.yaml", "more.kdl"] {
        let text = std::fs::read_to_string(Path::new(BROKEN).join(f)).unwrap().replace("qouta", "quota");
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    let o = fabrik(&["validate", "--format", "json", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "fabrik::spec::duplicate-name");
    assert!(d["file"].as_str().unwrap().ends_with("more.kdl"));
    assert_eq!((d["line"].as_u64(), d["column"].as_u64()), (Some(2), Some(6)));
    assert!(v["diagnostics"][0]["related"][0]["file"].as_str().unwrap().ends_with("hosts.yaml"));
    assert_eq!(v["diagnostics"][0]["related"][0]["line"], 3);
}

#[test]
fn json_format_is_one_document_on_stdout() {
    let o = fabrik(&["validate", "--format", "json", BROKEN]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("stdout is JSON");
    assert_eq!(v["valid"], false);
    let d = &v["diagnostics"][0];
    for key in ["severity", "code", "message", "file", "line", "column", "help"] {
        assert!(d.get(key).is_some(), "diagnostic has `{key}`: {d}");
    }
    assert_eq!(d["severity"], "error");
    assert_eq!(d["code"], "fabrik::spec::unknown-key");
    assert_eq!(d["file"], "fixtures/cli/two-files/more.kdl");
    assert_eq!((d["line"].as_u64(), d["column"].as_u64()), (Some(8), Some(5)));

    let o = fabrik(&["validate", "--format", "json", "examples/minimal"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "format": "fabrik-validate/1",
            "valid": true,
            "files": ["examples/minimal/factory.yaml"],
            "diagnostics": []
        })
    );
}

/// GitHub resolves an annotation's `file` against the repository: fabrik run from a
/// subdirectory, given an absolute path, still names `fixtures/…`; a diagnostic's related
/// place is in its message (`see also:`) and gets a `::notice` of its own that points back.
#[test]
fn github_annotations_are_repository_relative_and_carry_related_places() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["validate", "--format", "github"])
        .arg(root.join("fixtures/invalid/dir-duplicate-host-across-files"))
        .current_dir(root.join("docs"))
        .env_remove("GITHUB_WORKSPACE")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(!out.contains(&format!("file={}", env!("CARGO_MANIFEST_DIR"))), "no absolute path: {out}");
    let error = out.lines().find(|l| l.starts_with("::error ")).expect("an error");
    assert!(
        error.starts_with("::error file=fixtures/invalid/dir-duplicate-host-across-files/gpu02.yaml,line=4,col=11,"),
        "{error}"
    );
    assert!(
        error.ends_with(
            "%0Asee also: fixtures/invalid/dir-duplicate-host-across-files/gpu01.yaml:3:11: first defined here"
        ),
        "{error}"
    );
    let notice = out.lines().find(|l| l.starts_with("::notice ")).expect("a notice on the related place");
    assert!(
        notice.starts_with(
            "::notice file=fixtures/invalid/dir-duplicate-host-across-files/gpu01.yaml,line=3,col=11,title=fabrik%3A%3Aspec%3A%3Aduplicate-name (related)::first defined here%0Arelated to fixtures/invalid/dir-duplicate-host-across-files/gpu02.yaml:4:11"
        ),
        "{notice}"
    );
}

/// `fabrik validate .` at the repository root: the root `.fabrikignore` leaves out the
/// fixtures (invalid on purpose), the tests and the examples (each a factory of its own),
/// so no file of theirs is read and no diagnostic names one.
#[test]
fn validate_at_the_repository_root_reads_no_fixture() {
    let o = fabrik(&["validate", ".", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("stdout is JSON");
    let files: Vec<&str> = v["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    for dir in ["fixtures/", "tests/", "fuzz/", "examples/", "target/"] {
        assert!(!files.iter().any(|f| f.contains(dir)), "{dir} read: {files:?}");
    }
    let text = v["diagnostics"].to_string();
    assert!(!text.contains("fixtures/") && !text.contains("tests/"), "no diagnostic of a fixture: {text}");
    assert!(v["diagnostics"].as_array().unwrap().iter().all(|d| d["file"].is_null()), "no file read: {text}");
    // The same with `--list-files`: nothing listed before the verdict.
    let o = fabrik(&["validate", ".", "--list-files"]);
    assert!(!stdout(&o).contains("fixtures/"), "{}", stdout(&o));
}

/// A stray `docker-compose.yml` beside a factory is read (and is an error) until
/// `.fabrikignore` or `.gitignore` leaves it out; then only the factory is read, and
/// `--list-files` and the JSON say so.
#[test]
fn a_stray_compose_file_is_left_out_by_fabrikignore_or_gitignore() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/minimal/factory.yaml"),
        root.join("factory.yaml"),
    )
    .unwrap();
    std::fs::write(root.join("docker-compose.yml"), "services:\n  web:\n    image: nginx\n").unwrap();
    std::fs::create_dir(root.join("fixtures")).unwrap();
    std::fs::write(root.join("fixtures/broken.yaml"), "version: 1\nhosts: [\n").unwrap();
    let path = root.to_str().unwrap();
    let o = fabrik(&["validate", path]);
    assert_eq!(o.status.code(), Some(1), "the compose file and the fixture are read: {}", stderr(&o));
    assert!(stderr(&o).contains("docker-compose.yml"), "{}", stderr(&o));

    std::fs::write(root.join(".fabrikignore"), "docker-compose.yml\n").unwrap();
    std::fs::write(root.join(".gitignore"), "/fixtures/\n").unwrap();
    let o = fabrik(&["validate", path, "--list-files"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let listed: Vec<&str> = out.lines().take_while(|l| !l.contains(" is valid")).collect();
    assert_eq!(listed, [root.join("factory.yaml").to_str().unwrap()], "{out}");
    let o = fabrik(&["validate", path, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["files"], serde_json::json!([root.join("factory.yaml").to_str().unwrap()]));
}

#[test]
fn github_format_gives_annotations() {
    let o = fabrik(&["validate", "--format", "github", BROKEN]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let line = out.lines().next().unwrap();
    assert!(
        line.starts_with("::error file=fixtures/cli/two-files/more.kdl,line=8,col=5,endColumn=10,title=fabrik%3A%3Aspec%3A%3Aunknown-key::unknown key `qouta`"),
        "{line}"
    );
    assert!(line.contains("%0Ahelp: did you mean `quota`?"), "{line}");
    assert_eq!(out.lines().count(), 1, "one line per diagnostic");
}

#[test]
fn usage_errors_exit_64() {
    assert_eq!(fabrik(&["validate", "--format", "xml", "."]).status.code(), Some(64));
    assert_eq!(fabrik(&["frobnicate"]).status.code(), Some(64));
    assert_eq!(fabrik(&[]).status.code(), Some(64));
    assert_eq!(fabrik(&["--help"]).status.code(), Some(0));
    assert_eq!(fabrik(&["--version"]).status.code(), Some(0));
}

#[test]
fn missing_path_is_an_error_not_a_crash() {
    let o = fabrik(&["validate", "--format", "json", "no/such/factory"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["diagnostics"][0]["code"], "fabrik::load::io");
}

#[test]
fn empty_directory_has_no_factory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join(".git/x.yaml"), "not: a factory").unwrap();
    let o = fabrik(&["validate", "--format", "json", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["diagnostics"][0]["code"], "fabrik::load::no-files", "hidden directories are skipped");
}

#[test]
fn schema_matches_the_checked_in_file() {
    let o = fabrik(&["schema"]);
    assert_eq!(o.status.code(), Some(0));
    let checked_in = std::fs::read_to_string("schema/fabrik.schema.json").unwrap();
    assert!(
        stdout(&o).trim_end() == checked_in.trim_end(),
        "schema/fabrik.schema.json is out of date: run `cargo run -- schema > schema/fabrik.schema.json`"
    );
}

#[test]
fn reference_doc_matches_the_shapes() {
    let o = fabrik(&["schema", "--format", "markdown"]);
    let checked_in = std::fs::read_to_string("docs/reference.md").unwrap();
    assert!(
        stdout(&o) == checked_in,
        "docs/reference.md is out of date: run `cargo run -- schema --format markdown > docs/reference.md`"
    );
}

#[test]
fn human_output_snapshot() {
    let o = fabrik(&["validate", BROKEN]);
    insta::assert_snapshot!("two_files_human", stderr(&o) + &stdout(&o));
}

#[test]
fn explain_prints_a_rule_page() {
    let o = fabrik(&["explain", "fabrik::mig::overlap"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for part in ["fabrik::mig::overlap", "Why it matters", "Fails", "Fix"] {
        assert!(out.contains(part), "{out}");
    }
    assert_eq!(stdout(&fabrik(&["explain", "mig::overlap"])), out, "the short form works too");
    let o = fabrik(&["explain", "mig::overlp"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("did you mean `fabrik::mig::overlap`?"), "{}", stderr(&o));
    let o = fabrik(&["explain", "--list"]);
    assert!(stdout(&o).lines().any(|l| l.starts_with("fabrik::spec::unknown-key")));
}

/// A factory without `factory` is refused by the commands that mark host objects, at a
/// location, with the fix; `validate` still checks it.
#[test]
fn plan_and_apply_need_a_factory_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string("examples/minimal/factory.yaml").unwrap();
    let unnamed: String = text.lines().filter(|l| !l.starts_with("factory:")).map(|l| format!("{l}\n")).collect();
    let file = dir.path().join("factory.yaml");
    std::fs::write(&file, unnamed).unwrap();
    let path = file.to_str().unwrap();
    let state = dir.path().join("state");
    for command in ["plan", "apply"] {
        let o = fabrik(&[command, path, "--sim", "--state-dir", state.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{command}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("fabrik::spec::missing-factory"), "{err}");
        assert!(err.contains("factory.yaml:1:1"), "located in the file: {err}");
        assert!(err.contains("add `factory: <name>` to this file"), "{err}");
    }
    assert_eq!(fabrik(&["validate", path]).status.code(), Some(0));
}

/// `plan --sim` and `apply --sim` keep the twins' state in the user's state folder
/// (`$XDG_STATE_HOME/fabrik/sim/<factory>-<hash>`), never in the factory's directory;
/// the next command finds it there.
#[test]
fn sim_state_stays_out_of_the_factory_directory() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let factory = dir.path().join("lab");
    std::fs::create_dir(&factory).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/minimal/factory.yaml"),
        factory.join("factory.yaml"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fabrik"))
            .args(args)
            .arg(&factory)
            .env("XDG_STATE_HOME", state.path())
            .env_remove("FABRIK_STATE_DIR")
            .output()
            .expect("fabrik runs")
    };
    let entries = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    let o = run(&["plan", "--sim"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(entries(&factory), ["factory.yaml"], "plan --sim wrote into the factory's directory");
    let sims = entries(&state.path().join("fabrik/sim"));
    assert!(sims.len() == 1 && sims[0].starts_with("lab-"), "{sims:?}");
    let o = run(&["apply", "--sim", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&["plan", "--sim"]);
    assert_eq!(o.status.code(), Some(0), "the second plan finds the applied twins: {}", stderr(&o));
    assert_eq!(entries(&factory), ["factory.yaml"], "apply --sim wrote into the factory's directory");
}
