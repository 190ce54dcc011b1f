//! The netlink driver against the real kernel, each test in a fresh network namespace:
//! create, read back, change and delete bridges, veth pairs, VXLAN with flood remotes,
//! VLAN and macvlan (where the kernel has them), and the errors of each.

mod netlink_support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use fabrik::driver::netlink::NetlinkDriver;
use fabrik::driver::{ErrorKind, LinkSpec, Links};
use fabrik::live::{LinkKind, LiveLink};
use netlink_support::{Netns, optional_missing, required_missing, say};

fn spec(name: &str, kind: LinkKind) -> LinkSpec {
    LinkSpec { name: name.into(), kind, mtu: None, master: None, alias: None }
}

fn find(driver: &mut NetlinkDriver, name: &str) -> Option<LiveLink> {
    driver.links().unwrap().into_iter().find(|l| l.name == name)
}

fn link(driver: &mut NetlinkDriver, name: &str) -> LiveLink {
    find(driver, name).unwrap_or_else(|| panic!("link `{name}` is not listed"))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A namespace and a driver inside it; `None` when this machine cannot make one.
fn host(tag: &str) -> Option<(Netns, NetlinkDriver)> {
    let netns = Netns::new(tag)?;
    let driver = NetlinkDriver::in_netns(&netns.name).expect("a driver in a fresh namespace");
    Some((netns, driver))
}

/// Creates a link the issue requires the kernel to have; reports and returns false when
/// the kernel says it has none.
fn create_required(driver: &mut NetlinkDriver, spec: &LinkSpec, capability: &str) -> bool {
    match driver.create_link(spec) {
        Ok(()) => true,
        Err(e) if e.kind == ErrorKind::Unsupported => {
            required_missing(capability, &e.message);
            false
        }
        Err(e) => panic!("creating `{}`: {e:?}", spec.name),
    }
}

#[test]
fn bridges_and_veth_pairs_round_trip() {
    let Some((_netns, mut driver)) = host("bridge") else { return };
    let bridge =
        LinkSpec { mtu: Some(9000), alias: Some("fabrik:net:acme".into()), ..spec("br-acme", LinkKind::Bridge) };
    if !create_required(&mut driver, &bridge, "bridges (CONFIG_BRIDGE)") {
        return;
    }
    let veth = LinkSpec {
        mtu: Some(9000),
        master: Some("br-acme".into()),
        alias: Some("fabrik:link:ve-a".into()),
        ..spec("ve-a", LinkKind::Veth { peer: Some("ve-b".into()) })
    };
    if !create_required(&mut driver, &veth, "veth pairs (CONFIG_VETH)") {
        return;
    }

    let br = link(&mut driver, "br-acme");
    assert_eq!(br.kind, LinkKind::Bridge);
    assert_eq!(br.alias.as_deref(), Some("fabrik:net:acme"));
    assert!(!br.up);
    assert_eq!(br.sriov_vfs, None);
    // The bridge keeps the MTU it was created with even after a port joins.
    assert_eq!(br.mtu, 9000);
    let a = link(&mut driver, "ve-a");
    assert_eq!(a.kind, LinkKind::Veth { peer: Some("ve-b".into()) });
    assert_eq!((a.mtu, a.master.as_deref(), a.alias.as_deref()), (9000, Some("br-acme"), Some("fabrik:link:ve-a")));
    let b = link(&mut driver, "ve-b");
    assert_eq!((b.kind, b.mtu, b.master, b.alias), (LinkKind::Veth { peer: Some("ve-a".into()) }, 9000, None, None));
    // What `ip` sees agrees.
    let shown = _netns.exec(&["ip", "-d", "link", "show", "ve-a"]);
    assert!(shown.contains("master br-acme") && shown.contains("alias fabrik:link:ve-a"), "{shown}");

    driver.set_link("ve-a", Some(1500), Some(true), Some(None)).unwrap();
    driver.set_link("br-acme", None, Some(true), None).unwrap();
    let a = link(&mut driver, "ve-a");
    assert_eq!((a.mtu, a.up, a.master), (1500, true, None));
    assert!(link(&mut driver, "br-acme").up);
    driver.set_link("ve-b", None, None, Some(Some("br-acme".into()))).unwrap();
    assert_eq!(link(&mut driver, "ve-b").master.as_deref(), Some("br-acme"));

    // Deleting one end of a pair deletes both.
    driver.delete_link("ve-b").unwrap();
    assert!(find(&mut driver, "ve-a").is_none());
    driver.delete_link("br-acme").unwrap();
    let left: Vec<String> = driver.links().unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(left, ["lo"]);
    assert_eq!(link(&mut driver, "lo").kind, LinkKind::Other { kind: "loopback".into() });
}

#[test]
fn vxlan_reads_back_with_its_flood_remotes() {
    let Some((_netns, mut driver)) = host("vxlan") else { return };
    if !create_required(&mut driver, &spec("underlay", LinkKind::Veth { peer: Some("underlay-b".into()) }), "veth") {
        return;
    }
    let vxlan = LinkKind::Vxlan {
        vni: 10100,
        local: Some(ip("192.0.2.1")),
        port: 4789,
        parent: Some("underlay".into()),
        remotes: vec![ip("192.0.2.3"), ip("192.0.2.2")],
    };
    let created =
        LinkSpec { mtu: Some(1450), alias: Some("fabrik:link:vx-acme".into()), ..spec("vx-acme", vxlan.clone()) };
    if !create_required(&mut driver, &created, "VXLAN (CONFIG_VXLAN)") {
        return;
    }
    let vx = link(&mut driver, "vx-acme");
    let LinkKind::Vxlan { vni, local, port, parent, remotes } = &vx.kind else { panic!("{vx:?}") };
    assert_eq!((*vni, *local, *port, parent.as_deref()), (10100, Some(ip("192.0.2.1")), 4789, Some("underlay")));
    assert_eq!(*remotes, vec![ip("192.0.2.2"), ip("192.0.2.3")]);
    assert_eq!((vx.mtu, vx.alias.as_deref()), (1450, Some("fabrik:link:vx-acme")));

    driver.add_fdb("vx-acme", ip("192.0.2.4")).unwrap();
    driver.del_fdb("vx-acme", ip("192.0.2.2")).unwrap();
    let err = driver.add_fdb("vx-acme", ip("192.0.2.3")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Exists, "{err:?}");
    let err = driver.del_fdb("vx-acme", ip("192.0.2.9")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err:?}");
    let err = driver.add_fdb("underlay", ip("192.0.2.9")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsupported, "{err:?}");
    assert_eq!(driver.add_fdb("vx-none", ip("192.0.2.9")).unwrap_err().kind, ErrorKind::NotFound);
    let LinkKind::Vxlan { remotes, .. } = link(&mut driver, "vx-acme").kind else { unreachable!() };
    assert_eq!(remotes, vec![ip("192.0.2.3"), ip("192.0.2.4")]);
    let fdb = _netns.exec(&["bridge", "fdb", "show", "dev", "vx-acme"]);
    assert!(fdb.contains("dst 192.0.2.4") && !fdb.contains("dst 192.0.2.2"), "{fdb}");

    // The kernel refuses a second VXLAN with the same VNI and port.
    let err = driver.create_link(&spec("vx-twin", vxlan)).unwrap_err();
    assert_eq!((err.kind, err.code.as_deref()), (ErrorKind::Exists, Some("EEXIST")), "{err:?}");
    // An IPv6 VXLAN without a parent, on the kernel's default port.
    let v6 = LinkKind::Vxlan { vni: 7, local: Some(ip("2001:db8::1")), port: 0, parent: None, remotes: vec![] };
    driver.create_link(&spec("vx6", v6)).unwrap();
    let LinkKind::Vxlan { local, port, parent, .. } = link(&mut driver, "vx6").kind else { unreachable!() };
    assert_eq!((local, port, parent), (Some(ip("2001:db8::1")), 8472, None));

    // Deleting the underlay takes the VXLAN on it along.
    driver.delete_link("underlay").unwrap();
    assert!(find(&mut driver, "vx-acme").is_none());
}

#[test]
fn vlan_where_the_kernel_has_it() {
    let Some((_netns, mut driver)) = host("vlan") else { return };
    driver.create_link(&spec("trunk", LinkKind::Veth { peer: Some("trunk-b".into()) })).unwrap();
    let vlan = LinkSpec {
        alias: Some("fabrik:link:trunk.100".into()),
        ..spec("trunk.100", LinkKind::Vlan { id: 100, parent: "trunk".into() })
    };
    match driver.create_link(&vlan) {
        Err(e) if e.kind == ErrorKind::Unsupported => {
            assert!(e.message.contains("802.1Q"), "the error names the kernel feature: {e:?}");
            optional_missing("802.1Q VLAN links (CONFIG_VLAN_8021Q)", &e.message);
            return;
        }
        result => result.unwrap(),
    }
    let v = link(&mut driver, "trunk.100");
    assert_eq!(v.kind, LinkKind::Vlan { id: 100, parent: "trunk".into() });
    assert_eq!(v.alias.as_deref(), Some("fabrik:link:trunk.100"));
    let err = driver.create_link(&spec("again.100", LinkKind::Vlan { id: 100, parent: "trunk".into() })).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Exists, "{err:?}");
    driver.delete_link("trunk").unwrap();
    assert!(find(&mut driver, "trunk.100").is_none());
    say("802.1Q VLAN links: supported by this kernel and tested");
}

