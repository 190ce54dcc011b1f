//! Hardware knowledge: GPU models, their MIG profiles and placements.
//!
//! One catalog, used by the language (which model names exist), the checks, placement,
//! the simulated GPUs and the NVML driver.

pub mod arch;
pub mod gpu;
pub mod mig;

pub use arch::Arch;
pub use gpu::GpuModel;
