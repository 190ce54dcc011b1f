//! The simulated GPUs' state, and NVML's MIG rules over it.
//!
//! One model serves the in-process twin ([`super::SimGpus`]) and the simulated
//! libnvidia-ml (`sim-nvml/`): its operations are NVML's MIG calls one for one, and they
//! fail with the codes `nvml.h` documents for them (NVML 12.2, "Multi Instance GPU
//! Management"):
//!
//! | situation | code | what `nvml.h` says |
//! |---|---|---|
//! | MIG switched off, or not in the GPU | `NOT_SUPPORTED` | "If device doesn't have MIG mode enabled" (create, destroy, list, profile info, placements); "If device doesn't support MIG mode" (get/set mode) |
//! | a profile id the GPU does not have, a placement that is not one of the profile's | `INVALID_ARGUMENT` | create: "If device, profile, profileId, placement or gpuInstance are invalid" |
//! | the placement overlaps an instance; no instance of the profile, media engine or compute slice left | `INSUFFICIENT_RESOURCES` | create: "If the requested GPU instance could not be created"; placements: "Creation of new GPU instance will fail if there is overlap with the already occupied memory slices" |
//! | destroying a GPU instance that has compute instances | `IN_USE` | "processes (e.g. CUDA application) or compute instances are active on the GPU instance" |
//! | destroying a compute instance that runs processes | `IN_USE` | "processes (e.g. CUDA application) are active on the compute instance" |
//! | an instance id that does not exist | `NOT_FOUND` | get by id: "If the GPU instance is not found" |
//! | a handle to a destroyed instance | `INVALID_ARGUMENT` | "the GPU instance handle would become invalid" |
//! | a mode change the GPU cannot activate now | `SUCCESS`, activation status `IN_USE` or `RESET_REQUIRED`, the mode pending | set mode: "if device unbind fails because the device isn't idle, NVML_ERROR_IN_USE would be returned"; "VM reboot is required … NVML_ERROR_RESET_REQUIRED" |
//!
//! Placements are memory slices, as in NVML (`nvmlGpuInstancePlacement_t`: "Index of
//! first occupied memory slice", "Number of memory slices occupied"), taken from the
//! catalog ([`crate::hw::mig`]): one set of rules for checks, placement and simulation.

use serde::{Deserialize, Serialize};

use crate::driver::nvml::code::Code;
use crate::hw::GpuModel;
use crate::hw::mig::{self, COMPUTE_SLICES, MigProfile};
use crate::live::MigMode;
use crate::spec::types::{ByteSize, CpuSet, PciAddress};

use nvml_wrapper_sys::bindings as sys;

/// Version of the state file's format.
pub const STATE_VERSION: u32 = 1;

/// Everything the simulated GPUs of one host hold: what a state file contains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimGpuState {
    pub version: u32,
    pub gpus: Vec<SimGpu>,
}

/// One simulated GPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimGpu {
    pub address: PciAddress,
    pub model: GpuModel,
    pub uuid: String,
    /// Total memory as NVML reports it (a little under the datasheet's figure).
    pub memory: ByteSize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_affinity: Option<CpuSet>,
    /// The far end of each active NVLink, by link number: a GPU, or an NVSwitch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nvlinks: Vec<PciAddress>,
    /// MIG mode, when the model has MIG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig: Option<MigMode>,
    /// Whether a MIG mode change takes effect at once.
    #[serde(default, skip_serializing_if = "Activation::is_immediate")]
    pub activation: Activation,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<SimGpuInstance>,
    /// How the GPU offers vGPUs, and the vGPU devices on it; `None`: it offers none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vgpu: Option<SimVgpus>,
}

/// A simulated GPU's vGPU side, as sysfs shows it (`crate::driver::vgpu`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimVgpus {
    pub mode: crate::driver::vgpu::VgpuMode,
    /// SR-IOV VFs enabled on the GPU (`sriov-manage -e`); unused in mdev mode.
    #[serde(default)]
    pub vfs: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<SimVgpu>,
}

