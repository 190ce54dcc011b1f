//! `fabrik::capacity::*`: what the hosts declare is enough for the VMs.
//!
//! Per host, the VMs pinned to it (`host`, replicas counted) must fit its CPUs less the
//! reserved ones, its memory outside the hugepage pools, and its pools. Across the
//! factory, the VMs without a host must fit what the pinned VMs leave free. That is a
//! necessary condition, not a placement: fragmentation may still leave a VM without a
//! home, which placement reports. GPUs and MIG instances are counted in `supply.rs`.
//!
//! Shared vCPUs count as `vcpus / overcommit.cpu` host CPUs and memory outside
//! hugepages as `memory / overcommit.memory`; dedicated vCPUs and hugepage-backed
//! memory are never overcommitted (see [`Effective::cpu_overcommit`]). Stopped VMs count:
//! starting one must not fail for want of room, as in Nova, where a stopped instance
//! keeps its allocation.

use std::collections::HashMap;

use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::spec::effective::Effective;
use crate::spec::model::{Host, Spec};
use crate::spec::types::{ByteSize, CpuSet, PageSize};

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::capacity::host-cpus",
        summary: "the VMs pinned to a host need more CPUs than it has outside `reserved-cpus`",
        protects: "VMs that libvirt defines but cannot start, or shared vCPUs overcommitted past what the template allows, starving every VM on the host",
        example: "hosts:\n  - name: fe01\n    numa-nodes: [{ id: 0, cpus: 0-15, memory: 64GiB }]\n    reserved-cpus: 0-1      # 14 CPUs for VMs\nvms:\n  - { name: a, host: fe01, vcpus: 8, memory: 8GiB, tenant: t }\n  - { name: b, host: fe01, vcpus: 8, memory: 8GiB, tenant: t }",
        fix: "move a VM to another host or lower its vCPUs; for shared vCPUs, a template may allow overcommit (`overcommit: { cpu: 4.0 }`)",
    },
    Rule {
        code: "fabrik::capacity::host-memory",
        summary: "the VMs pinned to a host need more memory than it has outside its hugepage pools",
        protects: "the host's OOM killer ending a VM: memory in hugepage pools is not available to VMs without hugepages",
        example: "hosts:\n  - name: gpu01\n    numa-nodes: [{ id: 0, cpus: 0-63, memory: 512GiB, hugepages: { 1G: 448 } }]   # 64GiB left\nvms:\n  - { name: big, host: gpu01, vcpus: 8, memory: 128GiB, tenant: t }",
        fix: "move a VM, lower its memory, back it with hugepages, shrink the pools, or allow memory overcommit in its template",
    },
    Rule {
        code: "fabrik::capacity::host-hugepages",
        summary: "the VMs pinned to a host need more hugepages of a size than its NUMA nodes' pools hold",
        protects: "VMs with `hugepages` that fail to start: libvirt cannot back their memory",
        example: "hosts:\n  - name: gpu01\n    numa-nodes: [{ id: 0, cpus: 0-63, memory: 1TiB, hugepages: { 1G: 256 } }]\nvms:\n  - { name: train, host: gpu01, vcpus: 32, memory: 512GiB, hugepages: 1G, tenant: t }",
        fix: "grow the hosts' `hugepages` pools of that size, move a VM, or lower its memory",
    },
    Rule {
        code: "fabrik::capacity::factory-cpus",
        summary: "the VMs without a host need more CPUs than the hosts have left",
        protects: "VMs that no host can take: the factory as a whole is too small",
        example: "# two hosts of 16 CPUs, 2 reserved on each\nvms:\n  - { name: web, replicas: 4, vcpus: 8, memory: 8GiB, tenant: t }",
        fix: "add hosts, lower `replicas` or `vcpus`, or allow CPU overcommit in the template",
    },
    Rule {
        code: "fabrik::capacity::factory-memory",
        summary: "the VMs without a host need more memory than the hosts have left",
        protects: "VMs that no host can take: the factory as a whole is too small",
        example: "# one host of 64GiB\nvms:\n  - { name: db, replicas: 2, vcpus: 4, memory: 48GiB, tenant: t }",
        fix: "add hosts or memory, lower `replicas` or `memory`, or allow memory overcommit in the template",
    },
    Rule {
        code: "fabrik::capacity::factory-hugepages",
        summary: "the VMs without a host need more hugepages of a size than the hosts' pools have left",
        protects: "hugepage-backed VMs that no host can start",
        example: "# one pool of 256 1G pages in the factory\nvms:\n  - { name: vllm, replicas: 3, vcpus: 16, memory: 128GiB, hugepages: 1G, tenant: t }",
        fix: "grow the hosts' `hugepages` pools of that size, or lower `replicas` or `memory`",
    },
];

