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
    }
}

impl GpuModel {
    /// Memory of one GPU, from NVIDIA's datasheets.
    pub fn memory(self) -> ByteSize {
        let gb = match self {
            GpuModel::A100_40GB => 40,
            GpuModel::A100_80GB | GpuModel::H100_80GB => 80,
            GpuModel::H100_94GB => 94,
            GpuModel::H200_141GB => 141,
            GpuModel::GB200 => 186,
        };
        ByteSize(gb * ByteSize::GIB)
    }

    /// Every model in this catalog supports MIG; kept as a question so a future
    /// model without it (or a time-sliced-only card) has a place to say so.
    pub fn supports_mig(self) -> bool {
        match self {
            GpuModel::A100_40GB
            | GpuModel::A100_80GB
            | GpuModel::H100_80GB
            | GpuModel::H100_94GB
            | GpuModel::H200_141GB
            | GpuModel::GB200 => true,
        }
    }
}
