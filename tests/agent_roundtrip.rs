//! The agent: every driver call over a pipe to an in-process server, with results and
//! errors unchanged; dead, silent and mismatched agents; the `fabrik-agent` binary and
//! `fabrik agent` with simulated state, and on a host reached through `ip netns exec`;
//! `fabrik-agent` without libvirt.

mod netlink_support;

use std::fmt::Debug;
use std::io::BufReader;
use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use fabrik::driver::agent::{AgentClient, HostLocks, LOCKED, Unavailable, VERSION_MISMATCH, serve};
use fabrik::driver::netlink::NetlinkDriver;
use fabrik::driver::sim_links::SimLinks;
use fabrik::driver::{DriverError, ErrorKind, Gpus, LinkSpec, Links, Result};
use fabrik::live::{LinkKind, LiveGpu, LiveMigInstance, MigMode};
use fabrik::spec::types::{ByteSize, PageSize, PciAddress};
use netlink_support::{Netns, say};

const FABRIK: &str = env!("CARGO_BIN_EXE_fabrik");
/// The agent binary the hosts run: the agent without libvirt.
const AGENT: &str = env!("CARGO_BIN_EXE_fabrik-agent");
const TIMEOUT: Duration = Duration::from_secs(10);

fn pci(text: &str) -> PciAddress {
    PciAddress::parse(text).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A GPU driver with one MIG-capable GPU and NVML-like errors, enough to see each call's
/// arguments, results and errors cross the pipe.
#[derive(Clone)]
struct FakeGpus {
    gpu: LiveGpu,
}

impl FakeGpus {
    fn new() -> FakeGpus {
        FakeGpus {
            gpu: LiveGpu {
                address: pci("0000:3b:00.0"),
                uuid: "GPU-00000000-0000-0000-0000-000000000001".into(),
                name: "NVIDIA H200".into(),
                model: None,
                memory: ByteSize(141 * ByteSize::GIB),
                numa_node: Some(0),
                cpu_affinity: None,
                nvlink_peers: vec![pci("0000:3c:00.0")],
                mig: Some(MigMode { current: true, pending: true }),
                instances: vec![],
                vgpu: None,
            },
        }
    }

    fn check(&self, gpu: PciAddress) -> Result<()> {
        if gpu == self.gpu.address {
            Ok(())
        } else {
            Err(DriverError::new(ErrorKind::NotFound, format!("no GPU at {gpu}")).with_code("NVML_ERROR_NOT_FOUND"))
        }
    }
}

impl Gpus for FakeGpus {
    fn gpus(&mut self) -> Result<Vec<LiveGpu>> {
        Ok(vec![self.gpu.clone()])
    }

    fn set_mig_mode(&mut self, gpu: PciAddress, enabled: bool) -> Result<MigMode> {
        self.check(gpu)?;
        let mode = MigMode { current: self.gpu.mig.unwrap().current, pending: enabled };
        self.gpu.mig = Some(mode);
        Ok(mode)
    }

    fn create_instance(&mut self, gpu: PciAddress, profile_id: u32, start: u8) -> Result<u32> {
        self.check(gpu)?;
        if self.gpu.instances.iter().any(|i| i.start == start) {
            return Err(DriverError::new(ErrorKind::Refused, format!("slice {start} is in use"))
                .with_code("NVML_ERROR_INSUFFICIENT_RESOURCES"));
        }
        let id = self.gpu.instances.len() as u32 + 1;
        self.gpu.instances.push(LiveMigInstance {
            id,
            profile_id,
            profile: "1g.18gb".into(),
            start,
            size: 1,
            compute_instances: vec![0],
        });
        Ok(id)
    }

    fn destroy_instance(&mut self, gpu: PciAddress, instance_id: u32) -> Result<()> {
        self.check(gpu)?;
        let before = self.gpu.instances.len();
        self.gpu.instances.retain(|i| i.id != instance_id);
        if self.gpu.instances.len() == before {
            return Err(DriverError::new(ErrorKind::NotFound, format!("no GPU instance {instance_id}"))
                .with_code("NVML_ERROR_NOT_FOUND"));
        }
        Ok(())
    }
    fn create_vgpu(
        &mut self,
        gpu: PciAddress,
        profile: &str,
        start: u8,
        uuid: &str,
        _vf: Option<PciAddress>,
    ) -> Result<fabrik::driver::vgpu::VgpuDevice> {
        self.check(gpu)?;
        if !self.gpu.instances.iter().any(|i| i.profile == profile && i.start == start) {
            return Err(DriverError::new(ErrorKind::Refused, format!("no MIG instance {profile}@{start}")));
        }
        Ok(fabrik::driver::vgpu::VgpuDevice::Mdev(uuid.into()))
    }

    fn remove_vgpu(&mut self, gpu: PciAddress, _uuid: &str, _vf: Option<PciAddress>) -> Result<()> {
        self.check(gpu)
    }
}

fn sim_host() -> SimLinks {
    let mut sim = SimLinks::new();
    sim.add_nic("eth0", 9000, Some(8)).add_hugepages(0, PageSize::Size2M, Some(64)).add_hugepages(
        1,
        PageSize::Size1G,
        Some(4),
    );
    sim
}

/// Something that serves both concerns: local drivers, or an agent client.
trait Host {
    fn gpu_driver(&mut self) -> &mut dyn Gpus;
    fn link_driver(&mut self) -> &mut dyn Links;
}

impl Host for (FakeGpus, SimLinks) {
    fn gpu_driver(&mut self) -> &mut dyn Gpus {
        &mut self.0
    }
    fn link_driver(&mut self) -> &mut dyn Links {
        &mut self.1
    }
}

impl Host for AgentClient {
    fn gpu_driver(&mut self) -> &mut dyn Gpus {
        self
    }
    fn link_driver(&mut self) -> &mut dyn Links {
        self
    }
}

/// Runs every driver call, with successes and failures, and records each result.
fn script(host: &mut dyn Host) -> Vec<String> {
    fn note<T: Debug>(log: &mut Vec<String>, what: &str, result: Result<T>) {
        log.push(format!("{what}: {result:?}"));
    }
    let gpu = pci("0000:3b:00.0");
    let spec = |name: &str, kind: LinkKind| LinkSpec { name: name.into(), kind, mtu: None, master: None, alias: None };
    let mut log = Vec::new();
    let l = &mut log;
    let gpus = host.gpu_driver();
    note(l, "gpus", gpus.gpus());
    note(l, "set_mig_mode", gpus.set_mig_mode(gpu, false));
    note(l, "set_mig_mode on a missing GPU", gpus.set_mig_mode(pci("0000:99:00.0"), true));
    note(l, "create_instance", gpus.create_instance(gpu, 19, 3));
    note(l, "create_instance overlapping", gpus.create_instance(gpu, 19, 3));
    let uuid = "66deb399-2450-8754-b4b4-a4b019a02cf1";
    note(l, "create_vgpu", gpus.create_vgpu(gpu, "1g.18gb", 3, uuid, None));
    note(l, "create_vgpu without its instance", gpus.create_vgpu(gpu, "1g.18gb", 4, uuid, None));
    note(l, "remove_vgpu", gpus.remove_vgpu(gpu, uuid, None));
    note(l, "remove_vgpu on a missing GPU", gpus.remove_vgpu(pci("0000:99:00.0"), uuid, None));
    note(l, "destroy_instance", gpus.destroy_instance(gpu, 1));
    note(l, "destroy_instance missing", gpus.destroy_instance(gpu, 1));
    note(l, "gpus after", gpus.gpus());

    let links = host.link_driver();
    let bridge = LinkSpec { mtu: Some(9000), alias: Some("fabrik:net:acme".into()), ..spec("br0", LinkKind::Bridge) };
    note(l, "create_link bridge", links.create_link(&bridge));
    note(l, "create_link again", links.create_link(&bridge));
    let vxlan = LinkKind::Vxlan {
        vni: 5000,
        local: Some(ip("10.0.0.1")),
        port: 4789,
        parent: Some("eth0".into()),
        remotes: vec![ip("10.0.0.2")],
    };
    note(l, "create_link vxlan", links.create_link(&LinkSpec { master: Some("br0".into()), ..spec("vx5000", vxlan) }));
    note(
        l,
        "create_link vlan on a missing parent",
        links.create_link(&spec("eth9.7", LinkKind::Vlan { id: 7, parent: "eth9".into() })),
    );
    note(l, "create_link veth", links.create_link(&spec("ve0", LinkKind::Veth { peer: Some("ve1".into()) })));
    note(l, "set_link", links.set_link("ve0", Some(1400), Some(true), Some(Some("br0".into()))));
    note(l, "set_link no master", links.set_link("ve0", None, None, Some(None)));
    note(l, "set_link missing", links.set_link("ve9", Some(1400), None, None));
    note(l, "add_fdb", links.add_fdb("vx5000", ip("10.0.0.3")));
    note(l, "add_fdb again", links.add_fdb("vx5000", ip("10.0.0.3")));
    note(l, "del_fdb", links.del_fdb("vx5000", ip("10.0.0.2")));
    note(l, "del_fdb missing", links.del_fdb("vx5000", ip("10.0.0.2")));
    note(l, "set_sriov_vfs", links.set_sriov_vfs("eth0", 4));
    note(l, "set_sriov_vfs between non-zero counts", links.set_sriov_vfs("eth0", 2));
    note(l, "set_hugepages", links.set_hugepages(0, PageSize::Size2M, 32));
    note(l, "set_hugepages short", links.set_hugepages(1, PageSize::Size1G, 8));
    note(l, "set_hugepages on a missing node", links.set_hugepages(7, PageSize::Size2M, 1));
    note(l, "links", links.links());
    note(l, "hugepages", links.hugepages());
    note(l, "delete_link", links.delete_link("ve1"));
    note(l, "delete_link missing", links.delete_link("ve1"));
    note(l, "delete_link physical", links.delete_link("eth0"));
    note(l, "links after", links.links());
    log
}

/// A client speaking to an in-process server over two OS pipes.
fn piped(gpus: Box<dyn Gpus>, links: Box<dyn Links>) -> (AgentClient, thread::JoinHandle<std::io::Result<()>>) {
    piped_locking(gpus, links, std::env::temp_dir().join("fabrik-roundtrip-locks"))
}

/// The same, its apply locks kept in `lock_dir`.
fn piped_locking(
    gpus: Box<dyn Gpus>,
    links: Box<dyn Links>,
    lock_dir: std::path::PathBuf,
) -> (AgentClient, thread::JoinHandle<std::io::Result<()>>) {
    let (request_reader, request_writer) = std::io::pipe().unwrap();
    let (response_reader, response_writer) = std::io::pipe().unwrap();
    let locks = HostLocks::new(lock_dir);
    let server = thread::spawn(move || serve(BufReader::new(request_reader), response_writer, gpus, links, locks));
    let client = AgentClient::over("in-process", response_reader, request_writer, TIMEOUT).unwrap();
    (client, server)
}

#[test]
fn every_call_round_trips_over_a_pipe_with_errors_intact() {
    let direct = script(&mut (FakeGpus::new(), sim_host()));
    let (mut client, server) = piped(Box::new(FakeGpus::new()), Box::new(sim_host()));
    let remote = script(&mut client);
    drop(client);
    server.join().unwrap().unwrap();
    assert_eq!(remote.len(), direct.len());
    for (far, near) in remote.iter().zip(&direct) {
        assert_eq!(far, near);
    }
    // The script really did see errors of every kind it provokes.
    for kind in ["Exists", "NotFound", "Refused", "Unsupported"] {
        assert!(direct.iter().any(|line| line.contains(&format!("kind: {kind}"))), "no {kind} error in the script");
    }
}

#[test]
fn a_driver_that_cannot_work_answers_why() {
    let links = Box::new(Unavailable::new(DriverError::new(ErrorKind::Unreachable, "netlink: permission denied")));
    let (mut client, _server) = piped(Box::new(Unavailable::no_nvml("libnvidia-ml.so.1 not found")), links);
    let err = client.gpus().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unreachable);
    assert!(err.message.contains("NVML not available"), "{err:?}");
    assert_eq!(client.links().unwrap_err().message, "netlink: permission denied");
}

