//! The libvirt driver against real libvirtd hosts: private hosts in network and mount
//! namespaces on this machine (`tests/testbed/testbed.sh`), running guests under KVM.
//!
//! Each test starts its own testbed and stops it when done, also when it fails. Without
//! root, /dev/kvm or libvirtd the tests print why and pass; with `CI=true` they fail.

#[path = "testbed/mod.rs"]
mod testbed;

use std::time::{Duration, Instant};

use fabrik::driver::libvirt::{LibvirtDriver, owner};
use fabrik::driver::{ErrorKind, ShutdownOutcome, Virt};
use fabrik::live::{Ownership, PowerState};
use fabrik::spec::types::{ByteSize, PciAddress};
use testbed::{Testbed, in_host};

fn mark(resource: &str) -> Ownership {
    Ownership { factory: "testbed".into(), resource: resource.into(), spec_hash: "0123abcd".into() }
}

/// Free 2 MiB hugepages on the machine.
fn free_hugepages_2m() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A tiny q35 guest: no disk, 64 MiB, pinned, NUMA-aligned, fabrik's mark, one NIC on
/// a libvirt network. It boots into SeaBIOS and waits there, which is all KVM needs.
fn tiny_guest(name: &str, network: &str, hugepages: bool) -> String {
    let backing = if hugepages {
        "<memoryBacking><hugepages><page size='2' unit='MiB'/></hugepages></memoryBacking>"
    } else {
        ""
    };
    format!(
        "<domain type='kvm'>
  <name>{name}</name>
  {meta}
  <memory unit='MiB'>64</memory>
  {backing}
  <vcpu placement='static'>1</vcpu>
  <cputune><vcpupin vcpu='0' cpuset='0'/><emulatorpin cpuset='0'/></cputune>
  <numatune><memory mode='strict' nodeset='0'/></numatune>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <cpu><numa><cell id='0' cpus='0' memory='64' unit='MiB'/></numa></cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='network'><mac address='52:54:00:fa:b0:01'/><source network='{network}'/><model type='virtio'/></interface>
    <console type='pty'/>
  </devices>
</domain>",
        meta = owner::render_metadata(&mark(&format!("vm:h1/{name}")))
    )
}

#[test]
fn two_hosts_answer_and_reach_each_other() {
    let Some(tb) = Testbed::start("lvread", &["h1", "h2"]) else { return };
    for host in &tb.hosts {
        let mut v = LibvirtDriver::connect(&host.uri).unwrap();
        let info = v.host_info().unwrap();
        assert!(info.hypervisor.starts_with("QEMU "), "{}", info.hypervisor);
        assert!(!info.numa.is_empty());
        let cpus: usize = info.numa.iter().map(|n| n.cpus.len()).sum();
        assert_eq!(cpus, std::thread::available_parallelism().map(|n| n.get()).unwrap_or(cpus), "{info:?}");
        assert!(info.numa.iter().all(|n| n.memory.bytes() > 0 && n.distances.len() == info.numa.len()));

        // The machine's PCI devices, as the host's libvirt sees them through sysfs.
        let devices = v.devices().unwrap();
        let in_sysfs = std::fs::read_dir("/sys/bus/pci/devices").map(|d| d.count()).unwrap_or(0);
        assert_eq!(devices.len(), in_sysfs, "{devices:?}");
        assert!(devices.iter().all(|d| d.nodedev.starts_with("pci_") && d.vendor_id != 0));

        // Rebinding is tried only on devices that exist (this machine's own devices are
        // never detached here: its disk and NIC are among them).
        let absent = PciAddress::parse("0000:ff:1f.7").unwrap();
        let e = v.detach_device(absent).unwrap_err();
        assert_eq!((e.kind, e.code.as_deref()), (ErrorKind::NotFound, Some("VIR_ERR_NO_NODE_DEVICE")), "{e:?}");
        assert_eq!(v.reattach_device(absent).unwrap_err().kind, ErrorKind::NotFound);

        // Fresh hosts: nothing defined.
        assert!(v.domains().unwrap().is_empty());
        assert!(v.networks().unwrap().is_empty());
        assert!(v.pools().unwrap().is_empty());
    }
    // The hosts' eth0 share a segment: h1 reaches h2 (a refused TCP connection is an
    // answer from h2's kernel).
    let (h1, h2) = (tb.host("h1"), tb.host("h2"));
    let probe = format!("exec 3<>/dev/tcp/{}/9 2>&1; echo connected", h2.address);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &h1.netns, "timeout", "5", "bash", "-c", &probe])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("refused") || said.contains("connected"), "h1 cannot reach h2: {said}");
}

