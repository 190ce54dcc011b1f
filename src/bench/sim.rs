//! `fabrik bench --sim`: the commands people run, on simulated twins of a generated
//! factory, each as its own `fabrik` process (this very binary), timed from start to
//! exit with its peak resident memory (the kernel's `ru_maxrss` of that process):
//!
//! 1. `fabrik plan --sim` against fresh twins, once per output format (each with a new
//!    state folder, so every run builds its twins);
//! 2. `fabrik apply --sim --yes` from nothing (unless `--no-apply`);
//! 3. `fabrik plan --sim` of the applied twins: nothing to change, exit 0.
//!
//! Output goes to a file in the bench's folder (its size is reported), never to the
//! terminal: the figures are fabrik's, not the terminal's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Error, Target, TempDir, synth};
use crate::spec::source::Syntax;

/// Issue 14's targets.
pub const FRESH_PLAN_TARGET: Duration = Duration::from_secs(30);
pub const NOOP_PLAN_TARGET: Duration = Duration::from_secs(3);
pub const APPLY_TARGET: Duration = Duration::from_secs(30);
pub const APPLY_MEMORY_TARGET_BYTES: u64 = 500 * 1024 * 1024;

/// The plan's output formats, as `--format` takes them.
pub const FORMATS: [&str; 4] = ["human", "json", "markdown", "github"];

#[derive(Clone, Debug)]
pub struct Options {
    pub size: synth::Size,
    /// Also apply from nothing and plan the applied twins again.
    pub apply: bool,
    /// The `fabrik` to run (this binary unless `FABRIK_BENCH_BIN` names another: a
    /// before/after figure on the same files).
    pub bin: PathBuf,
}

/// One command run.
#[derive(Debug, Serialize)]
pub struct Run {
    /// What ran, for the table: `plan --sim --format json`.
    pub command: String,
    #[serde(rename = "wall_ms", serialize_with = "super::as_ms")]
    pub wall: Duration,
    /// `ru_maxrss` of the `fabrik` process.
    pub peak_bytes: u64,
    pub exit: i32,
    /// Bytes it wrote to stdout.
    pub output_bytes: u64,
}

#[derive(Debug, Serialize)]
#[must_use]
pub struct SimReport {
    pub hosts: usize,
    pub vms: usize,
    pub runs: Vec<Run>,
    pub targets: Vec<Target>,
}

pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<SimReport, Error> {
    let workdir = TempDir::new().map_err(|source| Error::Write { path: std::env::temp_dir(), source })?;
    let factory = workdir.0.join("factory");
    progress(&format!("generating {} hosts, {} VMs in {}", opts.size.hosts, opts.size.vms, factory.display()));
    super::write(opts.size, Syntax::Yaml, &factory)?;
    let mut runs = Vec::new();
    let mut targets = Vec::new();
    let mut memory = None;
    for (i, format) in FORMATS.iter().enumerate() {
        let state = workdir.0.join(format!("fresh-{i}"));
        let r = fabrik(opts, &workdir.0, &["plan", "--sim", "--format", format], &factory, &state, progress)?;
        targets.push(time_target("plan --sim, fresh twins", FRESH_PLAN_TARGET, &r));
        runs.push(r);
        // A fresh plan's twins are not kept: disk stays bounded at 10,000 hosts.
        let _ = std::fs::remove_dir_all(&state);
    }
    if opts.apply {
        let state = workdir.0.join("applied");
        let r = fabrik(opts, &workdir.0, &["apply", "--sim", "--yes"], &factory, &state, progress)?;
        targets.push(time_target("apply --sim from nothing", APPLY_TARGET, &r));
        memory = Some(Target {
            name: "apply --sim from nothing, peak memory",
            unit: "MiB",
            limit: APPLY_MEMORY_TARGET_BYTES as f64 / super::MIB,
            value: Some(r.peak_bytes as f64 / super::MIB),
            met: Some(r.peak_bytes < APPLY_MEMORY_TARGET_BYTES),
        });
        runs.push(r);
        let r = fabrik(opts, &workdir.0, &["plan", "--sim"], &factory, &state, progress)?;
        targets.push(time_target("plan --sim, applied twins, no change", NOOP_PLAN_TARGET, &r));
        runs.push(r);
    }
    // One time target per run, in order; the memory target after them.
    targets.extend(memory);
    Ok(SimReport { hosts: opts.size.hosts, vms: opts.size.vms, runs, targets })
}

fn time_target(name: &'static str, limit: Duration, r: &Run) -> Target {
    Target {
        name,
        unit: "s",
        limit: limit.as_secs_f64(),
        value: Some(r.wall.as_secs_f64()),
        met: Some(r.wall < limit && r.exit != 1),
    }
}

/// Runs `fabrik ARGS FACTORY --state-dir STATE`, stdout to a file, and measures it.
fn fabrik(
    opts: &Options,
    workdir: &Path,
    args: &[&str],
    factory: &Path,
    state: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Run, Error> {
    let command = args.join(" ");
    let out_path = workdir.join("stdout");
    let io = |source| Error::Write { path: out_path.clone(), source };
    let stdout = std::fs::File::create(&out_path).map_err(io)?;
    let stderr = std::fs::File::create(workdir.join("stderr")).map_err(io)?;
    let started = Instant::now();
    let child = Command::new(&opts.bin)
        .args(args)
        .arg(factory)
        .arg("--state-dir")
        .arg(state)
        .env_remove("FABRIK_FORMAT")
        .env_remove("FABRIK_STATE_DIR")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(io)?;
    let (exit, peak_bytes) = wait_rusage(child.id()).map_err(io)?;
    let wall = started.elapsed();
    let output_bytes = std::fs::metadata(&out_path).map(|m| m.len()).unwrap_or(0);
    // Plan: 0 no changes, 2 changes; apply: 0. Anything else is a failed run.
    if !(exit == 0 || (exit == 2 && args[0] == "plan")) {
        let err = std::fs::read_to_string(workdir.join("stderr")).unwrap_or_default();
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        let tail =
            |s: &str| s.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(Error::Run { command, exit, tail: format!("{}\n{}", tail(&out), tail(&err)) });
    }
    progress(&format!(
        "{command}: {:.2} s, peak {:.0} MiB, exit {exit}, {} bytes out",
        wall.as_secs_f64(),
        peak_bytes as f64 / super::MIB,
        output_bytes
    ));
    Ok(Run { command, wall, peak_bytes, exit, output_bytes })
}

/// Waits for the child and returns its exit status (128 + signal when killed) and its
/// peak resident memory. `std::process::Child::wait` does not give the child's resource
/// usage, and `getrusage(RUSAGE_CHILDREN)` is the largest of all children so far, so
/// `wait4(2)` it is.
fn wait_rusage(pid: u32) -> std::io::Result<(i32, u64)> {
    use nix::libc;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain data; wait4 writes it and `status` for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pointers to live locals; `pid` is a child this process spawned.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r >= 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    // Linux reports ru_maxrss in KiB.
    Ok((code, usage.ru_maxrss as u64 * 1024))
}
