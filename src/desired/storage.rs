//! Pools on their hosts, a volume per VM disk, and the base-image volumes those disks
//! are copied from, on the hosts that need them.

use std::collections::BTreeSet;

use super::{DesiredHost, DesiredImage, DesiredPool, DesiredVolume, ResourceId, ResourceKind};
use crate::place::Placement;
use crate::spec::model::{Disk, Image, ImageFormat, PoolKind, Spec};

/// The pool a disk's volume goes in: the disk's, else its image's. A disk with neither
/// goes in `default` (libvirt's default pool).
pub fn disk_pool(spec: &Spec, d: &Disk) -> String {
    match (&d.pool, d.image.as_ref().and_then(|i| spec.images.iter().find(|x| x.name.value == i.value))) {
        (Some(p), _) => p.value.clone(),
        (None, Some(i)) => i.pool.value.clone(),
        (None, None) => "default".to_string(),
    }
}

/// Each image's pool by the image's name (the first image where a name repeats, as
/// [`disk_pool`] finds it): for finding the pools of many disks without a scan each.
pub fn image_pools(spec: &Spec) -> std::collections::HashMap<&str, &str> {
    let mut out = std::collections::HashMap::with_capacity(spec.images.len());
    for i in &spec.images {
        out.entry(i.name.value.as_str()).or_insert(i.pool.value.as_str());
    }
    out
}

/// [`disk_pool`], with the images' pools from [`image_pools`].
pub fn disk_pool_in(image_pools: &std::collections::HashMap<&str, &str>, d: &Disk) -> String {
    match (&d.pool, d.image.as_ref().and_then(|i| image_pools.get(i.value.as_str()))) {
        (Some(p), _) => p.value.clone(),
        (None, Some(pool)) => (*pool).to_string(),
        (None, None) => "default".to_string(),
    }
}

/// The volume of disk `d` of VM `vm`: its `volume`, else [`names::volume`].
pub fn volume_name(vm: &str, d: &Disk) -> String {
    d.volume.as_ref().map_or_else(|| super::names::volume(vm, &d.name.value), |v| v.value.clone())
}

pub fn volume_id(host: &str, pool: &str, name: &str) -> ResourceId {
    ResourceId::new(ResourceKind::Volume, host, format!("{pool}/{name}"))
}

pub(super) fn add(spec: &Spec, placement: &Placement<'_>, hosts: &mut [DesiredHost]) {
    let image = |name: &str| spec.images.iter().find(|i| i.name.value == name);
    let pool_kind = |name: &str| spec.pools.iter().find(|p| p.name.value == name).map(|p| p.kind.value);
    // Base images each host needs: (host index, image name).
    let mut bases: BTreeSet<(usize, &str)> = BTreeSet::new();
    for v in &placement.vms {
        // `hosts` is still in the order of `spec.hosts` here.
        let (h, host_name) = (v.host, &spec.hosts[v.host].name.value);
        for d in v.entry.disks().map(Vec::as_slice).unwrap_or_default() {
            let img = d.image.as_ref().and_then(|i| image(&i.value));
            let pool = disk_pool(spec, d);
            let name = volume_name(&v.name, d);
            let format = match (pool_kind(&pool), img) {
                (Some(PoolKind::Logical), _) => ImageFormat::Raw,
                (_, Some(_)) | (_, None) => ImageFormat::Qcow2,
            };
            if let Some(i) = img {
                bases.insert((h, i.name.value.as_str()));
            }
            hosts[h].volumes.push(DesiredVolume {
                id: volume_id(host_name, &pool, &name),
                pool,
                name,
                capacity: d
                    .size
                    .as_ref()
                    .map(|s| s.value)
                    .or_else(|| img.and_then(|i| i.size.as_ref().map(|s| s.value))),
                format,
                image: img.map(base),
                deletable: d.delete_with_vm,
            });
        }
    }
    for (h, name) in bases {
        let Some(i) = image(name) else { continue };
        let host = &mut hosts[h];
        host.volumes.push(DesiredVolume {
            id: volume_id(&host.name, &i.pool.value, &i.name.value),
            pool: i.pool.value.clone(),
            name: i.name.value.clone(),
            capacity: i.size.as_ref().map(|s| s.value),
            format: i.format.value,
            image: Some(base(i)),
            deletable: false,
        });
    }
    for p in &spec.pools {
        for host in hosts.iter_mut() {
            if !p.hosts.is_empty() && !p.hosts.iter().any(|h| h.value == host.name) {
                continue;
            }
            host.pools.push(DesiredPool {
                id: ResourceId::new(ResourceKind::Pool, &host.name, &p.name.value),
                name: p.name.value.clone(),
                kind: p.kind.value,
                path: p.path.value.clone(),
                source: p.source.as_ref().map(|s| s.value.clone()),
            });
        }
    }
}

fn base(i: &Image) -> DesiredImage {
    DesiredImage {
        pool: i.pool.value.clone(),
        volume: i.name.value.clone(),
        source: i.source.value.clone(),
        sha256: i.sha256.as_ref().map(|s| s.value.to_ascii_lowercase()),
    }
}
