//! The NVML driver against the simulated libnvidia-ml (`sim-nvml/`), and the in-process
//! simulated GPUs against the same table of scenarios: the same results and the same
//! errors (kind and NVML code) from both.
//!
//! The library is built by `cargo build -p sim-nvml` (`scripts/test.sh` runs it before
//! the tests, and this test runs it again when cargo is at hand: a no-op when it is
//! current) and found in the target directory this test runs from
//! (`target/debug/libnvidia_ml_sim.so`). With `CI=true` a library that cannot be built
//! or found fails the tests; elsewhere the NVML half is skipped, saying why.
//!
//! Each NVML host is a private copy of the library in a temporary directory: the
//! library keeps its state beside itself (`libnvidia-ml.so.1.json`), so copies are
//! independent hosts, and tests run in parallel without sharing one.

#[path = "sim_nvml/mod.rs"]
mod sim_nvml;

use std::path::{Path, PathBuf};
use std::process::Command;

use fabrik::driver::nvml::NvmlDriver;
use fabrik::driver::sim_gpu::{Activation, SimGpuState, SimGpus};
use fabrik::driver::{DriverError, ErrorKind, Gpus};
use fabrik::hw::GpuModel;
use fabrik::live::{LiveGpu, MigMode};
use fabrik::spec::types::PciAddress;

fn addr(s: &str) -> PciAddress {
    PciAddress::parse(s).unwrap()
}

const H100_A: &str = "0000:1b:00.0";
const H100_B: &str = "0000:1c:00.0";
const H200: &str = "0000:3b:00.0";
const A100: &str = "0000:5e:00.0";
const L40S: &str = "0000:86:00.0";

/// The reference host, with the second H100 behind passthrough (a mode change needs a
/// reset there).
fn host_state() -> SimGpuState {
    let mut s = SimGpuState::reference();
    s.gpus[1].activation = Activation::ResetRequired;
    s
}

/// One simulated host, reached either way.
trait Backend {
    fn name(&self) -> &'static str;
    fn gpus(&mut self) -> &mut dyn Gpus;
    /// Changes the host outside NVML (a guest starts on a slice).
    fn edit(&mut self, change: &dyn Fn(&mut SimGpuState));
    /// Closes the driver and opens it again.
    fn reopen(&mut self);
}

struct Nvml {
    _dir: tempfile::TempDir,
    lib: PathBuf,
    driver: Option<NvmlDriver>,
}

impl Nvml {
    fn new(state: &SimGpuState) -> Option<Nvml> {
        let source = sim_nvml::library("the NVML driver half")?;
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libnvidia-ml.so.1");
        std::fs::copy(source, &lib).unwrap();
        state.save(&state_file(&lib)).unwrap();
        let driver = NvmlDriver::open(Some(&lib)).unwrap();
        Some(Nvml { _dir: dir, lib, driver: Some(driver) })
    }
}

fn state_file(lib: &Path) -> PathBuf {
    PathBuf::from(format!("{}.json", lib.display()))
}

impl Backend for Nvml {
    fn name(&self) -> &'static str {
        "NVML driver + sim-nvml"
    }
    fn gpus(&mut self) -> &mut dyn Gpus {
        self.driver.as_mut().unwrap()
    }
    fn edit(&mut self, change: &dyn Fn(&mut SimGpuState)) {
        // The library reads its state file again at every call.
        let path = state_file(&self.lib);
        let mut s = SimGpuState::load(&path).unwrap();
        change(&mut s);
        s.save(&path).unwrap();
    }
    fn reopen(&mut self) {
        // nvmlShutdown drops the library's state; nvmlInit reads it from its file.
        self.driver = None;
        self.driver = Some(NvmlDriver::open(Some(&self.lib)).unwrap());
    }
}

struct InProcess {
    _dir: tempfile::TempDir,
    path: PathBuf,
    sim: SimGpus,
}

impl InProcess {
    fn new(state: &SimGpuState) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim").join("gpus.json");
        let sim = SimGpus::open(&path, || state.clone()).unwrap();
        InProcess { _dir: dir, path, sim }
    }
}

