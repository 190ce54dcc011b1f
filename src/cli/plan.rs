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
    #[arg(long, value_enum, default_value_t = PlanFormat::Human, env = "FABRIK_FORMAT")]
    pub format: PlanFormat,
    /// Save the plan (with fingerprints of what it read) for `fabrik apply`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub select: Select,
    /// Also list objects on the hosts that fabrik does not manage.
    #[arg(long)]
    pub show_unmanaged: bool,
    /// Exit 0 when the plan has changes (instead of 2), for CI steps that fail on any
    /// non-zero status; errors still exit 1 (docs/plan.md, "Exit statuses").
    #[arg(long)]
    pub exit_zero_on_changes: bool,
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

/// [`crate::plan::ops::SHUTDOWN_TIMEOUT_DEFAULT`], in seconds, for the flag.
pub const SHUTDOWN_TIMEOUT_DEFAULT_S: u64 = 60;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum PlanFormat {
    /// One line per change, grouped by host.
    Human,
    /// The plan document (schema in docs/plan.md).
    Json,
    /// A pull-request comment.
    Markdown,
    /// GitHub Actions annotations on the declarations that cause disruptive changes.
    Github,
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

/// Why a plan could not be made: what stderr shows, and the same diagnostics for the
/// machine formats, which are emitted whatever happened.
pub struct Refused {
    /// [`exit::INVALID`] for a factory with errors, [`exit::USAGE`] for a bad flag.
    pub code: u8,
    /// The diagnostics as a person reads them (already scrubbed).
    pub human: String,
    /// The same, one JSON object each (`validate --format json`'s shape).
    pub diagnostics: Vec<serde_json::Value>,
}

impl Refused {
    fn usage(message: String) -> Refused {
        let diagnostics =
            vec![serde_json::json!({"severity": "error", "code": "fabrik::plan::unknown-id", "message": message})];
        Refused { code: exit::USAGE, human: format!("error: {message}\n"), diagnostics }
    }
}

/// Validates the factory, builds its desired state and graph and reads the options.
pub fn prepare(hosts: &super::hosts::Hosts, select: &Select) -> Result<Prepared, Refused> {
    prepare_with(hosts, select, |_| ())
}

/// [`prepare`], handing the spec to `decoded` once it decoded, before it is checked
/// ([`crate::check::validate_with`]).
pub fn prepare_with(
    hosts: &super::hosts::Hosts,
    select: &Select,
    decoded: impl FnOnce(&crate::spec::model::Spec),
) -> Result<Prepared, Refused> {
    let style = super::style_for_stderr();
    let v = crate::check::validate_with(&hosts.path, decoded);
    let secrets = Secrets::of_factory(&v.spec, &v.sources);
    let refuse = |diags: &[crate::diag::Diagnostic], human: String| Refused {
        code: exit::INVALID,
        human: secrets.scrub(&human),
        diagnostics: diags
            .iter()
            .map(|d| {
                let value = serde_json::to_value(render::json(d, &v.sources)).unwrap_or_default();
                serde_json::from_str(&secrets.scrub(&value.to_string())).unwrap_or(value)
            })
            .collect(),
    };
    if !v.is_valid() {
        let diags: Vec<_> = v.diags.iter().cloned().collect();
        return Err(refuse(&diags, super::validate::human(&v, &hosts.path, style)));
    }
    let fail = |diags: Vec<crate::diag::Diagnostic>| {
        let human = diags.iter().map(|d| render::human(d, &v.sources, style)).collect();
        refuse(&diags, human)
    };
    if let Some(d) = crate::spec::model::missing_factory(&v.spec, crate::spec::source::FileId(0)) {
        return Err(fail(vec![d]));
    }
    let desired = crate::desired::build(&v.spec).map_err(fail)?;
    let graph = crate::graph::Graph::of(&desired).map_err(fail)?;
    let known: Vec<String> = graph.nodes().map(ToString::to_string).collect();
    let ids = |list: &[String], flag: &str| -> Result<Vec<ResourceId>, Refused> {
        list.iter().map(|t| resource_id(t, flag, &known).map_err(Refused::usage)).collect()
    };
    let created_path = created_path(hosts);
    let options = Options {
        targets: ids(&select.target, "target")?,
        excludes: ids(&select.exclude, "exclude")?,
        replace: ids(&select.replace, "replace")?,
        created: Created::load(&created_path).map_err(|e| Refused {
            code: exit::INVALID,
            human: format!("error: {}\n", error_chain(&e)),
            diagnostics: vec![
                serde_json::json!({"severity": "error", "code": "fabrik::plan::created", "message": error_chain(&e)}),
            ],
        })?,
        shutdown_timeout: std::time::Duration::from_secs(select.shutdown_timeout),
    };
    Ok(Prepared { validation: v, desired, graph, options, created_path })
}

/// A `--target`/`--exclude`/`--replace` id: well formed and one of the factory's
/// resources (`known`), or a usage error naming the closest ones.
pub fn resource_id(given: &str, flag: &str, known: &[String]) -> Result<ResourceId, String> {
    let Some(id) = ResourceId::parse(given) else {
        return Err(format!("--{flag} `{given}` is not a resource id (`kind:host/name`, as `fabrik graph` lists)"));
    };
    if known.iter().any(|k| k == given) {
        return Ok(id);
    }
    let mut close: Vec<(f64, &str)> = known
        .iter()
        .map(|k| (strsim::jaro_winkler(&given.to_ascii_lowercase(), &k.to_ascii_lowercase()), k.as_str()))
        .filter(|&(score, _)| score >= CLOSE_MATCH_SCORE)
        .collect();
    close.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    let hint = match close.iter().take(CLOSE_MATCHES_SHOWN).map(|(_, k)| format!("`{k}`")).collect::<Vec<_>>() {
        names if names.is_empty() => "; `fabrik graph --format json` lists them".to_string(),
        names => format!("; did you mean {}?", names.join(" or ")),
    };
    Err(format!("--{flag} `{given}` is not a resource of the factory{hint}"))
}

/// How alike (Jaro-Winkler) an id must be to a resource's to be offered: the same bar
/// as "did you mean" for keys.
const CLOSE_MATCH_SCORE: f64 = 0.8;
/// Enough to find the one meant, few enough to read.
const CLOSE_MATCHES_SHOWN: usize = 3;

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
    // Each host's libvirt is read while the factory is checked and planned (read-only
    // calls; the agents start only for a valid factory), joined before the diff.
    let mut started = None;
    let p = match prepare_with(&args.hosts, &args.select, |spec| started = args.hosts.start_reading(spec)) {
        Ok(p) => p,
        Err(refused) => {
            eprint!("{}", refused.human);
            // The machine formats are emitted whatever happened, with the reason inside.
            match args.format {
                PlanFormat::Human => {}
                PlanFormat::Json => super::out::print(&refused_json(&refused)),
                PlanFormat::Markdown => super::out::print(&refused_markdown(&refused, &args.hosts.path)),
                PlanFormat::Github => super::out::print(&refused_github(&refused)),
            }
            return refused.code;
        }
    };
    let live = args.hosts.observe_started(&p.validation.spec, started);
    let mut plan = plan::plan_owned(p.desired, Some(p.graph), &live, &p.options);
    plan::locate::locate_errors(&mut plan, &p.validation.spec, &p.validation.sources);
    let secrets = Secrets::of_spec(&p.validation.spec);
    scrub(&mut plan, &secrets);
    let show = Show { diff: args.diff, unmanaged: args.show_unmanaged, color: super::out::stdout_look().color };
    let print = |text: &str| super::out::print(&secrets.scrub(text));
    // Human and JSON go out host by host and line by line as they are made (a plan of
    // 10,000 hosts is never held twice); Markdown is cut to a comment's size anyway.
    match args.format {
        PlanFormat::Human => output::human_to(&plan, show, &mut |chunk| print(chunk)),
        PlanFormat::Json => {
            let mut lines = super::out::Lines::new(print);
            // Writing to `Lines` cannot fail; stdout's own errors are `out::print`'s.
            let _ = output::json_to(&plan, &mut lines);
            lines.finish();
        }
        PlanFormat::Markdown => print(&output::markdown(&plan, show)),
        PlanFormat::Github => print(&output::github(&plan, |id| {
            plan::locate::span_of(&p.validation.spec, id).map(|span| {
                let at = plan::locate::location(&p.validation.sources, span);
                plan::locate::Location { file: output::relative(&at.file), ..at }
            })
        })),
    }
    if let Some(out) = &args.out {
        let file_secrets = Secrets::of_factory(&p.validation.spec, &p.validation.sources);
        plan.origin = Some(plan::Origin {
            path: args.hosts.path.display().to_string(),
            twins: args.hosts.sim.then(|| args.hosts.state().display().to_string()),
            targets: args.select.target.clone(),
            excludes: args.select.exclude.clone(),
            replace: args.select.replace.clone(),
            shutdown_timeout_s: args.select.shutdown_timeout,
            state: (!args.hosts.sim).then(|| absolute(&crate::spec::load::fabrik_dir(&args.hosts.path))),
            sources: saved_sources(&args.hosts.path, &p.validation.sources, &file_secrets),
            masked: !file_secrets.is_empty(),
        });
        if let Err(e) = plan::file::save(&plan, out) {
            eprintln!("error: {}", error_chain(&e));
            return exit::INVALID;
        }
    }
    if plan.has_errors() {
        exit::INVALID
    } else if plan.has_changes() && !args.exit_zero_on_changes {
        EXIT_CHANGES
    } else {
        exit::OK
    }
}

