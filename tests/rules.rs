//! Every rule of the expert checks against its fixtures.
//!
//! `fixtures/rules/<family>/<case>.yaml` (or `.kdl`) is a complete factory that breaks a
//! rule; its leading comments list every diagnostic it must produce, as
//! `# expect: <code> <line>:<column>` (`// expect:` in KDL), and nothing else may be
//! reported. Its twin `<case>.ok.yaml` is the same factory fixed, and must validate with
//! no diagnostic at all. The human rendering of each failing case is snapshot-tested.

use std::path::{Path, PathBuf};

use fabrik::diag::render::{Style, human};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/rules");
    let mut out = Vec::new();
    for family in std::fs::read_dir(&root).unwrap() {
        let family = family.unwrap().path();
        if !family.is_dir() {
            continue;
        }
        for case in std::fs::read_dir(&family).unwrap() {
            out.push(case.unwrap().path());
        }
    }
    out.sort();
    out
}

/// A case is a factory file, or a directory (a factory of several files, for rules
/// about files and their places) whose `expect` file holds its `expect:` lines.
fn is_twin(path: &Path) -> bool {
    let name = if path.is_dir() { path.file_name() } else { path.file_stem() };
    name.and_then(|s| s.to_str()).is_some_and(|s| s.ends_with(".ok"))
}

fn twin_of(case: &Path) -> PathBuf {
    if case.is_dir() {
        let name = case.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        return case.with_file_name(format!("{name}.ok"));
    }
    let ext = case.extension().and_then(|e| e.to_str()).unwrap_or("");
    case.with_extension(format!("ok.{ext}"))
}

fn expect_text(case: &Path) -> String {
    let path = if case.is_dir() { case.join("expect") } else { case.to_path_buf() };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expected(path: &Path) -> Vec<(String, usize, usize)> {
    let text = expect_text(path);
    let mut out: Vec<(String, usize, usize)> = text
        .lines()
        .filter_map(|l| l.trim_start_matches(['#', '/', ' ']).strip_prefix("expect:"))
        .map(|rest| {
            let mut parts = rest.split_whitespace();
            let code = parts.next().expect("expect: needs a code").to_string();
            let (line, col) = parts.next().and_then(|p| p.split_once(':')).expect("expect: needs line:column");
            (code, line.parse().unwrap(), col.parse().unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The loader's note that a directory case's `expect` file is not a factory file: about
/// the fixture's layout, not about the rule under test.
fn is_loader_note(d: &fabrik::diag::Diagnostic) -> bool {
    d.code == "fabrik::load::skipped"
}

fn relative(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path).display().to_string()
}

#[test]
fn every_failing_case_reports_exactly_what_it_expects() {
    let mut failures = Vec::new();
    for case in cases().iter().filter(|c| !is_twin(c)) {
        let want = expected(case);
        if want.is_empty() {
            failures.push(format!("{}: no `expect:` line", relative(case)));
            continue;
        }
        let v = fabrik::check::validate(case);
        let mut got: Vec<(String, usize, usize)> = v
            .diags
            .iter()
            .filter(|d| !is_loader_note(d))
            .map(|d| {
                let span = d.primary.as_ref().expect("every rule diagnostic has a location").span;
                let lc = v.sources.get(span.file).line_col(span.start);
                (d.code.to_string(), lc.line, lc.column)
            })
            .collect();
        got.sort();
        if got != want {
            let rendered: Vec<String> = v.diags.iter().map(|d| human(d, &v.sources, Style::Plain)).collect();
            failures.push(format!(
                "{}:\n  expected {want:?}\n  got      {got:?}\n{}",
                relative(case),
                rendered.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_failing_case_has_a_clean_twin() {
    let all = cases();
    let mut failures = Vec::new();
    for case in all.iter().filter(|c| !is_twin(c)) {
        let twin = twin_of(case);
        if !all.contains(&twin) {
            failures.push(format!("{}: no twin {}", relative(case), relative(&twin)));
            continue;
        }
        let v = fabrik::check::validate(&twin);
        if !v.diags.is_empty() {
            let rendered: Vec<String> = v.diags.iter().map(|d| human(d, &v.sources, Style::Plain)).collect();
            failures.push(format!("{} is not clean:\n{}", relative(&twin), rendered.join("\n")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn human_diagnostics_snapshot() {
    for case in cases().iter().filter(|c| !is_twin(c)) {
        let v = fabrik::check::validate(case);
        let text: String =
            v.diags.iter().filter(|d| !is_loader_note(d)).map(|d| human(d, &v.sources, Style::Plain) + "\n").collect();
        let text = text.replace(concat!(env!("CARGO_MANIFEST_DIR"), "/"), "");
        let name = relative(case).replace(['/', '.'], "_");
        insta::assert_snapshot!(name, text);
    }
}

#[test]
fn every_rule_has_a_fixture() {
    let all = cases();
    let texts: Vec<String> = all.iter().filter(|c| !is_twin(c)).map(|c| expect_text(c)).collect();
    let families: Vec<&str> = fabrik::check::rules::FAMILIES.iter().map(|(f, _)| *f).collect();
    let missing: Vec<&str> = fabrik::check::rules::all()
        .filter(|r| families.iter().any(|f| r.code.split("::").nth(1) == Some(f)))
        .map(|r| r.code)
        .filter(|code| !texts.iter().any(|t| t.contains(&format!("expect: {code} "))))
        .collect();
    assert!(missing.is_empty(), "rules without a failing fixture: {missing:?}");
}
