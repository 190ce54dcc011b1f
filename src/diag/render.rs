//! Rendering diagnostics for people (miette) and for programs (JSON, GitHub annotations).

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
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

/// One GitHub Actions workflow command (`::error file=…,line=…,col=…::message`).
pub fn github(d: &Diagnostic, sources: &Sources) -> String {
    let level = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let mut props = Vec::new();
    if let Some(l) = &d.primary {
        let f = sources.get(l.span.file);
        let (start, end) = (f.line_col(l.span.start), f.line_col(l.span.end));
        props.push(format!("file={}", escape_property(&f.path.display().to_string())));
        props.push(format!("line={}", start.line));
        props.push(format!("col={}", start.column));
        if end.line != start.line {
            props.push(format!("endLine={}", end.line));
        } else if end.column > start.column {
            props.push(format!("endColumn={}", end.column));
        }
    }
    props.push(format!("title={}", escape_property(d.code)));
    let mut message = d.message.clone();
    if let Some(help) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    format!("::{level} {}::{}", props.join(","), escape_data(&super::printable(&message)))
}

// GitHub's workflow-command escaping (actions/toolkit, command.ts).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
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
    source: Option<NamedSource<Arc<String>>>,
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
                    source: Some(named(sources, l.span.file)),
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
            source: file.map(|f| named(sources, f)),
            labels,
            related,
        }
    }
}

fn named(sources: &Sources, file: FileId) -> NamedSource<Arc<String>> {
    let f = sources.get(file);
    NamedSource::new(&*super::printable(&f.path.display().to_string()), displayable(&f.text))
}

/// The text with control characters (a binary file's, say) shown as `.`, as a hex dump
/// does, so that a snippet never sends control codes to the terminal. Each is one byte
/// and so is `.`: spans stay where they were.
fn displayable(text: &Arc<String>) -> Arc<String> {
    let control = |c: char| super::is_terminal_control(c) && !matches!(c, '\n' | '\r' | '\t');
    if !text.contains(control) {
        return Arc::clone(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if control(c) {
            // As many dots as the character has bytes (a C1 control has two).
            out.extend(std::iter::repeat_n('.', c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    Arc::new(out)
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
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
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
        let text = Arc::new("a\u{1b}[31mb\0\tc\n".to_string());
        let shown = displayable(&text);
        assert_eq!(shown.as_str(), "a.[31mb.\tc\n");
        assert_eq!(shown.len(), text.len(), "spans keep their offsets");
    }
}
