//! The JSON Schema of the YAML form and the Markdown key reference, both made from the
//! shape tables the decoder uses.

use serde_json::{Map, Value, json};

use super::decode::Word;
use super::model::FILE;
use super::model::network::{NETWORK, NetKind, kind_keys};
use super::model::scope::SCOPE;
use super::model::storage::POOL;
use super::model::workload::DISK;
use super::shape::{Shape, Ty};

const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$";
const SIZE_PATTERN: &str = r"^\s*[0-9]+(\.[0-9]+)?\s*(B|KiB|K|KB|MiB|M|MB|GiB|G|GB|TiB|T|TB)\s*$";
const CPUSET_PATTERN: &str = r"^\s*[0-9]+(\s*-\s*[0-9]+)?(\s*,\s*[0-9]+(\s*-\s*[0-9]+)?)*\s*$";
const PCI_PATTERN: &str = r"^([0-9a-fA-F]{1,4}:)?[0-9a-fA-F]{1,2}:[01]?[0-9a-fA-F]\.[0-7]$";
const MIG_PATTERN: &str = r"^[1-8]g\.[0-9]+gb(\+me|\+me\.all|-me)?$";
/// What the kernel takes as an interface name (`desired::names::valid_ifname`): printable
/// ASCII without space, `/` or `:`; `.` and `..` are refused by `not`. 15 bytes: IFNAMSIZ
/// less the terminating NUL.
const IFNAME_PATTERN: &str = r"^[!-.0-9;-~]{1,15}$";
const IFNAME_MAX_BYTES: u64 = 15;

/// Help an editor shows instead of a failed regex (`patternErrorMessage` is read by VS
/// Code's JSON and YAML language servers; other validators ignore it).
fn help(pattern: &str, message: &str) -> Value {
    json!({ "type": "string", "pattern": pattern, "patternErrorMessage": message })
}

/// The JSON Schema (draft 2020-12) of a YAML factory file.
pub fn json_schema() -> Value {
    let mut defs = Map::new();
    let root = object(&FILE, &mut defs);
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://fabrik.dev/schema/fabrik.schema.json",
        "title": "fabrik factory",
    });
    if let (Value::Object(s), Value::Object(r)) = (&mut schema, root) {
        s.extend(r);
        s.insert("$defs".into(), Value::Object(defs));
    }
    schema
}

fn def_name(shape: &Shape) -> String {
    shape
        .name
        .split([' ', '-'])
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
        })
        .collect()
}

fn object(shape: &'static Shape, defs: &mut Map<String, Value>) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in shape.all() {
        let mut s = ty(&f.ty, defs);
        if let Value::Object(m) = &mut s {
            m.insert("description".into(), Value::String(f.doc.to_string()));
            m.insert(
                "markdownDescription".into(),
                Value::String(format!(
                    "{}\n\n*{}*{}",
                    f.doc,
                    describe(&f.ty),
                    if f.required { ", required" } else { "" }
                )),
            );
        }
        props.insert(f.key.to_string(), s);
        if f.required {
            required.push(Value::String(f.key.to_string()));
        }
    }
    let mut o = json!({
        "type": "object",
        "description": shape.doc,
        "properties": props,
        "required": required,
        "additionalProperties": false,
    });
    let rules = conditions(shape);
    if let (Value::Object(m), false) = (&mut o, rules.is_empty()) {
        m.insert("allOf".into(), Value::Array(rules));
    }
    o
}

/// The rules between keys the decoder enforces for one shape, as `if`/`then`: a network's
/// kind decides which keys it needs and which it must not have; so does a pool's type and
/// a scope's kind; a disk without an image needs a size and a pool.
fn conditions(shape: &'static Shape) -> Vec<Value> {
    if std::ptr::eq(shape, &NETWORK) {
        network_conditions()
    } else if std::ptr::eq(shape, &POOL) {
        vec![
            when("type", json!("dir"), forbid(&[("source", "remove `source`: only logical and netfs pools use it")])),
            when("type", json!(["logical", "netfs"]), json!({ "required": ["source"] })),
        ]
    } else if std::ptr::eq(shape, &SCOPE) {
        vec![
            when(
                "kind",
                json!("operator"),
                forbid(&[("tenant", "an operator's file belongs to no tenant: remove `tenant`, or `kind`")]),
            ),
            when("kind", json!("tenant"), json!({ "required": ["tenant"] })),
            json!({ "anyOf": [{ "required": ["kind"] }, { "required": ["tenant"] }], "errorMessage": "a scope names its owner: `kind` or `tenant`" }),
        ]
    } else if std::ptr::eq(shape, &DISK) {
        vec![json!({ "if": { "not": { "required": ["image"] } }, "then": { "required": ["size", "pool"] } })]
    } else {
        Vec::new()
    }
}

