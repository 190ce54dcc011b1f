//! `fabrik bench --hostile`: crafted factories that once crashed fabrik or exhausted its
//! memory or time, each loaded, checked and rendered (human and JSON) the way
//! `fabrik validate` does, with the time and the peak memory it took.
//!
//! The cases are those of issue 11: nesting hidden from a depth check (a KDL raw string
//! or nested comment, YAML aliases), a "billion laughs" by nodes and by bytes, a KDL
//! comment the kdl crate would recurse through once per `*`, a 200 MB file and 40,000
//! errors in one file. Each must end in seconds, within a fixed memory bound, with a
//! located error. Tests assert the behaviour (`tests/hostile.rs`); this measures it.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Error, PeakMemory, TempDir, Timing};
use crate::check;
use crate::diag::render::{self, Style};

/// Each case must end within this, on the 2-core machine CI runs on.
pub const TIME_TARGET: Duration = Duration::from_secs(5);
/// And stay within this much resident memory above what the process held before.
pub const PEAK_MEMORY_TARGET_BYTES: u64 = 512 * 1024 * 1024;

/// One crafted factory: a name, what it tries, and its files.
pub struct Case {
    pub name: &'static str,
    pub what: &'static str,
    write: fn(&Path) -> std::io::Result<()>,
}

#[derive(Debug, Serialize)]
#[must_use]
pub struct CaseReport {
    pub name: &'static str,
    pub what: &'static str,
    pub errors: usize,
    /// The first error's code and whether it points into a file.
    pub first_code: Option<&'static str>,
    pub located: bool,
    pub time: Timing,
    pub peak_memory: PeakMemory,
    pub time_met: bool,
    pub memory_met: Option<bool>,
}

#[derive(Debug, Serialize)]
#[must_use]
pub struct HostileReport {
    pub runs: usize,
    pub time_target_ms: f64,
    pub peak_memory_target_bytes: u64,
    pub cases: Vec<CaseReport>,
}

fn write(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    std::fs::write(dir.join(name), text)
}

fn deep_yaml(levels: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(levels), "]".repeat(levels))
}

fn deep_kdl(levels: usize) -> String {
    format!("{}{}", "a { ".repeat(levels), "}".repeat(levels))
}

/// The crafted factories, each written into its own directory.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "kdl-raw-string-depth",
            what: "100,000 levels after a raw string of `}` that once hid them",
            write: |d| write(d, "f.kdl", &format!("version 1\nx #\"{}\"#\n{}\n", "}".repeat(100), deep_kdl(100_000))),
        },
        Case {
            name: "kdl-comment-depth",
            what: "100,000 levels after a nested comment of `}` that once hid them",
            write: |d| {
                write(d, "f.kdl", &format!("version 1\n/* /* */ {} */\n{}\n", "}".repeat(100), deep_kdl(100_000)))
            },
        },
        Case {
            name: "kdl-comment-steps",
            what: "a comment of a million `*`, one recursion of the kdl crate each (a raw string sends the file to the crate)",
            write: |d| write(d, "f.kdl", &format!("version 1\nx #\"raw\"#\n/*{}*/\n", " *".repeat(1_000_000))),
        },
        Case {
            name: "yaml-alias-depth",
            what: "an anchor 120 levels deep used 120 levels deep, a thousand times",
            write: |d| {
                let uses = vec![deep_yaml(120, "*a"); 1000].join(", ");
                write(d, "f.yaml", &format!("version: 1\na: &a {}\nb: [{uses}]\n", deep_yaml(120, "x")))
            },
        },
        Case {
            name: "yaml-alias-nodes",
            what: "a billion laughs: ten aliases of ten aliases, nine levels",
            write: |d| {
                let mut text = String::from("version: 1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
                for i in 1..10 {
                    let p = i - 1;
                    text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{p}"); 10].join(", ")));
                }
                write(d, "f.yaml", &text)
            },
        },
        Case {
            name: "yaml-alias-bytes",
            what: "1.4 KB: a 900-byte string doubled thirty times",
            write: |d| {
                let mut text = format!("version: 1\na0: &a0 {}\n", "lol".repeat(300));
                for i in 1..=30 {
                    text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}]\n", p = i - 1));
                }
                write(d, "f.yaml", &text)
            },
        },
        Case {
            name: "file-200mb",
            what: "a 200 MB factory file (sparse: refused before it is read)",
            write: |d| {
                write(d, "a.yaml", "version: 1\nfactory: f\n")?;
                std::fs::File::create(d.join("b.yaml"))?.set_len(200_000_000)
            },
        },
        Case {
            name: "errors-40000",
            what: "40,000 unknown keys in one 4.6 MB file, rendered for people and as JSON",
            write: |d| {
                let pad = "x".repeat(100);
                let mut text = String::from("version: 1\n");
                for i in 0..40_000 {
                    text.push_str(&format!("k{i}: \"{pad}\"\n"));
                }
                write(d, "f.yaml", &text)
            },
        },
    ]
}

