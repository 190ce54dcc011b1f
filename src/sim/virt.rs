//! The libvirt side of a twin: libvirt's own `test:///` driver, real libvirt code with
//! its rules and errors, made persistent.
//!
//! The test driver keeps its objects in memory for one connection. The twin saves every
//! domain, network and pool (with its volumes), their power state and autostart, to
//! `libvirt.json` after each change, and on opening writes them into a node file that the
//! test driver loads. What libvirt cannot simulate — the host's NUMA layout and PCI
//! devices — comes from the host's declaration ([`hardware`]).
//!
//! The twin hands the test driver what fabrik renders, changed only where the test
//! driver cannot take it as a real libvirtd does ([`translate`]): a domain's type, arch
//! and machine become the one guest its capabilities list (and are restored on every
//! read); a volume is sparse; a copy of a volume across pools and growing a volume, which
//! the test driver cannot do, the twin does as libvirt's storage driver does. Everything
//! else, errors included, is libvirt's.

mod hardware;
pub mod translate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::driver::libvirt::{LibvirtDriver, libvirt_error};
use crate::driver::sim_links::SimLinks;
use crate::driver::{DriverError, ErrorKind, Result, ShutdownOutcome, Virt};
use crate::live::{HostInfo, LiveDomain, LiveNetwork, LivePciDevice, LivePool, PowerState};
use crate::spec::model::Host;
use crate::spec::types::{ByteSize, PciAddress};

