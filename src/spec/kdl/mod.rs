//! KDL front end: text → [`Node`] tree, with every node's span.
//!
//! A KDL node becomes a map entry named after the node:
//! - `mtu 9000` (one argument) is a scalar, `hosts "a" "b"` (several) a list;
//! - `gpu "0000:1b:00.0" model="H200-141GB" { … }` is a map whose label is the leading
//!   argument and whose entries are its properties and children;
//! - repeated nodes (`host "a" {…}` `host "b" {…}`) stay repeated entries; the decoder
//!   collects them into the list the YAML form spells `hosts:`.
//!
//! Most files are read by [`fast`], a single-pass parser for the part of KDL that
//! factories are written in; anything else, and every file with a mistake, goes through
//! the kdl crate, which also words the diagnostics.

mod budget;
mod fast;

pub use budget::{COMMENT_STEPS_MAX, NESTING_MAX};

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};

use super::source::{FileId, SourceFile, Span};
use super::tree::{Entry, Map, Node, Scalar, Value};
use crate::diag::Diagnostic;

/// Parses one KDL file. `Ok(None)` means the file holds no node at all.
pub fn parse(file_id: FileId, file: &SourceFile) -> Result<Option<Node>, Vec<Diagnostic>> {
    match fast::parse(file_id, &file.text) {
        Some(root) => Ok(root),
        None => parse_with_crate(file_id, &file.text),
    }
}

/// The fast path alone: `None` where it leaves the file to the kdl crate. Public for
/// the differential test (`tests/kdl_fast.rs`), which holds it to [`parse_without_fast_path`].
pub fn parse_fast_path(file_id: FileId, file: &SourceFile) -> Option<Option<Node>> {
    fast::parse(file_id, &file.text)
}

/// [`parse`] as it would be without the fast path: every file through the kdl crate.
pub fn parse_without_fast_path(file_id: FileId, file: &SourceFile) -> Result<Option<Node>, Vec<Diagnostic>> {
    parse_with_crate(file_id, &file.text)
}

/// Stack of the thread the kdl crate parses on. Within [`budget`]'s limits the crate
/// needs at most a quarter of it in a debug build (`budget_fits_a_quarter_of_the_stack`
/// below); the memory is reserved, and only what the parse touches is used.
pub const PARSE_STACK_BYTES: usize = 128 << 20;

fn parse_with_crate(file_id: FileId, text: &str) -> Result<Option<Node>, Vec<Diagnostic>> {
    budget::scan(text).map_err(|r| vec![r.diagnostic(file_id, text)])?;
    let doc = parse_on_own_stack(text, PARSE_STACK_BYTES).map_err(|e| syntax_errors(file_id, text, &e.diagnostics))?;
    if doc.nodes().is_empty() {
        return Ok(None);
    }
    let c = Converter { file_id, text };
    let mut errors = Vec::new();
    let entries = c.entries(doc.nodes(), &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let span = Span::new(file_id, 0, text.len());
    Ok(Some(Node { span, value: Value::Map(Map { label: None, entries }) }))
}

/// Children levels the fast path reads; the crate path is held to the same by [`budget`].
const NESTING_LIMIT: usize = budget::NESTING_MAX;

/// Runs the kdl crate on a thread of its own with `stack_bytes` of stack. Should the
/// thread not start, the parse runs here: the budget still bounds it.
fn parse_on_own_stack(text: &str, stack_bytes: usize) -> Result<KdlDocument, kdl::KdlError> {
    std::thread::scope(|s| {
        match std::thread::Builder::new()
            .name("kdl-parse".into())
            .stack_size(stack_bytes)
            .spawn_scoped(s, || KdlDocument::parse(text))
        {
            Ok(h) => h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => KdlDocument::parse(text),
        }
    })
}

/// How much a parse error of the kdl crate tells about its cause. The parser recovers
/// from a mistake and goes on, so one bad value is also reported as unclosed blocks and
/// stray tokens after it; only the errors of the most telling rank are shown.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// A bad value, string or property: the mistake itself.
    Value,
    NodeName,
    /// Unbalanced braces: the mistake, or the echo of one above.
    Structure,
}

fn rank(message: &str) -> Rank {
    let m = message.to_ascii_lowercase();
    if m.contains("closing '}'") || m.contains("end of document") {
        Rank::Structure
    } else if m.contains("node name") {
        Rank::NodeName
    } else {
        Rank::Value
    }
}

