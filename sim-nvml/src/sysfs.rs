//! The NVIDIA vGPU manager's side of sysfs, for the simulated GPUs: with
//! `FABRIK_SYSFS_ROOT` set, the library keeps a fake sysfs tree under it that shows each
//! GPU's vGPU side as `src/driver/vgpu.rs` reads it, so fabrik's real sysfs driver runs
//! against the same GPUs NVML shows.
//!
//! * SR-IOV VF mode: VF n is `virtfn<n>` → the VF's directory with
//!   `nvidia/creatable_vgpu_types` (the types of the free MIG instances while the VF is
//!   free, none once it carries one) and `nvidia/current_vgpu_type` (`0` or the type id).
//! * mdev mode: `mdev_supported_types/nvidia-<id>/` per MIG profile with `name`,
//!   `available_instances` (free MIG instances of the profile) and `create`; each device
//!   is `bus/mdev/devices/<uuid>/` (with `remove`) and a link under the GPU.
//!
//! A fake tree has no kernel behind its files: a write is only a file's new content.
//! The library plays the kernel at its next call (every NVML call, and `nvmlShutdown`):
//! it takes what was written (a UUID in `create`, a type id in `current_vgpu_type`, `1`
//! in `remove`) into the state, as the vGPU manager would have (a write it would
//! refuse makes nothing and is reported on stderr), then writes the tree again from the
//! state. fabrik's NVML driver asks NVML for the MIG instance before it
//! writes a vGPU (`create_vgpu`), so two writes never meet in one file unread.

use std::path::{Path, PathBuf};

use fabrik::driver::Gpus;
use fabrik::driver::sim_gpu::{SimGpuState, SimGpus, sim_vf_address, sim_vgpu_type};
use fabrik::driver::vgpu::VgpuMode;
use fabrik::hw::mig;
use fabrik::spec::types::PciAddress;

/// Names the root of the fake tree (the variable fabrik's sysfs driver reads).
pub const ROOT_ENV: &str = "FABRIK_SYSFS_ROOT";

/// The root, when the library keeps a tree.
pub fn root() -> Option<PathBuf> {
    std::env::var_os(ROOT_ENV).filter(|r| !r.is_empty()).map(PathBuf::from)
}

/// The id of the vGPU type on MIG profile index `i` of the model's list.
fn type_id(i: usize) -> u32 {
    1000 + i as u32
}

