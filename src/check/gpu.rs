//! `fabrik::gpu::*`: exclusive assignment. A whole GPU, a MIG instance or an SR-IOV
//! virtual function goes to at most one VM, and a GPU is handed out only in the mode it
//! is declared in (a passthrough GPU is never also shared).
//!
//! What the files fix is checked exactly: GPUs pinned by address, VFs of the NICs of the
//! VMs given a `host`. How many GPUs and MIG instances a host has for the VMs on it is
//! the capacity checks' to count; where a VM has no host, placement chooses.
//!
//! The lookups and the "which GPUs could this VM get" logic here are shared with the
//! fabric and isolation checks.

mod sriov;

use std::collections::{BTreeMap, HashMap, HashSet};

use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::hw::GpuModel;
use crate::hw::mig;
use crate::spec::effective::Effective;
use crate::spec::model::{Gpu, GpuMode, GpuRequest, Host, Network, Sharing, Spec, Tenant, Vm};
use crate::spec::source::{Span, Spanned};
use crate::spec::types::{MigProfileName, PciAddress};

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::gpu::pinned-twice",
        summary: "a passthrough GPU pinned by two VMs (or twice by one)",
        protects: "two VMs promised one device: the second fails to start (vfio-pci gives a device to one guest), or worse, is started by hand on the wrong GPU",
        example: "vms:\n  - { name: a, tenant: acme, host: gpu01, gpus: [\"0000:1b:00.0\"], gpu: { model: H200-141GB } }\n  - { name: b, tenant: acme, host: gpu01, gpus: [\"0000:1b:00.0\"], gpu: { model: H200-141GB } }",
        fix: "pin each VM to a GPU of its own, or drop `gpus` from one of them and let fabrik place it",
    },
    Rule {
        code: "fabrik::gpu::pinned-replicas",
        summary: "a VM entry with `replicas` greater than 1 pins whole GPUs",
        protects: "every replica would get the same passthrough GPUs, which only one of them can hold",
        example: "vms:\n  - name: infer\n    tenant: acme\n    replicas: 2\n    host: gpu01\n    gpus: [\"0000:1b:00.0\"]\n    gpu: { model: H200-141GB }",
        fix: "drop `gpus` and let fabrik place the replicas, or write one VM entry per pinned GPU",
    },
    Rule {
        code: "fabrik::gpu::host-gpu",
        summary: "a VM pins a GPU that is left to the host (`mode: host`, the default without a MIG layout)",
        protects: "fabrik taking a device the host itself uses (a display GPU, a GPU for host services) and unbinding its driver",
        example: "gpus:\n  - { address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0 }   # mode defaults to host\nvms:\n  - { name: a, tenant: acme, host: gpu01, gpus: [\"0000:1b:00.0\"], gpu: { model: H200-141GB } }",
        fix: "declare the GPU's mode (`passthrough` for a whole GPU) if fabrik is to hand it out, or pin another GPU",
    },
    Rule {
        code: "fabrik::gpu::mode-mismatch",
        summary: "a pinned GPU whose `mode` does not serve the VM's request",
        protects: "a passthrough GPU also handed out as MIG instances or time slices, or a MIG GPU passed through whole: one of the promises breaks at apply",
        example: "gpus:\n  - { address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0, mode: passthrough }\nvms:\n  - { name: nb, tenant: acme, host: gpu01, gpus: [\"0000:1b:00.0\"], gpu: { model: H200-141GB, mig: 1g.18gb } }",
        fix: "a whole-GPU request needs a `passthrough` GPU, a MIG request a `mig` GPU with that profile in its layout, a time slice a `time-sliced` GPU: pin one of those, or change the request",
    },
    Rule {
        code: "fabrik::gpu::model-mismatch",
        summary: "a pinned GPU of another model than the VM asks for",
        protects: "a VM sized for one model (memory, MIG profile, driver) started on another",
        example: "gpus:\n  - { address: \"0000:1b:00.0\", model: H100-80GB, numa-node: 0, mode: passthrough }\nvms:\n  - { name: a, tenant: acme, host: gpu01, gpus: [\"0000:1b:00.0\"], gpu: { model: H200-141GB } }",
        fix: "pin a GPU of the requested model, or request the model the GPU is",
    },
    Rule {
        code: "fabrik::gpu::count-mismatch",
        summary: "the number of pinned GPUs differs from the request's `count`",
        protects: "a VM that gets more or fewer GPUs than it was sized for; for MIG requests, a pinned GPU that would give the VM no instance",
        example: "vms:\n  - name: train\n    tenant: acme\n    host: gpu01\n    gpus: [\"0000:1b:00.0\"]\n    gpu: { model: H200-141GB, count: 2 }",
        fix: "pin exactly `count` GPUs for whole GPUs and time slices; for MIG, at most `count` GPUs (the instances come from them)",
    },
    Rule {
        code: "fabrik::gpu::pin-without-request",
        summary: "a VM pins GPUs but has no `gpu` request",
        protects: "GPUs reserved for a VM without saying what it gets: whole, MIG or time-sliced, and which model",
        example: "vms:\n  - { name: a, tenant: acme, host: gpu01, vcpus: 4, memory: 16GiB, gpus: [\"0000:1b:00.0\"] }",
        fix: "add a `gpu` request (`gpu: { model: H200-141GB }` for a whole GPU), or remove `gpus`",
    },
    Rule {
        code: "fabrik::gpu::mig-instances",
        summary: "more MIG instances of a profile pinned to one GPU than its layout has",
        protects: "two VMs promised one MIG instance; the last to start finds none free",
        example: "gpus:\n  - { address: \"0000:1b:00.0\", model: H200-141GB, numa-node: 0, mig: [3g.71gb, 1g.18gb] }\nvms:\n  - { name: nb, tenant: acme, replicas: 2, host: gpu01, gpus: [\"0000:1b:00.0\"], gpu: { model: H200-141GB, mig: 1g.18gb } }",
        fix: "add instances of the profile to the GPU's layout, pin some VMs to another MIG GPU, or lower `replicas` or `count`",
    },
    Rule {
        code: "fabrik::gpu::no-time-sliced-gpu",
        summary: "a VM asks for a time slice, but no host it may run on has a time-sliced GPU of the model",
        protects: "a time slice taken from a passthrough or MIG GPU, which are never shared in turn: the request can only fail, or break another VM's isolation",
        example: "gpus:\n  - { address: \"0000:61:00.0\", model: H200-141GB, numa-node: 0, mode: passthrough }\nvms:\n  - { name: viz, tenant: acme, host: gpu02, gpu: { model: H200-141GB, time-sliced: true } }",
        fix: "declare a GPU of the model `mode: time-sliced` on the host (or on one of the tenant's hosts), or ask for a MIG instance or a whole GPU",
    },
    Rule {
        code: "fabrik::gpu::sriov-vfs",
        summary: "VMs on a host use more SR-IOV virtual functions of a NIC than it declares in `sriov-vfs`",
        protects: "a VF handed to two VMs, or a VM that cannot start because the physical function has no VF left",
        example: "nics:\n  - { name: ib0, kind: infiniband, sriov-vfs: 1 }\nvms:\n  - { name: a, tenant: acme, host: gpu01, replicas: 2, nics: [{ network: acme-ib, model: sriov }] }",
        fix: "raise `sriov-vfs` on the network's parent NIC (within what the card supports), or attach fewer VMs on that host",
    },
    Rule {
        code: "fabrik::gpu::sriov-network",
        summary: "an SR-IOV NIC on a network that hands out no virtual functions, or a virtio NIC on one that hands out only them",
        protects: "NICs that cannot be built: a VF exists only on `sriov` networks and InfiniBand partitions (the VF carries the pkey), and IPoIB or a VF pool cannot be bridged to a virtio NIC",
        example: "networks:\n  - { name: acme-net, purpose: tenant, kind: vxlan, tenant: acme, vni: 10001 }\nvms:\n  - { name: a, tenant: acme, nics: [{ network: acme-net, model: sriov }] }",
        fix: "use `model: sriov` on `sriov` and `ib-partition` networks and `virtio` (the default) on bridges, VLANs and VXLANs",
    },
];

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    let ix = Index::new(spec);
    let mut book = PinBook::default();
    for (i, e) in spec.effective_vms().enumerate() {
        check_pins(&ix, i, e, &mut book, out);
        check_time_slice(&ix, e, out);
    }
    book.report(&ix, out);
    sriov::check(&ix, out);
}

