//! `fabrik import` on a testbed host (`tests/testbed/`, real libvirtd and KVM): two
//! domains made by hand with virsh (a qcow2 volume, NICs on the factory's bridges) run
//! beside the factory; import shows what it would do, marks them without a restart, and
//! prints the declarations. Once those are added, `fabrik plan` shows no change, and the
//! guests kept their domain ids and QEMU processes throughout. A domain another factory
//! marks is refused, with the reason.
//!
//! Without root, /dev/kvm or libvirtd the test prints why and passes; with `CI=true` it
//! fails.

#[path = "testbed/mod.rs"]
mod testbed;

#[path = "apply_testbed/factory.rs"]
mod factory;

#[path = "apply_testbed/run.rs"]
mod run;

use std::path::Path;
use std::process::Command;

use run::HostView;
use testbed::Testbed;

/// A domain as an operator writes it for virsh: a qcow2 volume of the pool, NICs on
/// bridges, a serial console.
fn hand_made(name: &str, memory_mib: u64, volume: &str, nics: &[(&str, &str)]) -> String {
    let nics: String = nics
        .iter()
        .map(|(bridge, mac)| {
            format!(
                "<interface type='bridge'><mac address='{mac}'/><source bridge='{bridge}'/><model type='virtio'/></interface>"
            )
        })
        .collect();
    format!(
        "<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <cpu mode='host-passthrough'/>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='{pool}' volume='{volume}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    {nics}
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>",
        pool = factory::POOL
    )
}

