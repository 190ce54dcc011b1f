//! libvirt's XML documents → live values: capabilities, node devices, domains,
//! networks, storage pools and volumes.
//!
//! Pure functions on text, so they are tested on recorded XML without a host. They read
//! what fabrik compares and ignore the rest; libvirt's defaults (addresses, controllers,
//! the memballoon it adds) are not drift and never reach the live values. Sizes come out
//! in bytes whatever unit libvirt wrote them in.

use roxmltree::{Document, Node};

use super::owner;
use crate::driver::{DriverError, ErrorKind, Result};
use crate::live::{
    LiveDisk, LiveDomain, LiveInterface, LiveNetwork, LiveNumaNode, LivePciDevice, LivePool, LiveVolume, PowerState,
    Sriov,
};
use crate::spec::types::{ByteSize, CpuSet, PageSize, PciAddress};

fn bad(what: &str, detail: impl std::fmt::Display) -> DriverError {
    DriverError::new(ErrorKind::Failed, format!("cannot read {what}: {detail}"))
}

fn parse_doc<'a>(xml: &'a str, what: &str) -> Result<Document<'a>> {
    Document::parse(xml).map_err(|e| bad(what, e))
}

/// The first child element with this name (in no namespace).
fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| n.is_element() && n.tag_name().name() == name && n.tag_name().namespace().is_none())
}

fn children<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |n| n.is_element() && n.tag_name().name() == name && n.tag_name().namespace().is_none())
}

/// The element at a path of child names.
fn at<'a, 'i>(node: Node<'a, 'i>, path: &[&str]) -> Option<Node<'a, 'i>> {
    path.iter().try_fold(node, |n, name| child(n, name))
}

fn text<'a>(node: Node<'a, '_>) -> &'a str {
    node.text().map(str::trim).unwrap_or("")
}

fn text_at(node: Node<'_, '_>, path: &[&str]) -> Option<String> {
    at(node, path).map(|n| text(n).to_string()).filter(|t| !t.is_empty())
}

