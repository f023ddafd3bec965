//! Scheduled compliance scans: each LatticeComplianceProfile is scanned on the current
//! snapshot when it is new, changed, or its `scanInterval` has passed; the evidence goes to
//! its sink and a summary to its status.
//!
//! Sinks:
//! - `configMap`: one ConfigMap per run (`<name>-<seq>`, labelled with the profile), holding
//!   the renderings. Each run's annotations carry the SHA-256 of its contents and of the run
//!   before, so a deleted or edited run breaks the chain visibly.
//! - `volumeClaim`: the hash-chained evidence log of `lattice-policy compliance verify`,
//!   in `<evidence root>/<claim name>`, where the claim is mounted into the operator's pod.
//! - `s3`: not written by this build; the status says so instead of pretending.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use lattice_compiler::compile::MANAGER;
use lattice_compliance::{Format, ScanOptions, ScanReport, evidence, render, scan};
use lattice_schemas::crd::compliance_profile::ComplianceStatus;
use lattice_schemas::crd::{Kind, LatticeComplianceProfile};
use lattice_schemas::validate::format::duration_seconds;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::apply::patch_status;
use super::plan::Plan;
use super::status::{condition, previous_conditions, transitions};

/// The label naming the profile a run's ConfigMap belongs to.
pub const PROFILE_LABEL: &str = "lattice.dev/compliance-profile";
const DIGEST: &str = "lattice.dev/evidence-sha256";
const PREVIOUS: &str = "lattice.dev/previous-evidence-sha256";
const SEQ: &str = "lattice.dev/evidence-seq";
/// A ConfigMap holds at most 1 MiB.
const CONFIG_MAP_LIMIT: usize = 1024 * 1024 - 4096;

/// Where volume-claim sinks are mounted.
#[derive(Clone, Debug, Default)]
pub struct Sinks {
    pub evidence_root: Option<PathBuf>,
}

/// Whether `profile` is due at `now`, given its status as last seen.
pub fn due(
    profile: &LatticeComplianceProfile,
    generation: Option<i64>,
    status: &Value,
    now: jiff::Timestamp,
) -> bool {
    let observed = status.get("observedGeneration").and_then(Value::as_i64);
    if observed != generation {
        return true;
    }
    let Some(last) = status
        .get("lastScanTime")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    else {
        return true;
    };
    let interval = duration_seconds(&profile.spec.scan_interval).unwrap_or(86_400);
    let interval = i64::try_from(interval).unwrap_or(i64::MAX);
    last + jiff::SignedDuration::from_secs(interval) <= now
}

/// Runs every due profile of `plan`. Returns how many were scanned.
///
/// `written` holds the status this process last wrote per profile. A status write does not
/// (rightly) make a new plan, so the plan's copy of a profile's status stays the one seen
/// before its scan; deciding on that copy scanned again at every tick, about 17,000 runs a
/// day for an hourly profile. The newer of the two decides.
pub async fn run_due(
    client: &Client,
    plan: &Plan,
    sinks: &Sinks,
    written: &mut std::collections::BTreeMap<String, Value>,
) -> usize {
    let now = jiff::Timestamp::now();
    let mut scanned = 0;
    for (profile, generation, seen) in &plan.profiles {
        let name = profile.metadata.name.clone().unwrap_or_default();
        let status = match written.get(&name) {
            Some(mine) if scanned_at(mine) >= scanned_at(seen) => mine,
            _ => seen,
        };
        if !due(profile, *generation, status, now) {
            continue;
        }
        let outcome = scan_profile(client, plan, profile, sinks, now).await;
        let summary = summary(outcome, *generation, status, now);
        match patch_status(
            client,
            Kind::LatticeComplianceProfile,
            None,
            &name,
            &summary,
        )
        .await
        {
            Ok(()) => {
                written.insert(name, serde_json::to_value(&summary).unwrap_or_default());
            }
            Err(e) => tracing::warn!(profile = %name, "cannot write status: {e}"),
        }
        scanned += 1;
    }
    written.retain(|n, _| {
        plan.profiles
            .iter()
            .any(|(p, _, _)| p.metadata.name.as_deref() == Some(n.as_str()))
    });
    scanned
}

