//! `fabrik::spec::duplicate-name`: every object is named once, across all files.

use std::collections::HashMap;

use crate::diag::Diagnostic;
use crate::spec::model::{Spec, Vm};
use crate::spec::source::Span;

pub fn check(spec: &Spec) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let named = |what| Kind { what, owner: String::new(), key: "name" };
    unique(&mut out, &named("host"), spec.hosts.iter().map(|h| (h.name.value.clone(), h.name.span)));
    unique(&mut out, &named("tenant"), spec.tenants.iter().map(|t| (t.name.value.clone(), t.name.span)));
    unique(&mut out, &named("NVLink domain"), spec.nvlink_domains.iter().map(|d| (d.name.value.clone(), d.name.span)));
    unique(&mut out, &named("network"), spec.networks.iter().map(|n| (n.name.value.clone(), n.name.span)));
    unique(&mut out, &named("pool"), spec.pools.iter().map(|p| (p.name.value.clone(), p.name.span)));
    unique(&mut out, &named("image"), spec.images.iter().map(|i| (i.name.value.clone(), i.name.span)));
    unique(&mut out, &named("template"), spec.templates.iter().map(|t| (t.name.value.clone(), t.name.span)));
    unique_vms(&mut out, spec);
    for h in &spec.hosts {
        let of = |what, key| Kind { what, owner: format!(" of host `{}`", h.name.value), key };
        unique(&mut out, &of("NUMA node", "id"), h.numa_nodes.iter().map(|n| (n.id.value.to_string(), n.id.span)));
        unique(&mut out, &of("GPU", "address"), h.gpus.iter().map(|g| (g.address.value.to_string(), g.address.span)));
        unique(&mut out, &of("NIC", "name"), h.nics.iter().map(|n| (n.name.value.clone(), n.name.span)));
    }
    let workloads = spec
        .templates
        .iter()
        .map(|t| (format!("template `{}`", t.name.value), &t.workload))
        .chain(spec.vms.iter().map(|v| (format!("VM `{}`", v.name.value), &v.workload)));
    for (owner, w) in workloads {
        if let Some(disks) = &w.disks {
            let kind = Kind { what: "disk", owner: format!(" of {owner}"), key: "name" };
            unique(&mut out, &kind, disks.iter().map(|d| (d.name.value.clone(), d.name.span)));
        }
    }
    out
}

/// What is kept unique, in words: a GPU (`what`) of host `gpu01` (`owner`), identified
/// by its `address` (`key`).
struct Kind {
    what: &'static str,
    owner: String,
    key: &'static str,
}

fn unique(out: &mut Vec<Diagnostic>, kind: &Kind, names: impl Iterator<Item = (String, Span)>) {
    let mut seen: HashMap<String, Span> = HashMap::new();
    for (name, span) in names {
        if let Some(&first) = seen.get(&name) {
            let Kind { what, owner, key } = kind;
            let help = if *key == "name" {
                format!("rename one of them; each {what}{owner} needs its own name")
            } else {
                format!("each {what}{owner} has its own `{key}`: fix one of them, or remove the one given twice")
            };
            out.push(
                Diagnostic::error("fabrik::spec::duplicate-name", format!("{what} `{name}`{owner} is defined twice"))
                    .at(span, "defined again here")
                    .also(first, "first defined here")
                    .help(help),
            );
        } else {
            seen.insert(name, span);
        }
    }
}

/// VMs clash by the names they expand to: `web` with 2 replicas is `web-0` and `web-1`.
/// Two entries that clash are reported once, with every name they share.
fn unique_vms(out: &mut Vec<Diagnostic>, spec: &Spec) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    // (earlier entry, later entry) → the names both stand for, in the later one's order.
    let mut clashes: Vec<((usize, usize), Vec<String>)> = Vec::new();
    for (i, vm) in spec.vms.iter().enumerate() {
        for name in vm.instance_names() {
            match seen.get(&name) {
                None => {
                    seen.insert(name, i);
                }
                Some(&first) => match clashes.iter_mut().find(|(pair, _)| *pair == (first, i)) {
                    Some((_, names)) => names.push(name),
                    None => clashes.push(((first, i), vec![name])),
                },
            }
        }
    }
    let as_replica =
        |v: &Vm| if v.replicas.is_some() { format!(", as replicas of `{}`", v.name.value) } else { String::new() };
    for ((first, again), names) in clashes {
        let (first, again) = (&spec.vms[first], &spec.vms[again]);
        let listed = names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        let message = match names.len() {
            1 => format!("VM {listed} is defined twice"),
            _ => format!("VMs {listed} are defined twice"),
        };
        let help = if again.replicas.is_some() || first.replicas.is_some() {
            "rename one of them; a VM with n `replicas` is named `<name>-0` to `<name>-<n-1>`"
        } else {
            "rename one of them; each VM needs its own name"
        };
        out.push(
            Diagnostic::error("fabrik::spec::duplicate-name", message)
                .at(again.name.span, format!("defined again here{}", as_replica(again)))
                .also(first.name.span, format!("first defined here{}", as_replica(first)))
                .help(help),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::load::load_bytes;
    use crate::spec::source::{Sources, Syntax};

    fn check_yaml(text: &str) -> Vec<Diagnostic> {
        let mut sources = Sources::default();
        let (_, spec, diags) = load_bytes(&mut sources, "f.yaml".into(), Syntax::Yaml, text.into());
        assert!(diags.is_empty(), "{diags:?}");
        check(&spec)
    }

    #[test]
    fn clashing_replicas_are_one_error_naming_every_clash() {
        let out = check_yaml(
            "version: 1\nvms:\n  - {name: w, tenant: t, replicas: 2}\n  - {name: w, tenant: t, replicas: 3}\n",
        );
        let [d] = out.as_slice() else { panic!("one diagnostic, got {out:?}") };
        assert_eq!(d.message, "VMs `w-0`, `w-1` are defined twice");
        assert_eq!(d.primary.as_ref().map(|l| l.text.as_str()), Some("defined again here, as replicas of `w`"));
    }

    #[test]
    fn a_gpu_given_twice_is_about_its_address() {
        let out = check_yaml(
            "version: 1\nhosts:\n  - name: h\n    uri: qemu:///system\n    numa-nodes: [{id: 0, cpus: 0-3, memory: 1GiB}]\n    gpus:\n      - {address: 0000:1b:00.0, model: H200-141GB, numa-node: 0}\n      - {address: 1b:00.0, model: H200-141GB, numa-node: 0}\n",
        );
        let [d] = out.as_slice() else { panic!("one diagnostic, got {out:?}") };
        assert_eq!(d.message, "GPU `0000:1b:00.0` of host `h` is defined twice");
        assert!(d.help.as_deref().is_some_and(|h| h.contains("has its own `address`")), "{:?}", d.help);
    }
}
