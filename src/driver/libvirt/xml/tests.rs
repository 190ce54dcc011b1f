//! XML as libvirt returns it (recorded from libvirt 9.0 and its documentation) → live
//! values.

use super::*;
use crate::live::Ownership;

/// Two NUMA nodes with distances, as on a dual-socket server.
const CAPS_TWO_NODES: &str = r#"<capabilities>
  <host>
    <uuid>b9c78906-31e1-484d-b3bd-d1c1abf187f3</uuid>
    <cpu>
      <arch>x86_64</arch>
      <model>Icelake-Server</model>
      <vendor>Intel</vendor>
      <topology sockets='1' dies='1' cores='2' threads='1'/>
      <pages unit='KiB' size='4'/>
      <pages unit='KiB' size='2048'/>
    </cpu>
    <topology>
      <cells num='2'>
        <cell id='1'>
          <memory unit='KiB'>4194304</memory>
          <pages unit='KiB' size='2048'>16</pages>
          <distances>
            <sibling id='0' value='21'/>
            <sibling id='1' value='10'/>
          </distances>
          <cpus num='2'>
            <cpu id='2' socket_id='1' die_id='0' core_id='0' siblings='2'/>
            <cpu id='3' socket_id='1' die_id='0' core_id='1' siblings='3'/>
          </cpus>
        </cell>
        <cell id='0'>
          <memory unit='GiB'>2</memory>
          <distances>
            <sibling id='0' value='10'/>
            <sibling id='1' value='21'/>
          </distances>
          <cpus num='2'>
            <cpu id='0' socket_id='0' die_id='0' core_id='0' siblings='0'/>
            <cpu id='1' socket_id='0' die_id='0' core_id='1' siblings='1'/>
          </cpus>
        </cell>
      </cells>
    </topology>
  </host>
</capabilities>"#;

#[test]
fn capabilities_give_numa_nodes_in_id_order() {
    let caps = capabilities(CAPS_TWO_NODES).unwrap();
    assert_eq!(caps.arch.as_deref(), Some("x86_64"));
    assert_eq!(caps.cpu_model.as_deref(), Some("Icelake-Server"));
    assert_eq!(caps.numa.len(), 2);
    let n0 = &caps.numa[0];
    assert_eq!((n0.id, n0.cpus.to_string(), n0.memory, n0.socket), (0, "0-1".into(), ByteSize(2 << 30), Some(0)));
    assert_eq!(n0.distances, vec![10, 21]);
    let n1 = &caps.numa[1];
    assert_eq!((n1.id, n1.cpus.to_string(), n1.memory, n1.socket), (1, "2-3".into(), ByteSize(4 << 30), Some(1)));
    assert_eq!(n1.distances, vec![21, 10]);
}

#[test]
fn capabilities_without_topology_have_no_nodes() {
    let caps = capabilities("<capabilities><host><cpu><arch>i686</arch></cpu></host></capabilities>").unwrap();
    assert!(caps.numa.is_empty());
    assert!(capabilities("<capabilities/>").is_err());
    assert!(capabilities("<capabilities").is_err());
}

/// A ConnectX-7 physical function with two VFs enabled, bound to mlx5_core.
const NODEDEV_NIC_PF: &str = r#"<device>
  <name>pci_0000_17_00_0</name>
  <path>/sys/devices/pci0000:16/0000:16:02.0/0000:17:00.0</path>
  <parent>pci_0000_16_02_0</parent>
  <driver>
    <name>mlx5_core</name>
  </driver>
  <capability type='pci'>
    <class>0x020700</class>
    <domain>0</domain>
    <bus>23</bus>
    <slot>0</slot>
    <function>0</function>
    <product id='0x1021'>MT2910 Family [ConnectX-7]</product>
    <vendor id='0x15b3'>Mellanox Technologies</vendor>
    <capability type='virt_functions' maxCount='16'>
      <address domain='0x0000' bus='0x17' slot='0x00' function='0x1'/>
      <address domain='0x0000' bus='0x17' slot='0x00' function='0x2'/>
    </capability>
    <iommuGroup number='41'>
      <address domain='0x0000' bus='0x17' slot='0x00' function='0x0'/>
    </iommuGroup>
    <numa node='0'/>
    <pci-express>
      <link validity='cap' port='0' speed='32' width='16'/>
    </pci-express>
  </capability>
