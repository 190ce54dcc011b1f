//! The NVML calls nvml-wrapper does not wrap, made safe: GPU and compute instances
//! (create at a placement, list, describe, destroy) and possible placements.
//!
//! Every symbol is looked up before it is called: a library without it gives a
//! `FUNCTION_NOT_FOUND` failure, never the panic `NvmlLib`'s own methods end in. Every
//! buffer is sized by the count the library reports, and read back only as far as the
//! count it returns (nvml-wrapper 0.13's `possible_placements` never sets its vector's
//! length, so it always returns nothing).

use std::ffi::CStr;
use std::ptr;

use nvml_wrapper_sys::bindings::{
    NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, NvmlLib, nvmlComputeInstance_t, nvmlComputeInstanceInfo_t,
    nvmlComputeInstanceProfileInfo_t, nvmlDevice_t, nvmlGpuInstance_t, nvmlGpuInstanceInfo_t,
    nvmlGpuInstancePlacement_t, nvmlGpuInstanceProfileInfo_t, nvmlGpuInstanceProfileInfo_v2_t, nvmlReturn_t,
};

use super::code::Code;
use crate::driver::DriverError;

/// A failed call: which function, and what it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub function: &'static str,
    pub code: Code,
}

impl Failure {
    /// The driver error, saying what was being done; a missing function says so.
    pub fn error(self, what: impl std::fmt::Display) -> DriverError {
        if self.code == Code::FUNCTION_NOT_FOUND {
            let mut e = self.code.error(&what);
            e.message = format!(
                "{what}: libnvidia-ml has no `{}`; the installed NVIDIA driver is too old for it",
                self.function
            );
            return e;
        }
        self.code.error(format!("{what} ({})", self.function))
    }
}

pub type RawResult<T> = Result<T, Failure>;

/// A GPU instance handle; valid while the library is loaded and the instance exists.
#[derive(Clone, Copy, Debug)]
pub struct GpuInstance(nvmlGpuInstance_t);

/// A compute instance handle.
#[derive(Clone, Copy, Debug)]
pub struct ComputeInstance(nvmlComputeInstance_t);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub start: u32,
    pub size: u32,
}

/// A GPU instance profile as `nvmlDeviceGetGpuInstanceProfileInfo` gives it.
#[derive(Clone, Copy, Debug)]
pub struct GiProfile {
    /// The `-lgip` id.
    pub id: u32,
    /// Compute slices.
    pub slices: u32,
    /// How many instances of it the GPU takes.
    pub instances: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct GiInfo {
    pub id: u32,
    pub profile_id: u32,
    pub placement: Placement,
}

#[derive(Clone, Copy, Debug)]
pub struct CiProfile {
    pub id: u32,
    pub slices: u32,
    pub instances: u32,
}

/// Looks a function up, calls it, and turns its code into a result.
macro_rules! call {
    ($lib:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match $lib.$f.as_ref() {
            Err(_) => Err(Failure { function: stringify!($f), code: Code::FUNCTION_NOT_FOUND }),
            Ok(f) => {
                // SAFETY: the symbol has the signature nvml-wrapper-sys generated from
                // nvml.h; every pointer handed to it points at a live local of the type
                // it expects, and every handle came from this library.
                let code: nvmlReturn_t = unsafe { f($($arg),*) };
                match Code(code) {
                    Code::SUCCESS => Ok(()),
                    code => Err(Failure { function: stringify!($f), code }),
                }
            }
        }
    };
}

/// NVML's raw MIG calls on a loaded library.
pub struct Raw<'a> {
    lib: &'a NvmlLib,
}

