//! Simulated GPUs in the process: the [`Gpus`] of a `--sim` twin.
//!
//! The rules live in [`model`], which the simulated libnvidia-ml (`sim-nvml/`) runs too;
//! this driver makes the same calls in the same order as [`super::nvml::NvmlDriver`]
//! does against a library, so the two give the same results and the same errors (kind
//! and NVML code), which `tests/nvml_sim.rs` checks on one table of scenarios. The state
//! is plain data (serde), saved after every change when the twin has a file.

pub mod model;

use std::path::{Path, PathBuf};

use crate::driver::nvml::code::Code;
use crate::driver::nvml::{self, activation_ok, not_enabled};
use crate::driver::vgpu::{VgpuDevice, VgpuMode};
use crate::driver::{DriverError, ErrorKind, Gpus, Result};
use crate::hw::GpuModel;
use crate::live::{LiveGpu, LiveMigInstance, MigMode};
use crate::spec::model::host::Host;
use crate::spec::types::{CpuSet, PciAddress};

pub use model::{
    Activation, Placement, SimComputeInstance, SimError, SimGpu, SimGpuInstance, SimGpuState, SimVgpu, SimVgpus,
};

use nvml_wrapper_sys::bindings as sys;

impl SimError {
    /// The driver error NVML's code gives, with the simulation's reason after it.
    pub fn error(&self, what: impl std::fmt::Display) -> DriverError {
        let mut e = self.code.error(what);
        e.message = format!("{} ({})", e.message, self.message);
        e
    }
}

