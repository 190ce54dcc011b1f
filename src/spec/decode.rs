//! Tree → typed values, collecting every error instead of stopping at the first.
//!
//! An [`Obj`] checks a map against its [`Shape`] once (unknown keys with a suggestion,
//! duplicate keys, missing required keys); the typed getters then convert single
//! values and report wrong types, bad units and out-of-range numbers at their span.

use std::net::IpAddr;

use super::shape::{Shape, Ty};
use super::source::{Span, Spanned, Syntax};
use super::tree::{Node, Scalar, Value};
use super::types::{ByteSize, CpuSet, Invalid, MigProfileName, PageSize, PciAddress, parse_ip};
use crate::diag::{Diagnostic, suggest};

pub struct Decoder {
    pub syntax: Syntax,
    pub diags: Vec<Diagnostic>,
}

/// A map checked against its shape: the node given for each field.
pub struct Obj<'n> {
    shape: &'static Shape,
    /// Where to point when the object as a whole is wrong (its name, or its first key).
    pub head: Span,
    pub span: Span,
    slots: Vec<Slot<'n>>,
}

#[derive(Clone)]
enum Slot<'n> {
    Empty,
    One(&'n Node),
    /// KDL items: one child node per item.
    Many(Vec<&'n Node>),
}

impl<'n> Obj<'n> {
    fn index(&self, key: &str) -> usize {
        let i = self.shape.all().position(|f| f.key == key);
        debug_assert!(i.is_some(), "`{key}` is not a field of {}", self.shape.name);
        i.unwrap_or(usize::MAX)
    }

    /// The node given for a key, if any.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        match self.slots.get(self.index(key)) {
            Some(Slot::One(n)) => Some(n),
            _ => None,
        }
    }

    pub fn has(&self, key: &str) -> bool {
        !matches!(self.slots.get(self.index(key)), Some(Slot::Empty) | None)
    }

    /// The span of the key's value, for diagnostics about it.
    pub fn span_of(&self, key: &str) -> Option<Span> {
        match self.slots.get(self.index(key))? {
            Slot::Empty => None,
            Slot::One(n) => Some(n.span),
            Slot::Many(v) => v.first().map(|n| n.span),
        }
    }
}

/// Words of an enum, as written in files.
pub trait Word: Copy + Sized + 'static {
    const NAMES: &'static [&'static str];
    fn from_index(i: usize) -> Self;
}

impl Decoder {
    pub fn new(syntax: Syntax) -> Decoder {
        Decoder { syntax, diags: Vec::new() }
    }

    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    pub fn wrong_type(&mut self, n: &Node, key: &str, expected: &str) {
        let found = n.kind();
        let help = match (&n.value, self.syntax) {
            (Value::Scalar(Scalar::Int(_) | Scalar::Float(_) | Scalar::Bool(_)), _) if expected == "a string" => {
                "put the value in double quotes to make it a string".to_string()
            }
            (Value::Scalar(Scalar::Str(s)), Syntax::Yaml) if expected == "a boolean" && is_yaml11_bool(s) => {
                format!("YAML 1.2 reads `{s}` as a string; write `true` or `false`")
            }
            (Value::Scalar(Scalar::Str(s)), Syntax::Kdl)
                if expected == "a boolean" && matches!(s.as_str(), "true" | "false") =>
            {
                format!("KDL booleans are written `#{s}`")
            }
            (Value::Scalar(Scalar::Str(s)), _)
                if (expected.contains("integer") || expected.contains("number")) && s.trim().parse::<f64>().is_ok() =>
            {
                "write the number without quotes".to_string()
            }
            (_, Syntax::Yaml) if expected == "a list" => {
                format!("write `{key}` as a list: `[a, b]` on one line, or one `- item` per line")
            }
            (_, Syntax::Kdl) if expected == "a list" => {
                format!("give the items as arguments of the node, on one line: `{key} a b`")
            }
            (_, Syntax::Yaml) if expected == "a map" => {
                format!("write `{key}:` with its keys indented below it, one `key: value` per line")
            }
            (_, Syntax::Kdl) if expected == "a map" => {
                format!("give `{key}` properties (`{key} key=value`) or a block of child nodes")
            }
            _ => format!("give `{key}` {expected}"),
        };
        self.err(
            Diagnostic::error("fabrik::spec::wrong-type", format!("`{key}` must be {expected}, found {found}"))
                .at(n.span, format!("this is {found}"))
                .help(help),
        );
    }

