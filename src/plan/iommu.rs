//! `fabrik::plan::iommu-group`: VFIO isolates whole IOMMU groups, so a passthrough GPU
//! can go to a VM only with every other endpoint of its group. The groups are read from
//! the host: libvirt's PCI node devices carry their `<iommuGroup>` number (the kernel's
//! `/sys/bus/pci/devices/<address>/iommu_group`), and every device with the same number
//! is a member. Twins give every device a group of its own, as a server with ACS does.
//!
//! PCI bridges and root ports stay with the host (`pcieport`); VFIO accepts them in a
//! group it hands out, so they never count against it.

use crate::desired::{DesiredHost, ResourceId};
use crate::live::LivePciDevice;
use crate::spec::types::PciAddress;

/// PCI class of a PCI-to-PCI bridge (base class 0x06, subclass 0x04), any interface.
const CLASS_PCI_BRIDGE: u32 = 0x0604;

/// A passthrough GPU whose group holds a device not given to the same VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedGroup {
    pub vm: ResourceId,
    pub gpu: PciAddress,
    pub group: u32,
    /// The other endpoints of the group, with the VM each goes to (if any).
    pub others: Vec<(PciAddress, Option<String>)>,
}

/// Every passthrough GPU of `host`'s VMs whose group is not wholly that VM's.
pub fn shared_groups(host: &DesiredHost, devices: &[LivePciDevice]) -> Vec<SharedGroup> {
    let owner = |address: PciAddress| host.vms.iter().find(|v| v.gpus.contains(&address)).map(|v| v.name.clone());
    let mut out = Vec::new();
    for vm in &host.vms {
        for &gpu in &vm.gpus {
            let Some(group) = devices.iter().find(|d| d.address == gpu).and_then(|d| d.iommu_group) else { continue };
            let others: Vec<(PciAddress, Option<String>)> = devices
                .iter()
                .filter(|d| d.iommu_group == Some(group) && d.address != gpu && d.class >> 8 != CLASS_PCI_BRIDGE)
                .map(|d| (d.address, owner(d.address)))
                .filter(|(_, to)| to.as_deref() != Some(vm.name.as_str()))
                .collect();
            if !others.is_empty() {
                out.push(SharedGroup { vm: vm.id.clone(), gpu, group, others });
            }
        }
    }
    out
}

/// Reports [`shared_groups`] as plan errors.
pub fn check(host: &DesiredHost, devices: &[LivePciDevice], out: &mut super::diff::Out) {
    for s in shared_groups(host, devices) {
        let others: Vec<String> = s
            .others
            .iter()
            .map(|(a, to)| match to {
                Some(vm) => format!("{a} (given to VM `{vm}`)"),
                None => format!("{a} (given to no VM)"),
            })
            .collect();
        out.error(
            "fabrik::plan::iommu-group",
            &s.vm,
            format!("GPU {} is in IOMMU group {} with {}; VFIO passes whole groups only", s.gpu, s.group, others.join(", ")),
            "give the VM every endpoint of the group (often the GPU's audio or USB function), or move the GPU to a slot with a group of its own (ACS on the PCIe switch)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::DesiredVm;

    fn device(address: &str, class: u32, group: u32) -> LivePciDevice {
        LivePciDevice {
            address: PciAddress::parse(address).unwrap(),
            nodedev: String::new(),
            vendor_id: 0x10de,
            device_id: 0x2335,
            class,
            product: None,
            numa_node: Some(0),
            iommu_group: Some(group),
            driver: None,
            netdevs: vec![],
            sriov: None,
        }
    }

    fn host(vms: &[(&str, &[&str])]) -> DesiredHost {
        let vm = |name: &str, gpus: &[&str]| DesiredVm {
            id: ResourceId::new(crate::desired::ResourceKind::Vm, "h", name),
            name: name.into(),
            tenant: "t".into(),
            vcpus: 1,
            memory: crate::spec::types::ByteSize(1 << 30),
            hugepages: None,
            vcpu_pins: vec![],
            emulator_pin: None,
            numa_node: None,
            numa_cells: vec![],
            gpus: gpus.iter().map(|g| PciAddress::parse(g).unwrap()).collect(),
            mig: vec![],
            time_sliced: vec![],
            nics: vec![],
            disks: vec![],
            firmware: crate::spec::model::Firmware::Bios,
            power: crate::spec::model::Power::Running,
            autostart: true,
            seed: None,
            spec_hash: "h".into(),
        };
        DesiredHost { name: "h".into(), vms: vms.iter().map(|(n, g)| vm(n, g)).collect(), ..DesiredHost::default() }
    }

    #[test]
    fn a_group_of_its_own_or_wholly_assigned_is_fine() {
        let devices = [
            device("0000:1b:00.0", 0x030200, 7),
            device("0000:1a:00.0", 0x060400, 7),
            device("0000:43:00.0", 0x030200, 8),
            device("0000:43:00.1", 0x040300, 8),
        ];
        let h = host(&[("a", &["0000:1b:00.0", "0000:43:00.0", "0000:43:00.1"])]);
        assert_eq!(shared_groups(&h, &devices), vec![]);
    }

    #[test]
    fn a_group_shared_with_an_unassigned_or_foreign_device_is_an_error() {
        let devices = [
            device("0000:1b:00.0", 0x030200, 7),
            device("0000:1b:00.1", 0x040300, 7),
            device("0000:43:00.0", 0x030200, 8),
            device("0000:52:00.0", 0x030200, 8),
        ];
        let h = host(&[("a", &["0000:1b:00.0", "0000:43:00.0"]), ("b", &["0000:52:00.0"])]);
        let got = shared_groups(&h, &devices);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].others, vec![(PciAddress::parse("0000:1b:00.1").unwrap(), None)]);
        assert_eq!(got[1].others, vec![(PciAddress::parse("0000:52:00.0").unwrap(), Some("b".into()))]);
        assert_eq!((got[2].vm.to_string(), got[2].group), ("vm:h/b".into(), 8));
    }
}