impl Backend for InProcess {
    fn name(&self) -> &'static str {
        "in-process SimGpus"
    }
    fn gpus(&mut self) -> &mut dyn Gpus {
        &mut self.sim
    }
    fn edit(&mut self, change: &dyn Fn(&mut SimGpuState)) {
        self.sim.update(change).unwrap();
    }
    fn reopen(&mut self) {
        self.sim = SimGpus::open(&self.path, || panic!("the state file is gone")).unwrap();
    }
}

/// What a scenario saw, step by step, to compare between backends.
type Transcript = Vec<String>;

fn record<T: std::fmt::Debug>(t: &mut Transcript, step: &str, r: &Result<T, DriverError>) {
    let line = match r {
        Ok(v) => format!("{step} -> {v:?}"),
        Err(e) => format!("{step} -> {:?} {}", e.kind, e.code.as_deref().unwrap_or("-")),
    };
    t.push(line);
}

#[track_caller]
fn refused_with<T: std::fmt::Debug>(r: Result<T, DriverError>, kind: ErrorKind, code: &str) -> DriverError {
    let e = r.expect_err("the call should fail");
    assert_eq!((e.kind, e.code.as_deref()), (kind, Some(code)), "{}", e.message);
    e
}

fn gpu(gpus: &[LiveGpu], address: &str) -> LiveGpu {
    gpus.iter().find(|g| g.address == addr(address)).cloned().unwrap_or_else(|| panic!("no GPU {address}"))
}

/// What NVML says of the GPUs: the vGPU side is sysfs's (`driver::vgpu`), which the twin
/// models and the NVML driver reads from the host's `/sys`, so it is left out here.
fn nvml_side(gpus: Vec<LiveGpu>) -> Vec<LiveGpu> {
    gpus.into_iter().map(|g| LiveGpu { vgpu: None, ..g }).collect()
}

fn snapshot(t: &mut Transcript, b: &mut dyn Backend) -> Vec<LiveGpu> {
    let gpus = nvml_side(b.gpus().gpus().unwrap());
    t.push(format!("gpus -> {gpus:?}"));
    gpus
}

fn enumerate(b: &mut dyn Backend) -> Transcript {
    let mut t = vec![];
    let gpus = snapshot(&mut t, b);
    assert_eq!(gpus.len(), 5);
    let h200 = gpu(&gpus, H200);
    assert_eq!((h200.name.as_str(), h200.model), ("NVIDIA H200", Some(GpuModel::H200_141GB)));
    assert_eq!(h200.memory.bytes(), 143_771 << 20);
    assert_eq!(h200.numa_node, Some(1));
    assert_eq!(h200.cpu_affinity.as_ref().map(|c| c.to_string()).as_deref(), Some("32-63"));
    assert!(h200.uuid.starts_with("GPU-"), "{}", h200.uuid);
    assert_eq!(h200.mig, Some(MigMode { current: true, pending: true }));
    let [gi] = h200.instances.as_slice() else { panic!("one instance: {:?}", h200.instances) };
    assert_eq!((gi.profile_id, gi.profile.as_str(), gi.start, gi.size), (9, "3g.71gb", 0, 4));
    assert_eq!(gi.compute_instances, vec![0]);
    let h100 = gpu(&gpus, H100_A);
    assert_eq!(h100.nvlink_peers, vec![addr(H100_B)], "the H100s share an NVSwitch");
    assert_eq!(h100.mig, Some(MigMode { current: false, pending: false }));
    assert_eq!(gpu(&gpus, A100).model, Some(GpuModel::A100_80GB));
    assert_eq!(gpu(&gpus, L40S).mig, None, "an L40S has no MIG");
    t
}

