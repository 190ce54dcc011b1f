//! Whether one VM fits one host, and where on it: the NUMA node, the CPUs its vCPUs
//! are pinned to, its hugepages, its whole GPUs, MIG instances and time slices.
//!
//! [`try_host`] only looks; [`commit`] takes what it found. A miss is a [`Misfit`] per
//! NUMA node tried, so that `fabrik::place::no-host` can say why each host failed.

use std::fmt;

use super::host::{GpuState, HostState};
use crate::hw::GpuModel;
use crate::spec::model::{GpuRequest, NumaPolicy};
use crate::spec::types::{ByteSize, CpuSet, MigProfileName, PageSize, PciAddress};

/// What a VM asks of its host, resolved from its effective workload.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub vcpus: u32,
    pub memory: u64,
    pub hugepages: Option<PageSize>,
    pub dedicated: bool,
    pub cpus: Option<&'a CpuSet>,
    pub policy: NumaPolicy,
    /// Host CPUs it takes, in thousandths.
    pub cpu_milli: u64,
    /// Memory outside hugepages it takes (`memory / overcommit.memory`; 0 with hugepages).
    pub memory_charge: u64,
    pub gpu: Option<&'a GpuRequest>,
    pub pinned_gpus: Vec<PciAddress>,
}

/// Where a VM goes on a host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    pub numa_node: Option<u32>,
    /// Host CPU of each vCPU (dedicated only).
    pub vcpu_pins: Vec<u32>,
    /// Guest cells: host node, the vCPUs in it, memory in bytes.
    pub cells: Vec<(u32, Vec<u32>, u64)>,
    /// Indices into the host's GPUs.
    pub gpus: Vec<usize>,
    /// (GPU index, slot index) of each MIG instance.
    pub mig: Vec<(usize, usize)>,
    pub time_sliced: Vec<usize>,
    /// Pages taken per node.
    pub pages: Vec<(u32, u64)>,
}

/// Why a VM does not fit a host (or one of its NUMA nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misfit {
    CpuLoad {
        free_milli: u64,
        need_milli: u64,
    },
    Cpus {
        node: Option<u32>,
        free: u64,
        need: u64,
    },
    CpuTaken {
        cpu: u32,
    },
    CpuOffNode {
        cpu: u32,
        node: u32,
    },
    Memory {
        node: Option<u32>,
        free: u64,
        need: u64,
    },
    Hugepages {
        node: Option<u32>,
        size: PageSize,
        free: u64,
        need: u64,
    },
    Gpus {
        model: GpuModel,
        node: Option<u32>,
        free: usize,
        need: u32,
    },
    Mig {
        profile: MigProfileName,
        node: Option<u32>,
        free: usize,
        need: u32,
    },
    TimeSlices {
        model: GpuModel,
        node: Option<u32>,
        free: usize,
        need: u32,
    },
    GpuTaken {
        address: PciAddress,
    },
    GpuMissing {
        address: PciAddress,
    },
    GpuOffNode {
        address: PciAddress,
        node: u32,
    },
    /// A network or pool the VM uses is not on the host (its `hosts` leave it out).
    NotOnHost {
        what: &'static str,
        name: String,
    },
    /// A network the VM uses is built on a NIC the host does not declare.
    NoParent {
        network: String,
        parent: String,
    },
}

