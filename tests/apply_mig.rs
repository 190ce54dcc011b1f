//! `fabrik apply` of a MIG re-layout on a host whose GPUs are the simulated libnvidia-ml
//! (`sim-nvml/`), reached the way a real host's are: through its `agent` command, a
//! `fabrik agent` that loads `libnvidia-ml.so.1` from `LD_LIBRARY_PATH`. The host's
//! libvirt is the test driver (`test:///default`), whose own objects are not fabrik's and
//! must stay notices; its links are this machine's, read and never changed. The same
//! re-layouts on the in-process twin (`--sim`) must end in the same GPU state.
//!
//! Instances are known by their placement (profile and start slice): one the layout
//! keeps must never be destroyed and made again. The simulation numbers instances by
//! placement, so a recreated one would get its old id back; the kept instance's compute
//! instance is therefore marked busy (a guest runs on it), which NVML refuses to destroy
//! and a new compute instance never is.
//!
//! The library is built by `cargo build -p sim-nvml` (a no-op when current) and found in
//! the target directory this test runs from. With `CI=true` a library that cannot be
//! built or found fails the tests; elsewhere the NVML host is skipped, saying why.

#[path = "sim_nvml/mod.rs"]
mod sim_nvml;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use fabrik::driver::sim_gpu::{Placement, SimGpuInstance, SimGpuState};
use fabrik::hw::{GpuModel, mig};
use fabrik::live::MigMode;
use fabrik::spec::types::PciAddress;
use serde_json::Value;

mod common;
use common::{position, text};

const HOST: &str = "gpu09";
const GPU: &str = "0000:3b:00.0";
const MODEL: GpuModel = GpuModel::H200_141GB;

fn gpu_address() -> PciAddress {
    PciAddress::parse(GPU).unwrap()
}

fn profile(name: &str) -> &'static mig::MigProfile {
    mig::profiles(MODEL).iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no {name} on {MODEL}"))
}

/// `3g.71gb@4` → the resource id of that instance on the host's GPU.
fn mig_id(slot: &str) -> String {
    format!("mig:{HOST}/{GPU}/{slot}")
}

/// The factory: one host with the H200 split as `layout` (`profile@start`), nothing else
/// (no networks, hugepages or NICs: nothing that would touch this machine's links).
fn factory_yaml(agent: Option<&str>, layout: &[&str]) -> String {
    let mut y = format!("version: 1\nfactory: mig\nhosts:\n  - name: {HOST}\n    uri: \"test:///default\"\n");
    if let Some(agent) = agent {
        y.push_str(&format!("    agent: {}\n", serde_json::to_string(agent).unwrap()));
    }
    y.push_str("    numa-nodes:\n      - { id: 0, socket: 0, cpus: 0-7, memory: 64GiB }\n");
    y.push_str(&format!("    gpus:\n      - address: \"{GPU}\"\n        model: H200-141GB\n        numa-node: 0\n"));
    y.push_str(if layout.is_empty() {
        "        mode: mig\n        mig: []\n"
    } else {
        "        mode: mig\n        mig:\n"
    });
    for slot in layout {
        let (p, start) = slot.split_once('@').unwrap();
        y.push_str(&format!("          - {{ profile: {p}, placement: {start} }}\n"));
    }
    y
}

/// The GPU with MIG on and these instances (`profile@start`, busy when a guest runs on
/// it), each filled with one compute instance as fabrik makes them.
fn with_instances(mut state: SimGpuState, instances: &[(&str, bool)]) -> SimGpuState {
    let gpu = state.gpu(gpu_address()).unwrap();
    state.gpus[gpu].mig = Some(MigMode { current: true, pending: true });
    for (slot, busy) in instances {
        let (name, start) = slot.split_once('@').unwrap();
        let p = profile(name);
        let at = Placement { start: start.parse().unwrap(), size: u32::from(p.memory_slices) };
        let gi = state.create_gpu_instance(gpu, p.id, Some(at)).unwrap();
        let full = (0..nvml_wrapper_sys::bindings::NVML_COMPUTE_INSTANCE_PROFILE_COUNT)
            .filter_map(|c| state.compute_instance_profile(gpu, gi, c).ok())
            .max_by_key(|c| c.slices)
            .unwrap();
        state.create_compute_instance(gpu, gi, full.id, None).unwrap();
        let inst = state.gpus[gpu].instances.iter_mut().find(|i| i.id == gi).unwrap();
        inst.compute_instances[0].busy = *busy;
    }
    state
}

