//! The README's language example is valid, and its YAML and KDL halves say the same thing.

fn snippet(readme: &str, fence: &str, starts: &str) -> String {
    let mut rest = readme;
    while let Some(i) = rest.find(fence) {
        let body = &rest[i + fence.len()..];
        let end = body.find("```").expect("closed fence");
        if body[..end].starts_with(starts) {
            return body[..end].to_string();
        }
        rest = &body[end..];
    }
    panic!("README has no {fence} block starting with {starts:?}");
}

fn validate(name: &str, text: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let v = fabrik::check::validate(&path);
    let rendered: Vec<String> = v
        .diags
        .iter()
        .map(|d| fabrik::diag::render::human(d, &v.sources, fabrik::diag::render::Style::Plain))
        .collect();
    assert!(v.diags.is_empty(), "README's {name} example has diagnostics:\n{}", rendered.join("\n"));
    serde_json::to_value(&v.spec).unwrap()
}

#[test]
fn readme_examples_are_valid_and_equal() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let yaml = validate("f.yaml", &snippet(&readme, "```yaml\n", "version: 1\nhosts:"));
    let kdl = validate("f.kdl", &snippet(&readme, "```kdl\n", "version 1"));
    assert_eq!(yaml, kdl);
}