#[test]
fn macvlan_where_the_kernel_has_it() {
    let Some((_netns, mut driver)) = host("macvlan") else { return };
    let parent = LinkSpec { mtu: Some(4000), ..spec("lower", LinkKind::Veth { peer: Some("lower-b".into()) }) };
    driver.create_link(&parent).unwrap();
    match driver.create_link(&spec("mv0", LinkKind::Macvlan { parent: "lower".into() })) {
        Err(e) if e.kind == ErrorKind::Unsupported => {
            optional_missing("macvlan links (CONFIG_MACVLAN)", &e.message);
            return;
        }
        result => result.unwrap(),
    }
    let mv = link(&mut driver, "mv0");
    assert_eq!((mv.kind, mv.mtu), (LinkKind::Macvlan { parent: "lower".into() }, 4000));
    let err = driver.set_link("mv0", Some(4001), None, None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err:?}");
    driver.delete_link("lower").unwrap();
    assert!(find(&mut driver, "mv0").is_none());
}

#[test]
fn failures_map_to_error_kinds() {
    let Some((_netns, mut driver)) = host("errors") else { return };
    driver.create_link(&spec("br0", LinkKind::Bridge)).unwrap();
    let exists = driver.create_link(&spec("br0", LinkKind::Bridge)).unwrap_err();
    assert_eq!((exists.kind, exists.code.as_deref()), (ErrorKind::Exists, Some("EEXIST")), "{exists:?}");
    assert_eq!(driver.delete_link("br9").unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(driver.set_link("br9", Some(1400), None, None).unwrap_err().kind, ErrorKind::NotFound);
    let no_master = LinkSpec { master: Some("br9".into()), ..spec("br1", LinkKind::Bridge) };
    let err = driver.create_link(&no_master).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err:?}");
    assert!(find(&mut driver, "br1").is_none(), "a failed create leaves nothing behind");
    let no_parent = spec("mv9", LinkKind::Macvlan { parent: "eth9".into() });
    assert_eq!(driver.create_link(&no_parent).unwrap_err().kind, ErrorKind::NotFound);
    // A bridge cannot be a bridge's port; the kernel says why.
    driver.create_link(&spec("br2", LinkKind::Bridge)).unwrap();
    let err = driver.set_link("br2", None, None, Some(Some("br0".into()))).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err:?}");
    assert!(err.message.contains("enslave a bridge"), "the kernel's extended ack is kept: {err:?}");
    let err = driver.set_link("br0", Some(20), None, None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err:?}");
    assert_eq!(driver.delete_link("lo").unwrap_err().kind, ErrorKind::Unsupported);
    let err = driver.create_link(&spec("name-longer-than-15", LinkKind::Bridge)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err:?}");
    // A kind the kernel lacks names the feature; this kernel has no dummy links.
    match driver.create_link(&spec("d0", LinkKind::Other { kind: "dummy".into() })) {
        Err(e) => assert_eq!(e.kind, ErrorKind::Unsupported, "{e:?}"),
        Ok(()) => say("dummy links: supported by this kernel"),
    }
    let missing = NetlinkDriver::in_netns("fabrik-no-such-namespace").err().unwrap();
    assert_eq!(missing.kind, ErrorKind::NotFound);
}

