//! The factory schema (`schema/fabrik.schema.json`) checked with a real JSON Schema
//! validator, the way an editor or a CI step uses it: every YAML example is valid, and
//! every fixture in `fixtures/schema-invalid/` is invalid at the place its
//! `# error at:` line names — and fabrik itself refuses it too, so the schema is never
//! stricter than fabrik.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("schema/fabrik.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::meta::validate(&schema).expect("a valid draft 2020-12 schema");
    jsonschema::options().should_validate_formats(true).build(&schema).expect("the schema compiles")
}

/// A YAML file as the JSON an editor's schema check sees.
fn as_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::to_value(yaml).unwrap()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
}

#[test]
fn every_yaml_example_is_valid() {
    let v = validator();
    let mut files = Vec::new();
    yaml_files(&root().join("examples"), &mut files);
    assert!(files.len() >= 5, "{files:?}");
    for f in files {
        let doc = as_json(&f);
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{}:\n{}", f.display(), errors.join("\n"));
    }
}

#[test]
fn every_invalid_fixture_is_invalid_where_it_says() {
    let v = validator();
    let mut files = Vec::new();
    yaml_files(&root().join("fixtures/schema-invalid"), &mut files);
    assert!(files.len() >= 10, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let at = text
            .lines()
            .find_map(|l| l.strip_prefix("# error at: "))
            .unwrap_or_else(|| panic!("{} has no `# error at:` line", f.display()));
        let doc = as_json(&f);
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.instance_path().to_string()).collect();
        assert!(errors.iter().any(|p| p == at), "{}: expected an error at {at}, got {errors:?}", f.display());
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_fabrik"))
            .args(["validate", f.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}: fabrik accepts what the schema refuses", f.display());
    }
}

#[test]
fn fixing_the_fixture_makes_it_valid() {
    // The fixtures differ from a valid file by their one mistake: mend two of them and
    // they pass, so the schema is not refusing them for something else.
    let v = validator();
    let read = |name: &str| std::fs::read_to_string(root().join("fixtures/schema-invalid").join(name)).unwrap();
    let to_json = |text: &str| serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(text).unwrap()).unwrap();
    let mended = read("bridge-too-long.yaml").replace("br-demo-0123456789", "br-demo");
    assert!(v.is_valid(&to_json(&mended)), "{mended}");
    let mended = read("bridge-with-vni.yaml").replace("kind: bridge", "kind: vxlan");
    assert!(v.is_valid(&to_json(&mended)), "{mended}");
}

#[test]
fn editors_get_help_not_regexes() {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("schema/fabrik.schema.json")).unwrap()).unwrap();
    let vm = &schema["$defs"]["Vm"]["properties"];
    assert!(vm["name"]["patternErrorMessage"].as_str().is_some_and(|m| m.contains("letters, digits")));
    assert!(vm["memory"]["markdownDescription"].as_str().is_some_and(|m| m.contains("128GiB")));
    let bridge = &schema["$defs"]["Network"]["properties"]["bridge"];
    assert_eq!(bridge["maxLength"], 15);
}
