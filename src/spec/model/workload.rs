//! Templates and VMs. A VM takes every workload key of its template and may override
//! any of them; a VM without a template gives them itself.

use super::params::{self, ParamDecl, ParamSetting};
use crate::diag::Diagnostic;
use crate::hw::GpuModel;
use crate::spec::decode::{Decoder, Obj, Word};
use crate::spec::shape::{Field, Shape, Ty, opt, req};
use crate::spec::source::{Span, Spanned};
use crate::spec::tree::Node;
use crate::spec::types::{ByteSize, CpuSet, MigProfileName, PageSize, PciAddress};
use crate::words;

words! {
    /// CPU policy, as Nova's `hw:cpu_policy`.
    pub enum CpuPolicy {
        /// Each vCPU pinned to its own host CPU.
        Dedicated = "dedicated",
        /// vCPUs float over the host's shared CPUs.
        Shared = "shared",
    }
}

words! {
    /// NUMA affinity of a VM's CPUs, memory and devices, as Nova's
    /// `hw:pci_numa_affinity_policy`.
    pub enum NumaPolicy {
        /// Everything on one NUMA node, or the VM is not placed.
        Required = "required",
        /// One node when possible; a warning otherwise.
        Preferred = "preferred",
        /// Everything on one CPU socket.
        Socket = "socket",
        /// No NUMA constraint.
        None = "none",
    }
}

words! {
    pub enum Firmware {
        Uefi = "uefi",
        Bios = "bios",
    }
}

words! {
    pub enum NicModel {
        /// A virtio NIC on the network's bridge.
        Virtio = "virtio",
        /// An SR-IOV virtual function passed through.
        Sriov = "sriov",
    }
}

words! {
    pub enum DiskBus {
        Virtio = "virtio",
        Scsi = "scsi",
        Sata = "sata",
    }
}

words! {
    pub enum Power {
        Running = "running",
        Stopped = "stopped",
    }
}

/// The keys a template and a VM share. In a VM each overrides the template's.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Workload {
    pub vcpus: Option<Spanned<u32>>,
    pub memory: Option<Spanned<ByteSize>>,
    pub hugepages: Option<Spanned<PageSize>>,
    pub cpu_policy: Option<Spanned<CpuPolicy>>,
    pub numa: Option<Spanned<NumaPolicy>>,
    pub overcommit: Option<Overcommit>,
    pub gpu: Option<GpuRequest>,
    /// `None` when not given (a VM then keeps its template's list).
    pub nics: Option<Vec<NicRequest>>,
    pub disks: Option<Vec<Disk>>,
    pub firmware: Option<Spanned<Firmware>>,
}

/// Overcommit ratios a template allows on its host (1.0: none).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Overcommit {
    pub cpu: Option<Spanned<f64>>,
    pub memory: Option<Spanned<f64>>,
    #[serde(skip)]
    pub span: Span,
}

