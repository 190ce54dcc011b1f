//! A real appliance guest on a testbed host: fabrik fetches its boot image (a `file:`
//! source with its SHA-256), makes its disk, builds and attaches its NoCloud seed, and
//! starts it; the guest boots, reads the seed from the CIDATA disk, takes the address
//! fabrik allocated from the network-config, and serves its endpoint with what the
//! user-data says. `fabrik status` and `fabrik inventory` show the endpoint healthy.
//! A parameter change plans as a `next restart` change of the seed, apply rewrites the
//! seed without restarting the guest (which goes on serving the old value), and after a
//! restart the guest serves the new one.
//!
//! The guest is tests/testbed/guest-image.sh's: Debian's cloud kernel and busybox, whose
//! /init reads the seed as cloud-init's NoCloud source does (a documented subset; see
//! docs/language.md, "A real guest"). Building it needs apt and the packages of
//! scripts/setup-testbed.sh; without root, /dev/kvm, libvirtd or those it prints why and
//! passes, and with `CI=true` it fails.

#[path = "testbed/mod.rs"]
mod testbed;

#[path = "apply_testbed/factory.rs"]
mod factory;

#[path = "apply_testbed/run.rs"]
mod run;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use run::HostView;
use serde_json::Value;
use sha2::{Digest, Sha256};
use testbed::{Host, Testbed};

const VM: &str = "gu-app-0";
const BRIDGE: &str = "br-gu";
const SUBNET: &str = "10.31.0";
const PORT: u16 = 8000;
/// How long a boot may take before the test gives up: the guest runs under TCG where
/// the machine's KVM cannot run it (see tests/testbed/README.md), on a shared machine.
/// A bound for failing, not a timing claim.
const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// Builds (or finds cached) the guest's boot disk; `None` after saying why it cannot.
fn guest_image() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbed/guest-image.sh");
    let out = Command::new("bash").arg(script).output().expect("bash runs guest-image.sh");
    if !out.status.success() {
        testbed::missing(&format!("the guest image cannot be built: {}", String::from_utf8_lossy(&out.stderr).trim()));
        return None;
    }
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn sha256_of(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One host, one tenant with a bridge network that has a subnet, the image, and the
/// appliance template: a web server on its endpoint's port serving the `model` parameter.
fn factory_yaml(h: &Host, image: &Path, sha256: &str, model: &str) -> String {
    let numa: String = factory::machine_numa()
        .iter()
        .map(|(id, cpus, kib)| format!("      - {{ id: {id}, cpus: {cpus}, memory: {kib}KiB }}\n"))
        .collect();
    format!(
        r#"version: 1
factory: guboot
hosts:
  - name: {host}
    uri: "{uri}"
    agent: ip netns exec {netns} {fabrik} agent
    numa-nodes:
{numa}    nics:
      - {{ name: eth0, kind: ethernet, ip: {address} }}
tenants:
  - name: acme
    hosts: [{host}]
    networks: [acme-net]
    quota: {{ vcpus: 4, memory: 1GiB, vms: 2 }}
networks:
  - name: acme-net
    purpose: tenant
    kind: bridge
    tenant: acme
    bridge: {BRIDGE}
    hosts: [{host}]
    subnet: {SUBNET}.0/24
    gateway: {SUBNET}.1
    ranges: [{SUBNET}.20-{SUBNET}.40]
pools:
  - {{ name: vms, type: dir, path: {pool} }}
images:
  - name: appliance-boot
    pool: vms
    source: "file:{image}"
    sha256: {sha256}
    format: raw
templates:
  - name: appliance
    vcpus: 1
    memory: 256MiB
    cpu-policy: shared
    overcommit: {{ cpu: 8 }}
    firmware: bios
    disks:
      - {{ name: root, image: appliance-boot, pool: vms }}
    params:
      - {{ name: model, type: pattern, pattern: "[a-z0-9._-]+/[a-z0-9._-]+", description: the model to serve }}
      - {{ name: port, type: integer, default: {PORT} }}
    endpoints:
      - {{ name: api, port: {PORT}, protocol: http, network: acme-net, health: /health }}
    user-data: |-
      #cloud-config
      hostname: {{{{ vm.name }}}}
      write_files:
        - path: /srv/www/model
          content: |
            {{{{ params.model }}}}
        - path: /srv/www/health
          content: |
            ok
      runcmd:
        - httpd -p {{{{ params.port }}}} -h /srv/www
vms:
  - name: {VM}
    tenant: acme
    template: appliance
    host: {host}
    nics: [acme-net]
    params: {{ model: {model} }}
"#,
        host = h.name,
        uri = h.uri,
        netns = h.netns,
        fabrik = factory::FABRIK,
        address = h.address,
        pool = factory::POOL_PATH,
        image = image.display(),
    )
}

fn write(dir: &Path, yaml: &str) -> PathBuf {
    std::fs::write(dir.join("factory.yaml"), yaml).unwrap();
    dir.to_path_buf()
}

/// fabrik inside the host's network namespace, where the tenant's bridge is: the
/// machine running fabrik must reach the guests' networks to probe their endpoints.
fn fabrik_in(h: &Host, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &h.netns, factory::FABRIK])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The body the guest serves at `url` (`http://<ip>:<port>/<path>`), fetched inside the
/// host's namespace with bash's `/dev/tcp` (no HTTP client needed on the machine).
fn get(h: &Host, url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (at, path) = rest.split_once('/')?;
    let (ip, port) = at.split_once(':')?;
    let script = format!(
        "exec 3<>/dev/tcp/{ip}/{port} && printf 'GET /{path} HTTP/1.0\\r\\nHost: {at}\\r\\n\\r\\n' >&3 && cat <&3"
    );
    let o =
        Command::new("ip").args(["netns", "exec", &h.netns, "timeout", "3", "bash", "-c", &script]).output().unwrap();
    let answer = String::from_utf8_lossy(&o.stdout).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.trim().to_string())
}

