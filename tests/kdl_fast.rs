//! The KDL fast path against the kdl crate: wherever the fast path gives a tree, the
//! crate path must give the same tree, spans included. Inputs are every KDL file of the
//! examples and fixtures, a generated bench factory, and thousands of deterministic
//! mutations of them (truncations, inserted, deleted and replaced characters), most of
//! them invalid. The fast path must also take every valid example and bench file.
//!
//! `cargo test --test kdl_fast -- --nocapture` prints the counts.

use std::path::{Path, PathBuf};

use fabrik::bench::synth::{self, Size};
use fabrik::spec::kdl::{parse_fast_path, parse_without_fast_path};
use fabrik::spec::source::{FileId, SourceFile, Syntax};

/// Characters and snippets the mutations insert or substitute: KDL's punctuation, the
/// starts of numbers, keywords, comments, raw and multi-line strings, and whitespace
/// and newlines the fast path leaves to the crate.
#[rustfmt::skip]
const PIECES: &[&str] = &[
    "\"", "{", "}", "=", "#", "/", "*", "\\", "0", "1", "9", "-", "+", ".", "e", "E", "x", "_", " ", "\t", "\n",
    "\r", "\r\n", ";", "(", ")", "[", "a", "u", "é", "\u{a0}", "\u{85}", "\u{2028}", "\u{2029}", "\u{3000}",
    "\u{feff}", "\u{200e}", "\u{2066}", "\u{7f}", "\u{0}", "\u{b}", "/*", "*/", "//", "/-", "#true", "#false",
    "#null", "#inf", "#nan", "\"\"\"", "#\"", "\\u{41}", "\\u{", "\\u{1F600}", "\\u{d800}", "\\n", "\\s", "\\ ",
    "\\\t", "}\"", "=1", " x=1", " \"k\"=#null", "1e5", "1.5", "0x1f", "0o7", "0b1", "-0x10", "{ }", "true", "inf",
    "-inf", "nan", ".5", "-.5", "+.", "1_000", " /* c */ ", "(t)", ";;", "\\\n", "a b", "\"a=b\"=2",
    "/- ", " /-", "/-{ }", " /-x=1", "#\"r\"#", "##\"r\"#\"##", "\"#", "(u8)", "(\"t\")", "()", "( t)",
];

/// Hand-written seeds that pack the subset's corners into a few lines, so that the
/// mutations land on them often.
#[rustfmt::skip]
const SNIPPETS: &[&str] = &[
    "a \"x\\\"y\\\\z\\n\\t\\r\\b\\f\\s\" \"\\u{41}\\u{1F600}\\u{10FFFF}\" \"é—漢\"\n",
    "n 0 -1 +2 007 1.5 -0.25 1e3 1E-3 2.5e+10 0x1f -0x10 0XfF 99999999999999999999999999999999999999\n",
    "n -17014118346046923173168730371588410572 12345678901234567890123456789012345678.5\n",
    "n #true #false #null - + . -a +b .c -. +. ..5 a,b ~!@$%^&*<>?, 'q' `r`\n",
    "a x=1 \"k\" = #null y =2 z= -3 \"a=b\"=c lbl {\n    b; c 1 2; d x=y{}\n}; e\r\nf {} // end\n",
    "/* a /* nested */ comment */ a /* inline */ b/*x*/c /* multi\nline */ d // line\n// only\n\n",
    "a{b{c{d}}}\na { b } ; c\n  \t a \"\" \"\\\"\" \"\t\"\n",
    "host h {\n    numa-node 0 socket=0 memory=\"1TiB\" {\n        hugepages \"1G\"=896\n    }\n}\n",
    "/-a 1 { b }\nc /-1 2 /-x=1 y=2 /-{ d 1 2 x=3 } { e\n/-f 1 2 { g }\n} /-{ g }\n/- h\n",
    "a #\"r \\n \"q\"\"# ##\"x\"#y\"## #\"k\"#=#\"v\"# #\"\"#\n",
    "(t)a (u8)1 x=1 { (v)b #true; (w)c (\"q\")\"s\" ##\"r\"## }\n",
];

/// How mutations are picked: a fixed seed, so every run tries the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[derive(Default)]
struct Tally {
    tried: usize,
    /// Inputs the crate path read.
    asked: usize,
    /// Of those, the ones it gave a tree for.
    valid: usize,
    /// The fast path gave a tree.
    fast: usize,
    /// Valid inputs the fast path left to the crate.
    declined_valid: Vec<String>,
    mismatches: Vec<String>,
}

