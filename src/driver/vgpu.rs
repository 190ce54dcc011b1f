//! NVIDIA vGPU devices through sysfs: how a host offers vGPUs on a GPU, which types, and
//! creating and removing the device a VM's MIG slice or time slice reaches it through.
//!
//! Two modes, told apart by what the GPU's sysfs directory has:
//!
//! * **SR-IOV VFs** (vGPU 17+ on Ampere and later: Hopper, Blackwell). The GPU's
//!   virtual functions (`virtfn<N>`, enabled by NVIDIA's `sriov-manage -e`) each carry
//!   `nvidia/creatable_vgpu_types` (lines `<id> : <name>`) and `nvidia/current_vgpu_type`
//!   (`0` when free). Creating a vGPU writes the type's id to a free VF's
//!   `current_vgpu_type`; the VM then gets that VF as a PCI hostdev. Removing writes `0`.
//! * **mdev** (older stacks). The GPU has `mdev_supported_types/<type>/` with `name`,
//!   `available_instances` and `create`; writing a UUID to `create` makes
//!   `/sys/bus/mdev/devices/<uuid>`, removed by writing `1` to its `remove`. The domain
//!   names the mdev by that UUID (`render::domain::mdev_uuid`).
//!
//! A MIG-backed vGPU type is named after the MIG profile it sits on: `3g.40gb` on an
//! H100 is `NVIDIA H100-3-40C` (compute slices, memory in GB, `C` for compute), so the
//! type of a profile is found by that `-<slices>-<gb>C` suffix among the types the host
//! offers ([`type_for_mig`]); nothing is assumed about ids, which differ per driver.
//!
//! Everything here reads and writes under a sysfs root (`/sys` on a host), so tests run
//! it on a fake tree in a temporary directory (`FABRIK_SYSFS_ROOT` points the NVML
//! driver at one). Apply calls it through [`super::Gpus::create_vgpu`]: a VM's action
//! creates its devices before it defines and starts the domain, and the action of a MIG
//! instance removes the device on it before destroying it, so after a reboot the order
//! is hugepages → VFs → MIG mode → GPU instances → vGPU devices → VMs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DriverError, ErrorKind};
use crate::spec::types::PciAddress;

type Result<T> = std::result::Result<T, DriverError>;

/// How a GPU offers vGPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VgpuMode {
    /// Vendor-specific VFIO on SR-IOV virtual functions (`current_vgpu_type`).
    SriovVf,
    /// Mediated devices (`mdev_supported_types`).
    Mdev,
}

/// A vGPU type the host offers on a GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VgpuType {
    /// The numeric id (SR-IOV) or the mdev type directory (`nvidia-557`).
    pub id: String,
    /// `NVIDIA H100-3-40C`.
    pub name: String,
}

/// A vGPU device fabrik made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VgpuDevice {
    /// The VF that carries it: the VM gets this PCI device.
    Vf(PciAddress),
    /// The mdev's UUID.
    Mdev(String),
}

