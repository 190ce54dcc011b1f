//! `fabrik plan --sim examples/ai-factory` against fresh twins: every resource once, in
//! dependency order, exit 2; snapshots of the human, JSON and Markdown output.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

fn example() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ai-factory"))
}

fn plan(state: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .arg("plan")
        .arg(example())
        .arg("--sim")
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn fresh_twins_human() {
    let state = tempfile::tempdir().unwrap();
    let o = plan(state.path(), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    insta::assert_snapshot!("fresh_twins_human", stdout(&o));
}

#[test]
fn fresh_twins_markdown() {
    let state = tempfile::tempdir().unwrap();
    let o = plan(state.path(), &["--format", "markdown"]);
    assert_eq!(o.status.code(), Some(2));
    insta::assert_snapshot!("fresh_twins_markdown", stdout(&o));
}

#[test]
fn fresh_twins_json_lists_every_resource_once_in_dependency_order() {
    let state = tempfile::tempdir().unwrap();
    let o = plan(state.path(), &["--format", "json"]);
    assert_eq!(o.status.code(), Some(2));
    let mut json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    // One part per host, each with its own actions.
    let hosts = json["hosts"].as_array().unwrap();
    let per_host: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| h["actions"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect())
        .collect();
    for (h, ids) in hosts.iter().zip(&per_host) {
        let host = h["host"].as_str().unwrap();
        assert!(ids.iter().all(|id| id.contains(&format!(":{host}/"))), "{host} holds another host's action: {ids:?}");
    }
    let ids: Vec<String> = per_host.iter().flatten().cloned().collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a resource is listed twice");

    // Dependency order on each host: the graph's creation order.
    let graph = fabrik::cli::graph::graph_text(example(), fabrik::cli::graph::GraphFormat::Json).unwrap();
    let graph: serde_json::Value = serde_json::from_str(&graph).unwrap();
    let order: Vec<&str> = graph["nodes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    for ids in &per_host {
        let positions: Vec<usize> = ids.iter().map(|id| order.iter().position(|n| n == id).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "actions out of dependency order: {ids:?}");
    }
    // Everything in the graph is planned, except what the fresh twins already have
    // right: time-sliced GPUs with MIG off.
    let missing: Vec<&&str> = order.iter().filter(|n| !unique.contains(&n.to_string())).collect();
    assert_eq!(missing, [&"gpu:gpu02/0000:61:00.0"]);

    // Diffs are long and covered by the renderer's tests; the rest is the document.
    for h in json["hosts"].as_array_mut().unwrap() {
        for a in h["actions"].as_array_mut().unwrap() {
            if let Some(d) = a.get_mut("diff") {
                *d = serde_json::Value::String("[diff]".into());
            }
        }
    }
    insta::assert_snapshot!("fresh_twins_json", serde_json::to_string_pretty(&json).unwrap());
}

#[test]
fn saved_plan_matches_json_and_plan_does_not_change_the_twins() {
    let state = tempfile::tempdir().unwrap();
    let out = state.path().join("plan.json");
    let o = plan(state.path(), &["--format", "json", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    // The saved plan is the printed one, plus where it was made from (for `fabrik apply
    // plan.json`).
    let mut saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let origin = saved.as_object_mut().unwrap().remove("origin").expect("a saved plan records its origin");
    assert_eq!(origin["path"], example().display().to_string());
    assert_eq!(origin["twins"], state.path().display().to_string());
    assert_eq!(saved, serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap());
    let again = plan(state.path(), &["--format", "json"]);
    assert_eq!(stdout(&again), stdout(&o));
}

#[test]
fn a_malformed_target_is_a_usage_error() {
    let state = tempfile::tempdir().unwrap();
    let o = plan(state.path(), &["--target", "nope"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a resource id"));
}

#[test]
fn targeting_on_the_command_line() {
    let state = tempfile::tempdir().unwrap();
    let o = plan(state.path(), &["--target", "vm:fe01/acme-login", "--diff"]);
    assert_eq!(o.status.code(), Some(2));
    insta::assert_snapshot!("target_acme_login_diff", stdout(&o));
}
