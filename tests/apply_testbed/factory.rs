//! Factories over testbed hosts, written as one YAML file: the hosts as the testbed made
//! them (URI, agent inside the host's namespace, this machine's NUMA nodes, `eth0` with
//! its address), tenants with quotas, a VXLAN network per tenant over `eth0`, a shared
//! bridge, a `dir` pool, a template, and tiny VMs (no OS: they wait in SeaBIOS).
//!
//! A test builds a [`Factory`], changes it (a template's memory, a VM fewer) and writes
//! it again over the same file, as a person would edit theirs.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::testbed::{Host, Testbed};

/// The fabrik binary the tests run.
pub const FABRIK: &str = env!("CARGO_BIN_EXE_fabrik");
/// The hosts' agent: `fabrik-agent`, the agent without libvirt (what `fabrik agent` serves).
pub const AGENT: &str = env!("CARGO_BIN_EXE_fabrik-agent");

/// The template every VM is made from unless it names another.
pub const TINY: &str = "tiny";
/// The shared bridge network, open to every tenant.
pub const SHARED: &str = "shared";
/// Where the `dir` pool keeps its volumes: inside each host's mount namespace, so
/// under that host's directory (`<dir>/lib/...`), one pool per host.
pub const POOL_PATH: &str = "/var/lib/libvirt/fabrik-vms";
pub const POOL: &str = "vms";
/// Size of a VM's empty data disk.
pub const DISK_MIB: u64 = 16;

/// A tenant with its own VXLAN network `<name>-net` (bridge `br-<name>`, device
/// `vx<vni>`).
#[derive(Clone, Debug)]
pub struct Tenant {
    pub name: String,
    pub vni: u32,
}

impl Tenant {
    pub fn network(&self) -> String {
        format!("{}-net", self.name)
    }
    pub fn bridge(&self) -> String {
        format!("br-{}", self.name)
    }
    pub fn vxlan(&self) -> String {
        format!("vx{}", self.vni)
    }
}

/// A VM: its tenant, host, template and, if any, its data disk.
#[derive(Clone, Debug)]
pub struct Vm {
    pub name: String,
    pub tenant: String,
    pub host: String,
    pub template: String,
    pub disk: Option<Disk>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disk {
    /// Kept when the VM goes (the default: it may hold data).
    Kept,
    /// `delete-with-vm: true`.
    DeletedWithVm,
}

impl Vm {
    /// The volume of its data disk, as fabrik names it: `<vm>-<disk>`.
    pub fn volume(&self) -> Option<String> {
        self.disk.map(|_| format!("{}-data", self.name))
    }
}

/// A VM template: tiny, shared vCPUs.
#[derive(Clone, Debug)]
pub struct Template {
    pub name: String,
    pub memory_mib: u64,
}

#[derive(Clone, Debug)]
pub struct Factory {
    pub name: String,
    pub hosts: Vec<Host>,
    pub tenants: Vec<Tenant>,
    pub templates: Vec<Template>,
    pub vms: Vec<Vm>,
}

/// The factory of tests a–c and e: hosts h1 and h2, tenants acme and globex (a VXLAN
/// network each, over both hosts), the shared bridge, two templates, and seven VMs over
/// both hosts. acme's VMs are of template `tiny`, globex's of `small`; `acme-db` keeps
/// its disk, `globex-cache` deletes its disk with the VM.
pub fn two_hosts(name: &str, tb: &Testbed) -> Factory {
    let tenants = vec![Tenant { name: "acme".into(), vni: 10001 }, Tenant { name: "globex".into(), vni: 10002 }];
    let templates =
        vec![Template { name: TINY.into(), memory_mib: 64 }, Template { name: "small".into(), memory_mib: 96 }];
    let vm = |name: &str, tenant: &str, host: &str, disk: Option<Disk>| Vm {
        name: name.into(),
        tenant: tenant.into(),
        host: host.into(),
        template: if tenant == "acme" { TINY.into() } else { "small".into() },
        disk,
    };
    let vms = vec![
        vm("acme-web-1", "acme", "h1", None),
        vm("acme-web-2", "acme", "h2", None),
        vm("acme-db", "acme", "h1", Some(Disk::Kept)),
        vm("acme-batch", "acme", "h2", Some(Disk::Kept)),
        vm("globex-api-1", "globex", "h1", None),
        vm("globex-api-2", "globex", "h2", None),
        vm("globex-cache", "globex", "h2", Some(Disk::DeletedWithVm)),
    ];
    Factory { name: name.into(), hosts: tb.hosts.clone(), tenants, templates, vms }
}

/// `count` VMs of one tenant on one host, `vm-00`, `vm-01`, …, on its VXLAN network and
/// the shared bridge, without disks.
pub fn one_host(name: &str, host: &Host, count: usize) -> Factory {
    let tenant = Tenant { name: "acme".into(), vni: 10001 };
    let vms = (0..count)
        .map(|i| Vm {
            name: format!("vm-{i:02}"),
            tenant: tenant.name.clone(),
            host: host.name.clone(),
            template: TINY.into(),
            disk: None,
        })
        .collect();
    Factory {
        name: name.into(),
        hosts: vec![host.clone()],
        tenants: vec![tenant],
        templates: vec![Template { name: TINY.into(), memory_mib: 64 }],
        vms,
    }
}

/// This machine's NUMA nodes as a host declares them: node id, CPU list, memory in KiB.
/// Every testbed host sees the machine's own topology through libvirt.
pub fn machine_numa() -> Vec<(u32, String, u64)> {
    let mut nodes = Vec::new();
    for entry in std::fs::read_dir("/sys/devices/system/node").expect("/sys/devices/system/node") {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix("node").and_then(|n| n.parse::<u32>().ok()) else { continue };
        let cpus = std::fs::read_to_string(entry.path().join("cpulist")).unwrap().trim().to_string();
        if cpus.is_empty() {
            continue; // a memory-only node
        }
        let meminfo = std::fs::read_to_string(entry.path().join("meminfo")).unwrap();
        let kib = meminfo
            .lines()
            .find(|l| l.contains("MemTotal:"))
            .and_then(|l| l.split_whitespace().rev().nth(1))
            .and_then(|n| n.parse().ok())
            .expect("MemTotal in the node's meminfo");
        nodes.push((id, cpus, kib));
    }
    nodes.sort();
    nodes
}

impl Factory {
    pub fn tenant(&self, name: &str) -> &Tenant {
        self.tenants.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no tenant {name}"))
    }