/// Bumped when the saved shape changes; an older file is refused rather than misread.
/// (Fields added with a default keep the version: older files still read right.)
const STATE_VERSION: u32 = 1;
/// libvirt's test driver namespace, whose `runstate` restores a domain's power state.
const TEST_NS: &str = "http://libvirt.org/schemas/domain/test/1.0";
/// `VIR_DOMAIN_PAUSED` and `VIR_DOMAIN_SHUTOFF` in the test driver's `runstate`.
const RUNSTATE_PAUSED: u32 = 3;
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
    /// As the test driver holds it (translated).
    xml: String,
    running: bool,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    autostart: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedObject {
    xml: String,
    active: bool,
    #[serde(default)]
    autostart: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedPool {
    xml: String,
    active: bool,
    #[serde(default)]
    autostart: bool,
    volumes: Vec<String>,
}

/// A host's simulated libvirt.
pub struct SimVirt {
    inner: LibvirtDriver,
    host: Host,
    dir: PathBuf,
    detached: Vec<PciAddress>,
    /// The volumes of each pool as last saved: libvirt lists none for a stopped pool,
    /// but the pool still has them.
    volumes: BTreeMap<String, Vec<String>>,
}

fn failed(what: String) -> DriverError {
    DriverError::new(ErrorKind::Failed, what)
}

/// What was uploaded to volume `pool/name` of the twin whose state folder is `dir`.
pub fn content_path(dir: &Path, pool: &str, name: &str) -> PathBuf {
    dir.join("volumes").join(pool).join(name)
}

/// Opens the twin's libvirt, restoring what earlier runs made.
pub fn open(dir: &Path, host: &Host) -> std::result::Result<Box<dyn Virt>, DriverError> {
    Ok(Box::new(SimVirt::open(dir, host)?))
}

impl SimVirt {
    pub fn open(dir: &Path, host: &Host) -> Result<SimVirt> {
        super::lock_state(dir.parent().unwrap_or(dir))?;
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
        crate::files::replace(&node, node_xml(host, &saved).as_bytes())
            .map_err(|e| failed(format!("cannot write {}: {e}", node.display())))?;
        let absolute = std::fs::canonicalize(&node).map_err(|e| failed(format!("{}: {e}", node.display())))?;
        let mut inner = LibvirtDriver::connect(&format!("test://{}", absolute.display()))?;
        // The test driver starts every network and pool it loads; stop those that were
        // not. Autostart is no part of the node file: set it again.
        for n in &saved.networks {
            let Some(name) = xml_name(&n.xml) else { continue };
            if !n.active {
                inner.stop_network(name)?;
            }
            if n.autostart {
                inner.set_network_autostart(name, true)?;
            }
        }
        for p in &saved.pools {
            let Some(name) = xml_name(&p.xml) else { continue };
            if !p.active {
                inner.stop_pool(name)?;
            }
            if p.autostart {
                inner.set_pool_autostart(name, true)?;
            }
        }
        for d in saved.domains.iter().filter(|d| d.autostart) {
            if let Some(name) = xml_name(&d.xml) {
                inner.set_domain_autostart(name, true)?;
            }
        }
        let volumes =
            saved.pools.iter().filter_map(|p| Some((xml_name(&p.xml)?.to_string(), p.volumes.clone()))).collect();
        Ok(SimVirt { inner, host: host.clone(), dir: dir.to_path_buf(), detached: saved.detached, volumes })
    }

    /// Saves everything the test driver holds now.
    fn save(&mut self) -> Result<()> {
        let domains = self
            .inner
            .domains()?
            .into_iter()
            .map(|d| SavedDomain {
                running: d.state != PowerState::ShutOff,
                paused: d.state == PowerState::Paused,
                autostart: d.autostart,
                xml: d.xml,
            })
            .collect();
        let networks = self
            .inner
            .networks()?
            .into_iter()
            .map(|n| SavedObject { xml: n.xml, active: n.active, autostart: n.autostart })
            .collect();
        let mut volumes = BTreeMap::new();
        let pools = self
            .inner
            .pools()?
            .into_iter()
            .map(|p| {
                let vols = if p.active {
                    p.volumes.iter().map(volume_xml).collect()
                } else {
                    self.volumes.get(&p.name).cloned().unwrap_or_default()
                };
                volumes.insert(p.name.clone(), vols.clone());
                SavedPool { xml: p.xml, active: p.active, autostart: p.autostart, volumes: vols }
            })
            .collect();
        self.volumes = volumes;
        let saved = Saved { version: STATE_VERSION, domains, networks, pools, detached: self.detached.clone() };
        let path = self.dir.join("libvirt.json");
        let text = serde_json::to_string_pretty(&saved).map_err(|e| failed(e.to_string()))?;
        crate::files::replace(&path, (text + "\n").as_bytes())
            .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))
    }

    fn saved<T>(&mut self, result: Result<T>) -> Result<T> {
        let value = result?;
        self.save()?;
        Ok(value)
    }

    fn declared(&self, address: PciAddress) -> Result<()> {
        if hardware::declared(&self.host, address) {
            Ok(())
        } else {
            Err(DriverError::new(
                ErrorKind::NotFound,
                format!("cannot find PCI device {address}: Node device not found"),
            )
            .with_code("VIR_ERR_NO_NODE_DEVICE"))
        }
    }

    /// A volume, looked up as libvirt does (its errors for a missing or stopped pool).
    fn volume(&self, pool: &str, name: &str) -> Result<virt::storage_vol::StorageVol> {
        let p = self
            .inner
            .connection()
            .lookup_storage_pool_by_name(pool)
            .map_err(|e| libvirt_error(&format!("cannot find storage pool `{pool}`"), e))?;
        p.lookup_storage_vol_by_name(name)
            .map_err(|e| libvirt_error(&format!("cannot find volume `{name}` in pool `{pool}`"), e))
    }

    /// A copy of a volume. The test driver looks for the source in the destination pool,
    /// so it cannot copy a base image from `images` to `vms`, and it keeps a copy's
    /// capacity even when smaller than the source's. The twin does what libvirt's storage
    /// driver does: finds the source (libvirt's errors when it cannot), and creates the
    /// copy at least as large as its source. The copy holds no data, as nothing does.
    fn clone_volume_as_libvirt(&mut self, pool: &str, xml: &str, from_pool: &str, from_volume: &str) -> Result<()> {
        let what = format!("cannot create volume in pool `{pool}` from `{from_pool}/{from_volume}`");
        let source = self.volume(from_pool, from_volume)?.info().map_err(|e| libvirt_error(&what, e))?;
        let xml = match translate::volume_capacity(xml) {
            Some(c) if c >= source.capacity => xml.to_string(),
            _ => translate::with_volume_capacity(xml, source.capacity),
        };
        self.inner.create_volume(pool, &translate::volume_to_test(&xml))
    }

    /// Where the twin keeps what was uploaded to a volume (the test driver's volumes hold
    /// no data): `volumes/<pool>/<name>` in the host's state folder.
    pub fn content_path(&self, pool: &str, name: &str) -> PathBuf {
        content_path(&self.dir, pool, name)
    }

    /// An upload. The test driver has no `virStorageVolUpload`; the twin refuses what
    /// libvirt's storage driver refuses (no such volume: libvirt's own error) and keeps
    /// the bytes as the volume's content. Like a dir pool on a real libvirtd
    /// (tests/libvirt_testbed.rs), it does not refuse more bytes than the capacity.
    fn upload_volume_as_libvirt(
        &mut self,
        pool: &str,
        name: &str,
        len: u64,
        data: &mut dyn std::io::Read,
    ) -> Result<()> {
        let what = format!("cannot upload {len} bytes to volume `{name}` in pool `{pool}`");
        self.volume(pool, name)?;
        let path = self.content_path(pool, name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| failed(format!("{what}: {e}")))?;
        }
        // Streamed into the content file, as libvirt streams into the volume.
        let mut file = std::fs::File::create(&path).map_err(|e| failed(format!("{what}: {e}")))?;
        let sent = std::io::copy(&mut std::io::Read::take(data, len), &mut file)
            .map_err(|e| failed(format!("{what}: {e}")))?;
        if sent < len {
            return Err(failed(format!("{what}: the data ended after {sent} bytes")));
        }
        Ok(())
    }

    /// Grows a volume. The test driver has no `virStorageVolResize`; the twin refuses to
    /// shrink as libvirt's storage driver does (without its shrink flag, which fabrik
    /// never passes) and makes the volume again at the new capacity.
    fn resize_volume_as_libvirt(&mut self, pool: &str, name: &str, capacity: ByteSize) -> Result<()> {
        let what = format!("cannot grow volume `{name}` in pool `{pool}` to {capacity}");
        let vol = self.volume(pool, name)?;
        let current = vol.info().map_err(|e| libvirt_error(&what, e))?.capacity;
        if capacity.bytes() < current {
            return Err(DriverError::new(
                ErrorKind::Failed,
                format!("{what}: Can't shrink capacity below current capacity unless shrink flag explicitly specified"),
            )
            .with_code("VIR_ERR_INVALID_ARG"));
        }
        let xml = vol.xml_desc(0).map_err(|e| libvirt_error(&what, e))?;
        vol.delete(0).map_err(|e| libvirt_error(&what, e))?;
        let grown = self.inner.create_volume(pool, &translate::with_volume_capacity(&xml, capacity.bytes()));
        if grown.is_err() {
            // Put the volume back as it was; the error is the one to report.
            let _ = self.inner.create_volume(pool, &xml);
        }
        grown
    }
}