#[test]
fn kvm_guest_lifecycle() {
    let Some(tb) = Testbed::start("lvkvm", &["h1"]) else { return };
    let host = tb.host("h1");
    let mut v = LibvirtDriver::connect(&host.uri).unwrap();

    // An isolated network: libvirt makes its bridge inside the host's namespace.
    let net = format!(
        "<network><name>fabrik-t</name>{}<bridge name='fbr-t'/></network>",
        owner::render_metadata(&mark("net:h1/fabrik-t"))
    );
    v.define_network(&net).unwrap();
    v.start_network("fabrik-t").unwrap();
    let n = v.networks().unwrap().into_iter().find(|n| n.name == "fabrik-t").unwrap();
    assert_eq!((n.active, n.bridge.as_deref(), n.forward.as_deref()), (true, Some("fbr-t"), None));
    assert_eq!(n.owner, Some(mark("net:h1/fabrik-t")));

    let hugepages = free_hugepages_2m() >= 32;
    if !hugepages {
        testbed::missing("fewer than 32 free 2 MiB hugepages (the guest runs without them)");
    }
    v.define_domain(&tiny_guest("tiny", "fabrik-t", hugepages)).unwrap();
    let t0 = Instant::now();
    v.start_domain("tiny").unwrap();
    testbed::say(&format!("guest start: {:.3}s", t0.elapsed().as_secs_f64()));

    let d = v.domains().unwrap().into_iter().find(|d| d.name == "tiny").unwrap();
    assert_eq!((d.state, d.vcpus, d.memory), (PowerState::Running, 1, ByteSize(64 << 20)));
    assert_eq!(d.hugepages.is_some(), hugepages);
    assert_eq!(d.vcpupin.iter().map(|(v, s)| format!("{v}:{s}")).collect::<Vec<_>>(), ["0:0"]);
    assert_eq!(d.emulatorpin.as_ref().map(|s| s.to_string()).as_deref(), Some("0"));
    assert_eq!(
        (d.numa_mode.as_deref(), d.numa_nodeset.as_ref().map(|s| s.to_string()).as_deref()),
        (Some("strict"), Some("0"))
    );
    assert_eq!(
        d.numa_cells.iter().map(|(c, m)| (c.to_string(), *m)).collect::<Vec<_>>(),
        [("0".into(), ByteSize(64 << 20))]
    );
    assert_eq!(d.owner, Some(mark("vm:h1/tiny")));
    // What libvirt added (controllers, addresses, the balloon) is not in the live value.
    assert!(d.hostdevs.is_empty() && d.disks.is_empty());
    let iface = &d.interfaces[0];
    assert_eq!(
        (iface.kind.as_str(), iface.source.as_str(), iface.mac.as_deref()),
        ("network", "fabrik-t", Some("52:54:00:fa:b0:01"))
    );
    // The tap exists only while the guest runs, and sits on the network's bridge.
    let tap = iface.target.clone().expect("a running guest's tap device");
    let link = in_host(host, &["ip", "-o", "link", "show", &tap]);
    assert!(link.contains("master fbr-t"), "{link}");

    // No OS answers ACPI: a graceful shutdown times out and leaves the guest running.
    let t0 = Instant::now();
    assert_eq!(v.shutdown_domain("tiny", Duration::from_millis(500)).unwrap(), ShutdownOutcome::TimedOut);
    assert!(t0.elapsed() < Duration::from_secs(5));
    let d = v.domains().unwrap().into_iter().find(|d| d.name == "tiny").unwrap();
    assert_eq!(d.state, PowerState::Running);

    // Paused and resumed, as the host's listings say (no state call per domain), with
    // autostart from the autostart listing.
    v.connection().lookup_domain_by_name("tiny").unwrap().suspend().unwrap();
    v.set_domain_autostart("tiny", true).unwrap();
    let d = v.domains().unwrap().into_iter().find(|d| d.name == "tiny").unwrap();
    assert_eq!((d.state, d.autostart), (PowerState::Paused, true));
    assert!(d.running.is_some() && d.interfaces[0].target.is_some(), "a paused guest still runs its live XML");
    v.resume_domain("tiny").unwrap();
    v.set_domain_autostart("tiny", false).unwrap();
    let d = v.domains().unwrap().into_iter().find(|d| d.name == "tiny").unwrap();
    assert_eq!((d.state, d.autostart), (PowerState::Running, false));

    v.destroy_domain("tiny").unwrap();
    let d = v.domains().unwrap().into_iter().find(|d| d.name == "tiny").unwrap();
    assert_eq!(d.state, PowerState::ShutOff);
    assert_eq!(d.interfaces[0].target, None);
    assert_eq!(v.shutdown_domain("tiny", Duration::from_secs(1)).unwrap(), ShutdownOutcome::NotRunning);
    let e = v.destroy_domain("tiny").unwrap_err();
    assert_eq!((e.kind, e.code.as_deref()), (ErrorKind::Refused, Some("VIR_ERR_OPERATION_INVALID")), "{e:?}");

    v.set_domain_autostart("tiny", true).unwrap();
    assert!(v.domains().unwrap()[0].autostart);
    v.undefine_domain("tiny").unwrap();
    assert!(v.domains().unwrap().is_empty());
    assert_eq!(v.start_domain("tiny").unwrap_err().kind, ErrorKind::NotFound);

    v.stop_network("fabrik-t").unwrap();
    v.undefine_network("fabrik-t").unwrap();
    assert!(v.networks().unwrap().is_empty());
}

