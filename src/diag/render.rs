//! Rendering diagnostics for people (miette) and for programs (JSON, GitHub annotations).

use std::fmt;
use std::path::Path;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents, SourceCode, SourceSpan,
    SpanContents,
};
use serde::Serialize;

use super::{Diagnostic, Label, Severity};
use crate::spec::source::{FileId, Sources};

/// How human output looks: `Fancy` on a terminal, `Plain` (no colour, ASCII) otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Fancy,
    Plain,
}

/// Renders one diagnostic as a miette report with its source snippets.
pub fn human(d: &Diagnostic, sources: &Sources, style: Style) -> String {
    let theme = match style {
        Style::Fancy => GraphicalTheme::unicode(),
        Style::Plain => GraphicalTheme::none(),
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100).with_links(false);
    let report = MietteReport::new(d, sources);
    let mut out = String::new();
    // Writing into a String cannot fail; a rendering error would be a miette bug.
    let _ = handler.render_report(&mut out, &report);
    out
}

/// A diagnostic in the JSON output of `validate --format json`.
#[derive(Serialize, Debug)]
pub struct JsonDiagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub end_line: Option<usize>,
    pub end_column: Option<usize>,
    pub label: Option<String>,
    pub help: Option<String>,
    pub related: Vec<JsonLocation>,
}

#[derive(Serialize, Debug)]
pub struct JsonLocation {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

pub fn json(d: &Diagnostic, sources: &Sources) -> JsonDiagnostic {
    let loc = d.primary.as_ref().map(|l| {
        let f = sources.get(l.span.file);
        (f.path.display().to_string(), f.line_col(l.span.start), f.line_col(l.span.end), l.text.clone())
    });
    JsonDiagnostic {
        severity: d.severity,
        code: d.code,
        message: d.message.clone(),
        file: loc.as_ref().map(|l| l.0.clone()),
        line: loc.as_ref().map(|l| l.1.line),
        column: loc.as_ref().map(|l| l.1.column),
        end_line: loc.as_ref().map(|l| l.2.line),
        end_column: loc.as_ref().map(|l| l.2.column),
        label: loc.map(|l| l.3).filter(|t| !t.is_empty()),
        help: d.help.clone(),
        related: d
            .secondary
            .iter()
            .map(|l| {
                let f = sources.get(l.span.file);
                let lc = f.line_col(l.span.start);
                JsonLocation {
                    file: f.path.display().to_string(),
                    line: lc.line,
                    column: lc.column,
                    message: l.text.clone(),
                }
            })
            .collect(),
    }
}

/// GitHub Actions workflow commands for a diagnostic: `::error file=…,line=…,col=…::message`
/// at its place, its related places (`see also:`) in the message, and a `::notice` on
/// each related place pointing back, so a reviewer sees both ends in the pull request's
/// diff. Paths are relative to the repository ([`repo_relative`]), as GitHub resolves them.
pub fn github(d: &Diagnostic, sources: &Sources) -> String {
    github_value(&serde_json::to_value(json(d, sources)).unwrap_or_default())
}

/// [`github`] of a diagnostic in its JSON shape ([`JsonDiagnostic`]), as `plan` keeps
/// them (scrubbed of secrets) for its machine formats.
pub fn github_value(d: &serde_json::Value) -> String {
    let text = |k: &str| d[k].as_str().map(str::to_string);
    let num = |k: &str| d[k].as_u64();
    let level = match d["severity"].as_str() {
        Some("warning") => "warning",
        _ => "error",
    };
    let code = text("code").unwrap_or_default();
    let file = text("file").map(|f| repo_relative(Path::new(&f)));
    let mut props = Vec::new();
    if let (Some(file), Some(line), Some(col)) = (&file, num("line"), num("column")) {
        props.push(format!("file={}", escape_property(file)));
        props.push(format!("line={line}"));
        props.push(format!("col={col}"));
        match (num("end_line"), num("end_column")) {
            (Some(end), _) if end != line => props.push(format!("endLine={end}")),
            (_, Some(end)) if end > col => props.push(format!("endColumn={end}")),
            _ => {}
        }
    }
    props.push(format!("title={}", escape_property(&code)));
    let mut message = text("message").unwrap_or_default();
    if let Some(help) = text("help") {
        message.push_str("\nhelp: ");
        message.push_str(&help);
    }
    let related: Vec<(String, u64, u64, String)> = d["related"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            let file = repo_relative(Path::new(r["file"].as_str()?));
            Some((file, r["line"].as_u64()?, r["column"].as_u64()?, r["message"].as_str().unwrap_or("").to_string()))
        })
        .collect();
    for (file, line, col, label) in &related {
        message.push_str(&format!("\nsee also: {file}:{line}:{col}: {label}"));
    }
    let mut out = format!("::{level} {}::{}", props.join(","), escape_data(&super::printable(&message)));
    let here = match (&file, num("line"), num("column")) {
        (Some(f), Some(l), Some(c)) => format!("{f}:{l}:{c}"),
        _ => "the factory".to_string(),
    };
    for (rfile, line, col, label) in &related {
        let note = format!("{label}\nrelated to {here}: {}", text("message").unwrap_or_default());
        out.push_str(&format!(
            "\n::notice file={},line={line},col={col},title={}::{}",
            escape_property(rfile),
            escape_property(&format!("{code} (related)")),
            escape_data(&super::printable(&note))
        ));
    }
    out
}

