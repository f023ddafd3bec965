//! `LatticeComplianceProfile`: scheduled compliance scans and where their evidence goes.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, ObjectRef};

/// Which frameworks to scan, how often, and where to keep the evidence.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "LatticeComplianceProfile",
    status = "ComplianceStatus",
    shortname = "lcp",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "A schedule of compliance scans and the sink for their evidence.",
    printcolumn(name = "Frameworks", type_ = "string", json_path = ".spec.frameworks"),
    printcolumn(name = "Passed", type_ = "integer", json_path = ".status.passed"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(name = "Last Scan", type_ = "date", json_path = ".status.lastScanTime")
)]
#[serde(rename_all = "camelCase")]
pub struct LatticeComplianceProfileSpec {
    /// `nist-800-53`, `soc2`, `cis-kubernetes`, `pod-security`.
    #[schemars(length(min = 1))]
    pub frameworks: Vec<String>,
    /// Time between scans, a duration such as `24h`.
    pub scan_interval: String,
    /// Restrict the scan to these namespaces (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Evidence formats to produce: `oscal`, `oscal-ap` (the assessment plan the OSCAL
    /// results import), `markdown`, `html`, `csv`, `junit`, `sarif`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formats: Vec<String>,
    /// Report NIST SP 800-53 against this rev5 baseline: every control of it is listed,
    /// assessed by Lattice or not, with a coverage summary. Needs `nist-800-53` among the
    /// frameworks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<NistBaseline>,
    pub evidence_sink: EvidenceSink,
}

/// A NIST SP 800-53 rev5 security control baseline (SP 800-53B).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NistBaseline {
    Low,
    Moderate,
    High,
}

/// Where evidence is written; exactly one sink is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceSink {
    /// A ConfigMap per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ObjectRef>,
    /// A PersistentVolumeClaim holding the hash-chained evidence log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim: Option<ObjectRef>,
    /// An S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Sink>,
}

/// An S3-compatible bucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Sink {
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// A Secret with the access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<ObjectRef>,
}

/// The last scan's summary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_applicable: Option<i32>,
    /// Controls whose checks all pass but show only part of the control's objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partially_evidenced: Option<i32>,
    /// When the newest run's evidence was written: unlike `lastScanTime`, a failed scan
    /// leaves it as it was. The `scans-recorded` check (CA-7) reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recorded_time: Option<String>,
    /// Digest of the snapshot the scan ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_digest: Option<String>,
    /// Where the last evidence was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_ref: Option<String>,
    /// The digest of the newest evidence record or run: the head `compliance verify --head`
    /// compares against (also kept in the ConfigMap `lattice-evidence-head-<profile>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_head: Option<String>,
    /// The sequence number of the newest evidence record or run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
