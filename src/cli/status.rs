//! `fabrik status`: what a watcher did and is waiting for, read from its state
//! directory: the last applied and last attempted commit (and why it failed), the plan
//! waiting for approval, hosts backing off, each host's drift. Exit 0 when the watcher
//! has nothing failing or waiting, 2 when something waits or fails, 1 with no status.

use super::exit;
use super::watch::StateArgs;
use crate::watch::state::{STATUS_FORMAT, Status};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub at: StateArgs,
    #[arg(long, value_enum, default_value_t = super::watch::WatchFormat::Human, env = "FABRIK_FORMAT")]
    pub format: super::watch::WatchFormat,
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
            Ok(Some(s)) => s,
            Ok(None) => {
                eprintln!(
                    "error: no watcher status in {}; start `fabrik watch`, or name its state with --watch-state",
                    state.root.display()
                );
                return exit::INVALID;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return exit::INVALID;
            }
        };
    match args.format {
        super::watch::WatchFormat::Json => {
            super::out::println(&crate::formats::versioned(STATUS_FORMAT, &status).to_string())
        }
        super::watch::WatchFormat::Human => super::out::print(&crate::diag::printable(&human(&status))),
    }
    let attention = status.pending.is_some()
        || !status.failing.is_empty()
        || status.last_attempted.as_ref().is_some_and(|a| !a.ok)
        || status.suspended.is_some();
    if attention { EXIT_ATTENTION } else { exit::OK }
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
    // Endpoint probes (src/endpoints.rs) report here, one line each.
    if !s.endpoints.is_empty() {
        out.push_str("Endpoints:\n");
        for e in &s.endpoints {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out
}
