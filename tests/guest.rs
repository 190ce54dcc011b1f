//! The cloud-init seeds the examples make: their contents (golden), every user-data
//! against the real `cloud-init schema`, and the image as a guest's blkid sees it.

use std::path::Path;
use std::process::Command;

use fabrik::guest::{self, SeedFiles, seed};

/// Every VM of an example that gets a seed, with the seed's files, as apply writes them.
fn seeds(example: &str) -> Vec<(String, SeedFiles)> {
    let v = fabrik::check::validate(&Path::new(env!("CARGO_MANIFEST_DIR")).join(example));
    assert!(v.is_valid(), "{example} validates");
    let desired = fabrik::desired::build::build(&v.spec).expect("the example places");
    let mut out = Vec::new();
    for vm in desired.hosts.iter().flat_map(|h| h.vms.iter()) {
        let Some(seed) = &vm.seed else { continue };
        let files = guest::volume::files(vm, seed).unwrap_or_else(|e| panic!("{}: {e}", vm.name));
        out.push((vm.name.clone(), files));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A tool the test needs: in CI its absence fails the test; elsewhere it skips, saying why.
fn tool(name: &str, test: &str) -> bool {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(!in_ci(), "`{name}` is needed in CI (scripts/setup.sh installs it)");
        eprintln!("SKIPPED {test}: `{name}` is not installed (scripts/setup.sh installs it)");
    }
    found
}

#[test]
fn the_examples_make_seeds_and_their_twins_the_same() {
    let yaml = seeds("examples/ai-factory");
    assert!(yaml.len() >= 6, "the vLLM VMs of globex have seeds: {:?}", yaml.iter().map(|s| &s.0).collect::<Vec<_>>());
    assert_eq!(yaml, seeds("examples/ai-factory-kdl"));
}

#[test]
fn seed_contents_snapshot() {
    let all = seeds("examples/ai-factory");
    // One of each kind: the replicas differ only in name and MACs.
    for name in ["globex-vllm-0", "globex-vllm-small", "globex-embed"] {
        let (_, f) = all.iter().find(|(n, _)| n == name).expect("the VM has a seed");
        let text = format!(
            "--- user-data\n{}--- meta-data\n{}--- network-config\n{}",
            f.user_data, f.meta_data, f.network_config
        );
        insta::assert_snapshot!(name, text);
    }
}

#[test]
fn every_user_data_passes_cloud_init_schema() {
    if !tool("cloud-init", "every_user_data_passes_cloud_init_schema") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, files) in seeds("examples/ai-factory") {
        let path = dir.path().join(format!("{name}.user-data"));
        std::fs::write(&path, &files.user_data).unwrap();
        let o = Command::new("cloud-init").args(["schema", "--config-file"]).arg(&path).output().unwrap();
        let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{name}: cloud-init schema refuses the user-data:\n{out}\n{}", files.user_data);
    }
}

#[test]
fn the_seed_image_is_a_cidata_fat_with_the_three_files() {
    let (_, files) = seeds("examples/ai-factory").remove(0);
    let image = seed::image(&files).unwrap();
    let (label, got) = seed::read(&image).unwrap();
    assert_eq!(label.trim_end(), "CIDATA");
    let expected = [
        ("meta-data".to_string(), files.meta_data.clone()),
        ("network-config".to_string(), files.network_config.clone()),
        ("user-data".to_string(), files.user_data.clone()),
    ];
    assert_eq!(got, expected);
    if !tool("blkid", "the_seed_image_is_a_cidata_fat_with_the_three_files (blkid)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.img");
    std::fs::write(&path, &image).unwrap();
    let o = Command::new("blkid").args(["-p", "-o", "export"]).arg(&path).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().any(|l| l == "LABEL=CIDATA"), "blkid does not see the CIDATA label:\n{out}");
    assert!(out.lines().any(|l| l == "TYPE=vfat"), "blkid does not see a FAT file system:\n{out}");
}

#[test]
fn a_secret_reaches_the_guest_and_nothing_else() {
    let all = seeds("examples/ai-factory");
    let (_, f) = all.iter().find(|(n, _)| n == "globex-vllm-0").unwrap();
    assert!(f.user_data.contains("HF_TOKEN=hf_example-not-a-real-token"), "{}", f.user_data);
    assert!(!f.meta_data.contains("hf_example") && !f.network_config.contains("hf_example"));
}
