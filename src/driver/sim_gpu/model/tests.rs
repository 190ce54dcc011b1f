//! Tests of the module beside it.

use super::*;

fn h200() -> SimGpuState {
    SimGpuState::new(vec![SimGpu {
        vgpu: None,
        address: PciAddress::parse("0000:3b:00.0").unwrap(),
        model: GpuModel::H200_141GB,
        uuid: "GPU-test".into(),
        memory: nvml_memory(GpuModel::H200_141GB),
        numa_node: Some(0),
        cpu_affinity: None,
        nvlinks: vec![],
        mig: Some(MigMode { current: true, pending: true }),
        activation: Activation::Immediate,
        instances: vec![],
    }])
}

fn at(start: u32, size: u32) -> Option<Placement> {
    Some(Placement { start, size })
}

#[test]
fn every_catalog_profile_has_an_nvml_index() {
    for m in [GpuModel::A100_40GB, GpuModel::A100_80GB, GpuModel::H100_80GB, GpuModel::H200_141GB, GpuModel::GB200] {
        let mut seen: Vec<u32> = mig::profiles(m).iter().map(|p| nvml_profile_index(p).unwrap()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), mig::profiles(m).len(), "{m}");
    }
}

#[test]
fn instances_take_their_placements_and_no_others() {
    let mut s = h200();
    assert_eq!(s.create_gpu_instance(0, 9, at(4, 4)), Ok(2), "3g at 4:4 is instance 2");
    assert_eq!(s.create_gpu_instance(0, 14, at(0, 2)), Ok(3));
    let e = s.create_gpu_instance(0, 14, at(4, 2)).unwrap_err();
    assert_eq!(e.code, Code::INSUFFICIENT_RESOURCES, "{}", e.message);
    let e = s.create_gpu_instance(0, 9, at(2, 4)).unwrap_err();
    assert_eq!(e.code, Code::INVALID_ARGUMENT, "{}", e.message);
    let e = s.create_gpu_instance(0, 9, at(0, 3)).unwrap_err();
    assert_eq!(e.code, Code::INVALID_ARGUMENT, "wrong size");
    assert_eq!(s.create_gpu_instance(0, 42, at(0, 1)).unwrap_err().code, Code::INVALID_ARGUMENT);
    assert_eq!(s.create_gpu_instance(0, 19, None), Ok(9), "first free 1g slot is 2:1");
    assert_eq!(s.remaining_capacity(0, 19), Ok(1), "only 3:1 is left for a 1g");
}

#[test]
fn media_engines_and_instance_counts_are_limited() {
    let mut s = h200();
    s.create_gpu_instance(0, 20, at(0, 1)).unwrap();
    assert_eq!(s.create_gpu_instance(0, 20, at(1, 1)).unwrap_err().code, Code::INSUFFICIENT_RESOURCES);
    let mut s = h200();
    s.create_gpu_instance(0, 0, None).unwrap();
    assert_eq!(s.create_gpu_instance(0, 0, None).unwrap_err().code, Code::INSUFFICIENT_RESOURCES);
}

#[test]
fn mig_off_is_not_supported() {
    let mut s = h200();
    s.gpus[0].mig = Some(MigMode { current: false, pending: false });
    assert_eq!(s.create_gpu_instance(0, 9, at(0, 4)).unwrap_err().code, Code::NOT_SUPPORTED);
    assert_eq!(s.gpu_instance_profile(0, 0).unwrap_err().code, Code::NOT_SUPPORTED);
    s.gpus[0].model = GpuModel::L40S;
    s.gpus[0].mig = None;
    assert_eq!(s.mig_mode(0).unwrap_err().code, Code::NOT_SUPPORTED);
    assert_eq!(s.set_mig_mode(0, true).unwrap_err().code, Code::NOT_SUPPORTED);
}

#[test]
fn compute_instances_hold_their_gpu_instance() {
    let mut s = h200();
    let gi = s.create_gpu_instance(0, 0, None).unwrap();
    let full = s.compute_instance_profile(0, gi, 4).unwrap();
    assert_eq!((full.slices, full.instances, full.name.as_str()), (7, 1, "7g.141gb"));
    let three = s.compute_instance_placements(0, gi, 2).unwrap();
    assert_eq!(three.iter().map(|p| p.start).collect::<Vec<_>>(), vec![0, 4]);
    let ci = s.create_compute_instance(0, gi, 4, None).unwrap();
    assert_eq!(s.create_compute_instance(0, gi, 0, None).unwrap_err().code, Code::INSUFFICIENT_RESOURCES);
    assert_eq!(s.destroy_gpu_instance(0, gi).unwrap_err().code, Code::IN_USE);
    s.gpus[0].instances[0].compute_instances[0].busy = true;
    assert_eq!(s.destroy_compute_instance(0, gi, ci).unwrap_err().code, Code::IN_USE);
    s.gpus[0].instances[0].compute_instances[0].busy = false;
    s.destroy_compute_instance(0, gi, ci).unwrap();
    s.destroy_gpu_instance(0, gi).unwrap();
    assert_eq!(s.destroy_gpu_instance(0, gi).unwrap_err().code, Code::INVALID_ARGUMENT, "a stale handle");
    assert_eq!(s.gpu_instance(0, gi).unwrap_err().code, Code::NOT_FOUND);
}

#[test]
fn mode_changes_activate_or_stay_pending() {
    let mut s = h200();
    s.create_gpu_instance(0, 9, None).unwrap();
    assert_eq!(s.set_mig_mode(0, false), Ok(Code::IN_USE), "instances keep the GPU busy");
    assert_eq!(s.mig_mode(0), Ok(MigMode { current: true, pending: false }));
    s.reset(0).unwrap();
    assert_eq!(s.mig_mode(0), Ok(MigMode { current: false, pending: false }));
    assert!(s.gpus[0].instances.is_empty(), "a reset clears MIG instances");
    s.gpus[0].activation = Activation::ResetRequired;
    assert_eq!(s.set_mig_mode(0, true), Ok(Code::RESET_REQUIRED));
    assert_eq!(s.mig_mode(0), Ok(MigMode { current: false, pending: true }));
    s.gpus[0].activation = Activation::Immediate;
    assert_eq!(s.set_mig_mode(0, true), Ok(Code::SUCCESS));
    assert_eq!(s.mig_mode(0), Ok(MigMode { current: true, pending: true }));
}
