//! `fabrik::capacity::*-gpus`, `*-mig`: enough GPUs and MIG instances for the VMs.
//!
//! Supply is what the hosts declare: whole GPUs in `passthrough` mode per model, and MIG
//! instances per profile in the layouts of GPUs in `mig` mode. Demand is each VM's
//! `gpu` request times its replicas. Three scopes, each reported only when the narrower
//! one is fine, so one shortage gives one diagnostic: the VMs pinned to a host against
//! that host; a tenant's VMs against the tenant's hosts; all VMs against all hosts
//! (tenants whose hosts overlap may each fit alone and not together).

use std::collections::{BTreeMap, HashMap};

use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::hw::GpuModel;
use crate::spec::effective::Effective;
use crate::spec::model::{GpuMode, Spec};
use crate::spec::source::Span;

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::capacity::host-gpus",
        summary: "the VMs pinned to a host ask for more whole GPUs (or MIG instances) than it has",
        protects: "VMs that cannot start because their GPUs are already passed through to others",
        example: "hosts:\n  - name: gpu01\n    gpus:\n      - { address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0, mode: passthrough }\nvms:\n  - { name: train, host: gpu01, tenant: t, vcpus: 8, memory: 64GiB, gpu: { model: H200-141GB, count: 2 } }",
        fix: "move VMs to another host, ask for fewer GPUs, or put more GPUs of the model in `passthrough` mode (or the profile in a MIG layout)",
    },
    Rule {
        code: "fabrik::capacity::tenant-gpus",
        summary: "a tenant's VMs ask for more whole GPUs (or MIG instances) than its hosts have",
        protects: "a tenant promised GPUs that exist only on hosts it may not use",
        example: "tenants:\n  - { name: acme, hosts: [gpu01] }    # 8 H200 on gpu01\nvms:\n  - { name: train, tenant: acme, replicas: 2, template: train-8gpu }   # 16 H200",
        fix: "give the tenant more hosts, or ask for fewer GPUs",
    },
    Rule {
        code: "fabrik::capacity::factory-gpus",
        summary: "all VMs together ask for more whole GPUs (or MIG instances) than the factory has",
        protects: "tenants sharing hosts that each fit alone but not together",
        example: "tenants:\n  - { name: a, hosts: [gpu01] }\n  - { name: b, hosts: [gpu01] }\n# each asks for 6 of gpu01's 8 GPUs",
        fix: "add GPUs, or lower the requests of the tenants sharing those hosts",
    },
];

/// What is counted: whole GPUs of a model, or MIG instances of a profile on a model.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Item {
    Whole(GpuModel),
    Mig(GpuModel, String),
}

impl Item {
    fn describe(&self, n: u64) -> String {
        let s = if n == 1 { "" } else { "s" };
        match self {
            Item::Whole(m) => format!("{n} {m} GPU{s}"),
            Item::Mig(m, p) => format!("{n} {p} MIG instance{s} ({m})"),
        }
    }
}

