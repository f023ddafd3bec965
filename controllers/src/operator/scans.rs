//! Scheduled compliance scans: each LatticeComplianceProfile is scanned on the current
//! snapshot when it is new, changed, or its `scanInterval` has passed; the evidence goes to
//! its sink and a summary to its status.
//!
//! Sinks:
//! - `configMap`: one ConfigMap per run (`<name>-<seq>`, labelled with the profile), holding
//!   the renderings. Each run's annotations carry its sequence number, the SHA-256 of its
//!   contents and of the run before, and a signature when the operator holds a key
//!   ([`lattice_compliance::evidence::runs`]), so a deleted or edited run breaks the chain
//!   visibly.
//! - `volumeClaim`: the hash-chained evidence log of `lattice-policy compliance verify`,
//!   in `<evidence root>/<claim name>`, where the claim is mounted into the operator's pod.
//! - `s3`: not written by this build; the status says so instead of pretending.
//!
//! After each run the head (the newest run's digest and sequence number) is anchored outside
//! the sink: in the profile's status and in the ConfigMap `lattice-evidence-head-<profile>`
//! in the operator's namespace. Before each run the sink is verified against that anchor,
//! and a sink whose newest run is not the anchored head (runs deleted from the end, or
//! replaced) is not written to: the status says what was found, and nothing re-links
//! silently past the loss.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use lattice_compiler::compile::MANAGER;
use lattice_compliance::evidence::runs::{Run, run_digest, sign_run, verify_runs};
use lattice_compliance::evidence::{Signer, VerifyError, VerifyOptions};
use lattice_compliance::{Format, ScanOptions, ScanReport, evidence, render, scan};
use lattice_schemas::crd::compliance_profile::ComplianceStatus;
use lattice_schemas::crd::{Kind, LatticeComplianceProfile};
use lattice_schemas::validate::format::duration_seconds;
use serde_json::{Value, json};

use super::apply::patch_status;
use super::plan::{Plan, Verdict};
use super::status::{condition, previous_conditions, transitions};

use lattice_compliance::evidence::runs::{
    DIGEST_ANNOTATION as DIGEST, PREVIOUS_ANNOTATION as PREVIOUS, SEQ_ANNOTATION as SEQ,
    SIGNATURE_ANNOTATION as SIGNATURE,
};
pub use lattice_compliance::evidence::runs::{HEAD_PREFIX, PROFILE_LABEL};
/// A ConfigMap holds at most 1 MiB.
const CONFIG_MAP_LIMIT: usize = 1024 * 1024 - 4096;

/// Where evidence goes, and how it is signed and anchored.
#[derive(Clone, Debug, Default)]
pub struct Sinks {
    /// Where volume-claim sinks are mounted.
    pub evidence_root: Option<PathBuf>,
    /// Signs every record and run, when set.
    pub signer: Option<std::sync::Arc<Signer>>,
    /// Where the head ConfigMaps are kept (the operator's namespace).
    pub namespace: String,
}

/// The newest run of a sink: what is anchored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub digest: String,
    pub seq: u64,
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

/// What the plan decided and derived for every workload: the scan takes the plan's gate
/// verdicts as they are and reads the very objects the operator applies.
fn planned_facts(
    workloads: &imbl::OrdMap<super::plan::Owner, std::sync::Arc<super::plan::Desired>>,
) -> (
    lattice_gates::compliance::DecidedGates,
    lattice_gates::compliance::DerivedByWorkload,
) {
    let mut decided = lattice_gates::compliance::DecidedGates::new();
    let mut derived = lattice_gates::compliance::DerivedByWorkload::new();
    for (owner, desired) in workloads {
        match &desired.verdict {
            Verdict::Authorized => {
                decided.insert(owner.id(), Vec::new());
                derived.insert(
                    owner.id(),
                    lattice_gates::compliance::DerivedObjects::read(&desired.objects),
                );
            }
            Verdict::Denied(gates) => {
                decided.insert(owner.id(), gates.clone());
            }
            // Decided again by the scan itself; it derived nothing.
            Verdict::Failed(_) => {}
        }
    }
    (decided, derived)
}