/// Objects by name, for the GPU, fabric and isolation checks.
pub(super) struct Index<'a> {
    pub spec: &'a Spec,
    pub hosts: HashMap<&'a str, usize>,
    pub tenants: HashMap<&'a str, &'a Tenant>,
    pub networks: HashMap<&'a str, &'a Network>,
}

impl<'a> Index<'a> {
    pub fn new(spec: &'a Spec) -> Index<'a> {
        Index {
            spec,
            hosts: spec.hosts.iter().enumerate().map(|(i, h)| (h.name.value.as_str(), i)).collect(),
            tenants: spec.tenants.iter().map(|t| (t.name.value.as_str(), t)).collect(),
            networks: spec.networks.iter().map(|n| (n.name.value.as_str(), n)).collect(),
        }
    }

    /// The host a VM names, when it names one that exists.
    pub fn host_of(&self, vm: &Vm) -> Option<usize> {
        vm.host.as_ref().and_then(|h| self.hosts.get(h.value.as_str()).copied())
    }

    pub fn tenant_of(&self, vm: &Vm) -> Option<&'a Tenant> {
        self.tenants.get(vm.tenant.value.as_str()).copied()
    }

    /// Hosts a tenant's VMs may run on (those that exist), in the tenant's order.
    pub fn tenant_hosts(&self, tenant: &Tenant) -> Vec<usize> {
        let mut seen = HashSet::new();
        tenant
            .hosts
            .iter()
            .filter_map(|h| self.hosts.get(h.value.as_str()).copied())
            .filter(|&h| seen.insert(h))
            .collect()
    }

