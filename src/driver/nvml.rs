//! GPUs and MIG through NVML: [`NvmlDriver`], the real [`Gpus`].
//!
//! libnvidia-ml is loaded at run time (nvml-wrapper), so fabrik builds and runs where
//! there is none; it is then an `Unreachable` error that says what to install. What
//! nvml-wrapper wraps (identity, memory, affinity, NVLink, MIG mode) goes through it;
//! MIG instances go through [`raw`], a small safe layer over nvml-wrapper-sys.
//!
//! Tested against the simulated library built in the workspace (`sim-nvml/`,
//! `tests/nvml_sim.rs`), so this code runs in CI without a GPU.

pub mod code;
pub mod raw;

use std::ffi::OsStr;
use std::path::Path;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings as sys;

use self::code::Code;
use self::raw::{GpuInstance, Placement, Raw};
use crate::driver::{DriverError, ErrorKind, Gpus, Result};
use crate::hw::{GpuModel, mig};
use crate::live::{LiveGpu, LiveMigInstance, MigMode};
use crate::spec::decode::Word;
use crate::spec::types::{ByteSize, CpuSet, PciAddress};

/// Where the NVIDIA driver installs NVML, tried in order when no path is given: the
/// versioned name is what the driver ships; the bare one comes with development
/// packages (and is nvml-wrapper's default).
const LIB_NAMES: [&str; 2] = ["libnvidia-ml.so.1", "libnvidia-ml.so"];

/// 64-bit words of CPU affinity asked for: 4096 CPUs, more than any host has.
const CPU_MASK_WORDS: usize = 64;

/// NVML on this host.
pub struct NvmlDriver {
    nvml: Nvml,
}

impl std::fmt::Debug for NvmlDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlDriver").finish_non_exhaustive()
    }
}

impl NvmlDriver {
    /// Loads libnvidia-ml (from `lib_path`, or where the NVIDIA driver puts it) and
    /// initializes it.
    pub fn open(lib_path: Option<&Path>) -> Result<NvmlDriver> {
        let names: Vec<&OsStr> = match lib_path {
            Some(p) => vec![p.as_os_str()],
            None => LIB_NAMES.iter().map(OsStr::new).collect(),
        };
        let mut why = vec![];
        for name in &names {
            match Nvml::builder().lib_path(name).init() {
                Ok(nvml) => return Ok(NvmlDriver { nvml }),
                Err(NvmlError::LibloadingError(e)) => why.push(e.to_string()),
                Err(NvmlError::FailedToLoadSymbol(e)) => {
                    return Err(DriverError::new(
                        ErrorKind::Unreachable,
                        format!("{} is not libnvidia-ml: {e}", name.to_string_lossy()),
                    )
                    .with_code(Code::FUNCTION_NOT_FOUND.name()));
                }
                Err(e) => return Err(wrapper_error(e, format!("initialize NVML from {}", name.to_string_lossy()))),
            }
        }
        let tried: Vec<String> = names.iter().map(|n| n.to_string_lossy().into_owned()).collect();
        Err(DriverError::new(
            ErrorKind::Unreachable,
            format!(
                "cannot load NVML ({}): {}; install the NVIDIA driver, which ships libnvidia-ml.so.1 \
                 (Debian: `libnvidia-ml1`, from non-free); on a machine without GPUs, use `--sim`",
                tried.join(", "),
                why.join("; ")
            ),
        )
        .with_code(Code::LIBRARY_NOT_FOUND.name()))
    }