/// `then` applies when `key` is present and equals `value` (or, for a list, one of them).
fn when(key: &str, value: Value, then: Value) -> Value {
    let test = match value {
        Value::Array(_) => json!({ "enum": value }),
        v => json!({ "const": v }),
    };
    json!({ "if": { "properties": { key: test }, "required": [key] }, "then": then })
}

/// Keys that must be absent, each with the message an editor shows.
fn forbid(keys: &[(&str, &str)]) -> Value {
    let props: Map<String, Value> = keys
        .iter()
        .map(|(key, message)| (key.to_string(), json!({ "not": {}, "errorMessage": message, "description": message })))
        .collect();
    json!({ "properties": props })
}

fn network_conditions() -> Vec<Value> {
    let mut rules: Vec<Value> = NetKind::NAMES
        .iter()
        .enumerate()
        .map(|(i, word)| {
            let (needs, ignores) = kind_keys(NetKind::from_index(i));
            let messages: Vec<(String, String)> = ignores
                .iter()
                .map(|key| {
                    let users: Vec<&str> = NetKind::NAMES
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| !kind_keys(NetKind::from_index(j)).1.contains(key))
                        .map(|(_, w)| *w)
                        .collect();
                    (
                        key.to_string(),
                        format!("a {word} network has no `{key}`: only {} networks use it", users.join(" and ")),
                    )
                })
                .collect();
            let pairs: Vec<(&str, &str)> = messages.iter().map(|(k, m)| (k.as_str(), m.as_str())).collect();
            let mut then = forbid(&pairs);
            then["required"] = json!(needs);
            when("kind", json!(word), then)
        })
        .collect();
    rules.push(when("purpose", json!("tenant"), json!({ "required": ["tenant"] })));
    rules.push(when(
        "shared",
        json!(true),
        json!({ "not": { "required": ["tenant"] }, "errorMessage": "a network is either owned by one tenant or shared by all; drop one of the keys" }),
    ));
    rules
}

