//! `fabrik::fabric::*`: NVLink domains and the VXLAN underlay. A VM's GPUs reach each
//! other over one NVLink domain, and a domain partitioned by the fabric manager serves
//! one tenant; the hosts of a VXLAN network reach each other through the addresses of
//! its parent NIC (submodule `underlay`); a network's MTU fits the MTU its parent NIC has on
//! each host (submodule `mtu`).
//!
//! Only whole GPUs count for the first: MIG instances have no NVLink peer access, and a
//! time slice is not a GPU of one's own. GPUs without a declared domain are not known to
//! share NVLink; where that leaves a multi-GPU VM unjudged, fabrik warns rather than
//! fails, since a missing `nvlink-domain` is missing information, not a proven fault.

mod mtu;
mod underlay;

use std::collections::BTreeMap;

use super::gpu::{Candidates, Index, Want, and_list, candidates, inherited, serves};
use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::spec::effective::Effective;
use crate::spec::model::{Gpu, GpuRequest, Host, NvlinkDomain, Spec};
use crate::spec::source::Span;

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::fabric::split-domain",
        summary: "a VM's pinned GPUs are not all on one NVLink domain",
        protects: "a training VM whose NCCL all-reduce crosses PCIe or the network between GPU groups: an order of magnitude slower, and with a partitioned fabric, GPUs that cannot reach each other at all",
        example: "gpus:\n  - { address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0, nvlink-domain: board-a, mode: passthrough }\n  - { address: \"0000:9d:00.0\", model: H200-141GB, numa-node: 1, nvlink-domain: board-b, mode: passthrough }\nvms:\n  - { name: train, tenant: acme, host: gpu01, gpus: [\"0000:1b:00.0\", \"0000:9d:00.0\"], gpu: { model: H200-141GB, count: 2 } }",
        fix: "pin GPUs of one domain (the help names one with room), or split the job into one VM per domain",
    },
    Rule {
        code: "fabrik::fabric::domain-too-small",
        summary: "a multi-GPU VM on a host where no NVLink domain has that many passthrough GPUs of its model",
        protects: "a VM that placement can only build across domains, its GPUs talking over PCIe",
        example: "# gpu01: 4 H200 in domain board-a, 4 in board-b\nvms:\n  - { name: train, tenant: acme, host: gpu01, gpu: { model: H200-141GB, count: 8 } }",
        fix: "ask for at most as many GPUs as the largest domain holds, run the VM on a host with a larger domain, or correct the GPUs' `nvlink-domain` if they really share one",
    },
    Rule {
        code: "fabrik::fabric::no-domain",
        summary: "warning: a multi-GPU VM gets GPUs of an NVLink model that declare no NVLink domain",
        protects: "a topology fabrik cannot check: without `nvlink-domain` it cannot tell whether the VM's GPUs share NVLink or talk over PCIe. A warning, not an error: the domain is optional information",
        example: "gpus:\n  - { address: \"0000:1b:00.0\", model: H100-80GB, numa-node: 0, mode: passthrough }\n  - { address: \"0000:43:00.0\", model: H100-80GB, numa-node: 0, mode: passthrough }\nvms:\n  - { name: train, tenant: acme, host: gpu01, gpus: [\"0000:1b:00.0\", \"0000:43:00.0\"], gpu: { model: H100-80GB, count: 2 } }",
        fix: "give the GPUs their `nvlink-domain` (GPUs on one NVSwitch baseboard share one; an NVL72 rack is one domain across hosts)",
    },
    Rule {
        code: "fabrik::fabric::partition-split",
        summary: "GPUs of an NVLink domain declared `partitioned: true` go to VMs of more than one tenant",
        protects: "tenants sharing an NVLink partition: the fabric manager isolates partitions, not GPUs within one, so one tenant's GPUs could reach another's memory over NVLink",
        example: "nvlink-domains:\n  - { name: nvl72-a, partitioned: true }\nvms:\n  - { name: a, tenant: acme, host: gb01, gpus: [\"0008:01:00.0\"], gpu: { model: GB200 } }\n  - { name: b, tenant: globex, host: gb01, gpus: [\"0009:01:00.0\"], gpu: { model: GB200 } }",
        fix: "give the domain's GPUs to one tenant, or declare one domain per fabric-manager partition and assign each to one tenant",
    },
    Rule {
        code: "fabrik::fabric::no-underlay-address",
        summary: "warning: a host of a VXLAN network that spans several hosts has no `ip` on the network's parent NIC",
        protects: "VMs cut off from the rest of their network: without the host's address its VXLAN device has no tunnel endpoint and no flood entries, and the other hosts none towards it. A warning, not an error: the network still works within the host",
        example: "# gpu01's nic fe0 has `ip: 10.10.0.11`\nhosts:\n  - name: gpu02\n    nics: [{ name: fe0, kind: ethernet }]\nnetworks:\n  - { name: acme-net, purpose: tenant, kind: vxlan, tenant: acme, vni: 10001, parent: fe0, hosts: [gpu01, gpu02] }",
        fix: "give the parent NIC of every host of the network its address on the underlay (`ip: 10.10.0.12`)",
    },
    Rule {
        code: "fabrik::fabric::duplicate-underlay-address",
        summary: "two hosts of one VXLAN network give its parent NIC the same `ip`",
        protects: "tunnel traffic for two hosts delivered to one: the other hosts flood to the address once, so the VMs of one of the two never hear from the rest, and the underlay itself has an address conflict",
        example: "# gpu01's nic fe0 has `ip: 10.10.0.11`\nhosts:\n  - name: gpu02\n    nics: [{ name: fe0, kind: ethernet, ip: 10.10.0.11 }]\nnetworks:\n  - { name: acme-net, purpose: tenant, kind: vxlan, tenant: acme, vni: 10001, parent: fe0, hosts: [gpu01, gpu02] }",
        fix: "give the parent NIC of every host its own address",
    },
    Rule {
        code: "fabrik::fabric::mtu-above-parent",
        summary: "a network's `mtu` (for VXLAN, plus 50 bytes of encapsulation, 70 over IPv6) is above the `mtu` a host declares for the network's parent NIC",
        protects: "a network the host cannot build: the kernel refuses a VLAN device, InfiniBand partition or SR-IOV VF with an MTU above its parent's, and a VXLAN device whose frames and encapsulation do not fit the underlay, so apply fails on that host halfway. The NIC's own MTU is the host's provisioning, not fabrik's to change",
        example: "hosts:
  - name: gpu01
    nics: [{ name: stor0, kind: ethernet, mtu: 1500 }]
networks:
  - { name: storage, purpose: storage, kind: vlan, shared: true, vlan: 200, parent: stor0, mtu: 9000, hosts: [gpu01] }",
        fix: "raise the NIC's MTU in the host's provisioning and declare it (`mtu: 9000`), or lower the network's `mtu` to fit (for VXLAN over IPv4, 50 bytes below the NIC's)",
    },
];

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    let ix = Index::new(spec);
    for e in spec.effective_vms() {
        let Some(req) = e.gpu() else { continue };
        if Want::of(req) != Want::Whole || !req.model.value.info().nvlink || e.count() == 0 {
            continue;
        }
        if !e.vm.gpus.is_empty() {
            pinned(&ix, e, req, out);
        } else if let Some(h) = ix.host_of(e.vm) {
            hosted(&ix, e, req, h, out);
        }
    }
    partitions(&ix, out);
    let attached = underlay::Attached::new(&ix);
    underlay::check(&ix, &attached, out);
    mtu::check(&ix, &attached, out);
}

