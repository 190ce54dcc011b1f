//! `fabrik::isolation::*`: tenants stay apart. A tenant's VMs run on its hosts, attach
//! to its own networks and shared ones, and share a GPU with other tenants only in ways
//! every one of them accepts. Layer-2 and InfiniBand ids are unique, so no two networks
//! are one segment by accident.
//!
//! Time slicing is the one sharing model that is allowed but still reported: where a
//! time-sliced GPU will serve VMs of more than one tenant, a warning names the weaker
//! isolation. A tenant time-slicing a GPU among its own VMs is its own affair (it said
//! so in `sharing`), and is not reported; neither is a VM that merely asks for a time
//! slice, or the reference factory would always warn.

use std::collections::{BTreeMap, HashMap};

use super::gpu::{Candidates, GpuKey, Index, Want, and_list, candidates, describe, inherited};
use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::spec::effective::Effective;
use crate::spec::model::{Gpu, GpuMode, GpuRequest, NetKind, Network, Sharing, Spec, Tenant};
use crate::spec::source::{Span, Spanned};

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::isolation::foreign-host",
        summary: "a VM runs on a host that is not one of its tenant's `hosts`",
        protects: "a tenant's workload on a server another tenant rents, or on one the tenant's contract does not cover",
        example: "tenants:\n  - { name: acme, hosts: [gpu01] }\nvms:\n  - { name: a, tenant: acme, host: gpu02, vcpus: 4, memory: 16GiB }",
        fix: "run the VM on one of the tenant's hosts, or add the host to the tenant's `hosts`",
    },
    Rule {
        code: "fabrik::isolation::foreign-network",
        summary: "a VM attaches to, or a tenant lists, a network owned by another tenant or kept for infrastructure",
        protects: "a VM inside another tenant's layer-2 segment or InfiniBand partition, or on the hosts' management network",
        example: "networks:\n  - { name: globex-net, purpose: tenant, kind: vxlan, tenant: globex, vni: 10002 }\nvms:\n  - { name: a, tenant: acme, vcpus: 4, memory: 16GiB, nics: [globex-net] }",
        fix: "attach to a network of the VM's own tenant or to a `shared: true` one; a tenant lists only such networks",
    },
    Rule {
        code: "fabrik::isolation::unlisted-network",
        summary: "a VM attaches to its tenant's own network, but the tenant does not list it in `networks`",
        protects: "a network reached by a VM without the tenant's definition saying so; the tenant's `networks` is the list an auditor reads. Shared networks need no listing",
        example: "tenants:\n  - { name: acme, hosts: [gpu01], networks: [acme-net] }\nvms:\n  - { name: a, tenant: acme, vcpus: 4, memory: 16GiB, nics: [acme-ib] }   # acme-ib belongs to acme",
        fix: "add the network to the tenant's `networks`",
    },
    Rule {
        code: "fabrik::isolation::duplicate-vni",
        summary: "two VXLAN networks with one VNI",
        protects: "two networks that are one layer-2 segment: the tenants' traffic meets (and Linux refuses a second VXLAN device with the VNI on a host)",
        example: "networks:\n  - { name: acme-net, purpose: tenant, kind: vxlan, tenant: acme, vni: 10001 }\n  - { name: globex-net, purpose: tenant, kind: vxlan, tenant: globex, vni: 10001 }",
        fix: "give each VXLAN network its own `vni`",
    },
    Rule {
        code: "fabrik::isolation::duplicate-vlan",
        summary: "two networks with one VLAN id on one parent interface",
        protects: "two networks that are one layer-2 segment. A `vlan` and an `sriov` network of the same owner may share an id on purpose (one segment reached by virtio and by virtual functions); any other pair may not",
        example: "networks:\n  - { name: storage, purpose: storage, kind: vlan, shared: true, vlan: 200, parent: stor0 }\n  - { name: acme-stor, purpose: tenant, kind: vlan, tenant: acme, vlan: 200, parent: stor0 }",
        fix: "give each network on the interface its own `vlan`",
    },
    Rule {
        code: "fabrik::isolation::duplicate-pkey",
        summary: "two InfiniBand partitions with one partition key (the membership bit aside)",
        protects: "two tenants in one InfiniBand partition; `0x0001` and `0x8001` are the same partition, the top bit only says limited or full membership",
        example: "networks:\n  - { name: acme-ib, purpose: tenant, kind: ib-partition, tenant: acme, pkey: 0x8001, parent: ib0 }\n  - { name: globex-ib, purpose: tenant, kind: ib-partition, tenant: globex, pkey: 0x0001, parent: ib0 }",
        fix: "give each partition its own key in 0x0001–0x7ffe (written with the top bit for full membership)",
    },
    Rule {
        code: "fabrik::isolation::sharing-not-accepted",
        summary: "a VM's GPU request uses a sharing model its tenant does not accept in `sharing`",
        protects: "a tenant given weaker GPU isolation than it signed up for: `exclusive` is whole GPUs, `mig` hardware-partitioned instances whose GPU may serve other tenants, `time-sliced` a GPU shared in turn. So a GPU is shared by MIG only between tenants that all accept `mig`: where the VM's MIG GPU is known (pinned, or the only one that can serve it) and serves other tenants too, the message names them",
        example: "tenants:\n  - { name: acme, hosts: [gpu01] }   # sharing: [exclusive] by default\nvms:\n  - { name: nb, tenant: acme, vcpus: 4, memory: 16GiB, gpu: { model: H200-141GB, mig: 1g.18gb } }",
        fix: "add the model to the tenant's `sharing` if it accepts it, or change the request",
    },
    Rule {
        code: "fabrik::isolation::time-sliced-tenants",
        summary: "warning: a time-sliced GPU serves VMs of more than one tenant",
        protects: "tenants on one time-sliced GPU share its memory, caches and scheduler with no hardware partition: no fault isolation (a GPU reset or an Xid stops both), no performance isolation, and side channels between them. Reported where the files leave no other choice: VMs of two tenants pinned to one GPU, or with one time-sliced GPU of the model where they may run. A tenant time-slicing among its own VMs is not reported: it accepted that in `sharing`",
        example: "gpus:\n  - { address: \"0000:61:00.0\", model: H200-141GB, numa-node: 0, mode: time-sliced }\nvms:\n  - { name: viz-a, tenant: acme, host: gpu02, gpu: { model: H200-141GB, time-sliced: true } }\n  - { name: viz-b, tenant: globex, host: gpu02, gpu: { model: H200-141GB, time-sliced: true } }",
        fix: "pin each tenant's time-sliced VMs to a GPU of its own, or give tenants MIG instances, which are isolated in hardware",
    },
];

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    let ix = Index::new(spec);
    for e in spec.effective_vms() {
        let Some(tenant) = ix.tenant_of(e.vm) else { continue }; // unknown tenant: reported by refs
        if ix.host_of(e.vm).is_some() {
            foreign_host(e, tenant, out); // an unknown host is reported by refs
        }
        vm_networks(&ix, e, tenant, out);
    }
    for tenant in &spec.tenants {
        for name in &tenant.networks {
            let Some(net) = ix.networks.get(name.value.as_str()).copied() else { continue };
            if !net.shared && net.tenant.as_ref().is_none_or(|t| t.value != tenant.name.value) {
                out.push(
                    Diagnostic::error(
                        "fabrik::isolation::foreign-network",
                        format!("tenant `{}` lists network `{}`, {}", tenant.name.value, net.name.value, owner(net)),
                    )
                    .at(name.span, "not this tenant's network")
                    .also(owner_span(net), owner_label(net))
                    .help(format!(
                        "list only networks of `{}` and shared ones; a network open to all tenants has `shared: true`",
                        tenant.name.value
                    )),
                );
            }
        }
    }
    unique_ids(spec, out);
    let neighbours = mig_neighbours(&ix);
    for (i, e) in spec.effective_vms().enumerate() {
        sharing_accepted(&ix, e, neighbours.get(&i), out);
    }
    time_sliced(&ix, out);
}

