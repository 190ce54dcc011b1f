//! A saved plan's cloud-init seeds. The plan document carries each seed upload's VM and
//! hash, never the image (it holds the guest's secrets); before a saved plan is applied
//! the images are built again from the factory's files (the plan's own copy, when its
//! factory is gone) and the hosts as observed, and each must hash as the plan recorded —
//! else the plan is refused and nothing is changed.

use std::collections::HashMap;

use super::Plan;
use super::ops::{Step, StorageOp};
use crate::desired::{Desired, DesiredVm};
use crate::live::LiveHost;

/// Builds the image of every seed upload in `plan` that has none. `desired` is the
/// factory's desired state, `live` the hosts as observed for the staleness check.
pub fn fill(plan: &mut Plan, desired: &Desired, live: &[LiveHost]) -> Result<(), String> {
    let wanted = plan.actions.iter().flat_map(|a| a.ops.iter().chain(&a.moved_from_ops)).any(needs_image);
    if !wanted {
        return Ok(());
    }
    let planned = super::as_planned(desired, live);
    let vms: HashMap<(&str, &str), &DesiredVm> =
        planned.hosts.iter().flat_map(|h| h.vms.iter().map(move |v| ((h.name.as_str(), v.name.as_str()), v))).collect();
    for action in &mut plan.actions {
        let host = action.id.host.clone();
        for step in action.ops.iter_mut().chain(action.moved_from_ops.iter_mut()) {
            let Step::Storage(StorageOp::UploadSeed { vm, sha256, image, .. }) = step else { continue };
            if image.is_some() {
                continue;
            }
            let desired_vm = vms.get(&(host.as_str(), vm.as_str())).ok_or_else(|| {
                format!(
                    "the plan writes the cloud-init seed of `{vm}` on `{host}`, which the factory no longer declares"
                )
            })?;
            let seed = desired_vm.seed.as_ref().ok_or_else(|| format!("`{vm}` on `{host}` no longer has a seed"))?;
            if &seed.sha256 != sha256 {
                return Err(format!("the cloud-init seed of `{vm}` on `{host}` is not the one the plan was made with"));
            }
            let built = crate::guest::volume::image(desired_vm, seed)
                .map_err(|e| format!("cannot build the cloud-init seed of `{vm}`: {e}"))?;
            *image = Some(built);
        }
    }
    Ok(())
}

fn needs_image(step: &Step) -> bool {
    matches!(step, Step::Storage(StorageOp::UploadSeed { image: None, .. }))
}