/// A vGPU device on a simulated GPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimVgpu {
    /// The UUID fabrik named it by (the mdev's; a VF's in fabrik's records).
    pub uuid: String,
    /// The vGPU type's name (`NVIDIA H100-3-40C`).
    pub type_name: String,
    /// The MIG instance it sits on.
    pub profile: String,
    pub start: u8,
    /// The VF (by index) carrying it, in SR-IOV mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vf: Option<u32>,
}

/// What happens when the MIG mode is changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// The driver resets the GPU and the new mode is current (bare metal, GPU idle).
    #[default]
    Immediate,
    /// Processes hold the GPU: the mode stays pending (`IN_USE`).
    InUse,
    /// The platform cannot reset the GPU (passthrough): pending until a reset or reboot
    /// (`RESET_REQUIRED`).
    ResetRequired,
}

impl Activation {
    fn is_immediate(&self) -> bool {
        *self == Activation::Immediate
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimGpuInstance {
    pub id: u32,
    /// The `-lgip` profile id.
    pub profile_id: u32,
    pub placement: Placement,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compute_instances: Vec<SimComputeInstance>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimComputeInstance {
    pub id: u32,
    /// The compute instance profile id (`-lcip`).
    pub profile_id: u32,
    /// Compute slices inside the GPU instance.
    pub placement: Placement,
    /// Processes run on it (a guest uses the slice): it cannot be destroyed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub busy: bool,
}

/// A start and a size in slices (memory slices for GPU instances, compute slices for
/// compute instances), like `nvmlGpuInstancePlacement_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub start: u32,
    pub size: u32,
}

impl Placement {
    fn mask(self) -> u32 {
        ((1u32 << self.size) - 1) << self.start
    }

    fn overlaps(self, other: Placement) -> bool {
        self.mask() & other.mask() != 0
    }
}

/// A failed call: NVML's code and what the simulation knows of why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimError {
    pub code: Code,
    pub message: String,
}

pub type SimResult<T> = Result<T, SimError>;

fn fail<T>(code: Code, message: impl Into<String>) -> SimResult<T> {
    Err(SimError { code, message: message.into() })
}

/// A GPU instance profile as `nvmlDeviceGetGpuInstanceProfileInfo` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GiProfile {
    /// The `NVML_GPU_INSTANCE_PROFILE_*` index it is asked by.
    pub index: u32,
    pub profile: &'static MigProfile,
    /// `MIG 3g.71gb`, as NVML names it.
    pub name: String,
    pub multiprocessors: u32,
    pub copy_engines: u32,
    pub decoders: u32,
    pub jpegs: u32,
    pub ofas: u32,
    pub memory_mib: u64,
}

/// A compute instance profile inside a GPU instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiProfile {
    /// `NVML_COMPUTE_INSTANCE_PROFILE_*`, which is also its id.
    pub id: u32,
    pub slices: u32,
    /// How many fit in the GPU instance.
    pub instances: u32,
    pub multiprocessors: u32,
    /// `1c.3g.71gb`, or the GPU instance's own name for the one that fills it.
    pub name: String,
}

/// `NVML_GPU_INSTANCE_PROFILE_*` of a catalog profile, by its shape.
pub fn nvml_profile_index(p: &MigProfile) -> Option<u32> {
    Some(match (p.compute_slices, p.memory_slices, p.media_extensions) {
        (1, 1, false) => sys::NVML_GPU_INSTANCE_PROFILE_1_SLICE,
        (1, 1, true) => sys::NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1,
        (1, 2, false) => sys::NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2,
        (2, _, false) => sys::NVML_GPU_INSTANCE_PROFILE_2_SLICE,
        (3, _, false) => sys::NVML_GPU_INSTANCE_PROFILE_3_SLICE,
        (4, _, false) => sys::NVML_GPU_INSTANCE_PROFILE_4_SLICE,
        (7, _, false) => sys::NVML_GPU_INSTANCE_PROFILE_7_SLICE,
        _ => return None,
    })
}