fn foreign_host(e: Effective<'_>, tenant: &Tenant, out: &mut Vec<Diagnostic>) {
    let Some(host) = &e.vm.host else { return };
    if tenant.hosts.iter().any(|h| h.value == host.value) {
        return;
    }
    let hosts: Vec<String> = tenant.hosts.iter().map(|h| format!("`{}`", h.value)).collect();
    let help = if hosts.is_empty() {
        format!("tenant `{}` has no hosts; add `{}` to its `hosts`", tenant.name.value, host.value)
    } else {
        format!(
            "run the VM on {}{} (or leave `host` out and let fabrik choose), or add `{}` to tenant `{}`'s `hosts`",
            if hosts.len() == 1 { "" } else { "one of " },
            hosts.join(", "),
            host.value,
            tenant.name.value
        )
    };
    out.push(
        Diagnostic::error(
            "fabrik::isolation::foreign-host",
            format!(
                "VM `{}` of tenant `{}` runs on host `{}`, which is not one of the tenant's hosts",
                e.vm.name.value, tenant.name.value, host.value
            ),
        )
        .at(host.span, "not a host of this tenant")
        .also(list_span(&tenant.hosts, tenant.name.span), format!("hosts of `{}`", tenant.name.value))
        .help(help),
    );
}

fn vm_networks(ix: &Index<'_>, e: Effective<'_>, tenant: &Tenant, out: &mut Vec<Diagnostic>) {
    let own = e.vm.workload.nics.is_some();
    let vm = &e.vm.name.value;
    for nic in e.nic_list() {
        let Some(net) = ix.networks.get(nic.network.value.as_str()).copied() else { continue };
        if net.shared {
            continue;
        }
        let owned = net.tenant.as_ref().is_some_and(|t| t.value == tenant.name.value);
        let d = if !owned {
            let (at, label, extra) = inherited(e.vm, own, nic.network.span, "not this tenant's network".to_string());
            let mine: Vec<String> = ix
                .spec
                .networks
                .iter()
                .filter(|n| n.shared || n.tenant.as_ref().is_some_and(|t| t.value == tenant.name.value))
                .map(|n| format!("`{}`", n.name.value))
                .collect();
            let help = if mine.is_empty() {
                format!(
                    "tenant `{}` has no network and none is shared: define one with `tenant: {}`",
                    tenant.name.value, tenant.name.value
                )
            } else {
                format!("attach to a network of `{}` or a shared one: {}", tenant.name.value, mine.join(", "))
            };
            with(
                Diagnostic::error(
                    "fabrik::isolation::foreign-network",
                    format!(
                        "VM `{vm}` of tenant `{}` attaches to network `{}`, {}",
                        tenant.name.value,
                        net.name.value,
                        owner(net)
                    ),
                )
                .at(at, label),
                extra,
            )
            .also(owner_span(net), owner_label(net))
            .help(help)
        } else if !tenant.networks.iter().any(|n| n.value == net.name.value) {
            let (at, label, extra) =
                inherited(e.vm, own, nic.network.span, "not in the tenant's `networks`".to_string());
            with(
                Diagnostic::error(
                    "fabrik::isolation::unlisted-network",
                    format!(
                        "VM `{vm}` attaches to network `{}` of its tenant `{}`, but the tenant does not list it in `networks`",
                        net.name.value, tenant.name.value
                    ),
                )
                .at(at, label),
                extra,
            )
            .also(list_span(&tenant.networks, tenant.name.span), format!("networks of `{}`", tenant.name.value))
            .help(format!("add `{}` to tenant `{}`'s `networks`", net.name.value, tenant.name.value))
        } else {
            continue;
        };
        out.push(d);
    }
}

