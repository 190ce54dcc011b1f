//! Twins refuse what hosts refuse: the same requests, good and bad, made to the simulated
//! links of a twin (`driver::sim_links`) and to the netlink driver on the real kernel in
//! a throw-away network namespace, give the same outcome — success, or an error of the
//! same kind (and the same errno where both name one).
//!
//! Only what this kernel has is compared: bridges, veth, VXLAN and macvlan. 802.1Q VLAN
//! is not in this kernel (the VLAN rules of the twin are tested on their own in
//! `sim_links`); VFIO and SR-IOV are not either.

mod netlink_support;

use fabrik::driver::netlink::NetlinkDriver;
use fabrik::driver::sim_links::SimLinks;
use fabrik::driver::{DriverError, Guid, LinkSpec, Links};
use fabrik::live::LinkKind;
use netlink_support::{Netns, required_missing, say};

/// The host NIC both sides start with: on the kernel a veth made by hand (fabrik did
/// not create it), on the twin a declared NIC.
const NIC: &str = "eth0";

fn spec(name: &str, kind: LinkKind, master: Option<&str>) -> LinkSpec {
    LinkSpec { name: name.into(), kind, mtu: None, master: master.map(str::to_string), alias: None }
}

fn vxlan(vni: u32, parent: &str) -> LinkKind {
    LinkKind::Vxlan { vni, local: None, port: 4789, parent: Some(parent.into()), remotes: Vec::new() }
}

/// One request to a host's links.
enum Request {
    Create(LinkSpec),
    Set {
        name: &'static str,
        mtu: Option<u32>,
        master: Option<&'static str>,
    },
    Delete(&'static str),
    AddFdb(&'static str, &'static str),
    /// `ip link set <pf> vf <n> node_guid … port_guid …`.
    SetVfGuids(&'static str, u32),
}

impl Request {
    fn run(&self, links: &mut dyn Links) -> Result<(), DriverError> {
        match self {
            Request::Create(s) => links.create_link(s),
            Request::Set { name, mtu, master } => links.set_link(name, *mtu, None, master.map(|m| Some(m.to_string()))),
            Request::Delete(name) => links.delete_link(name),
            Request::AddFdb(vxlan, remote) => links.add_fdb(vxlan, remote.parse().unwrap()),
            Request::SetVfGuids(pf, vf) => {
                links.set_vf_guids(pf, *vf, Guid(0x0200_0000_0000_0010), Guid(0x0200_0000_0000_0011))
            }
        }
    }
}

/// The requests, in order, each with what it shows. Earlier ones set the stage for later
/// ones on both sides alike.
fn requests() -> Vec<(&'static str, Request)> {
    use Request::*;
    vec![
        ("a bridge", Create(spec("br0", LinkKind::Bridge, None))),
        ("an existing device", Create(spec("br0", LinkKind::Bridge, None))),
        ("a name over 15 bytes", Create(spec("br-name-too-long0", LinkKind::Bridge, None))),
        ("a port of a missing bridge", Create(spec("br1", LinkKind::Bridge, Some("br9")))),
        ("a VXLAN on a missing parent", Create(spec("vx100", vxlan(100, "eth9"), None))),
        ("a VXLAN on the NIC, a port of the bridge", Create(spec("vx100", vxlan(100, NIC), Some("br0")))),
        ("a second VXLAN of the same VNI and port", Create(spec("vx100b", vxlan(100, NIC), None))),
        ("a VNI over 24 bits", Create(spec("vx-big", vxlan(1 << 24, NIC), None))),
        ("a macvlan on a missing parent", Create(spec("mv0", LinkKind::Macvlan { parent: "eth9".into() }, None))),
        ("a veth whose peer name is taken", Create(spec("v0", LinkKind::Veth { peer: Some(NIC.into()) }, None))),
        ("the NIC made a port of a missing bridge", Set { name: NIC, mtu: None, master: Some("br9") }),
        ("a second bridge", Create(spec("br2", LinkKind::Bridge, None))),
        ("a bridge made a port of a bridge", Set { name: "br2", mtu: None, master: Some("br0") }),
        ("a veth pair", Create(spec("va", LinkKind::Veth { peer: Some("vb".into()) }, None))),
        ("a port of a link that is not a bridge", Set { name: "va", mtu: None, master: Some("vb") }),
        ("a bridge made its own port", Set { name: "br0", mtu: None, master: Some("br0") }),
        ("the NIC made a port of the bridge (an uplink)", Set { name: NIC, mtu: None, master: Some("br0") }),
        ("an MTU below the minimum", Set { name: "br0", mtu: Some(20), master: None }),
        ("a change to a missing link", Set { name: "br9", mtu: Some(1400), master: None }),
        ("a missing link deleted", Delete("br9")),
        ("a flood entry on a missing VXLAN", AddFdb("vx9", "10.0.0.2")),
        ("a flood entry", AddFdb("vx100", "10.0.0.2")),
        ("a VXLAN deleted", Delete("vx100")),
        ("a bridge deleted", Delete("br2")),
        ("VF GUIDs on a missing PF", SetVfGuids("ib9", 0)),
        (
            "an IPoIB child of an Ethernet link",
            Create(spec("eth0.8001", LinkKind::Ipoib { parent: NIC.into(), pkey: 0x8001 }, None)),
        ),
        ("VF GUIDs on an Ethernet link (not InfiniBand)", SetVfGuids(NIC, 0)),
    ]
}

fn outcome(r: &Result<(), DriverError>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("{:?}", e.kind),
    }
}

#[test]
fn twin_links_and_the_kernel_give_the_same_outcome_for_the_same_request() {
    let Some(netns) = Netns::new("parity") else { return };
    netns.exec(&["ip", "link", "add", NIC, "type", "veth", "peer", "name", "eth0peer"]);
    let mut real = NetlinkDriver::in_netns(&netns.name).expect("a driver in a fresh namespace");
    if let Err(e) = real.create_link(&spec("probe0", LinkKind::Bridge, None)) {
        required_missing("bridges (CONFIG_BRIDGE)", &e.message);
        return;
    }
    real.delete_link("probe0").unwrap();
    let mut twin = SimLinks::new();
    twin.add_nic(NIC, 1500, None);

    let mut differ = Vec::new();
    for (what, request) in requests() {
        let (k, t) = (request.run(&mut real), request.run(&mut twin));
        let codes = |r: &Result<(), DriverError>| r.as_ref().err().and_then(|e| e.code.clone());
        say(&format!("{what:<48} kernel {:<11} twin {}", outcome(&k), outcome(&t)));
        let same_kind = outcome(&k) == outcome(&t);
        let same_code = match (codes(&k), codes(&t)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if !(same_kind && same_code) {
            differ.push(format!("{what}: kernel {k:?}, twin {t:?}"));
        }
    }
    assert!(differ.is_empty(), "the twin and the kernel disagree:\n{}", differ.join("\n"));
    // And they end in the same state.
    let names = |l: &mut dyn Links| {
        let mut v: Vec<(String, Option<String>)> = l
            .links()
            .unwrap()
            .into_iter()
            .filter(|l| !["lo", "eth0peer"].contains(&l.name.as_str()))
            .map(|l| (l.name, l.master))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&mut real), names(&mut twin));
}