impl Tally {
    /// Compares the two paths on one input; the crate is asked only when the fast path
    /// answers, unless `always` (to count how many valid inputs the fast path takes).
    fn check(&mut self, name: &str, text: &str, always: bool) {
        self.tried += 1;
        let file = SourceFile::new("t.kdl".into(), Syntax::Kdl, text.to_string());
        let fast = parse_fast_path(FileId(0), &file);
        if fast.is_none() && !always {
            return;
        }
        let slow = parse_without_fast_path(FileId(0), &file);
        self.asked += 1;
        if slow.is_ok() {
            self.valid += 1;
        }
        match (fast, slow) {
            (Some(fast), Ok(slow)) => {
                self.fast += 1;
                if fast != slow {
                    self.mismatches
                        .push(format!("{name}: different trees for {text:?}\nfast: {fast:?}\ncrate: {slow:?}"));
                }
            }
            (Some(fast), Err(errors)) => {
                self.fast += 1;
                let codes: Vec<&str> = errors.iter().map(|e| e.code).collect();
                self.mismatches
                    .push(format!("{name}: the crate refuses {text:?} ({codes:?}), the fast path gives {fast:?}"));
            }
            (None, Ok(_)) => self.declined_valid.push(name.to_string()),
            (None, Err(_)) => {}
        }
    }

    fn assert_no_mismatch(&self, what: &str) {
        println!(
            "{what}: {} inputs, {} taken by the fast path; {} read by the crate too, {} valid; {} mismatches",
            self.tried,
            self.fast,
            self.asked,
            self.valid,
            self.mismatches.len()
        );
        let shown: Vec<&String> = self.mismatches.iter().take(10).collect();
        assert!(self.mismatches.is_empty(), "{} mismatches, first ones:\n{shown:#?}", self.mismatches.len());
    }
}

fn kdl_files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            kdl_files_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "kdl") {
            out.push(path);
        }
    }
}

/// (name, text) of every KDL file under `dir` of the repository.
fn repo_files(dir: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    kdl_files_under(&root.join(dir), &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            (p.strip_prefix(root).unwrap().display().to_string(), text)
        })
        .collect()
}

/// A small generated factory: two tenants, two pods of hosts.
fn bench_files() -> Vec<(String, String)> {
    synth::generate(Size { hosts: 60, vms: 400 }, Syntax::Kdl).files
}

fn char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Up to `lines` whole lines of `text` around byte `at`, and `at` within them: large
/// files are mutated in windows, so that the crate has little to read per mutation.
fn window(text: &str, at: usize, lines: usize) -> (&str, usize) {
    let mut start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    for _ in 0..lines / 2 {
        start = text[..start.saturating_sub(1)].rfind('\n').map_or(0, |i| i + 1);
    }
    let mut end = at;
    for _ in 0..lines.div_ceil(2) {
        end = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
    }
    (&text[start..end], at - start)
}

/// One mutation of `text`: a piece inserted, a stretch deleted, or one replaced.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let at = char_boundary(text, rng.below(text.len() + 1));
    let piece = PIECES[rng.below(PIECES.len())];
    let len = char_boundary(text, (at + 1 + rng.below(4)).min(text.len())) - at;
    let (before, after) = text.split_at(at);
    match rng.below(3) {
        0 => format!("{before}{piece}{after}"),
        1 => format!("{before}{}", &after[len..]),
        _ => format!("{before}{piece}{}", &after[len..]),
    }
}

/// Truncations at every 1/40 of a file (of a window of it, for large files), and `per_file` random mutations (in windows of a few
/// lines for files over 600 bytes; one in three leaves a second mutation on top).
fn mutations(tally: &mut Tally, files: &[(String, String)], per_file: usize, rng: &mut Rng) {
    for (name, text) in files {
        let step = (text.len() / 40).max(1);
        for at in (0..text.len()).step_by(step) {
            let at = char_boundary(text, at);
            let input = if text.len() > 600 {
                let (part, at) = window(text, at, 12);
                &part[..at]
            } else {
                &text[..at]
            };
            tally.check(&format!("{name} cut at {at}"), input, false);
        }
        for i in 0..per_file {
            let input = if text.len() > 600 {
                let at = char_boundary(text, rng.below(text.len()));
                let (part, _) = window(text, at, 1 + rng.below(14));
                part.to_string()
            } else {
                text.clone()
            };
            let mut mutated = mutate(rng, &input);
            if rng.below(3) == 0 {
                mutated = mutate(rng, &mutated);
            }
            tally.check(&format!("{name} mutation {i}"), &mutated, false);
        }
    }
}

/// Whether a line's first non-space byte may start a bare node name.
fn starts_node(rest: &str) -> bool {
    rest.bytes().next().is_some_and(|c| c.is_ascii_alphabetic())
}