/// Sysfs under a root: `/sys` on a host, a temporary tree in tests.
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> DriverError {
    move |e| {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::Refused,
            _ => ErrorKind::Failed,
        };
        DriverError::new(kind, format!("{what}: {e}"))
    }
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// `/sys`, or the tree `FABRIK_SYSFS_ROOT` names (tests, a twin's fake tree).
    pub fn host() -> Sysfs {
        Sysfs::new(std::env::var_os("FABRIK_SYSFS_ROOT").map_or_else(|| PathBuf::from("/sys"), PathBuf::from))
    }

    /// Creates the vGPU for MIG profile `profile` on `gpu`: the type the host offers for
    /// it ([`type_for_mig`]), on a free VF or as the mdev `uuid`. An mdev `uuid` that
    /// exists already is kept (a rerun).
    pub fn create_for_mig(
        &self,
        gpu: PciAddress,
        profile: &str,
        uuid: &str,
        vf: Option<PciAddress>,
    ) -> Result<VgpuDevice> {
        if self.mode(gpu) == Some(VgpuMode::Mdev) && self.root.join("bus/mdev/devices").join(uuid).exists() {
            return Ok(VgpuDevice::Mdev(uuid.to_string()));
        }
        if self.mode(gpu) == Some(VgpuMode::SriovVf)
            && let Some(vf) = vf
            && let Some(kept) = self.kept_on_vf(gpu, vf, profile)?
        {
            return Ok(kept);
        }
        // No VF planned (the instance's placement is past the GPU's VFs): the last free
        // VF, as the VFs from the first are the ones planned for placements.
        let fallback = match (self.mode(gpu), vf) {
            (Some(VgpuMode::SriovVf), None) => {
                Some(self.vfs(gpu).into_iter().rev().find(|v| self.is_free(*v)).ok_or_else(|| {
                    DriverError::new(ErrorKind::Refused, format!("GPU {gpu} has no free virtual function for a vGPU"))
                })?)
            }
            _ => None,
        };
        let types = self.types(gpu)?;
        let t = type_for_mig(&types, profile).ok_or_else(|| {
            let offered: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
            DriverError::new(
                ErrorKind::Refused,
                format!(
                    "GPU {gpu} offers no vGPU type for MIG profile {profile} now (offered: {}); the MIG instance must exist and be free",
                    if offered.is_empty() { "none".to_string() } else { offered.join(", ") }
                ),
            )
        })?;
        match (self.mode(gpu), vf.or(fallback)) {
            (Some(VgpuMode::SriovVf), Some(vf)) => self.create_on_vf(gpu, vf, t),
            _ => self.create(gpu, t, uuid),
        }
    }

    /// The planned VF when it carries a vGPU already (a rerun, or a VM started again
    /// on its kept device), as an mdev of the UUID is kept. Checked before the offered
    /// types: once every instance of the profile carries a vGPU, no VF offers its type
    /// any more. A type another VF still offers for the profile that differs from the
    /// one written is another vGPU: refused, the VF in use.
    fn kept_on_vf(&self, gpu: PciAddress, vf: PciAddress, profile: &str) -> Result<Option<VgpuDevice>> {
        if !self.vfs(gpu).contains(&vf) {
            return Ok(None);
        }
        let now = self.read(&self.device(vf).join("nvidia/current_vgpu_type"))?;
        if now == "0" || now.is_empty() {
            return Ok(None);
        }
        let offered: Vec<VgpuType> = self
            .vfs(gpu)
            .into_iter()
            .filter_map(|v| self.read(&self.device(v).join("nvidia/creatable_vgpu_types")).ok())
            .flat_map(|t| parse_creatable(&t))
            .collect();
        match type_for_mig(&offered, profile) {
            Some(t) if t.id != now => Err(DriverError::new(
                ErrorKind::Refused,
                format!("VF {vf} of GPU {gpu} already carries vGPU type {now} (in use)"),
            )),
            _ => Ok(Some(VgpuDevice::Vf(vf))),
        }
    }

    /// Writes type `t` to the VF the plan chose; the same type there already is a rerun,
    /// another is a VF in use.
    fn create_on_vf(&self, gpu: PciAddress, vf: PciAddress, t: &VgpuType) -> Result<VgpuDevice> {
        if !self.vfs(gpu).contains(&vf) {
            return Err(DriverError::new(ErrorKind::NotFound, format!("{vf} is not a virtual function of GPU {gpu}")));
        }
        let path = self.device(vf).join("nvidia/current_vgpu_type");
        match self.read(&path)?.as_str() {
            "0" | "" => self.write(&path, &t.id)?,
            now if now == t.id => {}
            now => {
                return Err(DriverError::new(
                    ErrorKind::Refused,
                    format!("VF {vf} of GPU {gpu} already carries vGPU type {now} (in use)"),
                ));
            }
        }
        Ok(VgpuDevice::Vf(vf))
    }

    /// The GPU's vGPU side as it is: the mode, its VFs, and the devices (a VF with a type
    /// written, an mdev under the GPU); `None` when it offers no vGPUs.
    pub fn observe(&self, gpu: PciAddress) -> Option<crate::live::LiveVgpu> {
        let mode = self.mode(gpu)?;
        let (vfs, devices) = match mode {
            VgpuMode::SriovVf => {
                let typed = self.vf_types(gpu).unwrap_or_default();
                (self.vfs(gpu), typed.into_iter().map(|(vf, _)| VgpuDevice::Vf(vf)).collect())
            }
            VgpuMode::Mdev => {
                let mdevs = std::fs::read_dir(self.device(gpu))
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.len() == 36 && n.chars().filter(|c| *c == '-').count() == 4)
                    .map(VgpuDevice::Mdev);
                let mut mdevs: Vec<VgpuDevice> = mdevs.collect();
                mdevs.sort_by_key(|d| format!("{d:?}"));
                (Vec::new(), mdevs)
            }
        };
        Some(crate::live::LiveVgpu { mode, vfs, devices })
    }

    /// Removes the mdev `uuid` if it is there. On SR-IOV VFs the VF carries no UUID, so
    /// which VF is the VM's is not known here: refused, saying so.
    pub fn remove_by_uuid(&self, gpu: PciAddress, uuid: &str) -> Result<()> {
        match self.mode(gpu) {
            Some(VgpuMode::SriovVf) => Err(DriverError::new(
                ErrorKind::Unsupported,
                format!(
                    "vGPU {uuid} on GPU {gpu} is on an SR-IOV VF, which fabrik does not track by UUID yet: write 0 to the VF's nvidia/current_vgpu_type"
                ),
            )),
            _ if !self.root.join("bus/mdev/devices").join(uuid).exists() => Ok(()),
            _ => self.remove(&VgpuDevice::Mdev(uuid.to_string())),
        }
    }

    /// Removes the vGPU on `vf` of `gpu` (writes `0` to its `current_vgpu_type`); a VF
    /// without one is removed already.
    pub fn remove_from_vf(&self, gpu: PciAddress, vf: PciAddress) -> Result<()> {
        if !self.vfs(gpu).contains(&vf) {
            return Err(DriverError::new(ErrorKind::NotFound, format!("{vf} is not a virtual function of GPU {gpu}")));
        }
        let path = self.device(vf).join("nvidia/current_vgpu_type");
        match self.read(&path)?.as_str() {
            "0" | "" => Ok(()),
            _ => self.remove(&VgpuDevice::Vf(vf)),
        }
    }

    fn device(&self, address: PciAddress) -> PathBuf {
        self.root.join("bus/pci/devices").join(address.to_string())
    }

    fn read(&self, path: &Path) -> Result<String> {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(io(format!("cannot read {}", path.display())))
    }

    fn write(&self, path: &Path, value: &str) -> Result<()> {
        std::fs::write(path, value).map_err(io(format!("cannot write `{value}` to {}", path.display())))
    }

    /// The GPU's virtual functions, in `virtfn` order.
    fn vfs(&self, gpu: PciAddress) -> Vec<PciAddress> {
        let Ok(entries) = std::fs::read_dir(self.device(gpu)) else { return Vec::new() };
        let mut vfs: Vec<(u32, PciAddress)> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let n: u32 = e.file_name().to_str()?.strip_prefix("virtfn")?.parse().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                let address = PciAddress::parse(target.file_name()?.to_str()?).ok()?;
                Some((n, address))
            })
            .collect();
        vfs.sort_unstable();
        vfs.into_iter().map(|(_, a)| a).collect()
    }

    /// How the host offers vGPUs on `gpu`, if it does.
    pub fn mode(&self, gpu: PciAddress) -> Option<VgpuMode> {
        let vf_types = |vf: PciAddress| self.device(vf).join("nvidia/creatable_vgpu_types").is_file();
        if self.vfs(gpu).into_iter().any(vf_types) {
            Some(VgpuMode::SriovVf)
        } else if self.device(gpu).join("mdev_supported_types").is_dir() {
            Some(VgpuMode::Mdev)
        } else {
            None
        }
    }

    /// The vGPU types the host offers on `gpu` now (a free VF's creatable types, or the
    /// mdev types with an instance available).
    pub fn types(&self, gpu: PciAddress) -> Result<Vec<VgpuType>> {
        match self.mode(gpu) {
            Some(VgpuMode::SriovVf) => {
                let Some(vf) = self.free_vf(gpu)? else { return Ok(Vec::new()) };
                let text = self.read(&self.device(vf).join("nvidia/creatable_vgpu_types"))?;
                Ok(parse_creatable(&text))
            }
            Some(VgpuMode::Mdev) => {
                let dir = self.device(gpu).join("mdev_supported_types");
                let entries = std::fs::read_dir(&dir).map_err(io(format!("cannot list {}", dir.display())))?;
                let mut out = Vec::new();
                for e in entries.flatten() {
                    let available = self.read(&e.path().join("available_instances")).unwrap_or_default();
                    if available.parse::<u32>().unwrap_or(0) == 0 {
                        continue;
                    }
                    let id = e.file_name().to_string_lossy().into_owned();
                    out.push(VgpuType { id, name: self.read(&e.path().join("name"))? });
                }
                out.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(out)
            }
            None => Err(DriverError::new(
                ErrorKind::Unsupported,
                format!(
                    "GPU {gpu} offers no vGPUs: no VF with `nvidia/creatable_vgpu_types`, no `mdev_supported_types`"
                ),
            )),
        }
    }

    fn is_free(&self, vf: PciAddress) -> bool {
        self.read(&self.device(vf).join("nvidia/current_vgpu_type")).is_ok_and(|t| t == "0")
    }

    /// The first VF of `gpu` without a vGPU type.
    fn free_vf(&self, gpu: PciAddress) -> Result<Option<PciAddress>> {
        for vf in self.vfs(gpu) {
            if self.read(&self.device(vf).join("nvidia/current_vgpu_type"))? == "0" {
                return Ok(Some(vf));
            }
        }
        Ok(None)
    }

    /// Creates a vGPU of type `t` on `gpu`: on a free VF, or as the mdev `uuid`.
    pub fn create(&self, gpu: PciAddress, t: &VgpuType, uuid: &str) -> Result<VgpuDevice> {
        match self.mode(gpu) {
            Some(VgpuMode::SriovVf) => {
                let vf = self.free_vf(gpu)?.ok_or_else(|| {
                    DriverError::new(ErrorKind::Refused, format!("GPU {gpu} has no free virtual function for a vGPU"))
                })?;
                self.write(&self.device(vf).join("nvidia/current_vgpu_type"), &t.id)?;
                Ok(VgpuDevice::Vf(vf))
            }
            Some(VgpuMode::Mdev) => {
                let create = self.device(gpu).join("mdev_supported_types").join(&t.id).join("create");
                self.write(&create, uuid)?;
                Ok(VgpuDevice::Mdev(uuid.to_string()))
            }
            None => Err(DriverError::new(ErrorKind::Unsupported, format!("GPU {gpu} offers no vGPUs"))),
        }
    }

    /// Removes a vGPU fabrik made.
    pub fn remove(&self, device: &VgpuDevice) -> Result<()> {
        match device {
            VgpuDevice::Vf(vf) => self.write(&self.device(*vf).join("nvidia/current_vgpu_type"), "0"),
            VgpuDevice::Mdev(uuid) => self.write(&self.root.join("bus/mdev/devices").join(uuid).join("remove"), "1"),
        }
    }

    /// The vGPU type on each VF of `gpu` that has one: `(vf, type id)`.
    pub fn vf_types(&self, gpu: PciAddress) -> Result<Vec<(PciAddress, String)>> {
        let mut out = Vec::new();
        for vf in self.vfs(gpu) {
            let current = self.read(&self.device(vf).join("nvidia/current_vgpu_type"))?;
            if current != "0" {
                out.push((vf, current));
            }
        }
        Ok(out)
    }
}

