//! `fabrik bench`: generate a synthetic factory, time loading and checking it against
//! serde_yaml, and print the figures next to the targets.

use std::io::Write;

use super::exit;
use crate::bench::{self, PeakMemory, Report};
use crate::spec::source;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Hosts in the generated factory (8× H200 each).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub hosts: u32,
    /// VMs in the generated factory, replicas counted.
    #[arg(long, default_value_t = 10000)]
    pub vms: u32,
    /// Syntax of the generated files.
    #[arg(long, value_enum, default_value_t = Syntax::Yaml)]
    pub syntax: Syntax,
    /// Timed runs of each measurement; the median and the minimum are reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Time `fabrik inventory` of `--hosts` simulated twins instead of validation.
    #[arg(long)]
    pub inventory: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
pub enum Syntax {
    Yaml,
    Kdl,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// A table.
    Human,
    /// One JSON document.
    Json,
}

pub fn run(args: &Args) -> u8 {
    if args.inventory {
        return run_inventory(args);
    }
    let opts = bench::Options {
        size: bench::synth::Size { hosts: args.hosts as usize, vms: args.vms as usize },
        syntax: match args.syntax {
            Syntax::Yaml => source::Syntax::Yaml,
            Syntax::Kdl => source::Syntax::Kdl,
        },
        runs: args.runs as usize,
    };
    let report = match bench::run(&opts, &mut |line| eprintln!("{line}")) {
        Ok(r) => r,
        Err(e) => {
            let mut msg = format!("error: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                msg.push_str(&format!("\n  caused by: {c}"));
                cause = c.source();
            }
            eprintln!("{msg}");
            return exit::INVALID;
        }
    };
    let out = match args.format {
        Format::Human => human(&report),
        Format::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
    };
    let _ = std::io::stdout().write_all(out.as_bytes());
    exit::OK
}

fn run_inventory(args: &Args) -> u8 {
    match bench::inventory::run(args.hosts as usize, args.runs as usize, &mut |line| eprintln!("{line}")) {
        Ok(r) => {
            let out = match args.format {
                Format::Human => format!(
                    "fabrik bench --inventory: {} simulated hosts, {} runs\n  inventory   median {}   min {}   ({} hosts incomplete)\n",
                    r.hosts,
                    r.runs,
                    bench::inventory::ms(r.inventory.median),
                    bench::inventory::ms(r.inventory.min),
                    r.incomplete
                ),
                Format::Json => serde_json::to_string_pretty(&r).unwrap_or_default() + "\n",
            };
            let _ = std::io::stdout().write_all(out.as_bytes());
            if r.incomplete == 0 { exit::OK } else { exit::INVALID }
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::INVALID
        }
    }
}

