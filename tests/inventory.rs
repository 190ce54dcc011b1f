//! `fabrik inventory` on simulated twins: the report, its JSON, and drift.

use std::path::Path;
use std::process::{Command, Output};

use fabrik::driver::sim_gpu::SimGpuState;
use fabrik::hw::GpuModel;

fn fabrik(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabrik")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("stdout is one JSON document")
}

#[test]
fn twins_report_the_declared_hardware_without_drift() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    let o = fabrik(&["inventory", "--sim", "--state-dir", dir, "--format", "json", "examples/ai-factory"]);
    let v = json(&o);
    assert_eq!(v["simulated"], true);
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 4);
    let gpu02 = hosts.iter().find(|h| h["name"] == "gpu02").unwrap();
    assert_eq!(gpu02["live"]["gpus"].as_array().unwrap().len(), 8);
    assert_eq!(gpu02["live"]["gpus"][0]["model"], "H200-141GB");
    assert!(gpu02["live"]["links"].as_array().unwrap().iter().any(|l| l["name"] == "ib0" && l["sriov_vfs"] == 0));
    for h in hosts {
        assert_eq!(h["drift"], serde_json::json!([]), "a fresh twin matches its declaration: {}", h["name"]);
    }
    assert!(Path::new(dir).join("gpu02/gpus.json").exists(), "the twin's state is kept");
}

#[test]
fn a_changed_twin_shows_drift_at_the_declaration() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    // First run creates the twins; then the "hardware" changes under the factory.
    fabrik(&["inventory", "--sim", "--state-dir", dir, "--format", "json", "examples/ai-factory"]);
    let gpus = state.path().join("gpu01/gpus.json");
    let mut twin = SimGpuState::load(&gpus).unwrap();
    twin.gpus.retain(|g| g.address.to_string() != "0000:df:00.0");
    twin.gpus[0].model = GpuModel::H100_80GB;
    twin.gpus[1].numa_node = Some(1);
    twin.save(&gpus).unwrap();

    let o = fabrik(&["inventory", "--sim", "--state-dir", dir, "--format", "json", "examples/ai-factory"]);
    assert_eq!(o.status.code(), Some(1), "drift is an error");
    let v = json(&o);
    let gpu01 = v["hosts"].as_array().unwrap().iter().find(|h| h["name"] == "gpu01").unwrap();
    let mut codes: Vec<&str> = gpu01["drift"].as_array().unwrap().iter().map(|d| d["code"].as_str().unwrap()).collect();
    codes.sort();
    assert_eq!(codes, ["fabrik::drift::gpu-missing", "fabrik::drift::gpu-model", "fabrik::drift::gpu-numa"]);
    let missing =
        gpu01["drift"].as_array().unwrap().iter().find(|d| d["code"] == "fabrik::drift::gpu-missing").unwrap();
    assert_eq!(missing["file"], "examples/ai-factory/hosts/gpu01.yaml");
    assert!(missing["message"].as_str().unwrap().contains("0000:df:00.0"));

    let o = fabrik(&["inventory", "--sim", "--state-dir", dir, "examples/ai-factory"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("fabrik::drift::gpu-model") && err.contains("gpu01.yaml"), "{err}");
}

