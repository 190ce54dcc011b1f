//! Source files of a factory and the spans that point into them.
//!
//! Every value read from a file carries a [`Span`]: the file it came from and the byte
//! range of its text, so any diagnostic, however late in the pipeline, can point at the
//! place an operator has to change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Index of a file in [`Sources`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        let start = u32::try_from(start).unwrap_or(u32::MAX);
        let end = u32::try_from(end).unwrap_or(u32::MAX).max(start);
        Span { file, start, end }
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.end == self.start
    }

    /// The smallest span that covers both (same file assumed; `self` wins otherwise).
    pub fn join(self, other: Span) -> Span {
        if self.file != other.file {
            return self;
        }
        Span { file: self.file, start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

/// A value together with where it was written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned { value: f(self.value), span: self.span }
    }
}

/// A spanned value serializes as the value alone: spans are for diagnostics, not data.
impl<T: serde::Serialize> serde::Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// The syntax a file is written in, chosen by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    Yaml,
    Kdl,
}

impl Syntax {
    pub fn of(path: &Path) -> Option<Syntax> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Syntax::Yaml),
            "kdl" => Some(Syntax::Kdl),
            _ => None,
        }
    }
}

/// One loaded file: its path as the user should see it, and its text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub syntax: Syntax,
    /// The text; for a file that is not UTF-8, the lossy decoding (used only to display it).
    pub text: Arc<String>,
    line_starts: Vec<u32>,
    ascii: bool,
}

/// A 1-based line and column (in characters), as editors and CI annotations count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

impl SourceFile {
    pub fn new(path: PathBuf, syntax: Syntax, text: String) -> SourceFile {
        let mut line_starts = vec![0u32];
        line_starts.extend(text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| (i + 1) as u32));
        let ascii = text.is_ascii();
        SourceFile { path, syntax, text: Arc::new(text), line_starts, ascii }
    }

    /// Line and column of a byte offset.
    pub fn line_col(&self, offset: u32) -> LineCol {
        let offset = offset.min(self.text.len() as u32);
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line] as usize;
        let end = offset as usize;
        let column = match self.text.get(start..end) {
            Some(prefix) => prefix.chars().count() + 1,
            None => end - start + 1,
        };
        LineCol { line: line + 1, column }
    }

    /// 0-based index of the line that holds a byte offset (`\n` ends a line).
    pub fn line_index(&self, offset: usize) -> usize {
        let offset = u32::try_from(offset.min(self.text.len())).unwrap_or(u32::MAX);
        self.line_starts.partition_point(|&s| s <= offset) - 1
    }

    /// Byte offset where a 0-based line starts; the end of the text past the last line.
    pub fn line_start(&self, line: usize) -> usize {
        self.line_starts.get(line).map_or(self.text.len(), |&s| s as usize)
    }

    /// Byte offset of a 1-based line and 0-based character column (how YAML markers count).
    pub fn offset_of(&self, line: usize, char_col: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let start = start as usize;
        if self.ascii {
            return (start + char_col).min(self.text.len());
        }
        let rest = &self.text[start..];
        rest.char_indices().nth(char_col).map_or(self.text.len().min(start + rest.len()), |(i, _)| start + i)
    }

    /// The source text a span covers.
    pub fn slice(&self, span: Span) -> &str {
        self.text.get(span.start as usize..span.end as usize).unwrap_or("")
    }
}

/// All files of one run.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, file: SourceFile) -> FileId {
        self.files.push(file);
        FileId((self.files.len() - 1) as u32)
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i as u32), f))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_from_one() {
        let f = SourceFile::new("a.yaml".into(), Syntax::Yaml, "ab\nçd: x\n".into());
        assert_eq!(f.line_col(0), LineCol { line: 1, column: 1 });
        assert_eq!(f.line_col(3), LineCol { line: 2, column: 1 });
        // 'ç' is two bytes: 'd' sits at byte 5 but is the second character.
        assert_eq!(f.line_col(5), LineCol { line: 2, column: 2 });
        assert_eq!(f.offset_of(2, 1), 5);
    }
}