fn mig_mode(b: &mut dyn Backend) -> Transcript {
    let mut t = vec![];
    let r = b.gpus().set_mig_mode(addr(A100), true);
    record(&mut t, "enable on the A100", &r);
    assert_eq!(r.unwrap(), MigMode { current: true, pending: true }, "an idle GPU switches at once");
    let r = b.gpus().set_mig_mode(addr(H100_B), true);
    record(&mut t, "enable on the passthrough H100", &r);
    assert_eq!(r.unwrap(), MigMode { current: false, pending: true }, "pending until a reset");
    let r = b.gpus().set_mig_mode(addr(H200), false);
    record(&mut t, "disable on the H200 with an instance", &r);
    assert_eq!(r.unwrap(), MigMode { current: true, pending: false }, "instances keep the GPU busy");
    let r = b.gpus().set_mig_mode(addr(L40S), true);
    record(&mut t, "enable on the L40S", &r);
    refused_with(r, ErrorKind::Unsupported, "NVML_ERROR_NOT_SUPPORTED");
    let r = b.gpus().set_mig_mode(addr("0000:99:00.0"), true);
    record(&mut t, "enable on a GPU that is not there", &r);
    refused_with(r, ErrorKind::NotFound, "NVML_ERROR_NOT_FOUND");
    let gpus = snapshot(&mut t, b);
    assert_eq!(gpu(&gpus, A100).mig, Some(MigMode { current: true, pending: true }));
    assert_eq!(gpu(&gpus, H100_B).mig, Some(MigMode { current: false, pending: true }));
    t
}

fn create_beside_existing(b: &mut dyn Backend) -> Transcript {
    let mut t = vec![];
    let before = gpu(&snapshot(&mut t, b), H200).instances;
    let r = b.gpus().create_instance(addr(H200), 9, 4);
    record(&mut t, "3g.71gb at 4 beside the 3g at 0", &r);
    assert_eq!(r.unwrap(), 2, "NVML's id for slices 4–7");
    let r = b.gpus().create_instance(addr(H200), 14, 4);
    record(&mut t, "2g.35gb at 4, over the new 3g", &r);
    let e = refused_with(r, ErrorKind::Refused, "NVML_ERROR_INSUFFICIENT_RESOURCES");
    assert!(e.message.contains("Insufficient resources"), "NVML's own text: {}", e.message);
    let after = gpu(&snapshot(&mut t, b), H200).instances;
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], before[0], "the existing instance is untouched");
    assert_eq!((after[1].id, after[1].start, after[1].size), (2, 4, 4));
    assert_eq!(after[1].compute_instances, vec![0], "filled with one compute instance");
    t
}

fn refusals(b: &mut dyn Backend) -> Transcript {
    let mut t = vec![];
    let r = b.gpus().create_instance(addr(H200), 9, 2);
    record(&mut t, "3g at 2, not a 3g placement", &r);
    refused_with(r, ErrorKind::Refused, "NVML_ERROR_INVALID_ARGUMENT");
    let r = b.gpus().create_instance(addr(H200), 42, 4);
    record(&mut t, "profile 42, which no GPU has", &r);
    refused_with(r, ErrorKind::Refused, "NVML_ERROR_INVALID_ARGUMENT");
    let r = b.gpus().create_instance(addr(H200), 0, 0);
    record(&mut t, "7g over the 3g", &r);
    refused_with(r, ErrorKind::Refused, "NVML_ERROR_INSUFFICIENT_RESOURCES");
    let r = b.gpus().create_instance(addr(A100), 9, 0);
    record(&mut t, "3g on the A100, MIG off", &r);
    let e = refused_with(r, ErrorKind::Refused, "NVML_ERROR_NOT_SUPPORTED");
    assert!(e.message.contains("MIG mode is not enabled"), "{}", e.message);
    let r = b.gpus().create_instance(addr(L40S), 9, 0);
    record(&mut t, "3g on the L40S", &r);
    refused_with(r, ErrorKind::Unsupported, "NVML_ERROR_NOT_SUPPORTED");
    let r = b.gpus().create_instance(addr(H200), 20, 4);
    record(&mut t, "1g+me at 4", &r);
    r.unwrap();
    let r = b.gpus().create_instance(addr(H200), 20, 5);
    record(&mut t, "a second 1g+me", &r);
    refused_with(r, ErrorKind::Refused, "NVML_ERROR_INSUFFICIENT_RESOURCES");
    snapshot(&mut t, b);
    t
}

