//! One host's connections during apply, and the driver call behind each [`Step`].
//!
//! Connections open on first use, so a host with nothing to change is never contacted.
//! libvirt connections are pooled up to the host's parallelism (libvirtd serves each
//! on its own worker); the agent (GPUs, links) is one process per host whose calls are
//! taken in turn. A twin has one libvirt connection: its state is one file.
//!
//! A host that stops answering is marked down with the reason, and every later action
//! on it fails with that reason at once instead of waiting on a dead connection.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::driver::agent::Shared;
use crate::driver::{DriverError, ErrorKind, Gpus, Links, Result, ShutdownOutcome, Virt};
use crate::live::PowerState;
use crate::plan::Created;
use crate::plan::ops::{Concern, DomainOp, GpuOp, LinkOp, NetworkOp, RecordOp, Step, StorageOp};
use crate::spec::model::Host;

/// Where fabrik keeps `created.json`, shared by all hosts' actions.
pub struct Records {
    pub path: PathBuf,
    pub created: Mutex<Created>,
    /// Changes made to `created`, counted under its lock.
    changes: AtomicU64,
    /// How many of them the file holds; held while the file is written.
    written: Mutex<u64>,
}

impl Records {
    pub fn new(path: PathBuf, created: Created) -> Records {
        Records { path, created: Mutex::new(created), changes: AtomicU64::new(0), written: Mutex::new(0) }
    }