    pub fn vm(&self, name: &str) -> &Vm {
        self.vms.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("no VM {name}"))
    }

    pub fn vms_on<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Vm> + 'a {
        self.vms.iter().filter(move |v| v.host == host)
    }

    pub fn template_mut(&mut self, name: &str) -> &mut Template {
        self.templates.iter_mut().find(|t| t.name == name).unwrap_or_else(|| panic!("no template {name}"))
    }

    /// Removes a VM; returns it.
    pub fn remove_vm(&mut self, name: &str) -> Vm {
        let i = self.vms.iter().position(|v| v.name == name).unwrap_or_else(|| panic!("no VM {name}"));
        self.vms.remove(i)
    }

    /// The factory as one YAML file.
    pub fn yaml(&self) -> String {
        let mut y = String::new();
        let host_names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        let hosts = format!("[{}]", host_names.join(", "));
        writeln!(y, "version: 1\nfactory: {}\n\nhosts:", self.name).unwrap();
        for h in &self.hosts {
            writeln!(y, "  - name: {}", h.name).unwrap();
            writeln!(y, "    uri: \"{}\"", h.uri).unwrap();
            writeln!(y, "    agent: ip netns exec {} {AGENT}", h.netns).unwrap();
            writeln!(y, "    numa-nodes:").unwrap();
            for (id, cpus, kib) in machine_numa() {
                writeln!(y, "      - {{ id: {id}, cpus: {cpus}, memory: {kib}KiB }}").unwrap();
            }
            // The VXLAN underlay: its address gives the tunnels their ends.
            writeln!(y, "    nics:\n      - {{ name: eth0, kind: ethernet, ip: {} }}", h.address).unwrap();
        }
        writeln!(y, "\ntenants:").unwrap();
        for t in &self.tenants {
            let vms = self.vms.iter().filter(|v| v.tenant == t.name).count();
            writeln!(y, "  - name: {}", t.name).unwrap();
            writeln!(y, "    hosts: {hosts}").unwrap();
            writeln!(y, "    networks: [{}, {SHARED}]", t.network()).unwrap();
            // Room for the tests' VMs and a few more, never unlimited: quotas are checked.
            writeln!(y, "    quota: {{ vcpus: {n}, memory: {}MiB, vms: {n} }}", (vms as u64 + 4) * 128, n = vms + 4)
                .unwrap();
        }
        writeln!(y, "\nnetworks:").unwrap();
        for t in &self.tenants {
            writeln!(
                y,
                "  - {{ name: {}, purpose: tenant, kind: vxlan, tenant: {}, vni: {}, parent: eth0, bridge: {}, hosts: {hosts} }}",
                t.network(),
                t.name,
                t.vni,
                t.bridge()
            )
            .unwrap();
        }
        writeln!(
            y,
            "  - {{ name: {SHARED}, purpose: public, kind: bridge, shared: true, bridge: br-{SHARED}, hosts: {hosts} }}"
        )
        .unwrap();
        writeln!(y, "\npools:\n  - {{ name: {POOL}, type: dir, path: {POOL_PATH} }}").unwrap();
        writeln!(y, "\ntemplates:").unwrap();
        for t in &self.templates {
            // Shared vCPUs with room to overcommit: the testbed machine has two CPUs.
            writeln!(
                y,
                "  - {{ name: {}, vcpus: 1, memory: {}MiB, cpu-policy: shared, numa: preferred, overcommit: {{ cpu: 64 }}, firmware: bios }}",
                t.name, t.memory_mib
            )
            .unwrap();
        }
        writeln!(y, "\nvms:").unwrap();
        for vm in &self.vms {
            let network = self.tenant(&vm.tenant).network();
            writeln!(y, "  - name: {}", vm.name).unwrap();
            writeln!(y, "    tenant: {}\n    template: {}\n    host: {}", vm.tenant, vm.template, vm.host).unwrap();
            writeln!(y, "    nics: [{network}, {SHARED}]").unwrap();
            if let Some(disk) = vm.disk {
                let delete = match disk {
                    Disk::Kept => "",
                    Disk::DeletedWithVm => ", delete-with-vm: true",
                };
                writeln!(y, "    disks:\n      - {{ name: data, pool: {POOL}, size: {DISK_MIB}MiB{delete} }}").unwrap();
            }
        }
        y
    }

    /// Writes the factory to `<dir>/factory.yaml` (over an earlier version); returns the
    /// directory, which is what fabrik is given (its `.fabrik/` goes beside the file).
    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::write(dir.join("factory.yaml"), self.yaml()).expect("the factory file can be written");
        dir.to_path_buf()
    }
}

/// `git -C repo ARGS` as a test user (no signing), its trimmed output; fails the test
/// when git does.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Writes `f` into the work tree `repo` and commits it all; the new commit's id.
pub fn commit(f: &Factory, repo: &Path, message: &str) -> String {
    f.write(repo);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", message]);
    git(repo, &["rev-parse", "HEAD"])
}