/// What the guest writes to its serial console (the domain's pty, which nothing else
/// reads), collected from now on: its `guest: …` lines say what it found in the seed.
fn console(view: &HostView) -> Arc<Mutex<String>> {
    let tty = view.virsh(&["ttyconsole", VM]).trim().to_string();
    let seen = Arc::new(Mutex::new(String::new()));
    // Raw, without echo: the guest's output must not come back to it as input.
    let _ = Command::new("stty").args(["-F", &tty, "raw", "-echo"]).status();
    let sink = seen.clone();
    std::thread::spawn(move || {
        let Ok(mut f) = std::fs::File::open(&tty) else { return };
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    seen
}

/// Polls until the guest serves `want` at its model URL; panics with what it saw and
/// its console after [`BOOT_LIMIT`].
fn wait_for_model(h: &Host, base: &str, want: &str, console: &Mutex<String>) -> Duration {
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < BOOT_LIMIT {
        last = get(h, &format!("{base}/model"));
        if last.as_deref() == Some(want) {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = std::fs::read_to_string(h.dir.join(format!("log/qemu/{VM}.log"))).unwrap_or_default();
    let console = console.lock().unwrap().clone();
    panic!(
        "the guest did not serve `{want}` at {base}/model (last: {last:?}); its console:\n{console}\nQEMU's log:\n{log}"
    );
}

fn status_json(h: &Host, path: &Path) -> (i32, Value) {
    let o = fabrik_in(h, &["status", "--factory", path.to_str().unwrap(), "--format", "json"]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    (o.status.code().unwrap_or(-1), v)
}

#[test]
fn a_real_guest_reads_its_seed_takes_its_address_and_serves_its_endpoint() {
    let Some(tb) = Testbed::start("guboot", &["h1"]) else { return };
    let Some(image) = guest_image() else { return };
    let h1 = tb.host("h1");
    let dir = tempfile::tempdir().unwrap();
    let sha = sha256_of(&image);
    let path = write(dir.path(), &factory_yaml(h1, &image, &sha, "org/first"));
    run::validate(&path);
    let t0 = Instant::now();
    run::apply(&path, &[]).assert_ok();
    let applied_in = t0.elapsed();
    let mut view = HostView::of(h1);
    let first = console(&view);

    // The address fabrik allocated, as the plan's inventory reads it back.
    let inv = fabrik_in(h1, &["inventory", path.to_str().unwrap(), "--format", "json"]);
    let v: Value = serde_json::from_slice(&inv.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&inv)));
    let ep = v["endpoints"].as_array().and_then(|a| a.first()).cloned().unwrap_or_else(|| panic!("{v}"));
    let address = ep["address"].as_str().unwrap_or_else(|| panic!("no address: {ep}")).to_string();
    assert!(address.starts_with(&format!("{SUBNET}.")), "{address} is not in the network's subnet");
    assert_eq!(ep["url"], format!("http://{address}:{PORT}/health"));

    // The operator's router on the tenant's network: the gateway address on the bridge,
    // so the host (and fabrik in its namespace) reaches the guest.
    testbed::in_host(h1, &["ip", "addr", "add", &format!("{SUBNET}.1/24"), "dev", BRIDGE]);
    let base = format!("http://{address}:{PORT}");
    let booted_in = wait_for_model(h1, &base, "org/first", &first);
    testbed::say(&format!(
        "guest: applied in {:.1}s, serving at {base} {:.1}s later",
        applied_in.as_secs_f64(),
        booted_in.as_secs_f64()
    ));

    // The endpoint is healthy in `fabrik status` (no watcher: endpoints only) and in
    // `fabrik inventory`, human and JSON.
    let (code, status) = status_json(h1, &path);
    assert_eq!(code, 0, "{status}");
    let eps = status["endpoints"].as_array().unwrap_or_else(|| panic!("{status}"));
    assert_eq!(eps.len(), 1, "{status}");
    assert_eq!((eps[0]["vm"].as_str(), eps[0]["probe"]["status"].as_str()), (Some(VM), Some("healthy")), "{status}");
    let human = fabrik_in(h1, &["status", "--factory", path.to_str().unwrap()]);
    let human_text = text(&human);
    assert!(human_text.contains(&format!("{VM}/api")) && human_text.contains("healthy"), "{human_text}");
    let inv = fabrik_in(h1, &["inventory", path.to_str().unwrap()]);
    assert!(text(&inv).contains(&format!("http://{address}:{PORT}/health  healthy")), "{}", text(&inv));
    run::assert_converged(&path);

    // A parameter change: the seed's change is planned as `next restart`, by hash.
    let pid = view.qemu_pid(VM).expect("the guest runs");
    let path = write(dir.path(), &factory_yaml(h1, &image, &sha, "org/second"));
    let p = run::plan(&path);
    assert_eq!(p.code, 2, "{:?}\n{}", p.lines(), p.stderr);
    let a = p.action(&format!("vm:h1/{VM}")).unwrap_or_else(|| panic!("{:?}", p.lines()));
    assert_eq!(a["class"], "next-restart", "{a}");
    assert!(a.to_string().contains("sha256:"), "the seed's change is named by hash: {a}");
    run::apply(&path, &[]).assert_ok();
    run::assert_converged(&path);
    assert_eq!(view.qemu_pid(VM), Some(pid), "apply restarted the guest for a next-restart change");
    assert_eq!(
        get(h1, &format!("{base}/model")).as_deref(),
        Some("org/first"),
        "the running guest read its seed at boot"
    );
    assert!(view.domain(VM).is_some());

    // The restart the plan named: the guest reads the new seed.
    view.virsh(&["destroy", VM]);
    // Nothing serves now: the endpoint is unhealthy, and status says so (exit 2).
    let (code, status) = status_json(h1, &path);
    assert_eq!((code, status["endpoints"][0]["probe"]["status"].as_str()), (2, Some("unhealthy")), "{status}");
    view.virsh(&["start", VM]);
    let second = console(&view);
    let rebooted_in = wait_for_model(h1, &base, "org/second", &second);
    testbed::say(&format!("guest: serving the new parameter {:.1}s after its restart", rebooted_in.as_secs_f64()));
    let (code, status) = status_json(h1, &path);
    assert_eq!((code, status["endpoints"][0]["probe"]["status"].as_str()), (0, Some("healthy")), "{status}");
}
