//! Storage: libvirt pools and the base images VM disks are made from.

use crate::spec::decode::{Decoder, Word};
use crate::spec::shape::{Shape, Ty, opt, req};
use crate::spec::source::{Span, Spanned};
use crate::spec::tree::Node;
use crate::spec::types::ByteSize;
use crate::words;

words! {
    /// libvirt storage pool types fabrik manages.
    pub enum PoolKind {
        /// A directory on the host.
        Dir = "dir",
        /// An LVM volume group.
        Logical = "logical",
        /// A network file system export, mounted by libvirt.
        Netfs = "netfs",
    }
}

words! {
    pub enum ImageFormat {
        Qcow2 = "qcow2",
        Raw = "raw",
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Pool {
    pub name: Spanned<String>,
    pub kind: Spanned<PoolKind>,
    pub path: Spanned<String>,
    /// Volume group (logical) or `server:/export` (netfs).
    pub source: Option<Spanned<String>>,
    /// Hosts that have the pool; empty means every host.
    pub hosts: Vec<Spanned<String>>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Image {
    pub name: Spanned<String>,
    pub pool: Spanned<String>,
    /// Where the image comes from: a path on the host or an `https://` URL.
    pub source: Spanned<String>,
    pub format: Spanned<ImageFormat>,
    pub size: Option<Spanned<ByteSize>>,
    /// SHA-256 (hex) of the image's bytes: required for a URL or `file:` source, which
    /// fabrik fetches and checks before any host is changed.
    pub sha256: Option<Spanned<String>>,
    #[serde(skip)]
    pub span: Span,
}

pub static POOL: Shape = Shape {
    name: "pool",
    doc: "A libvirt storage pool.",
    label: Some("name"),
    more: &[],
    fields: &[
        req("name", Ty::Name, "the pool's name"),
        req("type", Ty::Enum(PoolKind::NAMES), "dir, logical or netfs"),
        req("path", Ty::Str, "target path on the host, e.g. `/var/lib/fabrik/images`"),
        opt("source", Ty::Str, "volume group (logical) or `server:/export` (netfs)"),
        opt("hosts", Ty::List(&Ty::Name), "hosts that have the pool (default: every host)"),
    ],
};

pub static IMAGE: Shape = Shape {
    name: "image",
    doc: "A base image VM disks are cloned from.",
    label: Some("name"),
    more: &[],
    fields: &[
        req("name", Ty::Name, "the image's name"),
        req("pool", Ty::Name, "pool the image is stored in"),
        req(
            "source",
            Ty::Str,
            "path on the host, `https://` (or `http://`) URL, or `file:<path>` on the machine running fabrik, to fetch it from",
        ),
        opt("format", Ty::Enum(ImageFormat::NAMES), "qcow2 (default) or raw"),
        opt("size", Ty::Size, "virtual size"),
        opt(
            "sha256",
            Ty::Str,
            "SHA-256 of the image's bytes (64 hex digits); required for a URL or `file:` source, checked before any host is changed",
        ),
    ],
};

pub fn decode_pool(d: &mut Decoder, n: &Node) -> Option<Pool> {
    let o = d.object(n, &POOL, "pool")?;
    let name = o.get("name").and_then(|n| d.name(n, "name"));
    let kind = o.get("type").and_then(|n| d.word::<PoolKind>(n, "type"));
    let path = o.get("path").and_then(|n| d.string(n, "path"));
    if let Some(p) = &path
        && !p.value.starts_with('/')
    {
        d.diags.push(
            crate::diag::Diagnostic::error(
                "fabrik::spec::bad-path",
                format!("pool path `{}` is not absolute", p.value),
            )
            .at(p.span, "relative path")
            .help("give the full path on the host, starting with `/`"),
        );
    }
    let source = o.get("source").and_then(|n| d.string(n, "source"));
    if let Some(k) = &kind {
        match k.value {
            PoolKind::Dir => {
                d.irrelevant(&o, "source", "to a dir pool", "remove `source`: only logical and netfs pools use it")
            }
            PoolKind::Logical | PoolKind::Netfs => d.required_because(&o, "source", &format!("for a {} pool", k.value)),
        }
    }
    let hosts = o.get("hosts").map(|n| d.list(n, "hosts", |d, n| d.name(n, "hosts"))).unwrap_or_default();
    Some(Pool { name: name?, kind: kind?, path: path?, source, hosts, span: o.span })
}

pub fn decode_image(d: &mut Decoder, n: &Node) -> Option<Image> {
    let o = d.object(n, &IMAGE, "image")?;
    let name = o.get("name").and_then(|n| d.name(n, "name"));
    let pool = o.get("pool").and_then(|n| d.name(n, "pool"));
    let source = o.get("source").and_then(|n| d.string(n, "source"));
    let format = match o.get("format") {
        Some(n) => d.word::<ImageFormat>(n, "format"),
        None => Some(Spanned::new(ImageFormat::Qcow2, o.head)),
    };
    let size = o.get("size").and_then(|n| d.size(n, "size"));
    let sha256 = o.get("sha256").and_then(|n| d.string(n, "sha256"));
    Some(Image { name: name?, pool: pool?, source: source?, format: format?, size, sha256, span: o.span })
}
