use std::path::Path;

use super::Graph;
use crate::desired::{ResourceId, build};

fn example() -> Graph {
    let v = crate::check::validate(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory")));
    Graph::of(&build(&v.spec).unwrap()).unwrap()
}

fn id(text: &str) -> ResourceId {
    ResourceId::parse(text).unwrap()
}

#[test]
fn creation_order_puts_every_resource_after_what_it_needs() {
    let g = example();
    let order = g.creation_order();
    assert_eq!(order.len(), g.len());
    let pos = |i: &ResourceId| order.iter().position(|x| *x == i).unwrap();
    for (a, b) in g.edges() {
        assert!(pos(b) < pos(a), "{b} before {a}");
    }
    let before = |a: &str, b: &str| assert!(pos(&id(a)) < pos(&id(b)), "{a} before {b}");
    before("gpu:gpu02/0000:1b:00.0", "mig:gpu02/0000:1b:00.0/3g.71gb@4");
    before("mig:gpu02/0000:1b:00.0/3g.71gb@4", "vm:gpu02/globex-vllm-small");
    before("link:gpu02/br-globex", "link:gpu02/vx10002");
    before("link:gpu02/br-globex", "net:gpu02/globex-net");
    before("net:gpu02/globex-net", "vm:gpu02/globex-embed");
    before("pool:gpu02/images", "volume:gpu02/images/ubuntu-24.04");
    before("volume:gpu02/images/ubuntu-24.04", "volume:gpu02/vms/globex-embed-root");
    before("hugepages:gpu02/node0-1G", "vm:gpu02/globex-embed");
    assert_eq!(g.dependencies(&id("link:gpu02/vx10002")), [&id("link:gpu02/br-globex")]);
    let mut del = g.deletion_order();
    del.reverse();
    assert_eq!(del, order);
    assert_eq!(order, example().creation_order(), "the same every run");
}

#[test]
fn levels_hold_resources_independent_of_each_other() {
    let g = example();
    let levels = g.levels();
    assert_eq!(levels.iter().map(Vec::len).sum::<usize>(), g.len());
    for level in &levels {
        for a in level {
            for b in g.dependencies(a) {
                assert!(!level.contains(&b), "{a} needs {b} in the same level");
            }
        }
    }
    assert!(levels[0].contains(&&id("gpu:gpu01/0000:1b:00.0")));
}

#[test]
fn a_cycle_is_a_diagnostic() {
    let (a, b, c) = (id("link:h/a"), id("link:h/b"), id("net:h/n"));
    let edges = vec![(a.clone(), b.clone()), (b.clone(), a.clone()), (c.clone(), a.clone())];
    let diags = Graph::from_edges(vec![a, b, c], edges).unwrap_err();
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].code, "fabrik::graph::cycle");
    assert_eq!(diags[0].message, "dependency cycle: link:h/a → link:h/b → link:h/a");
}

#[test]
fn an_edge_to_nothing_is_a_diagnostic() {
    let vm = id("vm:h/a");
    let diags = Graph::from_edges(vec![vm.clone()], vec![(vm, id("net:h/missing"))]).unwrap_err();
    assert_eq!(diags[0].code, "fabrik::graph::missing-dependency");
}