fn with(d: Diagnostic, extra: Option<(Span, String)>) -> Diagnostic {
    match extra {
        Some((s, l)) => d.also(s, l),
        None => d,
    }
}

/// The span of a list, or `instead` when it is empty.
fn list_span<T>(items: &[Spanned<T>], instead: Span) -> Span {
    match (items.first(), items.last()) {
        (Some(a), Some(b)) => a.span.join(b.span),
        _ => instead,
    }
}

fn owner(net: &Network) -> String {
    match &net.tenant {
        Some(t) => format!("which belongs to tenant `{}`", t.value),
        None => "an infrastructure network (no tenant, not shared)".to_string(),
    }
}

fn owner_span(net: &Network) -> Span {
    net.tenant.as_ref().map_or(net.name.span, |t| t.span)
}

fn owner_label(net: &Network) -> String {
    match &net.tenant {
        Some(t) => format!("owned by `{}`", t.value),
        None => "no `tenant` and no `shared: true`".to_string(),
    }
}

/// VNIs, VLAN ids per parent interface, and partition keys: one network each.
fn unique_ids(spec: &Spec, out: &mut Vec<Diagnostic>) {
    let mut vnis: HashMap<u32, &Network> = HashMap::new();
    let mut vlans: HashMap<(&str, u16), Vec<&Network>> = HashMap::new();
    let mut pkeys: HashMap<u16, &Network> = HashMap::new();
    for net in &spec.networks {
        if let (NetKind::Vxlan, Some(vni)) = (net.kind.value, &net.vni) {
            match vnis.get(&vni.value) {
                Some(first) => out.push(clash(
                    "fabrik::isolation::duplicate-vni",
                    first,
                    net,
                    first.vni.as_ref().map_or(first.name.span, |v| v.span),
                    vni.span,
                    format!("VXLAN VNI {}", vni.value),
                    "give each VXLAN network its own `vni`: one VNI is one layer-2 segment".to_string(),
                )),
                None => {
                    vnis.insert(vni.value, net);
                }
            }
        }
        if let Some(vlan) = &net.vlan {
            let parent = net.parent.as_ref().map_or("", |p| p.value.as_str());
            let seen = vlans.entry((parent, vlan.value)).or_default();
            // A bridged VLAN and a VF pool on it, both of one owner: one segment, two ways in.
            let same_segment = |a: &Network| {
                a.kind.value != net.kind.value
                    && a.tenant.as_ref().map(|t| &t.value) == net.tenant.as_ref().map(|t| &t.value)
                    && a.shared == net.shared
            };
            if let Some(first) = seen.iter().find(|a| !same_segment(a)) {
                let on = if parent.is_empty() { String::new() } else { format!(" on `{parent}`") };
                out.push(clash(
                    "fabrik::isolation::duplicate-vlan",
                    first,
                    net,
                    first.vlan.as_ref().map_or(first.name.span, |v| v.span),
                    vlan.span,
                    format!("VLAN {}{on}", vlan.value),
                    format!(
                        "give each network{on} its own `vlan`: one VLAN id on one interface is one layer-2 segment"
                    ),
                ));
            } else {
                seen.push(net);
            }
        }
        if let (NetKind::IbPartition, Some(pkey)) = (net.kind.value, &net.pkey) {
            // The top bit is the membership type (full or limited), not part of the partition.
            let partition = pkey.value & 0x7fff;
            match pkeys.get(&partition) {
                Some(first) => {
                    let first_key = first.pkey.as_ref().map_or(0, |p| p.value);
                    let what = if first_key == pkey.value {
                        format!("InfiniBand partition key {:#06x}", pkey.value)
                    } else {
                        format!(
                            "InfiniBand partition {partition:#06x} (keys {first_key:#06x} and {:#06x} differ only in the membership bit)",
                            pkey.value
                        )
                    };
                    out.push(clash(
                        "fabrik::isolation::duplicate-pkey",
                        first,
                        net,
                        first.pkey.as_ref().map_or(first.name.span, |p| p.span),
                        pkey.span,
                        what,
                        "give each partition its own key in 0x0001–0x7ffe (0x8000 added for full membership): the top bit only says full or limited membership".to_string(),
                    ));
                }
                None => {
                    pkeys.insert(partition, net);
                }
            }
        }
    }
}

