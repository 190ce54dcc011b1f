//! Simulated twins of a factory's hosts, for users without hardware and for CI.
//!
//! A twin is built from a host's declared hardware: libvirt's own `test:///` driver for
//! domains, networks and storage, simulated GPUs that follow the MIG catalog's rules as
//! NVML does, and simulated links. Its state lives in `<state>/<host>/`, where `<state>`
//! is `--state-dir` (`FABRIK_STATE_DIR`) or a folder of the user's, one per factory
//! ([`state_dir`]), so what one command changes the next one sees, and a read-only
//! command such as `plan --sim` writes nothing into the factory's directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::driver::observe::HostDrivers;
use crate::driver::sim_gpu::{SimGpuState, SimGpus};
use crate::driver::sim_links::{NIC_LAYER_ETHERNET, NIC_LAYER_INFINIBAND, SimLinks, SimLinksFile};
use crate::driver::{DriverError, ErrorKind, Gpus, Links, Opened};
use crate::live::{LiveGpu, MigMode};
use crate::spec::model::Host;
use crate::spec::types::PciAddress;

/// Where twins keep their state: `--state-dir`, else
/// `$XDG_STATE_HOME/fabrik/sim/<name>-<hash>` (`~/.local/state/…` without it), where
/// `<name>` is the factory's directory or file name and `<hash>` a hash of its absolute
/// path: one folder per factory, outside it (a factory may sit in a read-only checkout,
/// and its directory is what is reviewed and committed).
pub fn state_dir(factory: &Path, explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    let env = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
    user_state_dir(env("XDG_STATE_HOME"), env("HOME"), factory)
}

/// [`state_dir`]'s default, from `XDG_STATE_HOME` and `HOME` (absolute, or not given).
/// With neither, the system's temporary directory stands in for the user's.
fn user_state_dir(xdg_state_home: Option<PathBuf>, home: Option<PathBuf>, factory: &Path) -> PathBuf {
    let base = xdg_state_home.or_else(|| home.map(|h| h.join(".local/state"))).unwrap_or_else(|| {
        // This process's user, as the owner of its own `/proc` entry.
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
        std::env::temp_dir().join(format!("fabrik-{uid}"))
    });
    base.join("fabrik").join("sim").join(factory_key(factory))
}

/// `<name>-<16 hex digits>`: readable, and apart for two factories of one name.
fn factory_key(factory: &Path) -> String {
    let absolute = std::fs::canonicalize(factory)
        .or_else(|_| std::path::absolute(factory))
        .unwrap_or_else(|_| factory.to_path_buf());
    let name: String = absolute
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
                .collect()
        })
        .filter(|n: &String| !n.is_empty() && !n.starts_with('.'))
        .unwrap_or_else(|| "factory".to_string());
    let hash = crate::hash::fnv1a(absolute.as_os_str().as_encoded_bytes());
    format!("{name}-{hash:016x}")
}

/// How long a command waits for another fabrik process that uses the same twins.
pub const STATE_LOCK_WAIT: Duration = Duration::from_secs(300);

/// The state folders this process holds, with their locked files.
fn lock_registry() -> &'static Mutex<Vec<(PathBuf, File)>> {
    static HELD: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());
    &HELD
}