/// A file's path as GitHub resolves annotation paths: relative to the repository's root:
/// `GITHUB_WORKSPACE` when the file lies below it, else the nearest directory above the
/// file that holds `.git`; else relative to the current directory when below it; else as
/// given.
pub fn repo_relative(path: &Path) -> String {
    let Ok(cwd) = std::env::current_dir() else { return path.display().to_string() };
    let abs = if path.is_absolute() { path.to_path_buf() } else { cwd.join(path) };
    let abs = abs.canonicalize().unwrap_or(abs);
    let workspace = std::env::var_os("GITHUB_WORKSPACE")
        .map(std::path::PathBuf::from)
        .filter(|w| w.is_absolute())
        .map(|w| w.canonicalize().unwrap_or(w));
    let git_root = abs.ancestors().skip(1).find(|d| d.join(".git").exists()).map(Path::to_path_buf);
    let cwd = cwd.canonicalize().unwrap_or(cwd);
    [workspace, git_root, Some(cwd)]
        .into_iter()
        .flatten()
        .find_map(|root| abs.strip_prefix(&root).ok().map(|r| r.display().to_string()))
        .unwrap_or_else(|| path.display().to_string())
}

// GitHub's workflow-command escaping (actions/toolkit, command.ts).
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Adapter that shows a [`Diagnostic`] to miette: labels in the primary file inline,
/// labels in other files as related reports with their own snippet.
#[derive(Debug)]
struct MietteReport {
    severity: Severity,
    code: &'static str,
    message: String,
    help: Option<String>,
    source: Option<Snippet>,
    labels: Vec<LabeledSpan>,
    related: Vec<MietteReport>,
}

impl MietteReport {
    fn new(d: &Diagnostic, sources: &Sources) -> MietteReport {
        let file = d.primary.as_ref().map(|l| l.span.file);
        let mut labels = Vec::new();
        let mut related = Vec::new();
        if let Some(p) = &d.primary {
            labels.push(labeled(p, true));
        }
        for l in &d.secondary {
            if Some(l.span.file) == file {
                labels.push(labeled(l, false));
            } else {
                related.push(MietteReport {
                    severity: Severity::Warning,
                    code: "",
                    message: super::printable(&l.text).into_owned(),
                    help: None,
                    source: Some(Snippet::new(sources, l.span.file, &[l])),
                    labels: vec![labeled(l, true)],
                    related: Vec::new(),
                });
            }
        }
        MietteReport {
            severity: d.severity,
            code: d.code,
            message: super::printable(&d.message).into_owned(),
            help: d.help.as_deref().map(|h| super::printable(h).into_owned()),
            source: file.map(|f| {
                let in_file: Vec<&Label> = d.primary.iter().chain(&d.secondary).filter(|l| l.span.file == f).collect();
                Snippet::new(sources, f, &in_file)
            }),
            labels,
            related,
        }
    }
}

/// Lines of context miette may ask for around a label, and a margin: it shows one.
const SNIPPET_CONTEXT_LINES: usize = 3;

/// The part of a file a report shows: the lines around its labels, cut once with the
/// file's line index. miette's own source types find lines by scanning the text from its
/// start, for every label: 40,000 diagnostics on one large file took minutes that way.
/// Here each report costs its lines only, so rendering is linear in the output.
#[derive(Debug)]
struct Snippet {
    name: String,
    /// Where `text` starts in the file (a line start), and that line's 0-based number.
    offset: usize,
    first_line: usize,
    /// The lines shown, control characters masked ([`displayable`]).
    text: String,
    /// Offsets in `text` where its lines start.
    line_starts: Vec<usize>,
}

