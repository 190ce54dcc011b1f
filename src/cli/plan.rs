//! `fabrik plan`: validate, build the desired state, observe the hosts (or their twins),
//! and print what apply would change. Exit 0: no changes; 2: changes; 1: an error.

use std::path::PathBuf;

use clap::ValueEnum;

use super::exit;
use crate::desired::ResourceId;
use crate::diag::error_chain;
use crate::diag::redact::Secrets;
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
    #[command(flatten)]
    pub select: Select,
    /// Also list objects on the hosts that fabrik does not manage.
    #[arg(long)]
    pub show_unmanaged: bool,
}

/// What plan and apply are asked to do beyond the factory: the same flags for both.
#[derive(clap::Args, Debug, Clone)]
pub struct Select {
    /// Only this resource and what it needs (repeatable).
    #[arg(long, value_name = "ID")]
    pub target: Vec<String>,
    /// Leave out this resource and everything that needs it (repeatable).
    #[arg(long, value_name = "ID")]
    pub exclude: Vec<String>,
    /// Replace this resource even if nothing changed (repeatable).
    #[arg(long, value_name = "ID")]
    pub replace: Vec<String>,
    /// Seconds a VM gets to shut down before apply forces it off.
    #[arg(long, value_name = "SECONDS", default_value_t = SHUTDOWN_TIMEOUT_DEFAULT_S)]
    pub shutdown_timeout: u64,
}

/// [`crate::apply::steps::SHUTDOWN_TIMEOUT_DEFAULT`], in seconds, for the flag.
pub const SHUTDOWN_TIMEOUT_DEFAULT_S: u64 = 60;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum PlanFormat {
    /// One line per change, grouped by host.
    Human,
    /// The plan document (schema in docs/plan.md).
    Json,
    /// A pull-request comment.
    Markdown,
}

/// A factory read, checked and built, with the operator's options: what plan and apply
/// both start from.
pub struct Prepared {
    pub validation: crate::check::Validation,
    pub desired: crate::desired::Desired,
    pub graph: crate::graph::Graph,
    pub options: Options,
    pub created_path: PathBuf,
}

/// Validates the factory, builds its desired state and graph and reads the options; on
/// an error, prints it and returns the exit status.
pub fn prepare(hosts: &super::hosts::Hosts, select: &Select) -> Result<Prepared, u8> {
    let style = super::style_for_stderr();
    let v = crate::check::validate(&hosts.path);
    if !v.is_valid() {
        eprint!("{}", Secrets::of_factory(&v.spec, &v.sources).scrub(&super::validate::human(&v, &hosts.path, style)));
        return Err(exit::INVALID);
    }
    let fail = |diags: Vec<crate::diag::Diagnostic>| {
        for d in &diags {
            eprint!("{}", render::human(d, &v.sources, style));
        }
        exit::INVALID
    };
    if let Some(d) = crate::spec::model::missing_factory(&v.spec, crate::spec::source::FileId(0)) {
        return Err(fail(vec![d]));
    }
    let desired = crate::desired::build(&v.spec).map_err(fail)?;
    let graph = crate::graph::Graph::of(&desired).map_err(fail)?;
    let ids = |list: &[String], flag: &str| -> Result<Vec<ResourceId>, String> {
        list.iter()
            .map(|t| {
                ResourceId::parse(t).ok_or_else(|| {
                    format!("--{flag} `{t}` is not a resource id (`kind:host/name`, as `fabrik graph` lists)")
                })
            })
            .collect()
    };
    let created_path = created_path(hosts);
    let options = (|| -> Result<Options, String> {
        Ok(Options {
            targets: ids(&select.target, "target")?,
            excludes: ids(&select.exclude, "exclude")?,
            replace: ids(&select.replace, "replace")?,
            created: Created::load(&created_path).map_err(|e| error_chain(&e))?,
            shutdown_timeout: std::time::Duration::from_secs(select.shutdown_timeout),
        })
    })()
    .map_err(|message| {
        eprintln!("error: {message}");
        exit::INVALID
    })?;
    Ok(Prepared { validation: v, desired, graph, options, created_path })
}

/// Where apply records what it made: in the twins' state folder with `--sim`, else in
/// `.fabrik/` beside the factory.
pub fn created_path(hosts: &super::hosts::Hosts) -> PathBuf {
    if hosts.sim {
        hosts.state().join("created.json")
    } else {
        crate::spec::load::fabrik_dir(&hosts.path).join("created.json")
    }
}

pub fn run(args: &Args) -> u8 {
    let p = match prepare(&args.hosts, &args.select) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let live = args.hosts.observe(&p.validation.spec);
    let mut plan = plan::plan_with(&p.desired, &p.graph, &live, &p.options);
    plan::locate::locate_errors(&mut plan, &p.validation.spec, &p.validation.sources);
    let secrets = Secrets::of_spec(&p.validation.spec);
    scrub(&mut plan, &secrets);
    let show = Show { diff: args.diff, unmanaged: args.show_unmanaged };
    let text = match args.format {
        PlanFormat::Human => output::human(&plan, show),
        PlanFormat::Json => output::json(&plan),
        PlanFormat::Markdown => output::markdown(&plan, show),
    };
    super::out::print(&secrets.scrub(&text));
    if let Some(out) = &args.out {
        plan.origin = Some(plan::Origin {
            path: args.hosts.path.display().to_string(),
            twins: args.hosts.sim.then(|| args.hosts.state().display().to_string()),
            targets: args.select.target.clone(),
            excludes: args.select.exclude.clone(),
            replace: args.select.replace.clone(),
            shutdown_timeout_s: args.select.shutdown_timeout,
        });
        if let Err(e) = plan::file::save(&plan, out) {
            eprintln!("error: {}", error_chain(&e));
            return exit::INVALID;
        }
    }
    if plan.has_errors() {
        exit::INVALID
    } else if plan.has_changes() {
        EXIT_CHANGES
    } else {
        exit::OK
    }
}

/// The plan with the hosts' credentials masked wherever a host's words reach it
/// (libvirt's and the agents' messages): what is printed and what `--out` saves.
pub fn scrub(plan: &mut plan::Plan, secrets: &Secrets) {
    if secrets.is_empty() {
        return;
    }
    for e in &mut plan.errors {
        e.message = secrets.scrub(&e.message);
        e.help = secrets.scrub(&e.help);
    }
    for n in &mut plan.notices {
        n.reason = secrets.scrub(&n.reason);
    }
    for a in &mut plan.actions {
        a.reason = secrets.scrub(&a.reason);
    }
}
