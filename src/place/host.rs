//! What a host has left while placement runs: free CPUs, memory and hugepages per NUMA
//! node, and the state of each GPU fabrik owns (whole, MIG instances, time slices).

use crate::hw::mig::{self, MigProfile};
use crate::spec::model::{Gpu, GpuMode, Host};
use crate::spec::types::PageSize;

/// A NUMA node's free resources.
#[derive(Clone, Debug)]
pub struct NodeState {
    pub id: u32,
    /// CPUs a dedicated vCPU may still be pinned to: the node's, less `reserved-cpus` and
    /// the pins made so far. Sorted.
    pub free_cpus: Vec<u32>,
    /// Memory outside the hugepage pools, less what bound VMs took.
    pub memory_free: u64,
    /// Free pages per size.
    pub hugepages_free: Vec<(PageSize, u64)>,
}

impl NodeState {
    pub fn pages_free(&self, size: PageSize) -> u64 {
        self.hugepages_free.iter().find(|(s, _)| *s == size).map_or(0, |(_, n)| *n)
    }

    pub fn take_pages(&mut self, size: PageSize, pages: u64) {
        if let Some((_, n)) = self.hugepages_free.iter_mut().find(|(s, _)| *s == size) {
            *n = n.saturating_sub(pages);
        }
    }
}

/// One MIG instance of a GPU's layout, at the start `hw::mig::fit` chose or the operator pinned.
#[derive(Clone, Debug)]
pub struct MigSlotState {
    pub profile: &'static MigProfile,
    pub start: u8,
    /// Index (into the placement's VM list) of the VM that got it.
    pub vm: Option<usize>,
}

#[derive(Clone, Debug)]
pub enum GpuState {
    /// Passed through whole; the VM that got it.
    Passthrough { vm: Option<usize> },
    /// MIG instances in start order.
    Mig { slots: Vec<MigSlotState> },
    /// Shared in turn; the VMs that share it.
    TimeSliced { vms: Vec<usize> },
    /// Left to the host: never assigned.
    Host,
}

#[derive(Clone, Debug)]
pub struct GpuSlot<'a> {
    pub gpu: &'a Gpu,
    pub state: GpuState,
}

/// A host while placement fills it.
#[derive(Clone, Debug)]
pub struct HostState<'a> {
    pub host: &'a Host,
    pub nodes: Vec<NodeState>,
    pub gpus: Vec<GpuSlot<'a>>,
    /// Host CPUs in thousandths: dedicated vCPUs count 1000, shared ones
    /// `1000 / overcommit.cpu`, as the capacity check counts them.
    pub cpu_used_milli: u64,
    pub cpu_capacity_milli: u64,
    /// Memory outside the hugepage pools, less what every VM took.
    pub memory_free: u64,
}

impl<'a> HostState<'a> {
    pub fn of(host: &'a Host) -> HostState<'a> {
        let reserved = host.reserved_cpus.as_ref().map(|r| &r.value);
        let mut nodes: Vec<NodeState> = host
            .numa_nodes
            .iter()
            .map(|n| {
                let pools: u64 = n.hugepages.iter().map(|(s, c)| s.value.size().bytes().saturating_mul(c.value)).sum();
                NodeState {
                    id: n.id.value,
                    free_cpus: n
                        .cpus
                        .value
                        .cpus()
                        .iter()
                        .copied()
                        .filter(|c| !reserved.is_some_and(|r| r.contains(*c)))
                        .collect(),
                    memory_free: n.memory.value.bytes().saturating_sub(pools),
                    hugepages_free: n.hugepages.iter().map(|(s, c)| (s.value, c.value)).collect(),
                }
            })
            .collect();
        nodes.sort_by_key(|n| n.id);
        let usable: u64 = nodes.iter().map(|n| n.free_cpus.len() as u64).sum();
        let memory_free = nodes.iter().map(|n| n.memory_free).sum();
        let gpus = host.gpus.iter().map(|gpu| GpuSlot { gpu, state: initial_state(gpu) }).collect();
        HostState { host, nodes, gpus, cpu_used_milli: 0, cpu_capacity_milli: usable * 1000, memory_free }
    }

    pub fn name(&self) -> &'a str {
        &self.host.name.value
    }

    pub fn node(&self, id: u32) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn node_mut(&mut self, id: u32) -> Option<&mut NodeState> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    /// The node a free (or any) CPU of the host belongs to.
    pub fn node_of_cpu(&self, cpu: u32) -> Option<u32> {
        self.host.numa_nodes.iter().find(|n| n.cpus.value.contains(cpu)).map(|n| n.id.value)
    }
}

/// A GPU before any VM is placed: MIG layouts get their starts from `hw::mig::fit`,
/// with the operator's placements kept. A layout that does not fit (the MIG checks
/// report it) offers no instances.
fn initial_state(gpu: &Gpu) -> GpuState {
    match gpu.mode.value {
        GpuMode::Passthrough => GpuState::Passthrough { vm: None },
        GpuMode::TimeSliced => GpuState::TimeSliced { vms: Vec::new() },
        GpuMode::Host => GpuState::Host,
        GpuMode::Mig => {
            let model = gpu.model.value;
            let wants: Option<Vec<mig::Want>> = gpu
                .mig
                .iter()
                .map(|s| {
                    mig::profile(model, &s.profile.value)
                        .map(|profile| mig::Want { profile, start: s.placement.as_ref().map(|p| p.value) })
                })
                .collect();
            let slots = match wants.map(|w| mig::fit(&w).map(|starts| (w, starts))) {
                Some(Ok((wants, starts))) => {
                    let mut slots: Vec<MigSlotState> = wants
                        .iter()
                        .zip(starts)
                        .map(|(w, start)| MigSlotState { profile: w.profile, start, vm: None })
                        .collect();
                    slots.sort_by_key(|s| s.start);
                    slots
                }
                _ => Vec::new(),
            };
            GpuState::Mig { slots }
        }
    }
}
