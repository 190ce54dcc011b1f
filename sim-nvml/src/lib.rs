//! A simulated libnvidia-ml: the NVML C functions nvml-wrapper and fabrik's NVML driver
//! call, over simulated GPUs, so that the driver's real code runs where there is no GPU.
//!
//! The GPUs and their MIG rules are fabrik's own ([`fabrik::driver::sim_gpu::model`],
//! on the hardware catalog): this crate only speaks NVML's ABI, built from
//! nvml-wrapper-sys's types. Calls fail with the codes `nvml.h` documents (see the
//! model's table).
//!
//! The state is a JSON file ([`SimGpuState`]), read at `nvmlInit` and again at every
//! call, and written after every change, so it outlives the process and is shared by
//! every process that loads the library, like a GPU's. Its path is
//! `$FABRIK_SIM_NVML_STATE`, else the library's own path with `.json` appended (so that
//! two copies of the library are two independent hosts). A missing file is created
//! holding [`SimGpuState::reference`]. With `FABRIK_SIM_NVML_LOG` set, every failed
//! call is reported on stderr with the simulation's reason. With `FABRIK_SYSFS_ROOT`
//! set, the library also keeps the GPUs' vGPU side in a fake sysfs tree there, as
//! NVIDIA's vGPU manager would (`sysfs.rs`).

// The exported functions are NVML's: their names are its names, and their safety
// contract is nvml.h's (valid pointers where it asks for them).
#![allow(non_snake_case)]
#![allow(clippy::missing_safety_doc)]

mod device;
mod mig;
mod sysfs;

use std::ffi::{CStr, c_char, c_uint, c_void};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use fabrik::driver::nvml::code::Code;
use fabrik::driver::sim_gpu::{SimError, SimGpuState};
use nvml_wrapper_sys::bindings::{
    nvmlComputeInstance_st, nvmlComputeInstance_t, nvmlDevice_st, nvmlDevice_t, nvmlGpuInstance_st, nvmlGpuInstance_t,
    nvmlReturn_t,
};

/// Names the state file.
const STATE_ENV: &str = "FABRIK_SIM_NVML_STATE";
/// Set to report failed calls on stderr.
const LOG_ENV: &str = "FABRIK_SIM_NVML_LOG";

/// What the driver reports as its version: a release before 580.82, so nvml-wrapper
/// keeps NVML 12's field-id numbering.
const DRIVER_VERSION: &str = "570.86.15";
const NVML_VERSION: &str = "12.570.86.15";

struct Lib {
    /// `nvmlInit` calls not yet matched by `nvmlShutdown`.
    refs: u32,
    path: Option<PathBuf>,
    state: SimGpuState,
}

static LIB: Mutex<Option<Lib>> = Mutex::new(None);

type SimResult<T> = Result<T, SimError>;

fn fail<T>(code: Code, message: impl Into<String>) -> SimResult<T> {
    Err(SimError { code, message: message.into() })
}

fn log(function: &str, e: &SimError) {
    if std::env::var_os(LOG_ENV).is_some() {
        eprintln!("sim-nvml: {function}: {} ({})", e.code.name(), e.message);
    }
}

/// Runs one call on the current state: read again from its file, written back when the
/// call changed it. Returns the call's code.
fn with_state(function: &str, call: impl FnOnce(&mut SimGpuState) -> SimResult<()>) -> nvmlReturn_t {
    let mut guard = LIB.lock().unwrap_or_else(PoisonError::into_inner);
    run(guard.as_mut(), function, call)
}

/// [`with_state`] under the lock already held.
fn run(lib: Option<&mut Lib>, function: &str, call: impl FnOnce(&mut SimGpuState) -> SimResult<()>) -> nvmlReturn_t {
    let Some(lib) = lib else {
        log(function, &SimError { code: Code::UNINITIALIZED, message: "nvmlInit was not called".into() });
        return Code::UNINITIALIZED.0;
    };
    if let Some(path) = lib.path.as_ref().filter(|p| p.exists()) {
        match SimGpuState::load(path) {
            Ok(state) => lib.state = state,
            Err(e) => {
                eprintln!("sim-nvml: {function}: {}", e.message);
                return Code::UNKNOWN.0;
            }
        }
    }
    let before = lib.state.clone();
    // The vGPU manager's side of sysfs: what was written to the fake tree since the last
    // call is taken in first (`sysfs.rs`).
    if let Some(root) = sysfs::root()
        && let Err(e) = sysfs::sync(&mut lib.state, &root)
    {
        eprintln!("sim-nvml: {function}: {e}");
        return Code::UNKNOWN.0;
    }
    let out = call(&mut lib.state);
    if lib.state != before
        && let Some(path) = &lib.path
        && let Err(e) = lib.state.save(path)
    {
        eprintln!("sim-nvml: {function}: {}", e.message);
        return Code::UNKNOWN.0;
    }
    match out {
        Ok(()) => Code::SUCCESS.0,
        Err(e) => {
            log(function, &e);
            e.code.0
        }
    }
}

/// The state file: named by the environment, else beside this library.
fn state_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(STATE_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    // SAFETY: dladdr only reads the loader's tables; `info` is a valid out-pointer and
    // the address is one of this library's functions.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let found = unsafe { libc::dladdr(nvmlInit_v2 as *const c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr gives a NUL-terminated path that lives as long as the mapping.
    let file = unsafe { CStr::from_ptr(info.dli_fname) }.to_str().ok()?;
    Some(PathBuf::from(format!("{file}.json")))
}