impl SimGpuState {
    /// Reads a state file.
    pub fn load(path: &Path) -> Result<SimGpuState> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            DriverError::new(ErrorKind::Unreachable, format!("cannot read simulated GPUs from {}: {e}", path.display()))
        })?;
        let state: SimGpuState = serde_json::from_str(&text).map_err(|e| {
            DriverError::new(ErrorKind::Failed, format!("{} is not a simulated GPU state: {e}", path.display()))
        })?;
        if state.version != model::STATE_VERSION {
            return Err(DriverError::new(
                ErrorKind::Unsupported,
                format!(
                    "{} has simulated GPU state version {}; this fabrik reads version {}",
                    path.display(),
                    state.version,
                    model::STATE_VERSION
                ),
            ));
        }
        Ok(state)
    }

    /// Writes a state file whole, or not at all (a reader never sees half of it).
    pub fn save(&self, path: &Path) -> Result<()> {
        let failed =
            |e: std::io::Error| DriverError::new(ErrorKind::Failed, format!("cannot save {}: {e}", path.display()));
        let mut text = serde_json::to_string_pretty(self).expect("the state is plain data");
        text.push('\n');
        crate::files::replace(path, text.as_bytes()).map_err(failed)
    }

    /// The twin of a declared host: its GPUs where it says, MIG off and empty as on a
    /// host fabrik has not configured yet, the GPUs of one NVLink domain linked to each
    /// other.
    pub fn from_host(host: &Host) -> SimGpuState {
        let gpus = host
            .gpus
            .iter()
            .map(|g| {
                let numa = g.numa_node.value;
                let peers = host
                    .gpus
                    .iter()
                    .filter(|o| {
                        o.address.value != g.address.value
                            && g.nvlink_domain.is_some()
                            && o.nvlink_domain.as_ref().map(|d| &d.value) == g.nvlink_domain.as_ref().map(|d| &d.value)
                    })
                    .map(|o| o.address.value)
                    .collect();
                sim_gpu(
                    &format!("{}/{}", host.name.value, g.address.value),
                    g.address.value,
                    g.model.value,
                    Some(numa),
                    host.numa_nodes.iter().find(|n| n.id.value == numa).map(|n| n.cpus.value.clone()),
                    peers,
                )
            })
            .collect();
        SimGpuState::new(gpus)
    }

    /// The simulated library's GPUs when no state file names others: two H100s on an
    /// NVSwitch, an H200 with MIG on and a 3g.71gb at slices 0–3, an A100 with MIG off,
    /// an L40S without MIG.
    pub fn reference() -> SimGpuState {
        let addr = |s: &str| PciAddress::parse(s).expect("a valid address");
        let cpus = |s: &str| CpuSet::parse(s).ok();
        let switch = addr("0000:0a:00.0");
        let mut gpus = vec![
            sim_gpu("ref/1b", addr("0000:1b:00.0"), GpuModel::H100_80GB, Some(0), cpus("0-31"), vec![switch; 4]),
            sim_gpu("ref/1c", addr("0000:1c:00.0"), GpuModel::H100_80GB, Some(0), cpus("0-31"), vec![switch; 4]),
            sim_gpu("ref/3b", addr("0000:3b:00.0"), GpuModel::H200_141GB, Some(1), cpus("32-63"), vec![]),
            sim_gpu("ref/5e", addr("0000:5e:00.0"), GpuModel::A100_80GB, Some(1), cpus("32-63"), vec![]),
            sim_gpu("ref/86", addr("0000:86:00.0"), GpuModel::L40S, Some(1), cpus("32-63"), vec![]),
        ];
        gpus[2].mig = Some(MigMode { current: true, pending: true });
        let mut state = SimGpuState::new(gpus);
        let gi =
            state.create_gpu_instance(2, 9, Some(Placement { start: 0, size: 4 })).expect("an empty H200 takes a 3g");
        state
            .create_compute_instance(2, gi, sys::NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE, None)
            .expect("a 3g takes its CI");
        state
    }

    /// What [`Gpus::gpus`] reports: what NVML would show of this state.
    pub fn live(&self) -> Vec<LiveGpu> {
        let links: Vec<(PciAddress, Vec<PciAddress>)> =
            self.gpus.iter().map(|g| (g.address, g.nvlinks.clone())).collect();
        let peers = nvml::nvlink_peers(&links);
        self.gpus
            .iter()
            .zip(peers)
            .enumerate()
            .map(|(i, (g, nvlink_peers))| {
                let mig = self.mig_mode(i).ok();
                let mut instances: Vec<LiveMigInstance> = if mig.is_some_and(|m| m.current) {
                    g.instances
                        .iter()
                        .map(|gi| {
                            let mut compute_instances: Vec<u32> = gi.compute_instances.iter().map(|c| c.id).collect();
                            compute_instances.sort_unstable();
                            LiveMigInstance {
                                id: gi.id,
                                profile_id: gi.profile_id,
                                profile: nvml::profile_name(Some(g.model), gi.profile_id, None),
                                start: gi.placement.start as u8,
                                size: gi.placement.size as u8,
                                compute_instances,
                            }
                        })
                        .collect()
                } else {
                    vec![]
                };
                instances.sort_by_key(|i| (i.start, i.id));
                LiveGpu {
                    address: g.address,
                    uuid: g.uuid.clone(),
                    name: g.model.info().nvml_name.to_string(),
                    model: nvml::identify(g.model.info().nvml_name, g.memory),
                    memory: g.memory,
                    numa_node: g.numa_node,
                    cpu_affinity: g.cpu_affinity.clone(),
                    nvlink_peers,
                    mig,
                    instances,
                    vgpu: g.vgpu.as_ref().map(|v| crate::live::LiveVgpu {
                        mode: v.mode,
                        vfs: match v.mode {
                            VgpuMode::SriovVf => (0..v.vfs).map(|n| sim_vf_address(g.address, n)).collect(),
                            VgpuMode::Mdev => Vec::new(),
                        },
                        devices: v
                            .devices
                            .iter()
                            .map(|d| match d.vf {
                                Some(n) => VgpuDevice::Vf(sim_vf_address(g.address, n)),
                                None => VgpuDevice::Mdev(d.uuid.clone()),
                            })
                            .collect(),
                    }),
                }
            })
            .collect()
    }
}

fn sim_gpu(
    seed: &str,
    address: PciAddress,
    model: GpuModel,
    numa_node: Option<u32>,
    cpu_affinity: Option<CpuSet>,
    nvlinks: Vec<PciAddress>,
) -> SimGpu {
    SimGpu {
        address,
        model,
        uuid: uuid(seed),
        memory: model::nvml_memory(model),
        numa_node,
        cpu_affinity,
        nvlinks,
        mig: model.supports_mig().then_some(MigMode { current: false, pending: false }),
        activation: Activation::Immediate,
        instances: vec![],
        // A MIG GPU of a twin offers its slices as mdevs unless a state file says SR-IOV.
        vgpu: model.supports_mig().then_some(SimVgpus {
            mode: crate::driver::vgpu::VgpuMode::Mdev,
            vfs: 0,
            devices: vec![],
        }),
    }
}

