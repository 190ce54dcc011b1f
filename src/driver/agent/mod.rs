//! The agent: host-local drivers ([`Gpus`], [`Links`]) served over a byte stream, so that
//! fabrik on one machine drives NVML and netlink on another (`ssh root@gpu01 fabrik agent`).
//!
//! The protocol is line-delimited JSON, one request per line and one response per line:
//!
//! ```text
//! → {"v":1,"id":7,"call":"create_link","args":{"spec":{"name":"br0","kind":{"type":"bridge"},…}}}
//! ← {"v":1,"id":7,"ok":null}
//! → {"v":1,"id":8,"call":"delete_link","args":{"name":"br9"}}
//! ← {"v":1,"id":8,"err":{"kind":"not-found","message":"link `br9` does not exist","code":"ENODEV"}}
//! ```
//!
//! `v` is the protocol version ([`PROTOCOL_VERSION`]); each side refuses a message of
//! another version with a clear error. `call` names a trait method and `args` holds its
//! arguments by name (omitted for calls without any); `ok` holds the method's result and
//! `err` a [`DriverError`], which so arrives intact. The client opens with `hello`, which
//! answers the agent's protocol and fabrik versions.

mod client;
pub mod line;
mod server;
mod shared;

use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize};

pub use self::client::AgentClient;
pub use self::server::{HostLocks, serve};
pub use self::shared::Shared;
use crate::driver::{DriverError, ErrorKind, Gpus, Guid, LinkSpec, Links, Result};
use crate::live::{LiveGpu, LiveHugepages, LiveLink, MigMode};
use crate::lockfile::Holder;
use crate::spec::types::{PageSize, PciAddress};

/// The version of the protocol; bumped on any change a peer could misread.
pub const PROTOCOL_VERSION: u32 = 1;

/// The `code` of the error a peer of another protocol version gets.
pub const VERSION_MISMATCH: &str = "version-mismatch";

/// The `code` of a `lock` refused because another apply holds the lock.
pub const LOCKED: &str = "locked";
/// The `code` of a `lock` refused because the holder's leader epoch is older than one the
/// host has seen (issue 18: a newer watcher leads).
pub const FENCED: &str = "fenced";
/// The code of an error for a call the agent did not answer in time (not sent by the
/// agent: set by the client).
pub const TIMED_OUT: &str = "timed-out";

/// A call: a method of [`Gpus`] or [`Links`] with its arguments, or the handshake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", content = "args", rename_all = "snake_case", deny_unknown_fields)]
pub enum Call {
    /// Answers [`Hello`].
    Hello,
    Gpus,
    SetMigMode {
        gpu: PciAddress,
        enabled: bool,
    },
    CreateInstance {
        gpu: PciAddress,
        profile_id: u32,
        start: u8,
    },
    DestroyInstance {
        gpu: PciAddress,
        instance_id: u32,
    },
    CreateVgpu {
        gpu: PciAddress,
        profile: String,
        start: u8,
        uuid: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vf: Option<PciAddress>,
    },
    RemoveVgpu {
        gpu: PciAddress,
        uuid: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vf: Option<PciAddress>,
    },
    Links,
    Hugepages,
    /// The host's boot id (an agent of an earlier fabrik answers that it has no such
    /// call; the client then knows no boot id).
    BootId,
    CreateLink {
        spec: LinkSpec,
    },
    DeleteLink {
        name: String,
    },
    SetLink {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtu: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        up: Option<bool>,
        /// Absent: unchanged; `null`: no master; a name: that bridge.
        #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
        master: Option<Option<String>>,
    },
    AddFdb {
        vxlan: String,
        remote: IpAddr,
    },
    DelFdb {
        vxlan: String,
        remote: IpAddr,
    },
    SetSriovVfs {
        nic: String,
        count: u32,
    },
    SetVfGuids {
        pf: String,
        vf: u32,
        node: Guid,
        port: Guid,
    },
    ReadPartitions {
        path: String,
    },
    WritePartitions {
        path: String,
        factory: String,
        block: String,
    },
    ReloadSubnetManager,
    SetHugepages {
        numa_node: u32,
        size: PageSize,
        count: u64,
    },
    /// Takes the apply lock of `factory` on this host for `holder`, without waiting,
    /// and holds it until the connection ends; refused with [`LOCKED`] while another
    /// holds it.
    Lock {
        factory: String,
        host: String,
        holder: Holder,
    },
}

