//! `fabrik status`: what a watcher did and is waiting for, read from its state
//! directory: the last applied and last attempted commit (and why it failed), the plan
//! waiting for approval, hosts backing off, each host's drift. With `--factory`, also
//! the service endpoints of that factory's VMs, probed now (src/endpoints.rs); that
//! works without a watcher too. Exit 0 when nothing fails or waits, 2 when something
//! waits or fails (an endpoint unhealthy or without an address included), 1 with
//! neither a watcher's status nor a factory.

use std::path::PathBuf;

use super::exit;
use super::watch::StateArgs;
use crate::endpoints::{ENDPOINTS_FORMAT, Report};
use crate::watch::state::{STATUS_FORMAT, Status};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub at: StateArgs,
    #[arg(long, value_enum, default_value_t = super::watch::WatchFormat::Human, env = "FABRIK_FORMAT")]
    pub format: super::watch::WatchFormat,
    /// Also list the endpoints of this factory's VMs (a file or a directory) and probe
    /// them now, from this machine: their addresses are read from the hosts.
    #[arg(long, value_name = "PATH")]
    pub factory: Option<PathBuf>,
    /// With `--factory`: read the simulated twins instead of the hosts (nothing is probed).
    #[arg(long, requires = "factory")]
    pub sim: bool,
    /// With `--sim`: where the twins keep their state (as `fabrik plan --state-dir`).
    #[arg(long, value_name = "DIR", requires = "factory")]
    pub state_dir: Option<PathBuf>,
    /// Read the leading watcher's status from etcd (`etcd://HOST:PORT[,…]/PREFIX`, as
    /// given to `fabrik watch --coordination`) instead of a local state directory.
    #[arg(long, value_name = "URL", env = "FABRIK_COORDINATION", default_value = "local")]
    pub coordination: crate::coord::Url,
}

/// Something waits or fails.
pub const EXIT_ATTENTION: u8 = 2;

pub fn run(args: &Args) -> u8 {
    let state = args.at.state();
    // Issue 18 hook: with etcd, the leader's view, whichever machine asks.
    let shared = super::coord::shared_status(&args.coordination);
    let status =
        match shared.map(|r| r.map(Some)).unwrap_or_else(|| state.status().map_err(|e| crate::diag::error_chain(&e))) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::INVALID;
            }
        };
    let endpoints = match &args.factory {
        Some(path) => match probe_endpoints(path, args) {
            Ok(eps) => Some(eps),
            Err(code) => return code,
        },
        None => None,
    };
    let Some(mut status) = status else {
        let Some(eps) = endpoints else {
            eprintln!(
                "error: no watcher status in {}; start `fabrik watch`, name its state with --watch-state, or list a factory's endpoints with --factory",
                state.root.display()
            );
            return exit::INVALID;
        };
        match args.format {
            super::watch::WatchFormat::Json => {
                let doc = serde_json::json!({ "endpoints": eps });
                super::out::println(&crate::formats::versioned(ENDPOINTS_FORMAT, &doc).to_string())
            }
            super::watch::WatchFormat::Human => {
                let text = format!("Watcher:   none (no status in {})\n{}", state.root.display(), endpoints_text(&eps));
                super::out::print(&crate::diag::printable(&text))
            }
        }
        return if eps.iter().any(|e| e.probe.failing()) { EXIT_ATTENTION } else { exit::OK };
    };
    if let Some(eps) = &endpoints {
        // What was probed now replaces whatever the watcher last recorded.
        status.endpoints = eps.iter().filter_map(|e| serde_json::to_value(e).ok()).collect();
    }
    match args.format {
        super::watch::WatchFormat::Json => {
            super::out::println(&crate::formats::versioned(STATUS_FORMAT, &status).to_string())
        }
        super::watch::WatchFormat::Human => {
            let mut text = human(&status);
            match &endpoints {
                Some(eps) => text.push_str(&endpoints_text(eps)),
                None => text.push_str(&recorded_endpoints(&status)),
            }
            super::out::print(&crate::diag::printable(&text))
        }
    }
    let attention = status.pending.is_some()
        || !status.failing.is_empty()
        || !status.failing_resources.is_empty()
        || status.last_attempted.as_ref().is_some_and(|a| !a.ok)
        || status.suspended.is_some()
        || endpoints.iter().flatten().any(|e| e.probe.failing());
    if attention { EXIT_ATTENTION } else { exit::OK }
}

/// Loads the factory, reads its hosts (or twins) for the addresses the VMs hold, and
/// probes every endpoint; a factory with errors is reported and ends the command.
fn probe_endpoints(path: &std::path::Path, args: &Args) -> Result<Vec<Report>, u8> {
    let mut loaded = crate::spec::load::load(path);
    // As inventory: what the files may make fabrik run is checked before any host is read.
    if !loaded.diags.iter().any(|d| d.is_error()) {
        loaded.diags.extend(crate::check::boundaries(&loaded.spec));
    }
    if loaded.diags.iter().any(|d| d.is_error()) {
        let secrets = crate::diag::redact::Secrets::of_factory(&loaded.spec, &loaded.sources);
        let style = super::style_for_stderr();
        for d in &loaded.diags {
            eprint!("{}", secrets.scrub(&crate::diag::render::human(d, &loaded.sources, style)));
        }
        eprintln!("{}: the factory has errors; fix them first (`fabrik validate`)", path.display());
        return Err(exit::INVALID);
    }
    let hosts = super::hosts::Hosts {
        path: path.to_path_buf(),
        sim: args.sim,
        state_dir: args.state_dir.clone(),
        host_timeout: crate::driver::libvirt::SILENCE_LIMIT_DEFAULT.as_secs(),
    };
    let live = hosts.observe(&loaded.spec);
    let timeout = (!args.sim).then_some(crate::endpoints::PROBE_TIMEOUT);
    Ok(crate::endpoints::report(&loaded.spec, &live, timeout))
}

