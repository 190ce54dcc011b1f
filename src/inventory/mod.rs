//! `fabrik inventory`: what each host of a factory really has and runs, compared with what
//! the factory declares.
//!
//! Pure: it takes the declared hosts and the observed [`LiveHost`]s and returns a report;
//! observing is `driver::observe`, printing is [`render`].

pub mod drift;
pub mod render;

use serde::Serialize;

use crate::diag::Diagnostic;
use crate::live::LiveHost;
use crate::spec::model::Spec;

/// One host in the report.
#[derive(Debug, Serialize)]
pub struct HostReport {
    pub name: String,
    pub uri: String,
    /// Whether libvirt answered; the other concerns may still have failed (see `live.errors`).
    pub reachable: bool,
    pub live: LiveHost,
    #[serde(skip)]
    pub drift: Vec<Diagnostic>,
}

#[derive(Debug, Serialize)]
#[must_use]
pub struct Inventory {
    pub simulated: bool,
    pub hosts: Vec<HostReport>,
    /// The service endpoints of the factory's VMs, probed (see [`crate::endpoints`]).
    pub endpoints: Vec<crate::endpoints::Report>,
}

impl Inventory {
    /// Joins each declared host with what was observed of it (in the same order).
    pub fn new(spec: &Spec, live: Vec<LiveHost>, simulated: bool) -> Inventory {
        let hosts = spec
            .hosts
            .iter()
            .zip(live)
            .map(|(host, live)| HostReport {
                name: host.name.value.clone(),
                uri: crate::diag::redact::uri(&host.uri.value),
                reachable: live.info.is_some(),
                drift: drift::compare(host, &live),
                live,
            })
            .collect();
        Inventory { simulated, hosts, endpoints: Vec::new() }
    }

    pub fn drift(&self) -> impl Iterator<Item = &Diagnostic> {
        self.hosts.iter().flat_map(|h| &h.drift)
    }
}
