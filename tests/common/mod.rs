//! Helpers the CLI tests share: a command's output as one text, and a factory copied
//! into a temporary folder to change it there.

// Each test crate uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::Output;

/// A command's stdout and stderr, labelled, for assertion messages and searches.
pub fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Copies the folder `from` into `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A plan document's `key` (`actions`, `errors`, `notices`) over all its hosts, in the
/// document's order, as one JSON array.
pub fn all(plan: &serde_json::Value, key: &str) -> serde_json::Value {
    let hosts = plan["hosts"].as_array().map(Vec::as_slice).unwrap_or_default();
    serde_json::Value::Array(hosts.iter().flat_map(|h| h[key].as_array().cloned().unwrap_or_default()).collect())
}

/// A plan document's fingerprints over all its hosts, as one JSON object.
pub fn fingerprints(plan: &serde_json::Value) -> serde_json::Value {
    let hosts = plan["hosts"].as_array().map(Vec::as_slice).unwrap_or_default();
    serde_json::Value::Object(
        hosts.iter().flat_map(|h| h["fingerprints"].as_object().cloned().unwrap_or_default()).collect(),
    )
}
