//! A network the factory no longer needs on a host, on twins (examples/ai-factory with
//! `initech-hub` gone and `initech-net` off `fe01`): while a domain fabrik does not own
//! is still on it, its deletion (network, bridge, VXLAN port) is held back and named,
//! in the plan, after apply, and against a saved plan; once that domain is gone, the
//! deletion is planned and applied.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{copy_dir, text};

fn example() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory"))
}

fn fabrik(args: &[&str], state: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Rewrites one file of the factory, asserting the text to replace is there.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Runs `f` on `fe01`'s twin, as the next fabrik process opens it, then lets the twins'
/// state go for the fabrik commands this test starts.
fn on_fe01<T>(factory: &Path, state: &Path, f: impl FnOnce(&mut dyn fabrik::driver::Virt) -> T) -> T {
    let v = fabrik::check::validate(factory);
    assert!(v.is_valid());
    let host = v.spec.hosts.iter().find(|h| h.name.value == "fe01").unwrap();
    let mut twin = fabrik::sim::virt::open(&fabrik::sim::host_dir(state, host), host).unwrap();
    let out = f(twin.as_mut());
    drop(twin);
    fabrik::sim::release_state(state);
    out
}

fn has_network(factory: &Path, state: &Path) -> bool {
    on_fe01(factory, state, |v| v.networks().unwrap().iter().any(|n| n.name == "initech-net"))
}

/// A guest another tool defined on `initech-net`: no fabrik mark.
const SQUATTER: &str = "<domain type='kvm'><name>squatter</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
    <os><type arch='x86_64'>hvm</type></os><devices><interface type='network'>\
    <source network='initech-net'/><mac address='52:54:00:aa:bb:01'/></interface></devices></domain>";

const GONE: [&str; 3] = ["net:fe01/initech-net", "link:fe01/br-initech", "link:fe01/vx10003"];

fn plan_json(factory: &Path, state: &Path) -> serde_json::Value {
    let o = fabrik(&["plan", "--sim", "--format", "json", factory.to_str().unwrap()], state);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

fn deleted(plan: &serde_json::Value) -> Vec<String> {
    common::all(plan, "actions")
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["op"] == "delete")
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

fn held(plan: &serde_json::Value) -> Vec<(String, String)> {
    common::all(plan, "notices")
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "held")
        .map(|n| {
            assert_eq!(n["code"], "fabrik::plan::in-use", "{n}");
            (n["id"].as_str().unwrap().to_string(), n["reason"].as_str().unwrap().to_string())
        })
        .collect()
}

/// The example applied to twins in `dir`, then changed so that the factory stops needing
/// `initech-net` on fe01 (its last VM there goes): the factory and state folders.
fn applied_then_fe01_drops_initech(dir: &Path) -> (PathBuf, PathBuf) {
    let (factory, state) = (dir.join("factory"), dir.join("state"));
    copy_dir(&example(), &factory);
    let o = fabrik(&["apply", "--sim", "--yes", factory.to_str().unwrap()], &state);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let hub = factory.join("tenants/initech.yaml");
    let tenant = std::fs::read_to_string(&hub).unwrap();
    std::fs::write(&hub, &tenant[..tenant.find("  # JupyterHub").unwrap()]).unwrap();
    edit(
        &factory.join("networks.yaml"),
        "bridge: br-initech\n    mtu: 8950\n    hosts: [fe01, gpu02]",
        "bridge: br-initech\n    mtu: 8950\n    hosts: [gpu02]",
    );
    (factory, state)
}

#[test]
fn an_unmarked_domain_holds_back_its_networks_deletion_until_it_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (factory, state) = applied_then_fe01_drops_initech(dir.path());
    let before = plan_json(&factory, &state);
    for id in GONE {
        assert!(deleted(&before).iter().any(|d| d == id), "{id} is deleted without a squatter: {before:#}");
    }
    let saved = dir.path().join("plan.json");
    let o = fabrik(&["plan", "--sim", "--out", saved.to_str().unwrap(), factory.to_str().unwrap()], &state);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    on_fe01(&factory, &state, |v| v.define_domain(SQUATTER).unwrap());

    // The plan: the VM still goes; the network, its bridge and its VXLAN port are held,
    // each naming the domain.
    let plan = plan_json(&factory, &state);
    assert!(deleted(&plan).contains(&"vm:fe01/initech-hub".to_string()), "{plan:#}");
    for id in GONE {
        assert!(!deleted(&plan).iter().any(|d| d == id), "{id} deleted under a guest: {plan:#}");
        let reason =
            held(&plan).into_iter().find(|(h, _)| h == id).unwrap_or_else(|| panic!("{id} not held: {plan:#}")).1;
        assert!(reason.contains("domain `squatter` (not managed by this factory)"), "{reason}");
    }
    let human = fabrik(&["plan", "--sim", factory.to_str().unwrap()], &state);
    let out = String::from_utf8_lossy(&human.stdout);
    assert!(
        out.contains("held") && out.contains("bridge `br-initech` still carries domain `squatter`"),
        "{}",
        text(&human)
    );
    assert!(out.contains("3 deletions held back"), "{}", text(&human));

    // The plan saved before the squatter came is refused: it would cut it off.
    let o = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["apply", "--yes", saved.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("stale") && err.contains("is in use since the plan was made"), "{}", text(&o));
    assert!(err.contains("domain `squatter`"), "{}", text(&o));

    // Apply does the rest, says what it held back, and the network is still there.
    let o = fabrik(&["apply", "--sim", "--yes", factory.to_str().unwrap()], &state);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("3 deletions are held back") && !out.contains("the hosts match"), "{}", text(&o));
    assert!(has_network(&factory, &state), "the network went under its guest");
    let o = fabrik(&["plan", "--sim", "--format", "json", factory.to_str().unwrap()], &state);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(held(&plan).len(), 3, "{plan:#}");

    // The squatter leaves: the deletion is planned and applied.
    on_fe01(&factory, &state, |v| v.undefine_domain("squatter").unwrap());
    let plan = plan_json(&factory, &state);
    assert!(held(&plan).is_empty(), "{plan:#}");
    for id in GONE {
        assert!(deleted(&plan).iter().any(|d| d == id), "{id}: {plan:#}");
    }
    let o = fabrik(&["apply", "--sim", "--yes", factory.to_str().unwrap()], &state);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Verified: the hosts match the factory"), "{}", text(&o));
    assert!(!has_network(&factory, &state));
}

