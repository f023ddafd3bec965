//! A YAML reader that knows where every value came from.
//!
//! Manifests are read into `serde_json::Value` (what JSON Schema validation and serde
//! deserialization work on). A [`SpanMap`] from JSON pointers to byte ranges in the source
//! lets any finding about `/spec/containers/main/image` point at its line and column; it is
//! built on first use, by reading the one document again, because most documents have no
//! findings and recording every location costs a third of reading. Scalars resolve by the YAML 1.2 core schema, as Kubernetes' decoder does for the
//! types Lattice uses. Duplicate keys are errors, and alias expansion is bounded so a small
//! file cannot expand into an unbounded document.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::OnceLock;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The most values one file may expand to (aliases included).
pub const MAX_NODES: usize = 1_000_000;
/// The deepest nesting accepted.
pub const MAX_DEPTH: usize = 256;

/// Where a value and, for a mapping entry, its key stand in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// The key of the mapping entry holding this value, if any.
    pub key: Option<Range<usize>>,
    /// The value itself (for collections, where it starts).
    pub value: Range<usize>,
    /// The scalar style, for mapping text inside block scalars back to the file.
    pub style: Option<ScalarStyle>,
}

/// How a scalar was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarStyle {
    Plain,
    Quoted,
    Literal,
    Folded,
}

/// JSON pointer → source span, for one document.
#[derive(Clone, Debug, Default)]
pub struct SpanMap {
    spans: HashMap<String, Span>,
}

