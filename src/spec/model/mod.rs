//! The typed model of a factory: what the files say, with the span of every value.
//!
//! Each file decodes to a [`Spec`] of its own; [`Spec::merge`] joins them. References
//! between objects are names here; `check::refs` makes sure they resolve.

pub mod endpoint;
pub mod host;
pub mod network;
pub mod params;
pub mod scope;
pub mod storage;
pub mod tenant;
pub mod watch;
pub mod workload;

pub use host::{Gpu, GpuMode, Host, MigSlot, Nic, NicKind, NumaNode, NvlinkDomain};
pub use network::{Membership, NetKind, Network, Purpose};
pub use params::{ParamDecl, ParamSetting, ParamType, ParamValue};
pub use scope::{FileScope, Scope};
pub use storage::{Image, ImageFormat, Pool, PoolKind};
pub use tenant::{Quota, Sharing, Tenant};
pub use workload::{
    CpuPolicy, Disk, DiskBus, Firmware, GpuRequest, NicModel, NicRequest, NumaPolicy, Overcommit, Power, Template, Vm,
    Workload,
};

use super::decode::Decoder;
use super::shape::{Shape, Ty, opt, req};
use super::source::{Span, Spanned, Syntax};
use super::tree::{Node, Scalar, Value};
use crate::diag::Diagnostic;

/// The language version this build reads.
pub const VERSION: i64 = 1;

/// A factory: everything its files declare.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Spec {
    pub factory: Option<Spanned<String>>,
    pub hosts: Vec<Host>,
    pub nvlink_domains: Vec<NvlinkDomain>,
    pub tenants: Vec<Tenant>,
    pub networks: Vec<Network>,
    pub pools: Vec<Pool>,
    pub images: Vec<Image>,
    pub templates: Vec<Template>,
    pub vms: Vec<Vm>,
    /// How `fabrik watch` runs (one file at most declares it).
    pub watch: Option<watch::Watch>,
    /// Each file's scope, in file order.
    #[serde(skip)]
    pub scopes: Vec<FileScope>,
}

pub static FILE: Shape = Shape {
    name: "factory file",
    doc: "A fabrik factory file. A factory is one file or a directory of them, merged.",
    label: None,
    more: &[],
    fields: &[
        req("version", Ty::Int { min: VERSION, max: VERSION }, "language version; this fabrik reads `1`"),
        opt(
            "factory",
            Ty::Name,
            "the factory's name, recorded on everything fabrik creates; required by `plan` and `apply`",
        ),
        opt(
            "scope",
            Ty::Object(&scope::SCOPE),
            "whom the file belongs to: `operator` or `{ tenant: <name> }` (default: docs/security.md)",
        ),
        opt("hosts", Ty::Items { shape: &host::HOST, singular: "host" }, "KVM hosts"),
        opt(
            "nvlink-domains",
            Ty::Items { shape: &host::NVLINK_DOMAIN, singular: "nvlink-domain" },
            "NVLink domains that need more than a name (a partitioned domain)",
        ),
        opt("tenants", Ty::Items { shape: &tenant::TENANT, singular: "tenant" }, "tenants (virtual data centers)"),
        opt("networks", Ty::Items { shape: &network::NETWORK, singular: "network" }, "networks"),
        opt("pools", Ty::Items { shape: &storage::POOL, singular: "pool" }, "storage pools"),
        opt("images", Ty::Items { shape: &storage::IMAGE, singular: "image" }, "base images"),
        opt("templates", Ty::Items { shape: &workload::TEMPLATE, singular: "template" }, "VM templates"),
        opt("vms", Ty::Items { shape: &workload::VM, singular: "vm" }, "VMs"),
        opt("watch", Ty::Object(&watch::WATCH), "how `fabrik watch` runs (an operator's file; docs/watch.md)"),
    ],
};

/// Decodes one file's tree. Errors go to the decoder; what decoded cleanly is returned.
pub fn decode_file(d: &mut Decoder, root: &Node) -> Spec {
    let Value::Map(map) = &root.value else {
        d.diags.push(
            Diagnostic::error(
                "fabrik::spec::wrong-type",
                format!("a factory file is a map of keys, found {}", root.kind()),
            )
            .at(root.span, "expected `version`, `hosts`, `tenants`, … here")
            .help(format!("start the file with `version: {VERSION}` and give objects under `hosts:`, `vms:`, …")),
        );
        return Spec::default();
    };
    // A control character anywhere stops the file here: it must not reach messages,
    // XML or the hosts.
    let before = d.diags.len();
    super::text::check(root, &mut d.diags);
    if d.diags.len() > before {
        return Spec::default();
    }
    // The version decides how the rest is read: a file of another version is not read further.
    let version = map.entries.iter().find(|e| e.key == "version").map(|e| &e.value);
    if let Some(Node { value: Value::Scalar(Scalar::Int(n)), span }) = version
        && *n != i128::from(VERSION)
    {
        d.diags.push(
            Diagnostic::error("fabrik::spec::unsupported-version", format!("version {n} is not supported"))
                .at(*span, "unsupported version")
                .help(format!(
                    "this fabrik reads version {VERSION}; upgrade fabrik, or write `{}`",
                    version_line(d.syntax)
                )),
        );
        return Spec::default();
    }
    let before = d.diags.len();
    let Some(o) = d.object(root, &FILE, "file") else {
        return Spec::default();
    };
    if version.is_none() {
        // One precise error instead of the generic missing key.
        let generic = |x: &Diagnostic| x.code == "fabrik::spec::missing-key" && x.message.contains("`version`");
        let mut i = 0;
        d.diags.retain(|x| {
            i += 1;
            i <= before || !generic(x)
        });
        d.diags.push(missing_version(o.head, d.syntax));
    }
    if let Some(v) = o.get("version") {
        let _ = d.uint::<u32>(v, "version", VERSION, VERSION);
    }
    let declared = o.get("scope").and_then(|n| scope::decode_scope(d, n));
    let factory = o.get("factory").and_then(|n| d.name(n, "factory"));
    Spec {
        scopes: vec![FileScope {
            file: root.span.file,
            declared,
            layout: None,
            factory: factory.as_ref().map(|f| f.span),
        }],
        factory,
        hosts: d.items(&o, "hosts", host::decode_host),
        nvlink_domains: d.items(&o, "nvlink-domains", host::decode_nvlink_domain),
        tenants: d.items(&o, "tenants", tenant::decode_tenant),
        networks: d.items(&o, "networks", network::decode_network),
        pools: d.items(&o, "pools", storage::decode_pool),
        images: d.items(&o, "images", storage::decode_image),
        templates: d.items(&o, "templates", workload::decode_template),
        vms: d.items(&o, "vms", workload::decode_vm),
        watch: o.get("watch").and_then(|n| watch::decode_watch(d, n)),
    }
}

