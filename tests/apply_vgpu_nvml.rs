//! The vGPU must-show of `tests/apply_vgpu.rs` on the real code paths: `fabrik apply`
//! against a host whose GPUs are reached through its `agent` command — a `fabrik agent`
//! running fabrik's NVML driver (nvml-wrapper) on the simulated libnvidia-ml
//! (`sim-nvml/`) and fabrik's sysfs vGPU driver (`src/driver/vgpu.rs`) on a fake sysfs
//! tree (`FABRIK_SYSFS_ROOT`) — in both of the ways a host offers vGPUs: SR-IOV VFs
//! (`nvidia/current_vgpu_type`) and mdevs (`mdev_supported_types/*/create`).
//!
//! The simulated library plays the vGPU manager for the fake tree (`sim-nvml/src/sysfs.rs`):
//! it shows a type as creatable only while a free MIG instance of its profile exists,
//! and takes what fabrik wrote (a UUID in `create`, a type id on a VF, `1` in `remove`)
//! into the GPUs' state at its next call, as the manager would at the write.
//!
//! The host's libvirt is the test driver (`test:///default`): fabrik defines and starts
//! each VM's domain there within one apply (whose verify pass finds them as defined),
//! and the domain XML it defines is the plan's (`plan --diff --format json`, the
//! `define` op's `xml`), read before each apply. The test driver keeps nothing between
//! processes, so every apply defines the VMs again, and "the running VM is not touched"
//! is shown here on the GPU side (its device and MIG instance unchanged, no op on the
//! instance, its domain naming the same device), and on the twins (`tests/apply_vgpu.rs`)
//! for the domain. With `CI=true` a simulated library that cannot be built fails the tests;
//! elsewhere they are skipped, saying why.

#[path = "sim_nvml/mod.rs"]
mod sim_nvml;

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{VGPU_LAYOUT as LAYOUT, VGPU_VMS as VMS, position, text};
use fabrik::driver::sim_gpu::{SimGpuState, SimVgpu, sim_vf_address};
use fabrik::driver::vgpu::VgpuMode;
use fabrik::spec::types::PciAddress;
use serde_json::Value;

const HOST: &str = "gpu09";
const GPU: &str = "0000:3b:00.0";

fn gpu() -> PciAddress {
    PciAddress::parse(GPU).unwrap()
}

fn mig_id(slot: &str) -> String {
    format!("mig:{HOST}/{GPU}/{slot}")
}

/// The UUID fabrik names the device on MIG instance `slot` by.
fn uuid(slot: &str) -> String {
    fabrik::render::domain::mdev_uuid(&fabrik::desired::ResourceId::parse(&mig_id(slot)).unwrap())
}

/// One host: the simulated library (its state beside it), the fake sysfs tree, and the
/// factory whose host reaches them through `fabrik agent`.
struct Host {
    dir: tempfile::TempDir,
    lib: PathBuf,
}

impl Host {
    /// The factory's H200, its vGPU side offered as `mode` (`vfs` VFs in SR-IOV mode).
    fn new(mode: VgpuMode, vfs: u32) -> Option<Host> {
        let source = sim_nvml::library("the NVML + sysfs vGPU host")?;
        let dir = tempfile::tempdir().unwrap();
        let lib_dir = dir.path().join("lib");
        std::fs::create_dir(&lib_dir).unwrap();
        let lib = lib_dir.join("libnvidia-ml.so.1");
        std::fs::copy(source, &lib).unwrap();
        std::fs::create_dir(dir.path().join("sys")).unwrap();
        let host = Host { dir, lib };
        host.write(&[], &[]);
        let spec = fabrik::spec::load::load(&host.factory()).spec;
        let declared = spec.hosts.iter().find(|h| h.name.value == HOST).unwrap();
        let mut state = SimGpuState::from_host(declared);
        let v = state.gpus[0].vgpu.as_mut().expect("a MIG GPU of the simulation offers vGPUs");
        v.mode = mode;
        v.vfs = vfs;
        host.save(&state);
        Some(host)
    }

    fn factory(&self) -> PathBuf {
        self.dir.path().join("factory.yaml")
    }