/// A field that is present (even as `null`) is `Some`; an absent one takes the default.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> std::result::Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl Call {
    /// The call's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Hello => "hello",
            Call::Gpus => "gpus",
            Call::SetMigMode { .. } => "set_mig_mode",
            Call::CreateInstance { .. } => "create_instance",
            Call::DestroyInstance { .. } => "destroy_instance",
            Call::CreateVgpu { .. } => "create_vgpu",
            Call::RemoveVgpu { .. } => "remove_vgpu",
            Call::Links => "links",
            Call::Hugepages => "hugepages",
            Call::CreateLink { .. } => "create_link",
            Call::DeleteLink { .. } => "delete_link",
            Call::SetLink { .. } => "set_link",
            Call::AddFdb { .. } => "add_fdb",
            Call::DelFdb { .. } => "del_fdb",
            Call::SetSriovVfs { .. } => "set_sriov_vfs",
            Call::SetVfGuids { .. } => "set_vf_guids",
            Call::ReadPartitions { .. } => "read_partitions",
            Call::WritePartitions { .. } => "write_partitions",
            Call::ReloadSubnetManager => "reload_subnet_manager",
            Call::SetHugepages { .. } => "set_hugepages",
            Call::Lock { .. } => "lock",
            Call::BootId => "boot_id",
        }
    }
}

/// One request line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    pub id: u64,
    #[serde(flatten)]
    pub call: Call,
}

/// One response line: `ok` with the result, or `err`. `id` is `null` when the request
/// was too broken to have one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub id: Option<u64>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok(serde_json::Value),
    Err(DriverError),
}

/// What `hello` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// The agent's fabrik version.
    pub fabrik: String,
}

impl Hello {
    pub fn here() -> Hello {
        Hello { protocol: PROTOCOL_VERSION, fabrik: env!("CARGO_PKG_VERSION").to_string() }
    }
}

/// Drivers that cannot work here, answering every call with the same error: what an agent
/// serves for a concern whose library or kernel interface is missing, so the far side
/// gets a clear error instead of a dead agent.
#[derive(Clone, Debug)]
pub struct Unavailable {
    error: DriverError,
}

impl Unavailable {
    pub fn new(error: DriverError) -> Unavailable {
        Unavailable { error }
    }

    /// GPUs on a host without a usable NVML.
    pub fn no_nvml(reason: &str) -> Unavailable {
        Unavailable::new(DriverError::new(ErrorKind::Unreachable, format!("NVML not available: {reason}")))
    }

    fn fail<T>(&self) -> Result<T> {
        Err(self.error.clone())
    }
}

impl Gpus for Unavailable {
    fn gpus(&mut self) -> Result<Vec<LiveGpu>> {
        self.fail()
    }
    fn set_mig_mode(&mut self, _gpu: PciAddress, _enabled: bool) -> Result<MigMode> {
        self.fail()
    }
    fn create_instance(&mut self, _gpu: PciAddress, _profile_id: u32, _start: u8) -> Result<u32> {
        self.fail()
    }
    fn destroy_instance(&mut self, _gpu: PciAddress, _instance_id: u32) -> Result<()> {
        self.fail()
    }
    fn create_vgpu(
        &mut self,
        _gpu: PciAddress,
        _profile: &str,
        _start: u8,
        _uuid: &str,
        _vf: Option<PciAddress>,
    ) -> Result<crate::driver::vgpu::VgpuDevice> {
        self.fail()
    }
    fn remove_vgpu(&mut self, _gpu: PciAddress, _uuid: &str, _vf: Option<PciAddress>) -> Result<()> {
        self.fail()
    }
}

