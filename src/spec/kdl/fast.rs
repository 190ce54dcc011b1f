//! The KDL fast path: one pass over the text, straight to the [`Node`] tree.
//!
//! The kdl crate's parser backtracks and allocates for every token, and took nearly all
//! of the time of loading a large KDL factory. This parser reads the part of KDL 2 that
//! factories are written in and answers `None` for everything else, valid or not: the
//! caller then asks the crate, which also words every diagnostic. So it never reports an
//! error; it only has to be right when it answers, and then it gives the very tree the
//! crate path gives, spans included (`tests/kdl_fast.rs` holds it to that on every
//! example, fixture and bench file and on thousands of mutations of them).
//!
//! Read here: nodes ended by a newline, `;`, `//` comment, `}` or the end; `{ … }`
//! children; bare identifier strings of printable ASCII; quoted strings with the escapes
//! `\" \\ \b \f \n \r \t \s \u{…}`; single-line raw strings (`#"…"#`, `##"…"##`);
//! multi-line strings of plain lines (`"""`, dedented by the closing line);
//! decimal integers and floats, hex integers; `#true`, `#false`, `#null`; `key=value`
//! properties; type annotations (`(t)`) right before a node's name or an argument;
//! `/-` comments on a node (ended by a newline or the end), an argument, a property or
//! a children block; `//` and (nested) `/* */` comments; spaces, tabs, `\n` and `\r\n`.
//! Left to the crate: other multi-line strings (raw, with escapes, CRLF or misindented
//! lines), annotated property values, space after an annotation, line continuations and
//! whitespace escapes, `_` in numbers, octal and binary, `#inf`/`#-inf`/`#nan`, digit
//! runs long enough to overflow, any other newline or non-ASCII character outside
//! strings and comments, and nodes the converter refuses (a map with more than one
//! argument, outside `/-`).

use super::{NESTING_LIMIT, prop_value_span, trimmed};
use crate::spec::source::{FileId, Span};
use crate::spec::tree::{Entry, Map, Node, Scalar, Value};

/// The tree of a KDL file (`Some(None)`: no node at all), or `None` where the file is
/// not in the subset this parser reads.
pub(super) fn parse(file_id: FileId, text: &str) -> Option<Option<Node>> {
    let mut p = Parser { text, b: text.as_bytes(), pos: 0, file_id, depth: 0, dropped: 0 };
    let entries = p.nodes()?;
    // `nodes` stops at a `}`; at the top level it closes no block.
    if p.pos != p.b.len() {
        return None;
    }
    if entries.is_empty() {
        return Some(None);
    }
    let span = Span::new(file_id, 0, text.len());
    Some(Some(Node { span, value: Value::Map(Map { label: None, entries }) }))
}

/// Longest digit run read here: 38 digits always fit the crate's `i128`, 39 may not.
const DIGITS_MAX: usize = 38;
/// Longest hex digit run read here: 30 hex digits (120 bits) always fit an `i128`.
const HEX_DIGITS_MAX: usize = 30;

struct Parser<'a> {
    text: &'a str,
    b: &'a [u8],
    pos: usize,
    file_id: FileId,
    /// Children blocks open around `pos`.
    depth: usize,
    /// `/-` comments open around `pos`: what they hold is read, never converted, so the
    /// converter's refusals (a map with two arguments) do not apply to it.
    dropped: usize,
}

/// A value as written: a string may name a property (`key=value`), other values may not.
struct Token {
    value: Scalar,
    is_string: bool,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn at(&self, ahead: usize) -> Option<u8> {
        self.b.get(self.pos + ahead).copied()
    }

    fn span(&self, start: usize, end: usize) -> Span {
        Span::new(self.file_id, start, end)
    }

