//! `CedarPolicy`: policies as Kubernetes objects.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, EnforcementMode};

/// Cedar policies applied to the platform. Each policy needs a unique `@id`; its stable id
/// is `<namespace>/<name>/<id>`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "CedarPolicy",
    namespaced,
    status = "CedarPolicyStatus",
    shortname = "cp",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "Cedar policies that decide what workloads, users and clusters may do.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Policies",
        type_ = "integer",
        json_path = ".status.policyCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CedarPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Cedar policy text; every policy carries `@id("…")`.
    pub policies: String,
    /// Disabled policies stay stored but are not evaluated (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Apply to child clusters too (inherited down the cluster hierarchy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagate: Option<bool>,
    /// `enforce` (the default) decides; `audit` is evaluated and reported only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<EnforcementMode>,
    /// The end of an audit period: a date (`2026-12-31`, the end of that day in UTC) or an
    /// RFC 3339 time. An audit-mode policy past it, or without one, fails the compliance
    /// check that audit is a trial and not a way to leave a rule unenforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_until: Option<String>,
}

/// What the policy controller found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CedarPolicyStatus {
    /// `Accepted` or `Rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbid_count: Option<i32>,
    /// Each problem, with line and column in `spec.policies`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl CedarPolicySpec {
    /// When the audit period in `auditUntil` ends, if one is given.
    pub fn audit_deadline(&self) -> Option<Result<jiff::Timestamp, String>> {
        self.audit_until.as_deref().map(parse_deadline)
    }
}

/// A deadline: an RFC 3339 time, or a date meaning the end of that day in UTC.
pub fn parse_deadline(text: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let date: jiff::civil::Date = text
        .parse()
        .map_err(|_| format!("`{text}` is neither a date (`2026-12-31`) nor an RFC 3339 time"))?;
    date.tomorrow()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|z| z.timestamp())
        .map_err(|e| format!("`{text}`: {e}"))
}
