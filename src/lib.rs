//! fabrik: a declarative reconciler for multi-tenant GPU infrastructure.
//!
//! Operators describe an AI factory in YAML or KDL files. [`spec`] reads them: each file
//! is parsed by its front end into a tree whose every node carries its [`spec::source::Span`],
//! then decoded against the shape tables of [`spec::model`] into a typed
//! [`spec::model::Spec`], collecting every error as a [`diag::Diagnostic`]. [`check`] runs
//! the rules over the model (names, references). Everything up to here is pure: values
//! in, values and diagnostics out. [`diag::render`] turns diagnostics into miette reports,
//! JSON or GitHub annotations at the edge, and [`cli`] is a thin layer of commands over it.
//! [`desired`] places the factory on its hosts, [`graph`] orders it, [`driver`] reads and
//! changes the hosts (or their [`sim`] twins) into [`live`] values (plain data, below the
//! drivers), [`plan`] compares the two, purely, and [`reconcile`] runs lock → observe →
//! plan → [`apply`] → verify for a set of hosts. [`import`] goes the other way: from
//! domains made without fabrik to the declarations that describe them, adopted only where
//! a plan shows no change. Ids, fingerprints and ownership marks all come from one hash,
//! [`hash`].

// Diagnostics are the error type of the front end; they are made once per problem,
// never on a hot path, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod apply;
pub mod bench;
pub mod check;
pub mod cli;
pub mod coord;
pub mod desired;
pub mod diag;
pub mod driver;
pub mod endpoints;
pub mod files;
pub mod formats;
pub mod graph;
pub mod guest;
pub mod hash;
pub mod hw;
pub mod image;
pub mod import;
pub mod inventory;
pub mod live;
pub mod lockfile;
pub mod place;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod sim;
pub mod spec;
pub mod watch;