    /// Checks a map against its shape.
    pub fn object<'n>(&mut self, node: &'n Node, shape: &'static Shape, key: &str) -> Option<Obj<'n>> {
        let mut slots = vec![Slot::Empty; shape.all().count()];
        // Where each slot's key was first written, to point at it when it is given again.
        let mut first_keys: Vec<Option<Span>> = vec![None; slots.len()];
        let mut head = None;
        let label_index = shape.label.and_then(|l| shape.all().position(|f| f.key == l));
        let map = match &node.value {
            Value::Map(m) => m,
            Value::Scalar(Scalar::Str(_) | Scalar::Int(_)) if label_index.is_some() => {
                slots[label_index.unwrap_or(0)] = Slot::One(node);
                let obj = Obj { shape, head: node.span, span: node.span, slots };
                self.missing(&obj, &[]);
                return Some(obj);
            }
            _ => {
                let expected = if label_index.is_some() { "a map or a name" } else { "a map" };
                self.wrong_type(node, key, expected);
                return None;
            }
        };
        if let Some(label) = &map.label {
            match label_index {
                Some(i) => {
                    slots[i] = Slot::One(label);
                    head = Some(label.span);
                }
                None => self.err(
                    Diagnostic::error("fabrik::spec::kdl-argument", format!("`{key}` takes no argument"))
                        .at(label.span, "unexpected argument")
                        .help("give values as properties (`key=value`) or child nodes"),
                ),
            }
        }
        // Keys that an unknown key is probably a typo of: their absence is that typo.
        let mut typo_of = Vec::new();
        for entry in &map.entries {
            let found = shape.all().position(|f| Shape::spelled(f, self.syntax) == entry.key);
            let Some(i) = found else {
                typo_of.extend(self.unknown_key(shape, &entry.key, entry.key_span));
                continue;
            };
            head.get_or_insert(entry.key_span);
            let many =
                matches!(shape.all().nth(i).map(|f| &f.ty), Some(Ty::Items { .. })) && self.syntax == Syntax::Kdl;
            let first_span = match &mut slots[i] {
                Slot::Empty => {
                    slots[i] = if many { Slot::Many(vec![&entry.value]) } else { Slot::One(&entry.value) };
                    first_keys[i] = Some(entry.key_span);
                    continue;
                }
                Slot::Many(v) if many => {
                    v.push(&entry.value);
                    continue;
                }
                Slot::One(first) => first_keys[i].unwrap_or(first.span),
                Slot::Many(v) => first_keys[i].unwrap_or(v[0].span),
            };
            // Lists of objects are repeated nodes in KDL (`nic a`, `nic b`), so repeating a
            // list of scalars the same way is a natural slip; say how KDL writes it.
            let scalar_list = matches!(shape.all().nth(i).map(|f| &f.ty), Some(Ty::List(_)));
            let help = if scalar_list && self.syntax == Syntax::Kdl {
                format!("`{}` is a list: give every value as an argument of one node, `{} a b`", entry.key, entry.key)
            } else {
                "remove one of them".to_string()
            };
            self.err(
                Diagnostic::error("fabrik::spec::duplicate-key", format!("`{}` is given twice", entry.key))
                    .at(entry.key_span, "given again here")
                    .also(first_span, "first given here")
                    .help(help),
            );
        }
        let obj = Obj { shape, head: head.unwrap_or(node.span), span: node.span, slots };
        self.missing(&obj, &typo_of);
        Some(obj)
    }

    /// Reports required keys that are absent, except those in `typo_of`: a misspelt key
    /// is reported once, as unknown with its suggestion.
    fn missing(&mut self, obj: &Obj<'_>, typo_of: &[&str]) {
        for (f, slot) in obj.shape.all().zip(&obj.slots) {
            if f.required && matches!(slot, Slot::Empty) && !typo_of.contains(&Shape::spelled(f, self.syntax)) {
                let what = obj.shape.name;
                let named = obj.shape.label.and_then(|l| obj.get(l)).and_then(|n| match &n.value {
                    Value::Scalar(Scalar::Str(s)) => Some(format!(" `{s}`")),
                    _ => None,
                });
                let spelled = Shape::spelled(f, self.syntax);
                self.err(
                    Diagnostic::error(
                        "fabrik::spec::missing-key",
                        format!("{what}{} has no `{spelled}`", named.unwrap_or_default()),
                    )
                    .at(obj.head, format!("`{spelled}` is required here"))
                    .help(format!("add `{spelled}`: {}", f.doc)),
                );
            }
        }
    }

