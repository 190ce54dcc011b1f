//! Guest configuration: the cloud-init NoCloud seed each VM boots with (user-data,
//! meta-data, network-config), built purely from the desired VM, its template's
//! parameters and the tenant's SSH keys, and packed into a FAT image labelled `CIDATA`.
//!
//! [`config`] makes the three documents; [`seed`] packs them; [`volume`] decides which
//! VMs get a seed, its volume and disk, and its hash. Nothing here touches a host:
//! `apply::seed` uploads the image through the driver.

pub mod config;
pub mod seed;
pub mod volume;

pub use config::{Facts, GuestError, NicConfig, SeedFiles, StaticAddress};
pub use volume::{DesiredSeed, SeedImage};

use crate::desired::{DesiredNic, DesiredVm};

/// What a desired VM's guest may know about itself.
pub fn facts(vm: &DesiredVm) -> Facts {
    let gpus = vm.gpus.len() + vm.mig.len() + vm.time_sliced.len();
    Facts {
        name: vm.name.clone(),
        tenant: vm.tenant.clone(),
        gpus: u32::try_from(gpus).unwrap_or(u32::MAX),
        macs: vm.nics.iter().map(|n| n.mac.clone()).collect(),
    }
}

/// The guest's NICs, in the VM's order. `address` gives a NIC its static address
/// (`None`: DHCP); [`volume::files`] passes each NIC's allocated or declared
/// `DesiredNic::address`.
pub fn nics(vm: &DesiredVm, address: impl Fn(&DesiredNic) -> Option<StaticAddress>) -> Vec<NicConfig> {
    vm.nics.iter().map(|n| NicConfig { mac: n.mac.clone(), address: address(n) }).collect()
}
