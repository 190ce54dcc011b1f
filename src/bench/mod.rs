//! `fabrik bench`: how long loading and checking a large factory takes, and the memory
//! it needs, measured against serde_yaml reading the same YAML.
//!
//! The factory is generated ([`synth`]), written to a temporary directory, and then
//! read back the way `fabrik validate` reads it. The measurements:
//! - serde_yaml alone reading every YAML file into a `serde_yaml::Value`: the baseline,
//!   the least any YAML reader has to do (for a KDL factory, its YAML twin is read);
//! - [`check::validate`] on the directory: parse, decode and every check;
//! - the peak resident memory of the process during validation, from `VmHWM` after
//!   resetting it through `/proc/self/clear_refs` (Linux 4.0 or later).
//!
//! Timings are the median and minimum of several runs. This module measures; the
//! command line prints. [`inventory`], [`plan`] and [`hostile`] are the other modes:
//! observing simulated twins, planning against a converged live state, and crafted
//! factories that must end quickly with a located error.

pub mod hostile;
pub mod inventory;
pub mod plan;
pub mod sim;
pub mod synth;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::check;
use crate::diag::Diagnostic;
use crate::spec::source::Syntax;

/// Targets from issue 2, for a factory of 1,000 hosts and 10,000 VMs on a 2-core machine.
pub const TIME_TARGET: Duration = Duration::from_secs(1);
pub const PEAK_MEMORY_TARGET_BYTES: u64 = 300 * 1024 * 1024;
/// fabrik may take at most this many times what serde_yaml alone takes.
pub const RATIO_TARGET: f64 = 3.0;
/// A KDL factory with `/-` comments, raw strings and type annotations in every file may
/// take at most this many times what the same factory without them takes (issue 14).
pub const KDL_EXTRAS_RATIO_TARGET: f64 = 1.5;

