//! `fabrik apply`: plan, show the plan, confirm, apply, and verify with a new plan.
//! `fabrik apply plan.json` applies a saved plan once it is shown not to be stale.
//!
//! Exit 0: applied and verified (or nothing to do); 1: anything failed, did not
//! converge, or could not start (errors in the plan, the lock held, no confirmation);
//! 130: interrupted by SIGINT (Ctrl-C); 143: by SIGTERM (128 + the signal's number,
//! as shells report it). The table is in docs/apply.md.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;

use super::exit;
use super::hosts::Hosts;
use super::plan::{Select, prepare};
use crate::apply::journal::{self, Journal};
use crate::apply::progress::Progress;
use crate::apply::{self, Event, Limits, Outcome, Settings};
use crate::diag::error_chain;
use crate::diag::redact::Secrets;
use crate::plan::output::{self, Show};
use crate::plan::{self, Plan};
use crate::reconcile::{self, Session, VerifyOptions};
use tokio_util::sync::CancellationToken;

/// Interrupted by SIGINT (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;
/// Interrupted by SIGTERM (128 + SIGTERM).
pub const EXIT_TERMINATED: u8 = 143;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A factory file or directory, or a plan saved by `fabrik plan --out`.
    #[command(flatten)]
    pub hosts: Hosts,
    /// Apply without asking (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Actions run at once, over all hosts.
    #[arg(long, value_name = "N", env = "FABRIK_PARALLELISM", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallelism: u16,
    /// Actions run at once on one host.
    #[arg(long, value_name = "N", env = "FABRIK_PER_HOST", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub per_host: u16,
    #[arg(long, value_enum, default_value_t = ApplyFormat::Human, env = "FABRIK_FORMAT")]
    pub format: ApplyFormat,
    #[command(flatten)]
    pub select: Select,
    /// Wait up to this many seconds for another apply of the factory to finish.
    #[arg(long, value_name = "SECONDS", env = "FABRIK_LOCK_WAIT", default_value_t = 0)]
    pub lock_wait: u64,
    /// Share the apply lock with watchers coordinated through etcd
    /// (`etcd://HOST:PORT[,…]/PREFIX`, as given to `fabrik watch --coordination`): wait
    /// for (`--lock-wait`) or be refused by a watcher's pass, naming it.
    #[arg(long, value_name = "URL", env = "FABRIK_COORDINATION", default_value = "local")]
    pub coordination: crate::coord::Url,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ApplyFormat {
    /// The plan and a summary on stdout; progress on stderr.
    Human,
    /// One JSON event per line on stdout (docs/apply.md).
    Json,
}

/// A saved plan, when the path names one: a file whose JSON says it is a fabrik plan.
fn saved_plan(path: &Path) -> Option<Result<Plan, String>> {
    if !path.is_file() || path.extension().is_none_or(|e| e != "json") {
        return None;
    }
    Some(plan::file::load(path).map_err(|e| error_chain(&e)))
}

/// A saved plan's own copy of its factory, written out while the apply runs.
struct Copy {
    /// The factory's path inside `_dir`.
    path: PathBuf,
    _dir: tempfile::TempDir,
}