    /// Nodes up to a `}` or the end of the text, neither consumed.
    fn nodes(&mut self) -> Option<Vec<Entry>> {
        let mut entries = Vec::new();
        loop {
            self.line_space()?;
            if matches!(self.peek(), None | Some(b'}')) {
                return Some(entries);
            }
            if self.slashdash()? {
                // `/-` comments out the whole node, which must still be well formed.
                if matches!(self.peek(), None | Some(b'}')) {
                    return None;
                }
                self.dropped += 1;
                self.node()?;
                self.dropped -= 1;
                // The crate reads a `;` after a commented-out node as the start of the
                // next; a newline or the end it reads as KDL has it.
                match self.peek() {
                    None => return Some(entries),
                    Some(b'\n') => self.pos += 1,
                    Some(b'\r') if self.at(1) == Some(b'\n') => self.pos += 2,
                    Some(_) => return None,
                }
                continue;
            } else {
                entries.push(self.node()?);
            }
            // The node's terminator. A `;` must follow a node: `;;` is an error in KDL,
            // and the next node cannot start with one.
            match self.peek() {
                Some(b';' | b'\n') => self.pos += 1,
                Some(b'\r') if self.at(1) == Some(b'\n') => self.pos += 2,
                Some(b'/') if self.at(1) == Some(b'/') => {}
                None | Some(b'}') => {}
                Some(_) => return None,
            }
        }
    }

    /// One node, its entries, children and the spaces after them, up to its terminator.
    fn node(&mut self) -> Option<Entry> {
        let start = self.pos;
        self.annotation()?;
        let name_start = self.pos;
        let Token { value: Scalar::Str(key), is_string: true } = self.token()? else {
            return None;
        };
        let key_span = self.span(name_start, self.pos);
        let mut args: Vec<Node> = Vec::new();
        let mut props: Vec<Entry> = Vec::new();
        let mut children = None;
        // After a `/-` children block only more blocks may follow; after the real one,
        // only `/-` blocks.
        let mut blocks_only = false;
        loop {
            let before = self.pos;
            self.node_space()?;
            match self.peek() {
                None | Some(b'\n' | b'\r' | b';' | b'}') => break,
                Some(b'/') if self.at(1) == Some(b'/') => break,
                Some(b'{') if children.is_none() => children = Some(self.children()?),
                // Entries and `/-` are separated by space.
                Some(_) if self.pos == before => return None,
                Some(b'/') if self.at(1) == Some(b'-') => {
                    self.pos += 2;
                    self.node_space()?;
                    if self.peek() == Some(b'{') {
                        self.dropped += 1;
                        self.children()?;
                        self.dropped -= 1;
                        blocks_only = true;
                    } else if blocks_only || children.is_some() {
                        return None;
                    } else {
                        // Commented out: read, and dropped.
                        self.entry(&mut Vec::new(), &mut Vec::new())?;
                    }
                }
                Some(_) if blocks_only || children.is_some() => return None,
                Some(_) => self.entry(&mut args, &mut props)?,
            }
        }
        let value = if props.is_empty() && children.is_none() {
            match args.len() {
                0 => Node { span: key_span, value: Value::Scalar(Scalar::Null) },
                1 => args.pop()?,
                n => Node { span: args[0].span.join(args[n - 1].span), value: Value::Seq(args) },
            }
        } else {
            // A map takes at most one argument; the crate path words the error.
            if args.len() > 1 && self.dropped == 0 {
                return None;
            }
            let label = args.pop().map(Box::new);
            let mut entries = props;
            entries.extend(children.unwrap_or_default());
            // As the crate has it: from the name through the spaces and block comments
            // after the last entry or the `}`.
            Node { span: self.span(start, self.pos), value: Value::Map(Map { label, entries }) }
        };
        Some(Entry { key, key_span, value })
    }

    /// An argument, or a `key=value` property (spaces and comments around `=` allowed).
    fn entry(&mut self, args: &mut Vec<Node>, props: &mut Vec<Entry>) -> Option<()> {
        let start = self.pos;
        let annotated = self.annotation()?;
        let key_start = self.pos;
        let token = self.token()?;
        let end = self.pos;
        if token.is_string {
            self.node_space()?;
            if self.peek() == Some(b'=') {
                // A type annotates a value, never a property's name.
                if annotated {
                    return None;
                }
                self.pos += 1;
                self.node_space()?;
                if self.annotation()? {
                    // Left to the crate: where its span of an annotated property starts.
                    return None;
                }
                let value = self.token()?.value;
                let Scalar::Str(key) = token.value else { return None };
                let whole = self.span(start, self.pos);
                let value = Node { span: prop_value_span(self.file_id, self.text, whole), value: Value::Scalar(value) };
                props.push(Entry { key, key_span: self.span(key_start, end), value });
                return Some(());
            }
            self.pos = end;
        }
        let span = trimmed(self.file_id, self.text, self.span(start, end));
        args.push(Node { span, value: Value::Scalar(token.value) });
        Some(())
    }

