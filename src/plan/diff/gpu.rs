//! GPUs and their MIG layouts.
//!
//! A MIG instance is identified by its placement (profile and start slice), so a
//! re-layout keeps every live instance the desired layout still has, creates the missing
//! ones at their starts and destroys the extra ones. Destroying an instance a VM uses,
//! when that VM stays, is a GPU re-layout that takes it from the VM; so is switching MIG
//! mode, which resets the GPU under every VM using it.

use crate::driver::vgpu::VgpuDevice;
use std::collections::{BTreeMap, BTreeSet};

use super::Out;
use crate::desired::build::mig_id;
use crate::desired::{DesiredGpu, DesiredHost, DesiredMigInstance, GpuSetup, ResourceId};
use crate::live::{LiveDomain, LiveGpu, LiveHost};
use crate::plan::{Action, Change, Class, Op};
use crate::spec::types::PciAddress;

/// The driver a passed-through GPU is bound to.
pub(crate) const VFIO_DRIVER: &str = "vfio-pci";

/// Whether `driver` carries a GPU of `model` to a guest: `vfio-pci`, or the model's
/// VFIO variant (GB200's `nvgrace_gpu_vfio_pci`, which libvirt binds where the host has
/// it; `fabrik::drift::vfio-variant` warns where it does not).
fn passthrough_driver(driver: Option<&str>, model: crate::hw::GpuModel) -> bool {
    driver == Some(VFIO_DRIVER) || (driver.is_some() && driver == model.vfio_variant())
}

/// The mdev UUIDs a domain's `<hostdev type='mdev'>` elements name.
fn mdev_uuids(d: &LiveDomain) -> Vec<String> {
    // Without the words there is no `<hostdev type='mdev'>`, and the document need not
    // be parsed: an element's name is never escaped, and an attribute's value only
    // through a reference, which starts with `&`.
    let mdev = d.xml.contains("mdev") || d.xml.contains('&');
    if !(mdev && d.xml.contains("hostdev")) {
        return Vec::new();
    }
    let Ok(doc) = roxmltree::Document::parse(&d.xml) else { return Vec::new() };
    doc.descendants()
        .filter(|n| n.has_tag_name("hostdev") && n.attribute("type") == Some("mdev"))
        .filter_map(|n| n.descendants().find(|a| a.has_tag_name("address")).and_then(|a| a.attribute("uuid")))
        .map(str::to_string)
        .collect()
}

/// vGPU devices on a MIG GPU fabrik manages that none of its instances is given
/// (another tool's, or left over): never touched, named as unmanaged. One of fabrik's is
/// the VF of an instance's placement, or the mdev of an instance's UUID.
fn foreign_vgpus(gpu: &DesiredGpu, live: &crate::live::LiveGpu, out: &mut Out) {
    let (GpuSetup::Mig { instances }, Some(vgpu)) = (&gpu.setup, &live.vgpu) else { return };
    let ours: Vec<VgpuDevice> = instances
        .iter()
        .filter(|i| i.vm.is_some())
        .map(|i| match i.vgpu_vf {
            Some(vf) => VgpuDevice::Vf(vf),
            None => VgpuDevice::Mdev(crate::render::domain::mdev_uuid(&i.id)),
        })
        .collect();
    for device in vgpu.devices.iter().filter(|d| !ours.contains(d)) {
        let what = match device {
            VgpuDevice::Vf(vf) => format!("the vGPU on VF {vf}"),
            VgpuDevice::Mdev(uuid) => format!("vGPU mdev {uuid}"),
        };
        out.notice(
            gpu.id.clone(),
            crate::plan::NoticeKind::Unmanaged,
            format!("{what} of GPU {} is not one fabrik made for this factory's VMs: left alone", gpu.address),
        );
    }
}

