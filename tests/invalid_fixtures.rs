//! The broken-factory corpus in `fixtures/invalid/`: every entry fails validation with
//! exactly the errors it declares, at their file, line and column, and what an operator
//! reads about it is snapshot-tested. Mutated copies of the examples show that no input
//! makes fabrik panic or point outside the file.
//!
//! An entry is one of
//! - a factory file (`.yaml`, `.yml`, `.kdl`) whose leading comment lines declare its
//!   errors: `# expect: <code> <line>:<column>` in YAML, `// expect: <code> <line>:<column>`
//!   in KDL, one line per error;
//! - a directory (several files, binary or empty files, errors about the directory itself)
//!   holding factory files beside a file `expected`, one error per line:
//!   `<code> <file>:<line>:<column>` with the file relative to the directory, or `<code>`
//!   alone for an error about no file.
//!
//! Lines and columns count from 1; columns count characters. The set of errors must match
//! exactly: an entry fails for the reason its name gives, and for no other.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use fabrik::check::{Validation, validate};
use fabrik::diag::render::{self, Style};

/// Relative to the package root, where cargo runs integration tests, so that the paths in
/// diagnostics (and snapshots) do not depend on where the repository is checked out.
const CORPUS: &str = "fixtures/invalid";
const FACTORY_EXTENSIONS: &[&str] = &["yaml", "yml", "kdl"];

/// Entries below which the corpus may not shrink unnoticed.
const MIN_CASES: usize = 50;
const MIN_CASES_PER_FORMAT: usize = 20;

/// An error: its code, and where it is (a path relative to the corpus, line, column).
type Located = (String, Option<(String, usize, usize)>);

fn cases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(CORPUS)
        .unwrap_or_else(|e| panic!("cannot read {CORPUS}: {e}"))
        .map(|e| e.expect("directory entry").file_name().into_string().expect("UTF-8 entry name"))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn case_path(name: &str) -> PathBuf {
    Path::new(CORPUS).join(name)
}

fn extension(path: &Path) -> Option<&str> {
    path.extension().and_then(|e| e.to_str())
}

fn parse_location(code: &str, at: &str, file: String, context: &str) -> Located {
    let mut parts = at.rsplitn(2, ':');
    let (Some(col), Some(line)) = (parts.next(), parts.next()) else {
        panic!("{context}: `{at}` is not <line>:<column>");
    };
    let num = |s: &str| s.parse::<usize>().unwrap_or_else(|_| panic!("{context}: `{s}` is not a number"));
    (code.to_string(), Some((file, num(line), num(col))))
}

/// The errors an entry declares, sorted.
fn expected(name: &str) -> Vec<Located> {
    let path = case_path(name);
    let mut out = Vec::new();
    if path.is_dir() {
        let list = std::fs::read_to_string(path.join("expected"))
            .unwrap_or_else(|e| panic!("{name}: a directory case needs an `expected` file: {e}"));
        for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line.split_once(' ') {
                None => out.push((line.to_string(), None)),
                Some((code, at)) => {
                    let at = at.trim();
                    let (file, line_col) = at.split_once(':').unwrap_or_else(|| panic!("{name}: bad line `{line}`"));
                    out.push(parse_location(code, line_col, format!("{name}/{file}"), name));
                }
            }
        }
    } else {
        let comment = match extension(&path) {
            Some("kdl") => "//",
            Some("yaml" | "yml") => "#",
            _ => panic!("{name}: an entry is a .yaml, .yml or .kdl file, or a directory"),
        };
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        for line in text.lines().take_while(|l| l.starts_with(comment)) {
            let Some(rest) = line[comment.len()..].trim().strip_prefix("expect:") else { continue };
            let (code, at) = rest
                .trim()
                .split_once(' ')
                .unwrap_or_else(|| panic!("{name}: `{line}` is not `expect: <code> <l>:<c>`"));
            out.push(parse_location(code, at.trim(), name.to_string(), name));
        }
    }
    assert!(!out.is_empty(), "{name}: declares no expected error");
    out.sort();
    out
}

/// The errors validation found, sorted, with paths relative to the corpus.
fn actual(v: &Validation) -> Vec<Located> {
    let mut out: Vec<Located> = v
        .diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| {
            let at = d.primary.as_ref().map(|l| {
                let file = v.sources.get(l.span.file);
                let lc = file.line_col(l.span.start);
                let rel = file.path.strip_prefix(CORPUS).unwrap_or(&file.path);
                (rel.to_string_lossy().into_owned(), lc.line, lc.column)
            });
            (d.code.to_string(), at)
        })
        .collect();
    out.sort();
    out
}

fn show(list: &[Located]) -> String {
    list.iter()
        .map(|(code, at)| match at {
            Some((file, line, col)) => format!("  {code} {file}:{line}:{col}\n"),
            None => format!("  {code}\n"),
        })
        .collect()
}

/// Checks one entry; panics with what is wrong.
fn check_case(name: &str) {
    let path = case_path(name);
    let v = validate(&path);
    assert!(!v.is_valid(), "{name}: validates, but it is a broken factory");
    let (want, got) = (expected(name), actual(&v));
    assert!(want == got, "{name}: errors differ\nexpected:\n{}found:\n{}", show(&want), show(&got));
    for d in v.diags.iter() {
        let text = render::human(d, &v.sources, Style::Plain);
        assert!(text.contains(d.code), "{name}: rendering of {} lacks its code:\n{text}", d.code);
        assert!(d.help.is_some(), "{name}: {} has no help", d.code);
    }
    let human = fabrik::cli::validate::human(&v, &path, Style::Plain);
    insta::with_settings!({
        snapshot_path => "snapshots/invalid_fixtures",
        prepend_module_to_snapshot => false,
        description => format!("fabrik validate {}", path.display()),
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, human);
    });
}