    /// The GPU at `address` on host `h`, with its index there.
    pub fn gpu(&self, h: usize, address: PciAddress) -> Option<(usize, &'a Gpu)> {
        self.spec.hosts[h].gpus.iter().enumerate().find(|(_, g)| g.address.value == address)
    }

    pub fn host(&self, h: usize) -> &'a Host {
        &self.spec.hosts[h]
    }
}

/// What a GPU request asks for, and so which GPU mode serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Want<'a> {
    Whole,
    Mig(&'a MigProfileName),
    TimeSliced,
}

impl<'a> Want<'a> {
    pub fn of(req: &'a GpuRequest) -> Want<'a> {
        match (&req.mig, req.time_sliced) {
            (Some(p), _) => Want::Mig(&p.value),
            (None, true) => Want::TimeSliced,
            (None, false) => Want::Whole,
        }
    }

    /// The GPU mode that serves this request.
    pub fn mode(self) -> GpuMode {
        match self {
            Want::Whole => GpuMode::Passthrough,
            Want::Mig(_) => GpuMode::Mig,
            Want::TimeSliced => GpuMode::TimeSliced,
        }
    }

    /// The sharing model a tenant must accept to make this request.
    pub fn sharing(self) -> Sharing {
        match self {
            Want::Whole => Sharing::Exclusive,
            Want::Mig(_) => Sharing::Mig,
            Want::TimeSliced => Sharing::TimeSliced,
        }
    }
}

/// Whether a request writes its `count`. A defaulted count (always 1) is spanned at the
/// request's first key, which is longer than one digit: a written count's span is its digits.
fn count_written(req: &GpuRequest) -> bool {
    req.count.span.len() == req.count.value.to_string().len()
}

/// "an H200-141GB", "a GB200".
pub(super) fn a(model: GpuModel) -> String {
    let article = if model.word().starts_with('G') { "a" } else { "an" };
    format!("{article} {model}")
}

/// What a request asks for, in words: "a whole H200-141GB", "2 `1g.18gb` MIG instances
/// of an H200-141GB", "a time slice of an H200-141GB".
pub(super) fn describe(req: &GpuRequest) -> String {
    let (n, model) = (req.count.value, req.model.value);
    match (Want::of(req), n) {
        (Want::Whole, 1) => format!("a whole {model}"),
        (Want::Whole, n) => format!("{n} whole {model} GPUs"),
        (Want::Mig(p), 1) => format!("a `{p}` MIG instance of {}", a(model)),
        (Want::Mig(p), n) => format!("{n} `{p}` MIG instances of {}", a(model)),
        (Want::TimeSliced, 1) => format!("a time slice of {}", a(model)),
        (Want::TimeSliced, n) => format!("time slices of {n} {model} GPUs"),
    }
}

/// Whether `gpu` can serve a request for `model` and `want`.
pub(super) fn serves(gpu: &Gpu, model: GpuModel, want: Want<'_>) -> bool {
    gpu.model.value == model
        && gpu.mode.value == want.mode()
        && match want {
            Want::Mig(p) => gpu.mig.iter().any(|s| s.profile.value == *p),
            Want::Whole | Want::TimeSliced => true,
        }
}

/// A GPU by host and position: ordered, so that diagnostics come out in file order.
pub(super) type GpuKey = (usize, usize);

/// The GPUs a VM entry could get: the ones it pins, else every GPU that serves its request
/// on its host, else on its tenant's hosts. Unknown hosts and GPUs are left out (the
/// reference checks report them).
pub(super) struct Candidates<'a> {
    pub pinned: bool,
    pub gpus: Vec<(GpuKey, &'a Gpu)>,
}

pub(super) fn candidates<'a>(ix: &Index<'a>, e: Effective<'a>, req: &'a GpuRequest) -> Candidates<'a> {
    let want = Want::of(req);
    if !e.vm.gpus.is_empty() {
        let gpus = ix
            .host_of(e.vm)
            .map(|h| e.vm.gpus.iter().filter_map(|pin| ix.gpu(h, pin.value).map(|(g, gpu)| ((h, g), gpu))).collect())
            .unwrap_or_default();
        return Candidates { pinned: true, gpus };
    }
    let hosts = match (ix.host_of(e.vm), e.vm.host.is_some()) {
        (Some(h), _) => vec![h],
        (None, true) => Vec::new(), // an unknown host
        (None, false) => ix.tenant_of(e.vm).map(|t| ix.tenant_hosts(t)).unwrap_or_default(),
    };
    let gpus = hosts
        .into_iter()
        .flat_map(|h| {
            ix.host(h)
                .gpus
                .iter()
                .enumerate()
                .filter(|(_, g)| serves(g, req.model.value, want))
                .map(move |(g, gpu)| ((h, g), gpu))
        })
        .collect();
    Candidates { pinned: false, gpus }
}

