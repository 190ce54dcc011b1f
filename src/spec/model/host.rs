//! Hosts and their declared hardware: NUMA nodes, GPUs with their layout, NICs.

use std::net::IpAddr;

use crate::hw::{Arch, GpuModel};
use crate::spec::decode::Decoder;
use crate::spec::shape::{Shape, Ty, opt, req};
use crate::spec::source::{Span, Spanned};
use crate::spec::tree::Node;
use crate::spec::types::{ByteSize, CpuSet, MigProfileName, PageSize, PciAddress};
use crate::words;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Host {
    pub name: Spanned<String>,
    pub uri: Spanned<String>,
    pub agent: Option<Spanned<String>>,
    pub description: Option<Spanned<String>>,
    /// The CPU architecture declared (`arch`); [`Host::arch`] is what fabrik uses.
    pub arch: Option<Spanned<Arch>>,
    pub numa_nodes: Vec<NumaNode>,
    pub reserved_cpus: Option<Spanned<CpuSet>>,
    pub gpus: Vec<Gpu>,
    pub nics: Vec<Nic>,
    /// The InfiniBand subnet manager this host runs (`subnet-manager`): fabrik keeps its
    /// partition table there ([`crate::render::opensm`]).
    pub subnet_manager: Option<Spanned<SubnetManager>>,
    /// Where that subnet manager reads its partitions (`partitions-file`).
    pub partitions_file: Option<Spanned<String>>,
    #[serde(skip)]
    pub span: Span,
}

/// OpenSM's partition file when `partitions-file` is not given.
pub const OPENSM_PARTITIONS_FILE: &str = "/etc/opensm/partitions.conf";

impl Host {
    /// The partition file fabrik keeps on this host, when it runs a subnet manager.
    pub fn partitions_path(&self) -> Option<&str> {
        self.subnet_manager.as_ref()?;
        Some(self.partitions_file.as_ref().map_or(OPENSM_PARTITIONS_FILE, |p| p.value.as_str()))
    }
}