/// The `Endpoints:` section, one line per endpoint as inventory prints it.
fn endpoints_text(eps: &[Report]) -> String {
    if eps.is_empty() {
        return "Endpoints: none declared\n".to_string();
    }
    let mut out = "Endpoints:\n".to_string();
    for line in crate::inventory::render::endpoint_lines(eps) {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// Endpoints a watcher recorded in its status (the field is reserved; a watcher that
/// fills it is shown as it wrote it).
fn recorded_endpoints(s: &Status) -> String {
    if s.endpoints.is_empty() {
        return String::new();
    }
    let mut out = "Endpoints:\n".to_string();
    for e in &s.endpoints {
        out.push_str(&format!("  {e}\n"));
    }
    out
}

/// The status as a person reads it.
pub fn human(s: &Status) -> String {
    let mut out = format!(
        "Watching {} (pid {}, since {}; {} passes, last at {})\n",
        s.source, s.pid, s.started, s.passes, s.updated
    );
    // Issue 18 hook: who acts when several watchers run.
    if let Some(c) = &s.coordination {
        let epoch = c.epoch.map(|e| format!(", epoch {e}")).unwrap_or_default();
        let who = c.leader.as_deref().map(|l| format!(", leader {l}")).unwrap_or_default();
        let why = c.error.as_deref().map(|e| format!(": {e} (no action starts; retrying)")).unwrap_or_default();
        out.push_str(&format!("Role:      {} via {}{epoch}{who}{why}\n", c.role.to_uppercase(), c.backend));
    }
    if let Some(sus) = &s.suspended {
        out.push_str(&format!("SUSPENDED by {} at {}: {}\n", sus.by, sus.at, sus.reason));
    }
    match &s.last_applied {
        Some(c) => out.push_str(&format!("Applied:   {} {} ({})\n", c.commit, c.subject, c.at)),
        None => out.push_str("Applied:   nothing yet\n"),
    }
    if let Some(a) = &s.last_attempted {
        if a.ok {
            out.push_str(&format!("Attempted: {} {} — valid\n", a.commit.commit, a.commit.subject));
        } else {
            out.push_str(&format!(
                "Attempted: {} {} — REFUSED: {}\n",
                a.commit.commit,
                a.commit.subject,
                a.error.as_deref().unwrap_or("")
            ));
            for d in &a.diagnostics {
                let code = d.get("code").and_then(|x| x.as_str()).unwrap_or("");
                let msg = d.get("message").and_then(|x| x.as_str()).unwrap_or("");
                let at = match (d.get("file").and_then(|x| x.as_str()), d.get("line"), d.get("column")) {
                    (Some(f), Some(l), Some(c)) => format!("{f}:{l}:{c}"),
                    (Some(f), _, _) => f.to_string(),
                    _ => String::new(),
                };
                out.push_str(&format!("  {code} {at}: {msg}\n"));
            }
        }
    }
    match &s.pending {
        Some(p) if p.approved => {
            out.push_str(&format!(
                "Pending:   plan {} (approved; {} change(s) wait for a disruption budget)\n",
                p.id,
                p.actions.len()
            ));
            for w in &p.actions {
                out.push_str(&format!("  ! {} [{}] {} — {}\n", w.id, w.class.label(), w.reason, w.why));
            }
        }
        Some(p) => {
            out.push_str(&format!(
                "Pending:   plan {} ({} change(s), waiting since {}); approve with `fabrik approve {}`\n",
                p.id,
                p.actions.len(),
                p.since,
                p.id
            ));
            for w in &p.actions {
                out.push_str(&format!("  ! {} [{}] {} — {}\n", w.id, w.class.label(), w.reason, w.why));
            }
        }
        None => out.push_str("Pending:   nothing\n"),
    }
    if s.failing.is_empty() {
        out.push_str("Failing:   nothing\n");
    } else {
        out.push_str("Failing:\n");
        for f in &s.failing {
            out.push_str(&format!(
                "  {} {} ({} in a row, next try {:.0}s after the last): {}\n",
                f.host, f.kind, f.failures, f.retry_in_s, f.error
            ));
            for r in &f.resources {
                out.push_str(&format!("    {r}\n"));
            }
        }
    }
    if !s.failing_resources.is_empty() {
        out.push_str("Failing resources:\n");
        for f in &s.failing_resources {
            out.push_str(&format!(
                "  {} {} ({} in a row, next try {:.0}s after the last): {}\n",
                f.id, f.kind, f.failures, f.retry_in_s, f.error
            ));
        }
    }
    out.push_str("Hosts:\n");
    for h in &s.hosts {
        out.push_str(&format!(
            "  {:<16} {} — {} planned, {} done, {} waiting ({})\n",
            h.host,
            if h.converged { "converged" } else { "NOT converged" },
            h.planned,
            h.done,
            h.waiting,
            h.at
        ));
        if let Some(at) = &h.rebooted {
            out.push_str(&format!(
                "    rebooted (boot id {}), boot-volatile state rebuilt at {at}\n",
                h.boot_id.as_deref().unwrap_or("?")
            ));
        }
    }
    out
}
