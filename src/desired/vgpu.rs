//! Which SR-IOV VF carries the vGPU of each MIG instance, on a GPU whose host offers
//! vGPUs on VFs (vGPU 17+, Hopper and Blackwell).
//!
//! The VF is fixed by the instance: VF n for the instance at placement n (a GPU has more
//! VFs than MIG placements), so it is a pure function of the files and stays the VM's
//! across a re-layout that keeps its instance. Its PCI address is the host's (the
//! GPU's `virtfn` links): known only once the host is read, so it is filled in with the
//! other facts a plan takes from the hosts ([`crate::plan::as_planned`]).

use super::{Desired, GpuSetup};
use crate::driver::vgpu::VgpuMode;
use crate::live::LiveHost;

/// The desired state with each MIG instance on a VF-mode GPU given its VF's address.
pub fn on_hosts(desired: &Desired, live: &[LiveHost]) -> Desired {
    let mut out = desired.clone();
    on_hosts_in(&mut out, live);
    out
}

/// [`on_hosts`] in place; live hosts looked up by name through an index (the first of
/// each name).
pub fn on_hosts_in(desired: &mut Desired, live: &[LiveHost]) {
    let by_name = crate::live::by_name(live);
    for host in &mut desired.hosts {
        if !host.gpus.iter().any(|g| matches!(g.setup, GpuSetup::Mig { .. })) {
            continue;
        }
        let Some(live) = by_name.get(host.name.as_str()) else { continue };
        for gpu in &mut host.gpus {
            let GpuSetup::Mig { instances } = &mut gpu.setup else { continue };
            let vfs = live
                .gpus
                .iter()
                .find(|g| g.address == gpu.address)
                .and_then(|g| g.vgpu.as_ref())
                .filter(|v| v.mode == VgpuMode::SriovVf)
                .map(|v| v.vfs.as_slice());
            for i in instances.iter_mut() {
                i.vgpu_vf = vfs.and_then(|vfs| vfs.get(usize::from(i.start))).copied();
            }
        }
    }
}
