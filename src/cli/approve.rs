//! `fabrik approve <id>`: lets the watcher carry out the plan that waits under that id
//! (changes of classes it does not run unattended). The id names exactly the changes
//! `fabrik status` lists: if they change (a new commit, new drift), the plan gets a new
//! id and the approval does not carry over.

use super::exit;
use super::watch::StateArgs;
use crate::watch::state::{now_rfc3339, valid_pending_id, who};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pending plan's id, as `fabrik status` shows it (`p-1a2b3c4d`).
    pub id: String,
    #[command(flatten)]
    pub at: StateArgs,
    /// Approve through etcd (`etcd://HOST:PORT[,…]/PREFIX`, as given to
    /// `fabrik watch --coordination`): checked against the leader's published status and
    /// carried out by whichever watcher leads.
    #[arg(long, value_name = "URL", env = "FABRIK_COORDINATION", default_value = "local")]
    pub coordination: crate::coord::Url,
}

pub fn run(args: &Args) -> u8 {
    if !valid_pending_id(&args.id) {
        eprintln!("error: `{}` is not a pending plan's id; `fabrik status` shows it (`p-` and 8 hex digits)", args.id);
        return super::exit::USAGE;
    }
    let state = args.at.state();
    // Issue 18 hook: with etcd, the leader's pending plan and an approval it reads.
    let shared = super::coord::shared_status(&args.coordination);
    let pending =
        match shared.map(|r| r.map(Some)).unwrap_or_else(|| state.status().map_err(|e| crate::diag::error_chain(&e))) {
            Ok(Some(s)) => s.pending,
            Ok(None) => {
                eprintln!("error: no watcher status in {}", state.root.display());
                return exit::INVALID;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return exit::INVALID;
            }
        };
    let Some(p) = pending.filter(|p| p.id == args.id) else {
        eprintln!(
            "error: plan {} is not pending (it was carried out, or the changes it named have changed); run `fabrik status`",
            args.id
        );
        return exit::INVALID;
    };
    let approved = super::coord::shared_approve(&args.coordination, &p.id, &who())
        .unwrap_or_else(|| state.approve(&p, &who(), &now_rfc3339()).map_err(|e| crate::diag::error_chain(&e)));
    if let Err(e) = approved {
        eprintln!("error: {e}");
        return exit::INVALID;
    }
    eprintln!("Approved plan {} ({} change(s)); the watcher carries it out within seconds:", p.id, p.actions.len());
    for w in &p.actions {
        eprintln!("  ! {} [{}] {}", w.id, w.class.label(), w.reason);
    }
    exit::OK
}
