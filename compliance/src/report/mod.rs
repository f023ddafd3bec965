//! Renderings of a [`ScanReport`]: OSCAL for tools, Markdown and HTML for auditors, CSV,
//! JUnit and SARIF for spreadsheets, CI and code-scanning dashboards. Each is a pure
//! function of the report, so the same scan renders the same bytes.

pub mod html;
pub mod markdown;
pub mod oscal;
pub mod table;

use crate::scan::ScanReport;

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Oscal,
    Markdown,
    Html,
    Csv,
    Junit,
    Sarif,
    /// The scan report itself, as JSON (what the evidence log stores).
    Json,
}

impl Format {
    pub const ALL: [Format; 7] = [
        Format::Oscal,
        Format::Markdown,
        Format::Html,
        Format::Csv,
        Format::Junit,
        Format::Sarif,
        Format::Json,
    ];

    /// The name used on the command line and in profiles.
    pub fn name(self) -> &'static str {
        match self {
            Format::Oscal => "oscal",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Csv => "csv",
            Format::Junit => "junit",
            Format::Sarif => "sarif",
            Format::Json => "json",
        }
    }

    /// The file extension of a rendering.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Oscal => "oscal.json",
            Format::Markdown => "md",
            Format::Html => "html",
            Format::Csv => "csv",
            Format::Junit => "junit.xml",
            Format::Sarif => "sarif",
            Format::Json => "json",
        }
    }

    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Renders `report` in `format`.
pub fn render(report: &ScanReport, format: Format) -> String {
    match format {
        Format::Oscal => oscal::render(report),
        Format::Markdown => markdown::render(report),
        Format::Html => html::render(report),
        Format::Csv => table::csv(report),
        Format::Junit => table::junit(report),
        Format::Sarif => table::sarif(report),
        Format::Json => serde_json::to_string_pretty(report).expect("reports always serialize"),
    }
}