/// The figures as a small table, each with its target.
pub fn human(r: &Report) -> String {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / bench::MIB);
    let ms = |d: std::time::Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let verdict = |name: &str| match r.targets.iter().find(|t| t.name == name).and_then(|t| t.met) {
        Some(true) => "ok",
        Some(false) => "MISSED",
        None => "not measured",
    };
    let mut out = format!(
        "fabrik bench: {} hosts, {} VMs ({} entries), {} tenants; {} {} files, {}; {} run{}\n\n",
        r.hosts,
        r.vms,
        r.vm_entries,
        r.tenants,
        r.files,
        r.syntax.to_uppercase(),
        mib(r.bytes as u64),
        r.runs,
        if r.runs == 1 { "" } else { "s" },
    );
    let baseline = match r.syntax {
        "yaml" => "serde_yaml → Value".to_string(),
        _ => format!("serde_yaml → Value, YAML twin ({})", mib(r.yaml_bytes as u64)),
    };
    let min_ratio = r.fabrik.min.as_secs_f64() / r.serde_yaml.min.as_secs_f64().max(f64::MIN_POSITIVE);
    let mut rows: Vec<[String; 5]> = vec![
        ["".into(), "median".into(), "min".into(), "target".into(), "".into()],
        [baseline, ms(r.serde_yaml.median), ms(r.serde_yaml.min), "".into(), "".into()],
        [
            "fabrik validate".into(),
            ms(r.fabrik.median),
            ms(r.fabrik.min),
            format!("< {} s", bench::TIME_TARGET.as_secs_f64()),
            verdict("time").into(),
        ],
        [
            "fabrik / serde_yaml".into(),
            format!("{:.2}×", r.ratio),
            format!("{min_ratio:.2}×"),
            format!("≤ {}×", bench::RATIO_TARGET),
            verdict("ratio").into(),
        ],
    ];
    let memory_target = format!("< {} MiB", bench::PEAK_MEMORY_TARGET_BYTES >> 20);
    match &r.peak_memory {
        PeakMemory::Measured { peak_bytes, resident_before_bytes } => {
            rows.push([
                "peak memory (VmHWM)".into(),
                mib(*peak_bytes),
                "".into(),
                memory_target,
                verdict("peak memory").into(),
            ]);
            rows.push([
                "  of which before the run".into(),
                mib(*resident_before_bytes),
                "".into(),
                "".into(),
                "".into(),
            ]);
        }
        PeakMemory::Unavailable { .. } => {
            rows.push(["peak memory".into(), "n/a".into(), "".into(), memory_target, verdict("peak memory").into()]);
        }
    }
    let width = |c: usize| rows.iter().map(|row| row[c].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
    for [what, median, min, target, verdict] in &rows {
        let pad = |s: &str, w: usize| " ".repeat(w.saturating_sub(s.chars().count()));
        let line = format!(
            "  {what}{}   {}{median}   {}{min}   {target}{}   {verdict}",
            pad(what, w0),
            pad(median, w1),
            pad(min, w2),
            pad(target, w3)
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if let PeakMemory::Unavailable { reason } = &r.peak_memory {
        out.push_str(&format!("  peak memory not measured: {reason}\n"));
    }
    let p = &r.phases;
    out.push_str(&format!(
        "\nfabrik parses files on {} thread{}, serde_yaml on one. One fabrik run by phase, on one thread:\n\
         read {}, parse {}, decode {}, check {}\n",
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        ms(p.read),
        ms(p.parse),
        ms(p.decode),
        ms(p.check)
    ));
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::{Phases, Target, Timing};

    fn report(peak_memory: PeakMemory) -> Report {
        let ms = Duration::from_millis;
        let target =
            |name, unit, limit, value: f64| Target { name, unit, limit, value: Some(value), met: Some(value <= limit) };
        Report {
            hosts: 1000,
            vms: 10000,
            vm_entries: 5840,
            tenants: 20,
            syntax: "kdl",
            files: 61,
            bytes: 3 << 20,
            yaml_bytes: 4 << 20,
            runs: 5,
            threads: 2,
            serde_yaml: Timing { median: ms(125), min: ms(120) },
            fabrik: Timing { median: ms(900), min: ms(880) },
            ratio: 7.2,
            peak_memory,
            phases: Phases { read: ms(4), parse: ms(1700), decode: ms(40), check: ms(13) },
            targets: vec![
                target("time", "s", 1.0, 0.9),
                target("peak memory", "MiB", 300.0, 37.0),
                target("ratio", "×", 3.0, 7.2),
            ],
        }
    }

    #[test]
    fn table_lines_up_and_says_what_was_missed() {
        let out = human(&report(PeakMemory::Measured { peak_bytes: 37 << 20, resident_before_bytes: 4 << 20 }));
        let expected = "\
fabrik bench: 1000 hosts, 10000 VMs (5840 entries), 20 tenants; 61 KDL files, 3.0 MiB; 5 runs

                                              median        min   target
  serde_yaml → Value, YAML twin (4.0 MiB)   125.0 ms   120.0 ms
  fabrik validate                           900.0 ms   880.0 ms   < 1 s       ok
  fabrik / serde_yaml                          7.20×      7.33×   ≤ 3×        MISSED
  peak memory (VmHWM)                       37.0 MiB              < 300 MiB   ok
    of which before the run                  4.0 MiB

fabrik parses files on 2 threads, serde_yaml on one. One fabrik run by phase, on one thread:
read 4.0 ms, parse 1700.0 ms, decode 40.0 ms, check 13.0 ms
";
        assert_eq!(out, expected);
    }

    #[test]
    fn a_peak_that_could_not_be_measured_is_not_a_number() {
        let mut r = report(PeakMemory::Unavailable { reason: "no /proc here".into() });
        r.targets[1].value = None;
        r.targets[1].met = None;
        let out = human(&r);
        assert!(
            out.contains(
                "  peak memory                                    n/a              < 300 MiB   not measured\n"
            ),
            "{out}"
        );
        assert!(out.contains("peak memory not measured: no /proc here"), "{out}");
        assert!(!out.contains("MiB   ok"), "{out}");
    }
}
