//! The agent's side: read requests line by line, call the local drivers, write responses.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use super::{Call, Hello, Outcome, PROTOCOL_VERSION, Request, Response, VERSION_MISMATCH};
use crate::driver::{DriverError, ErrorKind, Gpus, Links, Result};

/// The part of a request that is read before anything else, so that a request of another
/// version gets a version error rather than a parse error.
#[derive(Deserialize)]
struct Envelope {
    v: u32,
    id: Option<u64>,
}

/// Serves requests from `reader` until it ends, answering each on `writer`. Returns an
/// error only when reading or writing fails; every driver or request error is answered.
pub fn serve(
    reader: impl BufRead,
    mut writer: impl Write,
    mut gpus: Box<dyn Gpus>,
    mut links: Box<dyn Links>,
) -> io::Result<()> {
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let (id, outcome) = match parse(&line) {
            Ok((id, call)) => (Some(id), answer(call, gpus.as_mut(), links.as_mut())),
            Err((id, error)) => (id, Err(error)),
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
fn answer(call: Call, gpus: &mut dyn Gpus, links: &mut dyn Links) -> Result<serde_json::Value> {
    match call {
        Call::Hello => to_value(Ok(Hello::here())),
        Call::Gpus => to_value(gpus.gpus()),
        Call::SetMigMode { gpu, enabled } => to_value(gpus.set_mig_mode(gpu, enabled)),
        Call::CreateInstance { gpu, profile_id, start } => to_value(gpus.create_instance(gpu, profile_id, start)),
        Call::DestroyInstance { gpu, instance_id } => to_value(gpus.destroy_instance(gpu, instance_id)),
        Call::Links => to_value(links.links()),
        Call::Hugepages => to_value(links.hugepages()),
        Call::CreateLink { spec } => to_value(links.create_link(&spec)),
        Call::DeleteLink { name } => to_value(links.delete_link(&name)),
        Call::SetLink { name, mtu, up, master } => to_value(links.set_link(&name, mtu, up, master)),
        Call::AddFdb { vxlan, remote } => to_value(links.add_fdb(&vxlan, remote)),
        Call::DelFdb { vxlan, remote } => to_value(links.del_fdb(&vxlan, remote)),
        Call::SetSriovVfs { nic, count } => to_value(links.set_sriov_vfs(&nic, count)),
        Call::SetHugepages { numa_node, size, count } => to_value(links.set_hugepages(numa_node, size, count)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::agent::Unavailable;
    use crate::driver::sim_links::SimLinks;

    fn exchange(input: &str) -> Vec<Response> {
        let mut out = Vec::new();
        let gpus = Box::new(Unavailable::no_nvml("no library"));
        serve(input.as_bytes(), &mut out, gpus, Box::new(SimLinks::new())).unwrap();
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn error(response: &Response) -> &DriverError {
        match &response.outcome {
            Outcome::Err(e) => e,
            Outcome::Ok(v) => panic!("expected an error, got {v}"),
        }
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
}
