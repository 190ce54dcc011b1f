//! The subnet manager's partition file on this host, and OpenSM's re-read of it: what
//! the agent does on a host that declares `subnet-manager: opensm`.
//!
//! The file is read whole; a write reads it again, sets fabrik's block in it
//! ([`crate::render::opensm::with_block`]: the operator's lines are kept byte for byte)
//! and replaces it atomically, so OpenSM never reads half a file. OpenSM re-reads its
//! partition file on `SIGHUP` (opensm(8)), which is sent to every process named
//! `opensm` on the host.

use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::driver::{DriverError, ErrorKind, Result};

/// The process name OpenSM runs under (`/proc/<pid>/comm`).
const OPENSM_COMM: &str = "opensm";

pub fn read(path: &str) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DriverError::new(ErrorKind::Failed, format!("reading the partition file {path}: {e}"))),
    }
}

pub fn write(path: &str, factory: &str, block: &str) -> Result<()> {
    let now = read(path)?;
    let text = crate::render::opensm::with_block(now.as_deref(), factory, block).map_err(|e| {
        DriverError::new(
            ErrorKind::Refused,
            format!("{path}: {e}; fix the marker lines by hand (or remove the block), then apply again"),
        )
    })?;
    crate::files::replace(Path::new(path), text.as_bytes())
        .map_err(|e| DriverError::new(ErrorKind::Failed, format!("writing the partition file {path}: {e}")))
}

/// Sends `SIGHUP` to every OpenSM process of the host (under `proc`, `/proc` but for
/// tests); none running is an error: the partitions would not be enforced.
pub fn reload(proc: &Path) -> Result<()> {
    let entries = std::fs::read_dir(proc)
        .map_err(|e| DriverError::new(ErrorKind::Failed, format!("listing processes in {}: {e}", proc.display())))?;
    let mut signalled = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != OPENSM_COMM {
            continue;
        }
        kill(Pid::from_raw(pid), Signal::SIGHUP).map_err(|e| {
            DriverError::new(ErrorKind::Failed, format!("signalling opensm (pid {pid}) to re-read its partitions: {e}"))
        })?;
        signalled += 1;
    }
    if signalled == 0 {
        return Err(DriverError::new(
            ErrorKind::NotFound,
            "no opensm process runs on this host: the partition file is written but not enforced; start OpenSM (`systemctl start opensm`)",
        )
        .with_code("ESRCH"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn the_file_is_written_around_the_operators_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partitions.conf");
        let path = path.to_str().unwrap();
        assert_eq!(read(path).unwrap(), None);
        std::fs::write(path, "storage=0x0100, ipoib : ALL=full ;\n").unwrap();
        write(path, "ai", "Default=0x7fff, ipoib : ALL=limited, SELF=full ;\n").unwrap();
        let text = read(path).unwrap().unwrap();
        assert!(text.starts_with("storage=0x0100, ipoib : ALL=full ;\n# BEGIN fabrik `ai`"), "{text}");
        std::fs::write(path, text.replace("# END fabrik `ai`\n", "")).unwrap();
        assert_eq!(write(path, "ai", "x\n").unwrap_err().kind, ErrorKind::Refused, "an unclosed block is left alone");
    }

    /// `SIGHUP` reaches the process named `opensm` (a `sleep` standing in, under a made-up
    /// `/proc` that names it so: it dies of the signal), and none running is an error.
    #[test]
    fn a_reload_signals_opensm() {
        let proc = tempfile::tempdir().unwrap();
        assert_eq!(reload(proc.path()).unwrap_err().kind, ErrorKind::NotFound);
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let entry = proc.path().join(child.id().to_string());
        std::fs::create_dir(&entry).unwrap();
        std::fs::write(entry.join("comm"), "opensm\n").unwrap();
        reload(proc.path()).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGHUP as i32), "{status:?}");
    }
}
