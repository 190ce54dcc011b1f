//! `fabrik bench`: generate a synthetic factory, time loading and checking it against
//! serde_yaml, and print the figures next to the targets.

use super::exit;
use crate::bench::plan::PlanReport;
use crate::bench::{self, PeakMemory, Report};
use crate::spec::source;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Hosts in the generated factory (8× H200 each).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub hosts: u32,
    /// VMs in the generated factory, replicas counted (default: 10 per host).
    #[arg(long)]
    pub vms: Option<u32>,
    /// Syntax of the generated files.
    #[arg(long, value_enum, default_value_t = Syntax::Yaml)]
    pub syntax: Syntax,
    /// Timed runs of each measurement; the median and the minimum are reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Time `fabrik inventory` of `--hosts` simulated twins instead of validation.
    #[arg(long, conflicts_with = "plan")]
    pub inventory: bool,
    /// Time and measure crafted hostile factories (hidden nesting, alias bombs, a 200 MB
    /// file, 40,000 errors) instead of validation.
    #[arg(long, conflicts_with_all = ["plan", "inventory"])]
    pub hostile: bool,
    /// Time the plan against a converged live state made in memory, where nothing
    /// changed and where 1% of the VMs changed, instead of validation.
    #[arg(long)]
    pub plan: bool,
    /// Run `fabrik plan --sim` (every output format, fresh twins), `apply --sim` from
    /// nothing, and `plan --sim` of the applied twins, each as its own process, with its
    /// time and peak memory, instead of validation.
    #[arg(long, conflicts_with_all = ["plan", "inventory", "hostile"])]
    pub sim: bool,
    /// With `--sim`: only the fresh plans, no apply.
    #[arg(long, requires = "sim")]
    pub no_apply: bool,
    /// Write the generated factory to this directory (absent or empty) and stop, so
    /// that others can measure the very same files (`fabrik validate DIR`).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["plan", "inventory", "hostile", "sim"])]
    pub write: Option<std::path::PathBuf>,
}

impl Args {
    /// The factory's size: `--vms` defaults to ten VMs per host.
    fn size(&self) -> bench::synth::Size {
        let hosts = self.hosts as usize;
        bench::synth::Size { hosts, vms: self.vms.map_or(hosts * 10, |v| v as usize) }
    }
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
    if args.plan {
        return run_plan(args);
    }
    if args.hostile {
        return run_hostile(args);
    }
    if args.sim {
        return run_sim(args);
    }
    if let Some(dir) = &args.write {
        return run_write(args, dir);
    }
    let opts = bench::Options { size: args.size(), syntax: syntax(args), runs: args.runs as usize };
    let report = match bench::run(&opts, &mut |line| eprintln!("{line}")) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let out = match args.format {
        Format::Human => human(&report),
        Format::Json => bench_json("load", &report),
    };
    super::out::print(&out);
    exit::OK
}