fn init() -> nvmlReturn_t {
    let mut guard = LIB.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(lib) = guard.as_mut() {
        lib.refs += 1;
        return Code::SUCCESS.0;
    }
    let path = state_path();
    let state = match &path {
        Some(p) if p.exists() => match SimGpuState::load(p) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sim-nvml: nvmlInit: {}", e.message);
                return Code::UNKNOWN.0;
            }
        },
        Some(p) => {
            let s = SimGpuState::reference();
            if let Err(e) = s.save(p) {
                eprintln!("sim-nvml: nvmlInit: {}", e.message);
                return Code::UNKNOWN.0;
            }
            s
        }
        None => SimGpuState::reference(),
    };
    *guard = Some(Lib { refs: 1, path, state });
    Code::SUCCESS.0
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    init()
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit() -> nvmlReturn_t {
    init()
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> nvmlReturn_t {
    init()
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    let mut guard = LIB.lock().unwrap_or_else(PoisonError::into_inner);
    match guard.as_mut() {
        None => Code::UNINITIALIZED.0,
        Some(lib) if lib.refs > 1 => {
            lib.refs -= 1;
            Code::SUCCESS.0
        }
        Some(_) => {
            // The last writes to the fake sysfs tree are taken in before the process goes.
            let synced = run(guard.as_mut(), "nvmlShutdown", |_| Ok(()));
            *guard = None;
            synced
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    Code(result).text().as_ptr()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    with_state("nvmlSystemGetDriverVersion", |_| unsafe { put_str(version, length, DRIVER_VERSION) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    with_state("nvmlSystemGetNVMLVersion", |_| unsafe { put_str(version, length, NVML_VERSION) })
}

/// Writes through an out-pointer NVML's caller gave.
unsafe fn put<T>(out: *mut T, value: T) -> SimResult<()> {
    if out.is_null() {
        return fail(Code::INVALID_ARGUMENT, "a null pointer");
    }
    // SAFETY: not null; nvml.h's contract makes it point at a `T`.
    unsafe { out.write(value) };
    Ok(())
}

/// Copies a string into a caller's buffer of `length` bytes, NUL-terminated.
unsafe fn put_str(buf: *mut c_char, length: c_uint, text: &str) -> SimResult<()> {
    if buf.is_null() {
        return fail(Code::INVALID_ARGUMENT, "a null buffer");
    }
    if text.len() + 1 > length as usize {
        return fail(
            Code::INSUFFICIENT_SIZE,
            format!("`{text}` needs {} bytes, the buffer has {length}", text.len() + 1),
        );
    }
    // SAFETY: the buffer holds `length` bytes, which is enough for the text and its NUL.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buf, text.len());
        buf.add(text.len()).write(0);
    }
    Ok(())
}

/// Copies a string into a fixed C array (a struct's name field), cut to fit.
fn fill_str<const N: usize>(field: &mut [c_char; N], text: &str) {
    let n = text.len().min(N - 1);
    for (dst, src) in field.iter_mut().zip(text.bytes().take(n)) {
        *dst = src as c_char;
    }
    field[n] = 0;
}

// Handles are opaque to callers: they carry a tag and the indices of what they name,
// never an address. A handle to something destroyed names nothing and is refused.
const DEVICE_TAG: usize = 0xD5;
const GI_TAG: usize = 0x61;
const CI_TAG: usize = 0xC1;
const TAG_SHIFT: u32 = 48;

fn device_handle(gpu: usize) -> nvmlDevice_t {
    std::ptr::without_provenance_mut::<nvmlDevice_st>((DEVICE_TAG << TAG_SHIFT) | gpu)
}

fn device_of(h: nvmlDevice_t) -> SimResult<usize> {
    let v = h.addr();
    if v >> TAG_SHIFT != DEVICE_TAG {
        return fail(Code::INVALID_ARGUMENT, "not a device handle");
    }
    Ok(v & 0xffff)
}

fn gi_handle(gpu: usize, gi: u32) -> nvmlGpuInstance_t {
    std::ptr::without_provenance_mut::<nvmlGpuInstance_st>((GI_TAG << TAG_SHIFT) | (gpu << 16) | gi as usize)
}

fn gi_of(h: nvmlGpuInstance_t) -> SimResult<(usize, u32)> {
    let v = h.addr();
    if v >> TAG_SHIFT != GI_TAG {
        return fail(Code::INVALID_ARGUMENT, "not a GPU instance handle");
    }
    Ok(((v >> 16) & 0xffff, (v & 0xffff) as u32))
}

fn ci_handle(gpu: usize, gi: u32, ci: u32) -> nvmlComputeInstance_t {
    let v = (CI_TAG << TAG_SHIFT) | (gpu << 32) | ((gi as usize) << 16) | ci as usize;
    std::ptr::without_provenance_mut::<nvmlComputeInstance_st>(v)
}

fn ci_of(h: nvmlComputeInstance_t) -> SimResult<(usize, u32, u32)> {
    let v = h.addr();
    if v >> TAG_SHIFT != CI_TAG {
        return fail(Code::INVALID_ARGUMENT, "not a compute instance handle");
    }
    Ok(((v >> 32) & 0xffff, ((v >> 16) & 0xffff) as u32, (v & 0xffff) as u32))
}