/// Compute slices of `NVML_COMPUTE_INSTANCE_PROFILE_*` 0–4 (1, 2, 3, 4 and 7 slices);
/// the 8- and 6-slice ones and `1_SLICE_REV1` exist on no GPU of the catalog.
const CI_PROFILE_SLICES: [u32; 5] = [1, 2, 3, 4, 7];

/// Memory NVML reports for a model, in MiB, as `nvidia-smi` shows it on real parts; the
/// datasheet's figure for models not seen.
pub fn nvml_memory(model: GpuModel) -> ByteSize {
    let mib: u64 = match model {
        GpuModel::A100_40GB => 40_960,
        GpuModel::A100_80GB => 81_920,
        GpuModel::H100_80GB => 81_559,
        GpuModel::H100_94GB => 95_830,
        GpuModel::H200_141GB => 143_771,
        GpuModel::L40S => 46_068,
        GpuModel::GB200 => return model.memory(),
    };
    ByteSize(mib << 20)
}

/// Streaming multiprocessors per compute slice, and of the whole GPU (a 7g instance).
fn multiprocessors(model: GpuModel) -> (u32, u32) {
    match model {
        GpuModel::A100_40GB | GpuModel::A100_80GB => (14, 98),
        GpuModel::H100_80GB | GpuModel::H100_94GB | GpuModel::H200_141GB => (16, 132),
        GpuModel::GB200 => (20, 140),
        GpuModel::L40S => (0, 142),
    }
}

/// The GPU instance id the simulation gives an instance at a placement: the slice ranges
/// numbered as a heap (the whole GPU 0, its halves 1–2, quarters 3–6, single slices
/// 7–14). That is our reading of the ids `nvidia-smi mig -lgi` shows in NVIDIA's
/// examples (two 3g instances at 0:4 and 4:4 are 1 and 2), not a documented rule;
/// fabrik never relies on it, it only keeps the ids realistic.
fn instance_id(p: Placement) -> u32 {
    match p.size {
        8 => 0,
        4 => 1 + p.start / 4,
        2 => 3 + p.start / 2,
        _ => 7 + p.start,
    }
}

impl SimGpuState {
    pub fn new(gpus: Vec<SimGpu>) -> SimGpuState {
        SimGpuState { version: STATE_VERSION, gpus }
    }

    pub fn gpu(&self, address: PciAddress) -> SimResult<usize> {
        match self.gpus.iter().position(|g| g.address == address) {
            Some(i) => Ok(i),
            None => fail(Code::NOT_FOUND, format!("no GPU at {address}")),
        }
    }

    fn at(&self, gpu: usize) -> SimResult<&SimGpu> {
        match self.gpus.get(gpu) {
            Some(g) => Ok(g),
            None => fail(Code::INVALID_ARGUMENT, format!("no GPU with index {gpu}")),
        }
    }

    fn at_mut(&mut self, gpu: usize) -> SimResult<&mut SimGpu> {
        match self.gpus.get_mut(gpu) {
            Some(g) => Ok(g),
            None => fail(Code::INVALID_ARGUMENT, format!("no GPU with index {gpu}")),
        }
    }

    pub fn mig_mode(&self, gpu: usize) -> SimResult<MigMode> {
        let g = self.at(gpu)?;
        match g.mig {
            Some(m) if g.model.supports_mig() => Ok(m),
            _ => fail(Code::NOT_SUPPORTED, format!("{} ({}) has no MIG", g.address, g.model)),
        }
    }

    /// Sets the pending mode and tries to activate it; returns the activation status.
    pub fn set_mig_mode(&mut self, gpu: usize, enabled: bool) -> SimResult<Code> {
        let mut mode = self.mig_mode(gpu)?;
        let g = self.at_mut(gpu)?;
        mode.pending = enabled;
        let status = if mode.current == enabled {
            Code::SUCCESS
        } else if !g.instances.is_empty() {
            // GPU instances keep the GPU from being idle, as processes do.
            Code::IN_USE
        } else {
            match g.activation {
                Activation::Immediate => Code::SUCCESS,
                Activation::InUse => Code::IN_USE,
                Activation::ResetRequired => Code::RESET_REQUIRED,
            }
        };
        if status.is_success() {
            mode.current = enabled;
        }
        g.mig = Some(mode);
        Ok(status)
    }

