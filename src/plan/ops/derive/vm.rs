//! A VM's operations: its domain's, its seed's and its vGPU devices'.

use std::time::Duration;

use super::{missing, refuse};
use crate::desired::{DesiredHost, GpuSetup, ResourceId};
use crate::live::PowerState;
use crate::plan::ops::{DomainOp, GpuOp, LinkOp, OpsError, Step, StorageOp};
use crate::plan::{Action, Op};
use crate::render;
use crate::spec::model::Power;

/// A VM's operations when the plan replaces or deletes it; a creation or update keeps
/// the operations the diff made ([`vm_update`], [`vm_create`]).
pub(super) fn vm(factory: &str, host: &DesiredHost, action: &Action, timeout: Duration) -> Result<Vec<Step>, OpsError> {
    let steps = vm_domain(factory, host, action, timeout)?;
    Ok(with_vf_guids(host, action, with_vgpus(host, action, steps)))
}

/// A VM's InfiniBand ports on fixed VFs: their GUIDs written to the VFs before the
/// domain is defined or started (after a reboot the VFs are new, and the subnet
/// manager knows the ports by these GUIDs only).
fn with_vf_guids(host: &DesiredHost, action: &Action, steps: Vec<Step>) -> Vec<Step> {
    let at = steps.iter().position(|s| {
        matches!(s, Step::Domain(DomainOp::Define { .. } | DomainOp::Start { .. } | DomainOp::Resume { .. }))
    });
    let Some(at) = at else { return steps };
    let mut out = steps;
    let set = host.ib_ports.iter().filter(|p| p.vm == action.id.name).filter_map(|p| {
        // A port whose VF address is unknown stays on the pool: libvirt picks its VF.
        p.vf_address?;
        Some(Step::Link(LinkOp::SetVfGuids {
            pf: p.pf.clone(),
            vf: p.vf?,
            node_guid: p.node_guid,
            port_guid: p.port_guid,
        }))
    });
    out.splice(at..at, set);
    out
}

/// The VM's MIG instances as vGPU devices.
fn vgpus_of(host: &DesiredHost, vm: &ResourceId) -> Vec<GpuOp> {
    let Some(vm) = host.vms.iter().find(|v| &v.id == vm) else { return Vec::new() };
    vm.mig
        .iter()
        .filter_map(|mig| {
            host.gpus.iter().find_map(|g| match &g.setup {
                GpuSetup::Mig { instances } => instances.iter().find(|i| &i.id == mig).map(|i| GpuOp::CreateVgpu {
                    gpu: g.address,
                    profile: i.profile.clone(),
                    start: i.start,
                    uuid: render::domain::mdev_uuid(mig),
                    vf: i.vgpu_vf,
                }),
                GpuSetup::Passthrough | GpuSetup::TimeSliced => None,
            })
        })
        .collect()
}

/// A VM's vGPU devices around its domain's operations: created before the domain is
/// defined or started (after a reboot they are gone, and a start needs them), removed
/// after it is undefined. A VM being deleted is gone from the desired state, so its
/// devices are found by the MIG instances its live domain names: the plan keeps none of
/// that, so the instance's own action removes the device before destroying it.
fn with_vgpus(host: &DesiredHost, action: &Action, steps: Vec<Step>) -> Vec<Step> {
    let at = steps.iter().position(|s| {
        matches!(s, Step::Domain(DomainOp::Define { .. } | DomainOp::Start { .. } | DomainOp::Resume { .. }))
    });
    let Some(at) = at else { return steps };
    let mut out = steps;
    let create = vgpus_of(host, &action.id).into_iter().map(Step::Gpu);
    out.splice(at..at, create);
    out
}