fn domain_of(gpu: &Gpu) -> Option<&str> {
    gpu.nvlink_domain.as_ref().map(|d| d.value.as_str())
}

fn in_domain(gpu: &Gpu) -> String {
    match domain_of(gpu) {
        Some(d) => format!("in `{d}`"),
        None => "in no NVLink domain".to_string(),
    }
}

/// Passthrough GPUs of the request's model on a host, by domain (`None`: no domain).
fn domains<'a>(host: &'a Host, req: &GpuRequest) -> BTreeMap<Option<&'a str>, Vec<&'a Gpu>> {
    let mut by = BTreeMap::<Option<&str>, Vec<&Gpu>>::new();
    for gpu in host.gpus.iter().filter(|g| serves(g, req.model.value, Want::Whole)) {
        by.entry(domain_of(gpu)).or_default().push(gpu);
    }
    by
}

fn pinned(ix: &Index<'_>, e: Effective<'_>, req: &GpuRequest, out: &mut Vec<Diagnostic>) {
    let Some(h) = ix.host_of(e.vm) else { return };
    let host = ix.host(h);
    // Pins that do not serve the request are the GPU checks' to report.
    let pins: Vec<(Span, &Gpu)> =
        e.vm.gpus
            .iter()
            .filter_map(|p| ix.gpu(h, p.value).map(|(_, g)| (p.span, g)))
            .filter(|(_, g)| serves(g, req.model.value, Want::Whole))
            .collect();
    let Some(&(first_span, first)) = pins.first() else { return };
    if pins.len() < 2 {
        return;
    }
    let vm = &e.vm.name.value;
    if pins.iter().all(|(_, g)| domain_of(g) == domain_of(first)) {
        if domain_of(first).is_none() {
            let last = pins[pins.len() - 1].0;
            out.push(no_domain(
                format!(
                    "VM `{vm}` gets {} {} GPUs on host `{}` that declare no NVLink domain: fabrik cannot check that they reach each other over NVLink",
                    pins.len(),
                    req.model.value,
                    host.name.value
                ),
                first_span.join(last),
                "no `nvlink-domain` on these GPUs",
            ));
        }
        return;
    }
    let Some(&(odd_span, odd)) = pins.iter().find(|(_, g)| domain_of(g) != domain_of(first)) else { return };
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, g) in &pins {
        by.entry(in_domain(g)).or_default().push(g.address.value.to_string());
    }
    let parts: Vec<String> = by.iter().map(|(d, gpus)| format!("{} {d}", gpus.join(", "))).collect();
    let mut d = Diagnostic::error(
        "fabrik::fabric::split-domain",
        format!("VM `{vm}`'s GPUs are not on one NVLink domain: {}", and_list(&parts)),
    )
    .at(odd_span, in_domain(odd))
    .also(first_span, in_domain(first));
    for &(span, g) in &pins[1..] {
        if span != odd_span {
            d = d.also(span, in_domain(g));
        }
    }
    if let Some(dom) = &odd.nvlink_domain {
        d = d.also(dom.span, format!("GPU {}'s domain", odd.address.value));
    }
    let room = domains(host, req)
        .into_iter()
        .filter_map(|(d, gpus)| d.map(|d| (d, gpus)))
        .filter(|(_, gpus)| gpus.len() >= pins.len())
        .map(|(d, gpus)| {
            let list: Vec<String> = gpus.iter().map(|g| g.address.value.to_string()).collect();
            format!("`{d}` has {}", list.join(", "))
        })
        .next();
    let help = match room {
        Some(r) => format!(
            "pin GPUs of one domain ({r} on host `{}`), or split the job into one VM per domain",
            host.name.value
        ),
        None => format!(
            "no NVLink domain of host `{}` has {} {} GPUs: ask for fewer per VM, or run on a host with a larger domain",
            host.name.value,
            pins.len(),
            req.model.value
        ),
    };
    out.push(d.help(help));
}

