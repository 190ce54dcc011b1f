//! How fabrik writes its own files — locks, the journal, saved plans, the twins' state,
//! ownership records: never through a symbolic link, and whole or not at all.
//!
//! A file is replaced by writing a temporary file beside it, created new (`O_EXCL`, which
//! also refuses a link planted at its name), then renamed over the old one: a reader sees
//! the old file or the new one, never half of one, and a link planted at the final name
//! is replaced, not followed, so its target stays untouched. Files that are opened in
//! place (locks) are opened with `O_NOFOLLOW`: a link there is an error. Directories on
//! the way are trusted: they are the operator's (`.fabrik` beside the factory, `/run`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of the files fabrik creates: they may name hosts and holders, not secrets.
const FILE_MODE: u32 = 0o644;

/// Replaces the file at `path` with `bytes`, atomically, creating its directory.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let (tmp, mut file) = create_temp(dir, path)?;
    let written = file.write_all(bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Creates a new, empty file at `path`, replacing the old one atomically, and returns it
/// open for writing (the journal, which is then appended to).
pub fn replace_with_new(path: &Path) -> io::Result<File> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let (tmp, file) = create_temp(dir, path)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(file)
}

/// Opens `path` to read and write, creating it, without following a link there and
/// without truncating it (a lock file, whose lock lives on the file itself).
pub fn open_in_place(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// A new file beside `path`, named after it, the process and a counter.
fn create_temp(dir: &Path, path: &Path) -> io::Result<(PathBuf, File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp);
        match opened {
            Ok(file) => return Ok((tmp, file)),
            // Left over by a process of the same id, or planted: take the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < u64::from(u16::MAX) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_link_at_the_name_is_replaced_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "precious").unwrap();
        let path = dir.path().join("state.json");
        symlink(&target, &path).unwrap();
        replace(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());

        let journal = dir.path().join("journal");
        symlink(&target, &journal).unwrap();
        let mut f = replace_with_new(&journal).unwrap();
        f.write_all(b"line\n").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&journal).unwrap(), "line\n");
    }

    #[test]
    fn a_link_at_a_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "precious").unwrap();
        let lock = dir.path().join("apply.lock");
        symlink(&target, &lock).unwrap();
        assert!(open_in_place(&lock).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    }

    #[test]
    fn no_temporary_file_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        replace(&path, b"1").unwrap();
        replace(&path, b"2").unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }
}
