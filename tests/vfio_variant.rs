//! GB200 passthrough through its VFIO variant driver: a GPU bound to
//! `nvgrace_gpu_vfio_pci` is passed through (no endless "bind to vfio-pci" in the plan),
//! and inventory warns where a GB200 is bound to plain `vfio-pci` (its guest would not
//! see the GPU's memory). No GB200 or VFIO here: live states are the converged example's,
//! with the driver changed.

use std::path::Path;

use fabrik::plan::{self, Options, converged};

#[test]
fn a_gb200_on_its_variant_driver_is_passed_through_and_plain_vfio_pci_is_drift() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory"));
    let v = fabrik::check::validate(path);
    let d = fabrik::desired::build(&v.spec).unwrap();
    let mut live = converged(&d);
    let spec_host = v.spec.hosts.iter().find(|h| h.name.value == "gb01").unwrap();
    let gb01 = live.iter_mut().find(|h| h.name == "gb01").unwrap();
    let warnings = |l: &fabrik::live::LiveHost| {
        fabrik::inventory::drift::compare(spec_host, l)
            .into_iter()
            .filter(|d| d.code == "fabrik::drift::vfio-variant")
            .count()
    };
    // converged() binds passthrough GPUs to vfio-pci: four GB200s on the wrong driver.
    assert_eq!(warnings(gb01), 4);
    for dev in gb01.devices.iter_mut().filter(|d| d.class == 0x030200) {
        dev.driver = Some("nvgrace_gpu_vfio_pci".into());
    }
    assert_eq!(warnings(gb01), 0);
    let p = plan::plan(&d, &live, &Options::default());
    assert!(!p.has_changes() && !p.has_errors(), "{}", plan::output::human(&p, Default::default()));
}