/// The GPU's instances, by `profile@start`.
fn instances(state: &SimGpuState) -> Vec<(String, SimGpuInstance)> {
    let gpu = state.gpu(gpu_address()).unwrap();
    state.gpus[gpu]
        .instances
        .iter()
        .map(|i| {
            let p = mig::profiles(MODEL).iter().find(|p| p.id == i.profile_id).unwrap();
            (format!("{}@{}", p.name, i.placement.start), i.clone())
        })
        .collect()
}

fn instance<'a>(list: &'a [(String, SimGpuInstance)], slot: &str) -> &'a SimGpuInstance {
    list.iter().find(|(s, _)| s == slot).map(|(_, i)| i).unwrap_or_else(|| panic!("no {slot} in {list:?}"))
}

/// Where the host's GPUs are.
enum Backend {
    /// The simulated library behind the host's agent; its state beside it.
    Nvml { lib: PathBuf },
    /// The in-process twin, in its state folder.
    Twin { state: PathBuf },
}

/// One host to apply to, in a folder of its own.
struct Host {
    dir: tempfile::TempDir,
    backend: Backend,
    factory: PathBuf,
}

impl Host {
    /// The host on the simulated library, its GPU as `prepare` makes it from the twin's
    /// starting state; `None` when the library is not there (outside CI).
    fn nvml(prepare: impl FnOnce(SimGpuState) -> SimGpuState) -> Option<Host> {
        let source = sim_nvml::library("the NVML host")?;
        let dir = tempfile::tempdir().unwrap();
        let lib_dir = dir.path().join("lib");
        std::fs::create_dir(&lib_dir).unwrap();
        let lib = lib_dir.join("libnvidia-ml.so.1");
        std::fs::copy(source, &lib).unwrap();
        let host = Host { factory: dir.path().join("factory.yaml"), dir, backend: Backend::Nvml { lib } };
        // The factory's GPU as a twin would start it: the same UUID and affinity.
        host.write_factory(&[]);
        let spec = fabrik::spec::load::load(&host.factory).spec;
        let declared = spec.hosts.iter().find(|h| h.name.value == HOST).unwrap();
        host.save(&prepare(SimGpuState::from_host(declared)));
        Some(host)
    }

    /// The host's twin, its `gpus.json` as `prepare` makes it from what the twin starts
    /// with.
    fn twin(prepare: impl FnOnce(SimGpuState) -> SimGpuState) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let host = Host { factory: dir.path().join("factory.yaml"), dir, backend: Backend::Twin { state } };
        host.write_factory(&[]);
        // The first look at a twin makes its state.
        let first = host.fabrik(&["plan"]);
        assert!(host.state_file().exists(), "the twin was not made:\n{}", text(&first));
        host.save(&prepare(host.state()));
        host
    }

    fn name(&self) -> &'static str {
        match self.backend {
            Backend::Nvml { .. } => "agent + sim-nvml",
            Backend::Twin { .. } => "twin",
        }
    }

    fn write_factory(&self, layout: &[&str]) {
        let agent = match &self.backend {
            // Each test is a host of its own: its apply locks in its own folder, not in
            // this machine's /run/fabrik, which tests running at once would share.
            Backend::Nvml { lib } => Some(format!(
                "env LD_LIBRARY_PATH={} {} agent --lock-dir {}",
                shell_words::quote(&lib.parent().unwrap().to_string_lossy()),
                shell_words::quote(env!("CARGO_BIN_EXE_fabrik")),
                shell_words::quote(&lib.parent().unwrap().parent().unwrap().join("locks").to_string_lossy()),
            )),
            Backend::Twin { .. } => None,
        };
        std::fs::write(&self.factory, factory_yaml(agent.as_deref(), layout)).unwrap();
    }

    fn state_file(&self) -> PathBuf {
        match &self.backend {
            Backend::Nvml { lib } => PathBuf::from(format!("{}.json", lib.display())),
            Backend::Twin { state } => state.join(HOST).join("gpus.json"),
        }
    }

    fn state(&self) -> SimGpuState {
        SimGpuState::load(&self.state_file()).unwrap()
    }

    fn save(&self, state: &SimGpuState) {
        state.save(&self.state_file()).unwrap();
    }

    /// Runs `fabrik <args> [--sim --state-dir …] <factory>`.
    fn fabrik(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fabrik"));
        c.args(args);
        if let Backend::Twin { state } = &self.backend {
            c.arg("--sim").arg("--state-dir").arg(state);
        }
        c.arg(&self.factory).current_dir(self.dir.path()).env("NO_COLOR", "1").stdin(Stdio::null());
        c.output().unwrap()
    }

    /// `fabrik plan --format json`, checked to have no errors.
    fn plan(&self) -> (Option<i32>, Value) {
        let o = self.fabrik(&["plan", "--format", "json"]);
        let plan: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}:\n{}", text(&o)));
        assert_eq!(
            common::all(&plan, "errors"),
            serde_json::json!([]),
            "{}: the plan has errors:\n{}",
            self.name(),
            text(&o)
        );
        (o.status.code(), plan)
    }

    /// `fabrik apply --yes --format json`: its exit status and its events.
    fn apply(&self) -> (Option<i32>, Vec<Value>, String) {
        let o = self.fabrik(&["apply", "--yes", "--format", "json"]);
        let events = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event `{l}`: {e}\n{}", text(&o))))
            .collect();
        (o.status.code(), events, text(&o))
    }
}

