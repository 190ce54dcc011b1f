//! Disks on the hosts their pools reach, and no smaller than their images.
//!
//! A disk's volume goes in its `pool`, else its image's; a disk copied from an image
//! also needs the image's base volume, in the image's pool, on the same host. A pool
//! with `hosts` exists only there.

use std::collections::{HashMap, HashSet};

use super::{Overlap, Runs, Where, by_name, host_set, hosts_phrase};
use crate::check::gpu::Index;
use crate::diag::Diagnostic;
use crate::spec::model::{Disk, Image, Pool};
use crate::spec::source::Span;

pub(super) fn check(ix: &Index<'_>, at: &Where, out: &mut Vec<Diagnostic>) {
    let pools = by_name(&ix.spec.pools, |p| p.name.value.as_str());
    let images = by_name(&ix.spec.images, |i| i.name.value.as_str());
    let pool_hosts: HashMap<&str, HashSet<usize>> = ix
        .spec
        .pools
        .iter()
        .filter(|p| !p.hosts.is_empty())
        .map(|p| (p.name.value.as_str(), host_set(ix, &p.hosts)))
        .collect();
    // A template's disk is one line for many VMs: said once per line and host.
    let mut said: HashSet<(Span, Option<usize>)> = HashSet::new();
    let mut overlap = Overlap::default();
    for (e, runs) in ix.spec.effective_vms().zip(&at.vms) {
        for disk in e.disks().map(Vec::as_slice).unwrap_or_default() {
            let image = disk.image.as_ref().and_then(|i| images.get(i.value.as_str()).copied());
            for need in needs(disk, image) {
                let Some(hosts) = pool_hosts.get(need.pool) else { continue };
                let Some(pool) = pools.get(need.pool).copied() else { continue };
                let d = match runs {
                    Runs::On(h, span) if !hosts.contains(h) => {
                        if !said.insert((need.at, Some(*h))) {
                            continue;
                        }
                        absent(ix, &e.vm.name.value, &need, pool, hosts, *h, *span)
                    }
                    Runs::Placed(t) if !overlap.any(at, *t, need.pool, hosts) => {
                        let candidates = &at.tenant_hosts[*t];
                        if !said.insert((need.at, None)) || candidates.is_empty() {
                            continue;
                        }
                        absent_for_tenant(ix, &e.vm.name.value, &e.vm.tenant.value, &need, pool, hosts, candidates)
                    }
                    Runs::On(..) | Runs::Placed(_) | Runs::Unknown => continue,
                };
                out.push(d);
            }
        }
    }
    let workloads = ix.spec.templates.iter().map(|t| &t.workload).chain(ix.spec.vms.iter().map(|v| &v.workload));
    for disk in workloads.flat_map(|w| w.disks.iter().flatten()) {
        let image = disk.image.as_ref().and_then(|i| images.get(i.value.as_str()).copied());
        if let (Some(size), Some(image)) = (&disk.size, image)
            && let Some(image_size) = &image.size
            && size.value.bytes() < image_size.value.bytes()
        {
            out.push(
                Diagnostic::error(
                    "fabrik::capacity::disk-below-image",
                    format!(
                        "disk `{}` is {}, smaller than its image `{}` ({})",
                        disk.name.value, size.value, image.name.value, image_size.value
                    ),
                )
                .at(size.span, format!("below the image's {}", image_size.value))
                .also(image_size.span, format!("the virtual size of image `{}`", image.name.value))
                .help(format!(
                    "give the disk at least {} (or drop `size`: the disk then takes the image's)",
                    image_size.value
                )),
            );
        }
    }
}

/// A pool a disk needs on its VM's host, and the line that makes it need it.
struct Need<'a> {
    pool: &'a str,
    at: Span,
    disk: &'a str,
    /// The image that puts the disk, or its base volume, in the pool.
    image: Option<&'a str>,
    /// The disk's volume is in the pool (else only its image's base volume is).
    volume: bool,
}

impl Need<'_> {
    /// "disk `root` is in pool `fast`", made only for a diagnostic: the check runs on
    /// every disk of a large factory.
    fn what(&self) -> String {
        let (disk, pool) = (self.disk, self.pool);
        match (self.image, self.volume) {
            (None, _) => format!("disk `{disk}` is in pool `{pool}`"),
            (Some(image), true) => format!("disk `{disk}` goes in pool `{pool}`, image `{image}`'s"),
            (Some(image), false) => {
                format!("disk `{disk}` is copied from image `{image}`, whose base volume is in pool `{pool}`")
            }
        }
    }
}

fn needs<'a>(disk: &'a Disk, image: Option<&'a Image>) -> impl Iterator<Item = Need<'a>> {
    let disk_name = disk.name.value.as_str();
    let image_at = disk.image.as_ref().map_or(disk.name.span, |s| s.span);
    let own = match (&disk.pool, image) {
        (Some(p), _) => Some(Need { pool: &p.value, at: p.span, disk: disk_name, image: None, volume: true }),
        (None, Some(i)) => {
            Some(Need { pool: &i.pool.value, at: image_at, disk: disk_name, image: Some(&i.name.value), volume: true })
        }
        (None, None) => None,
    };
    let base = match (&disk.pool, image) {
        (Some(p), Some(i)) if p.value != i.pool.value => {
            Some(Need { pool: &i.pool.value, at: image_at, disk: disk_name, image: Some(&i.name.value), volume: false })
        }
        _ => None,
    };
    own.into_iter().chain(base)
}

fn listed(hosts: &HashSet<usize>) -> Vec<usize> {
    let mut v: Vec<usize> = hosts.iter().copied().collect();
    v.sort_unstable();
    v
}

fn absent(
    ix: &Index<'_>,
    vm: &str,
    need: &Need<'_>,
    pool: &Pool,
    hosts: &HashSet<usize>,
    h: usize,
    host_span: Span,
) -> Diagnostic {
    let host = &ix.host(h).name.value;
    let on = hosts_phrase(ix, listed(hosts));
    Diagnostic::error(
        "fabrik::capacity::pool-not-on-host",
        format!("VM `{vm}` runs on host `{host}`, but its {}, which is only on {on}", need.what()),
    )
    .at(need.at, format!("pool `{}` is not on host `{host}`", pool.name.value))
    .also(host_span, "the VM's host")
    .also(pool.name.span, format!("on {on} only"))
    .help(format!(
        "add `{host}` to the `hosts` of pool `{}` (or drop `hosts`: every host then has it), or put the disk in a pool host `{host}` has",
        pool.name.value
    ))
}

fn absent_for_tenant(
    ix: &Index<'_>,
    vm: &str,
    tenant: &str,
    need: &Need<'_>,
    pool: &Pool,
    hosts: &HashSet<usize>,
    candidates: &[usize],
) -> Diagnostic {
    let on = hosts_phrase(ix, listed(hosts));
    Diagnostic::error(
        "fabrik::capacity::pool-not-on-host",
        format!(
            "VM `{vm}` may run only on the hosts of tenant `{tenant}`, but its {}, which is on none of them",
            need.what()
        ),
    )
    .at(need.at, format!("pool `{}` is on none of tenant `{tenant}`'s hosts", pool.name.value))
    .also(pool.name.span, format!("on {on} only"))
    .help(format!(
        "add a host of tenant `{tenant}` ({}) to the `hosts` of pool `{}`, or put the disk in a pool those hosts have",
        hosts_phrase(ix, candidates.iter().copied()),
        pool.name.value
    ))
}
