//! One agent connection serving both of its traits.

use std::sync::{Arc, Mutex, MutexGuard};

use super::AgentClient;
use crate::driver::{DriverError, ErrorKind, Gpus, Guid, LinkSpec, Links, Result};
use crate::live::{LiveGpu, LiveHugepages, LiveLink, MigMode};
use crate::spec::types::{PageSize, PciAddress};

/// A handle on a shared agent connection: one ssh session answers for both GPUs and links.
#[derive(Clone)]
pub struct Shared(Arc<Mutex<AgentClient>>);

impl Shared {
    pub fn new(client: AgentClient) -> Shared {
        Shared(Arc::new(Mutex::new(client)))
    }

    /// The connection as the two drivers a host needs.
    pub fn split(client: AgentClient) -> (Box<dyn Gpus>, Box<dyn Links>) {
        let s = Shared::new(client);
        (Box::new(s.clone()), Box::new(s))
    }

    /// Takes the factory's apply lock on the agent's host for this process
    /// ([`AgentClient::lock`]), held while the connection lives.
    pub fn lock(&self, factory: &str, host: &str, holder: &crate::lockfile::Holder) -> Result<()> {
        self.client()?.lock(factory, host, holder)
    }

    fn client(&self) -> Result<MutexGuard<'_, AgentClient>> {
        self.0.lock().map_err(|_| DriverError::new(ErrorKind::Failed, "the agent connection was poisoned by a crash"))
    }
}

impl Gpus for Shared {
    fn gpus(&mut self) -> Result<Vec<LiveGpu>> {
        self.client()?.gpus()
    }
    fn set_mig_mode(&mut self, gpu: PciAddress, enabled: bool) -> Result<MigMode> {
        self.client()?.set_mig_mode(gpu, enabled)
    }
    fn create_instance(&mut self, gpu: PciAddress, profile_id: u32, start: u8) -> Result<u32> {
        self.client()?.create_instance(gpu, profile_id, start)
    }
    fn destroy_instance(&mut self, gpu: PciAddress, instance_id: u32) -> Result<()> {
        self.client()?.destroy_instance(gpu, instance_id)
    }
    fn create_vgpu(
        &mut self,
        gpu: PciAddress,
        profile: &str,
        start: u8,
        uuid: &str,
        vf: Option<PciAddress>,
    ) -> Result<crate::driver::vgpu::VgpuDevice> {
        self.client()?.create_vgpu(gpu, profile, start, uuid, vf)
    }
    fn remove_vgpu(&mut self, gpu: PciAddress, uuid: &str, vf: Option<PciAddress>) -> Result<()> {
        self.client()?.remove_vgpu(gpu, uuid, vf)
    }
}

impl Links for Shared {
    fn links(&mut self) -> Result<Vec<LiveLink>> {
        self.client()?.links()
    }
    fn boot_id(&mut self) -> Result<Option<String>> {
        self.client()?.boot_id()
    }
    fn hugepages(&mut self) -> Result<Vec<LiveHugepages>> {
        self.client()?.hugepages()
    }
    fn create_link(&mut self, spec: &LinkSpec) -> Result<()> {
        self.client()?.create_link(spec)
    }
    fn delete_link(&mut self, name: &str) -> Result<()> {
        self.client()?.delete_link(name)
    }
    fn set_link(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        up: Option<bool>,
        master: Option<Option<String>>,
    ) -> Result<()> {
        self.client()?.set_link(name, mtu, up, master)
    }
    fn add_fdb(&mut self, vxlan: &str, remote: std::net::IpAddr) -> Result<()> {
        self.client()?.add_fdb(vxlan, remote)
    }
    fn del_fdb(&mut self, vxlan: &str, remote: std::net::IpAddr) -> Result<()> {
        self.client()?.del_fdb(vxlan, remote)
    }
    fn set_sriov_vfs(&mut self, nic: &str, count: u32) -> Result<()> {
        self.client()?.set_sriov_vfs(nic, count)
    }
    fn set_vf_guids(&mut self, pf: &str, vf: u32, node: Guid, port: Guid) -> Result<()> {
        self.client()?.set_vf_guids(pf, vf, node, port)
    }
    fn read_partitions(&mut self, path: &str) -> Result<Option<String>> {
        self.client()?.read_partitions(path)
    }
    fn write_partitions(&mut self, path: &str, factory: &str, block: &str) -> Result<()> {
        self.client()?.write_partitions(path, factory, block)
    }
    fn reload_subnet_manager(&mut self) -> Result<()> {
        self.client()?.reload_subnet_manager()
    }
    fn set_hugepages(&mut self, numa_node: u32, size: PageSize, count: u64) -> Result<()> {
        self.client()?.set_hugepages(numa_node, size, count)
    }
}