fn on(node: &Option<u32>) -> String {
    node.map_or(String::new(), |n| format!(" on NUMA node {n}"))
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misfit::CpuLoad { free_milli, need_milli } => {
                write!(f, "{} host CPUs free, needs {}", free_milli / 1000, need_milli.div_ceil(1000))
            }
            Misfit::Cpus { node, free, need } => write!(f, "{free} CPUs free to pin{}, needs {need}", on(node)),
            Misfit::CpuTaken { cpu } => write!(f, "CPU {cpu} is reserved or pinned by another VM"),
            Misfit::CpuOffNode { cpu, node } => write!(f, "CPU {cpu} is not on NUMA node {node}"),
            Misfit::Memory { node, free, need } => {
                write!(f, "{} of memory free{}, needs {}", ByteSize(*free), on(node), ByteSize(*need))
            }
            Misfit::Hugepages { node, size, free, need } => {
                write!(f, "{free} free {size} hugepages{}, needs {need}", on(node))
            }
            Misfit::Gpus { model, node, free, need } => {
                write!(f, "{free} free passthrough {model} GPUs{}, needs {need}", on(node))
            }
            Misfit::Mig { profile, node, free, need } => {
                write!(f, "{free} free `{profile}` MIG instances{}, needs {need}", on(node))
            }
            Misfit::TimeSlices { model, node, free, need } => {
                write!(f, "{free} time-sliced {model} GPUs{}, needs {need}", on(node))
            }
            Misfit::GpuTaken { address } => write!(f, "GPU {address} already went to another VM"),
            Misfit::GpuMissing { address } => {
                write!(f, "GPU {address} is not declared in a mode that serves the request")
            }
            Misfit::GpuOffNode { address, node } => write!(f, "GPU {address} is not on NUMA node {node}"),
            Misfit::NotOnHost { what, name } => write!(f, "{what} `{name}` is not on this host"),
            Misfit::NoParent { network, parent } => {
                write!(f, "network `{network}` is built on NIC `{parent}`, which this host does not declare")
            }
        }
    }
}

/// Tries every placement the VM's NUMA policy allows on this host, in a fixed order:
/// for `required`, `preferred` and `socket`, each node in id order (starting with the
/// node of its pinned CPUs or GPUs); then, unless `required`, spread over the host.
pub fn try_host(h: &HostState<'_>, r: &Request<'_>) -> Result<Assignment, Vec<Misfit>> {
    // Cheap host-wide checks first: most misses on a full factory end here.
    let free_milli = h.cpu_capacity_milli.saturating_sub(h.cpu_used_milli);
    if r.cpu_milli > free_milli {
        return Err(vec![Misfit::CpuLoad { free_milli, need_milli: r.cpu_milli }]);
    }
    if r.memory_charge > h.memory_free {
        return Err(vec![Misfit::Memory { node: None, free: h.memory_free, need: r.memory_charge }]);
    }
    let mut misses = Vec::new();
    if r.policy != NumaPolicy::None {
        for node in candidate_nodes(h, r) {
            match try_scope(h, r, Some(node)) {
                Ok(a) => return Ok(a),
                Err(m) => misses.push(m),
            }
        }
        if r.policy == NumaPolicy::Required {
            return Err(misses);
        }
    }
    match try_scope(h, r, None) {
        Ok(a) => Ok(a),
        Err(m) => {
            misses.push(m);
            Err(misses)
        }
    }
}

/// Nodes to try for a one-node placement: the node of the VM's pins first, when it has any.
fn candidate_nodes(h: &HostState<'_>, r: &Request<'_>) -> Vec<u32> {
    let pinned_cpu = r.cpus.and_then(|c| c.cpus().first()).and_then(|&c| h.node_of_cpu(c));
    let pinned_gpu = r
        .pinned_gpus
        .first()
        .and_then(|a| h.gpus.iter().find(|g| g.gpu.address.value == *a))
        .map(|g| g.gpu.numa_node.value);
    match pinned_cpu.or(pinned_gpu) {
        Some(n) => vec![n],
        None => h.nodes.iter().map(|n| n.id).collect(),
    }
}