pub(super) fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `a`, `a` and `b`, `a`, `b` and `c`.
pub(super) fn and_list<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [init @ .., last] => {
            format!("{} and {}", init.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", "), last.as_ref())
        }
    }
}

/// Where a diagnostic about a VM's workload value points: the value when the VM gives it,
/// else the VM's `template` line, with the template's value shown beside it.
pub(super) fn inherited(vm: &Vm, own: bool, value: Span, label: String) -> (Span, String, Option<(Span, String)>) {
    match (&vm.template, own) {
        (Some(t), false) => {
            (t.span, format!("{label} (from template `{}`)", t.value), Some((value, "here".to_string())))
        }
        _ => (value, label, None),
    }
}

/// Whole-GPU pins and MIG demand per pinned GPU, collected over all VM entries.
#[derive(Default)]
struct PinBook<'a> {
    whole: BTreeMap<GpuKey, Vec<(usize, &'a Spanned<PciAddress>)>>,
    mig: BTreeMap<GpuKey, Vec<MigPin<'a>>>,
}

/// A VM entry's pin of a MIG GPU, and the fewest instances it takes from it.
struct MigPin<'a> {
    entry: usize,
    profile: &'a MigProfileName,
    instances: u64,
    pin: &'a Spanned<PciAddress>,
}