impl SpanMap {
    /// The span of the value at `pointer`, or of its nearest ancestor that has one.
    pub fn find(&self, pointer: &str) -> Option<&Span> {
        let mut p = pointer;
        loop {
            if let Some(s) = self.spans.get(p) {
                return Some(s);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }

    /// The span of exactly `pointer`, if it was in the source.
    pub fn get(&self, pointer: &str) -> Option<&Span> {
        self.spans.get(pointer)
    }
}

impl SpanMap {
    fn shifted(self, by: usize) -> SpanMap {
        let shift = |r: Range<usize>| r.start + by..r.end + by;
        SpanMap {
            spans: self
                .spans
                .into_iter()
                .map(|(p, s)| {
                    let span = Span {
                        key: s.key.map(shift),
                        value: shift(s.value),
                        style: s.style,
                    };
                    (p, span)
                })
                .collect(),
        }
    }
}

/// One YAML document of a file.
#[derive(Clone, Debug)]
pub struct YamlDocument {
    /// Position in the file, from 0.
    pub index: usize,
    pub value: Value,
    /// Where the document starts in the file.
    pub start: usize,
    /// Where the next document starts (or the file ends).
    pub end: usize,
    spans: OnceLock<SpanMap>,
}

impl YamlDocument {
    /// A document that arrived already parsed (JSON in an AdmissionReview) and has no text
    /// to point into: nothing is ever located in it, so findings name the field by path.
    pub fn from_value(value: Value) -> YamlDocument {
        YamlDocument {
            index: 0,
            value,
            start: 0,
            end: 0,
            spans: OnceLock::from(SpanMap::default()),
        }
    }

    /// Where each value of this document stands in `text`, the file it was read from.
    /// The first call reads the document again, recording locations.
    pub fn spans(&self, text: &str) -> &SpanMap {
        self.spans.get_or_init(|| self.locate(text))
    }

    fn locate(&self, text: &str) -> SpanMap {
        // From the start of the document's line, so an indented root reads the same.
        let from = text
            .get(..self.start)
            .and_then(|t| t.rfind('\n'))
            .map_or(0, |i| i + 1);
        if let Some(slice) = text.get(from..self.end.min(text.len())) {
            let (docs, _) = read(slice, true);
            if let Some(d) = docs.into_iter().next()
                && d.value == self.value
            {
                return d.spans.into_inner().unwrap_or_default().shifted(from);
            }
        }
        // Read alone, the document differs (a directive before it applies): read the file.
        let (docs, _) = read(text, true);
        docs.into_iter()
            .nth(self.index)
            .and_then(|d| d.spans.into_inner())
            .unwrap_or_default()
    }
}

/// A problem reading YAML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    pub message: String,
    pub span: Range<usize>,
    pub help: Option<String>,
}

/// Appends one JSON pointer segment, escaped per RFC 6901.
pub fn push_pointer(base: &str, segment: &str) -> String {
    let mut s = String::with_capacity(base.len() + segment.len() + 1);
    s.push_str(base);
    s.push('/');
    for c in segment.chars() {
        match c {
            '~' => s.push_str("~0"),
            '/' => s.push_str("~1"),
            c => s.push(c),
        }
    }
    s
}

/// Reads every document of a YAML stream.
///
/// Duplicate keys are reported and the first value kept, so reading goes on. A syntax error
/// (or a document too large or too deep) ends reading: the documents before it are
/// returned with it.
pub fn parse_documents(text: &str) -> (Vec<YamlDocument>, Vec<YamlError>) {
    read(text, false)
}

/// Reads a YAML stream; with `record`, every document's spans are recorded as it is read.
fn read(text: &str, record: bool) -> (Vec<YamlDocument>, Vec<YamlError>) {
    let mut builder = Builder::new(text, record);
    let mut parser = Parser::new_from_str(text).keep_tags(true);
    let result = parser.load(&mut builder, true);
    if let Err(e) = result
        && builder.fatal.is_none()
    {
        let at = builder.offset(e.marker());
        builder.fatal = Some(YamlError {
            message: format!("invalid YAML: {}", e.info()),
            span: at..at,
            help: Some("check indentation, quoting and the `key: value` layout".into()),
        });
    }
    let mut errors = builder.errors;
    errors.extend(builder.fatal);
    let mut documents = builder.documents;
    let mut end = text.len();
    for d in documents.iter_mut().rev() {
        d.end = end.max(d.start);
        end = d.start;
    }
    (documents, errors)
}

enum Frame {
    Seq {
        /// Where its items start in the builder's [`Builder::items`].
        start: usize,
        pointer: String,
        anchor: usize,
    },
    Map {
        /// Where its entries start in the builder's [`Builder::pairs`].
        start: usize,
        pointer: String,
        anchor: usize,
        /// The pending key, once read, and where it was.
        key: Option<(String, Range<usize>)>,
        /// Each key's place among the entries, once the mapping has too many to search.
        index: Option<HashMap<String, usize>>,
    },
}

/// One entry of a mapping being read.
struct Pair {
    key: String,
    value: Value,
    /// Where the key was written, for duplicate reports; `None` for an entry a `<<` merge
    /// brought in, which an explicit key may override.
    span: Option<Range<usize>>,
}

/// Past this many entries, a mapping's keys are found through a map rather than searched.
const SEARCHED_KEYS: usize = 16;

struct Builder<'a> {
    text: &'a str,
    /// Whether spans are recorded (else only values are built).
    record: bool,
    /// An ASCII text's char offsets are its byte offsets.
    ascii: bool,
    line_starts: Vec<usize>,
    stack: Vec<Frame>,
    /// The entries of every open mapping, innermost last. A mapping's entries become its
    /// object, made at its exact size, when it ends: one buffer reused for every mapping
    /// instead of each growing its own map an entry at a time.
    pairs: Vec<Pair>,
    /// The items of every open sequence, innermost last, likewise.
    items: Vec<Value>,
    anchors: HashMap<usize, Value>,
    nodes: usize,
    spans: SpanMap,
    doc_start: usize,
    documents: Vec<YamlDocument>,
    /// Problems after which reading goes on (duplicate keys).
    errors: Vec<YamlError>,
    /// The problem that ended reading.
    fatal: Option<YamlError>,
    /// The key span waiting to be attached to the next value.
    pending_key_span: Option<Range<usize>>,
}

impl<'a> Builder<'a> {
    fn new(text: &'a str, record: bool) -> Self {
        let ascii = text.is_ascii();
        // Only a text with other characters needs lines to turn markers into offsets.
        let mut line_starts = vec![0];
        if !ascii {
            line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        }
        Builder {
            text,
            record,
            ascii,
            line_starts,
            stack: Vec::new(),
            pairs: Vec::new(),
            items: Vec::new(),
            anchors: HashMap::new(),
            nodes: 0,
            spans: SpanMap::default(),
            doc_start: 0,
            documents: Vec::new(),
            errors: Vec::new(),
            fatal: None,
            pending_key_span: None,
        }
    }

