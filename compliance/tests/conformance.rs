//! Conformance: a compliant world passes every check; a world with known violations fails
//! exactly the expected checks, subjects and controls, and nothing else. Every rendering of
//! both scans is checked: OSCAL against NIST's official schema, the others for what they
//! must say.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use lattice_compliance::report::{Format, render};
use lattice_compliance::{ScanOptions, ScanReport, Status};
use lattice_schemas::manifest::yaml::parse_documents;
use serde_json::Value;
use support::{case, reference_dir, scan_world, scan_world_with};

const AT: &str = "2026-11-21T12:00:00Z";

fn failures(report: &ScanReport) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for fw in &report.frameworks {
        for c in &fw.checks {
            for f in &c.failures {
                assert!(
                    f.error.is_none(),
                    "{} could not be evaluated: {:?}",
                    c.id,
                    f
                );
                out.entry(c.id.clone()).or_default().insert(format!(
                    "{}::{}",
                    f.subject.kind.type_name(),
                    f.subject.id
                ));
            }
        }
    }
    out
}

#[test]
fn a_compliant_world_passes_every_check() {
    let report = scan_world(&[case("compliant/world.yaml")], AT);
    assert_eq!(failures(&report), BTreeMap::new());
    assert_eq!(
        report.frameworks_scanned,
        ["nist-800-53", "soc2", "cis-kubernetes", "pod-security"]
    );
    for fw in &report.frameworks {
        // The world has every kind of subject, so every check applies and passes.
        for c in &fw.checks {
            assert_eq!(c.status, Status::Pass, "{} is {:?}", c.id, c.status);
            assert!(c.applicable > 0 && c.passed == c.applicable, "{}", c.id);
        }
        for c in &fw.controls {
            assert!(
                matches!(
                    c.status,
                    Status::Pass | Status::PartiallyEvidenced | Status::NotAssessed
                ),
                "{} {} is {:?}",
                fw.id,
                c.id,
                c.status
            );
        }
        // Every check passes, yet only controls the checks cover in full are satisfied: the
        // rest are partially evidenced, each saying what its checks do not show.
        let with = |s: Status| -> BTreeSet<&str> {
            fw.controls
                .iter()
                .filter(|c| c.status == s)
                .map(|c| c.id.as_str())
                .collect()
        };
        let (satisfied, partial): (&[&str], &[&str]) = match fw.id.as_str() {
            "nist-800-53" => (
                &["SC-7(5)", "SC-39"],
                &[
                    "AC-3", "AC-4", "AC-6", "AC-14", "AC-6(1)", "AC-6(5)", "AC-17", "CA-7", "CM-3",
                    "CM-5", "CM-6", "CM-7", "CM-7(2)", "CM-7(5)", "CM-8", "CP-9", "CP-10", "IA-5",
                    "SC-7", "SC-7(3)", "SC-8", "SC-8(1)", "SC-23", "SI-4", "SI-7", "SI-7(1)",
                    "SI-7(15)", "SR-11", "SR-3",
                ],
            ),
            "soc2" => (
                &[],
                &[
                    "A1.2", "CC4.1", "CC6.1", "CC6.3", "CC6.6", "CC6.7", "CC6.8", "CC7.2", "CC8.1",
                ],
            ),
            "cis-kubernetes" => (
                &[
                    "5.2.2", "5.2.3", "5.2.4", "5.2.5", "5.2.6", "5.2.7", "5.2.8", "5.2.9",
                    "5.2.10", "5.2.11", "5.2.12", "5.2.13", "5.3.2", "5.4.1", "5.4.2", "5.7.2",
                    "5.7.3", "5.7.4",
                ],
                &[
                    "5.1.1", "5.1.2", "5.1.3", "5.1.4", "5.1.5", "5.1.6", "5.1.8", "5.2.1",
                    "5.5.1", "5.7.1",
                ],
            ),
            "pod-security" => (&["baseline", "enforced", "restricted"], &[]),
            other => panic!("unexpected framework {other}"),
        };
        assert_eq!(
            with(Status::Pass),
            satisfied.iter().copied().collect(),
            "{}",
            fw.id
        );
        assert_eq!(
            with(Status::PartiallyEvidenced),
            partial.iter().copied().collect(),
            "{}",
            fw.id
        );
        assert_eq!(fw.control_tally.partially_evidenced, partial.len());
        for c in &fw.controls {
            assert_eq!(
                c.reason.is_some(),
                matches!(c.status, Status::PartiallyEvidenced | Status::NotAssessed),
                "{} {}",
                fw.id,
                c.id
            );
        }
    }
    assert!(!report.failed());
}