/// An agent command line running a shell script.
fn sh(script: &str) -> String {
    shell_words::join(["sh", "-c", script])
}

#[test]
fn an_agent_of_another_protocol_version_is_refused_clearly() {
    let answer = r#"{"v":2,"id":1,"ok":{"protocol":2,"fabrik":"9.0.0"}}"#;
    let err = AgentClient::spawn(&sh(&format!("read request; echo {}", shell_words::quote(answer)))).err().unwrap();
    assert_eq!((err.kind, err.code.as_deref()), (ErrorKind::Unsupported, Some(VERSION_MISMATCH)), "{err:?}");
    assert!(err.message.contains("speaks v2") && err.message.contains("speaks v1"), "{err:?}");
}

#[test]
fn a_dead_agent_is_unreachable_with_its_stderr() {
    let err = AgentClient::spawn("sh -c 'echo ssh: Could not resolve hostname gpu99 >&2; exit 255'").err().unwrap();
    assert_eq!(err.kind, ErrorKind::Unreachable);
    assert!(err.message.contains("Could not resolve hostname gpu99"), "{err:?}");
    assert!(err.message.contains("255"), "the exit status is in the message: {err:?}");

    // One that greets, then dies on the next call.
    let hello = r#"{"v":1,"id":1,"ok":{"protocol":1,"fabrik":"0.1.0"}}"#;
    let script = format!("read r; echo {}; read r; echo agent crashed >&2; exit 3", shell_words::quote(hello));
    let mut client = AgentClient::spawn(&sh(&script)).unwrap();
    let err = client.links().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unreachable);
    assert!(err.message.contains("agent crashed") && err.message.contains("exit status: 3"), "{err:?}");
    // It stays dead, and says so at once.
    assert_eq!(client.hugepages().unwrap_err(), err);

    let err = AgentClient::spawn("/nonexistent/fabrik agent").err().unwrap();
    assert_eq!(err.kind, ErrorKind::Unreachable);
    assert!(err.message.contains("starting agent"), "{err:?}");
}

