//! How results are shown: rendered diagnostics for people, JSON for machines.

use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use miette::{GraphicalReportHandler, GraphicalTheme};

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
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write output: {e}");
        std::process::exit(i32::from(crate::EXIT_USAGE));
    }
}