    fn raw(&self) -> Raw<'_> {
        Raw::new(self.nvml.lib())
    }

    fn device(&self, gpu: PciAddress) -> Result<Device<'_>> {
        let bus_id = format!("{:08X}:{:02X}:{:02X}.{:X}", gpu.domain, gpu.bus, gpu.device, gpu.function);
        self.nvml.device_by_pci_bus_id(bus_id).map_err(|e| wrapper_error(e, format!("find GPU {gpu}")))
    }

    /// A failed MIG call: `NOT_SUPPORTED` on a GPU whose MIG is only off is refused.
    fn mig_error(&self, dev: &Device<'_>, err: DriverError) -> DriverError {
        let off = dev.mig_mode().is_ok_and(|m| m.current == sys::NVML_DEVICE_MIG_DISABLE);
        if off && err.code.as_deref() == Some(Code::NOT_SUPPORTED.name()) { not_enabled(err) } else { err }
    }

    fn read_gpu(&self, index: u32) -> Result<(LiveGpu, Vec<PciAddress>)> {
        let dev = self.nvml.device_by_index(index).map_err(|e| wrapper_error(e, format!("open GPU {index}")))?;
        let pci = dev.pci_info().map_err(|e| wrapper_error(e, format!("read GPU {index}'s PCI address")))?;
        let address = pci_address(pci.domain, pci.bus, pci.device)
            .ok_or_else(|| DriverError::new(ErrorKind::Failed, format!("GPU {index} is at {}", pci.bus_id)))?;
        let name = dev.name().map_err(|e| wrapper_error(e, format!("read {address}'s name")))?;
        let uuid = dev.uuid().map_err(|e| wrapper_error(e, format!("read {address}'s UUID")))?;
        let memory =
            ByteSize(dev.memory_info().map_err(|e| wrapper_error(e, format!("read {address}'s memory")))?.total);
        let model = identify(&name, memory);
        // Memory affinity at node scope is the NUMA node of a PCIe GPU; NVML's NUMA node
        // id is only for GPUs that are NUMA nodes themselves (coherent memory).
        let numa_node = dev
            .memory_affinity(1, sys::NVML_AFFINITY_SCOPE_NODE)
            .ok()
            .and_then(|m| first_bit(&m))
            .or_else(|| dev.numa_node_id().ok());
        let cpu_affinity = dev.cpu_affinity(CPU_MASK_WORDS).ok().map(|m| cpus(&m)).filter(|c| !c.is_empty());
        let mut links: Vec<PciAddress> = vec![];
        for l in 0..sys::NVML_NVLINK_MAX_LINKS {
            let link = dev.link_wrapper_for(l);
            match link.is_active() {
                Ok(true) => {}
                Ok(false) => continue,
                // No NVLink on this GPU, or no more links.
                Err(_) => break,
            }
            if let Some(a) = link.remote_pci_info().ok().and_then(|r| pci_address(r.domain, r.bus, r.device)) {
                links.push(a);
            }
        }
        let mig = dev.mig_mode().ok().map(|m| MigMode {
            current: m.current == sys::NVML_DEVICE_MIG_ENABLE,
            pending: m.pending == sys::NVML_DEVICE_MIG_ENABLE,
        });
        let instances = if mig.is_some_and(|m| m.current) { self.instances(&dev, address, model)? } else { vec![] };
        let gpu = LiveGpu {
            address,
            uuid,
            name,
            model,
            memory,
            numa_node,
            cpu_affinity,
            nvlink_peers: vec![],
            mig,
            instances,
            vgpu: None,
        };
        Ok((gpu, links))
    }

    fn instances(
        &self,
        dev: &Device<'_>,
        address: PciAddress,
        model: Option<GpuModel>,
    ) -> Result<Vec<LiveMigInstance>> {
        let raw = self.raw();
        // SAFETY: the handle stays valid while `dev` (and the library) lives.
        let h = unsafe { dev.handle() };
        let what = |w: &str| format!("list {w} on {address}");
        let mut out = vec![];
        for index in 0..sys::NVML_GPU_INSTANCE_PROFILE_COUNT {
            let Some(p) = raw.gpu_instance_profile(h, index).map_err(|f| f.error(what("GPU instance profiles")))?
            else {
                continue;
            };
            let nvml_name = raw.gpu_instance_profile_name(h, index);
            for gi in raw.gpu_instances(h, p.id, p.instances).map_err(|f| f.error(what("GPU instances")))? {
                let info = raw.gpu_instance_info(gi).map_err(|f| f.error(what("GPU instances")))?;
                let mut compute_instances = vec![];
                for ci in raw.all_compute_instances(gi).map_err(|f| f.error(what("compute instances")))? {
                    compute_instances
                        .push(raw.compute_instance_id(ci).map_err(|f| f.error(what("compute instances")))?);
                }
                compute_instances.sort_unstable();
                out.push(LiveMigInstance {
                    id: info.id,
                    profile_id: info.profile_id,
                    profile: profile_name(model, info.profile_id, nvml_name.clone()),
                    start: info.placement.start as u8,
                    size: info.placement.size as u8,
                    compute_instances,
                });
            }
        }
        out.sort_by_key(|i| (i.start, i.id));
        Ok(out)
    }

    /// Fills a new GPU instance with the compute instance that takes all of it.
    fn fill(&self, raw: &Raw<'_>, gi: GpuInstance) -> raw::RawResult<()> {
        let mut full: Option<raw::CiProfile> = None;
        for index in 0..sys::NVML_COMPUTE_INSTANCE_PROFILE_COUNT {
            if let Some(p) = raw.compute_instance_profile(gi, index)?
                && full.is_none_or(|f| p.slices > f.slices)
            {
                full = Some(p);
            }
        }
        let Some(p) = full else {
            return Err(raw::Failure {
                function: "nvmlGpuInstanceGetComputeInstanceProfileInfo",
                code: Code::NOT_SUPPORTED,
            });
        };
        raw.create_compute_instance(gi, p.id).map(|_| ())
    }
}

