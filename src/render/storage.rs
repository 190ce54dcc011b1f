//! Desired pools and volumes → libvirt storage XML.
//!
//! Storage XML has no `<metadata>` (libvirt drops it at define), so pools and volumes
//! carry no ownership mark; see [`crate::driver::libvirt::owner`].

use super::xml::{Writer, a};
use crate::desired::{DesiredHost, DesiredImage, DesiredPool, DesiredVolume};
use crate::spec::model::{ImageFormat, PoolKind};

pub fn pool(pool: &DesiredPool) -> String {
    let mut w = Writer::new();
    let kind = match pool.kind {
        PoolKind::Dir => "dir",
        PoolKind::Logical => "logical",
        PoolKind::Netfs => "netfs",
    };
    w.open("pool", &[a("type", kind)]);
    w.text("name", &[], &pool.name);
    match (pool.kind, pool.source.as_deref()) {
        (PoolKind::Dir, _) | (_, None) => {}
        (PoolKind::Logical, Some(vg)) => {
            w.open("source", &[]);
            w.text("name", &[], vg);
            w.empty("format", &[a("type", "lvm2")]);
            w.close("source");
        }
        (PoolKind::Netfs, Some(export)) => {
            // `server:/export`; a source without a colon is taken as the server's root.
            let (server, dir) = export.split_once(':').unwrap_or((export, "/"));
            w.open("source", &[]);
            w.empty("host", &[a("name", server)]);
            w.empty("dir", &[a("path", dir)]);
            w.empty("format", &[a("type", "nfs")]);
            w.close("source");
        }
    }
    w.open("target", &[]);
    w.text("path", &[], &pool.path);
    w.close("target");
    w.close("pool");
    w.finish()
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Qcow2 => "qcow2",
        ImageFormat::Raw => "raw",
    }
}

/// A volume's XML. A qcow2 volume made from an image on this host names the image as its
/// backing store (a thin overlay); other volumes from images are copies, made by the
/// driver's clone, and name none. The base image's own volume names the image too (where
/// it is imported from), but is not backed by anything: a volume backed by itself cannot
/// be created, nor opened.
pub fn volume(host: &DesiredHost, vol: &DesiredVolume) -> String {
    let mut w = Writer::new();
    w.open("volume", &[]);
    w.text("name", &[], &vol.name);
    w.text("capacity", &[a("unit", "bytes")], &vol.capacity.map(|c| c.bytes()).unwrap_or(0).to_string());
    w.open("target", &[]);
    w.empty("format", &[a("type", format_name(vol.format))]);
    w.close("target");
    let backing = backing(host, vol);
    if let Some((path, format)) = backing {
        w.open("backingStore", &[]);
        w.text("path", &[], &path);
        if let Some(format) = format {
            w.empty("format", &[a("type", format_name(format))]);
        }
        w.close("backingStore");
    }
    w.close("volume");
    w.finish()
}

/// The backing store of a qcow2 overlay on its image (the image's path and format), or
/// `None` for a volume that is not an overlay: such a volume is created naming its base,
/// not cloned from it.
pub fn backing(host: &DesiredHost, vol: &DesiredVolume) -> Option<(String, Option<ImageFormat>)> {
    let overlay = |image: &&DesiredImage| {
        vol.format == ImageFormat::Qcow2 && (image.pool != vol.pool || image.volume != vol.name)
    };
    vol.image.as_ref().filter(overlay).and_then(|image| {
        let pool = host.pools.iter().find(|p| p.name == image.pool)?;
        let format = host.volumes.iter().find(|v| v.pool == image.pool && v.name == image.volume).map(|v| v.format);
        Some((format!("{}/{}", pool.path.trim_end_matches('/'), image.volume), format))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{ResourceId, ResourceKind};
    use crate::spec::types::ByteSize;

    fn image() -> DesiredImage {
        DesiredImage {
            sha256: None,
            pool: "images".into(),
            volume: "ubuntu-24.04".into(),
            source: "https://example.com/noble.img".into(),
        }
    }

    fn volume_of(pool: &str, name: &str, format: ImageFormat) -> DesiredVolume {
        DesiredVolume {
            id: ResourceId::new(ResourceKind::Volume, "h1", format!("{pool}/{name}")),
            pool: pool.into(),
            name: name.into(),
            capacity: Some(ByteSize(1 << 30)),
            format,
            image: Some(image()),
            deletable: false,
        }
    }

    /// The example's storage: a base image in `images`, a VM disk made from it in `vms`.
    fn host() -> DesiredHost {
        let pool = |name: &str| DesiredPool {
            id: ResourceId::new(ResourceKind::Pool, "h1", name),
            name: name.into(),
            kind: PoolKind::Dir,
            path: format!("/var/lib/fabrik/{name}/"),
            source: None,
        };
        DesiredHost {
            name: "h1".into(),
            pools: vec![pool("images"), pool("vms")],
            volumes: vec![
                volume_of("images", "ubuntu-24.04", ImageFormat::Qcow2),
                volume_of("vms", "vm-root", ImageFormat::Qcow2),
            ],
            ..DesiredHost::default()
        }
    }

    #[test]
    fn a_base_image_has_no_backing_store() {
        let host = host();
        let xml = volume(&host, &host.volumes[0]);
        assert!(!xml.contains("backingStore"), "{xml}");
    }

    #[test]
    fn a_disk_made_from_an_image_is_backed_by_it() {
        let host = host();
        let xml = volume(&host, &host.volumes[1]);
        assert!(
            xml.contains(
                "<backingStore>\n    <path>/var/lib/fabrik/images/ubuntu-24.04</path>\n    <format type='qcow2'/>\n  </backingStore>"
            ),
            "{xml}"
        );
    }

    #[test]
    fn a_raw_disk_made_from_an_image_is_a_copy() {
        let host = host();
        let xml = volume(&host, &volume_of("vms", "vm-root", ImageFormat::Raw));
        assert!(!xml.contains("backingStore"), "{xml}");
    }
}