    fn sys(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    fn state_file(&self) -> PathBuf {
        PathBuf::from(format!("{}.json", self.lib.display()))
    }

    fn state(&self) -> SimGpuState {
        SimGpuState::load(&self.state_file()).unwrap()
    }

    fn save(&self, state: &SimGpuState) {
        state.save(&self.state_file()).unwrap();
    }

    fn devices(&self) -> Vec<SimVgpu> {
        self.state().gpus[0].vgpu.clone().unwrap().devices
    }

    /// The factory: one H200 split as `layout` (`profile@start`), one VM per `(name,
    /// profile)`, the host reached through `fabrik agent` on the library and the tree.
    fn write(&self, layout: &[&str], vms: &[(&str, &str)]) {
        let q = |p: &Path| shell_words::quote(&p.to_string_lossy()).into_owned();
        let agent = format!(
            "env LD_LIBRARY_PATH={} FABRIK_SYSFS_ROOT={} {} agent --lock-dir {}",
            q(self.lib.parent().unwrap()),
            q(&self.sys()),
            q(Path::new(env!("CARGO_BIN_EXE_fabrik"))),
            q(&self.dir.path().join("locks")),
        );
        std::fs::write(self.factory(), common::vgpu_factory(Some(&agent), layout, vms)).unwrap();
    }

    fn fabrik(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fabrik"))
            .args(args)
            .arg(self.factory())
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `fabrik apply --yes --format json`: its exit status, its events and its output.
    fn apply(&self) -> (Option<i32>, Vec<Value>, String) {
        let o = self.fabrik(&["apply", "--yes", "--format", "json"]);
        let events = String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        (o.status.code(), events, text(&o))
    }

    /// What sysfs shows of the GPU's vGPU side, read by fabrik's own sysfs driver.
    fn observed(&self) -> fabrik::live::LiveVgpu {
        fabrik::driver::vgpu::Sysfs::new(self.sys()).observe(gpu()).expect("the tree offers vGPUs")
    }
}

fn device<'a>(devices: &'a [SimVgpu], slot: &str) -> &'a SimVgpu {
    let (profile, start) = slot.split_once('@').unwrap();
    let start: u8 = start.parse().unwrap();
    devices
        .iter()
        .find(|d| d.profile == profile && d.start == start)
        .unwrap_or_else(|| panic!("no vGPU on {slot} in {devices:?}"))
}

const RELAYOUT: [&str; 4] = ["2g.35gb@0", "2g.35gb@2", "1g.18gb@4", "1g.18gb@5"];
const RELAYOUT_VMS: [(&str, &str); 4] = [("a", "2g.35gb"), ("b", "2g.35gb"), ("d", "1g.18gb"), ("e", "1g.18gb")];

/// What names a device in sysfs and in its domain: the mdev's UUID (fabrik's, of the
/// instance), or the VF of the instance's placement.
fn sysfs_name(mode: VgpuMode, d: &SimVgpu) -> String {
    match mode {
        VgpuMode::Mdev => d.uuid.clone(),
        VgpuMode::SriovVf => {
            let n = d.vf.expect("on a VF");
            assert_eq!(n, u32::from(d.start), "the vGPU of the instance at placement {} is on VF {n}", d.start);
            sim_vf_address(gpu(), n).to_string()
        }
    }
}

/// The names sysfs shows the devices by (fabrik's sysfs driver reading the tree).
fn observed_names(host: &Host) -> Vec<String> {
    let mut names: Vec<String> = host
        .observed()
        .devices
        .iter()
        .map(|d| match d {
            fabrik::driver::vgpu::VgpuDevice::Vf(a) => a.to_string(),
            fabrik::driver::vgpu::VgpuDevice::Mdev(u) => u.clone(),
        })
        .collect();
    names.sort();
    names
}

fn expected_names(mode: VgpuMode, devices: &[SimVgpu]) -> Vec<String> {
    let mut names: Vec<String> = devices.iter().map(|d| sysfs_name(mode, d)).collect();
    names.sort();
    names
}

/// The devices each VM's domain names, from the domain XML the plan defines
/// (`fabrik plan --diff --format json`: the `define` op's `xml`), by VM: an mdev's UUID,
/// or the PCI address of a VF (a `managed='no'` PCI hostdev).
fn planned_domains(host: &Host) -> Vec<(String, Vec<String>)> {
    let o = host.fabrik(&["plan", "--diff", "--format", "json"]);
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}:\n{}", text(&o)));
    let mut out = Vec::new();
    for a in common::all(&plan, "actions").as_array().unwrap() {
        let Some(vm) = a["id"].as_str().and_then(|id| id.strip_prefix(&format!("vm:{HOST}/"))) else { continue };
        let Some(xml) = a["ops"].as_array().into_iter().flatten().find_map(|o| o["xml"].as_str()) else { continue };
        let doc = roxmltree::Document::parse(xml).unwrap();
        let named = doc
            .descendants()
            .filter(|n| n.has_tag_name("hostdev"))
            .filter_map(|n| {
                let a = n.descendants().find(|a| a.has_tag_name("address"))?;
                match (n.attribute("type"), n.attribute("managed")) {
                    (Some("mdev"), _) => a.attribute("uuid").map(str::to_string),
                    (Some("pci"), Some("no")) => {
                        let hex = |k: &str| a.attribute(k).map(|v| v.trim_start_matches("0x").to_string());
                        Some(format!("{}:{}:{}.{}", hex("domain")?, hex("bus")?, hex("slot")?, hex("function")?))
                    }
                    _ => None,
                }
            })
            .collect();
        out.push((vm.to_string(), named));
    }
    out.sort();
    out
}

