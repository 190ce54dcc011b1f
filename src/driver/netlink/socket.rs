//! A blocking rtnetlink socket: one request at a time, either acknowledged or dumped,
//! with the kernel's extended-ack text kept for error messages.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use nix::errno::Errno;

use crate::driver::{DriverError, ErrorKind};

/// `NLM_F_CAPPED` and `NLM_F_ACK_TLVS` on an error message: the echoed request is cut to
/// its header, and extended-ack attributes follow it.
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;
const NETLINK_HEADER_BYTES: usize = 16;
/// A dump the kernel marks as interrupted (the table changed under it) is retried this
/// many times before giving up.
const DUMP_ATTEMPTS: usize = 5;

/// A failed netlink exchange.
#[derive(Debug)]
pub(super) enum NlError {
    /// The kernel answered with an error code, and maybe an extended-ack text.
    Kernel { errno: Errno, text: Option<String> },
    /// The socket itself failed.
    Io(io::Error),
    /// The kernel's answer could not be decoded.
    Decode(String),
}

impl NlError {
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NlError::Kernel { errno, .. } => Some(*errno),
            NlError::Io(e) => e.raw_os_error().map(Errno::from_raw),
            NlError::Decode(_) => None,
        }
    }

    /// The kernel's own words (its extended ack), when it gave any.
    pub fn text(&self) -> Option<&str> {
        match self {
            NlError::Kernel { text, .. } => text.as_deref(),
            NlError::Io(_) | NlError::Decode(_) => None,
        }
    }

    /// The error as a [`DriverError`], its kind from the errno, its message `what: why`.
    pub fn into_driver(self, what: &str) -> DriverError {
        match self {
            NlError::Kernel { errno, text } => {
                let why = text.unwrap_or_else(|| errno.desc().to_string());
                errno_error(errno, format!("{what}: {}", why.trim_end_matches('.')))
            }
            NlError::Io(e) => match e.raw_os_error() {
                Some(raw) => errno_error(Errno::from_raw(raw), format!("{what}: netlink socket: {e}")),
                None => DriverError::new(ErrorKind::Failed, format!("{what}: netlink socket: {e}")),
            },
            NlError::Decode(e) => {
                DriverError::new(ErrorKind::Failed, format!("{what}: cannot decode the kernel's answer: {e}"))
            }
        }
    }
}

/// Maps an errno to a [`DriverError`] kind; the errno's name becomes the error's code.
pub(super) fn errno_error(errno: Errno, message: String) -> DriverError {
    let kind = match errno {
        Errno::EEXIST => ErrorKind::Exists,
        Errno::ENODEV | Errno::ENOENT | Errno::ENXIO => ErrorKind::NotFound,
        Errno::EOPNOTSUPP | Errno::EAFNOSUPPORT | Errno::EPROTONOSUPPORT => ErrorKind::Unsupported,
        Errno::EBUSY | Errno::EINVAL | Errno::ERANGE | Errno::ELOOP | Errno::ENOSPC | Errno::EADDRINUSE => {
            ErrorKind::Refused
        }
        _ => ErrorKind::Failed,
    };
    let message = match errno {
        Errno::EPERM | Errno::EACCES => format!("{message} (changing links needs CAP_NET_ADMIN)"),
        _ => message,
    };
    DriverError::new(kind, message).with_code(format!("{errno:?}"))
}

pub(super) struct Socket {
    socket: netlink_sys::Socket,
    sequence: u32,
}

