//! Checks on a decoded factory. Each module is a family of rules with stable codes;
//! all of them are pure functions of the [`Spec`].

pub mod addresses;
pub mod capacity;
pub mod declared;
pub mod devices;
pub mod endpoints;
pub mod fabric;
pub mod gpu;
pub mod hardware;
pub mod images;
pub mod isolation;
pub mod macs;
pub mod mig;
pub mod names;
pub mod numa;
pub mod params;
pub mod quota;
pub mod refs;
pub mod rules;
pub mod scope;
pub mod supply;
pub mod trust;
pub mod volumes;

use crate::diag::Diagnostic;
use crate::spec::model::Spec;

/// The rules of each expert-check family, for `fabrik explain` and `docs/rules.md`.
pub static CHECKS: &[&[rules::Rule]] = &[
    hardware::RULES,
    mig::RULES,
    numa::RULES,
    capacity::RULES,
    supply::RULES,
    quota::RULES,
    gpu::RULES,
    fabric::RULES,
    isolation::RULES,
    declared::RULES,
    devices::RULES,
    macs::RULES,
    addresses::RULES,
    params::RULES,
    endpoints::RULES,
    volumes::RULES,
    images::RULES,
    scope::RULES,
    trust::RULES,
];

/// Runs every check. The expert checks run once names are unique and references
/// resolve: a VM on an unknown host has no capacity to check, and one wrong name must
/// not cascade into a page of consequences.
pub fn run(spec: &Spec) -> Vec<Diagnostic> {
    let mut out = boundaries(spec);
    out.extend(names::check(spec));
    out.extend(refs::check(spec));
    if out.iter().any(Diagnostic::is_error) {
        return out;
    }
    hardware::check(spec, &mut out);
    mig::check(spec, &mut out);
    numa::check(spec, &mut out);
    capacity::check(spec, &mut out);
    supply::check(spec, &mut out);
    quota::check(spec, &mut out);
    gpu::check(spec, &mut out);
    fabric::check(spec, &mut out);
    isolation::check(spec, &mut out);
    declared::check(spec, &mut out);
    devices::check(spec, &mut out);
    macs::check(spec, &mut out);
    addresses::check(spec, &mut out);
    params::check(spec, &mut out);
    endpoints::check(spec, &mut out);
    volumes::check(spec, &mut out);
    images::check(spec, &mut out);
    out
}

/// The checks of what a file may declare and what the factory may make fabrik run: the
/// ones every command that reads hosts runs first, `inventory` included.
pub fn boundaries(spec: &Spec) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    scope::check(spec, &mut out);
    trust::check(spec, &mut out);
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
    validate_with(path, |_| ())
}

/// [`validate`], handing the spec to `decoded` once it decoded without errors, before
/// the checks run (`fabrik plan` starts reading the hosts' libvirt there).
pub fn validate_with(path: &std::path::Path, decoded: impl FnOnce(&Spec)) -> Validation {
    let loaded = crate::spec::load::load(path);
    let mut diags = crate::diag::Diagnostics::default();
    let decode_failed = loaded.diags.iter().any(Diagnostic::is_error);
    diags.extend(loaded.diags);
    if !decode_failed {
        decoded(&loaded.spec);
        diags.extend(run(&loaded.spec));
    }
    diags.sort();
    Validation { sources: loaded.sources, spec: loaded.spec, diags }
}