fn destroy(b: &mut dyn Backend) -> Transcript {
    let mut t = vec![];
    let r = b.gpus().create_instance(addr(H200), 19, 6);
    record(&mut t, "1g at 6", &r);
    let id = r.unwrap();
    assert_eq!(id, 13);
    let r = b.gpus().destroy_instance(addr(H200), id);
    record(&mut t, "destroy the 1g", &r);
    r.unwrap();
    let r = b.gpus().destroy_instance(addr(H200), id);
    record(&mut t, "destroy it again", &r);
    refused_with(r, ErrorKind::NotFound, "NVML_ERROR_NOT_FOUND");
    // A guest runs on the 3g's compute instance: NVML refuses to take it away.
    b.edit(&|s| s.gpus[2].instances[0].compute_instances[0].busy = true);
    let r = b.gpus().destroy_instance(addr(H200), 1);
    record(&mut t, "destroy the 3g in use", &r);
    refused_with(r, ErrorKind::Refused, "NVML_ERROR_IN_USE");
    assert_eq!(gpu(&snapshot(&mut t, b), H200).instances.len(), 1, "still there");
    b.edit(&|s| s.gpus[2].instances[0].compute_instances[0].busy = false);
    let r = b.gpus().destroy_instance(addr(H200), 1);
    record(&mut t, "destroy the 3g", &r);
    r.unwrap();
    let r = b.gpus().destroy_instance(addr(A100), 1);
    record(&mut t, "destroy on the A100, MIG off", &r);
    refused_with(r, ErrorKind::Refused, "NVML_ERROR_NOT_SUPPORTED");
    assert!(gpu(&snapshot(&mut t, b), H200).instances.is_empty());
    t
}

fn persists(b: &mut dyn Backend) -> Transcript {
    let mut t = vec![];
    b.gpus().create_instance(addr(H200), 14, 4).unwrap();
    b.gpus().set_mig_mode(addr(A100), true).unwrap();
    let before = snapshot(&mut t, b);
    b.reopen();
    let after = snapshot(&mut t, b);
    assert_eq!(after, before, "the state outlives the driver");
    assert_eq!(gpu(&after, H200).instances.len(), 2);
    t
}

type Scenario = fn(&mut dyn Backend) -> Transcript;

const SCENARIOS: [(&str, Scenario); 6] = [
    ("enumerate", enumerate),
    ("mig mode", mig_mode),
    ("create beside existing", create_beside_existing),
    ("refusals", refusals),
    ("destroy", destroy),
    ("persists", persists),
];

/// Runs a scenario of the table on both backends; they must see the same.
fn both(name: &str) {
    let (_, scenario) = SCENARIOS.iter().find(|(n, _)| *n == name).unwrap();
    both_on(name, *scenario, &host_state());
}

fn both_on(name: &str, scenario: Scenario, state: &SimGpuState) {
    let mut in_process = InProcess::new(state);
    let expected = scenario(&mut in_process);
    let Some(mut nvml) = Nvml::new(state) else { return };
    let got = scenario(&mut nvml);
    for (i, (a, b)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(b, a, "step {i} of `{name}`: {} differs from {}", nvml.name(), in_process.name());
    }
    assert_eq!(got.len(), expected.len());
}

#[test]
fn enumerates_gpus() {
    both("enumerate");
}

#[test]
fn mig_mode_is_set_now_or_pending() {
    both("mig mode");
}

#[test]
fn creates_an_instance_at_an_exact_placement_beside_existing_ones() {
    both("create beside existing");
}

#[test]
fn refuses_with_nvml_codes() {
    both("refusals");
}

#[test]
fn destroys_instances_but_not_those_in_use() {
    both("destroy");
}

#[test]
fn state_persists_across_a_reopen() {
    both("persists");
}

/// The declared host `gpu02` of the example factory.
fn example_host() -> fabrik::spec::model::host::Host {
    let loaded = fabrik::spec::load::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ai-factory"));
    loaded.spec.hosts.into_iter().find(|h| h.name.value == "gpu02").expect("the example declares gpu02")
}