/// A port attached to the bridge between the plan and its apply, of a kind the plan
/// would not even count as a user (a VLAN device): the saved plan is current, but the
/// bridge's deletion carries the ports the plan saw, and apply refuses to delete a bridge
/// that has another.
#[test]
fn apply_refuses_to_delete_a_bridge_that_gained_a_port_after_the_plan() {
    use fabrik::driver::{LinkSpec, Links};
    let dir = tempfile::tempdir().unwrap();
    let (factory, state) = applied_then_fe01_drops_initech(dir.path());
    let saved = dir.path().join("plan.json");
    let o = fabrik(&["plan", "--sim", "--out", saved.to_str().unwrap(), factory.to_str().unwrap()], &state);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let actions = common::all(&plan, "actions");
    let bridge = actions.as_array().unwrap().iter().find(|a| a["id"] == "link:fe01/br-initech").unwrap();
    assert!(bridge["ops"][0]["ports"].as_array().is_some_and(|p| p.iter().any(|p| p == "vx10003")), "{bridge:#}");

    let links_path = state.join("fe01/links.json");
    let mut links = fabrik::driver::sim_links::SimLinks::load(&links_path).unwrap();
    let vlan = fabrik::live::LinkKind::Vlan { id: 7, parent: "fe0".into() };
    links
        .create_link(&LinkSpec {
            name: "fe0.7".into(),
            kind: vlan,
            mtu: None,
            master: Some("br-initech".into()),
            alias: None,
        })
        .unwrap();
    links.save(&links_path).unwrap();

    let o = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["apply", "--yes", "--format", "json", saved.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let failed: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "failed")
        .collect();
    assert!(
        failed.iter().any(|e| e["id"] == "link:fe01/br-initech"
            && e["error"].as_str().is_some_and(|m| m.contains("port(s) the plan did not see (fe0.7)"))),
        "{}",
        text(&o)
    );
    let links = fabrik::driver::sim_links::SimLinks::load(&links_path).unwrap();
    let mut links = links;
    assert!(links.links().unwrap().iter().any(|l| l.name == "br-initech"), "the bridge was deleted");
}