    /// Byte offset of a marker. Markers carry a 1-based line and a column counted in
    /// characters, which is exact for any UTF-8 input.
    fn offset(&self, m: &Marker) -> usize {
        if self.ascii {
            return m.index().min(self.text.len());
        }
        let line = m.line().max(1) - 1;
        let Some(&start) = self.line_starts.get(line) else {
            return self.text.len();
        };
        let rest = &self.text[start..];
        let line_text = rest.split('\n').next().unwrap_or("");
        line_text
            .char_indices()
            .nth(m.col())
            .map(|(i, _)| start + i)
            .unwrap_or(start + line_text.len())
    }

    /// The source range a scalar occupies on its first line.
    fn scalar_range(&self, start: usize, value: &str, style: TScalarStyle) -> Range<usize> {
        let len = match style {
            TScalarStyle::Plain => value.len(),
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => value.len() + 2,
            TScalarStyle::Literal | TScalarStyle::Folded => 1,
        };
        let end = (start + len.max(1)).min(self.text.len());
        // The range ends at the first line's end: only the scalar's own extent can hold it.
        let line_end = self
            .text
            .as_bytes()
            .get(start..end)
            .and_then(|b| b.iter().position(|&c| c == b'\n'))
            .map_or(end, |i| start + i);
        start
            ..line_end
                .max(start + 1)
                .min(end.max(start + 1))
                .min(self.text.len())
    }

    fn fail(&mut self, message: String, span: Range<usize>, help: Option<&str>) {
        if self.fatal.is_none() {
            self.fatal = Some(YamlError {
                message,
                span,
                help: help.map(str::to_owned),
            });
        }
    }

    /// The pointer of the value about to be added to the innermost collection.
    fn next_pointer(&self) -> String {
        if !self.record {
            return String::new();
        }
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { start, pointer, .. }) => {
                push_pointer(pointer, &(self.items.len() - start).to_string())
            }
            Some(Frame::Map { key, pointer, .. }) => match key {
                Some((k, _)) => push_pointer(pointer, k),
                None => pointer.clone(),
            },
        }
    }

    fn count_nodes(&mut self, n: usize, at: usize) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            self.fail(
                format!("document expands to more than {MAX_NODES} values"),
                at..at,
                Some("aliases (`*name`) may be expanding recursively; write the values out"),
            );
            return false;
        }
        true
    }

    /// Adds a finished value to the innermost collection, or finishes the document.
    fn add_value(&mut self, value: Value, span_start: usize, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        let Some(frame) = self.stack.last_mut() else {
            let spans = std::mem::take(&mut self.spans);
            self.documents.push(YamlDocument {
                index: self.documents.len(),
                value,
                start: self.doc_start,
                end: self.doc_start,
                spans: if self.record {
                    OnceLock::from(spans)
                } else {
                    OnceLock::new()
                },
            });
            return;
        };
        match frame {
            Frame::Seq { .. } => self.items.push(value),
            Frame::Map {
                start,
                key,
                index,
                pointer,
                ..
            } => {
                let start = *start;
                match key.take() {
                    None => {
                        let k = match value {
                            Value::String(s) => s,
                            Value::Number(n) => n.to_string(),
                            Value::Bool(b) => b.to_string(),
                            Value::Null => "null".to_owned(),
                            _ => {
                                self.fail(
                                    "a mapping key must be a scalar".into(),
                                    span_start..span_start + 1,
                                    Some("use a string key"),
                                );
                                return;
                            }
                        };
                        let range = self
                            .pending_key_span
                            .clone()
                            .unwrap_or(span_start..span_start);
                        // A block mapping's start event stands at its first key's `:`; the
                        // mapping really starts at its first key.
                        if self.pairs.len() == start
                            && let Some(span) = self.spans.spans.get_mut(pointer.as_str())
                            && range.start < span.value.start
                        {
                            span.value = range.start..range.start + 1;
                        }
                        *key = Some((k, range));
                    }
                    Some((k, range)) => {
                        if k == "<<" {
                            // YAML merge key: bring in entries not already written.
                            let sources = match value {
                                Value::Array(items) => items,
                                other => vec![other],
                            };
                            for source in sources {
                                if let Value::Object(m) = source {
                                    for (mk, mv) in m {
                                        if find(&self.pairs[start..], index, &mk).is_none() {
                                            push(&mut self.pairs, start, index, mk, mv, None);
                                        }
                                    }
                                }
                            }
                            return;
                        }
                        let Some(i) = find(&self.pairs[start..], index, &k) else {
                            push(&mut self.pairs, start, index, k, value, Some(range));
                            return;
                        };
                        let pair = &mut self.pairs[start + i];
                        match &pair.span {
                            Some(first) => {
                                let first_line = self.text[..first.start].matches('\n').count() + 1;
                                self.errors.push(YamlError {
                                    message: format!(
                                        "duplicate key `{k}` (first written on line {first_line})"
                                    ),
                                    span: range,
                                    help: Some("each key may appear once in a mapping; the first value is used".into()),
                                });
                            }
                            // An explicit key overrides what a merge brought in, in place.
                            None => {
                                pair.value = value;
                                pair.span = Some(range);
                            }
                        }
                    }
                }
            }
        }
    }

    fn record_span(
        &mut self,
        pointer: String,
        start: usize,
        range: Range<usize>,
        style: Option<ScalarStyle>,
    ) {
        let key = self.pending_key_span.take();
        let _ = start;
        if !self.record {
            return;
        }
        self.spans.spans.insert(
            pointer,
            Span {
                key,
                value: range,
                style,
            },
        );
    }

    /// Whether the next value completes a key (rather than being a key).
    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