#[test]
fn known_violations_fail_exactly_the_expected_checks_and_controls() {
    let expected_text =
        std::fs::read_to_string(case("violations/expected.yaml")).expect("expected.yaml");
    let (docs, errors) = parse_documents(&expected_text);
    assert!(errors.is_empty(), "{errors:?}");
    let expected = &docs[0].value;
    let at = expected["at"].as_str().expect("at");
    let report = scan_world(&[case("violations/world.yaml")], at);

    let want: BTreeMap<String, BTreeSet<String>> = expected["failures"]
        .as_object()
        .expect("failures")
        .iter()
        .map(|(check, subjects)| {
            let subjects = subjects
                .as_array()
                .expect("a list of subjects")
                .iter()
                .map(|s| s.as_str().expect("a subject").to_owned())
                .collect();
            (check.clone(), subjects)
        })
        .collect();
    let got = failures(&report);
    let missing: Vec<_> = want
        .iter()
        .flat_map(|(c, s)| s.iter().map(move |s| (c, s)))
        .filter(|(c, s)| !got.get(*c).is_some_and(|g| g.contains(*s)))
        .collect();
    let unexpected: Vec<_> = got
        .iter()
        .flat_map(|(c, s)| s.iter().map(move |s| (c, s)))
        .filter(|(c, s)| !want.get(*c).is_some_and(|w| w.contains(*s)))
        .collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "expected but not found: {missing:#?}\nfound but not expected: {unexpected:#?}"
    );

    for fw in &report.frameworks {
        let want: BTreeSet<String> = expected["failedControls"][&fw.id]
            .as_array()
            .unwrap_or_else(|| panic!("failedControls.{}", fw.id))
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        let got: BTreeSet<String> = fw
            .controls
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.id.clone())
            .collect();
        assert_eq!(got, want, "failed controls of {}", fw.id);
        // A control fails exactly when one of its checks fails.
        for c in &fw.controls {
            let any_failed = fw
                .checks
                .iter()
                .any(|k| k.controls.contains(&c.id) && k.status == Status::Fail);
            assert_eq!(c.status == Status::Fail, any_failed, "{}", c.id);
        }
    }
    assert!(report.failed());
}

#[test]
fn scans_are_reproducible_and_carry_their_evidence() {
    let a = scan_world(&[case("violations/world.yaml")], AT);
    let b = scan_world(&[case("violations/world.yaml")], AT);
    for f in Format::ALL {
        assert_eq!(render(&a, f), render(&b, f), "{} differs", f.name());
    }
    assert_eq!(a.started, AT);
    assert!(a.snapshot_digest.starts_with("sha256:"));
    assert_eq!(a.world_digest.len(), 64);
    assert_eq!(a.policies_digest.len(), 64);
    assert_eq!(a.subject_inventory_sha256.len(), 64);
    // Another world is another snapshot.
    let c = scan_world(&[case("compliant/world.yaml")], AT);
    assert_ne!(a.snapshot_digest, c.snapshot_digest);
    assert_ne!(a.subject_inventory_sha256, c.subject_inventory_sha256);
}

fn oscal_validator() -> Option<jsonschema::Validator> {
    let dir = reference_dir()?;
    let text = std::fs::read_to_string(dir.join("oscal/oscal_complete_schema-1-1-3.json"))
        .expect("the OSCAL 1.1.3 schema");
    let schema: Value = serde_json::from_str(&text).expect("JSON");
    Some(jsonschema::validator_for(&schema).expect("a valid JSON Schema"))
}

