//! Device queries: count, handles, identity, PCI, memory, affinity, NVLink.

use std::ffi::{CStr, c_char, c_uint, c_ulong};

use fabrik::driver::nvml::code::Code;
use fabrik::driver::sim_gpu::{SimGpu, SimGpuState};
use fabrik::spec::types::PciAddress;
use nvml_wrapper_sys::bindings::{
    NVML_NVLINK_MAX_LINKS, nvmlDevice_t, nvmlEnableState_enum_NVML_FEATURE_DISABLED,
    nvmlEnableState_enum_NVML_FEATURE_ENABLED, nvmlEnableState_t, nvmlMemory_t, nvmlMemory_v2_t, nvmlPciInfo_t,
    nvmlReturn_t,
};

use crate::{SimResult, device_handle, device_of, fail, fill_str, put, put_str, with_state};

/// NVIDIA's PCI vendor id.
const VENDOR_NVIDIA: u32 = 0x10de;
/// The third-generation NVSwitch (HGX H100/H200 boards), as the far end of a link.
const NVSWITCH_DEVICE_ID: u32 = 0x22a3;
/// Memory the driver keeps for itself, as NVML v2 reports it (`reserved`).
const RESERVED_BYTES: u64 = 512 << 20;

fn gpu(s: &SimGpuState, h: nvmlDevice_t) -> SimResult<&SimGpu> {
    let i = device_of(h)?;
    match s.gpus.get(i) {
        Some(g) => Ok(g),
        None => fail(Code::INVALID_ARGUMENT, format!("no GPU with index {i}")),
    }
}

fn pci_info(address: PciAddress, device_id: u32) -> nvmlPciInfo_t {
    // SAFETY: integers and char arrays; zeros are valid.
    let mut p: nvmlPciInfo_t = unsafe { std::mem::zeroed() };
    p.domain = u32::from(address.domain);
    p.bus = u32::from(address.bus);
    p.device = u32::from(address.device);
    p.pciDeviceId = (device_id << 16) | VENDOR_NVIDIA;
    p.pciSubSystemId = (0x16a1 << 16) | VENDOR_NVIDIA;
    // nvml.h's NVML_DEVICE_PCI_BUS_ID_FMT and _LEGACY_FMT.
    let bus_id = format!("{:08X}:{:02X}:{:02X}.0", p.domain, p.bus, p.device);
    let legacy = format!("{:04X}:{:02X}:{:02X}.0", p.domain, p.bus, p.device);
    fill_str(&mut p.busId, &bus_id);
    fill_str(&mut p.busIdLegacy, &legacy);
    p
}

