//! How results are shown: rendered diagnostics for people, JSON for machines.

use std::io::IsTerminal;

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
