//! YAML front end: text → [`Node`] tree, with every node's span.
//!
//! serde_yaml gives no positions for values and stops at the first error, so we read
//! YAML events (saphyr-parser, with source markers) and build the tree ourselves. Plain
//! scalars are resolved by the YAML 1.2 core schema, so `yes` stays a string and `0x8001`
//! is an integer; quoted scalars are always strings.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};

use super::source::{FileId, SourceFile, Span};
use super::tree::{Entry, Map, Node, Scalar, Value};
use crate::diag::Diagnostic;

/// Nodes that anchors and aliases may copy in one file, in all: a "billion laughs"
/// file must not exhaust memory. A factory that shares a block of 20 settings among
/// 10,000 VMs copies 200,000.
pub const ALIAS_COPY_NODES_MAX: usize = 1_000_000;

/// Memory those copies may take in one file, in bytes, estimated as one [`Node`] per
/// node plus the text of its keys and strings: few nodes can hold long strings.
pub const ALIAS_COPY_BYTES_MAX: usize = 64 << 20;

/// Levels of lists and maps in one file, aliases expanded; deeper nesting is refused
/// before it can exhaust the stack of the code that walks the tree. A factory needs
/// about 8.
pub const NESTING_MAX: usize = 128;

/// Parses one YAML file. `Ok(None)` means the file holds no document at all.
pub fn parse(file_id: FileId, file: &SourceFile) -> Result<Option<Node>, Diagnostic> {
    let mut b = Builder {
        file_id,
        file,
        parser: Parser::new_from_str(&file.text),
        anchors: HashMap::new(),
        copied: Measure::default(),
        depth: 0,
        open: Vec::new(),
    };
    b.document()
}

