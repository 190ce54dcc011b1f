//! A pooled libvirt connection lent out whole (to an observation, which takes its drivers
//! by value): every call goes to the session's connection, which returns to the pool
//! when the loan is dropped — or is closed, when a call found the host unreachable.

use std::sync::Arc;
use std::time::Duration;

use super::host::HostConn;
use crate::driver::{ErrorKind, Result, ShutdownOutcome, Virt, VirtReads};
use crate::live::{HostInfo, LiveDomain, LiveNetwork, LivePciDevice, LivePool};
use crate::spec::types::{ByteSize, PciAddress};

pub struct Lent {
    conn: Arc<HostConn>,
    virt: Option<Box<dyn Virt>>,
    broken: bool,
}

impl Lent {
    pub fn new(conn: Arc<HostConn>, virt: Box<dyn Virt>) -> Lent {
        Lent { conn, virt: Some(virt), broken: false }
    }

    fn call<T>(&mut self, f: impl FnOnce(&mut dyn Virt) -> Result<T>) -> Result<T> {
        let Some(v) = self.virt.as_mut() else {
            return Err(crate::driver::DriverError::new(ErrorKind::Failed, "the connection was given back"));
        };
        let r = f(v.as_mut());
        if r.as_ref().is_err_and(|e| e.kind == ErrorKind::Unreachable) {
            self.broken = true;
        }
        r
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(v) = self.virt.take() {
            self.conn.give_back_virt(v, self.broken);
        }
    }
}

impl Virt for Lent {
    fn host_info(&mut self) -> Result<HostInfo> {
        self.call(|v| v.host_info())
    }
    fn devices(&mut self) -> Result<Vec<LivePciDevice>> {
        self.call(|v| v.devices())
    }
    fn domains(&mut self) -> Result<Vec<LiveDomain>> {
        self.call(|v| v.domains())
    }
    fn networks(&mut self) -> Result<Vec<LiveNetwork>> {
        self.call(|v| v.networks())
    }
    fn pools(&mut self) -> Result<Vec<LivePool>> {
        self.call(|v| v.pools())
    }
    fn read_all(&mut self) -> VirtReads {
        let Some(v) = self.virt.as_mut() else {
            let gone = || crate::driver::DriverError::new(ErrorKind::Failed, "the connection was given back");
            return VirtReads {
                info: Err(gone()),
                devices: Err(gone()),
                domains: Err(gone()),
                networks: Err(gone()),
                pools: Err(gone()),
            };
        };
        let reads = v.read_all();
        self.broken |= reads.unreachable();
        reads
    }
    fn define_domain(&mut self, xml: &str) -> Result<()> {
        self.call(|v| v.define_domain(xml))
    }
    fn undefine_domain(&mut self, name: &str) -> Result<()> {
        self.call(|v| v.undefine_domain(name))
    }
    fn start_domain(&mut self, name: &str) -> Result<()> {
        self.call(|v| v.start_domain(name))
    }
    fn shutdown_domain(&mut self, name: &str, timeout: Duration) -> Result<ShutdownOutcome> {
        self.call(|v| v.shutdown_domain(name, timeout))
    }
    fn destroy_domain(&mut self, name: &str) -> Result<()> {
        self.call(|v| v.destroy_domain(name))
    }
    fn set_domain_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        self.call(|v| v.set_domain_autostart(name, autostart))
    }
    fn resume_domain(&mut self, name: &str) -> Result<()> {
        self.call(|v| v.resume_domain(name))
    }
    fn define_network(&mut self, xml: &str) -> Result<()> {
        self.call(|v| v.define_network(xml))
    }
    fn start_network(&mut self, name: &str) -> Result<()> {
        self.call(|v| v.start_network(name))
    }
    fn stop_network(&mut self, name: &str) -> Result<()> {
        self.call(|v| v.stop_network(name))
    }
    fn undefine_network(&mut self, name: &str) -> Result<()> {
        self.call(|v| v.undefine_network(name))
    }
    fn set_network_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        self.call(|v| v.set_network_autostart(name, autostart))
    }
    fn define_pool(&mut self, xml: &str) -> Result<()> {
        self.call(|v| v.define_pool(xml))
    }
    fn start_pool(&mut self, name: &str) -> Result<()> {
        self.call(|v| v.start_pool(name))
    }
    fn stop_pool(&mut self, name: &str) -> Result<()> {
        self.call(|v| v.stop_pool(name))
    }
    fn undefine_pool(&mut self, name: &str) -> Result<()> {
        self.call(|v| v.undefine_pool(name))
    }
    fn set_pool_autostart(&mut self, name: &str, autostart: bool) -> Result<()> {
        self.call(|v| v.set_pool_autostart(name, autostart))
    }
    fn create_volume(&mut self, pool: &str, xml: &str) -> Result<()> {
        self.call(|v| v.create_volume(pool, xml))
    }
    fn clone_volume(&mut self, pool: &str, xml: &str, from_pool: &str, from_volume: &str) -> Result<()> {
        self.call(|v| v.clone_volume(pool, xml, from_pool, from_volume))
    }
    fn delete_volume(&mut self, pool: &str, name: &str) -> Result<()> {
        self.call(|v| v.delete_volume(pool, name))
    }
    fn resize_volume(&mut self, pool: &str, name: &str, capacity: ByteSize) -> Result<()> {
        self.call(|v| v.resize_volume(pool, name, capacity))
    }
    fn upload_volume(&mut self, pool: &str, name: &str, len: u64, data: &mut dyn std::io::Read) -> Result<()> {
        self.call(|v| v.upload_volume(pool, name, len, data))
    }
    fn detach_device(&mut self, address: PciAddress) -> Result<()> {
        self.call(|v| v.detach_device(address))
    }
    fn reattach_device(&mut self, address: PciAddress) -> Result<()> {
        self.call(|v| v.reattach_device(address))
    }
}
