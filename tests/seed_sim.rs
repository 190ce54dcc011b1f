//! The cloud-init seed end to end on the twins (`--sim`): apply writes each VM's seed
//! into its `<vm>+cidata` volume and attaches it read-only; a parameter change shows in
//! the plan as a `next restart` change of the VM (by hash, the secret never shown) and
//! apply rewrites the seed without restarting anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use fabrik::guest::seed;

mod common;
use common::{copy_dir, text};

const TOKEN: &str = "hf_example-not-a-real-token";

fn fabrik(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(args)
        .arg(dir.join("factory"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn example(dir: &Path) {
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ai-factory"), &dir.join("factory"));
}

fn apply(dir: &Path) -> String {
    let o = fabrik(&["apply", "--sim", "--yes"], dir);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("Verified"), "{out}");
    out
}

fn seed_volume(dir: &Path, vm: &str) -> PathBuf {
    fabrik::sim::virt::content_path(&dir.join("state/gpu02"), "vms", &format!("{vm}+cidata"))
}

/// The files a guest would find on the seed volume the twin holds.
fn seed_files(dir: &Path, vm: &str) -> Vec<(String, String)> {
    let bytes = std::fs::read(seed_volume(dir, vm)).unwrap_or_else(|e| panic!("{vm}'s seed was never written: {e}"));
    let (label, files) = seed::read(&bytes).unwrap();
    assert_eq!(label.trim_end(), "CIDATA");
    files
}

fn file<'a>(files: &'a [(String, String)], name: &str) -> &'a str {
    &files.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn apply_writes_and_attaches_the_seed_and_a_parameter_change_rewrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    example(d);
    apply(d);

    let files = seed_files(d, "globex-vllm-0");
    let user_data = file(&files, "user-data");
    assert!(user_data.starts_with("#cloud-config\n") && user_data.contains("VLLM_MAX_MODEL_LEN=65536"), "{user_data}");
    assert!(user_data.contains(TOKEN), "the guest gets its secret");
    assert!(file(&files, "meta-data").contains("local-hostname: globex-vllm-0"));

    // Attached read-only, and the mark records the seed's hash.
    let o = fabrik(&["inventory", "--sim", "--format", "json"], d);
    let inv = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(!inv.contains(TOKEN), "inventory shows the secret");
    let v: serde_json::Value = serde_json::from_str(&inv).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let gpu02 = v["hosts"].as_array().unwrap().iter().find(|h| h["name"] == "gpu02").unwrap();
    let dom = gpu02["live"]["domains"].as_array().unwrap().iter().find(|x| x["name"] == "globex-vllm-0").unwrap();
    let xml = dom["xml"].as_str().unwrap_or_default();
    assert!(xml.contains("globex-vllm-0+cidata") && xml.contains("<readonly/>"), "{xml}");
    assert!(xml.contains("<fabrik:seed sha256=\""), "{xml}");

    // A parameter change: the plan names the seed change by hash, as a next-restart change.
    let tenant = d.join("factory/tenants/globex.yaml");
    let t = std::fs::read_to_string(&tenant).unwrap();
    std::fs::write(&tenant, t.replacen("max-model-len: 65536", "max-model-len: 32768", 1)).unwrap();
    let o = fabrik(&["plan", "--sim"], d);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    let line = plan.lines().find(|l| l.contains("vm:gpu02/globex-vllm-0 ")).unwrap_or_else(|| panic!("{plan}"));
    assert!(line.contains("next restart") && line.contains("cloud-init seed changed"), "{line}");
    assert!(!plan.contains("globex-vllm-small "), "only the VMs whose seed changed: {plan}");
    let o = fabrik(&["plan", "--sim", "--format", "json"], d);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let actions = common::all(&json, "actions");
    let action = actions.as_array().unwrap().iter().find(|a| a["id"] == "vm:gpu02/globex-vllm-0").unwrap();
    let change = action["changes"].as_array().unwrap().iter().find(|c| c["field"] == "seed").unwrap();
    assert_eq!(change["class"], "next-restart", "{change}");
    assert!(change["from"].as_str().unwrap().starts_with("sha256:"), "{change}");
    assert_ne!(change["from"], change["to"]);

    let out = apply(d);
    assert!(!out.contains("restart now") && !out.contains("shut down"), "nothing restarts: {out}");
    assert!(out.contains("4 done"), "{out}");
    let files = seed_files(d, "globex-vllm-0");
    assert!(file(&files, "user-data").contains("VLLM_MAX_MODEL_LEN=32768"));
}

