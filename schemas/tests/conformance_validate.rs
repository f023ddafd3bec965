//! Conformance cases for `validate`: each `conformance/validate/NAME.yaml` must produce
//! exactly the findings listed in `NAME.findings` (`LINE:COLUMN CODE` per line, in order).

mod common;

use lattice_schemas::validate::validate_paths;

#[test]
fn every_case_reports_exactly_its_expected_findings() {
    let dir = common::workspace().join("conformance/validate");
    let cases = common::files_with_ext(&dir, "yaml");
    assert!(
        cases.len() >= 2,
        "no conformance cases found in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in &cases {
        let expected_path = case.with_extension("findings");
        let Ok(expected) = std::fs::read_to_string(&expected_path) else {
            failures.push(format!(
                "{}: missing {}",
                case.display(),
                expected_path.display()
            ));
            continue;
        };
        let expected: Vec<String> = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        let report = validate_paths(std::slice::from_ref(case));
        let actual: Vec<String> = report
            .findings
            .iter()
            .map(|f| {
                let (line, col) = f.line_col();
                format!("{line}:{col} {}", f.code)
            })
            .collect();
        if actual != expected {
            let messages: Vec<String> = report
                .findings
                .iter()
                .map(|f| format!("  {:?} {}", f.line_col(), f.message))
                .collect();
            failures.push(format!(
                "{}\n expected: {expected:?}\n   actual: {actual:?}\n{}",
                case.file_name().unwrap().to_string_lossy(),
                messages.join("\n")
            ));
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    eprintln!("{checked} validate conformance cases passed");
}

#[test]
fn the_example_world_is_clean() {
    let report = validate_paths(&[common::workspace().join("examples")]);
    let messages: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{}:{:?} {}", f.file.name, f.line_col(), f.message))
        .collect();
    assert_eq!(report.errors() + report.warnings(), 0, "{messages:#?}");
    assert!(
        report.objects >= 20,
        "expected a full world, got {} objects",
        report.objects
    );
    assert!(report.policies >= 3);
}

#[test]
fn every_policy_pack_validates_strictly() {
    let report = validate_paths(&[common::workspace().join("policies")]);
    let messages: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{}:{:?} {}", f.file.name, f.line_col(), f.message))
        .collect();
    assert!(report.findings.is_empty(), "{messages:#?}");
    assert!(
        report.policies >= 4,
        "expected the starter packs, found {} policies",
        report.policies
    );
    assert!(report.files >= 4);
}
