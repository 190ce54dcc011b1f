//! `fabrik::isolation::shared-volume`, `…::image-shadows-disk`, `…::image-from-disk`:
//! a volume holds one disk's data. Derived volume names cannot clash (see
//! [`crate::desired::names`]); a `volume` given by hand can, and an image is a volume
//! too: one named like a disk's volume would make new disks overlays on that disk's
//! data, and one copied from a disk's file hands that data to whoever uses the image.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::rules::Rule;
use crate::desired::storage::{disk_pool_in, image_pools, volume_name};
use crate::diag::Diagnostic;
use crate::spec::model::{Disk, Spec};
use crate::spec::source::Span;

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::isolation::shared-volume",
        summary: "two disks resolve to one volume of a pool (a `volume` given by hand equal to another disk's; or given in a template or on a VM with replicas)",
        protects: "one VM given another's disk, read-write, across tenants too: both write to one file system and corrupt it, and each reads the other's data",
        example: "vms:\n  - name: globex-vllm-0\n    tenant: globex\n    disks: [{ name: root, image: ubuntu }]            # volume globex-vllm-0-root\n  - name: a\n    tenant: acme\n    disks: [{ name: root, image: ubuntu, volume: globex-vllm-0-root }]",
        fix: "leave `volume` out (derived names never clash), or give each disk a volume of its own; never give `volume` in a template or on a VM with replicas",
    },
    Rule {
        code: "fabrik::isolation::image-shadows-disk",
        summary: "an image has the name of a disk's volume in the same pool",
        protects: "an image and a VM's disk that are one volume: disks made from the image become overlays on that VM's data, and the image's download overwrites the disk",
        example: "images:\n  - { name: globex-vllm-0-root, pool: vms, source: /srv/images/u.qcow2 }\nvms:\n  - name: globex-vllm-0\n    tenant: globex\n    disks: [{ name: root, size: 100GiB, pool: vms }]",
        fix: "rename the image; image names never equal `<vm>-<disk>` of a VM in the pool",
    },
    Rule {
        code: "fabrik::isolation::image-from-disk",
        summary: "an image's `source` is the file of a VM disk's volume",
        protects: "a tenant's disk published as a base image: every VM made from it, of any tenant, starts with a copy of that tenant's data",
        example: "pools:\n  - { name: vms, type: dir, path: /var/lib/fabrik/vms }\nimages:\n  - { name: base, pool: vms, source: /var/lib/fabrik/vms/globex-vllm-0-root }",
        fix: "build images from a source of their own (a cloud image, a file outside the VMs' pools), never from a VM's disk",
    },
];

/// A disk's volume: which VM it belongs to, and where its name comes from.
struct Owner {
    vm: String,
    span: Span,
    given: bool,
}

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    let mut volumes: BTreeMap<(String, String), Owner> = BTreeMap::new();
    let mut reported: HashSet<Span> = HashSet::new();
    let image_pool = image_pools(spec);
    for e in spec.effective_vms() {
        for vm in e.vm.instance_names() {
            for d in e.disks().map(Vec::as_slice).unwrap_or_default() {
                let key = (disk_pool_in(&image_pool, d), volume_name(&vm, d));
                let span = source(d);
                let Some(first) = volumes.get(&key) else {
                    volumes.insert(key, Owner { vm: vm.clone(), span, given: d.volume.is_some() });
                    continue;
                };
                if !reported.insert(span) {
                    continue;
                }
                out.push(shared(&key, &vm, span, first));
            }
        }
    }
    for i in &spec.images {
        let key = (i.pool.value.clone(), i.name.value.clone());
        if let Some(disk) = volumes.get(&key) {
            out.push(
                Diagnostic::error(
                    "fabrik::isolation::image-shadows-disk",
                    format!(
                        "image `{}` is volume `{}` of pool `{}`, the disk of VM `{}`",
                        key.1, key.1, key.0, disk.vm
                    ),
                )
                .at(i.name.span, "this image's volume")
                .also(disk.span, format!("a disk of VM `{}`, volume `{}`", disk.vm, key.1))
                .help("rename the image: an image never shares a name with a disk's volume in its pool"),
            );
        }
        for p in &spec.pools {
            let Ok(rest) = Path::new(&i.source.value).strip_prefix(&p.path.value) else { continue };
            let Some(file) = rest.to_str().filter(|f| !f.contains('/')) else { continue };
            let Some(disk) = volumes.get(&(p.name.value.clone(), file.to_string())) else { continue };
            out.push(
                Diagnostic::error(
                    "fabrik::isolation::image-from-disk",
                    format!(
                        "image `{}` is copied from `{}`, the disk of VM `{}` in pool `{}`",
                        i.name.value, i.source.value, disk.vm, p.name.value
                    ),
                )
                .at(i.source.span, "a VM's disk")
                .also(disk.span, format!("the disk of VM `{}`", disk.vm))
                .help("build the image from a source of its own, never from a VM's disk"),
            );
        }
    }
}

fn shared(key: &(String, String), vm: &str, span: Span, first: &Owner) -> Diagnostic {
    let (pool, volume) = key;
    let d = Diagnostic::error(
        "fabrik::isolation::shared-volume",
        format!("VMs `{}` and `{vm}` both get volume `{volume}` of pool `{pool}`", first.vm),
    );
    if first.span == span {
        return d
            .at(span, format!("every VM made from this declaration gets volume `{volume}`"))
            .help("a `volume` in a template or on a VM with replicas is shared by every copy; leave it out");
    }
    let first_label = if first.given {
        format!("given to VM `{}` here", first.vm)
    } else {
        format!("the derived volume of VM `{}`'s disk", first.vm)
    };
    d.at(span, format!("volume `{volume}` again, for VM `{vm}`"))
        .also(first.span, first_label)
        .help("leave `volume` out (derived names never clash), or give each disk a volume of its own")
}

/// Where a disk's volume name comes from: its `volume`, else its name.
fn source(d: &Disk) -> Span {
    d.volume.as_ref().map_or(d.name.span, |v| v.span)
}
