//! `fabrik watch`: keep the hosts equal to a branch's commits (or, in lab mode, a
//! directory), on every change and against drift; `fabrik watch suspend|resume`.
//! The loop is `watch::run`; this module parses, loads factories, and prints.
//!
//! Exit 0 after SIGTERM/SIGINT (the pass in flight finished its actions) or after
//! `--once`; 1 when it cannot start; 64 for a bad flag.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};

use super::exit;
use super::hosts::Hosts;
use super::plan::{Select, created_path, prepare};
use crate::apply::Limits;
use crate::plan::Class;
use crate::reconcile::VerifyOptions;
use crate::watch::engine::{Env, Factory};
use crate::watch::git;
use crate::watch::policy::Overrides;
use crate::watch::run::{self, Config, Loaded, Origin, Refusal};
use crate::watch::state::{StateDir, Suspension, now_rfc3339, who};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub control: Option<Control>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Control {
    /// Stop carrying out changes (passes still observe and report) until `resume`.
    Suspend {
        /// Why, shown by `fabrik status`.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        at: StateArgs,
    },
    /// End a suspension; the next pass runs at once.
    Resume {
        #[command(flatten)]
        at: StateArgs,
    },
}

/// Where a watcher keeps its state: `--watch-state`, or beside the repository.
#[derive(clap::Args, Debug, Clone)]
pub struct StateArgs {
    /// The watched repository (or directory, for `--dir`).
    #[arg(default_value = ".")]
    pub repo: PathBuf,
    /// The watcher's state directory (default: `<repo>/.git/fabrik-watch` for a git
    /// repository, `<dir>/.fabrik/watch` otherwise).
    #[arg(long, value_name = "DIR", env = "FABRIK_WATCH_STATE")]
    pub watch_state: Option<PathBuf>,
}

impl StateArgs {
    pub fn state(&self) -> StateDir {
        StateDir::new(match &self.watch_state {
            Some(d) => d.clone(),
            None => default_state(&self.repo),
        })
    }
}

