//! GPU models and what they offer.

use crate::spec::types::ByteSize;

crate::words! {
    /// A GPU model, as operators name it: family and memory.
    pub enum GpuModel {
        A100_40GB = "A100-40GB",
        A100_80GB = "A100-80GB",
        H100_80GB = "H100-80GB",
        /// H100 NVL.
        H100_94GB = "H100-94GB",
        H200_141GB = "H200-141GB",
        /// The Blackwell GPU of a GB200 superchip.
        GB200 = "GB200",
        /// An inference card without MIG or NVLink: passthrough or time slicing only.
        L40S = "L40S",
    }
}

/// What the catalog knows of a model.
#[derive(Clone, Copy, Debug)]
pub struct GpuInfo {
    /// PCI device id (vendor 0x10de), as `lspci -nn` shows it.
    pub pci_device_id: u16,
    /// Memory in GB as NVIDIA's datasheets give it.
    pub memory_gb: u64,
    pub mig: bool,
    pub nvlink: bool,
    /// The product name NVML reports (`nvmlDeviceGetName`).
    pub nvml_name: &'static str,
}

impl GpuModel {
    /// Device ids from the PCI ID repository (pci-ids.ucw.cz, vendor 10de) for the SXM
    /// parts; the GB200 id is inferred from NVIDIA's driver release notes, not read off
    /// hardware.
    pub fn info(self) -> GpuInfo {
        let (pci_device_id, memory_gb, mig, nvlink, nvml_name) = match self {
            GpuModel::A100_40GB => (0x20b0, 40, true, true, "NVIDIA A100-SXM4-40GB"),
            GpuModel::A100_80GB => (0x20b2, 80, true, true, "NVIDIA A100-SXM4-80GB"),
            GpuModel::H100_80GB => (0x2330, 80, true, true, "NVIDIA H100 80GB HBM3"),
            GpuModel::H100_94GB => (0x2321, 94, true, true, "NVIDIA H100 NVL"),
            GpuModel::H200_141GB => (0x2335, 141, true, true, "NVIDIA H200"),
            GpuModel::GB200 => (0x2941, 186, true, true, "NVIDIA GB200"),
            GpuModel::L40S => (0x26b9, 48, false, false, "NVIDIA L40S"),
        };
        GpuInfo { pci_device_id, memory_gb, mig, nvlink, nvml_name }
    }

    pub fn memory(self) -> ByteSize {
        ByteSize(self.info().memory_gb * ByteSize::GIB)
    }

    pub fn supports_mig(self) -> bool {
        self.info().mig
    }
}
