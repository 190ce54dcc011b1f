//! The libvirt side of a twin: libvirt's own `test:///` driver, real libvirt code with
//! its rules and errors, made persistent.
//!
//! The test driver keeps its objects in memory for one connection. The twin saves every
//! domain, network and pool (with its volumes), their power state and autostart, to
//! `libvirt.json`, and to load them writes them into a node file that the test driver
//! loads. What libvirt cannot simulate — the host's NUMA layout and PCI devices — comes
//! from the host's declaration ([`hardware`]).
//!
//! A twin costs what a command does with it, as a libvirtd does:
//! - one process has one libvirt per twin, however many connections it opens (as one
//!   libvirtd serves every connection): opened once, shared, and saved once when the
//!   last connection closes, not after every change (an apply of a host's 40 changes
//!   read and wrote the whole host 40 times);
//! - with the state, the twin saves what its libvirt answered for domains, networks and
//!   pools (`observed.json`, tied to `libvirt.json` by a hash of it); a command that only
//!   reads gets those answers without loading the test driver at all (a no-op
//!   `plan --sim` was mostly libvirt parsing every twin's XML). The first change, or
//!   anything else that needs libvirt, loads it.
//!
//! The twin hands the test driver what fabrik renders, changed only where the test
//! driver cannot take it as a real libvirtd does ([`translate`]): a domain's type, arch
//! and machine become the one guest its capabilities list (and are restored on every
//! read); a volume is sparse; a copy of a volume across pools and growing a volume, which
//! the test driver cannot do, the twin does as libvirt's storage driver does. Everything
//! else, errors included, is libvirt's.

mod hardware;
mod schema;
pub mod translate;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

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

/// What the twin's libvirt answered when its state was last saved; valid while
/// `state` is the hash of `libvirt.json`'s text.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Observed {
    version: u32,
    /// [`crate::hash::fnv1a`] of the `libvirt.json` these answers go with.
    state: u64,
    domains: Vec<LiveDomain>,
    networks: Vec<LiveNetwork>,
    pools: Vec<LivePool>,
}

/// A connection to a host's simulated libvirt. Every connection of one process to one
/// twin shares its libvirt ([`Core`]), as every connection to a host shares its libvirtd.
pub struct SimVirt {
    core: Arc<Mutex<Core>>,
}

/// One twin's libvirt in this process.
struct Core {
    /// libvirt's test driver, loaded at the first call that needs it.
    inner: Option<LibvirtDriver>,
    host: Host,
    dir: PathBuf,
    /// The state as read, until the test driver is loaded from it.
    saved: Option<Saved>,
    /// What libvirt answered at the last save, while the test driver is not loaded.
    answers: Option<Observed>,
    detached: Vec<PciAddress>,
    /// The volumes of each pool as last saved: libvirt lists none for a stopped pool,
    /// but the pool still has them.
    volumes: BTreeMap<String, Vec<String>>,
    /// Changed since the last save.
    dirty: bool,
    /// When the state was last saved (or read).
    saved_at: Instant,
}

