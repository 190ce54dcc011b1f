//! The libvirt driver against libvirt's own `test:///` driver: real libvirt code, no
//! daemon, so it runs everywhere. This is also what simulated hosts use.
//!
//! `test:///default` is one shared state per process, so each test here uses names of
//! its own; a test that needs a private host opens a custom `test:///<file>` instead.

use std::time::Duration;

use fabrik::driver::libvirt::{LibvirtDriver, owner};
use fabrik::driver::{ErrorKind, ShutdownOutcome, Virt};
use fabrik::live::{Ownership, PowerState};
use fabrik::spec::types::{ByteSize, PciAddress};

fn driver() -> LibvirtDriver {
    LibvirtDriver::connect("test:///default").expect("libvirt's test driver opens")
}

fn mark(resource: &str) -> Ownership {
    Ownership { factory: "test-factory".into(), resource: resource.into(), spec_hash: "h1".into() }
}

fn domain_xml(name: &str) -> String {
    format!(
        "<domain type='test'>
  <name>{name}</name>
  {}
  <memory unit='MiB'>64</memory>
  <vcpu>2</vcpu>
  <cputune><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='2-3'/><emulatorpin cpuset='0'/></cputune>
  <numatune><memory mode='strict' nodeset='0'/></numatune>
  <os><type arch='i686'>hvm</type></os>
  <cpu><numa><cell id='0' cpus='0-1' memory='64' unit='MiB'/></numa></cpu>
  <devices>
    <interface type='network'><mac address='52:54:00:00:00:aa'/><source network='default'/><model type='virtio'/></interface>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/guest/{name}.img'/><target dev='vda' bus='virtio'/></disk>
  </devices>
</domain>",
        owner::render_metadata(&mark(&format!("vm:test/{name}")))
    )
}

#[test]
fn reads_the_default_host() {
    let mut v = driver();
    let info = v.host_info().unwrap();
    assert!(info.hypervisor.starts_with("TEST"), "{}", info.hypervisor);
    // test:///default has two NUMA cells of 8 CPUs each.
    assert_eq!(info.numa.len(), 2);
    assert_eq!(info.numa[1].cpus.to_string(), "8-15");
    assert_eq!(info.numa[0].memory, ByteSize(2 << 30));

    let doms = v.domains().unwrap();
    let test = doms.iter().find(|d| d.name == "test").expect("the default domain `test`");
    assert_eq!((test.state, test.vcpus, test.memory), (PowerState::Running, 2, ByteSize(8 << 30)));
    assert_eq!(test.interfaces[0].source, "default");
    assert_eq!(test.interfaces[0].target.as_deref(), Some("testnet0"));
    assert_eq!(test.disks[0].source.as_deref(), Some("/guest/diskimage1"));
    assert!(test.owner.is_none());

    let nets = v.networks().unwrap();
    let default = nets.iter().find(|n| n.name == "default").unwrap();
    assert_eq!(
        (default.active, default.bridge.as_deref(), default.forward.as_deref()),
        (true, Some("virbr0"), Some("nat"))
    );

    let pools = v.pools().unwrap();
    let pool = pools.iter().find(|p| p.name == "default-pool").unwrap();
    assert_eq!((pool.kind.as_str(), pool.active), ("dir", true));
    assert!(pool.capacity.bytes() > 0);

    // The default host has no PCI devices, and listing them is no error.
    assert!(v.devices().unwrap().is_empty());
}

#[test]
fn domain_lifecycle() {
    let mut v = driver();
    let name = "fabrik-lifecycle";
    v.define_domain(&domain_xml(name)).unwrap();
    let d = v.domains().unwrap().into_iter().find(|d| d.name == name).unwrap();
    assert_eq!((d.state, d.autostart, d.vcpus, d.memory), (PowerState::ShutOff, false, 2, ByteSize(64 << 20)));
    assert_eq!(d.vcpupin.iter().map(|(v, s)| format!("{v}:{s}")).collect::<Vec<_>>(), ["0:1", "1:2-3"]);
    assert_eq!(d.emulatorpin.as_ref().map(|s| s.to_string()).as_deref(), Some("0"));
    assert_eq!(d.numa_nodeset.as_ref().map(|s| s.to_string()).as_deref(), Some("0"));
    assert_eq!(d.numa_cells.len(), 1);
    assert_eq!(d.owner, Some(mark(&format!("vm:test/{name}"))));

    v.set_domain_autostart(name, true).unwrap();
    v.start_domain(name).unwrap();
    let e = v.start_domain(name).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused, "{e:?}");
    assert!(e.message.contains("already running"), "{}", e.message);
    let d = v.domains().unwrap().into_iter().find(|d| d.name == name).unwrap();
    assert_eq!((d.state, d.autostart), (PowerState::Running, true));

    assert_eq!(v.shutdown_domain(name, Duration::from_secs(5)).unwrap(), ShutdownOutcome::Graceful);
    assert_eq!(v.shutdown_domain(name, Duration::from_secs(5)).unwrap(), ShutdownOutcome::NotRunning);
    v.start_domain(name).unwrap();
    v.destroy_domain(name).unwrap();
    assert_eq!(v.destroy_domain(name).unwrap_err().kind, ErrorKind::Refused);

    v.undefine_domain(name).unwrap();
    assert!(v.domains().unwrap().iter().all(|d| d.name != name));
    let e = v.undefine_domain(name).unwrap_err();
    assert_eq!((e.kind, e.code.as_deref()), (ErrorKind::NotFound, Some("VIR_ERR_NO_DOMAIN")));
    assert!(e.message.contains(name), "{}", e.message);
}