/// One placement: everything on `node`, or (with `None`) anywhere on the host.
fn try_scope(h: &HostState<'_>, r: &Request<'_>, node: Option<u32>) -> Result<Assignment, Misfit> {
    let mut a = Assignment { numa_node: node, ..Assignment::default() };
    if let Some(req) = r.gpu {
        choose_gpus(h, r, req, node, &mut a)?;
    }
    if r.dedicated {
        a.vcpu_pins = choose_cpus(h, r, node, &a)?;
    }
    a.cells = cells(h, r, node, &a);
    match r.hugepages {
        Some(size) => a.pages = take_pages(h, r, size, node, &a.cells)?,
        None => {
            if let Some(n) = node {
                let free = h.node(n).map_or(0, |s| s.memory_free);
                if r.memory_charge > free {
                    return Err(Misfit::Memory { node, free, need: r.memory_charge });
                }
            }
        }
    }
    Ok(a)
}

fn choose_gpus(
    h: &HostState<'_>,
    r: &Request<'_>,
    req: &GpuRequest,
    node: Option<u32>,
    a: &mut Assignment,
) -> Result<(), Misfit> {
    let model = req.model.value;
    let need = req.count.value;
    let on_node = |i: usize| node.is_none_or(|n| h.gpus[i].gpu.numa_node.value == n);
    // The GPUs to look at: the pinned ones (each must exist and be on the node), else every one.
    let pool: Vec<usize> = if r.pinned_gpus.is_empty() {
        (0..h.gpus.len()).filter(|&i| h.gpus[i].gpu.model.value == model && on_node(i)).collect()
    } else {
        let mut pool = Vec::new();
        for address in &r.pinned_gpus {
            let Some(i) = h.gpus.iter().position(|g| g.gpu.address.value == *address) else {
                return Err(Misfit::GpuMissing { address: *address });
            };
            if let Some(n) = node
                && !on_node(i)
            {
                return Err(Misfit::GpuOffNode { address: *address, node: n });
            }
            pool.push(i);
        }
        pool
    };
    match (&req.mig, req.time_sliced) {
        (Some(profile), _) => {
            let mut free = Vec::new();
            for &i in &pool {
                if let GpuState::Mig { slots } = &h.gpus[i].state {
                    let text = profile.value.to_string();
                    free.extend(
                        slots
                            .iter()
                            .enumerate()
                            .filter(|(_, s)| s.vm.is_none() && s.profile.name == text)
                            .map(|(k, _)| (i, k)),
                    );
                }
            }
            if free.len() < need as usize {
                return Err(Misfit::Mig { profile: profile.value.clone(), node, free: free.len(), need });
            }
            a.mig = free[..need as usize].to_vec();
        }
        (None, true) => {
            let free: Vec<usize> =
                pool.into_iter().filter(|&i| matches!(h.gpus[i].state, GpuState::TimeSliced { .. })).collect();
            if free.len() < need as usize {
                return Err(Misfit::TimeSlices { model, node, free: free.len(), need });
            }
            a.time_sliced = free[..need as usize].to_vec();
        }
        (None, false) => {
            if !r.pinned_gpus.is_empty() {
                for &i in &pool {
                    if !matches!(h.gpus[i].state, GpuState::Passthrough { vm: None }) {
                        let address = h.gpus[i].gpu.address.value;
                        return Err(match h.gpus[i].state {
                            GpuState::Passthrough { .. } => Misfit::GpuTaken { address },
                            _ => Misfit::GpuMissing { address },
                        });
                    }
                }
                a.gpus = pool;
                return Ok(());
            }
            let free: Vec<usize> =
                pool.into_iter().filter(|&i| matches!(h.gpus[i].state, GpuState::Passthrough { vm: None })).collect();
            if free.len() < need as usize {
                return Err(Misfit::Gpus { model, node, free: free.len(), need });
            }
            a.gpus = closest(h, &free, need as usize);
        }
    }
    Ok(())
}