#[test]
fn an_unreachable_host_does_not_stop_the_others() {
    // A real (not simulated) inventory of a factory whose host has an agent command that
    // fails at once: the error is reported for that host, with the reason.
    let dir = tempfile::tempdir().unwrap();
    let factory = dir.path().join("f.yaml");
    std::fs::write(
        &factory,
        "version: 1\nhosts:\n  - name: a\n    uri: qemu+ssh://root@nowhere.invalid/system\n    agent: /nonexistent/fabrik agent\n    numa-nodes: [{ id: 0, cpus: 0-3, memory: 8GiB }]\n  - name: b\n    uri: qemu+ssh://root@nowhere.invalid/system\n    numa-nodes: [{ id: 0, cpus: 0-3, memory: 8GiB }]\n",
    )
    .unwrap();
    let o = fabrik(&["inventory", "--format", "json", factory.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "both hosts are reported");
    let a_errors = hosts[0]["live"]["errors"].as_array().unwrap();
    assert!(a_errors.iter().any(|e| e["concern"] == "nvml" && e["kind"] == "unreachable"), "{a_errors:?}");
    let b_errors = hosts[1]["live"]["errors"].as_array().unwrap();
    assert!(b_errors.iter().any(|e| e["message"].as_str().unwrap().contains("no `agent` command")), "{b_errors:?}");
}

#[test]
fn human_report_of_fresh_twins() {
    let state = tempfile::tempdir().unwrap();
    let o = fabrik(&["inventory", "--sim", "--state-dir", state.path().to_str().unwrap(), "examples/ai-factory"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    insta::assert_snapshot!("inventory_sim_ai_factory", String::from_utf8(o.stdout).unwrap());
}

#[test]
fn a_twin_keeps_what_was_done_to_it() {
    use fabrik::driver::Virt;
    let state = tempfile::tempdir().unwrap();
    let spec = fabrik::check::validate(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal"))).spec;
    let host = &spec.hosts[0];
    let dir = state.path().join("kvm01");
    let xml = "<domain type='test'><name>hand-made</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='i686'>hvm</type></os></domain>";
    {
        let mut v = fabrik::sim::virt::SimVirt::open(&dir, host).unwrap();
        v.define_domain(xml).unwrap();
        v.start_domain("hand-made").unwrap();
        v.detach_device(fabrik::spec::types::PciAddress::parse("0000:99:00.0").unwrap()).unwrap_err();
    }
    let mut v = fabrik::sim::virt::SimVirt::open(&dir, host).unwrap();
    let domains = v.domains().unwrap();
    assert_eq!(domains.len(), 1);
    assert_eq!(domains[0].state, fabrik::live::PowerState::Running, "power state survives a reopen");
    v.destroy_domain("hand-made").unwrap();
    drop(v);
    let mut v = fabrik::sim::virt::SimVirt::open(&dir, host).unwrap();
    assert_eq!(v.domains().unwrap()[0].state, fabrik::live::PowerState::ShutOff);
    assert_eq!(v.host_info().unwrap().numa[0].cpus.to_string(), "0-15", "the twin has the declared hardware");
}

/// The twin checks a domain against libvirt's schema itself (parsed once per process);
/// what the schema refuses, it refuses in libvirt's own words, as libvirt does with
/// `VIR_DOMAIN_DEFINE_VALIDATE`.
#[test]
fn a_twin_refuses_a_domain_outside_libvirts_schema_as_libvirt_does() {
    use fabrik::driver::Virt;
    let state = tempfile::tempdir().unwrap();
    let spec = fabrik::check::validate(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal"))).spec;
    let good = "<domain type='test'><name>checked</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='i686'>hvm</type></os></domain>";
    let bad = good.replace("<vcpu>1</vcpu>", "<vcpu>1</vcpu><vcpus-typo/>");
    let mut v = fabrik::sim::virt::SimVirt::open(&state.path().join("kvm01"), &spec.hosts[0]).unwrap();
    let twin = v.define_domain(&bad).unwrap_err();
    let mut libvirt = fabrik::driver::libvirt::LibvirtDriver::connect("test:///default").unwrap();
    let own = libvirt.define_domain(&bad).unwrap_err();
    assert_eq!(twin.message, own.message);
    assert!(twin.message.contains("schema"), "{}", twin.message);
    assert!(v.domains().unwrap().is_empty(), "nothing was defined");
    v.define_domain(good).unwrap();
    assert_eq!(v.domains().unwrap().len(), 1);
}

#[test]
fn a_twin_keeps_networks_stopped() {
    use fabrik::driver::Virt;
    let state = tempfile::tempdir().unwrap();
    let spec = fabrik::check::validate(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal"))).spec;
    let dir = state.path().join("kvm01");
    {
        let mut v = fabrik::sim::virt::SimVirt::open(&dir, &spec.hosts[0]).unwrap();
        v.define_network("<network><name>n1</name><bridge name='br-n1'/></network>").unwrap();
        v.define_network("<network><name>n2</name><bridge name='br-n2'/></network>").unwrap();
        v.start_network("n2").unwrap();
    }
    let mut v = fabrik::sim::virt::SimVirt::open(&dir, &spec.hosts[0]).unwrap();
    let nets = v.networks().unwrap();
    let active = |name: &str| nets.iter().find(|n| n.name == name).unwrap().active;
    assert!(!active("n1"), "a network that was never started stays stopped");
    assert!(active("n2"));
}

/// A command that only reads a twin gets the answers its libvirt gave when the twin was
/// last saved, without loading libvirt's test driver; they are the answers the test
/// driver gives when it is loaded from the saved state.
#[test]
fn a_twin_read_without_loading_libvirt_answers_as_libvirt_does() {
    use fabrik::driver::Virt;
    let state = tempfile::tempdir().unwrap();
    let spec = fabrik::check::validate(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal"))).spec;
    let host = &spec.hosts[0];
    let dir = state.path().join("kvm01");
    {
        let mut v = fabrik::sim::virt::SimVirt::open(&dir, host).unwrap();
        for (name, run) in [("a", true), ("b", false)] {
            let xml = format!(
                "<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='i686'>hvm</type></os></domain>"
            );
            v.define_domain(&xml).unwrap();
            if run {
                v.start_domain(name).unwrap();
            }
        }
        v.set_domain_autostart("b", true).unwrap();
        v.define_network("<network><name>n1</name><bridge name='br-n1'/></network>").unwrap();
        v.define_pool("<pool type='dir'><name>p1</name><target><path>/var/lib/p1</path></target></pool>").unwrap();
        v.start_pool("p1").unwrap();
        v.create_volume("p1", "<volume><name>v1</name><capacity unit='MiB'>8</capacity></volume>").unwrap();
    }
    let read = |v: &mut fabrik::sim::virt::SimVirt| (v.domains().unwrap(), v.networks().unwrap(), v.pools().unwrap());
    let mut v = fabrik::sim::virt::SimVirt::open(&dir, host).unwrap();
    let cached = read(&mut v);
    assert!(!v.loaded(), "reading a saved twin does not load libvirt");
    assert_eq!(cached.0.len(), 2);
    assert_eq!(cached.2[0].volumes.len(), 1);
    drop(v);
    // Without the saved answers the twin loads libvirt and asks it.
    std::fs::remove_file(dir.join("observed.json")).unwrap();
    let mut v = fabrik::sim::virt::SimVirt::open(&dir, host).unwrap();
    let loaded = read(&mut v);
    assert!(v.loaded());
    assert_eq!(cached, loaded);
}

/// One process has one libvirt per twin, as one libvirtd serves all its connections:
/// what one connection changes another sees at once, and it is saved once, when the
/// last connection closes.
#[test]
fn connections_to_one_twin_share_its_libvirt() {
    use fabrik::driver::Virt;
    let state = tempfile::tempdir().unwrap();
    let spec = fabrik::check::validate(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal"))).spec;
    let host = &spec.hosts[0];
    let dir = state.path().join("kvm01");
    let mut a = fabrik::sim::virt::SimVirt::open(&dir, host).unwrap();
    let mut b = fabrik::sim::virt::SimVirt::open(&dir, host).unwrap();
    a.define_network("<network><name>n1</name><bridge name='br-n1'/></network>").unwrap();
    assert!(b.networks().unwrap().iter().any(|n| n.name == "n1"), "the other connection sees it");
    assert!(!dir.join("libvirt.json").exists(), "not saved while connections are open");
    drop(a);
    assert!(!dir.join("libvirt.json").exists());
    drop(b);
    let text = std::fs::read_to_string(dir.join("libvirt.json")).unwrap();
    assert!(text.contains("br-n1"), "saved when the last connection closed");
}
