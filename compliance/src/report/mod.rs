//! Renderings of a [`ScanReport`]: OSCAL (assessment results and their plan) for tools, Markdown and HTML for auditors, CSV,
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
    /// OSCAL 1.1.3 assessment-results.
    Oscal,
    /// OSCAL 1.1.3 assessment-plan: the plan the results import.
    OscalAp,
    Markdown,
    Html,
    Csv,
    Junit,
    Sarif,
    /// The scan report itself, as JSON (what the evidence log stores).
    Json,
}

impl Format {
    /// Every format, in the order help and errors list them.
    pub const ALL: [Format; 8] = [
        Format::Oscal,
        Format::OscalAp,
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
            Format::OscalAp => "oscal-ap",
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
            // `report.oscal-ap.json`: the name the results' `import-ap` refers to.
            Format::OscalAp => "oscal-ap.json",
            Format::Markdown => "md",
            Format::Html => "html",
            Format::Csv => "csv",
            Format::Junit => "junit.xml",
            Format::Sarif => "sarif",
            Format::Json => "json",
        }
    }

    /// The format named `name` (see [`Format::name`]).
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Renders `report` in `format`, naming no assessor (see [`render_with`]).
pub fn render(report: &ScanReport, format: Format) -> String {
    render_with(report, format, &oscal::Options::default())
}

/// Renders `report` in `format`; the OSCAL formats name the parties in `options`.
pub fn render_with(report: &ScanReport, format: Format, options: &oscal::Options) -> String {
    match format {
        Format::Oscal => oscal::render(report, options),
        Format::OscalAp => oscal::render_plan(report, options),
        Format::Markdown => markdown::render(report),
        Format::Html => html::render(report),
        Format::Csv => table::csv(report),
        Format::Junit => table::junit(report),
        Format::Sarif => table::sarif(report),
        Format::Json => serde_json::to_string_pretty(report).expect("reports always serialize"),
    }
}
