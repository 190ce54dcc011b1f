//! MIG slices reaching VMs through vGPU devices, on a host's twin in both of the ways a
//! host offers vGPUs (`src/driver/vgpu.rs`): mdevs (`mdev_supported_types`) and SR-IOV
//! VFs (`current_vgpu_type`). The twin's GPUs (`gpus.json`) refuse what sysfs refuses
//! (no type for the profile, the MIG instance missing, no free VF) and its libvirt starts
//! no domain whose mdev is not there, so a VM started before its device fails here.
//!
//! Shown: three VMs on MIG-backed vGPUs of one H200, their domains naming the devices
//! fabrik created; a re-layout that keeps a running VM's device; after a simulated
//! reboot (a new boot id, instances and devices gone, domains off, none autostarted),
//! the devices rebuilt before the VMs start.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{VGPU_LAYOUT as LAYOUT, VGPU_VMS as VMS, position, text};
use fabrik::driver::Virt;
use fabrik::driver::sim_gpu::{SimGpuState, SimVgpu};
use fabrik::driver::vgpu::VgpuMode;
use fabrik::live::PowerState;
use fabrik::spec::types::PciAddress;
use serde_json::Value;

const HOST: &str = "gpu09";
const GPU: &str = "0000:3b:00.0";

struct Twin {
    dir: tempfile::TempDir,
}

impl Twin {
    /// A twin whose GPU offers vGPUs as `mode` (with `vfs` VFs in SR-IOV mode).
    fn new(mode: VgpuMode, vfs: u32) -> Twin {
        let twin = Twin { dir: tempfile::tempdir().unwrap() };
        twin.write(&[], &[]);
        let first = twin.fabrik(&["plan"]);
        assert!(twin.gpus_file().exists(), "the twin was not made:\n{}", text(&first));
        let mut state = twin.gpus();
        let v = state.gpus[0].vgpu.as_mut().expect("a twin's MIG GPU offers vGPUs");
        v.mode = mode;
        v.vfs = vfs;
        state.save(&twin.gpus_file()).unwrap();
        twin
    }

