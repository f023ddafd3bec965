//! Status as users read it (`kubectl get`/`describe`): phase, `Ready` and `Authorized`
//! conditions, denied gates, and the generation and snapshot they were computed from. Pure;
//! a condition keeps its transition time until its status changes.

use lattice_schemas::crd::policy::CedarPolicyStatus;
use lattice_schemas::crd::service::WorkloadStatus;
use lattice_schemas::crd::{Condition, ConditionStatus};
use serde_json::Value;

use super::index::PolicyOutcome;
use super::plan::{Desired, Verdict};

/// How applying a workload's objects went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Everything derived is applied; `removed` objects no longer derived were deleted.
    Applied { objects: usize, removed: usize },
    /// The cluster refused or could not be reached; it is retried with backoff.
    Failed(String),
}

/// A workload's status after a reconcile.
pub fn workload_status(
    desired: &Desired,
    effect: &Effect,
    snapshot: &str,
    previous: &Value,
    now: &str,
) -> WorkloadStatus {
    let generation = desired.generation;
    let (phase, authorized, ready) = match (&desired.verdict, effect) {
        (Verdict::Denied(gates), effect) => {
            let list: Vec<String> = gates
                .iter()
                .map(|g| {
                    let by = if g.policies.is_empty() {
                        "no permit".to_owned()
                    } else {
                        g.policies.join(", ")
                    };
                    let advice = g.advice.as_deref().unwrap_or("");
                    format!(
                        "{} {} (raised by {}): {by}. {advice}",
                        g.action, g.resource, g.raised_by
                    )
                })
                .collect();
            let removed = match effect {
                Effect::Applied { removed, .. } => {
                    format!("nothing is derived; {removed} object(s) it had were removed")
                }
                Effect::Failed(e) => {
                    format!("nothing is derived; removing what it had failed: {e}")
                }
            };
            (
                "Denied",
                condition(
                    "Authorized",
                    false,
                    "GatesDenied",
                    format!("{} gate(s) denied: {}", gates.len(), list.join("; ")),
                ),
                condition("Ready", false, "Denied", removed),
            )
        }
        (Verdict::Failed(reason), _) => (
            "Failed",
            allowed(),
            condition("Ready", false, "DerivationFailed", reason.clone()),
        ),
        (Verdict::Authorized, Effect::Applied { objects, removed }) => (
            "Ready",
            allowed(),
            condition(
                "Ready",
                true,
                "Applied",
                format!("{objects} object(s) applied, {removed} no longer derived removed"),
            ),
        ),
        (Verdict::Authorized, Effect::Failed(e)) => (
            "Failed",
            allowed(),
            condition("Ready", false, "ApplyFailed", e.clone()),
        ),
    };
    let previous = previous_conditions(previous);
    WorkloadStatus {
        phase: Some(phase.into()),
        conditions: transitions(&previous, vec![ready, authorized], generation, now),
        observed_generation: generation,
        denied_gates: match &desired.verdict {
            Verdict::Denied(g) => g.clone(),
            _ => Vec::new(),
        },
        snapshot_digest: Some(snapshot.to_owned()),
    }
}

/// A CedarPolicy's status.
pub fn policy_status(
    outcome: &PolicyOutcome,
    generation: Option<i64>,
    previous: &Value,
    now: &str,
) -> CedarPolicyStatus {
    let previous = previous_conditions(previous);
    let count = |n: usize| Some(i32::try_from(n).unwrap_or(i32::MAX));
    match outcome {
        PolicyOutcome::Accepted { permits, forbids } => CedarPolicyStatus {
            phase: Some("Accepted".into()),
            policy_count: count(permits + forbids),
            permit_count: count(*permits),
            forbid_count: count(*forbids),
            errors: Vec::new(),
            conditions: transitions(
                &previous,
                vec![condition(
                    "Accepted",
                    true,
                    "Valid",
                    format!("{permits} permit(s) and {forbids} forbid(s) in force"),
                )],
                generation,
                now,
            ),
            observed_generation: generation,
        },
        PolicyOutcome::Rejected { errors } => CedarPolicyStatus {
            phase: Some("Rejected".into()),
            errors: errors.clone(),
            conditions: transitions(
                &previous,
                vec![condition(
                    "Accepted",
                    false,
                    "Invalid",
                    format!(
                        "{} error(s); the version accepted before, if any, stays in force",
                        errors.len()
                    ),
                )],
                generation,
                now,
            ),
            observed_generation: generation,
            ..CedarPolicyStatus::default()
        },
    }
}

