//! The shape of the language: every object, its keys, their types and docs.
//!
//! One table drives three things, so they cannot drift apart: the decoder's
//! unknown-key and missing-key errors (with "did you mean"), the JSON Schema that
//! `fabrik schema` prints, and the key reference in `docs/language.md`.

/// An object of the language (a host, a VM, …).
#[derive(Debug)]
pub struct Shape {
    /// Name of the definition in the JSON Schema (`Host`).
    pub name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [Field],
    /// Fields shared with other shapes (a VM has a template's fields), after `fields`.
    pub more: &'static [Field],
    /// The key a lone scalar stands for: in KDL, the node's argument
    /// (`host "gpu01" {…}`); in YAML, a scalar item in a list (`mig: [3g.71gb]`).
    pub label: Option<&'static str>,
}

#[derive(Debug)]
pub struct Field {
    pub key: &'static str,
    pub ty: Ty,
    pub required: bool,
    pub doc: &'static str,
}

/// The type of a key's value.
#[derive(Debug)]
pub enum Ty {
    Str,
    /// A name: letters, digits, `-`, `_`, `.`; starts with a letter or digit.
    Name,
    Int {
        min: i64,
        max: i64,
    },
    Float {
        min: f64,
        max: f64,
    },
    Bool,
    /// A string, an integer or a boolean (a template parameter's value).
    Scalar,
    /// A byte size with a unit: `128GiB`, `512M`.
    Size,
    /// A hugepage size: `2M` or `1G`.
    PageSize,
    /// A CPU list in cpuset syntax: `0-27,56-83`.
    CpuSet,
    /// A PCI address: `0000:3b:00.0`.
    Pci,
    /// A MIG profile name: `3g.71gb`, `1g.18gb+me`.
    MigProfile,
    /// A Linux interface name: 1 to 15 bytes of printable ASCII, no space, `/` or `:`.
    IfName,
    /// An IPv4 or IPv6 address without a prefix length: `10.0.0.11`, `fd00::11`.
    Ip,
    /// One of these words.
    Enum(&'static [&'static str]),
    List(&'static Ty),
    /// A list of objects; in KDL, one child node per item named `singular`.
    Items {
        shape: &'static Shape,
        singular: &'static str,
    },
    Object(&'static Shape),
    /// A map with keys of one type (GPU models, page sizes) and values of another.
    MapOf {
        key: &'static Ty,
        value: &'static Ty,
    },
}

impl Shape {
    /// All fields: own, then shared.
    pub fn all(&self) -> impl Iterator<Item = &'static Field> + Clone + use<> {
        let (own, more): (&'static [Field], &'static [Field]) = (self.fields, self.more);
        own.iter().chain(more.iter())
    }

    pub fn field(&self, key: &str) -> Option<&'static Field> {
        self.all().find(|f| f.key == key)
    }

    /// The key as it is spelled in a file of the given syntax: KDL repeats the
    /// singular (`host "a"`, `host "b"`) where YAML has the plural list (`hosts:`).
    pub fn spelled(field: &Field, syntax: super::source::Syntax) -> &'static str {
        match (&field.ty, syntax) {
            (Ty::Items { singular, .. }, super::source::Syntax::Kdl) => singular,
            _ => field.key,
        }
    }
}

/// Shorthand for table rows.
pub const fn req(key: &'static str, ty: Ty, doc: &'static str) -> Field {
    Field { key, ty, required: true, doc }
}

pub const fn opt(key: &'static str, ty: Ty, doc: &'static str) -> Field {
    Field { key, ty, required: false, doc }
}
