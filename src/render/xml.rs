//! A small XML writer: indented, attributes in the order given, values escaped. Enough
//! for the documents fabrik renders, and deterministic by construction.

use crate::driver::libvirt::owner::escape;

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
            self.out.push_str(&format!(" {name}='{}'", escape(value)));
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
        self.out.push_str(&format!("</{tag}>\n"));
    }

    /// `<tag a='…'/>`
    pub fn empty(&mut self, tag: &str, attrs: &[(&str, String)]) {
        self.start(tag, attrs);
        self.out.push_str("/>\n");
    }

    /// `<tag a='…'>text</tag>`
    pub fn text(&mut self, tag: &str, attrs: &[(&str, String)], text: &str) {
        self.start(tag, attrs);
        self.out.push_str(&format!(">{}</{tag}>\n", escape(text)));
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