#[test]
fn namespaces_are_kept_apart() {
    let Some((_a, mut a)) = host("apart-a") else { return };
    let Some((_b, mut b)) = host("apart-b") else { return };
    a.create_link(&spec("br-a", LinkKind::Bridge)).unwrap();
    b.create_link(&spec("br-a", LinkKind::Bridge)).unwrap();
    b.create_link(&spec("br-b", LinkKind::Bridge)).unwrap();
    let names = |d: &mut NetlinkDriver| d.links().unwrap().into_iter().map(|l| l.name).collect::<Vec<_>>();
    assert_eq!(names(&mut a), ["br-a", "lo"]);
    assert_eq!(names(&mut b), ["br-a", "br-b", "lo"]);
    // Nothing leaked into the test process's own namespace.
    let mut here = NetlinkDriver::local().unwrap();
    assert!(!names(&mut here).iter().any(|n| n == "br-b"));
}

#[test]
fn sriov_vf_counts_come_from_sysfs() {
    // A made-up sysfs tree gives the loopback device an SR-IOV capability.
    let root = tempfile::tempdir().unwrap();
    let device = root.path().join("class/net/lo/device");
    std::fs::create_dir_all(&device).unwrap();
    std::fs::write(device.join("sriov_numvfs"), "0\n").unwrap();
    std::fs::write(device.join("sriov_totalvfs"), "8\n").unwrap();
    let mut driver = NetlinkDriver::local_with_sysfs(root.path()).unwrap();
    driver.set_sriov_vfs("lo", 4).unwrap();
    assert_eq!(link(&mut driver, "lo").sriov_vfs, Some(4));
    assert_eq!(driver.set_sriov_vfs("lo", 2).unwrap_err().kind, ErrorKind::Refused);
}