/// The saved plan's files in a folder of their own when its factory's path is gone (the
/// plan is self-contained, docs/plan.md); `None` when the factory is where it was.
fn materialize(origin: &plan::Origin) -> Result<Option<Copy>, String> {
    if Path::new(&origin.path).exists() || origin.sources.is_empty() {
        return Ok(None);
    }
    if origin.masked {
        return Err(format!(
            "the plan's factory `{}` is gone, and the copy the plan keeps has its credentials masked; apply it from the factory's folder",
            origin.path
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("fabrik-plan-")
        .tempdir()
        .map_err(|e| format!("cannot make a folder for the plan's factory: {e}"))?;
    for source in &origin.sources {
        let rel = Path::new(&source.path);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(format!("the plan names a factory file outside its factory: `{}`", source.path));
        }
        let to = dir.path().join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot write {}: {e}", parent.display()))?;
        }
        std::fs::write(&to, &source.text).map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    }
    let single = origin.sources.len() == 1 && origin.path.ends_with(&origin.sources[0].path);
    let path = if single { dir.path().join(&origin.sources[0].path) } else { dir.path().to_path_buf() };
    Ok(Some(Copy { path, _dir: dir }))
}

/// What an apply prints besides progress: to stdout, as text or JSON lines.
struct Out {
    format: ApplyFormat,
    /// The factory's credentials, masked in everything printed.
    secrets: Secrets,
}

impl Out {
    fn json(&self, value: serde_json::Value) {
        let value = crate::formats::stamped(crate::formats::APPLY_EVENT, &value, std::time::SystemTime::now());
        if let Ok(text) = serde_json::to_string(&value) {
            super::out::println(&self.secrets.scrub(&text));
        }
    }

    fn text(&self, text: &str) {
        if self.format == ApplyFormat::Human {
            super::out::print(&crate::diag::printable(&self.secrets.scrub(text)));
        }
    }
}

pub fn run(args: &Args) -> u8 {
    let mut out = Out { format: args.format, secrets: Secrets::default() };
    let saved = match saved_plan(&args.hosts.path) {
        Some(Ok(p)) => Some(p),
        Some(Err(message)) => {
            eprintln!("error: {message}");
            return exit::INVALID;
        }
        None => None,
    };
    // A saved plan names its factory, hosts and options; they are used as they were.
    let origin = saved.as_ref().and_then(|p| p.origin.clone());
    if saved.is_some() && origin.is_none() {
        eprintln!(
            "error: the plan does not say which factory it was made from; make it again with `fabrik plan --out`"
        );
        return exit::INVALID;
    }
    // A saved plan whose factory is gone brings its own copy of the factory's files.
    let copy = match origin.as_ref().map(materialize) {
        Some(Err(message)) => {
            eprintln!("error: {message}");
            return exit::INVALID;
        }
        Some(Ok(copy)) => copy,
        None => None,
    };
    let hosts = match &origin {
        Some(o) => Hosts {
            path: copy.as_ref().map_or_else(|| PathBuf::from(&o.path), |c| c.path.clone()),
            sim: o.twins.is_some(),
            state_dir: o.twins.as_ref().map(PathBuf::from),
            host_timeout: args.hosts.host_timeout,
        },
        None => Hosts {
            path: args.hosts.path.clone(),
            sim: args.hosts.sim,
            state_dir: args.hosts.state_dir.clone(),
            host_timeout: args.hosts.host_timeout,
        },
    };
    let select = match &origin {
        Some(o) => Select {
            target: o.targets.clone(),
            exclude: o.excludes.clone(),
            replace: o.replace.clone(),
            shutdown_timeout: o.shutdown_timeout_s,
        },
        None => args.select.clone(),
    };
    let mut prepared = match prepare(&hosts, &select) {
        Ok(p) => p,
        Err(refused) => {
            eprint!("{}", refused.human);
            return refused.code;
        }
    };
    // The records and the lock of the hosts stay where the plan was made.
    let recorded_state = origin.as_ref().and_then(|o| o.state.as_ref()).filter(|_| copy.is_some()).map(PathBuf::from);
    if let Some(state) = &recorded_state {
        prepared.created_path = state.join("created.json");
        prepared.options.created = plan::Created::load(&prepared.created_path).unwrap_or_default();
    }
    out.secrets = Secrets::of_spec(&prepared.validation.spec);
    let spec = &prepared.validation.spec;
    // The lock comes before the hosts are read: a plan made while another apply runs
    // would be out of date before it is shown.
    let state = match &recorded_state {
        Some(state) => state.clone(),
        None if hosts.sim => hosts.state(),
        None => crate::spec::load::fabrik_dir(&hosts.path),
    };
    crate::driver::libvirt::set_silence_limit(Duration::from_secs(hosts.host_timeout));
    let options = reconcile::Options {
        plan: prepared.options.clone(),
        verify: VerifyOptions::default(),
        limits: Limits { parallelism: usize::from(args.parallelism), per_host: usize::from(args.per_host) },
        twins: hosts.sim.then(|| hosts.state()),
        lock_dir: state.clone(),
        lock_wait: Duration::from_secs(args.lock_wait),
        created_path: prepared.created_path.clone(),
        epoch: None,
    };
    // The CLI owns the runtime; the reconcile runs on it, in steps, to show the plan and
    // ask before anything changes.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(usize::from(args.parallelism) + spec.hosts.len().min(64) + 4)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the executor: {e}");
            return exit::INVALID;
        }
    };
    // Issue 18 hook: the apply lock shared with coordinated watchers, before the hosts'.
    let _shared_lock = match super::coord::HeldApplyLock::take(&args.coordination, &runtime, options.lock_wait) {
        Ok(l) => l,
        Err(message) => {
            if args.format == ApplyFormat::Json {
                out.json(serde_json::json!({"event": "error", "kind": "locked", "error": message}));
            }
            eprintln!("error: {message}");
            return exit::INVALID;
        }
    };
    let session = match runtime.block_on(Session::open(&prepared.desired.factory, &spec.hosts, &options)) {
        Ok(s) => s,
        Err(e) => {
            let message = crate::diag::printable(&out.secrets.scrub(&e.message)).into_owned();
            if args.format == ApplyFormat::Json {
                out.json(serde_json::json!({"event": "error", "kind": e.kind, "error": message}));
            }
            eprintln!("error: {message}");
            return exit::INVALID;
        }
    };
    for (host, why) in &session.unlocked {
        let why = crate::diag::printable(&out.secrets.scrub(why)).into_owned();
        eprintln!("warning: host `{host}` is not locked against other applies: {why}");
    }
    if let Some(previous) = journal::previous(&state) {
        let mut note = "note: the previous apply did not finish (it was killed or crashed); this plan is made \
                        from the hosts as they are now, so applying it completes that work"
            .to_string();
        if !previous.in_flight.is_empty() {
            note.push_str(&format!("; it was in the middle of: {}", previous.in_flight.join(", ")));
        }
        eprintln!("{note}");
    }
    let live = runtime.block_on(session.observe());
    let mut plan = match saved {
        Some(saved) => {
            let staleness = plan::file::stale(&saved, &prepared.desired, &live);
            if staleness.is_stale() {
                if args.format == ApplyFormat::Json {
                    out.json(serde_json::json!({"event": "error", "kind": reconcile::FailureKind::Precondition, "error": "the saved plan is stale", "reasons": staleness.reasons}));
                }
                eprintln!("error: the saved plan is stale; nothing was applied:");
                for r in &staleness.reasons {
                    eprintln!("  - {r}");
                }
                eprintln!("help: make a new plan with `fabrik plan --out`, review it, and apply that");
                return exit::INVALID;
            }
            // The document holds the seeds' hashes, not their images: built again here.
            let mut saved = saved;
            if let Err(message) = plan::seeds::fill(&mut saved, &prepared.desired, &live) {
                let message = crate::diag::printable(&out.secrets.scrub(&message)).into_owned();
                if args.format == ApplyFormat::Json {
                    out.json(serde_json::json!({"event": "error", "kind": reconcile::FailureKind::Precondition, "error": message}));
                }
                eprintln!("error: {message}; nothing was applied");
                eprintln!("help: make a new plan with `fabrik plan --out`, review it, and apply that");
                return exit::INVALID;
            }
            saved
        }
        None => plan::plan_with(&prepared.desired, &prepared.graph, &live, &prepared.options),
    };
    plan::locate::locate_errors(&mut plan, spec, &prepared.validation.sources);
    super::plan::scrub(&mut plan, &out.secrets);
    match args.format {
        ApplyFormat::Human => {
            out.text(&output::human(&plan, Show { color: super::out::stdout_look().color, ..Show::default() }))
        }
        ApplyFormat::Json => out.json(serde_json::json!({
            "event": "plan",
            "summary": plan.summary,
            "actions": plan.actions.iter().map(|a| serde_json::json!({
                "id": a.id.to_string(), "op": a.op, "class": a.class, "reason": a.reason,
            })).collect::<Vec<_>>(),
            "errors": plan.errors,
        })),
    }
    if plan.has_errors() {
        if args.format == ApplyFormat::Json {
            for e in &plan.errors {
                out.json(serde_json::json!({
                    "event": "error", "host": e.id.host, "id": e.id.to_string(),
                    "kind": reconcile::plan_error_kind(e), "error": e.message,
                }));
            }
        }
        eprintln!("error: the plan has errors (listed above); nothing was applied");
        return exit::INVALID;
    }
    if !plan.has_changes() {
        if args.format == ApplyFormat::Json {
            out.json(serde_json::json!({"event": "summary", "done": 0, "failed": 0, "skipped": 0, "converged": true, "interrupted": false}));
        }
        return exit::OK;
    }
    if !args.yes && !confirmed(&plan) {
        return exit::INVALID;
    }
    // Images from URLs and `file:` sources are fetched and checked before any host is
    // changed; they are kept (temporary files) until the apply is done.
    let _images = match fetch_images(&mut plan) {
        Ok(images) => images,
        Err(e) => {
            let message = crate::diag::printable(&out.secrets.scrub(&e.to_string())).into_owned();
            if args.format == ApplyFormat::Json {
                out.json(serde_json::json!({"event": "error", "kind": reconcile::FailureKind::Precondition, "error": message}));
            }
            eprintln!("error: {message}; nothing was applied");
            return exit::INVALID;
        }
    };
    let journal = Journal::create(&state).ok().map(Arc::new);
    if let Some(j) = &journal {
        j.write(&serde_json::json!({
            "event": "begin", "pid": std::process::id(), "factory": plan.factory, "actions": plan.actions.len(),
        }));
    }
    let progress = Arc::new(match args.format {
        ApplyFormat::Human => Progress::human(plan.actions.len(), super::out::stderr_look().fancy),
        ApplyFormat::Json => Progress::Json(Arc::new(super::out::println)),
    });
    let emit: apply::Emit = {
        let (progress, journal, secrets) = (progress.clone(), journal.clone(), out.secrets.clone());
        Arc::new(move |e: &Event| {
            // A failure quotes a host or its agent: its credentials are masked in the
            // progress and in the journal alike.
            let scrubbed = match e {
                Event::Failed { id, op, kind, error, elapsed_ms } => Some(Event::Failed {
                    id: id.clone(),
                    op: *op,
                    kind: *kind,
                    error: secrets.scrub(error),
                    elapsed_ms: *elapsed_ms,
                }),
                Event::Skipped { id, op, reason } => {
                    Some(Event::Skipped { id: id.clone(), op: *op, reason: secrets.scrub(reason) })
                }
                Event::Start { .. } | Event::Done { .. } | Event::Interrupted { .. } => None,
            };
            let e = scrubbed.as_ref().unwrap_or(e);
            progress.event(e);
            if let Some(j) = &journal {
                j.write(e);
            }
        })
    };
    let settings = Settings {
        limits: options.limits,
        created_path: prepared.created_path.clone(),
        created: prepared.options.created.clone(),
    };
    let cancel = CancellationToken::new();
    let signal = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let (mut report, verified) = runtime.block_on(async {
        let watcher = tokio::spawn(watch_signals(cancel.clone(), signal.clone(), emit.clone()));
        let report = session.execute(&plan, Some(&prepared.graph), settings, emit.clone(), cancel.clone()).await;
        // Its operations are done: the verify's observation and plan are made without the
        // applied plan (every definition in it) still in memory.
        drop(plan);
        progress.finish();
        // Verify: the hosts read again, planned again with the same selection but never
        // `--replace` (what was replaced is not replaced again).
        let created = plan::Created::load(&prepared.created_path).unwrap_or_else(|_| prepared.options.created.clone());
        let verify_options = options.verify_plan(created);
        let verified =
            session.verify(&prepared.desired, &prepared.graph, &verify_options, options.verify, &cancel).await;
        watcher.abort();
        (report, verified)
    });
    drop(session);
    report.signal = Some(signal.load(std::sync::atomic::Ordering::SeqCst)).filter(|&s| s != 0);
    let after = &verified.plan;
    let remaining = &verified.remaining;
    let counts = report.counts();
    let converged = verified.converged();
    let summary = serde_json::json!({
        "event": "summary", "done": counts.done, "failed": counts.failed, "skipped": counts.skipped,
        "converged": converged, "interrupted": report.interrupted, "elapsed_ms": report.elapsed.as_millis() as u64,
    });
    if let Some(j) = &journal {
        j.write(&serde_json::json!({"event": "verify", "converged": converged, "remaining": remaining}));
        j.write(&summary);
    }
    match args.format {
        ApplyFormat::Json => {
            out.json(serde_json::json!({
                "event": "verify", "converged": converged,
                "remaining": remaining.iter().map(|r| &r.id).collect::<Vec<_>>(),
                "details": remaining, "errors": after.errors,
                "held": after.notices.iter().filter(|n| n.kind == plan::NoticeKind::Held).collect::<Vec<_>>(),
            }));
            out.json(summary);
        }
        ApplyFormat::Human => {
            let partial = !select.target.is_empty() || !select.exclude.is_empty();
            out.text(&human_summary(&report, remaining, after, partial))
        }
    }
    if report.interrupted {
        if report.signal == Some(nix::sys::signal::Signal::SIGTERM as i32) { EXIT_TERMINATED } else { EXIT_INTERRUPTED }
    } else if counts.failed > 0 || !converged {
        exit::INVALID
    } else {
        exit::OK
    }
}

