//! Checks on a decoded factory. Each module is a family of rules with stable codes;
//! all of them are pure functions of the [`Spec`].

pub mod mig;
pub mod names;
pub mod refs;
pub mod rules;

use crate::diag::Diagnostic;
use crate::spec::model::Spec;

/// The rules of each expert-check family, for `fabrik explain` and `docs/rules.md`.
pub static CHECKS: &[&[rules::Rule]] = &[mig::RULES];

/// Runs every check. Reference checks only make sense once names are unique.
pub fn run(spec: &Spec) -> Vec<Diagnostic> {
    let mut out = names::check(spec);
    out.extend(refs::check(spec));
    mig::check(spec, &mut out);
    out
}

/// The result of loading and checking a factory.
#[derive(Debug)]
#[must_use]
pub struct Validation {
    pub sources: crate::spec::source::Sources,
    pub spec: Spec,
    pub diags: crate::diag::Diagnostics,
}

impl Validation {
    pub fn is_valid(&self) -> bool {
        !self.diags.has_errors()
    }
}

/// Loads a factory and runs every check. Checks run only on files that decoded
/// cleanly, so one typo does not cascade into a page of unknown references.
pub fn validate(path: &std::path::Path) -> Validation {
    let loaded = crate::spec::load::load(path);
    let mut diags = crate::diag::Diagnostics::default();
    let decode_failed = loaded.diags.iter().any(Diagnostic::is_error);
    diags.extend(loaded.diags);
    if !decode_failed {
        diags.extend(run(&loaded.spec));
    }
    diags.sort();
    Validation { sources: loaded.sources, spec: loaded.spec, diags }
}
