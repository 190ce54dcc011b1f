//! A synthetic factory of N hosts and M VMs, the same every time, in YAML or KDL.
//!
//! The factory is laid out as an operator would keep it in git: one file of shared
//! definitions (infrastructure networks, pools, images, templates), one file per pod
//! of hosts, one file per tenant (the tenant and its networks) and one file per tenant
//! with its VMs. Every reference resolves, so the factory validates with no error.
//!
//! Both syntaxes are rendered from one document tree; the KDL rendering follows the
//! language's shape tables (which keys are lists of items, which are objects), so the
//! two renderings decode to the same model.

use std::path::Path;

use crate::spec::model;
use crate::spec::source::Syntax;

mod render;
use render::render;

/// Hosts per pod file, and per tenant: a tenant rents a pod.
pub const HOSTS_PER_TENANT: usize = 50;

/// The VM mix fits the hosts up to this many VMs per host: near 19 the whole
/// passthrough GPUs run out, and the factory no longer validates.
pub const VMS_PER_HOST_MAX: usize = 15;

/// The largest replica group the generator writes.
const REPLICAS_MAX: usize = 8;

/// Quota values are capped at the language's limit for counts.
const QUOTA_COUNT_MAX: u64 = 1_000_000;

/// One H200 HGX board: the PCI bus of each GPU and of the InfiniBand NIC beside it;
/// the first four sit on NUMA node 0, the last four on node 1.
const GPU_BUSES: [u8; 8] = [0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb];
const IB_BUSES: [u8; 8] = [0x19, 0x2b, 0x3b, 0x5e, 0x9b, 0xac, 0xbb, 0xdc];
/// GPUs 0–5 are passed through whole; 6 and 7 are split into seven `1g.18gb` instances.
const PASSTHROUGH_GPUS: usize = 6;
const MIG_INSTANCES_PER_GPU: usize = 7;
const GPU_MODEL: &str = "H200-141GB";

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub hosts: usize,
    /// VM instances, replicas counted.
    pub vms: usize,
}

/// What was generated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub bytes: usize,
    /// VM entries written (a replica group is one entry).
    pub vm_entries: usize,
    pub tenants: usize,
}

/// A generated factory in memory: files relative to the factory's directory, with their text.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub struct Factory {
    pub files: Vec<(String, String)>,
    pub summary: Summary,
}

impl Factory {
    /// Writes the files under `dir`, creating subdirectories as needed.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        self.files.iter().try_for_each(|(name, text)| write_file(dir, name, text))
    }
}

/// Generates the factory in memory. The same size and syntax always give the same bytes.
pub fn generate(size: Size, syntax: Syntax) -> Factory {
    let mut files = Vec::new();
    let summary = each_file(size, syntax, &mut |name, text| {
        files.push((name, text));
        Ok(())
    })
    .unwrap_or_default();
    Factory { files, summary }
}

/// Generates the factory straight into `dir`, one file at a time, so that it never
/// sits in memory whole (a benchmark of memory must not measure its own input).
pub fn write(size: Size, syntax: Syntax, dir: &Path) -> std::io::Result<Summary> {
    each_file(size, syntax, &mut |name, text| write_file(dir, &name, &text))
}

fn write_file(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)
}

