//! MIG: mode, GPU instance profiles and placements, GPU and compute instances. Each
//! function translates NVML's arguments and hands the call to the shared model.

use std::ffi::c_uint;

use fabrik::driver::nvml::code::Code;
use fabrik::driver::sim_gpu::model::{CiProfile, GiProfile};
use fabrik::driver::sim_gpu::{Placement, SimGpuState};
use nvml_wrapper_sys::bindings::{
    NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, NVML_DEVICE_MIG_DISABLE, NVML_DEVICE_MIG_ENABLE,
    nvmlComputeInstance_t, nvmlComputeInstanceInfo_t, nvmlComputeInstancePlacement_t, nvmlComputeInstanceProfileInfo_t,
    nvmlComputeInstanceProfileInfo_v2_t, nvmlDevice_t, nvmlGpuInstance_t, nvmlGpuInstanceInfo_t,
    nvmlGpuInstancePlacement_t, nvmlGpuInstanceProfileInfo_t, nvmlGpuInstanceProfileInfo_v2_t,
    nvmlGpuInstanceProfileInfo_v3_t, nvmlReturn_t,
};

use crate::{SimResult, ci_handle, ci_of, device_handle, device_of, fail, fill_str, gi_handle, gi_of, put, with_state};

/// `NVML_STRUCT_VERSION(name, ver)` of nvml.h.
const fn struct_version<T>(ver: u32) -> u32 {
    (std::mem::size_of::<T>() as u32) | (ver << 24)
}

fn mode(on: bool) -> c_uint {
    if on { NVML_DEVICE_MIG_ENABLE } else { NVML_DEVICE_MIG_DISABLE }
}