impl Gpus for NvmlDriver {
    fn gpus(&mut self) -> Result<Vec<LiveGpu>> {
        let count = self.nvml.device_count().map_err(|e| wrapper_error(e, "count GPUs"))?;
        let read: Vec<(LiveGpu, Vec<PciAddress>)> = (0..count).map(|i| self.read_gpu(i)).collect::<Result<_>>()?;
        let links: Vec<(PciAddress, Vec<PciAddress>)> = read.iter().map(|(g, l)| (g.address, l.clone())).collect();
        Ok(read
            .into_iter()
            .zip(nvlink_peers(&links))
            .map(|((g, _), nvlink_peers)| {
                let vgpu = crate::driver::vgpu::Sysfs::host().observe(g.address);
                LiveGpu { nvlink_peers, vgpu, ..g }
            })
            .collect())
    }

    fn set_mig_mode(&mut self, gpu: PciAddress, enabled: bool) -> Result<MigMode> {
        let what = set_mode_what(gpu, enabled);
        let dev = self.device(gpu)?;
        let status = dev.set_mig_mode(enabled).map_err(|e| wrapper_error(e, &what))?;
        activation_ok(Code(status), &what)?;
        let m = dev.mig_mode().map_err(|e| wrapper_error(e, &what))?;
        Ok(MigMode {
            current: m.current == sys::NVML_DEVICE_MIG_ENABLE,
            pending: m.pending == sys::NVML_DEVICE_MIG_ENABLE,
        })
    }

    fn create_instance(&mut self, gpu: PciAddress, profile_id: u32, start: u8) -> Result<u32> {
        let what = create_what(gpu, profile_id, start);
        let dev = self.device(gpu)?;
        let raw = self.raw();
        // SAFETY: the handle stays valid while `dev` lives.
        let h = unsafe { dev.handle() };
        // The placement's size is the profile's: from NVML's own list, else from the
        // catalog; a start that is in neither is left for NVML to refuse.
        let model = dev.name().ok().zip(dev.memory_info().ok()).and_then(|(n, m)| identify(&n, ByteSize(m.total)));
        let size = raw
            .possible_placements(h, profile_id)
            .ok()
            .and_then(|ps| ps.into_iter().find(|p| p.start == u32::from(start)).map(|p| p.size))
            .or_else(|| catalog_size(model, profile_id))
            .unwrap_or(1);
        let gi = raw
            .create_gpu_instance(h, profile_id, Placement { start: u32::from(start), size })
            .map_err(|f| self.mig_error(&dev, f.error(&what)))?;
        let id = match raw.gpu_instance_info(gi) {
            Ok(info) => info.id,
            Err(f) => {
                let _ = raw.destroy_gpu_instance(gi);
                return Err(f.error(&what));
            }
        };
        if let Err(f) = self.fill(&raw, gi) {
            // Leave nothing half made: an instance without compute is of no use.
            let _ = raw.destroy_gpu_instance(gi);
            return Err(f.error(format!("{what}: fill it with a compute instance")));
        }
        Ok(id)
    }