/// A running sum against a limit that remembers the entry whose addition first took it
/// over. Amounts are `f64` because overcommit makes them fractions; integers stay exact
/// below 2^53 (8 PiB of memory).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Tally {
    pub total: f64,
    pub crossing: Option<usize>,
}

impl Tally {
    pub fn add(&mut self, amount: f64, limit: f64, who: usize) {
        self.total += amount;
        if self.crossing.is_none() && exceeds(self.total, limit) {
            self.crossing = Some(who);
        }
    }
}

/// `total > limit`, forgiving the rounding of sums of fractions: three VMs of 4 shared
/// vCPUs at 3:1 fit in 4 CPUs, although 4/3 + 4/3 + 4/3 is not exactly 4 in binary.
pub(super) fn exceeds(total: f64, limit: f64) -> bool {
    total > limit + limit.abs().max(1.0) * 1e-9
}

/// A count as people write it: `52`, or `52.5` when overcommit made it a fraction.
pub(super) fn amount(x: f64) -> String {
    if (x - x.round()).abs() < 1e-6 {
        format!("{}", x.round() as u64)
    } else {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Bytes as people write them: `1536GiB`, or `21.3GiB` when overcommit made a fraction.
pub(super) fn bytes(x: f64) -> String {
    if (x - x.round()).abs() < 1e-6 {
        return ByteSize(x.round() as u64).to_string();
    }
    let gib = x / ByteSize::GIB as f64;
    if gib >= 1.0 { format!("{gib:.1}GiB") } else { format!("{:.1}MiB", x / ByteSize::MIB as f64) }
}

/// Index of a page size in per-size arrays.
pub(super) fn page_index(p: PageSize) -> usize {
    match p {
        PageSize::Size2M => 0,
        PageSize::Size1G => 1,
    }
}

pub(super) const PAGE_SIZES: [PageSize; 2] = [PageSize::Size2M, PageSize::Size1G];

/// Hugepages of size `page` that back `memory` bytes: libvirt rounds up to whole pages.
pub(super) fn pages_for(memory: u64, page: PageSize) -> u64 {
    memory.div_ceil(page.size().bytes())
}

/// What one VM entry (all its replicas) takes from its host.
#[derive(Clone, Debug, Default, PartialEq)]
struct Demand {
    /// Host CPUs: dedicated vCPUs, plus shared vCPUs divided by their overcommit ratio.
    pub cpus: f64,
    /// Of the vCPUs: the dedicated ones, and the shared ones before overcommit.
    pub dedicated: f64,
    pub shared: f64,
    /// Memory outside hugepages, divided by its overcommit ratio.
    pub memory: f64,
    /// Hugepage-backed memory in bytes (whole pages), per page size.
    pub hugepages: [f64; 2],
}

impl Demand {
    fn of(e: &Effective<'_>) -> Demand {
        let count = f64::from(e.count());
        let vcpus = f64::from(e.vcpu_count()) * count;
        let mut d = Demand { cpus: vcpus / e.cpu_overcommit(), ..Demand::default() };
        if e.dedicated() {
            d.dedicated = vcpus;
        } else {
            d.shared = vcpus;
        }
        match e.hugepages() {
            Some(page) => {
                let pages = pages_for(e.memory_bytes(), page.value);
                d.hugepages[page_index(page.value)] = pages as f64 * page.value.size().bytes() as f64 * count;
            }
            None => d.memory = e.memory_bytes() as f64 * count / e.memory_overcommit(),
        }
        d
    }
}

/// What a host offers VMs.
#[derive(Debug)]
struct Supply<'a> {
    host: &'a Host,
    /// Total CPUs and reserved CPUs among them.
    cpus_all: u64,
    cpus_reserved: u64,
    memory_all: u64,
    pools: [f64; 2],
}

impl<'a> Supply<'a> {
    fn of(host: &'a Host) -> Supply<'a> {
        let all = CpuSet::from_cpus(host.numa_nodes.iter().flat_map(|n| n.cpus.value.cpus().iter().copied()).collect());
        let cpus_reserved =
            host.reserved_cpus.as_ref().map_or(0, |r| r.value.cpus().iter().filter(|c| all.contains(**c)).count());
        let mut pools = [0.0; 2];
        for node in &host.numa_nodes {
            for (page, n) in &node.hugepages {
                pools[page_index(page.value)] += n.value as f64 * page.value.size().bytes() as f64;
            }
        }
        Supply {
            host,
            cpus_all: all.len() as u64,
            cpus_reserved: cpus_reserved as u64,
            memory_all: host.numa_nodes.iter().map(|n| n.memory.value.bytes()).sum(),
            pools,
        }
    }

    fn cpus(&self) -> f64 {
        self.cpus_all.saturating_sub(self.cpus_reserved) as f64
    }

    fn pooled(&self) -> f64 {
        self.pools.iter().sum()
    }

    fn memory(&self) -> f64 {
        (self.memory_all as f64 - self.pooled()).max(0.0)
    }
}

/// Sums against the limits of one host, or of the factory.
#[derive(Debug, Default)]
struct Sums {
    cpus: Tally,
    dedicated: f64,
    shared: f64,
    memory: Tally,
    hugepages: [Tally; 2],
}

/// Limits the sums are held to: a host's supply, or what the hosts leave free.
#[derive(Debug, Default)]
struct Limits {
    cpus: f64,
    memory: f64,
    hugepages: [f64; 2],
}

impl Limits {
    fn of(s: &Supply<'_>) -> Limits {
        Limits { cpus: s.cpus(), memory: s.memory(), hugepages: s.pools }
    }
}

impl Sums {
    fn add(&mut self, d: &Demand, limits: &Limits, who: usize) {
        self.cpus.add(d.cpus, limits.cpus, who);
        self.dedicated += d.dedicated;
        self.shared += d.shared;
        self.memory.add(d.memory, limits.memory, who);
        for i in 0..2 {
            self.hugepages[i].add(d.hugepages[i], limits.hugepages[i], who);
        }
    }
}

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    let mut hosts: HashMap<&str, usize> = HashMap::new();
    let supplies: Vec<Supply<'_>> = spec.hosts.iter().map(Supply::of).collect();
    for (i, h) in spec.hosts.iter().enumerate() {
        hosts.entry(h.name.value.as_str()).or_insert(i);
    }
    let limits: Vec<Limits> = supplies.iter().map(Limits::of).collect();
    let mut sums: Vec<Sums> = supplies.iter().map(|_| Sums::default()).collect();
    let vms: Vec<(Effective<'_>, Demand)> = spec.effective_vms().map(|e| (e, Demand::of(&e))).collect();
    let mut unpinned = Vec::new();
    for (i, (e, d)) in vms.iter().enumerate() {
        if e.count() == 0 {
            continue;
        }
        match &e.vm.host {
            Some(h) => {
                if let Some(&hi) = hosts.get(h.value.as_str()) {
                    sums[hi].add(d, &limits[hi], i);
                } // an unknown host is a reference error
            }
            None => unpinned.push(i),
        }
    }
    for (hi, s) in sums.iter().enumerate() {
        host_diagnostics(&supplies[hi], &limits[hi], s, &vms, out);
    }
    if unpinned.is_empty() {
        return;
    }
    // What the pinned VMs leave free, host by host; an overfull host leaves nothing
    // (and is reported above), so it is not counted twice.
    let mut free = Limits::default();
    let mut total = Limits::default();
    for (hi, s) in sums.iter().enumerate() {
        let l = &limits[hi];
        let left = |limit: f64, t: &Tally| (limit - t.total).max(0.0);
        free.cpus += left(l.cpus, &s.cpus);
        free.memory += left(l.memory, &s.memory);
        total.cpus += l.cpus;
        total.memory += l.memory;
        for i in 0..2 {
            free.hugepages[i] += left(l.hugepages[i], &s.hugepages[i]);
            total.hugepages[i] += l.hugepages[i];
        }
    }
    let mut factory = Sums::default();
    for &i in &unpinned {
        factory.add(&vms[i].1, &free, i);
    }
    factory_diagnostics(&free, &total, &factory, &vms, out);
}

fn host_diagnostics(
    supply: &Supply<'_>,
    limits: &Limits,
    sums: &Sums,
    vms: &[(Effective<'_>, Demand)],
    out: &mut Vec<Diagnostic>,
) {
    let host = supply.host;
    let name = &host.name.value;
    let at_vm = |i: usize| vms[i].0.vm.name.span;
    if let Some(i) = sums.cpus.crossing {
        let reserved = match supply.cpus_reserved {
            0 => String::new(),
            r => format!(" ({}, less {r} reserved)", supply.cpus_all),
        };
        out.push(
            Diagnostic::error(
                "fabrik::capacity::host-cpus",
                format!(
                    "the VMs on host `{name}` need {} CPUs{}; it has {} for VMs{reserved}",
                    amount(sums.cpus.total),
                    cpu_detail(sums),
                    amount(limits.cpus),
                ),
            )
            .at(at_vm(i), format!("{} takes `{name}` past its CPUs", vm_name(&vms[i].0)))
            .also(host.name.span, format!("{} CPUs for VMs", amount(limits.cpus)))
            .help(cpu_help(sums, "move a VM to another host")),
        );
    }
    if let Some(i) = sums.memory.crossing {
        let pools = match supply.pooled() {
            p if p > 0.0 => format!(" ({}, less {} in hugepage pools)", bytes(supply.memory_all as f64), bytes(p)),
            _ => String::new(),
        };
        out.push(
            Diagnostic::error(
                "fabrik::capacity::host-memory",
                format!(
                    "the VMs on host `{name}` need {} of memory outside hugepages; it has {}{pools}",
                    bytes(sums.memory.total),
                    bytes(limits.memory),
                ),
            )
            .at(at_vm(i), format!("{} takes `{name}` past its memory", vm_name(&vms[i].0)))
            .also(host.name.span, format!("{} for VMs without hugepages", bytes(limits.memory)))
            .help(
                "move a VM to another host, lower its `memory`, back it with hugepages, shrink the host's \
                 hugepage pools, or allow memory overcommit in the template",
            ),
        );
    }
    for page in PAGE_SIZES {
        let t = &sums.hugepages[page_index(page)];
        let Some(i) = t.crossing else { continue };
        let size = page.size().bytes() as f64;
        out.push(
            Diagnostic::error(
                "fabrik::capacity::host-hugepages",
                format!(
                    "the VMs on host `{name}` need {} {page} hugepages ({}); its NUMA nodes' pools hold {}",
                    amount(t.total / size),
                    bytes(t.total),
                    amount(limits.hugepages[page_index(page)] / size),
                ),
            )
            .at(at_vm(i), format!("{} takes `{name}` past its {page} pages", vm_name(&vms[i].0)))
            .also(host.name.span, format!("{} pages of {page}", amount(limits.hugepages[page_index(page)] / size)))
            .help(format!(
                "grow the `hugepages` pools of `{name}`'s NUMA nodes (`{page}: …`), move a VM to another host, or lower its `memory`"
            )),
        );
    }
}

fn factory_diagnostics(
    free: &Limits,
    total: &Limits,
    sums: &Sums,
    vms: &[(Effective<'_>, Demand)],
    out: &mut Vec<Diagnostic>,
) {
    let at_vm = |i: usize| vms[i].0.vm.name.span;
    let left = |free: f64, total: f64, unit: &dyn Fn(f64) -> String| {
        if (free - total).abs() < 1e-6 {
            format!("the hosts have {} in all", unit(total))
        } else {
            format!("the hosts have {} left after the VMs pinned to them ({} in all)", unit(free), unit(total))
        }
    };
    if let Some(i) = sums.cpus.crossing {
        let e = &vms[i].0;
        let mut d = Diagnostic::error(
            "fabrik::capacity::factory-cpus",
            format!(
                "the VMs without a host need {} CPUs{}; {}",
                amount(sums.cpus.total),
                cpu_detail(sums),
                left(free.cpus, total.cpus, &|x| format!("{} CPUs", amount(x)))
            ),
        )
        .at(at_vm(i), format!("{} takes the factory past its CPUs", vm_name(e)));
        if let Some(v) = e.vcpus() {
            d = d.also(v.span, format!("{} vCPUs per VM", v.value));
        }
        out.push(d.help(cpu_help(sums, "add hosts")));
    }
    if let Some(i) = sums.memory.crossing {
        let e = &vms[i].0;
        let mut d = Diagnostic::error(
            "fabrik::capacity::factory-memory",
            format!(
                "the VMs without a host need {} of memory outside hugepages; {}",
                bytes(sums.memory.total),
                left(free.memory, total.memory, &|x| bytes(x))
            ),
        )
        .at(at_vm(i), format!("{} takes the factory past its memory", vm_name(e)));
        if let Some(m) = e.memory() {
            d = d.also(m.span, format!("{} per VM", m.value));
        }
        out.push(
            d.help("add hosts or memory, lower `replicas` or `memory`, or allow memory overcommit in the template"),
        );
    }
    for page in PAGE_SIZES {
        let t = &sums.hugepages[page_index(page)];
        let Some(i) = t.crossing else { continue };
        let e = &vms[i].0;
        let size = page.size().bytes() as f64;
        let pages = |x: f64| format!("{} pages", amount(x / size));
        let mut d = Diagnostic::error(
            "fabrik::capacity::factory-hugepages",
            format!(
                "the VMs without a host need {} {page} hugepages ({}); {}",
                amount(t.total / size),
                bytes(t.total),
                left(free.hugepages[page_index(page)], total.hugepages[page_index(page)], &pages)
            ),
        )
        .at(at_vm(i), format!("{} takes the factory past its {page} pages", vm_name(e)));
        if let Some(h) = e.hugepages() {
            d = d.also(h.span, format!("backed by {page} pages"));
        }
        out.push(d.help(format!("grow the hosts' `hugepages` pools of {page} pages, or lower `replicas` or `memory`")));
    }
}

/// What the CPUs are for, when that is not plain: ` (16 dedicated vCPUs, never
/// overcommitted)`, or ` (4 dedicated vCPUs; 6 for 24 shared vCPUs, overcommitted)`.
fn cpu_detail(sums: &Sums) -> String {
    let for_shared = sums.cpus.total - sums.dedicated;
    let overcommitted = (for_shared - sums.shared).abs() > 1e-6;
    match (sums.dedicated > 0.0, sums.shared > 0.0) {
        (true, false) => format!(" ({} dedicated vCPUs, never overcommitted)", amount(sums.dedicated)),
        (true, true) if overcommitted => format!(
            " ({} dedicated vCPUs; {} for {} shared vCPUs, overcommitted)",
            amount(sums.dedicated),
            amount(for_shared),
            amount(sums.shared)
        ),
        (true, true) => format!(" ({} dedicated and {} shared vCPUs)", amount(sums.dedicated), amount(sums.shared)),
        (false, true) if overcommitted => {
            format!(" for {} shared vCPUs, overcommitted", amount(sums.shared))
        }
        (false, _) => String::new(),
    }
}

/// How to make the CPUs fit, given what they are for.
fn cpu_help(sums: &Sums, first: &str) -> String {
    let for_shared = sums.cpus.total - sums.dedicated;
    let overcommitted = (for_shared - sums.shared).abs() > 1e-6;
    if sums.shared == 0.0 {
        format!(
            "{first}, or lower `replicas` or `vcpus`; dedicated vCPUs are never overcommitted, so only `cpu-policy: shared` \
             (where the workload allows it) would let them share CPUs"
        )
    } else if overcommitted {
        format!("{first}, lower `replicas` or `vcpus`, or raise `overcommit.cpu` in the template of the shared VMs")
    } else {
        format!(
            "{first}, lower `vcpus`, or allow overcommit for shared vCPUs in their template (`overcommit: {{ cpu: 2.0 }}`)"
        )
    }
}

/// A VM entry as a diagnostic names it: `VM `web`` or `VM `web` (3 replicas)`.
pub(super) fn vm_name(e: &Effective<'_>) -> String {
    match &e.vm.replicas {
        Some(r) => format!("VM `{}` ({} replicas)", e.vm.name.value, r.value),
        None => format!("VM `{}`", e.vm.name.value),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::spec::source::{FileId, Syntax};

    /// A spec from YAML that decodes cleanly.
    pub(in crate::check) fn spec(yaml: &str) -> Spec {
        let (_, spec, diags) =
            crate::spec::load::parse_file(FileId(0), "t.yaml".into(), Syntax::Yaml, yaml.as_bytes().to_vec());
        assert!(diags.is_empty(), "{diags:?}");
        spec
    }

    #[test]
    fn overcommit_applies_to_shared_vcpus_and_plain_memory_only() {
        let s = spec(
            "version: 1
templates:
  - { name: t, vcpus: 8, memory: 30GiB, overcommit: { cpu: 4.0, memory: 1.5 } }
vms:
  - { name: shared, tenant: a, template: t, replicas: 2 }
  - { name: pinned, tenant: a, template: t, cpu-policy: dedicated }
  - { name: huge, tenant: a, template: t, hugepages: 1G, memory: 1536MiB }
  - { name: none, tenant: a, template: t, replicas: 0 }
",
        );
        let d: Vec<Demand> = s.effective_vms().map(|e| Demand::of(&e)).collect();
        let gib = ByteSize::GIB as f64;
        // 2 replicas × 8 vCPUs at 4:1; 2 × 30GiB at 1.5:1.
        assert_eq!((d[0].cpus, d[0].shared, d[0].dedicated), (4.0, 16.0, 0.0));
        assert_eq!(d[0].memory, 40.0 * gib);
        // Dedicated vCPUs are never overcommitted, whatever the template allows.
        assert_eq!((d[1].cpus, d[1].dedicated), (8.0, 8.0));
        // Hugepage-backed memory is never overcommitted, and takes whole pages.
        assert_eq!((d[2].memory, d[2].hugepages), (0.0, [0.0, 2.0 * gib]));
        assert_eq!(d[3], Demand::default());
    }

    #[test]
    fn cpu_detail_says_what_the_cpus_are_for() {
        let sums = |dedicated: f64, shared: f64, cpus: f64| Sums {
            cpus: Tally { total: cpus, crossing: None },
            dedicated,
            shared,
            ..Sums::default()
        };
        assert_eq!(cpu_detail(&sums(0.0, 16.0, 16.0)), "");
        assert_eq!(cpu_detail(&sums(16.0, 0.0, 16.0)), " (16 dedicated vCPUs, never overcommitted)");
        assert_eq!(cpu_detail(&sums(0.0, 16.0, 16.0 / 3.0)), " for 16 shared vCPUs, overcommitted");
        assert_eq!(cpu_detail(&sums(4.0, 24.0, 10.0)), " (4 dedicated vCPUs; 6 for 24 shared vCPUs, overcommitted)");
    }

    #[test]
    fn unpinned_vms_fit_what_pinned_ones_leave() {
        // fe01 is overfull with pinned VMs (reported there); it leaves nothing, and
        // fe02's 14 CPUs are all the factory has for `web`.
        let s = spec(
            "version: 1
hosts:
  - { name: fe01, uri: qemu:///system, numa-nodes: [{ id: 0, cpus: 0-15, memory: 64GiB }], reserved-cpus: 0-1 }
  - { name: fe02, uri: qemu:///system, numa-nodes: [{ id: 0, cpus: 0-15, memory: 64GiB }], reserved-cpus: 0-1 }
vms:
  - { name: big, tenant: a, host: fe01, vcpus: 20, memory: 8GiB }
  - { name: web, tenant: a, replicas: 2, vcpus: 7, memory: 8GiB }
  - { name: one-more, tenant: a, vcpus: 1, memory: 8GiB }
",
        );
        let mut out = Vec::new();
        check(&s, &mut out);
        let codes: Vec<&str> = out.iter().map(|d| d.code).collect();
        assert_eq!(codes, ["fabrik::capacity::host-cpus", "fabrik::capacity::factory-cpus"]);
        assert!(out[1].message.contains("need 15 CPUs; the hosts have 14 CPUs left"), "{}", out[1].message);
        assert!(out[1].primary.as_ref().unwrap().text.contains("`one-more`"));
    }

    #[test]
    fn sums_of_fractions_fit_exactly() {
        // Three VMs of 4 shared vCPUs at 3:1 need exactly 4 CPUs.
        let mut t = Tally::default();
        for who in 0..3 {
            t.add(4.0 / 3.0, 4.0, who);
        }
        assert_eq!(t.crossing, None, "{}", t.total);
        t.add(0.01, 4.0, 3);
        assert_eq!(t.crossing, Some(3));
    }

    #[test]
    fn the_first_entry_over_the_limit_is_remembered() {
        let mut t = Tally::default();
        for (who, n) in [4.0, 4.0, 4.0, 4.0].into_iter().enumerate() {
            t.add(n, 10.0, who);
        }
        assert_eq!(t.crossing, Some(2));
        assert_eq!(t.total, 16.0);
    }

    #[test]
    fn amounts_print_plainly() {
        assert_eq!(amount(52.0), "52");
        assert_eq!(amount(52.5), "52.5");
        assert_eq!(amount(4.0 / 3.0 * 3.0), "4");
        assert_eq!(amount(1.0 / 3.0), "0.33");
        assert_eq!(bytes((1536u64 << 30) as f64), "1536GiB");
        assert_eq!(bytes(64.0 * ByteSize::GIB as f64 / 1.5), "42.7GiB");
    }

    #[test]
    fn hugepages_round_up_to_whole_pages() {
        assert_eq!(pages_for(ByteSize::GIB + 1, PageSize::Size1G), 2);
        assert_eq!(pages_for(3 * ByteSize::GIB, PageSize::Size2M), 1536);
    }
}
