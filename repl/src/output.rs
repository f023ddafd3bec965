//! How results are shown: rendered diagnostics for people, JSON for machines.

use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use miette::{GraphicalReportHandler, GraphicalTheme};
use rayon::prelude::*;
use serde_json::Value;

/// Output format of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Diagnostics and tables for people.
    Human,
    /// One JSON document on stdout.
    Json,
}

/// Whether to color output: only on a terminal, and never when `NO_COLOR` is set.
pub fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Renders a diagnostic the way miette's fancy handler does, plain when not on a terminal.
pub fn render(diagnostic: &dyn miette::Diagnostic) -> String {
    if let Some(plain) = plain_when_lines_are_long(diagnostic) {
        return plain;
    }
    let theme = if use_color() {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
    let mut out = String::new();
    if handler.render_report(&mut out, diagnostic).is_err() {
        out = diagnostic.to_string();
    }
    out
}

/// Source lines longer than this are not shown in a diagnostic.
const MAX_SHOWN_LINE: usize = 4096;

/// A diagnostic whose source lines are too long to show (a 15 MB string literal on one line
/// would be repeated whole for each error) as `name:line:column: message` with the help.
fn plain_when_lines_are_long(diagnostic: &dyn miette::Diagnostic) -> Option<String> {
    let source = diagnostic.source_code()?;
    let label = diagnostic.labels()?.next()?;
    let contents = source.read_span(label.inner(), 0, 0).ok()?;
    let shown = source.read_span(label.inner(), 1, 1).ok()?;
    if shown.data().len() <= MAX_SHOWN_LINE {
        return None;
    }
    let name = contents.name().unwrap_or("input");
    let mut out = format!(
        "{name}:{}:{}: {diagnostic} (the line is too long to show)\n",
        contents.line() + 1,
        contents.column() + 1
    );
    if let Some(help) = diagnostic.help() {
        out.push_str(&format!("  help: {help}\n"));
    }
    Some(out)
}

/// Writes to stdout. A reader that went away (`| head`) ends the program quietly, as
/// ripgrep does, instead of panicking on a broken pipe.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    written(out.write_all(text.as_bytes()).and_then(|()| out.flush()));
}

/// Writes `bytes` to stdout, as [`emit`] writes text.
pub fn emit_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    written(out.write_all(bytes).and_then(|()| out.flush()));
}

/// Writes `doc` to stdout as pretty JSON and a newline, as [`emit`] writes text. The
/// document is streamed rather than rendered to a string first: at estate scale that
/// string is tens of megabytes of fresh memory, which costs more than the writing.
pub fn emit_json<T: serde::Serialize + ?Sized>(doc: &T) {
    stream(|out| Ok(serde_json::to_writer_pretty(out, doc)?));
}

/// The rows of one top-level array of a document, made only as they are written: the
/// `i`th of `len` is `row(i)`. Rows held whole as JSON values cost more fresh memory than
/// anything else a large mesh or plan writes (about 80 MB at 50,000 edges); made a batch at
/// a time, they reuse the same few megabytes.
/// A row may be any serializable value: a struct borrowing what it shows is rendered
/// without a JSON value ever being built.
pub struct LazyRows<'a, R: serde::Serialize = Value> {
    /// The document's key the rows stand under (its value in the document is ignored).
    pub key: &'a str,
    pub len: usize,
    pub row: &'a (dyn Fn(usize) -> R + Sync),
}

/// One top-level array made as it is written, whatever its rows' type: what
/// [`write_document_with`] takes, so that one document can hold arrays of different rows.
pub trait LazyArray: Sync {
    /// The document's key the array stands under.
    fn key(&self) -> &str;
    fn len(&self) -> usize;
    /// Appends row `i` rendered pretty, indented to `depth`.
    fn render(&self, i: usize, text: &mut Vec<u8>, depth: usize);
}

impl<R: serde::Serialize> LazyArray for LazyRows<'_, R> {
    fn key(&self) -> &str {
        self.key
    }

    fn len(&self) -> usize {
        self.len
    }

    fn render(&self, i: usize, text: &mut Vec<u8>, depth: usize) {
        indented(text, &(self.row)(i), depth, true);
    }
}

/// Writes `doc` to `out` as [`emit_json`] writes it to stdout, byte for byte, with each of
/// `arrays` in place of the value at its key (the output is what `doc` with those rows in
/// place would give), and the rows of every long top-level array rendered on every core: at
/// 10,000 services a plan's 60,000 rows took longer to render on one core than the
/// compliance scan takes on two.
pub fn write_document_with(
    out: &mut dyn Write,
    doc: &Value,
    arrays: &[&dyn LazyArray],
) -> std::io::Result<()> {
    write_pretty(out, doc, arrays)?;
    out.write_all(b"\n")
}

