//! Scopes: whom a file belongs to — the operator, or one tenant.
//!
//! A file says it with `scope: operator` or `scope: { tenant: acme }`. A file in a
//! `tenants/<name>/` directory of the factory belongs to that tenant by its place, so a
//! tenant admin who owns that directory (CODEOWNERS) cannot make one of its files the
//! operator's by saying so. Any other file that says nothing is the operator's, as every
//! file was before scopes existed. `check::scope` holds the rules.

use crate::spec::decode::{Decoder, Word};
use crate::spec::shape::{Shape, Ty, opt};
use crate::spec::source::{FileId, Spanned};
use crate::spec::tree::Node;
use crate::words;

words! {
    /// Who a file belongs to, as the word is written.
    pub enum ScopeKind {
        /// The operator: hosts, fabrics, storage, tenants and their quotas.
        Operator = "operator",
        /// One tenant: that tenant's VMs and templates.
        Tenant = "tenant",
    }
}

/// Whom a file belongs to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    Operator,
    Tenant(String),
}

impl Scope {
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::Operator => None,
            Scope::Tenant(t) => Some(t),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Operator => f.write_str("the operator"),
            Scope::Tenant(t) => write!(f, "tenant `{t}`"),
        }
    }
}

/// One file's scope: what it declares, and what its place in the factory says.
#[derive(Clone, Debug)]
pub struct FileScope {
    pub file: FileId,
    /// The file's own `scope` key.
    pub declared: Option<Spanned<Scope>>,
    /// The tenant whose `tenants/<name>/` directory holds the file.
    pub layout: Option<String>,
    /// Where the file names the factory (`factory:`), an operator's setting.
    pub factory: Option<crate::spec::source::Span>,
}

impl FileScope {
    /// The scope the file's objects are checked in: its place wins over what it says
    /// (a disagreement is an error of its own), and a file that says nothing and lies
    /// outside `tenants/` is the operator's.
    pub fn effective(&self) -> Scope {
        match (&self.layout, &self.declared) {
            (Some(t), _) => Scope::Tenant(t.clone()),
            (None, Some(d)) => d.value.clone(),
            (None, None) => Scope::Operator,
        }
    }
}

/// The directory whose subdirectories are tenants' own (`tenants/acme/…`).
pub const TENANTS_DIR: &str = "tenants";

/// The tenant a file belongs to by its place: `tenants/<name>/…` below the factory's
/// root directory. A file directly in `tenants/` (`tenants/acme.yaml`) has no place.
pub fn layout_tenant(relative: &std::path::Path) -> Option<String> {
    let mut parts = relative.components().map(|c| c.as_os_str().to_str());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Some(TENANTS_DIR)), Some(Some(tenant)), Some(_)) => Some(tenant.to_string()),
        _ => None,
    }
}

pub static SCOPE: Shape = Shape {
    name: "scope",
    doc: "Whom the file belongs to: `operator`, or `{ tenant: <name> }`. Default: the tenant whose `tenants/<name>/` directory holds the file, else the operator.",
    label: Some("kind"),
    more: &[],
    fields: &[
        opt("kind", Ty::Enum(ScopeKind::NAMES), "`operator` or `tenant` (default: `tenant` when `tenant` is given)"),
        opt("tenant", Ty::Name, "the tenant the file belongs to; it may declare only that tenant's VMs and templates"),
    ],
};