struct Builder<'a> {
    file_id: FileId,
    file: &'a SourceFile,
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Anchored>,
    /// What anchors and aliases copied so far.
    copied: Measure,
    depth: usize,
    /// For each collection being read, its opening `[` or `{` when it is a flow one: a
    /// syntax error later on is most often that bracket left unclosed.
    open: Vec<Option<Span>>,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), Diagnostic> {
        match self.parser.next_event() {
            Some(Ok((ev, span))) => {
                let start = self.file.offset_of(span.start.line(), span.start.col());
                let end = self.file.offset_of(span.end.line(), span.end.col());
                Ok((ev, Span::new(self.file_id, start, end)))
            }
            Some(Err(e)) => Err(self.scan_error(&e)),
            None => Err(Diagnostic::error("fabrik::spec::yaml-syntax", "unexpected end of YAML input")
                .at(self.eof(), "input ends here")),
        }
    }

    fn eof(&self) -> Span {
        Span::new(self.file_id, self.file.text.len(), self.file.text.len())
    }

    fn scan_error(&self, e: &ScanError) -> Diagnostic {
        let m = e.marker();
        let mut at = self.file.offset_of(m.line(), m.col());
        let info = e.info();
        let mut label = "here";
        let help = if info.contains("unprintable") {
            "remove the control character (a NUL byte or another code below space, other than tab and newline); is this a binary file?"
        } else if info.contains("tab") {
            // The scanner marks where the token began; point at the tab itself.
            if let Some(tab) = self.tab_near(at) {
                at = tab;
                label = "tab";
            }
            "YAML indentation must use spaces, not tabs"
        } else if info.contains("quoted scalar") {
            label = "the string starts here";
            "is the closing quote missing? A quoted string ends with the quote it starts with"
        } else if info.contains("mapping values are not allowed") {
            "a value that contains `: ` must be quoted, or the indentation is off"
        } else if info.contains("unknown anchor") {
            "an alias `*name` refers to an anchor `&name` given earlier in the same file; define it, or fix the name"
        } else if info.contains("did not find expected") {
            "check the indentation: the keys of one map, and the `- ` items of one list, start in the same column"
        } else {
            "check the indentation and quoting around this place"
        };
        let mut d = Diagnostic::error("fabrik::spec::yaml-syntax", format!("invalid YAML: {info}"))
            .at(self.point(at), label)
            .help(help);
        let unclosed = self.open.iter().rev().flatten().next();
        if let Some(&open) = unclosed
            && self.file.line_col(open.start).line < self.file.line_col(at as u32).line
        {
            let (what, close) = if self.file.slice(open) == "[" { ("list", ']') } else { ("map", '}') };
            d = d.also(open, format!("this {what} is not closed")).help(format!("close the {what} with `{close}`"));
        }
        d
    }

    /// The `[` or `{` a flow collection starts with; `None` for a block one.
    fn flow_bracket(&self, start: Span) -> Option<Span> {
        let at = start.start as usize;
        matches!(self.file.text.as_bytes().get(at), Some(b'[' | b'{')).then(|| Span::new(self.file_id, at, at + 1))
    }

    /// A span of the character at `at` (empty at the end of the file).
    fn point(&self, at: usize) -> Span {
        let at = at.min(self.file.text.len());
        let len = self.file.text[at..].chars().next().map_or(0, char::len_utf8);
        Span::new(self.file_id, at, at + len)
    }

    /// The first tab from the start of `at`'s line through the end of the next line.
    fn tab_near(&self, at: usize) -> Option<usize> {
        let text = self.file.text.as_str();
        let at = at.min(text.len());
        let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let end = text[start..].match_indices('\n').nth(1).map_or(text.len(), |(i, _)| start + i);
        text[start..end].find('\t').map(|i| start + i)
    }

    fn document(&mut self) -> Result<Option<Node>, Diagnostic> {
        let mut root = None;
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentEnd => {}
                Event::StreamEnd => return Ok(root),
                Event::DocumentStart(_) => {
                    if root.is_some() {
                        return Err(Diagnostic::error(
                            "fabrik::spec::yaml-syntax",
                            "more than one YAML document in one file",
                        )
                        .at(span, "a second document starts here")
                        .help("put each document in its own file; a factory may be a directory of files"));
                    }
                    let (ev, span) = self.next()?;
                    root = Some(self.node(ev, span)?);
                }
                other => {
                    return Err(Diagnostic::error(
                        "fabrik::spec::yaml-syntax",
                        format!("unexpected YAML event {other:?}"),
                    )
                    .at(span, "here"));
                }
            }
        }
    }

    fn node(&mut self, ev: Event<'a>, span: Span) -> Result<Node, Diagnostic> {
        let nests = matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..));
        if nests {
            self.depth += 1;
            if self.depth > NESTING_MAX {
                return Err(too_deep(span, NESTING_MAX));
            }
        }
        let node = self.node_inner(ev, span);
        if nests {
            self.depth -= 1;
        }
        node
    }

    fn node_inner(&mut self, ev: Event<'a>, span: Span) -> Result<Node, Diagnostic> {
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                refuse_tag(tag.as_deref(), span)?;
                let node = Node { span, value: Value::Scalar(resolve(text, style)) };
                self.remember(anchor, &node)?;
                Ok(node)
            }
            Event::SequenceStart(anchor, tag) => {
                refuse_tag(tag.as_deref(), span)?;
                self.open.push(self.flow_bracket(span));
                let mut items = Vec::new();
                let mut end = span;
                loop {
                    let (ev, s) = self.next()?;
                    if let Event::SequenceEnd = ev {
                        end = end.join(s);
                        break;
                    }
                    let item = self.node(ev, s)?;
                    end = end.join(item.span);
                    items.push(item);
                }
                self.open.pop();
                let node = Node { span: span.join(end), value: Value::Seq(items) };
                self.remember(anchor, &node)?;
                Ok(node)
            }
            Event::MappingStart(anchor, tag) => {
                refuse_tag(tag.as_deref(), span)?;
                self.open.push(self.flow_bracket(span));
                let mut entries = Vec::new();
                let mut end = span;
                loop {
                    let (ev, key_span) = self.next()?;
                    let key = match ev {
                        Event::MappingEnd => {
                            end = end.join(key_span);
                            break;
                        }
                        Event::Scalar(text, ..) => text.into_owned(),
                        Event::Alias(_) | Event::SequenceStart(..) | Event::MappingStart(..) => {
                            return Err(Diagnostic::error("fabrik::spec::yaml-syntax", "map keys must be plain words")
                                .at(key_span, "a list, map or alias used as a key")
                                .help("write keys as plain words, like `name:`"));
                        }
                        other => {
                            return Err(Diagnostic::error(
                                "fabrik::spec::yaml-syntax",
                                format!("unexpected YAML event {other:?}"),
                            )
                            .at(key_span, "here"));
                        }
                    };
                    let (ev, vspan) = self.next()?;
                    let value = self.node(ev, vspan)?;
                    // An empty value (`key:`) gets an empty span right after the key.
                    let value = if value.span.is_empty() && value.value == Value::Scalar(Scalar::Null) {
                        Node { span: Span::new(self.file_id, key_span.end as usize, key_span.end as usize), ..value }
                    } else {
                        value
                    };
                    end = end.join(value.span);
                    entries.push(Entry { key, key_span, value });
                }
                self.open.pop();
                let node = Node { span: span.join(end), value: Value::Map(Map { label: None, entries }) };
                self.remember(anchor, &node)?;
                Ok(node)
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(
                        Diagnostic::error("fabrik::spec::yaml-syntax", "alias to an unknown anchor").at(span, "here")
                    );
                };
                // The alias stands inside the lists and maps open around it; a collection
                // counted there already (`depth` was raised for it) is the alias itself.
                let open = self.depth;
                if open + target.measure.depth > NESTING_MAX {
                    return Err(too_deep(span, NESTING_MAX)
                        .also(target.node.span, format!("the anchor is {} levels deep", target.measure.depth)));
                }
                let (measure, value) = (target.measure, target.node.value.clone());
                self.copy(measure, span)?;
                Ok(Node { span, value })
            }
            other => Err(Diagnostic::error("fabrik::spec::yaml-syntax", format!("unexpected YAML event {other:?}"))
                .at(span, "here")),
        }
    }

    /// Keeps a copy of an anchored node for its aliases; the copy counts against the
    /// budget, since anchors nested in one another would copy a tree once per level.
    fn remember(&mut self, anchor: usize, node: &Node) -> Result<(), Diagnostic> {
        if anchor != 0 {
            let measure = Measure::of(node);
            self.copy(measure, node.span)?;
            self.anchors.insert(anchor, Anchored { node: node.clone(), measure });
        }
        Ok(())
    }

    /// Counts a copy of `measure` at `span` against the file's budget.
    fn copy(&mut self, measure: Measure, span: Span) -> Result<(), Diagnostic> {
        self.copied.nodes += measure.nodes;
        self.copied.bytes += measure.bytes;
        if self.copied.nodes > ALIAS_COPY_NODES_MAX || self.copied.bytes > ALIAS_COPY_BYTES_MAX {
            return Err(Diagnostic::error(
                "fabrik::spec::alias-limit",
                format!(
                    "YAML anchors and aliases copy more than {ALIAS_COPY_NODES_MAX} nodes or {} MiB",
                    ALIAS_COPY_BYTES_MAX >> 20
                ),
            )
            .at(span, "copying this crosses the limit")
            .help("use templates instead of deeply nested aliases"));
        }
        Ok(())
    }
}