/// Cancels the reconcile on the first Ctrl-C or SIGTERM (keeping the signal's number);
/// exits on the second with 128 + its number, as shells report a process it killed. The
/// CLI's, not the library's: only the process's owner may exit it.
/// Fetches the plan's images, a progress bar on stderr for each (a line when it is not a
/// terminal).
fn fetch_images(plan: &mut Plan) -> Result<crate::image::Prepared, crate::image::FetchError> {
    let fancy = super::out::stderr_look().fancy;
    let mut bar: Option<(String, indicatif::ProgressBar)> = None;
    let images = crate::image::prepare(plan, &mut |name, bytes, total| {
        if !fancy {
            return;
        }
        if bar.as_ref().is_none_or(|(n, _)| n != name) {
            let b = indicatif::ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
            b.set_message(format!("fetching image `{name}`"));
            if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} {bytes}/{total_bytes} ({bytes_per_sec})")
            {
                b.set_style(style);
            }
            bar = Some((name.to_string(), b));
        }
        if let Some((_, b)) = &bar {
            b.set_position(bytes);
        }
    });
    if let Some((_, b)) = bar {
        b.finish_and_clear();
    }
    let images = images?;
    let (count, bytes) = images.totals();
    if count > 0 {
        eprintln!("fetched {count} image(s), {bytes} bytes, each matching its sha256");
    }
    let (count, bytes) = images.cached();
    if count > 0 {
        eprintln!("{count} image(s), {bytes} bytes, from the image cache, each matching its sha256");
    }
    Ok(images)
}