    fn destroy_instance(&mut self, gpu: PciAddress, instance_id: u32) -> Result<()> {
        let what = destroy_what(gpu, instance_id);
        let dev = self.device(gpu)?;
        let raw = self.raw();
        // SAFETY: the handle stays valid while `dev` lives.
        let h = unsafe { dev.handle() };
        let gi = raw.gpu_instance_by_id(h, instance_id).map_err(|f| self.mig_error(&dev, f.error(&what)))?;
        for ci in raw.all_compute_instances(gi).map_err(|f| f.error(&what))? {
            let id = raw.compute_instance_id(ci).map_err(|f| f.error(&what))?;
            raw.destroy_compute_instance(ci).map_err(|f| f.error(format!("{what}: destroy compute instance {id}")))?;
        }
        raw.destroy_gpu_instance(gi).map_err(|f| self.mig_error(&dev, f.error(&what)))
    }

    /// vGPU devices are sysfs's, not NVML's (`vgpu.rs`). The MIG instance must exist:
    /// NVML is asked first, so that a missing one is named (as the twin names it) rather
    /// than left to the host's offered types, which say only that no instance of the
    /// profile is free.
    fn create_vgpu(
        &mut self,
        gpu: PciAddress,
        profile: &str,
        start: u8,
        uuid: &str,
        vf: Option<PciAddress>,
    ) -> Result<crate::driver::vgpu::VgpuDevice> {
        let live = self.gpus()?;
        let g = live
            .iter()
            .find(|g| g.address == gpu)
            .ok_or_else(|| DriverError::new(ErrorKind::NotFound, format!("no GPU {gpu} on this host")))?;
        if !g.instances.iter().any(|m| m.profile == profile && m.start == start) {
            return Err(DriverError::new(
                ErrorKind::Refused,
                format!(
                    "a vGPU for MIG profile {profile} is not creatable on GPU {gpu}: no MIG instance {profile}@{start}"
                ),
            ));
        }
        // In SR-IOV mode an instance past the GPU's VFs has none planned: it takes a free
        // VF that no instance's placement names (VF n is the instance at placement n's).
        let vf = match (&g.vgpu, vf) {
            (Some(v), None) if v.mode == crate::driver::vgpu::VgpuMode::SriovVf => {
                let planned = |n: usize| g.instances.iter().any(|m| usize::from(m.start) == n);
                let taken = |a: &PciAddress| v.devices.contains(&crate::driver::vgpu::VgpuDevice::Vf(*a));
                let free = v.vfs.iter().enumerate().rev().find(|(n, a)| !planned(*n) && !taken(a));
                Some(*free.ok_or_else(|| {
                    DriverError::new(
                        ErrorKind::Refused,
                        format!(
                            "GPU {gpu} has no free virtual function for a vGPU of MIG instance {profile}@{start} (its {} VFs are taken or planned for the instances at their placements)",
                            v.vfs.len()
                        ),
                    )
                })?.1)
            }
            (_, vf) => vf,
        };
        crate::driver::vgpu::Sysfs::host().create_for_mig(gpu, profile, uuid, vf)
    }

    fn remove_vgpu(&mut self, gpu: PciAddress, uuid: &str, vf: Option<PciAddress>) -> Result<()> {
        match vf {
            Some(vf) => crate::driver::vgpu::Sysfs::host().remove_from_vf(gpu, vf),
            None => crate::driver::vgpu::Sysfs::host().remove_by_uuid(gpu, uuid),
        }
    }
}