#[test]
fn oscal_validates_against_nists_schema_and_says_what_failed() {
    let Some(validator) = oscal_validator() else {
        return;
    };
    for world in ["compliant/world.yaml", "violations/world.yaml"] {
        let report = scan_world(&[case(world)], AT);
        let doc: Value = serde_json::from_str(&render(&report, Format::Oscal)).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .take(10)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{world}: {errors:#?}");
        // The validator is not vacuous: a broken uuid or target type is refused.
        let mut broken = doc.clone();
        broken["assessment-results"]["results"][0]["uuid"] = Value::from("not-a-uuid");
        assert!(!validator.is_valid(&broken));
        let mut broken = doc.clone();
        broken["assessment-results"]["results"][0]["findings"][0]["target"]["type"] =
            Value::from("control");
        assert!(!validator.is_valid(&broken));

        let ar = &doc["assessment-results"];
        assert_eq!(ar["metadata"]["oscal-version"], "1.1.3");
        // One result: the scan is one assessment run over every framework.
        let results = ar["results"].as_array().unwrap();
        assert_eq!(results.len(), 1);
        let result = &results[0];
        let framework_of = |v: &Value| {
            v["props"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "framework")
                .map(|p| p["value"].as_str().unwrap().to_owned())
                .unwrap()
        };
        let selections = result["reviewed-controls"]["control-selections"]
            .as_array()
            .unwrap();
        assert_eq!(selections.len(), report.frameworks.len());
        let items: BTreeSet<&str> = result["local-definitions"]["inventory-items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["uuid"].as_str().unwrap())
            .collect();
        for (selection, fw) in selections.iter().zip(&report.frameworks) {
            assert_eq!(framework_of(selection), fw.id);
            let unsatisfied: BTreeSet<&str> = result["findings"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| framework_of(f) == fw.id)
                .filter(|f| f["target"]["status"]["state"] == "not-satisfied")
                .map(|f| f["target"]["target-id"].as_str().unwrap())
                .collect();
            // A partially evidenced control is not satisfied either; it says why.
            let failed: BTreeSet<String> = fw
                .controls
                .iter()
                .filter(|c| matches!(c.status, Status::Fail | Status::PartiallyEvidenced))
                .map(|c| {
                    format!(
                        "{}_obj",
                        lattice_compliance::report::oscal::control_id(&fw.id, &c.id)
                    )
                })
                .collect();
            assert_eq!(
                unsatisfied,
                failed.iter().map(String::as_str).collect::<BTreeSet<_>>(),
                "{}",
                fw.id
            );
            for c in fw
                .controls
                .iter()
                .filter(|c| c.status == Status::PartiallyEvidenced)
            {
                let target = format!(
                    "{}_obj",
                    lattice_compliance::report::oscal::control_id(&fw.id, &c.id)
                );
                let finding = result["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|f| f["target"]["target-id"] == target.as_str())
                    .unwrap_or_else(|| panic!("a finding for {target}"));
                assert_eq!(finding["target"]["status"]["reason"], "other", "{target}");
                assert!(
                    finding["props"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "evidence" && p["value"] == "partial"),
                    "{target}"
                );
                let remarks = finding["target"]["status"]["remarks"].as_str().unwrap();
                assert!(remarks.contains(c.reason.as_deref().unwrap()), "{remarks}");
            }
            // Every failing subject is an observation subject that resolves to an
            // inventory item of the result.
            let observed: usize = result["observations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| {
                    o["props"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "framework" && p["value"] == fw.id.as_str())
                })
                .flat_map(|o| o["subjects"].as_array().into_iter().flatten())
                .inspect(|s| assert!(items.contains(s["subject-uuid"].as_str().unwrap())))
                .count();
            let failures: usize = fw.checks.iter().map(|c| c.failures.len()).sum();
            assert_eq!(observed, failures);
            // Controls Lattice cannot assess are excluded, with the reason.
            let excluded = selection["exclude-controls"].as_array().map_or(0, Vec::len);
            assert_eq!(excluded, fw.control_tally.not_assessed);
        }
        // The evidence hashes are in the back matter.
        let hashes: BTreeSet<&str> = ar["back-matter"]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["rlinks"][0]["hashes"][0]["value"].as_str())
            .collect();
        assert!(hashes.contains(report.world_digest.as_str()));
        assert!(hashes.contains(report.policies_digest.as_str()));
        assert!(hashes.contains(report.subject_inventory_sha256.as_str()));
    }
}

#[test]
fn human_and_tool_renderings_say_the_same_as_the_report() {
    let report = scan_world(&[case("violations/world.yaml")], AT);
    let failures: usize = report
        .frameworks
        .iter()
        .flat_map(|f| &f.checks)
        .map(|c| c.failures.len())
        .sum();
    let failed_checks: usize = report.frameworks.iter().map(|f| f.check_tally.fail).sum();
    let clean_checks: usize = report
        .frameworks
        .iter()
        .flat_map(|f| &f.checks)
        .filter(|c| c.failures.is_empty())
        .count();

    let csv = render(&report, Format::Csv);
    assert_eq!(csv.lines().count(), 1 + failures + clean_checks);
    assert!(
        csv.contains("Lattice::Service::\"\"ops/literal\"\""),
        "{csv}"
    );

    let junit = render(&report, Format::Junit);
    assert_eq!(junit.matches("<failure ").count(), failed_checks);
    assert!(junit.contains(&format!("failures=\"{failed_checks}\"")));

    let sarif: Value = serde_json::from_str(&render(&report, Format::Sarif)).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(
        sarif["runs"][0]["results"].as_array().unwrap().len(),
        failures
    );
    let critical = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ruleId"] == "nist-800-53/privileged-approved")
        .expect("the privileged container is a result");
    assert_eq!(critical["level"], "error");

    let md = render(&report, Format::Markdown);
    assert!(md.contains("#### nist-800-53/privileged-approved"));
    assert!(md.contains("`Lattice::Container::\"ops/privileged/main\"`"));
    assert!(md.contains("**Remediation:** Remove `privileged: true`"));
    assert!(md.contains("### Not assessed by Lattice"));
    assert!(md.contains("| SC System and Communications Protection |"));

    let html = render(&report, Format::Html);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("Lattice::Container::&quot;ops/privileged/main&quot;"));
    assert!(!html.contains("<script"));
    assert_eq!(
        html.matches("<section class=\"check\">").count(),
        failed_checks
    );
}