/// `creatable_vgpu_types`: a header line, then `<id> : <name>` per type.
pub fn parse_creatable(text: &str) -> Vec<VgpuType> {
    text.lines()
        .filter_map(|l| {
            let (id, name) = l.split_once(':')?;
            let id = id.trim();
            id.chars()
                .all(|c| c.is_ascii_digit())
                .then(|| VgpuType { id: id.to_string(), name: name.trim().to_string() })
        })
        .filter(|t| !t.id.is_empty())
        .collect()
}

/// The vGPU type that carries MIG profile `profile` (`3g.40gb`, `1g.10gb+me`): the one
/// whose name ends in `-<slices>-<gb>C` (`+me` profiles have an `ME` variant:
/// `-1-10CME`).
pub fn type_for_mig<'a>(types: &'a [VgpuType], profile: &str) -> Option<&'a VgpuType> {
    let (base, media) = match profile.strip_suffix("+me") {
        Some(b) => (b, "ME"),
        None => (profile, ""),
    };
    let (slices, memory) = base.split_once("g.")?;
    let gb = memory.strip_suffix("gb")?;
    let suffix = format!("-{slices}-{gb}C{media}");
    types.iter().find(|t| t.name.ends_with(&suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H100_TYPES: &str = "ID    : vGPU Name\n\
        1061  : NVIDIA H100-1-10C\n\
        1062  : NVIDIA H100-1-10CME\n\
        1063  : NVIDIA H100-2-20C\n\
        1064  : NVIDIA H100-3-40C\n\
        1065  : NVIDIA H100-4-40C\n\
        1066  : NVIDIA H100-7-80C\n\
        1067  : NVIDIA H100-80C\n";

    fn gpu() -> PciAddress {
        PciAddress::parse("0000:3b:00.0").unwrap()
    }

    /// A GPU with `vfs` SR-IOV VFs, each offering the H100 types.
    fn sriov_tree(vfs: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let devices = dir.path().join("bus/pci/devices");
        std::fs::create_dir_all(devices.join(gpu().to_string())).unwrap();
        for n in 0..vfs {
            let vf = format!("0000:3b:00.{}", n + 4);
            let nv = devices.join(&vf).join("nvidia");
            std::fs::create_dir_all(&nv).unwrap();
            std::fs::write(nv.join("creatable_vgpu_types"), H100_TYPES).unwrap();
            std::fs::write(nv.join("current_vgpu_type"), "0\n").unwrap();
            std::os::unix::fs::symlink(format!("../{vf}"), devices.join(gpu().to_string()).join(format!("virtfn{n}")))
                .unwrap();
        }
        dir
    }

    fn mdev_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let types = dir.path().join("bus/pci/devices").join(gpu().to_string()).join("mdev_supported_types");
        for (id, name, available) in [("nvidia-700", "GRID A100-3-20C", 2), ("nvidia-701", "GRID A100-7-40C", 0)] {
            std::fs::create_dir_all(types.join(id)).unwrap();
            std::fs::write(types.join(id).join("name"), name).unwrap();
            std::fs::write(types.join(id).join("available_instances"), available.to_string()).unwrap();
            std::fs::write(types.join(id).join("create"), "").unwrap();
        }
        dir
    }

    #[test]
    fn mig_profiles_map_to_the_types_the_host_names() {
        let types = parse_creatable(H100_TYPES);
        assert_eq!(types.len(), 7);
        assert_eq!(type_for_mig(&types, "3g.40gb").map(|t| t.id.as_str()), Some("1064"));
        assert_eq!(type_for_mig(&types, "1g.10gb+me").map(|t| t.id.as_str()), Some("1062"));
        assert_eq!(type_for_mig(&types, "1g.10gb").map(|t| t.id.as_str()), Some("1061"));
        assert_eq!(type_for_mig(&types, "2g.35gb"), None);
    }

    #[test]
    fn three_vgpus_on_vfs_of_one_gpu_and_removal_frees_the_vf() {
        let tree = sriov_tree(4);
        let sys = Sysfs::new(tree.path());
        assert_eq!(sys.mode(gpu()), Some(VgpuMode::SriovVf));
        let types = sys.types(gpu()).unwrap();
        let made: Vec<VgpuDevice> = ["1g.10gb", "2g.20gb", "3g.40gb"]
            .iter()
            .map(|p| sys.create(gpu(), type_for_mig(&types, p).unwrap(), "unused").unwrap())
            .collect();
        let vf = |n: u8| VgpuDevice::Vf(PciAddress::parse(&format!("0000:3b:00.{n}")).unwrap());
        assert_eq!(made, vec![vf(4), vf(5), vf(6)]);
        let on = sys.vf_types(gpu()).unwrap();
        assert_eq!(on.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(), ["1061", "1063", "1064"]);
        sys.remove(&made[1]).unwrap();
        assert_eq!(sys.vf_types(gpu()).unwrap().len(), 2);
        // The freed VF is the next one used.
        assert_eq!(sys.create(gpu(), &types[0], "unused").unwrap(), vf(5));
    }

    #[test]
    fn a_gpu_without_free_vfs_refuses() {
        let tree = sriov_tree(1);
        let sys = Sysfs::new(tree.path());
        let types = sys.types(gpu()).unwrap();
        sys.create(gpu(), &types[0], "unused").unwrap();
        assert_eq!(sys.types(gpu()).unwrap(), vec![], "no free VF: no creatable types");
        assert_eq!(sys.create(gpu(), &types[0], "unused").unwrap_err().kind, ErrorKind::Refused);
    }

    #[test]
    fn mdev_mode_lists_available_types_and_creates_by_uuid() {
        let tree = mdev_tree();
        let sys = Sysfs::new(tree.path());
        assert_eq!(sys.mode(gpu()), Some(VgpuMode::Mdev));
        let types = sys.types(gpu()).unwrap();
        assert_eq!(types, vec![VgpuType { id: "nvidia-700".into(), name: "GRID A100-3-20C".into() }]);
        let t = type_for_mig(&types, "3g.20gb").unwrap();
        let uuid = "8a1c0a52-0f5e-8c2b-9d1e-0123456789ab";
        assert_eq!(sys.create(gpu(), t, uuid).unwrap(), VgpuDevice::Mdev(uuid.into()));
        let written = std::fs::read_to_string(
            tree.path().join("bus/pci/devices/0000:3b:00.0/mdev_supported_types/nvidia-700/create"),
        )
        .unwrap();
        assert_eq!(written, uuid);
    }

    #[test]
    fn a_mig_vgpu_by_profile_kept_on_rerun_and_removed_by_uuid() {
        let tree = mdev_tree();
        let sys = Sysfs::new(tree.path());
        let uuid = "8a1c0a52-0f5e-8c2b-9d1e-0123456789ab";
        let create = tree.path().join("bus/pci/devices/0000:3b:00.0/mdev_supported_types/nvidia-700/create");
        assert_eq!(sys.create_for_mig(gpu(), "3g.20gb", uuid, None).unwrap(), VgpuDevice::Mdev(uuid.into()));
        assert_eq!(std::fs::read_to_string(&create).unwrap(), uuid);
        // The kernel makes the device; a rerun keeps it and writes nothing.
        let dev = tree.path().join("bus/mdev/devices").join(uuid);
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("remove"), "").unwrap();
        std::fs::write(&create, "").unwrap();
        assert_eq!(sys.create_for_mig(gpu(), "3g.20gb", uuid, None).unwrap(), VgpuDevice::Mdev(uuid.into()));
        assert_eq!(std::fs::read_to_string(&create).unwrap(), "");
        // A type with no instance available is not offered.
        let e = sys.create_for_mig(gpu(), "7g.40gb", "other", None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused);
        assert!(e.message.contains("offered: GRID A100-3-20C"), "{e:?}");
        sys.remove_by_uuid(gpu(), uuid).unwrap();
        assert_eq!(std::fs::read_to_string(dev.join("remove")).unwrap(), "1");
        // One that is not there is removed already.
        sys.remove_by_uuid(gpu(), "00000000-0000-8000-8000-000000000000").unwrap();
    }

    #[test]
    fn on_vfs_a_mig_vgpu_takes_a_free_vf_and_is_not_removed_by_uuid() {
        let tree = sriov_tree(2);
        let sys = Sysfs::new(tree.path());
        // Not planned on a VF: the last free one.
        let vf = VgpuDevice::Vf(PciAddress::parse("0000:3b:00.5").unwrap());
        assert_eq!(sys.create_for_mig(gpu(), "3g.40gb", "u", None).unwrap(), vf);
        assert_eq!(sys.vf_types(gpu()).unwrap()[0].1, "1064");
        assert_eq!(sys.remove_by_uuid(gpu(), "u").unwrap_err().kind, ErrorKind::Unsupported);
    }

    #[test]
    fn on_vfs_the_planned_vf_gets_the_type_and_is_observed() {
        let tree = sriov_tree(2);
        let sys = Sysfs::new(tree.path());
        let second = PciAddress::parse("0000:3b:00.5").unwrap();
        assert_eq!(sys.create_for_mig(gpu(), "3g.40gb", "u", Some(second)).unwrap(), VgpuDevice::Vf(second));
        // Again: the same type there is a rerun.
        assert_eq!(sys.create_for_mig(gpu(), "3g.40gb", "u", Some(second)).unwrap(), VgpuDevice::Vf(second));
        let seen = sys.observe(gpu()).unwrap();
        assert_eq!(seen.mode, VgpuMode::SriovVf);
        assert_eq!(seen.vfs.len(), 2);
        assert_eq!(seen.devices, [VgpuDevice::Vf(second)]);
        let other = PciAddress::parse("0000:3b:01.0").unwrap();
        assert_eq!(sys.create_for_mig(gpu(), "3g.40gb", "u", Some(other)).unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn a_vfs_vgpu_is_removed_by_its_vf_and_kept_on_its_planned_vf() {
        let tree = sriov_tree(2);
        let sys = Sysfs::new(tree.path());
        let second = PciAddress::parse("0000:3b:00.5").unwrap();
        let current = tree.path().join("bus/pci/devices/0000:3b:00.5/nvidia/current_vgpu_type");
        sys.create_for_mig(gpu(), "3g.40gb", "u", Some(second)).unwrap();
        // No VF offers the type any more (its MIG instances all carry a vGPU): the
        // planned VF carrying one is kept.
        std::fs::write(
            tree.path().join("bus/pci/devices/0000:3b:00.4/nvidia/creatable_vgpu_types"),
            "ID : vGPU Name\n",
        )
        .unwrap();
        std::fs::write(
            tree.path().join("bus/pci/devices/0000:3b:00.5/nvidia/creatable_vgpu_types"),
            "ID : vGPU Name\n",
        )
        .unwrap();
        assert_eq!(sys.create_for_mig(gpu(), "3g.40gb", "u", Some(second)).unwrap(), VgpuDevice::Vf(second));
        // A type the host offers for the profile that is not the one written: in use.
        std::fs::write(&current, "1061\n").unwrap();
        std::fs::write(tree.path().join("bus/pci/devices/0000:3b:00.4/nvidia/creatable_vgpu_types"), H100_TYPES)
            .unwrap();
        assert_eq!(sys.create_for_mig(gpu(), "3g.40gb", "u", Some(second)).unwrap_err().kind, ErrorKind::Refused);
        sys.remove_from_vf(gpu(), second).unwrap();
        assert_eq!(std::fs::read_to_string(&current).unwrap().trim(), "0");
        // Again: removed already.
        sys.remove_from_vf(gpu(), second).unwrap();
        let other = PciAddress::parse("0000:3b:01.0").unwrap();
        assert_eq!(sys.remove_from_vf(gpu(), other).unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn a_gpu_without_vgpu_support_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bus/pci/devices/0000:3b:00.0")).unwrap();
        let sys = Sysfs::new(dir.path());
        assert_eq!(sys.mode(gpu()), None);
        assert_eq!(sys.types(gpu()).unwrap_err().kind, ErrorKind::Unsupported);
    }
}
