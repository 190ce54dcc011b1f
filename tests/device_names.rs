//! Derived host device names never collide: 10,000 random factories of long, similar
//! network names (mixed kinds, tenants, parents), each built into its desired state, give
//! every network's bridge and uplink a name of its own on every host, and the checks
//! find nothing to report about them.

use std::collections::BTreeMap;

use fabrik::desired::names::valid_ifname;
use fabrik::desired::net::{DeviceRole, devices};
use fabrik::spec::load::load_bytes;
use fabrik::spec::source::{Sources, Syntax};

/// Factories generated; the issue asks for at least ten thousand.
const SETS: usize = 10_000;

/// splitmix64: a small seeded generator, so a failure reproduces from its set number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

const TENANTS: &[&str] = &["acme", "globex", "initech", "umbrella-research-division", "t"];
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_.";

/// A name of up to `max` characters that usually shares a long start with its siblings:
/// the case plain truncation gets wrong.
fn name(rng: &mut Rng, stem: &str, max: usize) -> String {
    let mut s: String = stem.chars().take(max).collect();
    let len = rng.range(1, max);
    while s.len() < len {
        s.push(ALPHABET[rng.below(ALPHABET.len())] as char);
    }
    s.truncate(len);
    // Names start with a letter or a digit.
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        s.replace_range(0..1, "n");
    }
    s
}

fn factory(rng: &mut Rng, set: usize) -> String {
    let hosts = rng.range(1, 3);
    let nics: Vec<String> = (0..4).map(|i| name(rng, &format!("enp{i}s0f0np0"), 15)).collect();
    let mut nics = nics;
    nics.sort();
    nics.dedup();
    let mut y = format!("version: 1\nfactory: set{set}\nhosts:\n");
    for h in 0..hosts {
        y.push_str(&format!("  - name: h{h}\n    uri: qemu:///system\n    numa-nodes: [{{ id: 0, cpus: 0-3, memory: 8GiB }}]\n    nics:\n"));
        for nic in &nics {
            y.push_str(&format!("      - {{ name: \"{nic}\", kind: ethernet }}\n"));
        }
    }
    y.push_str("networks:\n");
    let count = rng.range(2, 40);
    let mut used: Vec<String> = Vec::new();
    let mut vlans: Vec<(String, usize)> = Vec::new();
    for k in 0..count {
        let tenant = TENANTS[rng.below(TENANTS.len())];
        let mut n = name(rng, &format!("{tenant}-training-fabric-"), 63);
        while used.contains(&n) {
            n.push('x');
            n.truncate(63);
            n = format!("{}{k}", &n[..n.len().min(60)]);
        }
        used.push(n.clone());
        let on: Vec<String> = (0..hosts).filter(|_| rng.below(4) != 0).map(|h| format!("h{h}")).collect();
        let on = if on.is_empty() { "h0".to_string() } else { on.join(", ") };
        let head = format!("  - {{ name: \"{n}\", purpose: tenant, tenant: {tenant}, hosts: [{on}], ");
        match rng.below(3) {
            0 => y.push_str(&format!("{head}kind: bridge }}\n")),
            1 => {
                let parent = nics[rng.below(nics.len())].clone();
                let mut id = rng.range(1, 4094);
                while vlans.contains(&(parent.clone(), id)) {
                    id = id % 4094 + 1;
                }
                vlans.push((parent.clone(), id));
                y.push_str(&format!("{head}kind: vlan, vlan: {id}, parent: \"{parent}\" }}\n"));
            }
            _ => y.push_str(&format!("{head}kind: vxlan, vni: {} }}\n", 10_000 + k * 7 + set % 7)),
        }
    }
    y
}

#[test]
fn derived_device_names_never_collide_on_a_host() {
    let mut rng = Rng(0x0fab_41c0_2026);
    let (mut networks, mut shortened) = (0usize, 0usize);
    for set in 0..SETS {
        let yaml = factory(&mut rng, set);
        let mut sources = Sources::default();
        let (_, spec, diags) =
            load_bytes(&mut sources, format!("set{set}.yaml").into(), Syntax::Yaml, yaml.clone().into());
        assert!(diags.is_empty(), "set {set} does not load: {diags:?}\n{yaml}");
        // The desired state is built for every tenth set (the slow part): it names links
        // with the functions `devices` uses, and must make one link per device.
        let desired =
            (set % 10 == 0).then(|| fabrik::desired::build(&spec).unwrap_or_else(|d| panic!("set {set}: {d:?}")));
        for host in &spec.hosts {
            let host_name = &host.name.value;
            let mut seen: BTreeMap<String, (&str, DeviceRole)> = BTreeMap::new();
            let mut made = 0;
            for n in spec.networks.iter().filter(|n| n.hosts.iter().any(|h| &h.value == host_name)) {
                networks += 1;
                for (device, role) in devices(n) {
                    made += 1;
                    shortened += usize::from(device.len() == 15);
                    assert!(valid_ifname(&device), "set {set}: `{device}` is no interface name");
                    if let Some((other, _)) = seen.insert(device.clone(), (&n.name.value, role)) {
                        panic!("set {set}, host {host_name}: `{device}` for `{other}` and `{}`\n{yaml}", n.name.value);
                    }
                }
            }
            // The desired state made one link per device: none merged into another.
            if let Some(d) = &desired {
                let links = d.hosts.iter().find(|h| &h.name == host_name).map_or(0, |h| h.links.len());
                assert_eq!(links, made, "set {set}, host {host_name}");
            }
        }
        if set % 1000 == 0 {
            // The rules agree: nothing derived is reported as a shared device.
            let diags = fabrik::check::run(&spec);
            let shared: Vec<_> =
                diags.iter().filter(|d| d.code.starts_with("fabrik::isolation::shared-device")).collect();
            assert!(shared.is_empty(), "set {set}: {shared:?}");
        }
    }
    eprintln!("{SETS} factories, {networks} network placements, {shortened} names of 15 bytes: no collision");
    assert!(shortened > SETS, "the sets must exercise shortened names");
}
