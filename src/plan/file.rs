//! Saved plans: the plan document written by `--out`, and the check that tells whether
//! it still describes the hosts.
//!
//! A plan records a fingerprint of every live object it read, keyed like resource ids
//! (`vm:gpu01/acme-vllm-0`, `volume:gpu01/images/ubuntu`, `device:gpu01/0000:1b:00.0`),
//! and `absent` for every desired resource the hosts did not have. [`stale`] observes
//! again and lists every key whose fingerprint changed, so apply refuses a plan made
//! against hosts that have moved on — including one where an object the plan expected
//! to be absent now exists. Objects that appear under keys the plan never read (another
//! tool's new VM) do not make it stale: the plan did not depend on them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Plan, desired_hash};
use crate::desired::build::mig_id;
use crate::desired::{Desired, GpuSetup, ResourceId, ResourceKind};
use crate::live::LiveHost;

/// The fingerprint of a desired resource the hosts do not have, as a saved plan writes it.
pub const ABSENT: &str = "absent";

/// What a plan read of one object: the hash of its observed state (written
/// `fnv1a64:<16 hex>`, as [`crate::hash::fingerprint`] writes it), or that it was absent
/// (`absent`). Held as a number: a plan of 10,000 hosts holds hundreds of thousands, and as
/// strings they took ~100 MiB of its memory (issue 14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fingerprint {
    Absent,
    Fnv1a64(u64),
}

impl Fingerprint {
    /// The fingerprint of a value as read: its JSON form, hashed.
    pub fn of(value: &impl Serialize) -> Fingerprint {
        Fingerprint::Fnv1a64(crate::hash::json(value))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fingerprint::Absent => f.write_str(ABSENT),
            Fingerprint::Fnv1a64(h) => write!(f, "fnv1a64:{h:016x}"),
        }
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;