</device>"#;

/// An H200 bound to vfio-pci, on NUMA node 1.
const NODEDEV_GPU: &str = r#"<device>
  <name>pci_0000_3b_00_0</name>
  <parent>pci_0000_3a_00_0</parent>
  <driver><name>vfio-pci</name></driver>
  <capability type='pci'>
    <class>0x030200</class>
    <domain>0</domain>
    <bus>59</bus>
    <slot>0</slot>
    <function>0</function>
    <product id='0x2335'>GH100 [H200 SXM 141GB]</product>
    <vendor id='0x10de'>NVIDIA Corporation</vendor>
    <iommuGroup number='23'>
      <address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/>
    </iommuGroup>
    <numa node='1'/>
  </capability>
</device>"#;

#[test]
fn pci_devices_with_sriov_numa_iommu_and_driver() {
    let nic = pci_device(NODEDEV_NIC_PF).unwrap().unwrap();
    assert_eq!(nic.address.to_string(), "0000:17:00.0");
    assert_eq!(nic.nodedev, "pci_0000_17_00_0");
    assert_eq!((nic.vendor_id, nic.device_id, nic.class), (0x15b3, 0x1021, 0x020700));
    assert_eq!(nic.product.as_deref(), Some("MT2910 Family [ConnectX-7]"));
    assert_eq!((nic.numa_node, nic.iommu_group), (Some(0), Some(41)));
    assert_eq!(nic.driver.as_deref(), Some("mlx5_core"));
    let sriov = nic.sriov.unwrap();
    assert_eq!((sriov.total_vfs, sriov.num_vfs), (16, 2));
    assert_eq!(sriov.vfs.iter().map(|a| a.to_string()).collect::<Vec<_>>(), ["0000:17:00.1", "0000:17:00.2"]);

    let gpu = pci_device(NODEDEV_GPU).unwrap().unwrap();
    assert_eq!(gpu.address.to_string(), "0000:3b:00.0");
    assert_eq!((gpu.vendor_id, gpu.device_id), (0x10de, 0x2335));
    assert_eq!((gpu.numa_node, gpu.iommu_group, gpu.sriov), (Some(1), Some(23), None));
    assert_eq!(gpu.driver.as_deref(), Some("vfio-pci"));
}

#[test]
fn pci_device_without_numa_or_driver() {
    let xml = r#"<device><name>pci_0000_00_00_0</name><parent>computer</parent>
      <capability type='pci'><domain>0</domain><bus>0</bus><slot>0</slot><function>0</function>
      <product id='0x0d57'/><vendor id='0x8086'/><numa node='-1'/></capability></device>"#;
    let d = pci_device(xml).unwrap().unwrap();
    assert_eq!((d.class, d.product, d.numa_node, d.driver, d.iommu_group), (0, None, None, None, None));
    let not_pci = "<device><name>computer</name><capability type='system'/></device>";
    assert_eq!(pci_device(not_pci).unwrap(), None);
}

#[test]
fn net_devices_name_their_parent() {
    let xml = r#"<device><name>net_ens1f0np0_b8_3f_d2_00_00_01</name><parent>pci_0000_17_00_0</parent>
      <capability type='net'><interface>ens1f0np0</interface><address>b8:3f:d2:00:00:01</address>
      <link speed='200000' state='up'/></capability></device>"#;
    assert_eq!(net_device(xml).unwrap(), Some(("pci_0000_17_00_0".into(), "ens1f0np0".into())));
}

