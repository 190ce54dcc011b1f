//! What fabrik may touch.
//!
//! * Domains and networks carry fabrik's `<metadata>` mark
//!   ([`crate::driver::libvirt::owner`]). Only those marked for this factory are updated
//!   or deleted. An unmarked one whose name fabrik wants is a plan error
//!   (`fabrik::plan::name-clash`), never an overwrite; one marked by another factory is
//!   never touched either (`fabrik::plan::other-factory`).
//! * Links carry the mark in their interface alias: `fabrik:<factory>:<resource id>`.
//! * GPUs and hugepage pools are owned when the config declares them.
//! * Pools and volumes cannot carry a mark (libvirt drops storage metadata), so the rule
//!   is conservative: fabrik creates a pool or volume only when it is absent, and uses
//!   an existing one of the desired name as it is (a pool whose type or path differ is
//!   a name clash). It never deletes a pool. It deletes a volume only when the volume is
//!   no longer desired, **and** the [`Created`] record written when fabrik made it says
//!   fabrik made it and the disk said `delete-with-vm`. Any other volume no longer
//!   desired is kept and listed as kept.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::desired::ResourceId;
use crate::live::Ownership;

/// Who owns a live object, as far as this factory is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Marked by this factory.
    Ours,
    /// No fabrik mark.
    Unmarked,
    /// Marked by another factory (its name).
    Other(String),
}

impl Owner {
    /// An empty factory name in a mark is never ours: an older fabrik recorded unnamed
    /// factories that way, and every one of them would claim the others' objects.
    pub fn of(mark: Option<&Ownership>, factory: &str) -> Owner {
        match mark {
            Some(m) if !m.factory.is_empty() && m.factory == factory => Owner::Ours,
            Some(m) => Owner::Other(m.factory.clone()),
            None => Owner::Unmarked,
        }
    }

    /// A link's owner, from its alias.
    pub fn of_link(alias: Option<&str>, factory: &str) -> Owner {
        match alias.and_then(|a| a.strip_prefix("fabrik:")).and_then(|rest| rest.split_once(':')) {
            Some((f, _)) if !f.is_empty() && f == factory => Owner::Ours,
            Some((f, _)) => Owner::Other(f.to_string()),
            None => Owner::Unmarked,
        }
    }
}

/// How a plan names the factory of a mark: `factory `ai``, or what an empty name means.
pub fn describe_factory(factory: &str) -> String {
    if factory.is_empty() {
        "an unnamed factory (applied by an older fabrik, before `factory` was required)".to_string()
    } else {
        format!("factory `{factory}`")
    }
}

/// The alias fabrik gives a link it creates.
pub fn link_alias(factory: &str, id: &ResourceId) -> String {
    format!("fabrik:{factory}:{id}")
}

/// What fabrik recorded making, where libvirt keeps no mark: `created.json` in fabrik's
/// state folder, written by apply. A volume is deleted only when it is recorded here as
/// `deletable`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    #[serde(default)]
    pub volumes: Vec<CreatedVolume>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedVolume {
    pub id: ResourceId,
    /// The disk said `delete-with-vm` when fabrik created the volume.
    pub deletable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CreatedError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a record of created objects")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Created {
    /// Reads the record; a missing file is an empty record (fabrik made nothing yet).
    pub fn load(path: &Path) -> Result<Created, CreatedError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Created::default()),
            Err(source) => return Err(CreatedError::Read { path: path.display().to_string(), source }),
        };
        serde_json::from_str(&text).map_err(|source| CreatedError::Parse { path: path.display().to_string(), source })
    }

    /// Whether fabrik made this volume and may delete it.
    pub fn deletable(&self, id: &ResourceId) -> bool {
        self.volumes.iter().any(|v| &v.id == id && v.deletable)
    }

    pub fn contains(&self, id: &ResourceId) -> bool {
        self.volumes.iter().any(|v| &v.id == id)
    }

    /// Records a volume fabrik made (replacing an older record of the same id).
    pub fn record(&mut self, id: &ResourceId, deletable: bool) {
        self.forget(id);
        self.volumes.push(CreatedVolume { id: id.clone(), deletable });
        self.volumes.sort_by(|a, b| a.id.cmp(&b.id));
    }

    pub fn forget(&mut self, id: &ResourceId) {
        self.volumes.retain(|v| &v.id != id);
    }

    /// Writes the record whole or not at all: to a temporary file, then renamed over
    /// the old one, so a crash never leaves half a record.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        crate::files::replace(path, (text + "\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_alias_round_trips() {
        let id = ResourceId::parse("link:gpu01/br-acme").unwrap();
        let alias = link_alias("ai", &id);
        assert_eq!(Owner::of_link(Some(&alias), "ai"), Owner::Ours);
        assert_eq!(Owner::of_link(Some(&alias), "other"), Owner::Other("ai".into()));
        assert_eq!(Owner::of_link(Some("uplink to rack 3"), "ai"), Owner::Unmarked);
        assert_eq!(Owner::of_link(None, "ai"), Owner::Unmarked);
    }

    #[test]
    fn an_unnamed_mark_is_never_ours() {
        let id = ResourceId::parse("link:gpu01/br-acme").unwrap();
        assert_eq!(Owner::of_link(Some(&link_alias("", &id)), ""), Owner::Other(String::new()));
        let mark = Ownership { factory: String::new(), resource: id.to_string(), spec_hash: "h".into() };
        assert_eq!(Owner::of(Some(&mark), ""), Owner::Other(String::new()));
        assert_eq!(Owner::of(Some(&mark), "ai"), Owner::Other(String::new()));
        assert!(describe_factory("").contains("unnamed"));
    }
}
