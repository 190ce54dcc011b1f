//! `fabrik::image::sha256`: an image fabrik fetches (a URL or `file:` source) declares the
//! SHA-256 of its bytes, written as 64 hex digits. apply checks what it fetched against
//! it before any host is changed (src/image), so a mirror serving another file, a
//! truncated download or a `current` link that moved never becomes a VM's disk.

use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::image::Source;
use crate::spec::model::Spec;

pub static RULES: &[Rule] = &[Rule {
    code: "fabrik::image::sha256",
    summary: "an image fetched from a URL or `file:` source has no `sha256`, or one that is not 64 hex digits",
    protects: "without it, whatever the URL serves that day (another release, a truncated download, a tampered mirror) would become every VM's disk, unchecked",
    example: "images:\n  - name: ubuntu-24.04\n    pool: images\n    source: https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img",
    fix: "add `sha256:` with the image's SHA-256 as its publisher lists it (`SHA256SUMS`), or `sha256sum` of the file; pin a dated release URL, whose bytes do not change",
}];

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    for i in &spec.images {
        if Source::parse(&i.source.value).is_none() {
            continue;
        }
        match &i.sha256 {
            None => out.push(
                Diagnostic::error(
                    "fabrik::image::sha256",
                    format!("image `{}` is fetched from {} but declares no `sha256`", i.name.value, i.source.value),
                )
                .at(i.source.span, "fetched from here")
                .help(
                    "add `sha256:` with the SHA-256 of the image's bytes (its publisher's SHA256SUMS, or `sha256sum`)",
                ),
            ),
            Some(s) if !(s.value.len() == 64 && s.value.chars().all(|c| c.is_ascii_hexdigit())) => out.push(
                Diagnostic::error(
                    "fabrik::image::sha256",
                    format!("the `sha256` of image `{}` is not 64 hex digits", i.name.value),
                )
                .at(s.span, "not a SHA-256")
                .help("write the 64 hex digits `sha256sum` prints, nothing else"),
            ),
            Some(_) => {}
        }
    }
}
