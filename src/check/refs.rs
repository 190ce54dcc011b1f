//! `fabrik::ref::*`: every name an object refers to exists, and is of the right kind.

use std::collections::{HashMap, HashSet};

use crate::diag::{Diagnostic, suggest};
use crate::spec::model::{Host, Spec, Template, Workload};
use crate::spec::source::Spanned;

struct Names<'a> {
    kind: &'static str,
    code: &'static str,
    names: HashSet<&'a str>,
    sorted: Vec<&'a str>,
}

impl<'a> Names<'a> {
    fn new(kind: &'static str, code: &'static str, names: impl Iterator<Item = &'a str>) -> Names<'a> {
        let names: HashSet<&str> = names.collect();
        let mut sorted: Vec<&str> = names.iter().copied().collect();
        sorted.sort_unstable();
        Names { kind, code, names, sorted }
    }

    fn check(&self, out: &mut Vec<Diagnostic>, r: &Spanned<String>, from: &str) {
        if self.names.contains(r.value.as_str()) {
            return;
        }
        let help = match suggest(&r.value, self.sorted.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? If not, define {} `{}`", self.kind, r.value),
            None if self.sorted.is_empty() => {
                format!("no {kind} is defined; define {kind} `{}` or fix the name", r.value, kind = self.kind)
            }
            None if self.sorted.len() <= 8 => {
                format!("the {}s defined are: {}", self.kind, self.sorted.join(", "))
            }
            None => format!("define {} `{}` or fix the name", self.kind, r.value),
        };
        out.push(
            Diagnostic::error(self.code, format!("{from} refers to unknown {} `{}`", self.kind, r.value))
                .at(r.span, format!("no {} has this name", self.kind))
                .help(help),
        );
    }
}

pub fn check(spec: &Spec) -> Vec<Diagnostic> {
    let hosts = Names::new("host", "fabrik::ref::unknown-host", spec.hosts.iter().map(|h| h.name.value.as_str()));
    let tenants =
        Names::new("tenant", "fabrik::ref::unknown-tenant", spec.tenants.iter().map(|t| t.name.value.as_str()));
    let networks =
        Names::new("network", "fabrik::ref::unknown-network", spec.networks.iter().map(|n| n.name.value.as_str()));
    let pools = Names::new("pool", "fabrik::ref::unknown-pool", spec.pools.iter().map(|p| p.name.value.as_str()));
    let images = Names::new("image", "fabrik::ref::unknown-image", spec.images.iter().map(|i| i.name.value.as_str()));
    let templates =
        Names::new("template", "fabrik::ref::unknown-template", spec.templates.iter().map(|t| t.name.value.as_str()));
    let mut out = Vec::new();
    let templates_by_name = spec.templates_by_name();
    // GPU pins look their host up here: once per VM, so never a scan of the hosts.
    let by_name = spec.hosts_by_name();

    for t in &spec.tenants {
        let from = format!("tenant `{}`", t.name.value);
        t.hosts.iter().for_each(|h| hosts.check(&mut out, h, &from));
        t.networks.iter().for_each(|n| networks.check(&mut out, n, &from));
    }
    for n in &spec.networks {
        let from = format!("network `{}`", n.name.value);
        n.tenant.iter().for_each(|t| tenants.check(&mut out, t, &from));
        n.hosts.iter().for_each(|h| hosts.check(&mut out, h, &from));
    }
    let in_use: HashSet<&str> = spec
        .hosts
        .iter()
        .flat_map(|h| &h.gpus)
        .filter_map(|g| g.nvlink_domain.as_ref())
        .map(|n| n.value.as_str())
        .collect();
    for domain in &spec.nvlink_domains {
        if !in_use.contains(domain.name.value.as_str()) {
            out.push(
                Diagnostic::error(
                    "fabrik::ref::unused-nvlink-domain",
                    format!("NVLink domain `{}` is declared but no GPU is in it", domain.name.value),
                )
                .at(domain.name.span, "no GPU names this domain")
                .help("give the domain's GPUs `nvlink-domain` with this name, or fix the name if it is misspelt"),
            );
        }
    }
    for p in &spec.pools {
        let from = format!("pool `{}`", p.name.value);
        p.hosts.iter().for_each(|h| hosts.check(&mut out, h, &from));
    }
    for i in &spec.images {
        pools.check(&mut out, &i.pool, &format!("image `{}`", i.name.value));
    }
    let workload_refs = |out: &mut Vec<Diagnostic>, w: &Workload, from: &str| {
        for nic in w.nics.iter().flatten() {
            networks.check(out, &nic.network, from);
        }
        for disk in w.disks.iter().flatten() {
            disk.image.iter().for_each(|i| images.check(out, i, from));
            disk.pool.iter().for_each(|p| pools.check(out, p, from));
        }
    };
    for t in &spec.templates {
        workload_refs(&mut out, &t.workload, &format!("template `{}`", t.name.value));
    }
    for vm in &spec.vms {
        let from = format!("VM `{}`", vm.name.value);
        tenants.check(&mut out, &vm.tenant, &from);
        vm.template.iter().for_each(|t| templates.check(&mut out, t, &from));
        vm.host.iter().for_each(|h| hosts.check(&mut out, h, &from));
        workload_refs(&mut out, &vm.workload, &from);
        check_gpu_pins(&by_name, vm, &mut out);
        check_complete(&templates_by_name, vm, &mut out);
    }
    out
}

/// GPU pins name PCI addresses, which only mean something on one host.
fn check_gpu_pins(hosts: &HashMap<&str, &Host>, vm: &crate::spec::model::Vm, out: &mut Vec<Diagnostic>) {
    let Some(first) = vm.gpus.first() else { return };
    let Some(host_name) = &vm.host else {
        out.push(
            Diagnostic::error(
                "fabrik::ref::gpu-pin-without-host",
                format!("VM `{}` pins GPUs but no host", vm.name.value),
            )
            .at(first.span, "a PCI address is only meaningful on one host")
            .help("give the VM a `host`: the host these GPUs are on"),
        );
        return;
    };
    let Some(&host) = hosts.get(host_name.value.as_str()) else {
        return;
    };
    for pin in &vm.gpus {
        if !host.gpus.iter().any(|g| g.address.value == pin.value) {
            let known: Vec<String> = host.gpus.iter().map(|g| g.address.value.to_string()).collect();
            let help = if known.is_empty() {
                format!("host `{}` declares no GPUs", host.name.value)
            } else {
                format!("GPUs of host `{}`: {}", host.name.value, known.join(", "))
            };
            out.push(
                Diagnostic::error(
                    "fabrik::ref::unknown-gpu",
                    format!(
                        "VM `{}` pins GPU `{}`, which host `{}` does not have",
                        vm.name.value, pin.value, host.name.value
                    ),
                )
                .at(pin.span, "no such GPU on the host")
                .also(host_name.span, "on this host")
                .help(help),
            );
        }
    }
}

/// A VM needs vCPUs and memory, from itself or its template.
fn check_complete(templates: &HashMap<&str, &Template>, vm: &crate::spec::model::Vm, out: &mut Vec<Diagnostic>) {
    let template = vm.template.as_ref().and_then(|t| templates.get(t.value.as_str()).copied());
    if vm.template.is_some() && template.is_none() {
        return; // already reported as an unknown template
    }
    for (key, given) in [
        ("vcpus", vm.workload.vcpus.is_some() || template.is_some_and(|t| t.workload.vcpus.is_some())),
        ("memory", vm.workload.memory.is_some() || template.is_some_and(|t| t.workload.memory.is_some())),
    ] {
        if !given {
            let source = match &vm.template {
                Some(t) => format!("neither it nor template `{}` gives one", t.value),
                None => "it has no template".to_string(),
            };
            out.push(
                Diagnostic::error(
                    "fabrik::spec::missing-key",
                    format!("VM `{}` has no `{key}`: {source}", vm.name.value),
                )
                .at(vm.name.span, format!("`{key}` is required"))
                .help(format!("add `{key}` to the VM or to its template")),
            );
        }
    }
}