fn hosted(ix: &Index<'_>, e: Effective<'_>, req: &GpuRequest, h: usize, out: &mut Vec<Diagnostic>) {
    let count = req.count.value as usize;
    if count < 2 {
        return;
    }
    let host = ix.host(h);
    let by = domains(host, req);
    let total: usize = by.values().map(Vec::len).sum();
    if total < count {
        return; // not enough GPUs at all: the GPU checks report it
    }
    let vm = &e.vm.name.value;
    let (at, label, extra) =
        inherited(e.vm, e.vm.workload.gpu.is_some(), req.count.span, format!("{count} GPUs, to share one domain"));
    let largest =
        by.iter().filter_map(|(d, gpus)| d.map(|d| (d, gpus.len()))).max_by_key(|&(d, n)| (n, std::cmp::Reverse(d)));
    let d = match largest {
        None => no_domain(
            format!(
                "VM `{vm}` gets {count} {} GPUs on host `{}`, which declares no NVLink domain for them: fabrik cannot check that they reach each other over NVLink",
                req.model.value, host.name.value
            ),
            at,
            &label,
        ),
        Some((_, n)) if n >= count => return,
        Some((name, n)) => {
            let without = by.get(&None).map_or(0, Vec::len);
            let also = if without > 0 { format!(" ({without} declare none)") } else { String::new() };
            Diagnostic::error(
                "fabrik::fabric::domain-too-small",
                format!(
                    "VM `{vm}` asks for {count} {} GPUs on host `{}`, but its largest NVLink domain, `{name}`, has {n}{also}",
                    req.model.value, host.name.value
                ),
            )
            .at(at, label)
            .help(format!(
                "ask for at most {n} GPUs, run the VM on a host with a larger domain, or correct the GPUs' `nvlink-domain` if they really share one"
            ))
        }
    };
    let mut d = d.also(e.vm.host.as_ref().map_or(host.name.span, |s| s.span), "on this host");
    if let Some((s, l)) = extra {
        d = d.also(s, l);
    }
    out.push(d);
}

