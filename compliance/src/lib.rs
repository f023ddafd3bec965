//! Compliance scans over the decision engine (DESIGN §5 `Comply`, §6): the same snapshot
//! that enforces the platform proves it to an auditor.
//!
//! ```text
//! PolicyStore ──catalog──► frameworks, controls, checks (forbids on Comply)
//! World + Snapshot ──scan──► ScanReport: per check and per control, with evidence
//! World + Snapshot ──exceptions──► the register of permitted deviations
//! ScanReport ──report──► OSCAL (results, plan; catalogs from the packs) · Markdown · HTML · CSV · JUnit · SARIF
//! ScanReport ──evidence──► hash-chained log for an audit period
//! ```

pub mod baselines;
pub mod catalog;
pub mod evidence;
pub mod exceptions;
pub mod report;
pub mod scan;
pub mod subject;

pub use catalog::{Check, Framework, frameworks};
pub use report::{Format, render, render_with};
pub use scan::{ScanOptions, ScanReport, Status, scan};
