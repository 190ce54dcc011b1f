//! `fabrik plan`: validate, build the desired state, observe the hosts (or their twins),
//! and print what apply would change. Exit 0: no changes; 2: changes; 1: an error.

use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;

use super::exit;
use crate::desired::ResourceId;
use crate::diag::render;
use crate::plan::output::{self, Show};
use crate::plan::{self, Created, Options};

/// `fabrik plan` found changes (like `terraform plan -detailed-exitcode`).
pub const EXIT_CHANGES: u8 = 2;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub hosts: super::hosts::Hosts,
    /// Show the unified diff of the libvirt XML under each change.
    #[arg(long)]
    pub diff: bool,
    #[arg(long, value_enum, default_value_t = PlanFormat::Human)]
    pub format: PlanFormat,
    /// Save the plan (with fingerprints of what it read) for `fabrik apply`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Plan only this resource and what it needs (repeatable).
    #[arg(long, value_name = "ID")]
    pub target: Vec<String>,
    /// Leave out this resource and everything that needs it (repeatable).
    #[arg(long, value_name = "ID")]
    pub exclude: Vec<String>,
    /// Replace this resource even if nothing changed (repeatable).
    #[arg(long, value_name = "ID")]
    pub replace: Vec<String>,
    /// Also list objects on the hosts that fabrik does not manage.
    #[arg(long)]
    pub show_unmanaged: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum PlanFormat {
    /// One line per change, grouped by host.
    Human,
    /// The plan document (schema in docs/plan.md).
    Json,
    /// A pull-request comment.
    Markdown,
}

pub fn run(args: &Args) -> u8 {
    let style = super::style_for_stderr();
    let v = crate::check::validate(&args.hosts.path);
    if !v.is_valid() {
        eprint!("{}", super::validate::human(&v, &args.hosts.path, style));
        return exit::INVALID;
    }
    let fail = |diags: Vec<crate::diag::Diagnostic>| {
        for d in &diags {
            eprint!("{}", render::human(d, &v.sources, style));
        }
        exit::INVALID
    };
    let desired = match crate::desired::build(&v.spec) {
        Ok(d) => d,
        Err(diags) => return fail(diags),
    };
    let graph = match crate::graph::Graph::of(&desired) {
        Ok(g) => g,
        Err(diags) => return fail(diags),
    };
    let ids = |list: &[String], flag: &str| -> Result<Vec<ResourceId>, String> {
        list.iter()
            .map(|t| {
                ResourceId::parse(t).ok_or_else(|| {
                    format!("--{flag} `{t}` is not a resource id (`kind:host/name`, as `fabrik graph` lists)")
                })
            })
            .collect()
    };
    let created_path = if args.hosts.sim {
        args.hosts.state().join("created.json")
    } else {
        crate::spec::load::fabrik_dir(&args.hosts.path).join("created.json")
    };
    let options = match (|| -> Result<Options, String> {
        Ok(Options {
            targets: ids(&args.target, "target")?,
            excludes: ids(&args.exclude, "exclude")?,
            replace: ids(&args.replace, "replace")?,
            created: Created::load(&created_path).map_err(|e| error_chain(&e))?,
        })
    })() {
        Ok(o) => o,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::INVALID;
        }
    };
    let spec = &v.spec;
    let live = args.hosts.observe(spec);
    let plan = plan::plan_with(&desired, &graph, &live, &options);
    let show = Show { diff: args.diff, unmanaged: args.show_unmanaged };
    let text = match args.format {
        PlanFormat::Human => output::human(&plan, show),
        PlanFormat::Json => output::json(&plan),
        PlanFormat::Markdown => output::markdown(&plan, show),
    };
    let _ = std::io::stdout().write_all(text.as_bytes());
    if let Some(out) = &args.out
        && let Err(e) = plan::file::save(&plan, out)
    {
        eprintln!("error: {}", error_chain(&e));
        return exit::INVALID;
    }
    if plan.has_errors() {
        exit::INVALID
    } else if plan.has_changes() {
        EXIT_CHANGES
    } else {
        exit::OK
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}
