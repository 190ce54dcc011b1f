//! Tenants: virtual data centers with quotas, hosts, networks and accepted GPU sharing.

use crate::hw::GpuModel;
use crate::spec::decode::{Decoder, Word};
use crate::spec::shape::{Shape, Ty, opt, req};
use crate::spec::source::{Span, Spanned};
use crate::spec::tree::Node;
use crate::spec::types::ByteSize;
use crate::words;

words! {
    /// How a tenant accepts sharing a GPU with others.
    pub enum Sharing {
        /// Whole GPUs, passed through to one VM.
        Exclusive = "exclusive",
        /// MIG instances: hardware-isolated memory and compute slices.
        Mig = "mig",
        /// Time slicing: GPU memory and compute are shared in turn, weakest isolation.
        TimeSliced = "time-sliced",
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Tenant {
    pub name: Spanned<String>,
    pub description: Option<Spanned<String>>,
    pub hosts: Vec<Spanned<String>>,
    pub networks: Vec<Spanned<String>>,
    /// Accepted sharing models; `[exclusive]` when not given.
    pub sharing: Vec<Spanned<Sharing>>,
    pub quota: Option<Quota>,
    /// SSH public keys every VM of the tenant's guest accepts (cloud-init `ssh_authorized_keys`).
    pub ssh_keys: Vec<Spanned<String>>,
    #[serde(skip)]
    pub span: Span,
}

/// Limits on what a tenant's VMs may use, summed over replicas. An absent limit is no limit.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Quota {
    pub gpus: Vec<(Spanned<GpuModel>, Spanned<u32>)>,
    /// MIG compute slices (a `3g.71gb` instance uses 3).
    pub mig_slices: Option<Spanned<u32>>,
    pub vcpus: Option<Spanned<u32>>,
    pub memory: Option<Spanned<ByteSize>>,
    pub vms: Option<Spanned<u32>>,
    #[serde(skip)]
    pub span: Option<Span>,
}

const COUNT_MAX: i64 = 1_000_000;

pub static TENANT: Shape = Shape {
    name: "tenant",
    doc: "A tenant: a virtual data center with its hosts, networks and quotas.",
    label: Some("name"),
    more: &[],
    fields: &[
        req("name", Ty::Name, "the tenant's name"),
        opt("description", Ty::Str, "free text"),
        req("hosts", Ty::List(&Ty::Name), "hosts the tenant's VMs may run on"),
        opt("networks", Ty::List(&Ty::Name), "networks the tenant's VMs may attach to"),
        opt(
            "sharing",
            Ty::List(&Ty::Enum(Sharing::NAMES)),
            "GPU sharing models the tenant accepts (default: exclusive)",
        ),
        opt("quota", Ty::Object(&QUOTA), "limits on the tenant's VMs"),
        opt("ssh-keys", Ty::List(&Ty::Str), "SSH public keys every VM of the tenant accepts (in its cloud-init seed)"),
    ],
};

pub static QUOTA: Shape = Shape {
    name: "quota",
    doc: "Limits on what a tenant's VMs may use; an absent limit is no limit.",
    label: None,
    more: &[],
    fields: &[
        opt(
            "gpus",
            Ty::MapOf { key: &Ty::Enum(GpuModel::NAMES), value: &Ty::Int { min: 0, max: COUNT_MAX } },
            "whole GPUs per model, e.g. `H200-141GB: 16`",
        ),
        opt("mig-slices", Ty::Int { min: 0, max: COUNT_MAX }, "MIG compute slices (a `3g.71gb` instance uses 3)"),
        opt("vcpus", Ty::Int { min: 0, max: COUNT_MAX }, "virtual CPUs"),
        opt("memory", Ty::Size, "VM memory"),
        opt("vms", Ty::Int { min: 0, max: COUNT_MAX }, "number of VMs, replicas counted"),
    ],
};

pub fn decode_tenant(d: &mut Decoder, n: &Node) -> Option<Tenant> {
    let o = d.object(n, &TENANT, "tenant")?;
    let name = o.get("name").and_then(|n| d.name(n, "name"));
    let description = o.get("description").and_then(|n| d.string(n, "description"));
    let hosts = o.get("hosts").map(|n| d.list(n, "hosts", |d, n| d.name(n, "hosts"))).unwrap_or_default();
    let networks = o.get("networks").map(|n| d.list(n, "networks", |d, n| d.name(n, "networks"))).unwrap_or_default();
    let sharing = match o.get("sharing") {
        Some(n) => d.list(n, "sharing", |d, n| d.word::<Sharing>(n, "sharing")),
        None => vec![Spanned::new(Sharing::Exclusive, o.head)],
    };
    let quota = o.get("quota").and_then(|n| decode_quota(d, n));
    let ssh_keys = o.get("ssh-keys").map(|n| d.list(n, "ssh-keys", |d, n| d.string(n, "ssh-keys"))).unwrap_or_default();
    Some(Tenant { name: name?, description, hosts, networks, sharing, quota, ssh_keys, span: o.span })
}

fn decode_quota(d: &mut Decoder, n: &Node) -> Option<Quota> {
    let o = d.object(n, &QUOTA, "quota")?;
    let gpus = o
        .get("gpus")
        .map(|n| {
            d.map_of(
                n,
                "gpus",
                |d, k, span| d.word_str::<GpuModel>(k, span, "gpus").map(|w| w.value),
                |d, v, key| d.uint(v, key, 0, COUNT_MAX),
            )
        })
        .unwrap_or_default();
    Some(Quota {
        gpus,
        mig_slices: o.get("mig-slices").and_then(|n| d.uint(n, "mig-slices", 0, COUNT_MAX)),
        vcpus: o.get("vcpus").and_then(|n| d.uint(n, "vcpus", 0, COUNT_MAX)),
        memory: o.get("memory").and_then(|n| d.size(n, "memory")),
        vms: o.get("vms").and_then(|n| d.uint(n, "vms", 0, COUNT_MAX)),
        span: Some(o.span),
    })
}