/// Checks one VM entry's pins; records them when they are sound.
fn check_pins<'a>(ix: &Index<'a>, i: usize, e: Effective<'a>, book: &mut PinBook<'a>, out: &mut Vec<Diagnostic>) {
    let vm = e.vm;
    let Some(first) = vm.gpus.first() else { return };
    let Some(h) = ix.host_of(vm) else { return }; // no host or an unknown one: reported by refs
    let host = ix.host(h);
    let Some(req) = e.gpu() else {
        let Some((_, pinned)) = ix.gpu(h, first.value) else {
            return; // an unknown GPU is reported by refs: one error for a mistyped pin
        };
        let pins = vm.gpus.iter().map(|p| format!("`{}`", p.value)).collect::<Vec<_>>();
        out.push(
            Diagnostic::error(
                "fabrik::gpu::pin-without-request",
                format!("VM `{}` pins GPU {} but has no `gpu` request", vm.name.value, pins.join(", ")),
            )
            .at(first.span, "pinned here")
            .also(
                vm.name.span,
                if vm.template.is_some() { "no `gpu` in this VM or its template" } else { "no `gpu` in this VM" },
            )
            .help(format!(
                "add a `gpu` request (`gpu: {{ model: {} }}` for the whole GPU), or remove `gpus`",
                pinned.model.value
            )),
        );
        return;
    };
    let want = Want::of(req);
    if let Want::Mig(p) = want
        && mig::profile(req.model.value, p).is_none()
    {
        return; // an unknown profile: reported by the MIG checks
    }
    let (req_at, req_label, req_extra) =
        inherited(vm, vm.workload.gpu.is_some(), req.span, format!("asks for {}", describe(req)));
    let with_request = |d: Diagnostic| {
        let d = d.also(req_at, req_label.clone());
        match &req_extra {
            Some((s, l)) => d.also(*s, l.clone()),
            None => d,
        }
    };
    let mut sound = true;
    let mut seen: HashMap<PciAddress, &Spanned<PciAddress>> = HashMap::new();
    let mut resolved = Vec::new();
    for pin in &vm.gpus {
        if let Some(earlier) = seen.insert(pin.value, pin) {
            out.push(
                Diagnostic::error(
                    "fabrik::gpu::pinned-twice",
                    format!("VM `{}` pins GPU {} of host `{}` twice", vm.name.value, pin.value, host.name.value),
                )
                .at(pin.span, "pinned again")
                .also(earlier.span, "first pinned here")
                .help("list each GPU once; to get more GPUs, pin other addresses"),
            );
            sound = false;
            continue;
        }
        let Some((g, gpu)) = ix.gpu(h, pin.value) else {
            sound = false; // reported by refs
            continue;
        };
        let at = format!("GPU {} of host `{}`", gpu.address.value, host.name.value);
        if gpu.mode.value == GpuMode::Host {
            out.push(
                with_request(
                    Diagnostic::error(
                        "fabrik::gpu::host-gpu",
                        format!(
                            "VM `{}` pins {at}, which is left to the host: fabrik does not hand it out",
                            vm.name.value
                        ),
                    )
                    .at(pin.span, "this GPU is the host's")
                    .also(gpu.mode.span, "left to the host (`mode: host`, the default without `mig`)"),
                )
                .help(format!("to hand the GPU out, give it `mode: {}`; otherwise pin another GPU", want.mode())),
            );
            sound = false;
        } else if gpu.model.value != req.model.value {
            out.push(
                with_request(
                    Diagnostic::error(
                        "fabrik::gpu::model-mismatch",
                        format!(
                            "VM `{}` asks for {} but pins {at}, {}",
                            vm.name.value,
                            describe(req),
                            a(gpu.model.value)
                        ),
                    )
                    .at(pin.span, a(gpu.model.value))
                    .also(gpu.model.span, "the GPU's model"),
                )
                .help(match host.gpus.iter().find(|g| serves(g, req.model.value, want)) {
                    Some(g) => format!(
                        "pin a GPU of model {} (on this host: {}), or ask for {}",
                        req.model.value, g.address.value, gpu.model.value
                    ),
                    None => format!(
                        "host `{}` has no {} to serve this request; pin another GPU or ask for {}",
                        host.name.value, req.model.value, gpu.model.value
                    ),
                }),
            );
            sound = false;
        } else if gpu.mode.value != want.mode() {
            let why = match gpu.mode.value {
                GpuMode::Passthrough => "a passthrough GPU goes whole to one VM and is never shared",
                GpuMode::Mig => "a MIG GPU is handed out as its layout's instances, never whole",
                GpuMode::TimeSliced => "a time-sliced GPU is shared in turn, never given whole or cut by MIG",
                GpuMode::Host => "",
            };
            out.push(
                with_request(
                    Diagnostic::error(
                        "fabrik::gpu::mode-mismatch",
                        format!(
                            "VM `{}` asks for {} but pins {at}, which is `{}`",
                            vm.name.value,
                            describe(req),
                            gpu.mode.value
                        ),
                    )
                    .at(pin.span, format!("a `{}` GPU", gpu.mode.value))
                    .also(gpu.mode.span, format!("mode `{}`", gpu.mode.value)),
                )
                .help(format!("{why}: pin a `{}` GPU, or change the request", want.mode())),
            );
            sound = false;
        } else {
            // A MIG GPU without the profile is reported with the instance counts.
            resolved.push(((h, g), pin));
        }
    }
    let count = req.count.value as usize;
    let pinned = vm.gpus.len();
    let wrong_count = match want {
        Want::Whole | Want::TimeSliced => pinned != count,
        Want::Mig(_) => pinned > count,
    };
    if wrong_count {
        let (count_at, count_label, count_extra) = if count_written(req) {
            inherited(vm, vm.workload.gpu.is_some(), req.count.span, format!("count {count}"))
        } else {
            inherited(vm, vm.workload.gpu.is_some(), req.span, "no `count`: 1".to_string())
        };
        let pins_span = first.span.join(vm.gpus[pinned - 1].span);
        let (message, help) = match want {
            Want::Mig(p) => (
                format!(
                    "VM `{}` pins {pinned} GPUs for {count} `{p}` instance{}: each pinned GPU must give it at least one",
                    vm.name.value,
                    plural(count as u64)
                ),
                "pin at most `count` GPUs; the instances come from the pinned GPUs".to_string(),
            ),
            Want::Whole | Want::TimeSliced => (
                format!(
                    "VM `{}` asks for {count} {} GPU{} but pins {pinned}",
                    vm.name.value,
                    req.model.value,
                    plural(count as u64)
                ),
                format!("pin {count} GPU{} or set `count: {pinned}`", plural(count as u64)),
            ),
        };
        let mut d = Diagnostic::error("fabrik::gpu::count-mismatch", message)
            .at(pins_span, format!("{pinned} pinned"))
            .also(count_at, count_label);
        if let Some((s, l)) = count_extra {
            d = d.also(s, l);
        }
        out.push(d.help(help));
        sound = false;
    }
    if want == Want::Whole
        && let Some(r) = vm.replicas.as_ref().filter(|r| r.value > 1)
    {
        out.push(
            Diagnostic::error(
                "fabrik::gpu::pinned-replicas",
                format!(
                    "VM `{}` has {} replicas but pins whole GPUs: every replica would get the same ones",
                    vm.name.value, r.value
                ),
            )
            .at(r.span, format!("{} replicas", r.value))
            .also(first.span.join(vm.gpus[pinned - 1].span), "pinned for every replica")
            .help("drop `gpus` and let fabrik place the replicas, or write one VM entry per pinned GPU"),
        );
        sound = false;
    }
    let replicas = u64::from(e.count());
    if !sound || replicas == 0 {
        return; // `replicas: 0` stands for no VM: its pins take nothing
    }
    for (key, pin) in resolved {
        match want {
            Want::Whole => book.whole.entry(key).or_default().push((i, pin)),
            Want::Mig(p) => {
                // One pinned GPU gives every instance; several give at least one each.
                let each = if pinned == 1 { u64::from(req.count.value) } else { 1 };
                book.mig.entry(key).or_default().push(MigPin { entry: i, profile: p, instances: each * replicas, pin });
            }
            Want::TimeSliced => {}
        }
    }
}

