//! Hardware knowledge: GPU models, their MIG profiles and placements.
//!
//! One catalog, used by the language (which model names exist), the checks, placement,
//! the simulated GPUs and the NVML driver.

pub mod gpu;
pub mod mig;

pub use gpu::GpuModel;