/// An anchored node and what one copy of it costs.
struct Anchored {
    node: Node,
    measure: Measure,
}

/// The size of a tree: its nodes, their estimated memory, and its levels of nesting.
#[derive(Clone, Copy, Debug, Default)]
struct Measure {
    nodes: usize,
    bytes: usize,
    /// Levels of lists and maps: 0 for a scalar.
    depth: usize,
}

impl Measure {
    /// Recursion is bounded: the tree was built within [`NESTING_MAX`].
    fn of(node: &Node) -> Measure {
        let node_bytes = std::mem::size_of::<Node>();
        match &node.value {
            Value::Scalar(Scalar::Str(s)) => Measure { nodes: 1, bytes: node_bytes + s.len(), depth: 0 },
            Value::Scalar(Scalar::Null | Scalar::Bool(_) | Scalar::Int(_) | Scalar::Float(_)) => {
                Measure { nodes: 1, bytes: node_bytes, depth: 0 }
            }
            Value::Seq(items) => {
                let mut m = Measure { nodes: 1, bytes: node_bytes, depth: 0 };
                for item in items {
                    m.add(Measure::of(item), 0);
                }
                m.depth += 1;
                m
            }
            Value::Map(map) => {
                let mut m = Measure { nodes: 1, bytes: node_bytes, depth: 0 };
                if let Some(label) = &map.label {
                    m.add(Measure::of(label), 0);
                }
                for e in &map.entries {
                    m.add(Measure::of(&e.value), std::mem::size_of::<Entry>() + e.key.len());
                }
                m.depth += 1;
                m
            }
        }
    }

    fn add(&mut self, child: Measure, extra_bytes: usize) {
        self.nodes += child.nodes;
        self.bytes += child.bytes + extra_bytes;
        self.depth = self.depth.max(child.depth);
    }
}

/// YAML tags (`!!str`, `!custom`) would change what a value means; fabrik reads plain
/// YAML, so a tag is refused rather than ignored.
fn refuse_tag(tag: Option<&saphyr_parser::Tag>, span: Span) -> Result<(), Diagnostic> {
    match tag {
        None => Ok(()),
        Some(tag) => Err(Diagnostic::error(
            "fabrik::spec::yaml-tag",
            format!("YAML tag `{}{}` is not supported", tag.handle, tag.suffix),
        )
        .at(span, "tagged value")
        .help("remove the tag; to make a value a string, quote it")),
    }
}

