//! Reading one domain back from libvirt: its XML fetched (the saved definition, and for a
//! guest that runs the live one too), then parsed into a [`LiveDomain`]; and a local
//! host's domains fetched one after another while a second thread parses them.

use std::sync::mpsc;

use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::sys;

use super::{joined, libvirt_error, xml};
use crate::driver::Result;
use crate::live::{LiveDomain, PowerState, RunningDefinition};

/// From how many domains a local host's are parsed on a thread of their own while the
/// next is read ([`read_then_parse`]); fewer are not worth a thread (a simulated host
/// holds a handful).
pub(super) const PARSE_BESIDE_MIN: usize = 32;

/// One domain, or `None` when it went away while the list was read. A shut-off
/// domain costs one XML read (its definition); a running one two, since each XML
/// holds what the other lacks: the saved definition (what the next start runs, what
/// the plan compares), and the live one (what runs now, and its tap devices).
/// libvirt cannot say when the two are equal: `virDomainIsUpdated` stays false after
/// a running domain is redefined (QEMU driver, libvirt 9.0, tried on a testbed host).
pub(super) fn read(dom: &Domain, state: PowerState, autostart: bool) -> Result<Option<LiveDomain>> {
    match fetch_domain(dom, state)? {
        Some(fetched) => parse_domain(fetched, state, autostart).map(Some),
        None => Ok(None),
    }
}

/// The domains of `todo` read one call at a time over a local connection, each
/// parsed on a second thread while the next is read: the XML of the domain before
/// is parsed while libvirtd answers, rather than between the round trips. The
/// results (and the first error) are those of reading them one by one in order.
pub(super) fn read_then_parse(todo: &[(&Domain, PowerState, bool)]) -> Vec<Result<Option<LiveDomain>>> {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<(Fetched, PowerState, bool)>();
        let parser = s.spawn(move || {
            rx.into_iter().map(|(fetched, state, autostart)| parse_domain(fetched, state, autostart)).collect()
        });
        let mut failed = None;
        for &(dom, state, autostart) in todo {
            match fetch_domain(dom, state) {
                Ok(Some(fetched)) => {
                    if tx.send((fetched, state, autostart)).is_err() {
                        break;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let parsed: Vec<Result<LiveDomain>> = joined(parser);
        // The parses are of domains before the one whose read failed.
        let mut out: Vec<Result<Option<LiveDomain>>> = parsed.into_iter().map(|r| r.map(Some)).collect();
        out.extend(failed.map(Err));
        out
    })
}

/// A domain's XML as libvirt answered it: the saved definition, and for a running or
/// paused domain the one it runs.
struct Fetched {
    inactive: String,
    current: Option<String>,
}

/// Reads a domain's XML (`None`: it went away meanwhile).
fn fetch_domain(dom: &Domain, state: PowerState) -> Result<Option<Fetched>> {
    let gone = |e: &VirtError| e.code().is(ErrorNumber::NoDomain);
    let what = || format!("cannot read domain `{}`", dom.name().unwrap_or_default());
    let inactive = match dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE) {
        Ok(x) => x,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(libvirt_error(&what(), e)),
    };
    let current = if state != PowerState::ShutOff {
        match dom.xml_desc(0) {
            Ok(x) => Some(x),
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(libvirt_error(&what(), e)),
        }
    } else {
        None
    };
    Ok(Some(Fetched { inactive, current }))
}

/// A domain read back from its XML.
fn parse_domain(fetched: Fetched, state: PowerState, autostart: bool) -> Result<LiveDomain> {
    let mut live = xml::domain(&fetched.inactive, state, autostart)?;
    if let Some(current) = &fetched.current {
        // The guest runs its live definition until its next start; the saved one
        // may be newer (a redefine whose restart never came).
        // (A live XML fabrik cannot read leaves the guest judged by its saved
        // definition alone, as before, rather than the host unreadable.)
        live.running = xml::domain(current, state, autostart).ok().map(|r| Box::new(RunningDefinition::of(&r)));
        let targets = xml::interface_targets(current)?;
        for iface in &mut live.interfaces {
            iface.target =
                iface.mac.as_ref().and_then(|mac| targets.iter().find(|(m, _)| m == mac)).map(|(_, dev)| dev.clone());
        }
    }
    Ok(live)
}