type Outcome = Result<(ScanReport, String, Head), String>;

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
        derived: None,
        allowed_deviations: None,
        mesh: None,
        baseline: spec.baseline.map(Into::into),
    };
    let current = plan.current.clone();
    let store = plan.store.clone();
    let workloads = plan.workloads.clone();
    let report = tokio::task::spawn_blocking(move || {
        let mut options = options;
        let (decided, derived) = planned_facts(&workloads);
        options.decided_gates = Some(std::sync::Arc::new(decided));
        options.derived = Some(std::sync::Arc::new(derived));
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
    let anchored = read_head(client, &sinks.namespace, &name).await?;
    let (reference, head) = if let Some(cm) = &sink.config_map {
        let ns = cm.namespace.as_deref().unwrap_or("lattice-system");
        write_config_map(
            client,
            &name,
            ns,
            &cm.name,
            &renderings,
            anchored.as_ref(),
            sinks.signer.as_deref(),
        )
        .await?
    } else if let Some(claim) = &sink.volume_claim {
        let root = sinks.evidence_root.as_ref().ok_or_else(|| {
            "the profile writes to a volume claim, but the operator runs without --evidence-root".to_owned()
        })?;
        let dir = root.join(&claim.name);
        let report_for_log = report.clone();
        let signer = sinks.signer.clone();
        let appended = tokio::task::spawn_blocking(move || {
            append_anchored(
                &dir,
                &report_for_log,
                &renderings,
                anchored,
                signer.as_deref(),
            )
        })
        .await
        .map_err(|e| e.to_string())??;
        (
            format!("{} (run {})", appended.dir.display(), appended.seq),
            Head {
                digest: appended.digest,
                seq: appended.seq,
            },
        )
    } else if sink.s3.is_some() {
        return Err(
            "the S3 sink is not supported by this operator build; use configMap or volumeClaim"
                .into(),
        );
    } else {
        return Err("the profile names no evidence sink".into());
    };
    write_head(client, &sinks.namespace, &name, &reference, &head).await?;
    Ok((report, reference, head))
}

/// Appends to the log in `dir` when its newest record is the anchored head (or nothing is
/// anchored yet and the log is new or intact).
fn append_anchored(
    dir: &std::path::Path,
    report: &ScanReport,
    renderings: &[(String, Vec<u8>)],
    anchored: Option<Head>,
    signer: Option<&Signer>,
) -> Result<evidence::Appended, String> {
    let options = VerifyOptions {
        expected_head: anchored.as_ref().map(|h| h.digest.as_str()),
        trusted_keys: &[],
    };
    match (evidence::verify(dir, &options), &anchored) {
        // Nothing anchored and nothing written yet: a new log. (With an anchor, a missing
        // log is tampering, not empty.)
        (Ok(_), _) | (Err(VerifyError::Empty(_)), _) => {}
        (Err(VerifyError::Tampered { problems, .. }), _) => {
            return Err(format!(
                "the evidence log in {} does not verify against its anchored head: {}",
                dir.display(),
                joined(&problems)
            ));
        }
        (Err(e), _) => return Err(e.to_string()),
    }
    evidence::append(dir, report, renderings, signer).map_err(|e| e.to_string())
}

/// What verification found, for a status message.
fn joined(problems: &[evidence::Tamper]) -> String {
    problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The name of the ConfigMap anchoring `profile`'s head.
pub fn head_config_map(profile: &str) -> String {
    format!("{HEAD_PREFIX}{profile}")
}

/// The head anchored for `profile`, if any.
async fn read_head(
    client: &Client,
    namespace: &str,
    profile: &str,
) -> Result<Option<Head>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = head_config_map(profile);
    let Some(cm) = api
        .get_opt(&name)
        .await
        .map_err(|e| format!("cannot read the anchored head {namespace}/{name}: {e}"))?
    else {
        return Ok(None);
    };
    let data = cm.data.unwrap_or_default();
    let digest = data.get("head").cloned();
    let seq = data.get("seq").and_then(|s| s.parse().ok());
    match (digest, seq) {
        (Some(digest), Some(seq)) => Ok(Some(Head { digest, seq })),
        // An anchor that does not read is no anchor to trust, and no reason to start over.
        _ => Err(format!(
            "the anchored head {namespace}/{name} has no readable `head` and `seq`: it was edited"
        )),
    }
}

async fn write_head(
    client: &Client,
    namespace: &str,
    profile: &str,
    reference: &str,
    head: &Head,
) -> Result<(), String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = head_config_map(profile);
    let body = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": name, "namespace": namespace,
            // Not the profile label: the head is no run of a ConfigMap sink in the same namespace.
            "labels": {"lattice.dev/evidence-head-of": profile, "app.kubernetes.io/managed-by": MANAGER},
        },
        "data": {"profile": profile, "head": head.digest, "seq": head.seq.to_string(), "evidence": reference},
    });
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(|e| format!("evidence written to {reference}, but its head could not be anchored in {namespace}/{name}: {e}"))?;
    Ok(())
}