/// A UUID in NVML's form (`GPU-` and 32 hex digits), the same for the same seed.
fn uuid(seed: &str) -> String {
    let (a, b) = crate::hash::fnv1a_128(seed.as_bytes());
    let hex = format!("{a:016x}{b:016x}");
    format!("GPU-{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// The in-process simulated GPUs of one host.
#[derive(Debug)]
pub struct SimGpus {
    state: SimGpuState,
    /// Where the state is saved after each change, if anywhere.
    path: Option<PathBuf>,
}

impl SimGpus {
    /// GPUs held in memory only.
    pub fn new(state: SimGpuState) -> SimGpus {
        SimGpus { state, path: None }
    }

    /// GPUs whose state lives in `path` (a twin's `.fabrik/sim/`): read from it when it
    /// exists, else made by `initial` and written there.
    pub fn open(path: &Path, initial: impl FnOnce() -> SimGpuState) -> Result<SimGpus> {
        let state = if path.exists() {
            SimGpuState::load(path)?
        } else {
            let state = initial();
            state.save(path)?;
            state
        };
        Ok(SimGpus { state, path: Some(path.to_path_buf()) })
    }

    pub fn state(&self) -> &SimGpuState {
        &self.state
    }

    /// Changes the state from outside NVML's calls (a guest starts using a slice, a
    /// GPU is reset), and saves it.
    pub fn update<T>(&mut self, change: impl FnOnce(&mut SimGpuState) -> T) -> Result<T> {
        let out = change(&mut self.state);
        self.save()?;
        Ok(out)
    }

    /// Resets a GPU: a pending MIG mode becomes current, its MIG instances are gone.
    pub fn reset_gpu(&mut self, gpu: PciAddress) -> Result<MigMode> {
        let i = self.index(gpu)?;
        self.state.reset(i).map_err(|e| e.error(format!("reset {gpu}")))?;
        self.save()?;
        Ok(self.state.mig_mode(i).unwrap_or(MigMode { current: false, pending: false }))
    }

    fn save(&self) -> Result<()> {
        match &self.path {
            Some(p) => self.state.save(p),
            None => Ok(()),
        }
    }

    fn index(&self, gpu: PciAddress) -> Result<usize> {
        self.state.gpu(gpu).map_err(|e| e.error(format!("find GPU {gpu}")))
    }

    /// A failed MIG call: `NOT_SUPPORTED` on a GPU whose MIG is only off is refused.
    fn mig_error(&self, gpu: usize, e: &SimError, what: &str) -> DriverError {
        let err = e.error(what);
        match self.state.mig_mode(gpu) {
            Ok(mode) if e.code == Code::NOT_SUPPORTED && !mode.current => not_enabled(err),
            _ => err,
        }
    }

    fn create(&mut self, i: usize, profile_id: u32, start: u8, what: &str) -> Result<u32> {
        let s = &mut self.state;
        let placements = s.possible_placements(i, profile_id).unwrap_or_default();
        let size = placements
            .iter()
            .find(|p| p.start == u32::from(start))
            .map(|p| p.size)
            .or_else(|| nvml::catalog_size(Some(s.gpus[i].model), profile_id))
            .unwrap_or(1);
        let gi = s
            .create_gpu_instance(i, profile_id, Some(Placement { start: u32::from(start), size }))
            .map_err(|e| self.mig_error(i, &e, what))?;
        let s = &mut self.state;
        // The compute instance that fills it: the supported profile with most slices.
        let full = (0..sys::NVML_COMPUTE_INSTANCE_PROFILE_COUNT)
            .filter_map(|p| s.compute_instance_profile(i, gi, p).ok())
            .max_by_key(|p| p.slices);
        let made = match full {
            Some(p) => s.create_compute_instance(i, gi, p.id, None).map(|_| ()),
            None => Err(SimError { code: Code::NOT_SUPPORTED, message: "no compute instance profile".into() }),
        };
        if let Err(e) = made {
            let _ = s.destroy_gpu_instance(i, gi);
            return Err(e.error(format!("{what}: fill it with a compute instance")));
        }
        Ok(gi)
    }

    fn destroy(&mut self, i: usize, id: u32, what: &str) -> Result<()> {
        let gi = self.state.gpu_instance(i, id).map_err(|e| self.mig_error(i, &e, what))?;
        let (profile, start) = (self.profile_name(i, gi.profile_id), gi.placement.start as u8);
        if let Some(d) =
            self.state.gpus[i].vgpu.iter().flat_map(|v| &v.devices).find(|d| d.profile == profile && d.start == start)
        {
            return Err(Code::IN_USE.error(format!("{what}: vGPU {} sits on it", d.uuid)));
        }
        for p in 0..sys::NVML_COMPUTE_INSTANCE_PROFILE_COUNT {
            let Ok(cis) = self.state.compute_instances(i, id, p) else { continue };
            for ci in cis {
                self.state
                    .destroy_compute_instance(i, id, ci)
                    .map_err(|e| e.error(format!("{what}: destroy compute instance {ci}")))?;
            }
        }
        self.state.destroy_gpu_instance(i, id).map_err(|e| self.mig_error(i, &e, what))
    }
}

/// The vGPU type a simulated GPU offers for MIG profile `profile` (`3g.40gb` on an H100:
/// `NVIDIA H100-3-40C`, as `vgpu::type_for_mig` finds it), if the model has the profile.
pub fn sim_vgpu_type(model: GpuModel, profile: &str) -> Option<String> {
    crate::hw::mig::profiles(model).iter().find(|p| p.name == profile)?;
    let short = model.info().nvml_name.split_whitespace().nth(1).unwrap_or("GPU");
    let (base, media) = match profile.strip_suffix("+me") {
        Some(b) => (b, "ME"),
        None => (profile, ""),
    };
    let (slices, memory) = base.split_once("g.")?;
    Some(format!("NVIDIA {short}-{slices}-{}C{media}", memory.strip_suffix("gb")?))
}

/// The PCI address of a simulated GPU's VF `n` (ARI numbering after the PF's function).
pub fn sim_vf_address(gpu: PciAddress, n: u32) -> PciAddress {
    let f = 4 + n;
    PciAddress { device: gpu.device.wrapping_add((f / 8) as u8), function: (f % 8) as u8, ..gpu }
}

impl SimGpus {
    fn profile_name(&self, i: usize, profile_id: u32) -> String {
        nvml::profile_name(Some(self.state.gpus[i].model), profile_id, None)
    }

    /// What sysfs does (`vgpu.rs`), with what it refuses: a GPU offering no vGPUs, a
    /// type the GPU does not offer, a MIG instance that is missing or taken, no free VF.
    fn make_vgpu(
        &mut self,
        gpu: PciAddress,
        profile: &str,
        start: u8,
        uuid: &str,
        want_vf: Option<PciAddress>,
    ) -> Result<VgpuDevice> {
        let i = self.index(gpu)?;
        let g = &self.state.gpus[i];
        let Some(v) = &g.vgpu else {
            return Err(DriverError::new(
                ErrorKind::Unsupported,
                format!(
                    "GPU {gpu} offers no vGPUs: no VF with `nvidia/creatable_vgpu_types`, no `mdev_supported_types`"
                ),
            ));
        };
        let device = |d: &SimVgpu| match d.vf {
            Some(n) => VgpuDevice::Vf(sim_vf_address(gpu, n)),
            None => VgpuDevice::Mdev(d.uuid.clone()),
        };
        if let Some(d) = v.devices.iter().find(|d| d.uuid == uuid) {
            return Ok(device(d));
        }
        let type_name = sim_vgpu_type(g.model, profile).ok_or_else(|| {
            DriverError::new(ErrorKind::Refused, format!("GPU {gpu} offers no vGPU type for MIG profile {profile}"))
        })?;
        let live = self.state.live();
        let has_instance = live
            .iter()
            .filter(|l| l.address == gpu)
            .flat_map(|l| &l.instances)
            .any(|m| m.profile == profile && m.start == start);
        if !has_instance {
            return Err(DriverError::new(
                ErrorKind::Refused,
                format!("vGPU type {type_name} is not creatable on GPU {gpu}: no MIG instance {profile}@{start}"),
            ));
        }
        if let Some(d) = v.devices.iter().find(|d| d.profile == profile && d.start == start) {
            return Err(DriverError::new(
                ErrorKind::Refused,
                format!("MIG instance {profile}@{start} of GPU {gpu} already carries vGPU {}", d.uuid),
            ));
        }
        let vf = match (v.mode, want_vf) {
            (VgpuMode::Mdev, _) => None,
            // The VF the plan chose: one of the GPU's, with no vGPU type written yet.
            (VgpuMode::SriovVf, Some(want)) => {
                let n = (0..v.vfs).find(|n| sim_vf_address(gpu, *n) == want).ok_or_else(|| {
                    DriverError::new(ErrorKind::NotFound, format!("{want} is not a virtual function of GPU {gpu}"))
                })?;
                if let Some(d) = v.devices.iter().find(|d| d.vf == Some(n)) {
                    return Err(DriverError::new(
                        ErrorKind::Refused,
                        format!("VF {want} of GPU {gpu} already carries vGPU type {} (in use)", d.type_name),
                    ));
                }
                Some(n)
            }
            (VgpuMode::SriovVf, None) => {
                Some((0..v.vfs).find(|n| v.devices.iter().all(|d| d.vf != Some(*n))).ok_or_else(|| {
                    DriverError::new(ErrorKind::Refused, format!("GPU {gpu} has no free virtual function for a vGPU"))
                })?)
            }
        };
        let made = SimVgpu { uuid: uuid.to_string(), type_name, profile: profile.to_string(), start, vf };
        let out = device(&made);
        if let Some(v) = &mut self.state.gpus[i].vgpu {
            v.devices.push(made);
        }
        Ok(out)
    }
}

impl Gpus for SimGpus {
    fn gpus(&mut self) -> Result<Vec<LiveGpu>> {
        Ok(self.state.live())
    }

    fn set_mig_mode(&mut self, gpu: PciAddress, enabled: bool) -> Result<MigMode> {
        let what = nvml::set_mode_what(gpu, enabled);
        let i = self.index(gpu)?;
        let status = self.state.set_mig_mode(i, enabled).map_err(|e| e.error(&what))?;
        self.save()?;
        activation_ok(status, &what)?;
        self.state.mig_mode(i).map_err(|e| e.error(&what))
    }

    fn create_instance(&mut self, gpu: PciAddress, profile_id: u32, start: u8) -> Result<u32> {
        let what = nvml::create_what(gpu, profile_id, start);
        let i = self.index(gpu)?;
        let out = self.create(i, profile_id, start, &what);
        self.save()?;
        out
    }

    fn destroy_instance(&mut self, gpu: PciAddress, instance_id: u32) -> Result<()> {
        let what = nvml::destroy_what(gpu, instance_id);
        let i = self.index(gpu)?;
        // Saved even when it fails half-way: what was destroyed is gone, as on hardware.
        let out = self.destroy(i, instance_id, &what);
        self.save()?;
        out
    }

    fn create_vgpu(
        &mut self,
        gpu: PciAddress,
        profile: &str,
        start: u8,
        uuid: &str,
        vf: Option<PciAddress>,
    ) -> Result<VgpuDevice> {
        let out = self.make_vgpu(gpu, profile, start, uuid, vf)?;
        self.save()?;
        Ok(out)
    }

    fn remove_vgpu(&mut self, gpu: PciAddress, uuid: &str, _vf: Option<PciAddress>) -> Result<()> {
        let i = self.index(gpu)?;
        if let Some(v) = &mut self.state.gpus[i].vgpu {
            v.devices.retain(|d| d.uuid != uuid);
        }
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_and_shaped_like_nvml_ones() {
        let u = uuid("gpu01/0000:3b:00.0");
        assert_eq!(u, uuid("gpu01/0000:3b:00.0"));
        assert_ne!(u, uuid("gpu01/0000:3c:00.0"));
        assert_eq!(u.len(), "GPU-".len() + 36);
    }

    #[test]
    fn the_reference_state_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gpus.json");
        let state = SimGpuState::reference();
        state.save(&path).unwrap();
        assert_eq!(SimGpuState::load(&path).unwrap(), state);
        let live = state.live();
        assert_eq!(live[0].nvlink_peers, vec![state.gpus[1].address], "H100s share an NVSwitch");
        assert_eq!(live[2].instances.len(), 1);
        assert_eq!(live[2].instances[0].profile, "3g.71gb");
        assert_eq!(live[4].mig, None, "an L40S has no MIG");
    }
}
