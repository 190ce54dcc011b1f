//! What observing costs: `fabrik plan` of a testbed host holding 200 defined domains
//! (96 of them fabrik's VMs, converged; the rest made by hand, left alone: the plan is a
//! no-op), against the least libvirt work that reads the
//! same host: a small program that connects, lists all domains and reads each one's XML
//! through the `virt` crate. Both are separate processes (this bench binary runs itself
//! as the small program), run one after the other, interleaved, for `ROUNDS` rounds;
//! prints the median, min and max of each and the ratio of the medians (target ≤ 1.5).
//! The small program also runs a second time with libvirt's event loop on a thread and
//! keepalive on (`--event-loop`), as fabrik needs: what that costs the same reads.
//!
//! `cargo bench --bench noop_plan_testbed`; `FABRIK_BENCH_BIN=<path>` measures another
//! fabrik binary's plan (an earlier build) on the same host, `FABRIK_BENCH_BEFORE=<path>`
//! another beside this build's, in the same rounds (each build with its own agent:
//! `fabrik-agent` beside the binary, else `<bin> agent`); `FABRIK_BENCH_KEEP=1` leaves the host
//! and its factory for profiling by hand. Without the testbed (root, /dev/kvm,
//! libvirtd) it prints why and does nothing. Under `cargo test` (no `--bench`) it only
//! says how to run it: tests check behaviour, not speed.

#[path = "../tests/testbed/mod.rs"]
mod testbed;

#[path = "../tests/apply_testbed/factory.rs"]
mod factory;

use std::process::Command;
use std::time::{Duration, Instant};

use testbed::{Testbed, say};