#[test]
fn a_silent_agent_times_out() {
    let started = Instant::now();
    let err = AgentClient::spawn_with_timeout("sleep 30", Duration::from_millis(300)).err().unwrap();
    assert_eq!(err.kind, ErrorKind::Unreachable);
    assert!(err.message.contains("did not answer `hello`"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "the lingering agent was killed");
}

#[test]
fn the_agent_binaries_serve_simulated_state() {
    for agent in [AGENT.to_string(), format!("{FABRIK} agent")] {
        let dir = tempfile::tempdir().unwrap();
        let twin = dir.path().join("gpu 01");
        std::fs::create_dir(&twin).unwrap();
        let state = twin.join("links.json");
        sim_host().save(&state).unwrap();
        let command = format!("{agent} --sim-state {}", shell_words::quote(&twin.display().to_string()));
        let mut client = AgentClient::spawn(&command).unwrap();
        assert_eq!(client.hello().fabrik, env!("CARGO_PKG_VERSION"), "{agent}");
        client
            .create_link(&LinkSpec { name: "br0".into(), kind: LinkKind::Bridge, mtu: None, master: None, alias: None })
            .unwrap();
        assert_eq!(client.gpus().unwrap(), vec![], "{agent}: a twin without gpus.json has no GPUs");
        drop(client);
        let saved = SimLinks::load(&state).unwrap();
        assert!(saved.links.iter().any(|l| l.link.name == "br0"), "{agent}: the change was saved");
    }
}

/// The shared libraries a binary names (`NEEDED` in its dynamic section, by `readelf`,
/// which comes with the linker that built it); `None` without `readelf`.
fn needed(binary: &str) -> Option<Vec<String>> {
    let out = std::process::Command::new("readelf").args(["-d", binary]).output().ok()?;
    assert!(out.status.success(), "readelf -d {binary}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let libs = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.trim_end_matches(']').to_string()))
        .collect();
    Some(libs)
}

#[test]
fn the_agent_binary_does_not_load_libvirt() {
    let Some(agent) = needed(AGENT) else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "readelf is missing (binutils)");
        say("skipped: readelf is missing (install binutils)");
        return;
    };
    // What is looked for is there to find: fabrik itself loads libvirt.
    let fabrik = needed(FABRIK).unwrap();
    assert!(fabrik.iter().any(|l| l.starts_with("libvirt.so")), "fabrik needs libvirt: {fabrik:?}");
    assert!(
        !agent.iter().any(|l| l.starts_with("libvirt")),
        "fabrik-agent must not load libvirt (every plan and apply starts one per host): it needs {agent:?}"
    );
}

