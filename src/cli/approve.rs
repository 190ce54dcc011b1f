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
}

pub fn run(args: &Args) -> u8 {
    if !valid_pending_id(&args.id) {
        eprintln!("error: `{}` is not a pending plan's id; `fabrik status` shows it (`p-` and 8 hex digits)", args.id);
        return super::exit::USAGE;
    }
    let state = args.at.state();
    let pending = match state.status() {
        Ok(Some(s)) => s.pending,
        Ok(None) => {
            eprintln!("error: no watcher status in {}", state.root.display());
            return exit::INVALID;
        }
        Err(e) => {
            eprintln!("error: {}", crate::diag::error_chain(&e));
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
    if let Err(e) = state.approve(&p, &who(), &now_rfc3339()) {
        eprintln!("error: {}", crate::diag::error_chain(&e));
        return exit::INVALID;
    }
    eprintln!("Approved plan {} ({} change(s)); the watcher carries it out within seconds:", p.id, p.actions.len());
    for w in &p.actions {
        eprintln!("  ! {} [{}] {}", w.id, w.class.label(), w.reason);
    }
    exit::OK
}
