//! `fabrik graph` on the example factory: the dot output a person reads, and JSON.

use std::path::Path;

use fabrik::cli::graph::{GraphFormat, graph_text};

fn example() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory"))
}

#[test]
fn dot_of_the_example() {
    let dot = graph_text(example(), GraphFormat::Dot).unwrap();
    insta::assert_snapshot!(dot);
}

#[test]
fn json_lists_nodes_in_creation_order() {
    let json: serde_json::Value = serde_json::from_str(&graph_text(example(), GraphFormat::Json).unwrap()).unwrap();
    let nodes = json["nodes"].as_array().unwrap();
    let pos = |s: &str| nodes.iter().position(|n| n == s).unwrap();
    assert!(pos("gpu:gpu02/0000:1b:00.0") < pos("mig:gpu02/0000:1b:00.0/2g.35gb@0"));
    assert!(pos("mig:gpu02/0000:1b:00.0/2g.35gb@0") < pos("vm:gpu02/globex-embed"));
    assert!(json["levels"].as_array().unwrap().len() >= 3);
}