#[test]
fn dir_pool_with_volumes() {
    let Some(tb) = Testbed::start("lvpool", &["h1"]) else { return };
    let host = tb.host("h1");
    let mut v = LibvirtDriver::connect(&host.uri).unwrap();
    let path = host.dir.join("images");
    let xml = format!("<pool type='dir'><name>images</name><target><path>{}</path></target></pool>", path.display());
    v.define_pool(&xml).unwrap();
    assert_eq!(v.define_pool(&xml).unwrap_err().kind, ErrorKind::Exists);
    // Starting builds the directory (a dir pool's build never touches what is in it).
    v.start_pool("images").unwrap();
    assert!(path.is_dir());

    let base = "<volume><name>base.qcow2</name><capacity unit='MiB'>64</capacity><target><format type='qcow2'/></target></volume>";
    v.create_volume("images", base).unwrap();
    let e = v.create_volume("images", base).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Exists, "{e:?}");
    let disk = "<volume><name>vm0.qcow2</name><capacity unit='MiB'>64</capacity><target><format type='qcow2'/></target></volume>";
    v.clone_volume("images", disk, "images", "base.qcow2").unwrap();
    // A file put there by someone else shows up too (the pool is refreshed on read).
    std::fs::write(path.join("stray.raw"), vec![0u8; 4096]).unwrap();

    let pool = v.pools().unwrap().into_iter().next().unwrap();
    assert_eq!((pool.name.as_str(), pool.kind.as_str(), pool.active), ("images", "dir", true));
    assert_eq!(pool.path.as_deref(), Some(path.to_str().unwrap()));
    assert!(pool.capacity.bytes() > 0 && pool.available.bytes() > 0);
    let vols: Vec<(&str, u64, Option<&str>)> =
        pool.volumes.iter().map(|v| (v.name.as_str(), v.capacity.bytes(), v.format.as_deref())).collect();
    assert_eq!(
        vols,
        [
            ("base.qcow2", 64 << 20, Some("qcow2")),
            ("stray.raw", 4096, Some("raw")),
            ("vm0.qcow2", 64 << 20, Some("qcow2"))
        ]
    );
    assert!(pool.volumes[0].path.ends_with("/images/base.qcow2"));

    for vol in ["vm0.qcow2", "base.qcow2", "stray.raw"] {
        v.delete_volume("images", vol).unwrap();
    }
    assert_eq!(v.delete_volume("images", "vm0.qcow2").unwrap_err().kind, ErrorKind::NotFound);
    v.stop_pool("images").unwrap();
    let p = v.pools().unwrap().into_iter().next().unwrap();
    assert!(!p.active && p.volumes.is_empty());
    v.undefine_pool("images").unwrap();
    assert!(v.pools().unwrap().is_empty());
    // Undefining keeps the directory.
    assert!(path.is_dir());
}

