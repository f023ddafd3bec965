//! The NIST SP 800-53 rev5 baselines (Low, Moderate, High): which controls each selects, so a
//! scan can list every control of the chosen baseline, assessed by Lattice or not.
//!
//! The list is embedded (`baselines/sp800-53r5.tsv`) so the product needs no reference files
//! at run time. It is derived from NIST's resolved baseline catalogs by the test
//! `compliance/tests/baselines.rs`, which checks it against the reference list when
//! `LATTICE_REFERENCE_DIR` is set and rewrites it with `LATTICE_UPDATE_GENERATED=1`.

use std::fmt;
use std::str::FromStr;

/// The embedded list: `<control id>\t<baselines, comma-separated>\t<title>` per line, ids as
/// the NIST pack writes them (`SC-7(5)`), `#` lines are comments.
pub const SP800_53R5: &str = include_str!("baselines/sp800-53r5.tsv");

/// A NIST SP 800-53 rev5 security control baseline (SP 800-53B).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Baseline {
    Low,
    Moderate,
    High,
}

impl Baseline {
    /// Every baseline, lowest first.
    pub const ALL: [Baseline; 3] = [Baseline::Low, Baseline::Moderate, Baseline::High];

    /// `LOW`, `MODERATE`, `HIGH`: the name in the embedded list and in NIST's files.
    pub fn key(self) -> &'static str {
        match self {
            Baseline::Low => "LOW",
            Baseline::Moderate => "MODERATE",
            Baseline::High => "HIGH",
        }
    }

    /// `Low`, `Moderate`, `High`: the name as reports print it.
    pub fn label(self) -> &'static str {
        match self {
            Baseline::Low => "Low",
            Baseline::Moderate => "Moderate",
            Baseline::High => "High",
        }
    }

    /// The baseline's controls as (id, title), in the list's order. Lines that do not read
    /// as an entry are skipped: the list is generated and checked by a test.
    pub fn controls(self) -> Vec<(String, String)> {
        SP800_53R5
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let mut parts = l.splitn(3, '\t');
                let id = parts.next()?;
                let baselines = parts.next()?;
                let title = parts.next()?;
                baselines
                    .split(',')
                    .any(|b| b == self.key())
                    .then(|| (id.to_owned(), title.to_owned()))
            })
            .collect()
    }
}

impl From<lattice_schemas::crd::compliance_profile::NistBaseline> for Baseline {
    /// A profile's `baseline`.
    fn from(b: lattice_schemas::crd::compliance_profile::NistBaseline) -> Self {
        use lattice_schemas::crd::compliance_profile::NistBaseline as N;
        match b {
            N::Low => Baseline::Low,
            N::Moderate => Baseline::Moderate,
            N::High => Baseline::High,
        }
    }
}

impl fmt::Display for Baseline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for Baseline {
    type Err = String;

    /// `low`, `moderate`, `high`, in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        Baseline::ALL
            .into_iter()
            .find(|b| b.key().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown baseline `{s}`; known: low, moderate, high"))
    }
}

/// `AC-2(1)` from NIST's OSCAL id `ac-2.1`: the form the NIST pack and reports use.
pub fn id_from_oscal(oscal: &str) -> String {
    let upper = oscal.to_ascii_uppercase();
    match upper.split_once('.') {
        Some((base, enhancement)) => format!("{base}({enhancement})"),
        None => upper,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oscal_ids_read_as_the_pack_writes_them() {
        assert_eq!(id_from_oscal("ac-2"), "AC-2");
        assert_eq!(id_from_oscal("sc-7.5"), "SC-7(5)");
        assert_eq!(id_from_oscal("si-7.15"), "SI-7(15)");
    }

    #[test]
    fn baselines_parse_by_name() {
        assert_eq!("moderate".parse(), Ok(Baseline::Moderate));
        assert_eq!("HIGH".parse(), Ok(Baseline::High));
        assert!("fedramp".parse::<Baseline>().is_err());
    }
}
