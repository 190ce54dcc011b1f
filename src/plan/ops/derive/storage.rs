//! Storage pools' and volumes' operations, with fabrik's records of the volumes it makes.

use super::{missing, refuse};
use crate::desired::DesiredHost;
use crate::live::LiveHost;
use crate::plan::ops::{OpsError, RecordOp, Step, StorageOp};
use crate::plan::{Action, Op};
use crate::render;

pub(super) fn pool(host: &DesiredHost, live: Option<&LiveHost>, action: &Action) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    match action.op {
        Op::Replace | Op::Delete => {
            return Err(refuse(
                format!("fabrik never replaces or deletes a storage pool (`{id}`): its volumes may hold data"),
                "leave it out of --replace; to rebuild it, remove it by hand (virsh pool-destroy, pool-undefine), then apply",
            ));
        }
        Op::Create | Op::Update => {}
    }
    let pool = host.pools.iter().find(|p| &p.id == id).ok_or_else(|| missing(id))?;
    let name = pool.name.clone();
    match action.op {
        Op::Create => Ok(vec![
            Step::Storage(StorageOp::DefinePool { name: name.clone(), xml: render::pool(pool) }),
            Step::Storage(StorageOp::StartPool { name: name.clone() }),
            Step::Storage(StorageOp::PoolAutostart { name, on: true }),
        ]),
        _ => {
            let l = live.and_then(|l| l.pools.iter().find(|p| p.name == name));
            let mut out = Vec::new();
            if l.is_none_or(|l| !l.active) {
                out.push(Step::Storage(StorageOp::StartPool { name: name.clone() }));
            }
            if l.is_none_or(|l| !l.autostart) {
                out.push(Step::Storage(StorageOp::PoolAutostart { name, on: true }));
            }
            Ok(out)
        }
    }
}

pub(super) fn volume(host: &DesiredHost, live: Option<&LiveHost>, action: &Action) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    if action.op == Op::Replace {
        return Err(refuse(
            format!("fabrik never replaces a volume (`{id}`): it may hold data"),
            "leave it out of --replace; to start it over, delete it by hand (virsh vol-delete), then apply",
        ));
    }
    if action.op == Op::Delete {
        // The live volume the id names, found by the id the diff gave it.
        let found = live.into_iter().flat_map(|l| &l.pools).find_map(|p| {
            p.volumes
                .iter()
                .find(|v| &crate::desired::storage::volume_id(&id.host, &p.name, &v.name) == id)
                .map(|v| (p.name.clone(), v.name.clone()))
        });
        let (pool, name) = found.ok_or_else(|| {
            refuse(format!("volume `{id}` to delete was not seen on its host"), "plan again against the host")
        })?;
        return Ok(vec![
            Step::Storage(StorageOp::DeleteVolume { pool, name }),
            Step::Record(RecordOp::ForgetVolume { id: id.clone() }),
        ]);
    }
    let vol = host.volumes.iter().find(|v| &v.id == id).ok_or_else(|| missing(id))?;
    let (pool, name) = (vol.pool.clone(), vol.name.clone());
    match action.op {
        Op::Create => {
            let xml = render::volume(host, vol);
            let copy = vol.image.as_ref().filter(|i| !(i.pool == vol.pool && i.volume == vol.name));
            let make = match copy {
                // A qcow2 overlay names its base as backing store: created, not cloned.
                Some(_) if render::storage::backing(host, vol).is_some() => StorageOp::CreateVolume { pool, name, xml },
                Some(i) => {
                    StorageOp::CloneVolume { pool, name, xml, from_pool: i.pool.clone(), from_volume: i.volume.clone() }
                }
                None => StorageOp::CreateVolume { pool, name, xml },
            };
            // Recorded before it is made: an apply killed in between leaves a record of a
            // volume that is not there (the next plan creates it, recording it again),
            // never a volume fabrik made but forgot, which it could never delete.
            let mut out =
                vec![Step::Record(RecordOp::Volume { id: id.clone(), deletable: vol.deletable }), Step::Storage(make)];
            // A base image fabrik fetches is written as soon as its volume is made.
            if let Some(i) = vol.image.as_ref().filter(|i| i.pool == vol.pool && i.volume == vol.name)
                && let Some(sha256) = &i.sha256
                && crate::image::Source::parse(&i.source).is_some()
            {
                out.push(Step::Storage(StorageOp::UploadImage {
                    pool: vol.pool.clone(),
                    name: vol.name.clone(),
                    source: i.source.clone(),
                    sha256: sha256.clone(),
                    file: None,
                }));
            }
            // A seed volume is written as soon as it is made.
            let owner =
                host.vms.iter().find(|v| v.seed.as_ref().is_some_and(|s| s.pool == vol.pool && s.volume == vol.name));
            if let Some(vm) = owner {
                out.extend(super::seed_upload(vm)?);
            }
            Ok(out)
        }
        _ => match vol.capacity {
            Some(capacity) => Ok(vec![Step::Storage(StorageOp::ResizeVolume { pool, name, capacity })]),
            None => Ok(Vec::new()),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::desired::{DesiredHost, ResourceId};
    use crate::plan::ops::for_action;
    use crate::plan::{Action, Class, Op};

    #[test]
    fn a_pool_or_volume_is_never_replaced() {
        for id in ["pool:h1/vms", "volume:h1/vms/a-root"] {
            let action = Action::new(ResourceId::parse(id).unwrap(), Op::Replace, Class::Replace, "test");
            let e = for_action("f", Some(&DesiredHost::default()), None, &action, Duration::ZERO).unwrap_err();
            assert!(e.message.contains("never replaces"), "{e:?}");
        }
    }
}