    /// `{ nodes }`, both braces consumed.
    fn children(&mut self) -> Option<Vec<Entry>> {
        self.depth += 1;
        if self.depth > NESTING_LIMIT {
            return None;
        }
        self.pos += 1;
        let entries = self.nodes()?;
        if self.peek() != Some(b'}') {
            return None;
        }
        self.pos += 1;
        self.depth -= 1;
        Some(entries)
    }

    /// A `/-` before a node, and the line space after it; `false` where there is none.
    fn slashdash(&mut self) -> Option<bool> {
        if self.peek() != Some(b'/') || self.at(1) != Some(b'-') {
            return Some(false);
        }
        self.pos += 2;
        self.line_space()?;
        Some(true)
    }

    /// A type annotation, `(name)` right before a node's name or a value, which the tree
    /// does not keep (as on the crate path); whether there was one.
    fn annotation(&mut self) -> Option<bool> {
        if self.peek() != Some(b'(') {
            return Some(false);
        }
        self.pos += 1;
        match self.peek()? {
            b'"' => {
                self.quoted()?;
            }
            b'#' => {
                self.raw()?;
            }
            c if is_ident_byte(c) && !c.is_ascii_digit() && !matches!(c, b'+' | b'-' | b'.') => {
                self.identifier()?;
            }
            _ => return None,
        }
        if self.peek() != Some(b')') {
            return None;
        }
        self.pos += 1;
        // Spaces between the annotation and what it annotates are left to the crate.
        matches!(self.peek(), Some(c) if !matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'/' | b'(')).then_some(true)
    }

    /// A single-line raw string, `#"…"#` with one or more `#`, taken as written.
    fn raw(&mut self) -> Option<String> {
        let (b, text) = (self.b, self.text);
        let hashes = b[self.pos..].iter().take_while(|&&c| c == b'#').count();
        let open = self.pos + hashes;
        if b.get(open) != Some(&b'"') {
            return None;
        }
        // `#"""` opens a multi-line raw string.
        if b.get(open + 1) == Some(&b'"') && b.get(open + 2) == Some(&b'"') {
            return None;
        }
        let mut i = open + 1;
        loop {
            match *b.get(i)? {
                b'"' if b.len() >= i + 1 + hashes && b[i + 1..i + 1 + hashes].iter().all(|&c| c == b'#') => {
                    // More `#` than opened it: not the end the crate would see.
                    if b.get(i + 1 + hashes) == Some(&b'#') {
                        return None;
                    }
                    self.pos = i + 1 + hashes;
                    return Some(text[open + 1..i].to_string());
                }
                b'\t' | 0x20..=0x7e => i += 1,
                0x80.. => {
                    let c = text[i..].chars().next()?;
                    if is_newline_or_disallowed(c) {
                        return None;
                    }
                    i += c.len_utf8();
                }
                _ => return None,
            }
        }
    }

    /// Spaces, tabs and block comments: what may stand between the parts of a node.
    fn node_space(&mut self) -> Option<()> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t') => self.pos += 1,
                Some(b'/') if self.at(1) == Some(b'*') => self.block_comment()?,
                _ => return Some(()),
            }
        }
    }

    /// Node space, newlines and line comments: what may stand between nodes.
    fn line_space(&mut self) -> Option<()> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n') => self.pos += 1,
                Some(b'\r') if self.at(1) == Some(b'\n') => self.pos += 2,
                Some(b'/') if self.at(1) == Some(b'/') => self.line_comment()?,
                Some(b'/') if self.at(1) == Some(b'*') => self.block_comment()?,
                _ => return Some(()),
            }
        }
    }

    /// `// …` and the newline that ends it. KDL ends it at any of its newlines; those
    /// other than `\n` and `\r\n` are left to the crate.
    fn line_comment(&mut self) -> Option<()> {
        let b = self.b;
        let mut i = self.pos + 2;
        while i < b.len() {
            match b[i] {
                b'\n' => {
                    self.pos = i + 1;
                    return Some(());
                }
                b'\r' if b.get(i + 1) == Some(&b'\n') => {
                    self.pos = i + 2;
                    return Some(());
                }
                // CR, VT, FF; NEL (U+0085); LS and PS (U+2028, U+2029).
                b'\r' | 0x0b | 0x0c => return None,
                0xc2 if b.get(i + 1) == Some(&0x85) => return None,
                0xe2 if b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xa8 | 0xa9)) => return None,
                _ => i += 1,
            }
        }
        self.pos = b.len();
        Some(())
    }

    /// `/* … */`, which nests; an unclosed one is left to the crate.
    fn block_comment(&mut self) -> Option<()> {
        let b = self.b;
        let (mut i, mut open) = (self.pos + 2, 1usize);
        while i < b.len() {
            if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                i += 2;
                open -= 1;
                if open == 0 {
                    self.pos = i;
                    return Some(());
                }
            } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                i += 2;
                open += 1;
            } else {
                i += 1;
            }
        }
        None
    }

    /// A value, which must end where KDL lets a value end.
    fn token(&mut self) -> Option<Token> {
        let digit_at = |ahead| self.at(ahead).is_some_and(|c: u8| c.is_ascii_digit());
        let token = match self.peek()? {
            b'"' => Token { value: Scalar::Str(self.quoted()?), is_string: true },
            b'#' if matches!(self.at(1), Some(b'#' | b'"')) => {
                Token { value: Scalar::Str(self.raw()?), is_string: true }
            }
            b'#' => Token { value: self.keyword()?, is_string: false },
            b'0'..=b'9' => Token { value: self.number()?, is_string: false },
            b'+' | b'-' if digit_at(1) => Token { value: self.number()?, is_string: false },
            // `.5`, `-.5`: neither a number nor an identifier.
            b'+' | b'-' if self.at(1) == Some(b'.') && digit_at(2) => return None,
            b'.' if digit_at(1) => return None,
            c if is_ident_byte(c) => Token { value: Scalar::Str(self.identifier()?), is_string: true },
            _ => return None,
        };
        self.at_value_end().then_some(token)
    }

    /// Whether a value may end here: before space, a newline, `;`, `=`, a brace, a
    /// comment, or the end of the text.
    fn at_value_end(&self) -> bool {
        match self.peek() {
            None | Some(b' ' | b'\t' | b'\n' | b';' | b'=' | b'{' | b'}') => true,
            Some(b'\r') => self.at(1) == Some(b'\n'),
            Some(b'/') => matches!(self.at(1), Some(b'/' | b'*')),
            Some(_) => false,
        }
    }

    /// A bare identifier string. Whether it may start here (not with a digit, nor a
    /// sign or dot before a digit) is settled by [`Parser::token`].
    fn identifier(&mut self) -> Option<String> {
        let start = self.pos;
        while self.peek().is_some_and(is_ident_byte) {
            self.pos += 1;
        }
        let word = &self.text[start..self.pos];
        // Keywords are written `#true` in KDL 2; bare, they are errors (`-inf` is a
        // string to the crate, but the spec reserves it too).
        if matches!(word, "true" | "false" | "null" | "inf" | "-inf" | "nan") {
            return None;
        }
        Some(word.to_string())
    }

    /// A single-line quoted string.
    fn quoted(&mut self) -> Option<String> {
        let (b, text) = (self.b, self.text);
        // `"""` opens a multi-line string.
        if self.at(1) == Some(b'"') && self.at(2) == Some(b'"') {
            return self.multi_line();
        }
        let mut out = String::new();
        let (mut i, mut run) = (self.pos + 1, self.pos + 1);
        loop {
            match *b.get(i)? {
                b'"' => {
                    out.push_str(&text[run..i]);
                    self.pos = i + 1;
                    return Some(out);
                }
                b'\\' => {
                    out.push_str(&text[run..i]);
                    let (c, len) = escape(&text[i + 1..])?;
                    out.push(c);
                    i += 1 + len;
                    run = i;
                }
                b'\t' | 0x20..=0x7e => i += 1,
                0x80.. => {
                    let c = text[i..].chars().next()?;
                    if is_newline_or_disallowed(c) {
                        return None;
                    }
                    i += c.len_utf8();
                }
                // Newlines and control characters.
                _ => return None,
            }
        }
    }

    /// A multi-line string, `"""` and a newline to a line of only whitespace and `"""`:
    /// that whitespace is taken from the start of every line (a whitespace-only line is
    /// empty), the first and last newlines are not part of it. Only the plain form: a
    /// backslash, `\r`, a control character or a line that does not start with the
    /// closing line's whitespace is left to the crate.
    fn multi_line(&mut self) -> Option<String> {
        let start = self.pos + 3;
        if self.b.get(start) != Some(&b'\n') {
            return None;
        }
        let body_start = start + 1;
        let mut lines: Vec<&str> = Vec::new();
        let mut at = body_start;
        loop {
            let end = self.text[at..].find('\n').map(|n| at + n);
            let line = &self.text[at..end.unwrap_or(self.text.len())];
            let trimmed = line.trim_start_matches([' ', '\t']);
            if let Some(rest) = trimmed.strip_prefix("\"\"\"") {
                let prefix = &line[..line.len() - trimmed.len()];
                if rest.starts_with('"') {
                    return None;
                }
                let mut out = String::new();
                for (i, l) in lines.iter().enumerate() {
                    if i > 0 {
                        out.push('\n');
                    }
                    if l.trim_start_matches([' ', '\t']).is_empty() {
                        continue;
                    }
                    out.push_str(l.strip_prefix(prefix)?);
                }
                self.pos = at + (line.len() - rest.len());
                return Some(out);
            }
            if line.contains("\"\"\"") || line.contains('\\') {
                return None;
            }
            for c in line.chars() {
                if c != '\t' && (c.is_control() || is_newline_or_disallowed(c)) {
                    return None;
                }
            }
            lines.push(line);
            at = end? + 1;
        }
    }

    /// `#true`, `#false`, `#null`.
    fn keyword(&mut self) -> Option<Scalar> {
        let rest = &self.b[self.pos + 1..];
        let (len, value) = if rest.starts_with(b"true") {
            (4, Scalar::Bool(true))
        } else if rest.starts_with(b"false") {
            (5, Scalar::Bool(false))
        } else if rest.starts_with(b"null") {
            (4, Scalar::Null)
        } else {
            return None;
        };
        self.pos += 1 + len;
        Some(value)
    }

    /// A decimal integer or float, or a hex integer, with an optional sign.
    fn number(&mut self) -> Option<Scalar> {
        let start = self.pos;
        let negative = match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                true
            }
            Some(b'+') => {
                self.pos += 1;
                false
            }
            _ => false,
        };
        let sign = |n: i128| if negative { -n } else { n };
        if self.peek() == Some(b'0') && matches!(self.at(1), Some(b'x' | b'X')) {
            self.pos += 2;
            let digits = self.run(|c| c.is_ascii_hexdigit(), HEX_DIGITS_MAX)?;
            return i128::from_str_radix(digits, 16).ok().map(|n| Scalar::Int(sign(n)));
        }
        let integer = self.run(|c| c.is_ascii_digit(), DIGITS_MAX)?;
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.run(|c| c.is_ascii_digit(), DIGITS_MAX)?;
            float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.run(|c| c.is_ascii_digit(), DIGITS_MAX)?;
            float = true;
        }
        if float {
            // The crate hands the same text to the same parser.
            self.text[start..self.pos].parse().ok().map(Scalar::Float)
        } else {
            integer.parse::<i128>().ok().map(|n| Scalar::Int(sign(n)))
        }
    }

    /// One to `max` bytes matching `is`.
    fn run(&mut self, is: impl Fn(u8) -> bool, max: usize) -> Option<&'a str> {
        let (text, start) = (self.text, self.pos);
        while self.peek().is_some_and(&is) {
            self.pos += 1;
        }
        (1..=max).contains(&(self.pos - start)).then(|| &text[start..self.pos])
    }
}