fn demand(e: &Effective<'_>) -> Option<(Item, u64)> {
    let req = e.gpu()?;
    if req.time_sliced {
        return None; // a time slice holds no GPU of its own
    }
    let item = match &req.mig {
        // A profile the model lacks is reported by the MIG rules; counting it would only echo that.
        Some(p) if crate::hw::mig::profile(req.model.value, &p.value).is_none() => return None,
        Some(p) => Item::Mig(req.model.value, p.value.to_string()),
        None => Item::Whole(req.model.value),
    };
    Some((item, u64::from(e.count()) * u64::from(req.count.value)))
}

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    let mut supply: HashMap<&str, BTreeMap<Item, u64>> = HashMap::new();
    for h in &spec.hosts {
        let s = supply.entry(h.name.value.as_str()).or_default();
        for g in &h.gpus {
            match g.mode.value {
                GpuMode::Passthrough => *s.entry(Item::Whole(g.model.value)).or_default() += 1,
                GpuMode::Mig => {
                    for slot in &g.mig {
                        *s.entry(Item::Mig(g.model.value, slot.profile.value.to_string())).or_default() += 1;
                    }
                }
                GpuMode::TimeSliced | GpuMode::Host => {}
            }
        }
    }
    let vms: Vec<(Effective<'_>, Item, u64)> =
        spec.effective_vms().filter_map(|e| demand(&e).map(|(i, n)| (e, i, n))).filter(|(_, _, n)| *n > 0).collect();
    let mut short = false;

    let mut host_spans: HashMap<&str, Span> = HashMap::new();
    for h in &spec.hosts {
        host_spans.entry(h.name.value.as_str()).or_insert(h.name.span);
    }
    // Per host: the VMs pinned to it.
    let mut by_host: BTreeMap<(&str, &Item), Vec<usize>> = BTreeMap::new();
    for (i, (e, item, _)) in vms.iter().enumerate() {
        if let Some(h) = &e.vm.host {
            by_host.entry((h.value.as_str(), item)).or_default().push(i);
        }
    }
    for ((host, item), idx) in &by_host {
        let Some(s) = supply.get(host) else { continue }; // unknown host: a reference error
        let have = s.get(item).copied().unwrap_or(0);
        if let Some(d) = shortage(&vms, idx, have, item, "fabrik::capacity::host-gpus", &format!("host `{host}`")) {
            let span = host_spans.get(host).copied();
            out.push(match span {
                Some(s) => d.also(s, "this host"),
                None => d,
            });
            short = true;
        }
    }
    if short {
        return;
    }
    // Per tenant: its VMs against its hosts, grouped in one pass over the VMs.
    let mut by_tenant: HashMap<&str, BTreeMap<&Item, Vec<usize>>> = HashMap::new();
    for (i, (e, item, _)) in vms.iter().enumerate() {
        by_tenant.entry(e.vm.tenant.value.as_str()).or_default().entry(item).or_default().push(i);
    }
    for t in &spec.tenants {
        // A tenant declared twice is a name error of its own; its VMs are counted once.
        let Some(by_item) = by_tenant.remove(t.name.value.as_str()) else { continue };
        for (item, idx) in by_item {
            let have: u64 = t.hosts.iter().filter_map(|h| supply.get(h.value.as_str())?.get(item)).sum();
            let what = format!("the hosts of tenant `{}`", t.name.value);
            if let Some(d) = shortage(&vms, &idx, have, item, "fabrik::capacity::tenant-gpus", &what) {
                let d = match (t.hosts.first(), t.hosts.last()) {
                    (Some(a), Some(b)) => d.also(a.span.join(b.span), "the tenant's hosts"),
                    _ => d,
                };
                out.push(d);
                short = true;
            }
        }
    }
    if short {
        return;
    }
    // The whole factory.
    let mut by_item: BTreeMap<&Item, Vec<usize>> = BTreeMap::new();
    for (i, (_, item, _)) in vms.iter().enumerate() {
        by_item.entry(item).or_default().push(i);
    }
    for (item, idx) in by_item {
        let have: u64 = supply.values().filter_map(|s| s.get(item)).sum();
        if let Some(d) = shortage(&vms, &idx, have, item, "fabrik::capacity::factory-gpus", "the factory") {
            out.push(d);
        }
    }
}

/// A diagnostic at the VM whose request crosses `have`, if the requests exceed it.
fn shortage(
    vms: &[(Effective<'_>, Item, u64)],
    idx: &[usize],
    have: u64,
    item: &Item,
    code: &'static str,
    scope: &str,
) -> Option<Diagnostic> {
    let total: u64 = idx.iter().map(|&i| vms[i].2).sum();
    if total <= have {
        return None;
    }
    let mut running = 0;
    let crossing = idx.iter().copied().find(|&i| {
        running += vms[i].2;
        running > have
    })?;
    let (e, _, n) = &vms[crossing];
    let span = e.gpu().map_or(e.vm.name.span, |g| g.span);
    let others = idx.len() - 1;
    let label = if others > 0 {
        let entries = if others == 1 { "entry" } else { "entries" };
        format!("asks for {}, more than the {others} other VM {entries} leave", item.describe(*n))
    } else {
        format!("asks for {}", item.describe(*n))
    };
    let verb = if scope.starts_with("the hosts") { "have" } else { "has" };
    Some(
        Diagnostic::error(
            code,
            format!(
                "{} in {scope}, which {verb} {}",
                if others > 0 {
                    format!("{} VM entries need {}", others + 1, item.describe(total))
                } else {
                    format!("{} needs {}", super::capacity::vm_name(e), item.describe(total))
                },
                item.describe(have)
            ),
        )
        .at(span, label)
        .help(match item {
            Item::Whole(m) => {
                format!("ask for fewer {m} GPUs, move VMs, or put more {m} GPUs in `passthrough` mode there")
            }
            Item::Mig(_, p) => format!("ask for fewer {p} instances, move VMs, or add {p} to a MIG layout there"),
        }),
    )
}
