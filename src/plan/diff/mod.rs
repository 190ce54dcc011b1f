//! The diff of one host: each kind of resource compared with what the host runs.
//!
//! [`virt`] compares libvirt objects (domains, networks, pools, volumes), [`gpu`] GPUs
//! and their MIG layouts, [`links`] host links and hugepages. Each comparison
//! destructures the desired value, so a field added to it does not compile until someone
//! decides whether it matters to the diff.

pub mod gpu;
pub mod links;
pub mod virt;

use std::collections::BTreeSet;

use super::ownership::{Owner, describe_factory};
use super::{Action, Notice, NoticeKind, Options, PlanError};
use crate::desired::{DesiredHost, ResourceId, ResourceKind};
use crate::live::LiveHost;

/// What the comparisons of all hosts produce.
#[derive(Debug, Default)]
pub struct Out {
    pub actions: Vec<Action>,
    pub errors: Vec<PlanError>,
    pub notices: Vec<Notice>,
    /// Desired resources that exist and are fabrik's (what `--replace` may name).
    pub present: Present,
}

/// The ids [`Out::present`] gathers: only when `wanted` (a plan with `--replace`), not
/// every resource of 10,000 hosts in every plan.
#[derive(Debug, Default)]
pub struct Present {
    pub wanted: bool,
    pub ids: BTreeSet<ResourceId>,
}

impl Present {
    pub fn insert(&mut self, id: ResourceId) {
        if self.wanted {
            self.ids.insert(id);
        }
    }
}

impl Out {
    pub fn error(&mut self, code: &str, id: &ResourceId, message: String, help: impl Into<String>) {
        self.errors.push(PlanError { code: code.to_string(), id: id.clone(), message, help: help.into(), at: None });
    }

    pub fn notice(&mut self, id: ResourceId, kind: NoticeKind, reason: impl Into<String>) {
        self.notices.push(Notice { id, kind, reason: reason.into(), code: None });
    }

    /// Whether an existing object of a desired name may be compared and changed; an
    /// error when it is not fabrik's.
    pub fn owned(&mut self, id: &ResourceId, what: &str, owner: Owner) -> bool {
        match owner {
            Owner::Ours => {
                self.present.insert(id.clone());
                true
            }
            Owner::Unmarked => {
                self.error(
                    "fabrik::plan::name-clash",
                    id,
                    format!("{what} `{}` exists on host `{}` and was not made by fabrik", id.name, id.host),
                    match what {
                        // A domain can be adopted in place: marked, never redefined.
                        "domain" => format!(
                            "rename the VM in the factory, remove or rename the existing domain, or adopt it: `fabrik \
                             import --domain {}` marks it when it matches the declaration, without a restart \
                             (docs/import.md)",
                            id.name
                        ),
                        _ => format!(
                            "rename the resource in the factory, or remove or rename the existing {what} on the host"
                        ),
                    },
                );
                false
            }
            Owner::Other(factory) => {
                self.error(
                    "fabrik::plan::other-factory",
                    id,
                    format!("{what} `{}` on host `{}` belongs to {}", id.name, id.host, describe_factory(&factory)),
                    "two factories cannot manage one object: rename the resource in one of them (an object an unnamed factory made is handed over by hand, see docs/language.md)",
                );
                false
            }
        }
    }

    /// A live object no desired resource names: deleted when it is fabrik's, listed
    /// otherwise.
    pub fn extra(&mut self, id: ResourceId, what: &str, owner: Owner, delete: impl FnOnce(ResourceId) -> Action) {
        match owner {
            Owner::Ours => self.actions.push(delete(id)),
            Owner::Unmarked => self.notice(id, NoticeKind::Unmanaged, format!("{what} not made by fabrik")),
            Owner::Other(f) => self.notice(id, NoticeKind::OtherFactory, format!("{what} of {}", describe_factory(&f))),
        }
    }
}

/// Compares one host. A concern that could not be read is an error for every kind it
/// would have told about, never "absent, so create it".
/// `vm_threads`: whether the host's VMs may be compared on threads (this host's diff is
/// the only one running: see [`super::spread`]).
pub fn host(factory: &str, desired: &DesiredHost, live: &LiveHost, options: &Options, vm_threads: bool, out: &mut Out) {
    // `arch` shows through the rendered domain XML of every VM; `ib_ports` are the
    // subnet manager's (`render::opensm`), not this host's.
    let DesiredHost {
        name,
        uri: _,
        arch: _,
        ib_ports: _,
        hugepages,
        vfs,
        gpus,
        links,
        networks,
        pools,
        volumes,
        vms,
        partitions,
    } = desired;
    let unreadable = |concern: &str, out: &mut Out| {
        let reasons: Vec<String> =
            live.errors.iter().filter(|e| e.concern == concern).map(|e| e.error.to_string()).collect();
        out.error(
            "fabrik::plan::unreadable-host",
            &ResourceId::new(ResourceKind::Host, name, name),
            format!("cannot read {concern} on host `{name}`: {}", reasons.join("; ")),
            "fabrik plans only from what it has read; fix the connection and plan again",
        );
    };
    let needs_libvirt = !(vms.is_empty() && networks.is_empty() && pools.is_empty() && volumes.is_empty());
    if live.read("libvirt") {
        virt::domains(factory, desired, live, options.shutdown_timeout, vm_threads, out);
        virt::networks(factory, desired, live, out);
        virt::storage(desired, live, &options.created, out);
        crate::plan::iommu::check(desired, &live.devices, out);
    } else if needs_libvirt {
        unreadable("libvirt", out);
    }
    if live.read("nvml") {
        gpu::gpus(desired, live, out);
    } else if !gpus.is_empty() {
        unreadable("nvml", out);
    }
    if live.read("netlink") {
        links::links(factory, desired, live, out);
        links::hugepages(desired, live, out);
        links::vfs(desired, live, out);
        links::network_nics(desired, live, out);
    } else if !(links.is_empty() && hugepages.is_empty() && vfs.is_empty()) {
        unreadable("netlink", out);
    }
    if let Some(partitions) = partitions {
        match (live.read("netlink"), live.read("subnet-manager")) {
            (true, true) => links::partitions(factory, partitions, live, out),
            (false, _) => unreadable("netlink", out),
            (true, false) => unreadable("subnet-manager", out),
        }
    }
    // Last: it weighs every deletion of this host against what the host still runs.
    super::in_use::hold(factory, desired, live, out);
}