/// The UUID the simulation records a VF's vGPU by (sysfs names none).
fn vf_uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn device_dir(root: &Path, address: PciAddress) -> PathBuf {
    root.join("bus/pci/devices").join(address.to_string())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Writes `text` unless the file holds it already.
fn put(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// `(profile, start)` of each MIG instance of GPU `i` that carries no vGPU.
fn free_instances(state: &SimGpuState, i: usize) -> Vec<(String, u8)> {
    let g = &state.gpus[i];
    let taken = |p: &str, s: u8| g.vgpu.iter().flat_map(|v| &v.devices).any(|d| d.profile == p && d.start == s);
    state
        .live()
        .into_iter()
        .filter(|l| l.address == g.address)
        .flat_map(|l| l.instances)
        .filter(|m| !taken(&m.profile, m.start))
        .map(|m| (m.profile, m.start))
        .collect()
}

/// Takes the writes made to the tree into `state`, then writes the tree from it.
pub fn sync(state: &mut SimGpuState, root: &Path) -> Result<(), String> {
    ingest(state, root)?;
    render(state, root).map_err(|e| format!("cannot write the fake sysfs under {}: {e}", root.display()))
}

/// What the vGPU manager does with the writes: each made into a device or removed, as
/// fabrik's in-process simulation does it (`SimGpus::create_vgpu`, which refuses what
/// the manager refuses).
fn ingest(state: &mut SimGpuState, root: &Path) -> Result<(), String> {
    for i in 0..state.gpus.len() {
        let g = state.gpus[i].clone();
        let Some(v) = &g.vgpu else { continue };
        let profiles = mig::profiles(g.model);
        let by_id = |id: &str| {
            profiles.iter().enumerate().find(|(n, _)| type_id(*n).to_string() == id).map(|(_, p)| p.name.to_string())
        };
        let mut gpus = SimGpus::new(state.clone());
        let made = |gpus: &mut SimGpus, profile: &str, uuid: &str, vf: Option<PciAddress>, at: Option<u8>| {
            let free = free_instances(gpus.state(), i);
            let start = at
                .filter(|s| free.iter().any(|(p, f)| p == profile && f == s))
                .or_else(|| free.iter().find(|(p, _)| p == profile).map(|(_, s)| *s));
            match start {
                Some(start) => gpus.create_vgpu(g.address, profile, start, uuid, vf).map(drop).map_err(|e| e.message),
                None => Err(format!("no free MIG instance {profile} on GPU {} for vGPU {uuid}", g.address)),
            }
        };
        match v.mode {
            VgpuMode::SriovVf => {
                for n in 0..v.vfs {
                    let vf = sim_vf_address(g.address, n);
                    let path = device_dir(root, vf).join("nvidia/current_vgpu_type");
                    if !path.exists() {
                        continue;
                    }
                    let written = read(&path);
                    let on = v.devices.iter().find(|d| d.vf == Some(n));
                    match (written.as_str(), on) {
                        ("0" | "", Some(d)) => gpus.remove_vgpu(g.address, &d.uuid, None).map_err(|e| e.message)?,
                        ("0" | "", None) | (_, Some(_)) => {}
                        (id, None) => {
                            let done = by_id(id)
                                .ok_or_else(|| format!("VF {vf}: no vGPU type {id}"))
                                .and_then(|p| made(&mut gpus, &p, &vf_uuid(n), Some(vf), u8::try_from(n).ok()));
                            refused(&path, done);
                        }
                    }
                }
            }
            VgpuMode::Mdev => {
                let types = device_dir(root, g.address).join("mdev_supported_types");
                for (n, p) in profiles.iter().enumerate() {
                    let create = types.join(format!("nvidia-{}", type_id(n))).join("create");
                    let uuid = read(&create);
                    if uuid.is_empty() {
                        continue;
                    }
                    refused(&create, made(&mut gpus, p.name, &uuid, None, None));
                    std::fs::write(&create, "").map_err(|e| format!("{}: {e}", create.display()))?;
                }
                for d in &v.devices {
                    if read(&root.join("bus/mdev/devices").join(&d.uuid).join("remove")) == "1" {
                        gpus.remove_vgpu(g.address, &d.uuid, None).map_err(|e| e.message)?;
                    }
                }
            }
        }
        *state = gpus.state().clone();
    }
    Ok(())
}

/// A write the manager refuses (`EINVAL` from `write()` on a host) makes nothing: it is
/// reported on stderr, and the file shows the state again at the render.
fn refused(path: &Path, done: Result<(), String>) {
    if let Err(e) = done {
        eprintln!("sim-nvml: the vGPU manager refuses the write to {}: {e}", path.display());
    }
}

/// Writes the tree from `state`.
fn render(state: &SimGpuState, root: &Path) -> std::io::Result<()> {
    let mdevs = root.join("bus/mdev/devices");
    std::fs::create_dir_all(&mdevs)?;
    let mut all_mdevs = Vec::new();
    for (i, g) in state.gpus.iter().enumerate() {
        let Some(v) = &g.vgpu else { continue };
        let dir = device_dir(root, g.address);
        std::fs::create_dir_all(&dir)?;
        let free = free_instances(state, i);
        let profiles = mig::profiles(g.model);
        let name = |n: usize| sim_vgpu_type(g.model, profiles[n].name).unwrap_or_default();
        match v.mode {
            VgpuMode::SriovVf => {
                let mut creatable = String::from("ID    : vGPU Name\n");
                for (n, p) in profiles.iter().enumerate() {
                    if free.iter().any(|(f, _)| f == p.name) {
                        creatable.push_str(&format!("{}  : {}\n", type_id(n), name(n)));
                    }
                }
                for n in 0..v.vfs {
                    let vf = sim_vf_address(g.address, n);
                    let nv = device_dir(root, vf).join("nvidia");
                    let on = v.devices.iter().find(|d| d.vf == Some(n));
                    let current = on
                        .and_then(|d| profiles.iter().position(|p| p.name == d.profile))
                        .map_or_else(|| "0".to_string(), |k| type_id(k).to_string());
                    put(&nv.join("current_vgpu_type"), &format!("{current}\n"))?;
                    let offered = if on.is_some() { "ID    : vGPU Name\n" } else { creatable.as_str() };
                    put(&nv.join("creatable_vgpu_types"), offered)?;
                    let link = dir.join(format!("virtfn{n}"));
                    if std::fs::symlink_metadata(&link).is_err() {
                        std::os::unix::fs::symlink(format!("../{vf}"), &link)?;
                    }
                }
            }
            VgpuMode::Mdev => {
                let types = dir.join("mdev_supported_types");
                for (n, p) in profiles.iter().enumerate() {
                    let t = types.join(format!("nvidia-{}", type_id(n)));
                    put(&t.join("name"), &format!("{}\n", name(n)))?;
                    let available = free.iter().filter(|(f, _)| f == p.name).count();
                    put(&t.join("available_instances"), &format!("{available}\n"))?;
                    put(&t.join("create"), "")?;
                }
                // Links under the GPU to its devices: the ones gone are unlinked.
                for e in std::fs::read_dir(&dir)?.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.len() == 36 && !v.devices.iter().any(|d| d.uuid == n) {
                        std::fs::remove_file(e.path())?;
                    }
                }
                for d in &v.devices {
                    let dev = mdevs.join(&d.uuid);
                    put(&dev.join("remove"), "")?;
                    put(&dev.join("mdev_type_name"), &format!("{}\n", d.type_name))?;
                    let link = dir.join(&d.uuid);
                    if std::fs::symlink_metadata(&link).is_err() {
                        std::os::unix::fs::symlink(&dev, &link)?;
                    }
                    all_mdevs.push(d.uuid.clone());
                }
            }
        }
    }
    for e in std::fs::read_dir(&mdevs)?.flatten() {
        if !all_mdevs.contains(&e.file_name().to_string_lossy().into_owned()) {
            std::fs::remove_dir_all(e.path())?;
        }
    }
    Ok(())
}