    /// Makes the change and returns once `created.json` holds it. Changes made while
    /// the file is being written go into the next write together (a group commit):
    /// the file is the whole record, so writing it once per volume of 10,000 hosts
    /// wrote gigabytes; now it is written about once per round of parallel actions.
    fn update(&self, change: impl FnOnce(&mut Created)) -> Result<()> {
        let mine = {
            let mut created = lock(&self.created);
            change(&mut created);
            self.changes.fetch_add(1, Ordering::SeqCst) + 1
        };
        let mut written = lock(&self.written);
        if *written >= mine {
            return Ok(()); // a write that began after this change carried it
        }
        let (snapshot, upto) = {
            let created = lock(&self.created);
            (created.clone(), self.changes.load(Ordering::SeqCst))
        };
        snapshot
            .save(&self.path)
            .map_err(|e| DriverError::new(ErrorKind::Failed, format!("cannot write {}: {e}", self.path.display())))?;
        *written = upto;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A step that panicked is reported by the executor; the data behind the lock (a
    // connection, a record) is still whole.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type Slot<T> = Mutex<Option<std::result::Result<Box<T>, DriverError>>>;

/// One host's drivers, opened as apply needs them.
pub struct HostConn {
    pub name: String,
    host: Host,
    /// The twins' state folder, when applying to simulated twins.
    twins: Option<PathBuf>,
    /// Idle libvirt connections, and how many are open in all.
    virt: Mutex<(Vec<Box<dyn Virt>>, usize)>,
    virt_free: Condvar,
    virt_max: usize,
    gpus: Slot<dyn Gpus>,
    links: Slot<dyn Links>,
    /// The real host's agent, started once for the whole session (lock, observe, apply,
    /// verify); `None` until first needed, or for a twin.
    agent: Mutex<Option<std::result::Result<Shared, DriverError>>>,
    down: Mutex<Option<String>>,
}

impl HostConn {
    pub fn new(host: &Host, twins: Option<PathBuf>, parallelism: usize) -> HostConn {
        HostConn {
            name: host.name.value.clone(),
            host: host.clone(),
            virt_max: if twins.is_some() { 1 } else { parallelism.max(1) },
            twins,
            virt: Mutex::new((Vec::new(), 0)),
            virt_free: Condvar::new(),
            gpus: Mutex::new(None),
            links: Mutex::new(None),
            agent: Mutex::new(None),
            down: Mutex::new(None),
        }
    }

    /// The declared host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Whether this is a simulated twin.
    pub fn is_twin(&self) -> bool {
        self.twins.is_some()
    }

    /// The real host's agent, started on first use and kept: every later use clones it.
    pub fn agent(&self) -> std::result::Result<Shared, DriverError> {
        let mut agent = lock(&self.agent);
        agent.get_or_insert_with(|| crate::driver::connect::open_shared_agent(&self.host)).clone()
    }

    /// Ends the session's agent (letting go of the lock it holds); the next use starts
    /// another.
    pub fn release_agent(&self) {
        *lock(&self.agent) = None;
        *lock(&self.gpus) = None;
        *lock(&self.links) = None;
    }

    /// Closes the libvirt connections not lent out (a twin's: its state is saved when
    /// the last one closes).
    pub fn close_idle_virt(&self) {
        let idle = std::mem::take(&mut lock(&self.virt).0);
        let closed = idle.len();
        drop(idle);
        lock(&self.virt).1 -= closed;
    }

    /// A connection lent out is given back (or closed and forgotten when `broken`).
    pub(crate) fn give_back_virt(&self, v: Box<dyn Virt>, broken: bool) {
        if broken {
            drop(v);
            lock(&self.virt).1 -= 1;
            self.virt_free.notify_one();
        } else {
            self.checkin_virt(v);
        }
    }

    /// Reads the host with the session's agent and one of its libvirt connections (a
    /// twin: its state now).
    pub fn observe(self: &std::sync::Arc<Self>) -> crate::live::LiveHost {
        let drivers = match &self.twins {
            Some(state) => crate::sim::drivers(state, &self.host),
            None => {
                let agent = if self.host.agent.is_some() {
                    self.agent()
                } else {
                    crate::driver::connect::open_shared_agent(&self.host)
                };
                let (gpus, links): (crate::driver::Opened<dyn Gpus>, crate::driver::Opened<dyn Links>) = match agent {
                    Ok(s) => (Ok(Box::new(s.clone())), Ok(Box::new(s))),
                    Err(e) => (Err(e.clone()), Err(e)),
                };
                let virt =
                    self.checkout_virt().map(|v| Box::new(super::lent::Lent::new(self.clone(), v)) as Box<dyn Virt>);
                let partitions_file = self.host.partitions_path().map(str::to_string);
                crate::driver::observe::HostDrivers { virt, gpus, links, partitions_file }
            }
        };
        let name = self.name.clone();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::driver::observe::observe(&name, drivers)))
            .unwrap_or_else(|_| crate::live::LiveHost {
                name: self.name.clone(),
                errors: vec![crate::live::ConcernError {
                    concern: "fabrik".into(),
                    error: DriverError::new(ErrorKind::Failed, "reading this host crashed"),
                }],
                ..crate::live::LiveHost::default()
            })
    }

    /// How many actions may run on this host at once.
    pub fn parallelism(&self) -> usize {
        self.virt_max
    }

    /// Why the host is down, once it is.
    pub fn down(&self) -> Option<String> {
        lock(&self.down).clone()
    }

    fn open_twin(&self) -> Result<crate::driver::observe::HostDrivers> {
        let state = self.twins.as_deref().ok_or_else(|| DriverError::new(ErrorKind::Failed, "not a twin"))?;
        Ok(crate::sim::drivers(state, &self.host))
    }

    /// Opens GPUs and links together: on a real host they share one agent process.
    fn open_agent(&self) {
        let mut gpus = lock(&self.gpus);
        let mut links = lock(&self.links);
        if gpus.is_some() && links.is_some() {
            return;
        }
        let (g, l): (crate::driver::Opened<dyn Gpus>, crate::driver::Opened<dyn Links>) = if self.twins.is_some() {
            match self.open_twin() {
                Ok(d) => (d.gpus, d.links),
                Err(e) => (Err(e.clone()), Err(e)),
            }
        } else {
            match self.agent() {
                Ok(s) => (Ok(Box::new(s.clone())), Ok(Box::new(s))),
                Err(e) => (Err(e.clone()), Err(e)),
            }
        };
        *gpus = Some(g);
        *links = Some(l);
    }

    fn checkout_virt(&self) -> Result<Box<dyn Virt>> {
        let mut pool = lock(&self.virt);
        loop {
            if let Some(v) = pool.0.pop() {
                return Ok(v);
            }
            if pool.1 < self.virt_max {
                pool.1 += 1;
                drop(pool);
                let opened = match &self.twins {
                    Some(state) => crate::sim::virt::open(&crate::sim::host_dir(state, &self.host), &self.host),
                    None => crate::driver::connect::open_virt(&self.host),
                };
                if opened.is_err() {
                    lock(&self.virt).1 -= 1;
                    self.virt_free.notify_one();
                }
                return opened;
            }
            pool = self.virt_free.wait(pool).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn checkin_virt(&self, v: Box<dyn Virt>) {
        lock(&self.virt).0.push(v);
        self.virt_free.notify_one();
    }

    /// Runs one step; blocking. An unreachable host is marked down, and the action that
    /// finds it gone says so as the ones after it will.
    pub fn run(&self, step: &Step, records: &Records) -> Result<()> {
        if let Some(why) = self.down() {
            return Err(DriverError::new(ErrorKind::Unreachable, why));
        }
        self.call(step, records).map_err(|mut e| {
            if e.kind == ErrorKind::Unreachable {
                e.message = format!("host `{}` is unreachable: {}", self.name, e.message);
                let mut down = lock(&self.down);
                if down.is_none() {
                    *down = Some(e.message.clone());
                }
            }
            e
        })
    }

    fn call(&self, step: &Step, records: &Records) -> Result<()> {
        match step.concern() {
            Concern::Virt => {
                let mut v = self.checkout_virt()?;
                let r = virt_step(v.as_mut(), step);
                if r.as_ref().is_err_and(|e| e.kind == ErrorKind::Unreachable) {
                    // A dead connection goes; the next call opens another if it can.
                    lock(&self.virt).1 -= 1;
                    self.virt_free.notify_one();
                } else {
                    self.checkin_virt(v);
                }
                r
            }
            Concern::Gpus => {
                self.open_agent();
                with_slot(&self.gpus, |g| gpu_step(g, step))
            }
            Concern::Links => {
                self.open_agent();
                with_slot(&self.links, |l| link_step(l, step))
            }
            Concern::Local => local_step(records, step),
        }
    }
}

/// Runs `f` on the driver in a slot, or says why there is none.
fn with_slot<T: ?Sized>(slot: &Slot<T>, f: impl FnOnce(&mut T) -> Result<()>) -> Result<()> {
    match lock(slot).as_mut() {
        Some(Ok(d)) => f(d.as_mut()),
        Some(Err(e)) => Err(e.clone()),
        None => Err(DriverError::new(ErrorKind::Unreachable, "the driver did not open")),
    }
}

fn wrong(step: &Step) -> DriverError {
    DriverError::new(ErrorKind::Failed, format!("`{}` sent to the wrong driver", step.describe()))
}

/// Runs a start or resume; when libvirt refuses it because the domain already runs, the
/// step has nothing left to do. That happens after an apply was killed: libvirtd finishes
/// a start it had begun (the domain paused while QEMU starts up, then running), so what
/// the next plan saw as paused or shut off may be running by the time its step comes.
fn reached_running(v: &mut dyn Virt, name: &str, op: impl FnOnce(&mut dyn Virt) -> Result<()>) -> Result<()> {
    let Err(e) = op(v) else { return Ok(()) };
    match v.domains() {
        Ok(ds) if ds.iter().any(|d| d.name == name && d.state == PowerState::Running) => Ok(()),
        _ => Err(e),
    }
}

fn virt_step(v: &mut dyn Virt, step: &Step) -> Result<()> {
    match step {
        Step::Domain(op) => match op {
            DomainOp::Define { xml, .. } => v.define_domain(xml),
            DomainOp::Start { name } => reached_running(v, name, |v| v.start_domain(name)),
            DomainOp::Resume { name } => reached_running(v, name, |v| v.resume_domain(name)),
            DomainOp::Shutdown { name, timeout_s } => {
                match v.shutdown_domain(name, std::time::Duration::from_secs(*timeout_s))? {
                    ShutdownOutcome::Graceful | ShutdownOutcome::NotRunning => Ok(()),
                    // The plan said so: forced off once the timeout has passed.
                    ShutdownOutcome::TimedOut => v.destroy_domain(name),
                }
            }
            DomainOp::Undefine { name } => v.undefine_domain(name),
            DomainOp::Autostart { name, on } => v.set_domain_autostart(name, *on),
            DomainOp::Detach { address } => v.detach_device(*address),
        },
        Step::Network(op) => match op {
            NetworkOp::Define { xml, .. } => v.define_network(xml),
            NetworkOp::Start { name } => v.start_network(name),
            NetworkOp::Stop { name } => match v.stop_network(name) {
                // An inactive network is already stopped.
                Err(e) if e.kind == ErrorKind::Refused => Ok(()),
                r => r,
            },
            NetworkOp::Undefine { name } => v.undefine_network(name),
            NetworkOp::Autostart { name, on } => v.set_network_autostart(name, *on),
        },
        Step::Storage(op) => match op {
            StorageOp::DefinePool { xml, .. } => v.define_pool(xml),
            StorageOp::StartPool { name } => v.start_pool(name),
            StorageOp::PoolAutostart { name, on } => v.set_pool_autostart(name, *on),
            StorageOp::CreateVolume { pool, xml, .. } => v.create_volume(pool, xml),
            StorageOp::CloneVolume { pool, xml, from_pool, from_volume, .. } => {
                v.clone_volume(pool, xml, from_pool, from_volume)
            }
            StorageOp::ResizeVolume { pool, name, capacity } => v.resize_volume(pool, name, *capacity),
            StorageOp::UploadSeed { pool, name, image: Some(image), .. } => {
                v.upload_volume(pool, name, image.0.len() as u64, &mut image.0.as_slice())
            }
            // A saved plan's seeds are built again before it runs (`plan::seeds::fill`):
            // never an empty upload.
            StorageOp::UploadSeed { vm, .. } => Err(DriverError::new(
                ErrorKind::Refused,
                format!("the cloud-init seed of `{vm}` was not built for this apply; plan again"),
            )),
            StorageOp::UploadImage { pool, name, file: Some(file), .. } => {
                let what = format!("cannot read the fetched image {}", file.display());
                let mut f = std::fs::File::open(file)
                    .map_err(|e| DriverError::new(ErrorKind::Failed, format!("{what}: {e}")))?;
                let len = f.metadata().map_err(|e| DriverError::new(ErrorKind::Failed, format!("{what}: {e}")))?.len();
                v.upload_volume(pool, name, len, &mut f)
            }
            // Fetched and verified by the front end before any step runs: never unverified.
            StorageOp::UploadImage { source, .. } => Err(DriverError::new(
                ErrorKind::Refused,
                format!("the image from {source} was not fetched and verified for this apply; plan again"),
            )),
            StorageOp::DeleteVolume { pool, name } => v.delete_volume(pool, name),
        },
        Step::Link(_) | Step::Gpu(_) | Step::Record(_) => Err(wrong(step)),
    }
}

fn gpu_step(g: &mut dyn Gpus, step: &Step) -> Result<()> {
    let Step::Gpu(op) = step else { return Err(wrong(step)) };
    match op {
        GpuOp::SetMigMode { gpu, enabled } => {
            let mode = g.set_mig_mode(*gpu, *enabled)?;
            if mode.current == *enabled {
                Ok(())
            } else {
                // NVML sets the mode pending until the GPU is reset, which fabrik never does
                // behind the operator's back.
                Err(DriverError::new(
                    ErrorKind::Refused,
                    format!(
                        "MIG mode of {gpu} is pending until the GPU is reset: reset it (`nvidia-smi -r -i {gpu}`) with no VM using it, then apply again"
                    ),
                ))
            }
        }
        GpuOp::CreateMigInstance { gpu, profile_id, start, .. } => {
            g.create_instance(*gpu, *profile_id, *start).map(drop)
        }
        GpuOp::DestroyMigInstance { gpu, profile, start } => {
            let gpus = g.gpus()?;
            let instance = gpus
                .iter()
                .filter(|x| x.address == *gpu)
                .flat_map(|x| &x.instances)
                .find(|i| &i.profile == profile && i.start == *start);
            match instance {
                Some(i) => g.destroy_instance(*gpu, i.id),
                // Already gone (a rerun after an interruption): nothing to do.
                None => Ok(()),
            }
        }
        GpuOp::CreateVgpu { gpu, profile, start, uuid, vf } => {
            g.create_vgpu(*gpu, profile, *start, uuid, *vf).map(drop)
        }
        GpuOp::RemoveVgpu { gpu, uuid, vf } => g.remove_vgpu(*gpu, uuid, *vf),
    }
}

fn link_step(l: &mut dyn Links, step: &Step) -> Result<()> {
    let Step::Link(op) = step else { return Err(wrong(step)) };
    match op {
        LinkOp::Create { spec } => l.create_link(spec),
        LinkOp::Set { name, mtu, up, set_master, master } => {
            l.set_link(name, *mtu, *up, set_master.then(|| master.clone()))
        }
        LinkOp::Delete { name, ports } => {
            if let Some(seen) = ports {
                // A port attached since the plan was made may be a guest the plan never
                // weighed (fabrik::plan::in-use): the bridge stays.
                let links = l.links()?;
                let new: Vec<&str> = links
                    .iter()
                    .filter(|p| p.master.as_deref() == Some(name.as_str()) && !seen.contains(&p.name))
                    .map(|p| p.name.as_str())
                    .collect();
                if !new.is_empty() {
                    return Err(DriverError::new(
                        ErrorKind::Refused,
                        format!(
                            "bridge `{name}` has port(s) the plan did not see ({}): not deleted; plan again",
                            new.join(", ")
                        ),
                    )
                    .with_code(crate::plan::in_use::CODE));
                }
            }
            l.delete_link(name)
        }
        LinkOp::AddFdb { vxlan, remote } => l.add_fdb(vxlan, *remote),
        LinkOp::DelFdb { vxlan, remote } => l.del_fdb(vxlan, *remote),
        LinkOp::SetHugepages { numa_node, size, count } => l.set_hugepages(*numa_node, *size, *count),
        LinkOp::SetSriovVfs { nic, count } => l.set_sriov_vfs(nic, *count),
        LinkOp::SetVfGuids { pf, vf, node_guid, port_guid } => l.set_vf_guids(pf, *vf, *node_guid, *port_guid),
        LinkOp::WritePartitions { path, factory, block } => l.write_partitions(path, factory, block),
        LinkOp::ReloadSubnetManager => l.reload_subnet_manager(),
    }
}

fn local_step(records: &Records, step: &Step) -> Result<()> {
    let Step::Record(op) = step else { return Err(wrong(step)) };
    match op {
        RecordOp::Volume { id, deletable } => records.update(|c| c.record(id, *deletable)),
        RecordOp::ForgetVolume { id } => records.update(|c| c.forget(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::load::load_bytes;
    use crate::spec::source::{Sources, Syntax};

    const DOMAIN: &str = "<domain type='kvm'><name>vm1</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
                          <os><type arch='x86_64' machine='q35'>hvm</type></os></domain>";

    /// A twin's libvirt, which refuses what libvirtd refuses.
    fn twin(dir: &std::path::Path) -> Box<dyn Virt> {
        let text = "version: 1\nhosts:\n  - name: h1\n    uri: test:///default\n    numa-nodes: [{ id: 0, cpus: 0-7, memory: 64GiB }]\n";
        let (_, spec, diags) = load_bytes(&mut Sources::default(), "f.yaml".into(), Syntax::Yaml, text.into());
        assert!(diags.is_empty(), "{diags:?}");
        crate::sim::virt::open(dir, &spec.hosts[0]).unwrap()
    }

    #[test]
    fn a_start_or_resume_of_a_running_domain_has_nothing_left_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = twin(dir.path());
        v.define_domain(DOMAIN).unwrap();
        v.start_domain("vm1").unwrap();
        // libvirt refuses both on a running domain…
        assert_eq!(v.start_domain("vm1").unwrap_err().kind, ErrorKind::Refused);
        assert!(v.resume_domain("vm1").is_err());
        // …and the steps, whose goal is a running domain, are done.
        assert!(reached_running(v.as_mut(), "vm1", |v| v.start_domain("vm1")).is_ok());
        assert!(reached_running(v.as_mut(), "vm1", |v| v.resume_domain("vm1")).is_ok());
    }

    #[test]
    fn a_refused_start_or_resume_of_a_domain_not_running_stays_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = twin(dir.path());
        v.define_domain(DOMAIN).unwrap();
        assert!(reached_running(v.as_mut(), "vm1", |v| v.resume_domain("vm1")).is_err(), "shut off, not paused");
        assert!(reached_running(v.as_mut(), "absent", |v| v.start_domain("absent")).is_err());
    }
}
