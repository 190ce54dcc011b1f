//! `fabrik validate`: load and check a factory, report every diagnostic.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::{Format, exit};
use crate::check::{self, Validation};
use crate::diag::render;

pub fn run(path: &Path, format: Format) -> u8 {
    let v = check::validate(path);
    let out = match format {
        Format::Human => {
            let _ = std::io::stderr().write_all(human(&v, path, super::style_for_stderr()).as_bytes());
            return code(&v);
        }
        Format::Json => json(&v),
        Format::Github => github(&v),
    };
    let _ = std::io::stdout().write_all(out.as_bytes());
    code(&v)
}

fn code(v: &Validation) -> u8 {
    if v.is_valid() { exit::OK } else { exit::INVALID }
}

/// Every diagnostic with its snippet, then a summary line.
pub fn human(v: &Validation, path: &Path, style: render::Style) -> String {
    let mut out = String::new();
    for d in v.diags.iter() {
        out.push_str(&render::human(d, &v.sources, style));
        out.push('\n');
    }
    let (errors, warnings) = (v.diags.error_count(), v.diags.warning_count());
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    if errors > 0 {
        out.push_str(&format!(
            "{} is invalid: {}, {}\n",
            path.display(),
            plural(errors, "error"),
            plural(warnings, "warning")
        ));
    } else {
        let s = &v.spec;
        let vms: usize = s.vms.iter().map(|vm| vm.replicas.as_ref().map_or(1, |r| r.value as usize)).sum();
        out.push_str(&format!(
            "{} is valid: {}; {}, {}, {}, {}{}\n",
            path.display(),
            plural(v.sources.len(), "file"),
            plural(s.hosts.len(), "host"),
            plural(s.tenants.len(), "tenant"),
            plural(s.networks.len(), "network"),
            plural(vms, "VM"),
            if warnings > 0 { format!(", {}", plural(warnings, "warning")) } else { String::new() },
        ));
    }
    out
}

#[derive(Serialize)]
struct JsonReport {
    valid: bool,
    diagnostics: Vec<render::JsonDiagnostic>,
}

pub fn json(v: &Validation) -> String {
    let report =
        JsonReport { valid: v.is_valid(), diagnostics: v.diags.iter().map(|d| render::json(d, &v.sources)).collect() };
    let mut s = serde_json::to_string_pretty(&report).unwrap_or_default();
    s.push('\n');
    s
}

pub fn github(v: &Validation) -> String {
    v.diags.iter().map(|d| render::github(d, &v.sources) + "\n").collect()
}
