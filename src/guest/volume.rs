//! The seed as a resource: which VMs get one, the volume it is stored in, the disk it
//! is attached as, and the hash of its contents the domain's mark records.
//!
//! A VM gets a seed when its guest has something to be told: its template gives
//! `user-data` or parameters, its tenant or itself gives SSH keys, or a NIC has an
//! address (allocated or declared) — unless that address is all and the VM has no disk
//! and its host no pool: no guest OS could read the seed. The seed is a raw volume
//! `<vm>+cidata` in the pool of the VM's first disk, else the host's first pool, else
//! `default` (as for a disk without pool or image): disk
//! volumes are `<vm>-<disk>` for a disk name without `-` and `<vm>+<disk>` only for one
//! with `-`, and names never hold `+`, so no disk and no image can ever be named so.
//!
//! What the seed is built from (template, parameters, keys) is kept beside the VM but
//! never serialized: secrets stay out of every JSON fabrik writes. Its SHA-256 is: the
//! domain's mark records it (`<fabrik:seed sha256=…/>`), so a changed seed is a change of
//! the VM the plan shows — by hash, never by content — and apply uploads the new image.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{self, SeedFiles, StaticAddress};
use crate::desired::{Desired, DesiredHost, DesiredVm, DesiredVolume, ResourceId};
use crate::spec::model::params::{self, Resolved};
use crate::spec::model::{ImageFormat, Spec};
use crate::spec::types::ByteSize;

/// The disk name the seed volume is named after (`<vm>+cidata`).
pub const DISK: &str = "cidata";

/// The seed of a desired VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredSeed {
    pub pool: String,
    pub volume: String,
    /// The guest device it is attached as, read-only (`vdb` after one virtio disk).
    pub target: String,
    /// SHA-256 of the seed's files (hex), as the domain's mark records it.
    pub sha256: String,
    /// What the files are made from. Not serialized: parameters may be secrets.
    #[serde(skip)]
    pub inputs: SeedInputs,
}

/// The template's user-data, the VM's parameter values and the SSH keys its guest accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedInputs {
    pub user_data: Option<String>,
    pub params: Vec<Resolved>,
    pub ssh_keys: Vec<String>,
}

/// The seed volume's name.
pub fn volume_name(vm: &str) -> String {
    format!("{vm}+{DISK}")
}

/// Whether a volume name is a seed's: no disk or image can be named `<vm>+cidata`.
pub fn is_seed(volume: &str) -> bool {
    volume.ends_with(&format!("+{DISK}"))
}

/// Gives every VM of `hosts` that needs one a seed and its volume. Called by
/// `desired::build` once NICs have MACs and addresses, disks their pools.
pub fn add(spec: &Spec, hosts: &mut [DesiredHost]) {
    let entries: std::collections::HashMap<String, &crate::spec::model::Vm> =
        spec.vms.iter().flat_map(|e| e.instance_names().into_iter().map(move |n| (n, e))).collect();
    for host in hosts.iter_mut() {
        let mut volumes = Vec::new();
        for vm in &mut host.vms {
            let Some(entry) = entries.get(&vm.name) else { continue };
            let template = entry.template.as_ref().and_then(|t| spec.template(&t.value));
            let user_data = template.and_then(|t| t.user_data.as_ref()).map(|u| u.value.clone());
            let params = template.map(|t| params::resolve(&t.params, &entry.params)).unwrap_or_default();
            let tenant = spec.tenants.iter().find(|t| t.name.value == vm.tenant);
            let ssh_keys: Vec<String> = tenant
                .map(|t| t.ssh_keys.as_slice())
                .unwrap_or_default()
                .iter()
                .chain(entry.ssh_keys.iter())
                .map(|k| k.value.trim().to_string())
                .collect();
            let declares_params = template.is_some_and(|t| !t.params.is_empty());
            let addressed = vm.nics.iter().any(|n| n.address.is_some());
            let told = user_data.is_some() || declares_params || !ssh_keys.is_empty();
            let pool = match (vm.disks.first(), host.pools.first()) {
                (Some(d), _) => d.pool.clone(),
                (None, Some(p)) => p.name.clone(),
                // A VM with neither disk nor pool and only an address to be told has no
                // guest OS that could read a seed (the testbed's diskless VMs).
                (None, None) if !told => continue,
                (None, None) => "default".to_string(),
            };
            if !told && !addressed {
                continue;
            }
            let virtio = vm.disks.iter().filter(|d| d.bus == crate::spec::model::DiskBus::Virtio).count();
            let volume = volume_name(&vm.name);
            volumes.push(DesiredVolume {
                id: crate::desired::storage::volume_id(&host.name, &pool, &volume),
                pool: pool.clone(),
                name: volume.clone(),
                capacity: Some(ByteSize(super::seed::IMAGE_BYTES as u64)),
                format: ImageFormat::Raw,
                image: None,
                deletable: true,
            });
            let mut seed = DesiredSeed {
                pool,
                volume,
                target: format!("vd{}", crate::desired::build::disk_letter(virtio)),
                sha256: String::new(),
                inputs: SeedInputs { user_data, params, ssh_keys },
            };
            seed.sha256 = files(vm, &seed).map(|f| sha256(&f)).unwrap_or_default();
            vm.seed = Some(Box::new(seed));
        }
        host.volumes.extend(volumes);
    }
}

