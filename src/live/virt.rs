//! libvirt objects: domains, networks, storage pools and volumes, normalized.

use serde::{Deserialize, Serialize};

use crate::spec::types::{ByteSize, CpuSet, PageSize, PciAddress};

/// fabrik's mark on an object it created (the `<metadata>` element in its namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    pub factory: String,
    /// The resource id (`vm:gpu01/acme-vllm-0`).
    pub resource: String,
    /// Hash of the desired state the object was made from.
    pub spec_hash: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerState {
    Running,
    Paused,
    ShutOff,
    Crashed,
    Other,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveDomain {
    pub name: String,
    pub uuid: String,
    pub state: PowerState,
    pub autostart: bool,
    pub vcpus: u32,
    pub memory: ByteSize,
    pub hugepages: Option<PageSize>,
    /// Host CPUs per vCPU, from `<cputune><vcpupin>`.
    pub vcpupin: Vec<(u32, CpuSet)>,
    pub emulatorpin: Option<CpuSet>,
    /// `<numatune><memory mode=…>`: `strict` (libvirt's default when the element is
    /// there without a mode), `preferred`, `interleave` or `restrictive`.
    #[serde(default)]
    pub numa_mode: Option<String>,
    /// `<numatune><memory mode='strict' nodeset=…>`.
    pub numa_nodeset: Option<CpuSet>,
    /// Guest NUMA cells: (cpus, memory).
    pub numa_cells: Vec<(CpuSet, ByteSize)>,
    /// PCI host devices passed through.
    pub hostdevs: Vec<PciAddress>,
    pub interfaces: Vec<LiveInterface>,
    pub disks: Vec<LiveDisk>,
    pub owner: Option<Ownership>,
    /// The domain XML as libvirt returned it (inactive definition), for diffs.
    pub xml: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveInterface {
    pub mac: Option<String>,
    /// `bridge`, `network`, `hostdev`, …
    pub kind: String,
    /// Bridge or network name, or the VF's PCI address.
    pub source: String,
    pub model: Option<String>,
    /// The tap device while running (`vnet3`).
    pub target: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveDisk {
    pub target: String,
    pub bus: String,
    /// File path, or `pool/volume`.
    pub source: Option<String>,
    pub format: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveNetwork {
    pub name: String,
    pub uuid: String,
    pub active: bool,
    pub autostart: bool,
    pub bridge: Option<String>,
    /// `<forward mode=…>`: `bridge`, `hostdev`, `nat`, or none.
    pub forward: Option<String>,
    pub owner: Option<Ownership>,
    pub xml: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePool {
    pub name: String,
    pub uuid: String,
    pub kind: String,
    pub path: Option<String>,
    pub active: bool,
    pub autostart: bool,
    pub capacity: ByteSize,
    pub available: ByteSize,
    pub volumes: Vec<LiveVolume>,
    pub owner: Option<Ownership>,
    pub xml: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveVolume {
    pub name: String,
    pub path: String,
    pub capacity: ByteSize,
    pub allocation: ByteSize,
    pub format: Option<String>,
    pub owner: Option<Ownership>,
}
