//! `fabrik::quota::*`: each tenant's VMs stay within its quota.
//!
//! Every VM entry of a tenant counts, stopped or not, each replica in full: whole GPUs
//! per model (`gpu.count`), MIG compute slices (a `3g.71gb` instance is 3), vCPUs,
//! memory and VMs. MIG instances count under `mig-slices`, not `gpus`; a time slice of a
//! GPU counts under neither. An absent limit is no limit, and so is a model that
//! `quota.gpus` does not list. A diagnostic points at the VM whose addition takes the
//! tenant over a limit, and at the limit.

use std::collections::HashMap;

use super::capacity::{Tally, amount, bytes};
use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::hw::{GpuModel, mig};
use crate::spec::effective::Effective;
use crate::spec::model::{Quota, Spec, Tenant};
use crate::spec::source::Span;

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::quota::gpus",
        summary: "a tenant's VMs ask for more whole GPUs of a model than its quota allows",
        protects: "one tenant taking GPUs promised to others; replicas and `gpu.count` multiply",
        example: "tenants:\n  - name: acme\n    quota: { gpus: { H200-141GB: 8 } }\nvms:\n  - { name: train, tenant: acme, replicas: 2, gpu: { model: H200-141GB, count: 8 }, ... }",
        fix: "lower `replicas` or `gpu.count`, remove a VM, or raise the tenant's quota",
    },
    Rule {
        code: "fabrik::quota::mig-slices",
        summary: "a tenant's MIG instances use more compute slices than its quota allows",
        protects: "a tenant crowding others off shared MIG GPUs; a `3g.71gb` instance counts 3 slices, each replica in full",
        example: "tenants:\n  - name: initech\n    quota: { mig-slices: 4 }\nvms:\n  - { name: nb, tenant: initech, replicas: 2, gpu: { model: H200-141GB, mig: 3g.71gb }, ... }",
        fix: "use smaller profiles, lower `replicas` or `gpu.count`, or raise the tenant's `mig-slices`",
    },
    Rule {
        code: "fabrik::quota::vcpus",
        summary: "a tenant's VMs have more vCPUs than its quota allows",
        protects: "a tenant taking CPU capacity sold to others; every replica counts, stopped VMs too",
        example: "tenants:\n  - name: acme\n    quota: { vcpus: 64 }\nvms:\n  - { name: web, tenant: acme, replicas: 5, vcpus: 16, memory: 16GiB }",
        fix: "lower `vcpus` or `replicas`, remove a VM, or raise the tenant's quota",
    },
    Rule {
        code: "fabrik::quota::memory",
        summary: "a tenant's VMs have more memory than its quota allows",
        protects: "a tenant taking memory sold to others; every replica counts, stopped VMs too",
        example: "tenants:\n  - name: acme\n    quota: { memory: 256GiB }\nvms:\n  - { name: db, tenant: acme, replicas: 3, vcpus: 8, memory: 128GiB }",
        fix: "lower `memory` or `replicas`, remove a VM, or raise the tenant's quota",
    },
    Rule {
        code: "fabrik::quota::vms",
        summary: "a tenant has more VMs than its quota allows (replicas counted)",
        protects: "VM sprawl past what the tenant has agreed to; each replica is a VM",
        example: "tenants:\n  - name: acme\n    quota: { vms: 4 }\nvms:\n  - { name: web, tenant: acme, replicas: 6, vcpus: 2, memory: 4GiB }",
        fix: "lower `replicas`, remove a VM, or raise the tenant's `vms` quota",
    },
];

/// A tenant's running sums, one per limit it has.
#[derive(Default)]
struct Usage {
    gpus: HashMap<GpuModel, Tally>,
    mig_slices: Tally,
    vcpus: Tally,
    memory: Tally,
    vms: Tally,
    /// What each VM entry added, by VM index, for the labels.
    added: HashMap<usize, Added>,
}

/// One VM entry's part of the sums: one instance's amount, and the instances.
#[derive(Clone, Copy, Default)]
struct Added {
    count: u32,
    gpus: f64,
    mig_slices: f64,
    vcpus: f64,
    memory: f64,
}

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    let mut tenants: HashMap<&str, (&Tenant, &Quota)> = HashMap::new();
    for t in &spec.tenants {
        if let Some(q) = &t.quota {
            tenants.entry(t.name.value.as_str()).or_insert((t, q));
        }
    }
    if tenants.is_empty() {
        return;
    }
    let vms: Vec<Effective<'_>> = spec.effective_vms().collect();
    let mut usage: HashMap<&str, Usage> = HashMap::new();
    for (i, e) in vms.iter().enumerate() {
        let Some(&(_, quota)) = tenants.get(e.vm.tenant.value.as_str()) else { continue };
        let count = e.count();
        if count == 0 {
            continue;
        }
        let u = usage.entry(e.vm.tenant.value.as_str()).or_default();
        let n = f64::from(count);
        let mut added =
            Added { count, vcpus: f64::from(e.vcpu_count()), memory: e.memory_bytes() as f64, ..Added::default() };
        if let Some(req) = e.gpu() {
            match &req.mig {
                Some(name) => {
                    if let Some(p) = mig::profile(req.model.value, &name.value) {
                        added.mig_slices = f64::from(p.compute_slices) * f64::from(req.count.value);
                        u.mig_slices.add(added.mig_slices * n, limit(&quota.mig_slices), i);
                    }
                }
                None if !req.time_sliced => {
                    added.gpus = f64::from(req.count.value);
                    let model = req.model.value;
                    let cap = quota
                        .gpus
                        .iter()
                        .find(|(m, _)| m.value == model)
                        .map_or(f64::INFINITY, |(_, c)| f64::from(c.value));
                    u.gpus.entry(model).or_default().add(added.gpus * n, cap, i);
                }
                None => {}
            }
        }
        u.vcpus.add(added.vcpus * n, limit(&quota.vcpus), i);
        u.memory.add(added.memory * n, quota.memory.as_ref().map_or(f64::INFINITY, |m| m.value.bytes() as f64), i);
        u.vms.add(n, limit(&quota.vms), i);
        u.added.insert(i, added);
    }
    let mut names: Vec<&str> = usage.keys().copied().collect();
    names.sort_unstable();
    for name in names {
        let (tenant, quota) = tenants[name];
        report(tenant, quota, &usage[name], &vms, out);
    }
}