/// An absolute path's text (as given when it cannot be made absolute).
fn absolute(path: &std::path::Path) -> String {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}

/// The factory's files as a saved plan keeps them: relative to the factory's path, with
/// credentials masked.
fn saved_sources(
    factory: &std::path::Path,
    sources: &crate::spec::source::Sources,
    secrets: &Secrets,
) -> Vec<plan::SavedSource> {
    sources
        .iter()
        .map(|(_, f)| {
            let rel = match f.path.strip_prefix(factory) {
                Ok(r) if !r.as_os_str().is_empty() => r.to_path_buf(),
                _ => f.path.file_name().map(PathBuf::from).unwrap_or_else(|| f.path.clone()),
            };
            plan::SavedSource { path: rel.display().to_string(), text: secrets.scrub(&f.text) }
        })
        .collect()
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
    for uri in plan.connections.values_mut() {
        *uri = secrets.scrub(uri);
    }
}

/// The plan document of a plan that could not be made: no actions, no summary (nothing
/// can be said about the hosts), and the diagnostics that stopped it.
fn refused_json(r: &Refused) -> String {
    let doc = serde_json::json!({
        "format": plan::FORMAT,
        "complete": false,
        "summary": null,
        "hosts": [],
        "diagnostics": r.diagnostics,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// The pull-request comment of a plan that could not be made.
fn refused_markdown(r: &Refused, path: &std::path::Path) -> String {
    let mut out = format!(
        "### fabrik plan: `{}`\n\n**No plan: {} stopped it; nothing is known about the hosts yet.**\n\n",
        path.display(),
        if r.diagnostics.len() == 1 { "1 error".to_string() } else { format!("{} errors", r.diagnostics.len()) }
    );
    for d in &r.diagnostics {
        let field = |k: &str| d[k].as_str().unwrap_or_default().replace('\n', " ");
        out.push_str(&format!("- **`{}`** {}\n", field("code"), field("message")));
    }
    crate::diag::printable(&out).into_owned()
}

/// The annotations of a plan that could not be made: one `::error` per diagnostic.
fn refused_github(r: &Refused) -> String {
    // Each diagnostic at its place, with its related places (repository-relative paths).
    let out: String = r.diagnostics.iter().map(|d| crate::diag::render::github_value(d) + "\n").collect();
    crate::diag::printable(&out).into_owned()
}
