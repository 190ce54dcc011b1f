//! The NoCloud seed disk: a FAT image labelled `CIDATA` holding `user-data`,
//! `meta-data` and `network-config` in its root, as cloud-init's NoCloud source looks
//! for it (by filesystem label, on any block device or cdrom).
//!
//! Written with `fatfs` (maintained, pure Rust, in memory: no loop device, no mkfs on
//! the front end). FAT rather than ISO 9660 because `fatfs` also reads an image back
//! (the tests check what a guest would see), and FAT is what cloud-init's own docs
//! give as the alternative to `genisoimage`. Built without `fatfs`'s clock, so every
//! timestamp is the FAT epoch and the same files give the same bytes: a seed changes
//! only when its contents do.

use std::io::{Cursor, Write};

use super::config::SeedFiles;

/// The label NoCloud finds its seed by.
pub const LABEL: &[u8; 11] = b"CIDATA     ";

/// The image's size: FAT12's smallest comfortable volume, far above three small files.
/// A seed is a few KiB of text; a VM's cloud-config over this is refused.
pub const IMAGE_BYTES: usize = 1024 * 1024;

/// A fixed volume serial, so the image is a function of its files alone.
const VOLUME_ID: u32 = 0x0c1d_a7a0;

#[derive(Debug, thiserror::Error)]
#[error("cannot build the seed image")]
pub struct SeedError {
    #[source]
    pub source: std::io::Error,
}

/// The image, as bytes to upload as a raw volume.
pub fn image(files: &SeedFiles) -> Result<Vec<u8>, SeedError> {
    build(files).map_err(|source| SeedError { source })
}

fn build(files: &SeedFiles) -> std::io::Result<Vec<u8>> {
    let mut disk = Cursor::new(vec![0u8; IMAGE_BYTES]);
    fatfs::format_volume(
        &mut disk,
        fatfs::FormatVolumeOptions::new().volume_label(*LABEL).volume_id(VOLUME_ID).fat_type(fatfs::FatType::Fat12),
    )?;
    disk.set_position(0);
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())?;
        for (name, text) in [
            ("user-data", &files.user_data),
            ("meta-data", &files.meta_data),
            ("network-config", &files.network_config),
        ] {
            let mut f = fs.root_dir().create_file(name)?;
            f.truncate()?;
            f.write_all(text.as_bytes())?;
            f.flush()?;
        }
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}

/// The label and files of an image, read back with the same library (what a guest
/// mounting it would see).
pub fn read(image: &[u8]) -> std::io::Result<(String, Vec<(String, String)>)> {
    use std::io::Read;
    let mut cursor = Cursor::new(image.to_vec());
    let fs = fatfs::FileSystem::new(&mut cursor, fatfs::FsOptions::new())?;
    let label = fs.volume_label();
    let mut files = Vec::new();
    for entry in fs.root_dir().iter() {
        let entry = entry?;
        if entry.is_file() {
            let mut text = String::new();
            entry.to_file().read_to_string(&mut text)?;
            files.push((entry.file_name(), text));
        }
    }
    files.sort();
    Ok((label, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> SeedFiles {
        SeedFiles {
            user_data: "#cloud-config\nhostname: a\n".into(),
            meta_data: "instance-id: a-1\nlocal-hostname: a\n".into(),
            network_config: "version: 2\n".into(),
            instance_id: "a-1".into(),
        }
    }

    #[test]
    fn the_image_reads_back_with_its_label_and_files() {
        let (label, got) = read(&image(&files()).unwrap()).unwrap();
        assert_eq!(label.trim_end(), "CIDATA");
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["meta-data", "network-config", "user-data"]);
        assert_eq!(got[2].1, files().user_data);
    }

    #[test]
    fn the_same_files_give_the_same_bytes() {
        assert_eq!(image(&files()).unwrap(), image(&files()).unwrap());
        let mut other = files();
        other.user_data.push_str("x: 1\n");
        assert_ne!(image(&files()).unwrap(), image(&other).unwrap());
    }
}