#[test]
fn every_broken_factory_fails_with_its_expected_errors() {
    let mut failures = Vec::new();
    for name in cases() {
        if let Err(panic) = catch_unwind(|| check_case(&name)) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(failures.is_empty(), "{} of the broken factories fail:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn corpus_is_large_and_covers_both_formats() {
    let mut per_format: BTreeMap<&str, usize> = BTreeMap::new();
    let mut directories = 0;
    let names = cases();
    for name in &names {
        let path = case_path(name);
        if path.is_dir() {
            directories += 1;
            assert!(path.join("expected").is_file(), "{name}: a directory case needs an `expected` file");
            continue;
        }
        let ext = extension(&path).unwrap_or_default();
        assert!(FACTORY_EXTENSIONS.contains(&ext), "{name}: not a factory file or a directory");
        let format = if ext == "kdl" { "kdl" } else { "yaml" };
        *per_format.entry(format).or_default() += 1;
        let prefix = format!("{format}-");
        assert!(name.starts_with(&prefix), "{name}: a {format} case is named `{prefix}…`");
    }
    assert!(names.len() >= MIN_CASES, "only {} broken factories, at least {MIN_CASES} expected", names.len());
    for format in ["yaml", "kdl"] {
        let n = per_format.get(format).copied().unwrap_or(0);
        assert!(n >= MIN_CASES_PER_FORMAT, "only {n} {format} cases, at least {MIN_CASES_PER_FORMAT} expected");
    }
    assert!(directories >= 5, "only {directories} directory cases (multi-file, binary, empty files)");
}

#[test]
fn every_snapshot_belongs_to_a_case() {
    let dir = Path::new("tests/snapshots/invalid_fixtures");
    let cases = cases();
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let file = entry.expect("directory entry").file_name().into_string().expect("UTF-8 name");
        let Some(case) = file.strip_suffix(".snap") else { continue };
        assert!(
            cases.iter().any(|c| c == case),
            "{} is left from a case that no longer exists",
            dir.join(&file).display()
        );
    }
}

/// Characters (as bytes) put into the examples: YAML and KDL syntax, whitespace that
/// matters, bytes that are not UTF-8 or split a character.
const MUTATIONS: &[&[u8]] = &[
    b"\t",
    b"\n",
    b" ",
    b"\"",
    b"'",
    b"#",
    b":",
    b"-",
    b"[",
    b"]",
    b"{",
    b"}",
    b"=",
    b"*",
    b"&",
    b"!",
    b"/",
    b"\\",
    b"0",
    b"x",
    "é".as_bytes(),
    b"\xff",
    b"\xc3",
    b"\0",
];
/// Every how many bytes a mutation is made: enough for a few thousand variants per file.
const MUTATION_STRIDE: usize = 7;

fn variants(base: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..=base.len()).map(|end| base[..end].to_vec()).collect();
    for at in (0..base.len()).step_by(MUTATION_STRIDE) {
        for m in MUTATIONS {
            let mut inserted = base.to_vec();
            inserted.splice(at..at, m.iter().copied());
            out.push(inserted);
            let mut replaced = base.to_vec();
            replaced.splice(at..at + 1, m.iter().copied());
            out.push(replaced);
        }
        let mut deleted = base.to_vec();
        deleted.remove(at);
        out.push(deleted);
    }
    out
}

/// Validates one variant and checks what comes out; panics with what is wrong.
fn check_variant(path: &Path) {
    let v = validate(path);
    let text_len = v.sources.iter().map(|(_, f)| f.text.len()).next().unwrap_or(0);
    for d in v.diags.iter().filter(|d| d.is_error()) {
        let label = d.primary.as_ref().unwrap_or_else(|| panic!("{} has no location: {}", d.code, d.message));
        let file = v.sources.get(label.span.file);
        let (start, end) = (label.span.start as usize, label.span.end as usize);
        assert!(start <= end && end <= text_len, "{} points at {start}..{end}, outside the file", d.code);
        assert!(
            file.text.is_char_boundary(start) && file.text.is_char_boundary(end),
            "{} points into the middle of a character",
            d.code
        );
        let _ = render::human(d, &v.sources, Style::Plain);
        let _ = render::json(d, &v.sources);
        let _ = render::github(d, &v.sources);
    }
}

fn mutate_and_validate(example: &str, extension: &str) -> usize {
    let base = std::fs::read(example).unwrap_or_else(|e| panic!("{example}: {e}"));
    let dir = std::env::temp_dir().join(format!("fabrik-mutants-{}-{extension}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("factory.{extension}"));
    let mut failures = Vec::new();
    let all = variants(&base);
    for (i, bytes) in all.iter().enumerate() {
        std::fs::write(&path, bytes).expect("write variant");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check_variant(&path))) {
            let why = panic.downcast_ref::<String>().cloned().unwrap_or_else(|| "panic".into());
            failures.push(format!("variant {i}: {why}\n---\n{}\n---", String::from_utf8_lossy(bytes)));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} of {} variants of {example} fail:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    all.len()
}

#[test]
fn mutated_yaml_example_never_panics_and_points_inside_the_file() {
    let n = mutate_and_validate("examples/minimal/factory.yaml", "yaml");
    assert!(n >= 2_000, "only {n} variants");
}

#[test]
fn mutated_kdl_example_never_panics_and_points_inside_the_file() {
    let n = mutate_and_validate("examples/minimal-kdl/factory.kdl", "kdl");
    assert!(n >= 2_000, "only {n} variants");
}
