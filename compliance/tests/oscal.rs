//! OSCAL a tool can ingest: the assessment plan, the results that import it and the
//! catalogs their control ids resolve in validate against NIST's schema; the results
//! examine configuration by the scanner as a tool, list every subject in scope under a
//! UUID of its own that survives scans, carry risks for failures and accepted risks for
//! exceptions, and name their parties.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use lattice_compliance::report::oscal::{self, Options};
use lattice_compliance::report::{Format, render, render_with};
use lattice_compliance::{ScanOptions, ScanReport, Status};
use serde_json::Value;
use support::{case, reference_dir, root, scan_world, scan_world_with};

const AT: &str = "2026-11-21T12:00:00Z";
const LATER: &str = "2026-12-24T08:30:00Z";

fn example_world() -> Vec<PathBuf> {
    vec![root().join("examples/world")]
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("OSCAL is JSON")
}

fn results(report: &ScanReport) -> Value {
    json(&render(report, Format::Oscal))
}

fn plan(report: &ScanReport) -> Value {
    json(&render(report, Format::OscalAp))
}

/// The catalogs Lattice generates, from the repository's packs.
fn catalogs() -> BTreeMap<String, Value> {
    let store = lattice_engine::PolicyStore::load_packs(&root().join("policies")).unwrap();
    lattice_compliance::frameworks(&store, &[])
        .unwrap()
        .iter()
        .filter_map(|fw| {
            oscal::catalog::render(fw, AT)
                .ok()
                .map(|text| (fw.id.clone(), json(&text)))
        })
        .collect()
}

fn oscal_validator() -> Option<jsonschema::Validator> {
    let dir = reference_dir()?;
    let text = std::fs::read_to_string(dir.join("oscal/oscal_complete_schema-1-1-3.json"))
        .expect("the OSCAL 1.1.3 schema");
    Some(jsonschema::validator_for(&json(&text)).expect("a valid JSON Schema"))
}

fn assert_valid(validator: &jsonschema::Validator, doc: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .take(10)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}");
}

/// Every `"key": …` value anywhere in `doc`.
fn all<'a>(doc: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match doc {
        Value::Object(map) => {
            for (k, v) in map {
                if k == key {
                    out.push(v);
                }
                all(v, key, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| all(v, key, out)),
        _ => {}
    }
}