    /// Reports an unknown key; returns the key it is probably a misspelling of.
    fn unknown_key(&mut self, shape: &Shape, key: &str, span: Span) -> Option<&'static str> {
        let names: Vec<&'static str> = shape.all().map(|f| Shape::spelled(f, self.syntax)).collect();
        let suggestion = suggest(key, names.iter().copied());
        let help = match suggestion {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("the keys of {} are: {}", shape.name, names.join(", ")),
        };
        self.err(
            Diagnostic::error("fabrik::spec::unknown-key", format!("unknown key `{key}` in {}", shape.name))
                .at(span, "not a known key")
                .help(help),
        );
        suggestion
    }

    /// A list of objects: a YAML sequence, or repeated KDL child nodes.
    pub fn items<T>(&mut self, obj: &Obj<'_>, key: &str, mut f: impl FnMut(&mut Self, &Node) -> Option<T>) -> Vec<T> {
        let nodes: Vec<&Node> = match obj.slots.get(obj.index(key)) {
            Some(Slot::Many(v)) => v.clone(),
            Some(Slot::One(n)) => match &n.value {
                Value::Seq(items) => items.iter().collect(),
                _ => {
                    self.wrong_type(n, key, "a list");
                    return Vec::new();
                }
            },
            _ => return Vec::new(),
        };
        let mut items: Vec<T> = nodes.into_iter().filter_map(|n| f(self, n)).collect();
        // Held in the spec through the plan: at its length, not with the room it grew by.
        items.shrink_to_fit();
        items
    }

    /// A list of scalars; in KDL, a node with one argument is a list of one, and a node
    /// without arguments the empty list (KDL has no other way to write it).
    pub fn list<T>(&mut self, n: &Node, key: &str, mut f: impl FnMut(&mut Self, &Node) -> Option<T>) -> Vec<T> {
        match &n.value {
            Value::Seq(items) => items.iter().filter_map(|i| f(self, i)).collect(),
            Value::Scalar(Scalar::Null) if self.syntax == Syntax::Kdl => Vec::new(),
            Value::Scalar(s) if self.syntax == Syntax::Kdl && !matches!(s, Scalar::Null) => {
                f(self, n).into_iter().collect()
            }
            _ => {
                self.wrong_type(n, key, "a list");
                Vec::new()
            }
        }
    }

    /// A map with free keys (GPU models, page sizes); each key is decoded by `k`.
    pub fn map_of<K, V>(
        &mut self,
        n: &Node,
        key: &str,
        mut k: impl FnMut(&mut Self, &str, Span) -> Option<K>,
        mut v: impl FnMut(&mut Self, &Node, &str) -> Option<V>,
    ) -> Vec<(Spanned<K>, V)> {
        let Value::Map(m) = &n.value else {
            self.wrong_type(n, key, "a map");
            return Vec::new();
        };
        if let Some(label) = &m.label {
            self.err(
                Diagnostic::error("fabrik::spec::kdl-argument", format!("`{key}` takes no argument"))
                    .at(label.span, "unexpected argument")
                    .help("give entries as properties, `key=value`"),
            );
        }
        let mut out: Vec<(Spanned<K>, V)> = Vec::new();
        let mut seen: Vec<(&str, Span)> = Vec::new();
        for e in &m.entries {
            if let Some(&(_, first)) = seen.iter().find(|(s, _)| *s == e.key) {
                self.err(
                    Diagnostic::error("fabrik::spec::duplicate-key", format!("`{}` is given twice", e.key))
                        .at(e.key_span, "given again here")
                        .also(first, "first given here")
                        .help("remove one of them"),
                );
                continue;
            }
            seen.push((&e.key, e.key_span));
            let key_val = k(self, &e.key, e.key_span);
            let val = v(self, &e.value, &e.key);
            if let (Some(kv), Some(vv)) = (key_val, val) {
                out.push((Spanned::new(kv, e.key_span), vv));
            }
        }
        out
    }

    pub fn string(&mut self, n: &Node, key: &str) -> Option<Spanned<String>> {
        match &n.value {
            Value::Scalar(Scalar::Str(s)) => Some(Spanned::new(s.clone(), n.span)),
            _ => {
                self.wrong_type(n, key, "a string");
                None
            }
        }
    }

    /// A name of something fabrik manages or refers to.
    pub fn name(&mut self, n: &Node, key: &str) -> Option<Spanned<String>> {
        let s = self.string(n, key)?;
        let ok = s.value.len() <= 63
            && s.value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            self.err(
                Diagnostic::error("fabrik::spec::bad-name", format!("`{}` is not a valid name", s.value))
                    .at(n.span, "here")
                    .help("names are 1 to 63 letters, digits, `-`, `_` or `.`, and start with a letter or digit"),
            );
            return None;
        }
        Some(s)
    }

    pub fn int(&mut self, n: &Node, key: &str, min: i64, max: i64) -> Option<Spanned<i64>> {
        let Value::Scalar(Scalar::Int(i)) = &n.value else {
            self.wrong_type(n, key, "an integer");
            return None;
        };
        if *i < i128::from(min) || *i > i128::from(max) {
            self.err(
                Diagnostic::error(
                    "fabrik::spec::out-of-range",
                    format!("`{key}` must be between {min} and {max}, found {i}"),
                )
                .at(n.span, "out of range")
                .help(format!("use a value from {min} to {max}")),
            );
            return None;
        }
        Some(Spanned::new(*i as i64, n.span))
    }

    /// An unsigned integer that fits `T`, within `min..=max`.
    pub fn uint<T: TryFrom<i64>>(&mut self, n: &Node, key: &str, min: i64, max: i64) -> Option<Spanned<T>> {
        let v = self.int(n, key, min, max)?;
        T::try_from(v.value).ok().map(|t| Spanned::new(t, v.span))
    }

    pub fn float(&mut self, n: &Node, key: &str, min: f64, max: f64) -> Option<Spanned<f64>> {
        let f = match &n.value {
            Value::Scalar(Scalar::Float(f)) => *f,
            Value::Scalar(Scalar::Int(i)) => *i as f64,
            _ => {
                self.wrong_type(n, key, "a number");
                return None;
            }
        };
        if !(min..=max).contains(&f) {
            self.err(
                Diagnostic::error(
                    "fabrik::spec::out-of-range",
                    format!("`{key}` must be between {min} and {max}, found {f}"),
                )
                .at(n.span, "out of range")
                .help(format!("use a value from {min} to {max}")),
            );
            return None;
        }
        Some(Spanned::new(f, n.span))
    }

    pub fn bool(&mut self, n: &Node, key: &str) -> Option<Spanned<bool>> {
        match &n.value {
            Value::Scalar(Scalar::Bool(b)) => Some(Spanned::new(*b, n.span)),
            _ => {
                self.wrong_type(n, key, "a boolean");
                None
            }
        }
    }

    fn parsed<T>(
        &mut self,
        n: &Node,
        key: &str,
        expected: &str,
        parse: impl Fn(&str) -> Result<T, Invalid>,
    ) -> Option<Spanned<T>> {
        let text = match &n.value {
            Value::Scalar(Scalar::Str(s)) => s.clone(),
            // `cpus: 4`, `memory: 128`: let the parser say what is missing.
            Value::Scalar(Scalar::Int(i)) => i.to_string(),
            _ => {
                self.wrong_type(n, key, expected);
                return None;
            }
        };
        self.parse_text(&text, n.span, parse)
    }

    /// Parses text found at `span` (a value, or a map key such as a page size).
    pub fn parse_text<T>(
        &mut self,
        text: &str,
        span: Span,
        parse: impl Fn(&str) -> Result<T, Invalid>,
    ) -> Option<Spanned<T>> {
        match parse(text) {
            Ok(v) => Some(Spanned::new(v, span)),
            Err(e) => {
                self.err(Diagnostic::error(e.code, e.message).at(span, "here").help(e.help));
                None
            }
        }
    }

    pub fn size(&mut self, n: &Node, key: &str) -> Option<Spanned<ByteSize>> {
        self.parsed(n, key, "a size like `128GiB`", ByteSize::parse)
    }

    pub fn page_size(&mut self, n: &Node, key: &str) -> Option<Spanned<PageSize>> {
        self.parsed(n, key, "a hugepage size, `2M` or `1G`", PageSize::parse)
    }

    pub fn cpuset(&mut self, n: &Node, key: &str) -> Option<Spanned<CpuSet>> {
        self.parsed(n, key, "a CPU list like `0-27,56-83`", CpuSet::parse)
    }

    pub fn pci(&mut self, n: &Node, key: &str) -> Option<Spanned<PciAddress>> {
        if let Value::Scalar(Scalar::Int(_)) = n.value {
            self.wrong_type(n, key, "a PCI address like `0000:3b:00.0`");
            return None;
        }
        self.parsed(n, key, "a PCI address like `0000:3b:00.0`", PciAddress::parse)
    }

    pub fn mig_profile(&mut self, n: &Node, key: &str) -> Option<Spanned<MigProfileName>> {
        self.parsed(n, key, "a MIG profile like `3g.71gb`", MigProfileName::parse)
    }

    pub fn ip(&mut self, n: &Node, key: &str) -> Option<Spanned<IpAddr>> {
        self.parsed(n, key, "an IP address like `10.0.0.11`", parse_ip)
    }

    pub fn word<W: Word>(&mut self, n: &Node, key: &str) -> Option<Spanned<W>> {
        let Value::Scalar(Scalar::Str(s)) = &n.value else {
            self.wrong_type(n, key, &format!("one of {}", quoted_list(W::NAMES)));
            return None;
        };
        self.word_str::<W>(s, n.span, key)
    }

    pub fn word_str<W: Word>(&mut self, s: &str, span: Span, key: &str) -> Option<Spanned<W>> {
        if let Some(i) = W::NAMES.iter().position(|w| *w == s) {
            return Some(Spanned::new(W::from_index(i), span));
        }
        // `H100` starts two models: name them both rather than guess one.
        let lower = s.to_ascii_lowercase();
        let extending: Vec<&str> =
            W::NAMES.iter().copied().filter(|w| !s.is_empty() && w.to_ascii_lowercase().starts_with(&lower)).collect();
        let help = match suggest(s, W::NAMES.iter().copied()) {
            _ if extending.len() > 1 => format!("did you mean one of {}?", quoted_list(&extending)),
            Some(w) => format!("did you mean `{w}`?"),
            None => format!("use one of {}", quoted_list(W::NAMES)),
        };
        self.err(
            Diagnostic::error("fabrik::spec::unknown-variant", format!("`{s}` is not a valid `{key}`"))
                .at(span, "not one of the known values")
                .help(help),
        );
        None
    }

    /// Reports a key that does not apply given another key's value
    /// (`vni` on a VLAN network); `help` says what the key is for.
    pub fn irrelevant(&mut self, obj: &Obj<'_>, key: &str, because: &str, help: &str) {
        if let Some(span) = obj.span_of(key) {
            self.err(
                Diagnostic::error("fabrik::spec::irrelevant-key", format!("`{key}` does not apply {because}"))
                    .at(span, "has no effect here")
                    .help(help.to_string()),
            );
        }
    }

    /// Reports a key that is required given another key's value.
    pub fn required_because(&mut self, obj: &Obj<'_>, key: &str, because: &str) {
        if !obj.has(key) {
            let doc = obj.shape.field(key).map(|f| f.doc).unwrap_or_default();
            self.err(
                Diagnostic::error("fabrik::spec::missing-key", format!("`{key}` is required {because}"))
                    .at(obj.head, format!("add `{key}` here"))
                    .help(format!("add `{key}`: {doc}")),
            );
        }
    }

    /// Reports two keys that cannot be given together.
    pub fn conflict(&mut self, obj: &Obj<'_>, a: &str, b: &str, help: &str) {
        if let (Some(sa), Some(sb)) = (obj.span_of(a), obj.span_of(b)) {
            self.err(
                Diagnostic::error(
                    "fabrik::spec::conflicting-keys",
                    format!("`{a}` and `{b}` cannot be given together"),
                )
                .at(sb, format!("`{b}` given here"))
                .also(sa, format!("`{a}` given here"))
                .help(help.to_string()),
            );
        }
    }
}

