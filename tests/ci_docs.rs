//! docs/ci.md as operators copy it: its pre-commit hook refuses a commit of a broken
//! factory in a real git repository and lets a valid one through, and its GitHub Actions
//! workflow's `run:` steps succeed on a valid factory with this build of fabrik.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The fenced block that follows `<!-- ci:NAME -->` in docs/ci.md.
fn block(name: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ci.md")).unwrap();
    let marker = format!("<!-- ci:{name} -->\n");
    let after = &doc[doc.find(&marker).unwrap_or_else(|| panic!("docs/ci.md has no {marker}")) + marker.len()..];
    let body = after.split_once('\n').expect("a fence line").1;
    body[..body.find("\n```").expect("a closing fence")].to_string() + "\n"
}

/// PATH with this build's fabrik first.
fn path_with_fabrik() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_fabrik")).parent().unwrap().to_path_buf();
    let mut paths = vec![bin];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(paths).unwrap().into_string().unwrap()
}

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("PATH", path_with_fabrik())
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env_remove("FABRIK_FACTORY")
        .output()
        .expect("git runs")
}

fn minimal() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal/factory.yaml")).unwrap()
}

fn repo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    assert!(git(&root, &["init", "-q"]).status.success());
    let hook = root.join(".git/hooks/pre-commit");
    std::fs::write(&hook, block("pre-commit")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(root.join("factory")).unwrap();
    (dir, root)
}

#[test]
fn pre_commit_hook_refuses_a_broken_factory() {
    let (_dir, root) = repo();
    // `qouta` for `quota`: fabrik refuses the unknown key.
    std::fs::write(root.join("factory/factory.yaml"), minimal().replace("quota:", "qouta:")).unwrap();
    assert!(git(&root, &["add", "."]).status.success());
    let o = git(&root, &["commit", "-q", "-m", "broken"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the hook let a broken factory through:\n{err}");
    assert!(err.contains("fabrik::spec::unknown-key"), "fabrik's diagnostic is shown:\n{err}");
    assert!(err.contains("commit refused"), "{err}");
    assert!(!git(&root, &["rev-parse", "--verify", "-q", "HEAD"]).status.success(), "no commit was made");

    // Fixed in the working tree but not staged: the staged file is what is checked.
    std::fs::write(root.join("factory/factory.yaml"), minimal()).unwrap();
    assert!(!git(&root, &["commit", "-q", "-m", "still broken"]).status.success());
    assert!(git(&root, &["add", "."]).status.success());
    let o = git(&root, &["commit", "-q", "-m", "fixed"]);
    assert!(o.status.success(), "a valid factory is committed:\n{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn pre_commit_hook_ignores_commits_outside_the_factory() {
    let (_dir, root) = repo();
    std::fs::write(root.join("factory/factory.yaml"), "not: [a factory").unwrap();
    std::fs::write(root.join("README.md"), "notes\n").unwrap();
    assert!(git(&root, &["add", "README.md"]).status.success());
    let o = git(&root, &["commit", "-q", "-m", "docs"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn workflow_steps_pass_on_a_valid_factory() {
    let workflow: serde_yaml::Value = serde_yaml::from_str(&block("workflow")).expect("the workflow is YAML");
    let env = workflow["env"].as_mapping().expect("workflow env");
    let steps = workflow["jobs"]["check"]["steps"].as_sequence().expect("steps");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("factory")).unwrap();
    std::fs::write(dir.path().join("factory/factory.yaml"), minimal()).unwrap();
    let mut ran = 0;
    for step in steps {
        // Checking out and installing are the runner's business; this build stands in.
        let (Some(script), false) = (step["run"].as_str(), step["id"].as_str() == Some("install")) else {
            continue;
        };
        let mut cmd = Command::new("bash");
        cmd.args(["-e", "-c", script]).current_dir(dir.path()).env("PATH", path_with_fabrik());
        for (k, v) in env {
            cmd.env(k.as_str().unwrap(), v.as_str().unwrap());
        }
        let o = cmd.env_remove("GITHUB_STEP_SUMMARY").output().unwrap();
        assert!(
            o.status.success(),
            "step `{}` failed:\n{}",
            step["name"].as_str().unwrap_or(script),
            String::from_utf8_lossy(&o.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 3, "the workflow's checks ran ({ran} steps)");
    let plan = std::fs::read_to_string(dir.path().join("plan.md")).unwrap();
    assert!(plan.contains("demo-vm"), "the plan names the VM it would create:\n{plan}");
    // The plan runs against twins kept in a scratch folder, never beside the factory.
    assert!(!dir.path().join("factory/.fabrik").exists());
}
