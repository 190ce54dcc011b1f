//! `fabrik validate`: load and check a factory, report every diagnostic.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Format, exit};
use crate::check::{self, Validation};
use crate::diag::redact::Secrets;
use crate::diag::{Diagnostic, render};
use crate::spec::model::Scope;
use crate::spec::source::Span;

pub fn run(path: &Path, format: Format, tenant: Option<&str>, changed: &[PathBuf], list_files: bool) -> u8 {
    let mut v = check::validate(path);
    if let Some(tenant) = tenant {
        let changed = match changed_paths(changed) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: cannot read the changed paths from stdin: {e}");
                return exit::USAGE;
            }
        };
        v.diags.extend(review(&v, path, tenant, &changed));
        v.diags.sort();
    }
    // The factory's own secrets never leave in a snippet of its file.
    let secrets = Secrets::of_factory(&v.spec, &v.sources);
    let out = match format {
        Format::Human => {
            // The diagnostics are messages (stderr); the verdict is the command's result
            // (stdout), so `fabrik validate . > verdict.txt` keeps it.
            let text = secrets.scrub(&diagnostics(&v, super::style_for_stderr()));
            let _ = std::io::stderr().write_all(text.as_bytes());
            if list_files {
                super::out::print(&crate::diag::printable(&files_read(&v)));
            }
            super::out::print(&crate::diag::printable(&secrets.scrub(&verdict(&v, path))));
            return code(&v);
        }
        Format::Json => json(&v),
        Format::Github => github(&v),
    };
    super::out::print(&secrets.scrub(&out));
    code(&v)
}

/// The `--changed` paths, with `-` replaced by the lines of stdin.
fn changed_paths(given: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in given {
        if p.as_os_str() == "-" {
            for line in std::io::stdin().lines() {
                let line = line?;
                if !line.trim().is_empty() {
                    out.push(PathBuf::from(line.trim()));
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// `validate --tenant`: every changed path must be one of the tenant's files. A changed
/// path that was not loaded (deleted, or not a factory file) is the tenant's only when
/// its place (`tenants/<name>/`) makes it so.
fn review(v: &Validation, root: &Path, tenant: &str, changed: &[PathBuf]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mine = Scope::Tenant(tenant.to_string());
    if !v.spec.tenants.iter().any(|t| t.name.value == tenant) {
        out.push(
            Diagnostic::error("fabrik::review::outside-tenant", format!("the factory declares no tenant `{tenant}`"))
                .help("name a tenant the operator's files declare"),
        );
    }
    for path in changed {
        let loaded = v.sources.iter().find(|(_, f)| same_file(&f.path, path));
        let scope = match loaded {
            Some((id, _)) => v.spec.scope_of(id),
            None => {
                let below_root = path.strip_prefix(root).ok().or_else(|| path.is_relative().then_some(path.as_path()));
                below_root.and_then(crate::spec::model::scope::layout_tenant).map_or(Scope::Operator, Scope::Tenant)
            }
        };
        if scope == mine {
            continue;
        }
        let d = Diagnostic::error(
            "fabrik::review::outside-tenant",
            format!("`{}` belongs to {scope}, not to tenant `{tenant}`", path.display()),
        )
        .help(format!(
            "tenant `{tenant}`'s pull request may change only its files (`tenants/{tenant}/`); operators review the rest"
        ));
        out.push(match loaded {
            Some((id, _)) => d.at(Span::new(id, 0, 0), "changed in this pull request"),
            None => d,
        });
    }
    out
}

/// Two spellings of one path (`./a.yaml` and `a.yaml`, or through a link).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

fn code(v: &Validation) -> u8 {
    if v.is_valid() { exit::OK } else { exit::INVALID }
}

/// Every diagnostic with its snippet, then the verdict.
pub fn human(v: &Validation, path: &Path, style: render::Style) -> String {
    diagnostics(v, style) + &verdict(v, path)
}

/// Every diagnostic with its snippet.
pub fn diagnostics(v: &Validation, style: render::Style) -> String {
    let mut out = String::new();
    for d in v.diags.iter() {
        out.push_str(&render::human(d, &v.sources, style));
        out.push('\n');
    }
    out
}

/// One line: valid (with what the factory holds) or invalid (with the counts).
pub fn verdict(v: &Validation, path: &Path) -> String {
    let mut out = String::new();
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
    /// The files read, in the order they were merged (what `.gitignore` and
    /// `.fabrikignore` left out is not among them).
    files: Vec<String>,
    diagnostics: Vec<render::JsonDiagnostic>,
}

/// The files read, one a line (`--list-files`).
pub fn files_read(v: &Validation) -> String {
    v.sources.iter().map(|(_, f)| format!("{}\n", f.path.display())).collect()
}

pub fn json(v: &Validation) -> String {
    let report = JsonReport {
        valid: v.is_valid(),
        files: v.sources.iter().map(|(_, f)| f.path.display().to_string()).collect(),
        diagnostics: v.diags.iter().map(|d| render::json(d, &v.sources)).collect(),
    };
    let mut s =
        serde_json::to_string_pretty(&crate::formats::versioned(crate::formats::VALIDATE, &report)).unwrap_or_default();
    s.push('\n');
    s
}

pub fn github(v: &Validation) -> String {
    v.diags.iter().map(|d| render::github(d, &v.sources) + "\n").collect()
}