/// Approved exceptions pass as such, an unrecorded one passes but reads as incomplete in the
/// register, and an expired one fails the checks it excused.
#[test]
fn exceptions_pass_as_exceptions_until_they_expire() {
    use lattice_compliance::exceptions::{ExceptionKind, ExceptionState};
    let report = scan_world(
        &[
            case("compliant/world.yaml"),
            case("exceptions/approved.yaml"),
        ],
        AT,
    );
    assert_eq!(failures(&report), BTreeMap::new(), "nothing fails");
    let entry = |id: &str| {
        report
            .exceptions
            .iter()
            .find(|e| e.policy == id)
            .unwrap_or_else(|| panic!("{id} is in the register: {:#?}", report.exceptions))
    };
    let approved = entry("relay/relay-overrides/approved");
    assert_eq!(approved.kind, ExceptionKind::SecurityOverride);
    assert_eq!(approved.state, ExceptionState::Approved);
    assert_eq!(approved.grants, ["capability:NET_BIND_SERVICE"]);
    assert_eq!(
        approved.approver.as_deref(),
        Some("security-team@example.com")
    );
    assert_eq!(approved.expires.as_deref(), Some("2027-06-30"));
    let covered: Vec<String> = approved.subjects.iter().map(|s| s.uid()).collect();
    assert_eq!(
        covered,
        [
            r#"Lattice::Service::"relay/approved""#,
            r#"Lattice::Container::"relay/approved/relay""#
        ]
    );
    assert_eq!(
        entry("relay/relay-overrides/unrecorded").state,
        ExceptionState::Incomplete
    );
    // The compliant world's audit trial is an exception too.
    assert_eq!(
        entry("shop/tag-trial/no-latest").kind,
        ExceptionKind::AuditMode
    );
    // Every check that tolerates an approved capability passes by the two exceptions.
    let mut tolerant = 0;
    for fw in &report.frameworks {
        for c in &fw.checks {
            let catalog = lattice_compliance::frameworks(
                &lattice_engine::PolicyStore::load_packs(&support::root().join("policies"))
                    .unwrap(),
                std::slice::from_ref(&fw.id),
            )
            .unwrap();
            let check = catalog[0].checks.iter().find(|k| k.id() == c.id).unwrap();
            if check.tolerates.contains("capability") {
                tolerant += 1;
                assert_eq!(c.status, Status::PassWithException, "{}", c.id);
                assert_eq!(c.excepted, 2, "{}: the approved and the unrecorded", c.id);
                assert_eq!(
                    c.exceptions,
                    [
                        "relay/relay-overrides/approved",
                        "relay/relay-overrides/unrecorded"
                    ]
                );
                for control in &c.controls {
                    let status = fw
                        .controls
                        .iter()
                        .find(|k| &k.id == control)
                        .unwrap()
                        .status;
                    // A control that is only partially evidenced stays so with an exception.
                    let want = if catalog[0].partial.contains_key(control) {
                        Status::PartiallyEvidenced
                    } else {
                        Status::PassWithException
                    };
                    assert_eq!(status, want, "{} {control}", fw.id);
                }
            } else {
                assert_ne!(c.status, Status::PassWithException, "{}", c.id);
            }
        }
    }
    assert!(
        tolerant >= 2,
        "NIST and CIS each test approved capabilities"
    );

    // With an expired one beside them: exactly its subjects fail those checks, saying why.
    let report = scan_world(
        &[
            case("compliant/world.yaml"),
            case("exceptions/approved.yaml"),
            case("exceptions/expired.yaml"),
        ],
        AT,
    );
    let expired = report
        .exceptions
        .iter()
        .find(|e| e.policy == "relay/relay-expired/expired")
        .unwrap();
    assert_eq!(expired.state, ExceptionState::Expired);
    let mut failed = 0;
    for fw in &report.frameworks {
        for c in &fw.checks {
            for f in &c.failures {
                failed += 1;
                assert!(
                    f.subject.id.starts_with("relay/expired"),
                    "{}: {:?}",
                    c.id,
                    f.subject
                );
                let error = f.error.as_deref().unwrap_or_default();
                assert!(
                    error.contains("relay/relay-expired/expired") && error.contains("expired"),
                    "{error}"
                );
            }
        }
    }
    assert!(
        failed >= 2,
        "the expired exception fails NIST's and CIS's checks"
    );
}