/// What one run of a case does: validate, then render every diagnostic both ways.
struct Outcome {
    errors: usize,
    first_code: Option<&'static str>,
    located: bool,
}

fn validate_and_render(dir: &Path) -> Outcome {
    let v = check::validate(dir);
    let mut rendered = 0usize;
    for d in v.diags.iter() {
        rendered += render::human(d, &v.sources, Style::Plain).len();
        rendered += serde_json::to_string(&render::json(d, &v.sources)).map_or(0, |s| s.len());
    }
    std::hint::black_box(rendered);
    let first = v.diags.iter().find(|d| d.is_error());
    Outcome {
        errors: v.diags.iter().filter(|d| d.is_error()).count(),
        first_code: first.map(|d| d.code),
        located: first.is_some_and(|d| d.primary.is_some()),
    }
}

pub fn run(runs: usize, progress: &mut dyn FnMut(&str)) -> Result<HostileReport, Error> {
    let workdir = TempDir::new().map_err(|source| Error::Write { path: std::env::temp_dir(), source })?;
    let mut reports = Vec::new();
    for case in cases() {
        let dir = workdir.0.join(case.name);
        std::fs::create_dir(&dir)
            .and_then(|()| (case.write)(&dir))
            .map_err(|source| Error::Write { path: dir.clone(), source })?;
        let mut samples = Vec::new();
        let mut peak = PeakMemory::Unavailable { reason: String::new() };
        let mut outcome = None;
        for run in 0..runs.max(1) {
            let before = super::peak::reset();
            let started = Instant::now();
            let o = validate_and_render(&dir);
            samples.push(started.elapsed());
            if run == 0 {
                peak = match (before, super::peak::read()) {
                    (Ok(before), Ok(peak)) => PeakMemory::Measured { peak_bytes: peak, resident_before_bytes: before },
                    (Err(reason), _) | (_, Err(reason)) => PeakMemory::Unavailable { reason },
                };
            }
            progress(&format!("{}, run {}: {:.1} ms", case.name, run + 1, samples[run].as_secs_f64() * 1e3));
            outcome = Some(o);
        }
        let o = outcome.unwrap_or(Outcome { errors: 0, first_code: None, located: false });
        let time = Timing::of(samples);
        let memory_met = match &peak {
            PeakMemory::Measured { peak_bytes, resident_before_bytes } => {
                Some(peak_bytes.saturating_sub(*resident_before_bytes) <= PEAK_MEMORY_TARGET_BYTES)
            }
            PeakMemory::Unavailable { .. } => None,
        };
        reports.push(CaseReport {
            name: case.name,
            what: case.what,
            errors: o.errors,
            first_code: o.first_code,
            located: o.located,
            time_met: time.median <= TIME_TARGET,
            time,
            peak_memory: peak,
            memory_met,
        });
    }
    Ok(HostileReport {
        runs: runs.max(1),
        time_target_ms: TIME_TARGET.as_secs_f64() * 1e3,
        peak_memory_target_bytes: PEAK_MEMORY_TARGET_BYTES,
        cases: reports,
    })
}
