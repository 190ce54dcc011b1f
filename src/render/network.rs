//! A desired network → libvirt network XML.
//!
//! Bridged kinds (bridge, VLAN, VXLAN) are `<forward mode='bridge'/>` over the Linux
//! bridge fabrik makes as a link: libvirt only names it, so the network never owns
//! addresses, DHCP or firewall rules. SR-IOV and InfiniBand partitions are hostdev
//! pools over the physical function: libvirt hands out a free VF per NIC at start.

use super::spec_hash;
use super::xml::{Writer, a};
use crate::desired::DesiredNetwork;
use crate::driver::libvirt::owner;
use crate::live::Ownership;
use crate::spec::model::NetKind;

/// The network XML; its mark's spec hash is [`spec_hash`] of the desired value.
pub fn network(factory: &str, net: &DesiredNetwork) -> String {
    let mut w = Writer::new();
    w.open("network", &[]);
    w.text("name", &[], &net.name);
    let mark = Ownership { factory: factory.to_string(), resource: net.id.to_string(), spec_hash: spec_hash(net) };
    w.open("metadata", &[]);
    w.raw(&owner::render(&mark));
    w.close("metadata");
    match net.kind {
        NetKind::Bridge | NetKind::Vlan | NetKind::Vxlan => {
            w.empty("forward", &[a("mode", "bridge")]);
            // The builder always names the bridge of a bridged network; the network's
            // name stands in so the XML stays valid if it did not.
            w.empty("bridge", &[a("name", net.bridge.as_deref().unwrap_or(&net.name))]);
        }
        NetKind::Sriov | NetKind::IbPartition => {
            w.open("forward", &[a("mode", "hostdev"), a("managed", "yes")]);
            w.empty("pf", &[a("dev", net.pf.as_deref().unwrap_or(&net.name))]);
            w.close("forward");
            // VLAN tagging on a VF is done by the PF's driver; for bridged networks it
            // is the link's job, not the network's.
            if let (NetKind::Sriov, Some(vlan)) = (net.kind, net.vlan) {
                w.open("vlan", &[]);
                w.empty("tag", &[a("id", vlan)]);
                w.close("vlan");
            }
        }
    }
    w.close("network");
    w.finish()
}
