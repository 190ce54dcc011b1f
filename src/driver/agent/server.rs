//! The agent's side: read requests line by line, call the local drivers, write responses.
//! It also holds the host's apply locks for the fabrik it serves, until the connection ends.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::line::{Line, REQUEST_LINE_BYTES_MAX, read_line};
use super::{Call, FENCED, Hello, LOCKED, Outcome, PROTOCOL_VERSION, Request, Response, VERSION_MISMATCH};
use crate::diag::error_chain;
use crate::driver::{DriverError, ErrorKind, Gpus, Links, Result};
use crate::lockfile::{self as lock, ApplyLock, Holder, LockError};

/// The apply locks an agent holds, in its lock folder; released when dropped, that is when
/// the agent's connection ends or the agent dies.
pub struct HostLocks {
    dir: PathBuf,
    /// Where the fencing records and lock logs are kept ([`crate::coord::fence`]).
    fence_dir: PathBuf,
    held: Vec<ApplyLock>,
}

impl HostLocks {
    /// Where a host keeps its apply locks: gone at reboot, like the processes holding them.
    pub const DIR_DEFAULT: &'static str = "/run/fabrik";

    /// Locks in `dir`, fencing records beside them.
    pub fn new(dir: PathBuf) -> HostLocks {
        HostLocks { fence_dir: dir.clone(), dir, held: Vec::new() }
    }

    /// Keeps the fencing records in `dir` (one that outlives a reboot, unlike `/run`).
    pub fn with_fence_dir(mut self, dir: PathBuf) -> HostLocks {
        self.fence_dir = dir;
        self
    }

    /// Takes the lock of `factory` on `host` for `holder`, or says who holds it. Taking
    /// one already held by this connection is a no-op.
    pub fn take(&mut self, factory: &str, host: &str, holder: &Holder) -> Result<()> {
        let name = lock::host_lock_file(factory, host);
        let path = self.dir.join(&name);
        // Issue 18 hook: a holder elected through etcd carries an epoch; a lower one than
        // the host has seen is refused (checked again under the flock, then recorded).
        let fence = crate::coord::fence::Fence::new(&self.fence_dir, &name);
        let fenced = |fence: &crate::coord::fence::Fence| match fence.check(holder) {
            crate::coord::fence::Verdict::Allowed => Ok(()),
            crate::coord::fence::Verdict::Refused { epoch, highest, by } => {
                fence.log("fenced", holder);
                Err(DriverError::new(
                    ErrorKind::Refused,
                    format!(
                        "fenced: leader epoch {epoch} is older than epoch {highest} already seen on host `{host}` \
                         ({by}); a newer leader has acted here, this one must step down"
                    ),
                )
                .with_code(FENCED))
            }
        };
        if self.held.iter().any(|l| l.path == path) {
            return fenced(&fence);
        }
        fenced(&fence)?;
        match lock::acquire_file(&path, Duration::ZERO, holder) {
            Ok(l) => {
                fenced(&fence)?;
                fence.raise(holder).map_err(|e| {
                    DriverError::new(ErrorKind::Failed, format!("cannot record the leader epoch on `{host}`: {e}"))
                })?;
                fence.log("taken", holder);
                self.held.push(l);
                Ok(())
            }
            Err(e @ LockError::Held { .. }) => {
                fence.log("busy", holder);
                Err(DriverError::new(ErrorKind::Refused, e.to_string()).with_code(LOCKED))
            }
            Err(e @ LockError::Io { .. }) => Err(DriverError::new(ErrorKind::Failed, error_chain(&e))),
        }
    }
}

/// The part of a request that is read before anything else, so that a request of another
/// version gets a version error rather than a parse error.
#[derive(Deserialize)]
struct Envelope {
    v: u32,
    id: Option<u64>,
}

/// Serves requests from `reader` until it ends, answering each on `writer`. Returns an
/// error only when reading or writing fails; every driver or request error is answered,
/// and so is a line that is too long or not UTF-8: the session goes on.
pub fn serve(
    mut reader: impl BufRead,
    mut writer: impl Write,
    mut gpus: Box<dyn Gpus>,
    mut links: Box<dyn Links>,
    mut locks: HostLocks,
) -> io::Result<()> {
    while let Some(line) = read_line(&mut reader, REQUEST_LINE_BYTES_MAX)? {
        let bad = |message: String| (None, Err(DriverError::new(ErrorKind::Failed, message)));
        let (id, outcome) = match line {
            Line::Text(line) if line.trim().is_empty() => continue,
            Line::Text(line) => match parse(&line) {
                Ok((id, call)) => (Some(id), answer(call, gpus.as_mut(), links.as_mut(), &mut locks)),
                Err((id, error)) => (id, Err(error)),
            },
            Line::TooLong => bad(format!("malformed request: a line longer than {REQUEST_LINE_BYTES_MAX} bytes")),
            Line::NotUtf8 => bad("malformed request: the line is not UTF-8".to_string()),
        };
        let outcome = match outcome {
            Ok(value) => Outcome::Ok(value),
            Err(error) => Outcome::Err(error),
        };
        let response = Response { v: PROTOCOL_VERSION, id, outcome };
        serde_json::to_writer(&mut writer, &response)?;
        writer.write_all(b"\n")?;
        writer.flush()?;
    }
    Ok(())
}