fn syntax_errors(file_id: FileId, text: &str, diags: &[kdl::KdlDiagnostic]) -> Vec<Diagnostic> {
    let message = |d: &kdl::KdlDiagnostic| d.message.clone().unwrap_or_else(|| "invalid KDL".to_string());
    let best = diags.iter().map(|d| rank(&message(d))).min();
    // An unclosed block is also reported a second time, at the end of its last node.
    let unclosed = diags.iter().any(|d| message(d).contains("No closing '}'"));
    let mut out: Vec<Diagnostic> = Vec::new();
    for d in diags {
        let m = message(d);
        if Some(rank(&m)) != best || (unclosed && m.contains("was not found after nodes")) {
            continue;
        }
        let diag = syntax_error(file_id, text, d, &m);
        if !out.iter().any(|o| o.primary == diag.primary && o.message == diag.message) {
            out.push(diag);
        }
    }
    out
}

/// One parse error of the kdl crate, in fabrik's words.
fn syntax_error(file_id: FileId, text: &str, d: &kdl::KdlDiagnostic, message: &str) -> Diagnostic {
    let at = error_span(file_id, text, d.span);
    let rest = text.get(at.start as usize..).unwrap_or("");
    let token: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.').collect();
    let (label, help) = if token.starts_with(|c: char| c.is_ascii_digit())
        && token.contains(|c: char| c.is_ascii_alphabetic())
    {
        (
            "starts with a digit, so it must be a number".to_string(),
            format!("a KDL value that starts with a digit and has letters must be quoted, e.g. \"{token}\""),
        )
    } else if matches!(token.as_str(), "true" | "false" | "null" | "inf" | "nan") {
        ("a bare keyword".to_string(), format!("KDL 2 writes `{token}` with a `#`: `#{token}`"))
    } else if message.contains("No closing '}'") {
        ("this block is never closed".to_string(), "add the `}` that closes this block".to_string())
    } else if message.contains("end of document") && rest.starts_with('}') {
        (
            "no block to close".to_string(),
            "this `}` closes no block: remove it, or add the `{` it was meant to close".to_string(),
        )
    } else if message.contains("property value") {
        ("no value after `=`".to_string(), "give the property a value after `=`, e.g. `memory=\"64GiB\"`".to_string())
    } else if message.contains("newline in single-line quoted string") || message.contains("closing quote") {
        (
            "this string is not closed".to_string(),
            "close the string with `\"` on the same line; a string over several lines is written in `\"\"\"`"
                .to_string(),
        )
    } else {
        let help = d.help.as_deref().map_or("check the quoting and braces around this place".to_string(), lower_first);
        ("here".to_string(), help)
    };
    Diagnostic::error("fabrik::spec::kdl-syntax", format!("invalid KDL: {}", lower_first(message)))
        .at(at, label)
        .help(help)
}

/// The kdl parser sometimes reports a span from the start of the document to the point
/// of failure; point at the last token of such a span instead, where the error is.
fn error_span(file_id: FileId, text: &str, span: miette::SourceSpan) -> Span {
    let start = span.offset().min(text.len());
    let end = (span.offset() + span.len()).min(text.len());
    let covered = text.get(start..end).unwrap_or("");
    if !covered.contains('\n') {
        return Span::new(file_id, start, end.max(start + 1).min(text.len().max(start)));
    }
    let token_start = covered
        .trim_end()
        .rfind(|c: char| c.is_whitespace() || matches!(c, '=' | '{' | ';'))
        .map_or(start, |i| start + i + 1);
    let token_end = start + covered.trim_end().len();
    if token_start < token_end {
        Span::new(file_id, token_start, token_end)
    } else {
        Span::new(file_id, end, (end + 1).min(text.len()))
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect::<String>().trim_end_matches('.').to_string(),
        None => String::new(),
    }
}

struct Converter<'a> {
    file_id: FileId,
    text: &'a str,
}