pub fn decode_scope(d: &mut Decoder, n: &Node) -> Option<Spanned<Scope>> {
    let o = d.object(n, &SCOPE, "scope")?;
    let kind = o.get("kind").and_then(|n| d.word::<ScopeKind>(n, "kind"));
    let tenant = o.get("tenant").and_then(|n| d.name(n, "tenant"));
    let span = o.span;
    if o.has("kind") && kind.is_none() {
        return None;
    }
    match (kind.map(|k| k.value), tenant) {
        (Some(ScopeKind::Operator), Some(_)) => {
            d.conflict(&o, "kind", "tenant", "an operator's file belongs to no tenant: remove `tenant`, or `kind`");
            None
        }
        (Some(ScopeKind::Operator), None) => Some(Spanned::new(Scope::Operator, span)),
        (Some(ScopeKind::Tenant) | None, Some(t)) => Some(Spanned::new(Scope::Tenant(t.value), span)),
        (Some(ScopeKind::Tenant), None) => {
            d.required_because(&o, "tenant", "the file belongs to a tenant");
            None
        }
        (None, None) => {
            d.required_because(&o, "kind", "a scope names its owner");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::source::Span;
    use std::path::Path;

    #[test]
    fn only_a_tenants_own_directory_places_a_file() {
        assert_eq!(layout_tenant(Path::new("tenants/acme/vms.yaml")).as_deref(), Some("acme"));
        assert_eq!(layout_tenant(Path::new("tenants/acme/a/b.kdl")).as_deref(), Some("acme"));
        assert_eq!(layout_tenant(Path::new("tenants/acme.yaml")), None);
        assert_eq!(layout_tenant(Path::new("hosts/tenants/acme/x.yaml")), None);
        assert_eq!(layout_tenant(Path::new("factory.yaml")), None);
    }

    fn decoded(syntax: crate::spec::source::Syntax, text: &str) -> (Option<Scope>, Vec<(&'static str, String)>) {
        let mut sources = crate::spec::source::Sources::default();
        let (_, spec, diags) =
            crate::spec::load::load_bytes(&mut sources, "f".into(), syntax, text.as_bytes().to_vec());
        let declared = spec.scopes.first().and_then(|s| s.declared.as_ref().map(|d| d.value.clone()));
        (declared, diags.into_iter().map(|d| (d.code, d.help.unwrap_or_default())).collect())
    }

    #[test]
    fn scopes_are_written_the_same_in_yaml_and_kdl() {
        use crate::spec::source::Syntax::{Kdl, Yaml};
        let acme = Some(Scope::Tenant("acme".into()));
        assert_eq!(decoded(Yaml, "version: 1\nscope: operator\n"), (Some(Scope::Operator), vec![]));
        assert_eq!(decoded(Yaml, "version: 1\nscope: { tenant: acme }\n"), (acme.clone(), vec![]));
        assert_eq!(decoded(Yaml, "version: 1\nscope: { kind: tenant, tenant: acme }\n"), (acme.clone(), vec![]));
        assert_eq!(decoded(Kdl, "version 1\nscope \"operator\"\n"), (Some(Scope::Operator), vec![]));
        assert_eq!(decoded(Kdl, "version 1\nscope tenant=\"acme\"\n"), (acme.clone(), vec![]));
        assert_eq!(decoded(Kdl, "version 1\nscope {\n    tenant \"acme\"\n}\n"), (acme, vec![]));
        assert_eq!(decoded(Yaml, "version: 1\n").0, None);
    }

    #[test]
    fn a_wrong_scope_is_a_located_language_error() {
        use crate::spec::source::Syntax::{Kdl, Yaml};
        let codes = |r: (Option<Scope>, Vec<(&'static str, String)>)| r.1;
        let c = codes(decoded(Yaml, "version: 1\nscope: operater\n"));
        assert_eq!(c, vec![("fabrik::spec::unknown-variant", "did you mean `operator`?".to_string())]);
        assert_eq!(codes(decoded(Yaml, "version: 1\nscope: tenant\n"))[0].0, "fabrik::spec::missing-key");
        assert_eq!(
            codes(decoded(Yaml, "version: 1\nscope: { kind: operator, tenant: acme }\n"))[0].0,
            "fabrik::spec::conflicting-keys"
        );
        let c = codes(decoded(Yaml, "version: 1\nscope: { tennant: acme }\n"));
        assert!(c.contains(&("fabrik::spec::unknown-key", "did you mean `tenant`?".to_string())), "{c:?}");
        assert_eq!(codes(decoded(Kdl, "version 1\nscope tenant=\"a b\"\n"))[0].0, "fabrik::spec::bad-name");
    }

    #[test]
    fn a_place_outranks_what_the_file_says() {
        let span = Span::new(FileId(0), 0, 1);
        let s = |declared: Option<Scope>, layout: Option<&str>| FileScope {
            file: FileId(0),
            declared: declared.map(|d| Spanned::new(d, span)),
            layout: layout.map(str::to_string),
            factory: None,
        };
        assert_eq!(s(None, None).effective(), Scope::Operator);
        assert_eq!(s(Some(Scope::Tenant("a".into())), None).effective(), Scope::Tenant("a".into()));
        assert_eq!(s(Some(Scope::Operator), Some("a")).effective(), Scope::Tenant("a".into()));
    }
}