fn allowed() -> Condition {
    condition(
        "Authorized",
        true,
        "AllGatesAllowed",
        "every derivation gate allowed".into(),
    )
}

/// The conditions of a status as last seen (none when absent or unreadable).
pub fn previous_conditions(status: &Value) -> Vec<Condition> {
    status
        .get("conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

/// A condition without its times (see [`transitions`]).
pub fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: None,
        observed_generation: None,
    }
}

/// Stamps each condition with `now`, or with its previous time when its status is unchanged.
pub fn transitions(
    previous: &[Condition],
    next: Vec<Condition>,
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    next.into_iter()
        .map(|mut c| {
            let kept = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .and_then(|p| p.last_transition_time.clone());
            c.last_transition_time = Some(kept.unwrap_or_else(|| now.to_owned()));
            c.observed_generation = generation;
            c
        })
        .collect()
}

/// A LatticeQuota's status: the usage of every workload it covers (from the ledger the plan
/// decided with) and the workloads whose `ConsumeQuota` for it was refused.
pub fn quota_status(
    name: &str,
    ledger: &lattice_engine::quota::Ledger,
    plan: &super::plan::Plan,
) -> lattice_schemas::crd::quota::QuotaStatus {
    use lattice_engine::quota::decimal_text;
    let mut usage = std::collections::BTreeMap::new();
    if let Some(u) = ledger.usage(name) {
        // Whole units read as Kubernetes writes them; fractions keep their decimals.
        let units = |v: i64| {
            let t = decimal_text(v);
            match t.trim_end_matches('0').trim_end_matches('.') {
                "" | "-" => "0".to_owned(),
                whole => whole.to_owned(),
            }
        };
        usage.insert("cpu".to_owned(), units(u.cpu));
        usage.insert("memory".to_owned(), format!("{}Mi", units(u.memory_mib)));
        usage.insert("nvidia.com/gpu".to_owned(), units(u.gpu));
        usage.insert("workloads".to_owned(), units(u.workloads));
    }
    let raised_by = format!("quota {name}");
    let refused = plan
        .workloads
        .iter()
        .filter(|(_, d)| match &d.verdict {
            Verdict::Denied(gates) => gates
                .iter()
                .any(|g| g.action == "ConsumeQuota" && g.raised_by == raised_by),
            _ => false,
        })
        .map(|(owner, _)| format!("{}/{}", owner.namespace, owner.name))
        .collect();
    lattice_schemas::crd::quota::QuotaStatus {
        phase: Some("Ready".to_owned()),
        usage,
        refused,
        conditions: Vec::new(),
        observed_generation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_time_until_its_status_changes() {
        let first = transitions(
            &[],
            vec![condition("Ready", true, "Applied", "ok".into())],
            Some(1),
            "2026-01-01T00:00:00Z",
        );
        let same = transitions(
            &first,
            vec![condition("Ready", true, "Applied", "still ok".into())],
            Some(2),
            "2026-01-02T00:00:00Z",
        );
        assert_eq!(
            same[0].last_transition_time.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = transitions(
            &same,
            vec![condition("Ready", false, "Denied", "no".into())],
            Some(3),
            "2026-01-03T00:00:00Z",
        );
        assert_eq!(
            flipped[0].last_transition_time.as_deref(),
            Some("2026-01-03T00:00:00Z")
        );
    }
}
