//! Symbolic links planted at every path fabrik writes: the apply lock, the journal, the
//! ownership record, the twins' state and a saved plan. Their targets stay untouched —
//! the files are replaced (a temporary file renamed over the link) or, for the lock,
//! refused — on `plan --sim`, `plan --out` and `apply --sim`.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::text;

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

/// Plants a link at each of `paths`, each to its own target holding `precious N`, and
/// returns the targets with their text.
fn plant(paths: &[PathBuf], targets: &Path) -> Vec<(PathBuf, String)> {
    std::fs::create_dir_all(targets).unwrap();
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let target = targets.join(format!("target-{i}"));
            let text = format!("precious {i}\n");
            std::fs::write(&target, &text).unwrap();
            // A file a run before left there gives way to the link.
            let _ = std::fs::remove_file(p);
            symlink(&target, p).unwrap();
            (target, text)
        })
        .collect()
}

/// Links whose targets do not exist: a file read before it is written (a twin's state)
/// is then new, and writing through the link would create the target.
fn plant_dangling(paths: &[PathBuf], targets: &Path) -> Vec<PathBuf> {
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let target = targets.join(format!("dangling-{i}"));
            symlink(&target, p).unwrap();
            target
        })
        .collect()
}

fn assert_untouched(targets: &[(PathBuf, String)], dangling: &[PathBuf]) {
    for (target, text) in targets {
        assert_eq!(&std::fs::read_to_string(target).unwrap(), text, "{} was written through", target.display());
    }
    for target in dangling {
        assert!(!target.exists(), "{} was created through a dangling link", target.display());
    }
}

#[test]
fn links_at_every_path_fabrik_writes_leave_their_targets_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let factory = tmp.path().join("factory.yaml");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal/factory.yaml"), &factory).unwrap();
    let state = tmp.path().join("state");
    let host = state.join("kvm01");
    let targets_dir = tmp.path().join("targets");
    let saved_plan = tmp.path().join("plan.json");

    // Written without being read first: targets with content.
    let targets = plant(&[state.join("last-apply.jsonl"), host.join("node.xml"), saved_plan.clone()], &targets_dir);
    // Read, then written: dangling links, so that the twin starts fresh.
    let dangling = plant_dangling(
        &[host.join("libvirt.json"), host.join("gpus.json"), host.join("links.json"), state.join("created.json")],
        &targets_dir,
    );
    let factory = factory.to_str().unwrap();

    let o = fabrik(&["plan", "--sim", factory], &state);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_untouched(&targets, &dangling);

    let o = fabrik(&["plan", "--sim", "--out", saved_plan.to_str().unwrap(), factory], &state);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_untouched(&targets, &dangling);
    assert!(std::fs::read_to_string(&saved_plan).unwrap().contains("\"actions\""), "the plan was saved");

    let o = fabrik(&["apply", "--sim", "--yes", factory], &state);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_untouched(&targets, &dangling);
    // The files are there, as files of their own.
    for name in ["libvirt.json", "gpus.json", "links.json", "node.xml"] {
        let meta = std::fs::symlink_metadata(host.join(name)).unwrap();
        assert!(meta.file_type().is_file(), "{name} is not a plain file");
    }
    assert!(std::fs::symlink_metadata(state.join("last-apply.jsonl")).unwrap().file_type().is_file());

    // The lock lives on the file itself, so it is opened in place: a link there is refused.
    let lock_target = plant(&[state.join("apply.lock")], &tmp.path().join("lock-target"));
    let o = fabrik(&["apply", "--sim", "--yes", factory], &state);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert_untouched(&lock_target, &[]);
    assert_untouched(&targets, &dangling);
}

#[test]
fn parallel_plans_on_one_twin_state_do_not_corrupt_it() {
    let tmp = tempfile::tempdir().unwrap();
    let factory = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal");
    let state = tmp.path().join("state");
    let runs: Vec<_> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_fabrik"))
                .args(["plan", "--sim", "--format", "json", factory, "--state-dir"])
                .arg(&state)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = runs.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for o in &outputs {
        assert_eq!(o.status.code(), Some(2), "{}", text(o));
        assert_eq!(o.stdout, outputs[0].stdout, "plans of one state differ");
    }
    // Every state file is whole JSON.
    for host in std::fs::read_dir(&state).unwrap() {
        let host = host.unwrap().path();
        if !host.is_dir() {
            continue;
        }
        for name in ["libvirt.json", "gpus.json", "links.json"] {
            let path = host.join(name);
            if let Ok(text) = std::fs::read_to_string(&path) {
                serde_json::from_str::<serde_json::Value>(&text)
                    .unwrap_or_else(|e| panic!("{} is not whole: {e}", path.display()));
            }
        }
    }
}