/// A time slice comes only from a `time-sliced` GPU: some host the VM may run on must
/// have `count` of them. Pinned VMs are judged by their pins.
fn check_time_slice(ix: &Index<'_>, e: Effective<'_>, out: &mut Vec<Diagnostic>) {
    let Some(req) = e.gpu() else { return };
    if Want::of(req) != Want::TimeSliced || !e.vm.gpus.is_empty() || e.count() == 0 {
        return;
    }
    let model = req.model.value;
    let count = u64::from(req.count.value);
    let have = |h: usize| ix.host(h).gpus.iter().filter(|g| serves(g, model, Want::TimeSliced)).count() as u64;
    let (hosts, place) = match (ix.host_of(e.vm), &e.vm.host) {
        (Some(h), _) => (vec![h], None),
        (None, Some(_)) => return, // an unknown host: reported by refs
        (None, None) => match ix.tenant_of(e.vm) {
            Some(t) => (ix.tenant_hosts(t), Some(t)),
            None => return,
        },
    };
    if hosts.iter().any(|&h| have(h) >= count) {
        return;
    }
    let vm = e.vm;
    let asks = describe(req);
    let none = |n: u64| if n == 0 { "no".to_string() } else { format!("only {n}") };
    let (at, label, extra) = inherited(vm, vm.workload.gpu.is_some(), req.span, format!("asks for {asks}"));
    let (message, where_at, where_label) = match place {
        None => {
            let host = ix.host(hosts[0]);
            (
                format!(
                    "VM `{}` asks for {asks}, but host `{}` has {} time-sliced {model}",
                    vm.name.value,
                    host.name.value,
                    none(have(hosts[0]))
                ),
                vm.host.as_ref().map_or(vm.name.span, |h| h.span),
                "runs on this host".to_string(),
            )
        }
        Some(t) => (
            format!(
                "VM `{}` asks for {asks}, but no host of tenant `{}` has {} time-sliced {model}",
                vm.name.value,
                t.name.value,
                if count == 1 { "a".to_string() } else { count.to_string() }
            ),
            match (t.hosts.first(), t.hosts.last()) {
                (Some(a), Some(b)) => a.span.join(b.span),
                _ => t.name.span,
            },
            format!("hosts of `{}`", t.name.value),
        ),
    };
    let mut d = Diagnostic::error("fabrik::gpu::no-time-sliced-gpu", message).at(at, label).also(where_at, where_label);
    if let Some((s, l)) = extra {
        d = d.also(s, l);
    }
    out.push(d.help(format!(
        "declare {} `mode: time-sliced` where the VM runs, or ask for a MIG instance or a whole GPU: passthrough and MIG GPUs are never time-sliced",
        a(model)
    )));
}

