//! Many real hosts at once (issue 14): `HOSTS` private libvirtd hosts of one testbed
//! (`scmany`, hosts `sc01`…), `DOMAINS_PER_HOST` fabrik VMs on each, defined and not
//! running (`power: stopped`: a thousand guests would saturate a small machine and
//! measure that instead).
//!
//! 1. `fabrik apply --yes --format json` from nothing defines every domain (and each
//!    host's networks and pool); the bench reads the events as they come and prints,
//!    per host, when its first action started and its last one ended, relative to the
//!    apply's start: the hosts overlap, which is what parallel per-host sessions look
//!    like. Then one line of how many hosts were busy at once at most.
//! 2. `fabrik plan` of the converged hosts, `ROUNDS` times: a no-op (exit 0) over
//!    every host; median, min and max (target < 2 s).
//!
//! `cargo bench --bench many_hosts_testbed` (`SCALE_HOSTS=N` for another host count);
//! `FABRIK_BENCH_BIN=<path>` measures another fabrik binary. Without the testbed (root,
//! /dev/kvm, libvirtd) it prints why and does nothing. Under `cargo test` it only says
//! how to run it: tests check behaviour, not speed.

#[path = "../tests/testbed/mod.rs"]
mod testbed;

#[path = "../tests/apply_testbed/factory.rs"]
mod factory;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed::{Testbed, say};

const HOSTS: usize = 50;
const DOMAINS_PER_HOST: usize = 20;
const ROUNDS: usize = 5;
const NOOP_TARGET: Duration = Duration::from_secs(2);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        say("many_hosts_testbed bench: not measured under `cargo test`; run `cargo bench --bench many_hosts_testbed`");
        return;
    }
    if let Some(why) = testbed::prerequisites() {
        say(&format!("many_hosts_testbed bench skipped: {why} (run scripts/setup-testbed.sh as root)"));
        return;
    }
    let hosts: usize = std::env::var("SCALE_HOSTS").ok().and_then(|n| n.parse().ok()).unwrap_or(HOSTS);
    let names: Vec<String> = (1..=hosts).map(|i| format!("sc{i:02}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let Some(tb) = Testbed::start("scmany", &name_refs) else { return };
    say(&format!("{hosts} testbed hosts started in {:.1} s", tb.started_in.as_secs_f64()));
    let mut f = factory::one_host("scmany", &tb.hosts[0], 0);
    f.hosts = tb.hosts.clone();
    f.vms = tb
        .hosts
        .iter()
        .flat_map(|h| {
            (0..DOMAINS_PER_HOST).map(move |i| factory::Vm {
                name: format!("{}-vm{i:02}", h.name),
                tenant: "acme".into(),
                host: h.name.clone(),
                template: factory::TINY.into(),
                disk: None,
            })
        })
        .collect();
    let mut yaml = f.yaml();
    for h in &tb.hosts {
        yaml = yaml.replace(&format!("    host: {}\n", h.name), &format!("    host: {}\n    power: stopped\n", h.name));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("factory.yaml"), yaml).unwrap();
    let path = dir.path().to_path_buf();
    let fabrik_bin = std::env::var("FABRIK_BENCH_BIN").unwrap_or_else(|_| factory::FABRIK.to_string());

    // 1. Apply from nothing, with every host's first and last event as they arrive.
    let t0 = Instant::now();
    let mut child = Command::new(&fabrik_bin)
        .args(["apply", "--yes", "--format", "json", "--parallelism", &hosts.max(1).to_string()])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut span: BTreeMap<String, (Duration, Duration, usize)> = BTreeMap::new();
    let mut failed = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let at = t0.elapsed();
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let kind = event["event"].as_str().unwrap_or("");
        let Some(host) = event["id"].as_str().and_then(|id| id.split_once(':')).and_then(|(_, r)| r.split_once('/'))
        else {
            continue;
        };
        let e = span.entry(host.0.to_string()).or_insert((at, at, 0));
        e.1 = at;
        if kind == "done" {
            e.2 += 1;
        }
        if kind == "failed" {
            failed.push(line.clone());
        }
    }
    let out = child.wait_with_output().unwrap();
    let apply = t0.elapsed();
    assert!(
        out.status.success() && failed.is_empty(),
        "fabrik apply failed: {failed:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "apply from nothing: {hosts} hosts, {} domains defined (stopped), {:.2} s; per host, first action start → last action end:",
        hosts * DOMAINS_PER_HOST,
        apply.as_secs_f64()
    );
    for (host, (first, last, done)) in &span {
        println!("  {host}  {:>7.2} s → {:>7.2} s  ({done} actions)", first.as_secs_f64(), last.as_secs_f64());
    }
    // Hosts busy at once: the most spans covering one instant (checked at every start).
    let busy = span.values().map(|(s, _, _)| span.values().filter(|(a, b, _)| a <= s && s <= b).count()).max();
    let work: f64 = span.values().map(|(a, b, _)| (*b - *a).as_secs_f64()).sum();
    println!(
        "  hosts busy at once, at most: {}; sum of per-host spans {:.1} s over {:.1} s of apply ({:.1}× overlap)",
        busy.unwrap_or(0),
        work,
        apply.as_secs_f64(),
        work / apply.as_secs_f64()
    );

    // 2. The no-op plan over every host.
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let o = Command::new(&fabrik_bin).arg("plan").arg(&path).output().unwrap();
        times.push(t.elapsed());
        assert_eq!(
            o.status.code(),
            Some(0),
            "the plan of converged hosts is a no-op:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "no-op plan of {hosts} hosts, {} domains, {ROUNDS} rounds: median {:.2} s, min {:.2} s, max {:.2} s (target < {} s: {})",
        hosts * DOMAINS_PER_HOST,
        median.as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64(),
        NOOP_TARGET.as_secs(),
        if median < NOOP_TARGET { "ok" } else { "MISSED" }
    );
    drop(tb);
}