fn parse(line: &str) -> std::result::Result<(u64, Call), (Option<u64>, DriverError)> {
    let malformed = |e: serde_json::Error| DriverError::new(ErrorKind::Failed, format!("malformed request: {e}"));
    let envelope: Envelope = serde_json::from_str(line).map_err(|e| (None, malformed(e)))?;
    if envelope.v != PROTOCOL_VERSION {
        let message = format!(
            "protocol version mismatch: the agent (fabrik {}) speaks v{PROTOCOL_VERSION}, the request is v{}; \
             install the same fabrik version on both sides",
            env!("CARGO_PKG_VERSION"),
            envelope.v
        );
        return Err((envelope.id, DriverError::new(ErrorKind::Unsupported, message).with_code(VERSION_MISMATCH)));
    }
    let id = envelope.id.ok_or_else(|| (None, DriverError::new(ErrorKind::Failed, "malformed request: no `id`")))?;
    let request: Request = serde_json::from_str(line).map_err(|e| {
        let known = e.to_string().contains("unknown variant");
        let error = if known {
            DriverError::new(
                ErrorKind::Unsupported,
                format!("the agent (fabrik {}) does not know this call: {e}", env!("CARGO_PKG_VERSION")),
            )
        } else {
            malformed(e)
        };
        (Some(id), error)
    })?;
    Ok((id, request.call))
}

fn to_value(result: Result<impl Serialize>) -> Result<serde_json::Value> {
    result.and_then(|value| {
        serde_json::to_value(value)
            .map_err(|e| DriverError::new(ErrorKind::Failed, format!("the agent cannot encode its answer: {e}")))
    })
}

