//! Commits of a branch, through the git CLI: the same git, config and credentials the
//! operator uses (no second implementation of the object store, packfiles, worktrees or
//! credential helpers to trust, and nothing to link). Only committed objects are read:
//! the repository's work tree, dirty or not, is never looked at. A commit is checked out
//! into the watcher's own directory with a private index (`read-tree -u`), so the
//! repository's own index and HEAD are left alone.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git")]
    Spawn(#[source] std::io::Error),
    #[error("`git {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
}

/// A repository and the branch the watcher follows.
#[derive(Clone, Debug)]
pub struct Source {
    pub repo: PathBuf,
    pub branch: String,
    /// Fetch this remote's branch before reading it (`--remote origin`); `None` reads the
    /// local branch, which something else (a hook, a person) updates.
    pub remote: Option<String>,
    /// The factory inside the repository (`factory/`, or `.`).
    pub subdir: PathBuf,
}

fn git(repo: &Path, args: &[&str]) -> Result<String, GitError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        // Never prompt: a watcher has no terminal.
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(GitError::Spawn)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(GitError::Failed { args: args.join(" "), stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

impl Source {
    /// The ref the watcher reads.
    fn reference(&self) -> String {
        match &self.remote {
            Some(r) => format!("refs/remotes/{r}/{}", self.branch),
            None => format!("refs/heads/{}", self.branch),
        }
    }

    /// Fetches (with a remote) and returns the branch's commit.
    pub fn head(&self) -> Result<String, GitError> {
        if let Some(r) = &self.remote {
            git(&self.repo, &["fetch", "--quiet", r, &format!("+refs/heads/{0}:refs/remotes/{r}/{0}", self.branch)])?;
        }
        git(&self.repo, &["rev-parse", "--verify", "--quiet", &format!("{}^{{commit}}", self.reference())])
    }

    /// Whether `new` descends from `old` (or is it).
    pub fn descends(&self, old: &str, new: &str) -> Result<bool, GitError> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["merge-base", "--is-ancestor", old, new])
            .output()
            .map_err(GitError::Spawn)?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(GitError::Failed {
                args: format!("merge-base --is-ancestor {old} {new}"),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        }
    }

    pub fn subject(&self, commit: &str) -> String {
        git(&self.repo, &["log", "-1", "--format=%s", commit]).unwrap_or_default()
    }

    /// Writes `commit`'s files into `dir` (replacing what an earlier commit left there)
    /// and returns the factory's path inside it.
    pub fn checkout(&self, commit: &str, dir: &Path) -> Result<PathBuf, GitError> {
        std::fs::create_dir_all(dir).map_err(GitError::Spawn)?;
        let git_dir = git(&self.repo, &["rev-parse", "--absolute-git-dir"])?;
        let index = dir.with_extension("index");
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&git_dir)
            .arg("--work-tree")
            .arg(dir)
            .args(["read-tree", "--reset", "-u", commit])
            .env("GIT_INDEX_FILE", &index)
            .output()
            .map_err(GitError::Spawn)?;
        if !out.status.success() {
            return Err(GitError::Failed {
                args: format!("read-tree --reset -u {commit}"),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(dir.join(&self.subdir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(repo: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn reads_commits_not_the_work_tree_and_checks_descent() {
        if Command::new("git").arg("--version").output().is_err() {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "git is missing in CI");
            eprintln!("skipped: no git on this machine");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join("factory")).unwrap();
        run(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("factory/a.yaml"), "one\n").unwrap();
        run(&repo, &["add", "-A"]);
        run(&repo, &["commit", "-qm", "first"]);
        let src = Source { repo: repo.clone(), branch: "main".into(), remote: None, subdir: "factory".into() };
        let c1 = src.head().unwrap();
        std::fs::write(repo.join("factory/a.yaml"), "two\n").unwrap();
        std::fs::write(repo.join("factory/b.yaml"), "new\n").unwrap();
        run(&repo, &["commit", "-qam", "second"]);
        let c2 = src.head().unwrap();
        assert_ne!(c1, c2);
        assert_eq!(src.subject(&c2), "second");
        // Dirty work tree: never read.
        std::fs::write(repo.join("factory/a.yaml"), "dirty\n").unwrap();
        let out = dir.path().join("checkout");
        let f = src.checkout(&c2, &out).unwrap();
        assert_eq!(std::fs::read_to_string(f.join("a.yaml")).unwrap(), "two\n");
        assert!(!f.join("b.yaml").exists(), "b.yaml was never committed");
        let f = src.checkout(&c1, &out).unwrap();
        assert_eq!(std::fs::read_to_string(f.join("a.yaml")).unwrap(), "one\n");
        assert!(src.descends(&c1, &c2).unwrap());
        assert!(!src.descends(&c2, &c1).unwrap(), "going back is a rewind");
        assert!(src.descends(&c2, &c2).unwrap());
        assert_eq!(std::fs::read_to_string(repo.join("factory/a.yaml")).unwrap(), "dirty\n", "work tree untouched");
        let missing = Source { branch: "nope".into(), ..src };
        assert!(missing.head().is_err());
    }
}