pub fn gpus(host: &DesiredHost, live: &LiveHost, out: &mut Out) {
    let desired_vms: BTreeSet<&str> = host.vms.iter().map(|v| v.name.as_str()).collect();
    let mdev_users: BTreeMap<String, &LiveDomain> =
        live.domains.iter().flat_map(|d| mdev_uuids(d).into_iter().map(move |u| (u, d))).collect();
    for gpu in &host.gpus {
        let DesiredGpu { id, address, model, numa_node: _, setup } = gpu;
        let Some(l) = live.gpus.iter().find(|g| g.address == *address) else {
            // A GPU bound to vfio-pci is invisible to NVML; libvirt still lists it.
            let device = live.devices.iter().find(|d| d.address == *address);
            match (setup, device) {
                (GpuSetup::Passthrough, Some(d)) if passthrough_driver(d.driver.as_deref(), *model) => {
                    out.present.insert(id.clone());
                }
                (GpuSetup::Passthrough, Some(d)) => {
                    out.present.insert(id.clone());
                    let from = d.driver.clone().unwrap_or_else(|| "no driver".into());
                    out.actions.push(Action::update(
                        id.clone(),
                        vec![Change::new("driver", from, VFIO_DRIVER, Class::Live)],
                        "detach from the host and bind to vfio-pci for passthrough",
                    ));
                }
                (_, _) => out.error(
                    "fabrik::plan::missing-gpu",
                    id,
                    format!("GPU {address} is declared on host `{}` but the host does not report it", id.host),
                    "check the address with `fabrik inventory`, or fix the host's declaration",
                ),
            }
            continue;
        };
        out.present.insert(id.clone());
        foreign_vgpus(gpu, l, out);
        let users = gpu_users(*address, l, live, &mdev_users);
        let want_mig = matches!(setup, GpuSetup::Mig { .. });
        let mut changes = Vec::new();
        let mut reasons = Vec::new();
        if let Some(mode) = l.mig
            && mode.current != want_mig
        {
            let word = |on: bool| if on { "on" } else { "off" };
            changes.push(Change::new("mig mode", word(mode.current), word(want_mig), Class::GpuRelayout));
            reasons.push(if users.is_empty() {
                format!("MIG mode {}: GPU reset", word(want_mig))
            } else {
                format!("MIG mode {}: GPU reset under {}", word(want_mig), users.join(", "))
            });
        } else if l.mig.is_none() && want_mig {
            out.error(
                "fabrik::plan::missing-gpu",
                id,
                format!("GPU {address} on host `{}` cannot do MIG, but the factory splits it", id.host),
                "use a GPU model with MIG, or give this GPU whole",
            );
            continue;
        }
        if let GpuSetup::Passthrough = setup {
            let device = live.devices.iter().find(|d| d.address == *address);
            let driver = device.and_then(|d| d.driver.clone());
            if !passthrough_driver(driver.as_deref(), *model) {
                changes.push(Change::new(
                    "driver",
                    driver.unwrap_or_else(|| "no driver".into()),
                    VFIO_DRIVER,
                    Class::Live,
                ));
                reasons.push("bind to vfio-pci for passthrough".into());
            }
        }
        if !changes.is_empty() {
            out.actions.push(Action::update(id.clone(), changes, reasons.join("; ")));
        }
        let wanted: &[DesiredMigInstance] = match setup {
            GpuSetup::Mig { instances } => instances,
            GpuSetup::Passthrough | GpuSetup::TimeSliced => &[],
        };
        mig(host, gpu, wanted, l, &mdev_users, &desired_vms, out);
    }
}

/// The domains using a GPU: passed through whole, or through an mdev on one of its
/// MIG instances.
fn gpu_users(address: PciAddress, gpu: &LiveGpu, live: &LiveHost, mdev: &BTreeMap<String, &LiveDomain>) -> Vec<String> {
    let mut users: BTreeSet<String> =
        live.domains.iter().filter(|d| d.hostdevs.contains(&address)).map(|d| format!("`{}`", d.name)).collect();
    for i in &gpu.instances {
        let id = mig_id(&live.name, &address, &i.profile, i.start);
        if let Some(d) = mdev.get(&crate::render::domain::mdev_uuid(&id)) {
            users.insert(format!("`{}`", d.name));
        }
    }
    users.into_iter().collect()
}

fn mig(
    host: &DesiredHost,
    gpu: &DesiredGpu,
    wanted: &[DesiredMigInstance],
    live: &LiveGpu,
    mdev: &BTreeMap<String, &LiveDomain>,
    desired_vms: &BTreeSet<&str>,
    out: &mut Out,
) {
    let live_ids: Vec<(ResourceId, &crate::live::LiveMigInstance)> =
        live.instances.iter().map(|i| (mig_id(&host.name, &gpu.address, &i.profile, i.start), i)).collect();
    let mut destroyed: Vec<(ResourceId, u8, u8)> = Vec::new();
    for (id, inst) in &live_ids {
        if wanted.iter().any(|w| &w.id == id) {
            out.present.insert(id.clone());
            continue;
        }
        let user = mdev.get(&crate::render::domain::mdev_uuid(id));
        let (class, reason) = match user {
            Some(d) if desired_vms.contains(d.name.as_str()) => {
                (Class::GpuRelayout, format!("not in the layout; in use by VM `{}`, which stays and loses it", d.name))
            }
            Some(d) => (Class::Live, format!("not in the layout; its VM `{}` goes too", d.name)),
            None => (Class::Live, "not in the layout; unused".to_string()),
        };
        let mut a = Action::new(
            id.clone(),
            Op::Delete,
            class,
            format!("destroy {} at slice {}: {reason}", inst.profile, inst.start),
        );
        a.changes.push(Change {
            field: "placement".into(),
            from: Some(format!("{}@{}", inst.profile, inst.start)),
            to: None,
            class,
        });
        out.actions.push(a);
        destroyed.push((id.clone(), inst.start, inst.size));
    }
    for w in wanted {
        // `vgpu_vf` shows through the rendered domain of the VM that gets the instance.
        let DesiredMigInstance { id, profile, profile_id, start, size, vm, vgpu_vf: _ } = w;
        if live_ids.iter().any(|(l, _)| l == id) {
            continue;
        }
        let overlapped: Vec<String> = destroyed
            .iter()
            .filter(|(_, s, n)| *s < start + size && *start < s + n)
            .map(|(d, _, _)| format!("`{d}`"))
            .collect();
        let mut reason = format!("create {profile} (profile {profile_id}) at slice {start}");
        if let Some(vm) = vm {
            reason.push_str(&format!(" for `{}`", vm.name));
        }
        if !overlapped.is_empty() {
            reason.push_str(&format!(", after {} is destroyed", overlapped.join(", ")));
        }
        let mut a = Action::new(id.clone(), Op::Create, Class::Live, reason);
        a.changes.push(Change {
            field: "placement".into(),
            from: None,
            to: Some(format!("{profile}@{start}")),
            class: Class::Live,
        });
        out.actions.push(a);
    }
}