/// A plain scalar that YAML 1.2 (read here) and YAML 1.1 (read by kubectl and client-go)
/// resolve differently: (our reading, theirs). Such a value is refused rather than read one
/// way when the cluster would read it the other.
fn yaml11_difference(s: &str) -> Option<(String, String)> {
    // Every form below starts with a digit or a sign, or is a y/n/on/off word: most values
    // (names, images, paths) are none of these.
    if !matches!(
        s.as_bytes().first(),
        Some(b'0'..=b'9' | b'+' | b'-' | b'y' | b'Y' | b'n' | b'N' | b'o' | b'O')
    ) {
        return None;
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let negative = s.starts_with('-');
    // `010`: decimal here, octal there.
    if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
        && let (Ok(dec), Ok(oct)) = (digits.parse::<i64>(), i64::from_str_radix(digits, 8))
        && dec != oct
    {
        let sign = if negative { -1 } else { 1 };
        return Some(((sign * dec).to_string(), (sign * oct).to_string()));
    }
    // `0b101`: text here, a binary number there.
    if let Some(bin) = digits.strip_prefix("0b")
        && !bin.is_empty()
        && let Ok(n) = i64::from_str_radix(&bin.replace('_', ""), 2)
    {
        return Some((format!("the text \"{s}\""), n.to_string()));
    }
    // `1_000`: text here, a number there.
    if digits.contains('_')
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
        && digits.bytes().next().is_some_and(|b| b.is_ascii_digit())
    {
        return Some((format!("the text \"{s}\""), digits.replace('_', "")));
    }
    // `1:30`: text here, sexagesimal there.
    if digits.contains(':')
        && digits
            .split(':')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && digits
            .split(':')
            .skip(1)
            .all(|p| p.len() <= 2 && p.parse::<u32>().is_ok_and(|n| n < 60))
        && !digits.starts_with('0')
    {
        let n = digits.split(':').try_fold(0i64, |acc, p| {
            acc.checked_mul(60)?.checked_add(p.parse().ok()?)
        });
        if let Some(n) = n {
            return Some((format!("the text \"{s}\""), n.to_string()));
        }
    }
    // `yes`, `off`, `y`: text here, booleans there.
    let truth = match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    };
    truth.map(|b| (format!("the text \"{s}\""), b.to_string()))
}