fn no_domain(message: String, at: Span, label: &str) -> Diagnostic {
    Diagnostic::warning("fabrik::fabric::no-domain", message).at(at, label).help(
        "give the GPUs their `nvlink-domain` (GPUs on one NVSwitch baseboard share one); if they have no NVLink, their collective traffic goes over PCIe",
    )
}

/// The first VM entry of a tenant to take GPUs of a partitioned domain, and where.
struct Taker<'a> {
    tenant: &'a str,
    vm: &'a str,
    entry: usize,
    at: Span,
    label: String,
}

/// Partitioned domains: the tenants whose VMs certainly get their GPUs, by pinning them
/// or by running where every GPU that could serve them is in the domain.
fn partitions(ix: &Index<'_>, out: &mut Vec<Diagnostic>) {
    let declared: BTreeMap<&str, &NvlinkDomain> =
        ix.spec.nvlink_domains.iter().filter(|d| d.partitioned).map(|d| (d.name.value.as_str(), d)).collect();
    if declared.is_empty() {
        return;
    }
    // domain → tenant → the first VM entry of that tenant to take the domain's GPUs.
    let mut takers: BTreeMap<&str, BTreeMap<&str, Taker<'_>>> = BTreeMap::new();
    for (entry, e) in ix.spec.effective_vms().enumerate() {
        let Some(req) = e.gpu() else { continue };
        if e.count() == 0 {
            continue;
        }
        let (vm, tenant) = (e.vm.name.value.as_str(), e.vm.tenant.value.as_str());
        let Candidates { pinned, gpus } = candidates(ix, e, req);
        let mut taken: Vec<(&str, Span, String)> = Vec::new();
        if pinned {
            for (_, gpu) in &gpus {
                let Some(d) = domain_of(gpu).filter(|d| declared.contains_key(d)) else { continue };
                let pin = e.vm.gpus.iter().find(|p| p.value == gpu.address.value).map_or(e.vm.name.span, |p| p.span);
                taken.push((d, pin, format!("`{vm}` of tenant `{tenant}` pins this GPU of `{d}`")));
            }
        } else if let Some((_, first)) = gpus.first()
            && let Some(d) = domain_of(first).filter(|d| declared.contains_key(d))
            && gpus.iter().all(|(_, g)| domain_of(g) == Some(d))
        {
            let at = e.vm.host.as_ref().map_or(e.vm.name.span, |h| h.span);
            taken.push((d, at, format!("`{vm}` of tenant `{tenant}` can only get GPUs of `{d}` here")));
        }
        for (d, at, label) in taken {
            takers.entry(d).or_default().entry(tenant).or_insert(Taker { tenant, vm, entry, at, label });
        }
    }
    for (d, tenants) in takers {
        if tenants.len() < 2 {
            continue;
        }
        // In file order: the first tenant to take the domain keeps it; the others are reported.
        let mut firsts: Vec<&Taker<'_>> = tenants.values().collect();
        firsts.sort_by_key(|t| t.entry);
        let names: Vec<String> = firsts.iter().map(|t| format!("`{}` (VM `{}`)", t.tenant, t.vm)).collect();
        let mut diag = Diagnostic::error(
            "fabrik::fabric::partition-split",
            format!(
                "NVLink domain `{d}` is partitioned, but VMs of {} tenants get its GPUs: {}",
                firsts.len(),
                and_list(&names)
            ),
        )
        .at(firsts[1].at, firsts[1].label.clone());
        for (_, t) in firsts.iter().enumerate().filter(|&(k, _)| k != 1) {
            diag = diag.also(t.at, t.label.clone());
        }
        diag = diag.also(declared[d].name.span, "declared `partitioned: true`: one tenant per partition");
        out.push(diag.help(format!(
            "give the GPUs of `{d}` to one tenant (`{}` took them first: move the others' VMs to GPUs outside it), or declare one domain per fabric-manager partition and give each to one tenant",
            firsts[0].tenant
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::gpu::tests::spec;

    fn codes(text: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        check(&spec(text), &mut out);
        out.iter().map(|d| d.code).collect()
    }

    fn host(gpus: &str) -> String {
        format!(
            "version: 1
nvlink-domains:
  - {{ name: part, partitioned: true }}
hosts:
  - name: gpu01
    uri: qemu:///system
    numa-nodes: [{{ id: 0, cpus: 0-31, memory: 512GiB }}]
    gpus:
{gpus}tenants:
  - {{ name: a, hosts: [gpu01], sharing: [exclusive, mig] }}
  - {{ name: b, hosts: [gpu01], sharing: [exclusive, mig] }}
vms:
"
        )
    }

    #[test]
    fn mig_instances_and_cards_without_nvlink_are_not_judged() {
        // MIG instances have no NVLink peer access; an L40S has no NVLink at all.
        let gpus = "      - { address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0, nvlink-domain: x, mig: [3g.71gb, 3g.71gb] }
      - { address: \"0000:43:00.0\", model: H200-141GB, numa-node: 0, nvlink-domain: y, mig: [3g.71gb, 3g.71gb] }
      - { address: \"0000:21:00.0\", model: L40S, numa-node: 0, mode: passthrough }
      - { address: \"0000:22:00.0\", model: L40S, numa-node: 0, mode: passthrough }
";
        let vms = "  - { name: m, tenant: a, host: gpu01, vcpus: 1, memory: 1GiB, gpus: [\"0000:1b:00.0\", \"0000:43:00.0\"], gpu: { model: H200-141GB, mig: 3g.71gb, count: 2 } }
  - { name: l, tenant: a, host: gpu01, vcpus: 1, memory: 1GiB, gpus: [\"0000:21:00.0\", \"0000:22:00.0\"], gpu: { model: L40S, count: 2 } }
";
        assert_eq!(
            codes(&format!(
                "{}{vms}",
                host(gpus).replace("nvlink-domains:\n  - { name: part, partitioned: true }\n", "")
            )),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn a_partition_may_serve_many_vms_of_one_tenant_and_an_open_domain_many_tenants() {
        let gpus = "      - { address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0, nvlink-domain: part, mode: passthrough }
      - { address: \"0000:43:00.0\", model: H200-141GB, numa-node: 0, nvlink-domain: part, mode: passthrough }
      - { address: \"0000:52:00.0\", model: H200-141GB, numa-node: 0, nvlink-domain: open, mode: passthrough }
      - { address: \"0000:61:00.0\", model: H200-141GB, numa-node: 0, nvlink-domain: open, mode: passthrough }
";
        let vms = "  - { name: p1, tenant: a, host: gpu01, vcpus: 1, memory: 1GiB, gpus: [\"0000:1b:00.0\"], gpu: { model: H200-141GB } }
  - { name: p2, tenant: a, host: gpu01, vcpus: 1, memory: 1GiB, gpus: [\"0000:43:00.0\"], gpu: { model: H200-141GB } }
  - { name: o1, tenant: a, host: gpu01, vcpus: 1, memory: 1GiB, gpus: [\"0000:52:00.0\"], gpu: { model: H200-141GB } }
  - { name: o2, tenant: b, host: gpu01, vcpus: 1, memory: 1GiB, gpus: [\"0000:61:00.0\"], gpu: { model: H200-141GB } }
";
        assert_eq!(codes(&format!("{}{vms}", host(gpus))), Vec::<&str>::new());
        // A VM of `b` placed on the host could still get a GPU of the open domain: no error.
        let placed = format!(
            "{vms}  - {{ name: x, tenant: b, host: gpu01, vcpus: 1, memory: 1GiB, gpu: {{ model: H200-141GB }} }}\n"
        );
        assert_eq!(codes(&format!("{}{placed}", host(gpus))), Vec::<&str>::new());
        // Pinned into the partition, it splits it.
        let split = vms.replace("name: o2, tenant: b, host: gpu01, vcpus: 1, memory: 1GiB, gpus: [\"0000:61:00.0\"]", "name: o2, tenant: b, host: gpu01, vcpus: 1, memory: 1GiB, gpus: [\"0000:43:00.0\"]").replace("  - { name: p2, tenant: a, host: gpu01, vcpus: 1, memory: 1GiB, gpus: [\"0000:43:00.0\"], gpu: { model: H200-141GB } }\n", "");
        assert_eq!(codes(&format!("{}{split}", host(gpus))), ["fabrik::fabric::partition-split"]);
    }
}