/// Takes the twins' state folder for this process, until it ends: two `plan --sim` or
/// `apply --sim` at once would each read the state, change it and write it back, and one
/// would lose the other's changes. Within the process, taking it again is a no-op (an
/// apply opens several connections to one twin). Waits up to [`STATE_LOCK_WAIT`].
pub fn lock_state(state: &Path) -> Result<(), DriverError> {
    let fail = |e: std::io::Error| failed("cannot lock the twins' state in", state, e);
    std::fs::create_dir_all(state).map_err(fail)?;
    let key = std::fs::canonicalize(state).map_err(fail)?;
    let mut held = lock_registry().lock().unwrap_or_else(|e| e.into_inner());
    if held.iter().any(|(p, _)| *p == key) {
        return Ok(());
    }
    let file = crate::files::open_in_place(&key.join(".lock")).map_err(fail)?;
    let deadline = Instant::now() + STATE_LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(DriverError::new(
                    ErrorKind::Refused,
                    format!(
                        "the twins' state in {} is in use by another fabrik process (waited {} s)",
                        state.display(),
                        STATE_LOCK_WAIT.as_secs()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(fail(e)),
        }
    }
    held.push((key, file));
    Ok(())
}

/// Lets go of the twins' state folder taken by [`lock_state`], so that another process
/// (a `fabrik plan --sim` started by this one, say) can take it; the next use in this
/// process takes it again.
pub fn release_state(state: &Path) {
    let Ok(key) = std::fs::canonicalize(state) else { return };
    let mut held = lock_registry().lock().unwrap_or_else(|e| e.into_inner());
    held.retain(|(p, _)| *p != key);
}

/// The state folder of one host's twin.
pub fn host_dir(state: &Path, host: &Host) -> PathBuf {
    state.join(&host.name.value)
}

fn failed(what: &str, path: &Path, e: impl std::fmt::Display) -> DriverError {
    DriverError::new(ErrorKind::Failed, format!("{what} {}: {e}", path.display()))
}

/// A NIC's MTU when the host does not declare one: Ethernet's `ETH_DATA_LEN`, and IPoIB's
/// in datagram mode (the 4096-byte IB MTU less its 4-byte header).
const ETHERNET_MTU_DEFAULT: u32 = 1500;
const INFINIBAND_MTU_DEFAULT: u32 = 4092;

/// A host's links as its twin starts: the declared NICs at their declared MTU (SR-IOV
/// capable ones with their VF count as the maximum, none configured) and an empty pool
/// per declared page size.
pub fn initial_links(host: &Host) -> SimLinks {
    let mut links = SimLinks::new();
    for nic in &host.nics {
        let (default, layer) = match nic.kind.value {
            crate::spec::model::NicKind::Infiniband => (INFINIBAND_MTU_DEFAULT, NIC_LAYER_INFINIBAND),
            crate::spec::model::NicKind::Ethernet => (ETHERNET_MTU_DEFAULT, NIC_LAYER_ETHERNET),
        };
        let mtu = nic.mtu.as_ref().map_or(default, |m| m.value);
        links.add_nic_of(&nic.name.value, layer, mtu, nic.sriov_vfs.as_ref().map(|v| v.value));
        // A twin's SR-IOV NIC at its declared address puts its VFs right after it
        // (offset 1, stride 1, as a one-port ConnectX does).
        if let (Some(pf), Some(_)) = (&nic.address, &nic.sriov_vfs) {
            links.set_sriov_pci(&nic.name.value, crate::live::SriovPci { pf: pf.value, offset: 1, stride: 1 });
        }
    }
    if host.subnet_manager.is_some() {
        links.subnet_manager = Some(crate::driver::sim_links::SimSubnetManager { running: true, ..Default::default() });
    }
    for node in &host.numa_nodes {
        for (size, _) in &node.hugepages {
            let capacity = node.memory.value.bytes() / size.value.size().bytes();
            links.add_hugepages(node.id.value, size.value, Some(capacity));
        }
    }
    links
}

/// Opens the simulated GPUs and links of a host's twin, creating its state on first use.
pub fn open_gpus_links(dir: &Path, host: &Host) -> (Opened<dyn Gpus>, Opened<dyn Links>) {
    if let Err(e) = lock_state(dir.parent().unwrap_or(dir)) {
        return (Err(e.clone()), Err(e));
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        let err = failed("cannot create the twin's state folder", dir, e);
        return (Err(err.clone()), Err(err));
    }
    let gpus = SimGpus::open(&dir.join("gpus.json"), || SimGpuState::from_host(host))
        .map(|inner| Box::new(TwinGpus { inner, dir: dir.to_path_buf() }) as Box<dyn Gpus>);
    let links_path = dir.join("links.json");
    let links = (|| {
        if !links_path.exists() {
            initial_links(host).save(&links_path).map_err(|e| failed("cannot write", &links_path, e))?;
        }
        SimLinksFile::open(&links_path).map_err(|e| failed("cannot read", &links_path, e))
    })()
    .map(|l| Box::new(l) as Box<dyn Links>);
    (gpus, links)
}

/// A twin's GPUs as NVML sees them: a GPU the twin's libvirt bound to vfio-pci (for
/// passthrough) is gone from the NVIDIA driver, so NVML neither lists it nor finds it
/// (`NVML_ERROR_NOT_FOUND`), as on a host.
struct TwinGpus {
    inner: SimGpus,
    dir: PathBuf,
}

impl TwinGpus {
    fn visible(&self, gpu: PciAddress) -> crate::driver::Result<()> {
        if virt::detached(&self.dir).contains(&gpu) {
            return Err(crate::driver::nvml::code::Code::NOT_FOUND.error(format!("find GPU {gpu}")));
        }
        Ok(())
    }
}

impl Gpus for TwinGpus {
    fn gpus(&mut self) -> crate::driver::Result<Vec<LiveGpu>> {
        let detached = virt::detached(&self.dir);
        Ok(self.inner.gpus()?.into_iter().filter(|g| !detached.contains(&g.address)).collect())
    }
    fn set_mig_mode(&mut self, gpu: PciAddress, enabled: bool) -> crate::driver::Result<MigMode> {
        self.visible(gpu)?;
        self.inner.set_mig_mode(gpu, enabled)
    }
    fn create_instance(&mut self, gpu: PciAddress, profile_id: u32, start: u8) -> crate::driver::Result<u32> {
        self.visible(gpu)?;
        self.inner.create_instance(gpu, profile_id, start)
    }
    fn destroy_instance(&mut self, gpu: PciAddress, instance_id: u32) -> crate::driver::Result<()> {
        self.visible(gpu)?;
        self.inner.destroy_instance(gpu, instance_id)
    }
    fn create_vgpu(
        &mut self,
        gpu: PciAddress,
        profile: &str,
        start: u8,
        uuid: &str,
        vf: Option<PciAddress>,
    ) -> crate::driver::Result<crate::driver::vgpu::VgpuDevice> {
        self.visible(gpu)?;
        self.inner.create_vgpu(gpu, profile, start, uuid, vf)
    }
    fn remove_vgpu(&mut self, gpu: PciAddress, uuid: &str, vf: Option<PciAddress>) -> crate::driver::Result<()> {
        self.visible(gpu)?;
        self.inner.remove_vgpu(gpu, uuid, vf)
    }
}

/// The twin's boot id, in `<host dir>/boot_id`; made on first read. [`reboot`] gives
/// it a new one, as a host's kernel does at every boot.
pub fn boot_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join("boot_id");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        Ok(_) => new_boot_id(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => new_boot_id(dir),
        Err(e) => Err(e),
    }
}