pub fn too_deep(span: Span, limit: usize) -> Diagnostic {
    Diagnostic::error("fabrik::spec::too-deep", format!("nesting deeper than {limit} levels"))
        .at(span, "too deep here")
        .help("a factory is a few levels deep; this file is probably generated wrongly or corrupt")
}

/// Types a scalar by the YAML 1.2 core schema (plain scalars only).
fn resolve(text: Cow<'_, str>, style: ScalarStyle) -> Scalar {
    if style != ScalarStyle::Plain {
        return Scalar::Str(text.into_owned());
    }
    let t: &str = &text;
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(t) {
        return Scalar::Int(i);
    }
    if is_float(t)
        && let Ok(f) = t.parse::<f64>()
    {
        return Scalar::Float(f);
    }
    Scalar::Str(text.into_owned())
}

fn parse_int(t: &str) -> Option<i128> {
    let b = t.as_bytes();
    if let Some(hex) = t.strip_prefix("0x") {
        return (!hex.is_empty() && hex.bytes().all(|c| c.is_ascii_hexdigit()))
            .then(|| i128::from_str_radix(hex, 16).ok())
            .flatten();
    }
    if let Some(oct) = t.strip_prefix("0o") {
        return (!oct.is_empty() && oct.bytes().all(|c| (b'0'..=b'7').contains(&c)))
            .then(|| i128::from_str_radix(oct, 8).ok())
            .flatten();
    }
    let digits = match b.first() {
        Some(b'-' | b'+') => &t[1..],
        _ => t,
    };
    (!digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())).then(|| t.parse().ok()).flatten()
}