/// What a command prints, written to stdout as it is made (through one buffer), with a copy
/// kept when asked, for [`crate::output_cache`]. The copy is taken in chunks, so keeping a
/// document of tens of megabytes costs its size, not the slack and copies of a growing
/// buffer; without one, the output streams as [`emit_json`]'s does.
pub struct Printer {
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    copy: Option<Vec<Vec<u8>>>,
}

/// The size of each chunk of a [`Printer`]'s copy.
const COPY_CHUNK: usize = 1 << 20;

impl Printer {
    /// A printer to stdout that keeps a copy of what it prints when `keep`.
    pub fn new(keep: bool) -> Printer {
        Printer {
            out: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock()),
            copy: keep.then(Vec::new),
        }
    }

    /// Ends the output that `result` says was written, and gives the copy when one was
    /// kept. A reader that went away ends the program quietly, as [`emit`] does, so a copy
    /// is only ever of an output written whole.
    pub fn finish(mut self, result: std::io::Result<()>) -> Option<Vec<Vec<u8>>> {
        written(result.and_then(|()| self.out.flush()));
        self.copy
    }
}

impl Write for Printer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.out.write_all(bytes)?;
        if let Some(copy) = &mut self.copy {
            copy_in_chunks(copy, bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Appends `bytes` to `copy`, filling its last chunk before starting another of
/// [`COPY_CHUNK`] bytes: no chunk is ever moved or grown.
fn copy_in_chunks(copy: &mut Vec<Vec<u8>>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        if copy.last().is_none_or(|c| c.len() == c.capacity()) {
            copy.push(Vec::with_capacity(COPY_CHUNK));
        }
        let chunk = copy.last_mut().expect("a chunk with room");
        let take = bytes.len().min(chunk.capacity() - chunk.len());
        chunk.extend_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
    }
}

/// Streams what `write` writes, and a newline, to stdout through one buffer.
fn stream(write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let result = write(&mut out)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    written(result);
}

/// Top-level arrays at least this long are rendered on every core.
const PARALLEL_ROWS: usize = 2048;
/// Rows rendered per task; a batch of tasks is written before the next is rendered, so the
/// rendered text is never held whole.
const ROWS_PER_TASK: usize = 512;

/// `serde_json::to_writer_pretty`'s output for `doc` (with each of `lazy`'s rows in place),
/// with long top-level arrays rendered in parallel. Each row is rendered alone and indented
/// to its depth: JSON strings hold no raw line break, so indenting after every `\n` is
/// exact.
pub(crate) fn write_pretty(
    out: &mut dyn Write,
    doc: &Value,
    lazy: &[&dyn LazyArray],
) -> std::io::Result<()> {
    let Value::Object(fields) = doc else {
        return Ok(serde_json::to_writer_pretty(out, doc)?);
    };
    if fields.is_empty() {
        return out.write_all(b"{}");
    }
    out.write_all(b"{\n")?;
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",\n")?;
        }
        out.write_all(b"  ")?;
        serde_json::to_writer(&mut *out, key)?;
        out.write_all(b": ")?;
        match (value, lazy.iter().find(|a| a.key() == key)) {
            (_, Some(lazy)) => write_rows(out, lazy.len(), |i, text| lazy.render(i, text, 4))?,
            (Value::Array(rows), _) if rows.len() >= PARALLEL_ROWS => {
                write_rows(out, rows.len(), |i, text| indented(text, &rows[i], 4, true))?
            }
            _ => {
                let mut text = Vec::new();
                indented(&mut text, value, 2, false);
                out.write_all(&text)?;
            }
        }
    }
    out.write_all(b"\n}")
}

/// A top-level array of `len` rows, the `i`th appended by `row(i, text)`, rendered as
/// `serde_json::to_writer_pretty` would, in batches on every core.
fn write_rows(
    out: &mut dyn Write,
    len: usize,
    row: impl Fn(usize, &mut Vec<u8>) + Sync,
) -> std::io::Result<()> {
    if len == 0 {
        return out.write_all(b"[]");
    }
    out.write_all(b"[\n")?;
    let batch = ROWS_PER_TASK * rayon::current_num_threads().max(1) * 2;
    for start in (0..len).step_by(batch) {
        let end = (start + batch).min(len);
        let rendered: Vec<Vec<u8>> = (start..end)
            .step_by(ROWS_PER_TASK)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|from| {
                let mut text = Vec::new();
                for i in from..(from + ROWS_PER_TASK).min(end) {
                    if i > from {
                        text.extend_from_slice(b",\n");
                    }
                    row(i, &mut text);
                }
                text
            })
            .collect();
        for (t, text) in rendered.iter().enumerate() {
            if start > 0 || t > 0 {
                out.write_all(b",\n")?;
            }
            out.write_all(text)?;
        }
    }
    out.write_all(b"\n  ]")
}