async fn watch_signals(cancel: CancellationToken, signal_no: Arc<std::sync::atomic::AtomicI32>, emit: apply::Emit) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    loop {
        let (name, signal) = tokio::select! {
            _ = int.recv() => ("SIGINT", nix::sys::signal::Signal::SIGINT),
            _ = term.recv() => ("SIGTERM", nix::sys::signal::Signal::SIGTERM),
        };
        if cancel.is_cancelled() {
            eprintln!("fabrik: second {name}: exiting now; steps in flight may be cut short");
            std::process::exit(128 + signal as i32);
        }
        signal_no.store(signal as i32, std::sync::atomic::Ordering::SeqCst);
        cancel.cancel();
        emit(&Event::Interrupted { signal: name.to_string() });
    }
}

/// Asks on the terminal; refuses without one.
fn confirmed(plan: &Plan) -> bool {
    if !std::io::stdin().is_terminal() {
        eprintln!(
            "error: refusing to apply without confirmation: stdin is not a terminal; review the plan and pass --yes"
        );
        return false;
    }
    let hosts = plan.actions.iter().map(|a| a.id.host.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    eprint!("\nApply these {} changes to {hosts} host(s)? Only `yes` is accepted: ", plan.actions.len());
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() == "yes" {
        true
    } else {
        eprintln!("Apply cancelled; nothing was changed.");
        false
    }
}

/// `partial`: the plan was limited by `--target` or `--exclude`, and so is its verification.
fn human_summary(report: &apply::Report, remaining: &[apply::NotConverged], after: &Plan, partial: bool) -> String {
    let c = report.counts();
    let mut s = format!(
        "\nApply {}: {} done, {} failed, {} skipped in {:.2}s.\n",
        if report.interrupted { "interrupted" } else { "finished" },
        c.done,
        c.failed,
        c.skipped,
        report.elapsed.as_secs_f64()
    );
    let not_started = report
        .entries
        .iter()
        .filter(|e| matches!(&e.outcome, Outcome::Skipped { reason } if reason == crate::apply::exec::NOT_STARTED))
        .count();
    if not_started > 0 {
        s.push_str(&format!(
            "  {not_started} action(s) not started: the apply was interrupted; a new plan shows what is left\n"
        ));
    }
    for e in &report.entries {
        match &e.outcome {
            Outcome::Done { .. } => {}
            Outcome::Skipped { reason } if reason == crate::apply::exec::NOT_STARTED => {}
            Outcome::Failed { kind, error, .. } => {
                s.push_str(&format!("  FAILED   {} ({}, {kind}): {error}\n", e.action.id, e.action.op.word()))
            }
            Outcome::Skipped { reason } => {
                s.push_str(&format!("  skipped  {} ({}): {reason}\n", e.action.id, e.action.op.word()))
            }
        }
    }
    let held: Vec<&plan::Notice> = after.notices.iter().filter(|n| n.kind == plan::NoticeKind::Held).collect();
    if remaining.is_empty() && !after.has_errors() && !held.is_empty() {
        // Carried out and verified, but the hosts still have what the factory no longer
        // wants: never "the hosts match".
        s.push_str(&format!(
            "Verified: a new plan{} shows no changes, but {} held back (fabrik::plan::in-use):\n",
            if partial { " of the selected resources" } else { "" },
            if held.len() == 1 { "1 deletion is".to_string() } else { format!("{} deletions are", held.len()) }
        ));
        for n in held {
            s.push_str(&format!("  held     {}: {}\n", n.id, n.reason));
        }
    } else if remaining.is_empty() && !after.has_errors() {
        s.push_str(if partial {
            "Verified: the selected resources match the factory; a new plan of them (with the same --target and --exclude) shows no changes.\n"
        } else {
            "Verified: the hosts match the factory; a new plan shows no changes.\n"
        });
    } else {
        s.push_str(&format!("Not converged: a new plan still has {} change(s):\n", remaining.len()));
        for r in remaining {
            s.push_str(&format!("  {}: {}\n", r.id, r.fields.join("; ")));
        }
        for e in &after.errors {
            s.push_str(&format!("  error {}: {}\n", e.id, e.message));
        }
    }
    s
}