/// What [`run`] puts at the top of every KDL file for its second KDL measurement: a
/// slashdashed node with a slashdashed argument, property and children block, raw
/// strings and type annotations, none of which changes the factory.
pub const KDL_EXTRAS: &str =
    "/-(note)generated-by #\"fabrik bench\"# /-1 (u8)2 /-x=#\"y\"# /-{ a } {\n    (t)b #\"raw\"#\n}\n";

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub size: synth::Size,
    pub syntax: Syntax,
    /// Timed runs of each measurement (at least one).
    pub runs: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write the generated factory to `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is not empty: give `--write` a new or empty directory", path.display())]
    NotEmpty { path: PathBuf },
    #[error("{vms} VMs do not fit on {hosts} hosts: the generated factory holds at most {max} VMs per host")]
    TooManyVms { vms: usize, hosts: usize, max: usize },
    #[error("the generated factory is invalid ({errors} errors; first: {first})")]
    Invalid { errors: usize, first: String },
    #[error(
        "the plan where {scenario} has {actions} actions and {errors} errors, not {expected} VM updates (first: {first})"
    )]
    UnexpectedPlan { scenario: String, expected: usize, actions: usize, errors: usize, first: String },
    #[error(
        "this fabrik was built without its serde_yaml baseline; build it with the `bench` feature: \
         cargo run --release --features bench -- bench …"
    )]
    NoBaseline,
    #[error("`fabrik {command}` ended with exit status {exit}:\n{tail}")]
    Run { command: String, exit: i32, tail: String },
    #[error("serde_yaml cannot read `{}`", path.display())]
    Baseline {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What one benchmark found.
#[derive(Debug, Serialize)]
#[must_use]
pub struct Report {
    pub hosts: usize,
    /// VM instances, replicas counted.
    pub vms: usize,
    /// VM entries in the files (a replica group is one).
    pub vm_entries: usize,
    pub tenants: usize,
    pub syntax: &'static str,
    pub files: usize,
    /// Size of the factory's files in `syntax`.
    pub bytes: usize,
    /// Size of the YAML files serde_yaml reads (the same files for a YAML factory).
    pub yaml_bytes: usize,
    pub runs: usize,
    /// Threads fabrik parses files on (one per core, at most one per file); serde_yaml uses one.
    pub threads: usize,
    /// serde_yaml reading the YAML files into `serde_yaml::Value`.
    pub serde_yaml: Timing,
    /// `fabrik::check::validate`: parse, decode and check.
    pub fabrik: Timing,
    /// fabrik's median time over serde_yaml's.
    pub ratio: f64,
    pub peak_memory: PeakMemory,
    /// For a KDL factory: `fabrik::check::validate` on the same files with
    /// [`KDL_EXTRAS`] at the top of each, and its median over `fabrik`'s.
    pub kdl_extras: Option<KdlExtras>,
    /// Where one fabrik run spends its time, phase by phase, on one thread.
    pub phases: Phases,
    pub targets: Vec<Target>,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct KdlExtras {
    pub fabrik: Timing,
    pub ratio: f64,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Timing {
    #[serde(rename = "median_ms", serialize_with = "as_ms")]
    pub median: Duration,
    #[serde(rename = "min_ms", serialize_with = "as_ms")]
    pub min: Duration,
}

impl Timing {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Timing {
        samples.sort_unstable();
        let n = samples.len();
        let median = if n % 2 == 1 { samples[n / 2] } else { (samples[n / 2 - 1] + samples[n / 2]) / 2 };
        Timing { median, min: samples[0] }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum PeakMemory {
    /// `VmHWM` over the first fabrik run, and the resident memory the process already
    /// had when it started (the program and the benchmark; included in the peak).
    Measured { peak_bytes: u64, resident_before_bytes: u64 },
    /// The peak could not be measured here; never a guessed number.
    Unavailable { reason: String },
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Phases {
    #[serde(rename = "read_ms", serialize_with = "as_ms")]
    pub read: Duration,
    #[serde(rename = "parse_ms", serialize_with = "as_ms")]
    pub parse: Duration,
    #[serde(rename = "decode_ms", serialize_with = "as_ms")]
    pub decode: Duration,
    #[serde(rename = "check_ms", serialize_with = "as_ms")]
    pub check: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: &'static str,
    pub unit: &'static str,
    pub limit: f64,
    /// `None` when it could not be measured.
    pub value: Option<f64>,
    pub met: Option<bool>,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}

/// Generates the factory, measures, and removes the files again.
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, Error> {
    if !cfg!(feature = "bench") {
        return Err(Error::NoBaseline);
    }
    let runs = opts.runs.max(1);
    let hosts = opts.size.hosts.max(1);
    if opts.size.vms > hosts * synth::VMS_PER_HOST_MAX {
        return Err(Error::TooManyVms { vms: opts.size.vms, hosts, max: synth::VMS_PER_HOST_MAX });
    }
    let workdir = TempDir::new().map_err(|source| Error::Write { path: std::env::temp_dir(), source })?;

    progress(&format!(
        "generating {} hosts and {} VMs ({}) in {}",
        opts.size.hosts,
        opts.size.vms,
        syntax_name(opts.syntax),
        workdir.0.display()
    ));
    let dir = workdir.0.join("factory");
    let generated = write(opts.size, opts.syntax, &dir)?;
    let yaml_dir = match opts.syntax {
        Syntax::Yaml => dir.clone(),
        Syntax::Kdl => {
            let yaml_dir = workdir.0.join("yaml-twin");
            write(opts.size, Syntax::Yaml, &yaml_dir)?;
            yaml_dir
        }
    };
    let yaml_files = files_under(&yaml_dir, "yaml");
    let yaml_bytes = yaml_files.iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len() as usize)).sum();

    // fabrik first, while the process holds little else. The peak is that of the first
    // run: later ones start with memory the allocator kept from the run before.
    let mut fabrik = Vec::new();
    let mut peak = None;
    for i in 0..runs {
        let reset = (i == 0).then(peak::reset);
        let t = Instant::now();
        let v = check::validate(&dir);
        let elapsed = t.elapsed();
        if let Some(reset) = reset {
            peak = Some(reset.and_then(|before| Ok((peak::read()?, before))));
        }
        if i == 0 && !v.is_valid() {
            let mut errors = v.diags.iter().filter(|d| d.is_error());
            let first = errors.next().map(|d| describe(d, &v.sources)).unwrap_or_default();
            return Err(Error::Invalid { errors: 1 + errors.count(), first });
        }
        drop(v);
        progress(&format!("fabrik validate, run {}/{runs}: {}", i + 1, ms(elapsed)));
        fabrik.push(elapsed);
    }
    let phases = phases(&dir);
    let kdl_extras = match opts.syntax {
        Syntax::Yaml => None,
        Syntax::Kdl => {
            let extras_dir = workdir.0.join("kdl-extras");
            for (name, text) in synth::generate(opts.size, Syntax::Kdl).files {
                let path = extras_dir.join(&name);
                let written = path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(&path, format!("{KDL_EXTRAS}{text}")));
                written.map_err(|source| Error::Write { path, source })?;
            }
            let mut samples = Vec::new();
            for i in 0..runs {
                let t = Instant::now();
                let v = check::validate(&extras_dir);
                let elapsed = t.elapsed();
                if i == 0 && !v.is_valid() {
                    let mut errors = v.diags.iter().filter(|d| d.is_error());
                    let first = errors.next().map(|d| describe(d, &v.sources)).unwrap_or_default();
                    return Err(Error::Invalid { errors: 1 + errors.count(), first });
                }
                drop(v);
                progress(&format!(
                    "fabrik validate, `/-` and the rest in every file, run {}/{runs}: {}",
                    i + 1,
                    ms(elapsed)
                ));
                samples.push(elapsed);
            }
            let timing = Timing::of(samples);
            let base = Timing::of(fabrik.clone()).median.as_secs_f64().max(f64::MIN_POSITIVE);
            Some(KdlExtras { fabrik: timing, ratio: timing.median.as_secs_f64() / base })
        }
    };

    let mut baseline = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let values = read_with_serde_yaml(&yaml_files)?;
        let elapsed = t.elapsed();
        drop(values);
        progress(&format!("serde_yaml, run {}/{runs}: {}", i + 1, ms(elapsed)));
        baseline.push(elapsed);
    }

    let (serde_yaml, fabrik) = (Timing::of(baseline), Timing::of(fabrik));
    let ratio = fabrik.median.as_secs_f64() / serde_yaml.median.as_secs_f64().max(f64::MIN_POSITIVE);
    let peak_memory = match peak {
        Some(Ok((peak_bytes, resident_before_bytes))) => PeakMemory::Measured { peak_bytes, resident_before_bytes },
        Some(Err(reason)) => PeakMemory::Unavailable { reason },
        None => PeakMemory::Unavailable { reason: "no run was made".into() },
    };
    let target = |name, unit, limit: f64, value: Option<f64>| Target {
        name,
        unit,
        limit,
        value,
        met: value.map(|v| v <= limit),
    };
    let targets = vec![
        target("time", "s", TIME_TARGET.as_secs_f64(), Some(fabrik.median.as_secs_f64())),
        target(
            "peak memory",
            "MiB",
            PEAK_MEMORY_TARGET_BYTES as f64 / MIB,
            match &peak_memory {
                PeakMemory::Measured { peak_bytes, .. } => Some(*peak_bytes as f64 / MIB),
                PeakMemory::Unavailable { .. } => None,
            },
        ),
        target("ratio", "×", RATIO_TARGET, Some(ratio)),
    ];
    let mut targets = targets;
    if let Some(x) = &kdl_extras {
        targets.push(target("kdl extras ratio", "×", KDL_EXTRAS_RATIO_TARGET, Some(x.ratio)));
    }
    Ok(Report {
        hosts,
        vms: opts.size.vms,
        vm_entries: generated.vm_entries,
        tenants: generated.tenants,
        syntax: syntax_name(opts.syntax),
        files: generated.files,
        bytes: generated.bytes,
        yaml_bytes,
        runs,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()).min(generated.files),
        serde_yaml,
        fabrik,
        ratio,
        peak_memory,
        kdl_extras,
        phases,
        targets,
    })
}

pub const MIB: f64 = 1024.0 * 1024.0;

fn syntax_name(syntax: Syntax) -> &'static str {
    match syntax {
        Syntax::Yaml => "yaml",
        Syntax::Kdl => "kdl",
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Writes the generated factory to `dir` for others to measure, refusing a directory
/// that already holds anything: the files must be exactly the generator's.
pub fn write_factory(size: synth::Size, syntax: Syntax, dir: &Path) -> Result<synth::Summary, Error> {
    let hosts = size.hosts.max(1);
    if size.vms > hosts * synth::VMS_PER_HOST_MAX {
        return Err(Error::TooManyVms { vms: size.vms, hosts, max: synth::VMS_PER_HOST_MAX });
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::NotEmpty { path: dir.to_path_buf() });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Write { path: dir.to_path_buf(), source }),
    }
    write(size, syntax, dir)
}

fn write(size: synth::Size, syntax: Syntax, dir: &Path) -> Result<synth::Summary, Error> {
    synth::write(size, syntax, dir).map_err(|source| Error::Write { path: dir.to_path_buf(), source })
}

fn describe(d: &Diagnostic, sources: &crate::spec::source::Sources) -> String {
    match &d.primary {
        Some(l) => {
            let f = sources.get(l.span.file);
            let at = f.line_col(l.span.start);
            format!("{}:{}:{}: {} [{}]", f.path.display(), at.line, at.column, d.message, d.code)
        }
        None => format!("{} [{}]", d.message, d.code),
    }
}

/// Files with this extension under `dir`, in path order.
fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, ext, out);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, ext, &mut out);
    out.sort();
    out
}

#[cfg(feature = "bench")]
fn read_with_serde_yaml(files: &[PathBuf]) -> Result<Vec<serde_yaml::Value>, Error> {
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Baseline { path: path.clone(), source: Box::new(e) })?;
            serde_yaml::from_str(&text).map_err(|e| Error::Baseline { path: path.clone(), source: Box::new(e) })
        })
        .collect()
}

/// Without the `bench` feature there is no baseline ([`run`] says so before any work).
#[cfg(not(feature = "bench"))]
fn read_with_serde_yaml(_: &[PathBuf]) -> Result<Vec<()>, Error> {
    Err(Error::NoBaseline)
}

/// One run of what [`crate::spec::load::load`] and [`check::run`] do, file by file on
/// one thread, timing each phase. Attribution only: the timed runs go through
/// [`check::validate`] itself.
fn phases(dir: &Path) -> Phases {
    use crate::spec::decode::Decoder;
    use crate::spec::model::{self, Spec};
    use crate::spec::source::{SourceFile, Sources};
    use crate::spec::{kdl, yaml};

    let mut p = Phases { read: Duration::ZERO, parse: Duration::ZERO, decode: Duration::ZERO, check: Duration::ZERO };
    let mut files: Vec<(PathBuf, Syntax)> = files_under(dir, "yaml").into_iter().map(|f| (f, Syntax::Yaml)).collect();
    files.extend(files_under(dir, "kdl").into_iter().map(|f| (f, Syntax::Kdl)));
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut sources = Sources::default();
    let mut spec = Spec::default();
    let mut diags = Vec::new();
    for (path, syntax) in files {
        let t = Instant::now();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        p.read += t.elapsed();

        let t = Instant::now();
        let id = sources.add(SourceFile::new(path, syntax, text));
        let file = sources.get(id);
        let root = match syntax {
            Syntax::Yaml => yaml::parse(id, file).ok().flatten(),
            Syntax::Kdl => kdl::parse(id, file).ok().flatten(),
        };
        p.parse += t.elapsed();

        let t = Instant::now();
        if let Some(root) = root {
            let mut d = Decoder::new(syntax);
            let file_spec = model::decode_file(&mut d, &root);
            spec.merge(file_spec, &mut diags);
            drop(root);
        }
        p.decode += t.elapsed();
    }
    let t = Instant::now();
    let _ = check::run(&spec);
    p.check = t.elapsed();
    p
}

/// Peak resident memory through procfs.
mod peak {
    const STATUS: &str = "/proc/self/status";

    /// Resets the peak to the current resident size, and returns that size.
    pub fn reset() -> Result<u64, String> {
        std::fs::write("/proc/self/clear_refs", "5").map_err(|e| {
            format!("cannot reset the peak through /proc/self/clear_refs ({e}); Linux 4.0 or later is needed")
        })?;
        let (hwm, rss) = (field("VmHWM:")?, field("VmRSS:")?);
        // A kernel that ignored the reset keeps an older, higher peak.
        if hwm > rss + 4 * 1024 * 1024 {
            return Err(format!(
                "the kernel did not reset the peak (VmHWM {hwm} B > VmRSS {rss} B after writing 5 to /proc/self/clear_refs)"
            ));
        }
        Ok(rss)
    }

    pub fn read() -> Result<u64, String> {
        field("VmHWM:")
    }

    fn field(name: &str) -> Result<u64, String> {
        let status = std::fs::read_to_string(STATUS).map_err(|e| format!("cannot read {STATUS}: {e}"))?;
        let line = status.lines().find(|l| l.starts_with(name)).ok_or_else(|| format!("{STATUS} has no {name}"))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .map_err(|e| format!("cannot read {name} in {STATUS}: {e}"))?;
        Ok(kib * 1024)
    }
}

/// A directory removed with everything in it when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> std::io::Result<TempDir> {
        let base = std::env::temp_dir();
        let pid = std::process::id();
        let mut attempt = 0u32;
        loop {
            let path = base.join(format!("fabrik-bench-{pid}-{attempt}"));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::synth::{Size, generate};
    use super::*;

    const SMALL: Size = Size { hosts: 120, vms: 700 };

    fn validate(syntax: Syntax) -> check::Validation {
        let dir = TempDir::new().unwrap();
        generate(SMALL, syntax).write_to(&dir.0).unwrap();
        check::validate(&dir.0)
    }

    #[test]
    fn generated_factory_is_valid_in_both_syntaxes() {
        for syntax in [Syntax::Yaml, Syntax::Kdl] {
            let v = validate(syntax);
            let errors: Vec<String> = v.diags.iter().map(|d| describe(d, &v.sources)).collect();
            assert!(errors.is_empty(), "{syntax:?}: {errors:#?}");
            assert_eq!(v.spec.hosts.len(), SMALL.hosts);
            let instances: usize = v.spec.vms.iter().map(|vm| vm.instance_names().len()).sum();
            assert_eq!(instances, SMALL.vms);
            assert_eq!(v.spec.tenants.len(), 3);
            assert!(v.spec.vms.iter().any(|vm| vm.replicas.is_some()));
            assert!(v.spec.vms.iter().any(|vm| vm.host.is_some() && !vm.gpus.is_empty()));
        }
    }

    #[test]
    fn yaml_and_kdl_give_the_same_model() {
        let (y, k) = (validate(Syntax::Yaml), validate(Syntax::Kdl));
        assert_eq!(serde_json::to_value(&y.spec).unwrap(), serde_json::to_value(&k.spec).unwrap());
    }

    #[test]
    fn written_factory_is_the_generated_one_and_a_full_directory_is_refused() {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.0.join("f");
        let size = synth::Size { hosts: 3, vms: 30 };
        let summary = write_factory(size, Syntax::Kdl, &dir).unwrap();
        assert_eq!(summary, synth::generate(size, Syntax::Kdl).summary);
        assert!(check::validate(&dir).is_valid());
        assert!(matches!(write_factory(size, Syntax::Kdl, &dir), Err(Error::NotEmpty { .. })));
    }

    #[test]
    fn generator_is_deterministic() {
        for syntax in [Syntax::Yaml, Syntax::Kdl] {
            assert_eq!(generate(SMALL, syntax), generate(SMALL, syntax));
        }
        assert_ne!(generate(SMALL, Syntax::Yaml), generate(Size { hosts: 120, vms: 701 }, Syntax::Yaml));
    }

    #[test]
    fn tiny_and_dense_factories_are_valid() {
        let densest = |hosts| Size { hosts, vms: hosts * synth::VMS_PER_HOST_MAX };
        for size in
            [Size { hosts: 1, vms: 0 }, Size { hosts: 1, vms: 1 }, Size { hosts: 2, vms: 3 }, densest(1), densest(51)]
        {
            let dir = TempDir::new().unwrap();
            generate(size, Syntax::Yaml).write_to(&dir.0).unwrap();
            let v = check::validate(&dir.0);
            assert!(v.is_valid(), "{size:?}: {:?}", v.diags.iter().next());
        }
    }

    #[test]
    fn peak_memory_sees_an_allocation() {
        let before = peak::reset().expect("Linux 4.0 or later resets the peak");
        let mib_64 = std::hint::black_box(vec![1u8; 64 << 20]);
        let peak = peak::read().unwrap();
        assert!(peak >= before + (60 << 20), "peak {peak} B, before {before} B");
        drop(mib_64);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        let ms = Duration::from_millis;
        assert_eq!(Timing::of(vec![ms(3), ms(1), ms(2)]).median, ms(2));
        assert_eq!(Timing::of(vec![ms(4), ms(1), ms(2), ms(3)]).median, Duration::from_micros(2500));
        assert_eq!(Timing::of(vec![ms(4), ms(1)]).min, ms(1));
    }
}
