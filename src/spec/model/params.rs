//! Template parameters: what a template lets a VM choose (a model id, a port, a token),
//! typed, with a default and a description; and the values a VM gives (`params:`).
//!
//! Decoding keeps what the file says; `check::params` compares the values with the
//! declarations, and [`resolve`] gives the values a VM ends with, for the guest
//! configuration.

use crate::spec::decode::{Decoder, Obj, Word};
use crate::spec::shape::{Field, Shape, Ty, opt, req};
use crate::spec::source::{Span, Spanned};
use crate::spec::tree::{Node, Scalar, Value};
use crate::words;

words! {
    /// The type of a template parameter.
    pub enum ParamType {
        /// Any string.
        String = "string",
        /// A whole number.
        Integer = "integer",
        /// `true` or `false`.
        Boolean = "boolean",
        /// One of the words in `values`.
        Enum = "enum",
        /// A string that matches the regular expression `pattern` as a whole.
        Pattern = "pattern",
    }
}

/// A parameter value as written in a file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl ParamValue {
    /// What this value is, in the words of an error message.
    pub fn kind(&self) -> &'static str {
        match self {
            ParamValue::Str(_) => "a string",
            ParamValue::Int(_) => "an integer",
            ParamValue::Bool(_) => "a boolean",
        }
    }
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Str(s) => f.write_str(s),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A parameter a template declares.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ParamDecl {
    pub name: Spanned<String>,
    pub ty: Spanned<ParamType>,
    pub description: Option<Spanned<String>>,
    /// The value a VM that gives none gets; without one, every VM must give a value.
    /// Never serialized: it may be a secret.
    #[serde(skip)]
    pub default: Option<Spanned<ParamValue>>,
    /// The value is never printed: plans and JSON show it redacted.
    pub secret: bool,
    /// The allowed words of an `enum`.
    pub values: Vec<Spanned<String>>,
    /// The regular expression a `pattern` value matches as a whole.
    pub pattern: Option<Spanned<String>>,
    #[serde(skip)]
    pub span: Span,
}

/// A value a VM gives for a parameter of its template. Never serialized: it may be a
/// secret, and only the template knows.
#[derive(Clone, Debug)]
pub struct ParamSetting {
    pub name: Spanned<String>,
    pub value: Spanned<ParamValue>,
}

pub static PARAM: Shape = Shape {
    name: "parameter",
    doc: "A parameter of a template: a value each VM made from it may choose.",
    label: Some("name"),
    more: &[],
    fields: &[
        req("name", Ty::Name, "the parameter's name, as VMs give it in `params`"),
        req("type", Ty::Enum(ParamType::NAMES), "string, integer, boolean, enum (one of `values`) or pattern"),
        opt("description", Ty::Str, "what the parameter chooses, for the people who set it"),
        opt("default", Ty::Scalar, "the value of a VM that gives none (without it, every VM must give one)"),
        opt("secret", Ty::Bool, "the value is never printed: plans and JSON show it redacted"),
        opt("values", Ty::List(&Ty::Str), "the allowed words, for an `enum`"),
        opt("pattern", Ty::Str, "a regular expression the whole value must match, for a `pattern`"),
    ],
};

/// The template's key.
pub const TEMPLATE_FIELD: Field =
    opt("params", Ty::Items { shape: &PARAM, singular: "param" }, "parameters each VM made from the template may set");

/// The VM's key.
pub const VM_FIELD: Field = opt(
    "params",
    Ty::MapOf { key: &Ty::Name, value: &Ty::Scalar },
    "values for the parameters of the VM's template, by name",
);

/// A parameter value: a string, an integer or a boolean.
pub fn value(d: &mut Decoder, n: &Node, key: &str) -> Option<Spanned<ParamValue>> {
    let v = match &n.value {
        Value::Scalar(Scalar::Str(s)) => ParamValue::Str(s.clone()),
        Value::Scalar(Scalar::Bool(b)) => ParamValue::Bool(*b),
        Value::Scalar(Scalar::Int(_)) => return d.int(n, key, i64::MIN, i64::MAX).map(|i| i.map(ParamValue::Int)),
        _ => {
            d.wrong_type(n, key, "a string, an integer or a boolean");
            return None;
        }
    };
    Some(Spanned::new(v, n.span))
}

pub fn decode_param(d: &mut Decoder, n: &Node) -> Option<ParamDecl> {
    let o = d.object(n, &PARAM, "param")?;
    let name = o.get("name").and_then(|n| d.name(n, "name"));
    let ty = o.get("type").and_then(|n| d.word::<ParamType>(n, "type"));
    let description = o.get("description").and_then(|n| d.string(n, "description"));
    let default = o.get("default").and_then(|n| value(d, n, "default"));
    let secret = o.get("secret").and_then(|n| d.bool(n, "secret")).is_some_and(|b| b.value);
    let values = o.get("values").map(|n| d.list(n, "values", |d, n| d.string(n, "values"))).unwrap_or_default();
    let pattern = o.get("pattern").and_then(|n| d.string(n, "pattern"));
    let ty = ty?;
    needs(d, &o, ty.value);
    Some(ParamDecl { name: name?, ty, description, default, secret, values, pattern, span: o.span })
}

/// `values` belongs to an enum and `pattern` to a pattern, and each needs its key.
fn needs(d: &mut Decoder, o: &Obj<'_>, ty: ParamType) {
    match ty {
        ParamType::Enum => d.required_because(o, "values", "for an `enum` parameter"),
        ParamType::Pattern => d.required_because(o, "pattern", "for a `pattern` parameter"),
        ParamType::String | ParamType::Integer | ParamType::Boolean => {}
    }
    let because = format!("to a parameter of type `{ty}`");
    if ty != ParamType::Enum {
        d.irrelevant(o, "values", &because, "drop `values`, or make the parameter `type: enum`");
    }
    if ty != ParamType::Pattern {
        d.irrelevant(o, "pattern", &because, "drop `pattern`, or make the parameter `type: pattern`");
    }
}

/// The `params` map of a VM.
pub fn decode_settings(d: &mut Decoder, n: &Node) -> Vec<ParamSetting> {
    d.map_of(n, "params", |_, k, _| Some(k.to_string()), value)
        .into_iter()
        .map(|(name, value)| ParamSetting { name, value })
        .collect()
}

/// A parameter's value for one VM, as the guest configuration uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    pub ty: ParamType,
    pub value: ParamValue,
    pub secret: bool,
}

/// The values a VM ends with: its own, or the template's defaults. A parameter
/// without either is left out (`check::params` has reported it).
pub fn resolve(decls: &[ParamDecl], settings: &[ParamSetting]) -> Vec<Resolved> {
    decls
        .iter()
        .filter_map(|decl| {
            let given = settings.iter().find(|s| s.name.value == decl.name.value).map(|s| &s.value);
            let value = given.or(decl.default.as_ref())?;
            Some(Resolved {
                name: decl.name.value.clone(),
                ty: decl.ty.value,
                value: value.value.clone(),
                secret: decl.secret,
            })
        })
        .collect()
}
