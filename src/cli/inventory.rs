//! `fabrik inventory`: read every host of a factory, show it, and report drift.

use serde::Serialize;

use super::{Format, exit};
use crate::diag::redact::Secrets;
use crate::diag::render;
use crate::driver::ErrorKind;
use crate::inventory::{Inventory, render as show};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub hosts: super::hosts::Hosts,
    #[arg(long, value_enum, default_value_t = Format::Human, env = "FABRIK_FORMAT")]
    pub format: Format,
}

pub fn run(args: &Args) -> u8 {
    let mut loaded = crate::spec::load::load(&args.hosts.path);
    // What a file may declare and what fabrik may run are checked before any host is
    // read: reading one starts its agent and opens its URI.
    if !loaded.diags.iter().any(|d| d.is_error()) {
        loaded.diags.extend(crate::check::boundaries(&loaded.spec));
    }
    let secrets = Secrets::of_factory(&loaded.spec, &loaded.sources);
    if loaded.diags.iter().any(|d| d.is_error()) {
        let style = super::style_for_stderr();
        for d in &loaded.diags {
            eprint!("{}", secrets.scrub(&render::human(d, &loaded.sources, style)));
        }
        eprintln!("{}: the factory has errors; fix them first (`fabrik validate`)", args.hosts.path.display());
        return exit::INVALID;
    }
    let spec = loaded.spec;
    let live = args.hosts.observe(&spec);
    let timeout = (!args.hosts.sim).then_some(crate::endpoints::PROBE_TIMEOUT);
    let endpoints = crate::endpoints::report(&spec, &live, timeout);
    let mut inv = Inventory::new(&spec, live, args.hosts.sim);
    inv.endpoints = endpoints;
    let incomplete = |h: &crate::inventory::HostReport| {
        let declares_gpus = spec.host(&h.name).is_some_and(|d| !d.gpus.is_empty());
        // A host that declares no GPU needs no NVML: its absence is shown, not a failure.
        h.live.errors.iter().any(|e| declares_gpus || !(e.concern == "nvml" && e.error.kind == ErrorKind::Unreachable))
    };
    let failed = inv.hosts.iter().any(incomplete) || inv.drift().any(|d| d.is_error());
    match args.format {
        Format::Human => {
            super::out::print(&secrets.scrub(&show::human(&inv)));
            let style = super::style_for_stderr();
            for d in inv.drift() {
                eprint!("{}", secrets.scrub(&render::human(d, &loaded.sources, style)));
            }
        }
        Format::Json => {
            let report = JsonInventory {
                simulated: inv.simulated,
                endpoints: &inv.endpoints,
                hosts: inv
                    .hosts
                    .iter()
                    .map(|h| JsonHost {
                        host: h,
                        drift: h.drift.iter().map(|d| render::json(d, &loaded.sources)).collect(),
                    })
                    .collect(),
            };
            let report = crate::formats::stamped(crate::formats::INVENTORY, &report, std::time::SystemTime::now());
            super::out::println(&secrets.scrub(&serde_json::to_string_pretty(&report).unwrap_or_default()));
        }
        Format::Github => {
            let mut text = String::new();
            for d in inv.drift() {
                text += &render::github(d, &loaded.sources);
                text.push('\n');
            }
            for h in inv.hosts.iter().filter(|h| !h.live.errors.is_empty()) {
                for e in &h.live.errors {
                    text += &format!("::error title=fabrik inventory::host `{}`: {}: {}\n", h.name, e.concern, e.error);
                }
            }
            super::out::print(&secrets.scrub(&text));
        }
    }
    if failed { exit::INVALID } else { exit::OK }
}

#[derive(Serialize)]
struct JsonInventory<'a> {
    simulated: bool,
    endpoints: &'a [crate::endpoints::Report],
    hosts: Vec<JsonHost<'a>>,
}

#[derive(Serialize)]
struct JsonHost<'a> {
    #[serde(flatten)]
    host: &'a crate::inventory::HostReport,
    drift: Vec<render::JsonDiagnostic>,
}