impl PinBook<'_> {
    fn report(&self, ix: &Index<'_>, out: &mut Vec<Diagnostic>) {
        let vms = &ix.spec.vms;
        for (&(h, g), pins) in &self.whole {
            let gpu = &ix.host(h).gpus[g];
            let Some((first, rest)) = pins.split_first() else { continue };
            for (i, pin) in rest {
                out.push(
                    Diagnostic::error(
                        "fabrik::gpu::pinned-twice",
                        format!(
                            "GPU {} of host `{}` is passed through to both VM `{}` and VM `{}`",
                            gpu.address.value,
                            ix.host(h).name.value,
                            vms[first.0].name.value,
                            vms[*i].name.value
                        ),
                    )
                    .at(pin.span, format!("pinned by `{}`", vms[*i].name.value))
                    .also(first.1.span, format!("pinned by `{}`", vms[first.0].name.value))
                    .also(gpu.address.span, "a passthrough GPU: one VM at a time")
                    .help("pin each VM to a GPU of its own, or drop `gpus` from one and let fabrik place it"),
                );
            }
        }
        for (&(h, g), uses) in &self.mig {
            let gpu = &ix.host(h).gpus[g];
            let mut profiles: Vec<&MigProfileName> = uses.iter().map(|u| u.profile).collect();
            profiles.sort();
            profiles.dedup();
            for p in profiles {
                let have = gpu.mig.iter().filter(|s| s.profile.value == *p).count() as u64;
                let users: Vec<_> = uses.iter().filter(|u| u.profile == p).collect();
                let want: u64 = users.iter().map(|u| u.instances).sum();
                if want <= have {
                    continue;
                }
                let at = format!("GPU {} of host `{}`", gpu.address.value, ix.host(h).name.value);
                let who: Vec<String> =
                    users.iter().map(|u| format!("{} for `{}`", u.instances, vms[u.entry].name.value)).collect();
                let layout = if have == 0 {
                    format!("no `{p}` instance in its layout")
                } else {
                    format!("{have} `{p}` instance{}", plural(have))
                };
                let message = match users.as_slice() {
                    [one] => {
                        format!("{at} has {layout}, but `{}` pins it for {}", vms[one.entry].name.value, one.instances)
                    }
                    _ => format!("{at} has {layout}, but {want} are pinned to it: {}", and_list(&who)),
                };
                let over = crossing(users.iter().map(|u| u.instances), have);
                let mut d = Diagnostic::error("fabrik::gpu::mig-instances", message).at(
                    users[over].pin.span,
                    format!("`{}` wants {} `{p}` here", vms[users[over].entry].name.value, users[over].instances),
                );
                for (_, u) in users.iter().enumerate().filter(|&(k, _)| k != over) {
                    d = d.also(u.pin.span, format!("`{}` wants {}", vms[u.entry].name.value, u.instances));
                }
                let layout_span = match (gpu.mig.first(), gpu.mig.last()) {
                    (Some(a), Some(b)) => a.span.join(b.span),
                    _ => gpu.address.span,
                };
                d = d.also(
                    layout_span,
                    if have == 0 { format!("no `{p}` in this layout") } else { format!("{have} `{p}` in this layout") },
                );
                out.push(d.help(format!(
                    "add `{p}` instances to the layout of {}, pin some VMs to another MIG GPU, or lower `replicas` or `count`",
                    gpu.address.value
                )));
            }
        }
    }
}

/// The first of `amounts` whose running total passes `limit`: the one to point at. The
/// last when none does.
fn crossing(amounts: impl ExactSizeIterator<Item = u64>, limit: u64) -> usize {
    let last = amounts.len().saturating_sub(1);
    let mut total = 0;
    amounts
        .enumerate()
        .find(|&(_, n)| {
            total += n;
            total > limit
        })
        .map_or(last, |(i, _)| i)
}

#[cfg(test)]
pub(super) mod tests;
