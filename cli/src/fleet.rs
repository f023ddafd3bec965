//! The fleet as one API server knows it, with no I/O: its LatticeCluster objects, and the
//! clusters below its children that their status reports (`status.descendants`, written by
//! this cluster's cell from each child's heartbeats). What `lattice get` prints is computed
//! here from those and a fixed `now`, so every view is tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};

use lattice_schemas::crd::cluster::{ClusterHealth, LatticeCluster};
use serde_json::{Value, json};

/// One cluster of the fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    /// The cluster directly above it; none for a root.
    pub parent: Option<String>,
    pub phase: String,
    /// `aws`, `proxmox`, `openstack`, `docker`; unknown for a cluster seen only through
    /// its parent's report.
    pub provider: Option<String>,
    /// The version the spec asks for, else the one its agent reports.
    pub kubernetes: Option<String>,
    pub control_plane: Option<i32>,
    /// Workers: the fixed count, or `min-max` for autoscaled pools.
    pub workers: Option<String>,
    pub environment: Option<String>,
    pub agent_connected: Option<bool>,
    pub health: Option<ClusterHealth>,
    pub created: Option<jiff::Timestamp>,
    /// Whether it holds its own Cluster API objects.
    pub pivoted: bool,
    /// Known only from a parent's report, not as an object on this server.
    pub reported: bool,
}

/// A cluster's place in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// No cluster above it.
    Root,
    /// It manages clusters below it.
    Parent,
    /// It manages none.
    Leaf,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Parent => "parent",
            Role::Leaf => "leaf",
        }
    }
}

/// The fleet: every cluster by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fleet {
    pub members: BTreeMap<String, Member>,
}

impl Fleet {
    /// The fleet of `clusters` (the objects on the server) and what their status reports
    /// below them. An object wins over a report of the same cluster.
    pub fn of(clusters: &[LatticeCluster]) -> Fleet {
        let mut members = BTreeMap::new();
        for c in clusters {
            let Some(name) = c.metadata.name.clone() else {
                continue;
            };
            let status = c.status.clone().unwrap_or_default();
            let pools = &c.spec.nodes.worker_pools;
            let fixed: i32 = pools.values().map(|p| p.replicas).sum();
            let autoscaled = pools.values().any(|p| p.min.is_some() || p.max.is_some());
            let workers = if autoscaled {
                let min: i32 = pools.values().map(|p| p.min.unwrap_or(p.replicas)).sum();
                let max: i32 = pools
                    .values()
                    .map(|p| p.max.unwrap_or(p.replicas).max(p.replicas))
                    .sum();
                format!("{min}-{max}")
            } else {
                fixed.to_string()
            };
            members.insert(
                name.clone(),
                Member {
                    name,
                    parent: c.spec.parent.clone(),
                    phase: status.phase.clone().unwrap_or_else(|| "Pending".into()),
                    provider: c.spec.provider.config.name().map(str::to_owned),
                    kubernetes: Some(c.spec.provider.kubernetes.version.clone()),
                    control_plane: Some(c.spec.nodes.control_plane),
                    workers: Some(workers),
                    environment: c.spec.environment.clone(),
                    agent_connected: status.agent_connected,
                    health: status.health.clone(),
                    created: c.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    pivoted: status.pivoted.unwrap_or(false),
                    reported: false,
                },
            );
        }
        for c in clusters {
            for d in c.status.iter().flat_map(|s| &s.descendants) {
                if members.contains_key(&d.name) {
                    continue;
                }
                members.insert(
                    d.name.clone(),
                    Member {
                        name: d.name.clone(),
                        parent: Some(d.parent.clone()),
                        phase: if d.phase.is_empty() {
                            "Unknown".into()
                        } else {
                            d.phase.clone()
                        },
                        provider: None,
                        kubernetes: (!d.health.kubernetes_version.is_empty())
                            .then(|| d.health.kubernetes_version.clone()),
                        control_plane: None,
                        workers: None,
                        environment: (!d.environment.is_empty()).then(|| d.environment.clone()),
                        agent_connected: Some(d.agent_connected),
                        health: Some(d.health.clone()),
                        created: None,
                        pivoted: false,
                        reported: true,
                    },
                );
            }
        }
        Fleet { members }
    }

    /// `name`'s place in the tree.
    pub fn role(&self, name: &str) -> Role {
        let member = &self.members[name];
        let parent_known = member
            .parent
            .as_ref()
            .is_some_and(|p| self.members.contains_key(p));
        if member.parent.is_none() {
            Role::Root
        } else if self
            .members
            .values()
            .any(|m| m.parent.as_deref() == Some(name))
        {
            Role::Parent
        } else if !parent_known {
            // Its parent is not on this server: to this view it is a root.
            Role::Root
        } else {
            Role::Leaf
        }
    }