#[test]
fn a_host_in_a_network_namespace_through_ip_netns_exec() {
    let Some(netns) = Netns::new("agent") else { return };
    let mut client = AgentClient::spawn(&format!("ip netns exec {} {AGENT}", netns.name)).unwrap();
    let bridge = LinkSpec {
        name: "br-agent".into(),
        kind: LinkKind::Bridge,
        mtu: Some(9000),
        master: None,
        alias: Some("fabrik:net:acme".into()),
    };
    client.create_link(&bridge).unwrap();
    client.set_link("br-agent", None, Some(true), None).unwrap();
    let links = client.links().unwrap();
    let br = links.iter().find(|l| l.name == "br-agent").expect("the bridge is listed through the agent");
    assert_eq!(
        (br.kind.clone(), br.mtu, br.up, br.alias.as_deref()),
        (LinkKind::Bridge, 9000, true, Some("fabrik:net:acme"))
    );
    // The far side's kernel error arrives unchanged.
    let err = client.create_link(&bridge).unwrap_err();
    assert_eq!((err.kind, err.code.as_deref()), (ErrorKind::Exists, Some("EEXIST")), "{err:?}");
    // It really is in that namespace, and only there.
    let shown = netns.exec(&["ip", "-d", "link", "show", "br-agent"]);
    assert!(shown.contains("alias fabrik:net:acme"), "{shown}");
    let mut here = NetlinkDriver::local().unwrap();
    assert!(!here.links().unwrap().iter().any(|l| l.name == "br-agent"));
    // The boot id is the kernel's, read on the host's side (a namespace shares it).
    let here_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(client.boot_id().unwrap().as_deref(), Some(here_boot.trim()));
    // NVML is not served yet: a clear error, not a dead agent.
    assert_eq!(client.gpus().unwrap_err().kind, ErrorKind::Unreachable);

    let rounds = 200;
    let time = |client: &mut AgentClient, call: &dyn Fn(&mut AgentClient)| {
        let started = Instant::now();
        for _ in 0..rounds {
            call(client);
        }
        started.elapsed() / rounds
    };
    let hugepages = time(&mut client, &|c| drop(c.hugepages().unwrap()));
    let links = time(&mut client, &|c| drop(c.links().unwrap()));
    let mut direct = NetlinkDriver::in_netns(&netns.name).unwrap();
    let started = Instant::now();
    for _ in 0..rounds {
        drop(direct.links().unwrap());
    }
    let links_direct = started.elapsed() / rounds;
    say(&format!(
        "agent over `ip netns exec`: per call hugepages {hugepages:.0?}, links {links:.0?} (the same links() without the agent: {links_direct:.0?})"
    ));
    drop(client);
    let (mut client, _server) = piped(Box::new(FakeGpus::new()), Box::new(sim_host()));
    let pipe = time(&mut client, &|c| drop(c.hugepages().unwrap()));
    say(&format!("agent over an in-process pipe: per call hugepages {pipe:.0?}"));
}

#[test]
fn an_apply_lock_is_held_for_the_connection_and_refused_to_another_naming_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let connect = || piped_locking(Box::new(FakeGpus::new()), Box::new(sim_host()), dir.path().to_path_buf());
    let holder =
        |pid| fabrik::apply::lock::Holder { pid, user: "ops".into(), host: "laptop".into(), since: 0, epoch: None };
    let (mut first, first_server) = connect();
    first.lock("ai", "h1", &holder(4242)).unwrap();
    let (mut second, second_server) = connect();
    let refused = second.lock("ai", "h1", &holder(7)).unwrap_err();
    assert_eq!((refused.kind, refused.code.as_deref()), (ErrorKind::Refused, Some(LOCKED)), "{refused:?}");
    assert!(refused.message.contains("pid 4242 of ops on laptop"), "{}", refused.message);
    // The first connection ends: the agent lets the lock go with it.
    drop(first);
    first_server.join().unwrap().unwrap();
    second.lock("ai", "h1", &holder(7)).expect("free once the first connection ended");
    drop(second);
    second_server.join().unwrap().unwrap();
}
