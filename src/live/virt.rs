//! libvirt objects: domains, networks, storage pools and volumes, normalized.

use serde::{Deserialize, Serialize};

use crate::spec::types::{ByteSize, CpuSet, PageSize, PciAddress};

/// fabrik's mark on an object it created (the `<metadata>` element in its namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    pub factory: String,
    /// The resource id (`vm:gpu01/acme-vllm-0`).
    pub resource: String,
    /// Hash of the desired state the object was made from.
    pub spec_hash: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerState {
    Running,
    Paused,
    ShutOff,
    Crashed,
    Other,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveDomain {
    pub name: String,
    pub uuid: String,
    pub state: PowerState,
    pub autostart: bool,
    pub vcpus: u32,
    pub memory: ByteSize,
    pub hugepages: Option<PageSize>,
    /// Host CPUs per vCPU, from `<cputune><vcpupin>`.
    pub vcpupin: Vec<(u32, CpuSet)>,
    pub emulatorpin: Option<CpuSet>,
    /// `<numatune><memory mode=…>`: `strict` (libvirt's default when the element is
    /// there without a mode), `preferred`, `interleave` or `restrictive`.
    #[serde(default)]
    pub numa_mode: Option<String>,
    /// `<numatune><memory mode='strict' nodeset=…>`.
    pub numa_nodeset: Option<CpuSet>,
    /// Guest NUMA cells: (cpus, memory).
    pub numa_cells: Vec<(CpuSet, ByteSize)>,
    /// PCI host devices passed through.
    pub hostdevs: Vec<PciAddress>,
    pub interfaces: Vec<LiveInterface>,
    pub disks: Vec<LiveDisk>,
    pub owner: Option<Ownership>,
    /// The NIC addresses fabrik recorded in the domain's metadata: (NIC index, address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<(u32, std::net::IpAddr)>,
    /// The domain XML as libvirt returned it (inactive definition), for diffs.
    pub xml: String,
    /// What the guest runs now, read from the live XML of a domain that is not shut off:
    /// it differs from the saved definition until the next restart (a redefine whose
    /// restart never came, an apply killed between the two). Boxed: most domains have
    /// none, and 100,000 of them held it inline for 200 bytes each (issue 14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<Box<RunningDefinition>>,
}

/// The parts of a domain's definition a running guest only takes at its start, as the
/// live XML (libvirt's running definition) or the saved one states them. Interfaces and
/// disks count by identity (MAC and model, target and bus): their sources read
/// differently in the live XML (a `network` interface names its bridge there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningDefinition {
    pub vcpus: u32,
    pub memory: ByteSize,
    pub hugepages: Option<PageSize>,
    pub vcpupin: Vec<(u32, CpuSet)>,
    pub emulatorpin: Option<CpuSet>,
    pub numa_mode: Option<String>,
    pub numa_nodeset: Option<CpuSet>,
    pub numa_cells: Vec<(CpuSet, ByteSize)>,
    pub hostdevs: Vec<PciAddress>,
    /// (MAC, model) per interface, in order.
    pub interfaces: Vec<(Option<String>, Option<String>)>,
    /// (target, bus) per disk, in order.
    pub disks: Vec<(String, String)>,
}

impl RunningDefinition {
    /// The comparable parts of a parsed definition.
    pub fn of(d: &LiveDomain) -> RunningDefinition {
        RunningDefinition {
            vcpus: d.vcpus,
            memory: d.memory,
            hugepages: d.hugepages,
            vcpupin: d.vcpupin.clone(),
            emulatorpin: d.emulatorpin.clone(),
            numa_mode: d.numa_mode.clone(),
            numa_nodeset: d.numa_nodeset.clone(),
            numa_cells: d.numa_cells.clone(),
            hostdevs: d.hostdevs.clone(),
            interfaces: d.interfaces.iter().map(|i| (i.mac.clone(), i.model.clone())).collect(),
            disks: d.disks.iter().map(|k| (k.target.clone(), k.bus.clone())).collect(),
        }
    }

    /// The fields that differ from `saved`, as (field, running, saved) words.
    pub fn differences(&self, saved: &RunningDefinition) -> Vec<(&'static str, String, String)> {
        let RunningDefinition {
            vcpus,
            memory,
            hugepages,
            vcpupin,
            emulatorpin,
            numa_mode,
            numa_nodeset,
            numa_cells,
            hostdevs,
            interfaces,
            disks,
        } = self;
        fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
            v.as_ref().map_or_else(|| "none".to_string(), T::to_string)
        }
        fn list<T>(items: &[T], word: impl Fn(&T) -> String) -> String {
            if items.is_empty() {
                return "none".into();
            }
            items.iter().map(word).collect::<Vec<_>>().join(", ")
        }
        let pins = |p: &[(u32, CpuSet)]| list(p, |(v, set)| format!("{v}:{set}"));
        let cells = |c: &[(CpuSet, ByteSize)]| list(c, |(cpus, mem)| format!("{cpus}/{mem}"));
        let tune = |mode: &Option<String>, set: &Option<CpuSet>| format!("{} {}", opt(mode), opt(set));
        let ifaces =
            |i: &[(Option<String>, Option<String>)]| list(i, |(mac, model)| format!("{} {}", opt(mac), opt(model)));
        let targets = |d: &[(String, String)]| list(d, |(target, bus)| format!("{target} ({bus})"));
        let mut out = Vec::new();
        let mut field = |name: &'static str, have: String, want: String| {
            if have != want {
                out.push((name, have, want));
            }
        };
        field("vcpus", vcpus.to_string(), saved.vcpus.to_string());
        field("memory", memory.to_string(), saved.memory.to_string());
        field("hugepages", opt(hugepages), opt(&saved.hugepages));
        field("vcpupin", pins(vcpupin), pins(&saved.vcpupin));
        field("emulatorpin", opt(emulatorpin), opt(&saved.emulatorpin));
        field("numatune", tune(numa_mode, numa_nodeset), tune(&saved.numa_mode, &saved.numa_nodeset));
        field("numa", cells(numa_cells), cells(&saved.numa_cells));
        field("hostdev", list(hostdevs, PciAddress::to_string), list(&saved.hostdevs, PciAddress::to_string));
        field("interface", ifaces(interfaces), ifaces(&saved.interfaces));
        field("disk", targets(disks), targets(&saved.disks));
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveInterface {
    pub mac: Option<String>,
    /// `bridge`, `network`, `hostdev`, …
    pub kind: String,
    /// Bridge or network name, or the VF's PCI address.
    pub source: String,
    pub model: Option<String>,
    /// The tap device while running (`vnet3`).
    pub target: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveDisk {
    pub target: String,
    pub bus: String,
    /// File path, or `pool/volume`.
    pub source: Option<String>,
    pub format: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveNetwork {
    pub name: String,
    pub uuid: String,
    pub active: bool,
    pub autostart: bool,
    pub bridge: Option<String>,
    /// `<forward mode=…>`: `bridge`, `hostdev`, `nat`, or none.
    pub forward: Option<String>,
    pub owner: Option<Ownership>,
    pub xml: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePool {
    pub name: String,
    pub uuid: String,
    pub kind: String,
    pub path: Option<String>,
    pub active: bool,
    pub autostart: bool,
    pub capacity: ByteSize,
    pub available: ByteSize,
    pub volumes: Vec<LiveVolume>,
    pub owner: Option<Ownership>,
    pub xml: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveVolume {
    pub name: String,
    pub path: String,
    pub capacity: ByteSize,
    pub allocation: ByteSize,
    pub format: Option<String>,
    pub owner: Option<Ownership>,
}