fn limit(q: &Option<crate::spec::source::Spanned<u32>>) -> f64 {
    q.as_ref().map_or(f64::INFINITY, |v| f64::from(v.value))
}

/// How much a VM entry adds, as its label says it: `4 × 16 vCPUs (4 replicas)` or `16 vCPUs`.
fn times(count: u32, one: String) -> String {
    if count == 1 { one } else { format!("{count} × {one} ({count} replicas)") }
}

/// `1 slice`, `3 slices`.
fn counted(n: f64, unit: &str) -> String {
    let s = if (n - 1.0).abs() < 1e-9 { "" } else { "s" };
    format!("{} {unit}{s}", amount(n))
}

fn report(tenant: &Tenant, quota: &Quota, u: &Usage, vms: &[Effective<'_>], out: &mut Vec<Diagnostic>) {
    let t = &tenant.name.value;
    let mut over = |code: &'static str,
                    tally: &Tally,
                    what: String,
                    limit: (Span, String),
                    adds: &dyn Fn(&Added) -> String,
                    help: String| {
        let Some(i) = tally.crossing else { return };
        let e = &vms[i];
        let added = u.added.get(&i).copied().unwrap_or_default();
        out.push(
            Diagnostic::error(code, format!("tenant `{t}` {what}; its quota allows {}", limit.1))
                .at(
                    e.vm.name.span,
                    format!("VM `{}` adds {}, taking `{t}` over its quota", e.vm.name.value, adds(&added)),
                )
                .also(limit.0, format!("quota: {}", limit.1))
                .help(help),
        );
    };
    let mut gpus: Vec<(&GpuModel, &Tally)> = u.gpus.iter().collect();
    gpus.sort_by_key(|(m, _)| **m);
    for (model, tally) in gpus {
        let Some((_, cap)) = quota.gpus.iter().find(|(m, _)| m.value == *model) else { continue };
        over(
            "fabrik::quota::gpus",
            tally,
            format!("asks for {} whole {model} GPUs", amount(tally.total)),
            (cap.span, cap.value.to_string()),
            &|a| times(a.count, format!("{} {model}", amount(a.gpus))),
            format!(
                "lower `replicas` or `gpu.count`, remove a VM, or raise `{t}`'s `gpus` quota for {model} to {}",
                amount(tally.total)
            ),
        );
    }
    if let Some(cap) = &quota.mig_slices {
        over(
            "fabrik::quota::mig-slices",
            &u.mig_slices,
            format!("uses {} MIG compute slices", amount(u.mig_slices.total)),
            (cap.span, cap.value.to_string()),
            &|a| times(a.count, counted(a.mig_slices, "slice")),
            format!(
                "use smaller MIG profiles (a `1g` is 1 slice, a `3g` is 3), lower `replicas` or `gpu.count`, or raise \
                 `{t}`'s `mig-slices` to {}",
                amount(u.mig_slices.total)
            ),
        );
    }
    if let Some(cap) = &quota.vcpus {
        over(
            "fabrik::quota::vcpus",
            &u.vcpus,
            format!("has {} vCPUs", amount(u.vcpus.total)),
            (cap.span, cap.value.to_string()),
            &|a| times(a.count, counted(a.vcpus, "vCPU")),
            format!(
                "lower `vcpus` or `replicas`, remove a VM, or raise `{t}`'s `vcpus` quota to {}",
                amount(u.vcpus.total)
            ),
        );
    }
    if let Some(cap) = &quota.memory {
        over(
            "fabrik::quota::memory",
            &u.memory,
            format!("has {} of memory", bytes(u.memory.total)),
            (cap.span, cap.value.to_string()),
            &|a| times(a.count, bytes(a.memory)),
            format!(
                "lower `memory` or `replicas`, remove a VM, or raise `{t}`'s `memory` quota to {}",
                bytes(u.memory.total)
            ),
        );
    }
    if let Some(cap) = &quota.vms {
        over(
            "fabrik::quota::vms",
            &u.vms,
            format!("has {} VMs", amount(u.vms.total)),
            (cap.span, cap.value.to_string()),
            &|a| if a.count == 1 { "1 VM".to_string() } else { format!("{} VMs", a.count) },
            format!("lower `replicas`, remove a VM, or raise `{t}`'s `vms` quota to {}", amount(u.vms.total)),
        );
    }
}
