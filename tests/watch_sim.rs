//! `fabrik watch --sim` against a git repository in a temporary directory, on simulated
//! twins: a commit is applied and recorded; a broken commit changes nothing and is
//! reported with its diagnostics while the last good commit stays in force; a `restart
//! now` change waits for `fabrik approve` and then restarts exactly its VMs; a rewind is
//! refused; suspend/resume; `/metrics`. The libvirt-event and unreachable-host cases
//! need real libvirtd hosts: tests/watch_testbed.rs.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for the watcher to reach a state before it fails: a bound on
/// a hang, not a speed requirement (speed is in `docs/watch.md`'s benchmark).
const PATIENCE: Duration = Duration::from_secs(120);

const BASE: &str = "version: 1
factory: wlab
hosts:
  - name: h1
    uri: qemu:///system
    numa-nodes:
      - { id: 0, cpus: 0-15, memory: 64GiB }
    reserved-cpus: 0-1
tenants:
  - name: demo
    hosts: [h1]
    networks: [demo-net]
networks:
  - { name: demo-net, purpose: tenant, kind: bridge, tenant: demo, bridge: br-demo }
templates:
  - { name: small, vcpus: 1, memory: MEM }
vms:
VMS";

fn factory(mem: &str, vms: &[(&str, bool)]) -> String {
    let vms: String = vms
        .iter()
        .map(|(name, templated)| {
            if *templated {
                format!("  - {{ name: {name}, tenant: demo, template: small, nics: [demo-net] }}\n")
            } else {
                format!("  - {{ name: {name}, tenant: demo, vcpus: 1, memory: 1GiB, nics: [demo-net] }}\n")
            }
        })
        .collect();
    BASE.replace("MEM", mem).replace("VMS", &vms)
}

