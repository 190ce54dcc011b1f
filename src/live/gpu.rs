//! GPUs as NVML reports them: identity, NUMA affinity, NVLink peers, MIG state.

use serde::{Deserialize, Serialize};

use crate::hw::GpuModel;
use crate::spec::types::{ByteSize, PciAddress};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveGpu {
    pub address: PciAddress,
    pub uuid: String,
    /// The name NVML reports (`NVIDIA H200`).
    pub name: String,
    /// The catalog model, when the name and memory identify one.
    pub model: Option<GpuModel>,
    pub memory: ByteSize,
    pub numa_node: Option<u32>,
    /// CPUs close to the GPU (NVML's CPU affinity).
    pub cpu_affinity: Option<crate::spec::types::CpuSet>,
    /// PCI addresses of the GPUs reached over active NVLinks.
    pub nvlink_peers: Vec<PciAddress>,
    /// `None` when the GPU cannot do MIG.
    pub mig: Option<MigMode>,
    pub instances: Vec<LiveMigInstance>,
    /// How the host offers vGPUs on the GPU, and the devices it carries; `None` when it
    /// offers none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vgpu: Option<LiveVgpu>,
}

/// The vGPU side of a GPU as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveVgpu {
    pub mode: crate::driver::vgpu::VgpuMode,
    /// The GPU's SR-IOV VFs, in `virtfn` order (none in mdev mode).
    #[serde(default)]
    pub vfs: Vec<PciAddress>,
    /// The vGPU devices there: a VF with a type written, or an mdev.
    #[serde(default)]
    pub devices: Vec<crate::driver::vgpu::VgpuDevice>,
}

/// MIG mode: the current one, and the one pending after a GPU reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigMode {
    pub current: bool,
    pub pending: bool,
}

/// A GPU instance with its placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveMigInstance {
    /// NVML's GPU instance id.
    pub id: u32,
    /// The profile id `nvidia-smi mig -lgip` shows (19 for 1g, 9 for 3g, …).
    pub profile_id: u32,
    /// The profile's name on this model (`3g.71gb`).
    pub profile: String,
    /// First memory slice and number of slices.
    pub start: u8,
    pub size: u8,
    /// Compute instance ids inside it.
    pub compute_instances: Vec<u32>,
}
