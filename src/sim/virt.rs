//! The libvirt side of a twin: libvirt's own `test:///` driver, real libvirt code with
//! its rules and errors, made persistent.
//!
//! The test driver keeps its objects in memory for one connection. The twin saves every
//! domain, network and pool (with its volumes) to `libvirt.json` after each change, and
//! on opening writes them into a node file that the test driver loads. What libvirt
//! cannot simulate — the host's NUMA layout and PCI devices (its test driver reports
//! none for a custom node) — comes from the host's declaration: the twin has exactly the
//! declared hardware.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::driver::libvirt::LibvirtDriver;
use crate::driver::{DriverError, ErrorKind, Result, ShutdownOutcome, Virt};
use crate::live::{HostInfo, LiveDomain, LiveNetwork, LiveNumaNode, LivePciDevice, LivePool, PowerState, Sriov};
use crate::spec::model::{Host, NicKind};
use crate::spec::types::PciAddress;

/// Bumped when the saved shape changes; an older file is refused rather than misread.
const STATE_VERSION: u32 = 1;
/// libvirt's test driver namespace, whose `runstate` restores a domain's power state.
const TEST_NS: &str = "http://libvirt.org/schemas/domain/test/1.0";
/// `VIR_DOMAIN_SHUTOFF` in the test driver's `runstate`.
const RUNSTATE_SHUTOFF: u32 = 5;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    version: u32,
    domains: Vec<SavedDomain>,
    networks: Vec<SavedObject>,
    pools: Vec<SavedPool>,
    /// PCI devices bound to vfio-pci for passthrough.
    detached: Vec<PciAddress>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedDomain {
    xml: String,
    running: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedObject {
    xml: String,
    active: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedPool {
    xml: String,
    active: bool,
    volumes: Vec<String>,
}

/// A host's simulated libvirt.
pub struct SimVirt {
    inner: LibvirtDriver,
    host: Host,
    dir: PathBuf,
    detached: Vec<PciAddress>,
}

fn failed(what: String) -> DriverError {
    DriverError::new(ErrorKind::Failed, what)
}

/// Opens the twin's libvirt, restoring what earlier runs made.
pub fn open(dir: &Path, host: &Host) -> std::result::Result<Box<dyn Virt>, DriverError> {
    Ok(Box::new(SimVirt::open(dir, host)?))
}

impl SimVirt {
    pub fn open(dir: &Path, host: &Host) -> Result<SimVirt> {
        let state_path = dir.join("libvirt.json");
        let saved: Saved = match std::fs::read_to_string(&state_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| failed(format!("{} is not a simulated libvirt state: {e}", state_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved { version: STATE_VERSION, ..Saved::default() },
            Err(e) => return Err(failed(format!("cannot read {}: {e}", state_path.display()))),
        };
        if saved.version != STATE_VERSION {
            return Err(DriverError::new(
                ErrorKind::Unsupported,
                format!("{} is of version {}, this fabrik reads {STATE_VERSION}", state_path.display(), saved.version),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        let node = dir.join("node.xml");
        std::fs::write(&node, node_xml(host, &saved))
            .map_err(|e| failed(format!("cannot write {}: {e}", node.display())))?;
        let absolute = std::fs::canonicalize(&node).map_err(|e| failed(format!("{}: {e}", node.display())))?;
        let mut inner = LibvirtDriver::connect(&format!("test://{}", absolute.display()))?;
        // The test driver starts every network and pool it loads; stop those that were not.
        for n in saved.networks.iter().filter(|n| !n.active) {
            if let Some(name) = xml_name(&n.xml) {
                inner.stop_network(name)?;
            }
        }
        for p in saved.pools.iter().filter(|p| !p.active) {
            if let Some(name) = xml_name(&p.xml) {
                inner.stop_pool(name)?;
            }
        }
        Ok(SimVirt { inner, host: host.clone(), dir: dir.to_path_buf(), detached: saved.detached })
    }

    /// Saves everything the test driver holds now.
    fn save(&mut self) -> Result<()> {
        let domains = self
            .inner
            .domains()?
            .into_iter()
            .map(|d| SavedDomain { running: d.state != PowerState::ShutOff, xml: d.xml })
            .collect();
        let networks =
            self.inner.networks()?.into_iter().map(|n| SavedObject { xml: n.xml, active: n.active }).collect();
        let pools = self
            .inner
            .pools()?
            .into_iter()
            .map(|p| SavedPool {
                volumes: p
                    .volumes
                    .iter()
                    .map(|v| {
                        format!(
                            "<volume><name>{}</name><capacity unit='bytes'>{}</capacity><allocation unit='bytes'>{}</allocation></volume>",
                            crate::driver::libvirt::owner::escape(&v.name),
                            v.capacity.bytes(),
                            v.allocation.bytes()
                        )
                    })
                    .collect(),
                xml: p.xml,
                active: p.active,
            })
            .collect();
        let saved = Saved { version: STATE_VERSION, domains, networks, pools, detached: self.detached.clone() };
        let path = self.dir.join("libvirt.json");
        let text = serde_json::to_string_pretty(&saved).map_err(|e| failed(e.to_string()))?;
        std::fs::write(&path, text + "\n").map_err(|e| failed(format!("cannot write {}: {e}", path.display())))
    }

    fn saved<T>(&mut self, result: Result<T>) -> Result<T> {
        let value = result?;
        self.save()?;
        Ok(value)
    }
}

/// The `<name>` of a network's or pool's XML.
fn xml_name(xml: &str) -> Option<&str> {
    let start = xml.find("<name>")? + "<name>".len();
    let end = start + xml[start..].find("</name>")?;
    Some(&xml[start..end])
}

/// The node file the test driver loads: a CPU summary and the saved objects.
fn node_xml(host: &Host, saved: &Saved) -> String {
    let cpus: usize = host.numa_nodes.iter().map(|n| n.cpus.value.len()).sum();
    let memory_kib: u64 = host.numa_nodes.iter().map(|n| n.memory.value.bytes() / 1024).sum();
    let nodes = host.numa_nodes.len().max(1);
    let mut out = format!(
        "<node>\n<cpu><mhz>2000</mhz><model>fabrik twin</model><active>{cpus}</active><nodes>{nodes}</nodes>\
         <sockets>1</sockets><cores>{}</cores><threads>1</threads></cpu>\n<memory>{memory_kib}</memory>\n",
        (cpus / nodes).max(1)
    );
    for d in &saved.domains {
        let runstate = if d.running {
            String::new()
        } else {
            format!("<test:runstate xmlns:test='{TEST_NS}'>{RUNSTATE_SHUTOFF}</test:runstate>")
        };
        match d.xml.rfind("</domain>") {
            Some(end) => out.push_str(&format!("{}{runstate}</domain>\n", &d.xml[..end])),
            None => out.push_str(&d.xml),
        }
    }
    for n in &saved.networks {
        out.push_str(&n.xml);
        out.push('\n');
    }
    for p in &saved.pools {
        match p.xml.rfind("</pool>") {
            Some(end) => out.push_str(&format!("{}{}</pool>\n", &p.xml[..end], p.volumes.join(""))),
            None => out.push_str(&p.xml),
        }
    }
    out.push_str("</node>\n");
    out
}

/// ACPI SLIT distances: 10 to itself, 21 to the other nodes (a two-socket server).
const DISTANCE_LOCAL: u32 = 10;
const DISTANCE_REMOTE: u32 = 21;
/// PCI vendor ids: NVIDIA, and Mellanox (NVIDIA networking).
const VENDOR_NVIDIA: u16 = 0x10de;
const VENDOR_MELLANOX: u16 = 0x15b3;
/// PCI classes: 3D controller, Ethernet controller, InfiniBand controller.
const CLASS_3D: u32 = 0x030200;
const CLASS_ETHERNET: u32 = 0x020000;
const CLASS_INFINIBAND: u32 = 0x020700;

impl Virt for SimVirt {
    fn host_info(&mut self) -> Result<HostInfo> {
        let ids: Vec<u32> = self.host.numa_nodes.iter().map(|n| n.id.value).collect();
        let numa = self
            .host
            .numa_nodes
            .iter()
            .map(|n| LiveNumaNode {
                id: n.id.value,
                cpus: n.cpus.value.clone(),
                memory: n.memory.value,
                distances: ids
                    .iter()
                    .map(|&o| if o == n.id.value { DISTANCE_LOCAL } else { DISTANCE_REMOTE })
                    .collect(),
                socket: n.socket.as_ref().map(|s| s.value),
            })
            .collect();
        Ok(HostInfo {
            hostname: self.host.name.value.clone(),
            hypervisor: "libvirt test driver (simulated twin)".to_string(),
            cpu_model: None,
            numa,
        })
    }

    fn devices(&mut self) -> Result<Vec<LivePciDevice>> {
        let mut out = Vec::new();
        for (i, g) in self.host.gpus.iter().enumerate() {
            let info = g.model.value.info();
            let vfio = self.detached.contains(&g.address.value);
            out.push(LivePciDevice {
                address: g.address.value,
                nodedev: crate::driver::libvirt::xml::nodedev_name(g.address.value),
                vendor_id: VENDOR_NVIDIA,
                device_id: info.pci_device_id,
                class: CLASS_3D,
                product: Some(info.nvml_name.to_string()),
                numa_node: Some(g.numa_node.value),
                iommu_group: Some(i as u32),
                driver: Some(if vfio { "vfio-pci" } else { "nvidia" }.to_string()),
                netdevs: Vec::new(),
                sriov: None,
            });
        }
        for (i, n) in self.host.nics.iter().enumerate() {
            let Some(address) = n.address.as_ref().map(|a| a.value) else { continue };
            out.push(LivePciDevice {
                address,
                nodedev: crate::driver::libvirt::xml::nodedev_name(address),
                vendor_id: VENDOR_MELLANOX,
                device_id: 0x1021,
                class: match n.kind.value {
                    NicKind::Ethernet => CLASS_ETHERNET,
                    NicKind::Infiniband => CLASS_INFINIBAND,
                },
                product: Some("ConnectX (simulated)".to_string()),
                numa_node: n.numa_node.as_ref().map(|x| x.value),
                iommu_group: Some((self.host.gpus.len() + i) as u32),
                driver: Some("mlx5_core".to_string()),
                netdevs: vec![n.name.value.clone()],
                sriov: n.sriov_vfs.as_ref().map(|v| Sriov { total_vfs: v.value, num_vfs: 0, vfs: Vec::new() }),
            });
        }
        out.sort_by_key(|d| d.address);
        Ok(out)
    }

    fn domains(&mut self) -> Result<Vec<LiveDomain>> {
        self.inner.domains()
    }
    fn networks(&mut self) -> Result<Vec<LiveNetwork>> {
        self.inner.networks()
    }
    fn pools(&mut self) -> Result<Vec<LivePool>> {
        self.inner.pools()
    }

    fn define_domain(&mut self, xml: &str) -> Result<()> {
        let r = self.inner.define_domain(xml);
        self.saved(r)
    }
    fn undefine_domain(&mut self, name: &str) -> Result<()> {
        let r = self.inner.undefine_domain(name);
        self.saved(r)
    }
    fn start_domain(&mut self, name: &str) -> Result<()> {
        let r = self.inner.start_domain(name);
        self.saved(r)
    }
    fn shutdown_domain(&mut self, name: &str, timeout: Duration) -> Result<ShutdownOutcome> {
        let r = self.inner.shutdown_domain(name, timeout);
        self.saved(r)
    }
    fn destroy_domain(&mut self, name: &str) -> Result<()> {
        let r = self.inner.destroy_domain(name);
        self.saved(r)
    }
    fn set_domain_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        let r = self.inner.set_domain_autostart(name, autostart);
        self.saved(r)
    }
    fn define_network(&mut self, xml: &str) -> Result<()> {
        let r = self.inner.define_network(xml);
        self.saved(r)
    }
    fn start_network(&mut self, name: &str) -> Result<()> {
        let r = self.inner.start_network(name);
        self.saved(r)
    }
    fn stop_network(&mut self, name: &str) -> Result<()> {
        let r = self.inner.stop_network(name);
        self.saved(r)
    }
    fn undefine_network(&mut self, name: &str) -> Result<()> {
        let r = self.inner.undefine_network(name);
        self.saved(r)
    }
    fn define_pool(&mut self, xml: &str) -> Result<()> {
        let r = self.inner.define_pool(xml);
        self.saved(r)
    }
    fn start_pool(&mut self, name: &str) -> Result<()> {
        let r = self.inner.start_pool(name);
        self.saved(r)
    }
    fn stop_pool(&mut self, name: &str) -> Result<()> {
        let r = self.inner.stop_pool(name);
        self.saved(r)
    }
    fn undefine_pool(&mut self, name: &str) -> Result<()> {
        let r = self.inner.undefine_pool(name);
        self.saved(r)
    }
    fn create_volume(&mut self, pool: &str, xml: &str) -> Result<()> {
        let r = self.inner.create_volume(pool, xml);
        self.saved(r)
    }
    fn clone_volume(&mut self, pool: &str, xml: &str, from_pool: &str, from_volume: &str) -> Result<()> {
        let r = self.inner.clone_volume(pool, xml, from_pool, from_volume);
        self.saved(r)
    }
    fn delete_volume(&mut self, pool: &str, name: &str) -> Result<()> {
        let r = self.inner.delete_volume(pool, name);
        self.saved(r)
    }

    /// The twin binds a declared device to vfio-pci, as libvirt's nodedev detach does.
    fn detach_device(&mut self, address: PciAddress) -> Result<()> {
        self.declared(address)?;
        if !self.detached.contains(&address) {
            self.detached.push(address);
        }
        self.save()
    }

    fn reattach_device(&mut self, address: PciAddress) -> Result<()> {
        self.declared(address)?;
        self.detached.retain(|a| *a != address);
        self.save()
    }
}

impl SimVirt {
    fn declared(&self, address: PciAddress) -> Result<()> {
        let known = self.host.gpus.iter().any(|g| g.address.value == address)
            || self.host.nics.iter().any(|n| n.address.as_ref().is_some_and(|a| a.value == address));
        if known {
            Ok(())
        } else {
            Err(DriverError::new(
                ErrorKind::NotFound,
                format!("cannot find PCI device {address}: Node device not found"),
            )
            .with_code("VIR_ERR_NO_NODE_DEVICE"))
        }
    }
}