/// An nvml-wrapper error as a driver error.
fn wrapper_error(e: NvmlError, what: impl std::fmt::Display) -> DriverError {
    match e {
        NvmlError::FailedToLoadSymbol(s) => DriverError::new(
            ErrorKind::Unsupported,
            format!("{what}: libnvidia-ml lacks a function ({s}); the installed NVIDIA driver is too old for it"),
        )
        .with_code(Code::FUNCTION_NOT_FOUND.name()),
        NvmlError::LibloadingError(e) => {
            DriverError::new(ErrorKind::Unreachable, format!("{what}: {e}")).with_code(Code::LIBRARY_NOT_FOUND.name())
        }
        e @ (NvmlError::Utf8Error(_)
        | NvmlError::NulError(_)
        | NvmlError::StringTooLong { .. }
        | NvmlError::IncorrectBits(_)
        | NvmlError::SetReleaseFailed
        | NvmlError::GetPciInfoFailed
        | NvmlError::PciInfoToCFailed) => DriverError::new(ErrorKind::Failed, format!("{what}: {e}")),
        e => Code(e.into()).error(what),
    }
}

/// A mode change's activation status: done, or pending (the GPU is busy or needs a
/// reset), which the caller sees in the mode it gets back; anything else failed.
pub(crate) fn activation_ok(status: Code, what: &str) -> Result<()> {
    match status {
        Code::SUCCESS | Code::IN_USE | Code::RESET_REQUIRED => Ok(()),
        other => Err(other.error(what)),
    }
}

/// `NOT_SUPPORTED` from a GPU that has MIG but has it off: a request refused in the
/// current state, not a missing feature.
pub(crate) fn not_enabled(mut err: DriverError) -> DriverError {
    err.kind = ErrorKind::Refused;
    err.message.push_str("; MIG mode is not enabled on this GPU");
    err
}

pub(crate) fn set_mode_what(gpu: PciAddress, enabled: bool) -> String {
    format!("{} MIG mode on {gpu}", if enabled { "enable" } else { "disable" })
}

pub(crate) fn create_what(gpu: PciAddress, profile_id: u32, start: u8) -> String {
    format!("create a GPU instance of profile {profile_id} at memory slice {start} on {gpu}")
}

pub(crate) fn destroy_what(gpu: PciAddress, id: u32) -> String {
    format!("destroy GPU instance {id} on {gpu}")
}

/// The catalog model NVML's product name and memory identify: the name the catalog
/// gives, else a model of the same family (`A100`, `H100`…) whose memory is within a
/// tenth of what NVML reports (an `NVIDIA A100-PCIE-40GB` has an A100-40GB's MIG).
pub fn identify(name: &str, memory: ByteSize) -> Option<GpuModel> {
    let models = (0..<GpuModel as Word>::NAMES.len()).map(<GpuModel as Word>::from_index);
    if let Some(m) = models.clone().find(|m| m.info().nvml_name == name) {
        return Some(m);
    }
    let reported = memory.bytes() as f64;
    models
        .filter(|m| {
            let family = m.to_string();
            let family = family.split('-').next().unwrap_or_default();
            name.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w == family)
        })
        .map(|m| (m, (m.memory().bytes() as f64 - reported).abs() / reported.max(1.0)))
        .filter(|(_, off)| *off <= 0.1)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(m, _)| m)
}

/// A profile's name on a model: the catalog's, else NVML's, else its id.
pub(crate) fn profile_name(model: Option<GpuModel>, profile_id: u32, nvml_name: Option<String>) -> String {
    model
        .and_then(|m| mig::profiles(m).iter().find(|p| p.id == profile_id))
        .map(|p| p.name.to_string())
        .or(nvml_name)
        .unwrap_or_else(|| format!("profile-{profile_id}"))
}

/// The catalog's memory-slice count of a profile.
pub(crate) fn catalog_size(model: Option<GpuModel>, profile_id: u32) -> Option<u32> {
    mig::profiles(model?).iter().find(|p| p.id == profile_id).map(|p| u32::from(p.memory_slices))
}