struct Import {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn import(dir: &Path, extra: &[&str]) -> Import {
    let o = Command::new(factory::FABRIK)
        .arg("import")
        .arg(dir)
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .expect("fabrik runs");
    Import {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// (domain id, QEMU pid, QEMU start time in clock ticks since boot) of a running guest.
fn running_as(view: &HostView<'_>, name: &str) -> (String, u32, String) {
    let id = view.virsh(&["domid", name]);
    let pid = view.qemu_pid(name).unwrap_or_else(|| panic!("{name} has a QEMU"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Field 22 (starttime), counted after the command name in parentheses.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let start = after.split_whitespace().nth(19).unwrap().to_string();
    (id, pid, start)
}

#[test]
fn import_adopts_hand_made_domains_without_restarting_them() {
    let Some(tb) = Testbed::start("uximport", &["h1"]) else { return };
    let host = tb.host("h1");
    let dir = tempfile::tempdir().unwrap();
    let f = factory::one_host("fi", host, 0);
    // No VMs of its own yet: the imported ones are its first.
    std::fs::write(dir.path().join("factory.yaml"), f.yaml().replace("\nvms:\n", "\nvms: []\n")).unwrap();
    let path = dir.path().to_path_buf();
    run::validate(&path);
    // The factory's networks, bridges and pool, made by fabrik.
    run::apply(&path, &["--shutdown-timeout", "1"]).assert_ok();

    let view = HostView::of(host);
    let acme = f.tenant("acme");
    let shared = format!("br-{}", factory::SHARED);
    for vol in ["legacy-a-root", "legacy-b-root", "legacy-e-root"] {
        view.virsh(&["vol-create-as", factory::POOL, vol, "16M", "--format", "qcow2"]);
    }
    let domains = [
        ("legacy-a", hand_made("legacy-a", 64, "legacy-a-root", &[(&shared, "52:54:00:ab:00:01")])),
        (
            "legacy-b",
            hand_made(
                "legacy-b",
                96,
                "legacy-b-root",
                &[(&acme.bridge(), "52:54:00:ab:00:02"), (&shared, "52:54:00:ab:00:03")],
            ),
        ),
    ];
    for (name, xml) in &domains {
        let file = dir.path().join(format!("{name}.xml"));
        std::fs::write(&file, xml).unwrap();
        view.virsh(&["define", file.to_str().unwrap()]);
        view.virsh(&["autostart", name]);
        view.virsh(&["start", name]);
    }
    // Another factory's domain, never started.
    let mark = fabrik::driver::libvirt::owner::render_metadata(&fabrik::live::Ownership {
        factory: "elsewhere".into(),
        resource: "vm:h1/other-c".into(),
        spec_hash: "0".into(),
    });
    let other = dir.path().join("other-c.xml");
    std::fs::write(
        &other,
        format!("<domain type='kvm'><name>other-c</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os>{mark}</domain>"),
    )
    .unwrap();
    view.virsh(&["define", other.to_str().unwrap()]);
    // Two more made by hand that fabrik would have to change: a disk that is a plain
    // file, and a definition fabrik does not render (i440fx, no `<cpu>`). Never started.
    let file_disk = hand_made("legacy-d", 64, "unused", &[]).replace("type='volume'", "type='file'").replace(
        &format!("<source pool='{}' volume='unused'/>", factory::POOL),
        "<source file='/var/lib/libvirt/d.qcow2'/>",
    );
    let other_machine = hand_made("legacy-e", 64, "legacy-e-root", &[(&acme.bridge(), "52:54:00:ab:00:05")])
        .replace("machine='q35'", "machine='pc'")
        .replace("<cpu mode='host-passthrough'/>", "");
    for (name, xml) in [("legacy-d", file_disk), ("legacy-e", other_machine)] {
        let file = dir.path().join(format!("{name}.xml"));
        std::fs::write(&file, xml).unwrap();
        view.virsh(&["define", file.to_str().unwrap()]);
    }
    // The hand-made domains are an error for the factory today only if it names them; it does not.
    let before: Vec<_> = ["legacy-a", "legacy-b"].iter().map(|n| running_as(&view, n)).collect();

    // A dry run: legacy-b's tenant is told from its network; legacy-a's is not; other-c
    // is another factory's. Nothing is marked.
    let dry = import(&path, &[]);
    assert_eq!(dry.code, Some(0), "{}\n{}", dry.stdout, dry.stderr);
    assert!(dry.stderr.contains("would mark `legacy-b` on host `h1` as `vm:h1/legacy-b`"), "{}", dry.stderr);
    assert!(
        dry.stderr.contains("`legacy-a` on host `h1` is not imported") && dry.stderr.contains("--tenant"),
        "{}",
        dry.stderr
    );
    assert!(
        dry.stderr.contains("`other-c` on host `h1` is not imported") && dry.stderr.contains("factory `elsewhere`"),
        "{}",
        dry.stderr
    );
    assert!(
        dry.stderr.contains("`legacy-d` on host `h1` is not imported")
            && dry.stderr.contains("not a volume of a storage pool"),
        "{}",
        dry.stderr
    );
    assert!(
        dry.stderr.contains("`legacy-e` on host `h1` is not imported")
            && dry.stderr.contains("fabrik would still change its definition"),
        "{}",
        dry.stderr
    );
    assert!(dry.stdout.contains("name: \"legacy-b\"") && !dry.stdout.contains("legacy-a"), "{}", dry.stdout);
    println!("dry run:\n{}", dry.stderr);
    // Named alone, a refused domain is a failure.
    let alone = import(&path, &["--domain", "legacy-e"]);
    assert_eq!(alone.code, Some(1), "a domain named and refused: {}", alone.stderr);
    assert!(alone.stderr.contains("fabrik would still change its definition"), "{}", alone.stderr);
    assert!(alone.stdout.trim().is_empty(), "{}", alone.stdout);
    // With the tenant named, three VMs of one shared vCPU each are more than the host's 2
    // CPUs without overcommit: the declaration that passes the limit is refused with the
    // check's words, the others are still adopted.
    let crowded = import(&path, &["--tenant", "acme"]);
    println!("with --tenant:\n{}", crowded.stderr);
    assert_eq!(crowded.code, Some(0), "{}", crowded.stderr);
    assert!(crowded.stderr.contains("fabrik::capacity::host-cpus"), "{}", crowded.stderr);
    assert_eq!(crowded.stderr.matches("+ would mark").count(), 2, "{}", crowded.stderr);
    for name in ["legacy-a", "legacy-b"] {
        assert!(
            !view.virsh(&["dumpxml", "--inactive", name]).contains("fabrik.dev"),
            "{name} unmarked after a dry run"
        );
    }

    // Marking, with the tenant named.
    let done = import(&path, &["--tenant", "acme", "--yes", "--domain", "legacy-a", "--domain", "legacy-b"]);
    assert_eq!(done.code, Some(0), "{}\n{}", done.stdout, done.stderr);
    assert!(done.stderr.contains("verified: 2 domain(s)"), "{}", done.stderr);
    for name in ["legacy-a", "legacy-b"] {
        assert!(done.stdout.contains(&format!("name: \"{name}\"")), "{}", done.stdout);
        for xml in [view.virsh(&["dumpxml", "--inactive", name]), view.virsh(&["dumpxml", name])] {
            let owner = fabrik::driver::libvirt::owner::parse_xml(&xml)
                .expect("a mark in the saved and the running definition");
            assert_eq!((owner.factory.as_str(), owner.resource.clone()), ("fi", format!("vm:h1/{name}")));
        }
    }
    for name in ["other-c", "legacy-d", "legacy-e"] {
        assert!(!view.virsh(&["dumpxml", "--inactive", name]).contains("factory=\"fi\""), "{name} left alone");
    }
    println!("declarations:\n{}", done.stdout);

    // The declarations added: the plan has nothing to do.
    std::fs::write(dir.path().join("imported.yaml"), &done.stdout).unwrap();
    run::validate(&path);
    run::assert_converged(&path);

    // Never restarted: the same domain ids, the same QEMU processes, started when they were.
    let after: Vec<_> = ["legacy-a", "legacy-b"].iter().map(|n| running_as(&view, n)).collect();
    assert_eq!(before, after, "(domain id, QEMU pid, start time) before and after");
    // A second import finds nothing left to adopt.
    let again = import(&path, &["--tenant", "acme", "--domain", "legacy-a", "--domain", "legacy-b"]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.stdout.trim().is_empty(), "{}", again.stdout);
    assert!(again.stderr.contains("this factory's already"), "{}", again.stderr);
}
