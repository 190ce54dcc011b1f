//! libFuzzer target: the whole pure path of one file, load → check → desired → render,
//! plus the human rendering of every diagnostic. The first byte picks the syntax (even:
//! YAML, odd: KDL), the rest is the file. Every rendered libvirt XML must be well formed:
//! a name or path that breaks out of its element or attribute is a bug.

#![no_main]

use fabrik::diag::render::{Style, human};
use fabrik::spec::source::Syntax;
use libfuzzer_sys::fuzz_target;

fn well_formed(what: &str, xml: &str) {
    if let Err(e) = roxmltree::Document::parse(xml) {
        panic!("{what}: rendered XML does not parse ({e}):\n{xml}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else { return };
    let syntax = if pick % 2 == 0 { Syntax::Yaml } else { Syntax::Kdl };
    let checked = fabrik_fuzz::load_and_check(syntax, file);
    for d in &checked.diags {
        human(d, &checked.sources, Style::Plain);
    }
    if checked.has_errors() {
        return;
    }
    let Ok(desired) = fabrik::desired::build(&checked.spec) else { return };
    for host in &desired.hosts {
        for vm in &host.vms {
            well_formed("domain", &fabrik::render::domain(&desired.factory, host, vm));
        }
        for net in &host.networks {
            well_formed("network", &fabrik::render::network(&desired.factory, net));
        }
        for pool in &host.pools {
            well_formed("pool", &fabrik::render::pool(pool));
        }
        for vol in &host.volumes {
            well_formed("volume", &fabrik::render::volume(host, vol));
        }
    }
});