fn vm_domain(factory: &str, host: &DesiredHost, action: &Action, timeout: Duration) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    let name = id.name.clone();
    let timeout_s = timeout.as_secs();
    let down = || {
        vec![
            Step::Domain(DomainOp::Shutdown { name: name.clone(), timeout_s }),
            Step::Domain(DomainOp::Undefine { name: name.clone() }),
        ]
    };
    let mut out = match action.op {
        Op::Delete => return Ok(down()),
        Op::Create | Op::Update if !action.ops.is_empty() => action.ops.clone(),
        // An update is the diff's to make: one without operations changes nothing.
        Op::Update => return Ok(Vec::new()),
        Op::Create | Op::Replace => {
            let vm = host.vms.iter().find(|v| &v.id == id).ok_or_else(|| missing(id))?;
            // A moved VM's old copy is on another host, shut down by a job of its own.
            let mut out = if action.op == Op::Replace && action.moved_from.is_none() { down() } else { Vec::new() };
            out.extend(vm_create(name.clone(), render::domain(factory, host, vm), vm.autostart, vm.power));
            out
        }
    };
    // The seed is written before the definition that names it: when the VM is created,
    // or its seed changed (read by the guest at its next boot).
    let reseed = match action.op {
        Op::Create | Op::Replace => true,
        Op::Update => action.changes.iter().any(|c| c.field == "seed"),
        Op::Delete => false,
    };
    if reseed {
        let vm = host.vms.iter().find(|v| &v.id == id).ok_or_else(|| missing(id))?;
        if let Some(upload) = seed_upload(vm)? {
            let at = out.iter().position(|s| matches!(s, Step::Domain(DomainOp::Define { .. }))).unwrap_or(out.len());
            out.insert(at, upload);
        }
    }
    Ok(out)
}

/// The upload of a VM's seed image (`None` for a VM without seed), the image built here
/// from the desired VM.
pub fn seed_upload(vm: &crate::desired::DesiredVm) -> Result<Option<Step>, OpsError> {
    let Some(seed) = &vm.seed else { return Ok(None) };
    let image = crate::guest::volume::image(vm, seed).map_err(|e| {
        refuse(format!("cannot build the cloud-init seed of `{}`: {e}", vm.name), "fix the VM's template or parameters")
    })?;
    Ok(Some(Step::Storage(StorageOp::UploadSeed {
        pool: seed.pool.clone(),
        name: seed.volume.clone(),
        vm: vm.name.clone(),
        sha256: seed.sha256.clone(),
        image: Some(image),
    })))
}

/// A new domain: defined, autostart set, started when it should run.
pub fn vm_create(name: String, xml: String, autostart: bool, power: Power) -> Vec<Step> {
    let mut out = vec![Step::Domain(DomainOp::Define { name: name.clone(), xml })];
    if autostart {
        out.push(Step::Domain(DomainOp::Autostart { name: name.clone(), on: true }));
    }
    if power == Power::Running {
        out.push(Step::Domain(DomainOp::Start { name }));
    }
    out
}

/// What an update of a domain does, from the diff's facts: `define` is the new definition
/// (with the live UUID) when it changed, `restart` whether the running guest restarts for
/// it, `power` the wanted and the live power state, `autostart` the new setting when it
/// changed.
pub fn vm_update(
    name: &str,
    define: Option<String>,
    restart: bool,
    power: (Power, PowerState),
    autostart: Option<bool>,
    timeout: Duration,
) -> Vec<Step> {
    let name = name.to_string();
    let timeout_s = timeout.as_secs();
    let mut out = Vec::new();
    if let Some(xml) = define {
        // The new definition is written while the guest runs; it takes effect at the
        // next start, which a restart-now change makes right away.
        out.push(Step::Domain(DomainOp::Define { name: name.clone(), xml }));
    }
    match power {
        (Power::Running, _) if restart => {
            out.push(Step::Domain(DomainOp::Shutdown { name: name.clone(), timeout_s }));
            out.push(Step::Domain(DomainOp::Start { name: name.clone() }));
        }
        (Power::Running, PowerState::Running) | (Power::Stopped, PowerState::ShutOff) => {}
        (Power::Running, PowerState::Paused) => out.push(Step::Domain(DomainOp::Resume { name: name.clone() })),
        (Power::Running, PowerState::ShutOff | PowerState::Crashed | PowerState::Other) => {
            out.push(Step::Domain(DomainOp::Start { name: name.clone() }))
        }
        (Power::Stopped, PowerState::Running | PowerState::Paused | PowerState::Crashed | PowerState::Other) => {
            out.push(Step::Domain(DomainOp::Shutdown { name: name.clone(), timeout_s }))
        }
    }
    if let Some(on) = autostart {
        out.push(Step::Domain(DomainOp::Autostart { name, on }));
    }
    out
}
