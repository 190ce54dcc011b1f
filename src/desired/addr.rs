//! IP addresses of VM NICs: a network's subnet, gateway, DNS and allocation ranges
//! (its [`Ipam`]), and the address each NIC on it gets.
//!
//! * A NIC's `address` is used as given (the checks refuse one outside the subnet or the
//!   ranges, one given twice, or one that is the gateway or a DNS server).
//! * Otherwise the address is a hash of factory, tenant, VM, NIC index and network into
//!   the network's pool (its ranges, else every host address of its subnet), probed
//!   forward to the next free one; NICs are taken in key order, so the result is a pure
//!   function of the files.
//! * A VM that already exists keeps the address recorded in its domain's fabrik
//!   metadata ([`keep_live`]): adding or removing other VMs never moves it, even when a
//!   new VM's hash lands on it first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::{Desired, DesiredHost, build};
use crate::live::LiveHost;

/// A subnet: its first address and prefix length (`10.20.0.0/16`, `fd00::/64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub base: IpAddr,
    pub prefix: u8,
}

/// An inclusive address range (`10.20.1.10-10.20.1.200`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

/// What a network says about addresses: where they come from and what guests are told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    pub subnet: Subnet,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
    /// Where derived addresses come from; empty means every host address of the subnet.
    pub ranges: Vec<IpRange>,
}

/// The address a VM NIC has on its network, with what the guest needs to use it: the
/// desired fact guest configuration (cloud-init network-config) reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicAddress {
    pub ip: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
    /// Given in the files (`address`), not allocated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub declared: bool,
}

impl std::fmt::Display for NicAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

