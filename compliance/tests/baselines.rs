//! The embedded SP 800-53 rev5 baseline list (`compliance/src/baselines/sp800-53r5.tsv`) is
//! derived from the reference list of NIST's resolved baseline catalogs; this test checks it is
//! fresh when the reference is present, and regenerates it with `LATTICE_UPDATE_GENERATED=1`.
//! A `--baseline` scan lists every control of the baseline exactly once.

mod support;

use std::collections::BTreeMap;

use lattice_compliance::baselines::{Baseline, id_from_oscal};
use lattice_compliance::{ScanOptions, Status};
use support::{case, reference_dir, root, scan_world_with};

const AT: &str = "2026-11-21T12:00:00Z";

/// The embedded list as the reference file says it should read.
fn generated(reference: &serde_json::Value) -> String {
    let mut rows: Vec<((String, u64, u64), String)> = Vec::new();
    for (oscal, c) in reference["controls"].as_object().expect("controls") {
        let baselines: Vec<&str> = Baseline::ALL
            .iter()
            .map(|b| b.key())
            .filter(|k| {
                c["baselines"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v == k))
            })
            .collect();
        if baselines.is_empty() {
            continue; // privacy baseline only
        }
        let (family, rest) = oscal.split_once('-').expect("family-number");
        let (number, enhancement) = rest.split_once('.').unwrap_or((rest, "0"));
        let key = (
            family.to_owned(),
            number.parse().expect("a number"),
            enhancement.parse().expect("a number"),
        );
        let title = c["title"].as_str().expect("title");
        rows.push((
            key,
            format!(
                "{}\t{}\t{}\n",
                id_from_oscal(oscal),
                baselines.join(","),
                title
            ),
        ));
    }
    rows.sort();
    let mut out = String::from(
        "# NIST SP 800-53 rev5 controls of the Low, Moderate and High baselines (SP 800-53B):\n\
         # id, baselines, title. Derived from NIST's resolved baseline catalogs; regenerate with\n\
         # LATTICE_UPDATE_GENERATED=1 cargo test -p lattice-compliance --test baselines\n",
    );
    for (_, line) in rows {
        out.push_str(&line);
    }
    out
}

#[test]
fn the_embedded_baselines_are_fresh_against_the_reference() {
    let Some(dir) = reference_dir() else { return };
    let text = std::fs::read_to_string(dir.join("oscal/sp800-53r5-baseline-control-ids.json"))
        .expect("the reference baseline list");
    let reference: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let want = generated(&reference);
    let path = root().join("compliance/src/baselines/sp800-53r5.tsv");
    if std::env::var_os("LATTICE_UPDATE_GENERATED").is_some() {
        std::fs::write(&path, &want).expect("write the embedded list");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is stale; regenerate with LATTICE_UPDATE_GENERATED=1 cargo test -p lattice-compliance --test baselines",
        path.display()
    );
    // The reference's own counts, per baseline.
    for b in Baseline::ALL {
        let n = reference["controls"]
            .as_object()
            .unwrap()
            .values()
            .filter(|c| {
                c["baselines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v == b.key())
            })
            .count();
        assert_eq!(b.controls().len(), n, "{b}");
    }
}

#[test]
fn the_embedded_baselines_hold_sp800_53bs_counts() {
    // SP 800-53B: 149 Low, 287 Moderate, 370 High controls and enhancements.
    assert_eq!(Baseline::Low.controls().len(), 149);
    assert_eq!(Baseline::Moderate.controls().len(), 287);
    assert_eq!(Baseline::High.controls().len(), 370);
}

#[test]
fn a_moderate_scan_lists_every_moderate_control_exactly_once() {
    let report = scan_world_with(
        &[case("compliant/world.yaml")],
        AT,
        ScanOptions {
            frameworks: vec!["nist-800-53".into()],
            baseline: Some(Baseline::Moderate),
            ..ScanOptions::default()
        },
    );
    let fw = &report.frameworks[0];
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &fw.controls {
        *seen.entry(c.id.as_str()).or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "listed twice: {seen:?}");
    let moderate = Baseline::Moderate.controls();
    for (id, _) in &moderate {
        assert!(seen.contains_key(id.as_str()), "{id} is not listed");
    }
    let coverage = fw.baseline.as_ref().expect("a coverage summary");
    assert_eq!(coverage.baseline, "Moderate");
    assert_eq!(coverage.controls, moderate.len());
    assert_eq!(
        coverage.controls,
        coverage.satisfied
            + coverage.partially_evidenced
            + coverage.failed
            + coverage.not_applicable
            + coverage.not_assessed
    );
    // The compliant world: SC-7(5) and SC-39 satisfied, the rest of the pack's Moderate
    // controls partially evidenced; SI-7(15), a High control, is still reported, and said so.
    assert_eq!(coverage.satisfied, 2);
    assert_eq!(coverage.partially_evidenced, 28);
    assert_eq!(coverage.failed, 0);
    assert_eq!(coverage.outside, ["SI-7(15)"]);
    for c in &fw.controls {
        let in_baseline = moderate.iter().any(|(id, _)| id == &c.id);
        assert_eq!(
            !in_baseline,
            coverage.outside.contains(&c.id),
            "{} outside the baseline is said so",
            c.id
        );
        if c.status == Status::NotAssessed {
            assert!(
                c.reason.as_deref().is_some_and(|r| !r.is_empty()),
                "{}",
                c.id
            );
        }
    }
    // A control of the baseline no pack names is "not assessed by Lattice" with the generic
    // reason; one the pack lists as not assessed keeps the pack's reason.
    let ac2 = fw.controls.iter().find(|c| c.id == "AC-2").expect("AC-2");
    assert_eq!(ac2.status, Status::NotAssessed);
    assert!(ac2.reason.as_deref().unwrap().contains("outside Lattice"));
    let au2 = fw.controls.iter().find(|c| c.id == "AU-2").expect("AU-2");
    assert!(au2.reason.as_deref().unwrap().contains("audit policy"));
    // The controls only the pack names, and none of the rest of High, are added.
    assert!(!seen.contains_key("AC-2(11)"), "a High-only control");
}

#[test]
fn a_baseline_scan_renders_its_coverage_and_valid_oscal() {
    use lattice_compliance::report::{Format, render};
    let report = scan_world_with(
        &[case("violations/world.yaml")],
        AT,
        ScanOptions {
            frameworks: vec!["nist-800-53".into()],
            baseline: Some(Baseline::Moderate),
            ..ScanOptions::default()
        },
    );
    let line = report.frameworks[0].baseline.as_ref().unwrap().line();
    assert!(
        line.starts_with("Moderate baseline: 287 controls — "),
        "{line}"
    );
    assert!(render(&report, Format::Markdown).contains(&line));
    let json: serde_json::Value = serde_json::from_str(&render(&report, Format::Json)).unwrap();
    assert_eq!(json["frameworks"][0]["baseline"]["controls"], 287);
    let Some(dir) = reference_dir() else { return };
    let text = std::fs::read_to_string(dir.join("oscal/oscal_complete_schema-1-1-3.json"))
        .expect("the OSCAL 1.1.3 schema");
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for format in [Format::Oscal, Format::OscalAp] {
        let doc: serde_json::Value = serde_json::from_str(&render(&report, format)).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .take(10)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
    }
}