    /// A GPU reset (or a reboot): the pending MIG mode becomes current, and MIG
    /// instances, which do not survive a reset, are gone.
    pub fn reset(&mut self, gpu: usize) -> SimResult<()> {
        let g = self.at_mut(gpu)?;
        if let Some(m) = &mut g.mig {
            m.current = m.pending;
        }
        g.instances.clear();
        // A GPU reset (and a reboot) takes its vGPU devices with it.
        if let Some(v) = &mut g.vgpu {
            v.devices.clear();
        }
        Ok(())
    }

    /// The GPU, when MIG is on: the calls on instances need it.
    fn mig_on(&self, gpu: usize) -> SimResult<&SimGpu> {
        let mode = self.mig_mode(gpu)?;
        let g = self.at(gpu)?;
        if !mode.current {
            return fail(Code::NOT_SUPPORTED, format!("MIG mode is not enabled on {}", g.address));
        }
        Ok(g)
    }

    fn gi_profile(&self, g: &SimGpu, p: &'static MigProfile) -> GiProfile {
        let (per_slice, whole) = multiprocessors(g.model);
        let compute = u32::from(p.compute_slices);
        let big = compute == u32::from(COMPUTE_SLICES);
        let decoders = match (compute, p.memory_slices, p.media_extensions) {
            (1, 1, false) => 0,
            (1, _, _) | (2, _, _) => 1,
            (3, _, _) | (4, _, _) => 2,
            _ => 5,
        };
        let jpegs = u32::from(p.media_extensions || big);
        GiProfile {
            index: nvml_profile_index(p).unwrap_or(u32::MAX),
            profile: p,
            name: format!("MIG {}", p.name),
            multiprocessors: if big { whole } else { per_slice * compute },
            copy_engines: compute,
            decoders,
            jpegs,
            ofas: jpegs,
            memory_mib: (g.memory.0 >> 20) * u64::from(p.memory_slices) / u64::from(mig::MEMORY_SLICES),
        }
    }

    /// `nvmlDeviceGetGpuInstanceProfileInfo`: by `NVML_GPU_INSTANCE_PROFILE_*` index.
    pub fn gpu_instance_profile(&self, gpu: usize, index: u32) -> SimResult<GiProfile> {
        let g = self.mig_on(gpu)?;
        if index >= sys::NVML_GPU_INSTANCE_PROFILE_COUNT {
            return fail(Code::INVALID_ARGUMENT, format!("no GPU instance profile index {index}"));
        }
        match mig::profiles(g.model).iter().find(|p| nvml_profile_index(p) == Some(index)) {
            Some(p) => Ok(self.gi_profile(g, p)),
            None => fail(Code::NOT_SUPPORTED, format!("{} has no profile with index {index}", g.model)),
        }
    }

    /// By `-lgip` id (`nvmlDeviceGetGpuInstanceProfileInfoByIdV`, and every call that
    /// takes a `profileId`); `code` is what an unknown id gets.
    pub fn gpu_instance_profile_by_id(&self, gpu: usize, id: u32, code: Code) -> SimResult<GiProfile> {
        let g = self.mig_on(gpu)?;
        match mig::profiles(g.model).iter().find(|p| p.id == id) {
            Some(p) => Ok(self.gi_profile(g, p)),
            None => fail(code, format!("{} has no GPU instance profile {id}", g.model)),
        }
    }

    /// `nvmlDeviceGetGpuInstancePossiblePlacements_v2`: every placement of the profile,
    /// taken or not.
    pub fn possible_placements(&self, gpu: usize, profile_id: u32) -> SimResult<Vec<Placement>> {
        let p = self.gpu_instance_profile_by_id(gpu, profile_id, Code::NOT_SUPPORTED)?.profile;
        Ok(p.starts.iter().map(|&s| Placement { start: u32::from(s), size: u32::from(p.memory_slices) }).collect())
    }