/// The register reads the deviations derivation allowed, as `plan` and `compliance scan`
/// hand them over, and lists exactly what it lists when it decides them itself; a workload
/// handed over with none holds none.
#[test]
fn the_register_reads_what_derivation_allowed() {
    use lattice_compliance::exceptions::ExceptionKind;
    let worlds = [
        vec![
            case("compliant/world.yaml"),
            case("exceptions/approved.yaml"),
            case("exceptions/expired.yaml"),
        ],
        vec![support::root().join("examples/world")],
    ];
    let register = |r: &ScanReport| serde_json::to_value(&r.exceptions).unwrap();
    for world in worlds {
        let decided = scan_world(&world, AT);
        let overrides = |r: &ScanReport| {
            r.exceptions
                .iter()
                .filter(|e| e.kind == ExceptionKind::SecurityOverride)
                .count()
        };
        assert!(overrides(&decided) > 0, "{world:?} grants an override");
        let (w, _, snapshot) = support::load_world(&world);
        let deviations = support::deviations_of(&w, &snapshot);
        let reused = scan_world_with(
            &world,
            AT,
            ScanOptions {
                allowed_deviations: Some(std::sync::Arc::new(deviations.clone())),
                ..ScanOptions::default()
            },
        );
        assert_eq!(register(&reused), register(&decided), "{world:?}");
        let none = deviations.into_keys().map(|id| (id, Vec::new())).collect();
        let handed_none = scan_world_with(
            &world,
            AT,
            ScanOptions {
                allowed_deviations: Some(std::sync::Arc::new(none)),
                ..ScanOptions::default()
            },
        );
        assert_eq!(overrides(&handed_none), 0, "{world:?}");
    }
}

