//! SR-IOV virtual functions: a VF goes to one VM, so the VMs on a host take no more VFs
//! of a NIC than it declares in `sriov-vfs`; and VFs exist only where a network hands
//! them out (`sriov` networks and InfiniBand partitions).

use std::collections::BTreeMap;

use super::{Index, and_list, crossing, inherited, plural};
use crate::diag::Diagnostic;
use crate::spec::effective::Effective;
use crate::spec::model::{NetKind, Network, NicModel, NicRequest};

/// A VM entry that takes SR-IOV VFs on its host: one per replica and NIC.
struct VfUse<'a> {
    e: Effective<'a>,
    net: &'a Network,
    vfs: u64,
}

/// SR-IOV NICs: on networks that have VFs, and no more VFs per host NIC than it declares.
pub(super) fn check(ix: &Index<'_>, out: &mut Vec<Diagnostic>) {
    // (host, parent NIC name) → the VM entries that take VFs of it.
    let mut vfs: BTreeMap<(usize, &str), Vec<VfUse<'_>>> = BTreeMap::new();
    for e in ix.spec.effective_vms() {
        let own = e.vm.workload.nics.is_some();
        for nic in e.nic_list() {
            let Some(net) = ix.networks.get(nic.network.value.as_str()).copied() else { continue };
            let has_vfs = matches!(net.kind.value, NetKind::Sriov | NetKind::IbPartition);
            let sriov = nic.model.value == NicModel::Sriov;
            if sriov != has_vfs {
                out.push(sriov_network(e, own, nic, net));
                continue;
            }
            if !sriov || e.count() == 0 {
                continue;
            }
            let (Some(h), Some(parent)) = (ix.host_of(e.vm), &net.parent) else { continue };
            vfs.entry((h, parent.value.as_str())).or_default().push(VfUse { e, net, vfs: u64::from(e.count()) });
        }
    }
    for ((h, parent), uses) in vfs {
        let host = ix.host(h);
        let pf = host.nics.iter().find(|n| n.name.value == parent);
        let have = pf.and_then(|n| n.sriov_vfs.as_ref()).map_or(0, |v| u64::from(v.value));
        let want: u64 = uses.iter().map(|u| u.vfs).sum();
        if want <= have {
            continue;
        }
        let who: Vec<String> =
            uses.iter().map(|u| format!("{} for `{}` on `{}`", u.vfs, u.e.vm.name.value, u.net.name.value)).collect();
        let declared = if have == 0 { "no".to_string() } else { have.to_string() };
        let message = match pf {
            None => format!(
                "host `{}` has no NIC `{parent}` to take SR-IOV virtual functions from, but the VMs on it need {want}: {}",
                host.name.value,
                and_list(&who)
            ),
            Some(_) => format!(
                "host `{}` declares {declared} SR-IOV virtual function{} on `{parent}`, but the VMs on it need {want}: {}",
                host.name.value,
                plural(have),
                and_list(&who)
            ),
        };
        let over = crossing(uses.iter().map(|u| u.vfs), have);
        let label = |u: &VfUse<'_>| {
            let n = u.vfs;
            format!("{n} VF{} of `{parent}` for `{}`", plural(n), u.e.vm.name.value)
        };
        let at = |u: &VfUse<'_>| u.e.vm.host.as_ref().map_or(u.e.vm.name.span, |h| h.span);
        let mut d = Diagnostic::error("fabrik::gpu::sriov-vfs", message).at(at(&uses[over]), label(&uses[over]));
        for (k, u) in uses.iter().enumerate() {
            if k != over {
                d = d.also(at(u), label(u));
            }
        }
        let help = match pf {
            Some(n) => {
                match &n.sriov_vfs {
                    Some(v) => d = d.also(v.span, format!("{} VF{}", v.value, plural(u64::from(v.value)))),
                    None => d = d.also(n.name.span, "no `sriov-vfs`: no VFs"),
                }
                format!(
                    "raise `sriov-vfs` of `{parent}` on host `{}` to at least {want} (within what the card supports), or attach fewer VMs there",
                    host.name.value
                )
            }
            None => {
                d = d.also(host.name.span, format!("no NIC `{parent}` here"));
                format!(
                    "declare NIC `{parent}` with `sriov-vfs` on host `{}`, or run the VMs on hosts that have it",
                    host.name.value
                )
            }
        };
        if let Some(p) = &uses[over].net.parent {
            d = d.also(p.span, format!("parent of network `{}`", uses[over].net.name.value));
        }
        out.push(d.help(help));
    }
}

fn sriov_network(e: Effective<'_>, own: bool, nic: &NicRequest, net: &Network) -> Diagnostic {
    let vm = e.vm;
    let (message, help) = if nic.model.value == NicModel::Sriov {
        (
            format!(
                "VM `{}` asks for an SR-IOV NIC on network `{}`, a {} network, which has no virtual functions",
                vm.name.value, net.name.value, net.kind.value
            ),
            "drop `model: sriov` (a virtio NIC on the bridge), or attach to an `sriov` network or an InfiniBand partition".to_string(),
        )
    } else {
        let what = match net.kind.value {
            NetKind::IbPartition => {
                "an InfiniBand partition, reached only through a virtual function (IPoIB cannot be bridged)"
            }
            _ => "a pool of SR-IOV virtual functions, with no bridge for a virtio NIC",
        };
        (
            format!("VM `{}` has a virtio NIC on network `{}`, {what}", vm.name.value, net.name.value),
            format!("give the NIC `model: sriov`: `{{ network: {}, model: sriov }}`", net.name.value),
        )
    };
    let what = match nic.model.value {
        NicModel::Sriov => "an SR-IOV NIC",
        NicModel::Virtio => "a virtio NIC",
    };
    let (at, label, extra) = inherited(vm, own, nic.span, what.to_string());
    let mut d = Diagnostic::error("fabrik::gpu::sriov-network", message).at(at, label);
    if let Some((s, l)) = extra {
        d = d.also(s, l);
    }
    d.also(net.kind.span, format!("kind `{}`", net.kind.value)).help(help)
}