    /// The tree: each top cluster (no parent, or a parent this server does not know) and
    /// what is below it, children by name.
    pub fn tree(&self) -> String {
        let mut children: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut tops = BTreeSet::new();
        for m in self.members.values() {
            match m.parent.as_deref() {
                Some(p) if self.members.contains_key(p) && p != m.name => {
                    children.entry(p).or_default().insert(&m.name);
                }
                _ => {
                    tops.insert(m.name.as_str());
                }
            }
        }
        let mut out = String::new();
        let mut seen = BTreeSet::new();
        for top in tops {
            self.branch(top, "", None, &children, &mut seen, &mut out);
        }
        // A cycle of parents has no top; show it rather than lose it.
        for name in self.members.keys() {
            if !seen.contains(name.as_str()) {
                self.branch(name, "", None, &children, &mut seen, &mut out);
            }
        }
        out
    }

    fn branch<'a>(
        &'a self,
        name: &'a str,
        prefix: &str,
        last: Option<bool>,
        children: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        seen: &mut BTreeSet<&'a str>,
        out: &mut String,
    ) {
        let m = &self.members[name];
        let connector = match last {
            None => "",
            Some(true) => "└── ",
            Some(false) => "├── ",
        };
        let mut facts = vec![m.phase.clone()];
        if let Some(p) = &m.provider {
            facts.push(p.clone());
        }
        if let Some(e) = &m.environment {
            facts.push(e.clone());
        }
        if m.agent_connected == Some(false) && m.parent.is_some() {
            facts.push("agent disconnected".into());
        }
        out.push_str(&format!(
            "{prefix}{connector}{name} ({})\n",
            facts.join(", ")
        ));
        if !seen.insert(name) {
            return;
        }
        let below: Vec<&&str> = children.get(name).into_iter().flatten().collect();
        let deeper = match last {
            None => prefix.to_owned(),
            Some(true) => format!("{prefix}    "),
            Some(false) => format!("{prefix}│   "),
        };
        for (i, child) in below.iter().enumerate() {
            self.branch(
                child,
                &deeper,
                Some(i + 1 == below.len()),
                children,
                seen,
                out,
            );
        }
    }

    /// The rows of `get clusters`: NAME PHASE PROVIDER K8S CP WORKERS ROLE AGE.
    pub fn cluster_rows(&self, now: jiff::Timestamp) -> Vec<[String; 8]> {
        self.members
            .values()
            .map(|m| {
                [
                    m.name.clone(),
                    m.phase.clone(),
                    dash(m.provider.clone()),
                    dash(m.kubernetes.clone()),
                    dash(m.control_plane.map(|c| c.to_string())),
                    dash(m.workers.clone()),
                    self.role(&m.name).as_str().to_owned(),
                    dash(m.created.map(|t| age(now, t))),
                ]
            })
            .collect()
    }

    /// The rows of `get health`: NAME AGENT NODES CONTROL-PLANE K8S AGENT-VERSION HEARTBEAT.
    pub fn health_rows(&self, now: jiff::Timestamp) -> Vec<[String; 7]> {
        self.members
            .values()
            .map(|m| {
                let h = m.health.as_ref();
                let agent = match (m.parent.is_some(), m.agent_connected) {
                    (false, _) => "-".to_owned(),
                    (true, Some(true)) => "connected".to_owned(),
                    (true, _) => "disconnected".to_owned(),
                };
                [
                    m.name.clone(),
                    agent,
                    dash(h.map(|h| format!("{}/{}", h.nodes_ready, h.nodes_total))),
                    dash(h.map(|h| {
                        if h.control_plane_ready {
                            "ready".to_owned()
                        } else {
                            "not ready".to_owned()
                        }
                    })),
                    dash(
                        h.map(|h| h.kubernetes_version.clone())
                            .filter(|v| !v.is_empty()),
                    ),
                    dash(h.map(|h| h.agent_version.clone()).filter(|v| !v.is_empty())),
                    dash(
                        h.and_then(|h| h.last_heartbeat_time.as_deref())
                            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                            .map(|t| format!("{} ago", age(now, t))),
                    ),
                ]
            })
            .collect()
    }

    /// A member as JSON, for `-o json` and `-o yaml`.
    pub fn member_json(&self, m: &Member) -> Value {
        json!({
            "name": m.name,
            "parent": m.parent,
            "role": self.role(&m.name).as_str(),
            "phase": m.phase,
            "provider": m.provider,
            "kubernetesVersion": m.kubernetes,
            "controlPlane": m.control_plane,
            "workers": m.workers,
            "environment": m.environment,
            "agentConnected": m.agent_connected,
            "pivoted": m.pivoted,
            "health": m.health.as_ref().map(|h| serde_json::to_value(h).unwrap_or(Value::Null)),
            "creationTimestamp": m.created.map(|t| t.to_string()),
            "reportedByParent": m.reported,
        })
    }
}