/// The desired state with every seed's hash made again from the VMs as they are now:
/// plan and apply call it after keeping live MACs and addresses, which the seed holds.
pub fn rehash(desired: &Desired) -> Desired {
    let mut out = desired.clone();
    rehash_in(&mut out);
    out
}

/// [`rehash`] in place.
pub fn rehash_in(desired: &mut Desired) {
    for vm in desired.hosts.iter_mut().flat_map(|h| h.vms.iter_mut()) {
        let Some(seed) = &vm.seed else { continue };
        let sha = files(vm, seed).map(|f| sha256(&f)).unwrap_or_default();
        if let Some(seed) = vm.seed.as_mut() {
            seed.sha256 = sha;
        }
    }
}

/// The seed files of a VM.
pub fn files(vm: &DesiredVm, seed: &DesiredSeed) -> Result<SeedFiles, config::GuestError> {
    let nics = super::nics(vm, |n| {
        n.address.as_ref().map(|a| StaticAddress {
            address: a.ip,
            prefix: a.prefix,
            gateway: a.gateway,
            dns: a.dns.clone(),
        })
    });
    config::build(
        seed.inputs.user_data.as_deref(),
        &super::facts(vm),
        &seed.inputs.params,
        &seed.inputs.ssh_keys,
        &nics,
    )
}

/// SHA-256 of a seed's files, each length-prefixed so no two sets of files share it.
pub fn sha256(files: &SeedFiles) -> String {
    let mut h = Sha256::new();
    for part in [&files.user_data, &files.meta_data, &files.network_config] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex(&h.finalize())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The image to upload: the FAT `CIDATA` volume holding the VM's seed files.
#[derive(Clone, PartialEq, Eq)]
pub struct SeedImage(pub std::sync::Arc<Vec<u8>>);

/// Never the bytes: they hold the guest's secrets.
impl std::fmt::Debug for SeedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SeedImage({} bytes)", self.0.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Config(#[from] config::GuestError),
    #[error(transparent)]
    Seed(#[from] super::seed::SeedError),
}

/// The seed image of a VM that has a seed.
pub fn image(vm: &DesiredVm, seed: &DesiredSeed) -> Result<SeedImage, ImageError> {
    let files = files(vm, seed)?;
    Ok(SeedImage(std::sync::Arc::new(super::seed::image(&files)?)))
}

/// The id of a VM's seed volume, for the graph's edge VM → volume.
pub fn volume_id(host: &str, seed: &DesiredSeed) -> ResourceId {
    crate::desired::storage::volume_id(host, &seed.pool, &seed.volume)
}

/// How a VM's seed differs from the one its live domain's mark records: `(from, to)` as
/// `sha256:<first 12 hex digits>` (`none` where there is none), or `None` when the same.
/// Only hashes: a seed holds secrets.
pub fn change(seed: Option<&DesiredSeed>, live_xml: &str) -> Option<(String, String)> {
    let want = seed.map(|s| s.sha256.clone());
    let have = crate::driver::libvirt::owner::seed(live_xml);
    if want == have {
        return None;
    }
    let word =
        |h: Option<String>| h.map_or_else(|| "none".to_string(), |h| format!("sha256:{}", &h[..h.len().min(12)]));
    Some((word(have), word(want)))
}