fn new_boot_id(dir: &Path) -> std::io::Result<String> {
    std::fs::create_dir_all(dir)?;
    let r = || fastrand::u64(..);
    let (a, b) = (r(), r());
    // A random UUID (version 4) as the kernel writes one.
    let id = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    );
    crate::files::replace(&dir.join("boot_id"), format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// What a simulated reboot did: the domains libvirt's autostart started, and those it
/// could not start (with why), as a host's libvirtd logs them.
#[derive(Clone, Debug, Default)]
pub struct Rebooted {
    pub boot_id: String,
    pub autostarted: Vec<String>,
    pub autostart_failed: Vec<(String, String)>,
}

/// Reboots a host's twin as a host reboots: a new boot id; every GPU reset (MIG
/// instances and vGPU devices gone, a pending MIG mode now current); hugepage pools
/// empty and SR-IOV VFs gone; every domain off; then libvirt's autostart starts the
/// domains marked for it, each of which fails whose device is not there.
pub fn reboot(state: &Path, host: &Host) -> Result<Rebooted, DriverError> {
    use crate::driver::Virt;
    let dir = host_dir(state, host);
    let io = |what: &str, e: std::io::Error| failed(what, &dir, e);
    let boot_id = new_boot_id(&dir).map_err(|e| io("cannot write the boot id in", e))?;
    let gpus_path = dir.join("gpus.json");
    if gpus_path.exists() {
        let mut g = SimGpuState::load(&gpus_path)?;
        for i in 0..g.gpus.len() {
            g.reset(i).map_err(|e| e.error(format!("reset GPU {i}")))?;
        }
        g.save(&gpus_path)?;
    }
    let links_path = dir.join("links.json");
    if links_path.exists() {
        let mut l = SimLinksFile::open(&links_path).map_err(|e| failed("cannot read", &links_path, e))?;
        l.reboot().map_err(|e| failed("cannot write", &links_path, e))?;
    }
    let mut virt = virt::SimVirt::open(&dir, host)?;
    let domains = virt.domains()?;
    for d in &domains {
        if d.state == crate::live::PowerState::Running {
            virt.destroy_domain(&d.name)?;
        }
    }
    let mut out = Rebooted { boot_id, ..Rebooted::default() };
    for d in domains.iter().filter(|d| d.autostart) {
        match virt.start_domain(&d.name) {
            Ok(()) => out.autostarted.push(d.name.clone()),
            Err(e) => out.autostart_failed.push((d.name.clone(), e.message)),
        }
    }
    drop(virt);
    release_state(state);
    Ok(out)
}

/// The drivers of a host's twin.
pub fn drivers(state: &Path, host: &Host) -> HostDrivers {
    let dir = host_dir(state, host);
    let (gpus, links) = open_gpus_links(&dir, host);
    HostDrivers {
        virt: virt::open(&dir, host),
        gpus,
        links,
        partitions_file: host.partitions_path().map(str::to_string),
    }
}

pub mod virt;

#[cfg(test)]
mod tests {
    use crate::spec::load::load_bytes;
    use crate::spec::source::{Sources, Syntax};

    #[test]
    fn a_twins_nics_start_at_their_declared_mtu() {
        let text = "version: 1\nhosts:\n  - name: h1\n    uri: test:///default\n    numa-nodes: [{ id: 0, cpus: 0-7, memory: 64GiB }]\n    nics:\n      - { name: stor0, kind: ethernet, mtu: 9000 }\n      - { name: fe0, kind: ethernet }\n      - { name: ib0, kind: infiniband }\n";
        let (_, spec, diags) = load_bytes(&mut Sources::default(), "f.yaml".into(), Syntax::Yaml, text.into());
        assert!(diags.is_empty(), "{diags:?}");
        let links = super::initial_links(&spec.hosts[0]);
        let mtus: Vec<(&str, u32)> = links.links.iter().map(|l| (l.link.name.as_str(), l.link.mtu)).collect();
        assert_eq!(mtus, [("stor0", 9000), ("fe0", 1500), ("ib0", 4092)]);
    }

    #[test]
    fn the_twins_state_is_the_users_one_folder_per_factory() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("one/lab"), dir.path().join("two/lab"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let xdg = Some(std::path::PathBuf::from("/x/state"));
        let home = Some(std::path::PathBuf::from("/home/u"));
        let sa = super::user_state_dir(xdg.clone(), home.clone(), &a);
        assert!(sa.starts_with("/x/state/fabrik/sim/"), "{}", sa.display());
        assert!(sa.file_name().unwrap().to_str().unwrap().starts_with("lab-"), "{}", sa.display());
        // Two factories of one name stay apart; one factory is one folder however named.
        assert_ne!(sa, super::user_state_dir(xdg.clone(), home.clone(), &b));
        assert_eq!(sa, super::user_state_dir(xdg, home.clone(), &a.join("../lab")));
        let sh = super::user_state_dir(None, home, &a);
        assert!(sh.starts_with("/home/u/.local/state/fabrik/sim/"), "{}", sh.display());
        // An explicit folder wins.
        assert_eq!(super::state_dir(&a, Some(std::path::Path::new("/s"))), std::path::PathBuf::from("/s"));
    }
}