/// `fabrik::spec::missing-factory`, for commands that read or mark host objects: the
/// name is what tells this factory's objects from every other's, so it is never guessed
/// (a directory name changes with a checkout, and many factories live in `factory/`).
pub fn missing_factory(spec: &Spec, first_file: crate::spec::source::FileId) -> Option<Diagnostic> {
    if spec.factory.is_some() {
        return None;
    }
    Some(
        Diagnostic::error("fabrik::spec::missing-factory", "the factory has no `factory` name")
            .at(Span { file: first_file, start: 0, end: 0 }, "add `factory: <name>` to this file")
            .help(
                "`plan` and `apply` mark every object they make with the factory's name, and never touch \
                 one another factory marked; give the factory a name of its own in one file \
                 (`factory: ai-factory`)",
            ),
    )
}

pub fn missing_version(at: Span, syntax: Syntax) -> Diagnostic {
    Diagnostic::error("fabrik::spec::missing-version", "file has no `version`")
        .at(at, "add `version` before this")
        .help(format!("start the file with `{}`", version_line(syntax)))
}

/// The line that declares the version, as it is written in a file of this syntax.
pub fn version_line(syntax: Syntax) -> String {
    match syntax {
        Syntax::Yaml => format!("version: {VERSION}"),
        Syntax::Kdl => format!("version {VERSION}"),
    }
}

impl Spec {
    /// Adds another file's objects. Clashing `factory` names are reported.
    pub fn merge(&mut self, other: Spec, diags: &mut Vec<Diagnostic>) {
        match (&self.factory, other.factory) {
            (Some(a), Some(b)) if a.value != b.value => diags.push(
                Diagnostic::error(
                    "fabrik::spec::factory-mismatch",
                    format!("factory is named `{}` here but `{}` elsewhere", b.value, a.value),
                )
                .at(b.span, "second name")
                .also(a.span, "first name")
                .help("give every file the same `factory`, or name it in one file only"),
            ),
            (None, Some(b)) => self.factory = Some(b),
            _ => {}
        }
        self.hosts.extend(other.hosts);
        self.nvlink_domains.extend(other.nvlink_domains);
        self.tenants.extend(other.tenants);
        self.networks.extend(other.networks);
        self.pools.extend(other.pools);
        self.images.extend(other.images);
        self.templates.extend(other.templates);
        self.vms.extend(other.vms);
        match (&self.watch, other.watch) {
            (Some(a), Some(b)) => diags.push(
                Diagnostic::error("fabrik::watch::duplicate", "`watch` is declared in two files")
                    .at(b.span, "second `watch`")
                    .also(a.span, "first `watch`")
                    .help("declare the watch settings once, in one operator file"),
            ),
            (None, Some(b)) => self.watch = Some(b),
            _ => {}
        }
        self.scopes.extend(other.scopes);
    }

    /// Drops the spare room the merged lists kept from growing file by file (the spec is
    /// held through the whole plan).
    pub fn shrink_to_fit(&mut self) {
        self.hosts.shrink_to_fit();
        self.nvlink_domains.shrink_to_fit();
        self.tenants.shrink_to_fit();
        self.networks.shrink_to_fit();
        self.pools.shrink_to_fit();
        self.images.shrink_to_fit();
        self.templates.shrink_to_fit();
        self.vms.shrink_to_fit();
        self.scopes.shrink_to_fit();
    }

    /// The scope a file's objects are checked in; the operator's for a file not loaded.
    pub fn scope_of(&self, file: super::source::FileId) -> Scope {
        self.scopes.iter().find(|s| s.file == file).map_or(Scope::Operator, FileScope::effective)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name.value == name)
    }

    pub fn template(&self, name: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.name.value == name)
    }

    /// Every template by name, the first where a name repeats (as [`Spec::template`]):
    /// for looking up many VMs' templates without a scan each.
    pub fn templates_by_name(&self) -> std::collections::HashMap<&str, &Template> {
        let mut out = std::collections::HashMap::with_capacity(self.templates.len());
        for t in &self.templates {
            out.entry(t.name.value.as_str()).or_insert(t);
        }
        out
    }

    /// Every host by name, the first where a name repeats (as [`Spec::host`]).
    pub fn hosts_by_name(&self) -> std::collections::HashMap<&str, &Host> {
        let mut out = std::collections::HashMap::with_capacity(self.hosts.len());
        for h in &self.hosts {
            out.entry(h.name.value.as_str()).or_insert(h);
        }
        out
    }
}