/// A base image as apply handles one: fetched (a `file:` source), verified, streamed
/// into its qcow2 volume through libvirt's upload, and a VM disk made as an overlay that
/// names it as backing store — read back by qemu-img as a real qcow2 chain.
#[test]
fn a_fetched_image_uploads_into_its_volume_and_backs_a_disk() {
    use sha2::Digest;
    let Some(tb) = Testbed::start("apimg", &["h1"]) else { return };
    let Ok(qemu_img) = which_qemu_img() else {
        let _ = testbed::missing("qemu-img is not installed");
        return;
    };
    let host = tb.host("h1");
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("base.qcow2");
    let made = std::process::Command::new(&qemu_img)
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&source)
        .arg("64M")
        .status()
        .unwrap();
    assert!(made.success());
    let bytes = std::fs::read(&source).unwrap();
    let sha: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let from = fabrik::image::Source::parse(&format!("file:{}", source.display())).unwrap();
    let fetched = fabrik::image::fetch("base", &from, &sha, None, &mut |_, _| {}).unwrap();

    let mut v = LibvirtDriver::connect(&host.uri).unwrap();
    let path = host.dir.join("images");
    let xml = format!("<pool type='dir'><name>images</name><target><path>{}</path></target></pool>", path.display());
    v.define_pool(&xml).unwrap();
    v.start_pool("images").unwrap();
    let base =
        "<volume><name>base</name><capacity unit='MiB'>64</capacity><target><format type='qcow2'/></target></volume>";
    v.create_volume("images", base).unwrap();
    let mut file = std::fs::File::open(fetched.path()).unwrap();
    v.upload_volume("images", "base", fetched.bytes, &mut file).unwrap();
    assert!(std::fs::read(path.join("base")).unwrap() == bytes, "the volume holds the image");

    let overlay = format!(
        "<volume><name>vm0-root</name><capacity unit='MiB'>64</capacity><target><format type='qcow2'/></target>\
         <backingStore><path>{}</path><format type='qcow2'/></backingStore></volume>",
        path.join("base").display()
    );
    v.create_volume("images", &overlay).unwrap();
    let info = std::process::Command::new(&qemu_img)
        .args(["info", "--output=json", "-U"])
        .arg(path.join("vm0-root"))
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2", "{info}");
    assert_eq!(info["backing-filename"].as_str(), path.join("base").to_str(), "{info}");
    for vol in ["vm0-root", "base"] {
        v.delete_volume("images", vol).unwrap();
    }
}

fn which_qemu_img() -> Result<std::path::PathBuf, ()> {
    ["/usr/bin/qemu-img", "/usr/local/bin/qemu-img"].iter().map(std::path::PathBuf::from).find(|p| p.exists()).ok_or(())
}

