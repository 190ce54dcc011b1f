//! Host links', SR-IOV VF counts' and hugepage pools' operations (netlink, through the agent).

use super::missing;
use crate::desired::{DesiredHost, ResourceId};
use crate::driver::LinkSpec;
use crate::live::{LinkKind, LiveHost};
use crate::plan::ops::{LinkOp, OpsError, Step};
use crate::plan::ownership::link_alias;
use crate::plan::{Action, Op};

pub(super) fn link(
    factory: &str,
    host: &DesiredHost,
    live: Option<&LiveHost>,
    action: &Action,
) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    let name = id.name.clone();
    if action.op == Op::Delete {
        let links = live.map(|l| l.links.as_slice()).unwrap_or_default();
        let bridge = links.iter().any(|l| l.name == name && l.kind == LinkKind::Bridge);
        let ports = bridge.then(|| {
            links.iter().filter(|l| l.master.as_deref() == Some(name.as_str())).map(|l| l.name.clone()).collect()
        });
        return Ok(vec![Step::Link(LinkOp::Delete { name, ports })]);
    }
    let link = host.links.iter().find(|l| &l.id == id).ok_or_else(|| missing(id))?;
    let spec = LinkSpec {
        name: name.clone(),
        kind: link.kind.clone(),
        mtu: link.mtu,
        master: link.master.clone(),
        alias: Some(link_alias(factory, id)),
    };
    // The kernel makes links down; fabrik's are up.
    let up = Step::Link(LinkOp::Set { name: name.clone(), mtu: None, up: Some(true), set_master: false, master: None });
    // A bridge network's parent NIC becomes the bridge's port.
    let uplink = |nic: &String| {
        Step::Link(LinkOp::Set { name: nic.clone(), mtu: None, up: None, set_master: true, master: Some(name.clone()) })
    };
    let links = live.map(|l| l.links.as_slice()).unwrap_or_default();
    match action.op {
        Op::Create => {
            Ok([Step::Link(LinkOp::Create { spec }), up].into_iter().chain(link.uplink.iter().map(uplink)).collect())
        }
        Op::Replace => Ok([
            Step::Link(LinkOp::Delete { name: name.clone(), ports: None }),
            Step::Link(LinkOp::Create { spec }),
            up,
        ]
        .into_iter()
        .chain(link.uplink.iter().map(uplink))
        .collect()),
        _ => {
            let l = links.iter().find(|l| l.name == name);
            let mut out = Vec::new();
            if let Some(nic) = &link.uplink
                && links.iter().find(|l| &l.name == nic).is_none_or(|n| n.master.as_deref() != Some(name.as_str()))
            {
                out.push(uplink(nic));
            }
            let mtu = link.mtu.filter(|m| l.is_none_or(|l| l.mtu != *m));
            let set_master = l.is_none_or(|l| l.master != link.master);
            let up = l.is_none_or(|l| !l.up).then_some(true);
            if mtu.is_some() || set_master || up.is_some() {
                let master = link.master.clone();
                out.push(Step::Link(LinkOp::Set { name: name.clone(), mtu, up, set_master, master }));
            }
            if let LinkKind::Vxlan { remotes: want, .. } = &link.kind {
                let have = match l.map(|l| &l.kind) {
                    Some(LinkKind::Vxlan { remotes, .. }) => remotes.clone(),
                    _ => Vec::new(),
                };
                for r in want.iter().filter(|r| !have.contains(r)) {
                    out.push(Step::Link(LinkOp::AddFdb { vxlan: name.clone(), remote: *r }));
                }
                for r in have.iter().filter(|r| !want.contains(r)) {
                    out.push(Step::Link(LinkOp::DelFdb { vxlan: name.clone(), remote: *r }));
                }
            }
            Ok(out)
        }
    }
}

/// A hugepage pool's size.
pub(super) fn hugepages(host: &DesiredHost, id: &ResourceId) -> Result<Vec<Step>, OpsError> {
    let h = host.hugepages.iter().find(|h| &h.id == id).ok_or_else(|| missing(id))?;
    Ok(vec![Step::Link(LinkOp::SetHugepages { numa_node: h.numa_node, size: h.size, count: h.count })])
}

/// A NIC's SR-IOV VF count.
pub(super) fn vfs(host: &DesiredHost, live: Option<&LiveHost>, id: &ResourceId) -> Result<Vec<Step>, OpsError> {
    let v = host.vfs.iter().find(|v| &v.id == id).ok_or_else(|| missing(id))?;
    let now = live.and_then(|l| l.links.iter().find(|l| l.name == v.nic)).and_then(|l| l.sriov_vfs).unwrap_or(0);
    let set = |count| Step::Link(LinkOp::SetSriovVfs { nic: v.nic.clone(), count });
    // The kernel changes a VF count only from or to 0.
    let mut out = Vec::new();
    if now != 0 && v.count != 0 {
        out.push(set(0));
    }
    out.push(set(v.count));
    Ok(out)
}

/// The subnet manager's partition file: fabrik's block written, then re-read.
pub(super) fn partitions(factory: &str, host: &DesiredHost, id: &ResourceId) -> Result<Vec<Step>, OpsError> {
    let p = host.partitions.as_ref().filter(|p| &p.id == id).ok_or_else(|| missing(id))?;
    Ok(vec![
        Step::Link(LinkOp::WritePartitions {
            path: p.path.clone(),
            factory: factory.to_string(),
            block: p.block.clone(),
        }),
        Step::Link(LinkOp::ReloadSubnetManager),
    ])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::desired::{DesiredHost, ResourceId};
    use crate::live::{LinkKind, LiveHost};
    use crate::plan::ops::{LinkOp, Step, for_action};
    use crate::plan::{Action, Class, Op};

    #[test]
    fn a_vf_count_changes_through_zero() {
        let id = ResourceId::parse("vfs:h1/stor0").unwrap();
        let host = DesiredHost {
            name: "h1".into(),
            vfs: vec![crate::desired::DesiredVfs { id: id.clone(), nic: "stor0".into(), count: 16 }],
            ..DesiredHost::default()
        };
        let nic = |n: u32| crate::live::LiveLink {
            name: "stor0".into(),
            kind: LinkKind::Other { kind: "device".into() },
            mtu: 9000,
            up: true,
            master: None,
            alias: None,
            sriov_vfs: Some(n),
            sriov_pci: None,
        };
        let action = Action::new(id, Op::Update, Class::Replace, "test");
        let set = |count| Step::Link(LinkOp::SetSriovVfs { nic: "stor0".into(), count });
        for (now, want) in [(0, vec![set(16)]), (8, vec![set(0), set(16)])] {
            let live = LiveHost { name: "h1".into(), links: vec![nic(now)], ..LiveHost::default() };
            assert_eq!(for_action("f", Some(&host), Some(&live), &action, Duration::ZERO).unwrap(), want);
        }
    }
}
