//! The plan document (`fabrik-plan/2`, `--format json` and `--out`): the plan's header,
//! then one [`HostPlan`] per host — its connection, the fingerprints read from it, its
//! actions with their operations, its errors and notices — so a host's part can be read,
//! checked and applied on its own (docs/plan.md).
//!
//! In memory a [`Plan`] keeps one list of each (what the renderers and the executor
//! walk); the document is written from borrowed per-host views, and read back by joining
//! the hosts' lists in the document's order: each host's actions keep their order, which
//! is all a saved plan's apply needs (deletions first on each host).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Action, HostPlan, Notice, Origin, Plan, PlanError, Summary};

/// The document as written: borrowed from the plan.
#[derive(Serialize)]
struct Written<'a> {
    format: &'a str,
    factory: &'a str,
    desired_hash: &'a str,
    summary: &'a Summary,
    hosts: Vec<HostPlan<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'a Origin>,
}

/// The document as read.
#[derive(Deserialize)]
struct Read {
    format: String,
    factory: String,
    desired_hash: String,
    summary: Summary,
    hosts: Vec<ReadHost>,
    #[serde(default)]
    origin: Option<Origin>,
}

#[derive(Deserialize)]
struct ReadHost {
    host: String,
    #[serde(default)]
    connection: Option<String>,
    #[serde(default)]
    fingerprints: BTreeMap<String, super::file::Fingerprint>,
    #[serde(default)]
    actions: Vec<Action>,
    #[serde(default)]
    errors: Vec<PlanError>,
    #[serde(default)]
    notices: Vec<Notice>,
}

impl Serialize for Plan {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Written {
            format: &self.format,
            factory: &self.factory,
            desired_hash: &self.desired_hash,
            summary: &self.summary,
            hosts: self.host_plans(),
            origin: self.origin.as_ref(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Plan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Plan, D::Error> {
        let read = Read::deserialize(d)?;
        let mut plan = Plan {
            format: read.format,
            factory: read.factory,
            desired_hash: read.desired_hash,
            actions: Vec::new(),
            errors: Vec::new(),
            notices: Vec::new(),
            summary: read.summary,
            fingerprints: BTreeMap::new(),
            connections: BTreeMap::new(),
            origin: read.origin,
        };
        for h in read.hosts {
            if let Some(uri) = h.connection {
                plan.connections.insert(h.host.clone(), uri);
            }
            plan.fingerprints.extend(h.fingerprints);
            plan.actions.extend(h.actions);
            plan.errors.extend(h.errors);
            plan.notices.extend(h.notices);
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::ResourceId;
    use crate::plan::{Class, NoticeKind, Op};

    fn plan() -> Plan {
        let id = |s: &str| ResourceId::parse(s).unwrap();
        Plan {
            format: crate::plan::FORMAT.into(),
            factory: "f".into(),
            desired_hash: "h".into(),
            actions: vec![
                Action::new(id("vm:h10/b"), Op::Delete, Class::Replace, "gone"),
                Action::new(id("vm:h9/a"), Op::Create, Class::Live, "new"),
            ],
            errors: Vec::new(),
            notices: vec![Notice { id: id("link:h9/x"), kind: NoticeKind::Unmanaged, reason: "r".into(), code: None }],
            summary: Summary::default(),
            fingerprints: [("domain:h9/a", "absent"), ("domain:h11/c", "fnv1a64:0000000000000001")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
                .collect(),
            connections: [("h9", "qemu:///a"), ("h10", "qemu:///b"), ("h11", "qemu:///c")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            origin: None,
        }
    }

    #[test]
    fn the_document_holds_one_part_per_host_in_natural_order() {
        let doc = serde_json::to_value(plan()).unwrap();
        let hosts: Vec<&str> = doc["hosts"].as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap()).collect();
        // h11 has nothing to do but was read: it is there, with its fingerprint.
        assert_eq!(hosts, ["h9", "h10", "h11"]);
        assert_eq!(doc["hosts"][0]["connection"], "qemu:///a");
        assert_eq!(doc["hosts"][0]["actions"][0]["id"], "vm:h9/a");
        assert_eq!(doc["hosts"][0]["notices"][0]["id"], "link:h9/x");
        assert_eq!(doc["hosts"][2]["fingerprints"]["domain:h11/c"], "fnv1a64:0000000000000001");
        assert!(doc.get("actions").is_none(), "{doc:#}");
    }

    #[test]
    fn a_document_reads_back_as_the_plan_with_each_hosts_order() {
        let p = plan();
        let back: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        // The hosts' lists joined in host order: h9's creation, then h10's deletion.
        let mut want = p.clone();
        want.actions.reverse();
        assert_eq!(back, want);
    }
}