/// A cloud-init seed image goes into a raw volume through libvirt's volume upload (a
/// stream from this process), byte for byte; more than the volume holds is refused.
#[test]
fn a_seed_image_uploads_into_a_raw_volume() {
    let Some(tb) = Testbed::start("apseed", &["h1"]) else { return };
    let host = tb.host("h1");
    let mut v = LibvirtDriver::connect(&host.uri).unwrap();
    let path = host.dir.join("vms");
    let xml = format!("<pool type='dir'><name>vms</name><target><path>{}</path></target></pool>", path.display());
    v.define_pool(&xml).unwrap();
    v.start_pool("vms").unwrap();
    let files = fabrik::guest::SeedFiles {
        user_data: "#cloud-config\nhostname: vm0\n".into(),
        meta_data: "instance-id: vm0-1\nlocal-hostname: vm0\n".into(),
        network_config: "version: 2\n".into(),
        instance_id: "vm0-1".into(),
    };
    let image = fabrik::guest::seed::image(&files).unwrap();
    let vol = format!(
        "<volume><name>vm0+cidata</name><capacity unit='bytes'>{}</capacity><target><format type='raw'/></target></volume>",
        image.len()
    );
    v.create_volume("vms", &vol).unwrap();
    v.upload_volume("vms", "vm0+cidata", image.len() as u64, &mut image.as_slice()).unwrap();
    let written = std::fs::read(path.join("vm0+cidata")).unwrap();
    assert_eq!(written.len(), image.len());
    assert!(written == image, "the volume holds the image");
    let (label, got) = fabrik::guest::seed::read(&written).unwrap();
    assert_eq!((label.trim_end(), got.len()), ("CIDATA", 3));
    // libvirt's dir pool does not refuse more than the capacity (the twin does as it
    // does); fabrik's seed image is always exactly its volume's capacity.
    assert_eq!(
        v.upload_volume("vms", "nope", image.len() as u64, &mut image.as_slice()).unwrap_err().kind,
        ErrorKind::NotFound
    );
    // The upload streams in chunks (the image is four of them); data that ends before
    // the length given fails it, the stream aborted.
    let e = v.upload_volume("vms", "vm0+cidata", image.len() as u64 + 1, &mut image.as_slice()).unwrap_err();
    assert!(e.message.contains(&format!("the data ended after {} bytes", image.len())), "{e:?}");
    v.delete_volume("vms", "vm0+cidata").unwrap();
}