fn dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

/// An age as kubectl prints it: `45s`, `12m`, `5h`, `3d`.
pub fn age(now: jiff::Timestamp, then: jiff::Timestamp) -> String {
    let secs = now.duration_since(then).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml_json: Value) -> LatticeCluster {
        serde_json::from_value(yaml_json).unwrap()
    }

    fn lc(name: &str, parent: Option<&str>, phase: &str, created: &str) -> LatticeCluster {
        cluster(json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeCluster",
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"providerRef": "p", "parent": parent,
                     "provider": {"kubernetes": {"version": "1.32.0"}, "config": {"docker": {}}},
                     "nodes": {"controlPlane": 1, "workerPools": {"a": {"replicas": 2}, "b": {"replicas": 1, "min": 1, "max": 4}}}},
            "status": {"phase": phase, "agentConnected": parent.is_some(),
                       "health": {"nodesReady": 3, "nodesTotal": 3, "controlPlaneReady": true,
                                  "kubernetesVersion": "v1.32.0", "agentVersion": "0.1.0",
                                  "lastHeartbeatTime": "2026-12-03T11:59:55Z"},
                       "descendants": if name == "edge" {
                           json!([{"name": "leaf", "parent": "edge", "environment": "lab", "phase": "Ready", "ready": true,
                                   "agentConnected": false, "health": {"nodesReady": 1, "nodesTotal": 2, "controlPlaneReady": false}}])
                       } else { json!([]) }},
        }))
    }

    fn now() -> jiff::Timestamp {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn the_fleet_merges_objects_and_what_parents_report_below() {
        let fleet = Fleet::of(&[
            lc("root", None, "Ready", "2026-11-30T12:00:00Z"),
            lc("edge", Some("root"), "Ready", "2026-12-03T09:00:00Z"),
            lc("lab", Some("root"), "Provisioning", "2026-12-03T11:58:30Z"),
        ]);
        let rows = fleet.cluster_rows(now());
        let text: Vec<String> = rows.iter().map(|r| r.join(" ")).collect();
        assert_eq!(
            text,
            [
                "edge Ready docker 1.32.0 1 3-6 parent 3h",
                "lab Provisioning docker 1.32.0 1 3-6 leaf 90s",
                "leaf Ready - - - - leaf -",
                "root Ready docker 1.32.0 1 3-6 root 3d",
            ]
        );
        assert_eq!(
            fleet.tree(),
            "root (Ready, docker)\n├── edge (Ready, docker)\n│   └── leaf (Ready, lab, agent disconnected)\n└── lab (Provisioning, docker)\n"
        );
        let health: Vec<String> = fleet
            .health_rows(now())
            .iter()
            .map(|r| r.join(" "))
            .collect();
        assert_eq!(health[0], "edge connected 3/3 ready v1.32.0 0.1.0 5s ago");
        assert_eq!(health[2], "leaf disconnected 1/2 not ready - - -");
        assert_eq!(health[3], "root - 3/3 ready v1.32.0 0.1.0 5s ago");
    }

    #[test]
    fn a_server_that_holds_only_children_shows_them_as_tops_and_cycles_are_not_lost() {
        let fleet = Fleet::of(&[
            lc("a", Some("b"), "Ready", "2026-12-03T11:00:00Z"),
            lc("b", Some("a"), "Ready", "2026-12-03T11:00:00Z"),
            lc("orphan", Some("gone"), "Ready", "2026-12-03T11:00:00Z"),
        ]);
        let tree = fleet.tree();
        assert!(tree.contains("orphan (Ready, docker)\n"), "{tree}");
        assert!(
            tree.contains("a (Ready, docker)") && tree.contains("b (Ready, docker)"),
            "{tree}"
        );
        assert_eq!(fleet.role("orphan"), Role::Root);
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(age(now(), t("2026-12-03T11:59:15Z")), "45s");
        assert_eq!(age(now(), t("2026-12-03T11:48:00Z")), "12m");
        assert_eq!(age(now(), t("2026-12-03T07:00:00Z")), "5h");
        assert_eq!(age(now(), t("2026-11-30T12:00:00Z")), "3d");
        assert_eq!(age(now(), t("2026-12-04T12:00:00Z")), "0s", "clock skew");
    }
}