#[test]
fn invalid_domain_xml_is_refused_at_define() {
    let mut v = driver();
    // Without validation libvirt would drop the unknown element and define the rest.
    let xml = domain_xml("fabrik-invalid").replace("<vcpu>2</vcpu>", "<vcpu>2</vcpu><vcpus_typo/>");
    let e = v.define_domain(&xml).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Failed, "{e:?}");
    assert!(e.code.is_some());
    assert!(v.domains().unwrap().iter().all(|d| d.name != "fabrik-invalid"));
}

#[test]
fn network_lifecycle() {
    let mut v = driver();
    let xml = format!(
        "<network><name>fabrik-net</name>{}<forward mode='bridge'/><bridge name='br-fabrik'/></network>",
        owner::render_metadata(&mark("net:test/fabrik-net"))
    );
    v.define_network(&xml).unwrap();
    let find = |v: &mut LibvirtDriver| v.networks().unwrap().into_iter().find(|n| n.name == "fabrik-net").unwrap();
    let n = find(&mut v);
    assert_eq!((n.active, n.bridge.as_deref(), n.forward.as_deref()), (false, Some("br-fabrik"), Some("bridge")));
    assert_eq!(n.owner, Some(mark("net:test/fabrik-net")));
    v.start_network("fabrik-net").unwrap();
    assert!(find(&mut v).active);
    v.stop_network("fabrik-net").unwrap();
    assert!(!find(&mut v).active);
    v.undefine_network("fabrik-net").unwrap();
    assert_eq!(v.undefine_network("fabrik-net").unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn pool_and_volume_lifecycle() {
    let mut v = driver();
    let dir = tempfile::tempdir().unwrap();
    let xml = format!(
        "<pool type='dir'><name>fabrik-pool</name><target><path>{}</path></target></pool>",
        dir.path().join("pool").display()
    );
    v.define_pool(&xml).unwrap();
    assert_eq!(v.define_pool(&xml).unwrap_err().kind, ErrorKind::Exists);
    v.start_pool("fabrik-pool").unwrap();

    let vol =
        "<volume><name>base.img</name><capacity unit='MiB'>16</capacity><target><format type='raw'/></target></volume>";
    v.create_volume("fabrik-pool", vol).unwrap();
    let clone = "<volume><name>disk0.img</name><capacity unit='MiB'>16</capacity><target><format type='raw'/></target></volume>";
    v.clone_volume("fabrik-pool", clone, "fabrik-pool", "base.img").unwrap();
    let e = v.create_volume("fabrik-pool", vol).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Exists, "{e:?}");

    let pool = v.pools().unwrap().into_iter().find(|p| p.name == "fabrik-pool").unwrap();
    assert!(pool.active);
    let vols: Vec<(&str, u64)> = pool.volumes.iter().map(|v| (v.name.as_str(), v.capacity.bytes())).collect();
    assert_eq!(vols, [("base.img", 16 << 20), ("disk0.img", 16 << 20)]);

    v.delete_volume("fabrik-pool", "disk0.img").unwrap();
    assert_eq!(v.delete_volume("fabrik-pool", "disk0.img").unwrap_err().kind, ErrorKind::NotFound);
    v.delete_volume("fabrik-pool", "base.img").unwrap();
    v.stop_pool("fabrik-pool").unwrap();
    v.undefine_pool("fabrik-pool").unwrap();
    assert!(v.pools().unwrap().iter().all(|p| p.name != "fabrik-pool"));
}

/// A private test host from a custom file: a GPU and a NIC as node devices.
#[test]
fn custom_host_with_pci_devices() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("host.xml");
    std::fs::write(
        &file,
        r#"<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads><active>4</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>16777216</memory>
  <device>
    <name>pci_0000_3b_00_0</name>
    <parent>computer</parent>
    <capability type='pci'>
      <class>0x030200</class>
      <domain>0</domain><bus>59</bus><slot>0</slot><function>0</function>
      <product id='0x2335'>GH100 [H200 SXM 141GB]</product>
      <vendor id='0x10de'>NVIDIA Corporation</vendor>
      <iommuGroup number='23'><address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></iommuGroup>
      <numa node='0'/>
    </capability>
  </device>
</node>"#,
    )
    .unwrap();
    let mut v = LibvirtDriver::connect(&format!("test://{}", file.display())).unwrap();
    let devs = v.devices().unwrap();
    assert_eq!(devs.len(), 1);
    let gpu = &devs[0];
    assert_eq!((gpu.address.to_string().as_str(), gpu.vendor_id, gpu.device_id), ("0000:3b:00.0", 0x10de, 0x2335));
    assert_eq!((gpu.numa_node, gpu.iommu_group), (Some(0), Some(23)));

    // A custom file has no NUMA topology in its capabilities: one node with every CPU.
    let info = v.host_info().unwrap();
    assert_eq!(info.numa.len(), 1);
    assert_eq!(info.numa[0].cpus.to_string(), "0-3");
    assert_eq!(info.numa[0].memory, ByteSize(16 << 30));
    assert!(v.domains().unwrap().is_empty());

    // The test driver cannot rebind devices: that is Unsupported, not a crash.
    let addr = PciAddress::parse("0000:3b:00.0").unwrap();
    let e = v.detach_device(addr).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Unsupported | ErrorKind::Failed), "{e:?}");
    let e = v.detach_device(PciAddress::parse("0000:99:00.0").unwrap()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e:?}");
}

#[test]
fn unreachable_host_is_unreachable() {
    let e = LibvirtDriver::connect("qemu:///system?socket=/nonexistent/libvirt-sock").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e:?}");
    assert!(e.message.contains("/nonexistent/libvirt-sock"), "{}", e.message);
}
