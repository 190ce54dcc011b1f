//! How deep the kdl crate may recurse on a file, bounded before it is asked.
//!
//! The crate's parser recurses once per `{ … }` level and, inside a `/* … */` comment,
//! once per piece of the comment (every `*`, every `/`, every run of other characters,
//! every nested comment). Neither has a limit of its own, and a stack overflow ends the
//! process. This scan reads the file with the crate's lexical rules — quoted, multi-line
//! and raw strings (`#"…"#`, any number of `#`), `//` and nested `/* */` comments, `/-`
//! (which comments out but still nests) — and measures both before the crate runs.
//!
//! Where the text stops being lexically valid (a string not closed on its line, a bad
//! escape, a forbidden character, a quote glued to a word), the crate recovers in ways
//! this scan does not follow. From there on the scan takes the worst case: every later
//! `{` may open a level and every later `/` or `*` may be a comment piece. If even the
//! worst case stays within the limits, the crate words the error; otherwise the scan
//! reports the lexical error itself, located, and the crate never runs.

use crate::diag::Diagnostic;
use crate::spec::source::{FileId, Span};

/// `{ … }` levels the crate is asked to read. A factory nests 4; the crate takes about
/// 50 KiB of stack per level in a debug build (see [`super::PARSE_STACK_BYTES`]).
pub const NESTING_MAX: usize = 32;

/// Recursion steps of the crate inside one `/* … */` comment (its pieces and nested
/// comments), each about 4 KiB of stack in a debug build. A commented-out block of 200
/// lines of a factory takes about 1,000; longer ones can be `//` comments, which cost
/// no recursion at all.
pub const COMMENT_STEPS_MAX: usize = 4_096;

/// Why a file is refused before the crate reads it.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// `{` at this offset opens one level more than [`NESTING_MAX`].
    TooDeep(usize),
    /// The comment starting at this offset takes more than [`COMMENT_STEPS_MAX`] steps.
    CommentTooLong(usize),
    /// From this offset on the text is not lexically valid KDL, and the worst case of
    /// the rest could pass a limit.
    Lexical { at: usize, what: &'static str, help: &'static str },
}

impl Refusal {
    pub fn diagnostic(&self, file_id: FileId, text: &str) -> Diagnostic {
        let point = |at: usize| {
            let len = text.get(at..).and_then(|r| r.chars().next()).map_or(0, char::len_utf8);
            Span::new(file_id, at, at + len)
        };
        match *self {
            Refusal::TooDeep(at) => crate::spec::yaml::too_deep(point(at), NESTING_MAX),
            Refusal::CommentTooLong(at) => Diagnostic::error(
                "fabrik::spec::too-deep",
                format!("comment too long: more than {COMMENT_STEPS_MAX} `*`, `/` and words"),
            )
            .at(point(at), "this comment")
            .help("split the comment into several `/* … */` or `//` comments"),
            Refusal::Lexical { at, what, help } => {
                Diagnostic::error("fabrik::spec::kdl-syntax", format!("invalid KDL: {what}"))
                    .at(point(at), "here")
                    .help(help)
            }
        }
    }
}

