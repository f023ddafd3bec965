//! The platform components a cluster's spec asks it to run, as its status lists them.
//!
//! | spec | components |
//! |---|---|
//! | always | `lattice-agent` (the tunnel to the parent), `cilium` (the CNI and L4 policy) |
//! | `parentConfig` | `lattice-cell` (children dial it) |
//! | `services` (default on) | `istio` (ambient mesh), `lattice-operator` (the service controllers) |
//! | `monitoring` | `victoria-metrics` |
//! | `backups` | `velero` |
//! | `externalSecrets` | `external-secrets` |

use lattice_schemas::crd::cluster::LatticeClusterSpec;
use serde::Serialize;

/// One platform component and why the cluster runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Component {
    pub name: &'static str,
    /// The spec field that asks for it (`always` for what every cluster runs).
    pub because: &'static str,
}

/// The components `spec` asks for, in install order.
pub fn components(spec: &LatticeClusterSpec) -> Vec<Component> {
    let mut out = vec![
        Component {
            name: "cilium",
            because: "always",
        },
        Component {
            name: "lattice-agent",
            because: "always",
        },
    ];
    let mut when = |on: bool, name: &'static str, because: &'static str| {
        if on {
            out.push(Component { name, because });
        }
    };
    when(spec.parent_config.is_some(), "lattice-cell", "parentConfig");
    let services = spec.services.unwrap_or(true);
    when(services, "istio", "services");
    when(services, "lattice-operator", "services");
    when(
        spec.monitoring.unwrap_or(false),
        "victoria-metrics",
        "monitoring",
    );
    when(spec.backups.unwrap_or(false), "velero", "backups");
    when(
        spec.external_secrets.unwrap_or(false),
        "external-secrets",
        "externalSecrets",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &LatticeClusterSpec) -> Vec<&'static str> {
        components(spec).into_iter().map(|c| c.name).collect()
    }

    #[test]
    fn the_spec_decides_the_components() {
        let mut spec = LatticeClusterSpec::default();
        assert_eq!(
            names(&spec),
            ["cilium", "lattice-agent", "istio", "lattice-operator"]
        );
        spec.services = Some(false);
        spec.backups = Some(true);
        spec.monitoring = Some(true);
        spec.external_secrets = Some(true);
        spec.parent_config = Some(Default::default());
        assert_eq!(
            names(&spec),
            [
                "cilium",
                "lattice-agent",
                "lattice-cell",
                "victoria-metrics",
                "velero",
                "external-secrets"
            ]
        );
    }
}