/// The plan's actions as `op id`, sorted.
fn actions(plan: &Value) -> Vec<String> {
    let mut a: Vec<String> = common::all(plan, "actions")
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{} {}", a["op"].as_str().unwrap(), a["id"].as_str().unwrap()))
        .collect();
    a.sort();
    a
}

fn creates(slots: &[&str]) -> Vec<String> {
    slots.iter().map(|s| format!("create {}", mig_id(s))).collect()
}

/// What an apply left: the plan it made and the GPU's state after it.
struct Outcome {
    plan: Vec<String>,
    after: SimGpuState,
}

/// The GPU runs a 3g at slice 4 (a guest on it) and gets the example's layout around it.
const KEPT: &str = "3g.71gb@4";
const GROWN: [&str; 4] = ["2g.35gb@0", "1g.18gb@2", "1g.18gb@3", KEPT];

fn running_3g(state: SimGpuState) -> SimGpuState {
    with_instances(state, &[(KEPT, true)])
}

/// Applies [`GROWN`] to a host running [`KEPT`]: only the new instances are created, the
/// running one is untouched, and the host converges.
fn add_beside_running(host: &Host) -> Outcome {
    let before = instances(&host.state());
    assert_eq!(before.len(), 1, "{before:?}");
    host.write_factory(&GROWN);

    let (code, plan) = host.plan();
    assert_eq!(code, Some(2), "{}: changes are planned", host.name());
    let added = ["1g.18gb@2", "1g.18gb@3", "2g.35gb@0"];
    assert_eq!(actions(&plan), creates(&added), "{}: only the new instances are created", host.name());
    for a in common::all(&plan, "actions").as_array().unwrap() {
        assert_eq!(a["class"], "live", "{}: no GPU re-layout: {a}", host.name());
    }
    let summary = &plan["summary"];
    assert_eq!((summary["destroy"].as_u64(), summary["gpu_relayouts"].as_u64()), (Some(0), Some(0)), "{summary}");

    let (code, events, out) = host.apply();
    assert_eq!(code, Some(0), "{}: apply failed:\n{out}", host.name());
    let verify = events.iter().find(|e| e["event"] == "verify").unwrap_or_else(|| panic!("no verify event:\n{out}"));
    assert_eq!(verify["converged"], true, "{out}");
    let summary = events.last().unwrap();
    assert_eq!((summary["event"].as_str(), summary["done"].as_u64()), (Some("summary"), Some(3)), "{out}");
    assert_eq!(summary["failed"], 0, "{out}");

    let after = host.state();
    let now = instances(&after);
    let mut slots: Vec<&str> = now.iter().map(|(s, _)| s.as_str()).collect();
    slots.sort_unstable();
    let mut want = GROWN.to_vec();
    want.sort_unstable();
    assert_eq!(slots, want, "{}: every instance at its placement", host.name());
    let (kept_before, kept_after) = (instance(&before, KEPT), instance(&now, KEPT));
    assert_eq!(kept_after, kept_before, "{}: the running instance keeps its id and its compute instance", host.name());
    assert!(kept_after.compute_instances[0].busy, "still the guest's compute instance");
    for slot in added {
        let made = instance(&now, slot);
        assert_eq!(made.compute_instances.len(), 1, "{slot} is filled with one compute instance: {made:?}");
        assert!(!made.compute_instances[0].busy);
    }

    let (code, again) = host.plan();
    assert_eq!(code, Some(0), "{}: a second plan has changes: {:?}", host.name(), actions(&again));
    Outcome { plan: actions(&plan), after }
}

#[test]
fn apply_through_the_agent_adds_instances_beside_a_running_one() {
    let Some(host) = Host::nvml(running_3g) else { return };
    host.write_factory(&GROWN);
    // The test driver's own domain, network and pool are not fabrik's, nor are this
    // machine's links: notices, never actions.
    let (_, plan) = host.plan();
    let notices = common::all(&plan, "notices");
    let notices: Vec<(&str, &str)> =
        notices.as_array().unwrap().iter().map(|n| (n["id"].as_str().unwrap(), n["kind"].as_str().unwrap())).collect();
    for id in ["vm:gpu09/test", "net:gpu09/default", "pool:gpu09/default-pool"] {
        assert!(notices.contains(&(id, "unmanaged")), "{id} is an unmanaged notice: {notices:?}");
    }
    add_beside_running(&host);
}