/// A character of a bare identifier, within ASCII: printable, and none of `\/(){}[];"#=`.
fn is_ident_byte(c: u8) -> bool {
    matches!(c, 0x21..=0x7e)
        && !matches!(c, b'\\' | b'/' | b'(' | b')' | b'{' | b'}' | b'[' | b']' | b';' | b'"' | b'#' | b'=')
}

/// The escape after a `\` in a quoted string, and how many bytes it took. Whitespace
/// escapes (a `\` before space or a newline, which vanishes) are left to the crate.
fn escape(rest: &str) -> Option<(char, usize)> {
    let c = match rest.as_bytes().first()? {
        b'"' => '"',
        b'\\' => '\\',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b's' => ' ',
        b'u' => {
            let body = rest.strip_prefix("u{")?;
            let digits = body.bytes().take_while(u8::is_ascii_hexdigit).count();
            if !(1..=6).contains(&digits) || body.as_bytes().get(digits) != Some(&b'}') {
                return None;
            }
            let c = char::from_u32(u32::from_str_radix(&body[..digits], 16).ok()?)?;
            return Some((c, 2 + digits + 1));
        }
        _ => return None,
    };
    Some((c, 1))
}

/// Characters a single-line string may not hold literally: KDL's newlines beyond ASCII,
/// and its disallowed code points beyond ASCII (direction controls, BOM).
fn is_newline_or_disallowed(c: char) -> bool {
    matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{200e}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::kdl::parse_without_fast_path;
    use crate::spec::source::{SourceFile, Syntax};

    /// Whether the fast path takes `text`; where it does, the crate path must agree.
    fn taken(text: &str) -> bool {
        let Some(fast) = parse(FileId(0), text) else { return false };
        let file = SourceFile::new("t.kdl".into(), Syntax::Kdl, text.into());
        match parse_without_fast_path(FileId(0), &file) {
            Ok(slow) => assert_eq!(fast, slow, "{text:?}"),
            Err(e) => panic!("the fast path takes {text:?}, the crate refuses it: {e:?}"),
        }
        true
    }

    #[test]
    fn takes_the_subset() {
        let cases = [
            "",
            "// only a comment\n/* and /* a nested */ one */\n",
            "version 1\nhost h {\n    uri \"x\"\n}\n",
            "a{b}",
            "a;b; c;\n",
            "a { b; }; c\r\nd\r\n",
            "a x = 1 y=2 z= 3 \"k\"=#null \"a=b\"=c",
            "a b /* = */ = 1",
            "numa-node 0 socket=0 {\n    hugepages \"1G\"=896\n}   // trailing\n",
            "\"quoted name\" \"\\\"\\\\\\b\\f\\n\\r\\t\\s\" \"\\u{41}\\u{1F600}\\u{10FFFF}\" \"é—漢\" \"\"",
            "n 0 -1 +2 007 1.5 -0.25 1e3 1E-3 2.5e+10 0x1f -0x10 0XfF",
            "n 99999999999999999999999999999999999999 -12345678901234567890123456789012345678.5",
            "n #true #false #null - + . -a +b .c -. +. ..5 a,b ~!@$%^&*<>?, 'q' `r`",
            "a #true{ b }",
            "a b/*x*/c /* multi\nline */ d",
            "a \"x\"{}\nb c {\n}",
            // Slashdash comments on nodes, arguments, properties and children blocks.
            "/-a 1\nb",
            "/-a 1 2 x=1 { b 1 2 { c } }\nd",
            "/- a { b }\nc; /-d\ne",
            "a {\n    /-b 1\n    c 2\n}",
            "a /-1 2",
            "a 1 /-2",
            "a /-x=1 y=2",
            "a x=1 /-y=2 /* c */ ",
            "a 1 /-{ b }",
            "a x=1 /-{ b } { c }",
            "a { c } /-{ d }",
            "a /-{ b }",
            // Raw strings, as names, values and property names.
            "a #\"raw \\n \"quoted\"\"# ##\"x\"#y\"## #\"\"#",
            "#\"raw name\"# #\"k\"#=#\"v\"#",
            // Type annotations on nodes and values.
            "(t)a 1",
            "a (u8)1 (\"q t\")\"s\"\nb (u8)1 x=1",
            "(t)a (u)1 { (v)b }",
            "a \"\"\"\n  text\n  \"\"\"",
            "t {\n    u \"\"\"\n        #cloud-config\n\n          x: \"{{ y }}\"\n   \t\n        \"\"\" k=1\n}",
            "a \"\"\"\n\"\"\"",
        ];
        for text in cases {
            assert!(taken(text), "the fast path should take {text:?}");
        }
    }

    #[test]
    fn leaves_valid_kdl_outside_the_subset_to_the_crate() {
        let cases = [
            "a 1_000",
            "a 0o7 0b1",
            "a #\"\"\"\n  raw\n  \"\"\"#",
            "a (t) 1",
            "(t) a",
            "a x=(t)1",
            "a \"\"\"\n  te\\nxt\n  \"\"\"",
            "a \"\"\"\r\n  text\r\n  \"\"\"",
            "a \\\n  b",
            "a \"x\\   y\"",
            "a #inf #-inf #nan",
            "a -inf",
            "a 170141183460469231731687303715884105727",
            "a\u{a0}b",
            "\u{feff}a",
            "a\rb",
            "a\u{2028}b",
            "a\u{b}b",
            "café 1",
            "a \u{7f}",
        ];
        for text in cases {
            assert!(!taken(text), "the fast path should leave {text:?} to the crate");
            let file = SourceFile::new("t.kdl".into(), Syntax::Kdl, text.into());
            assert!(parse_without_fast_path(FileId(0), &file).is_ok(), "the crate takes {text:?}");
        }
    }

    #[test]
    fn leaves_every_error_to_the_crate() {
        let cases = [
            "a true",
            "a null",
            "nan 1",
            "a 1.",
            "a 1.e5",
            "a 1e",
            "a 1e5.0",
            "a 0x",
            "a 0xg",
            "a .5",
            "a -.5",
            "a 1a",
            "a 1234567890123456789012345678901234567890.5",
            "a -170141183460469231731687303715884105728",
            "a \"\\u{0000041}\"",
            "a \"\\u{}\"",
            "a \"\\u{d800}\"",
            "a \"\\q\"",
            "a \"open",
            "a \"x\ny\"",
            "a \"x\u{2028}\"",
            "a \"\u{200e}\"",
            "a \"\"\"x\"\"\"",
            "a #truex",
            "a #true=1",
            "a 1=2",
            "a 1 = 2",
            "a b=c=d",
            "a b=",
            "a=1",
            "a \"x\"y",
            "a b\"x\"",
            "a b/c",
            "a;;b",
            ";a",
            "a\n;b",
            "a }",
            "a {",
            "a {} b",
            "a\n{ }",
            "{ }",
            "#true 1",
            "1 a",
            "a 1 2 { }",
            "a 1 2 x=1",
            "a /* open",
            "a /*/",
            "a #\"x\ny\"#",
            "a #\"x\"",
            "a #\"x\"##",
            "/-",
            "a /-",
            "a { /- }",
            "a {} 1",
            "a /-{} 1",
            "a (t)x=1",
            "/-a; b",
            "a { /-b; c }",
        ];
        for text in cases {
            assert!(!taken(text), "the fast path should leave {text:?} to the crate");
            let file = SourceFile::new("t.kdl".into(), Syntax::Kdl, text.into());
            assert!(parse_without_fast_path(FileId(0), &file).is_err(), "the crate refuses {text:?}");
        }
    }

    #[test]
    fn spans_match_the_crate_path() {
        // Spans are compared by `taken`; this pins the ones a diagnostic points at.
        let text = "host h x = \"v\" {\n    gpu \"a\" \"b\"\n}  \n";
        assert!(taken(text));
        let Some(Some(root)) = parse(FileId(0), text) else { panic!() };
        let Value::Map(m) = &root.value else { panic!() };
        let host = &m.entries[0].value;
        let slice = |s: Span| &text[s.start as usize..s.end as usize];
        assert_eq!(slice(host.span), "host h x = \"v\" {\n    gpu \"a\" \"b\"\n}  ");
        let Value::Map(h) = &host.value else { panic!() };
        assert_eq!(slice(h.entries[0].key_span), "x");
        assert_eq!(slice(h.entries[0].value.span), "\"v\"");
        assert_eq!(slice(h.entries[1].value.span), "\"a\" \"b\"");
    }
}