    fn factory(&self) -> PathBuf {
        self.dir.path().join("factory.yaml")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn gpus_file(&self) -> PathBuf {
        self.state().join(HOST).join("gpus.json")
    }

    fn gpus(&self) -> SimGpuState {
        SimGpuState::load(&self.gpus_file()).unwrap()
    }

    fn devices(&self) -> Vec<SimVgpu> {
        self.gpus().gpus[0].vgpu.clone().unwrap().devices
    }

    fn write(&self, layout: &[&str], vms: &[(&str, &str)]) {
        std::fs::write(self.factory(), common::vgpu_factory(None, layout, vms)).unwrap();
    }

    fn fabrik(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fabrik"))
            .args(args)
            .arg("--sim")
            .arg("--state-dir")
            .arg(self.state())
            .arg(self.factory())
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `fabrik apply --yes --format json`, which must succeed and verify; its events.
    fn apply(&self) -> Vec<Value> {
        let o = self.fabrik(&["apply", "--yes", "--format", "json"]);
        assert_eq!(o.status.code(), Some(0), "apply failed:\n{}", text(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event `{l}`: {e}\n{}", text(&o))))
            .collect()
    }

    fn virt(&self) -> Box<dyn Virt> {
        let spec = fabrik::spec::load::load(&self.factory()).spec;
        let host = spec.hosts.iter().find(|h| h.name.value == HOST).unwrap();
        fabrik::sim::virt::open(&fabrik::sim::host_dir(&self.state(), host), host).unwrap()
    }

    /// The vGPU devices each domain's hostdevs name, by domain: an mdev's UUID, or the
    /// PCI address of a VF (a `managed='no'` PCI hostdev).
    fn domain_mdevs(&self) -> Vec<(String, Vec<String>, PowerState)> {
        let mut out: Vec<_> = self
            .virt()
            .domains()
            .unwrap()
            .into_iter()
            .map(|d| {
                let doc = roxmltree::Document::parse(&d.xml).unwrap();
                let uuids = doc
                    .descendants()
                    .filter(|n| n.has_tag_name("hostdev"))
                    .filter_map(|n| {
                        let a = n.descendants().find(|a| a.has_tag_name("address"))?;
                        match (n.attribute("type"), n.attribute("managed")) {
                            (Some("mdev"), _) => a.attribute("uuid").map(str::to_string),
                            (Some("pci"), Some("no")) => {
                                let hex = |k: &str| a.attribute(k).map(|v| v.trim_start_matches("0x").to_string());
                                Some(format!(
                                    "{}:{}:{}.{}",
                                    hex("domain")?,
                                    hex("bus")?,
                                    hex("slot")?,
                                    hex("function")?
                                ))
                            }
                            _ => None,
                        }
                    })
                    .collect();
                (d.name.clone(), uuids, d.state)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        // The twins' state is this process's until released: the next apply is another.
        fabrik::sim::release_state(&self.state());
        out
    }
}

fn mig_id(slot: &str) -> String {
    format!("mig:{HOST}/{GPU}/{slot}")
}

/// The UUID fabrik names the device on MIG instance `slot` by.
fn uuid(slot: &str) -> String {
    fabrik::render::domain::mdev_uuid(&fabrik::desired::ResourceId::parse(&mig_id(slot)).unwrap())
}

fn device<'a>(devices: &'a [SimVgpu], slot: &str) -> &'a SimVgpu {
    let u = uuid(slot);
    devices.iter().find(|d| d.uuid == u).unwrap_or_else(|| panic!("no vGPU for {slot} in {devices:?}"))
}

/// What a domain names a device by: an mdev's UUID; the PCI address of its VF, which in
/// SR-IOV mode is VF n for the MIG instance at placement n.
fn named_by(d: &SimVgpu) -> String {
    match d.vf {
        Some(n) => {
            assert_eq!(n, u32::from(d.start), "the vGPU of the instance at placement {} is on VF {n}", d.start);
            fabrik::driver::sim_gpu::sim_vf_address(PciAddress::parse(GPU).unwrap(), n).to_string()
        }
        None => d.uuid.clone(),
    }
}

/// Three VMs on the three instances: a device on each, named by the UUID each domain
/// references; the VMs run.
fn three_vms(twin: &Twin) {
    twin.write(&LAYOUT, &VMS);
    twin.apply();
    let devices = twin.devices();
    assert_eq!(devices.len(), 3, "{devices:?}");
    for slot in LAYOUT {
        let d = device(&devices, slot);
        assert_eq!(
            (d.profile.as_str(), d.start),
            (slot.split_once('@').unwrap().0, slot[slot.len() - 1..].parse().unwrap())
        );
    }
    let types: Vec<&str> = LAYOUT.iter().map(|s| device(&devices, s).type_name.as_str()).collect();
    assert_eq!(types, ["NVIDIA H200-2-35C", "NVIDIA H200-2-35C", "NVIDIA H200-3-71C"]);
    let domains = twin.domain_mdevs();
    assert_eq!(domains.len(), 3);
    for (name, mdevs, state) in &domains {
        assert_eq!(*state, PowerState::Running, "{name}");
        assert_eq!(mdevs.len(), 1, "{name}: {mdevs:?}");
        assert!(
            devices.iter().any(|d| named_by(d) == mdevs[0]),
            "{name} names {} which fabrik did not create: {devices:?}",
            mdevs[0]
        );
    }
    // Each domain a device of its own.
    let mut named: Vec<&String> = domains.iter().map(|(_, m, _)| &m[0]).collect();
    named.dedup();
    assert_eq!(named.len(), 3);
}

/// Drops `c` and its 3g, puts `d` on a new 1g at slice 4 and `e` on one at 5: `a`'s and
/// `b`'s devices stay as they were, `c`'s goes with its instance.
fn relayout_keeps_running_devices(twin: &Twin) {
    let before = twin.devices();
    twin.write(
        &["2g.35gb@0", "2g.35gb@2", "1g.18gb@4", "1g.18gb@5"],
        &[("a", "2g.35gb"), ("b", "2g.35gb"), ("d", "1g.18gb"), ("e", "1g.18gb")],
    );
    let events = twin.apply();
    let after = twin.devices();
    for slot in ["2g.35gb@0", "2g.35gb@2"] {
        assert_eq!(device(&before, slot), device(&after, slot), "the device of {slot} changed");
    }
    assert!(after.iter().all(|d| d.uuid != uuid("3g.71gb@4")), "the dropped instance's device stayed: {after:?}");
    device(&after, "1g.18gb@4");
    device(&after, "1g.18gb@5");
    assert_eq!(after.len(), 4);
    // Nothing was done to the VMs that kept their slices.
    assert!(!events.iter().any(|e| e["id"] == "vm:gpu09/a" || e["id"] == "vm:gpu09/b"), "{events:#?}");
    // The VM goes before the device under it, the device before its instance.
    assert!(position(&events, "done", "vm:gpu09/c") < position(&events, "start", &mig_id("3g.71gb@4")));
    let running: Vec<_> = twin.domain_mdevs().into_iter().filter(|d| d.2 == PowerState::Running).collect();
    assert_eq!(running.len(), 4, "{running:?}");
}

/// A reboot (`fabrik::sim::reboot`): a new boot id, the GPU's instances and vGPU
/// devices gone, the domains off; libvirt's autostart starts none of these VMs (fabrik
/// rendered them with autostart off: they would race the rebuild). Apply makes the
/// instances, then each VM's device, then starts it.
fn reboot_rebuilds_devices_before_vms(twin: &Twin) {
    let spec = fabrik::spec::load::load(&twin.factory()).spec;
    let host = spec.hosts.iter().find(|h| h.name.value == HOST).unwrap();
    let dir = fabrik::sim::host_dir(&twin.state(), host);
    let boot_before = fabrik::sim::boot_id(&dir).unwrap();
    assert!(twin.virt().domains().unwrap().iter().all(|d| !d.autostart), "MIG VMs are not autostarted");
    // The race autostart would lose: `a` marked for autostart by hand fails to start at
    // boot, its device not made yet.
    twin.virt().set_domain_autostart("a", true).unwrap();
    fabrik::sim::release_state(&twin.state());
    let rebooted = fabrik::sim::reboot(&twin.state(), host).unwrap();
    assert_ne!(rebooted.boot_id, boot_before, "a reboot gives a new boot id");
    assert_eq!(fabrik::sim::boot_id(&dir).unwrap(), rebooted.boot_id);
    assert!(rebooted.autostarted.is_empty(), "{rebooted:?}");
    assert_eq!(rebooted.autostart_failed.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(), ["a"], "{rebooted:?}");
    assert!(twin.devices().is_empty());
    assert!(twin.domain_mdevs().iter().all(|d| d.2 == PowerState::ShutOff));
    let events = twin.apply();
    let slots = [("a", "2g.35gb@0"), ("b", "2g.35gb@2"), ("d", "1g.18gb@4"), ("e", "1g.18gb@5")];
    for (vm, slot) in slots {
        let vm_id = format!("vm:{HOST}/{vm}");
        assert!(position(&events, "done", &mig_id(slot)) < position(&events, "start", &vm_id), "{vm}");
        assert!(position(&events, "done", &vm_id) > 0);
    }
    assert_eq!(twin.devices().len(), 4);
    assert!(twin.domain_mdevs().iter().all(|d| d.2 == PowerState::Running));
    assert!(twin.virt().domains().unwrap().iter().all(|d| !d.autostart), "`a`'s autostart set off again");
    fabrik::sim::release_state(&twin.state());
}

fn scenario(mode: VgpuMode, vfs: u32) -> Twin {
    let twin = Twin::new(mode, vfs);
    three_vms(&twin);
    relayout_keeps_running_devices(&twin);
    reboot_rebuilds_devices_before_vms(&twin);
    twin
}

#[test]
fn mdev_mode_three_vms_relayout_and_reboot() {
    let twin = scenario(VgpuMode::Mdev, 0);
    assert!(twin.devices().iter().all(|d| d.vf.is_none()));
}

#[test]
fn sriov_vf_mode_three_vms_relayout_and_reboot() {
    let twin = scenario(VgpuMode::SriovVf, 16);
    let mut vfs: Vec<u32> = twin.devices().iter().map(|d| d.vf.expect("on a VF")).collect();
    vfs.sort_unstable();
    vfs.dedup();
    assert_eq!(vfs.len(), 4, "each vGPU on a VF of its own");
    // A vGPU another tool made on a free VF: seen, named as not fabrik's, left alone.
    let mut state = twin.gpus();
    let foreign = SimVgpu {
        uuid: "00000000-0000-4000-8000-00000000f00d".into(),
        type_name: "NVIDIA H200-1-18C".into(),
        profile: "1g.18gb".into(),
        start: 6,
        vf: Some(15),
    };
    state.gpus[0].vgpu.as_mut().unwrap().devices.push(foreign);
    state.save(&twin.gpus_file()).unwrap();
    let o = twin.fabrik(&["plan", "--show-unmanaged"]);
    assert_eq!(o.status.code(), Some(0), "nothing to do for it:\n{}", text(&o));
    let vf = fabrik::driver::sim_gpu::sim_vf_address(PciAddress::parse(GPU).unwrap(), 15);
    assert!(text(&o).contains(&format!("the vGPU on VF {vf} of GPU {GPU} is not one fabrik made")), "{}", text(&o));
}

#[test]
fn a_vm_whose_device_cannot_be_made_is_not_started() {
    // Two VFs for three vGPUs: the third VM's device is refused, and it is not started.
    let twin = Twin::new(VgpuMode::SriovVf, 2);
    twin.write(&LAYOUT, &VMS);
    let o = twin.fabrik(&["apply", "--yes"]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    // Which VM is refused depends on the order the executor runs them in: an instance
    // whose placement has no VF of its own takes a free one at apply time, so either the
    // last one finds none free, or it took the VF planned for another, which is then
    // refused as in use. Either way no VM gets a device another VM's domain names.
    let refused = ["no free virtual function", "(in use)"];
    assert!(refused.iter().any(|r| text(&o).contains(r)), "{}", text(&o));
    assert_eq!(text(&o).matches("FAILED   vm:").count(), 2, "one VM refused (listed twice):\n{}", text(&o));
    assert_eq!(twin.devices().len(), 2);
    let running = twin.domain_mdevs().into_iter().filter(|d| d.2 == PowerState::Running).count();
    assert_eq!(running, 2);
    let _ = PciAddress::parse(GPU).unwrap();
}

#[test]
fn the_twin_refuses_a_vgpu_without_its_mig_instance_and_a_gpu_without_vgpus() {
    use fabrik::driver::Gpus;
    use fabrik::driver::sim_gpu::SimGpus;
    let twin = Twin::new(VgpuMode::Mdev, 0);
    let gpu = PciAddress::parse(GPU).unwrap();
    let mut state = twin.gpus();
    state.gpus[0].mig = Some(fabrik::live::MigMode { current: true, pending: true });
    let mut gpus = SimGpus::new(state.clone());
    let e = gpus.create_vgpu(gpu, "2g.35gb", 0, &uuid("2g.35gb@0"), None).unwrap_err();
    assert!(e.message.contains("no MIG instance 2g.35gb@0"), "{e:?}");
    let e = gpus.create_vgpu(gpu, "5g.99gb", 0, "x", None).unwrap_err();
    assert!(e.message.contains("offers no vGPU type"), "{e:?}");
    state.gpus[0].vgpu = None;
    let e = SimGpus::new(state).create_vgpu(gpu, "2g.35gb", 0, "x", None).unwrap_err();
    assert_eq!(e.kind, fabrik::driver::ErrorKind::Unsupported, "{e:?}");
    let _: &Path = twin.dir.path();
}
