//! Placement: each VM onto a host, its vCPUs onto host CPUs, its GPU request onto whole
//! GPUs, MIG instances or time slices.
//!
//! Deterministic and stable: VMs are placed one at a time in a fixed order (VMs with
//! pinned CPUs or GPUs first, then VMs with a `host`, then the rest; by name within
//! each), each on the first host that fits (its `host`, else its tenant's hosts by
//! name). No hash map is iterated, so the same files give the same placement, and a new
//! VM whose name sorts after the others never moves them. A new VM that sorts earlier
//! may take resources a later one had; a plan shows that as a move.

pub mod fit;
pub mod host;
mod reach;

use std::collections::HashMap;

pub use fit::{Assignment, Misfit, Request};
pub use host::{GpuState, HostState};

use crate::diag::Diagnostic;
use crate::spec::effective::Effective;
use crate::spec::model::Spec;

/// Shared vCPUs are counted in thousandths of a host CPU.
const MILLI: f64 = 1000.0;

/// One VM, placed.
#[derive(Clone, Debug)]
pub struct PlacedVm<'a> {
    /// `<name>-<i>` for a replica, else the VM's name.
    pub name: String,
    pub entry: Effective<'a>,
    /// Index into `spec.hosts`.
    pub host: usize,
    pub assignment: Assignment,
}

/// Every VM placed, and what each host gave.
#[derive(Clone, Debug)]
pub struct Placement<'a> {
    /// In placement order; `GpuState` refers to VMs by their index here.
    pub vms: Vec<PlacedVm<'a>>,
    /// In the order of `spec.hosts`.
    pub hosts: Vec<HostState<'a>>,
}

/// Places every VM, or says for each VM that fits nowhere why each candidate host failed.
pub fn place(spec: &Spec) -> Result<Placement<'_>, Vec<Diagnostic>> {
    let mut hosts: Vec<HostState<'_>> = spec.hosts.iter().map(HostState::of).collect();
    let by_name: HashMap<&str, usize> =
        spec.hosts.iter().enumerate().map(|(i, h)| (h.name.value.as_str(), i)).collect();
    let mut tenant_hosts: HashMap<&str, Vec<usize>> = HashMap::new();
    for t in &spec.tenants {
        let mut hs: Vec<usize> = t.hosts.iter().filter_map(|h| by_name.get(h.value.as_str()).copied()).collect();
        hs.sort_by(|&a, &b| spec.hosts[a].name.value.cmp(&spec.hosts[b].name.value));
        hs.dedup();
        tenant_hosts.insert(t.name.value.as_str(), hs);
    }

    let mut order: Vec<(u8, String, Effective<'_>)> = Vec::new();
    for e in spec.effective_vms() {
        let tier = if e.vm.cpus.is_some() || !e.vm.gpus.is_empty() {
            0
        } else if e.vm.host.is_some() {
            1
        } else {
            2
        };
        match &e.vm.replicas {
            Some(r) => order.extend((0..r.value).map(|i| (tier, format!("{}-{i}", e.vm.name.value), e))),
            None => order.push((tier, e.vm.name.value.clone(), e)),
        }
    }
    order.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));

    let reach = reach::Reach::new(spec, &by_name);
    let mut vms = Vec::with_capacity(order.len());
    let mut diags = Vec::new();
    for (_, name, e) in order {
        let request = request(&e);
        let candidates: Vec<usize> = match &e.vm.host {
            Some(h) => by_name.get(h.value.as_str()).copied().into_iter().collect(),
            None => tenant_hosts.get(e.vm.tenant.value.as_str()).cloned().unwrap_or_default(),
        };
        let mut misses = Vec::new();
        let mut placed = None;
        for &h in &candidates {
            // A host the VM's networks or pools do not reach cannot take it, however
            // much room it has (`validate` reports a VM that names such a host).
            if e.vm.host.is_none()
                && let Err(m) = reach.check(&e, h)
            {
                misses.push((h, vec![m]));
                continue;
            }
            match fit::try_host(&hosts[h], &request) {
                Ok(a) => {
                    placed = Some((h, a));
                    break;
                }
                Err(m) => misses.push((h, m)),
            }
        }
        match placed {
            Some((h, a)) => {
                fit::commit(&mut hosts[h], &request, &a, vms.len());
                vms.push(PlacedVm { name, entry: e, host: h, assignment: a });
            }
            None => diags.push(no_host(spec, &name, &e, &misses)),
        }
    }
    if diags.is_empty() { Ok(Placement { vms, hosts }) } else { Err(diags) }
}

/// What a VM asks of a host, from its effective workload.
pub fn request<'a>(e: &Effective<'a>) -> Request<'a> {
    let vcpus = e.vcpu_count();
    let memory = e.memory_bytes();
    let hugepages = e.hugepages().map(|h| h.value);
    let dedicated = e.dedicated();
    let cpu_milli =
        if dedicated { u64::from(vcpus) * 1000 } else { (f64::from(vcpus) * MILLI / e.cpu_overcommit()).ceil() as u64 };
    let memory_charge = if hugepages.is_some() { 0 } else { (memory as f64 / e.memory_overcommit()).ceil() as u64 };
    Request {
        vcpus,
        memory,
        hugepages,
        dedicated,
        cpus: e.vm.cpus.as_ref().map(|c| &c.value),
        policy: e.numa_policy(),
        cpu_milli,
        memory_charge,
        gpu: e.gpu(),
        pinned_gpus: e.vm.gpus.iter().map(|g| g.value).collect(),
    }
}

fn no_host(spec: &Spec, name: &str, e: &Effective<'_>, misses: &[(usize, Vec<Misfit>)]) -> Diagnostic {
    let mut why: Vec<String> = misses
        .iter()
        .map(|(h, m)| {
            let reasons: Vec<String> = m.iter().map(ToString::to_string).collect();
            format!("{}: {}", spec.hosts[*h].name.value, reasons.join("; "))
        })
        .collect();
    if why.is_empty() {
        why.push(format!("tenant `{}` has no host", e.vm.tenant.value));
    }
    Diagnostic::error("fabrik::place::no-host", format!("no host can take VM `{name}`"))
        .at(e.vm.name.span, "cannot be placed")
        .help(format!("{}\nfree resources on a host, give the tenant more hosts, or shrink the VM", why.join("\n")))
}

#[cfg(test)]
mod tests;