/// `need` of the free GPUs, as close together as they come: all on one NUMA node when
/// one has enough, else all in one NVLink domain, else the first ones.
fn closest(h: &HostState<'_>, free: &[usize], need: usize) -> Vec<usize> {
    let gpu = |i: usize| h.gpus[i].gpu;
    for n in &h.nodes {
        let same: Vec<usize> = free.iter().copied().filter(|&i| gpu(i).numa_node.value == n.id).collect();
        if same.len() >= need {
            return same[..need].to_vec();
        }
    }
    let mut domains: Vec<&str> =
        free.iter().filter_map(|&i| gpu(i).nvlink_domain.as_ref().map(|d| d.value.as_str())).collect();
    domains.sort_unstable();
    domains.dedup();
    for d in domains {
        let mut same: Vec<usize> =
            free.iter().copied().filter(|&i| gpu(i).nvlink_domain.as_ref().is_some_and(|x| x.value == d)).collect();
        if same.len() >= need {
            same.sort_by_key(|&i| (gpu(i).numa_node.value, i));
            return same[..need].to_vec();
        }
    }
    free[..need].to_vec()
}

/// Host CPUs for the vCPUs: the VM's `cpus` when given (vCPU i on the i-th, wrapping),
/// else free CPUs of its node; spread over the host, the nodes of its GPUs come first
/// and share the vCPUs evenly.
fn choose_cpus(h: &HostState<'_>, r: &Request<'_>, node: Option<u32>, a: &Assignment) -> Result<Vec<u32>, Misfit> {
    let need = r.vcpus as usize;
    if let Some(cpus) = r.cpus {
        for &cpu in cpus.cpus() {
            let home = h.node_of_cpu(cpu);
            if let Some(n) = node
                && home != Some(n)
            {
                return Err(Misfit::CpuOffNode { cpu, node: n });
            }
            let free = home.and_then(|n| h.node(n)).is_some_and(|s| s.free_cpus.binary_search(&cpu).is_ok());
            if !free {
                return Err(Misfit::CpuTaken { cpu });
            }
        }
        let list = cpus.cpus();
        return Ok((0..need).map(|i| list[i % list.len()]).collect());
    }
    if let Some(n) = node {
        let free = h.node(n).map_or(&[][..], |s| &s.free_cpus[..]);
        if free.len() < need {
            return Err(Misfit::Cpus { node, free: free.len() as u64, need: need as u64 });
        }
        return Ok(free[..need].to_vec());
    }
    let total: usize = h.nodes.iter().map(|n| n.free_cpus.len()).sum();
    if total < need {
        return Err(Misfit::Cpus { node: None, free: total as u64, need: need as u64 });
    }
    let mut gpu_nodes: Vec<u32> = a
        .gpus
        .iter()
        .chain(a.time_sliced.iter())
        .chain(a.mig.iter().map(|(g, _)| g))
        .map(|&i| h.gpus[i].gpu.numa_node.value)
        .collect();
    gpu_nodes.sort_unstable();
    gpu_nodes.dedup();
    if gpu_nodes.is_empty() {
        gpu_nodes = h.nodes.iter().map(|n| n.id).collect();
    }
    // Even shares on the preferred nodes, then whatever is left anywhere, in node order.
    let share = need.div_ceil(gpu_nodes.len());
    let mut taken: Vec<Vec<u32>> = h.nodes.iter().map(|_| Vec::new()).collect();
    let mut left = need;
    for (k, n) in h.nodes.iter().enumerate() {
        if gpu_nodes.contains(&n.id) {
            let t = share.min(left).min(n.free_cpus.len());
            taken[k].extend_from_slice(&n.free_cpus[..t]);
            left -= t;
        }
    }
    for (k, n) in h.nodes.iter().enumerate() {
        let have = taken[k].len();
        let t = left.min(n.free_cpus.len() - have);
        taken[k].extend_from_slice(&n.free_cpus[have..have + t]);
        left -= t;
    }
    Ok(taken.concat())
}