/// The `<name>` of an object's XML (the first: a domain's comes before its devices').
fn xml_name(xml: &str) -> Option<&str> {
    let start = xml.find("<name>")? + "<name>".len();
    let end = start + xml[start..].find("</name>")?;
    Some(&xml[start..end])
}

/// A volume as the node file holds it.
fn volume_xml(v: &crate::live::LiveVolume) -> String {
    let escape = crate::driver::libvirt::owner::escape;
    let format = v.format.as_deref().map(|f| format!("<target><format type='{}'/></target>", escape(f)));
    format!(
        "<volume><name>{}</name><capacity unit='bytes'>{}</capacity><allocation unit='bytes'>{}</allocation>{}</volume>",
        escape(&v.name),
        v.capacity.bytes(),
        v.allocation.bytes(),
        format.unwrap_or_default()
    )
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
        let runstate = match (d.running, d.paused) {
            (true, false) => None,
            (true, true) => Some(RUNSTATE_PAUSED),
            (false, _) => Some(RUNSTATE_SHUTOFF),
        };
        let runstate =
            runstate.map(|s| format!("<test:runstate xmlns:test='{TEST_NS}'>{s}</test:runstate>")).unwrap_or_default();
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

impl SimVirt {
    /// What libvirtd checks as it starts a domain and the test driver does not: every
    /// bridge its NICs join exists on the host (the twin's links, beside its libvirt
    /// state; a twin whose links were never made has only its declared NICs). A real
    /// libvirtd fails on the tap's MTU, with a system error.
    fn check_bridges(&mut self, name: &str) -> Result<()> {
        let Some(d) = self.inner.domains()?.into_iter().find(|d| d.name == name) else {
            return Ok(()); // the test driver says it is not there
        };
        let links_path = self.dir.join("links.json");
        let links = if links_path.exists() {
            SimLinks::load(&links_path).map_err(|e| failed(format!("cannot read {}: {e}", links_path.display())))?
        } else {
            super::initial_links(&self.host)
        };
        for iface in d.interfaces.iter().filter(|i| i.kind == "bridge") {
            let bridge = &iface.source;
            if !links.links.iter().any(|l| &l.link.name == bridge) {
                return Err(DriverError::new(
                    ErrorKind::Failed,
                    format!("cannot start domain `{name}`: Cannot get interface MTU on '{bridge}': No such device"),
                )
                .with_code("VIR_ERR_SYSTEM_ERROR"));
            }
        }
        Ok(())
    }
}

impl SimVirt {
    /// libvirtd starts no domain whose mdev hostdev is not on the host: the twin's GPUs
    /// (`gpus.json` beside it) must carry a vGPU device of that UUID.
    fn check_mdevs(&mut self, name: &str) -> Result<()> {
        let Some(d) = self.inner.domains()?.into_iter().find(|d| d.name == name) else { return Ok(()) };
        let xml = restored(d)?.xml;
        let Ok(doc) = roxmltree::Document::parse(&xml) else { return Ok(()) };
        let wanted: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("hostdev") && n.attribute("type") == Some("mdev"))
            .filter_map(|n| n.descendants().find(|a| a.has_tag_name("address"))?.attribute("uuid").map(str::to_string))
            .collect();
        // Time slices' vGPUs are not made by apply yet (docs/hardware.md): not required.
        let time_slices: Vec<String> = self
            .host
            .gpus
            .iter()
            .filter(|g| g.mode.value == crate::spec::model::host::GpuMode::TimeSliced)
            .map(|g| {
                let id = crate::render::domain::time_slice_id(&self.host.name.value, g.address.value, name);
                crate::render::domain::mdev_uuid(&id)
            })
            .collect();
        let wanted: Vec<String> = wanted.into_iter().filter(|u| !time_slices.contains(u)).collect();
        let path = self.dir.join("gpus.json");
        let gpus = crate::driver::sim_gpu::SimGpuState::load(&path).ok();
        // A vGPU VF (a `managed='no'` PCI hostdev that is a VF of a twin GPU) starts only
        // with a vGPU type written to it, as QEMU cannot open a VF without one.
        let vfs: Vec<PciAddress> = doc
            .descendants()
            .filter(|n| n.has_tag_name("hostdev") && n.attribute("type") == Some("pci"))
            .filter(|n| n.attribute("managed") == Some("no"))
            .filter_map(|n| {
                crate::driver::libvirt::xml::pci_address(
                    n.descendants().find(|a| a.has_tag_name("address"))?,
                    "a hostdev",
                )
                .ok()
            })
            .collect();
        for vf in vfs {
            let Some((g, v)) = gpus.iter().flat_map(|s| &s.gpus).find_map(|g| {
                let v = g.vgpu.as_ref()?;
                (0..v.vfs).any(|n| crate::driver::sim_gpu::sim_vf_address(g.address, n) == vf).then_some((g, v))
            }) else {
                continue;
            };
            let typed = v
                .devices
                .iter()
                .any(|d| d.vf.is_some_and(|n| crate::driver::sim_gpu::sim_vf_address(g.address, n) == vf));
            if !typed {
                return Err(DriverError::new(
                    ErrorKind::Failed,
                    format!("cannot start domain `{name}`: VF {vf} carries no vGPU type"),
                ));
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let have: Vec<&str> = gpus
            .iter()
            .flat_map(|s| &s.gpus)
            .flat_map(|g| g.vgpu.iter().flat_map(|v| &v.devices))
            .map(|d| d.uuid.as_str())
            .collect();
        match wanted.iter().find(|u| !have.contains(&u.as_str())) {
            None => Ok(()),
            Some(uuid) => Err(DriverError::new(
                ErrorKind::Failed,
                format!("cannot start domain `{name}`: mediated device '{uuid}' not found"),
            )
            .with_code("VIR_ERR_NO_NODE_DEVICE")),
        }
    }
}

/// The PCI devices a twin's libvirt has bound to vfio-pci (its `libvirt.json` in `dir`);
/// none when it has no state yet or the state cannot be read (opening the twin's libvirt
/// reports that).
pub fn detached(dir: &Path) -> Vec<PciAddress> {
    std::fs::read_to_string(dir.join("libvirt.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Saved>(&text).ok())
        .map(|saved| saved.detached)
        .unwrap_or_default()
}

/// A domain as a real libvirtd returns it: what the twin translated put back.
fn restored(d: LiveDomain) -> Result<LiveDomain> {
    let xml = translate::domain_from_test(&d.xml);
    if xml == d.xml {
        return Ok(d);
    }
    let mut live = crate::driver::libvirt::xml::domain(&xml, d.state, d.autostart)?;
    // A running guest's tap devices come from its live XML, read with the rest.
    for (iface, read) in live.interfaces.iter_mut().zip(&d.interfaces) {
        iface.target = read.target.clone();
    }
    live.running = d.running;
    Ok(live)
}

impl Virt for SimVirt {
    fn host_info(&mut self) -> Result<HostInfo> {
        let boot_id = super::boot_id(&self.dir).map_err(|e| failed(format!("cannot read the twin's boot id: {e}")))?;
        Ok(HostInfo { boot_id: Some(boot_id), ..hardware::host_info(&self.host) })
    }

    fn devices(&mut self) -> Result<Vec<LivePciDevice>> {
        Ok(hardware::devices(&self.host, &self.detached))
    }

    fn domains(&mut self) -> Result<Vec<LiveDomain>> {
        self.inner.domains()?.into_iter().map(restored).collect()
    }
    fn networks(&mut self) -> Result<Vec<LiveNetwork>> {
        self.inner.networks()
    }
    fn pools(&mut self) -> Result<Vec<LivePool>> {
        self.inner.pools()
    }

    fn define_domain(&mut self, xml: &str) -> Result<()> {
        let r = self.inner.define_domain(&translate::domain_to_test(xml));
        self.saved(r)
    }
    fn undefine_domain(&mut self, name: &str) -> Result<()> {
        let r = self.inner.undefine_domain(name);
        self.saved(r)
    }
    fn start_domain(&mut self, name: &str) -> Result<()> {
        self.check_bridges(name)?;
        self.check_mdevs(name)?;
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
    fn resume_domain(&mut self, name: &str) -> Result<()> {
        let r = self.inner.resume_domain(name);
        self.saved(r)
    }
    fn set_domain_mark(&mut self, name: &str, mark: &str) -> Result<()> {
        let r = self.inner.set_domain_mark(name, mark);
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
    fn set_network_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        let r = self.inner.set_network_autostart(name, autostart);
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
    fn set_pool_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        let r = self.inner.set_pool_autostart(name, autostart);
        self.saved(r)
    }
    fn create_volume(&mut self, pool: &str, xml: &str) -> Result<()> {
        let r = self.inner.create_volume(pool, &translate::volume_to_test(xml));
        self.saved(r)
    }
    fn clone_volume(&mut self, pool: &str, xml: &str, from_pool: &str, from_volume: &str) -> Result<()> {
        let r = self.clone_volume_as_libvirt(pool, xml, from_pool, from_volume);
        self.saved(r)
    }
    fn delete_volume(&mut self, pool: &str, name: &str) -> Result<()> {
        let r = self.inner.delete_volume(pool, name);
        if r.is_ok() {
            let _ = std::fs::remove_file(self.content_path(pool, name));
        }
        self.saved(r)
    }
    fn upload_volume(&mut self, pool: &str, name: &str, len: u64, data: &mut dyn std::io::Read) -> Result<()> {
        self.upload_volume_as_libvirt(pool, name, len, data)
    }
    fn resize_volume(&mut self, pool: &str, name: &str, capacity: ByteSize) -> Result<()> {
        let r = self.resize_volume_as_libvirt(pool, name, capacity);
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
