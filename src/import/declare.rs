//! A live domain → the VM declaration that renders to it: explicit sizing (no template),
//! its host, its tenant, its disks as the pool volumes they are, its NICs with their MACs
//! on the factory's networks. What cannot be declared is a reason, in words.

use crate::live::{LiveDomain, LiveHost, PowerState};
use crate::spec::model::{DiskBus, Firmware, Power, Spec};
use crate::spec::types::ByteSize;

/// A VM declaration, as `fabrik import` prints it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VmDecl {
    pub name: String,
    pub tenant: String,
    pub host: String,
    pub vcpus: u32,
    pub memory: ByteSize,
    pub firmware: Firmware,
    pub power: Power,
    pub nics: Vec<NicDecl>,
    pub disks: Vec<DiskDecl>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NicDecl {
    pub network: String,
    pub mac: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DiskDecl {
    /// The disk's name within the VM: its guest device (`vda`).
    pub name: String,
    pub pool: String,
    pub volume: String,
    pub size: ByteSize,
    pub bus: DiskBus,
}

/// The declaration of `domain` on `live` (its host), or every reason it has none.
/// `tenant` is the operator's `--tenant`, else the tenant whose networks the NICs join.
pub fn declare(spec: &Spec, live: &LiveHost, domain: &LiveDomain, tenant: Option<&str>) -> Result<VmDecl, Vec<String>> {
    let host = live.name.as_str();
    // The factory's networks that may be on this host, with their bridges.
    let networks: Vec<(&crate::spec::model::Network, Option<String>)> = spec
        .networks
        .iter()
        .filter(|n| n.hosts.is_empty() || n.hosts.iter().any(|h| h.value == host))
        .map(|n| (n, crate::desired::net::bridge_name(n)))
        .collect();
    let mut why = Vec::new();
    if !domain.hostdevs.is_empty() {
        why.push(format!(
            "it passes through PCI devices ({}); import declares no GPUs yet: declare the VM by hand",
            domain.hostdevs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    if domain.hugepages.is_some() || !domain.vcpupin.is_empty() || !domain.numa_cells.is_empty() {
        why.push(
            "it is pinned or NUMA-tuned (hugepages, vcpupin or guest NUMA cells); import declares shared vCPUs \
             without NUMA placement only: declare the VM by hand"
                .to_string(),
        );
    }
    let mut nics = Vec::new();
    let mut tenants: Vec<&str> = Vec::new();
    for (k, iface) in domain.interfaces.iter().enumerate() {
        let network = match iface.kind.as_str() {
            "bridge" => networks.iter().find(|(_, b)| b.as_deref() == Some(iface.source.as_str())),
            "network" => networks.iter().find(|(n, _)| n.name.value == iface.source),
            _ => None,
        };
        let Some((network, _)) = network else {
            why.push(format!(
                "its NIC {k} ({} `{}`) is on no network the factory declares on host `{host}`: declare that network first",
                iface.kind, iface.source
            ));
            continue;
        };
        let Some(mac) = &iface.mac else {
            why.push(format!("its NIC {k} has no MAC address"));
            continue;
        };
        if let Some(t) = &network.tenant
            && !tenants.contains(&t.value.as_str())
        {
            tenants.push(&t.value);
        }
        nics.push(NicDecl { network: network.name.value.clone(), mac: mac.clone() });
    }
    let mut disks = Vec::new();
    for disk in &domain.disks {
        let Some((pool, volume)) =
            disk.source.as_deref().filter(|s| !s.starts_with('/')).and_then(|s| s.split_once('/'))
        else {
            why.push(format!(
                "its disk `{}` is not a volume of a storage pool ({}); fabrik attaches disks as pool volumes: make it \
                 one (`<disk type='volume'>`, a restart) or leave the VM unmanaged",
                disk.target,
                disk.source.as_deref().unwrap_or("no source")
            ));
            continue;
        };
        if !spec.pools.iter().any(|p| p.name.value == pool) {
            why.push(format!(
                "its disk `{}` is in pool `{pool}`, which the factory does not declare: declare it first",
                disk.target
            ));
            continue;
        }
        let bus = match disk.bus.as_str() {
            "virtio" => DiskBus::Virtio,
            "scsi" => DiskBus::Scsi,
            "sata" => DiskBus::Sata,
            other => {
                why.push(format!("its disk `{}` is on bus `{other}`; fabrik knows virtio, scsi and sata", disk.target));
                continue;
            }
        };
        let found =
            live.pools.iter().find(|p| p.name == pool).and_then(|p| p.volumes.iter().find(|v| v.name == volume));
        let Some(vol) = found else {
            why.push(format!(
                "its disk `{}` names volume `{volume}` of pool `{pool}`, which is not there",
                disk.target
            ));
            continue;
        };
        disks.push(DiskDecl {
            name: disk.target.clone(),
            pool: pool.to_string(),
            volume: volume.to_string(),
            size: vol.capacity,
            bus,
        });
    }
    let tenant = match (tenant, tenants.as_slice()) {
        (Some(t), _) => t.to_string(),
        (None, [t]) => t.to_string(),
        (None, []) => {
            why.push("no tenant can be told from its networks: name one with `--tenant`".to_string());
            String::new()
        }
        (None, many) => {
            why.push(format!(
                "its NICs are on networks of several tenants ({}): name one with `--tenant`",
                many.join(", ")
            ));
            String::new()
        }
    };
    if !why.is_empty() {
        return Err(why);
    }
    Ok(VmDecl {
        name: domain.name.clone(),
        tenant,
        host: host.to_string(),
        vcpus: domain.vcpus,
        memory: domain.memory,
        firmware: firmware(&domain.xml),
        power: match domain.state {
            PowerState::ShutOff => Power::Stopped,
            PowerState::Running | PowerState::Paused | PowerState::Crashed | PowerState::Other => Power::Running,
        },
        nics,
        disks,
    })
}

/// `<os firmware='efi'>` is UEFI; anything else boots the BIOS (fabrik's `<os>` has no
/// other firmware; a hand-written `<loader>` shows as a difference when checked).
fn firmware(xml: &str) -> Firmware {
    let efi = roxmltree::Document::parse(xml).ok().is_some_and(|doc| {
        doc.root_element()
            .children()
            .find(|n| n.has_tag_name("os"))
            .and_then(|os| os.attribute("firmware"))
            .is_some_and(|f| f == "efi")
    });
    if efi { Firmware::Uefi } else { Firmware::Bios }
}

/// The declarations as a YAML factory file (`version: 1` and a `vms:` list).
pub fn yaml(decls: &[VmDecl]) -> String {
    yaml_with_places(decls).0
}

/// [`yaml`], with the byte range each declaration takes in it (to tell which VM a
/// diagnostic about the file is about).
pub fn yaml_with_places(decls: &[VmDecl]) -> (String, Vec<std::ops::Range<usize>>) {
    let mut y = String::from("version: 1\n\nvms:\n");
    let mut places = Vec::new();
    for d in decls {
        let start = y.len();
        y += &format!("  - name: \"{}\"\n    tenant: \"{}\"\n    host: \"{}\"\n", d.name, d.tenant, d.host);
        y += &format!("    vcpus: {}\n    memory: {}\n", d.vcpus, d.memory);
        // Shared vCPUs without NUMA placement: what a domain without pinning renders to.
        y += "    cpu-policy: shared\n    numa: none\n";
        y += &format!("    firmware: {}\n", d.firmware);
        if d.power == Power::Stopped {
            y += "    power: stopped\n";
        }
        if !d.nics.is_empty() {
            y += "    nics:\n";
            for n in &d.nics {
                y += &format!("      - {{ network: \"{}\", mac: \"{}\" }}\n", n.network, n.mac);
            }
        }
        if !d.disks.is_empty() {
            y += "    disks:\n";
            for k in &d.disks {
                y += &format!(
                    "      - {{ name: \"{}\", pool: \"{}\", volume: \"{}\", size: {}, bus: {} }}\n",
                    k.name, k.pool, k.volume, k.size, k.bus
                );
            }
        }
        places.push(start..y.len());
    }
    (y, places)
}

/// The declarations as a KDL factory file.
pub fn kdl(decls: &[VmDecl]) -> String {
    let mut k = String::from("version 1\n");
    for d in decls {
        k += &format!("\nvm \"{}\" {{\n    tenant \"{}\"\n    host \"{}\"\n", d.name, d.tenant, d.host);
        k += &format!("    vcpus {}\n    memory \"{}\"\n", d.vcpus, d.memory);
        k += "    cpu-policy shared\n    numa none\n";
        k += &format!("    firmware {}\n", d.firmware);
        if d.power == Power::Stopped {
            k += "    power stopped\n";
        }
        for n in &d.nics {
            k += &format!("    nic \"{}\" mac=\"{}\"\n", n.network, n.mac);
        }
        for disk in &d.disks {
            k += &format!(
                "    disk \"{}\" pool=\"{}\" volume=\"{}\" size=\"{}\" bus={}\n",
                disk.name, disk.pool, disk.volume, disk.size, disk.bus
            );
        }
        k += "}\n";
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::source::{Sources, Syntax};

    fn decls() -> Vec<VmDecl> {
        vec![
            VmDecl {
                name: "legacy-a".into(),
                tenant: "acme".into(),
                host: "h1".into(),
                vcpus: 2,
                memory: ByteSize(96 << 20),
                firmware: Firmware::Uefi,
                power: Power::Stopped,
                nics: vec![NicDecl { network: "shared".into(), mac: "52:54:00:ab:00:01".into() }],
                disks: vec![DiskDecl {
                    name: "vda".into(),
                    pool: "vms".into(),
                    volume: "legacy-a-root".into(),
                    size: ByteSize(16 << 20),
                    bus: DiskBus::Virtio,
                }],
            },
            VmDecl {
                name: "7up".into(),
                tenant: "acme".into(),
                host: "h1".into(),
                vcpus: 1,
                memory: ByteSize(64 << 20),
                firmware: Firmware::Bios,
                power: Power::Running,
                nics: Vec::new(),
                disks: Vec::new(),
            },
        ]
    }

    fn vms(syntax: Syntax, text: String) -> serde_json::Value {
        let name = if syntax == Syntax::Kdl { "i.kdl" } else { "i.yaml" };
        let (_, spec, diags) =
            crate::spec::load::load_bytes(&mut Sources::default(), name.into(), syntax, text.into_bytes());
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:#?}");
        let mut v = serde_json::to_value(&spec.vms).unwrap();
        strip_spans(&mut v);
        v
    }

    fn strip_spans(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("span");
                m.values_mut().for_each(strip_spans);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip_spans),
            _ => {}
        }
    }

    #[test]
    fn yaml_and_kdl_declare_the_same_vms() {
        let yaml = vms(Syntax::Yaml, yaml(&decls()));
        let kdl = vms(Syntax::Kdl, kdl(&decls()));
        assert_eq!(yaml, kdl);
        assert_eq!(yaml.as_array().unwrap().len(), 2);
        let text = yaml.to_string();
        for word in ["legacy-a-root", "52:54:00:ab:00:01", "uefi", "stopped", "7up"] {
            assert!(text.contains(word), "{word} in {text}");
        }
    }
}