pub fn default_state(repo: &Path) -> PathBuf {
    if repo.join(".git").is_dir() {
        repo.join(".git").join("fabrik-watch")
    } else if repo.join("HEAD").is_file() && repo.join("objects").is_dir() {
        repo.join("fabrik-watch")
    } else {
        repo.join(".fabrik").join("watch")
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum WatchFormat {
    /// One line per pass and per refused commit on stderr.
    Human,
    /// One JSON event per line on stdout (docs/watch.md).
    Json,
}

/// A change class, for `--auto`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ClassArg {
    Live,
    NextRestart,
    RestartNow,
    Replace,
    GpuRelayout,
    DestroysData,
}

impl ClassArg {
    fn class(self) -> Class {
        match self {
            ClassArg::Live => Class::Live,
            ClassArg::NextRestart => Class::NextRestart,
            ClassArg::RestartNow => Class::RestartNow,
            ClassArg::Replace => Class::Replace,
            ClassArg::GpuRelayout => Class::GpuRelayout,
            ClassArg::DestroysData => Class::DestroysData,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub at: StateArgs,
    /// The branch whose commits are applied.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Fetch this remote's branch each poll instead of reading the local branch.
    #[arg(long, value_name = "REMOTE")]
    pub remote: Option<String>,
    /// The factory's file or directory inside the repository.
    #[arg(long, value_name = "PATH", default_value = ".")]
    pub path: PathBuf,
    /// Accept a commit that does not descend from the last applied one (a rewind).
    #[arg(long)]
    pub allow_rewind: bool,
    /// Lab mode: watch a plain directory's files (no history, no rewind check).
    #[arg(long, conflicts_with_all = ["branch", "remote", "allow_rewind"])]
    pub dir: bool,
    /// Reconcile the simulated twins instead of the hosts.
    #[arg(long)]
    pub sim: bool,
    /// Where the twins keep their state (with `--sim`).
    #[arg(long, value_name = "DIR", env = "FABRIK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds a host may stay silent before it counts as unreachable.
    #[arg(long, value_name = "SECONDS", env = "FABRIK_HOST_TIMEOUT", default_value_t = crate::driver::libvirt::SILENCE_LIMIT_DEFAULT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub host_timeout: u64,
    /// Overrides `watch.poll-seconds`.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_seconds: Option<u64>,
    /// Overrides `watch.debounce-ms`.
    #[arg(long, value_name = "MS")]
    pub debounce_ms: Option<u64>,
    /// Overrides `watch.drift-seconds`.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub drift_seconds: Option<u64>,
    /// Overrides `watch.auto`: the classes carried out without approval (repeatable).
    #[arg(long, value_enum, value_name = "CLASS")]
    pub auto: Vec<ClassArg>,
    /// A resource the watcher never changes (repeatable; adds to `watch.exclude`).
    #[arg(long, value_name = "ID")]
    pub exclude: Vec<String>,
    /// Seconds a VM gets to shut down before a restart or removal forces it off.
    #[arg(long, value_name = "SECONDS", default_value_t = super::plan::SHUTDOWN_TIMEOUT_DEFAULT_S)]
    pub shutdown_timeout: u64,
    /// Run one pass and exit.
    #[arg(long)]
    pub once: bool,
    #[arg(long, value_enum, default_value_t = WatchFormat::Human, env = "FABRIK_FORMAT")]
    pub format: WatchFormat,
    /// Serve Prometheus `/metrics` and `/healthz` here (`127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Actions run at once, over all hosts.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallelism: u16,
    /// Actions run at once on one host.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub per_host: u16,
    /// Seconds to wait for a person's `fabrik apply` to let the locks go before a pass
    /// gives up (and backs off).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub lock_wait: u64,
    /// Issue 18: `--coordination`, `--lease-ttl`.
    #[command(flatten)]
    pub coord: super::coord::CoordArgs,
}

pub fn run(args: &Args) -> u8 {
    match &args.control {
        Some(Control::Suspend { reason, at }) => {
            let state = at.state();
            match state.suspend(&Suspension { reason: reason.clone(), by: who(), at: now_rfc3339() }) {
                Ok(()) => {
                    eprintln!("Suspended: the watcher carries out no change until `fabrik watch resume`.");
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: {}", crate::diag::error_chain(&e));
                    exit::INVALID
                }
            }
        }
        Some(Control::Resume { at }) => {
            if at.state().resume() {
                eprintln!("Resumed: the next pass runs within seconds.");
            } else {
                eprintln!("The watcher was not suspended.");
            }
            exit::OK
        }
        None => watch(&args.run),
    }
}

fn watch(a: &RunArgs) -> u8 {
    let repo = a.at.repo.clone();
    let factory_path = repo.join(&a.path);
    // The hosts as the operator's checkout names them: twins, `created.json` and the
    // local apply lock are shared with a person's `fabrik apply` there.
    let hosts =
        Hosts { path: factory_path.clone(), sim: a.sim, state_dir: a.state_dir.clone(), host_timeout: a.host_timeout };
    let origin = if a.dir {
        Origin::Dir { path: factory_path.clone() }
    } else {
        Origin::Git {
            source: git::Source {
                repo: repo.clone(),
                branch: a.branch.clone(),
                remote: a.remote.clone(),
                subdir: a.path.clone(),
            },
            allow_rewind: a.allow_rewind,
        }
    };
    crate::driver::libvirt::set_silence_limit(Duration::from_secs(a.host_timeout));
    let twins = a.sim.then(|| hosts.state());
    let created = created_path(&hosts);
    let load: run::Loader = {
        let (sim, state_dir, host_timeout, shutdown) = (a.sim, a.state_dir.clone(), a.host_timeout, a.shutdown_timeout);
        let twins = twins.clone();
        let checkout = if a.dir { PathBuf::new() } else { a.at.state().checkout() };
        Arc::new(move |path: &Path, commit: &str| {
            let at = Hosts { path: path.to_path_buf(), sim, state_dir: state_dir.clone(), host_timeout };
            let select =
                Select { target: Vec::new(), exclude: Vec::new(), replace: Vec::new(), shutdown_timeout: shutdown };
            let _ = &twins;
            match prepare(&at, &select) {
                Ok(p) => {
                    let mut options = p.options;
                    options.created = crate::plan::Created::load(&created).unwrap_or(options.created);
                    let validation = p.validation;
                    Ok(Loaded {
                        watch: validation.spec.watch.clone(),
                        factory: Factory {
                            commit: commit.to_string(),
                            hosts: validation.spec.hosts.clone(),
                            desired: p.desired,
                            graph: p.graph,
                            plan: options,
                            created_path: created.clone(),
                            spec: validation.spec,
                            sources: validation.sources,
                        },
                    })
                }
                Err(r) => Err(Refusal {
                    message: format!("the factory at {commit} does not validate; the last good commit stays in force"),
                    diagnostics: r.diagnostics.into_iter().map(|d| relative_to(d, &checkout)).collect(),
                }),
            }
        })
    };
    let format = a.format;
    let sink: run::Sink = Arc::new(move |v: serde_json::Value| match format {
        WatchFormat::Json => super::out::println(&v.to_string()),
        WatchFormat::Human => {
            if let Some(line) = human_line(&v) {
                eprintln!("{line}");
            }
        }
    });
    let lock_dir = if a.sim {
        hosts.state()
    } else if a.coord.coordination != crate::coord::Url::Local {
        // Issue 18 hook: coordinated watchers share the apply lock in etcd; a local one in
        // the repository would let a stopped leader on the same machine block the others.
        a.at.state().root.clone()
    } else {
        crate::spec::load::fabrik_dir(&factory_path)
    };
    let flags = Overrides {
        poll: a.poll_seconds.map(Duration::from_secs),
        debounce: a.debounce_ms.map(Duration::from_millis),
        drift_interval: a.drift_seconds.map(Duration::from_secs),
        auto: (!a.auto.is_empty()).then(|| a.auto.iter().map(|c| c.class()).collect()),
        exclude: a.exclude.clone(),
    };
    let force = Arc::new(tokio::sync::Notify::new());
    let mut cfg = Config {
        origin,
        state: a.at.state(),
        flags,
        env: Env {
            twins,
            lock_dir,
            lock_wait: Duration::from_secs(a.lock_wait),
            limits: Limits { parallelism: usize::from(a.parallelism), per_host: usize::from(a.per_host) },
            verify: VerifyOptions::default(),
            epoch: None,
        },
        load,
        sink,
        events: !a.sim,
        once: a.once,
        force: force.clone(),
        coord: Arc::new(crate::coord::local::Local::new()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(usize::from(a.parallelism) + 64)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the executor: {e}");
            return exit::INVALID;
        }
    };
    if format == WatchFormat::Human {
        eprintln!("Watching {} (state in {}).", cfg.origin.label(), cfg.state.root.display());
    }
    let metrics = match a.metrics {
        Some(addr) => match crate::watch::metrics::serve(addr, cfg.state.clone()) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("error: cannot serve metrics on {addr}: {e}");
                return exit::INVALID;
            }
        },
        None => None,
    };
    // Issue 18 hook: the coordination backend, started on the runtime; it resigns (a
    // standby need not wait out the lease) once the loop has stopped.
    let coord_cancel = tokio_util::sync::CancellationToken::new();
    let coord_task = {
        let _in_runtime = runtime.enter();
        let (coord, task) = a.coord.start(coord_cancel.clone());
        cfg.coord = coord;
        task
    };
    let status = runtime.block_on(async move {
        let cancel = tokio_util::sync::CancellationToken::new();
        let signals = {
            let (cancel, force) = (cancel.clone(), force.clone());
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
                    (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
                else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = term.recv() => { cancel.cancel(); return; }
                        _ = int.recv() => { cancel.cancel(); return; }
                        _ = hup.recv() => force.notify_one(),
                    }
                }
            })
        };
        let status = run::run(cfg, cancel).await;
        coord_cancel.cancel();
        if let Some(task) = coord_task {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
        signals.abort();
        status
    });
    drop(metrics);
    if format == WatchFormat::Human {
        eprintln!("Stopped after {} pass(es).", status.passes);
    }
    exit::OK
}