#[test]
fn hugepages_are_read_per_numa_node() {
    let mut driver = NetlinkDriver::local().unwrap();
    let pools = driver.hugepages().unwrap();
    assert!(pools.iter().all(|p| p.free <= p.total), "{pools:?}");
    say(&format!("hugepage pools on this machine: {pools:?}"));
}

/// Lists a namespace holding 200 links (100 veth pairs, half of them in bridges, and VXLAN
/// with remotes) and reports how long one listing takes.
#[test]
fn listing_200_links_is_fast() {
    let Some((_netns, mut driver)) = host("scale") else { return };
    let started = Instant::now();
    for i in 0..4 {
        driver.create_link(&spec(&format!("br{i}"), LinkKind::Bridge)).unwrap();
    }
    for i in 0..4 {
        let vxlan = LinkKind::Vxlan {
            vni: 100 + i,
            local: None,
            port: 4789,
            parent: None,
            remotes: vec![ip("192.0.2.2"), ip("192.0.2.3")],
        };
        driver.create_link(&spec(&format!("vx{i}"), vxlan)).unwrap();
    }
    for i in 0..96 {
        let master = (i % 2 == 0).then(|| format!("br{}", i % 4));
        let veth = LinkSpec { master, ..spec(&format!("ve{i}a"), LinkKind::Veth { peer: Some(format!("ve{i}b")) }) };
        driver.create_link(&veth).unwrap();
    }
    let created = started.elapsed();
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let links = driver.links().unwrap();
            assert_eq!(links.len(), 201, "200 links and lo");
            t.elapsed()
        })
        .collect();
    times.sort();
    say(&format!(
        "netlink: created 200 links in {created:.2?}; listing 201 links (with FDB and sysfs): median {:.2?}, max {:.2?} over 20",
        times[10], times[19]
    ));
}