struct Lab {
    dir: tempfile::TempDir,
    child: Option<Child>,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Lab {
    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    fn twins(&self) -> PathBuf {
        self.dir.path().join("twins")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("watch-state")
    }

    fn git(&self, args: &[&str]) -> String {
        let o = Command::new("git")
            .arg("-C")
            .arg(self.repo())
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn commit(&self, text: &str, message: &str) -> String {
        std::fs::write(self.repo().join("factory.yaml"), text).unwrap();
        self.git(&["add", "-A"]);
        self.git(&["commit", "-qm", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo")).unwrap();
        let lab = Lab { dir, child: None, events: Arc::new(Mutex::new(Vec::new())) };
        lab.git(&["init", "-q", "-b", "main"]);
        lab
    }

    fn fabrik(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_fabrik"))
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn start(&mut self, extra: &[&str]) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fabrik"))
            .arg("watch")
            .arg(self.repo())
            .args(["--sim", "--state-dir"])
            .arg(self.twins())
            .arg("--watch-state")
            .arg(self.state())
            .args(["--poll-seconds", "1", "--debounce-ms", "100", "--format", "json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let events = self.events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON event `{line}`: {e}"));
                events.lock().unwrap().push(v);
            }
        });
        self.child = Some(child);
    }

    fn status(&self) -> Option<serde_json::Value> {
        let o = self.fabrik(&["status", "--format", "json", "--watch-state", self.state().to_str().unwrap()]);
        serde_json::from_slice(&o.stdout).ok()
    }

    /// Waits until the status satisfies `ok`; returns it.
    fn until(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.status()
                && ok(&s)
            {
                return s;
            }
            assert!(t0.elapsed() < PATIENCE, "watcher never reached: {what}; last status: {:#?}", self.status());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `pass` events so far.
    fn passes(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap().iter().filter(|e| e["event"] == "pass").cloned().collect()
    }

    /// `fabrik plan` of the work tree (kept equal to the last commit) on the twins: exit 0
    /// (no changes) or 2 (changes), with its output.
    fn plan(&self) -> (Option<i32>, String) {
        let o = self.fabrik(&[
            "plan",
            "--sim",
            "--state-dir",
            self.twins().to_str().unwrap(),
            self.repo().to_str().unwrap(),
        ]);
        (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    }

    fn assert_plan(&self, code: i32, what: &str) {
        let (got, text) = self.plan();
        assert_eq!(got, Some(code), "{what}:\n{text}\nevents: {:#?}", self.events.lock().unwrap());
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

fn applied(s: &serde_json::Value) -> &str {
    s["last_applied"]["commit"].as_str().unwrap_or("")
}

#[test]
fn commits_apply_broken_ones_do_not_and_restarts_wait_for_approval() {
    let mut lab = Lab::new();
    // 1. A commit adding VMs: applied, and the status says so.
    let c1 = lab.commit(&factory("1GiB", &[("a", true), ("b", true), ("c", false)]), "three VMs");
    lab.start(&[]);
    let s = lab.until("first commit applied and converged", |s| applied(s) == c1 && s["hosts"][0]["converged"] == true);
    assert_eq!(s["last_attempted"]["ok"], true);
    lab.assert_plan(0, "the twins match the commit");

    // 3. A commit with a validation error: nothing changes; status shows the error and
    // the last good commit.
    let before = std::fs::read(lab.twins().join("h1.xml")).ok();
    let bad = lab.commit(
        &factory("1GiB", &[("a", true), ("b", true), ("c", false)])
            .replace("vcpus: 1, memory: 1GiB", "vcpus: 1, memroy: 1GiB"),
        "typo",
    );
    let s = lab.until("broken commit refused", |s| s["last_attempted"]["commit"] == bad.as_str());
    assert_eq!(s["last_attempted"]["ok"], false, "{s:#}");
    assert_status_schema(&s);
    assert_eq!(applied(&s), c1, "the last good commit stays in force");
    let diags = s["last_attempted"]["diagnostics"].as_array().expect("diagnostics");
    assert!(diags.iter().any(|d| d["code"] == "fabrik::spec::unknown-key"), "{s:#}");
    let status_text =
        String::from_utf8_lossy(&lab.fabrik(&["status", "--watch-state", lab.state().to_str().unwrap()]).stdout)
            .into_owned();
    assert!(status_text.contains("REFUSED") && status_text.contains("fabrik::spec::unknown-key"), "{status_text}");
    assert_eq!(std::fs::read(lab.twins().join("h1.xml")).ok(), before, "nothing changed on the host");

    // The next good commit applies.
    let c2 = lab.commit(&factory("1GiB", &[("a", true), ("b", true), ("c", false), ("d", false)]), "fourth VM");
    lab.until("good commit after a broken one applied", |s| applied(s) == c2 && s["hosts"][0]["converged"] == true);
    lab.assert_plan(0, "converged");

    // 4. A template memory change (restart now): nothing restarts until approved.
    let seen = lab.passes().len();
    let c3 = lab.commit(&factory("2GiB", &[("a", true), ("b", true), ("c", false), ("d", false)]), "more memory");
    let s = lab.until("restart waits for approval", |s| s["pending"]["commit"] == c3.as_str());
    assert_status_schema(&s);
    let pending = &s["pending"];
    let waiting: Vec<&str> = pending["actions"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(waiting, ["vm:h1/a", "vm:h1/b"], "{s:#}");
    assert!(pending["actions"].as_array().unwrap().iter().all(|a| a["class"] == "restart-now"));
    let ran_since = |from: usize| -> Vec<String> {
        lab.passes()[from..]
            .iter()
            .flat_map(|p| p["ran"].as_array().cloned().unwrap_or_default())
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(ran_since(seen).is_empty(), "nothing ran before approval: {:?}", ran_since(seen));
    lab.assert_plan(2, "the change is still to do");
    // A wrong id is refused.
    let o = lab.fabrik(&["approve", "p-00000000", "--watch-state", lab.state().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let id = pending["id"].as_str().unwrap();
    let before_approve = lab.passes().len();
    let o = lab.fabrik(&["approve", id, "--watch-state", lab.state().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let s = lab.until("approved plan carried out", |s| s["pending"].is_null() && s["hosts"][0]["converged"] == true);
    assert_eq!(applied(&s), c3);
    let mut ran = ran_since(before_approve);
    ran.sort();
    assert_eq!(ran, ["vm:h1/a", "vm:h1/b"], "exactly the template's VMs restarted");
    lab.assert_plan(0, "converged");

    // Suspend: a new commit is read but nothing is carried out; resume carries it out.
    let o = lab.fabrik(&[
        "watch",
        "suspend",
        "--reason",
        "GPU firmware upgrade",
        "--watch-state",
        lab.state().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let c4 =
        lab.commit(&factory("2GiB", &[("a", true), ("b", true), ("c", false), ("d", false), ("e", false)]), "fifth");
    let s = lab.until("suspension seen", |s| {
        s["suspended"]["reason"] == "GPU firmware upgrade" && s["last_attempted"]["commit"] == c4.as_str()
    });
    assert_ne!(applied(&s), c4, "suspended: not applied");
    lab.assert_plan(2, "not applied while suspended");
    lab.fabrik(&["watch", "resume", "--watch-state", lab.state().to_str().unwrap()]);
    lab.until("resumed and applied", |s| {
        applied(s) == c4 && s["suspended"].is_null() && s["hosts"][0]["converged"] == true
    });

    // A rewind (force-push to an older commit) is refused.
    lab.git(&["reset", "-q", "--hard", &c1]);
    let s = lab.until("rewind refused", |s| s["last_attempted"]["commit"] == c1.as_str());
    assert_eq!(s["last_attempted"]["ok"], false);
    assert!(s["last_attempted"]["error"].as_str().unwrap().contains("--allow-rewind"), "{s:#}");
    assert_eq!(applied(&s), c4, "the rewind is not applied");
    assert_status_schema(&s);
}

/// The status document matches schema/watch-status.schema.json.
fn assert_status_schema(doc: &serde_json::Value) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/watch-status.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::meta::validate(&schema).expect("a valid JSON Schema");
    let v = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
    let errors: Vec<String> = v.iter_errors(doc).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "status does not match its schema:\n{}\n{doc:#}", errors.join("\n"));
}

/// A factory of one H200 split into three MIG instances, a VM on each through a vGPU.
const MIG_FACTORY: &str = "version: 1
factory: wboot
hosts:
  - name: gpu09
    uri: qemu:///system
    numa-nodes:
      - { id: 0, socket: 0, cpus: 0-31, memory: 256GiB }
    gpus:
      - address: \"0000:3b:00.0\"
        model: H200-141GB
        numa-node: 0
        mode: mig
        mig:
          - { profile: 2g.35gb, placement: 0 }
          - { profile: 2g.35gb, placement: 2 }
          - { profile: 3g.71gb, placement: 4 }
tenants:
  - name: t
    hosts: [gpu09]
    sharing: [mig]
vms:
  - { name: a, tenant: t, vcpus: 2, memory: 4GiB, gpu: { model: H200-141GB, mig: 2g.35gb } }
  - { name: b, tenant: t, vcpus: 2, memory: 4GiB, gpu: { model: H200-141GB, mig: 2g.35gb } }
  - { name: c, tenant: t, vcpus: 2, memory: 4GiB, gpu: { model: H200-141GB, mig: 3g.71gb } }
";

impl Lab {
    /// `fabrik watch --once --format json`: one pass; its events.
    fn once(&self) -> Vec<serde_json::Value> {
        let o = Command::new(env!("CARGO_BIN_EXE_fabrik"))
            .arg("watch")
            .arg(self.repo())
            .args(["--sim", "--state-dir"])
            .arg(self.twins())
            .arg("--watch-state")
            .arg(self.state())
            .args(["--once", "--format", "json"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.status.code(), Some(0), "watch --once failed:\n{text}");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event `{l}`: {e}\n{text}")))
            .collect()
    }

    fn host(&self) -> fabrik::spec::model::Host {
        let spec = fabrik::spec::load::load(&self.repo().join("factory.yaml")).spec;
        spec.hosts.into_iter().next().unwrap()
    }

    /// Each domain of the twin: (name, running, autostart).
    fn domains(&self) -> Vec<(String, bool, bool)> {
        let host = self.host();
        let dir = fabrik::sim::host_dir(&self.twins(), &host);
        let mut virt = fabrik::sim::virt::open(&dir, &host).unwrap();
        let mut out: Vec<_> = virt
            .domains()
            .unwrap()
            .into_iter()
            .map(|d| (d.name, d.state == fabrik::live::PowerState::Running, d.autostart))
            .collect();
        drop(virt);
        fabrik::sim::release_state(&self.twins());
        out.sort();
        out
    }

    fn gpu_state(&self) -> fabrik::driver::sim_gpu::SimGpuState {
        let path = self.twins().join("gpu09").join("gpus.json");
        fabrik::driver::sim_gpu::SimGpuState::load(&path).unwrap()
    }
}

fn position(events: &[serde_json::Value], what: impl Fn(&serde_json::Value) -> bool, label: &str) -> usize {
    events.iter().position(what).unwrap_or_else(|| panic!("no event {label} in {events:#?}"))
}

#[test]
fn after_a_reboot_one_pass_rebuilds_mig_instances_and_vgpus_before_the_vms_start() {
    let lab = Lab::new();
    let commit = lab.commit(MIG_FACTORY, "three MIG VMs");
    // The first pass: switching MIG mode on is a GPU re-layout, which waits for approval.
    let first = lab.once();
    assert!(!first.iter().any(|e| e["event"] == "host-rebooted"), "the first boot id seen is no reboot: {first:#?}");
    let s = lab.status().expect("a status");
    let id = s["pending"]["id"].as_str().expect("MIG mode waits for approval").to_string();
    let o = lab.fabrik(&["approve", &id, "--watch-state", lab.state().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let approved = lab.once();
    assert!(!approved.iter().any(|e| e["event"] == "host-rebooted"), "{approved:#?}");
    let s = lab.status().expect("a status");
    assert_eq!(applied(&s), commit);
    assert_eq!(s["hosts"][0]["converged"], true, "{s:#}");
    let boot0 = s["hosts"][0]["boot_id"].as_str().expect("the boot id is recorded").to_string();
    // The VMs run, with libvirt's autostart off: they need MIG instances and vGPUs.
    assert_eq!(
        lab.domains(),
        [("a".into(), true, false), ("b".into(), true, false), ("c".into(), true, false)],
        "running, autostart off"
    );
    let g = lab.gpu_state();
    let placed: Vec<(u32, u32, u32)> =
        g.gpus[0].instances.iter().map(|i| (i.profile_id, i.placement.start, i.placement.size)).collect();
    assert_eq!(placed.iter().map(|p| p.1).collect::<Vec<_>>(), [0, 2, 4], "{placed:?}");
    assert_eq!(g.gpus[0].vgpu.as_ref().unwrap().devices.len(), 3);

    // A reboot: new boot id, instances and devices gone, domains off; autostart starts
    // none of them (with autostart on, each would have failed without its device).
    let rebooted = fabrik::sim::reboot(&lab.twins(), &lab.host()).unwrap();
    assert_ne!(rebooted.boot_id, boot0);
    assert!(rebooted.autostarted.is_empty() && rebooted.autostart_failed.is_empty(), "{rebooted:?}");
    assert!(lab.gpu_state().gpus[0].instances.is_empty());
    assert!(lab.domains().iter().all(|d| !d.1), "all off after the reboot");

    // One pass, with no approval (MIG mode survives a reboot; recreating instances and
    // devices is `applied live`): the reboot is reported first, then the instances (at their placements)
    // and the devices are made, then the VMs start.
    let events = lab.once();
    let reboot = position(&events, |e| e["event"] == "host-rebooted", "host-rebooted");
    assert_eq!(events[reboot]["host"], "gpu09");
    assert_eq!(events[reboot]["boot_id"], rebooted.boot_id.as_str());
    assert_eq!(events[reboot]["message"], "host gpu09 rebooted: rebuilding boot-volatile state");
    let first_action = position(&events, |e| e["event"] == "start", "start");
    assert!(reboot < first_action, "reported before the rebuild");
    for (vm, slot) in [("a", "2g.35gb@0"), ("b", "2g.35gb@2"), ("c", "3g.71gb@4")] {
        let mig = format!("mig:gpu09/0000:3b:00.0/{slot}");
        let vm_id = format!("vm:gpu09/{vm}");
        let made = position(&events, |e| e["event"] == "done" && e["id"] == mig.as_str(), &mig);
        let started = position(&events, |e| e["event"] == "start" && e["id"] == vm_id.as_str(), &vm_id);
        assert!(made < started, "{mig} made before {vm_id} starts:\n{events:#?}");
        position(&events, |e| e["event"] == "done" && e["id"] == vm_id.as_str(), "vm done");
    }
    let g = lab.gpu_state();
    let again: Vec<(u32, u32, u32)> =
        g.gpus[0].instances.iter().map(|i| (i.profile_id, i.placement.start, i.placement.size)).collect();
    assert_eq!(again, placed, "the instances at their exact placements");
    assert_eq!(g.gpus[0].vgpu.as_ref().unwrap().devices.len(), 3);
    assert!(lab.domains().iter().all(|d| d.1 && !d.2), "running again, autostart still off");
    let s = lab.status().unwrap();
    assert_status_schema(&s);
    assert_eq!(s["hosts"][0]["boot_id"], rebooted.boot_id.as_str());
    assert!(s["hosts"][0]["rebooted"].is_string(), "{s:#}");
    assert_eq!(s["hosts"][0]["converged"], true, "{s:#}");
    lab.assert_plan(0, "converged after the rebuild");
    // The next pass sees the same boot: no reboot.
    let next = lab.once();
    assert!(!next.iter().any(|e| e["event"] == "host-rebooted"), "{next:#?}");
}

/// Ran actions of a `--once` pass.
fn ran(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "pass")
        .flat_map(|p| p["ran"].as_array().cloned().unwrap_or_default())
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_approved_plan_is_held_to_the_disruption_budget_and_stays_approved() {
    let lab = Lab::new();
    let budget = "watch:\n  budgets:\n    - { per: host, max: 1, period-minutes: 60 }\n";
    let with = |mem: &str| format!("{}{budget}", factory(mem, &[("a", true), ("b", true)]));
    lab.commit(&with("1GiB"), "two VMs");
    lab.once();
    assert_eq!(lab.status().unwrap()["hosts"][0]["converged"], true);
    let c2 = lab.commit(&with("2GiB"), "more memory");
    assert!(ran(&lab.once()).is_empty(), "restarts wait for approval");
    let s = lab.status().unwrap();
    let id = s["pending"]["id"].as_str().expect("a pending plan").to_string();
    assert_eq!(s["pending"]["actions"].as_array().unwrap().len(), 2, "{s:#}");
    let o = lab.fabrik(&["approve", &id, "--watch-state", lab.state().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));

    // Approved, but one restart per host per hour: one VM restarts.
    let first = ran(&lab.once());
    assert_eq!(first.len(), 1, "the budget lets one restart run: {first:?}");
    let s = lab.status().unwrap();
    assert_status_schema(&s);
    assert_eq!(applied(&s), c2);
    let pending = &s["pending"];
    assert_eq!(pending["approved"], true, "{s:#}");
    let waiting = pending["actions"].as_array().unwrap();
    assert_eq!(waiting.len(), 1, "{s:#}");
    assert_ne!(waiting[0]["id"], first[0].as_str());
    assert!(waiting[0]["why"].as_str().unwrap().starts_with("budget-spent"), "{s:#}");
    let text = String::from_utf8_lossy(&lab.fabrik(&["status", "--watch-state", lab.state().to_str().unwrap()]).stdout)
        .into_owned();
    assert!(text.contains("approved; 1 change(s) wait for a disruption budget"), "{text}");
    // Within the hour: still held.
    assert!(ran(&lab.once()).is_empty(), "the budget is spent for the hour");

    // The hour has passed (the ledger's entry made two hours old): the rest runs without
    // a second approval.
    let ledger = lab.state().join("ledger.json");
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ledger).unwrap()).unwrap();
    for run in doc["runs"].as_array_mut().expect("the ledger's runs") {
        run[0] = (run[0].as_i64().unwrap() - 7200).into();
    }
    std::fs::write(&ledger, doc.to_string()).unwrap();
    let second = ran(&lab.once());
    assert_eq!(second, [waiting[0]["id"].as_str().unwrap()], "the approved rest runs");
    let s = lab.status().unwrap();
    assert!(s["pending"].is_null() && s["hosts"][0]["converged"] == true, "{s:#}");
    lab.assert_plan(0, "converged");
}

/// Edits the twin's saved libvirt state of the lab's host.
fn edit_twin(lab: &Lab, edit: impl FnOnce(&mut serde_json::Value)) {
    let dir = fabrik::sim::host_dir(&lab.twins(), &lab.host());
    let path = dir.join("libvirt.json");
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut doc);
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
}

#[test]
fn a_commit_whose_plan_has_an_error_is_refused_as_a_whole() {
    let lab = Lab::new();
    let c1 = lab.commit(&factory("1GiB", &[("a", true)]), "one VM");
    lab.once();
    assert_eq!(applied(&lab.status().unwrap()), c1);
    // A domain fabrik does not own, named like the VM the next commit adds.
    edit_twin(&lab, |doc| {
        doc["domains"].as_array_mut().unwrap().push(serde_json::json!({
            "xml": "<domain type='test'><name>x</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
                    <os><type>hvm</type></os></domain>",
            "running": false, "paused": false, "autostart": false,
        }))
    });
    let bad = lab.commit(&factory("1GiB", &[("a", true), ("x", true), ("y", true)]), "x is taken");
    let events = lab.once();
    let refused = position(&events, |e| e["event"] == "commit-refused", "commit-refused");
    assert_eq!(events[refused]["in_force"], c1.as_str());
    assert!(!events.iter().any(|e| e["event"] == "start"), "nothing of it is carried out: {events:#?}");
    let s = lab.status().unwrap();
    assert_status_schema(&s);
    assert_eq!(
        (s["last_attempted"]["commit"].as_str(), s["last_attempted"]["ok"].as_bool()),
        (Some(bad.as_str()), Some(false))
    );
    assert_eq!(applied(&s), c1, "the last good commit stays in force");
    let d = &s["last_attempted"]["diagnostics"][0];
    assert_eq!(
        (d["code"].as_str(), d["resource"].as_str()),
        (Some("fabrik::plan::name-clash"), Some("vm:h1/x")),
        "{s:#}"
    );
    assert_eq!(d["file"], "factory.yaml", "located in the repository: {d}");
    assert!(d["line"].as_u64().is_some_and(|l| l > 1) && d["column"].is_u64(), "located: {d}");
    let names: Vec<String> = lab.domains().into_iter().map(|d| d.0).collect();
    assert_eq!(names, ["a", "x"], "y of the refused commit is not created");

    // Drift is still healed against the commit in force: `a` stopped by hand runs again.
    edit_twin(&lab, |doc| {
        for d in doc["domains"].as_array_mut().unwrap() {
            if d["xml"].as_str().unwrap().contains("<name>a</name>") {
                d["running"] = false.into();
            }
        }
    });
    assert!(!lab.domains()[0].1, "a is off");
    let events = lab.once();
    assert!(!events.iter().any(|e| e["event"] == "commit-accepted"), "the refused commit stays refused");
    assert!(lab.domains()[0].1, "a runs again: {events:#?}");

    // The next good commit (without x) applies.
    let c3 = lab.commit(&factory("1GiB", &[("a", true), ("y", true)]), "y alone");
    lab.once();
    let s = lab.status().unwrap();
    assert_eq!(applied(&s), c3);
    assert_eq!(s["last_attempted"]["ok"], true);
    let names: Vec<String> = lab.domains().into_iter().map(|d| d.0).collect();
    assert_eq!(names, ["a", "x", "y"], "x, not fabrik's, is left alone");
}