/// Each VM's domain names one device, its own, and it is one sysfs shows after the
/// apply: one fabrik's driver created.
fn domains_name_created_devices(domains: &[(String, Vec<String>)], vms: &[&str], host: &Host, out: &str) {
    let names: Vec<&str> = domains.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(names, vms, "{domains:?}");
    let seen = observed_names(host);
    let mut all = Vec::new();
    for (vm, named) in domains {
        assert_eq!(named.len(), 1, "{vm}: {named:?}");
        assert!(
            seen.contains(&named[0]),
            "{vm}'s domain names {} which sysfs does not show: {seen:?}\n{out}",
            named[0]
        );
        all.push(&named[0]);
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), domains.len(), "each domain a device of its own: {domains:?}");
}

fn scenario(mode: VgpuMode, vfs: u32) {
    let Some(host) = Host::new(mode, vfs) else { return };

    // Three VMs on MIG-backed vGPUs of one GPU.
    host.write(&LAYOUT, &VMS);
    let domains = planned_domains(&host);
    let (code, events, out) = host.apply();
    assert_eq!(code, Some(0), "apply failed:\n{out}");
    let devices = host.devices();
    assert_eq!(devices.len(), 3, "{devices:?}\n{out}");
    for slot in LAYOUT {
        let d = device(&devices, slot);
        assert!(d.type_name.starts_with("NVIDIA H200-"), "{d:?}");
        // The VM's device went in before its domain was started.
        let vm = VMS[LAYOUT.iter().position(|s| *s == slot).unwrap()].0;
        let vm_id = format!("vm:{HOST}/{vm}");
        assert!(position(&events, "done", &mig_id(slot)) < position(&events, "start", &vm_id), "{vm}\n{out}");
        assert!(position(&events, "done", &vm_id) > 0);
    }
    if mode == VgpuMode::Mdev {
        let mut made: Vec<String> = devices.iter().map(|d| d.uuid.clone()).collect();
        made.sort();
        let mut want: Vec<String> = LAYOUT.iter().map(|s| uuid(s)).collect();
        want.sort();
        assert_eq!(made, want, "each mdev named by the UUID fabrik derives for its instance");
    }
    assert_eq!(observed_names(&host), expected_names(mode, &devices), "sysfs shows the devices");
    domains_name_created_devices(&domains, &["a", "b", "c"], &host, &out);
    let named = |domains: &[(String, Vec<String>)], vm: &str| domains.iter().find(|d| d.0 == vm).unwrap().1.clone();

    // A re-layout: `c` and its 3g go, `d` and `e` come on new 1g instances; `a`'s and
    // `b`'s devices and instances stay as they were.
    let before = host.state();
    host.write(&RELAYOUT, &RELAYOUT_VMS);
    let relaid = planned_domains(&host);
    // The test driver forgot `a` and `b` with the last process: they are defined again,
    // naming the devices they had.
    for vm in ["a", "b"] {
        assert_eq!(named(&relaid, vm), named(&domains, vm), "{vm} names another device");
    }
    let (code, events, out) = host.apply();
    assert_eq!(code, Some(0), "apply failed:\n{out}");
    let after = host.state();
    let devices = host.devices();
    for slot in ["2g.35gb@0", "2g.35gb@2"] {
        let was = device(&before.gpus[0].vgpu.as_ref().unwrap().devices, slot);
        assert_eq!(was, device(&devices, slot), "the device of {slot} changed");
        let id = |s: &SimGpuState| {
            s.live()[0].instances.iter().find(|m| format!("{}@{}", m.profile, m.start) == slot).map(|m| m.id)
        };
        assert_eq!(id(&before), id(&after), "the MIG instance {slot} was made again");
        assert!(!events.iter().any(|e| e["id"] == mig_id(slot)), "{slot} was touched:\n{out}");
    }
    assert!(devices.iter().all(|d| d.start != 4 || d.profile != "3g.71gb"), "{devices:?}");
    device(&devices, "1g.18gb@4");
    device(&devices, "1g.18gb@5");
    assert_eq!(devices.len(), 4, "{devices:?}");
    assert_eq!(observed_names(&host), expected_names(mode, &devices));
    domains_name_created_devices(&relaid, &["a", "b", "d", "e"], &host, &out);

    // A reboot: the GPU's instances and devices gone (the tree as the manager shows
    // them after it), MIG mode kept. Apply makes the instances, then each VM's device,
    // then starts it.
    let mut state = host.state();
    state.reset(0).unwrap();
    host.save(&state);
    std::fs::remove_dir_all(host.sys()).unwrap();
    std::fs::create_dir(host.sys()).unwrap();
    let rebooted = planned_domains(&host);
    let (code, events, out) = host.apply();
    assert_eq!(code, Some(0), "apply failed:\n{out}");
    for (vm, slot) in RELAYOUT_VMS.iter().map(|v| v.0).zip(RELAYOUT) {
        let vm_id = format!("vm:{HOST}/{vm}");
        assert!(position(&events, "done", &mig_id(slot)) < position(&events, "start", &vm_id), "{vm}\n{out}");
    }
    let devices = host.devices();
    assert_eq!(devices.len(), 4, "{devices:?}");
    assert_eq!(observed_names(&host), expected_names(mode, &devices));
    domains_name_created_devices(&rebooted, &["a", "b", "d", "e"], &host, &out);
    assert_eq!(rebooted, relaid, "after the reboot the domains name the devices they named before");
}