impl Socket {
    /// Opens a route socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Socket> {
        let mut socket = netlink_sys::Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        // Both are best effort: without them errors carry only the errno.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Socket { socket, sequence: 0 })
    }

    fn send(&mut self, message: RouteNetlinkMessage, flags: u16) -> Result<u32, NlError> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buffer = vec![0; packet.buffer_len()];
        packet.serialize(&mut buffer);
        self.socket.send(&buffer, 0).map_err(NlError::Io)?;
        Ok(self.sequence)
    }

    /// Receives the messages answering `sequence` until `done` says the answer is
    /// complete; messages of earlier, abandoned requests are skipped.
    fn receive(
        &mut self,
        sequence: u32,
        mut on: impl FnMut(NetlinkHeader, NetlinkPayload<RouteNetlinkMessage>) -> Result<bool, NlError>,
    ) -> Result<(), NlError> {
        loop {
            let (datagram, _) = self.socket.recv_from_full().map_err(NlError::Io)?;
            let mut offset = 0;
            while offset + NETLINK_HEADER_BYTES <= datagram.len() {
                let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
                    .map_err(|e| NlError::Decode(e.to_string()))?;
                let length = message.header.length as usize;
                if length == 0 {
                    break;
                }
                offset += length.next_multiple_of(4);
                if message.header.sequence_number != sequence {
                    continue;
                }
                let (header, payload) = message.into_parts();
                if on(header, payload)? {
                    return Ok(());
                }
            }
        }
    }

    /// Sends a request that changes something and waits for the kernel's acknowledgement.
    pub fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> Result<(), NlError> {
        self.query_with(message, flags).map(drop)
    }

    /// Sends a request for one object; returns the kernel's answer.
    pub fn query(&mut self, message: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.query_with(message, 0)
    }

    fn query_with(&mut self, message: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        let sequence = self.send(message, flags | NLM_F_ACK)?;
        let mut replies = Vec::new();
        self.receive(sequence, |header, payload| match payload {
            NetlinkPayload::Error(error) => match error.code {
                None => Ok(true),
                Some(code) => Err(kernel_error(code.get(), header.flags, &error.header)),
            },
            NetlinkPayload::Done(_) => Ok(true),
            NetlinkPayload::InnerMessage(reply) => {
                replies.push(reply);
                Ok(false)
            }
            // Noop, Overrun, and whatever later versions add.
            _ => Ok(false),
        })?;
        Ok(replies)
    }

    /// Dumps a table, retrying when the kernel says the dump was interrupted.
    pub fn dump(&mut self, message: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        for _ in 1..DUMP_ATTEMPTS {
            let (messages, interrupted) = self.dump_once(message.clone())?;
            if !interrupted {
                return Ok(messages);
            }
        }
        Ok(self.dump_once(message)?.0)
    }

    fn dump_once(&mut self, message: RouteNetlinkMessage) -> Result<(Vec<RouteNetlinkMessage>, bool), NlError> {
        let sequence = self.send(message, NLM_F_DUMP)?;
        let mut messages = Vec::new();
        let mut interrupted = false;
        self.receive(sequence, |header, payload| {
            interrupted |= header.flags & NLM_F_DUMP_INTR != 0;
            match payload {
                NetlinkPayload::InnerMessage(message) => {
                    messages.push(message);
                    Ok(false)
                }
                NetlinkPayload::Done(_) => Ok(true),
                NetlinkPayload::Error(error) => match error.code {
                    None => Ok(true),
                    Some(code) => Err(kernel_error(code.get(), header.flags, &error.header)),
                },
                _ => Ok(false),
            }
        })?;
        Ok((messages, interrupted))
    }
}

fn kernel_error(code: i32, flags: u16, payload: &[u8]) -> NlError {
    NlError::Kernel { errno: Errno::from_raw(code.abs()), text: extack_text(flags, payload) }
}

/// The `NLMSGERR_ATTR_MSG` text of an error message's extended ack, if any.
fn extack_text(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < NETLINK_HEADER_BYTES {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NETLINK_HEADER_BYTES
    } else {
        u32::from_ne_bytes(payload[0..4].try_into().ok()?) as usize
    };
    let mut attributes = payload.get(echoed.next_multiple_of(4)..)?;
    while attributes.len() >= 4 {
        let length = u16::from_ne_bytes([attributes[0], attributes[1]]) as usize;
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]);
        if length < 4 || length > attributes.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &attributes[4..length];
            let text = text.split(|&b| b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned()).filter(|t| !t.is_empty());
        }
        attributes = attributes.get(length.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extack_text_is_read_after_a_capped_header() {
        let mut payload = vec![0u8; NETLINK_HEADER_BYTES];
        let text = b"Unknown device type\0";
        let length = (4 + text.len()) as u16;
        payload.extend(length.to_ne_bytes());
        payload.extend(NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend(text);
        assert_eq!(extack_text(NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload).as_deref(), Some("Unknown device type"));
        assert_eq!(extack_text(NLM_F_CAPPED, &payload), None);
    }

    #[test]
    fn errnos_map_to_kinds_with_their_name_as_code() {
        let e = errno_error(Errno::EEXIST, "creating link `br0`".into());
        assert_eq!((e.kind, e.code.as_deref()), (ErrorKind::Exists, Some("EEXIST")));
        assert_eq!(errno_error(Errno::ENODEV, String::new()).kind, ErrorKind::NotFound);
        assert_eq!(errno_error(Errno::EOPNOTSUPP, String::new()).kind, ErrorKind::Unsupported);
        assert_eq!(errno_error(Errno::EIO, String::new()).kind, ErrorKind::Failed);
    }
}
