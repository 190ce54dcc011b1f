//! The reconcile core on twins (examples/ai-factory): `--replace` is verified, what apply
//! cannot do is a plan error, reconcile is a library call that runs again in the same
//! process after a cancelled one, and failures carry a typed kind in the JSON events.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

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

fn events(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event line `{l}`: {e}")))
        .collect()
}

fn plan_json(state: &Path) -> serde_json::Value {
    let o = fabrik(&["plan", "--sim", "--format", "json", example().to_str().unwrap()], state);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

fn converge(state: &Path) {
    let o = fabrik(&["apply", "--sim", "--yes", example().to_str().unwrap()], state);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn apply_replace_of_a_vm_on_twins_is_replaced_verified_and_exits_0() {
    let state = tempfile::tempdir().unwrap();
    converge(state.path());
    let vm = "vm:gpu01/acme-train";
    let o = fabrik(
        &["apply", "--sim", "--yes", "--format", "json", "--replace", vm, example().to_str().unwrap()],
        state.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let events = events(&o);
    let done: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "done").collect();
    assert_eq!(done.len(), 1, "{}", text(&o));
    assert_eq!((done[0]["id"].as_str(), done[0]["op"].as_str()), (Some(vm), Some("replace")), "{}", text(&o));
    let verify = events.iter().find(|e| e["event"] == "verify").expect("a verify event");
    assert_eq!(verify["converged"], true, "{}", text(&o));
    // Human output says Verified, not "Not converged".
    let o = fabrik(&["apply", "--sim", "--yes", "--replace", vm, example().to_str().unwrap()], state.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Verified"), "{}", text(&o));
}

#[test]
fn replacing_a_pool_or_a_volume_is_a_plan_error_and_nothing_is_applied() {
    let state = tempfile::tempdir().unwrap();
    converge(state.path());
    let before = plan_json(state.path());
    for id in ["pool:gpu01/vms", "volume:gpu01/vms/acme-train-root"] {
        let o =
            fabrik(&["plan", "--sim", "--format", "json", "--replace", id, example().to_str().unwrap()], state.path());
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let errors = common::all(&plan, "errors");
        let errors = errors.as_array().unwrap();
        assert!(
            errors.iter().any(|e| e["code"] == "fabrik::plan::cannot-apply" && e["id"] == id),
            "{id}: {}",
            text(&o)
        );
        let o = fabrik(
            &["apply", "--sim", "--yes", "--format", "json", "--replace", id, example().to_str().unwrap()],
            state.path(),
        );
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let events = events(&o);
        assert!(events.iter().all(|e| e["event"] != "start"), "something ran: {}", text(&o));
        let error = events.iter().find(|e| e["event"] == "error").expect("an error event");
        assert_eq!(error["kind"], "precondition", "{}", text(&o));
    }
    let (now, was) = (common::fingerprints(&plan_json(state.path())), common::fingerprints(&before));
    assert!(!was.as_object().unwrap().is_empty());
    assert_eq!(now, was, "the twins changed");
}

#[test]
fn json_events_tell_a_refused_action_from_an_unreachable_host() {
    use fabrik::driver::{LinkSpec, Links};
    // Refused: a link squats the VNI the factory's VXLAN needs.
    let state = tempfile::tempdir().unwrap();
    plan_json(state.path());
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
    let refused = events(&o);
    let failed = refused.iter().find(|e| e["event"] == "failed").expect("a failed event");
    assert_eq!(failed["id"], "link:gpu01/vx10001", "{}", text(&o));
    assert_ne!(failed["kind"], "unreachable", "{}", text(&o));
    assert!(failed["kind"] == "refused", "{}", text(&o));

    // Unreachable: a host whose libvirt does not answer.
    let dir = tempfile::tempdir().unwrap();
    let factory = dir.path().join("factory.yaml");
    std::fs::write(
        &factory,
        "version: 1\nfactory: rec-unreach\nhosts:\n  - name: h1\n    uri: qemu+ssh://fabrik@127.0.0.1:1/system\n    \
         numa-nodes: [{ id: 0, cpus: 0-7, memory: 64GiB }]\npools:\n  - name: images\n    type: dir\n    path: /var/lib/fabrik/images\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["apply", "--yes", "--format", "json", "--host-timeout", "5"])
        .arg(&factory)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let events = events(&o);
    let error = events.iter().find(|e| e["event"] == "error").expect("an error event");
    assert_eq!((error["host"].as_str(), error["kind"].as_str()), (Some("h1"), Some("unreachable")), "{}", text(&o));
    assert!(events.iter().all(|e| e["event"] != "start"), "{}", text(&o));
}

/// The factory read and built as the CLI does.
fn load() -> (Vec<fabrik::spec::model::Host>, fabrik::desired::Desired) {
    let v = fabrik::check::validate(&example());
    assert!(v.is_valid());
    let desired = fabrik::desired::build(&v.spec).unwrap();
    (v.spec.hosts.clone(), desired)
}

fn options(state: &Path) -> fabrik::reconcile::Options {
    fabrik::reconcile::Options {
        plan: fabrik::plan::Options::default(),
        verify: fabrik::reconcile::VerifyOptions { attempts: 2, interval: Duration::from_millis(10) },
        limits: fabrik::apply::Limits { parallelism: 4, per_host: 2 },
        twins: Some(state.to_path_buf()),
        lock_dir: state.to_path_buf(),
        lock_wait: Duration::ZERO,
        created_path: state.join("created.json"),
        epoch: None,
    }
}

#[test]
fn two_reconciles_in_one_process_with_a_cancelled_one_between_converge_and_leak_no_lock() {
    use fabrik::reconcile::{FailureKind, reconcile};
    let state = tempfile::tempdir().unwrap();
    let (hosts, desired) = load();
    let options = options(state.path());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let emit: fabrik::apply::Emit = Arc::new(|_| {});
    // The first: cancelled before it starts anything.
    let cancel = tokio_util::sync::CancellationToken::new();
    cancel.cancel();
    let first = runtime.block_on(reconcile(&hosts, &desired, &options, cancel, emit.clone()));
    assert!(first.iter().all(|h| h.failure.as_ref().is_some_and(|f| f.kind == FailureKind::Cancelled)), "{first:#?}");
    // The second: runs to convergence, in the same process.
    let second = runtime.block_on(reconcile(
        &hosts,
        &desired,
        &options,
        tokio_util::sync::CancellationToken::new(),
        emit.clone(),
    ));
    assert!(second.iter().all(|h| h.converged()), "{second:#?}");
    assert!(second.iter().any(|h| !h.entries.is_empty()), "the second reconcile did nothing");
    // A third, cancelled while it runs (after its first action), then a fourth converges.
    let cancel = tokio_util::sync::CancellationToken::new();
    let trip = cancel.clone();
    let on_start: fabrik::apply::Emit = Arc::new(move |e| {
        if matches!(e, fabrik::apply::Event::Start { .. }) {
            trip.cancel();
        }
    });
    let mut replace = options.clone();
    replace.plan.replace = desired.hosts.iter().flat_map(|h| h.vms.iter().map(|v| v.id.clone())).collect();
    let third = runtime.block_on(reconcile(&hosts, &desired, &replace, cancel, on_start));
    assert!(
        third.iter().any(|h| h.entries.iter().any(|e| !e.outcome.succeeded())),
        "nothing was cut short: {third:#?}"
    );
    let fourth =
        runtime.block_on(reconcile(&hosts, &desired, &options, tokio_util::sync::CancellationToken::new(), emit));
    assert!(fourth.iter().all(|h| h.converged()), "{fourth:#?}");
    // No lock left behind: another apply takes it at once.
    let lock = fabrik::apply::lock::acquire(state.path(), Duration::ZERO);
    assert!(lock.is_ok(), "{lock:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_saved_plan_applies_and_verifies_after_its_factory_was_moved_away() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("twins");
    let factory = work.path().join("factory");
    copy_dir(&example(), &factory);
    // Without the example's secret parameter: a plan keeps its factory's files with the
    // secrets masked, so one with a secret cannot be built from the copy alone (its
    // seeds need it; tests/seed_sim.rs shows that refusal).
    let globex = factory.join("tenants/globex.yaml");
    let text_of = std::fs::read_to_string(&globex).unwrap();
    let without: String = text_of.lines().filter(|l| !l.contains("hf-token:")).map(|l| format!("{l}\n")).collect();
    assert_ne!(text_of, without, "the example sets the secret");
    std::fs::write(&globex, without).unwrap();
    let plan_file = work.path().join("plan.json");
    let o = fabrik(&["plan", "--sim", "--out", plan_file.to_str().unwrap(), factory.to_str().unwrap()], &state);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&plan_file).unwrap()).unwrap();
    assert_eq!(saved["format"], "fabrik-plan/2");
    assert!(!saved["origin"]["sources"].as_array().unwrap().is_empty(), "the plan keeps the factory's files");
    // The factory goes away: only the plan (and the twins) are left.
    std::fs::rename(&factory, work.path().join("moved")).unwrap();
    assert!(!factory.exists());
    let o = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["apply", "--yes", "--format", "json"])
        .arg(&plan_file)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let events = events(&o);
    assert!(events.iter().any(|e| e["event"] == "done"), "{}", text(&o));
    let verify = events.iter().find(|e| e["event"] == "verify").expect("a verify event");
    assert_eq!(verify["converged"], true, "{}", text(&o));
    assert!(!factory.exists(), "nothing was written where the factory was");
}

#[test]
fn a_plan_splits_into_host_plans_that_carry_their_operations() {
    let (_, desired) = load();
    let live = fabrik::plan::converged(&desired);
    let mut changed = desired.clone();
    changed.hosts[0].vms[0].memory = fabrik::spec::types::ByteSize(changed.hosts[0].vms[0].memory.bytes() * 2);
    let plan = fabrik::plan::plan(&changed, &live, &fabrik::plan::Options::default());
    // Hosts with notices only are listed too; one host has the change.
    let hosts: Vec<_> = plan.host_plans().into_iter().filter(|h| !h.actions.is_empty()).collect();
    assert_eq!(hosts.len(), 1, "{hosts:#?}");
    assert_eq!(hosts[0].host, desired.hosts[0].name);
    assert!(hosts[0].actions.iter().all(|a| !a.ops.is_empty()), "{hosts:#?}");
    assert!(hosts[0].fingerprints.keys().all(|k| k.contains(&format!(":{}/", desired.hosts[0].name))));
    assert!(!hosts[0].fingerprints.is_empty());
}