#[test]
fn mdev_mode_on_nvml_and_sysfs() {
    scenario(VgpuMode::Mdev, 0);
}

#[test]
fn sriov_vf_mode_on_nvml_and_sysfs() {
    scenario(VgpuMode::SriovVf, 16);
}

#[test]
fn the_nvml_driver_names_a_missing_mig_instance_before_writing_sysfs() {
    use fabrik::driver::Gpus;
    let Some(host) = Host::new(VgpuMode::Mdev, 0) else { return };
    let mut state = host.state();
    state.reset(0).unwrap();
    host.save(&state);
    let mut driver = fabrik::driver::nvml::NvmlDriver::open(Some(&host.lib)).unwrap();
    let e = driver.create_vgpu(gpu(), "2g.35gb", 0, &uuid("2g.35gb@0"), None).unwrap_err();
    assert_eq!(e.kind, fabrik::driver::ErrorKind::Refused, "{e:?}");
    // The twin's words for it; sysfs (here `/sys`, which offers no vGPUs: `unsupported`)
    // is not reached.
    assert!(e.message.contains("no MIG instance 2g.35gb@0"), "{e:?}");
}

#[test]
fn a_vm_whose_device_cannot_be_made_is_not_started() {
    // Two VFs for three vGPUs: `a`'s instance (placement 0) is planned on VF 0; `b`'s
    // and `c`'s (placements 2 and 4) are past the VFs, so each takes a free VF no
    // instance's placement names: one gets VF 1 and the other is refused by the NVML
    // driver (which of the two depends on the order their actions run in, in parallel),
    // never `a`'s VF. That VM is not started, and the apply says it did not converge.
    let Some(host) = Host::new(VgpuMode::SriovVf, 2) else { return };
    host.write(&LAYOUT, &VMS);
    let (code, events, out) = host.apply();
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("no free virtual function"), "{out}");
    let devices = host.devices();
    assert_eq!(devices.len(), 2, "{out}");
    // `a`'s planned VF carries a vGPU (which free 2g instance is behind it is the vGPU
    // manager's choice, as it is on a host).
    assert!(devices.iter().any(|d| d.vf == Some(0) && d.profile == "2g.35gb"), "{devices:?}");
    let failed: Vec<&str> = events.iter().filter(|e| e["event"] == "failed").filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert!(["vm:gpu09/b", "vm:gpu09/c"].contains(&failed[0]), "{out}");
    assert!(!events.iter().any(|e| e["event"] == "done" && e["id"] == failed[0]), "{out}");
    position(&events, "done", "vm:gpu09/a");
    let verify = events.iter().find(|e| e["event"] == "verify").unwrap_or_else(|| panic!("no verify:\n{out}"));
    assert_eq!(verify["converged"], false, "{out}");
    assert_eq!(verify["remaining"], serde_json::json!([failed[0]]), "{out}");
}