/// An integer as libvirt writes them: decimal, or hexadecimal with `0x`.
fn int(text: &str) -> Option<u64> {
    let t = text.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

fn int_attr(node: Node<'_, '_>, name: &str, what: &str) -> Result<Option<u64>> {
    match node.attribute(name) {
        None => Ok(None),
        Some(v) => int(v).map(Some).ok_or_else(|| bad(what, format!("`{name}='{v}'` is not a number"))),
    }
}

/// libvirt's size units (formatdomain.html, "Memory Allocation"; formatstorage.html).
pub fn unit_bytes(unit: &str) -> Option<u64> {
    Some(match unit {
        "b" | "B" | "bytes" => 1,
        "KB" => 1_000,
        "k" | "K" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "m" | "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "g" | "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "t" | "T" | "TiB" => 1 << 40,
        "PB" => 1_000_000_000_000_000,
        "p" | "P" | "PiB" => 1 << 50,
        "EB" => 1_000_000_000_000_000_000,
        "e" | "E" | "EiB" => 1 << 60,
        _ => return None,
    })
}

/// A size from a number and a unit; `default_unit` when the unit is not given (KiB for
/// domain memory, bytes for storage).
fn size(number: &str, unit: Option<&str>, default_unit: &str, what: &str) -> Result<ByteSize> {
    let unit = unit.unwrap_or(default_unit);
    let mult = unit_bytes(unit).ok_or_else(|| bad(what, format!("unknown unit `{unit}`")))?;
    let n = int(number).ok_or_else(|| bad(what, format!("`{number}` is not a size")))?;
    n.checked_mul(mult).map(ByteSize).ok_or_else(|| bad(what, format!("`{number}{unit}` is too large")))
}

/// The size held by an element's text, with its `unit` attribute.
fn size_elem(node: Node<'_, '_>, default_unit: &str, what: &str) -> Result<ByteSize> {
    size(text(node), node.attribute("unit"), default_unit, what)
}

fn cpuset(text: &str, what: &str) -> Result<CpuSet> {
    CpuSet::parse(text).map_err(|e| bad(what, e.message))
}

/// A PCI address from an `<address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/>`.
pub fn pci_address(node: Node<'_, '_>, what: &str) -> Result<PciAddress> {
    let field = |name: &str| -> Result<u64> {
        int_attr(node, name, what)?.ok_or_else(|| bad(what, format!("PCI address without `{name}`")))
    };
    let (domain, bus, slot, function) = (field("domain")?, field("bus")?, field("slot")?, field("function")?);
    if domain > 0xffff || bus > 0xff || slot > 0x1f || function > 7 {
        return Err(bad(what, format!("PCI address {domain:x}:{bus:x}:{slot:x}.{function:x} is out of range")));
    }
    Ok(PciAddress { domain: domain as u16, bus: bus as u8, device: slot as u8, function: function as u8 })
}

/// libvirt's node device name of a PCI address (`pci_0000_3b_00_0`).
pub fn nodedev_name(address: PciAddress) -> String {
    format!("pci_{:04x}_{:02x}_{:02x}_{:x}", address.domain, address.bus, address.device, address.function)
}

/// What the host part of the capabilities says.
#[derive(Clone, Debug, PartialEq)]
pub struct Capabilities {
    pub arch: Option<String>,
    pub cpu_model: Option<String>,
    pub numa: Vec<LiveNumaNode>,
}

/// The host's CPU and NUMA topology from `virConnectGetCapabilities`.
pub fn capabilities(xml: &str) -> Result<Capabilities> {
    const WHAT: &str = "the host's capabilities";
    let doc = parse_doc(xml, WHAT)?;
    let host = child(doc.root_element(), "host").ok_or_else(|| bad(WHAT, "no <host>"))?;
    let mut numa = Vec::new();
    if let Some(cells) = at(host, &["topology", "cells"]) {
        for cell in children(cells, "cell") {
            let id = int_attr(cell, "id", WHAT)?.ok_or_else(|| bad(WHAT, "a NUMA cell without id"))? as u32;
            let memory = match child(cell, "memory") {
                Some(m) => size_elem(m, "KiB", WHAT)?,
                None => ByteSize(0),
            };
            let mut cpus = Vec::new();
            let mut sockets = Vec::new();
            if let Some(list) = child(cell, "cpus") {
                for cpu in children(list, "cpu") {
                    cpus.push(int_attr(cpu, "id", WHAT)?.ok_or_else(|| bad(WHAT, "a CPU without id"))? as u32);
                    if let Some(s) = int_attr(cpu, "socket_id", WHAT)? {
                        sockets.push(s as u32);
                    }
                }
            }
            sockets.dedup();
            let mut distances = Vec::new();
            if let Some(list) = child(cell, "distances") {
                for sibling in children(list, "sibling") {
                    let (Some(to), Some(value)) = (int_attr(sibling, "id", WHAT)?, int_attr(sibling, "value", WHAT)?)
                    else {
                        return Err(bad(WHAT, "a NUMA distance without id or value"));
                    };
                    let to = to as usize;
                    if to >= distances.len() {
                        distances.resize(to + 1, 0);
                    }
                    distances[to] = value as u32;
                }
            }
            numa.push(LiveNumaNode {
                id,
                cpus: CpuSet::from_cpus(cpus),
                memory,
                distances,
                // A node's socket is known when all its CPUs say the same one.
                socket: if sockets.len() == 1 { Some(sockets[0]) } else { None },
            });
        }
    }
    numa.sort_by_key(|n| n.id);
    Ok(Capabilities { arch: text_at(host, &["cpu", "arch"]), cpu_model: text_at(host, &["cpu", "model"]), numa })
}

/// A network node device: the interface name and the node device it belongs to.
pub fn net_device(xml: &str) -> Result<Option<(String, String)>> {
    const WHAT: &str = "a network node device";
    let doc = parse_doc(xml, WHAT)?;
    let root = doc.root_element();
    let Some(parent) = text_at(root, &["parent"]) else { return Ok(None) };
    let cap = children(root, "capability").find(|c| c.attribute("type") == Some("net"));
    Ok(cap.and_then(|c| text_at(c, &["interface"])).map(|name| (parent, name)))
}

/// A PCI node device (`virNodeDeviceGetXMLDesc`). `None` when the device is not PCI.
/// Network interface names are filled in by the caller, from the `net` devices.
pub fn pci_device(xml: &str) -> Result<Option<LivePciDevice>> {
    let doc = parse_doc(xml, "a node device")?;
    let root = doc.root_element();
    let nodedev = text_at(root, &["name"]).unwrap_or_default();
    let what = format!("node device `{nodedev}`");
    let what = what.as_str();
    let Some(cap) = children(root, "capability").find(|c| c.attribute("type") == Some("pci")) else {
        return Ok(None);
    };
    let num = |name: &str| -> Result<u64> {
        let t = text_at(cap, &[name]).ok_or_else(|| bad(what, format!("no <{name}>")))?;
        int(&t).ok_or_else(|| bad(what, format!("<{name}>{t}</{name}> is not a number")))
    };
    let (domain, bus, slot, function) = (num("domain")?, num("bus")?, num("slot")?, num("function")?);
    if domain > 0xffff || bus > 0xff || slot > 0x1f || function > 7 {
        return Err(bad(what, "PCI address out of range"));
    }
    let address = PciAddress { domain: domain as u16, bus: bus as u8, device: slot as u8, function: function as u8 };
    let id = |name: &str| -> Result<u16> {
        let node = child(cap, name).ok_or_else(|| bad(what, format!("no <{name}>")))?;
        let v = int_attr(node, "id", what)?.ok_or_else(|| bad(what, format!("<{name}> without id")))?;
        u16::try_from(v).map_err(|_| bad(what, format!("{name} id {v:#x} is out of range")))
    };
    // Old libvirt (before 1.2.x) does not report the class.
    let class = match text_at(cap, &["class"]) {
        Some(t) => int(&t).ok_or_else(|| bad(what, format!("class `{t}` is not a number")))? as u32,
        None => 0,
    };
    let product = child(cap, "product").map(|p| text(p).to_string()).filter(|t| !t.is_empty());
    // libvirt writes node -1, or nothing, when the kernel does not know.
    let numa_node = match child(cap, "numa").and_then(|n| n.attribute("node")) {
        Some(v) => v.trim().parse::<i64>().map_err(|_| bad(what, format!("NUMA node `{v}`")))?.try_into().ok(),
        None => None,
    };
    let iommu_group = match child(cap, "iommuGroup") {
        Some(g) => int_attr(g, "number", what)?.map(|n| n as u32),
        None => None,
    };
    let sriov = match children(cap, "capability").find(|c| c.attribute("type") == Some("virt_functions")) {
        Some(vf) => {
            let vfs = children(vf, "address").map(|a| pci_address(a, what)).collect::<Result<Vec<_>>>()?;
            let total_vfs = match int_attr(vf, "maxCount", what)? {
                Some(n) => n as u32,
                None => vfs.len() as u32,
            };
            Some(Sriov { total_vfs, num_vfs: vfs.len() as u32, vfs })
        }
        None => None,
    };
    Ok(Some(LivePciDevice {
        address,
        nodedev,
        vendor_id: id("vendor")?,
        device_id: id("product")?,
        class,
        product,
        numa_node,
        iommu_group,
        driver: text_at(root, &["driver", "name"]),
        netdevs: Vec::new(),
        sriov,
    }))
}

/// A hugepage size as a domain names it; `<hugepages/>` without a `<page>` means the
/// host's default size, 2 MiB on x86-64.
fn page_size(node: Option<Node<'_, '_>>, what: &str) -> Result<PageSize> {
    let Some(page) = node else { return Ok(PageSize::Size2M) };
    let number = page.attribute("size").ok_or_else(|| bad(what, "<page> without size"))?;
    let bytes = size(number, page.attribute("unit"), "KiB", what)?;
    match bytes.bytes() {
        b if b == PageSize::Size2M.size().bytes() => Ok(PageSize::Size2M),
        b if b == PageSize::Size1G.size().bytes() => Ok(PageSize::Size1G),
        _ => Err(bad(what, format!("hugepage size {bytes} is neither 2M nor 1G"))),
    }
}

/// A domain from its XML, with what the XML does not say (state, autostart) given.
/// Parse the inactive definition (what fabrik defined and compares); interface targets
/// (`vnet3`) exist only in the live XML and are filled in by [`interface_targets`].
pub fn domain(xml: &str, state: PowerState, autostart: bool) -> Result<LiveDomain> {
    let doc = parse_doc(xml, "a domain")?;
    let root = doc.root_element();
    let name = text_at(root, &["name"]).ok_or_else(|| bad("a domain", "no <name>"))?;
    let what = format!("domain `{name}`");
    let what = what.as_str();

    let vcpus = match child(root, "vcpu") {
        Some(v) => int(text(v)).ok_or_else(|| bad(what, "<vcpu> is not a number"))? as u32,
        None => 1,
    };
    let memory = match child(root, "memory") {
        Some(m) => size_elem(m, "KiB", what)?,
        None => ByteSize(0),
    };
    let hugepages = match at(root, &["memoryBacking", "hugepages"]) {
        Some(h) => Some(page_size(child(h, "page"), what)?),
        None => None,
    };

    let mut vcpupin = Vec::new();
    let mut emulatorpin = None;
    if let Some(tune) = child(root, "cputune") {
        for pin in children(tune, "vcpupin") {
            let vcpu = int_attr(pin, "vcpu", what)?.ok_or_else(|| bad(what, "<vcpupin> without vcpu"))? as u32;
            let set = pin.attribute("cpuset").ok_or_else(|| bad(what, "<vcpupin> without cpuset"))?;
            vcpupin.push((vcpu, cpuset(set, what)?));
        }
        if let Some(set) = child(tune, "emulatorpin").and_then(|e| e.attribute("cpuset")) {
            emulatorpin = Some(cpuset(set, what)?);
        }
    }
    vcpupin.sort_by_key(|(v, _)| *v);

    let (mut numa_mode, mut numa_nodeset) = (None, None);
    if let Some(mem) = at(root, &["numatune", "memory"]) {
        // libvirt's default mode is strict.
        numa_mode = Some(mem.attribute("mode").unwrap_or("strict").to_string());
        if let Some(set) = mem.attribute("nodeset") {
            numa_nodeset = Some(cpuset(set, what)?);
        }
    }

    let mut numa_cells = Vec::new();
    if let Some(numa) = at(root, &["cpu", "numa"]) {
        for cell in children(numa, "cell") {
            // A cell without `cpus` is one of memory only (GPU memory on Grace).
            let cpus = match cell.attribute("cpus") {
                Some(set) => cpuset(set, what)?,
                None => CpuSet::default(),
            };
            let mem = cell.attribute("memory").ok_or_else(|| bad(what, "guest NUMA cell without memory"))?;
            numa_cells.push((cpus, size(mem, cell.attribute("unit"), "KiB", what)?));
        }
    }

    let (mut hostdevs, mut interfaces, mut disks) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(devices) = child(root, "devices") {
        for dev in children(devices, "hostdev") {
            if dev.attribute("type") != Some("pci") {
                continue;
            }
            if let Some(addr) = at(dev, &["source", "address"]) {
                hostdevs.push(pci_address(addr, what)?);
            }
        }
        for iface in children(devices, "interface") {
            interfaces.push(interface(iface, what)?);
        }
        for disk in children(devices, "disk") {
            disks.push(disk_of(disk));
        }
    }

    Ok(LiveDomain {
        uuid: text_at(root, &["uuid"]).unwrap_or_default(),
        name,
        state,
        autostart,
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
        owner: owner::parse(root),
        addresses: owner::addresses(root),
        xml: xml.to_string(),
        running: None,
    })
}

fn interface(iface: Node<'_, '_>, what: &str) -> Result<LiveInterface> {
    let kind = iface.attribute("type").unwrap_or("").to_string();
    let src = child(iface, "source");
    let source = match (kind.as_str(), src) {
        (_, None) => String::new(),
        ("hostdev", Some(s)) => match child(s, "address") {
            Some(a) => pci_address(a, what)?.to_string(),
            None => String::new(),
        },
        (_, Some(s)) => {
            ["bridge", "network", "dev", "path"].iter().find_map(|a| s.attribute(*a)).unwrap_or("").to_string()
        }
    };
    Ok(LiveInterface {
        mac: child(iface, "mac").and_then(|m| m.attribute("address")).map(str::to_ascii_lowercase),
        kind,
        source,
        model: child(iface, "model").and_then(|m| m.attribute("type")).map(str::to_string),
        target: child(iface, "target").and_then(|t| t.attribute("dev")).map(str::to_string),
    })
}

fn disk_of(disk: Node<'_, '_>) -> LiveDisk {
    let target = child(disk, "target");
    let source = child(disk, "source").and_then(|s| match (s.attribute("pool"), s.attribute("volume")) {
        (Some(pool), Some(volume)) => Some(format!("{pool}/{volume}")),
        _ => ["file", "dev", "dir", "name"].iter().find_map(|a| s.attribute(*a)).map(str::to_string),
    });
    LiveDisk {
        target: target.and_then(|t| t.attribute("dev")).unwrap_or("").to_string(),
        bus: target.and_then(|t| t.attribute("bus")).unwrap_or("").to_string(),
        source,
        format: child(disk, "driver").and_then(|d| d.attribute("type")).map(str::to_string),
    }
}

/// The tap devices of a running domain's interfaces, by MAC, from its live XML.
pub fn interface_targets(live_xml: &str) -> Result<Vec<(String, String)>> {
    let doc = parse_doc(live_xml, "a running domain")?;
    let mut out = Vec::new();
    if let Some(devices) = child(doc.root_element(), "devices") {
        for iface in children(devices, "interface") {
            let mac = child(iface, "mac").and_then(|m| m.attribute("address"));
            let dev = child(iface, "target").and_then(|t| t.attribute("dev"));
            if let (Some(mac), Some(dev)) = (mac, dev) {
                out.push((mac.to_ascii_lowercase(), dev.to_string()));
            }
        }
    }
    Ok(out)
}

/// A network from its XML, with its state given.
pub fn network(xml: &str, active: bool, autostart: bool) -> Result<LiveNetwork> {
    let doc = parse_doc(xml, "a network")?;
    let root = doc.root_element();
    let name = text_at(root, &["name"]).ok_or_else(|| bad("a network", "no <name>"))?;
    // `<forward/>` without a mode is NAT (formatnetwork.html).
    let forward = child(root, "forward").map(|f| f.attribute("mode").unwrap_or("nat").to_string());
    Ok(LiveNetwork {
        uuid: text_at(root, &["uuid"]).unwrap_or_default(),
        name,
        active,
        autostart,
        bridge: child(root, "bridge").and_then(|b| b.attribute("name")).map(str::to_string),
        forward,
        owner: owner::parse(root),
        xml: xml.to_string(),
    })
}

/// The kind of a pool (`dir`, `logical`, `netfs`, …) from its XML.
pub fn pool_kind(xml: &str) -> Result<String> {
    let doc = parse_doc(xml, "a storage pool")?;
    Ok(doc.root_element().attribute("type").unwrap_or("").to_string())
}

/// A storage pool from its live XML (sizes are only there while it runs) and its
/// inactive XML (kept for diffs); volumes are read separately.
pub fn pool(live_xml: &str, inactive_xml: &str, active: bool, autostart: bool) -> Result<LivePool> {
    let doc = parse_doc(live_xml, "a storage pool")?;
    let root = doc.root_element();
    let name = text_at(root, &["name"]).ok_or_else(|| bad("a storage pool", "no <name>"))?;
    let what = format!("storage pool `{name}`");
    let sized = |elem: &str| -> Result<ByteSize> {
        match child(root, elem) {
            Some(n) => size_elem(n, "bytes", &what),
            None => Ok(ByteSize(0)),
        }
    };
    Ok(LivePool {
        uuid: text_at(root, &["uuid"]).unwrap_or_default(),
        kind: root.attribute("type").unwrap_or("").to_string(),
        path: text_at(root, &["target", "path"]),
        active,
        autostart,
        capacity: sized("capacity")?,
        available: sized("available")?,
        volumes: Vec::new(),
        // Storage XML has no <metadata>: libvirt drops it at define (see `owner`).
        owner: owner::parse(root),
        name,
        xml: inactive_xml.to_string(),
    })
}

/// A storage volume from its XML.
pub fn volume(xml: &str) -> Result<LiveVolume> {
    let doc = parse_doc(xml, "a storage volume")?;
    let root = doc.root_element();
    let name = text_at(root, &["name"]).ok_or_else(|| bad("a storage volume", "no <name>"))?;
    let what = format!("storage volume `{name}`");
    let sized = |elem: &str| -> Result<ByteSize> {
        match child(root, elem) {
            Some(n) => size_elem(n, "bytes", &what),
            None => Ok(ByteSize(0)),
        }
    };
    Ok(LiveVolume {
        path: text_at(root, &["target", "path"]).unwrap_or_default(),
        capacity: sized("capacity")?,
        allocation: sized("allocation")?,
        format: at(root, &["target", "format"]).and_then(|f| f.attribute("type")).map(str::to_string),
        owner: owner::parse(root),
        name,
    })
}

#[cfg(test)]
mod tests;