    fn from_str(s: &str) -> Result<Fingerprint, String> {
        if s == ABSENT {
            return Ok(Fingerprint::Absent);
        }
        s.strip_prefix("fnv1a64:")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .map(Fingerprint::Fnv1a64)
            .ok_or_else(|| format!("`{s}` is not a fingerprint (`absent` or `fnv1a64:` and 16 hex digits)"))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fingerprint, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Every live object read, and `absent` for each desired resource not among them.
pub fn fingerprints(desired: &Desired, live: &[LiveHost]) -> BTreeMap<String, Fingerprint> {
    let mut out = BTreeMap::new();
    // Hosts are fingerprinted side by side, and joined in order: a later host of the
    // same name overwrites, as one loop over them would.
    for host in super::on_threads(live, live_host) {
        out.extend(host);
    }
    for h in &desired.hosts {
        let mut ids: Vec<&ResourceId> = Vec::new();
        ids.extend(h.hugepages.iter().map(|x| &x.id));
        ids.extend(h.vfs.iter().map(|x| &x.id));
        ids.extend(h.links.iter().map(|x| &x.id));
        ids.extend(h.networks.iter().map(|x| &x.id));
        ids.extend(h.pools.iter().map(|x| &x.id));
        ids.extend(h.volumes.iter().map(|x| &x.id));
        ids.extend(h.vms.iter().map(|x| &x.id));
        for g in &h.gpus {
            ids.push(&g.id);
            if let GpuSetup::Mig { instances } = &g.setup {
                ids.extend(instances.iter().map(|i| &i.id));
            }
        }
        for id in ids {
            out.entry(id.to_string()).or_insert(Fingerprint::Absent);
        }
    }
    out
}

/// The fingerprints of one host's objects, in the order they are read.
fn live_host(h: &LiveHost) -> Vec<(String, Fingerprint)> {
    let mut out = Vec::new();
    let key = |kind: ResourceKind, name: &str| ResourceId::new(kind, &h.name, name).to_string();
    // Not the boot id: what a reboot changes (instances, devices, domains) has
    // fingerprints of its own, and a plan stays comparable across twins.
    let info = h.info.as_ref().map(|i| crate::live::HostInfo { boot_id: None, ..i.clone() });
    out.push((key(ResourceKind::Host, &h.name), Fingerprint::of(&(&info, &h.errors))));
    for d in &h.domains {
        out.push((key(ResourceKind::Vm, &d.name), Fingerprint::of(d)));
    }
    for n in &h.networks {
        out.push((key(ResourceKind::Network, &n.name), Fingerprint::of(n)));
    }
    for p in &h.pools {
        // The pool's own fields; its volumes are fingerprinted each on its own. Not what
        // its filesystem holds (`capacity`, `allocation`, `available` move with every
        // file written on it), nor how much of a volume is written: a saved plan would
        // go stale whenever a guest wrote to its disk.
        let fields = (&p.name, &p.uuid, &p.kind, &p.path, p.active, p.autostart, without_usage(&p.xml));
        out.push((key(ResourceKind::Pool, &p.name), Fingerprint::of(&fields)));
        for v in &p.volumes {
            let fields = (&v.name, &v.path, v.capacity, &v.format, &v.owner);
            out.push((key(ResourceKind::Volume, &format!("{}/{}", p.name, v.name)), Fingerprint::of(&fields)));
        }
    }
    for l in &h.links {
        out.push((key(ResourceKind::Link, &l.name), Fingerprint::of(l)));
        if let Some(n) = l.sriov_vfs {
            out.push((key(ResourceKind::Vfs, &l.name), Fingerprint::of(&n)));
        }
    }
    for p in &h.hugepages {
        let id = crate::desired::build::hugepages_id(&h.name, p.numa_node, p.size);
        // Free pages move with every VM start; only the pool's size is planned from.
        out.push((id.to_string(), Fingerprint::of(&(p.numa_node, p.size, p.total))));
    }
    for g in &h.gpus {
        out.push((key(ResourceKind::Gpu, &g.address.to_string()), Fingerprint::of(g)));
        for i in &g.instances {
            out.push((mig_id(&h.name, &g.address, &i.profile, i.start).to_string(), Fingerprint::of(i)));
        }
    }
    for d in &h.devices {
        out.push((format!("device:{}/{}", h.name, d.address), Fingerprint::of(d)));
    }
    out
}

/// Why a saved plan no longer describes the hosts; empty when it still does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Staleness {
    pub reasons: Vec<String>,
}

impl Staleness {
    pub fn is_stale(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// A pool's XML without the lines that say how full it is.
fn without_usage(xml: &str) -> String {
    xml.lines()
        .filter(|l| {
            let l = l.trim_start();
            !(l.starts_with("<capacity") || l.starts_with("<allocation") || l.starts_with("<available"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Compares a saved plan with the desired state and the hosts as observed now.
pub fn stale(saved: &Plan, desired: &Desired, live: &[LiveHost]) -> Staleness {
    let mut reasons = Vec::new();
    if saved.desired_hash != desired_hash(desired) {
        reasons.push("the factory's files changed since the plan was made".to_string());
    }
    let now = fingerprints(desired, live);
    for (key, was) in &saved.fingerprints {
        let is = now.get(key).copied().unwrap_or(Fingerprint::Absent);
        if is == *was {
            continue;
        }
        reasons.push(match (was, is) {
            (Fingerprint::Absent, _) => format!("`{key}` now exists; the plan expected it absent"),
            (_, Fingerprint::Absent) => format!("`{key}` is gone since the plan was made"),
            _ => format!("`{key}` changed since the plan was made"),
        });
    }
    // A guest or port fabrik does not own may have joined a network the plan deletes:
    // no fingerprint of the plan's covers a new domain or a new port.
    for h in live {
        let deleted = |id: &ResourceId| saved.actions.iter().any(|a| a.op == super::Op::Delete && &a.id == id);
        let uplinks = desired.hosts.iter().find(|d| d.name == h.name).map(super::in_use::uplinks).unwrap_or_default();
        for a in saved.actions.iter().filter(|a| a.op == super::Op::Delete && a.id.host == h.name) {
            if let Some((why, _)) = super::in_use::blocked(&saved.factory, h, &uplinks, &a.id, &deleted) {
                reasons.push(format!("`{}` is in use since the plan was made: {why}", a.id));
            }
        }
    }
    Staleness { reasons }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot write the plan to {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the plan {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a fabrik plan")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is a plan of format `{found}`; this fabrik reads `{}`", super::FORMAT)]
    Format { path: String, found: String },
}

/// Writes the plan document (the same JSON as `--format json`).
pub fn save(plan: &Plan, path: &Path) -> Result<(), PlanFileError> {
    let text = super::output::json(plan);
    crate::files::replace(path, text.as_bytes())
        .map_err(|source| PlanFileError::Write { path: path.display().to_string(), source })
}

pub fn load(path: &Path) -> Result<Plan, PlanFileError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PlanFileError::Read { path: p.clone(), source })?;
    let plan: Plan = serde_json::from_str(&text).map_err(|source| PlanFileError::Parse { path: p.clone(), source })?;
    if plan.format != super::FORMAT {
        return Err(PlanFileError::Format { path: p, found: plan.format });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{LivePool, LiveVolume};
    use crate::spec::types::ByteSize;

    fn host(available: u64, allocation: u64, capacity: u64) -> LiveHost {
        let xml = format!(
            "<pool type='dir'>\n  <name>vms</name>\n  <capacity unit='bytes'>1000</capacity>\n  \
             <allocation unit='bytes'>{}</allocation>\n  <available unit='bytes'>{available}</available>\n  \
             <target><path>/v</path></target>\n</pool>",
            1000 - available
        );
        let volume = LiveVolume {
            name: "a-root".into(),
            path: "/v/a-root".into(),
            capacity: ByteSize(capacity),
            allocation: ByteSize(allocation),
            format: Some("qcow2".into()),
            owner: None,
        };
        let pool = LivePool {
            name: "vms".into(),
            uuid: "u".into(),
            kind: "dir".into(),
            path: Some("/v".into()),
            active: true,
            autostart: true,
            capacity: ByteSize(1000),
            available: ByteSize(available),
            volumes: vec![volume],
            owner: None,
            xml,
        };
        LiveHost { name: "h1".into(), pools: vec![pool], ..LiveHost::default() }
    }

    #[test]
    fn a_pool_filling_up_or_a_guest_writing_its_disk_leaves_the_fingerprints_alone() {
        let before = live_host(&host(600, 10, 100));
        assert_eq!(live_host(&host(300, 90, 100)), before, "usage moved the fingerprints");
        // What the plan works from (a volume's size) still counts.
        assert_ne!(live_host(&host(600, 10, 200)), before);
    }
}