/// [`resolve_plain`] of a scalar the reader owns: text that can only be text is moved, not
/// copied.
fn resolve_plain_owned(s: String) -> Value {
    // Null, booleans, infinities and numbers all start with one of these (or are empty).
    match s.as_bytes().first() {
        None
        | Some(b'0'..=b'9' | b'+' | b'-' | b'.' | b'~' | b'n' | b'N' | b't' | b'T' | b'f' | b'F') => {
            resolve_plain(&s)
        }
        Some(_) => Value::String(s),
    }
}

fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            // JSON has no infinities or NaN; keep the text so a number field reports it.
            return Value::String(s.to_owned());
        }
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Ok(u) = s.parse::<u64>() {
            return Value::Number(u.into());
        }
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Number(i.into());
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Number(i.into());
    }
    let looks_float = digits
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_float
        && let Ok(f) = s.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(s.to_owned())
}

fn resolve_tagged(s: &str, tag: &Tag) -> Value {
    if tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:" {
        match tag.suffix.as_str() {
            "str" => return Value::String(s.to_owned()),
            "null" => return Value::Null,
            _ => {}
        }
    }
    resolve_plain(s)
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.fatal.is_some() {
            return;
        }
        let at = self.offset(&mark);
        match ev {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
            Event::DocumentStart => {
                self.doc_start = at;
                self.spans = SpanMap::default();
                self.anchors.clear();
            }
            Event::DocumentEnd => {
                // A document with no content ends without a value; keep indexes aligned.
                if self
                    .documents
                    .last()
                    .is_none_or(|d| d.start != self.doc_start)
                    && self.stack.is_empty()
                {
                    let spans = std::mem::take(&mut self.spans);
                    self.documents.push(YamlDocument {
                        index: self.documents.len(),
                        value: Value::Null,
                        start: self.doc_start,
                        end: self.doc_start,
                        spans: if self.record {
                            OnceLock::from(spans)
                        } else {
                            OnceLock::new()
                        },
                    });
                }
            }
            Event::Alias(id) => {
                let Some(value) = self.anchors.get(&id).cloned() else {
                    self.fail("alias to an unknown anchor".into(), at..at + 1, None);
                    return;
                };
                if !self.count_nodes(count_values(&value), at) {
                    return;
                }
                if self.expecting_key() {
                    self.pending_key_span = Some(at..at + 1);
                } else {
                    let ptr = self.next_pointer();
                    self.record_span(ptr, at, at..at + 1, None);
                }
                self.add_value(value, at, 0);
            }
            Event::Scalar(text, style, anchor, tag) => {
                if !self.count_nodes(1, at) {
                    return;
                }
                let range = self.scalar_range(at, &text, style);
                let differs = (tag.is_none() && style == TScalarStyle::Plain)
                    .then(|| yaml11_difference(&text))
                    .flatten();
                let shown = if differs.is_some() {
                    text.clone()
                } else {
                    String::new()
                };
                let value = match (&tag, style) {
                    (Some(t), _) => resolve_tagged(&text, t),
                    (None, TScalarStyle::Plain) => resolve_plain_owned(text),
                    (None, _) => Value::String(text),
                };
                if self.expecting_key() {
                    self.pending_key_span = Some(range);
                } else {
                    if let Some((ours, theirs)) = differs {
                        self.errors.push(YamlError {
                            message: format!(
                                "`{shown}` reads as {ours} here (YAML 1.2) but as {theirs} in kubectl (YAML 1.1)"
                            ),
                            span: range.clone(),
                            help: Some(format!(
                                "quote it (`\"{shown}\"`) for text, or write the number or boolean so both read it alike"
                            )),
                        });
                    }
                    let ptr = self.next_pointer();
                    let st = match style {
                        TScalarStyle::Plain => ScalarStyle::Plain,
                        TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => {
                            ScalarStyle::Quoted
                        }
                        TScalarStyle::Literal => ScalarStyle::Literal,
                        TScalarStyle::Folded => ScalarStyle::Folded,
                    };
                    self.record_span(ptr, at, range, Some(st));
                }
                self.add_value(value, at, anchor);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                        at..at + 1,
                        None,
                    );
                    return;
                }
                if !self.count_nodes(1, at) {
                    return;
                }
                if self.expecting_key() {
                    self.fail(
                        "a mapping key must be a scalar".into(),
                        at..at + 1,
                        Some("use a string key"),
                    );
                    return;
                }
                let pointer = self.next_pointer();
                self.record_span(pointer.clone(), at, at..at + 1, None);
                self.stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq {
                        start: self.items.len(),
                        pointer,
                        anchor,
                    }
                } else {
                    Frame::Map {
                        start: self.pairs.len(),
                        pointer,
                        anchor,
                        key: None,
                        index: None,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return;
                };
                let (value, anchor) = match frame {
                    Frame::Seq { start, anchor, .. } => {
                        (Value::Array(self.items.drain(start..).collect()), anchor)
                    }
                    Frame::Map { start, anchor, .. } => {
                        let mut entries = Map::with_capacity(self.pairs.len() - start);
                        for pair in self.pairs.drain(start..) {
                            entries.insert(pair.key, pair.value);
                        }
                        (Value::Object(entries), anchor)
                    }
                };
                self.add_value(value, at, anchor);
            }
        }
    }
}