/// `text` with the syntax the fast path reads beyond the plain subset added on every
/// line that starts with a bare node name, without changing the tree: `kind` 0 puts a
/// slashdashed node (with a type, raw string, property and block) before it, 1 puts
/// slashdashed arguments and a property after its name, 2 a slashdashed children block
/// at its end, 3 a type annotation on its name, 4 all of them.
fn with_extras(text: &str, kind: usize) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    // Lines inside a multi-line string (`"""` … `"""`) are its text, not nodes; a line
    // that opens or closes one is left as it is too.
    let mut in_string = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let newline = &line[body.len()..];
        let indent = &body[..body.len() - body.trim_start().len()];
        let rest = &body[indent.len()..];
        let was_in_string = in_string;
        let quotes = body.matches("\"\"\"").count();
        in_string ^= quotes % 2 == 1;
        if was_in_string || quotes > 0 || !starts_node(rest) {
            out.push_str(line);
            continue;
        }
        let all = kind == 4;
        if kind == 0 || all {
            out.push_str(&format!("{indent}/-(c)comment #\"x\"# k=1 {{ y }}\n"));
        }
        let name_len =
            rest.find(|c: char| c.is_ascii_whitespace() || "\\/(){}[];\"#=".contains(c)).unwrap_or(rest.len());
        let (name, mut tail) = (&rest[..name_len], rest[name_len..].to_string());
        let name = if kind == 3 || all { format!("(t){name}") } else { name.to_string() };
        if kind == 1 || all {
            tail = format!(" /-#\"x\"# /-k=2 /-(t)3{tail}");
        }
        if kind == 2 || all {
            match tail.trim_end().strip_suffix('{') {
                Some(open) => tail = format!("{open}/-{{ z }} {{"),
                None if !tail.contains("//") && !tail.contains("/*") => tail.push_str(" /-{ z }"),
                None => {}
            }
        }
        out.push_str(&format!("{indent}{name}{tail}{newline}"));
    }
    out
}

/// Every file with each kind of [`with_extras`], and with [`fabrik::bench::KDL_EXTRAS`]
/// at its top, as the bench measures them.
fn extras_variants(files: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, text) in files {
        for kind in 0..5 {
            out.push((format!("{name} with extras {kind}"), with_extras(text, kind)));
        }
        out.push((format!("{name} as the bench marks it"), format!("{}{text}", fabrik::bench::KDL_EXTRAS)));
    }
    out
}

#[test]
fn fast_path_takes_every_example_and_bench_file_with_slashdash_raw_strings_and_types() {
    let mut files = repo_files("examples");
    files.extend(bench_files());
    let mut tally = Tally::default();
    for (name, text) in &extras_variants(&files) {
        tally.check(name, text, true);
    }
    tally.assert_no_mismatch("examples and bench files with `/-`, raw strings and types");
    assert!(tally.declined_valid.is_empty(), "left to the crate: {:?}", tally.declined_valid);
    assert_eq!(tally.valid, tally.tried, "every variant is valid KDL");
    assert_eq!(tally.fast, tally.tried);
}

#[test]
fn fast_path_agrees_with_the_crate_on_fixtures_with_slashdash_raw_strings_and_types() {
    let mut tally = Tally::default();
    for (name, text) in &extras_variants(&repo_files("fixtures")) {
        tally.check(name, text, true);
    }
    tally.assert_no_mismatch("fixtures with `/-`, raw strings and types");
}

#[test]
fn fast_path_takes_every_example_and_bench_file() {
    let mut tally = Tally::default();
    for (name, text) in repo_files("examples").iter().chain(&bench_files()) {
        tally.check(name, text, true);
    }
    tally.assert_no_mismatch("examples and bench files");
    assert!(tally.declined_valid.is_empty(), "left to the crate: {:?}", tally.declined_valid);
    assert_eq!(tally.fast, tally.tried);
}

#[test]
fn fast_path_agrees_with_the_crate_on_fixtures_and_snippets() {
    let mut tally = Tally::default();
    for (name, text) in &repo_files("fixtures") {
        tally.check(name, text, true);
    }
    for (i, text) in SNIPPETS.iter().enumerate() {
        tally.check(&format!("snippet {i}"), text, true);
    }
    tally.assert_no_mismatch("fixtures and snippets");
    println!("valid inputs left to the crate: {:?}", tally.declined_valid);
}

#[test]
fn fast_path_agrees_with_the_crate_on_mutations() {
    let mut files: Vec<(String, String)> =
        SNIPPETS.iter().enumerate().map(|(i, s)| (format!("snippet {i}"), s.to_string())).collect();
    files.extend(repo_files("examples"));
    files.extend(repo_files("fixtures"));
    files.extend(bench_files());
    let mut extras = extras_variants(&files);
    extras.retain(|(name, _)| name.ends_with("extras 4"));
    files.extend(extras);
    let mut tally = Tally::default();
    mutations(&mut tally, &files, 120, &mut Rng(0x6b646c));
    tally.assert_no_mismatch("mutations");
}