/// Appends `value` rendered pretty, every line after the first indented by `depth` spaces
/// (the first too with `first`).
fn indented(text: &mut Vec<u8>, value: &impl serde::Serialize, depth: usize, first: bool) {
    let alone = serde_json::to_vec_pretty(value).expect("JSON values render");
    let pad = vec![b' '; depth];
    if first {
        text.extend_from_slice(&pad);
    }
    for (i, line) in alone.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            text.push(b'\n');
            text.extend_from_slice(&pad);
        }
        text.extend_from_slice(line);
    }
}

/// Ends the program on a failed write: quietly for a reader that went away, else with the
/// usage exit code.
fn written(result: std::io::Result<()>) {
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write output: {e}");
        std::process::exit(i32::from(crate::EXIT_USAGE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                json!({"workload": format!("ns-{}/svc-{i}", i % 7), "allowed": i % 3 != 0,
                       "ports": (0..i % 4).collect::<Vec<_>>(), "empty": {}, "none": [],
                       "reason": if i % 5 == 0 { json!("a \"quoted\"\nline") } else { Value::Null },
                       "nested": {"objects": {"Deployment": 1, "Service": i}}})
            })
            .collect()
    }

    /// A copy taken in chunks is every byte written, in order, whatever the writes' sizes,
    /// and no chunk outgrows its first allocation.
    #[test]
    fn a_printers_copy_is_every_byte_in_fixed_chunks() {
        let written: Vec<u8> = (0..(2 * COPY_CHUNK + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut copy = Vec::new();
        let mut at = 0;
        for size in [0, 1, 7, COPY_CHUNK - 8, 3, COPY_CHUNK + 1, 100_000]
            .into_iter()
            .cycle()
        {
            let end = (at + size).min(written.len());
            copy_in_chunks(&mut copy, &written[at..end]);
            at = end;
            if at == written.len() {
                break;
            }
        }
        assert_eq!(copy.concat(), written);
        assert_eq!(copy.len(), 3);
        assert!(copy.iter().all(|c| c.capacity() == copy[0].capacity()));
    }

    /// The parallel rendering is serde_json's pretty output, byte for byte: around the
    /// threshold, across batch and task edges, for short arrays, empty ones and scalars.
    #[test]
    fn write_pretty_is_serde_jsons_pretty_output() {
        for n in [
            0,
            1,
            PARALLEL_ROWS - 1,
            PARALLEL_ROWS,
            PARALLEL_ROWS + ROWS_PER_TASK + 1,
            9_999,
        ] {
            let doc = json!({
                "snapshot": "sha256:00", "packs": {"names": ["a@1", "b@2"], "digest": "x"},
                "workloads": rows(n), "namespaces": [], "mesh": rows(n / 2 + 3),
                "count": n, "empty": {},
            });
            let mut ours = Vec::new();
            write_pretty(&mut ours, &doc, &[]).unwrap();
            let theirs = serde_json::to_vec_pretty(&doc).unwrap();
            assert!(ours == theirs, "differs at {n} rows");

            // The same rows made as they are written, in place of a value that is ignored.
            let made = rows(n / 2 + 3);
            let mut lazy_doc = doc.clone();
            lazy_doc["mesh"] = json!("ignored");
            let mut lazily = Vec::new();
            // Any serializable row: here a borrowed value.
            let row = |i: usize| &made[i];
            let lazy = LazyRows {
                key: "mesh",
                len: made.len(),
                row: &row,
            };
            write_pretty(&mut lazily, &lazy_doc, &[&lazy]).unwrap();
            assert!(lazily == theirs, "lazy rows differ at {n} rows");

            // Two arrays made as they are written, of different row types: owned values
            // for one, borrowed ones for the other.
            let workloads = rows(n);
            lazy_doc["workloads"] = Value::Null;
            let owned = |i: usize| workloads[i].clone();
            let first = LazyRows {
                key: "workloads",
                len: workloads.len(),
                row: &owned,
            };
            let mut both = Vec::new();
            write_pretty(&mut both, &lazy_doc, &[&first, &lazy]).unwrap();
            assert!(both == theirs, "two lazy arrays differ at {n} rows");
        }
        let empty = |_: usize| -> Value { unreachable!("no row is made") };
        let lazy = LazyRows {
            key: "none",
            len: 0,
            row: &empty,
        };
        let mut ours = Vec::new();
        write_pretty(&mut ours, &json!({"none": null, "n": 1}), &[&lazy]).unwrap();
        assert_eq!(
            ours,
            serde_json::to_vec_pretty(&json!({"none": [], "n": 1})).unwrap()
        );
        for doc in [json!({}), json!([1, 2]), json!("text"), json!(null)] {
            let mut ours = Vec::new();
            write_pretty(&mut ours, &doc, &[]).unwrap();
            assert_eq!(ours, serde_json::to_vec_pretty(&doc).unwrap());
        }
    }
}