fn bits(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_int(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// `a.b.c.d/n` or `x::/n`, with no host bits set; `None` otherwise.
pub fn parse_subnet(text: &str) -> Option<Subnet> {
    let (ip, prefix) = text.split_once('/')?;
    let base: IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    if u32::from(prefix) > bits(base) || prefix == 0 {
        return None;
    }
    let s = Subnet { base, prefix };
    (to_int(base) == s.first()).then_some(s)
}

/// `first-last` (both in one family, first not after last); `None` otherwise.
pub fn parse_range(text: &str) -> Option<IpRange> {
    let (a, b) = text.split_once('-')?;
    let first: IpAddr = a.trim().parse().ok()?;
    let last: IpAddr = b.trim().parse().ok()?;
    (first.is_ipv4() == last.is_ipv4() && to_int(first) <= to_int(last)).then_some(IpRange { first, last })
}

impl Subnet {
    fn host_mask(&self) -> u128 {
        let host_bits = bits(self.base) - u32::from(self.prefix);
        if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 }
    }

    fn first(&self) -> u128 {
        to_int(self.base) & !self.host_mask()
    }

    fn last(&self) -> u128 {
        self.first() | self.host_mask()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.base.is_ipv4() && (self.first()..=self.last()).contains(&to_int(ip))
    }

    /// Addresses a host may have: all but the network and broadcast addresses of an IPv4
    /// subnet wider than /31 (RFC 3021), all but the subnet-router anycast of IPv6.
    fn hosts(&self) -> (u128, u128) {
        match self.base {
            IpAddr::V4(_) if self.prefix >= 31 => (self.first(), self.last()),
            IpAddr::V4(_) => (self.first() + 1, self.last() - 1),
            IpAddr::V6(_) if self.prefix == 128 => (self.first(), self.last()),
            IpAddr::V6(_) => (self.first() + 1, self.last()),
        }
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Ipam {
    /// The pool derived addresses come from, as inclusive integer spans.
    fn spans(&self) -> Vec<(u128, u128)> {
        if self.ranges.is_empty() {
            vec![self.subnet.hosts()]
        } else {
            self.ranges.iter().map(|r| (to_int(r.first), to_int(r.last))).collect()
        }
    }

    /// How many addresses the pool holds (saturating: an IPv6 /64 is "many").
    pub fn pool_size(&self) -> u128 {
        self.spans().iter().fold(0u128, |n, (a, b)| n.saturating_add(b - a).saturating_add(1))
    }

    /// Is `ip` in the pool (the ranges, or the subnet's host addresses)?
    pub fn in_pool(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.subnet.base.is_ipv4() && self.spans().iter().any(|(a, b)| (*a..=*b).contains(&to_int(ip)))
    }

    /// Addresses the network itself holds: the gateway and DNS servers.
    pub fn reserved(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.gateway.iter().chain(&self.dns).copied()
    }

    /// The `index`-th address of the pool (wrapping).
    fn nth(&self, index: u128) -> IpAddr {
        let spans = self.spans();
        let mut i = index % self.pool_size().max(1);
        for (a, b) in &spans {
            let len = b - a + 1;
            if i < len {
                return from_int(a + i, self.subnet.base);
            }
            i -= len;
        }
        from_int(spans[0].0, self.subnet.base)
    }

    fn address(&self, ip: IpAddr, declared: bool) -> NicAddress {
        let dns = self.dns.clone();
        NicAddress { ip, prefix: self.subnet.prefix, gateway: self.gateway, dns, declared }
    }
}

/// Where NIC `nic` of a VM starts probing in a pool of `size` addresses.
pub fn start(factory: &str, tenant: &str, vm: &str, nic: usize, network: &str, size: u128) -> u128 {
    let key = format!("ip\0{factory}\0{tenant}\0{vm}\0{nic}\0{network}");
    let h = crate::hash::fnv1a(key.as_bytes());
    let hi = super::names::mix(h ^ 0x9e37_79b9_7f4a_7c15);
    let wide = (u128::from(super::names::mix(h)) << 64) | u128::from(hi);
    wide % size.max(1)
}

/// A NIC, by VM name and index.
type NicKey = (String, usize);

/// Gives every NIC on a network with an [`Ipam`] an address: the declared one, the one in
/// `keep` when it is still in the pool and free, else a derived one. A pool with no free
/// address left leaves the NIC without one (the checks report
/// `fabrik::address::exhausted` before a build gets here). Then every VM's spec hash is
/// computed again.
pub(super) fn assign(
    factory: &str,
    ipam: &BTreeMap<String, Ipam>,
    hosts: &mut [DesiredHost],
    keep: &BTreeMap<NicKey, IpAddr>,
) {
    let mut taken: BTreeMap<&str, BTreeSet<IpAddr>> =
        ipam.iter().map(|(name, p)| (name.as_str(), p.reserved().collect())).collect();
    let mut chosen: BTreeMap<NicKey, NicAddress> = BTreeMap::new();
    let mut pending: Vec<(String, String, usize, &str)> = Vec::new();
    // Declared addresses first: they are what the operator wrote.
    for vm in hosts.iter().flat_map(|h| &h.vms) {
        for (k, nic) in vm.nics.iter().enumerate() {
            let Some((network, pool)) = ipam.get_key_value(&nic.network) else { continue };
            match &nic.address {
                Some(a) if a.declared => {
                    taken.entry(network).or_default().insert(a.ip);
                    chosen.insert((vm.name.clone(), k), pool.address(a.ip, true));
                }
                Some(_) | None => pending.push((vm.tenant.clone(), vm.name.clone(), k, network)),
            }
        }
    }
    // Then addresses kept from existing VMs, in VM order; one that left the pool, or
    // that two VMs share, stays with the first and the other is allocated afresh.
    pending.sort();
    let mut rest = Vec::with_capacity(pending.len());
    for (tenant, vm, k, network) in pending {
        let pool = &ipam[network];
        let used = taken.entry(network).or_default();
        match keep.get(&(vm.clone(), k)).filter(|ip| pool.in_pool(**ip)) {
            Some(ip) if used.insert(*ip) => {
                chosen.insert((vm, k), pool.address(*ip, false));
            }
            Some(_) | None => rest.push((tenant, vm, k, network)),
        }
    }
    for (tenant, vm, k, network) in rest {
        let pool = &ipam[network];
        let size = pool.pool_size();
        let used = taken.entry(network).or_default();
        let from = start(factory, &tenant, &vm, k, network, size);
        // Among `used + 1` consecutive addresses one is free, if the pool has room; a
        // full pool (an error the checks report) leaves the NIC without an address.
        let steps = size.min(used.len() as u128 + 1);
        if let Some(ip) = (0..steps).map(|step| pool.nth(from.wrapping_add(step))).find(|ip| !used.contains(ip)) {
            used.insert(ip);
            chosen.insert((vm, k), pool.address(ip, false));
        }
    }
    for vm in hosts.iter_mut().flat_map(|h| &mut h.vms) {
        for (k, nic) in vm.nics.iter_mut().enumerate() {
            nic.address = chosen.remove(&(vm.name.clone(), k)).map(Box::new);
        }
        vm.spec_hash = build::spec_hash(vm);
    }
}

/// The address records of a VM, as its domain's metadata carries them.
pub fn records(vm: &super::DesiredVm) -> Vec<(u32, IpAddr)> {
    vm.nics.iter().enumerate().filter_map(|(k, n)| Some((k as u32, n.address.as_ref()?.ip))).collect()
}

/// The desired state with the addresses of this factory's existing VMs kept: a NIC that
/// is not given an `address` keeps the one its domain's fabrik metadata records (see
/// [`crate::driver::libvirt::owner::render_with_addresses`]) while that is still in its
/// network's pool. Pure: the planner and the executor call it on the same live state and
/// get the same answer.
pub fn keep_live(desired: &Desired, live: &[LiveHost]) -> Desired {
    let mut out = desired.clone();
    keep_live_in(&mut out, live);
    out
}

/// [`keep_live`] in place.
pub fn keep_live_in(desired: &mut Desired, live: &[LiveHost]) {
    let mut keep: BTreeMap<NicKey, IpAddr> = BTreeMap::new();
    for (_, vm, domain) in super::marked_domains(desired, live) {
        for (k, ip) in &domain.addresses {
            keep.insert((vm.name.clone(), *k as usize), *ip);
        }
    }
    if !keep.is_empty() {
        assign(&desired.factory, &desired.ipam, &mut desired.hosts, &keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::DesiredVm;
    use crate::live::PowerState;
    use crate::spec::load::load_bytes;
    use crate::spec::source::{Sources, Syntax};

    fn ipam(subnet: &str, ranges: &[&str]) -> Ipam {
        Ipam {
            subnet: parse_subnet(subnet).unwrap(),
            gateway: None,
            dns: Vec::new(),
            ranges: ranges.iter().map(|r| parse_range(r).unwrap()).collect(),
        }
    }

    #[test]
    fn subnets_and_ranges_parse_strictly() {
        assert_eq!(parse_subnet("10.20.0.0/16").unwrap().to_string(), "10.20.0.0/16");
        assert!(parse_subnet("fd00:20::/64").is_some());
        for bad in ["10.20.0.1/16", "10.20.0.0", "10.20.0.0/33", "10.20.0.0/0", "fd00::/129", "x/8"] {
            assert_eq!(parse_subnet(bad), None, "{bad}");
        }
        assert!(parse_range("10.0.0.5-10.0.0.9").is_some());
        for bad in ["10.0.0.9-10.0.0.5", "10.0.0.5-fd00::1", "10.0.0.5", "10.0.0.5-"] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn pools_leave_out_network_and_broadcast() {
        let p = ipam("10.0.0.0/24", &[]);
        assert_eq!(p.pool_size(), 254);
        assert!(!p.in_pool("10.0.0.0".parse().unwrap()) && !p.in_pool("10.0.0.255".parse().unwrap()));
        assert_eq!(p.nth(0), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(ipam("10.0.0.0/31", &[]).pool_size(), 2);
        let r = ipam("10.0.0.0/24", &["10.0.0.10-10.0.0.11", "10.0.0.20-10.0.0.20"]);
        assert_eq!(r.pool_size(), 3);
        assert_eq!(r.nth(2), "10.0.0.20".parse::<IpAddr>().unwrap());
        assert_eq!(r.nth(3), "10.0.0.10".parse::<IpAddr>().unwrap(), "wraps");
        assert_eq!(ipam("fd00::/64", &[]).pool_size(), (1u128 << 64) - 1);
    }

    /// A built VM with two NICs on a network with a subnet, to copy.
    fn sample() -> (DesiredVm, BTreeMap<String, Ipam>) {
        let yaml = "version: 1\nfactory: ai\nhosts:\n  - { name: h, uri: \"test:///default\", numa-nodes: [{ id: 0, cpus: 0-3, memory: 8GiB }] }\ntenants:\n  - { name: acme, hosts: [h], networks: [n] }\nnetworks:\n  - { name: n, purpose: tenant, kind: bridge, tenant: acme, subnet: 10.9.0.0/24, gateway: 10.9.0.1, dns: [10.9.0.2] }\nvms:\n  - { name: v, tenant: acme, vcpus: 1, memory: 1GiB, nics: [n, n] }\n";
        let mut sources = Sources::default();
        let (_, spec, diags) = load_bytes(&mut sources, "f.yaml".into(), Syntax::Yaml, yaml.into());
        assert!(diags.is_empty(), "{diags:?}");
        let d = crate::desired::build(&spec).unwrap();
        let vm = &d.hosts[0].vms[0];
        let a = vm.nics[0].address.as_ref().expect("an allocated address");
        assert_eq!(
            (a.prefix, a.gateway, a.dns.clone()),
            (24, "10.9.0.1".parse().ok(), vec!["10.9.0.2".parse().unwrap()])
        );
        assert_ne!(vm.nics[0].address, vm.nics[1].address);
        (vm.clone(), d.ipam)
    }

    /// `vms` VMs over `networks` networks (half IPv4 /22 with two ranges, half IPv6),
    /// 4 hosts, 37 tenants; each VM has a NIC on network `i % networks` and one on the
    /// next.
    fn fleet(vms: usize, networks: usize) -> (Vec<DesiredHost>, BTreeMap<String, Ipam>) {
        let (base, _) = sample();
        let mut ipam = BTreeMap::new();
        for n in 0..networks {
            let p = if n % 2 == 0 {
                let (a, b) = (n / 256, n % 256);
                let mut p = ipam_of(&format!("10.{a}.{b}.0/24"), &[]);
                p.subnet = parse_subnet(&format!("10.{}.{}.0/22", 100 + n / 64, (n % 64) * 4)).unwrap();
                let s = p.subnet.base.to_string();
                let pre: Vec<&str> = s.split('.').collect();
                let third: u8 = pre[2].parse().unwrap();
                p.ranges = vec![
                    parse_range(&format!("{}.{}.{}.10-{}.{}.{}.250", pre[0], pre[1], third, pre[0], pre[1], third))
                        .unwrap(),
                    parse_range(&format!(
                        "{}.{}.{}.0-{}.{}.{}.255",
                        pre[0],
                        pre[1],
                        third + 1,
                        pre[0],
                        pre[1],
                        third + 2
                    ))
                    .unwrap(),
                ];
                p.gateway = Some(format!("{}.{}.{}.10", pre[0], pre[1], third).parse().unwrap());
                p
            } else {
                ipam_of(&format!("fd00:{n:x}::/64"), &[])
            };
            ipam.insert(format!("net-{n}"), p);
        }
        let hosts = (0..4)
            .map(|h| DesiredHost {
                name: format!("h{h}"),
                vms: (0..vms / 4)
                    .map(|i| {
                        let i = h * (vms / 4) + i;
                        let mut vm = base.clone();
                        vm.name = format!("vm-{i}");
                        vm.tenant = format!("t{}", i % 37);
                        vm.nics[0].network = format!("net-{}", i % networks);
                        vm.nics[1].network = format!("net-{}", (i + 1) % networks);
                        vm.nics.iter_mut().for_each(|n| n.address = None);
                        vm
                    })
                    .collect(),
                ..DesiredHost::default()
            })
            .collect();
        (hosts, ipam)
    }

    fn ipam_of(subnet: &str, ranges: &[&str]) -> Ipam {
        ipam(subnet, ranges)
    }

    fn addresses(hosts: &[DesiredHost]) -> BTreeMap<NicKey, IpAddr> {
        hosts
            .iter()
            .flat_map(|h| &h.vms)
            .flat_map(|vm| {
                vm.nics.iter().enumerate().filter_map(|(k, n)| Some(((vm.name.clone(), k), n.address.as_ref()?.ip)))
            })
            .collect()
    }

    fn check_distinct_in_pool(hosts: &[DesiredHost], ipam: &BTreeMap<String, Ipam>) {
        let mut seen = BTreeSet::new();
        for vm in hosts.iter().flat_map(|h| &h.vms) {
            for n in &vm.nics {
                let a = n.address.as_ref().unwrap_or_else(|| panic!("{} has no address", vm.name));
                let pool = &ipam[&n.network];
                assert!(
                    pool.in_pool(a.ip) && pool.gateway != Some(a.ip),
                    "{} {a} not in {}'s pool",
                    vm.name,
                    n.network
                );
                assert!(seen.insert((n.network.clone(), a.ip)), "{a} given twice on {}", n.network);
            }
        }
    }

    #[test]
    fn ten_thousand_vms_on_fifty_networks_get_distinct_addresses_that_never_move() {
        let (mut hosts, ipam) = fleet(10_000, 50);
        assign("ai", &ipam, &mut hosts, &BTreeMap::new());
        check_distinct_in_pool(&hosts, &ipam);
        let before = addresses(&hosts);
        assert_eq!(before.len(), 20_000);

        // What the domains record is what the next run keeps: add VMs whose hashes land
        // anywhere, and remove others; no existing VM's address moves.
        let mut changed = hosts.clone();
        for h in &mut changed {
            h.vms.retain(|vm| !vm.name.ends_with('7'));
        }
        for i in 0..400 {
            let mut vm = hosts[0].vms[0].clone();
            vm.name = format!("new-{i}");
            vm.nics[0].network = format!("net-{}", i % 50);
            vm.nics.iter_mut().for_each(|n| n.address = None);
            changed[i % 4].vms.push(vm);
        }
        assign("ai", &ipam, &mut changed, &before);
        check_distinct_in_pool(&changed, &ipam);
        let after = addresses(&changed);
        let mut kept = 0;
        for (k, ip) in &after {
            if let Some(old) = before.get(k) {
                assert_eq!(old, ip, "{k:?} moved");
                kept += 1;
            }
        }
        assert_eq!(kept, 20_000 - 2 * 1_000, "every remaining VM kept both addresses");

        // Without the records, a pure function of the files: the same files give the
        // same addresses.
        let mut again = hosts.clone();
        again.iter_mut().flat_map(|h| &mut h.vms).flat_map(|v| &mut v.nics).for_each(|n| n.address = None);
        assign("ai", &ipam, &mut again, &BTreeMap::new());
        assert_eq!(addresses(&again), before);
    }

    #[test]
    fn declared_addresses_win_and_a_kept_one_outside_the_pool_is_replaced() {
        let (mut hosts, ipam) = fleet(8, 1);
        let p = &ipam["net-0"];
        let first = p.nth(start("ai", "t0", "vm-0", 0, "net-0", p.pool_size()));
        hosts[0].vms[1].nics[0].address =
            Some(Box::new(NicAddress { ip: first, prefix: 0, gateway: None, dns: vec![], declared: true }));
        let outside: IpAddr = "192.168.1.1".parse().unwrap();
        let keep = BTreeMap::from([(("vm-3".to_string(), 0), outside)]);
        assign("ai", &ipam, &mut hosts, &keep);
        let vm1 = &hosts[0].vms[1].nics[0].address.as_ref().unwrap();
        assert_eq!((vm1.ip, vm1.prefix, vm1.declared), (first, 22, true));
        assert_ne!(hosts[0].vms[0].nics[0].address.as_ref().unwrap().ip, first, "probed on");
        assert_ne!(hosts[1].vms[1].nics[0].address.as_ref().unwrap().ip, outside);
        check_distinct_in_pool(&hosts, &ipam);
    }

    #[test]
    fn a_domain_keeps_the_address_its_metadata_records() {
        let (mut hosts, ipam) = fleet(4, 1);
        assign("ai", &ipam, &mut hosts, &BTreeMap::new());
        let desired = Desired { factory: "ai".into(), hosts, ipam };
        let mut old = desired.hosts[0].vms[0].clone();
        let recorded: IpAddr = "10.100.1.77".parse().unwrap();
        old.nics[0].address.as_mut().unwrap().ip = recorded;
        let xml = crate::render::domain("ai", &desired.hosts[0], &old);
        let domain = crate::driver::libvirt::xml::domain(&xml, PowerState::Running, true).unwrap();
        assert_eq!(domain.addresses[0], (0, recorded));
        let live = LiveHost { name: "h0".into(), domains: vec![domain.clone()], ..LiveHost::default() };
        let kept = keep_live(&desired, &[live]);
        assert_eq!(kept.hosts[0].vms[0].nics[0].address.as_ref().unwrap().ip, recorded);
        // Another factory's domain of the name gives nothing.
        let mut foreign = domain;
        foreign.owner.as_mut().unwrap().factory = "other".into();
        let live = LiveHost { name: "h0".into(), domains: vec![foreign], ..LiveHost::default() };
        assert_eq!(keep_live(&desired, &[live]), desired);
    }
}
