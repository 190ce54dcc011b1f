//! The apply lock: the local lock file ([`crate::lockfile`]); the hosts' locks, held by
//! their agents so that applies from other checkouts of the factory (another operator,
//! CI) are kept out too, are taken by [`crate::reconcile::Session::open`] on the agent
//! the session keeps.

pub use crate::lockfile::{ApplyLock, Holder, LockError, acquire, acquire_file, host_lock_file};