fn is_float(t: &str) -> bool {
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    let mantissa_ok =
        digits(int) && frac.is_none_or(digits) && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exp_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::source::Syntax;

    fn parse_str(text: &str) -> Result<Option<Node>, Diagnostic> {
        let f = SourceFile::new("t.yaml".into(), Syntax::Yaml, text.into());
        parse(FileId(0), &f)
    }

    #[test]
    fn core_schema_scalars() {
        assert_eq!(resolve("yes".into(), ScalarStyle::Plain), Scalar::Str("yes".into()));
        assert_eq!(resolve("0x8001".into(), ScalarStyle::Plain), Scalar::Int(0x8001));
        assert_eq!(resolve("1.5".into(), ScalarStyle::Plain), Scalar::Float(1.5));
        assert_eq!(resolve("42".into(), ScalarStyle::DoubleQuoted), Scalar::Str("42".into()));
        assert_eq!(resolve("128GiB".into(), ScalarStyle::Plain), Scalar::Str("128GiB".into()));
        assert_eq!(resolve("0000:3b:00.0".into(), ScalarStyle::Plain), Scalar::Str("0000:3b:00.0".into()));
        assert_eq!(resolve("1e3".into(), ScalarStyle::Plain), Scalar::Float(1000.0));
        assert_eq!(resolve("~".into(), ScalarStyle::Plain), Scalar::Null);
    }

    #[test]
    fn spans_point_at_values() {
        let text = "version: 1\nhosts:\n  - name: gpu01\n";
        let node = parse_str(text).unwrap().unwrap();
        let Value::Map(m) = &node.value else { panic!("root is a map") };
        let hosts = &m.entries[1];
        assert_eq!(&text[hosts.key_span.start as usize..hosts.key_span.end as usize], "hosts");
        let Value::Seq(items) = &hosts.value.value else { panic!("hosts is a list") };
        let Value::Map(h) = &items[0].value else { panic!("host is a map") };
        let name = &h.entries[0].value;
        assert_eq!(&text[name.span.start as usize..name.span.end as usize], "gpu01");
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.code, "fabrik::spec::alias-limit");
    }

    #[test]
    fn alias_copies_are_counted_in_nodes_at_their_edge() {
        // An anchored list of 999 strings is 1,000 nodes; it and 999 aliases copy
        // 1,000,000, the limit. One more copied scalar crosses it.
        let items = vec!["x"; 999].join(", ");
        let aliases = vec!["*a"; 999].join(", ");
        let at_limit = format!("a: &a [{items}]\nb: [{aliases}]\n");
        assert!(std::mem::size_of::<Node>() * ALIAS_COPY_NODES_MAX + 999_000 < ALIAS_COPY_BYTES_MAX);
        assert!(parse_str(&at_limit).is_ok());
        let err = parse_str(&format!("{at_limit}c: &s y\n")).unwrap_err();
        assert_eq!(err.code, "fabrik::spec::alias-limit");
        assert_eq!(err.primary.unwrap().span.start as usize, at_limit.len() + 3);
    }

    #[test]
    fn alias_copies_are_counted_in_bytes_at_their_edge() {
        // Few nodes, long strings: 64 copies of 1 MiB each (its node included).
        let long = "x".repeat((1 << 20) - std::mem::size_of::<Node>());
        let aliases = vec!["*s"; 63].join(", ");
        let at_limit = format!("s: &s {long}\nb: [{aliases}]\n");
        assert!(parse_str(&at_limit).is_ok());
        let err = parse_str(&format!("s: &s {long}\nb: [{aliases}, *s]\n")).unwrap_err();
        assert_eq!(err.code, "fabrik::spec::alias-limit");
    }

    #[test]
    fn a_byte_bomb_is_refused_quickly() {
        // 1.4 KB that once expanded to more than a gigabyte: strings doubled ten times.
        let mut text = format!("a0: &a0 {}\n", "x".repeat(1000));
        for i in 1..=30 {
            text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}]\n", p = i - 1));
        }
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.code, "fabrik::spec::alias-limit");
    }

    #[test]
    fn aliases_cannot_hide_nesting() {
        // An anchor 100 levels deep, used 100 levels deep, nests 200 levels.
        let deep = |n: usize| format!("{}x{}", "[".repeat(n), "]".repeat(n));
        let text = format!("a: &a {}\nb: {}\n", deep(100), deep(99).replacen('x', "*a", 1));
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.code, "fabrik::spec::too-deep");
        assert_eq!(&text[err.primary.unwrap().span.start as usize..][..2], "*a");
        // At the edge: the alias's levels and the ones around it make exactly the limit.
        let open = NESTING_MAX - 1 - 100;
        let at_limit = format!("a: &a {}\nb: {}\n", deep(100), deep(open).replacen('x', "*a", 1));
        assert!(parse_str(&at_limit).is_ok());
        let over = format!("a: &a {}\nb: {}\n", deep(100), deep(open + 1).replacen('x', "*a", 1));
        assert_eq!(parse_str(&over).unwrap_err().code, "fabrik::spec::too-deep");
    }

    #[test]
    fn tags_are_refused_not_ignored() {
        for text in ["version: 1\nfactory: !!str f\n", "version: 1\nhosts: !custom []\n", "x: !!map {}\n"] {
            let err = parse_str(text).unwrap_err();
            assert_eq!(err.code, "fabrik::spec::yaml-tag", "{text}");
            assert!(err.primary.is_some());
        }
    }

    #[test]
    fn a_nul_byte_gets_help_about_control_characters() {
        let err = parse_str("version: 1\nfactory: a\0b\n").unwrap_err();
        let help = err.help.unwrap();
        assert!(help.contains("control character") && !help.contains("indentation"), "{help}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text: String = (1..3000).map(|i| format!("{}a:\n", "  ".repeat(i))).collect();
        let err = parse_str(&format!("version: 1\nx:\n{text}")).unwrap_err();
        assert_eq!(err.code, "fabrik::spec::too-deep");
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_str("version: 1\nhosts: [a, b\n").unwrap_err();
        assert_eq!(err.code, "fabrik::spec::yaml-syntax");
        assert!(err.primary.is_some());
    }

    #[test]
    fn a_tab_is_pointed_at() {
        let err = parse_str("version: 1\nhosts:\n  - name: h\n\turi: x\n").unwrap_err();
        let span = err.primary.unwrap().span;
        assert_eq!(&"version: 1\nhosts:\n  - name: h\n\turi: x\n"[span.start as usize..span.end as usize], "\t");
    }

    #[test]
    fn an_unclosed_flow_list_is_shown_with_its_bracket() {
        let text = "version: 1\ntenants:\n  - name: t\n    hosts: [a, b\n  - name: u\n";
        let err = parse_str(text).unwrap_err();
        let open = &err.secondary[0];
        assert_eq!(open.span.start as usize, text.find('[').unwrap());
        assert_eq!(open.text, "this list is not closed");
        assert_eq!(err.help.as_deref(), Some("close the list with `]`"));
        // A flow list over several lines that is closed is no error.
        assert!(parse_str("version: 1\nhosts: [a,\n  b]\n").is_ok());
    }

    #[test]
    fn empty_file_has_no_document() {
        assert_eq!(parse_str("# only a comment\n").unwrap(), None);
    }
}