/// `domain:bus:device.function` with a domain of up to 8 hex digits, or `bus:device.function`.
fn parse_bus_id(text: &str) -> Option<(u32, u32, u32, u32)> {
    let (rest, function) = text.rsplit_once('.')?;
    let parts: Vec<&str> = rest.split(':').collect();
    let (d, b, s) = match parts.as_slice() {
        [d, b, s] => (*d, *b, *s),
        [b, s] => ("0", *b, *s),
        _ => return None,
    };
    let hex = |t: &str| u32::from_str_radix(t, 16).ok();
    Some((hex(d)?, hex(b)?, hex(s)?, hex(function)?))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> nvmlReturn_t {
    with_state("nvmlDeviceGetCount_v2", |s| unsafe { put(count, s.gpus.len() as c_uint) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    with_state("nvmlDeviceGetHandleByIndex_v2", |s| {
        if index as usize >= s.gpus.len() {
            return fail(Code::INVALID_ARGUMENT, format!("index {index} of {} GPUs", s.gpus.len()));
        }
        unsafe { put(device, device_handle(index as usize)) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(
    bus_id: *const c_char,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetHandleByPciBusId_v2", |s| {
        if bus_id.is_null() {
            return fail(Code::INVALID_ARGUMENT, "a null bus id");
        }
        // SAFETY: nvml.h asks for a NUL-terminated string.
        let text = unsafe { CStr::from_ptr(bus_id) }.to_string_lossy();
        let Some((d, b, dev, f)) = parse_bus_id(&text) else {
            return fail(Code::INVALID_ARGUMENT, format!("`{text}` is not a PCI bus id"));
        };
        let found = s.gpus.iter().position(|g| {
            let a = g.address;
            (u32::from(a.domain), u32::from(a.bus), u32::from(a.device), u32::from(a.function)) == (d, b, dev, f)
        });
        match found {
            Some(i) => unsafe { put(device, device_handle(i)) },
            None => fail(Code::NOT_FOUND, format!("no GPU at {text}")),
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(uuid: *const c_char, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    with_state("nvmlDeviceGetHandleByUUID", |s| {
        if uuid.is_null() {
            return fail(Code::INVALID_ARGUMENT, "a null UUID");
        }
        // SAFETY: nvml.h asks for a NUL-terminated string.
        let text = unsafe { CStr::from_ptr(uuid) }.to_string_lossy();
        match s.gpus.iter().position(|g| g.uuid == text) {
            Some(i) => unsafe { put(device, device_handle(i)) },
            None => fail(Code::NOT_FOUND, format!("no GPU {text}")),
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: nvmlDevice_t, index: *mut c_uint) -> nvmlReturn_t {
    with_state("nvmlDeviceGetIndex", |s| {
        gpu(s, device)?;
        unsafe { put(index, device_of(device)? as c_uint) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(device: nvmlDevice_t, name: *mut c_char, length: c_uint) -> nvmlReturn_t {
    with_state("nvmlDeviceGetName", |s| {
        let g = gpu(s, device)?;
        unsafe { put_str(name, length, g.model.info().nvml_name) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(device: nvmlDevice_t, uuid: *mut c_char, length: c_uint) -> nvmlReturn_t {
    with_state("nvmlDeviceGetUUID", |s| {
        let g = gpu(s, device)?;
        unsafe { put_str(uuid, length, &g.uuid) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(device: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t {
    with_state("nvmlDeviceGetPciInfo_v3", |s| {
        let g = gpu(s, device)?;
        unsafe { put(pci, pci_info(g.address, u32::from(g.model.info().pci_device_id))) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(device: nvmlDevice_t, memory: *mut nvmlMemory_t) -> nvmlReturn_t {
    with_state("nvmlDeviceGetMemoryInfo", |s| {
        let total = gpu(s, device)?.memory.bytes();
        unsafe { put(memory, nvmlMemory_t { total, free: total.saturating_sub(RESERVED_BYTES), used: RESERVED_BYTES }) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetMemoryInfo_v2", |s| {
        let total = gpu(s, device)?.memory.bytes();
        if memory.is_null() {
            return fail(Code::INVALID_ARGUMENT, "a null memory struct");
        }
        // NVML_STRUCT_VERSION(Memory, 2).
        let version = (std::mem::size_of::<nvmlMemory_v2_t>() | (2 << 24)) as u32;
        // SAFETY: not null; the caller set the version field before calling.
        if unsafe { (*memory).version } != version {
            return fail(Code::INVALID_ARGUMENT, "nvmlMemory_v2_t.version is not nvmlMemory_v2");
        }
        let m = nvmlMemory_v2_t {
            version,
            total,
            reserved: RESERVED_BYTES,
            free: total.saturating_sub(RESERVED_BYTES),
            used: 0,
        };
        unsafe { put(memory, m) }
    })
}

/// Only for GPUs that are NUMA nodes themselves (coherent memory, as on Grace Hopper);
/// a PCIe GPU's node is its memory affinity.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNumaNodeId(device: nvmlDevice_t, _node: *mut c_uint) -> nvmlReturn_t {
    with_state("nvmlDeviceGetNumaNodeId", |s| {
        let g = gpu(s, device)?;
        fail(Code::NOT_SUPPORTED, format!("{} is not a NUMA node", g.address))
    })
}

/// Sets bit `bit` of a caller's mask of `words` words.
unsafe fn set_bits(mask: *mut c_ulong, words: c_uint, bits: impl Iterator<Item = u32>) -> SimResult<()> {
    if mask.is_null() || words == 0 {
        return fail(Code::INVALID_ARGUMENT, "an empty mask");
    }
    let width = c_ulong::BITS;
    // SAFETY: the caller gave `words` words.
    let mask = unsafe { std::slice::from_raw_parts_mut(mask, words as usize) };
    mask.fill(0);
    for bit in bits {
        if let Some(w) = mask.get_mut((bit / width) as usize) {
            *w |= 1 << (bit % width);
        }
    }
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryAffinity(
    device: nvmlDevice_t,
    node_set_size: c_uint,
    node_set: *mut c_ulong,
    _scope: c_uint,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetMemoryAffinity", |s| {
        let g = gpu(s, device)?;
        let Some(node) = g.numa_node else {
            return fail(Code::NOT_SUPPORTED, format!("{} has no NUMA node", g.address));
        };
        unsafe { set_bits(node_set, node_set_size, std::iter::once(node)) }
    })
}

unsafe fn cpu_affinity(s: &SimGpuState, device: nvmlDevice_t, size: c_uint, set: *mut c_ulong) -> SimResult<()> {
    let g = gpu(s, device)?;
    let Some(cpus) = &g.cpu_affinity else {
        return fail(Code::NOT_SUPPORTED, format!("{} has no CPU affinity", g.address));
    };
    unsafe { set_bits(set, size, cpus.cpus().iter().copied()) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCpuAffinity(
    device: nvmlDevice_t,
    cpu_set_size: c_uint,
    cpu_set: *mut c_ulong,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetCpuAffinity", |s| unsafe { cpu_affinity(s, device, cpu_set_size, cpu_set) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCpuAffinityWithinScope(
    device: nvmlDevice_t,
    cpu_set_size: c_uint,
    cpu_set: *mut c_ulong,
    _scope: c_uint,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetCpuAffinityWithinScope", |s| unsafe { cpu_affinity(s, device, cpu_set_size, cpu_set) })
}

/// The far end of an active link.
fn link(s: &SimGpuState, device: nvmlDevice_t, link: c_uint) -> SimResult<Option<PciAddress>> {
    let g = gpu(s, device)?;
    if !g.model.info().nvlink {
        return fail(Code::NOT_SUPPORTED, format!("{} has no NVLink", g.model));
    }
    if link >= NVML_NVLINK_MAX_LINKS {
        return fail(Code::INVALID_ARGUMENT, format!("no NVLink {link}"));
    }
    Ok(g.nvlinks.get(link as usize).copied())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkState(
    device: nvmlDevice_t,
    link_index: c_uint,
    is_active: *mut nvmlEnableState_t,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetNvLinkState", |s| {
        let state = match link(s, device, link_index)? {
            Some(_) => nvmlEnableState_enum_NVML_FEATURE_ENABLED,
            None => nvmlEnableState_enum_NVML_FEATURE_DISABLED,
        };
        unsafe { put(is_active, state) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemotePciInfo_v2(
    device: nvmlDevice_t,
    link_index: c_uint,
    pci: *mut nvmlPciInfo_t,
) -> nvmlReturn_t {
    with_state("nvmlDeviceGetNvLinkRemotePciInfo_v2", |s| {
        let Some(remote) = link(s, device, link_index)? else {
            return fail(Code::NOT_SUPPORTED, format!("NVLink {link_index} is not active"));
        };
        let device_id = match s.gpus.iter().find(|g| g.address == remote) {
            Some(g) => u32::from(g.model.info().pci_device_id),
            None => NVSWITCH_DEVICE_ID,
        };
        unsafe { put(pci, pci_info(remote, device_id)) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_read_in_both_widths() {
        assert_eq!(parse_bus_id("00000000:3B:00.0"), Some((0, 0x3b, 0, 0)));
        assert_eq!(parse_bus_id("0000:3b:00.0"), Some((0, 0x3b, 0, 0)));
        assert_eq!(parse_bus_id("3b:00.0"), Some((0, 0x3b, 0, 0)));
        assert_eq!(parse_bus_id("3b00"), None);
    }

    #[test]
    fn pci_info_is_formatted_as_nvml_does() {
        let p = pci_info(PciAddress::parse("0000:3b:00.0").unwrap(), 0x2335);
        let bus_id = unsafe { CStr::from_ptr(p.busId.as_ptr()) }.to_str().unwrap();
        assert_eq!(bus_id, "00000000:3B:00.0");
        assert_eq!(p.pciDeviceId, 0x2335_10de);
    }
}