#[test]
fn nodedev_names_follow_libvirt() {
    let a = PciAddress::parse("0000:3b:00.0").unwrap();
    assert_eq!(nodedev_name(a), "pci_0000_3b_00_0");
}

/// A pinned GPU VM as fabrik renders them: NUMA-aligned, hugepages, a GPU and a VF passed
/// through, a bridge NIC, a disk from a pool volume, fabrik's mark.
const DOMAIN_GPU_VM: &str = r#"<domain type='kvm'>
  <name>acme-vllm-0</name>
  <uuid>6a1f3a52-3f3c-4a4e-9a0e-0f0b1c2d3e4f</uuid>
  <metadata>
    <fabrik:owner xmlns:fabrik="https://fabrik.dev/xmlns/1" factory="ai-factory" resource="vm:gpu01/acme-vllm-0" spec-hash="b3c1"/>
  </metadata>
  <memory unit='KiB'>67108864</memory>
  <currentMemory unit='KiB'>67108864</currentMemory>
  <memoryBacking>
    <hugepages>
      <page size='1048576' unit='KiB' nodeset='0'/>
    </hugepages>
  </memoryBacking>
  <vcpu placement='static'>4</vcpu>
  <cputune>
    <vcpupin vcpu='1' cpuset='57'/>
    <vcpupin vcpu='0' cpuset='56'/>
    <vcpupin vcpu='2' cpuset='58-59'/>
    <vcpupin vcpu='3' cpuset='60,62'/>
    <emulatorpin cpuset='0-1'/>
  </cputune>
  <numatune>
    <memory mode='strict' nodeset='1'/>
  </numatune>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
  </os>
  <cpu mode='host-passthrough' check='none' migratable='on'>
    <numa>
      <cell id='0' cpus='0-3' memory='64' unit='GiB' memAccess='shared'/>
    </numa>
  </cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='images' volume='acme-vllm-0-root'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/seed.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:AA:BB:01'/>
      <source bridge='br-acme'/>
      <target dev='vnet7'/>
      <model type='virtio'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:02'/>
      <source network='acme-mgmt'/>
      <model type='virtio'/>
    </interface>
    <interface type='hostdev' managed='yes'>
      <mac address='52:54:00:aa:bb:03'/>
      <source>
        <address type='pci' domain='0x0000' bus='0x17' slot='0x00' function='0x1'/>
      </source>
    </interface>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/>
      </source>
      <address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/>
    </hostdev>
    <hostdev mode='subsystem' type='usb'>
      <source><vendor id='0x1234'/><product id='0xbeef'/></source>
    </hostdev>
    <memballoon model='none'/>
  </devices>
</domain>"#;

