//! The steps that write a VM's cloud-init seed into its volume: after the seed volume is
//! made, and before a VM whose seed is new or changed is defined. The image is built
//! here, from the desired VM, and travels in the step (its `Debug` never shows it).

use super::steps::{Step, StepError};
use crate::desired::{DesiredHost, DesiredVm, DesiredVolume};
use crate::plan::{Action, Op};

fn upload(vm: &DesiredVm) -> Result<Option<Step>, StepError> {
    let Some(seed) = &vm.seed else { return Ok(None) };
    let image = crate::guest::volume::image(vm, seed)
        .map_err(|e| StepError(format!("cannot build the cloud-init seed of `{}`: {e}", vm.name)))?;
    Ok(Some(Step::UploadSeed { pool: seed.pool.clone(), name: seed.volume.clone(), image }))
}

/// The upload after a seed volume is created (`None` for any other volume).
pub fn for_volume(host: &DesiredHost, vol: &DesiredVolume) -> Result<Option<Step>, StepError> {
    match host.vms.iter().find(|v| v.seed.as_ref().is_some_and(|s| s.pool == vol.pool && s.volume == vol.name)) {
        Some(vm) => upload(vm),
        None => Ok(None),
    }
}

/// The upload before a VM is defined: when it is created, or its seed changed.
pub fn for_vm(vm: &DesiredVm, action: &Action) -> Result<Option<Step>, StepError> {
    let needed = match action.op {
        Op::Create | Op::Replace => true,
        Op::Update => action.changes.iter().any(|c| c.field == "seed"),
        Op::Delete => false,
    };
    if needed { upload(vm) } else { Ok(None) }
}
