//! `fabrik apply --sim` on examples/ai-factory: the twins converge and a second plan is
//! empty; confirmation, JSON events, saved plans and their stale check, the lock, and
//! what an interrupted apply leaves for the next one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::text;

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

fn plan(state: &Path) -> Output {
    fabrik(&["plan", "--sim", example().to_str().unwrap()], state)
}

fn events(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event line `{l}`: {e}")))
        .collect()
}

#[test]
fn apply_converges_the_twins_and_a_second_plan_is_empty() {
    let state = tempfile::tempdir().unwrap();
    let o = fabrik(&["apply", "--sim", "--yes", example().to_str().unwrap()], state.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Verified: the hosts match the factory"), "{}", text(&o));
    let again = plan(state.path());
    assert_eq!(again.status.code(), Some(0), "the second plan has changes:\n{}", text(&again));
    // Applying a converged factory does nothing and says so.
    let noop = fabrik(&["apply", "--sim", "--yes", example().to_str().unwrap()], state.path());
    assert_eq!(noop.status.code(), Some(0), "{}", text(&noop));
    assert!(String::from_utf8_lossy(&noop.stdout).contains("No changes"), "{}", text(&noop));
}

#[test]
fn without_a_terminal_and_without_yes_nothing_is_applied() {
    let state = tempfile::tempdir().unwrap();
    let o = fabrik(&["apply", "--sim", example().to_str().unwrap()], state.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("pass --yes"), "{}", text(&o));
    let after = fabrik(&["plan", "--sim", "--format", "json", example().to_str().unwrap()], state.path());
    let plan: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert!(plan["summary"]["add"].as_u64().unwrap() > 100, "the twins were changed:\n{}", text(&after));
}

#[test]
fn json_events_report_every_action_once_then_verify_and_summary() {
    let state = tempfile::tempdir().unwrap();
    let o = fabrik(&["apply", "--sim", "--yes", "--format", "json", example().to_str().unwrap()], state.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let ev = events(&o);
    assert_eq!(ev[0]["event"], "plan");
    let planned: Vec<&str> = ev[0]["actions"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    let of = |kind: &str| -> Vec<&str> {
        ev.iter().filter(|e| e["event"] == kind).map(|e| e["id"].as_str().unwrap()).collect()
    };
    let (started, done) = (of("start"), of("done"));
    let mut sorted_planned = planned.clone();
    sorted_planned.sort();
    for list in [started, done] {
        let mut list = list;
        list.sort();
        assert_eq!(list, sorted_planned, "every planned action starts and finishes once");
    }
    let verify = ev.iter().find(|e| e["event"] == "verify").expect("a verify event");
    assert_eq!(verify["converged"], true);
    let summary = ev.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["done"].as_u64().unwrap() as usize, planned.len());
    assert_eq!(summary["failed"], 0);
    // A VM starts only once its network and volumes are done.
    let position = |kind: &str, id: &str| ev.iter().position(|e| e["event"] == kind && e["id"] == id).unwrap();
    let vm = "vm:gpu02/globex-embed";
    assert!(position("done", "net:gpu02/globex-net") < position("start", vm));
}

#[test]
fn a_saved_plan_applies_when_current_and_is_refused_when_stale() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("plan.json");
    let p = fabrik(&["plan", "--sim", "--out", saved.to_str().unwrap(), example().to_str().unwrap()], state.path());
    assert_eq!(p.status.code(), Some(2), "{}", text(&p));
    let stale_copy = dir.path().join("old.json");
    std::fs::copy(&saved, &stale_copy).unwrap();

    let o = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["apply", "--yes", saved.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(plan(state.path()).status.code(), Some(0));

    // The same plan again: everything it expected absent now exists.
    let o = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["apply", "--yes", stale_copy.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("stale") && err.contains("now exists; the plan expected it absent"), "{}", text(&o));
}

#[test]
fn a_second_apply_is_refused_while_one_holds_the_lock() {
    let state = tempfile::tempdir().unwrap();
    let held = fabrik::apply::lock::acquire(state.path(), std::time::Duration::ZERO).unwrap();
    let o = fabrik(&["apply", "--sim", "--yes", example().to_str().unwrap()], state.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("another apply holds") && err.contains(&format!("pid {}", std::process::id())), "{err}");
    drop(held);
    let o = fabrik(&["apply", "--sim", "--yes", example().to_str().unwrap()], state.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn an_unfinished_journal_is_reported_and_the_rerun_completes_the_work() {
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(state.path()).unwrap();
    std::fs::write(
        state.path().join("last-apply.jsonl"),
        "{\"event\":\"begin\",\"pid\":1}\n{\"event\":\"start\",\"id\":\"vm:gpu01/acme-train\",\"op\":\"create\"}\n",
    )
    .unwrap();
    let o = fabrik(&["apply", "--sim", "--yes", example().to_str().unwrap()], state.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("previous apply did not finish") && err.contains("vm:gpu01/acme-train"), "{err}");
    let journal = std::fs::read_to_string(state.path().join("last-apply.jsonl")).unwrap();
    assert!(journal.lines().last().unwrap().contains("\"summary\""), "{journal}");
}

#[test]
fn sigterm_finishes_the_running_actions_skips_the_rest_and_a_rerun_converges() {
    use std::io::BufRead;
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["apply", "--sim", "--yes", "--format", "json", "--state-dir"])
        .arg(state.path())
        .arg(example())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("\"event\":\"done\"");
        seen.push(line);
        if done {
            let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            assert!(killed.success());
            break;
        }
    }
    seen.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    let ev: Vec<serde_json::Value> = seen.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(status.code(), Some(143), "{seen:#?}");
    assert!(ev.iter().any(|e| e["event"] == "interrupted" && e["signal"] == "SIGTERM"), "{seen:#?}");
    // Every action that started also finished: none was cut short.
    for e in ev.iter().filter(|e| e["event"] == "start") {
        assert!(
            ev.iter().any(|f| (f["event"] == "done" || f["event"] == "failed") && f["id"] == e["id"]),
            "{} started and never finished",
            e["id"]
        );
    }
    let skipped = ev.iter().filter(|e| e["event"] == "skipped").count();
    assert!(skipped > 0, "nothing was left for the rerun: {seen:#?}");
    let summary = ev.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["interrupted"], true);

    let rerun = fabrik(&["apply", "--sim", "--yes", example().to_str().unwrap()], state.path());
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert_eq!(plan(state.path()).status.code(), Some(0));
}

/// A VM is never started on a network whose uplink could not be made: on gpu01's twin a
/// VXLAN device that fabrik did not make already holds VNI 10001, so `vx10001` fails
/// (EEXIST, as the kernel says); acme's network there and every VM on it are skipped,
/// and the rest of the factory is applied.
#[test]
fn a_vm_whose_network_uplink_failed_is_not_started() {
    use fabrik::driver::{LinkSpec, Links};
    let state = tempfile::tempdir().unwrap();
    plan(state.path());
    let links_path = state.path().join("gpu01/links.json");
    let mut links = fabrik::driver::sim_links::SimLinks::load(&links_path).unwrap();
    let squatter =
        fabrik::live::LinkKind::Vxlan { vni: 10001, local: None, port: 4789, parent: None, remotes: Vec::new() };
    links
        .create_link(&LinkSpec { name: "squat0".into(), kind: squatter, mtu: None, master: None, alias: None })
        .unwrap();
    links.save(&links_path).unwrap();

    let o = fabrik(&["apply", "--sim", "--yes", "--format", "json", example().to_str().unwrap()], state.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let events = events(&o);
    let of = |kind: &str| -> Vec<&serde_json::Value> { events.iter().filter(|e| e["event"] == kind).collect() };
    let failed: Vec<&str> = of("failed").iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(failed, ["link:gpu01/vx10001"], "{}", text(&o));
    let skipped: Vec<(&str, &str)> =
        of("skipped").iter().map(|e| (e["id"].as_str().unwrap(), e["reason"].as_str().unwrap())).collect();
    assert!(skipped.contains(&("net:gpu01/acme-net", "needs `link:gpu01/vx10001`, which failed")), "{skipped:#?}");
    let vms: Vec<&str> = skipped.iter().map(|(id, _)| *id).filter(|id| id.starts_with("vm:gpu01/acme-")).collect();
    assert!(!vms.is_empty(), "acme's VMs on gpu01 are skipped: {skipped:#?}");
    for e in of("start") {
        let id = e["id"].as_str().unwrap();
        assert!(!vms.contains(&id), "{id} was started:\n{}", text(&o));
    }
    // Elsewhere the factory was applied.
    assert!(of("done").iter().any(|e| e["id"].as_str().unwrap().starts_with("vm:gpu02/")), "{}", text(&o));
}

/// A volume is recorded as fabrik's before it is made: an apply killed right after the
/// record leaves a record and no volume; the next plan creates the volume, the rerun
/// converges, and the record stays (so fabrik may later delete what it made).
#[test]
fn an_apply_killed_between_a_volumes_record_and_its_creation_converges() {
    let state = tempfile::tempdir().unwrap();
    let json = |o: &Output| -> serde_json::Value { serde_json::from_slice(&o.stdout).unwrap() };
    let first = fabrik(&["plan", "--sim", "--format", "json", example().to_str().unwrap()], state.path());
    let volume = common::all(&json(&first), "actions")
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["op"] == "create" && a["id"].as_str().unwrap().starts_with("volume:"))
        .map(|a| a["id"].as_str().unwrap().to_string())
        .expect("the example creates volumes");
    let step = format!("record `{volume}` as made by fabrik");
    let killed = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["apply", "--sim", "--yes", "--format", "json", "--parallelism", "1", "--state-dir"])
        .arg(state.path())
        .arg(example())
        .env("NO_COLOR", "1")
        .env(fabrik::apply::exec::CRASH_AFTER_STEP_ENV, &step)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(killed.status.code(), None, "apply died of SIGKILL after `{step}`:\n{}", text(&killed));
    let created = std::fs::read_to_string(state.path().join("created.json")).unwrap();
    assert!(created.contains(&volume), "the record was written first:\n{created}");
    let after = fabrik(&["plan", "--sim", "--format", "json", example().to_str().unwrap()], state.path());
    let plan = json(&after);
    let actions = common::all(&plan, "actions");
    let again = actions.as_array().unwrap().iter().find(|a| a["id"] == volume.as_str());
    assert_eq!(
        again.map(|a| a["op"].clone()),
        Some("create".into()),
        "the volume is made by the rerun:\n{}",
        text(&after)
    );
    let o = fabrik(&["apply", "--sim", "--yes", example().to_str().unwrap()], state.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(plan_code(state.path()), Some(0), "converged");
    let created = std::fs::read_to_string(state.path().join("created.json")).unwrap();
    assert!(created.contains(&volume), "{created}");
}

fn plan_code(state: &Path) -> Option<i32> {
    plan(state).status.code()
}

/// A GPU that apply bound to vfio-pci for passthrough is gone from NVML on a twin as on
/// a host: the twin's GPUs no longer list it, and a MIG change to it is refused with
/// NVML's NOT_FOUND; the plan still finds it (through libvirt's PCI view) and is empty.
#[test]
fn a_gpu_bound_for_passthrough_is_invisible_to_the_twins_nvml() {
    let state = tempfile::tempdir().unwrap();
    let o = fabrik(&["apply", "--sim", "--yes", example().to_str().unwrap()], state.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = fabrik::check::validate(&example());
    let desired = fabrik::desired::build(&v.spec).unwrap();
    let (host, gpu) = desired
        .hosts
        .iter()
        .find_map(|h| {
            h.gpus
                .iter()
                .find(|g| g.setup == fabrik::desired::GpuSetup::Passthrough)
                .map(|g| (h.name.clone(), g.address))
        })
        .expect("the example passes a GPU through");
    let declared = v.spec.hosts.iter().find(|h| h.name.value == host).unwrap();
    let mut gpus = fabrik::sim::drivers(state.path(), declared).gpus.unwrap();
    assert!(!gpus.gpus().unwrap().iter().any(|g| g.address == gpu), "{gpu} is not listed by NVML");
    let e = gpus.set_mig_mode(gpu, true).unwrap_err();
    assert_eq!(
        (e.kind, e.code.as_deref()),
        (fabrik::driver::ErrorKind::NotFound, Some("NVML_ERROR_NOT_FOUND")),
        "{e:?}"
    );
    drop(gpus);
    fabrik::sim::release_state(state.path());
    assert_eq!(plan(state.path()).status.code(), Some(0), "converged");
}

/// Hosts are taken up in turn: with `--parallelism 2`, no more than two twins are under
/// way at once (from a host's first action to its last), where every host of the
/// factory used to be (an apply of 1,000 twins held all 1,000 open).
#[test]
fn hosts_are_taken_up_in_turn_within_the_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let factory = dir.path().join("factory");
    let o = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["bench", "--hosts", "6", "--write"])
        .arg(&factory)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let state = dir.path().join("state");
    let o = fabrik(
        &["apply", "--sim", "--yes", "--format", "json", "--parallelism", "2", factory.to_str().unwrap()],
        &state,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let events = events(&o);
    let mut spans: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for (i, e) in events.iter().enumerate() {
        let (Some(kind), Some(id)) = (e["event"].as_str(), e["id"].as_str()) else { continue };
        let Some(host) = id.split_once(':').and_then(|(_, rest)| rest.split_once('/')).map(|(h, _)| h) else {
            continue;
        };
        if kind == "start" || kind == "done" {
            spans.entry(host.to_string()).or_insert((i, i)).1 = i;
        }
    }
    assert_eq!(spans.len(), 6, "{}", text(&o));
    let most = (0..events.len()).map(|i| spans.values().filter(|(a, b)| *a <= i && i <= *b).count()).max();
    assert_eq!(most, Some(2), "hosts under way at once:\n{spans:?}");
}
