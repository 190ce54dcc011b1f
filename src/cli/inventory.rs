//! `fabrik inventory`: read every host of a factory, show it, and report drift.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::{Format, exit};
use crate::diag::render;
use crate::driver::ErrorKind;
use crate::inventory::{Inventory, render as show};
use crate::live::observe::observe_all;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A factory file, or a directory of them.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Read simulated twins of the hosts instead of the hosts themselves.
    #[arg(long)]
    pub sim: bool,
    /// Where the twins keep their state (default: `.fabrik/sim` beside the factory).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

pub fn run(args: &Args) -> u8 {
    let loaded = crate::spec::load::load(&args.path);
    if loaded.diags.iter().any(|d| d.is_error()) {
        let style = super::style_for_stderr();
        for d in &loaded.diags {
            eprint!("{}", render::human(d, &loaded.sources, style));
        }
        eprintln!("{}: the factory has errors; fix them first (`fabrik validate`)", args.path.display());
        return exit::INVALID;
    }
    let spec = loaded.spec;
    let state = crate::sim::state_dir(&args.path, args.state_dir.as_deref());
    let live = observe_all(
        &spec.hosts,
        |h| h.name.value.clone(),
        |h| crate::driver::connect::open(h, args.sim.then_some(state.as_path())),
    );
    let inv = Inventory::new(&spec, live, args.sim);
    let incomplete = |h: &crate::inventory::HostReport| {
        let declares_gpus = spec.host(&h.name).is_some_and(|d| !d.gpus.is_empty());
        // A host that declares no GPU needs no NVML: its absence is shown, not a failure.
        h.live.errors.iter().any(|e| declares_gpus || !(e.concern == "nvml" && e.error.kind == ErrorKind::Unreachable))
    };
    let failed = inv.hosts.iter().any(incomplete) || inv.drift().any(|d| d.is_error());
    match args.format {
        Format::Human => {
            let _ = std::io::stdout().write_all(show::human(&inv).as_bytes());
            let style = super::style_for_stderr();
            for d in inv.drift() {
                eprint!("{}", render::human(d, &loaded.sources, style));
            }
        }
        Format::Json => {
            let report = JsonInventory {
                simulated: inv.simulated,
                hosts: inv
                    .hosts
                    .iter()
                    .map(|h| JsonHost {
                        host: h,
                        drift: h.drift.iter().map(|d| render::json(d, &loaded.sources)).collect(),
                    })
                    .collect(),
            };
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        }
        Format::Github => {
            for d in inv.drift() {
                println!("{}", render::github(d, &loaded.sources));
            }
            for h in inv.hosts.iter().filter(|h| !h.live.errors.is_empty()) {
                for e in &h.live.errors {
                    println!("::error title=fabrik inventory::host `{}`: {}: {}", h.name, e.concern, e.error);
                }
            }
        }
    }
    if failed { exit::INVALID } else { exit::OK }
}

#[derive(Serialize)]
struct JsonInventory<'a> {
    simulated: bool,
    hosts: Vec<JsonHost<'a>>,
}

#[derive(Serialize)]
struct JsonHost<'a> {
    #[serde(flatten)]
    host: &'a crate::inventory::HostReport,
    drift: Vec<render::JsonDiagnostic>,
}
