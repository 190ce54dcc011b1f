//! GPUs' operations: MIG mode, the vfio-pci binding of a passthrough GPU, MIG instances.

use super::{missing, refuse};
use crate::desired::{DesiredHost, GpuSetup};
use crate::live::LiveHost;
use crate::plan::ops::{DomainOp, GpuOp, OpsError, Step};
use crate::plan::{Action, Op};
use crate::render;
use crate::spec::types::PciAddress;

pub(super) fn gpu(host: &DesiredHost, live: Option<&LiveHost>, action: &Action) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    let gpu = host.gpus.iter().find(|g| &g.id == id).ok_or_else(|| missing(id))?;
    let want_mig = matches!(gpu.setup, GpuSetup::Mig { .. });
    let mut out = Vec::new();
    let mode = live.and_then(|l| l.gpus.iter().find(|g| g.address == gpu.address)).and_then(|g| g.mig);
    if mode.is_some_and(|m| m.current != want_mig) {
        out.push(Step::Gpu(GpuOp::SetMigMode { gpu: gpu.address, enabled: want_mig }));
    }
    let driver =
        live.and_then(|l| l.devices.iter().find(|d| d.address == gpu.address)).and_then(|d| d.driver.as_deref());
    if matches!(gpu.setup, GpuSetup::Passthrough) && driver != Some(crate::plan::diff::gpu::VFIO_DRIVER) {
        out.push(Step::Domain(DomainOp::Detach { address: gpu.address }));
    }
    Ok(out)
}

pub(super) fn mig(host: &DesiredHost, live: Option<&LiveHost>, action: &Action) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    // The live instance the id names (to destroy), found by the id the diff gave it.
    let have = live.into_iter().flat_map(|l| &l.gpus).find_map(|g| {
        g.instances
            .iter()
            .find(|i| &crate::desired::build::mig_id(&id.host, &g.address, &i.profile, i.start) == id)
            .map(|i| ((g.address, i.profile.clone(), i.start), vgpu_vf(g, i.start)))
    });
    let (have, have_vf) = (have.as_ref().map(|h| h.0.clone()), have.and_then(|h| h.1));
    let destroy =
        |(gpu, profile, start): (PciAddress, String, u8)| Step::Gpu(GpuOp::DestroyMigInstance { gpu, profile, start });
    // The vGPU a VM had on the instance goes first (the host refuses to destroy an
    // instance that carries one); its UUID is fabrik's, derived from the instance's id.
    let unplug =
        |gpu: PciAddress| Step::Gpu(GpuOp::RemoveVgpu { gpu, uuid: render::domain::mdev_uuid(id), vf: have_vf });
    if action.op == Op::Delete {
        let have = have.ok_or_else(|| {
            refuse(format!("MIG instance `{id}` to destroy was not seen on its host"), "plan again against the host")
        })?;
        return Ok(vec![unplug(have.0), destroy(have)]);
    }
    let (gpu, want) = host
        .gpus
        .iter()
        .filter_map(|g| match &g.setup {
            GpuSetup::Mig { instances } => Some(instances.iter().map(move |i| (g.address, i))),
            GpuSetup::Passthrough | GpuSetup::TimeSliced => None,
        })
        .flatten()
        .find(|(_, i)| &i.id == id)
        .ok_or_else(|| missing(id))?;
    let mut out = Vec::new();
    if action.op == Op::Replace
        && let Some(have) = have
    {
        out.push(unplug(have.0));
        out.push(destroy(have));
    }
    out.push(Step::Gpu(GpuOp::CreateMigInstance {
        gpu,
        profile: want.profile.clone(),
        profile_id: want.profile_id,
        start: want.start,
    }));
    Ok(out)
}

/// In SR-IOV mode, the VF that carries the vGPU of the instance at placement `start`:
/// VF `start` of the GPU (`DesiredMigInstance::vgpu_vf`), when a vGPU type is written
/// to it.
fn vgpu_vf(g: &crate::live::LiveGpu, start: u8) -> Option<PciAddress> {
    let v = g.vgpu.as_ref().filter(|v| v.mode == crate::driver::vgpu::VgpuMode::SriovVf)?;
    let vf = *v.vfs.get(usize::from(start))?;
    v.devices.contains(&crate::driver::vgpu::VgpuDevice::Vf(vf)).then_some(vf)
}
