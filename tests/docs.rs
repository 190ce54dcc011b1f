//! Generated documentation stays in step with the code. `FABRIK_BLESS=1 cargo test --test
//! docs` rewrites the files after a deliberate change.

fn check(path: &str, generated: String) {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("FABRIK_BLESS").is_some() {
        std::fs::write(&full, &generated).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&full).unwrap_or_default();
    assert!(on_disk == generated, "{path} is out of date: run `FABRIK_BLESS=1 cargo test --test docs`");
}

#[test]
fn rules_doc_is_current() {
    check("docs/rules.md", fabrik::check::rules::rules_markdown());
}

#[test]
fn diagnostics_doc_is_current() {
    check("docs/diagnostics.md", fabrik::check::rules::diagnostics_markdown());
}

#[test]
fn every_code_in_the_source_is_registered() {
    let mut missing = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.ends_with("check/rules.rs") {
                continue; // the registry itself
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, _) in text.match_indices("\"fabrik::") {
                let code: String = text[i + 1..].chars().take_while(|c| *c != '"').collect();
                if code.matches("::").count() == 2 && fabrik::check::rules::find(&code).is_none() {
                    missing.push(format!("{code} ({})", path.display()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "codes without an entry in src/check/rules.rs: {missing:?}");
}

#[test]
fn every_limit_is_documented_with_its_value() {
    use fabrik::driver::agent::line;
    use fabrik::spec::{kdl, load, yaml};
    let mib = |b: u64| format!("{} MiB", b >> 20);
    let kib = |b: u64| format!("{} KiB", b >> 10);
    let count = |n: usize| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    let limits = [
        ("spec::load::FILE_BYTES_MAX", mib(load::FILE_BYTES_MAX)),
        ("spec::load::FACTORY_BYTES_MAX", mib(load::FACTORY_BYTES_MAX)),
        ("spec::yaml::NESTING_MAX", format!("{} levels", yaml::NESTING_MAX)),
        ("spec::yaml::ALIAS_COPY_NODES_MAX", count(yaml::ALIAS_COPY_NODES_MAX)),
        ("spec::yaml::ALIAS_COPY_BYTES_MAX", mib(yaml::ALIAS_COPY_BYTES_MAX as u64)),
        ("spec::kdl::budget::NESTING_MAX", format!("{} levels", kdl::NESTING_MAX)),
        ("spec::kdl::budget::COMMENT_STEPS_MAX", count(kdl::COMMENT_STEPS_MAX)),
        ("spec::kdl::PARSE_STACK_BYTES", mib(kdl::PARSE_STACK_BYTES as u64)),
        ("driver::agent::line::REQUEST_LINE_BYTES_MAX", kib(line::REQUEST_LINE_BYTES_MAX as u64)),
        ("driver::agent::line::RESPONSE_LINE_BYTES_MAX", mib(line::RESPONSE_LINE_BYTES_MAX as u64)),
        ("sim::STATE_LOCK_WAIT", format!("{} s", fabrik::sim::STATE_LOCK_WAIT.as_secs())),
    ];
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/limits.md")).unwrap();
    for (name, value) in limits {
        let row = format!("| `{name}` | {value}");
        assert!(doc.contains(&row), "docs/limits.md lacks `{row}`");
    }
}