words! {
    /// An InfiniBand subnet manager fabrik can keep the partitions of.
    pub enum SubnetManager {
        /// OpenSM: `partitions.conf`, re-read on SIGHUP.
        Opensm = "opensm",
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct NumaNode {
    pub id: Spanned<u32>,
    pub socket: Option<Spanned<u32>>,
    /// Empty for a node of memory only (no `cpus`): GB200 GPU memory, CXL memory.
    pub cpus: Spanned<CpuSet>,
    pub memory: Spanned<ByteSize>,
    /// The GPU whose memory this node is (GB200: its HBM as a CPU-less node).
    pub gpu: Option<Spanned<PciAddress>>,
    /// Distance to every node of the host, in node-id order (`numactl --hardware`'s row).
    pub distances: Option<Spanned<Vec<u32>>>,
    /// Hugepage pools on this node: page size and number of pages.
    pub hugepages: Vec<(Spanned<PageSize>, Spanned<u64>)>,
    #[serde(skip)]
    pub span: Span,
}

words! {
    /// What fabrik does with a GPU.
    pub enum GpuMode {
        /// The whole GPU goes to one VM (vfio-pci).
        Passthrough = "passthrough",
        /// Partitioned into MIG instances by the `mig` layout.
        Mig = "mig",
        /// Shared by several VMs in turn (vGPU time slicing): weaker isolation.
        TimeSliced = "time-sliced",
        /// Left to the host: fabrik neither assigns nor changes it.
        Host = "host",
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Gpu {
    pub address: Spanned<PciAddress>,
    pub model: Spanned<GpuModel>,
    pub numa_node: Spanned<u32>,
    pub nvlink_domain: Option<Spanned<String>>,
    /// The InfiniBand NIC beside the GPU on its PCIe switch (its GPUDirect RDMA rail).
    pub rail: Option<Spanned<String>>,
    /// Given, or `mig` when a MIG layout is listed, else `host`.
    pub mode: Spanned<GpuMode>,
    pub mig: Vec<MigSlot>,
    #[serde(skip)]
    pub span: Span,
}

/// One MIG instance of a GPU's layout.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MigSlot {
    pub profile: Spanned<MigProfileName>,
    /// First memory slice of the instance, when the operator pins it.
    pub placement: Option<Spanned<u8>>,
    #[serde(skip)]
    pub span: Span,
}

/// An NVLink domain: the GPUs that reach each other over NVLink (one HGX board, or an
/// NVL72 rack across hosts). GPUs name their domain; declaring it is needed only to give
/// it properties.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NvlinkDomain {
    pub name: Spanned<String>,
    pub description: Option<Spanned<String>>,
    /// Partitioned between tenants by the fabric manager: never split between tenants' VMs.
    pub partitioned: bool,
    #[serde(skip)]
    pub span: Span,
}

words! {
    pub enum NicKind {
        Ethernet = "ethernet",
        Infiniband = "infiniband",
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Nic {
    pub name: Spanned<String>,
    pub address: Option<Spanned<PciAddress>>,
    pub kind: Spanned<NicKind>,
    pub numa_node: Option<Spanned<u32>>,
    /// Virtual functions to create on this physical function (SR-IOV).
    pub sriov_vfs: Option<Spanned<u32>>,
    /// The host's own address on this interface: a VXLAN network whose `parent` it is
    /// sends from it, and the other hosts of the network flood to it.
    pub ip: Option<Spanned<IpAddr>>,
    /// The MTU the host gives this interface. Set by the host's provisioning, not by
    /// fabrik: the checks hold the networks over the NIC to it, and twins start with it.
    pub mtu: Option<Spanned<u32>>,
    #[serde(skip)]
    pub span: Span,
}

impl Host {
    /// The architecture fabrik renders for: the declared one, else the one a GPU model
    /// implies, else x86_64. A conflict between the two is `fabrik::host::arch`.
    pub fn arch(&self) -> Arch {
        self.arch
            .as_ref()
            .map(|a| a.value)
            .or_else(|| self.gpus.iter().find_map(|g| g.model.value.arch()))
            .unwrap_or_default()
    }
}

/// NUMA node ids as Linux numbers them; 255 is far above any server.
const NUMA_ID_MAX: i64 = 255;

pub static HOST: Shape = Shape {
    name: "host",
    doc: "A KVM host: how to reach it and the hardware it has.",
    label: Some("name"),
    more: &[],
    fields: &[
        req("name", Ty::Name, "the host's name, used in ids and references"),
        opt(
            "arch",
            Ty::Enum(<Arch as crate::spec::decode::Word>::NAMES),
            "CPU architecture, as libvirt reports it: x86_64 or aarch64 (default: aarch64 when a GPU model implies it, as GB200 does, else x86_64); checked against the host",
        ),
        req("uri", Ty::Str, "libvirt connection URI, e.g. `qemu+ssh://root@gpu01/system`"),
        opt("agent", Ty::Str, "command that starts `fabrik agent` on the host, e.g. `ssh root@gpu01 fabrik agent`"),
        opt("description", Ty::Str, "free text"),
        req("numa-nodes", Ty::Items { shape: &NUMA_NODE, singular: "numa-node" }, "the host's NUMA nodes"),
        opt("reserved-cpus", Ty::CpuSet, "host CPUs kept for the host itself, never pinned to VMs"),
        opt("gpus", Ty::Items { shape: &GPU, singular: "gpu" }, "GPUs by PCI address"),
        opt("nics", Ty::Items { shape: &NIC, singular: "nic" }, "network interfaces (Ethernet or InfiniBand)"),
        opt(
            "subnet-manager",
            Ty::Enum(<SubnetManager as crate::spec::decode::Word>::NAMES),
            "the InfiniBand subnet manager this host runs (`opensm`): fabrik keeps the partitions of the factory in a block of its partition file, through the host's agent, and has it re-read",
        ),
        opt(
            "partitions-file",
            Ty::Str,
            "the subnet manager's partition file, an absolute path (default `/etc/opensm/partitions.conf`); needs `subnet-manager`",
        ),
    ],
};

pub static NUMA_NODE: Shape = Shape {
    name: "NUMA node",
    doc: "A NUMA node: its CPUs, memory and hugepage pools.",
    label: Some("id"),
    more: &[],
    fields: &[
        req("id", Ty::Int { min: 0, max: NUMA_ID_MAX }, "NUMA node number as Linux counts it"),
        opt("socket", Ty::Int { min: 0, max: NUMA_ID_MAX }, "CPU socket this node belongs to"),
        opt("cpus", Ty::CpuSet, "host CPUs of this node, e.g. `0-55,112-167`; none for a node of memory only"),
        req("memory", Ty::Size, "memory of this node, e.g. `1TiB`"),
        opt(
            "gpu",
            Ty::Pci,
            "for a node of memory only: the GPU whose memory it is (GB200 HBM); VMs given that GPU see the node as a CPU-less guest NUMA cell",
        ),
        opt(
            "distances",
            Ty::List(&Ty::Int { min: 10, max: 255 }),
            "distance to every node of the host in node-id order, as `numactl --hardware` prints this node's row, e.g. `[10, 20]`; guest NUMA cells carry them",
        ),
        opt(
            "hugepages",
            Ty::MapOf { key: &Ty::PageSize, value: &Ty::Int { min: 0, max: 1 << 40 } },
            "hugepage pools: page size → number of pages, e.g. `1G: 512`",
        ),
    ],
};

pub static GPU: Shape = Shape {
    name: "GPU",
    doc: "A GPU of the host and what fabrik does with it.",
    label: Some("address"),
    more: &[],
    fields: &[
        req("address", Ty::Pci, "PCI address, e.g. `0000:1b:00.0`"),
        req("model", Ty::Enum(<GpuModel as crate::spec::decode::Word>::NAMES), "GPU model"),
        req("numa-node", Ty::Int { min: 0, max: NUMA_ID_MAX }, "NUMA node the GPU is attached to"),
        opt("nvlink-domain", Ty::Name, "NVLink fabric domain; GPUs in one domain talk over NVLink"),
        opt(
            "rail",
            Ty::IfName,
            "the InfiniBand NIC beside this GPU on its PCIe switch (its rail); a VM given several GPUs gets one VF per GPU from the GPU's rail on each InfiniBand partition it joins, behind the GPU's guest PCIe expander bus",
        ),
        opt(
            "mode",
            Ty::Enum(<GpuMode as crate::spec::decode::Word>::NAMES),
            "passthrough, mig, time-sliced or host (default: mig when `mig` is listed, else host)",
        ),
        opt("mig", Ty::Items { shape: &MIG_SLOT, singular: "mig" }, "MIG layout: profiles, optionally at placements"),
    ],
};

pub static MIG_SLOT: Shape = Shape {
    name: "MIG instance",
    doc: "A MIG instance: a profile, optionally at a fixed placement.",
    label: Some("profile"),
    more: &[],
    fields: &[
        req("profile", Ty::MigProfile, "MIG profile, e.g. `3g.71gb`"),
        opt("placement", Ty::Int { min: 0, max: 7 }, "first memory slice of the instance (0–7)"),
    ],
};

pub static NVLINK_DOMAIN: Shape = Shape {
    name: "NVLink domain",
    doc: "An NVLink domain that GPUs name in `nvlink-domain`.",
    label: Some("name"),
    more: &[],
    fields: &[
        req("name", Ty::Name, "the domain's name, as GPUs give it in `nvlink-domain`"),
        opt("description", Ty::Str, "free text"),
        opt(
            "partitioned",
            Ty::Bool,
            "partitioned by the fabric manager: GPUs of one partition never go to two tenants",
        ),
    ],
};

pub static NIC: Shape = Shape {
    name: "NIC",
    doc: "A network interface of the host.",
    label: Some("name"),
    more: &[],
    fields: &[
        req("name", Ty::Name, "interface name on the host, e.g. `ens1f0` or `ib0` (at most 15 bytes, as Linux allows)"),
        opt("address", Ty::Pci, "PCI address of the physical function"),
        req("kind", Ty::Enum(<NicKind as crate::spec::decode::Word>::NAMES), "ethernet or infiniband"),
        opt("numa-node", Ty::Int { min: 0, max: NUMA_ID_MAX }, "NUMA node the NIC is attached to"),
        opt("sriov-vfs", Ty::Int { min: 0, max: 256 }, "SR-IOV virtual functions to create on this NIC"),
        opt(
            "ip",
            Ty::Ip,
            "the host's own address on this interface, without prefix; VXLAN networks on it use it as their tunnel endpoint",
        ),
        opt(
            "mtu",
            Ty::Int { min: 68, max: 65535 },
            "the MTU the host gives this interface (set by its provisioning, not by fabrik); networks over it must fit",
        ),
    ],
};

pub fn decode_host(d: &mut Decoder, n: &Node) -> Option<Host> {
    let o = d.object(n, &HOST, "host")?;
    let name = o.get("name").and_then(|n| d.name(n, "name"));
    let uri = o.get("uri").and_then(|n| d.string(n, "uri")).and_then(|u| check_uri(d, u));
    let agent = o.get("agent").and_then(|n| d.string(n, "agent"));
    let description = o.get("description").and_then(|n| d.string(n, "description"));
    let arch = o.get("arch").and_then(|n| d.word::<Arch>(n, "arch"));
    let numa_nodes = d.items(&o, "numa-nodes", decode_numa_node);
    let reserved_cpus = o.get("reserved-cpus").and_then(|n| d.cpuset(n, "reserved-cpus"));
    let gpus = d.items(&o, "gpus", decode_gpu);
    let nics = d.items(&o, "nics", decode_nic);
    let subnet_manager = o.get("subnet-manager").and_then(|n| d.word::<SubnetManager>(n, "subnet-manager"));
    let partitions_file = o.get("partitions-file").and_then(|n| d.string(n, "partitions-file")).and_then(|p| {
        let (message, help) = match (p.value.starts_with('/'), &subnet_manager) {
            (false, _) => (
                format!("`partitions-file: {}` is not an absolute path", p.value),
                "write the file's absolute path on the host, e.g. `/etc/opensm/partitions.conf`",
            ),
            (true, None) => (
                "`partitions-file` is given, but this host runs no subnet manager".to_string(),
                "add `subnet-manager: opensm` to this host, or remove `partitions-file`",
            ),
            (true, Some(_)) => return Some(p),
        };
        d.diags.push(
            crate::diag::Diagnostic::error("fabrik::spec::partitions-file", message).at(p.span, "here").help(help),
        );
        None
    });
    Some(Host {
        name: name?,
        uri: uri?,
        agent,
        description,
        arch,
        numa_nodes,
        reserved_cpus,
        gpus,
        nics,
        subnet_manager,
        partitions_file,
        span: o.span,
    })
}

fn check_uri(d: &mut Decoder, uri: Spanned<String>) -> Option<Spanned<String>> {
    let scheme_ok = uri.value.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if scheme_ok {
        return Some(uri);
    }
    d.diags.push(
        crate::diag::Diagnostic::error("fabrik::spec::bad-uri", format!("`{}` is not a libvirt URI", uri.value))
            .at(uri.span, "here")
            .help("write a libvirt connection URI such as `qemu:///system` or `qemu+ssh://root@gpu01/system`"),
    );
    None
}

fn decode_numa_node(d: &mut Decoder, n: &Node) -> Option<NumaNode> {
    let o = d.object(n, &NUMA_NODE, "numa-node")?;
    let id = o.get("id").and_then(|n| d.uint(n, "id", 0, NUMA_ID_MAX));
    let socket = o.get("socket").and_then(|n| d.uint(n, "socket", 0, NUMA_ID_MAX));
    let cpus = match o.get("cpus") {
        Some(n) => d.cpuset(n, "cpus"),
        None => Some(Spanned::new(CpuSet::default(), o.head)),
    };
    let memory = o.get("memory").and_then(|n| d.size(n, "memory"));
    let gpu = o.get("gpu").and_then(|n| d.pci(n, "gpu"));
    let distances = o.get("distances").map(|n| {
        let row = d.list(n, "distances", |d, item| d.uint::<u32>(item, "distances", 10, 255).map(|v| v.value));
        Spanned::new(row, n.span)
    });
    let hugepages = o
        .get("hugepages")
        .map(|n| {
            d.map_of(
                n,
                "hugepages",
                |d, k, span| d.parse_text(k, span, PageSize::parse).map(|s| s.value),
                |d, v, key| d.uint::<u64>(v, key, 0, 1 << 40),
            )
        })
        .unwrap_or_default();
    Some(NumaNode { id: id?, socket, cpus: cpus?, memory: memory?, gpu, distances, hugepages, span: o.span })
}

fn decode_gpu(d: &mut Decoder, n: &Node) -> Option<Gpu> {
    let o = d.object(n, &GPU, "gpu")?;
    let address = o.get("address").and_then(|n| d.pci(n, "address"));
    let model = o.get("model").and_then(|n| d.word::<GpuModel>(n, "model"));
    let numa_node = o.get("numa-node").and_then(|n| d.uint(n, "numa-node", 0, NUMA_ID_MAX));
    let nvlink_domain = o.get("nvlink-domain").and_then(|n| d.name(n, "nvlink-domain"));
    let rail = o.get("rail").and_then(|n| d.name(n, "rail")).and_then(|s| super::network::check_ifname(d, s, "rail"));
    let mig = d.items(&o, "mig", decode_mig_slot);
    let mode = match o.get("mode") {
        Some(n) => d.word::<GpuMode>(n, "mode")?,
        None if o.has("mig") => Spanned::new(GpuMode::Mig, o.span_of("mig").unwrap_or(o.head)),
        None => Spanned::new(GpuMode::Host, o.head),
    };
    Some(Gpu { address: address?, model: model?, numa_node: numa_node?, nvlink_domain, rail, mode, mig, span: o.span })
}

fn decode_mig_slot(d: &mut Decoder, n: &Node) -> Option<MigSlot> {
    let o = d.object(n, &MIG_SLOT, "mig")?;
    let profile = o.get("profile").and_then(|n| d.mig_profile(n, "profile"));
    let placement = o.get("placement").and_then(|n| d.uint(n, "placement", 0, 7));
    Some(MigSlot { profile: profile?, placement, span: o.span })
}

pub fn decode_nvlink_domain(d: &mut Decoder, n: &Node) -> Option<NvlinkDomain> {
    let o = d.object(n, &NVLINK_DOMAIN, "nvlink-domain")?;
    let name = o.get("name").and_then(|n| d.name(n, "name"));
    let description = o.get("description").and_then(|n| d.string(n, "description"));
    let partitioned = o.get("partitioned").and_then(|n| d.bool(n, "partitioned")).is_some_and(|b| b.value);
    Some(NvlinkDomain { name: name?, description, partitioned, span: o.span })
}

fn decode_nic(d: &mut Decoder, n: &Node) -> Option<Nic> {
    let o = d.object(n, &NIC, "nic")?;
    let name = o.get("name").and_then(|n| d.name(n, "name")).and_then(|s| super::network::check_ifname(d, s, "name"));
    let address = o.get("address").and_then(|n| d.pci(n, "address"));
    let kind = o.get("kind").and_then(|n| d.word::<NicKind>(n, "kind"));
    let numa_node = o.get("numa-node").and_then(|n| d.uint(n, "numa-node", 0, NUMA_ID_MAX));
    let sriov_vfs = o.get("sriov-vfs").and_then(|n| d.uint(n, "sriov-vfs", 0, 256));
    let ip = o.get("ip").and_then(|n| d.ip(n, "ip"));
    let mtu = o.get("mtu").and_then(|n| d.uint(n, "mtu", 68, 65535));
    Some(Nic { name: name?, address, kind: kind?, numa_node, sriov_vfs, ip, mtu, span: o.span })
}