fn is_yaml11_bool(s: &str) -> bool {
    matches!(s.to_ascii_lowercase().as_str(), "yes" | "no" | "on" | "off" | "y" | "n")
}

pub fn quoted_list(words: &[&str]) -> String {
    words.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", ")
}

/// Declares an enum of words as they appear in files, for [`Decoder::word`] and the schema.
#[macro_export]
macro_rules! words {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $crate::spec::decode::Word for $name {
            const NAMES: &'static [&'static str] = &[$($word),+];
            fn from_index(i: usize) -> Self {
                const ALL: &[$name] = &[$($name::$variant),+];
                ALL[i]
            }
        }

        impl $name {
            pub fn word(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.word())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.word())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                <$name as $crate::spec::decode::Word>::NAMES
                    .iter()
                    .position(|w| *w == text)
                    .map(<$name as $crate::spec::decode::Word>::from_index)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown {} `{text}`", stringify!($name))))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::decode_file;
    use crate::spec::source::{FileId, SourceFile};

    fn decode_kdl(text: &str) -> Vec<Diagnostic> {
        let file = SourceFile::new("t.kdl".into(), Syntax::Kdl, text.into());
        let root = crate::spec::kdl::parse(FileId(0), &file).expect("valid KDL").expect("a node");
        let mut d = Decoder::new(Syntax::Kdl);
        let _ = decode_file(&mut d, &root);
        d.diags
    }

    #[test]
    fn a_repeated_kdl_scalar_list_says_how_to_write_the_list() {
        let diags = decode_kdl("version 1\ntenant t {\n    hosts h\n    sharing exclusive\n    sharing mig\n}\n");
        let [dup] = diags.as_slice() else { panic!("one diagnostic, got {diags:?}") };
        assert_eq!(dup.code, "fabrik::spec::duplicate-key");
        assert!(dup.help.as_deref().is_some_and(|h| h.contains("`sharing a b`")), "{:?}", dup.help);

        // A repeated single value is still just given twice.
        let diags = decode_kdl("version 1\ntenant t {\n    hosts h\n    description a\n    description b\n}\n");
        let [dup] = diags.as_slice() else { panic!("one diagnostic, got {diags:?}") };
        assert_eq!(dup.help.as_deref(), Some("remove one of them"));
    }

    fn decode_yaml(text: &str) -> Vec<Diagnostic> {
        let file = SourceFile::new("t.yaml".into(), Syntax::Yaml, text.into());
        let root = crate::spec::yaml::parse(FileId(0), &file).expect("valid YAML").expect("a document");
        let mut d = Decoder::new(Syntax::Yaml);
        let _ = decode_file(&mut d, &root);
        d.diags
    }

    #[test]
    fn a_kdl_node_without_arguments_is_the_empty_list() {
        assert_eq!(decode_kdl("version 1\ntenant t {\n    hosts\n}\n"), vec![]);
    }

    #[test]
    fn a_misspelt_required_key_is_reported_once() {
        let diags = decode_yaml("version: 1\nhosts:\n  - name: h\n    uri: qemu:///system\n    numa-nods: []\n");
        let [typo] = diags.as_slice() else { panic!("one diagnostic, got {diags:?}") };
        assert_eq!(typo.code, "fabrik::spec::unknown-key");
        assert_eq!(typo.help.as_deref(), Some("did you mean `numa-nodes`?"));
    }

    #[test]
    fn only_a_quoted_number_is_told_to_lose_its_quotes() {
        let help = |text: String| decode_yaml(&text).first().and_then(|d| d.help.clone()).unwrap_or_default();
        let numa = "version: 1\nhosts:\n  - name: h\n    uri: qemu:///system\n    numa-nodes:\n      - id: 0\n        cpus: 0-3\n        memory: 1GiB\n        hugepages: {2M: ";
        assert_eq!(help(format!("{numa}\"512\"}}\n")), "write the number without quotes");
        assert_eq!(help(format!("{numa}lots}}\n")), "give `2M` an integer");
    }

    #[test]
    fn a_word_that_starts_several_names_lists_them() {
        let mut d = Decoder::new(Syntax::Yaml);
        let span = Span::new(FileId(0), 0, 4);
        assert!(d.word_str::<crate::hw::GpuModel>("H100", span, "model").is_none());
        let help = d.diags[0].help.as_deref().unwrap_or_default();
        assert_eq!(help, "did you mean one of `H100-80GB`, `H100-94GB`?");
    }

    #[test]
    fn lists_and_maps_of_the_wrong_shape_are_explained_per_syntax() {
        let diags = decode_yaml("version: 1\ntenants:\n  - name: t\n    hosts: {h: 1}\n    quota: [1]\n");
        let helps: Vec<&str> = diags.iter().filter_map(|d| d.help.as_deref()).collect();
        assert_eq!(
            helps,
            [
                "write `hosts` as a list: `[a, b]` on one line, or one `- item` per line",
                "write `quota:` with its keys indented below it, one `key: value` per line",
            ]
        );
        let diags = decode_kdl("version 1\ntenant t {\n    hosts {\n        h\n    }\n    quota 1 2\n}\n");
        let helps: Vec<&str> = diags.iter().filter_map(|d| d.help.as_deref()).collect();
        assert_eq!(
            helps,
            [
                "give the items as arguments of the node, on one line: `hosts a b`",
                "give `quota` properties (`quota key=value`) or a block of child nodes",
            ]
        );
    }
}