/// A diagnostic's `file` as a path in the repository, not in the watcher's checkout.
fn relative_to(mut d: serde_json::Value, checkout: &Path) -> serde_json::Value {
    if checkout.as_os_str().is_empty() {
        return d;
    }
    if let Some(file) = d.get("file").and_then(|f| f.as_str()).map(PathBuf::from)
        && let Ok(rel) = file.strip_prefix(checkout)
    {
        let rel: PathBuf = rel.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect();
        d["file"] = serde_json::Value::String(rel.display().to_string());
    }
    d
}

/// The line a person reads for an event, if it is one worth a line.
fn human_line(v: &serde_json::Value) -> Option<String> {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
    let short = |c: &str| c.get(..12).unwrap_or(c).to_string();
    match s("event") {
        "commit-accepted" => Some(format!("commit {}: valid and planned, in force", short(s("commit")))),
        "commit-refused" => Some(format!(
            "commit {} refused: {} (in force: {})",
            short(s("commit")),
            s("error"),
            v.get("in_force").and_then(|x| x.as_str()).map(short).unwrap_or_else(|| "none".into())
        )),
        "pass" => {
            let ran = v.get("ran").and_then(|r| r.as_array()).map_or(0, Vec::len);
            let pending = v.get("pending").and_then(|p| p.get("id")).and_then(|x| x.as_str());
            let failing = v.get("failing").and_then(|r| r.as_array()).map_or(0, Vec::len);
            let mut line = format!("pass on {}: {ran} change(s) carried out", short(s("commit")));
            if let Some(p) = pending {
                line.push_str(&format!("; plan {p} waits for `fabrik approve {p}`"));
            }
            if failing > 0 {
                line.push_str(&format!("; {failing} host(s) backing off"));
            }
            Some(line)
        }
        "failed" => Some(format!("  FAILED {}: {}", s("id"), s("error"))),
        "done" => Some(format!("  done   {}", s("id"))),
        "host-rebooted" => Some(s("message").to_string()),
        "suspended" => Some("suspended: no change carried out (`fabrik watch resume`)".into()),
        "error" => Some(format!("error: {}", s("error"))),
        _ => None,
    }
}
