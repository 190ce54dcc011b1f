//! Names an older fabrik gave, that this one gives differently. A disk whose name has a
//! `-` was volume `<vm>-<disk>`; it is now `<vm>+<disk>` (see [`crate::desired::names`]).
//! Redefining a VM of this factory that still uses the old volume would give it a fresh,
//! empty disk in its place: the plan refuses, and says how to keep the volume.

use super::PlanError;
use crate::desired::{Desired, ResourceId, ResourceKind};
use crate::live::LiveHost;

/// `fabrik::plan::renamed-volume` for every disk of a VM of this factory whose live
/// definition uses the volume's old name.
pub fn renamed_volumes(desired: &Desired, live: &[LiveHost]) -> Vec<PlanError> {
    let mut out = Vec::new();
    for (host, vm, domain) in crate::desired::marked_domains(desired, live) {
        for disk in &vm.disks {
            let Some(rest) = disk.volume.strip_prefix(&format!("{}+", vm.name)) else { continue };
            let old = format!("{}-{rest}", vm.name);
            let uses_old = domain
                .disks
                .iter()
                .any(|d| d.target == disk.target && d.source.as_deref() == Some(&format!("{}/{old}", disk.pool)));
            if !uses_old {
                continue;
            }
            out.push(PlanError {
                code: "fabrik::plan::renamed-volume".into(),
                id: ResourceId::new(ResourceKind::Volume, &host.name, format!("{}/{}", disk.pool, disk.volume)),
                message: format!(
                    "VM `{}` uses volume `{old}` for disk `{rest}`, which this fabrik names `{}`",
                    vm.name, disk.volume
                ),
                help: format!(
                    "to keep the disk's data, add `volume: {old}` to disk `{rest}` of VM `{}`; fabrik names \
                         volumes `<vm>+<disk>` when the disk's name has a `-`, so no two disks share one",
                    vm.name
                ),
                at: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::PowerState;
    use crate::spec::load::load_bytes;
    use crate::spec::source::{Sources, Syntax};

    fn desired(volume: &str) -> Desired {
        let yaml = format!(
            "version: 1\nfactory: ai\nhosts:\n  - {{ name: h, uri: \"test:///default\", numa-nodes: [{{ id: 0, cpus: 0-3, memory: 8GiB }}] }}\npools:\n  - {{ name: vms, type: dir, path: /var/lib/vms }}\ntenants:\n  - {{ name: acme, hosts: [h] }}\nvms:\n  - {{ name: v, tenant: acme, vcpus: 1, memory: 1GiB, disks: [{{ name: vllm-root, size: 1GiB, pool: vms{volume} }}] }}\n"
        );
        let mut sources = Sources::default();
        let (_, spec, diags) = load_bytes(&mut sources, "f.yaml".into(), Syntax::Yaml, yaml.into());
        assert!(diags.is_empty(), "{diags:?}");
        crate::desired::build(&spec).unwrap()
    }

    /// The host as an older fabrik left it: the VM on volume `v-vllm-root`.
    fn old_host(d: &Desired, factory: &str) -> LiveHost {
        let mut vm = d.hosts[0].vms[0].clone();
        vm.disks[0].volume = "v-vllm-root".into();
        let xml = crate::render::domain(factory, &d.hosts[0], &vm);
        let domain = crate::driver::libvirt::xml::domain(&xml, PowerState::Running, true).unwrap();
        LiveHost { name: "h".into(), domains: vec![domain], ..LiveHost::default() }
    }

    #[test]
    fn a_vm_on_its_old_volume_name_is_refused_with_the_fix() {
        let d = desired("");
        assert_eq!(d.hosts[0].vms[0].disks[0].volume, "v+vllm-root");
        let errors = renamed_volumes(&d, &[old_host(&d, "ai")]);
        let [e] = errors.as_slice() else { panic!("one error, got {errors:?}") };
        assert_eq!(e.code, "fabrik::plan::renamed-volume");
        assert!(e.help.contains("`volume: v-vllm-root`"), "{}", e.help);
        // Declaring the old name keeps it; another factory's VM is not this one's concern.
        let kept = desired(", volume: v-vllm-root");
        assert!(renamed_volumes(&kept, &[old_host(&kept, "ai")]).is_empty());
        assert!(renamed_volumes(&d, &[old_host(&d, "other")]).is_empty());
    }
}
