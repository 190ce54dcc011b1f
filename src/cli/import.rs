//! `fabrik import`: show which unmarked domains fabrik can adopt, mark them with
//! `--yes` (a metadata update, nothing restarts), and print the declarations to add.
//! Exit 0: done (or, without `--yes`, nothing would fail); 1: an error, a host that
//! could not be read, a domain named with `--domain` refused, or a mark that did not take.

use clap::ValueEnum;

use super::exit;
use crate::diag::redact::Secrets;
use crate::diag::render;
use crate::import::{self, Request, Survey};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub hosts: super::hosts::Hosts,
    /// Only domains on this host (repeatable; default: every host of the factory).
    #[arg(long = "host", value_name = "HOST")]
    pub only_hosts: Vec<String>,
    /// Only this domain (repeatable; default: every domain no factory marks).
    #[arg(long, value_name = "NAME")]
    pub domain: Vec<String>,
    /// The tenant the VMs are declared for (default: the tenant whose networks their NICs join).
    #[arg(long, value_name = "NAME")]
    pub tenant: Option<String>,
    /// Mark the domains (without it, only show what would be done).
    #[arg(long)]
    pub yes: bool,
    /// How the declarations are printed on stdout (`json`: the whole survey).
    #[arg(long, value_enum, default_value_t = ImportFormat::Yaml)]
    pub format: ImportFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ImportFormat {
    /// A YAML factory file of the VMs.
    Yaml,
    /// A KDL factory file of the VMs.
    Kdl,
    /// The survey: adoptions with their declarations and marks, refusals with reasons.
    Json,
}

pub fn run(args: &Args) -> u8 {
    let style = super::style_for_stderr();
    let v = crate::check::validate(&args.hosts.path);
    let secrets = Secrets::of_factory(&v.spec, &v.sources);
    if !v.is_valid() {
        eprint!("{}", secrets.scrub(&super::validate::human(&v, &args.hosts.path, style)));
        return exit::INVALID;
    }
    if let Some(d) = crate::spec::model::missing_factory(&v.spec, crate::spec::source::FileId(0)) {
        eprint!("{}", render::human(&d, &v.sources, style));
        return exit::INVALID;
    }
    for h in &args.only_hosts {
        if !v.spec.hosts.iter().any(|x| &x.name.value == h) {
            eprintln!("error: --host `{h}` is not a host of the factory");
            return exit::USAGE;
        }
    }
    let request = Request { hosts: args.only_hosts.clone(), domains: args.domain.clone(), tenant: args.tenant.clone() };
    // Only the hosts asked for are read (each read starts its agent).
    let mut observed = v.spec.clone();
    observed.hosts.retain(|h| args.only_hosts.is_empty() || args.only_hosts.contains(&h.name.value));
    let live = args.hosts.observe(&observed);
    let survey = match import::survey(&v.spec, &v.sources, &live, &request) {
        Ok(s) => s,
        Err(invalid) => {
            for d in &invalid.diags {
                eprint!("{}", secrets.scrub(&render::human(d, &invalid.sources, style)));
            }
            eprintln!(
                "error: with the declarations import would print ({}), the factory has errors; nothing was marked",
                import::DECLARATIONS_FILE
            );
            return exit::INVALID;
        }
    };
    eprint!("{}", secrets.scrub(&describe(&survey, args.yes)));
    // A domain asked for by name and refused, or a host that could not be read, fails.
    let named_refused = survey.refusals.iter().any(|r| args.domain.contains(&r.domain) || r.domain == "*");
    if !args.yes {
        print_declarations(&survey, args.format);
        if !survey.adoptions.is_empty() {
            eprintln!(
                "dry run: nothing was marked; run again with --yes to mark {} domain(s), then add the declarations",
                survey.adoptions.len()
            );
        }
        return if named_refused { exit::INVALID } else { exit::OK };
    }
    let mut failed = named_refused;
    for a in &survey.adoptions {
        let Some(host) = v.spec.host(&a.host) else { continue };
        let twins = args.hosts.sim.then(|| args.hosts.state());
        let virt = match twins {
            Some(state) => crate::sim::drivers(&state, host).virt,
            None => crate::driver::connect::open_virt(host),
        };
        match virt.and_then(|mut virt| virt.set_domain_mark(&a.domain, &a.mark)) {
            Ok(()) => eprintln!("marked `{}` on host `{}` as `{}`", a.domain, a.host, a.id),
            Err(e) => {
                eprintln!(
                    "error: `{}` on host `{}` was not marked: {}",
                    a.domain,
                    a.host,
                    secrets.scrub(&e.to_string())
                );
                failed = true;
            }
        }
    }
    // Read the hosts again: each mark must be there, and the plan must leave each
    // adopted domain as it is.
    let after = args.hosts.observe(&observed);
    for problem in import::verify(&v.spec, &v.sources, &after, &survey) {
        eprintln!("error: {problem}");
        failed = true;
    }
    if !failed && !survey.adoptions.is_empty() {
        eprintln!(
            "verified: {} domain(s) carry the mark and plan leaves them unchanged once the declarations are added",
            survey.adoptions.len()
        );
    }
    print_declarations(&survey, args.format);
    if failed { exit::INVALID } else { exit::OK }
}

fn print_declarations(survey: &Survey, format: ImportFormat) {
    let decls = survey.declarations();
    match format {
        ImportFormat::Json => {
            let doc = serde_json::json!({
                "format": crate::formats::IMPORT,
                "adoptions": survey.adoptions,
                "refusals": survey.refusals,
                "already_ours": survey.already_ours.iter().map(|(h, d)| serde_json::json!({"host": h, "domain": d})).collect::<Vec<_>>(),
                "declarations": import::declare::yaml(&decls),
            });
            super::out::println(&serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        _ if decls.is_empty() => {}
        ImportFormat::Yaml => super::out::print(&import::declare::yaml(&decls)),
        ImportFormat::Kdl => super::out::print(&import::declare::kdl(&decls)),
    }
}

/// What import does (or would do) per host, for stderr.
pub fn describe(survey: &Survey, marking: bool) -> String {
    let mut out = String::new();
    let verb = if marking { "mark" } else { "would mark" };
    for a in &survey.adoptions {
        let add = if a.declaration.is_some() { "" } else { " (the factory declares it already)" };
        out += &format!(
            "+ {verb} `{}` on host `{}` as `{}`{add}: metadata only, nothing restarts\n",
            a.domain, a.host, a.id
        );
        for note in &a.notes {
            out += &format!("    note: {note}\n");
        }
    }
    for r in &survey.refusals {
        let on = if r.host == "*" { String::new() } else { format!(" on host `{}`", r.host) };
        if r.domain == "*" {
            out += &format!("! nothing{on} is imported:\n");
        } else {
            out += &format!("! `{}`{on} is not imported:\n", r.domain);
        }
        for why in &r.reasons {
            out += &format!("    - {why}\n");
        }
    }
    if !survey.already_ours.is_empty() {
        out += &format!("= {} domain(s) are this factory's already\n", survey.already_ours.len());
    }
    if survey.adoptions.is_empty() && survey.refusals.is_empty() {
        out += "nothing to import: no domain without a mark\n";
    }
    out
}