/// Guest NUMA cells: one on the VM's node; spread, one per host node its pinned vCPUs
/// sit on, memory shared in proportion (in whole pages or MiB); none for a floating VM.
fn cells(h: &HostState<'_>, r: &Request<'_>, node: Option<u32>, a: &Assignment) -> Vec<(u32, Vec<u32>, u64)> {
    if let Some(n) = node {
        return vec![(n, (0..r.vcpus).collect(), r.memory)];
    }
    if a.vcpu_pins.is_empty() {
        return Vec::new();
    }
    let mut by_node: Vec<(u32, Vec<u32>)> = Vec::new();
    for (v, &cpu) in a.vcpu_pins.iter().enumerate() {
        let n = h.node_of_cpu(cpu).unwrap_or(0);
        match by_node.iter_mut().find(|(x, _)| *x == n) {
            Some((_, vs)) => vs.push(v as u32),
            None => by_node.push((n, vec![v as u32])),
        }
    }
    by_node.sort_by_key(|(n, _)| *n);
    let unit = r.hugepages.map_or(ByteSize::MIB, |p| p.size().bytes());
    let mut left = r.memory;
    let count = by_node.len();
    by_node
        .into_iter()
        .enumerate()
        .map(|(k, (n, vs))| {
            let mem = if k + 1 == count {
                left
            } else {
                (r.memory / unit * vs.len() as u64 / u64::from(r.vcpus.max(1))) * unit
            };
            left -= mem;
            (n, vs, mem)
        })
        .collect()
}

fn take_pages(
    h: &HostState<'_>,
    r: &Request<'_>,
    size: PageSize,
    node: Option<u32>,
    cells: &[(u32, Vec<u32>, u64)],
) -> Result<Vec<(u32, u64)>, Misfit> {
    let page = size.size().bytes();
    if !cells.is_empty() {
        let mut out = Vec::new();
        for (n, _, mem) in cells {
            let need = mem.div_ceil(page);
            let free = h.node(*n).map_or(0, |s| s.pages_free(size));
            if free < need {
                return Err(Misfit::Hugepages { node: Some(*n), size, free, need });
            }
            out.push((*n, need));
        }
        return Ok(out);
    }
    let need = r.memory.div_ceil(page);
    let free: u64 = h.nodes.iter().filter(|s| node.is_none_or(|n| s.id == n)).map(|s| s.pages_free(size)).sum();
    if free < need {
        return Err(Misfit::Hugepages { node, size, free, need });
    }
    let mut left = need;
    let mut out = Vec::new();
    for s in &h.nodes {
        let t = left.min(s.pages_free(size));
        if t > 0 {
            out.push((s.id, t));
            left -= t;
        }
    }
    Ok(out)
}

/// Takes what `try_host` found for VM number `vm`.
pub fn commit(h: &mut HostState<'_>, r: &Request<'_>, a: &Assignment, vm: usize) {
    h.cpu_used_milli += r.cpu_milli;
    h.memory_free = h.memory_free.saturating_sub(r.memory_charge);
    if let Some(n) = a.numa_node.and_then(|n| h.node_mut(n)) {
        n.memory_free = n.memory_free.saturating_sub(r.memory_charge);
    }
    for &cpu in &a.vcpu_pins {
        if let Some(n) = h.node_of_cpu(cpu).and_then(|n| h.node_mut(n))
            && let Ok(k) = n.free_cpus.binary_search(&cpu)
        {
            n.free_cpus.remove(k);
        }
    }
    if let Some(size) = r.hugepages {
        for &(n, pages) in &a.pages {
            if let Some(n) = h.node_mut(n) {
                n.take_pages(size, pages);
            }
        }
    }
    for &g in &a.gpus {
        h.gpus[g].state = GpuState::Passthrough { vm: Some(vm) };
    }
    for &(g, k) in &a.mig {
        if let GpuState::Mig { slots } = &mut h.gpus[g].state {
            slots[k].vm = Some(vm);
        }
    }
    for &g in &a.time_sliced {
        if let GpuState::TimeSliced { vms } = &mut h.gpus[g].state {
            vms.push(vm);
        }
    }
}
