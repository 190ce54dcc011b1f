//! `fabrik bench --inventory`: how long reading every host of a factory takes, on
//! simulated twins (a fresh state each run, so every run builds its twins too).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Error, TempDir, Timing, synth};
use crate::driver::observe::observe_all;
use crate::spec::source::Syntax;

#[derive(Debug, Serialize)]
#[must_use]
pub struct InventoryReport {
    pub hosts: usize,
    pub runs: usize,
    /// Observing every twin: libvirt (test driver), GPUs, links, concurrently.
    pub inventory: Timing,
    /// Hosts whose twin could not be read completely (should be 0).
    pub incomplete: usize,
}

pub fn run(hosts: usize, runs: usize, progress: &mut dyn FnMut(&str)) -> Result<InventoryReport, Error> {
    let workdir = TempDir::new().map_err(|source| Error::Write { path: std::env::temp_dir(), source })?;
    let dir = workdir.0.join("factory");
    progress(&format!("generating {hosts} hosts in {}", dir.display()));
    let size = synth::Size { hosts, vms: hosts };
    super::write(size, Syntax::Yaml, &dir)?;
    let spec = crate::spec::load::load(&dir).spec;
    let mut samples = Vec::new();
    let mut incomplete = 0;
    for run in 0..runs.max(1) {
        let state = workdir.0.join(format!("state-{run}"));
        let started = Instant::now();
        let live = observe_all(
            &spec.hosts,
            |h| h.name.value.clone(),
            |h| crate::driver::observe::observe(&h.name.value, crate::sim::drivers(&state, h)),
        );
        samples.push(started.elapsed());
        incomplete = live.iter().filter(|h| !h.errors.is_empty()).count();
        progress(&format!("run {}: {:.1} ms", run + 1, samples[run].as_secs_f64() * 1e3));
    }
    Ok(InventoryReport { hosts: spec.hosts.len(), runs: samples.len(), inventory: Timing::of(samples), incomplete })
}

/// Milliseconds, for the table.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
