//! Hosts that are really one machine, and VM memory its hugepages cannot hold exactly.

use std::collections::{HashMap, HashSet};

use crate::diag::Diagnostic;
use crate::spec::model::Spec;
use crate::spec::source::{Span, Spanned};
use crate::spec::types::{ByteSize, PageSize};

pub(super) fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    uris(spec, out);
    hugepages(spec, out);
}

/// A URI as libvirt would reach it: a trailing `/` changes nothing.
fn normal(uri: &str) -> &str {
    uri.trim_end_matches('/')
}

/// libvirt's `test` driver is no machine: hosts declared on it are simulated (tests,
/// demos), nothing on it outlives the process, and sharing it harms no host.
fn is_test_driver(uri: &str) -> bool {
    uri.starts_with("test:") || uri.starts_with("test+")
}

fn uris(spec: &Spec, out: &mut Vec<Diagnostic>) {
    let mut first: HashMap<&str, (&Spanned<String>, &str)> = HashMap::with_capacity(spec.hosts.len());
    for h in spec.hosts.iter().filter(|h| !is_test_driver(&h.uri.value)) {
        let Some(&(uri, name)) = first.get(normal(&h.uri.value)) else {
            first.insert(normal(&h.uri.value), (&h.uri, &h.name.value));
            continue;
        };
        out.push(
            Diagnostic::error(
                "fabrik::capacity::duplicate-uri",
                format!("hosts `{name}` and `{}` have one URI, `{}`", h.name.value, uri.value),
            )
            .at(h.uri.span, format!("also the URI of host `{name}`"))
            .also(uri.span, format!("host `{name}`'s URI"))
            .help(format!(
                "give host `{}` its own URI; if both are one machine, declare it once (each host's plan would delete what the other's declares)",
                h.name.value
            )),
        );
    }
}

fn hugepages(spec: &Spec, out: &mut Vec<Diagnostic>) {
    // A template's values are one line for many VMs: said once per pair of lines.
    let mut said: HashSet<(Span, Span)> = HashSet::new();
    let templates = spec.templates.iter().map(|t| (t.workload.memory.as_ref(), t.workload.hugepages.as_ref()));
    let vms = spec.effective_vms().map(|e| (e.memory(), e.hugepages()));
    for (memory, page) in templates.chain(vms) {
        let (Some(memory), Some(page)) = (memory, page) else { continue };
        let size = page.value.size().bytes();
        let bytes = memory.value.bytes();
        if bytes % size == 0 || !said.insert((memory.span, page.span)) {
            continue;
        }
        out.push(fraction(memory, page, bytes, size));
    }
}

fn fraction(memory: &Spanned<ByteSize>, page: &Spanned<PageSize>, bytes: u64, size: u64) -> Diagnostic {
    let below = bytes / size * size;
    let above = below.saturating_add(size);
    let nearest = if below == 0 {
        format!("`memory: {}`", ByteSize(above))
    } else {
        format!("`memory: {}` or `memory: {}`", ByteSize(below), ByteSize(above))
    };
    Diagnostic::error(
        "fabrik::numa::hugepage-fraction",
        format!("memory {} is not a whole number of {} hugepages", memory.value, page.value),
    )
    .at(memory.span, format!("{:.2} pages of {}", bytes as f64 / size as f64, page.value))
    .also(page.span, "backed by these pages")
    .help(format!("QEMU refuses hugepage-backed memory that is not a multiple of the page size: write {nearest}"))
}