/// When a status says the profile was last scanned (`None` when never).
fn scanned_at(status: &Value) -> Option<jiff::Timestamp> {
    status
        .get("lastScanTime")
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
}

type Outcome = Result<(ScanReport, String), String>;

async fn scan_profile(
    client: &Client,
    plan: &Plan,
    profile: &LatticeComplianceProfile,
    sinks: &Sinks,
    now: jiff::Timestamp,
) -> Outcome {
    let name = profile.metadata.name.clone().unwrap_or_default();
    let spec = &profile.spec;
    let options = ScanOptions {
        frameworks: spec.frameworks.clone(),
        namespaces: (!spec.namespaces.is_empty())
            .then(|| spec.namespaces.iter().cloned().collect()),
        profile: Some(name.clone()),
        now: Some(now),
        decided_gates: None,
    };
    let current = plan.current.clone();
    let store = plan.store.clone();
    let report = tokio::task::spawn_blocking(move || {
        scan(&current.world, &store, &current.snapshot, &options, &|_| {})
    })
    .await
    .map_err(|e| format!("the scan did not finish: {e}"))?
    .map_err(|e| e.to_string())?;
    let mut formats: Vec<Format> = Vec::new();
    for f in &spec.formats {
        formats.push(Format::parse(f).ok_or_else(|| format!("unknown evidence format `{f}`"))?);
    }
    if formats.is_empty() {
        formats = vec![Format::Oscal, Format::Markdown];
    }
    if !formats.contains(&Format::Json) {
        formats.insert(0, Format::Json);
    }
    let renderings: Vec<(String, Vec<u8>)> = formats
        .iter()
        .map(|f| {
            (
                format!("report.{}", f.extension()),
                render(&report, *f).into_bytes(),
            )
        })
        .collect();
    let sink = &spec.evidence_sink;
    let reference = if let Some(cm) = &sink.config_map {
        let ns = cm.namespace.as_deref().unwrap_or("lattice-system");
        write_config_map(client, &name, ns, &cm.name, &renderings).await?
    } else if let Some(claim) = &sink.volume_claim {
        let root = sinks.evidence_root.as_ref().ok_or_else(|| {
            "the profile writes to a volume claim, but the operator runs without --evidence-root".to_owned()
        })?;
        let dir = root.join(&claim.name);
        let report_for_log = report.clone();
        let appended = tokio::task::spawn_blocking(move || {
            evidence::append(&dir, &report_for_log, &renderings)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        format!("{} (run {})", appended.dir.display(), appended.seq)
    } else if sink.s3.is_some() {
        return Err(
            "the S3 sink is not supported by this operator build; use configMap or volumeClaim"
                .into(),
        );
    } else {
        return Err("the profile names no evidence sink".into());
    };
    Ok((report, reference))
}

async fn write_config_map(
    client: &Client,
    profile: &str,
    namespace: &str,
    base: &str,
    renderings: &[(String, Vec<u8>)],
) -> Result<String, String> {
    let size: usize = renderings.iter().map(|(_, b)| b.len()).sum();
    if size > CONFIG_MAP_LIMIT {
        return Err(format!(
            "the evidence is {size} bytes, more than a ConfigMap holds (1 MiB); use a volumeClaim sink"
        ));
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let runs = api
        .list(&ListParams::default().labels(&format!("{PROFILE_LABEL}={profile}")))
        .await
        .map_err(|e| format!("cannot list earlier runs in {namespace}: {e}"))?;
    let last = runs
        .items
        .iter()
        .filter_map(|cm| {
            let a = cm.meta().annotations.as_ref()?;
            Some((a.get(SEQ)?.parse::<u64>().ok()?, a.get(DIGEST)?.clone()))
        })
        .max();
    let (seq, previous) = match last {
        Some((seq, digest)) => (seq + 1, digest),
        None => (1, String::new()),
    };
    let data: BTreeMap<String, String> = renderings
        .iter()
        .map(|(file, bytes)| (file.clone(), String::from_utf8_lossy(bytes).into_owned()))
        .collect();
    // The previous run's digest, then each key in order with the SHA-256 of its value.
    let mut hash = Sha256::new();
    hash.update(previous.as_bytes());
    for (file, text) in &data {
        hash.update(file.as_bytes());
        hash.update(Sha256::digest(text.as_bytes()));
    }
    let digest = format!("{:x}", hash.finalize());
    let name = format!("{base}-{seq}");
    let body = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {PROFILE_LABEL: profile, "app.kubernetes.io/managed-by": MANAGER},
            "annotations": {SEQ: seq.to_string(), DIGEST: digest, PREVIOUS: previous},
        },
        "data": data,
    });
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| format!("cannot write ConfigMap {namespace}/{name}: {e}"))?;
    Ok(format!("configmap/{namespace}/{name}"))
}

