//! fabrik: a declarative reconciler for multi-tenant GPU infrastructure.

// Diagnostics are the error type of the front end; they are made once per problem,
// never on a hot path, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod check;
pub mod cli;
pub mod diag;
pub mod hw;
pub mod spec;