/// The scalar shorthand of an object (`nics: [demo-net]`) stands for its label alone, so
/// it is valid only where the label is the one key the object needs (`vms: [foo]` lacks
/// the VM's tenant).
fn shorthand(shape: &'static Shape) -> Option<&'static super::shape::Field> {
    let label = shape.label.and_then(|l| shape.field(l))?;
    shape.all().all(|f| !f.required || f.key == label.key).then_some(label)
}

fn reference(shape: &'static Shape, defs: &mut Map<String, Value>) -> Value {
    let name = def_name(shape);
    if !defs.contains_key(&name) {
        defs.insert(name.clone(), Value::Null); // reserve, in case of recursion
        let o = object(shape, defs);
        defs.insert(name.clone(), o);
    }
    json!({ "$ref": format!("#/$defs/{name}") })
}

fn ty(t: &Ty, defs: &mut Map<String, Value>) -> Value {
    match t {
        Ty::Str => json!({ "type": "string" }),
        Ty::Name => {
            help(NAME_PATTERN, "names are 1 to 63 letters, digits, `-`, `_` or `.`, and start with a letter or digit")
        }
        Ty::Int { min, max } => json!({ "type": "integer", "minimum": min, "maximum": max }),
        Ty::Float { min, max } => json!({ "type": "number", "minimum": min, "maximum": max }),
        Ty::Bool => json!({ "type": "boolean" }),
        Ty::Scalar => json!({ "type": ["string", "integer", "boolean"] }),
        Ty::Size => help(SIZE_PATTERN, "a size with a unit: `128GiB`, `512MiB`, `2T`"),
        Ty::PageSize => {
            let mut s = help(SIZE_PATTERN, "a hugepage size: `2M` or `1G`");
            s["examples"] = json!(["2M", "1G"]);
            s
        }
        Ty::CpuSet => json!({ "anyOf": [
            { "type": "integer", "minimum": 0 },
            help(CPUSET_PATTERN, "a CPU list: `0-27,56-83`"),
        ] }),
        Ty::Pci => help(PCI_PATTERN, "a PCI address: `0000:3b:00.0`"),
        Ty::MigProfile => help(MIG_PATTERN, "a MIG profile: `3g.71gb`, `1g.18gb+me`"),
        Ty::IfName => json!({
            "type": "string",
            "pattern": IFNAME_PATTERN,
            "maxLength": IFNAME_MAX_BYTES,
            "not": { "enum": [".", ".."] },
            "patternErrorMessage": "interface names are 1 to 15 bytes of printable ASCII, without spaces, `/` or `:`",
        }),
        Ty::Ip => json!({ "type": "string", "anyOf": [{ "format": "ipv4" }, { "format": "ipv6" }] }),
        Ty::Enum(names) => json!({ "enum": names }),
        Ty::List(item) => json!({ "type": "array", "items": ty(item, defs) }),
        Ty::Items { shape, .. } => {
            let r = reference(shape, defs);
            let item = match shorthand(shape) {
                Some(label) => json!({ "anyOf": [r, ty(&label.ty, defs)] }),
                None => r,
            };
            json!({ "type": "array", "items": item })
        }
        // An object with a label may be given as that label alone (`scope: operator`).
        Ty::Object(shape) => {
            let r = reference(shape, defs);
            match shorthand(shape) {
                Some(label) => json!({ "anyOf": [r, ty(&label.ty, defs)] }),
                None => r,
            }
        }
        Ty::MapOf { key, value } => json!({
            "type": "object",
            "propertyNames": ty(key, defs),
            "additionalProperties": ty(value, defs),
        }),
    }
}

/// The key reference, as Markdown: one section per object.
pub fn markdown() -> String {
    let mut out = String::from(
        "# fabrik language reference\n\n\
         Generated by `fabrik schema --format markdown` from the same tables the decoder uses; \
         do not edit by hand. Keys are the same in YAML and KDL; in KDL a list of objects is \
         written as one child node per item, named in the singular (`host \"gpu01\" { … }`), \
         and the item's first key (shown as *label*) may be given as the node's argument.\n",
    );
    let mut seen = Vec::new();
    section(&FILE, &mut out, &mut seen);
    out
}

fn section(shape: &'static Shape, out: &mut String, seen: &mut Vec<&'static str>) {
    if seen.contains(&shape.name) {
        return;
    }
    seen.push(shape.name);
    out.push_str(&format!(
        "\n## {}\n\n{}\n\n| key | type | required | meaning |\n|---|---|---|---|\n",
        shape.name, shape.doc
    ));
    for f in shape.all() {
        let label = if shape.label == Some(f.key) { " (*label*)" } else { "" };
        let key = match &f.ty {
            Ty::Items { singular, .. } => format!("`{}` (KDL: `{singular}`)", f.key),
            _ => format!("`{}`", f.key),
        };
        out.push_str(&format!(
            "| {key}{label} | {} | {} | {} |\n",
            describe(&f.ty),
            if f.required { "yes" } else { "no" },
            f.doc.replace('|', "\\|")
        ));
    }
    for f in shape.all() {
        match &f.ty {
            Ty::Items { shape, .. } | Ty::Object(shape) => section(shape, out, seen),
            _ => {}
        }
    }
}

fn describe(t: &Ty) -> String {
    match t {
        Ty::Str => "string".into(),
        Ty::Name => "name".into(),
        Ty::Int { min, max } => format!("integer {min}–{max}"),
        Ty::Float { min, max } => format!("number {min}–{max}"),
        Ty::Bool => "boolean".into(),
        Ty::Scalar => "string, integer or boolean".into(),
        Ty::Size => "size (`128GiB`)".into(),
        Ty::PageSize => "page size (`2M`, `1G`)".into(),
        Ty::CpuSet => "CPU list (`0-27,56-83`)".into(),
        Ty::Pci => "PCI address (`0000:3b:00.0`)".into(),
        Ty::MigProfile => "MIG profile (`3g.71gb`)".into(),
        Ty::IfName => "interface name (≤ 15 bytes)".into(),
        Ty::Ip => "IP address (`10.0.0.11`, `fd00::11`)".into(),
        Ty::Enum(names) => names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" \\| "),
        Ty::List(item) => format!("list of {}", describe(item)),
        Ty::Items { shape, .. } => {
            format!("list of [{}](#{})", shape.name, shape.name.to_lowercase().replace(' ', "-"))
        }
        Ty::Object(shape) => format!("[{}](#{})", shape.name, shape.name.to_lowercase().replace(' ', "-")),
        Ty::MapOf { key, value } => format!("map of {} → {}", describe(key), describe(value)),
    }
}