/// Out-pointers are checked before the state changes: a call that cannot report its
/// result must not leave an instance behind.
fn need<T>(out: *mut T, what: &str) -> SimResult<()> {
    if out.is_null() { fail(Code::INVALID_ARGUMENT, format!("a null {what}")) } else { Ok(()) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: nvmlDevice_t,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetMigMode", |s| {
        let m = s.mig_mode(device_of(device)?)?;
        need(pending, "pending mode")?;
        unsafe {
            put(current, mode(m.current))?;
            put(pending, mode(m.pending))
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceSetMigMode(
    device: nvmlDevice_t,
    mode: c_uint,
    activation_status: *mut nvmlReturn_t,
) -> nvmlReturn_t {
    with_state("nvmlDeviceSetMigMode", |s| {
        let gpu = device_of(device)?;
        let enabled = match mode {
            NVML_DEVICE_MIG_ENABLE => true,
            NVML_DEVICE_MIG_DISABLE => false,
            other => return fail(Code::INVALID_ARGUMENT, format!("MIG mode {other}")),
        };
        need(activation_status, "activation status")?;
        let status = s.set_mig_mode(gpu, enabled)?;
        unsafe { put(activation_status, status.0) }
    })
}

fn gi_info_v1(p: &GiProfile) -> nvmlGpuInstanceProfileInfo_t {
    nvmlGpuInstanceProfileInfo_t {
        id: p.profile.id,
        isP2pSupported: 0,
        sliceCount: u32::from(p.profile.compute_slices),
        instanceCount: u32::from(p.profile.max_instances),
        multiprocessorCount: p.multiprocessors,
        copyEngineCount: p.copy_engines,
        decoderCount: p.decoders,
        encoderCount: 0,
        jpegCount: p.jpegs,
        ofaCount: p.ofas,
        memorySizeMB: p.memory_mib,
    }
}

/// Fills a versioned profile struct (v2 or v3, by the version the caller set).
unsafe fn put_gi_info_versioned(info: *mut nvmlGpuInstanceProfileInfo_v2_t, p: &GiProfile) -> SimResult<()> {
    need(info, "profile info")?;
    let v1 = gi_info_v1(p);
    // SAFETY: not null; the caller set the version first, which says how big it is.
    let version = unsafe { (*info).version };
    if version == struct_version::<nvmlGpuInstanceProfileInfo_v2_t>(2) {
        // SAFETY: all integers and a char array; zeros are valid.
        let mut v2: nvmlGpuInstanceProfileInfo_v2_t = unsafe { std::mem::zeroed() };
        v2.version = version;
        v2.id = v1.id;
        v2.isP2pSupported = v1.isP2pSupported;
        v2.sliceCount = v1.sliceCount;
        v2.instanceCount = v1.instanceCount;
        v2.multiprocessorCount = v1.multiprocessorCount;
        v2.copyEngineCount = v1.copyEngineCount;
        v2.decoderCount = v1.decoderCount;
        v2.encoderCount = v1.encoderCount;
        v2.jpegCount = v1.jpegCount;
        v2.ofaCount = v1.ofaCount;
        v2.memorySizeMB = v1.memorySizeMB;
        fill_str(&mut v2.name, &p.name);
        unsafe { put(info, v2) }
    } else if version == struct_version::<nvmlGpuInstanceProfileInfo_v3_t>(3) {
        let mut v3: nvmlGpuInstanceProfileInfo_v3_t = unsafe { std::mem::zeroed() };
        v3.version = version;
        v3.id = v1.id;
        v3.sliceCount = v1.sliceCount;
        v3.instanceCount = v1.instanceCount;
        v3.multiprocessorCount = v1.multiprocessorCount;
        v3.copyEngineCount = v1.copyEngineCount;
        v3.decoderCount = v1.decoderCount;
        v3.encoderCount = v1.encoderCount;
        v3.jpegCount = v1.jpegCount;
        v3.ofaCount = v1.ofaCount;
        v3.memorySizeMB = v1.memorySizeMB;
        fill_str(&mut v3.name, &p.name);
        unsafe { put(info.cast::<nvmlGpuInstanceProfileInfo_v3_t>(), v3) }
    } else {
        fail(Code::INVALID_ARGUMENT, format!("profile info version {version:#x}"))
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceProfileInfo(
    device: nvmlDevice_t,
    profile: c_uint,
    info: *mut nvmlGpuInstanceProfileInfo_t,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetGpuInstanceProfileInfo", |s| {
        let p = s.gpu_instance_profile(device_of(device)?, profile)?;
        unsafe { put(info, gi_info_v1(&p)) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceProfileInfoV(
    device: nvmlDevice_t,
    profile: c_uint,
    info: *mut nvmlGpuInstanceProfileInfo_v2_t,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetGpuInstanceProfileInfoV", |s| {
        let p = s.gpu_instance_profile(device_of(device)?, profile)?;
        unsafe { put_gi_info_versioned(info, &p) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceProfileInfoByIdV(
    device: nvmlDevice_t,
    profile_id: c_uint,
    info: *mut nvmlGpuInstanceProfileInfo_v2_t,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetGpuInstanceProfileInfoByIdV", |s| {
        let p = s.gpu_instance_profile_by_id(device_of(device)?, profile_id, Code::NOT_SUPPORTED)?;
        unsafe { put_gi_info_versioned(info, &p) }
    })
}

/// Writes placements: only the count when `out` is null, as NVML does.
unsafe fn put_placements<T>(
    out: *mut T,
    count: *mut c_uint,
    all: &[Placement],
    make: impl Fn(Placement) -> T,
) -> SimResult<()> {
    need(count, "count")?;
    if !out.is_null() {
        for (i, p) in all.iter().enumerate() {
            // SAFETY: nvml.h: "If non-NULL must be large enough to accommodate the
            // placements supported by the profile".
            unsafe { out.add(i).write(make(*p)) };
        }
    }
    unsafe { put(count, all.len() as c_uint) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstancePossiblePlacements_v2(
    device: nvmlDevice_t,
    profile_id: c_uint,
    placements: *mut nvmlGpuInstancePlacement_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetGpuInstancePossiblePlacements_v2", |s| {
        let all = s.possible_placements(device_of(device)?, profile_id)?;
        unsafe {
            put_placements(placements, count, &all, |p| nvmlGpuInstancePlacement_t { start: p.start, size: p.size })
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceRemainingCapacity(
    device: nvmlDevice_t,
    profile_id: c_uint,
    count: *mut c_uint,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetGpuInstanceRemainingCapacity", |s| {
        let n = s.remaining_capacity(device_of(device)?, profile_id)?;
        unsafe { put(count, n) }
    })
}

fn create_gi(
    s: &mut SimGpuState,
    device: nvmlDevice_t,
    profile_id: u32,
    at: Option<Placement>,
    out: *mut nvmlGpuInstance_t,
) -> SimResult<()> {
    let gpu = device_of(device)?;
    need(out, "GPU instance")?;
    let id = s.create_gpu_instance(gpu, profile_id, at)?;
    unsafe { put(out, gi_handle(gpu, id)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceCreateGpuInstance(
    device: nvmlDevice_t,
    profile_id: c_uint,
    gpu_instance: *mut nvmlGpuInstance_t,
) -> nvmlReturn_t {
    with_state("nvmlDeviceCreateGpuInstance", |s| create_gi(s, device, profile_id, None, gpu_instance))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceCreateGpuInstanceWithPlacement(
    device: nvmlDevice_t,
    profile_id: c_uint,
    placement: *const nvmlGpuInstancePlacement_t,
    gpu_instance: *mut nvmlGpuInstance_t,
) -> nvmlReturn_t {
    with_state("nvmlDeviceCreateGpuInstanceWithPlacement", |s| {
        if placement.is_null() {
            return fail(Code::INVALID_ARGUMENT, "a null placement");
        }
        // SAFETY: not null; nvml.h asks for a placement.
        let p = unsafe { placement.read() };
        create_gi(s, device, profile_id, Some(Placement { start: p.start, size: p.size }), gpu_instance)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceDestroy(gpu_instance: nvmlGpuInstance_t) -> nvmlReturn_t {
    with_state("nvmlGpuInstanceDestroy", |s| {
        let (gpu, gi) = gi_of(gpu_instance)?;
        s.destroy_gpu_instance(gpu, gi)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstances(
    device: nvmlDevice_t,
    profile_id: c_uint,
    gpu_instances: *mut nvmlGpuInstance_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetGpuInstances", |s| {
        let gpu = device_of(device)?;
        let ids = s.gpu_instances(gpu, profile_id)?;
        need(gpu_instances, "GPU instance buffer")?;
        need(count, "count")?;
        // The buffer holds the profile's instance count, which `ids` never exceeds.
        for (i, id) in ids.iter().enumerate() {
            unsafe { gpu_instances.add(i).write(gi_handle(gpu, *id)) };
        }
        unsafe { put(count, ids.len() as c_uint) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceById(
    device: nvmlDevice_t,
    id: c_uint,
    gpu_instance: *mut nvmlGpuInstance_t,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetGpuInstanceById", |s| {
        let gpu = device_of(device)?;
        s.gpu_instance(gpu, id)?;
        unsafe { put(gpu_instance, gi_handle(gpu, id)) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetInfo(
    gpu_instance: nvmlGpuInstance_t,
    info: *mut nvmlGpuInstanceInfo_t,
) -> nvmlReturn_t {
    with_state("nvmlGpuInstanceGetInfo", |s| {
        let (gpu, gi) = gi_of(gpu_instance)?;
        let inst = s.gpu_instance_by_handle(gpu, gi)?;
        let placement = nvmlGpuInstancePlacement_t { start: inst.placement.start, size: inst.placement.size };
        let value =
            nvmlGpuInstanceInfo_t { device: device_handle(gpu), id: inst.id, profileId: inst.profile_id, placement };
        unsafe { put(info, value) }
    })
}

fn ci_info_v1(p: &CiProfile, gi: &GiProfile) -> nvmlComputeInstanceProfileInfo_t {
    nvmlComputeInstanceProfileInfo_t {
        id: p.id,
        sliceCount: p.slices,
        instanceCount: p.instances,
        multiprocessorCount: p.multiprocessors,
        sharedCopyEngineCount: gi.copy_engines,
        sharedDecoderCount: gi.decoders,
        sharedEncoderCount: 0,
        sharedJpegCount: gi.jpegs,
        sharedOfaCount: gi.ofas,
    }
}

/// A compute instance profile and its GPU instance's profile.
fn ci_profile(s: &SimGpuState, h: nvmlGpuInstance_t, profile: u32, eng: u32) -> SimResult<(CiProfile, GiProfile)> {
    let (gpu, gi) = gi_of(h)?;
    if eng != NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED {
        return fail(Code::INVALID_ARGUMENT, format!("engine profile {eng}"));
    }
    let p = s.compute_instance_profile(gpu, gi, profile)?;
    let inst = s.gpu_instance_by_handle(gpu, gi)?;
    let g = s.gpu_instance_profile_by_id(gpu, inst.profile_id, Code::UNKNOWN)?;
    Ok((p, g))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceProfileInfo(
    gpu_instance: nvmlGpuInstance_t,
    profile: c_uint,
    eng_profile: c_uint,
    info: *mut nvmlComputeInstanceProfileInfo_t,
) -> nvmlReturn_t {
    with_state("nvmlGpuInstanceGetComputeInstanceProfileInfo", |s| {
        let (p, g) = ci_profile(s, gpu_instance, profile, eng_profile)?;
        unsafe { put(info, ci_info_v1(&p, &g)) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceProfileInfoV(
    gpu_instance: nvmlGpuInstance_t,
    profile: c_uint,
    eng_profile: c_uint,
    info: *mut nvmlComputeInstanceProfileInfo_v2_t,
) -> nvmlReturn_t {
    with_state("nvmlGpuInstanceGetComputeInstanceProfileInfoV", |s| {
        let (p, g) = ci_profile(s, gpu_instance, profile, eng_profile)?;
        need(info, "profile info")?;
        // SAFETY: not null; the caller set the version first.
        let version = unsafe { (*info).version };
        if version != struct_version::<nvmlComputeInstanceProfileInfo_v2_t>(2) {
            return fail(Code::INVALID_ARGUMENT, format!("profile info version {version:#x}"));
        }
        let v1 = ci_info_v1(&p, &g);
        // SAFETY: integers and a char array; zeros are valid.
        let mut v2: nvmlComputeInstanceProfileInfo_v2_t = unsafe { std::mem::zeroed() };
        v2.version = version;
        v2.id = v1.id;
        v2.sliceCount = v1.sliceCount;
        v2.instanceCount = v1.instanceCount;
        v2.multiprocessorCount = v1.multiprocessorCount;
        v2.sharedCopyEngineCount = v1.sharedCopyEngineCount;
        v2.sharedDecoderCount = v1.sharedDecoderCount;
        v2.sharedEncoderCount = v1.sharedEncoderCount;
        v2.sharedJpegCount = v1.sharedJpegCount;
        v2.sharedOfaCount = v1.sharedOfaCount;
        fill_str(&mut v2.name, &p.name);
        unsafe { put(info, v2) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceRemainingCapacity(
    gpu_instance: nvmlGpuInstance_t,
    profile_id: c_uint,
    count: *mut c_uint,
) -> nvmlReturn_t {
    with_state("nvmlGpuInstanceGetComputeInstanceRemainingCapacity", |s| {
        let (gpu, gi) = gi_of(gpu_instance)?;
        let mut trial = s.clone();
        let mut n = 0;
        while trial.create_compute_instance(gpu, gi, profile_id, None).is_ok() {
            n += 1;
        }
        s.compute_instance_profile(gpu, gi, profile_id)?;
        unsafe { put(count, n) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstancePossiblePlacements(
    gpu_instance: nvmlGpuInstance_t,
    profile_id: c_uint,
    placements: *mut nvmlComputeInstancePlacement_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    with_state("nvmlGpuInstanceGetComputeInstancePossiblePlacements", |s| {
        let (gpu, gi) = gi_of(gpu_instance)?;
        let all = s.compute_instance_placements(gpu, gi, profile_id)?;
        unsafe {
            put_placements(placements, count, &all, |p| nvmlComputeInstancePlacement_t { start: p.start, size: p.size })
        }
    })
}

fn create_ci(
    s: &mut SimGpuState,
    h: nvmlGpuInstance_t,
    profile_id: u32,
    at: Option<Placement>,
    out: *mut nvmlComputeInstance_t,
) -> SimResult<()> {
    let (gpu, gi) = gi_of(h)?;
    need(out, "compute instance")?;
    let id = s.create_compute_instance(gpu, gi, profile_id, at)?;
    unsafe { put(out, ci_handle(gpu, gi, id)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceCreateComputeInstance(
    gpu_instance: nvmlGpuInstance_t,
    profile_id: c_uint,
    compute_instance: *mut nvmlComputeInstance_t,
) -> nvmlReturn_t {
    with_state("nvmlGpuInstanceCreateComputeInstance", |s| {
        create_ci(s, gpu_instance, profile_id, None, compute_instance)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceCreateComputeInstanceWithPlacement(
    gpu_instance: nvmlGpuInstance_t,
    profile_id: c_uint,
    placement: *const nvmlComputeInstancePlacement_t,
    compute_instance: *mut nvmlComputeInstance_t,
) -> nvmlReturn_t {
    with_state("nvmlGpuInstanceCreateComputeInstanceWithPlacement", |s| {
        if placement.is_null() {
            return fail(Code::INVALID_ARGUMENT, "a null placement");
        }
        // SAFETY: not null; nvml.h asks for a placement.
        let p = unsafe { placement.read() };
        create_ci(s, gpu_instance, profile_id, Some(Placement { start: p.start, size: p.size }), compute_instance)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlComputeInstanceDestroy(compute_instance: nvmlComputeInstance_t) -> nvmlReturn_t {
    with_state("nvmlComputeInstanceDestroy", |s| {
        let (gpu, gi, ci) = ci_of(compute_instance)?;
        s.destroy_compute_instance(gpu, gi, ci)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstances(
    gpu_instance: nvmlGpuInstance_t,
    profile_id: c_uint,
    compute_instances: *mut nvmlComputeInstance_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    with_state("nvmlGpuInstanceGetComputeInstances", |s| {
        let (gpu, gi) = gi_of(gpu_instance)?;
        let ids = s.compute_instances(gpu, gi, profile_id)?;
        need(compute_instances, "compute instance buffer")?;
        need(count, "count")?;
        // The buffer holds the profile's instance count, which `ids` never exceeds.
        for (i, id) in ids.iter().enumerate() {
            unsafe { compute_instances.add(i).write(ci_handle(gpu, gi, *id)) };
        }
        unsafe { put(count, ids.len() as c_uint) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpuInstanceGetComputeInstanceById(
    gpu_instance: nvmlGpuInstance_t,
    id: c_uint,
    compute_instance: *mut nvmlComputeInstance_t,
) -> nvmlReturn_t {
    with_state("nvmlGpuInstanceGetComputeInstanceById", |s| {
        let (gpu, gi) = gi_of(gpu_instance)?;
        s.compute_instance(gpu, gi, id)?;
        unsafe { put(compute_instance, ci_handle(gpu, gi, id)) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlComputeInstanceGetInfo_v2(
    compute_instance: nvmlComputeInstance_t,
    info: *mut nvmlComputeInstanceInfo_t,
) -> nvmlReturn_t {
    with_state("nvmlComputeInstanceGetInfo_v2", |s| {
        let (gpu, gi, ci) = ci_of(compute_instance)?;
        let c = s.compute_instance(gpu, gi, ci).map_err(|e| fabrik::driver::sim_gpu::SimError {
            code: if e.code == Code::NOT_FOUND { Code::INVALID_ARGUMENT } else { e.code },
            ..e
        })?;
        let value = nvmlComputeInstanceInfo_t {
            device: device_handle(gpu),
            gpuInstance: gi_handle(gpu, gi),
            id: c.id,
            profileId: c.profile_id,
            placement: nvmlComputeInstancePlacement_t { start: c.placement.start, size: c.placement.size },
        };
        unsafe { put(info, value) }
    })
}