/// Cedar uid → inventory-item UUID of a document's local definitions.
fn inventory(local: &Value) -> BTreeMap<String, String> {
    local["inventory-items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let uid = i["props"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "cedar-uid")
                .unwrap()["value"]
                .as_str()
                .unwrap()
                .to_owned();
            (uid, i["uuid"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn plan_results_and_catalogs_validate_against_nists_schema() {
    let Some(validator) = oscal_validator() else {
        return;
    };
    for world in [
        vec![case("compliant/world.yaml")],
        vec![case("violations/world.yaml")],
        example_world(),
    ] {
        let report = scan_world(&world, AT);
        assert_valid(&validator, &plan(&report), "plan");
        assert_valid(&validator, &results(&report), "results");
    }
    let catalogs = catalogs();
    assert_eq!(
        catalogs.keys().collect::<Vec<_>>(),
        ["cis-kubernetes", "pod-security", "soc2"],
        "NIST's own catalog serves nist-800-53"
    );
    for (id, catalog) in &catalogs {
        assert_valid(&validator, catalog, id);
        // Not vacuous: a control without a title is refused.
        let mut broken = catalog.clone();
        broken["catalog"]["groups"][0]["controls"][0]
            .as_object_mut()
            .unwrap()
            .remove("title");
        assert!(!validator.is_valid(&broken), "{id}");
    }
    let report = scan_world(&example_world(), AT);
    // An assessor name as a flag can hold anything; the documents stay valid.
    let odd = Options {
        assessor: "  Example\n Audit LLP ".into(),
    };
    assert_valid(
        &validator,
        &json(&render_with(&report, Format::Oscal, &odd)),
        "assessor",
    );
    assert_valid(
        &validator,
        &json(&render_with(&report, Format::OscalAp, &odd)),
        "assessor",
    );
    let mut broken = plan(&report);
    broken["assessment-plan"]
        .as_object_mut()
        .unwrap()
        .remove("import-ssp");
    assert!(!validator.is_valid(&broken), "a plan imports an SSP");
    let mut broken = results(&report);
    broken["assessment-results"]["results"][0]["risks"][0]["status"] = Value::from("Open Risk");
    assert!(!validator.is_valid(&broken), "risk statuses are tokens");
}

/// Every control id and objective the results and the plan name resolves: NIST's in
/// NIST's SP 800-53 rev5 catalog (the HIGH baseline's resolved catalog in the reference
/// material), SOC 2's and CIS's in the catalogs Lattice generates, whose ids and titles
/// are checked against the frameworks' published lists.
#[test]
fn every_control_id_resolves_in_a_catalog() {
    let Some(reference) = reference_dir() else {
        return;
    };
    fn ids(catalog: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut controls, mut parts) = (Vec::new(), Vec::new());
        all(catalog, "controls", &mut controls);
        all(catalog, "parts", &mut parts);
        let ids = |vs: Vec<&Value>| {
            vs.iter()
                .flat_map(|v| v.as_array().unwrap())
                .filter_map(|c| c["id"].as_str().map(str::to_owned))
                .collect::<BTreeSet<_>>()
        };
        (ids(controls), ids(parts))
    }
    let nist: Value = json(
        &std::fs::read_to_string(
            reference
                .join("oscal/NIST_SP-800-53_rev5_HIGH-baseline-resolved-profile_catalog-min.json"),
        )
        .unwrap(),
    );
    let mut resolvable: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    resolvable.insert("nist-800-53".into(), ids(&nist));
    for (id, catalog) in catalogs() {
        resolvable.insert(id, ids(&catalog));
    }

    let report = scan_world(&[case("violations/world.yaml")], AT);
    for doc in [results(&report), plan(&report)] {
        let mut selections = Vec::new();
        all(&doc, "control-selections", &mut selections);
        let mut checked = 0;
        for selection in selections.iter().flat_map(|s| s.as_array().unwrap()) {
            let fw = selection["props"][0]["value"].as_str().unwrap();
            let (controls, _) = &resolvable[fw];
            for key in ["include-controls", "exclude-controls"] {
                for c in selection[key].as_array().into_iter().flatten() {
                    let id = c["control-id"].as_str().unwrap();
                    assert!(controls.contains(id), "{fw} {id} resolves in no catalog");
                    checked += 1;
                }
            }
        }
        let total: usize = report.frameworks.iter().map(|f| f.controls.len()).sum();
        assert_eq!(checked, total);
    }
    let doc = results(&report);
    let findings = doc["assessment-results"]["results"][0]["findings"]
        .as_array()
        .unwrap();
    assert!(!findings.is_empty());
    for f in findings {
        let fw = f["props"][0]["value"].as_str().unwrap();
        let target = f["target"]["target-id"].as_str().unwrap();
        assert!(
            resolvable[fw].1.contains(target),
            "{fw} objective {target} resolves in no catalog"
        );
    }

    // The generated catalogs say what the frameworks' published lists say.
    let cis: Value =
        json(&std::fs::read_to_string(reference.join("frameworks/cis-control-ids.json")).unwrap());
    let published: BTreeMap<String, String> = cis["cis-1.10"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            // Ids and sections are JSON numbers where they look like one (`2.1`, `2`).
            let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            let section = text(&c["section"]);
            (
                text(&c["id"]),
                format!("{section}|{}", c["section_text"].as_str().unwrap()),
            )
        })
        .collect();
    let sections: BTreeMap<&str, &str> = published
        .values()
        .filter_map(|v| v.split_once('|'))
        .collect();
    let generated = catalogs();
    for group in generated["cis-kubernetes"]["catalog"]["groups"]
        .as_array()
        .unwrap()
    {
        let label = group["props"][0]["value"].as_str().unwrap();
        assert_eq!(
            Some(&group["title"].as_str().unwrap()),
            sections.get(label),
            "CIS section {label}"
        );
        for c in group["controls"].as_array().unwrap() {
            let label = c["props"][0]["value"].as_str().unwrap();
            assert!(published.contains_key(label), "CIS {label} is in 1.10");
            assert_eq!(c["id"], format!("cis-{label}"));
        }
    }
    // SOC 2 ids are 2017 Trust Services Criteria (the reference list beside the checkout
    // names only eight of them; see the packs test).
    let criteria = support::tsc_2017();
    let mut soc2_controls = Vec::new();
    all(&generated["soc2"], "controls", &mut soc2_controls);
    for c in soc2_controls.iter().flat_map(|v| v.as_array().unwrap()) {
        let label = c["props"][0]["value"].as_str().unwrap();
        assert!(
            criteria.contains(label),
            "SOC 2 {label} is a Trust Services Criterion"
        );
    }
}

/// The plan reviews what the results report: the same control selections, and every
/// subject in scope, passing or not, under the same UUIDs as the results' inventory.
#[test]
fn the_plan_reviews_what_the_results_report_and_every_subject_is_inventoried() {
    let report = scan_world(&example_world(), AT);
    let (ap, ar) = (plan(&report), results(&report));
    let ap = &ap["assessment-plan"];
    let result = &ar["assessment-results"]["results"][0];
    assert_eq!(
        ap["reviewed-controls"], result["reviewed-controls"],
        "the same controls"
    );
    let planned = inventory(&ap["local-definitions"]);
    let reported = inventory(&result["local-definitions"]);
    assert_eq!(planned, reported);
    let in_scope: usize = report.subjects.values().sum();
    assert_eq!(reported.len(), in_scope, "every subject, passing ones too");
    // A subject that fails nothing is listed.
    let failing: BTreeSet<String> = report
        .frameworks
        .iter()
        .flat_map(|f| &f.checks)
        .flat_map(|c| &c.failures)
        .map(|f| f.subject.uid())
        .collect();
    assert!(reported.keys().any(|uid| !failing.contains(uid)));
    let subjects: BTreeSet<&str> = ap["assessment-subjects"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["include-subjects"].as_array().unwrap())
        .map(|s| s["subject-uuid"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        reported
            .values()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
    );
    // Every observation subject is an inventory item.
    let items: BTreeSet<&String> = reported.values().collect();
    let mut observed = Vec::new();
    all(result, "subject-uuid", &mut observed);
    assert!(!observed.is_empty());
    for s in observed {
        assert!(items.contains(&s.as_str().unwrap().to_owned()), "{s}");
    }
}

/// The results import the plan by a relative file name, and carry its SHA-256, so the
/// link can be checked.
#[test]
fn the_results_import_the_plan_with_its_hash() {
    let report = scan_world(&example_world(), AT);
    let ar = results(&report);
    let ar = &ar["assessment-results"];
    assert_eq!(ar["import-ap"]["href"], oscal::PLAN_HREF);
    assert_eq!(
        oscal::PLAN_HREF,
        format!("report.{}", Format::OscalAp.extension())
    );
    let resource = ar["back-matter"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rlinks"][0]["href"] == oscal::PLAN_HREF)
        .expect("the plan is a back-matter resource");
    use sha2::Digest;
    let plan = render(&report, Format::OscalAp);
    let expected: String = sha2::Sha256::digest(plan.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(resource["rlinks"][0]["hashes"][0]["value"], expected);
    assert_eq!(
        resource["props"][0]["value"],
        json(&plan)["assessment-plan"]["uuid"]
    );
}

/// A subject keeps its inventory UUID across scans at different times and of different
/// frameworks; documents of a different scope or time never share a UUID.
#[test]
fn subjects_keep_their_uuid_and_documents_are_unique_to_their_scope() {
    let all_frameworks = scan_world(&example_world(), AT);
    let nist_later = scan_world_with(
        &example_world(),
        LATER,
        ScanOptions {
            frameworks: vec!["nist-800-53".into()],
            ..ScanOptions::default()
        },
    );
    let nist_now = scan_world_with(
        &example_world(),
        AT,
        ScanOptions {
            frameworks: vec!["nist-800-53".into()],
            ..ScanOptions::default()
        },
    );
    let payments = scan_world_with(
        &example_world(),
        AT,
        ScanOptions {
            namespaces: Some(["payments".to_owned()].into()),
            ..ScanOptions::default()
        },
    );
    let items = |r: &ScanReport| {
        let doc = results(r);
        inventory(&doc["assessment-results"]["results"][0]["local-definitions"])
    };
    let a = items(&all_frameworks);
    let b = items(&nist_later);
    let gateway = r#"Lattice::Service::"payments/gateway""#;
    assert_eq!(a[gateway], b[gateway]);
    assert_eq!(a, b, "every subject keeps its UUID");
    assert_eq!(
        items(&payments)[gateway],
        a[gateway],
        "and in a narrower scope"
    );

    let uuid = |doc: Value, kind: &str| doc[kind]["uuid"].as_str().unwrap().to_owned();
    let docs = |r: &ScanReport| {
        [
            uuid(results(r), "assessment-results"),
            uuid(plan(r), "assessment-plan"),
        ]
    };
    let mut seen = BTreeSet::new();
    for r in [&all_frameworks, &nist_later, &nist_now, &payments] {
        for u in docs(r) {
            assert!(seen.insert(u.clone()), "{u} is shared by two documents");
        }
    }
    // The same scan renders the same UUIDs.
    assert_eq!(
        docs(&all_frameworks),
        docs(&scan_world(&example_world(), AT))
    );
    // The tool component is the same in every scan.
    let tool = |r: &ScanReport| {
        results(r)["assessment-results"]["results"][0]["local-definitions"]["assessment-assets"]
            ["components"][0]["uuid"]
            .clone()
    };
    assert_eq!(tool(&all_frameworks), tool(&nist_later));
}

#[test]
fn hash_values_are_bare_hex() {
    let report = scan_world(&example_world(), AT);
    for doc in [results(&report), plan(&report)] {
        let mut hashes = Vec::new();
        all(&doc, "hashes", &mut hashes);
        let values: Vec<&str> = hashes
            .iter()
            .flat_map(|h| h.as_array().unwrap())
            .map(|h| h["value"].as_str().unwrap())
            .collect();
        assert!(values.len() >= 4);
        for v in values {
            assert!(
                v.len() == 64
                    && v.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{v} is not bare lowercase hex"
            );
        }
    }
    assert!(report.snapshot_digest.starts_with("sha256:"));
    assert!(
        render(&report, Format::Oscal).contains(&report.snapshot_digest["sha256:".len()..]),
        "the snapshot's hash is there, bare"
    );
}

/// Observations examine configuration, by the scanner as a tool component the results
/// define.
#[test]
fn observations_examine_configuration_by_the_tool() {
    let report = scan_world(&example_world(), AT);
    let doc = results(&report);
    let result = &doc["assessment-results"]["results"][0];
    let component = result["local-definitions"]["assessment-assets"]["components"][0]["uuid"]
        .as_str()
        .unwrap();
    let observations = result["observations"].as_array().unwrap();
    let checks: usize = report.frameworks.iter().map(|f| f.checks.len()).sum();
    assert_eq!(observations.len(), checks + report.exceptions.len());
    for o in observations {
        assert_eq!(
            o["methods"],
            serde_json::json!(["EXAMINE"]),
            "{}",
            o["title"]
        );
        let actor = &o["origins"][0]["actors"][0];
        assert_eq!(actor["type"], "tool");
        assert_eq!(actor["actor-uuid"], component);
    }
    assert!(!render(&report, Format::Oscal).contains("\"TEST\""));
}

/// Each failing check is an open risk with its remediation; each exception in the register
/// an accepted risk naming its policy, approver and expiry; findings relate to them.
#[test]
fn failures_are_risks_and_exceptions_are_accepted_risks() {
    let report = scan_world(&example_world(), AT);
    let doc = results(&report);
    let result = &doc["assessment-results"]["results"][0];
    let risks = result["risks"].as_array().unwrap();
    let prop = |r: &Value, name: &str| -> Option<String> {
        r["props"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["value"].as_str().unwrap().to_owned())
    };
    let mut failed = 0;
    for fw in &report.frameworks {
        for c in fw.checks.iter().filter(|c| c.status == Status::Fail) {
            failed += 1;
            let risk = risks
                .iter()
                .find(|r| prop(r, "check").as_deref() == Some(c.id.as_str()))
                .unwrap_or_else(|| panic!("{} fails and is a risk", c.id));
            assert_eq!(risk["status"], "open");
            let remediation = risk["remediations"][0]["description"].as_str().unwrap();
            assert!(!remediation.is_empty());
            if !c.remediation.is_empty() {
                assert_eq!(remediation, c.remediation);
            }
        }
    }
    assert!(failed > 0, "the example world has failures");

    let accepted = risks
        .iter()
        .find(|r| {
            prop(r, "exception-policy").as_deref()
                == Some("payments/payments-security-overrides/net-bind-service")
        })
        .expect("payments/gateway's capability exception is an accepted risk");
    assert_eq!(accepted["status"], "deviation-approved");
    assert!(
        prop(accepted, "approver")
            .unwrap()
            .contains("security-team")
    );
    assert_eq!(prop(accepted, "expires").as_deref(), Some("2027-06-30"));
    assert!(
        accepted["statement"]
            .as_str()
            .unwrap()
            .contains("security-team")
    );
    // Its observation names the relay container among its subjects.
    let observation = accepted["related-observations"][0]["observation-uuid"].clone();
    let o = result["observations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["uuid"] == observation)
        .unwrap();
    assert!(
        o["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["title"] == r#"Lattice::Container::"payments/gateway/syslog-relay""#)
    );
    // An exception without an approver is requested, not accepted.
    let audit = risks
        .iter()
        .find(|r| {
            prop(r, "exception-policy").as_deref() == Some("platform/image-hygiene/no-latest-tag")
        })
        .unwrap();
    assert_eq!(audit["status"], "deviation-requested");
    assert_eq!(
        risks.len(),
        failed + report.exceptions.len(),
        "nothing else is a risk"
    );
    // CIS 5.2.9 passes by the exception, and its finding relates the accepted risk.
    let finding = result["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["target"]["target-id"] == "cis-5.2.9_obj")
        .unwrap();
    assert!(
        finding["related-risks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["risk-uuid"] == accepted["uuid"])
    );
}

/// The documents name the tool that prepared them and the assessor, who is configurable.
#[test]
fn parties_and_roles_name_the_tool_and_the_assessor() {
    let report = scan_world(&example_world(), AT);
    let named = Options {
        assessor: "Example Audit LLP".into(),
    };
    for format in [Format::Oscal, Format::OscalAp] {
        for (options, assessor) in [
            (Options::default(), oscal::DEFAULT_ASSESSOR),
            (named.clone(), "Example Audit LLP"),
        ] {
            let doc = json(&render_with(&report, format, &options));
            let metadata = doc.as_object().unwrap().values().next().unwrap()["metadata"].clone();
            let party = |role: &str| {
                let uuid = metadata["responsible-parties"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["role-id"] == role)
                    .unwrap()["party-uuids"][0]
                    .clone();
                metadata["parties"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["uuid"] == uuid)
                    .unwrap()["name"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            assert_eq!(party("assessor"), assessor, "{}", format.name());
            assert!(party("prepared-by").contains("lattice-policy"));
            let roles: Vec<&str> = metadata["roles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap())
                .collect();
            assert_eq!(roles, ["prepared-by", "assessor"]);
        }
    }
}