#[test]
fn domain_reads_everything_fabrik_compares() {
    let d = domain(DOMAIN_GPU_VM, PowerState::Running, true).unwrap();
    assert_eq!(d.name, "acme-vllm-0");
    assert_eq!(d.uuid, "6a1f3a52-3f3c-4a4e-9a0e-0f0b1c2d3e4f");
    assert_eq!((d.state, d.autostart, d.vcpus), (PowerState::Running, true, 4));
    assert_eq!(d.memory, ByteSize(64 << 30));
    assert_eq!(d.hugepages, Some(PageSize::Size1G));
    let pins: Vec<(u32, String)> = d.vcpupin.iter().map(|(v, s)| (*v, s.to_string())).collect();
    assert_eq!(pins, [(0, "56".into()), (1, "57".into()), (2, "58-59".into()), (3, "60,62".into())]);
    assert_eq!(d.emulatorpin.map(|s| s.to_string()).as_deref(), Some("0-1"));
    assert_eq!(d.numa_mode.as_deref(), Some("strict"));
    assert_eq!(d.numa_nodeset.map(|s| s.to_string()).as_deref(), Some("1"));
    assert_eq!(
        d.numa_cells.iter().map(|(c, m)| (c.to_string(), *m)).collect::<Vec<_>>(),
        [("0-3".into(), ByteSize(64 << 30))]
    );
    assert_eq!(d.hostdevs.iter().map(|a| a.to_string()).collect::<Vec<_>>(), ["0000:3b:00.0"]);

    let ifaces: Vec<String> = d
        .interfaces
        .iter()
        .map(|i| format!("{} {} {:?} {:?} {:?}", i.kind, i.source, i.mac, i.model, i.target))
        .collect();
    assert_eq!(
        ifaces,
        [
            r#"bridge br-acme Some("52:54:00:aa:bb:01") Some("virtio") Some("vnet7")"#,
            r#"network acme-mgmt Some("52:54:00:aa:bb:02") Some("virtio") None"#,
            r#"hostdev 0000:17:00.1 Some("52:54:00:aa:bb:03") None None"#,
        ]
    );
    let disks: Vec<(&str, &str, Option<&str>, Option<&str>)> =
        d.disks.iter().map(|k| (k.target.as_str(), k.bus.as_str(), k.source.as_deref(), k.format.as_deref())).collect();
    assert_eq!(
        disks,
        [
            ("vda", "virtio", Some("images/acme-vllm-0-root"), Some("qcow2")),
            ("sda", "sata", Some("/var/lib/libvirt/images/seed.iso"), Some("raw")),
        ]
    );
    assert_eq!(
        d.owner,
        Some(Ownership {
            factory: "ai-factory".into(),
            resource: "vm:gpu01/acme-vllm-0".into(),
            spec_hash: "b3c1".into()
        })
    );
    assert_eq!(d.xml, DOMAIN_GPU_VM);
}

#[test]
fn minimal_domain_has_defaults_and_no_owner() {
    let xml = "<domain type='kvm'><name>tiny</name><memory>65536</memory><vcpu>1</vcpu>\
               <memoryBacking><hugepages/></memoryBacking><numatune><memory nodeset='0'/></numatune></domain>";
    let d = domain(xml, PowerState::ShutOff, false).unwrap();
    assert_eq!((d.vcpus, d.memory), (1, ByteSize(64 << 20)));
    // `<hugepages/>` alone is the host's default page size; numatune without a mode is strict.
    assert_eq!(d.hugepages, Some(PageSize::Size2M));
    assert_eq!(d.numa_mode.as_deref(), Some("strict"));
    assert!(d.vcpupin.is_empty() && d.interfaces.is_empty() && d.disks.is_empty() && d.owner.is_none());
}

#[test]
fn bad_domains_say_what_is_wrong() {
    let e = domain("<domain><memory>64</memory></domain>", PowerState::ShutOff, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Failed);
    assert!(e.message.contains("no <name>"), "{}", e.message);
    let e = domain("<domain><name>x</name><memory unit='parsec'>1</memory></domain>", PowerState::ShutOff, false)
        .unwrap_err();
    assert!(e.message.contains("domain `x`") && e.message.contains("parsec"), "{}", e.message);
    let e = domain(
        "<domain><name>x</name><cputune><vcpupin vcpu='0' cpuset='3-1'/></cputune></domain>",
        PowerState::ShutOff,
        false,
    )
    .unwrap_err();
    assert!(e.message.contains("backwards"), "{}", e.message);
    let odd_page = "<domain><name>x</name><memoryBacking><hugepages><page size='64' unit='KiB'/></hugepages></memoryBacking></domain>";
    assert!(domain(odd_page, PowerState::ShutOff, false).is_err());
}

#[test]
fn interface_targets_come_from_the_live_xml() {
    let live = "<domain><devices><interface type='bridge'><mac address='52:54:00:AA:BB:01'/><target dev='vnet0'/></interface>\
                <interface type='user'><mac address='52:54:00:aa:bb:09'/></interface></devices></domain>";
    assert_eq!(interface_targets(live).unwrap(), [("52:54:00:aa:bb:01".to_string(), "vnet0".to_string())]);
}

