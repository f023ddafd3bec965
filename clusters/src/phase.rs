//! A LatticeCluster's phase and conditions, read from the status of its CAPI `Cluster`
//! (v1beta2: `status.phase`, `status.initialization`, `status.conditions`) and from what
//! the platform itself knows (the agent's tunnel, the pivot).
//!
//! | phase | when |
//! |---|---|
//! | `Pending` | no CAPI `Cluster` yet (nothing provisioned, or `Provision` denied) |
//! | `Provisioning` | CAPI provisions: infrastructure, control plane, or the agent has not dialled in |
//! | `Pivoting` | the control plane is available and the agent connected; the move has not completed (the provisioning controller shows `Provisioning` while `Pivot` is denied) |
//! | `Ready` | pivoted: the cluster manages its own CAPI objects |
//! | `Failed` | CAPI reports `Failed` |
//! | `Deleting` | the LatticeCluster or its CAPI `Cluster` is being deleted |

use serde_json::Value;

/// The phases of a LatticeCluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Provisioning,
    Pivoting,
    Ready,
    Failed,
    Deleting,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Pivoting => "Pivoting",
            Phase::Ready => "Ready",
            Phase::Failed => "Failed",
            Phase::Deleting => "Deleting",
        }
    }
}

/// What the phase is read from.
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    /// The CAPI `Cluster`, where it exists (on the managing cluster, or on the cluster
    /// itself once pivoted).
    pub capi_cluster: Option<&'a Value>,
    /// The LatticeCluster is being deleted.
    pub deleting: bool,
    /// The cluster's agent holds its tunnel to the parent.
    pub agent_connected: bool,
    /// The cluster manages its own CAPI objects.
    pub pivoted: bool,
}

/// A condition as the LatticeCluster's status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    pub reason: String,
}

/// The phase and conditions of what was `observed`.
pub fn read(observed: &Observed) -> (Phase, Vec<Condition>) {
    let capi = observed.capi_cluster;
    let capi_condition = |wanted: &str| -> Option<bool> {
        capi?["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == wanted)
            .and_then(|c| match c["status"].as_str() {
                Some("True") => Some(true),
                Some("False") => Some(false),
                _ => None,
            })
    };
    let initialized =
        |field: &str| -> Option<bool> { capi?["status"]["initialization"][field].as_bool() };
    let infrastructure =
        initialized("infrastructureProvisioned").or_else(|| capi_condition("InfrastructureReady"));
    let control_plane =
        capi_condition("ControlPlaneAvailable").or_else(|| initialized("controlPlaneInitialized"));
    let capi_phase = capi.and_then(|c| c["status"]["phase"].as_str());
    let capi_deleting = capi.is_some_and(|c| !c["metadata"]["deletionTimestamp"].is_null());
    let tri = |v: Option<bool>| match v {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    };
    let conditions = vec![
        Condition {
            type_: "InfrastructureReady",
            status: tri(infrastructure),
            reason: "FromClusterAPI".into(),
        },
        Condition {
            type_: "ControlPlaneAvailable",
            status: tri(control_plane),
            reason: "FromClusterAPI".into(),
        },
        Condition {
            type_: "AgentConnected",
            status: tri(Some(observed.agent_connected)),
            reason: if observed.agent_connected {
                "TunnelUp".into()
            } else {
                "NoTunnel".into()
            },
        },
        Condition {
            type_: "Pivoted",
            status: tri(Some(observed.pivoted)),
            reason: if observed.pivoted {
                "SelfManaged".into()
            } else {
                "ManagedByParent".into()
            },
        },
    ];
    let phase = if observed.deleting || capi_deleting || capi_phase == Some("Deleting") {
        Phase::Deleting
    } else if capi_phase == Some("Failed") {
        Phase::Failed
    } else if observed.pivoted {
        Phase::Ready
    } else if capi.is_none() {
        Phase::Pending
    } else if control_plane == Some(true) && observed.agent_connected {
        Phase::Pivoting
    } else {
        Phase::Provisioning
    };
    (phase, conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn phase(capi: Option<Value>, agent: bool, pivoted: bool) -> Phase {
        read(&Observed {
            capi_cluster: capi.as_ref(),
            deleting: false,
            agent_connected: agent,
            pivoted,
        })
        .0
    }

    #[test]
    fn phases_follow_cluster_api() {
        assert_eq!(phase(None, false, false), Phase::Pending);
        let provisioning = json!({"status": {"phase": "Provisioning", "initialization": {"infrastructureProvisioned": true}}});
        assert_eq!(phase(Some(provisioning), false, false), Phase::Provisioning);
        let available = json!({"status": {"phase": "Provisioned", "conditions": [{"type": "ControlPlaneAvailable", "status": "True"}]}});
        // The control plane is up but the agent has not dialled in: still provisioning.
        assert_eq!(
            phase(Some(available.clone()), false, false),
            Phase::Provisioning
        );
        assert_eq!(phase(Some(available.clone()), true, false), Phase::Pivoting);
        assert_eq!(phase(Some(available), true, true), Phase::Ready);
        assert_eq!(
            phase(Some(json!({"status": {"phase": "Failed"}})), true, false),
            Phase::Failed
        );
        let deleting = json!({"metadata": {"deletionTimestamp": "2026-12-03T00:00:00Z"}, "status": {"phase": "Provisioned"}});
        assert_eq!(phase(Some(deleting), true, true), Phase::Deleting);
    }

    #[test]
    fn conditions_say_unknown_until_cluster_api_says() {
        let (_, conditions) = read(&Observed::default());
        let infra = conditions
            .iter()
            .find(|c| c.type_ == "InfrastructureReady")
            .unwrap();
        assert_eq!(infra.status, "Unknown");
        let capi =
            json!({"status": {"conditions": [{"type": "InfrastructureReady", "status": "False"}]}});
        let (_, conditions) = read(&Observed {
            capi_cluster: Some(&capi),
            ..Default::default()
        });
        assert_eq!(conditions[0].status, "False");
    }
}