/// The plan document carries each seed's hash, never its bytes; a saved plan builds the
/// images again from the factory's files and uploads the same seed a direct apply does.
/// When the factory is gone and the plan's copy of it has the secret masked, the seed
/// cannot be built: the apply refuses and changes nothing.
#[test]
fn a_saved_plan_uploads_the_seed_and_never_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    example(d);
    let plan_file = d.join("plan.json");
    let o = fabrik(&["plan", "--sim", "--out", plan_file.to_str().unwrap()], d);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let doc = std::fs::read_to_string(&plan_file).unwrap();
    assert!(!doc.contains(TOKEN), "the plan document holds the secret");
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let actions = common::all(&v, "actions");
    let action = actions.as_array().unwrap().iter().find(|a| a["id"] == "vm:gpu02/globex-vllm-0").unwrap();
    let upload =
        action["ops"].as_array().unwrap().iter().find(|s| s["op"] == "upload-seed").expect("an upload-seed op");
    assert_eq!(upload["concern"], "storage");
    assert_eq!(upload["vm"], "globex-vllm-0");
    assert_eq!(upload["sha256"].as_str().unwrap().len(), 64, "{upload}");
    assert!(upload.get("image").is_none(), "the image is never in the plan: {upload}");

    // The factory moved away: its copy in the plan has the token masked, so no seed.
    let moved = d.join("moved");
    std::fs::rename(d.join("factory"), &moved).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["apply", "--yes"])
        .arg(&plan_file)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("masked"), "{}", text(&o));
    assert!(!seed_volume(d, "globex-vllm-0").exists(), "nothing was written");

    // From the factory: the seed written is the one a direct apply writes.
    std::fs::rename(&moved, d.join("factory")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["apply", "--yes"])
        .arg(&plan_file)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let files = seed_files(d, "globex-vllm-0");
    assert!(file(&files, "user-data").contains(TOKEN), "the guest gets its secret");
    let direct = tempfile::tempdir().unwrap();
    example(direct.path());
    apply(direct.path());
    assert_eq!(
        std::fs::read(seed_volume(d, "globex-vllm-0")).unwrap(),
        std::fs::read(seed_volume(direct.path(), "globex-vllm-0")).unwrap(),
        "the saved plan's seed is the direct apply's"
    );
}

/// `fabrik status --factory` without a watcher: every endpoint of the example's VMs with
/// the address its VM was given, in human and JSON form; the twins' guests serve
/// nothing, so nothing is probed and nothing needs attention (exit 0).
#[test]
fn status_lists_the_endpoints_without_a_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    example(d);
    apply(d);
    let factory = d.join("factory");
    let o = fabrik(&["status", "--sim", "--factory", factory.to_str().unwrap(), "--format", "json"], d);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["format"], "fabrik-endpoints/1");
    let eps = v["endpoints"].as_array().unwrap();
    let ep = eps.iter().find(|e| e["vm"] == "globex-vllm-0").unwrap_or_else(|| panic!("{v}"));
    let address = ep["address"].as_str().unwrap();
    assert!(address.starts_with("10.30.0."), "{ep}");
    assert_eq!(ep["url"], format!("http://{address}:8000/health"));
    assert_eq!(ep["probe"]["status"], "simulated");

    let o = fabrik(&["status", "--sim", "--factory", factory.to_str().unwrap()], d);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.starts_with("Watcher:   none"), "{out}");
    let line =
        out.lines().find(|l| l.trim_start().starts_with("globex-vllm-0/api ")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(&format!(" http://{address}:8000/health ")), "{line}");

    // Neither a watcher nor a factory: nothing to show.
    let o = Command::new(env!("CARGO_BIN_EXE_fabrik")).arg("status").arg(&factory).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no watcher status"), "{}", text(&o));
}
