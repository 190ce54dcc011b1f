//! `fabrik::plan::iommu-group` through the whole plan: the converged example, then one
//! GPU of the 8-GPU VM made to share its IOMMU group with a device no VM gets (as on a
//! server without ACS on its PCIe switch), then with a GPU of the same VM.

use std::path::Path;

use fabrik::live::LivePciDevice;
use fabrik::plan::{self, Options, converged};
use fabrik::spec::types::PciAddress;

#[test]
fn a_gpu_sharing_its_iommu_group_is_a_plan_error_unless_the_group_is_the_vms() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory"));
    let v = fabrik::check::validate(path);
    let d = fabrik::desired::build(&v.spec).unwrap();
    let mut live = converged(&d);
    assert!(!plan::plan(&d, &live, &Options::default()).has_errors());
    let gpu01 = live.iter_mut().find(|h| h.name == "gpu01").unwrap();
    let gpu = PciAddress::parse("0000:1b:00.0").unwrap();
    let partner = PciAddress::parse("0000:43:00.0").unwrap();
    for dev in gpu01.devices.iter_mut() {
        dev.iommu_group =
            Some(if dev.address == gpu || dev.address == partner { 7 } else { 100 + u32::from(dev.address.bus) });
    }
    // Two GPUs of acme-train in one group: wholly the VM's, fine.
    assert!(!plan::plan(&d, &live, &Options::default()).has_errors());
    // A third endpoint in the group, given to no VM: an error on the VM.
    let gpu01 = live.iter_mut().find(|h| h.name == "gpu01").unwrap();
    let stranger = LivePciDevice {
        address: PciAddress::parse("0000:1a:00.1").unwrap(),
        class: 0x040300,
        iommu_group: Some(7),
        ..gpu01.devices.iter().find(|d| d.address == gpu).unwrap().clone()
    };
    gpu01.devices.push(stranger);
    let p = plan::plan(&d, &live, &Options::default());
    let errors: Vec<_> = p.errors.iter().filter(|e| e.code == "fabrik::plan::iommu-group").collect();
    assert_eq!(errors.len(), 2, "{:#?}", p.errors);
    assert!(errors.iter().all(|e| e.id.to_string() == "vm:gpu01/acme-train"), "{errors:#?}");
    assert!(errors[0].message.contains("0000:1a:00.1 (given to no VM)"), "{}", errors[0].message);
}