fn clash(
    code: &'static str,
    first: &Network,
    second: &Network,
    first_at: Span,
    second_at: Span,
    what: String,
    help: String,
) -> Diagnostic {
    let who = |n: &Network| match (&n.tenant, n.shared) {
        (Some(t), _) => format!("`{}` (tenant `{}`)", n.name.value, t.value),
        (None, true) => format!("`{}` (shared)", n.name.value),
        (None, false) => format!("`{}` (infrastructure)", n.name.value),
    };
    Diagnostic::error(code, format!("networks {} and {} both use {what}", who(first), who(second)))
        .at(second_at, format!("used by `{}`", second.name.value))
        .also(first_at, format!("already used by `{}`", first.name.value))
        .help(help)
}

fn accepts(tenant: &Tenant, s: Sharing) -> bool {
    tenant.sharing.iter().any(|x| x.value == s)
}

fn accepted_list(tenant: &Tenant) -> String {
    let words: Vec<String> = tenant.sharing.iter().map(|s| format!("`{}`", s.value)).collect();
    if words.is_empty() { "nothing".to_string() } else { and_list(&words) }
}

/// The sharing list's span, or the tenant's name when `sharing` is not written (the
/// default is spanned at the start of the tenant, before its name).
fn sharing_span(tenant: &Tenant) -> (Span, String) {
    let defaulted = matches!(tenant.sharing.as_slice(), [only] if only.value == Sharing::Exclusive && only.span.start <= tenant.name.span.start);
    match (tenant.sharing.first(), tenant.sharing.last()) {
        (Some(a), Some(b)) if !defaulted => {
            (a.span.join(b.span), format!("`{}` accepts {}", tenant.name.value, accepted_list(tenant)))
        }
        _ => (tenant.name.span, format!("no `sharing`: `{}` accepts `exclusive` only", tenant.name.value)),
    }
}