/// Runs one call on the local drivers.
fn answer(call: Call, gpus: &mut dyn Gpus, links: &mut dyn Links, locks: &mut HostLocks) -> Result<serde_json::Value> {
    match call {
        Call::Hello => to_value(Ok(Hello::here())),
        Call::Gpus => to_value(gpus.gpus()),
        Call::SetMigMode { gpu, enabled } => to_value(gpus.set_mig_mode(gpu, enabled)),
        Call::CreateInstance { gpu, profile_id, start } => to_value(gpus.create_instance(gpu, profile_id, start)),
        Call::DestroyInstance { gpu, instance_id } => to_value(gpus.destroy_instance(gpu, instance_id)),
        Call::CreateVgpu { gpu, profile, start, uuid, vf } => {
            to_value(gpus.create_vgpu(gpu, &profile, start, &uuid, vf))
        }
        Call::RemoveVgpu { gpu, uuid, vf } => to_value(gpus.remove_vgpu(gpu, &uuid, vf)),
        Call::Links => to_value(links.links()),
        Call::Hugepages => to_value(links.hugepages()),
        Call::BootId => to_value(links.boot_id()),
        Call::CreateLink { spec } => to_value(links.create_link(&spec)),
        Call::DeleteLink { name } => to_value(links.delete_link(&name)),
        Call::SetLink { name, mtu, up, master } => to_value(links.set_link(&name, mtu, up, master)),
        Call::AddFdb { vxlan, remote } => to_value(links.add_fdb(&vxlan, remote)),
        Call::DelFdb { vxlan, remote } => to_value(links.del_fdb(&vxlan, remote)),
        Call::SetSriovVfs { nic, count } => to_value(links.set_sriov_vfs(&nic, count)),
        Call::SetVfGuids { pf, vf, node, port } => to_value(links.set_vf_guids(&pf, vf, node, port)),
        Call::ReadPartitions { path } => to_value(links.read_partitions(&path)),
        Call::WritePartitions { path, factory, block } => to_value(links.write_partitions(&path, &factory, &block)),
        Call::ReloadSubnetManager => to_value(links.reload_subnet_manager()),
        Call::SetHugepages { numa_node, size, count } => to_value(links.set_hugepages(numa_node, size, count)),
        Call::Lock { factory, host, holder } => to_value(locks.take(&factory, &host, &holder)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::agent::Unavailable;
    use crate::driver::sim_links::SimLinks;

    fn exchange(input: &str) -> Vec<Response> {
        exchange_bytes(input.as_bytes())
    }

    fn exchange_bytes(input: &[u8]) -> Vec<Response> {
        let mut out = Vec::new();
        let gpus = Box::new(Unavailable::no_nvml("no library"));
        let locks = HostLocks::new(std::env::temp_dir().join("fabrik-agent-test-locks"));
        serve(input, &mut out, gpus, Box::new(SimLinks::new()), locks).unwrap();
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn error(response: &Response) -> &DriverError {
        match &response.outcome {
            Outcome::Err(e) => e,
            Outcome::Ok(v) => panic!("expected an error, got {v}"),
        }
    }

    #[test]
    fn bad_lines_are_answered_and_the_session_goes_on() {
        // A request padded with spaces to exactly the cap is read; one byte more is not.
        let request = "{\"v\":1,\"id\":1,\"call\":\"links\"}";
        let at_cap = format!("{request}{}", " ".repeat(REQUEST_LINE_BYTES_MAX - request.len()));
        let mut input = format!("{at_cap}\n{at_cap} \n").into_bytes();
        input.extend_from_slice(b"{\"v\":1,\xff}\n{\"v\":1,\"id\":2,\"call\":\"links\"}\n");
        let replies = exchange_bytes(&input);
        assert_eq!(replies.len(), 4);
        assert!(matches!(replies[0].outcome, Outcome::Ok(_)), "{:?}", replies[0]);
        assert!(error(&replies[1]).message.contains("longer than 65536 bytes"), "{:?}", replies[1]);
        assert!(error(&replies[2]).message.contains("not UTF-8"), "{:?}", replies[2]);
        assert_eq!(replies[3].id, Some(2));
        assert!(matches!(replies[3].outcome, Outcome::Ok(_)));
    }

    #[test]
    fn broken_requests_are_answered_not_fatal() {
        let replies = exchange(
            "not json\n\
             {\"v\":2,\"id\":1,\"call\":\"links\"}\n\
             {\"v\":1,\"id\":2,\"call\":\"reboot\"}\n\
             {\"v\":1,\"id\":3,\"call\":\"delete_link\",\"args\":{}}\n\
             \n\
             {\"v\":1,\"id\":4,\"call\":\"gpus\"}\n\
             {\"v\":1,\"id\":5,\"call\":\"links\"}\n\
             {\"v\":1,\"id\":6,\"call\":\"delete_link\",\"args\":{\"name\":\"x\",\"force\":true}}\n",
        );
        assert_eq!(replies.len(), 7);
        assert_eq!((replies[0].id, error(&replies[0]).kind), (None, ErrorKind::Failed));
        assert_eq!(error(&replies[1]).code.as_deref(), Some(VERSION_MISMATCH));
        assert!(error(&replies[1]).message.contains("speaks v1, the request is v2"), "{:?}", replies[1]);
        assert_eq!((replies[2].id, error(&replies[2]).kind), (Some(2), ErrorKind::Unsupported));
        assert_eq!((replies[3].id, error(&replies[3]).kind), (Some(3), ErrorKind::Failed));
        assert_eq!(error(&replies[4]).kind, ErrorKind::Unreachable);
        assert_eq!(replies[5].outcome, Outcome::Ok(serde_json::json!([])));
        // An argument the agent does not know is refused, never ignored.
        assert!(error(&replies[6]).message.contains("unknown field `force`"), "{:?}", replies[6]);
    }

    fn holder(pid: u32) -> Holder {
        Holder { pid, user: "ops".into(), host: "laptop".into(), since: 0, epoch: None }
    }

    #[test]
    fn a_host_lock_is_refused_to_a_second_connection_naming_the_holder_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = HostLocks::new(dir.path().to_path_buf());
        let mut second = HostLocks::new(dir.path().to_path_buf());
        first.take("ai", "h1", &holder(4242)).unwrap();
        first.take("ai", "h1", &holder(4242)).expect("taking it again on the same connection is a no-op");
        let refused = second.take("ai", "h1", &holder(7)).unwrap_err();
        assert_eq!((refused.kind, refused.code.as_deref()), (ErrorKind::Refused, Some(LOCKED)));
        assert!(refused.message.contains("pid 4242 of ops on laptop"), "{}", refused.message);
        // Another factory, or another host of the same machine, is another lock.
        second.take("other", "h1", &holder(7)).unwrap();
        second.take("ai", "h2", &holder(7)).unwrap();
        drop(first);
        second.take("ai", "h1", &holder(7)).expect("free once the first connection ends");
    }

    #[test]
    fn a_lock_folder_that_cannot_be_made_is_a_failure_not_a_refusal() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut locks = HostLocks::new(file.path().join("sub"));
        let e = locks.take("ai", "h1", &holder(1)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Failed, "{e:?}");
    }
}