fn summary(
    outcome: Outcome,
    generation: Option<i64>,
    previous: &Value,
    now: jiff::Timestamp,
) -> ComplianceStatus {
    let previous = previous_conditions(previous);
    let stamp = now.to_string();
    let condition =
        |ok: bool, reason: &str, message: String| condition("Scanned", ok, reason, message);
    match outcome {
        Ok((report, reference)) => {
            let (mut pass, mut fail, mut na) = (0, 0, 0);
            for f in &report.frameworks {
                // A control satisfied by an approved exception passes (the report's
                // register says by which).
                pass += f.control_tally.pass + f.control_tally.pass_with_exception;
                fail += f.control_tally.fail;
                na += f.control_tally.not_applicable;
            }
            let n = |x: usize| Some(i32::try_from(x).unwrap_or(i32::MAX));
            ComplianceStatus {
                last_scan_time: Some(stamp.clone()),
                passed: n(pass),
                failed: n(fail),
                not_applicable: n(na),
                snapshot_digest: Some(report.snapshot_digest.clone()),
                evidence_ref: Some(reference.clone()),
                conditions: transitions(
                    &previous,
                    vec![condition(
                        true,
                        "EvidenceWritten",
                        format!(
                            "controls: {pass} passed, {fail} failed, {na} not applicable; evidence in {reference}"
                        ),
                    )],
                    generation,
                    &stamp,
                ),
                observed_generation: generation,
            }
        }
        Err(e) => ComplianceStatus {
            // A failed scan is retried at the next interval, not in a loop.
            last_scan_time: Some(stamp.clone()),
            conditions: transitions(
                &previous,
                vec![condition(false, "ScanFailed", e)],
                generation,
                &stamp,
            ),
            observed_generation: generation,
            ..ComplianceStatus::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(interval: &str) -> LatticeComplianceProfile {
        let mut p = LatticeComplianceProfile::new("p", Default::default());
        p.spec.scan_interval = interval.into();
        p
    }

    #[test]
    fn a_profile_is_due_when_new_changed_or_its_interval_passed() {
        let now: jiff::Timestamp = "2026-06-01T12:00:00Z".parse().unwrap();
        let p = profile("1h");
        assert!(due(&p, Some(1), &Value::Null, now), "never scanned");
        let recent = json!({"observedGeneration": 1, "lastScanTime": "2026-06-01T11:30:00Z"});
        assert!(!due(&p, Some(1), &recent, now));
        assert!(due(&p, Some(2), &recent, now), "the spec changed");
        let old = json!({"observedGeneration": 1, "lastScanTime": "2026-06-01T10:59:59Z"});
        assert!(due(&p, Some(1), &old, now));
    }
}