impl Converter<'_> {
    fn span(&self, s: miette::SourceSpan) -> Span {
        Span::new(self.file_id, s.offset(), s.offset() + s.len())
    }

    fn entries(&self, nodes: &[KdlNode], errors: &mut Vec<Diagnostic>) -> Vec<Entry> {
        nodes
            .iter()
            .map(|n| Entry {
                key: n.name().value().to_string(),
                key_span: self.span(n.name().span()),
                value: self.node(n, errors),
            })
            .collect()
    }

    fn node(&self, n: &KdlNode, errors: &mut Vec<Diagnostic>) -> Node {
        let args: Vec<&KdlEntry> = n.entries().iter().filter(|e| e.name().is_none()).collect();
        let props: Vec<&KdlEntry> = n.entries().iter().filter(|e| e.name().is_some()).collect();
        let node_span = self.span(n.span());
        if props.is_empty() && n.children().is_none() {
            return match args.as_slice() {
                [] => Node { span: self.span(n.name().span()), value: Value::Scalar(Scalar::Null) },
                [one] => self.scalar(one),
                many => {
                    let items: Vec<Node> = many.iter().map(|e| self.scalar(e)).collect();
                    let span = items[0].span.join(items[items.len() - 1].span);
                    Node { span, value: Value::Seq(items) }
                }
            };
        }
        if let Some(extra) = args.get(1) {
            errors.push(
                Diagnostic::error(
                    "fabrik::spec::kdl-argument",
                    format!("`{}` takes at most one argument", n.name().value()),
                )
                .at(self.span(extra.span()), "extra argument")
                .help("give other values as properties (`key=value`) or child nodes"),
            );
        }
        let label = args.first().map(|a| Box::new(self.scalar(a)));
        let mut entries: Vec<Entry> = props
            .iter()
            .map(|p| {
                let name = p.name().expect("props have names");
                Entry { key: name.value().to_string(), key_span: self.span(name.span()), value: self.prop_value(p) }
            })
            .collect();
        if let Some(children) = n.children() {
            entries.extend(self.entries(children.nodes(), errors));
        }
        Node { span: node_span, value: Value::Map(Map { label, entries }) }
    }

    fn scalar(&self, e: &KdlEntry) -> Node {
        Node { span: self.trimmed(self.span(e.span())), value: Value::Scalar(scalar(e.value())) }
    }

    /// A property's value, without its `key=`.
    fn prop_value(&self, e: &KdlEntry) -> Node {
        Node {
            span: prop_value_span(self.file_id, self.text, self.span(e.span())),
            value: Value::Scalar(scalar(e.value())),
        }
    }

    fn trimmed(&self, s: Span) -> Span {
        trimmed(self.file_id, self.text, s)
    }
}

/// The span of a property's value, given the span of the whole `key=value` entry.
/// Shared with the fast path, so that both compute it the same way.
fn prop_value_span(file_id: FileId, text: &str, entry: Span) -> Span {
    let whole = trimmed(file_id, text, entry);
    let covered = text.get(whole.start as usize..whole.end as usize).unwrap_or("");
    match covered.find('=') {
        Some(i) => {
            let rest = &covered[i + 1..];
            let skip = rest.len() - rest.trim_start().len();
            Span::new(file_id, whole.start as usize + i + 1 + skip, whole.end as usize)
        }
        None => whole,
    }
}

/// Entry spans include the whitespace before them; point at the text itself.
fn trimmed(file_id: FileId, text: &str, s: Span) -> Span {
    let covered = text.get(s.start as usize..s.end as usize).unwrap_or("");
    let lead = covered.len() - covered.trim_start().len();
    let trail = covered.len() - covered.trim_end().len();
    Span::new(file_id, s.start as usize + lead, (s.end as usize).saturating_sub(trail).max(s.start as usize + lead))
}