/// The runs of a ConfigMap sink as the chain verifier reads them.
pub fn runs_of(config_maps: &[ConfigMap]) -> Vec<Run> {
    config_maps
        .iter()
        .map(|cm| {
            Run::from_object(
                cm.metadata.name.as_deref().unwrap_or_default(),
                &cm.metadata.annotations.clone().unwrap_or_default(),
                cm.data.clone().unwrap_or_default(),
            )
        })
        .collect()
}

async fn write_config_map(
    client: &Client,
    profile: &str,
    namespace: &str,
    base: &str,
    renderings: &[(String, Vec<u8>)],
    anchored: Option<&Head>,
    signer: Option<&Signer>,
) -> Result<(String, Head), String> {
    let size: usize = renderings.iter().map(|(_, b)| b.len()).sum();
    if size > CONFIG_MAP_LIMIT {
        return Err(format!(
            "the evidence is {size} bytes, more than a ConfigMap holds (1 MiB); use a volumeClaim sink"
        ));
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let listed = api
        .list(&ListParams::default().labels(&format!("{PROFILE_LABEL}={profile}")))
        .await
        .map_err(|e| format!("cannot list earlier runs in {namespace}: {e}"))?;
    let runs = runs_of(&listed.items);
    let options = VerifyOptions {
        expected_head: anchored.map(|h| h.digest.as_str()),
        trusted_keys: &[],
    };
    // The newest run must be the anchored one: a run deleted from the end is refused here,
    // never linked past.
    let (seq, previous) = match (verify_runs(&runs, &options), anchored) {
        (Ok(v), _) => (v.records + 1, v.head.unwrap_or_default()),
        (Err(VerifyError::Empty(_)), _) => (1, String::new()),
        (Err(VerifyError::Tampered { problems, .. }), _) => {
            return Err(format!(
                "the evidence runs in {namespace} do not verify against their anchored head: {}",
                joined(&problems)
            ));
        }
        (Err(e), _) => return Err(e.to_string()),
    };
    let data: BTreeMap<String, String> = renderings
        .iter()
        .map(|(file, bytes)| (file.clone(), String::from_utf8_lossy(bytes).into_owned()))
        .collect();
    let digest = run_digest(&previous, &data);
    let name = format!("{base}-{seq}");
    let mut annotations = json!({SEQ: seq.to_string(), DIGEST: digest, PREVIOUS: previous});
    if let Some(signer) = signer {
        annotations[SIGNATURE] = Value::from(sign_run(signer, &digest));
    }
    let body = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {PROFILE_LABEL: profile, "app.kubernetes.io/managed-by": MANAGER},
            "annotations": annotations,
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
    Ok((
        format!("configmap/{namespace}/{name}"),
        Head { digest, seq },
    ))
}

fn summary(
    outcome: Outcome,
    generation: Option<i64>,
    previous: &Value,
    now: jiff::Timestamp,
) -> ComplianceStatus {
    let previous_status = previous;
    let previous = previous_conditions(previous);
    let stamp = now.to_string();
    let condition =
        |ok: bool, reason: &str, message: String| condition("Scanned", ok, reason, message);
    match outcome {
        Ok((report, reference, head)) => {
            let (mut pass, mut fail, mut na, mut partial) = (0, 0, 0, 0);
            for f in &report.frameworks {
                // A control satisfied by an approved exception passes (the report's
                // register says by which).
                pass += f.control_tally.pass + f.control_tally.pass_with_exception;
                fail += f.control_tally.fail;
                na += f.control_tally.not_applicable;
                partial += f.control_tally.partially_evidenced;
            }
            let n = |x: usize| Some(i32::try_from(x).unwrap_or(i32::MAX));
            ComplianceStatus {
                last_scan_time: Some(stamp.clone()),
                passed: n(pass),
                failed: n(fail),
                not_applicable: n(na),
                partially_evidenced: n(partial),
                last_recorded_time: Some(stamp.clone()),
                snapshot_digest: Some(report.snapshot_digest.clone()),
                evidence_ref: Some(reference.clone()),
                evidence_head: Some(head.digest.clone()),
                evidence_seq: Some(i64::try_from(head.seq).unwrap_or(i64::MAX)),
                conditions: transitions(
                    &previous,
                    vec![condition(
                        true,
                        "EvidenceWritten",
                        format!(
                            "controls: {pass} passed, {partial} partially evidenced, {fail} failed, {na} not applicable; evidence in {reference}"
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
            // The head stays what was last anchored: no run was added.
            evidence_head: previous_status
                .get("evidenceHead")
                .and_then(Value::as_str)
                .map(str::to_owned),
            evidence_seq: previous_status.get("evidenceSeq").and_then(Value::as_i64),
            last_recorded_time: previous_status
                .get("lastRecordedTime")
                .and_then(Value::as_str)
                .map(str::to_owned),
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