impl Links for Unavailable {
    fn links(&mut self) -> Result<Vec<LiveLink>> {
        self.fail()
    }
    fn hugepages(&mut self) -> Result<Vec<LiveHugepages>> {
        self.fail()
    }
    fn create_link(&mut self, _spec: &LinkSpec) -> Result<()> {
        self.fail()
    }
    fn delete_link(&mut self, _name: &str) -> Result<()> {
        self.fail()
    }
    fn set_link(&mut self, _: &str, _: Option<u32>, _: Option<bool>, _: Option<Option<String>>) -> Result<()> {
        self.fail()
    }
    fn add_fdb(&mut self, _vxlan: &str, _remote: IpAddr) -> Result<()> {
        self.fail()
    }
    fn del_fdb(&mut self, _vxlan: &str, _remote: IpAddr) -> Result<()> {
        self.fail()
    }
    fn set_sriov_vfs(&mut self, _nic: &str, _count: u32) -> Result<()> {
        self.fail()
    }
    fn set_vf_guids(&mut self, _pf: &str, _vf: u32, _node: Guid, _port: Guid) -> Result<()> {
        self.fail()
    }
    fn read_partitions(&mut self, _path: &str) -> Result<Option<String>> {
        self.fail()
    }
    fn write_partitions(&mut self, _path: &str, _factory: &str, _block: &str) -> Result<()> {
        self.fail()
    }
    fn reload_subnet_manager(&mut self) -> Result<()> {
        self.fail()
    }
    fn set_hugepages(&mut self, _numa_node: u32, _size: PageSize, _count: u64) -> Result<()> {
        self.fail()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::LinkKind;

    fn line(request: &Request) -> String {
        serde_json::to_string(request).unwrap()
    }

    #[test]
    fn requests_read_as_documented() {
        assert_eq!(line(&Request { v: 1, id: 3, call: Call::Links }), r#"{"v":1,"id":3,"call":"links"}"#);
        let call = Call::DeleteLink { name: "br9".into() };
        assert_eq!(
            line(&Request { v: 1, id: 4, call }),
            r#"{"v":1,"id":4,"call":"delete_link","args":{"name":"br9"}}"#
        );
        let spec = LinkSpec { name: "br0".into(), kind: LinkKind::Bridge, mtu: None, master: None, alias: None };
        let text = line(&Request { v: 1, id: 5, call: Call::CreateLink { spec } });
        assert_eq!(
            text,
            r#"{"v":1,"id":5,"call":"create_link","args":{"spec":{"name":"br0","kind":{"type":"bridge"},"mtu":null,"master":null,"alias":null}}}"#
        );
    }

    #[test]
    fn set_link_keeps_absent_and_null_masters_apart() {
        for master in [None, Some(None), Some(Some("br0".to_string()))] {
            let request =
                Request { v: 1, id: 1, call: Call::SetLink { name: "ve0".into(), mtu: None, up: None, master } };
            let back: Request = serde_json::from_str(&line(&request)).unwrap();
            assert_eq!(back, request);
        }
        let back: Request =
            serde_json::from_str(r#"{"v":1,"id":1,"call":"set_link","args":{"name":"x","master":null}}"#).unwrap();
        assert!(matches!(back.call, Call::SetLink { master: Some(None), .. }));
    }

    #[test]
    fn responses_carry_results_and_errors() {
        let ok = Response { v: 1, id: Some(2), outcome: Outcome::Ok(serde_json::Value::Null) };
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"v":1,"id":2,"ok":null}"#);
        let err = Response {
            v: 1,
            id: Some(3),
            outcome: Outcome::Err(DriverError::new(ErrorKind::NotFound, "link `x` does not exist").with_code("ENODEV")),
        };
        let text = serde_json::to_string(&err).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"id":3,"err":{"kind":"not-found","message":"link `x` does not exist","code":"ENODEV"}}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), err);
        let back: Response = serde_json::from_str(r#"{"v":1,"id":2,"ok":null}"#).unwrap();
        assert_eq!(back, ok);
    }
}