/// Domains on the host: the figure of issue 12.
const DOMAINS: usize = 200;
/// Of them, fabrik's VMs: as many shared 1-vCPU VMs as fabrik places on the testbed
/// host's 2 CPUs (stopped VMs count). The rest are domains made by hand, which fabrik
/// reads and leaves alone.
const FABRIK_VMS: usize = 96;
/// Rounds of each side, interleaved.
const ROUNDS: usize = 20;
/// fabrik's no-op plan may take at most this many times the minimal libvirt work.
const TARGET_RATIO: f64 = 1.5;
/// The argument that makes this binary the minimal libvirt program.
const MINIMAL: &str = "--minimal-libvirt";
/// With it, the minimal program also runs libvirt's event loop on a thread, with
/// keepalive on, as fabrik did before `calls_only` (what that costs the reads).
const EVENT_LOOP: &str = "--event-loop";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == MINIMAL) {
        minimal(&args[i + 1], args.iter().any(|a| a == EVENT_LOOP));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        say("noop_plan_testbed bench: not measured under `cargo test`; run `cargo bench --bench noop_plan_testbed`");
        return;
    }
    if let Some(why) = testbed::prerequisites() {
        say(&format!("noop_plan_testbed bench skipped: {why} (run scripts/setup-testbed.sh as root)"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(tb) = Testbed::start("nobench", &["h1"]) else { return };
    let host = tb.host("h1");
    let f = factory::one_host("nobench", host, FABRIK_VMS);
    // Defined, not running: 200 guests would saturate a small machine and measure it.
    let yaml = f
        .yaml()
        .replace(&format!("    host: {}\n", host.name), &format!("    host: {}\n    power: stopped\n", host.name));
    let path = dir.path().join("factory");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("factory.yaml"), yaml).unwrap();
    let t0 = Instant::now();
    let out = Command::new(factory::FABRIK).args(["apply", "--yes"]).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "fabrik apply failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    say(&format!("{FABRIK_VMS} domains defined by fabrik apply in {:.2}s", t0.elapsed().as_secs_f64()));
    let conn = virt::connect::Connect::open(Some(&host.uri)).expect("the host answers");
    for i in FABRIK_VMS..DOMAINS {
        let xml = format!(
            "<domain type='kvm'><name>by-hand-{i:03}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type></os></domain>"
        );
        conn.define_domain_xml(&xml).expect("a domain made by hand is defined");
    }
    drop(conn);

    // Another fabrik binary to measure instead (an earlier build), or beside this one
    // (`FABRIK_BENCH_BEFORE`: a before/after figure from the same rounds).
    let fabrik_bin = std::env::var("FABRIK_BENCH_BIN").unwrap_or_else(|_| factory::FABRIK.to_string());
    let before_bin = std::env::var("FABRIK_BENCH_BEFORE").ok();
    // Each build plans with its own agent, as it would be deployed: the factory's copy
    // for that build names it.
    let fabrik_path = with_agent_of(&path, &fabrik_bin, "plan-fabrik");
    let before_path = before_bin.as_ref().map(|bin| with_agent_of(&path, bin, "plan-before"));
    let me = std::env::current_exe().unwrap();
    let mut fabrik = Vec::new();
    let mut before = Vec::new();
    let mut least = Vec::new();
    let mut looped = Vec::new();
    let mut validate = Vec::new();
    for round in 0..ROUNDS {
        // Interleaved, and which goes first turns: no side always finds the daemon's
        // caches warm.
        let mut sides: Vec<&mut dyn FnMut()> = Vec::new();
        let mut run_fabrik = || fabrik.push(plan_once(&fabrik_bin, &fabrik_path));
        let mut run_before = || {
            if let (Some(bin), Some(path)) = (&before_bin, &before_path) {
                before.push(plan_once(bin, path));
            }
        };
        let minimal_once = |extra: &[&str]| {
            let t0 = Instant::now();
            let o = Command::new(&me).args([MINIMAL, &host.uri]).args(extra).output().unwrap();
            let took = t0.elapsed();
            assert!(o.status.success(), "the minimal program failed: {}", String::from_utf8_lossy(&o.stderr));
            let read: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
            assert_eq!(read, DOMAINS, "the minimal program read every domain");
            took
        };
        let mut run_least = || {
            least.push(minimal_once(&[]));
            looped.push(minimal_once(&[EVENT_LOOP]));
        };
        sides.push(&mut run_fabrik);
        sides.push(&mut run_least);
        sides.push(&mut run_before);
        sides.rotate_left(round % 3);
        for side in sides {
            side();
        }
        // What of fabrik's time is the factory's own (start, load, check): no host.
        let t0 = Instant::now();
        let o = Command::new(&fabrik_bin).arg("validate").arg(&path).output().unwrap();
        assert!(o.status.success(), "the bench's factory is valid: {}", String::from_utf8_lossy(&o.stderr));
        validate.push(t0.elapsed());
    }
    let (fm, lm) = (stats(&fabrik), stats(&least));
    let ratio = fm.0.as_secs_f64() / lm.0.as_secs_f64();
    println!(
        "no-op plan of one testbed host with {DOMAINS} defined domains ({FABRIK_VMS} fabrik's, {} by hand), \
         {ROUNDS} rounds interleaved:",
        DOMAINS - FABRIK_VMS
    );
    println!("                                            median       min       max");
    println!("  fabrik plan (process, all concerns)   {}", row(fm));
    if !before.is_empty() {
        let bm = stats(&before);
        println!("  fabrik plan, FABRIK_BENCH_BEFORE      {}", row(bm));
        println!("    (its ratio to the minimal work: {:.2})", bm.0.as_secs_f64() / lm.0.as_secs_f64());
    }
    println!("  list all domains + read each XML      {}", row(lm));
    println!("    the same with libvirt's event loop  {}", row(stats(&looped)));
    println!("  (fabrik validate: start, load, check)  {}", row(stats(&validate)));
    println!(
        "  ratio of medians fabrik / minimal: {ratio:.2} (target ≤ {TARGET_RATIO}: {})",
        if ratio <= TARGET_RATIO { "ok" } else { "MISSED" }
    );
    if std::env::var_os("FABRIK_BENCH_KEEP").is_some() {
        // For profiling by hand: the host and the factory stay (`testbed.sh stop -n nobench`).
        say(&format!("kept: host {} at {}, factory {}", host.name, host.uri, fabrik_path.display()));
        std::mem::forget(dir);
        std::mem::forget(tb);
    }
}

/// The agent a fabrik build starts on the host: `fabrik-agent` beside it where there is
/// one (the agent without libvirt), else `<bin> agent` (a build from before it existed).
fn agent_of(bin: &str) -> String {
    let beside = std::path::Path::new(bin).with_file_name("fabrik-agent");
    if beside.is_file() { beside.display().to_string() } else { format!("{bin} agent") }
}

/// A copy of the factory folder `dir` (with what apply left in it) beside it, named
/// `name`, whose hosts' agent is `bin`'s.
fn with_agent_of(dir: &std::path::Path, bin: &str, name: &str) -> std::path::PathBuf {
    let copy = dir.with_file_name(name);
    let status = Command::new("cp").arg("-a").arg(dir).arg(&copy).status().unwrap();
    assert!(status.success(), "the factory folder is copied to {}", copy.display());
    let file = copy.join("factory.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    let theirs = yaml.replace(factory::AGENT, &agent_of(bin));
    assert!(theirs.contains(&agent_of(bin)), "the factory names its hosts' agent");
    std::fs::write(&file, theirs).unwrap();
    copy
}

/// One `fabrik plan` of the bench's factory, which must be a no-op (exit 0).
fn plan_once(bin: &str, path: &std::path::Path) -> Duration {
    let t0 = Instant::now();
    let o = Command::new(bin).arg("plan").arg(path).output().unwrap();
    let took = t0.elapsed();
    assert_eq!(
        o.status.code(),
        Some(0),
        "the plan of a converged host is a no-op (exit 0):\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    took
}

/// The least work that reads a host's domains: connect, list them all, read each XML.
/// Prints how many it read.
fn minimal(uri: &str, event_loop: bool) {
    if event_loop {
        virt::event::event_register_default_impl().expect("libvirt's event loop registers");
        std::thread::spawn(|| while virt::event::event_run_default_impl().is_ok() {});
    }
    let conn = virt::connect::Connect::open(Some(uri)).expect("the host answers");
    if event_loop {
        conn.set_keep_alive(5, 5).expect("keepalive is set");
    }
    let doms = conn.list_all_domains(0).expect("the domains can be listed");
    let mut read = 0;
    for d in &doms {
        if d.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE).is_ok() {
            read += 1;
        }
    }
    println!("{read}");
}

/// (median, min, max).
fn stats(times: &[Duration]) -> (Duration, Duration, Duration) {
    let mut t = times.to_vec();
    t.sort();
    (t[t.len() / 2], t[0], t[t.len() - 1])
}

fn row((median, min, max): (Duration, Duration, Duration)) -> String {
    let ms = |d: Duration| format!("{:7.1} ms", d.as_secs_f64() * 1000.0);
    format!("{} {} {}", ms(median), ms(min), ms(max))
}
