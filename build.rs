//! Build script: records the git commit the binary was built from, for `fabrik --version`.
//! Outside a git checkout (a source tarball, a vendored crate) the version says so instead
//! of failing the build.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn main() {
    // A commit moves HEAD's reflog; a branch switch rewrites HEAD. Both paths come from
    // git itself, so a worktree (whose `.git` is a file) works too.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for f in ["HEAD", "logs/HEAD"] {
            let path = std::path::Path::new(&dir).join(f);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    println!("cargo:rerun-if-env-changed=FABRIK_GIT_COMMIT");
    // Packagers building from a tarball may pass the commit in `FABRIK_GIT_COMMIT`.
    let commit = std::env::var("FABRIK_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    let version = match commit {
        Some(c) => format!("{} (commit {c})", env!("CARGO_PKG_VERSION")),
        None => format!("{} (commit unknown: built outside git)", env!("CARGO_PKG_VERSION")),
    };
    println!("cargo:rustc-env=FABRIK_VERSION={version}");
}
