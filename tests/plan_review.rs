//! The plan as a reviewer reads it: the Markdown comment of the example on fresh twins,
//! with and without `--diff`, fits GitHub's comment limit and leads with what is
//! disruptive; `--color always` paints the symbols.

use std::path::Path;
use std::process::{Command, Output};

/// GitHub refuses a comment longer than this many characters.
const GITHUB_COMMENT_LIMIT_CHARS: usize = 65_536;

fn plan(factory: &str, state: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .arg("plan")
        .arg(factory)
        .arg("--sim")
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("NO_COLOR")
        .env_remove("FORCE_COLOR")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn markdown(extra: &[&str]) -> String {
    let state = tempfile::tempdir().unwrap();
    let mut args = vec!["--format", "markdown"];
    args.extend_from_slice(extra);
    let o = plan("examples/ai-factory", state.path(), &args);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let md = stdout(&o);
    let chars = md.chars().count();
    assert!(chars < GITHUB_COMMENT_LIMIT_CHARS, "{chars} characters do not fit in a GitHub comment");
    md
}

#[test]
fn markdown_of_the_example_fits_a_comment() {
    let md = markdown(&[]);
    assert!(!md.contains("Cut to stay under"), "nothing is cut without diffs");
    insta::assert_snapshot!("ai_factory_markdown", md);
}

#[test]
fn markdown_of_the_example_with_diffs_fits_a_comment_and_says_what_was_cut() {
    let md = markdown(&["--diff"]);
    assert!(md.contains("<details><summary>"), "diffs are folded");
    insta::assert_snapshot!("ai_factory_markdown_diff", md);
}

#[test]
fn color_always_paints_the_symbols() {
    let state = tempfile::tempdir().unwrap();
    let o = plan("examples/minimal", state.path(), &["--color", "always"]);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(out.contains("\u{1b}[32m+\u{1b}[0m"), "creations are green: {out:?}");
    insta::assert_snapshot!("minimal_color_always", out.replace('\u{1b}', "<ESC>"));
    let o = plan("examples/minimal", state.path(), &["--color", "never"]);
    assert!(!stdout(&o).contains('\u{1b}'));
    let o = plan("examples/minimal", state.path(), &[]);
    assert!(!stdout(&o).contains('\u{1b}'), "piped output has no colour");
}

#[test]
fn github_annotations_mark_the_disruptive_declarations_with_relative_paths() {
    let state = tempfile::tempdir().unwrap();
    // The factory named by its absolute path: the annotation's path is still relative.
    let factory = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory");
    let o = plan(factory, state.path(), &["--format", "github"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    let warning = out.lines().find(|l| l.starts_with("::warning ")).expect("a warning on the GPU re-layout");
    assert!(warning.starts_with("::warning file=examples/ai-factory/hosts/gpu02.yaml,line="), "{warning}");
    assert!(warning.contains("gpu:gpu02/0000:1b:00.0"), "{warning}");
    assert!(
        out.ends_with("::notice title=fabrik plan::Plan: 133 to add, 48 to change, 0 to destroy; 1 GPU re-layout\n"),
        "{out}"
    );
    assert!(!out.contains(env!("CARGO_MANIFEST_DIR")), "no absolute path: {out}");

    let o = plan("fixtures/cli/two-files", state.path(), &["--format", "github"]);
    assert_eq!(o.status.code(), Some(1));
    // An invalid factory's annotations sit on their place in the files, as validate's do.
    assert!(
        stdout(&o).starts_with(
            "::error file=fixtures/cli/two-files/more.kdl,line=8,col=5,endColumn=10,title=fabrik%3A%3Aspec%3A%3Aunknown-key::"
        ),
        "{}",
        stdout(&o)
    );
}

/// A plan with more disruptive changes than a comment holds (the bench's factory: two
/// GPU re-layouts per host, 2,000 in all) still fits: the list of what alarms is cut too
/// (it filled 150,000 characters alone), and the comment says how much was left out.
#[test]
fn markdown_of_a_large_plan_fits_a_comment_with_its_alarms_cut() {
    let dir = tempfile::tempdir().unwrap();
    let factory = dir.path().join("factory");
    let o = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["bench", "--hosts", "1000", "--write"])
        .arg(&factory)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = plan(factory.to_str().unwrap(), &dir.path().join("state"), &["--format", "markdown"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let md = stdout(&o);
    let chars = md.chars().count();
    assert!(chars < GITHUB_COMMENT_LIMIT_CHARS, "{chars} characters do not fit in a GitHub comment");
    assert!(md.contains("#### Destroys data, removes, or restarts tenants (2000)"), "{}", &md[..2000]);
    assert!(md.contains("Cut to stay under") && md.contains("table rows"), "says what was cut");
    assert!(md.contains("#### `gpu0001`"), "the first host's table is still there");
}