/// Renders the files one by one and hands each to `emit`, always in the same order.
fn each_file(
    size: Size,
    syntax: Syntax,
    emit: &mut dyn FnMut(String, String) -> std::io::Result<()>,
) -> std::io::Result<Summary> {
    let hosts = size.hosts.max(1);
    let tenants = hosts.div_ceil(HOSTS_PER_TENANT);
    let ext = match syntax {
        Syntax::Yaml => "yaml",
        Syntax::Kdl => "kdl",
    };
    let mut summary = Summary { tenants, ..Summary::default() };
    let mut emit = |name: String, doc: V| {
        let text = render(&doc, syntax);
        summary.files += 1;
        summary.bytes += text.len();
        emit(name, text)
    };
    emit(format!("factory.{ext}"), shared())?;
    for pod in 0..tenants {
        let first = pod * HOSTS_PER_TENANT;
        let hosts = (first..hosts.min(first + HOSTS_PER_TENANT)).map(host).collect();
        emit(format!("hosts/pod-{:03}.{ext}", pod + 1), file(vec![("hosts", V::List(hosts))]))?;
    }
    let mut vm_entries = 0;
    for t in 0..tenants {
        let first_host = t * HOSTS_PER_TENANT;
        let last_host = hosts.min(first_host + HOSTS_PER_TENANT);
        // VMs in proportion to the tenant's hosts (the last pod may be short), so that
        // every host carries the same load.
        let share = size.vms * last_host / hosts - size.vms * first_host / hosts;
        let host_names: Vec<String> = (first_host..last_host).map(host_name).collect();
        let vms = tenant_vms(t, &host_names, share);
        vm_entries += vms.entries.len();
        let name = tenant_name(t);
        let tenant_doc =
            file(vec![("tenants", V::List(vec![tenant(t, &host_names, &vms)])), ("networks", tenant_networks(t))]);
        emit(format!("tenants/{name}.{ext}"), tenant_doc)?;
        emit(format!("vms/{name}.{ext}"), file(vec![("vms", V::List(vms.entries))]))?;
    }
    Ok(Summary { vm_entries, ..summary })
}