/// The place of `key` among a mapping's `pairs` so far.
fn find(pairs: &[Pair], index: &Option<HashMap<String, usize>>, key: &str) -> Option<usize> {
    match index {
        Some(index) => index.get(key).copied(),
        None => pairs.iter().position(|p| p.key == key),
    }
}

/// Adds a new entry to the mapping whose entries start at `start`, indexing its keys once
/// there are too many to search.
fn push(
    pairs: &mut Vec<Pair>,
    start: usize,
    index: &mut Option<HashMap<String, usize>>,
    key: String,
    value: Value,
    span: Option<Range<usize>>,
) {
    let at = pairs.len() - start;
    match index {
        Some(index) => {
            index.insert(key.clone(), at);
        }
        None if at >= SEARCHED_KEYS => {
            let mut all: HashMap<String, usize> = pairs[start..]
                .iter()
                .enumerate()
                .map(|(i, p)| (p.key.clone(), i))
                .collect();
            all.insert(key.clone(), at);
            *index = Some(all);
        }
        None => {}
    }
    pairs.push(Pair { key, value, span });
}

fn count_values(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(count_values).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(count_values).sum::<usize>(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> YamlDocument {
        let (docs, err) = parse_documents(text);
        assert_eq!(err, vec![]);
        assert_eq!(docs.len(), 1, "{docs:?}");
        docs.into_iter().next().unwrap()
    }

    fn line_col(text: &str, offset: usize) -> (usize, usize) {
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap().chars().count() + 1;
        (line, col)
    }

    proptest::proptest! {
        /// The reader's shortcut for text that can only be text resolves every plain scalar
        /// exactly as the full resolution does.
        #[test]
        fn the_owned_shortcut_resolves_as_the_core_schema(
            s in "[-+.~0-9a-zA-Z_:/ ]{0,12}|(null|Null|NULL|true|True|FALSE|\\.inf|-\\.Inf|\\.NaN|0x1F|0o17|1e3|~)"
        ) {
            proptest::prop_assert_eq!(resolve_plain_owned(s.clone()), resolve_plain(&s));
        }
    }

    #[test]
    fn scalars_resolve_by_the_core_schema() {
        let d = one(
            "a: 1\nb: -2\nc: 1.5\nd: true\ne: ~\nf: \"yes\"\ng: '3'\nh: 0x10\ni: 1.2.3\nj: !!str 7\nk: 10\n",
        );
        assert_eq!(
            d.value,
            json!({"a": 1, "b": -2, "c": 1.5, "d": true, "e": null, "f": "yes", "g": "3", "h": 16, "i": "1.2.3", "j": "7", "k": 10})
        );
    }

    /// Where YAML 1.1 (kubectl, client-go) and 1.2 (read here) disagree on a plain value,
    /// the value is refused with both readings rather than read one way.
    #[test]
    fn values_yaml_1_1_reads_otherwise_are_errors_naming_both_readings() {
        for (value, ours, theirs) in [
            ("010", "10", "8"),
            ("-010", "-10", "-8"),
            ("yes", "the text \"yes\"", "true"),
            ("Off", "the text \"Off\"", "false"),
            ("0b101", "the text \"0b101\"", "5"),
            ("1_000", "the text \"1_000\"", "1000"),
            ("1:30", "the text \"1:30\"", "90"),
        ] {
            let text = format!("replicas: {value}\n");
            let (_, errors) = parse_documents(&text);
            assert_eq!(errors.len(), 1, "{value}: {errors:?}");
            let e = &errors[0];
            assert!(
                e.message.contains(&format!("reads as {ours} here"))
                    && e.message.contains(&format!("as {theirs} in kubectl")),
                "{value}: {}",
                e.message
            );
            assert_eq!(&text[e.span.clone()], value);
        }
        // Quoted, tagged, or the same either way: no error. Keys are not values.
        for text in [
            "a: \"010\"\n",
            "a: !!str yes\n",
            "a: 8\n",
            "a: 0\n",
            "on: 1\n",
            "a: 09\n",
        ] {
            let (_, errors) = parse_documents(text);
            assert_eq!(errors, vec![], "{text}");
        }
    }

    #[test]
    fn spans_point_at_keys_and_values_even_after_multibyte_text() {
        let text = "metadata:\n  name: \"ünïcode\"\nspec:\n  image: nginx\n";
        let d = one(text);
        let s = d.spans(text).get("/spec/image").unwrap();
        assert_eq!(&text[s.value.clone()], "nginx");
        assert_eq!(&text[s.key.clone().unwrap()], "image");
        assert_eq!(line_col(text, s.value.start), (4, 10));
        let n = d.spans(text).get("/metadata/name").unwrap();
        assert_eq!(&text[n.value.clone()], "\"ünïcode\"");
    }

    #[test]
    fn block_collections_start_at_their_first_key() {
        let text = "items:\n  - name: a\n    value: 1\nroot: x\n";
        let d = one(text);
        assert_eq!(
            line_col(text, d.spans(text).get("/items/0").unwrap().value.start),
            (2, 5)
        );
        assert_eq!(
            line_col(text, d.spans(text).get("").unwrap().value.start),
            (1, 1)
        );
        let flow = one("m: {a: 1}\n");
        assert_eq!(flow.spans("m: {a: 1}\n").get("/m").unwrap().value.start, 3);
    }

    #[test]
    fn spans_found_later_match_spans_recorded_while_reading() {
        let text = "# lead\na: 1\n---\nb:\n  c: [x, z]\n  d: |\n    text\n...\n  e: 2\n  f: {g: h}\n...\n%YAML 1.2\n---\nk: &x v\nl: *x\n";
        let (fast, errors) = parse_documents(text);
        assert_eq!(errors, vec![]);
        let (recorded, _) = read(text, true);
        assert_eq!(fast.len(), recorded.len());
        assert!(fast.len() >= 4, "{fast:?}");
        for (f, r) in fast.iter().zip(&recorded) {
            assert_eq!(f.value, r.value);
            let expected = r.spans.get().unwrap();
            let found = f.spans(text);
            assert_eq!(
                found.spans.len(),
                expected.spans.len(),
                "document {}",
                f.index
            );
            for (pointer, span) in &expected.spans {
                assert_eq!(
                    found.get(pointer),
                    Some(span),
                    "{pointer} in document {}",
                    f.index
                );
            }
        }
    }

    #[test]
    fn an_indented_root_is_located_from_its_line() {
        let text = "a: 1\n---\n  b: 2\n  c: 3\n";
        let (docs, errors) = parse_documents(text);
        assert_eq!(errors, vec![]);
        let c = docs[1].spans(text).get("/c").unwrap();
        assert_eq!(&text[c.value.clone()], "3");
        assert_eq!(&text[c.key.clone().unwrap()], "c");
    }

    #[test]
    fn multibyte_text_in_later_documents_is_located_by_bytes() {
        let text = "a: ü\n---\nname: \"ø\"\nimage: x\n";
        let (docs, _) = parse_documents(text);
        let s = docs[1].spans(text).get("/image").unwrap();
        assert_eq!(&text[s.value.clone()], "x");
    }

    #[test]
    fn pointers_escape_slashes_in_keys() {
        let text = "volumes:\n  /data:\n    source: x\n";
        let d = one(text);
        let s = d.spans(text).get("/volumes/~1data/source").unwrap();
        assert_eq!(&text[s.value.clone()], "x");
        assert_eq!(
            d.spans(text)
                .find("/volumes/~1data/source/nope")
                .unwrap()
                .value,
            s.value
        );
    }

    #[test]
    fn duplicate_keys_are_errors_that_point_at_the_second_and_reading_goes_on() {
        let text = "ports:\n  http: 1\n  http: 2\n---\nnext: doc\n";
        let (docs, err) = parse_documents(text);
        assert_eq!(err.len(), 1);
        assert_eq!(docs.len(), 2, "later documents are still read");
        assert_eq!(docs[0].value["ports"]["http"], 1, "the first value is kept");
        let err = &err[0];
        assert!(
            err.message.contains("duplicate key `http`"),
            "{}",
            err.message
        );
        assert!(err.message.contains("line 2"));
        assert_eq!(line_col(text, err.span.start), (3, 3));
    }

    #[test]
    fn multiple_documents_and_empty_ones_keep_their_positions() {
        let (docs, err) = parse_documents("a: 1\n---\n---\nb: 2\n");
        assert_eq!(err, vec![]);
        let values: Vec<_> = docs.iter().map(|d| d.value.clone()).collect();
        assert_eq!(values, vec![json!({"a": 1}), Value::Null, json!({"b": 2})]);
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let d = one("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\nlist: [*b]\n");
        assert_eq!(d.value["other"], json!({"x": 1, "y": 3}));
        assert_eq!(d.value["list"], json!([{"x": 1, "y": 2}]));
    }

    #[test]
    fn merged_keys_yield_to_explicit_ones_written_once_in_either_order() {
        // Written before the merge, an explicit key keeps its value and its place.
        let (docs, err) = parse_documents(
            "b: &b {x: 1, y: 2}
o:
  y: 3
  <<: *b
",
        );
        assert_eq!(err, vec![]);
        assert_eq!(docs[0].value["o"], json!({"y": 3, "x": 1}));
        let keys: Vec<_> = docs[0].value["o"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["y", "x"]);
        // Overriding a merged key once is no duplicate; writing it twice is.
        let text = "b: &b {x: 1, y: 2}
o:
  <<: *b
  y: 3
  y: 4
";
        let (docs, err) = parse_documents(text);
        assert_eq!(docs[0].value["o"], json!({"x": 1, "y": 3}));
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].message.contains("duplicate key `y`"));
        assert!(err[0].message.contains("line 4"), "{}", err[0].message);
        assert_eq!(line_col(text, err[0].span.start), (5, 3));
    }

    #[test]
    fn large_mappings_find_repeats_and_merges_as_small_ones_do() {
        // Past SEARCHED_KEYS entries, keys are found through an index: the same answers.
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let base: String = keys.iter().map(|k| format!("  {k}: 1\n")).collect();
        let text = format!(
            "base: &b\n{base}o:\n  k39: 2\n  <<: *b\n  k0: 3\n  k5: 4\n  k5: 5\n  k39: 6\n"
        );
        let (docs, err) = parse_documents(&text);
        let o = docs[0].value["o"].as_object().unwrap();
        assert_eq!(o.len(), 40);
        assert_eq!(o["k39"], 2, "written before the merge, it stays");
        assert_eq!(o["k0"], 3, "written after the merge, it overrides");
        assert_eq!(o["k5"], 4, "the first explicit value is kept");
        assert_eq!(o["k1"], 1);
        let order: Vec<_> = o.keys().take(3).collect();
        assert_eq!(
            order,
            ["k39", "k0", "k1"],
            "merged keys keep the merge's order"
        );
        let messages: Vec<_> = err.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("duplicate key `k5`"), "{messages:?}");
        assert!(messages[1].contains("duplicate key `k39`"), "{messages:?}");
        assert!(messages[1].contains("line 43"), "{messages:?}");
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let (_, err) = parse_documents(&text);
        assert!(err[0].message.contains("more than"));
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let text = "a: [1, 2\nb: 3\n";
        let (_, err) = parse_documents(text);
        let err = &err[0];
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        assert!(err.span.start <= text.len());
    }
}
