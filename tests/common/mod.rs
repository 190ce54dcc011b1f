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
