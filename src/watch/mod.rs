//! `fabrik watch`: keep the hosts equal to the factory in git, on every change and
//! against drift, without ever restarting a guest or touching a GPU unattended.
//!
//! Pure parts, tested with paused time: [`trigger`] (why a pass runs; debounce; the
//! jittered drift timer), [`backoff`] (per host and per resource, jittered, reset on
//! success), [`gate`] (which classes run unattended; approvals, [`window`]s, budgets),
//! [`policy`] (the factory's `watch:` section and the flags, resolved once).
//! I/O at the edges: [`git`] (commits of a branch through the git CLI), [`state`] (the
//! files `fabrik status`, `approve` and `suspend` share with the watcher), [`events`]
//! (libvirt lifecycle events, one thread per host of the commit in force), [`engine`]
//! (one reconcile pass; a new commit with a plan error is refused there), [`metrics`].

pub mod backoff;
pub mod engine;
pub mod events;
pub mod gate;
pub mod git;
pub mod metrics;
pub mod policy;
pub mod run;
pub mod state;
pub mod trigger;
pub mod window;
