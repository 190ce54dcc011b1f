//! libFuzzer target: the agent protocol server fed one session's bytes (request lines)
//! against simulated links and no NVML. The session must end without a panic or an I/O
//! error, and every line it writes must be one JSON answer.

#![no_main]

use std::io::BufReader;
use std::sync::OnceLock;

use fabrik::driver::agent::{HostLocks, Unavailable, serve};
use fabrik::driver::sim_links::SimLinks;
use libfuzzer_sys::fuzz_target;

/// One lock directory per process, so that parallel jobs (`-jobs`) do not share one.
fn lock_dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| std::env::temp_dir().join(format!("fabrik-fuzz-locks-{}", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let gpus = Box::new(Unavailable::no_nvml("fuzz"));
    let links = Box::new(SimLinks::new());
    let locks = HostLocks::new(lock_dir().to_path_buf());
    serve(BufReader::new(data), &mut out, gpus, links, locks).expect("a session over bytes in memory never fails");
    let out = String::from_utf8(out).expect("answers are UTF-8");
    for line in out.lines() {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(line) {
            panic!("answer is not JSON ({e}): {line}");
        }
    }
});