/// A scan handed everything derivation decided (denied gates, deviations, the mesh plan),
/// as `plan` hands it, reports exactly what a scan that decides those itself reports.
#[test]
fn a_scan_handed_what_derivation_decided_reports_the_same() {
    let worlds = [
        vec![case("violations/world.yaml")],
        vec![
            case("compliant/world.yaml"),
            case("exceptions/approved.yaml"),
            case("exceptions/expired.yaml"),
        ],
        vec![support::root().join("examples/world")],
    ];
    let body = |r: &ScanReport| {
        let mut v = serde_json::to_value(r).unwrap();
        for time in ["started", "finished"] {
            v.as_object_mut().unwrap().remove(time);
        }
        v
    };
    for world in worlds {
        let alone = scan_world(&world, AT);
        let (w, _, snapshot) = support::load_world(&world);
        let mesh = lattice_gates::MeshPlan::plan(&snapshot, &w);
        let mut decided = lattice_gates::compliance::DecidedGates::new();
        for (key, object) in w.objects().filter(|(_, o)| o.is_workload()) {
            let id = format!(
                "{}/{}",
                key.namespace.as_deref().unwrap_or("default"),
                key.name
            );
            decided.insert(
                id,
                lattice_gates::evaluate(&snapshot, object).denied_gates(),
            );
        }
        let handed = scan_world_with(
            &world,
            AT,
            ScanOptions {
                decided_gates: Some(std::sync::Arc::new(decided)),
                allowed_deviations: Some(std::sync::Arc::new(support::deviations_of(
                    &w, &snapshot,
                ))),
                mesh: Some(std::sync::Arc::new(mesh)),
                ..ScanOptions::default()
            },
        );
        assert_eq!(body(&handed), body(&alone), "{world:?}");
    }
    // The mesh plan's path is the one taken: the violations world has unilateral callers.
    let violations = scan_world(&[case("violations/world.yaml")], AT);
    assert!(
        failures(&violations).contains_key("nist-800-53/bilateral-traffic"),
        "{:?}",
        failures(&violations).keys()
    );
}

/// The example world's one capability, NET_BIND_SERVICE for payments' syslog relay, is an
/// approved exception with its policy, its approver and the container it covers.
#[test]
fn the_example_worlds_capability_is_an_approved_exception() {
    use lattice_compliance::exceptions::ExceptionState;
    let report = scan_world(&[support::root().join("examples/world")], AT);
    let e = report
        .exceptions
        .iter()
        .find(|e| e.policy == "payments/payments-security-overrides/net-bind-service")
        .expect("in the register");
    assert_eq!(e.state, ExceptionState::Approved, "{e:?}");
    assert!(
        e.approver
            .as_deref()
            .is_some_and(|a| a.contains("security-team"))
    );
    assert!(
        e.subjects
            .iter()
            .any(|s| s.uid() == r#"Lattice::Container::"payments/gateway/syslog-relay""#),
        "{e:?}"
    );
    let cis = report
        .frameworks
        .iter()
        .find(|f| f.id == "cis-kubernetes")
        .unwrap();
    let caps = cis
        .checks
        .iter()
        .find(|c| c.id == "cis-kubernetes/capabilities-approved")
        .unwrap();
    assert_eq!(caps.status, Status::PassWithException);
    assert!(caps.exceptions.contains(&e.policy));
}