fn run_write(args: &Args, dir: &std::path::Path) -> u8 {
    match bench::write_factory(args.size(), syntax(args), dir) {
        Ok(s) => {
            super::out::print(&format!(
                "wrote {} hosts, {} VMs ({} entries), {} tenants: {} files, {} bytes, to {}\n",
                args.size().hosts,
                args.size().vms,
                s.vm_entries,
                s.tenants,
                s.files,
                s.bytes,
                dir.display()
            ));
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

fn syntax(args: &Args) -> source::Syntax {
    match args.syntax {
        Syntax::Yaml => source::Syntax::Yaml,
        Syntax::Kdl => source::Syntax::Kdl,
    }
}

/// A report as `fabrik-bench/1`: `bench` names which of the four it is.
fn bench_json(bench: &str, report: &impl serde::Serialize) -> String {
    let mut value = crate::formats::versioned(crate::formats::BENCH, report);
    if let serde_json::Value::Object(m) = &mut value {
        let mut rest = std::mem::take(m).into_iter();
        m.extend(rest.next()); // `format`
        m.insert("bench".into(), serde_json::Value::String(bench.into()));
        m.extend(rest);
    }
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}

/// Prints the error and its causes once, and returns the exit status.
fn fail(e: &bench::Error) -> u8 {
    let mut msg = format!("error: {e}");
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg.push_str(&format!("\n  caused by: {c}"));
        cause = c.source();
    }
    eprintln!("{msg}");
    exit::INVALID
}

fn run_plan(args: &Args) -> u8 {
    let opts = bench::plan::Options { size: args.size(), syntax: syntax(args), runs: args.runs as usize };
    let report = match bench::plan::run(&opts, &mut |line| eprintln!("{line}")) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let out = match args.format {
        Format::Human => human_plan(&report),
        Format::Json => bench_json("plan", &report),
    };
    super::out::print(&out);
    exit::OK
}

fn run_sim(args: &Args) -> u8 {
    let bin = match std::env::var_os("FABRIK_BENCH_BIN").map(std::path::PathBuf::from) {
        Some(bin) => bin,
        None => match std::env::current_exe() {
            Ok(bin) => bin,
            Err(e) => {
                eprintln!("error: cannot find this fabrik's own binary: {e}");
                return exit::INVALID;
            }
        },
    };
    let opts = bench::sim::Options { size: args.size(), apply: !args.no_apply, bin };
    let report = match bench::sim::run(&opts, &mut |line| eprintln!("{line}")) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let out = match args.format {
        Format::Human => human_sim(&report),
        Format::Json => bench_json("sim", &report),
    };
    super::out::print(&out);
    if report.targets.iter().all(|t| t.met != Some(false)) { exit::OK } else { exit::INVALID }
}

/// One line per command: time, peak memory, output size, and the target it is held to.
fn human_sim(r: &bench::sim::SimReport) -> String {
    let mut out = format!("fabrik bench --sim: {} hosts, {} VMs, each command one process\n", r.hosts, r.vms);
    let targets = r.targets.iter();
    for (run, t) in r.runs.iter().zip(targets) {
        let verdict = match t.met {
            Some(true) => "ok",
            Some(false) => "MISSED",
            None => "not measured",
        };
        out.push_str(&format!(
            "  {:<38} {:>9.2} s  {:>7.0} MiB  {:>12} bytes out  exit {}  (< {} s {verdict})\n",
            run.command,
            run.wall.as_secs_f64(),
            run.peak_bytes as f64 / bench::MIB,
            run.output_bytes,
            run.exit,
            t.limit,
        ));
    }
    if let Some(t) = r.targets.iter().find(|t| t.unit == "MiB") {
        let verdict = if t.met == Some(true) { "ok" } else { "MISSED" };
        out.push_str(&format!("  apply peak memory target: < {} MiB {verdict}\n", t.limit));
    }
    out
}

fn run_hostile(args: &Args) -> u8 {
    let report = match bench::hostile::run(args.runs as usize, &mut |line| eprintln!("{line}")) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let out = match args.format {
        Format::Human => human_hostile(&report),
        Format::Json => bench_json("hostile", &report),
    };
    super::out::print(&out);
    let met = report.cases.iter().all(|c| c.time_met && c.memory_met != Some(false) && c.located);
    if met { exit::OK } else { exit::INVALID }
}

/// One line per case: time, peak memory above the start, the error it ended with.
fn human_hostile(r: &bench::hostile::HostileReport) -> String {
    let mut out = format!(
        "fabrik bench --hostile: {} runs each; targets {:.0} ms, {:.0} MiB above the start\n",
        r.runs,
        r.time_target_ms,
        r.peak_memory_target_bytes as f64 / bench::MIB
    );
    for c in &r.cases {
        let memory = match &c.peak_memory {
            PeakMemory::Measured { peak_bytes, resident_before_bytes } => {
                format!("{:>8.1} MiB", peak_bytes.saturating_sub(*resident_before_bytes) as f64 / bench::MIB)
            }
            PeakMemory::Unavailable { .. } => "       n/a".to_string(),
        };
        let ok = if c.time_met && c.memory_met != Some(false) && c.located { "ok" } else { "MISSED" };
        out.push_str(&format!(
            "  {:<22} {:>10} {memory}  {:>6} errors, first {} {}  {ok}\n",
            c.name,
            bench::inventory::ms(c.time.median),
            c.errors,
            c.first_code.unwrap_or("-"),
            if c.located { "(located)" } else { "(not located)" },
        ));
    }
    out
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
                Format::Json => bench_json("inventory", &r),
            };
            super::out::print(&out);
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
    if let Some(x) = &r.kdl_extras {
        rows.push([
            "  with `/-`, raw strings, types".into(),
            ms(x.fabrik.median),
            ms(x.fabrik.min),
            "".into(),
            "".into(),
        ]);
        rows.push([
            "  … / fabrik validate".into(),
            format!("{:.2}×", x.ratio),
            "".into(),
            format!("≤ {}×", bench::KDL_EXTRAS_RATIO_TARGET),
            verdict("kdl extras ratio").into(),
        ]);
    }
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
    out.push_str(&table(&rows));
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

/// Rows of five columns (what, median, min, target, verdict), lined up.
fn table(rows: &[[String; 5]]) -> String {
    let width = |c: usize| rows.iter().map(|row| row[c].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
    let mut out = String::new();
    for [what, median, min, target, verdict] in rows {
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
    out
}

/// The plan figures as a table like [`human`]'s, each plan against its target.
pub fn human_plan(r: &PlanReport) -> String {
    let ms = |d: std::time::Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let mib = |m: &PeakMemory| match m {
        PeakMemory::Measured { peak_bytes, .. } => format!("{:.1} MiB", *peak_bytes as f64 / bench::MIB),
        PeakMemory::Unavailable { .. } => "n/a".into(),
    };
    let verdict = |name: &str| match r.targets.iter().find(|t| t.name == name).and_then(|t| t.met) {
        Some(true) => "ok",
        Some(false) => "MISSED",
        None => "not measured",
    };
    let target = format!("< {} s", bench::plan::plan_time_target(r.hosts).as_secs_f64());
    let mut rows: Vec<[String; 5]> = vec![
        ["".into(), "median".into(), "min".into(), "target".into(), "".into()],
        ["load + validate".into(), ms(r.load_validate.median), ms(r.load_validate.min), "".into(), "".into()],
    ];
    let mut changes = Vec::new();
    for (name, s) in [("plan, nothing changed", &r.unchanged), ("plan, 1% changed", &r.one_percent)] {
        rows.push([name.into(), ms(s.total.median), ms(s.total.min), target.clone(), verdict(name).into()]);
        rows.push(["  build desired".into(), ms(s.build.median), ms(s.build.min), "".into(), "".into()]);
        rows.push(["  diff + ordering".into(), ms(s.plan.median), ms(s.plan.min), "".into(), "".into()]);
        rows.push(["  peak memory (VmHWM)".into(), mib(&s.peak_memory), "".into(), "".into(), "".into()]);
        if let PeakMemory::Measured { resident_before_bytes, .. } = s.peak_memory {
            rows.push([
                "    of which before the run".into(),
                format!("{:.1} MiB", resident_before_bytes as f64 / bench::MIB),
                "".into(),
                "".into(),
                "".into(),
            ]);
        }
        changes.push(format!(
            "{}: {} VMs changed, {} change{}, {} VM restart{}",
            name.trim_start_matches("plan, "),
            s.vms_changed,
            s.changes,
            if s.changes == 1 { "" } else { "s" },
            s.vm_restarts,
            if s.vm_restarts == 1 { "" } else { "s" },
        ));
    }
    let mut out = format!(
        "fabrik bench --plan: {} hosts, {} VMs, {} files; {} run{}\n\n",
        r.hosts,
        r.vms,
        r.syntax.to_uppercase(),
        r.runs,
        if r.runs == 1 { "" } else { "s" },
    );
    out.push_str(&table(&rows));
    out.push('\n');
    for line in changes {
        out.push_str(&line);
        out.push('\n');
    }
    for (name, s) in [("nothing changed", &r.unchanged), ("1% changed", &r.one_percent)] {
        if let PeakMemory::Unavailable { reason } = &s.peak_memory {
            out.push_str(&format!("peak memory ({name}) not measured: {reason}\n"));
        }
    }
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
            kdl_extras: None,
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

    #[test]
    fn plan_table_shows_both_plans_against_the_target() {
        use crate::bench::plan::Scenario;
        let ms = Duration::from_millis;
        let scenario = |vms_changed, total, peak| Scenario {
            vms_changed,
            changes: vms_changed,
            vm_restarts: vms_changed,
            total: Timing { median: ms(total), min: ms(total - 50) },
            build: Timing { median: ms(120), min: ms(110) },
            plan: Timing { median: ms(total - 120), min: ms(total - 170) },
            peak_memory: peak,
        };
        let target =
            |name, value: f64| Target { name, unit: "s", limit: 1.0, value: Some(value), met: Some(value <= 1.0) };
        let r = PlanReport {
            hosts: 1000,
            vms: 10000,
            syntax: "yaml",
            runs: 5,
            load_validate: Timing { median: ms(110), min: ms(100) },
            unchanged: scenario(
                0,
                950,
                PeakMemory::Measured { peak_bytes: 219 << 20, resident_before_bytes: 140 << 20 },
            ),
            one_percent: scenario(100, 3100, PeakMemory::Unavailable { reason: "no /proc here".into() }),
            targets: vec![target("plan, nothing changed", 0.95), target("plan, 1% changed", 3.1)],
        };
        let expected = "\
fabrik bench --plan: 1000 hosts, 10000 VMs, YAML files; 5 runs

                                   median         min   target
  load + validate                110.0 ms    100.0 ms
  plan, nothing changed          950.0 ms    900.0 ms   < 1 s    ok
    build desired                120.0 ms    110.0 ms
    diff + ordering              830.0 ms    780.0 ms
    peak memory (VmHWM)         219.0 MiB
      of which before the run   140.0 MiB
  plan, 1% changed              3100.0 ms   3050.0 ms   < 1 s    MISSED
    build desired                120.0 ms    110.0 ms
    diff + ordering             2980.0 ms   2930.0 ms
    peak memory (VmHWM)               n/a

nothing changed: 0 VMs changed, 0 changes, 0 VM restarts
1% changed: 100 VMs changed, 100 changes, 100 VM restarts
peak memory (1% changed) not measured: no /proc here
";
        assert_eq!(human_plan(&r), expected);
    }
}