impl Snippet {
    fn new(sources: &Sources, file: FileId, labels: &[&Label]) -> Snippet {
        let f = sources.get(file);
        let first = labels.iter().map(|l| f.line_index(l.span.start as usize)).min().unwrap_or(0);
        let last = labels.iter().map(|l| f.line_index(l.span.end as usize)).max().unwrap_or(0);
        let first_line = first.saturating_sub(SNIPPET_CONTEXT_LINES);
        let offset = f.line_start(first_line);
        let end = f.line_start(last + SNIPPET_CONTEXT_LINES + 1);
        let text = displayable(&f.text[offset..end]);
        let mut line_starts = vec![0];
        line_starts.extend(text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i + 1));
        Snippet {
            name: super::printable(&f.path.display().to_string()).into_owned(),
            offset,
            first_line,
            text,
            line_starts,
        }
    }

    /// 0-based line of `text` that holds a position in it.
    fn line_of(&self, at: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= at) - 1
    }

    fn line_start(&self, line: usize) -> usize {
        self.line_starts.get(line).copied().unwrap_or(self.text.len())
    }
}

/// Reads as miette's reading of the whole file would (`context_info` for `[u8]`):
/// whole lines with context, or from the span's own start when no lines before are
/// asked; the same line, column and line count.
impl SourceCode for Snippet {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let start = span.offset().checked_sub(self.offset).ok_or(MietteError::OutOfBounds)?;
        let end = start + span.len();
        if end > self.text.len() {
            return Err(MietteError::OutOfBounds);
        }
        let start_line = self.line_of(start);
        // miette takes the line of the span's last byte (of the byte before an empty span).
        let end_line = self.line_of(end.saturating_sub(1).max(start.min(end))).max(start_line);
        let (from, column) = if before == 0 {
            (start, start - self.line_start(start_line))
        } else {
            (self.line_start(start_line.saturating_sub(before)), 0)
        };
        let to = if after == 0 { end.max(from) } else { self.line_start(end_line + after + 1) };
        let line = self.first_line + if before == 0 { start_line } else { start_line.saturating_sub(before) };
        let line_count = self.first_line + self.text[..to].bytes().filter(|&b| b == b'\n').count();
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            &self.text.as_bytes()[from..to],
            SourceSpan::new((self.offset + from).into(), to - from),
            line,
            column,
            line_count,
        )))
    }
}

/// The text with control characters (a binary file's, say) shown as `.`, as a hex dump
/// does, so that a snippet never sends control codes to the terminal. Each is one byte
/// and so is `.`: spans stay where they were.
fn displayable(text: &str) -> String {
    let control = |c: char| super::is_terminal_control(c) && !matches!(c, '\n' | '\r' | '\t');
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if control(c) {
            // As many dots as the character has bytes (a C1 control has two).
            out.extend(std::iter::repeat_n('.', c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    out
}

fn labeled(l: &Label, primary: bool) -> LabeledSpan {
    let span = SourceSpan::new((l.span.start as usize).into(), l.span.len());
    let text = (!l.text.is_empty()).then(|| super::printable(&l.text).into_owned());
    if primary { LabeledSpan::new_primary_with_span(text, span) } else { LabeledSpan::new_with_span(text, span) }
}

impl fmt::Display for MietteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for MietteReport {}

impl miette::Diagnostic for MietteReport {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        (!self.code.is_empty()).then(|| Box::new(self.code) as Box<dyn fmt::Display>)
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            // Related reports ("first defined here") are context, shown as advice.
            Severity::Warning if self.code.is_empty() => miette::Severity::Advice,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        (!self.labels.is_empty()).then(|| Box::new(self.labels.iter().cloned()) as Box<dyn Iterator<Item = _>>)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        (!self.related.is_empty()).then(|| {
            Box::new(self.related.iter().map(|r| r as &dyn miette::Diagnostic))
                as Box<dyn Iterator<Item = &'a dyn miette::Diagnostic>>
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let text = "a\u{1b}[31mb\0\tc\n";
        let shown = displayable(text);
        assert_eq!(shown.as_str(), "a.[31mb.\tc\n");
        assert_eq!(shown.len(), text.len(), "spans keep their offsets");
    }
}
