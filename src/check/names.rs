//! `fabrik::spec::duplicate-name`: every object is named once, across all files.

use std::collections::HashMap;

use crate::diag::Diagnostic;
use crate::spec::model::Spec;
use crate::spec::source::Span;

pub fn check(spec: &Spec) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    unique(&mut out, "host", spec.hosts.iter().map(|h| (h.name.value.clone(), h.name.span)));
    unique(&mut out, "tenant", spec.tenants.iter().map(|t| (t.name.value.clone(), t.name.span)));
    unique(&mut out, "network", spec.networks.iter().map(|n| (n.name.value.clone(), n.name.span)));
    unique(&mut out, "pool", spec.pools.iter().map(|p| (p.name.value.clone(), p.name.span)));
    unique(&mut out, "image", spec.images.iter().map(|i| (i.name.value.clone(), i.name.span)));
    unique(&mut out, "template", spec.templates.iter().map(|t| (t.name.value.clone(), t.name.span)));
    // VMs clash by the names they expand to: `web` with 2 replicas is `web-0` and `web-1`.
    unique(&mut out, "VM", spec.vms.iter().flat_map(|v| v.instance_names().into_iter().map(move |n| (n, v.name.span))));
    for h in &spec.hosts {
        let of = format!("NUMA node of host `{}`", h.name.value);
        unique(&mut out, &of, h.numa_nodes.iter().map(|n| (n.id.value.to_string(), n.id.span)));
        let of = format!("GPU of host `{}`", h.name.value);
        unique(&mut out, &of, h.gpus.iter().map(|g| (g.address.value.to_string(), g.address.span)));
        let of = format!("NIC of host `{}`", h.name.value);
        unique(&mut out, &of, h.nics.iter().map(|n| (n.name.value.clone(), n.name.span)));
    }
    let workloads = spec
        .templates
        .iter()
        .map(|t| (format!("template `{}`", t.name.value), &t.workload))
        .chain(spec.vms.iter().map(|v| (format!("VM `{}`", v.name.value), &v.workload)));
    for (owner, w) in workloads {
        if let Some(disks) = &w.disks {
            unique(&mut out, &format!("disk of {owner}"), disks.iter().map(|d| (d.name.value.clone(), d.name.span)));
        }
    }
    out
}

fn unique(out: &mut Vec<Diagnostic>, what: &str, names: impl Iterator<Item = (String, Span)>) {
    let mut seen: HashMap<String, Span> = HashMap::new();
    for (name, span) in names {
        if let Some(&first) = seen.get(&name) {
            out.push(
                Diagnostic::error("fabrik::spec::duplicate-name", format!("{what} `{name}` is defined twice"))
                    .at(span, "defined again here")
                    .also(first, "first defined here")
                    .help(format!("rename one of them; each {what} needs its own name")),
            );
        } else {
            seen.insert(name, span);
        }
    }
}
