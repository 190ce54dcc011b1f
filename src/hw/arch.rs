//! CPU architectures of hosts, and the GPU models that imply one.

use super::GpuModel;

crate::words! {
    /// A host's CPU architecture, as libvirt's capabilities name it (`<host><cpu><arch>`).
    #[derive(Default)]
    pub enum Arch {
        /// Intel and AMD servers (HGX boards).
        #[default]
        X86_64 = "x86_64",
        /// Arm servers: NVIDIA Grace (GB200, GH200).
        Aarch64 = "aarch64",
    }
}

impl GpuModel {
    /// The host architecture a GPU model can only sit in, where that is unambiguous: a
    /// GB200 superchip's Blackwell GPUs share the board with a Grace CPU. The SXM and
    /// PCIe parts go into x86 and Arm servers alike, so they imply nothing.
    pub fn arch(self) -> Option<Arch> {
        match self {
            GpuModel::GB200 => Some(Arch::Aarch64),
            GpuModel::A100_40GB
            | GpuModel::A100_80GB
            | GpuModel::H100_80GB
            | GpuModel::H100_94GB
            | GpuModel::H200_141GB
            | GpuModel::L40S => None,
        }
    }
}

impl GpuModel {
    /// The VFIO variant driver that must carry this GPU to a guest, where plain
    /// `vfio-pci` does not do: a GB200's memory is coherent with the Grace CPU and
    /// reaches the guest only through `nvgrace_gpu_vfio_pci` (Linux 6.8+), which exposes
    /// it as a cacheable device memory region. libvirt binds the variant itself for a
    /// `managed='yes'` hostdev when the host's kernel has it.
    pub fn vfio_variant(self) -> Option<&'static str> {
        match self {
            GpuModel::GB200 => Some("nvgrace_gpu_vfio_pci"),
            GpuModel::A100_40GB
            | GpuModel::A100_80GB
            | GpuModel::H100_80GB
            | GpuModel::H100_94GB
            | GpuModel::H200_141GB
            | GpuModel::L40S => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gb200_implies_an_arch() {
        assert_eq!(GpuModel::GB200.arch(), Some(Arch::Aarch64));
        assert_eq!(GpuModel::H200_141GB.arch(), None);
        assert_eq!(Arch::default(), Arch::X86_64);
    }
}