#[test]
fn the_twin_takes_the_same_relayout_as_the_library() {
    let twin = Host::twin(running_3g);
    let start = twin.state();
    let on_twin = add_beside_running(&twin);
    let Some(nvml) = Host::nvml(running_3g) else { return };
    assert_eq!(nvml.state(), start, "both backends start alike");
    let on_nvml = add_beside_running(&nvml);
    assert_eq!(on_nvml.plan, on_twin.plan, "the same plan");
    assert_eq!(on_nvml.after, on_twin.after, "the same GPU state after apply");
}

/// The running 3g stays; the idle 2g at 0 goes and two 1g take its slices.
fn destroy_then_create_over_it(host: &Host) -> Outcome {
    let before = instances(&host.state());
    host.write_factory(&["1g.18gb@0", "1g.18gb@1", KEPT]);
    let (code, plan) = host.plan();
    assert_eq!(code, Some(2));
    let mut want = creates(&["1g.18gb@0", "1g.18gb@1"]);
    want.push(format!("delete {}", mig_id("2g.35gb@0")));
    assert_eq!(actions(&plan), want, "{}", host.name());

    let (code, events, out) = host.apply();
    assert_eq!(code, Some(0), "{}: apply failed:\n{out}", host.name());
    let destroyed = position(&events, "done", &mig_id("2g.35gb@0"));
    for slot in ["1g.18gb@0", "1g.18gb@1"] {
        assert!(
            destroyed < position(&events, "start", &mig_id(slot)),
            "{}: {slot} made over a live 2g:\n{out}",
            host.name()
        );
    }

    let after = host.state();
    let now = instances(&after);
    let slots: Vec<&str> = now.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(slots, ["1g.18gb@0", "1g.18gb@1", KEPT], "{}", host.name());
    assert_eq!(instance(&now, KEPT), instance(&before, KEPT), "{}: the 3g is untouched", host.name());
    let (code, again) = host.plan();
    assert_eq!(code, Some(0), "{}: a second plan has changes: {:?}", host.name(), actions(&again));
    Outcome { plan: actions(&plan), after }
}

fn running_3g_idle_2g(state: SimGpuState) -> SimGpuState {
    with_instances(state, &[("2g.35gb@0", false), (KEPT, true)])
}

#[test]
fn a_dropped_instance_is_destroyed_before_one_over_its_slices_is_created() {
    let twin = Host::twin(running_3g_idle_2g);
    let on_twin = destroy_then_create_over_it(&twin);
    let Some(nvml) = Host::nvml(running_3g_idle_2g) else { return };
    let on_nvml = destroy_then_create_over_it(&nvml);
    assert_eq!(on_nvml.plan, on_twin.plan);
    assert_eq!(on_nvml.after, on_twin.after, "both backends end alike");
}

/// A guest NVML knows of (and libvirt does not) holds the instance: the plan cannot see
/// it, NVML refuses, and apply says so and leaves the instance as it was; the other
/// instance of the layout is made all the same.
fn in_use_stays(host: &Host) -> SimGpuState {
    let before = instances(&host.state());
    host.write_factory(&["2g.35gb@0"]);
    let (_, plan) = host.plan();
    let mut want = creates(&["2g.35gb@0"]);
    want.push(format!("delete {}", mig_id(KEPT)));
    assert_eq!(actions(&plan), want, "{}", host.name());
    let (code, events, out) = host.apply();
    assert_eq!(code, Some(1), "{}:\n{out}", host.name());
    let failed = events
        .iter()
        .find(|e| e["event"] == "failed" && e["id"] == mig_id(KEPT).as_str())
        .unwrap_or_else(|| panic!("{}: the destroy did not fail:\n{out}", host.name()));
    assert!(failed["error"].as_str().unwrap().contains("In use"), "{}: NVML's reason: {failed}", host.name());
    let after = host.state();
    let now = instances(&after);
    assert_eq!(instance(&now, KEPT), instance(&before, KEPT), "{}: the 3g is still there, untouched", host.name());
    assert!(now.iter().any(|(s, _)| s == "2g.35gb@0"), "{}: the 2g was made: {now:?}", host.name());
    after
}

#[test]
fn an_instance_in_use_is_not_destroyed() {
    let on_twin = in_use_stays(&Host::twin(running_3g));
    let Some(nvml) = Host::nvml(running_3g) else { return };
    assert_eq!(in_use_stays(&nvml), on_twin, "both backends end alike");
}
