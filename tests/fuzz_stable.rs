//! A coverage-less mutation run over the input fabrik reads from others, on stable Rust:
//! YAML and KDL factory files through load → check (and so both parsers, the decoder and
//! every rule), and the agent protocol. Seeds are the examples and the broken-factory
//! corpus; each input is a seed changed by a few deterministic mutations biased towards
//! structure (brackets, braces, quotes, anchors, comments, raw strings). It must never
//! panic, overflow the stack or point a diagnostic outside its file. Bounded by
//! `FUZZ_SECONDS` (default 5 s per target) so that CI stays short; set it higher for a
//! long run. The coverage-guided counterpart, on nightly, is libFuzzer in `fuzz/`
//! (docs/fuzzing.md).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fabrik::spec::source::{Sources, Syntax};

/// Pieces a mutation inserts: the tokens that nest, quote, alias or comment.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\"\"\"\n",
    "#\"",
    "\"#",
    "/*",
    "*/",
    "/-",
    "//",
    "&a ",
    "*a",
    "!!str ",
    ": ",
    "- ",
    "\n",
    "\t",
    "\0",
    "\\",
    "=",
    ";",
    "#true",
    "9999999999999999999999999999999999999999",
    "\u{202e}",
    "\r",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, so a failure names the seed and round to rerun.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(5) {
            0 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let times = if rng.below(8) == 0 { 1 + rng.below(200) } else { 1 };
                let piece = t.repeat(times);
                b.splice(at..at, piece.bytes());
            }
            1 if !b.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(b.len());
                b.drain(at.min(end)..end);
            }
            2 if at < b.len() => b[at] = rng.next() as u8,
            3 if !b.is_empty() => {
                // Duplicate a slice: repeated keys, nodes and aliases.
                let start = rng.below(b.len());
                let end = (start + 1 + rng.below(64)).min(b.len());
                let piece = b[start..end].to_vec();
                b.splice(at..at, piece);
            }
            _ => {}
        }
    }
    b
}

fn seeds(ext: &[&str]) -> Vec<Vec<u8>> {
    fn walk(dir: &Path, ext: &[&str], out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, ext, out);
            } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| ext.contains(&e)) {
                out.push(p);
            }
        }
    }
    let mut paths = Vec::new();
    for dir in ["examples", "fixtures/invalid"] {
        walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir), ext, &mut paths);
    }
    paths.sort();
    paths.into_iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn budget() -> Duration {
    let secs = std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    Duration::from_secs(secs)
}

/// Loads and checks one input; every diagnostic must point inside its file.
fn load_and_check(syntax: Syntax, bytes: Vec<u8>) {
    let mut sources = Sources::default();
    let (_, spec, mut diags) = fabrik::spec::load::load_bytes(&mut sources, "f".into(), syntax, bytes);
    if diags.iter().all(|d| !d.is_error()) {
        diags.extend(fabrik::check::run(&spec));
    }
    for d in &diags {
        for l in d.primary.iter().chain(&d.secondary) {
            let file = sources.get(l.span.file);
            assert!(l.span.end as usize <= file.text.len(), "{} points past the end of its file", d.code);
        }
    }
}

fn run(name: &str, seeds: &[Vec<u8>], mut target: impl FnMut(Vec<u8>)) {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let started = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rounds = 0u64;
    while started.elapsed() < budget() {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(seed, &mut rng);
        target(input);
        rounds += 1;
    }
    eprintln!("{name}: {rounds} inputs in {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn yaml_inputs_never_crash() {
    run("yaml", &seeds(&["yaml", "yml"]), |b| load_and_check(Syntax::Yaml, b));
}

#[test]
fn kdl_inputs_never_crash() {
    run("kdl", &seeds(&["kdl"]), |b| load_and_check(Syntax::Kdl, b));
}

#[test]
fn agent_requests_never_crash() {
    let seeds: Vec<Vec<u8>> = [
        r#"{"v":1,"id":1,"call":"hello"}"#,
        r#"{"v":1,"id":2,"call":"links"}"#,
        r#"{"v":1,"id":3,"call":"create_link","args":{"spec":{"name":"br0","kind":{"type":"bridge"},"mtu":9000,"master":null,"alias":"fabrik:acme"}}}"#,
        r#"{"v":1,"id":4,"call":"set_hugepages","args":{"numa_node":0,"size":"2M","count":8}}"#,
        r#"{"v":1,"id":5,"call":"delete_link","args":{"name":"x"}}"#,
    ]
    .iter()
    .map(|s| format!("{s}\n").into_bytes())
    .collect();
    run("agent", &seeds, |b| {
        let mut out = Vec::new();
        let gpus = Box::new(fabrik::driver::agent::Unavailable::no_nvml("fuzz"));
        let links = Box::new(fabrik::driver::sim_links::SimLinks::new());
        let locks = fabrik::driver::agent::HostLocks::new(std::env::temp_dir().join("fabrik-fuzz-locks"));
        fabrik::driver::agent::serve(BufReader::new(&b[..]), &mut out, gpus, links, locks).unwrap();
        for line in String::from_utf8(out).unwrap().lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    });
}
