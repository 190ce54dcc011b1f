//! The document tree both front ends produce: maps, lists and scalars, each with its span.
//!
//! YAML and KDL differ in shape (KDL has node arguments and repeated child nodes where
//! YAML has lists), so the tree keeps the few KDL-specific facts the decoder needs
//! (a node's leading argument, repeated keys) instead of guessing a YAML shape for them.

use super::source::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub span: Span,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Map),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
}

impl Scalar {
    /// What this scalar is, in the words of an error message.
    pub fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::Int(_) => "an integer",
            Scalar::Float(_) => "a number",
            Scalar::Str(_) => "a string",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Map {
    /// KDL only: the node's first argument (`host "gpu01" { … }`), which names the item.
    pub label: Option<Box<Node>>,
    /// Entries in file order; keys may repeat in KDL (repeated child nodes).
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar(s) => s.kind(),
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// Number of nodes in this tree, counting itself.
    pub fn size(&self) -> usize {
        1 + match &self.value {
            Value::Scalar(_) => 0,
            Value::Seq(items) => items.iter().map(Node::size).sum(),
            Value::Map(m) => {
                m.label.as_ref().map_or(0, |l| l.size()) + m.entries.iter().map(|e| e.value.size()).sum::<usize>()
            }
        }
    }
}