/// A document value: the generator's own tree, rendered to either syntax.
#[derive(Clone, Debug)]
enum V {
    Str(String),
    Int(u64),
    /// An integer written in hex, as operators write pkeys.
    Hex(u64),
    Float(f64),
    Bool(bool),
    List(Vec<V>),
    Map(Vec<(&'static str, V)>),
    /// A map whose keys are data (hugepage sizes, GPU models), not language keys.
    Dict(Vec<(String, V)>),
}

fn s(text: impl Into<String>) -> V {
    V::Str(text.into())
}

fn strs<T: Into<String>>(items: impl IntoIterator<Item = T>) -> V {
    V::List(items.into_iter().map(s).collect())
}

fn file(mut entries: Vec<(&'static str, V)>) -> V {
    entries.insert(0, ("version", V::Int(model::VERSION as u64)));
    V::Map(entries)
}

fn host_name(i: usize) -> String {
    format!("gpu{:04}", i + 1)
}

fn tenant_name(t: usize) -> String {
    format!("tenant-{:03}", t + 1)
}

fn pci(bus: u8, function: u8) -> String {
    format!("0000:{bus:02x}:00.{function}")
}

/// Infrastructure shared by every tenant: networks, storage, images and templates.
fn shared() -> V {
    let networks = vec![
        V::Map(vec![
            ("name", s("mgmt")),
            ("purpose", s("management")),
            ("kind", s("vlan")),
            ("vlan", V::Int(10)),
            ("parent", s("bond0")),
            ("bridge", s("br-mgmt")),
        ]),
        V::Map(vec![
            ("name", s("storage")),
            ("purpose", s("storage")),
            ("kind", s("vlan")),
            ("vlan", V::Int(20)),
            ("parent", s("bond0")),
            ("mtu", V::Int(9000)),
        ]),
        V::Map(vec![
            ("name", s("public")),
            ("description", s("internet-facing addresses, open to every tenant")),
            ("purpose", s("public")),
            ("kind", s("bridge")),
            ("shared", V::Bool(true)),
            ("bridge", s("br-public")),
        ]),
    ];
    let pools = vec![
        V::Map(vec![("name", s("images")), ("type", s("dir")), ("path", s("/var/lib/fabrik/images"))]),
        V::Map(vec![("name", s("vms")), ("type", s("logical")), ("path", s("/dev/vg-vms")), ("source", s("vg-vms"))]),
    ];
    let images = vec![
        V::Map(vec![
            ("name", s("ubuntu-24.04")),
            ("pool", s("images")),
            ("source", s("/var/lib/fabrik/images/noble-server-cloudimg-amd64.img")),
            ("format", s("qcow2")),
            ("size", s("3.5GiB")),
        ]),
        V::Map(vec![
            ("name", s("rocky-9")),
            ("pool", s("images")),
            ("source", s("/var/lib/fabrik/images/Rocky-9-GenericCloud.qcow2")),
        ]),
    ];
    let root = |image: &str, size: &str| {
        V::Map(vec![("name", s("root")), ("image", s(image)), ("size", s(size)), ("pool", s("vms"))])
    };
    let templates = vec![
        V::Map(vec![
            ("name", s("train-4gpu")),
            ("description", s("four H200s on one NUMA node, pinned and on 1G pages")),
            ("vcpus", V::Int(48)),
            ("memory", s("512GiB")),
            ("hugepages", s("1G")),
            ("cpu-policy", s("dedicated")),
            ("numa", s("required")),
            ("gpu", V::Map(vec![("model", s(GPU_MODEL)), ("count", V::Int(4))])),
            (
                "disks",
                V::List(vec![
                    root("ubuntu-24.04", "200GiB"),
                    V::Map(vec![
                        ("name", s("scratch")),
                        ("size", s("2TiB")),
                        ("pool", s("vms")),
                        ("delete-with-vm", V::Bool(true)),
                    ]),
                ]),
            ),
            ("firmware", s("uefi")),
        ]),
        V::Map(vec![
            ("name", s("train-1gpu")),
            ("vcpus", V::Int(12)),
            ("memory", s("128GiB")),
            ("hugepages", s("1G")),
            ("cpu-policy", s("dedicated")),
            ("numa", s("required")),
            ("gpu", V::Map(vec![("model", s(GPU_MODEL))])),
            ("disks", V::List(vec![root("ubuntu-24.04", "200GiB")])),
            ("firmware", s("uefi")),
        ]),
        V::Map(vec![
            ("name", s("infer-mig")),
            ("description", s("a vLLM replica on one 1g.18gb MIG instance")),
            ("vcpus", V::Int(4)),
            ("memory", s("16GiB")),
            ("hugepages", s("2M")),
            ("cpu-policy", s("dedicated")),
            ("numa", s("preferred")),
            ("gpu", V::Map(vec![("model", s(GPU_MODEL)), ("mig", s("1g.18gb"))])),
            ("disks", V::List(vec![root("ubuntu-24.04", "100GiB")])),
            ("firmware", s("uefi")),
        ]),
        V::Map(vec![
            ("name", s("cpu-small")),
            ("vcpus", V::Int(4)),
            ("memory", s("16GiB")),
            ("cpu-policy", s("shared")),
            ("numa", s("none")),
            ("overcommit", V::Map(vec![("cpu", V::Float(4.0)), ("memory", V::Float(1.5))])),
            ("disks", V::List(vec![root("rocky-9", "50GiB")])),
        ]),
        V::Map(vec![
            ("name", s("cpu-large")),
            ("vcpus", V::Int(16)),
            ("memory", s("64GiB")),
            ("cpu-policy", s("shared")),
            ("numa", s("none")),
            ("disks", V::List(vec![root("rocky-9", "100GiB")])),
        ]),
    ];
    file(vec![
        ("factory", s("bench")),
        ("networks", V::List(networks)),
        ("pools", V::List(pools)),
        ("images", V::List(images)),
        ("templates", V::List(templates)),
    ])
}

/// The hosts' addresses on `bond0`: 10.0.0.0/8, room for any factory the bench makes.
const BOND_NET: u32 = 0x0a00_0000;

/// An 8× H200 HGX server on two NUMA nodes (2× 56-core sockets), with one 400G
/// InfiniBand NIC per GPU and a dual-port Ethernet NIC, bonded.
fn host(i: usize) -> V {
    let name = host_name(i);
    let fqdn = format!("{name}.bench.internal");
    let numa = |id: u64, cpus: &str| {
        V::Map(vec![
            ("id", V::Int(id)),
            ("socket", V::Int(id)),
            ("cpus", s(cpus)),
            ("memory", s("1TiB")),
            ("hugepages", V::Dict(vec![("1G".into(), V::Int(640)), ("2M".into(), V::Int(65536))])),
        ])
    };
    let gpus = (0..8)
        .map(|g| {
            let mut gpu = vec![
                ("address", s(pci(GPU_BUSES[g], 0))),
                ("model", s(GPU_MODEL)),
                ("numa-node", V::Int(g as u64 / 4)),
                ("nvlink-domain", s(format!("{name}-nvl"))),
            ];
            if g < PASSTHROUGH_GPUS {
                gpu.push(("mode", s("passthrough")));
            } else if g == PASSTHROUGH_GPUS {
                let slots = (0..MIG_INSTANCES_PER_GPU)
                    .map(|p| V::Map(vec![("profile", s("1g.18gb")), ("placement", V::Int(p as u64))]))
                    .collect();
                gpu.push(("mig", V::List(slots)));
            } else {
                gpu.push(("mig", strs(std::iter::repeat_n("1g.18gb", MIG_INSTANCES_PER_GPU))));
            }
            V::Map(gpu)
        })
        .collect::<Vec<_>>();
    let mut nics: Vec<V> = (0..8)
        .map(|n| {
            V::Map(vec![
                ("name", s(format!("ib{n}"))),
                ("address", s(pci(IB_BUSES[n], 0))),
                ("kind", s("infiniband")),
                ("numa-node", V::Int(n as u64 / 4)),
                ("sriov-vfs", V::Int(16)),
            ])
        })
        .collect();
    nics.extend((0..2).map(|f| {
        V::Map(vec![
            ("name", s(format!("ens1f{f}"))),
            ("address", s(pci(0x0c, f))),
            ("kind", s("ethernet")),
            ("numa-node", V::Int(0)),
        ])
    }));
    // The bond of the two Ethernet ports carries the tenants' VXLAN networks: each host
    // has its own address on it, 10.0.0.1 upwards, and jumbo frames for the storage VLAN.
    nics.push(V::Map(vec![
        ("name", s("bond0")),
        ("kind", s("ethernet")),
        ("numa-node", V::Int(0)),
        ("ip", s(std::net::Ipv4Addr::from(BOND_NET + i as u32 + 1).to_string())),
        ("mtu", V::Int(9000)),
    ]));
    V::Map(vec![
        ("name", s(&name)),
        ("uri", s(format!("qemu+ssh://root@{fqdn}/system"))),
        ("agent", s(format!("ssh root@{fqdn} fabrik agent"))),
        ("numa-nodes", V::List(vec![numa(0, "0-55,112-167"), numa(1, "56-111,168-223")])),
        ("reserved-cpus", s("0-1,112-113")),
        ("gpus", V::List(gpus)),
        ("nics", V::List(nics)),
    ])
}

fn net_name(t: usize) -> String {
    format!("{}-net", tenant_name(t))
}

fn ib_name(t: usize) -> String {
    format!("{}-ib", tenant_name(t))
}

/// A tenant's VXLAN network (VNI 10001, 10002, …) and InfiniBand partition
/// (full-membership pkeys from 0x8001).
fn tenant_networks(t: usize) -> V {
    let vni = 10_001 + t as u64;
    V::List(vec![
        V::Map(vec![
            ("name", s(net_name(t))),
            ("purpose", s("tenant")),
            ("kind", s("vxlan")),
            ("tenant", s(tenant_name(t))),
            ("vni", V::Int(vni)),
            ("parent", s("bond0")),
            ("bridge", s(format!("br-vx{vni}"))),
            ("mtu", V::Int(8950)),
        ]),
        V::Map(vec![
            ("name", s(ib_name(t))),
            ("purpose", s("tenant")),
            ("kind", s("ib-partition")),
            ("tenant", s(tenant_name(t))),
            // Full-membership keys run from 0x8001 to 0xfffe; wrap past them.
            ("pkey", V::Hex(0x8001 + (t as u64 % 0x7ffe))),
            ("parent", s("ib0")),
        ]),
    ])
}

/// A tenant's VMs, and what they add up to (for its quota).
struct TenantVms {
    entries: Vec<V>,
    instances: u64,
    passthrough_gpus: u64,
    mig_slices: u64,
    vcpus: u64,
    memory_gib: u64,
}

/// The tenant's `share` of VM instances, in a fixed mix: pinned 4-GPU training VMs
/// (one per host at most), replica groups of MIG inference VMs, 1-GPU VMs and CPU VMs,
/// some with overrides, some stopped.
fn tenant_vms(t: usize, hosts: &[String], share: usize) -> TenantVms {
    let tenant = tenant_name(t);
    let mut out =
        TenantVms { entries: Vec::new(), instances: 0, passthrough_gpus: 0, mig_slices: 0, vcpus: 0, memory_gib: 0 };
    let mut pinned = 0;
    let mut left = share;
    let mut j = 0;
    while left > 0 {
        let name = format!("{tenant}-vm{:04}", j + 1);
        let mut vm = vec![("name", s(&name)), ("tenant", s(&tenant))];
        let (count, vcpus, memory_gib) = match j % 10 {
            0 if pinned < hosts.len() => {
                vm.push(("template", s("train-4gpu")));
                vm.push(("host", s(&hosts[pinned])));
                vm.push(("gpus", strs(GPU_BUSES[..4].iter().map(|&b| pci(b, 0)))));
                vm.push(("cpus", s("2-25,114-137")));
                vm.push((
                    "nics",
                    V::List(vec![s(net_name(t)), V::Map(vec![("network", s(ib_name(t))), ("model", s("sriov"))])]),
                ));
                pinned += 1;
                out.passthrough_gpus += 4;
                (1, 48, 512)
            }
            1 if left >= 2 => {
                let replicas = left.min(REPLICAS_MAX);
                vm.push(("template", s("infer-mig")));
                vm.push(("replicas", V::Int(replicas as u64)));
                vm.push(("nics", strs([net_name(t), "public".to_string()])));
                out.mig_slices += replicas as u64;
                (replicas, 4, 16)
            }
            2 | 5 => {
                vm.push(("template", s("train-1gpu")));
                vm.push(("nics", strs([net_name(t)])));
                out.passthrough_gpus += 1;
                (1, 12, 128)
            }
            k => {
                let large = k % 3 == 0;
                vm.push(("template", s(if large { "cpu-large" } else { "cpu-small" })));
                let mut vcpus = if large { 16 } else { 4 };
                if j % 7 == 3 {
                    vm.push(("power", s("stopped")));
                    vm.push(("description", s("kept for later; stopped")));
                }
                if j % 4 == 1 {
                    vcpus *= 2;
                    vm.push(("vcpus", V::Int(vcpus)));
                }
                vm.push(("nics", strs([net_name(t), "public".to_string()])));
                (1, vcpus, if large { 64 } else { 16 })
            }
        };
        out.entries.push(V::Map(vm));
        out.instances += count as u64;
        out.vcpus += vcpus * count as u64;
        out.memory_gib += memory_gib * count as u64;
        left -= count;
        j += 1;
    }
    out
}

fn tenant(t: usize, hosts: &[String], vms: &TenantVms) -> V {
    let cap = |n: u64| V::Int(n.min(QUOTA_COUNT_MAX));
    V::Map(vec![
        ("name", s(tenant_name(t))),
        ("description", s(format!("synthetic tenant {}", t + 1))),
        ("hosts", strs(hosts.iter().cloned())),
        ("networks", strs([net_name(t), ib_name(t), "public".to_string()])),
        ("sharing", strs(["exclusive", "mig"])),
        (
            "quota",
            V::Map(vec![
                ("gpus", V::Dict(vec![(GPU_MODEL.into(), cap(vms.passthrough_gpus))])),
                ("mig-slices", cap(vms.mig_slices)),
                ("vcpus", cap(vms.vcpus)),
                ("memory", s(format!("{}GiB", vms.memory_gib.max(1)))),
                ("vms", cap(vms.instances)),
            ]),
        ),
    ])
}
