//! Control characters in a file's strings and keys, refused before decoding.
//!
//! A name or path reaches libvirt XML, file systems and terminals. A NUL or newline in a
//! pool path fails only at apply; an escape sequence in an image source rewrites the
//! operator's screen when a plan shows it; a bidirectional override makes a name read
//! as another. So no string of a factory holds a control character — except free text
//! (`description`, a template's `user-data`), which may span lines and hold tabs.

use super::source::Span;
use super::tree::{Node, Scalar, Value};
use crate::diag::Diagnostic;

/// Keys whose value is free text: newlines and tabs allowed.
/// `user-data` is a guest's cloud-config, YAML text by nature.
const FREE_TEXT_KEYS: &[&str] = &["description", "user-data"];

/// Diagnostics past this many in one file are summed up in the last one: a file full
/// of control characters is binary, and one page says so.
pub const CONTROL_REPORTS_MAX: usize = 20;

/// A character that changes how a terminal shows what follows, or that a system call
/// or XML cannot carry: C0 and C1 controls, DEL, and Unicode's bidirectional controls.
pub fn is_refused(c: char, free_text: bool) -> bool {
    if free_text && matches!(c, '\n' | '\t') {
        return false;
    }
    crate::diag::is_terminal_control(c)
}

/// How a refused character is named in a message: `U+001B`.
fn named(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// Reports every string and key of the tree that holds a refused character.
pub fn check(root: &Node, diags: &mut Vec<Diagnostic>) {
    let mut found: Vec<(Span, char, bool)> = Vec::new();
    // (node, is free text); iterative, so depth costs no stack.
    let mut stack: Vec<(&Node, bool)> = vec![(root, false)];
    let bad = |s: &str, free: bool| s.chars().find(|&c| is_refused(c, free));
    while let Some((n, free)) = stack.pop() {
        match &n.value {
            Value::Scalar(Scalar::Str(s)) => {
                if let Some(c) = bad(s, free) {
                    found.push((n.span, c, false));
                }
            }
            Value::Scalar(Scalar::Null | Scalar::Bool(_) | Scalar::Int(_) | Scalar::Float(_)) => {}
            Value::Seq(items) => stack.extend(items.iter().rev().map(|i| (i, free))),
            Value::Map(m) => {
                for e in m.entries.iter().rev() {
                    stack.push((&e.value, FREE_TEXT_KEYS.contains(&e.key.as_str())));
                    if let Some(c) = bad(&e.key, false) {
                        found.push((e.key_span, c, true));
                    }
                }
                if let Some(l) = &m.label {
                    stack.push((l, false));
                }
            }
        }
    }
    found.sort_by_key(|f| (f.0.start, f.0.end));
    let total = found.len();
    for (i, (span, c, key)) in found.into_iter().enumerate().take(CONTROL_REPORTS_MAX) {
        let what = if key { "a key" } else { "a string" };
        let more = if i + 1 == CONTROL_REPORTS_MAX && total > CONTROL_REPORTS_MAX {
            format!(" ({} more not shown)", total - CONTROL_REPORTS_MAX)
        } else {
            String::new()
        };
        diags.push(
            Diagnostic::error(
                "fabrik::spec::control-character",
                format!("{what} holds the control character {}{more}", named(c)),
            )
            .at(span, "here")
            .help(
                "names, paths, URIs and commands hold no control characters (newline, tab, NUL, escape, bidirectional overrides); only `description` may span lines",
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::source::{Sources, Syntax};

    fn diags(syntax: Syntax, text: &str) -> Vec<Diagnostic> {
        let mut sources = Sources::default();
        crate::spec::load::load_bytes(&mut sources, "f".into(), syntax, text.as_bytes().to_vec()).2
    }

    #[test]
    fn escapes_nul_and_newlines_are_refused_where_they_hide() {
        let d = diags(
            Syntax::Yaml,
            "version: 1\npools:\n  - { name: p, type: dir, path: \"/srv/\\e[2Jx\" }\n  - { name: q, type: dir, path: \"/srv/a\\0b\" }\n  - { name: r, type: dir, path: \"/srv/a\\nb\" }\n",
        );
        let codes: Vec<_> = d.iter().map(|d| (d.code, d.message.as_str())).collect();
        assert_eq!(
            codes,
            vec![
                ("fabrik::spec::control-character", "a string holds the control character U+001B"),
                ("fabrik::spec::control-character", "a string holds the control character U+0000"),
                ("fabrik::spec::control-character", "a string holds the control character U+000A"),
            ]
        );
        let d = diags(Syntax::Kdl, "version 1\nimage \"i\\u{202E}x\" pool=\"p\" source=\"/a\" format=\"raw\"\n");
        assert_eq!(d[0].message, "a string holds the control character U+202E", "{d:?}");
    }

    #[test]
    fn a_description_may_span_lines() {
        let d = diags(
            Syntax::Yaml,
            "version: 1\ntenants:\n  - name: t\n    hosts: []\n    description: |\n      two\n      \tlines\n",
        );
        assert!(d.is_empty(), "{d:?}");
    }
}