/// The GPUs each GPU reaches over NVLink, from the far ends of every GPU's active
/// links: a GPU at the far end directly, and every GPU that shares a far end which is
/// not a GPU (an NVSwitch).
pub(crate) fn nvlink_peers(links: &[(PciAddress, Vec<PciAddress>)]) -> Vec<Vec<PciAddress>> {
    let is_gpu = |a: &PciAddress| links.iter().any(|(g, _)| g == a);
    links
        .iter()
        .map(|(me, mine)| {
            let mut peers: Vec<PciAddress> = links
                .iter()
                .filter(|(other, theirs)| {
                    other != me
                        && (mine.contains(other)
                            || theirs.contains(me)
                            || mine.iter().any(|r| !is_gpu(r) && theirs.contains(r)))
                })
                .map(|(other, _)| *other)
                .collect();
            peers.sort_unstable();
            peers
        })
        .collect()
}

fn pci_address(domain: u32, bus: u32, device: u32) -> Option<PciAddress> {
    Some(PciAddress {
        domain: u16::try_from(domain).ok()?,
        bus: u8::try_from(bus).ok()?,
        device: u8::try_from(device).ok()?,
        function: 0,
    })
}

fn first_bit(words: &[std::os::raw::c_ulong]) -> Option<u32> {
    let bits = std::os::raw::c_ulong::BITS;
    words.iter().enumerate().find(|(_, w)| **w != 0).map(|(i, w)| i as u32 * bits + w.trailing_zeros())
}

fn cpus(words: &[std::os::raw::c_ulong]) -> CpuSet {
    let bits = std::os::raw::c_ulong::BITS;
    let mut cpus = vec![];
    for (i, w) in words.iter().enumerate() {
        for b in 0..bits {
            if w & (1 << b) != 0 {
                cpus.push(i as u32 * bits + b);
            }
        }
    }
    CpuSet::from_cpus(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> PciAddress {
        PciAddress::parse(s).unwrap()
    }

    #[test]
    fn models_are_known_by_name_or_by_family_and_memory() {
        assert_eq!(identify("NVIDIA H200", ByteSize(143_771 << 20)), Some(GpuModel::H200_141GB));
        assert_eq!(identify("NVIDIA A100-PCIE-40GB", ByteSize(40_960 << 20)), Some(GpuModel::A100_40GB));
        assert_eq!(identify("NVIDIA A100 80GB PCIe", ByteSize(81_920 << 20)), Some(GpuModel::A100_80GB));
        assert_eq!(identify("NVIDIA H100 PCIe", ByteSize(81_559 << 20)), Some(GpuModel::H100_80GB));
        assert_eq!(identify("NVIDIA A10", ByteSize(23_028 << 20)), None);
        assert_eq!(identify("NVIDIA H100 80GB HBM3", ByteSize(5 << 30)), Some(GpuModel::H100_80GB), "by name alone");
    }

    #[test]
    fn peers_are_direct_links_and_shared_switches() {
        let (a, b, c, d, sw) = (
            addr("0000:1b:00.0"),
            addr("0000:1c:00.0"),
            addr("0000:3b:00.0"),
            addr("0000:3c:00.0"),
            addr("0000:0a:00.0"),
        );
        // a and b meet at a switch, c links to d directly.
        let links = [(a, vec![sw, sw]), (b, vec![sw]), (c, vec![d]), (d, vec![])];
        let peers = nvlink_peers(&links);
        assert_eq!(peers, vec![vec![b], vec![a], vec![d], vec![c]]);
    }

    #[test]
    fn affinity_masks_read_as_sets() {
        let words: [std::os::raw::c_ulong; 2] = [0b1010, 1];
        assert_eq!(cpus(&words).to_string(), "1,3,64");
        assert_eq!(first_bit(&[0, 4]), Some(66));
        assert_eq!(first_bit(&[0, 0]), None);
    }

    #[test]
    fn a_missing_library_says_what_to_install() {
        let e = NvmlDriver::open(Some(Path::new("/nonexistent/libnvidia-ml.so.1"))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unreachable);
        assert_eq!(e.code.as_deref(), Some("NVML_ERROR_LIBRARY_NOT_FOUND"));
        assert!(e.message.contains("install the NVIDIA driver"), "{}", e.message);
    }
}
