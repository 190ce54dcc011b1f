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
