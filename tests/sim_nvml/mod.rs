//! The simulated libnvidia-ml (`sim-nvml/`) for integration tests: built by
//! `cargo build -p sim-nvml` (a no-op when current) and found in the target directory the
//! test runs from (`target/<profile>/libnvidia_ml_sim.so`). With `CI=true` a library that
//! cannot be built or found fails the test; elsewhere the NVML part is skipped, saying why.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const LIB_FILE: &str = "libnvidia_ml_sim.so";

fn build_and_find() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the test executable: {e}"))?;
    // target/<profile>/deps/<test>-… → target/<profile>
    let profile_dir = exe.parent().and_then(Path::parent).ok_or("the test executable is not in target/")?;
    let target_dir = profile_dir.parent().ok_or("the test executable is not in target/")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "sim-nvml"]).env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let built = build.current_dir(env!("CARGO_MANIFEST_DIR")).status();
    let lib = profile_dir.join(LIB_FILE);
    match built {
        Ok(s) if s.success() => {}
        Ok(s) if !lib.exists() => return Err(format!("`cargo build -p sim-nvml` failed ({s})")),
        Err(e) if !lib.exists() => return Err(format!("cannot run cargo to build sim-nvml: {e}")),
        _ => eprintln!("sim-nvml: could not rebuild it; using {}", lib.display()),
    }
    if lib.exists() { Ok(lib) } else { Err(format!("{} is missing after the build", lib.display())) }
}

/// The simulated library, or `None` (outside CI) with the reason printed as `what`
/// skipped.
pub fn library(what: &str) -> Option<&'static Path> {
    static LIB: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match LIB.get_or_init(build_and_find) {
        Ok(p) => Some(p),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the simulated libnvidia-ml is needed in CI: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {what}: {why}");
            None
        }
    }
}