/// GPUs a VM asks for: whole GPUs of a model, MIG instances of a profile, or a time slice.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GpuRequest {
    pub model: Spanned<GpuModel>,
    pub count: Spanned<u32>,
    pub mig: Option<Spanned<MigProfileName>>,
    pub time_sliced: bool,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct NicRequest {
    pub network: Spanned<String>,
    pub model: Spanned<NicModel>,
    /// A MAC given by hand, lowercase (`mac`); derived when absent.
    pub mac: Option<Spanned<String>>,
    /// An IP address given by hand (`address`); allocated when absent and the network
    /// has a `subnet`.
    pub address: Option<Spanned<std::net::IpAddr>>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Disk {
    pub name: Spanned<String>,
    pub image: Option<Spanned<String>>,
    pub size: Option<Spanned<ByteSize>>,
    pub pool: Option<Spanned<String>>,
    pub bus: Spanned<DiskBus>,
    /// The volume's name, given by hand (`volume`): to keep a volume an older fabrik
    /// named. Derived when absent (`crate::desired::names::volume`).
    pub volume: Option<Spanned<String>>,
    /// The volume may be deleted with its VM. Off unless said: volumes may hold data.
    pub delete_with_vm: bool,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Template {
    pub name: Spanned<String>,
    pub description: Option<Spanned<String>>,
    pub workload: Workload,
    /// The parameters VMs made from the template may set.
    pub params: Vec<ParamDecl>,
    /// The guest's cloud-config, a minijinja template (see `crate::guest::config`).
    pub user_data: Option<Spanned<String>>,
    /// Services its VMs expose (see [`super::endpoint`]).
    pub endpoints: Vec<super::endpoint::Endpoint>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Vm {
    pub name: Spanned<String>,
    pub description: Option<Spanned<String>>,
    pub tenant: Spanned<String>,
    pub template: Option<Spanned<String>>,
    /// Number of copies, named `<name>-0`, `<name>-1`, …; `None` is one VM named `<name>`.
    pub replicas: Option<Spanned<u32>>,
    pub host: Option<Spanned<String>>,
    /// GPUs pinned by PCI address on `host`.
    pub gpus: Vec<Spanned<PciAddress>>,
    /// Host CPUs the vCPUs are pinned to.
    pub cpus: Option<Spanned<CpuSet>>,
    pub power: Spanned<Power>,
    pub workload: Workload,
    /// Values for the template's parameters. Not serialized: some may be secrets.
    #[serde(skip)]
    pub params: Vec<ParamSetting>,
    /// SSH public keys this VM's guest accepts, beside its tenant's.
    pub ssh_keys: Vec<Spanned<String>>,
    #[serde(skip)]
    pub span: Span,
}

const VCPUS_MAX: i64 = 4096;
const REPLICAS_MAX: i64 = 10_000;

static WORKLOAD_FIELDS: &[Field] = &[
    opt("vcpus", Ty::Int { min: 1, max: VCPUS_MAX }, "virtual CPUs"),
    opt("memory", Ty::Size, "memory, e.g. `128GiB`"),
    opt("hugepages", Ty::PageSize, "back memory with hugepages of this size, `2M` or `1G`"),
    opt("cpu-policy", Ty::Enum(CpuPolicy::NAMES), "dedicated (pinned) or shared vCPUs"),
    opt("numa", Ty::Enum(NumaPolicy::NAMES), "NUMA policy: required, preferred, socket or none"),
    opt("overcommit", Ty::Object(&OVERCOMMIT), "overcommit ratios allowed on the host"),
    opt("gpu", Ty::Object(&GPU_REQUEST), "GPUs: whole GPUs of a model, a MIG profile, or time-sliced"),
    opt("nics", Ty::Items { shape: &NIC_REQUEST, singular: "nic" }, "network interfaces, by network"),
    opt("disks", Ty::Items { shape: &DISK, singular: "disk" }, "disks, from images or empty"),
    opt("firmware", Ty::Enum(Firmware::NAMES), "uefi or bios"),
];

pub static TEMPLATE: Shape = Shape {
    name: "template",
    doc: "A VM shape that VMs refer to and may override.",
    label: Some("name"),
    fields: &[
        req("name", Ty::Name, "the template's name"),
        opt("description", Ty::Str, "free text"),
        params::TEMPLATE_FIELD,
        opt(
            "user-data",
            Ty::Str,
            "the guest's `#cloud-config` user-data, a Jinja template of `vm` (name, tenant, gpus, macs), `params` and `ssh_keys`",
        ),
        super::endpoint::TEMPLATE_FIELD,
    ],
    more: WORKLOAD_FIELDS,
};

pub static VM: Shape = Shape {
    name: "vm",
    doc: "A VM (or `replicas` of them) of a tenant.",
    label: Some("name"),
    fields: &[
        req("name", Ty::Name, "the VM's name; with replicas, the prefix of `<name>-<i>`"),
        opt("description", Ty::Str, "free text"),
        req("tenant", Ty::Name, "tenant that owns the VM"),
        opt("template", Ty::Name, "template the VM is made from"),
        opt("replicas", Ty::Int { min: 0, max: REPLICAS_MAX }, "number of copies, named `<name>-0`, `<name>-1`, …"),
        opt("host", Ty::Name, "host the VM must run on"),
        opt("gpus", Ty::List(&Ty::Pci), "GPUs of `host` pinned to the VM, by PCI address"),
        opt("cpus", Ty::CpuSet, "host CPUs the vCPUs are pinned to"),
        opt("power", Ty::Enum(Power::NAMES), "running (default) or stopped"),
        params::VM_FIELD,
        opt(
            "ssh-keys",
            Ty::List(&Ty::Str),
            "SSH public keys this VM accepts, beside its tenant's (in its cloud-init seed)",
        ),
    ],
    more: WORKLOAD_FIELDS,
};

pub static OVERCOMMIT: Shape = Shape {
    name: "overcommit",
    doc: "Overcommit ratios; 1.0 means none.",
    label: None,
    more: &[],
    fields: &[
        opt("cpu", Ty::Float { min: 1.0, max: 64.0 }, "vCPUs per host CPU"),
        opt("memory", Ty::Float { min: 1.0, max: 4.0 }, "VM memory per byte of host memory"),
    ],
};

pub static GPU_REQUEST: Shape = Shape {
    name: "gpu request",
    doc: "GPUs a VM asks for.",
    label: None,
    more: &[],
    fields: &[
        req("model", Ty::Enum(GpuModel::NAMES), "GPU model"),
        opt("count", Ty::Int { min: 1, max: 64 }, "number of GPUs or MIG instances (default 1)"),
        opt("mig", Ty::MigProfile, "MIG profile of each instance, e.g. `1g.18gb`"),
        opt("time-sliced", Ty::Bool, "share a GPU by time slicing"),
    ],
};

pub static NIC_REQUEST: Shape = Shape {
    name: "VM NIC",
    doc: "A VM's network interface.",
    label: Some("network"),
    more: &[],
    fields: &[
        req("network", Ty::Name, "network to attach to"),
        opt("model", Ty::Enum(NicModel::NAMES), "virtio (default) or sriov"),
        opt(
            "mac",
            Ty::Str,
            "the NIC's unicast MAC address, `xx:xx:xx:xx:xx:xx` (default: derived, unique in the factory, and kept for a VM that already runs)",
        ),
        opt(
            "address",
            Ty::Str,
            "the NIC's IP address on a network with a `subnet` (default: allocated from the network's ranges, and kept while the VM exists)",
        ),
    ],
};

pub static DISK: Shape = Shape {
    name: "disk",
    doc: "A VM disk: a copy of an image, or an empty volume of a size.",
    label: Some("name"),
    more: &[],
    fields: &[
        req("name", Ty::Name, "the disk's name within the VM"),
        opt("image", Ty::Name, "base image to copy"),
        opt("size", Ty::Size, "size (an image's disk may grow past the image)"),
        opt("pool", Ty::Name, "pool for the volume (default: the image's pool)"),
        opt("bus", Ty::Enum(DiskBus::NAMES), "virtio (default), scsi or sata"),
        opt(
            "volume",
            Ty::Str,
            "the volume's name in its pool (default: `<vm>-<disk>`, or `<vm>+<disk>` when the disk's name has a `-`); given to keep a volume an older fabrik named",
        ),
        opt(
            "delete-with-vm",
            Ty::Bool,
            "delete the volume when the VM is removed (default: keep it, it may hold data)",
        ),
    ],
};

fn decode_workload(d: &mut Decoder, o: &Obj<'_>) -> Workload {
    Workload {
        vcpus: o.get("vcpus").and_then(|n| d.uint(n, "vcpus", 1, VCPUS_MAX)),
        memory: o.get("memory").and_then(|n| d.size(n, "memory")),
        hugepages: o.get("hugepages").and_then(|n| d.page_size(n, "hugepages")),
        cpu_policy: o.get("cpu-policy").and_then(|n| d.word::<CpuPolicy>(n, "cpu-policy")),
        numa: o.get("numa").and_then(|n| d.word::<NumaPolicy>(n, "numa")),
        overcommit: o.get("overcommit").and_then(|n| decode_overcommit(d, n)),
        gpu: o.get("gpu").and_then(|n| decode_gpu_request(d, n)),
        nics: o.has("nics").then(|| d.items(o, "nics", decode_nic_request)),
        disks: o.has("disks").then(|| d.items(o, "disks", decode_disk)),
        firmware: o.get("firmware").and_then(|n| d.word::<Firmware>(n, "firmware")),
    }
}

fn decode_overcommit(d: &mut Decoder, n: &Node) -> Option<Overcommit> {
    let o = d.object(n, &OVERCOMMIT, "overcommit")?;
    Some(Overcommit {
        cpu: o.get("cpu").and_then(|n| d.float(n, "cpu", 1.0, 64.0)),
        memory: o.get("memory").and_then(|n| d.float(n, "memory", 1.0, 4.0)),
        span: o.span,
    })
}

fn decode_gpu_request(d: &mut Decoder, n: &Node) -> Option<GpuRequest> {
    let o = d.object(n, &GPU_REQUEST, "gpu")?;
    let model = o.get("model").and_then(|n| d.word::<GpuModel>(n, "model"));
    let count = match o.get("count") {
        Some(n) => d.uint(n, "count", 1, 64),
        None => Some(Spanned::new(1, o.head)),
    };
    let mig = o.get("mig").and_then(|n| d.mig_profile(n, "mig"));
    let time_sliced = o.get("time-sliced").and_then(|n| d.bool(n, "time-sliced")).is_some_and(|b| b.value);
    if mig.is_some() && time_sliced {
        d.conflict(
            &o,
            "mig",
            "time-sliced",
            "a VM gets either MIG instances or a time slice of a GPU; drop one of the keys",
        );
    }
    Some(GpuRequest { model: model?, count: count?, mig, time_sliced, span: o.span })
}

fn decode_nic_request(d: &mut Decoder, n: &Node) -> Option<NicRequest> {
    let o = d.object(n, &NIC_REQUEST, "nic")?;
    let network = o.get("network").and_then(|n| d.name(n, "network"));
    let model = match o.get("model") {
        Some(n) => d.word::<NicModel>(n, "model"),
        None => Some(Spanned::new(NicModel::Virtio, o.head)),
    };
    let mac = o.get("mac").and_then(|n| d.string(n, "mac")).and_then(|m| check_mac(d, m));
    let address = o.get("address").and_then(|n| d.ip(n, "address"));
    Some(NicRequest { network: network?, model: model?, mac, address, span: o.span })
}

fn decode_disk(d: &mut Decoder, n: &Node) -> Option<Disk> {
    let o = d.object(n, &DISK, "disk")?;
    let name = o.get("name").and_then(|n| d.name(n, "name"));
    let image = o.get("image").and_then(|n| d.name(n, "image"));
    let size = o.get("size").and_then(|n| d.size(n, "size"));
    let pool = o.get("pool").and_then(|n| d.name(n, "pool"));
    let bus = match o.get("bus") {
        Some(n) => d.word::<DiskBus>(n, "bus"),
        None => Some(Spanned::new(DiskBus::Virtio, o.head)),
    };
    let volume = o.get("volume").and_then(|n| d.string(n, "volume")).and_then(|v| check_volume(d, v));
    let delete_with_vm = o.get("delete-with-vm").and_then(|n| d.bool(n, "delete-with-vm")).is_some_and(|b| b.value);
    if !o.has("image") {
        d.required_because(&o, "size", "for a disk without an image");
        d.required_because(&o, "pool", "for a disk without an image");
    }
    Some(Disk { name: name?, image, size, pool, bus: bus?, volume, delete_with_vm, span: o.span })
}

pub fn decode_template(d: &mut Decoder, n: &Node) -> Option<Template> {
    let o = d.object(n, &TEMPLATE, "template")?;
    let name = o.get("name").and_then(|n| d.name(n, "name"));
    let description = o.get("description").and_then(|n| d.string(n, "description"));
    let workload = decode_workload(d, &o);
    let params = d.items(&o, "params", params::decode_param);
    let user_data = o.get("user-data").and_then(|n| d.string(n, "user-data"));
    let endpoints = d.items(&o, "endpoints", super::endpoint::decode);
    Some(Template { name: name?, description, workload, params, user_data, endpoints, span: o.span })
}

pub fn decode_vm(d: &mut Decoder, n: &Node) -> Option<Vm> {
    let o = d.object(n, &VM, "vm")?;
    let name = o.get("name").and_then(|n| d.name(n, "name"));
    let description = o.get("description").and_then(|n| d.string(n, "description"));
    let tenant = o.get("tenant").and_then(|n| d.name(n, "tenant"));
    let template = o.get("template").and_then(|n| d.name(n, "template"));
    let replicas = o.get("replicas").and_then(|n| d.uint(n, "replicas", 0, REPLICAS_MAX));
    let host = o.get("host").and_then(|n| d.name(n, "host"));
    let gpus = o.get("gpus").map(|n| d.list(n, "gpus", |d, n| d.pci(n, "gpus"))).unwrap_or_default();
    let cpus = o.get("cpus").and_then(|n| d.cpuset(n, "cpus"));
    let power = match o.get("power") {
        Some(n) => d.word::<Power>(n, "power"),
        None => Some(Spanned::new(Power::Running, o.head)),
    };
    let workload = decode_workload(d, &o);
    let params = o.get("params").map(|n| params::decode_settings(d, n)).unwrap_or_default();
    let ssh_keys = o.get("ssh-keys").map(|n| d.list(n, "ssh-keys", |d, n| d.string(n, "ssh-keys"))).unwrap_or_default();
    Some(Vm {
        name: name?,
        description,
        tenant: tenant?,
        template,
        replicas,
        host,
        gpus,
        cpus,
        power: power?,
        workload,
        params,
        ssh_keys,
        span: o.span,
    })
}

impl Vm {
    /// Names of the VMs this entry stands for: itself, or one per replica.
    pub fn instance_names(&self) -> Vec<String> {
        match &self.replicas {
            None => vec![self.name.value.clone()],
            Some(r) => (0..r.value).map(|i| format!("{}-{i}", self.name.value)).collect(),
        }
    }
}

/// A declared MAC: six hex octets, unicast (a multicast or broadcast address never
/// reaches one NIC), not all zeros. Kept lowercase, as libvirt reports it.
fn check_mac(d: &mut Decoder, mac: Spanned<String>) -> Option<Spanned<String>> {
    if let Some(normal) = crate::desired::mac::parse(&mac.value) {
        return Some(Spanned::new(normal, mac.span));
    }
    d.diags.push(
        Diagnostic::error("fabrik::spec::bad-mac", format!("`{}` is not a unicast MAC address", mac.value))
            .at(mac.span, "here")
            .help("write six hex octets separated by `:` (`02:00:5e:10:00:01`); the first octet must be even (unicast), and not every octet zero"),
    );
    None
}

/// A volume name libvirt accepts in a directory pool: a file name (not `.` or `..`, no
/// `/`), printable, at most 255 bytes.
fn check_volume(d: &mut Decoder, v: Spanned<String>) -> Option<Spanned<String>> {
    let ok = !v.value.is_empty()
        && v.value.len() <= 255
        && v.value != "."
        && v.value != ".."
        && v.value.chars().all(|c| c.is_ascii_graphic() && c != '/');
    if ok {
        return Some(v);
    }
    d.diags.push(
        Diagnostic::error("fabrik::spec::bad-volume-name", format!("`{}` is not a volume name", v.value))
            .at(v.span, "here")
            .help("a volume name is 1 to 255 printable ASCII characters, without spaces or `/`, and not `.` or `..`"),
    );
    None
}