impl<'a> Raw<'a> {
    pub fn new(lib: &'a NvmlLib) -> Raw<'a> {
        Raw { lib }
    }

    /// `nvmlDeviceGetGpuInstanceProfileInfo` by `NVML_GPU_INSTANCE_PROFILE_*` index;
    /// `None` for a profile the GPU does not have.
    pub fn gpu_instance_profile(&self, dev: nvmlDevice_t, index: u32) -> RawResult<Option<GiProfile>> {
        // SAFETY: a plain C struct of integers; all zeros is a valid value.
        let mut info: nvmlGpuInstanceProfileInfo_t = unsafe { std::mem::zeroed() };
        match call!(self.lib, nvmlDeviceGetGpuInstanceProfileInfo(dev, index, &mut info)) {
            Ok(()) => Ok(Some(GiProfile { id: info.id, slices: info.sliceCount, instances: info.instanceCount })),
            Err(f) if f.code == Code::NOT_SUPPORTED || f.code == Code::INVALID_ARGUMENT => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// The profile's name as NVML gives it (`MIG 3g.71gb` → `3g.71gb`), when the library
    /// has the versioned call.
    pub fn gpu_instance_profile_name(&self, dev: nvmlDevice_t, index: u32) -> Option<String> {
        // SAFETY: as above; the name is a NUL-filled array.
        let mut info: nvmlGpuInstanceProfileInfo_v2_t = unsafe { std::mem::zeroed() };
        // NVML_STRUCT_VERSION(GpuInstanceProfileInfo, 2), as nvml.h defines it.
        info.version = (std::mem::size_of::<nvmlGpuInstanceProfileInfo_v2_t>() | (2 << 24)) as u32;
        call!(self.lib, nvmlDeviceGetGpuInstanceProfileInfoV(dev, index, &mut info)).ok()?;
        info.name[info.name.len() - 1] = 0;
        // SAFETY: the array is NUL-terminated (its last byte was just set to 0).
        let name = unsafe { CStr::from_ptr(info.name.as_ptr()) }.to_str().ok()?;
        Some(name.strip_prefix("MIG ").unwrap_or(name).to_string())
    }

    /// `nvmlDeviceGetGpuInstancePossiblePlacements_v2`: every placement of the profile.
    pub fn possible_placements(&self, dev: nvmlDevice_t, profile_id: u32) -> RawResult<Vec<Placement>> {
        let mut count: u32 = 0;
        call!(self.lib, nvmlDeviceGetGpuInstancePossiblePlacements_v2(dev, profile_id, ptr::null_mut(), &mut count))?;
        let mut buf = vec![nvmlGpuInstancePlacement_t { start: 0, size: 0 }; count as usize];
        call!(self.lib, nvmlDeviceGetGpuInstancePossiblePlacements_v2(dev, profile_id, buf.as_mut_ptr(), &mut count))?;
        buf.truncate(count as usize);
        Ok(buf.into_iter().map(|p| Placement { start: p.start, size: p.size }).collect())
    }

    /// `nvmlDeviceCreateGpuInstanceWithPlacement`: the instance at exactly `placement`,
    /// the others untouched.
    pub fn create_gpu_instance(&self, dev: nvmlDevice_t, profile_id: u32, at: Placement) -> RawResult<GpuInstance> {
        let placement = nvmlGpuInstancePlacement_t { start: at.start, size: at.size };
        let mut gi: nvmlGpuInstance_t = ptr::null_mut();
        call!(self.lib, nvmlDeviceCreateGpuInstanceWithPlacement(dev, profile_id, &placement, &mut gi))?;
        Ok(GpuInstance(gi))
    }

    /// `nvmlDeviceGetGpuInstances`: the instances of a profile; `capacity` is the
    /// profile's instance count, which bounds them.
    pub fn gpu_instances(&self, dev: nvmlDevice_t, profile_id: u32, capacity: u32) -> RawResult<Vec<GpuInstance>> {
        let mut buf: Vec<nvmlGpuInstance_t> = vec![ptr::null_mut(); capacity.max(1) as usize];
        let mut count: u32 = 0;
        call!(self.lib, nvmlDeviceGetGpuInstances(dev, profile_id, buf.as_mut_ptr(), &mut count))?;
        buf.truncate((count as usize).min(buf.len()));
        Ok(buf.into_iter().map(GpuInstance).collect())
    }

    /// `nvmlDeviceGetGpuInstanceById`.
    pub fn gpu_instance_by_id(&self, dev: nvmlDevice_t, id: u32) -> RawResult<GpuInstance> {
        let mut gi: nvmlGpuInstance_t = ptr::null_mut();
        call!(self.lib, nvmlDeviceGetGpuInstanceById(dev, id, &mut gi))?;
        Ok(GpuInstance(gi))
    }

    /// `nvmlGpuInstanceGetInfo`.
    pub fn gpu_instance_info(&self, gi: GpuInstance) -> RawResult<GiInfo> {
        // SAFETY: integers, a placement of integers and a handle; zeros are valid.
        let mut info: nvmlGpuInstanceInfo_t = unsafe { std::mem::zeroed() };
        call!(self.lib, nvmlGpuInstanceGetInfo(gi.0, &mut info))?;
        Ok(GiInfo {
            id: info.id,
            profile_id: info.profileId,
            placement: Placement { start: info.placement.start, size: info.placement.size },
        })
    }

    /// `nvmlGpuInstanceDestroy`: refused (`IN_USE`) while compute instances exist.
    pub fn destroy_gpu_instance(&self, gi: GpuInstance) -> RawResult<()> {
        call!(self.lib, nvmlGpuInstanceDestroy(gi.0))
    }

    /// `nvmlGpuInstanceGetComputeInstanceProfileInfo` by `NVML_COMPUTE_INSTANCE_PROFILE_*`;
    /// `None` for a profile the GPU instance does not have.
    pub fn compute_instance_profile(&self, gi: GpuInstance, index: u32) -> RawResult<Option<CiProfile>> {
        // SAFETY: a plain C struct of integers.
        let mut info: nvmlComputeInstanceProfileInfo_t = unsafe { std::mem::zeroed() };
        let shared = NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED;
        match call!(self.lib, nvmlGpuInstanceGetComputeInstanceProfileInfo(gi.0, index, shared, &mut info)) {
            Ok(()) => Ok(Some(CiProfile { id: info.id, slices: info.sliceCount, instances: info.instanceCount })),
            Err(f) if f.code == Code::NOT_SUPPORTED || f.code == Code::INVALID_ARGUMENT => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// `nvmlGpuInstanceCreateComputeInstance`.
    pub fn create_compute_instance(&self, gi: GpuInstance, profile_id: u32) -> RawResult<ComputeInstance> {
        let mut ci: nvmlComputeInstance_t = ptr::null_mut();
        call!(self.lib, nvmlGpuInstanceCreateComputeInstance(gi.0, profile_id, &mut ci))?;
        Ok(ComputeInstance(ci))
    }

    /// `nvmlGpuInstanceGetComputeInstances`: those of a profile; `capacity` is the
    /// profile's instance count.
    pub fn compute_instances(
        &self,
        gi: GpuInstance,
        profile_id: u32,
        capacity: u32,
    ) -> RawResult<Vec<ComputeInstance>> {
        let mut buf: Vec<nvmlComputeInstance_t> = vec![ptr::null_mut(); capacity.max(1) as usize];
        let mut count: u32 = 0;
        call!(self.lib, nvmlGpuInstanceGetComputeInstances(gi.0, profile_id, buf.as_mut_ptr(), &mut count))?;
        buf.truncate((count as usize).min(buf.len()));
        Ok(buf.into_iter().map(ComputeInstance).collect())
    }

    /// `nvmlComputeInstanceGetInfo_v2`: the compute instance's id.
    pub fn compute_instance_id(&self, ci: ComputeInstance) -> RawResult<u32> {
        // SAFETY: handles, integers and a placement; zeros are valid.
        let mut info: nvmlComputeInstanceInfo_t = unsafe { std::mem::zeroed() };
        call!(self.lib, nvmlComputeInstanceGetInfo_v2(ci.0, &mut info))?;
        Ok(info.id)
    }

    /// `nvmlComputeInstanceDestroy`: refused (`IN_USE`) while processes run on it.
    pub fn destroy_compute_instance(&self, ci: ComputeInstance) -> RawResult<()> {
        call!(self.lib, nvmlComputeInstanceDestroy(ci.0))
    }

    /// Every compute instance of a GPU instance, whatever its profile.
    pub fn all_compute_instances(&self, gi: GpuInstance) -> RawResult<Vec<ComputeInstance>> {
        let mut all = vec![];
        for index in 0..nvml_wrapper_sys::bindings::NVML_COMPUTE_INSTANCE_PROFILE_COUNT {
            if let Some(p) = self.compute_instance_profile(gi, index)? {
                all.extend(self.compute_instances(gi, p.id, p.instances)?);
            }
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::ErrorKind;

    #[test]
    fn a_missing_function_is_an_error_not_a_panic() {
        // Any shared library that is not NVML: every NVML symbol is missing from it.
        // SAFETY: libc is loaded in every process already; loading it runs nothing new.
        let lib = unsafe { NvmlLib::new("libc.so.6") }.unwrap();
        let raw = Raw::new(&lib);
        let f = raw.create_gpu_instance(ptr::null_mut(), 9, Placement { start: 0, size: 4 }).unwrap_err();
        assert_eq!(f, Failure { function: "nvmlDeviceCreateGpuInstanceWithPlacement", code: Code::FUNCTION_NOT_FOUND });
        let e = f.error("create a GPU instance");
        assert_eq!((e.kind, e.code.as_deref()), (ErrorKind::Unsupported, Some("NVML_ERROR_FUNCTION_NOT_FOUND")));
        assert!(e.message.contains("nvmlDeviceCreateGpuInstanceWithPlacement"), "{}", e.message);
        assert!(raw.possible_placements(ptr::null_mut(), 9).is_err());
        assert!(raw.gpu_instance_profile(ptr::null_mut(), 0).is_err());
        assert_eq!(raw.gpu_instance_profile_name(ptr::null_mut(), 0), None);
        assert!(raw.destroy_gpu_instance(GpuInstance(ptr::null_mut())).is_err());
        assert!(raw.destroy_compute_instance(ComputeInstance(ptr::null_mut())).is_err());
    }
}
