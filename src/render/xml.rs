//! A small XML writer: indented, attributes in the order given, values escaped. Enough
//! for the documents fabrik renders, and deterministic by construction.

pub(crate) struct Writer {
    out: String,
    depth: usize,
}

impl Writer {
    pub fn new() -> Writer {
        Writer { out: String::new(), depth: 0 }
    }

    fn start(&mut self, tag: &str, attrs: &[(&str, String)]) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push('<');
        self.out.push_str(tag);
        for (name, value) in attrs {
            self.out.push(' ');
            self.out.push_str(name);
            self.out.push_str("='");
            escape_into(&mut self.out, value);
            self.out.push('\'');
        }
    }

    /// `<tag a='…'>` and one level deeper.
    pub fn open(&mut self, tag: &str, attrs: &[(&str, String)]) {
        self.start(tag, attrs);
        self.out.push_str(">\n");
        self.depth += 1;
    }

    pub fn close(&mut self, tag: &str) {
        self.depth -= 1;
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push_str(">\n");
    }

    /// `<tag a='…'/>`
    pub fn empty(&mut self, tag: &str, attrs: &[(&str, String)]) {
        self.start(tag, attrs);
        self.out.push_str("/>\n");
    }

    /// `<tag a='…'>text</tag>`
    pub fn text(&mut self, tag: &str, attrs: &[(&str, String)], text: &str) {
        self.start(tag, attrs);
        self.out.push('>');
        escape_into(&mut self.out, text);
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push_str(">\n");
    }

    /// A line of already-formed XML (the ownership mark).
    pub fn raw(&mut self, xml: &str) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push_str(xml);
        self.out.push('\n');
    }

    pub fn finish(self) -> String {
        debug_assert_eq!(self.depth, 0, "every element is closed");
        self.out
    }
}

/// An attribute list entry; keeps call sites short.
pub(crate) fn a(name: &'static str, value: impl ToString) -> (&'static str, String) {
    (name, value.to_string())
}

/// Appends `text` escaped for XML text and single- or double-quoted attribute values:
/// what [`crate::driver::libvirt::owner::escape`] returns, without a string of its own.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    let special = |b: u8| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'');
    let mut rest = text;
    while let Some(i) = rest.bytes().position(special) {
        out.push_str(&rest[..i]);
        out.push_str(match rest.as_bytes()[i] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            _ => "&apos;",
        });
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::libvirt::owner::escape;

    #[test]
    fn escape_into_appends_what_escape_returns() {
        for text in ["", "plain", "a&b<c>d\"e'f", "&&", "'", "ünï<cødé>"] {
            let mut out = String::from("x");
            escape_into(&mut out, text);
            assert_eq!(out, format!("x{}", escape(text)), "{text}");
        }
    }
}