/// Checks `text` against the limits; `Ok` means the crate may parse it.
pub fn scan(text: &str) -> Result<(), Refusal> {
    let b = text.as_bytes();
    let (mut i, mut depth) = (0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' | b'#' if !follows_separator(b, i) => return worst_case(b, i, depth, GLUED),
            b'"' => match string_end(text, i) {
                Ok(end) => i = end,
                Err((at, what, help)) => return worst_case(b, at, depth, Lexical { what, help }),
            },
            b'#' => {
                let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + hashes) != Some(&b'"') {
                    // A keyword (`#true`) or a stray `#`; nothing nests in it.
                    i += hashes;
                    continue;
                }
                match raw_string_end(text, i, hashes) {
                    Ok(end) => i = end,
                    Err((at, what, help)) => return worst_case(b, at, depth, Lexical { what, help }),
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = comment_end(b, i)?,
            b'{' => {
                depth += 1;
                if depth > NESTING_MAX {
                    return Err(Refusal::TooDeep(i));
                }
                i += 1;
            }
            b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

type LexError = (usize, &'static str, &'static str);

struct Lexical {
    what: &'static str,
    help: &'static str,
}

const GLUED: Lexical = Lexical {
    what: "a string or `#` directly after another token",
    help: "put a space between a node's name and its values",
};

/// Whether a string or `#` at `i` starts a token, as the crate requires: after a
/// space, a newline, `=`, a type annotation's bracket, a brace, `;` or `/-`.
fn follows_separator(b: &[u8], i: usize) -> bool {
    match i.checked_sub(1).map(|p| b[p]) {
        None => true,
        Some(c) => {
            c.is_ascii_whitespace() || matches!(c, b'=' | b'(' | b')' | b'{' | b'}' | b';' | b'-' | b'\\') || c >= 0x80
        }
    }
}

/// The offset after the string starting at `i` (`"…"` or `"""…"""`).
fn string_end(text: &str, i: usize) -> Result<usize, LexError> {
    let b = text.as_bytes();
    let multi = b[i..].starts_with(b"\"\"\"");
    if multi && !matches!(b.get(i + 3), Some(b'\n' | b'\r')) {
        return Err((
            i,
            "`\"\"\"` starts a multi-line string and must end its line",
            "start the string's text on the next line",
        ));
    }
    let mut j = if multi { i + 3 } else { i + 1 };
    while j < b.len() {
        match b[j] {
            b'\\' => j = escape_end(b, j)?,
            b'"' if !multi => return Ok(j + 1),
            b'"' if b[j..].starts_with(b"\"\"\"") => return Ok(j + 3),
            b'\n' | b'\r' if !multi => {
                return Err((
                    i,
                    "string not closed on its line",
                    "close the string with `\"`, or write a multi-line string in `\"\"\"`",
                ));
            }
            _ => j = char_end(text, j)?,
        }
    }
    Err((i, "string not closed", "close the string with `\"`"))
}

/// The offset after the escape at `j` (a `\`).
fn escape_end(b: &[u8], j: usize) -> Result<usize, LexError> {
    const BAD: &str = "unknown escape in a string";
    const HELP: &str = "the escapes are \\\" \\\\ \\b \\f \\n \\r \\t \\s and \\u{…}";
    match b.get(j + 1) {
        Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' | b's') => Ok(j + 2),
        Some(b'u') if b.get(j + 2) == Some(&b'{') => {
            let digits = b[j + 3..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
            if (1..=6).contains(&digits) && b.get(j + 3 + digits) == Some(&b'}') {
                Ok(j + 4 + digits)
            } else {
                Err((j, BAD, HELP))
            }
        }
        // A whitespace escape: `\` and the spaces and newlines after it are dropped.
        Some(c) if c.is_ascii_whitespace() => {
            Ok(j + 1 + b[j + 1..].iter().take_while(|c| c.is_ascii_whitespace()).count())
        }
        _ => Err((j, BAD, HELP)),
    }
}

/// The offset after the character at `j`, refusing those KDL forbids in strings.
fn char_end(text: &str, j: usize) -> Result<usize, LexError> {
    let c = text[j..].chars().next().unwrap_or(' ');
    let forbidden = matches!(c, '\u{0}'..='\u{8}' | '\u{e}'..='\u{1f}' | '\u{7f}' | '\u{200e}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
    if forbidden {
        return Err((
            j,
            "a control or direction character in a string",
            "remove the character, or write it as an escape like `\\u{1b}`",
        ));
    }
    Ok(j + c.len_utf8())
}

/// The offset after the raw string starting at `i` with `hashes` `#` before its quote.
fn raw_string_end(text: &str, i: usize, hashes: usize) -> Result<usize, LexError> {
    let b = text.as_bytes();
    let q = i + hashes;
    let multi = b[q..].starts_with(b"\"\"\"");
    if multi && !matches!(b.get(q + 3), Some(b'\n' | b'\r')) {
        return Err((
            i,
            "`\"\"\"` starts a multi-line string and must end its line",
            "start the string's text on the next line",
        ));
    }
    let close: &[u8] = if multi { b"\"\"\"" } else { b"\"" };
    let mut j = q + close.len();
    while j < b.len() {
        if b[j..].starts_with(close)
            && b[j + close.len()..].iter().take(hashes).filter(|&&c| c == b'#').count() == hashes
        {
            return Ok(j + close.len() + hashes);
        }
        if !multi && matches!(b[j], b'\n' | b'\r') {
            return Err((i, "raw string not closed on its line", "close the raw string with `\"` and its `#`s"));
        }
        j = char_end(text, j)?;
    }
    Err((i, "raw string not closed", "close the raw string with `\"` and as many `#` as it starts with"))
}

/// The offset after the comment starting at `i`, counting the crate's steps in it.
fn comment_end(b: &[u8], start: usize) -> Result<usize, Refusal> {
    let (mut i, mut open, mut steps) = (start + 2, 1usize, 2usize);
    while i < b.len() && open > 0 {
        steps += 1;
        if steps > COMMENT_STEPS_MAX {
            return Err(Refusal::CommentTooLong(start));
        }
        if b[i..].starts_with(b"*/") {
            open -= 1;
            i += 2;
        } else if b[i..].starts_with(b"/*") {
            open += 1;
            steps += 1;
            i += 2;
        } else if matches!(b[i], b'*' | b'/') {
            i += 1;
        } else {
            i += b[i..].iter().take_while(|&&c| !matches!(c, b'*' | b'/')).count();
        }
    }
    // An unclosed comment runs to the end: the crate recursed through all of it too.
    Ok(i)
}

/// After a lexical error at `at`: refuses it unless even the worst case of the rest of
/// the file stays within the limits.
fn worst_case(b: &[u8], at: usize, depth: usize, lexical: Lexical) -> Result<(), Refusal> {
    let rest = &b[at..];
    let opens = rest.iter().filter(|&&c| c == b'{').count();
    // Each `*` or `/` may be a step, and so may each run of other characters between them.
    let steps = 2 * rest.iter().filter(|&&c| matches!(c, b'*' | b'/')).count() + 3;
    if depth + opens > NESTING_MAX || steps > COMMENT_STEPS_MAX {
        return Err(Refusal::Lexical { at, what: lexical.what, help: lexical.help });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize, inner: &str) -> String {
        format!("{}{inner}{}", "a {\n".repeat(levels), "}\n".repeat(levels))
    }

    #[test]
    fn depth_is_counted_at_its_edge() {
        assert_eq!(scan(&nested(NESTING_MAX, "")), Ok(()));
        assert!(matches!(scan(&nested(NESTING_MAX + 1, "")), Err(Refusal::TooDeep(_))));
    }

    #[test]
    fn strings_and_comments_cannot_hide_nesting() {
        // Each of these once hid the closing braces of the text before it.
        for hide in
            ["r#\"}}}\"#", "#\"}}}\"#", "##\"\"#}}}\"##", "/* /* */ }}} */", "\"\\\"}}}\"", "#\"\"\"\n}}}\n\"\"\"#"]
        {
            let text = format!("x {hide}\n{}", nested(NESTING_MAX + 1, ""));
            assert!(matches!(scan(&text), Err(Refusal::TooDeep(_) | Refusal::Lexical { .. })), "{hide}");
        }
        // Braces inside strings and comments do not count.
        let text = format!("x \"{}\" #\"{}\"# /* {} */\n", "{".repeat(40), "{".repeat(40), "{".repeat(40));
        assert_eq!(scan(&text), Ok(()));
        // `/-` comments a block out, but the crate still reads its nesting.
        assert!(scan(&format!("x /- {}", nested(NESTING_MAX + 1, ""))).is_err());
    }

    #[test]
    fn comment_steps_are_counted_at_their_edge() {
        // `/*` and `*/` count 2 steps, the comment's own start 1, each `*` 1.
        let text = |stars: usize| format!("/*{}*/", " *".repeat(stars));
        let fits = (COMMENT_STEPS_MAX - 3) / 2;
        assert_eq!(scan(&text(fits)), Ok(()));
        assert_eq!(scan(&text(fits + 1)), Err(Refusal::CommentTooLong(0)));
    }

    #[test]
    fn a_lexical_error_is_left_to_the_crate_only_when_the_worst_case_fits() {
        assert_eq!(scan("a \"open\nb {\n}\n"), Ok(()));
        // The worst case at the limit passes; one level more is refused at the string.
        assert_eq!(scan(&format!("a \"open\n{}", nested(NESTING_MAX, ""))), Ok(()));
        let deep = format!("b {{\na \"open\n{}", nested(NESTING_MAX, ""));
        assert!(matches!(scan(&deep), Err(Refusal::Lexical { at: 6, .. })));
        let glued = format!("a\"x\" {}", nested(NESTING_MAX + 1, ""));
        assert!(matches!(scan(&glued), Err(Refusal::Lexical { at: 1, .. })));
    }
}
