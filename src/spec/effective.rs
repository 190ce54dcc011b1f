//! A VM as it will be made: each workload key from the VM, else from its template.
//!
//! Checks and placement read VMs through this view, so "the VM's memory" always means
//! the same thing, and a diagnostic points at the line the value really came from.

use super::model::{CpuPolicy, Disk, Firmware, GpuRequest, NicRequest, NumaPolicy, Overcommit, Spec, Template, Vm};
use super::source::Spanned;
use super::types::{ByteSize, PageSize};

#[derive(Clone, Copy, Debug)]
pub struct Effective<'a> {
    pub vm: &'a Vm,
    /// The template, when the VM names one that exists.
    pub template: Option<&'a Template>,
}

macro_rules! inherited {
    ($($(#[$m:meta])* $field:ident: $ty:ty),+ $(,)?) => {$(
        $(#[$m])*
        pub fn $field(&self) -> Option<&'a $ty> {
            self.vm.workload.$field.as_ref().or_else(|| self.template.and_then(|t| t.workload.$field.as_ref()))
        }
    )+};
}

impl<'a> Effective<'a> {
    pub fn of(spec: &'a Spec, vm: &'a Vm) -> Effective<'a> {
        Effective { vm, template: vm.template.as_ref().and_then(|t| spec.template(&t.value)) }
    }

    /// How many VMs this entry stands for.
    pub fn count(&self) -> u32 {
        self.vm.replicas.as_ref().map_or(1, |r| r.value)
    }

    inherited! {
        vcpus: Spanned<u32>,
        memory: Spanned<ByteSize>,
        hugepages: Spanned<PageSize>,
        cpu_policy: Spanned<CpuPolicy>,
        numa: Spanned<NumaPolicy>,
        overcommit: Overcommit,
        gpu: GpuRequest,
        nics: Vec<NicRequest>,
        disks: Vec<Disk>,
        firmware: Spanned<Firmware>,
    }

    pub fn vcpu_count(&self) -> u32 {
        self.vcpus().map_or(0, |v| v.value)
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory().map_or(0, |m| m.value.bytes())
    }

    /// NUMA policy; `none` when not given.
    pub fn numa_policy(&self) -> NumaPolicy {
        self.numa().map_or(NumaPolicy::None, |n| n.value)
    }

    /// Whether vCPUs are pinned: `dedicated`, or explicit `cpus`.
    pub fn dedicated(&self) -> bool {
        self.vm.cpus.is_some() || self.cpu_policy().is_some_and(|p| p.value == CpuPolicy::Dedicated)
    }

    /// The NICs, empty when neither VM nor template gives any.
    pub fn nic_list(&self) -> &'a [NicRequest] {
        self.nics().map_or(&[], Vec::as_slice)
    }

    /// Overcommit ratio for vCPUs; dedicated vCPUs are never overcommitted.
    pub fn cpu_overcommit(&self) -> f64 {
        if self.dedicated() {
            return 1.0;
        }
        self.overcommit().and_then(|o| o.cpu.as_ref()).map_or(1.0, |c| c.value)
    }

    /// Overcommit ratio for memory; hugepage-backed memory is never overcommitted.
    pub fn memory_overcommit(&self) -> f64 {
        if self.hugepages().is_some() {
            return 1.0;
        }
        self.overcommit().and_then(|o| o.memory.as_ref()).map_or(1.0, |m| m.value)
    }
}

impl Spec {
    /// Every VM entry with its effective view.
    pub fn effective_vms(&self) -> impl Iterator<Item = Effective<'_>> {
        // The templates by name once, so that each VM finds its own without a scan.
        let templates = self.templates_by_name();
        self.vms.iter().map(move |vm| Effective {
            vm,
            template: vm.template.as_ref().and_then(|t| templates.get(t.value.as_str()).copied()),
        })
    }
}
