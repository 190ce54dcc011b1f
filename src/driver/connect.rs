//! Opening a declared host's drivers: its simulated twin, or libvirt at its URI and its
//! agent for GPUs and links.

use std::path::Path;

use super::agent::{AgentClient, Shared};
use super::libvirt::LibvirtDriver;
use super::{DriverError, ErrorKind, Gpus, Links, Opened, Virt};
use crate::diag::redact::Secrets;
use crate::driver::observe::HostDrivers;
use crate::live::LiveHost;
use crate::spec::model::Host;

/// A host's drivers; with `twins`, its simulated twin kept in that state folder.
pub fn open(host: &Host, twins: Option<&Path>) -> HostDrivers {
    match twins {
        Some(state) => crate::sim::drivers(state, host),
        None => open_real(host),
    }
}

/// Opens a host's drivers (as [`open`]) and reads it: a real host's libvirt is read as
/// soon as its connection is open, while its agent still starts
/// ([`crate::driver::observe::observe_opening`]).
pub fn observe(host: &Host, twins: Option<&Path>) -> LiveHost {
    let name = &host.name.value;
    match twins {
        Some(state) => crate::driver::observe::observe(name, crate::sim::drivers(state, host)),
        None => crate::driver::observe::observe_opening(
            name,
            || open_virt(host),
            || open_agent(host),
            host.partitions_path().map(str::to_string),
        ),
    }
}

/// Starts reading the libvirt of every real host (`hosts`, cloned: the reads outlive the
/// caller's borrow) in the background, each URI refused or opened by [`open_virt`];
/// [`observe_started`] finishes each host.
pub fn start_libvirt(hosts: &[Host]) -> Vec<crate::driver::observe::Started> {
    crate::driver::observe::start_libvirt(hosts.to_vec(), |h: &Host| h.name.value.clone(), open_virt)
}

/// Reads a real host whose libvirt is already being read ([`start_libvirt`]): its agent
/// starts now, then both are joined.
pub fn observe_started(host: &Host, libvirt: &crate::driver::observe::Started) -> LiveHost {
    crate::driver::observe::observe_started(libvirt, || open_agent(host), host.partitions_path().map(str::to_string))
}

/// libvirt at the host's `uri`; NVML and netlink through its `agent` command, one
/// connection for both. The two open at once: neither waits for the other.
pub fn open_real(host: &Host) -> HostDrivers {
    std::thread::scope(|s| {
        let agent = s.spawn(|| open_agent(host));
        let virt = open_virt(host);
        let (gpus, links) = agent.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        HostDrivers { virt, gpus, links, partitions_file: host.partitions_path().map(str::to_string) }
    })
}

/// libvirt at the host's `uri`, if it is one fabrik opens (`check::trust`). Errors
/// carry no credential of the URI, whatever libvirt's message quoted.
pub fn open_virt(host: &Host) -> Opened<dyn Virt> {
    let secrets = Secrets::of_host(host);
    if let Some(refusal) = crate::check::trust::uri_refusal(&host.uri.value) {
        return Err(DriverError::new(
            ErrorKind::Refused,
            format!("host `{}`: {refusal} ({}); nothing was opened", host.name.value, refusal.code()),
        ));
    }
    LibvirtDriver::connect(&host.uri.value)
        .map(|d| Box::new(d) as Box<dyn Virt>)
        .map_err(|e| DriverError { message: secrets.scrub(&e.message), ..e })
}

/// The host's agent, as its GPU and link drivers (one process answers for both).
pub fn open_agent(host: &Host) -> (Opened<dyn Gpus>, Opened<dyn Links>) {
    match open_shared_agent(host) {
        Ok(s) => (Ok(Box::new(s.clone())), Ok(Box::new(s))),
        Err(e) => (Err(e.clone()), Err(e)),
    }
}

/// The host's agent, started once: a handle that serves as both drivers and can be
/// cloned for every use of one apply (lock, observe, apply, verify).
pub fn open_shared_agent(host: &Host) -> Result<Shared, DriverError> {
    match &host.agent {
        Some(command) => AgentClient::spawn(&command.value)
            .map(Shared::new)
            .map_err(|e| DriverError { message: Secrets::of_host(host).scrub(&e.message), ..e }),
        None => Err(DriverError::new(
            ErrorKind::Unreachable,
            format!("host `{}` has no `agent` command, so its GPUs and links cannot be read", host.name.value),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_uri_opens_nothing_even_unvalidated() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let script = dir.path().join("run.sh");
        std::fs::write(&script, format!("#!/bin/sh\ntouch '{}'\n", marker.display())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Decoded only: no check has run, as for a library caller that skips validation.
        let text = format!(
            "version: 1\nhosts:\n  - name: h1\n    uri: \"qemu+ext:///system?command={}\"\n    numa-nodes: [{{ id: 0, cpus: 0-1, memory: 1GiB }}]\n",
            script.display()
        );
        let spec = crate::spec::load::clean_yaml(&text);
        let Err(e) = open_virt(&spec.hosts[0]) else { panic!("an ext URI was opened") };
        assert_eq!(e.kind, ErrorKind::Refused, "{e:?}");
        assert!(e.message.contains("fabrik::trust::transport"), "{e:?}");
        assert!(!marker.exists(), "the URI's command ran");
    }
}