    /// `nvmlDeviceGetGpuInstanceRemainingCapacity`: how many more instances of the
    /// profile could be created now.
    pub fn remaining_capacity(&self, gpu: usize, profile_id: u32) -> SimResult<u32> {
        let placements = self.possible_placements(gpu, profile_id)?;
        let mut trial = self.clone();
        let mut n = 0;
        for p in placements {
            if trial.create_gpu_instance(gpu, profile_id, Some(p)).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// `nvmlDeviceCreateGpuInstance(WithPlacement)`: at `placement`, or at the first
    /// free placement of the profile. Returns the new instance's id.
    pub fn create_gpu_instance(&mut self, gpu: usize, profile_id: u32, placement: Option<Placement>) -> SimResult<u32> {
        let profile = self.gpu_instance_profile_by_id(gpu, profile_id, Code::INVALID_ARGUMENT)?.profile;
        let g = self.at(gpu)?;
        let size = u32::from(profile.memory_slices);
        let candidates: Vec<Placement> = match placement {
            Some(p) => {
                if p.size != size || !profile.starts.iter().any(|&s| u32::from(s) == p.start) {
                    return fail(
                        Code::INVALID_ARGUMENT,
                        format!(
                            "{} cannot be placed at {}:{} (placements {})",
                            profile.name,
                            p.start,
                            p.size,
                            starts(profile)
                        ),
                    );
                }
                vec![p]
            }
            None => profile.starts.iter().map(|&s| Placement { start: u32::from(s), size }).collect(),
        };
        let of_profile = g.instances.iter().filter(|i| i.profile_id == profile_id).count();
        if of_profile >= usize::from(profile.max_instances) {
            return fail(
                Code::INSUFFICIENT_RESOURCES,
                format!("{} already has {of_profile} instances of {}, the most it takes", g.address, profile.name),
            );
        }
        let profile_of = |i: &SimGpuInstance| mig::profiles(g.model).iter().find(|p| p.id == i.profile_id);
        if profile.media_extensions && g.instances.iter().any(|i| profile_of(i).is_some_and(|p| p.media_extensions)) {
            return fail(Code::INSUFFICIENT_RESOURCES, "the GPU's media engines belong to another instance already");
        }
        let compute_used: u32 = g.instances.iter().filter_map(profile_of).map(|p| u32::from(p.compute_slices)).sum();
        if compute_used + u32::from(profile.compute_slices) > u32::from(COMPUTE_SLICES) {
            return fail(
                Code::INSUFFICIENT_RESOURCES,
                format!("{compute_used} of {COMPUTE_SLICES} compute slices in use"),
            );
        }
        let Some(at) = candidates.iter().copied().find(|c| g.instances.iter().all(|i| !i.placement.overlaps(*c)))
        else {
            let taken: Vec<String> = g
                .instances
                .iter()
                .filter(|i| candidates.iter().any(|c| c.overlaps(i.placement)))
                .map(|i| format!("instance {} at {}:{}", i.id, i.placement.start, i.placement.size))
                .collect();
            return fail(
                Code::INSUFFICIENT_RESOURCES,
                format!("memory slices taken by {}", if taken.is_empty() { "others".into() } else { taken.join(", ") }),
            );
        };
        let id = instance_id(at);
        let g = self.at_mut(gpu)?;
        g.instances.push(SimGpuInstance { id, profile_id, placement: at, compute_instances: vec![] });
        g.instances.sort_by_key(|i| i.placement.start);
        Ok(id)
    }

    /// `nvmlDeviceGetGpuInstances`: ids of the instances of a profile.
    pub fn gpu_instances(&self, gpu: usize, profile_id: u32) -> SimResult<Vec<u32>> {
        self.gpu_instance_profile_by_id(gpu, profile_id, Code::INVALID_ARGUMENT)?;
        let g = self.at(gpu)?;
        Ok(g.instances.iter().filter(|i| i.profile_id == profile_id).map(|i| i.id).collect())
    }

    /// `nvmlDeviceGetGpuInstanceById`.
    pub fn gpu_instance(&self, gpu: usize, id: u32) -> SimResult<&SimGpuInstance> {
        let g = self.mig_on(gpu)?;
        match g.instances.iter().find(|i| i.id == id) {
            Some(i) => Ok(i),
            None => fail(Code::NOT_FOUND, format!("no GPU instance {id} on {}", g.address)),
        }
    }

    /// A GPU instance by the handle a caller holds: a destroyed one is an invalid
    /// argument, not a missing one.
    pub fn gpu_instance_by_handle(&self, gpu: usize, id: u32) -> SimResult<&SimGpuInstance> {
        self.gpu_instance(gpu, id).map_err(|e| match e.code {
            Code::NOT_FOUND => SimError { code: Code::INVALID_ARGUMENT, message: format!("GPU instance {id} is gone") },
            _ => e,
        })
    }

    fn gpu_instance_mut(&mut self, gpu: usize, id: u32) -> SimResult<&mut SimGpuInstance> {
        self.gpu_instance_by_handle(gpu, id)?;
        Ok(self.gpus[gpu].instances.iter_mut().find(|i| i.id == id).expect("found above"))
    }

    /// `nvmlGpuInstanceDestroy`.
    pub fn destroy_gpu_instance(&mut self, gpu: usize, id: u32) -> SimResult<()> {
        let gi = self.gpu_instance_by_handle(gpu, id)?;
        if !gi.compute_instances.is_empty() {
            let cis: Vec<String> = gi.compute_instances.iter().map(|c| c.id.to_string()).collect();
            return fail(Code::IN_USE, format!("GPU instance {id} has compute instances {}", cis.join(", ")));
        }
        self.gpus[gpu].instances.retain(|i| i.id != id);
        Ok(())
    }

    /// `nvmlGpuInstanceGetComputeInstanceProfileInfo`: by `NVML_COMPUTE_INSTANCE_PROFILE_*`.
    pub fn compute_instance_profile(&self, gpu: usize, gi: u32, index: u32) -> SimResult<CiProfile> {
        let inst = self.gpu_instance_by_handle(gpu, gi)?;
        let g = self.at(gpu)?;
        let Some(gp) = mig::profiles(g.model).iter().find(|p| p.id == inst.profile_id) else {
            return fail(Code::UNKNOWN, format!("GPU instance {gi} has unknown profile {}", inst.profile_id));
        };
        if index >= sys::NVML_COMPUTE_INSTANCE_PROFILE_COUNT {
            return fail(Code::INVALID_ARGUMENT, format!("no compute instance profile index {index}"));
        }
        let gi_slices = u32::from(gp.compute_slices);
        let slices = match CI_PROFILE_SLICES.get(index as usize) {
            Some(&s) if s <= gi_slices => s,
            _ => return fail(Code::NOT_SUPPORTED, format!("{} has no compute instance profile {index}", gp.name)),
        };
        let (per_slice, whole) = multiprocessors(g.model);
        let name =
            if slices == gi_slices { gp.name.to_string() } else { format!("{slices}c.{}", gp.name.replace('+', ".")) };
        Ok(CiProfile {
            id: index,
            slices,
            instances: ci_starts(slices, gi_slices).len() as u32,
            multiprocessors: if slices == u32::from(COMPUTE_SLICES) { whole } else { per_slice * slices },
            name,
        })
    }

    /// `nvmlGpuInstanceGetComputeInstancePossiblePlacements`.
    pub fn compute_instance_placements(&self, gpu: usize, gi: u32, profile_id: u32) -> SimResult<Vec<Placement>> {
        let p = self.compute_instance_profile(gpu, gi, profile_id)?;
        let gi_slices = self.gi_compute_slices(gpu, gi)?;
        Ok(ci_starts(p.slices, gi_slices).into_iter().map(|start| Placement { start, size: p.slices }).collect())
    }

    fn gi_compute_slices(&self, gpu: usize, gi: u32) -> SimResult<u32> {
        let inst = self.gpu_instance_by_handle(gpu, gi)?;
        let g = self.at(gpu)?;
        Ok(mig::profiles(g.model).iter().find(|p| p.id == inst.profile_id).map_or(0, |p| u32::from(p.compute_slices)))
    }

    /// `nvmlGpuInstanceCreateComputeInstance(WithPlacement)`. Returns the new id.
    pub fn create_compute_instance(
        &mut self,
        gpu: usize,
        gi: u32,
        profile_id: u32,
        placement: Option<Placement>,
    ) -> SimResult<u32> {
        let placements = self.compute_instance_placements(gpu, gi, profile_id)?;
        let candidates = match placement {
            Some(p) if placements.contains(&p) => vec![p],
            Some(p) => {
                return fail(
                    Code::INVALID_ARGUMENT,
                    format!("compute profile {profile_id} cannot be placed at {}:{}", p.start, p.size),
                );
            }
            None => placements,
        };
        let inst = self.gpu_instance_mut(gpu, gi)?;
        let Some(at) =
            candidates.into_iter().find(|c| inst.compute_instances.iter().all(|ci| !ci.placement.overlaps(*c)))
        else {
            return fail(Code::INSUFFICIENT_RESOURCES, format!("no free compute slices in GPU instance {gi}"));
        };
        let id = (0..).find(|id| inst.compute_instances.iter().all(|c| c.id != *id)).expect("ids are plenty");
        inst.compute_instances.push(SimComputeInstance { id, profile_id, placement: at, busy: false });
        inst.compute_instances.sort_by_key(|c| c.id);
        Ok(id)
    }

    /// `nvmlGpuInstanceGetComputeInstances`: ids of the compute instances of a profile.
    pub fn compute_instances(&self, gpu: usize, gi: u32, profile_id: u32) -> SimResult<Vec<u32>> {
        self.compute_instance_profile(gpu, gi, profile_id)?;
        let inst = self.gpu_instance_by_handle(gpu, gi)?;
        Ok(inst.compute_instances.iter().filter(|c| c.profile_id == profile_id).map(|c| c.id).collect())
    }

    /// A compute instance by the handle a caller holds.
    pub fn compute_instance(&self, gpu: usize, gi: u32, ci: u32) -> SimResult<&SimComputeInstance> {
        let inst = self.gpu_instance_by_handle(gpu, gi)?;
        match inst.compute_instances.iter().find(|c| c.id == ci) {
            Some(c) => Ok(c),
            None => fail(Code::NOT_FOUND, format!("no compute instance {ci} in GPU instance {gi}")),
        }
    }

    /// `nvmlComputeInstanceDestroy`.
    pub fn destroy_compute_instance(&mut self, gpu: usize, gi: u32, ci: u32) -> SimResult<()> {
        let c = self.compute_instance(gpu, gi, ci).map_err(|e| SimError { code: Code::INVALID_ARGUMENT, ..e })?;
        if c.busy {
            return fail(Code::IN_USE, format!("processes run on compute instance {ci} of GPU instance {gi}"));
        }
        self.gpu_instance_mut(gpu, gi)?.compute_instances.retain(|c| c.id != ci);
        Ok(())
    }
}

/// Where a compute instance of `slices` may start inside a GPU instance of `gi_slices`:
/// aligned to the next power of two (in a 7g: 1c at 0–6, 2c at 0, 2, 4, 3c at 0 and 4,
/// 4c at 0). A simplification of what `nvidia-smi mig -lcipp` lists; fabrik only ever
/// creates the one compute instance that fills its GPU instance.
fn ci_starts(slices: u32, gi_slices: u32) -> Vec<u32> {
    if slices == gi_slices {
        return vec![0];
    }
    let align = slices.next_power_of_two();
    (0..gi_slices).step_by(align as usize).filter(|s| s + slices <= gi_slices).collect()
}

fn starts(p: &MigProfile) -> String {
    let s: Vec<String> = p.starts.iter().map(|s| s.to_string()).collect();
    format!("{{{}}}:{}", s.join(","), p.memory_slices)
}

#[cfg(test)]
mod tests;
