//! What the libFuzzer targets share: one file through load and check, and the
//! properties every input must keep (no panic, no diagnostic pointing outside its file).

use fabrik::diag::Diagnostic;
use fabrik::spec::model::Spec;
use fabrik::spec::source::{Sources, Syntax};

/// The outcome of loading and checking one file: its sources, its spec and every
/// diagnostic, with no error left unchecked.
pub struct Checked {
    pub sources: Sources,
    pub spec: Spec,
    pub diags: Vec<Diagnostic>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.is_error())
    }
}

/// Loads one file of `syntax` and, when it loads without errors, runs every check.
/// Panics when a diagnostic points past the end of its file.
pub fn load_and_check(syntax: Syntax, bytes: &[u8]) -> Checked {
    let mut sources = Sources::default();
    let (_, spec, mut diags) = fabrik::spec::load::load_bytes(&mut sources, "f".into(), syntax, bytes.to_vec());
    if diags.iter().all(|d| !d.is_error()) {
        diags.extend(fabrik::check::run(&spec));
    }
    for d in &diags {
        for l in d.primary.iter().chain(&d.secondary) {
            let file = sources.get(l.span.file);
            assert!(l.span.start <= l.span.end, "{}: span starts after it ends", d.code);
            assert!(l.span.end as usize <= file.text.len(), "{} points past the end of its file", d.code);
        }
    }
    Checked { sources, spec, diags }
}