#[test]
fn networks_bridge_forward_and_mark() {
    let xml = r#"<network>
  <name>acme</name>
  <uuid>1b580ccd-6c11-490c-98a2-9b6816222ede</uuid>
  <metadata>
    <fabrik:owner xmlns:fabrik="https://fabrik.dev/xmlns/1" factory="f" resource="net:gpu01/acme" spec-hash="abc"/>
  </metadata>
  <forward mode='bridge'/>
  <bridge name='br-acme'/>
</network>"#;
    let n = network(xml, true, false).unwrap();
    assert_eq!((n.name.as_str(), n.active, n.autostart), ("acme", true, false));
    assert_eq!((n.bridge.as_deref(), n.forward.as_deref()), (Some("br-acme"), Some("bridge")));
    assert_eq!(n.owner.unwrap().resource, "net:gpu01/acme");

    let nat = "<network><name>default</name><forward/><bridge name='virbr0'/></network>";
    assert_eq!(network(nat, false, true).unwrap().forward.as_deref(), Some("nat"));
    let isolated = "<network><name>iso</name><bridge name='virbr1'/></network>";
    assert_eq!(network(isolated, false, false).unwrap().forward, None);
}

#[test]
fn pools_and_volumes_in_bytes() {
    let live = r#"<pool type='dir'>
  <name>images</name>
  <uuid>11892be8-9a03-42f6-abbf-da7ccb4c16d9</uuid>
  <capacity unit='bytes'>107374182400</capacity>
  <allocation unit='bytes'>1073741824</allocation>
  <available unit='bytes'>106300440576</available>
  <source/>
  <target><path>/var/lib/libvirt/images</path></target>
</pool>"#;
    let p = pool(live, "<pool type='dir'><name>images</name></pool>", true, true).unwrap();
    assert_eq!(
        (p.name.as_str(), p.kind.as_str(), p.path.as_deref()),
        ("images", "dir", Some("/var/lib/libvirt/images"))
    );
    assert_eq!((p.capacity, p.available), (ByteSize(100 << 30), ByteSize(106300440576)));
    assert_eq!((p.active, p.autostart, p.owner.as_ref()), (true, true, None));
    assert_eq!(p.xml, "<pool type='dir'><name>images</name></pool>");
    assert_eq!(pool_kind(live).unwrap(), "dir");

    let vol = r#"<volume type='file'>
  <name>acme-vllm-0-root</name>
  <key>/var/lib/libvirt/images/acme-vllm-0-root</key>
  <capacity unit='bytes'>21474836480</capacity>
  <allocation unit='bytes'>196608</allocation>
  <target>
    <path>/var/lib/libvirt/images/acme-vllm-0-root</path>
    <format type='qcow2'/>
  </target>
</volume>"#;
    let v = volume(vol).unwrap();
    assert_eq!((v.name.as_str(), v.path.as_str()), ("acme-vllm-0-root", "/var/lib/libvirt/images/acme-vllm-0-root"));
    assert_eq!((v.capacity, v.allocation, v.format.as_deref()), (ByteSize(20 << 30), ByteSize(196608), Some("qcow2")));
}

#[test]
fn sizes_follow_libvirt_units() {
    assert_eq!(size("1", Some("KB"), "KiB", "x").unwrap(), ByteSize(1000));
    assert_eq!(size("1", Some("k"), "bytes", "x").unwrap(), ByteSize(1024));
    assert_eq!(size("2", None, "KiB", "x").unwrap(), ByteSize(2048));
    assert_eq!(size("0x10", Some("b"), "KiB", "x").unwrap(), ByteSize(16));
    assert!(size("99999999999999999999", Some("EiB"), "KiB", "x").is_err());
    assert!(size("1", Some("furlong"), "KiB", "x").is_err());
}
