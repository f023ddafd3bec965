//! Findings: problems in user input, located in a source file, reported as miette
//! diagnostics (and as plain records for `-o json`).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, SourceCode};
use serde::Serialize;

/// A file read as input, kept whole so diagnostics can show it.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as the user gave it (or a name such as `<stdin>`).
    pub name: String,
    pub text: String,
    /// Byte offsets where lines start, built once when a finding first needs one: locating
    /// each of many findings by scanning from the start was quadratic.
    lines: std::sync::OnceLock<Vec<usize>>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Arc<Self> {
        Arc::new(SourceFile {
            name: name.into(),
            text: text.into(),
            lines: std::sync::OnceLock::new(),
        })
    }

    /// 1-based line and column (in characters) of a byte offset: a binary search in the
    /// line index, then the characters of that line up to the offset (ASCII lines are
    /// counted in bytes).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let lines = self.lines.get_or_init(|| {
            std::iter::once(0)
                .chain(memchr_newlines(&self.text).map(|i| i + 1))
                .collect()
        });
        let line = lines.partition_point(|&start| start <= offset);
        let start = lines[line - 1];
        let segment = &self.text[start..offset];
        let col = if segment.is_ascii() {
            segment.len()
        } else {
            segment.chars().count()
        };
        (line, col + 1)
    }
}

/// Byte offsets of every `\n` in `text`.
fn memchr_newlines(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// One problem in the input.
#[derive(Clone, Debug)]
pub struct Finding {
    pub severity: Severity,
    /// A stable code, e.g. `lattice::schema::unknown-field`.
    pub code: &'static str,
    pub message: String,
    pub help: Option<Box<str>>,
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
    /// The short text under the highlighted span.
    pub label: Option<Box<str>>,
    /// Where in the object, as a reader writes it (`spec.containers.main.image`), when the
    /// finding is about one field: what locates it when there is no text to point into.
    pub path: Option<Box<str>>,
}

impl Finding {
    /// An error at `span` of `file`.
    pub fn error(
        code: &'static str,
        file: &Arc<SourceFile>,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        // A span may point one past an empty value at the very end of the text; keep it
        // inside so renderers and consumers never index out of bounds.
        let len = file.text.len();
        let span = span.start.min(len)..span.end.min(len).max(span.start.min(len));
        Finding {
            severity: Severity::Error,
            code,
            message: message.into(),
            help: None,
            file: file.clone(),
            span,
            label: None,
            path: None,
        }
    }

    /// Makes this a warning.
    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into().into_boxed_str());
        self
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into().into_boxed_str());
        self
    }

    /// Names the field the finding is about.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into().into_boxed_str());
        self
    }

    /// 1-based line and column of the start of the finding.
    pub fn line_col(&self) -> (usize, usize) {
        self.file.line_col(self.span.start)
    }

    /// A plain record for machine output.
    pub fn record(&self) -> FindingRecord {
        let (line, column) = self.line_col();
        FindingRecord {
            severity: self.severity,
            code: self.code,
            message: self.message.clone(),
            help: self.help.as_deref().map(str::to_owned),
            file: self.file.name.clone(),
            line,
            column,
        }
    }
}

/// A finding as data (`-o json`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FindingRecord {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Finding {}

impl Diagnostic for Finding {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(self as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let len = self.span.end.saturating_sub(self.span.start);
        Some(Box::new(std::iter::once(LabeledSpan::new(
            self.label.as_deref().map(str::to_owned),
            self.span.start.min(self.file.text.len()),
            len,
        ))))
    }
}

impl SourceCode for Finding {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let inner = self
            .file
            .text
            .read_span(span, context_lines_before, context_lines_after)?;
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.file.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            inner.column(),
            inner.line_count(),
        )))
    }
}