/// The figure the issue asks for: 200 defined domains, all read back by `domains()`.
#[test]
fn two_hundred_domains_read_back() {
    let Some(tb) = Testbed::start("lvmany", &["h1"]) else { return };
    let mut v = LibvirtDriver::connect(&tb.host("h1").uri).unwrap();
    const DOMAINS: usize = 200;
    let t0 = Instant::now();
    for i in 0..DOMAINS {
        let name = format!("vm-{i:03}");
        let xml = format!(
            "<domain type='kvm'><name>{name}</name>{}<memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type></os></domain>",
            owner::render_metadata(&mark(&format!("vm:h1/{name}")))
        );
        v.define_domain(&xml).unwrap();
    }
    let defined_in = t0.elapsed();
    let t0 = Instant::now();
    let doms = v.domains().unwrap();
    let read_in = t0.elapsed();
    assert_eq!(doms.len(), DOMAINS);
    assert!(doms.iter().all(|d| d.state == PowerState::ShutOff && d.owner.is_some()));
    assert_eq!(doms[199].name, "vm-199");
    testbed::say(&format!(
        "{DOMAINS} domains: defined in {:.2}s, domains() read them back in {:.3}s",
        defined_in.as_secs_f64(),
        read_in.as_secs_f64()
    ));

    // `fabrik inventory` of that host: libvirt at its socket, links through the agent
    // inside its network namespace.
    let h1 = tb.host("h1");
    let dir = tempfile::tempdir().unwrap();
    let factory = dir.path().join("testbed.yaml");
    std::fs::write(
        &factory,
        format!(
            "version: 1\nhosts:\n  - name: h1\n    uri: \"{}\"\n    agent: ip netns exec {} {} agent\n    numa-nodes: [{{ id: 0, cpus: 0-1, memory: 1GiB }}]\n",
            h1.uri,
            h1.netns,
            env!("CARGO_BIN_EXE_fabrik")
        ),
    )
    .unwrap();
    // libvirt's client logs every call it sends (its RPC probes): the log counts them.
    let rpc_log = dir.path().join("libvirt-client.log");
    let t0 = Instant::now();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(["inventory", "--format", "json", factory.to_str().unwrap()])
        .env("LIBVIRT_LOG_FILTERS", "2:util.log 1:rpc")
        .env("LIBVIRT_LOG_OUTPUTS", format!("1:file:{}", rpc_log.display()))
        .output()
        .unwrap();
    let inventory_in = t0.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("inventory prints JSON");
    let host = &v["hosts"][0];
    assert_eq!(host["reachable"], true, "{host}");
    assert_eq!(host["live"]["domains"].as_array().unwrap().len(), DOMAINS);
    assert!(!host["live"]["info"]["numa"].as_array().unwrap().is_empty(), "NUMA from libvirt's capabilities");
    assert!(host["live"]["links"].as_array().unwrap().iter().any(|l| l["name"] == "lo"), "links through the agent");
    let errors = host["live"]["errors"].as_array().unwrap();
    assert!(errors.iter().all(|e| e["concern"] == "nvml"), "only NVML is missing here: {errors:?}");
    assert_eq!(
        o.status.code(),
        Some(0),
        "a host without declared GPUs needs no NVML: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    testbed::say(&format!(
        "fabrik inventory of a testbed host with {DOMAINS} domains: {:.2}s",
        inventory_in.as_secs_f64()
    ));

    // Observing costs a few listings per host and one XML read per shut-off domain:
    // no state, autostart or second XML read per domain.
    let calls = rpc_calls(&rpc_log);
    let count = |proc: u32| calls.iter().filter(|&&p| p == proc).count();
    assert_eq!(count(REMOTE_PROC_DOMAIN_GET_XML_DESC), DOMAINS, "one XML read per domain");
    assert_eq!(count(REMOTE_PROC_DOMAIN_GET_STATE), 0, "states come from filtered listings");
    assert_eq!(count(REMOTE_PROC_DOMAIN_GET_AUTOSTART), 0, "autostart comes from a filtered listing");
    assert!(count(REMOTE_PROC_CONNECT_LIST_ALL_DOMAINS) <= 4, "a few listings per host: {calls:?}");
    // Everything else (capabilities, node devices, networks, pools) does not grow with
    // the domains.
    assert!(calls.len() < DOMAINS + 60, "{} libvirt calls for {DOMAINS} domains: {calls:?}", calls.len());
    testbed::say(&format!("fabrik inventory made {} libvirt calls for {DOMAINS} domains", calls.len()));
}

/// libvirt's remote procedure numbers (`src/remote/remote_protocol.x`).
const REMOTE_PROC_DOMAIN_GET_XML_DESC: u32 = 14;
const REMOTE_PROC_DOMAIN_GET_AUTOSTART: u32 = 15;
const REMOTE_PROC_DOMAIN_GET_STATE: u32 = 212;
const REMOTE_PROC_CONNECT_LIST_ALL_DOMAINS: u32 = 273;

/// The procedure of every call a libvirt client sent, from its log (the
/// `RPC_CLIENT_MSG_TX_QUEUE` probe, logged at `util.log` info level).
fn rpc_calls(log: &std::path::Path) -> Vec<u32> {
    let text = std::fs::read_to_string(log).expect("libvirt wrote its client log");
    let calls: Vec<u32> = text
        .lines()
        .filter(|l| l.contains("RPC_CLIENT_MSG_TX_QUEUE:"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("proc=")).and_then(|p| p.parse().ok()))
        .collect();
    assert!(!calls.is_empty(), "the client log names no call: {}", log.display());
    calls
}