fn what_it_is(want: Want<'_>) -> &'static str {
    match want {
        Want::Whole => "whole GPUs (`exclusive`)",
        Want::Mig(_) => {
            "MIG instances (`mig`): slices of a GPU isolated in hardware, whose other slices may go to other tenants"
        }
        Want::TimeSliced => "a time slice (`time-sliced`): a GPU shared in turn, with no memory or fault isolation",
    }
}

/// The span that says what a request is: its MIG profile, else its model.
fn request_span(req: &GpuRequest) -> Span {
    match &req.mig {
        Some(p) => p.span,
        None if req.time_sliced => req.span,
        None => req.model.span,
    }
}

fn sharing_accepted(ix: &Index<'_>, e: Effective<'_>, shared: Option<&SharedMig<'_>>, out: &mut Vec<Diagnostic>) {
    let (Some(tenant), Some(req)) = (ix.tenant_of(e.vm), e.gpu()) else { return };
    let want = Want::of(req);
    if accepts(tenant, want.sharing()) {
        return;
    }
    let (at, label, extra) =
        inherited(e.vm, e.vm.workload.gpu.is_some(), request_span(req), format!("asks for {}", describe(req)));
    let (sharing_at, sharing_label) = sharing_span(tenant);
    let mut message = format!(
        "VM `{}` asks for {}, but its tenant `{}` accepts {}",
        e.vm.name.value,
        describe(req),
        tenant.name.value,
        accepted_list(tenant)
    );
    if let Some(shared) = shared {
        let tenants: Vec<String> = shared.others.iter().map(|(t, _)| format!("`{t}`")).collect();
        message.push_str(&format!(
            "; its GPU {} on host `{}` is shared with tenant{} {}",
            shared.gpu.address.value,
            shared.host,
            if tenants.len() == 1 { "" } else { "s" },
            and_list(&tenants)
        ));
    }
    let mut d = with(Diagnostic::error("fabrik::isolation::sharing-not-accepted", message).at(at, label), extra)
        .also(sharing_at, sharing_label);
    if let Some(shared) = shared {
        let address = shared.gpu.address.value;
        d = d.also(tie(e, Some(address)), format!("`{}` is on this GPU", e.vm.name.value));
        for (t, other) in &shared.others {
            d = d.also(tie(*other, Some(address)), format!("`{}` of `{t}` too", other.vm.name.value));
        }
        d = d.also(shared.gpu.address.span, "a MIG GPU shared between tenants");
    }
    out.push(d.help(format!(
        "the request is for {}; add `{}` to tenant `{}`'s `sharing` if it accepts that, or change the request",
        what_it_is(want),
        want.sharing(),
        tenant.name.value
    )));
}

/// A place in a VM entry that ties it to a GPU: the pin, else its host, else its name.
fn tie(e: Effective<'_>, gpu_address: Option<crate::spec::types::PciAddress>) -> Span {
    if let Some(a) = gpu_address
        && let Some(p) = e.vm.gpus.iter().find(|p| p.value == a)
    {
        return p.span;
    }
    e.vm.host.as_ref().map_or(e.vm.name.span, |h| h.span)
}

/// A MIG GPU a VM entry certainly gets an instance of, and the other tenants' VMs on it.
struct SharedMig<'a> {
    host: &'a str,
    gpu: &'a Gpu,
    /// One VM entry per other tenant, by tenant name.
    others: Vec<(&'a str, Effective<'a>)>,
}

