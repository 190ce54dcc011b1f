//! GPU-aligned rails: on an HGX or GB200 host each GPU has an InfiniBand HCA beside it
//! on the same PCIe switch (its rail, `rail` on the GPU), and NCCL reaches the fabric
//! fastest through the HCA of the GPU that sends (GPUDirect RDMA stays on the switch).
//! A VM given several GPUs with rails gets, on each InfiniBand partition it joins, one
//! VF per GPU from that GPU's rail instead of one VF from the network's `parent`, and
//! the domain puts each VF behind its GPU's guest PCIe expander bus
//! ([`crate::render::domain`]), so the guest's NCCL sees the same pairing.
//!
//! The partition's VF pool on a rail other than its `parent` is a libvirt network of its
//! own, `<network>+<pf>`: `+` is not allowed in factory names, so it never clashes with
//! a declared network. The NIC written in the files keeps its index (the first GPU's
//! VF); the VFs of the other GPUs are appended after the VM's other NICs, so adding
//! rails never renumbers (and so never re-addresses) a NIC that exists.

use serde::{Deserialize, Serialize};

use super::{DesiredHost, DesiredNetwork, DesiredNic, ResourceId, ResourceKind};
use crate::spec::model::{Host, NetKind, Spec};
use crate::spec::types::PciAddress;

/// Which GPU's rail a VM NIC's VF comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicRail {
    pub gpu: PciAddress,
    /// The rail's HCA: the physical function whose VF the NIC is.
    pub pf: String,
    /// The factory's InfiniBand partition network.
    pub partition: String,
}

/// The libvirt network of partition `network`'s VFs on `pf`.
pub fn network_name(network: &str, parent: &str, pf: &str) -> String {
    if pf == parent { network.to_string() } else { format!("{network}+{pf}") }
}

/// Spreads each SR-IOV NIC of a multi-GPU VM on an InfiniBand partition over its GPUs'
/// rails (see the module's note). A VM with fewer than two GPUs, or with a GPU without a
/// rail, keeps its NICs as written.
pub(super) fn expand(spec: &Spec, host: &Host, gpus: &[PciAddress], nics: &mut Vec<DesiredNic>) {
    let rails: Vec<(PciAddress, &str)> = gpus
        .iter()
        .filter_map(|g| {
            let gpu = host.gpus.iter().find(|x| x.address.value == *g)?;
            Some((*g, gpu.rail.as_ref()?.value.as_str()))
        })
        .collect();
    if rails.len() < 2 || rails.len() != gpus.len() {
        return;
    }
    let written = nics.len();
    for k in 0..written {
        if !nics[k].sriov {
            continue;
        }
        let Some(net) = spec.networks.iter().find(|n| n.name.value == nics[k].network) else { continue };
        let (NetKind::IbPartition, Some(parent)) = (net.kind.value, &net.parent) else { continue };
        let partition = net.name.value.clone();
        for (i, &(gpu, pf)) in rails.iter().enumerate() {
            let rail = NicRail { gpu, pf: pf.to_string(), partition: partition.clone() };
            let network = network_name(&partition, &parent.value, pf);
            if i == 0 {
                nics[k].network = network;
                nics[k].rail = Some(Box::new(rail));
            } else {
                nics.push(DesiredNic {
                    network,
                    sriov: true,
                    mac: String::new(),
                    declared: false,
                    address: None,
                    rail: Some(Box::new(rail)),
                });
            }
        }
    }
}

/// Adds to each host the rail networks its VMs' NICs name: the partition's network
/// with another physical function.
pub(super) fn add_networks(hosts: &mut [DesiredHost]) {
    for host in hosts {
        let mut wanted: Vec<(String, String, String)> = host
            .vms
            .iter()
            .flat_map(|v| &v.nics)
            .filter_map(|n| n.rail.as_ref().map(|r| (n.network.clone(), r.partition.clone(), r.pf.clone())))
            .filter(|(name, partition, _)| name != partition)
            .collect();
        wanted.sort();
        wanted.dedup();
        for (name, partition, pf) in wanted {
            if host.networks.iter().any(|n| n.name == name) {
                continue;
            }
            let Some(base) = host.networks.iter().find(|n| n.name == partition) else { continue };
            let net = DesiredNetwork {
                id: ResourceId::new(ResourceKind::Network, &host.name, &name),
                name,
                pf: Some(pf),
                ..base.clone()
            };
            host.networks.push(net);
        }
    }
}

/// The VFs the VMs on each host take from each rail, against the rail's `sriov-vfs`:
/// `fabrik::place::rail-vfs` where a rail that hands out VFs to multi-GPU VMs has
/// fewer than they and the host's other SR-IOV NICs on it need. Run after placement,
/// since which GPUs (and so which rails) a VM gets is decided there.
pub(super) fn check_vfs(spec: &Spec, hosts: &[DesiredHost]) -> Vec<crate::diag::Diagnostic> {
    let mut out = Vec::new();
    // The first spec host of each name, as a search from the front would find it.
    let mut by_name: std::collections::HashMap<&str, &Host> =
        std::collections::HashMap::with_capacity(spec.hosts.len());
    for h in &spec.hosts {
        by_name.entry(h.name.value.as_str()).or_insert(h);
    }
    for desired in hosts {
        let Some(host) = by_name.get(desired.name.as_str()).copied() else { continue };
        let mut need: std::collections::BTreeMap<&str, (u64, bool)> = std::collections::BTreeMap::new();
        for nic in desired.vms.iter().flat_map(|v| &v.nics).filter(|n| n.sriov) {
            let pf = match &nic.rail {
                Some(r) => Some(r.pf.as_str()),
                None => desired.networks.iter().find(|n| n.name == nic.network).and_then(|n| n.pf.as_deref()),
            };
            let Some(pf) = pf else { continue };
            let e = need.entry(pf).or_default();
            e.0 += 1;
            e.1 |= nic.rail.is_some();
        }
        for (pf, (want, railed)) in need {
            let have =
                host.nics.iter().find(|n| n.name.value == pf).and_then(|n| n.sriov_vfs.as_ref()).map_or(0, |v| v.value);
            if !railed || want <= u64::from(have) {
                continue;
            }
            let Some(rail) = host.gpus.iter().filter_map(|g| g.rail.as_ref()).find(|r| r.value == pf) else { continue };
            out.push(
                crate::diag::Diagnostic::error(
                    "fabrik::place::rail-vfs",
                    format!(
                        "the VMs placed on host `{}` take {want} SR-IOV VFs of rail `{pf}`, which declares {have}",
                        desired.name
                    ),
                )
                .at(rail.span, "a rail of multi-GPU VMs on InfiniBand partitions")
                .help(format!("give `{pf}` at least {want} `sriov-vfs`, or fewer VMs on its GPUs")),
            );
        }
    }
    out
}
