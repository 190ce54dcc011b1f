//! CPU architectures of hosts, and the GPU models that imply one.

use super::GpuModel;

crate::words! {
    /// A host's CPU architecture, as libvirt's capabilities name it (`<host><cpu><arch>`).
    pub enum Arch {
        /// Intel and AMD servers (HGX boards).
        X86_64 = "x86_64",
        /// Arm servers: NVIDIA Grace (GB200, GH200).
        Aarch64 = "aarch64",
    }
}

impl Default for Arch {
    fn default() -> Self {
        Arch::X86_64
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

    /// The VFIO variant driver that passes this GPU through, where a plain `vfio-pci`
    /// does not do: GB200's GPU memory is coherent with the Grace CPU and reaches the
    /// guest through `nvgrace-gpu-vfio-pci` (Linux 6.8+), which exposes it as a device
    /// memory region the guest maps cacheable. libvirt 10.0+ binds the variant itself
    /// for a `managed='yes'` hostdev when the module is loaded (`modules.alias`).
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