/// For each VM entry on a MIG GPU shared between tenants (pinned to it, or the only GPU
/// that can serve it), that GPU and the other tenants there.
fn mig_neighbours<'a>(ix: &Index<'a>) -> HashMap<usize, SharedMig<'a>> {
    let mut users: BTreeMap<GpuKey, Vec<(usize, Effective<'a>)>> = BTreeMap::new();
    for (i, e) in ix.spec.effective_vms().enumerate() {
        let Some(req) = e.gpu() else { continue };
        if !matches!(Want::of(req), Want::Mig(_)) || e.count() == 0 {
            continue;
        }
        let Candidates { pinned, gpus } = candidates(ix, e, req);
        if pinned || gpus.len() == 1 {
            for (key, gpu) in gpus {
                if gpu.mode.value == GpuMode::Mig {
                    users.entry(key).or_default().push((i, e));
                }
            }
        }
    }
    let mut out = HashMap::new();
    for ((h, g), list) in users {
        let host = ix.host(h);
        for &(i, e) in &list {
            let mut others: Vec<(&str, Effective<'_>)> = Vec::new();
            for &(_, o) in &list {
                let t = o.vm.tenant.value.as_str();
                if t != e.vm.tenant.value && !others.iter().any(|(seen, _)| *seen == t) {
                    others.push((t, o));
                }
            }
            if !others.is_empty() {
                out.entry(i).or_insert(SharedMig { host: &host.name.value, gpu: &host.gpus[g], others });
            }
        }
    }
    out
}

/// A VM entry that will get a time slice of a GPU, and whether it pins the GPU.
#[derive(Clone, Copy)]
struct Slicer<'a> {
    e: Effective<'a>,
    pinned: bool,
}