fn scalar(v: &KdlValue) -> Scalar {
    match v {
        KdlValue::String(s) => Scalar::Str(s.clone()),
        KdlValue::Integer(i) => Scalar::Int(*i),
        KdlValue::Float(f) => Scalar::Float(*f),
        KdlValue::Bool(b) => Scalar::Bool(*b),
        KdlValue::Null => Scalar::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::source::Syntax;

    fn parse_str(text: &str) -> (SourceFile, Result<Option<Node>, Vec<Diagnostic>>) {
        let f = SourceFile::new("t.kdl".into(), Syntax::Kdl, text.into());
        let r = parse(FileId(0), &f);
        (f, r)
    }

    #[test]
    fn node_shapes() {
        let text = "version 1\ntenant \"acme\" hosts=\"gpu01\" {\n  sharing \"exclusive\" \"mig\"\n}\n";
        let (f, r) = parse_str(text);
        let root = r.unwrap().unwrap();
        let Value::Map(m) = &root.value else { panic!() };
        assert_eq!(m.entries[0].value.value, Value::Scalar(Scalar::Int(1)));
        let Value::Map(t) = &m.entries[1].value.value else { panic!("tenant is a map") };
        assert_eq!(f.slice(t.label.as_ref().unwrap().span), "\"acme\"");
        assert_eq!(t.entries[0].key, "hosts");
        assert_eq!(f.slice(t.entries[0].value.span), "\"gpu01\"");
        assert!(matches!(t.entries[1].value.value, Value::Seq(ref v) if v.len() == 2));
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let text = format!("version 1\n{}{}", "a {".repeat(5000), "}".repeat(5000));
        let (_, r) = parse_str(&text);
        assert_eq!(r.unwrap_err()[0].code, "fabrik::spec::too-deep");
        // Within the limit, the KDL parser copes (on a test thread's small stack), and so
        // does the fast path.
        let text = format!("version 1\n{}{}", "a {".repeat(NESTING_LIMIT), "}".repeat(NESTING_LIMIT));
        let (f, r) = parse_str(&text);
        assert!(r.is_ok());
        assert!(parse_without_fast_path(FileId(0), &f).is_ok());
    }

    /// The worst input the budget lets through: every level open, and the longest
    /// comment at the deepest one. If the crate overflowed the stack here, the test
    /// process would abort.
    fn worst_within_budget() -> String {
        let steps = (budget::COMMENT_STEPS_MAX - 3) / 2;
        let levels = budget::NESTING_MAX;
        format!("{}/*{}*/{}", "a {\n".repeat(levels), " *".repeat(steps), "}\n".repeat(levels))
    }

    #[test]
    fn budget_fits_a_quarter_of_the_stack() {
        let text = worst_within_budget();
        assert_eq!(budget::scan(&text), Ok(()));
        assert!(parse_on_own_stack(&text, PARSE_STACK_BYTES / 4).is_ok());
    }

    #[test]
    fn hidden_nesting_is_refused_with_a_location() {
        let deep = |n: usize| format!("{}{}", "a {\n".repeat(n), "}\n".repeat(n));
        for hide in ["#\"}}}}\"#", "/* /* */ }}}} */", "/- { }}}} }"] {
            let text = format!("version 1\nx {hide}\n{}", deep(5000));
            let (_, r) = parse_str(&text);
            let errs = r.unwrap_err();
            assert_eq!(errs[0].code, "fabrik::spec::too-deep", "{hide}");
            assert!(errs[0].primary.is_some());
        }
    }

    #[test]
    fn syntax_errors_are_located() {
        let (_, r) = parse_str("version 1\nhost \"a {\n");
        let errs = r.unwrap_err();
        assert!(!errs.is_empty());
        assert!(errs.iter().all(|e| e.code == "fabrik::spec::kdl-syntax" && e.primary.is_some()));
    }

    fn syntax_error_of(text: &str) -> (SourceFile, Diagnostic) {
        let (f, r) = parse_str(text);
        let mut errs = r.expect_err("a syntax error");
        assert_eq!(errs.len(), 1, "one error, got {errs:?}");
        (f, errs.remove(0))
    }

    #[test]
    fn an_unclosed_block_is_one_error_at_its_brace() {
        let (f, e) = syntax_error_of("version 1\nhost h {\n    uri \"x\"\n\ntenant t {\n    hosts h\n}\n");
        let span = e.primary.unwrap().span;
        assert_eq!((f.line_col(span.start).line, f.slice(span)), (2, "{"));
        assert_eq!(e.help.as_deref(), Some("add the `}` that closes this block"));
    }

    #[test]
    fn a_bad_value_hides_the_errors_that_follow_from_it() {
        // The parser also reports the blocks around `3M=` as unclosed, and stray tokens.
        let (f, e) = syntax_error_of("version 1\nhost h {\n    numa-node 0 {\n        hugepages 3M=512\n    }\n}\n");
        let span = e.primary.unwrap().span;
        assert_eq!(f.slice(span), "3M");
        assert!(e.help.unwrap().contains("must be quoted"));
    }

    #[test]
    fn bare_keywords_are_told_to_take_a_hash() {
        let (_, e) = syntax_error_of("version 1\nnetwork n shared=true\n");
        assert_eq!(e.help.as_deref(), Some("KDL 2 writes `true` with a `#`: `#true`"));
    }
}