/// A twin changed for longer than this is saved before its next change: a process that
/// dies without closing its connections (`kill -9`) loses at most this much of what it
/// did to its twins, as a host that loses power loses what it had not written.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The twins' libvirts this process has open, by state folder.
fn cores() -> MutexGuard<'static, HashMap<PathBuf, Weak<Mutex<Core>>>> {
    static CORES: LazyLock<Mutex<HashMap<PathBuf, Weak<Mutex<Core>>>>> = LazyLock::new(Default::default);
    CORES.lock().unwrap_or_else(|e| e.into_inner())
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
    /// Opens the twin's libvirt: this process's own when it has it open already, else
    /// the saved state (nothing loaded into libvirt until a call needs it).
    pub fn open(dir: &Path, host: &Host) -> Result<SimVirt> {
        super::lock_state(dir.parent().unwrap_or(dir))?;
        std::fs::create_dir_all(dir).map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        let key = std::fs::canonicalize(dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
        if let Some(core) = cores().get(&key).and_then(Weak::upgrade) {
            return Ok(SimVirt { core });
        }
        // Read without holding the registry: twins of other hosts open meanwhile.
        let core = Arc::new(Mutex::new(Core::read(&key, host)?));
        let mut open = cores();
        let core = match open.get(&key).and_then(Weak::upgrade) {
            Some(theirs) => theirs, // another thread opened it first; ours was only read
            None => {
                open.insert(key, Arc::downgrade(&core));
                core
            }
        };
        Ok(SimVirt { core })
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves the twin's state now (it is saved anyway when the last connection closes).
    pub fn save(&self) -> Result<()> {
        self.core().save()
    }

    /// Whether the twin's libvirt (the test driver) has been loaded: a command that
    /// only reads a twin saved by this fabrik never loads it.
    pub fn loaded(&self) -> bool {
        self.core().inner.is_some()
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Err(e) = self.save() {
            // Nothing to return it to; the next command finds the twin as it was.
            eprintln!("error: the twin's changes in {} were not saved: {}", self.dir.display(), e.message);
        }
        let mut open = cores();
        if open.get(&self.dir).is_some_and(|w| w.strong_count() == 0) {
            open.remove(&self.dir);
        }
    }
}

impl Core {
    /// The saved state in `dir` (canonical), and libvirt's answers saved with it.
    fn read(dir: &Path, host: &Host) -> Result<Core> {
        let state_path = dir.join("libvirt.json");
        let (saved, answers): (Saved, Option<Observed>) = match std::fs::read_to_string(&state_path) {
            Ok(text) => {
                let saved: Saved = serde_json::from_str(&text)
                    .map_err(|e| failed(format!("{} is not a simulated libvirt state: {e}", state_path.display())))?;
                let state = crate::hash::fnv1a(text.as_bytes());
                // Answers that do not go with this state (or do not read) are not used.
                let answers = std::fs::read_to_string(dir.join("observed.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str::<Observed>(&t).ok())
                    .filter(|o| o.version == STATE_VERSION && o.state == state);
                (saved, answers)
            }
            // A new twin: libvirt with nothing in it lists nothing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                Saved { version: STATE_VERSION, ..Saved::default() },
                Some(Observed {
                    version: STATE_VERSION,
                    state: 0,
                    domains: Vec::new(),
                    networks: Vec::new(),
                    pools: Vec::new(),
                }),
            ),
            Err(e) => return Err(failed(format!("cannot read {}: {e}", state_path.display()))),
        };
        if saved.version != STATE_VERSION {
            return Err(DriverError::new(
                ErrorKind::Unsupported,
                format!("{} is of version {}, this fabrik reads {STATE_VERSION}", state_path.display(), saved.version),
            ));
        }
        let volumes =
            saved.pools.iter().filter_map(|p| Some((xml_name(&p.xml)?.to_string(), p.volumes.clone()))).collect();
        Ok(Core {
            inner: None,
            host: host.clone(),
            dir: dir.to_path_buf(),
            detached: saved.detached.clone(),
            saved: Some(saved),
            answers,
            volumes,
            dirty: false,
            saved_at: Instant::now(),
        })
    }

    /// The test driver, loaded from the saved state on first use.
    fn conn(&mut self) -> Result<&mut LibvirtDriver> {
        if self.inner.is_none() {
            let saved = self.saved.take().unwrap_or_default();
            let dir = &self.dir;
            let node = dir.join("node.xml");
            crate::files::replace(&node, node_xml(&self.host, &saved).as_bytes())
                .map_err(|e| failed(format!("cannot write {}: {e}", node.display())))?;
            let mut inner = LibvirtDriver::connect(&format!("test://{}", node.display()))?;
            // The test driver starts every network and pool it loads; stop those that
            // were not. Autostart is no part of the node file: set it again.
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
            self.answers = None;
            self.inner = Some(inner);
        }
        Ok(self.inner.as_mut().expect("loaded above"))
    }

    /// A change is about to be made: the test driver is loaded, and the state will be
    /// saved (first the changes before it, when they are [`SAVE_EVERY`] old).
    fn changing(&mut self) -> Result<&mut LibvirtDriver> {
        if self.dirty && self.saved_at.elapsed() > SAVE_EVERY {
            self.save()?;
        }
        self.dirty = true;
        self.conn()
    }

    /// Saves everything the test driver holds now, and its answers, when changed.
    fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let Some(inner) = self.inner.as_mut() else {
            return Err(failed("the twin's libvirt was changed without being loaded".into()));
        };
        let (live_domains, live_networks, live_pools) = (inner.domains()?, inner.networks()?, inner.pools()?);
        let domains = live_domains
            .iter()
            .map(|d| SavedDomain {
                running: d.state != PowerState::ShutOff,
                paused: d.state == PowerState::Paused,
                autostart: d.autostart,
                xml: d.xml.clone(),
            })
            .collect();
        let networks = live_networks
            .iter()
            .map(|n| SavedObject { xml: n.xml.clone(), active: n.active, autostart: n.autostart })
            .collect();
        let mut volumes = BTreeMap::new();
        let pools = live_pools
            .iter()
            .map(|p| {
                let vols = if p.active {
                    p.volumes.iter().map(volume_xml).collect()
                } else {
                    self.volumes.get(&p.name).cloned().unwrap_or_default()
                };
                volumes.insert(p.name.clone(), vols.clone());
                SavedPool { xml: p.xml.clone(), active: p.active, autostart: p.autostart, volumes: vols }
            })
            .collect();
        self.volumes = volumes;
        let saved = Saved { version: STATE_VERSION, domains, networks, pools, detached: self.detached.clone() };
        let path = self.dir.join("libvirt.json");
        let text = serde_json::to_string_pretty(&saved).map_err(|e| failed(e.to_string()))? + "\n";
        let answers = Observed {
            version: STATE_VERSION,
            state: crate::hash::fnv1a(text.as_bytes()),
            domains: live_domains.into_iter().map(restored).collect::<Result<_>>()?,
            networks: live_networks,
            pools: live_pools,
        };
        let answers_path = self.dir.join("observed.json");
        // The answers first: a state without its answers is read from libvirt again,
        // answers without their state are never used.
        let answers_text = serde_json::to_string(&answers).map_err(|e| failed(e.to_string()))?;
        crate::files::replace(&answers_path, answers_text.as_bytes())
            .map_err(|e| failed(format!("cannot write {}: {e}", answers_path.display())))?;
        crate::files::replace(&path, text.as_bytes())
            .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
        self.dirty = false;
        self.saved_at = Instant::now();
        Ok(())
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
    fn volume(&mut self, pool: &str, name: &str) -> Result<virt::storage_vol::StorageVol> {
        let p = self
            .conn()?
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
        self.changing()?.create_volume(pool, &translate::volume_to_test(&xml))
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
        self.dirty = true;
        vol.delete(0).map_err(|e| libvirt_error(&what, e))?;
        let inner = self.changing()?;
        let grown = inner.create_volume(pool, &translate::with_volume_capacity(&xml, capacity.bytes()));
        if grown.is_err() {
            // Put the volume back as it was; the error is the one to report.
            let _ = inner.create_volume(pool, &xml);
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

impl Core {
    /// One shut-off domain as the test driver holds it, read alone (the checks before a
    /// start read the one domain started, not every domain of the host each time).
    fn one_domain(&mut self, name: &str) -> Result<Option<LiveDomain>> {
        let what = format!("cannot read domain `{name}`");
        let xml = match self.conn()?.connection().lookup_domain_by_name(name) {
            Ok(d) => d.xml_desc(0).map_err(|e| libvirt_error(&what, e))?,
            Err(_) => return Ok(None), // the start reports libvirt's own error
        };
        crate::driver::libvirt::xml::domain(&xml, PowerState::ShutOff, false).map(Some)
    }

    /// What libvirtd checks as it starts a domain and the test driver does not: every
    /// bridge its NICs join exists on the host (the twin's links, beside its libvirt
    /// state; a twin whose links were never made has only its declared NICs). A real
    /// libvirtd fails on the tap's MTU, with a system error.
    fn check_bridges(&mut self, name: &str) -> Result<()> {
        let Some(d) = self.one_domain(name)? else {
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

impl Core {
    /// libvirtd starts no domain whose mdev hostdev is not on the host: the twin's GPUs
    /// (`gpus.json` beside it) must carry a vGPU device of that UUID.
    fn check_mdevs(&mut self, name: &str) -> Result<()> {
        let Some(d) = self.one_domain(name)? else { return Ok(()) };
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

/// The PCI devices a twin's libvirt has bound to vfio-pci (this process's open libvirt
/// of the twin, else its `libvirt.json` in `dir`);
/// none when it has no state yet or the state cannot be read (opening the twin's libvirt
/// reports that).
pub fn detached(dir: &Path) -> Vec<PciAddress> {
    let open = std::fs::canonicalize(dir).ok().and_then(|key| cores().get(&key).and_then(Weak::upgrade));
    if let Some(core) = open {
        return core.lock().unwrap_or_else(|e| e.into_inner()).detached.clone();
    }
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

impl Virt for Core {
    fn host_info(&mut self) -> Result<HostInfo> {
        let boot_id = super::boot_id(&self.dir).map_err(|e| failed(format!("cannot read the twin's boot id: {e}")))?;
        Ok(HostInfo { boot_id: Some(boot_id), ..hardware::host_info(&self.host) })
    }

    fn devices(&mut self) -> Result<Vec<LivePciDevice>> {
        Ok(hardware::devices(&self.host, &self.detached))
    }

    fn domains(&mut self) -> Result<Vec<LiveDomain>> {
        if let Some(a) = &self.answers {
            return Ok(a.domains.clone());
        }
        self.conn()?.domains()?.into_iter().map(restored).collect()
    }
    fn networks(&mut self) -> Result<Vec<LiveNetwork>> {
        if let Some(a) = &self.answers {
            return Ok(a.networks.clone());
        }
        self.conn()?.networks()
    }
    fn pools(&mut self) -> Result<Vec<LivePool>> {
        if let Some(a) = &self.answers {
            return Ok(a.pools.clone());
        }
        self.conn()?.pools()
    }

    fn define_domain(&mut self, xml: &str) -> Result<()> {
        let xml = translate::domain_to_test(xml);
        let inner = self.changing()?;
        // libvirt's schema check, with the schema parsed once ([`schema`]); what it does
        // not accept, libvirt checks again and refuses in its own words.
        if schema::domain_valid(&xml) { inner.define_domain_validated(&xml) } else { inner.define_domain(&xml) }
    }
    fn undefine_domain(&mut self, name: &str) -> Result<()> {
        self.changing()?.undefine_domain(name)
    }
    fn start_domain(&mut self, name: &str) -> Result<()> {
        self.check_bridges(name)?;
        self.check_mdevs(name)?;
        self.changing()?.start_domain(name)
    }
    fn shutdown_domain(&mut self, name: &str, timeout: Duration) -> Result<ShutdownOutcome> {
        self.changing()?.shutdown_domain(name, timeout)
    }
    fn destroy_domain(&mut self, name: &str) -> Result<()> {
        self.changing()?.destroy_domain(name)
    }
    fn set_domain_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        self.changing()?.set_domain_autostart(name, autostart)
    }
    fn resume_domain(&mut self, name: &str) -> Result<()> {
        self.changing()?.resume_domain(name)
    }
    fn set_domain_mark(&mut self, name: &str, mark: &str) -> Result<()> {
        self.changing()?.set_domain_mark(name, mark)
    }
    fn define_network(&mut self, xml: &str) -> Result<()> {
        self.changing()?.define_network(xml)
    }
    fn start_network(&mut self, name: &str) -> Result<()> {
        self.changing()?.start_network(name)
    }
    fn stop_network(&mut self, name: &str) -> Result<()> {
        self.changing()?.stop_network(name)
    }
    fn undefine_network(&mut self, name: &str) -> Result<()> {
        self.changing()?.undefine_network(name)
    }
    fn set_network_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        self.changing()?.set_network_autostart(name, autostart)
    }
    fn define_pool(&mut self, xml: &str) -> Result<()> {
        self.changing()?.define_pool(xml)
    }
    fn start_pool(&mut self, name: &str) -> Result<()> {
        self.changing()?.start_pool(name)
    }
    fn stop_pool(&mut self, name: &str) -> Result<()> {
        // libvirt lists no volumes of a stopped pool: keep them as they are now, for the
        // saved state (the pool still has them when it starts again).
        let inner = self.changing()?;
        if let Some(p) = inner.pools()?.into_iter().find(|p| p.name == name && p.active) {
            self.volumes.insert(p.name, p.volumes.iter().map(volume_xml).collect());
        }
        self.changing()?.stop_pool(name)
    }
    fn undefine_pool(&mut self, name: &str) -> Result<()> {
        self.changing()?.undefine_pool(name)
    }
    fn set_pool_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        self.changing()?.set_pool_autostart(name, autostart)
    }
    fn create_volume(&mut self, pool: &str, xml: &str) -> Result<()> {
        self.changing()?.create_volume(pool, &translate::volume_to_test(xml))
    }
    fn clone_volume(&mut self, pool: &str, xml: &str, from_pool: &str, from_volume: &str) -> Result<()> {
        self.clone_volume_as_libvirt(pool, xml, from_pool, from_volume)
    }
    fn delete_volume(&mut self, pool: &str, name: &str) -> Result<()> {
        self.changing()?.delete_volume(pool, name)?;
        let _ = std::fs::remove_file(content_path(&self.dir, pool, name));
        Ok(())
    }
    fn upload_volume(&mut self, pool: &str, name: &str, len: u64, data: &mut dyn std::io::Read) -> Result<()> {
        self.upload_volume_as_libvirt(pool, name, len, data)
    }
    fn resize_volume(&mut self, pool: &str, name: &str, capacity: ByteSize) -> Result<()> {
        self.resize_volume_as_libvirt(pool, name, capacity)
    }

    /// The twin binds a declared device to vfio-pci, as libvirt's nodedev detach does.
    fn detach_device(&mut self, address: PciAddress) -> Result<()> {
        self.declared(address)?;
        if !self.detached.contains(&address) {
            self.changing()?;
            self.detached.push(address);
        }
        Ok(())
    }

    fn reattach_device(&mut self, address: PciAddress) -> Result<()> {
        self.declared(address)?;
        if self.detached.contains(&address) {
            self.changing()?;
            self.detached.retain(|a| *a != address);
        }
        Ok(())
    }
}

/// Every call goes to the twin's one libvirt in this process.
impl Virt for SimVirt {
    fn host_info(&mut self) -> Result<HostInfo> {
        self.core().host_info()
    }
    fn devices(&mut self) -> Result<Vec<LivePciDevice>> {
        self.core().devices()
    }
    fn domains(&mut self) -> Result<Vec<LiveDomain>> {
        self.core().domains()
    }
    fn networks(&mut self) -> Result<Vec<LiveNetwork>> {
        self.core().networks()
    }
    fn pools(&mut self) -> Result<Vec<LivePool>> {
        self.core().pools()
    }
    fn define_domain(&mut self, xml: &str) -> Result<()> {
        self.core().define_domain(xml)
    }
    fn undefine_domain(&mut self, name: &str) -> Result<()> {
        self.core().undefine_domain(name)
    }
    fn start_domain(&mut self, name: &str) -> Result<()> {
        self.core().start_domain(name)
    }
    fn shutdown_domain(&mut self, name: &str, timeout: Duration) -> Result<ShutdownOutcome> {
        self.core().shutdown_domain(name, timeout)
    }
    fn destroy_domain(&mut self, name: &str) -> Result<()> {
        self.core().destroy_domain(name)
    }
    fn set_domain_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        self.core().set_domain_autostart(name, autostart)
    }
    fn resume_domain(&mut self, name: &str) -> Result<()> {
        self.core().resume_domain(name)
    }
    fn set_domain_mark(&mut self, name: &str, mark: &str) -> Result<()> {
        self.core().set_domain_mark(name, mark)
    }
    fn define_network(&mut self, xml: &str) -> Result<()> {
        self.core().define_network(xml)
    }
    fn start_network(&mut self, name: &str) -> Result<()> {
        self.core().start_network(name)
    }
    fn stop_network(&mut self, name: &str) -> Result<()> {
        self.core().stop_network(name)
    }
    fn undefine_network(&mut self, name: &str) -> Result<()> {
        self.core().undefine_network(name)
    }
    fn set_network_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        self.core().set_network_autostart(name, autostart)
    }
    fn define_pool(&mut self, xml: &str) -> Result<()> {
        self.core().define_pool(xml)
    }
    fn start_pool(&mut self, name: &str) -> Result<()> {
        self.core().start_pool(name)
    }
    fn stop_pool(&mut self, name: &str) -> Result<()> {
        self.core().stop_pool(name)
    }
    fn undefine_pool(&mut self, name: &str) -> Result<()> {
        self.core().undefine_pool(name)
    }
    fn set_pool_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        self.core().set_pool_autostart(name, autostart)
    }
    fn create_volume(&mut self, pool: &str, xml: &str) -> Result<()> {
        self.core().create_volume(pool, xml)
    }
    fn clone_volume(&mut self, pool: &str, xml: &str, from_pool: &str, from_volume: &str) -> Result<()> {
        self.core().clone_volume(pool, xml, from_pool, from_volume)
    }
    fn delete_volume(&mut self, pool: &str, name: &str) -> Result<()> {
        self.core().delete_volume(pool, name)
    }
    fn upload_volume(&mut self, pool: &str, name: &str, len: u64, data: &mut dyn std::io::Read) -> Result<()> {
        self.core().upload_volume(pool, name, len, data)
    }
    fn resize_volume(&mut self, pool: &str, name: &str, capacity: ByteSize) -> Result<()> {
        self.core().resize_volume(pool, name, capacity)
    }
    fn detach_device(&mut self, address: PciAddress) -> Result<()> {
        self.core().detach_device(address)
    }
    fn reattach_device(&mut self, address: PciAddress) -> Result<()> {
        self.core().reattach_device(address)
    }
}