/// A twin starts as the declared hardware, MIG off, and takes the declared layout.
fn twin_takes_the_declared_layout(b: &mut dyn Backend) -> Transcript {
    let host = example_host();
    let mut t = vec![];
    let gpus = snapshot(&mut t, b);
    assert_eq!(gpus.len(), host.gpus.len());
    for (live, declared) in gpus.iter().zip(&host.gpus) {
        assert_eq!(live.address, declared.address.value);
        assert_eq!(live.model, Some(declared.model.value));
        assert_eq!(live.numa_node, Some(declared.numa_node.value));
        assert_eq!(live.nvlink_peers.len(), host.gpus.len() - 1, "one NVLink domain");
        assert_eq!(live.mig, Some(MigMode { current: false, pending: false }));
    }
    let mig_gpu = host.gpus.iter().find(|g| !g.mig.is_empty()).expect("gpu02 has a MIG layout");
    let address = mig_gpu.address.value;
    let r = b.gpus().set_mig_mode(address, true);
    record(&mut t, "enable MIG", &r);
    r.unwrap();
    for slot in &mig_gpu.mig {
        let profile = fabrik::hw::mig::profile(mig_gpu.model.value, &slot.profile.value).unwrap();
        let start = slot.placement.as_ref().unwrap().value;
        let r = b.gpus().create_instance(address, profile.id, start);
        record(&mut t, &format!("{} at {start}", profile.name), &r);
        r.unwrap();
    }
    let live = gpu(&snapshot(&mut t, b), &address.to_string());
    let layout: Vec<(String, u8)> = live.instances.iter().map(|i| (i.profile.clone(), i.start)).collect();
    let declared: Vec<(String, u8)> =
        mig_gpu.mig.iter().map(|s| (s.profile.value.to_string(), s.placement.as_ref().unwrap().value)).collect();
    assert_eq!(layout, declared);
    t
}

#[test]
fn a_twin_of_a_declared_host_takes_its_mig_layout() {
    let state = SimGpuState::from_host(&example_host());
    both_on("twin", twin_takes_the_declared_layout, &state);
}

/// Another process that loads the library sees what this one did, as with a GPU.
#[test]
fn another_process_sees_the_same_gpus() {
    if let Some(state) = std::env::var_os("NVML_SIM_CHILD_EXPECT") {
        // The child: named by the parent below, with the state file in the environment.
        let mut d = NvmlDriver::open(Some(Path::new(&std::env::var_os("NVML_SIM_CHILD_LIB").unwrap()))).unwrap();
        let seen = nvml_side(d.gpus().unwrap());
        let expected: Vec<LiveGpu> = serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
        assert_eq!(seen, nvml_side(expected));
        return;
    }
    let Some(lib) = sim_nvml::library("the NVML driver half") else { return };
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("host.json");
    host_state().save(&state_path).unwrap();
    // The parent names the state by the environment too, through a copy of the library
    // whose own neighbour file would otherwise be used: the variable wins.
    let copy = dir.path().join("libnvidia-ml.so.1");
    std::fs::copy(lib, &copy).unwrap();
    let child_env = [("FABRIK_SIM_NVML_STATE", state_path.as_os_str())];
    let mut state = SimGpuState::load(&state_path).unwrap();
    state.create_gpu_instance(2, 9, Some(fabrik::driver::sim_gpu::Placement { start: 4, size: 4 })).unwrap();
    state.save(&state_path).unwrap();
    let expected = dir.path().join("expected.json");
    std::fs::write(&expected, serde_json::to_string(&state.live()).unwrap()).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "another_process_sees_the_same_gpus", "--nocapture", "--test-threads=1"])
        .envs(child_env)
        .env("NVML_SIM_CHILD_EXPECT", &expected)
        .env("NVML_SIM_CHILD_LIB", &copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the child failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!state_file(&copy).exists(), "the environment's state file was used, not one beside the library");
}

#[test]
fn a_library_without_nvml_is_a_clear_error() {
    // Any shared library that is not NVML: it loads, but has no nvmlInit_v2.
    let e = NvmlDriver::open(Some(Path::new("libc.so.6"))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{}", e.message);
    assert!(e.message.contains("nvmlInit_v2"), "{}", e.message);
}