/// Time-sliced GPUs that VMs of more than one tenant will share: where they are pinned
/// to it, or it is the only GPU that can serve them (as in [`mig_shared`]). Where several
/// GPUs could, placement chooses, and this check does not guess.
fn time_sliced(ix: &Index<'_>, out: &mut Vec<Diagnostic>) {
    // GPU → tenant → its first VM entry that will get a slice of it.
    let mut users: BTreeMap<GpuKey, BTreeMap<&str, Slicer<'_>>> = BTreeMap::new();
    for e in ix.spec.effective_vms() {
        let Some(req) = e.gpu() else { continue };
        if Want::of(req) != Want::TimeSliced || e.count() == 0 {
            continue;
        }
        let Candidates { pinned, gpus } = candidates(ix, e, req);
        if !pinned && gpus.len() != 1 {
            continue;
        }
        for (key, gpu) in gpus {
            if gpu.mode.value == GpuMode::TimeSliced {
                users.entry(key).or_default().entry(e.vm.tenant.value.as_str()).or_insert(Slicer { e, pinned });
            }
        }
    }
    for ((h, g), tenants) in users {
        if tenants.len() < 2 {
            continue;
        }
        let host = ix.host(h);
        let gpu = &host.gpus[g];
        let names: Vec<String> = tenants.keys().map(|t| format!("`{t}`")).collect();
        let mut d = Diagnostic::warning(
            "fabrik::isolation::time-sliced-tenants",
            format!(
                "GPU {} of host `{}` is time-sliced between tenants {}: time slicing shares the GPU's memory and scheduler with no hardware isolation, weaker than MIG",
                gpu.address.value,
                host.name.value,
                and_list(&names)
            ),
        )
        .at(gpu.mode.span, "time-sliced: no memory or fault isolation between its VMs");
        for (tenant, &Slicer { e, pinned }) in &tenants {
            let how = if pinned { "pinned here" } else { "its only time-sliced GPU here" };
            d = d.also(tie(e, Some(gpu.address.value)), format!("`{}` of `{tenant}`: {how}", e.vm.name.value));
        }
        out.push(d.help(
            "pin each tenant's time-sliced VMs to a GPU of its own, or give the tenants MIG instances, which are isolated in hardware",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::gpu::tests::spec;

    fn run(text: &str) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        check(&spec(text), &mut out);
        out
    }

    fn codes(text: &str) -> Vec<&'static str> {
        run(text).iter().map(|d| d.code).collect()
    }

    fn networks(nets: &str) -> String {
        format!(
            "version: 1
tenants:
  - {{ name: a, hosts: [] }}
  - {{ name: b, hosts: [] }}
networks:
{nets}"
        )
    }

    #[test]
    fn a_pkey_is_one_partition_whatever_its_membership_bit() {
        let pair = |x: &str, y: &str| {
            networks(&format!(
                "  - {{ name: n1, purpose: tenant, kind: ib-partition, tenant: a, pkey: {x}, parent: ib0 }}
  - {{ name: n2, purpose: tenant, kind: ib-partition, tenant: b, pkey: {y}, parent: ib1 }}
"
            ))
        };
        assert_eq!(codes(&pair("0x8001", "0x0001")), ["fabrik::isolation::duplicate-pkey"]);
        assert_eq!(codes(&pair("0x0001", "0x0001")), ["fabrik::isolation::duplicate-pkey"]);
        assert_eq!(codes(&pair("0x8001", "0x8002")), Vec::<&str>::new());
    }

    #[test]
    fn one_owner_may_reach_a_vlan_by_bridge_and_by_vf() {
        let nets = |a: &str, b: &str| {
            networks(&format!(
                "  - {{ name: n1, purpose: storage, kind: vlan, {a}, vlan: 200, parent: stor0 }}
  - {{ name: n2, purpose: storage, kind: sriov, {b}, vlan: 200, parent: stor0 }}
"
            ))
        };
        assert_eq!(codes(&nets("shared: true", "shared: true")), Vec::<&str>::new());
        assert_eq!(codes(&nets("tenant: a", "tenant: a")), Vec::<&str>::new());
        assert_eq!(codes(&nets("tenant: a", "tenant: b")), ["fabrik::isolation::duplicate-vlan"]);
        assert_eq!(codes(&nets("shared: true", "tenant: a")), ["fabrik::isolation::duplicate-vlan"]);
        // Two bridged VLANs of one owner on one id are two bridges for one segment: a clash.
        let twice = nets("shared: true", "shared: true").replace("kind: sriov", "kind: vlan");
        assert_eq!(codes(&twice), ["fabrik::isolation::duplicate-vlan"]);
        // The same id on another parent is another segment.
        let other = nets("tenant: a", "tenant: b").replacen("parent: stor0", "parent: stor1", 1);
        assert_eq!(codes(&other), Vec::<&str>::new(), "{other}");
    }

    const GPUS: &str = "version: 1
hosts:
  - name: gpu01
    uri: qemu:///system
    numa-nodes: [{ id: 0, cpus: 0-31, memory: 512GiB }]
    gpus:
      - { address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0, mig: [3g.71gb, 3g.71gb] }
      - { address: \"0000:61:00.0\", model: H200-141GB, numa-node: 0, mode: time-sliced }
      - { address: \"0000:9d:00.0\", model: H200-141GB, numa-node: 0, mode: time-sliced }
";

    #[test]
    fn the_default_sharing_is_pointed_at_as_a_default() {
        let text = format!(
            "{GPUS}tenants:
  - {{ name: a, hosts: [gpu01] }}
vms:
  - {{ name: v, tenant: a, host: gpu01, vcpus: 1, memory: 1GiB, gpu: {{ model: H200-141GB, mig: 3g.71gb }} }}
"
        );
        let out = run(&text);
        let [d] = out.as_slice() else { panic!("{out:?}") };
        assert_eq!(d.code, "fabrik::isolation::sharing-not-accepted");
        assert_eq!(d.secondary[0].text, "no `sharing`: `a` accepts `exclusive` only");
        let written = run(&text.replace("hosts: [gpu01] }", "hosts: [gpu01], sharing: [exclusive] }"));
        assert_eq!(written[0].secondary[0].text, "`a` accepts `exclusive`");
    }

    #[test]
    fn a_mig_gpu_shared_with_another_tenant_is_named() {
        let out = run(&format!(
            "{GPUS}tenants:
  - {{ name: a, hosts: [gpu01] }}
  - {{ name: b, hosts: [gpu01], sharing: [mig] }}
vms:
  - {{ name: x, tenant: a, host: gpu01, vcpus: 1, memory: 1GiB, gpu: {{ model: H200-141GB, mig: 3g.71gb }} }}
  - {{ name: y, tenant: b, host: gpu01, vcpus: 1, memory: 1GiB, gpu: {{ model: H200-141GB, mig: 3g.71gb }} }}
"
        ));
        let [d] = out.as_slice() else { panic!("{out:?}") };
        assert_eq!(d.code, "fabrik::isolation::sharing-not-accepted");
        assert!(d.message.ends_with("its GPU 0000:1b:00.0 on host `gpu01` is shared with tenant `b`"), "{}", d.message);
    }

    #[test]
    fn time_slicing_warns_only_where_tenants_must_share() {
        let text = |vms: &str| {
            format!(
                "{GPUS}tenants:
  - {{ name: a, hosts: [gpu01], sharing: [time-sliced] }}
  - {{ name: b, hosts: [gpu01], sharing: [time-sliced] }}
vms:
{vms}"
            )
        };
        // Two time-sliced GPUs, two tenants, nothing pinned: placement can keep them apart.
        let free = "  - { name: x, tenant: a, host: gpu01, vcpus: 1, memory: 1GiB, gpu: { model: H200-141GB, time-sliced: true } }
  - { name: y, tenant: b, host: gpu01, vcpus: 1, memory: 1GiB, gpu: { model: H200-141GB, time-sliced: true } }
";
        assert_eq!(codes(&text(free)), Vec::<&str>::new());
        // One tenant's VMs on one GPU: its own affair.
        let own = "  - { name: x, tenant: a, replicas: 3, host: gpu01, gpus: [\"0000:61:00.0\"], vcpus: 1, memory: 1GiB, gpu: { model: H200-141GB, time-sliced: true } }\n";
        assert_eq!(codes(&text(own)), Vec::<&str>::new());
        // Pinned together: a warning, not an error.
        let together = free.replace("host: gpu01, vcpus", "host: gpu01, gpus: [\"0000:61:00.0\"], vcpus");
        let out = run(&text(&together));
        assert_eq!(
            out.iter().map(|d| (d.code, d.is_error())).collect::<Vec<_>>(),
            [("fabrik::isolation::time-sliced-tenants", false)]
        );
    }
}
