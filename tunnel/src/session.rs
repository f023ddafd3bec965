//! One agent's stream, as the cell sees it: a state machine over the messages it receives,
//! with no I/O, so that every rule of the protocol is checked in one place and can be
//! fuzzed. The first message is a `Hello` for the cluster the certificate names; after it,
//! heartbeats carry health, acks answer syncs, and results answer lifecycle commands.
//! Anything else (a message before `Hello`, a second `Hello`, an empty message, an answer
//! to a command never sent on this stream or already answered, an ack for a sync never
//! sent, health that cannot be true) is a [`ProtocolError`], which closes the stream with a
//! gRPC status before anything it carried is used.

use std::sync::Arc;

use lattice_proto::tunnel::v1 as pb;
use pb::agent_message::Body;

use crate::distribution::DistributedSet;
use crate::identity::ClusterIdentity;
pub use crate::violation::{ProtocolError, Violation};

/// The longest version string a heartbeat may carry.
pub const MAX_VERSION_BYTES: usize = 128;

/// The longest message a command result may carry.
pub const MAX_RESULT_BYTES: usize = 64 << 10;

/// The most clusters one agent may report below its own.
pub const MAX_DESCENDANTS: usize = 4096;

/// The longest environment or phase a descendant may carry.
pub const MAX_FACT_BYTES: usize = 63;

/// A cluster's health as its agent last reported it, with the clusters below it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub nodes_ready: u32,
    pub nodes_total: u32,
    pub control_plane_ready: bool,
    pub agent_version: String,
    pub kubernetes_version: String,
    /// The clusters below this one, parents before children (see [`Descendant`]).
    pub descendants: Vec<Descendant>,
}

/// A cluster below an agent's own, as its parent's cell knows it. The parent is the
/// agent's cluster or a descendant listed earlier, so the list is a tree rooted at the
/// agent: an agent can speak for nothing outside its own subtree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descendant {
    pub name: String,
    pub parent: String,
    pub environment: String,
    pub phase: String,
    pub ready: bool,
    pub agent_connected: bool,
    pub nodes_ready: u32,
    pub nodes_total: u32,
    pub control_plane_ready: bool,
    pub agent_version: String,
    pub kubernetes_version: String,
}

impl From<&Health> for pb::Health {
    fn from(h: &Health) -> pb::Health {
        pb::Health {
            nodes_ready: h.nodes_ready,
            nodes_total: h.nodes_total,
            control_plane_ready: h.control_plane_ready,
            agent_version: h.agent_version.clone(),
            kubernetes_version: h.kubernetes_version.clone(),
            descendants: h.descendants.iter().map(pb::Descendant::from).collect(),
        }
    }
}

impl From<&Descendant> for pb::Descendant {
    fn from(d: &Descendant) -> pb::Descendant {
        pb::Descendant {
            name: d.name.clone(),
            parent: d.parent.clone(),
            environment: d.environment.clone(),
            phase: d.phase.clone(),
            ready: d.ready,
            agent_connected: d.agent_connected,
            nodes_ready: d.nodes_ready,
            nodes_total: d.nodes_total,
            control_plane_ready: d.control_plane_ready,
            agent_version: d.agent_version.clone(),
            kubernetes_version: d.kubernetes_version.clone(),
        }
    }
}

fn invalid(message: String) -> ProtocolError {
    ProtocolError::new(Violation::InvalidArgument, message)
}

/// The descendants `reporter`'s agent sent, checked: names are cluster names, each once,
/// none is the reporter, every parent comes before its children, and every string is short
/// and printable.
fn descendants(
    reporter: &str,
    list: Vec<pb::Descendant>,
) -> Result<Vec<Descendant>, ProtocolError> {
    if list.len() > MAX_DESCENDANTS {
        return Err(invalid(format!(
            "{} descendants are more than the {MAX_DESCENDANTS} one agent may report",
            list.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    let mut out = Vec::with_capacity(list.len());
    for d in list {
        if !crate::identity::is_cluster_name(&d.name) {
            return Err(invalid(format!(
                "descendant {:?} is not a cluster name",
                d.name
            )));
        }
        if d.name == reporter || seen.contains(d.name.as_str()) {
            return Err(invalid(format!(
                "descendant {:?} is reported twice",
                d.name
            )));
        }
        if d.parent != reporter && !seen.contains(d.parent.as_str()) {
            return Err(invalid(format!(
                "descendant {:?} names parent {:?}, which is neither {reporter:?} nor a descendant listed before it",
                d.name, d.parent
            )));
        }
        if d.nodes_ready > d.nodes_total {
            return Err(invalid(format!(
                "descendant {:?}: {} of {} nodes cannot be ready",
                d.name, d.nodes_ready, d.nodes_total
            )));
        }
        for (field, value, max) in [
            ("environment", &d.environment, MAX_FACT_BYTES),
            ("phase", &d.phase, MAX_FACT_BYTES),
            ("agent_version", &d.agent_version, MAX_VERSION_BYTES),
            (
                "kubernetes_version",
                &d.kubernetes_version,
                MAX_VERSION_BYTES,
            ),
        ] {
            if value.len() > max || value.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "descendant {:?}: {field} is not a short printable string",
                    d.name
                )));
            }
        }
        seen.insert(d.name.clone());
        out.push(Descendant {
            name: d.name,
            parent: d.parent,
            environment: d.environment,
            phase: d.phase,
            ready: d.ready,
            agent_connected: d.agent_connected,
            nodes_ready: d.nodes_ready,
            nodes_total: d.nodes_total,
            control_plane_ready: d.control_plane_ready,
            agent_version: d.agent_version,
            kubernetes_version: d.kubernetes_version,
        });
    }
    Ok(out)
}

fn health(reporter: &str, h: Option<pb::Health>) -> Result<Health, ProtocolError> {
    let h = h.ok_or_else(|| ProtocolError::new(Violation::InvalidArgument, "health is missing"))?;
    if h.nodes_ready > h.nodes_total {
        return Err(ProtocolError::new(
            Violation::InvalidArgument,
            format!(
                "{} of {} nodes cannot be ready",
                h.nodes_ready, h.nodes_total
            ),
        ));
    }
    for (field, value) in [
        ("agent_version", &h.agent_version),
        ("kubernetes_version", &h.kubernetes_version),
    ] {
        if value.len() > MAX_VERSION_BYTES || value.chars().any(char::is_control) {
            return Err(ProtocolError::new(
                Violation::InvalidArgument,
                format!("{field} is not a version string"),
            ));
        }
    }
    Ok(Health {
        nodes_ready: h.nodes_ready,
        nodes_total: h.nodes_total,
        control_plane_ready: h.control_plane_ready,
        agent_version: h.agent_version,
        kubernetes_version: h.kubernetes_version,
        descendants: descendants(reporter, h.descendants)?,
    })
}

/// What a message told the cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The agent said hello: the stream is open.
    Opened(Health),
    /// A heartbeat: the agent is alive, and this is its cluster's health.
    Heartbeat(Health),
    /// The agent holds the set the cell last sent.
    Synced { revision: u64 },
    /// The agent holds something else: the cell sends the full set again.
    Diverged { revision: u64 },
    /// An ack for a sync a later one has already replaced.
    Superseded,
    /// The workloads of the agent's cluster that declare services in other clusters, all
    /// of them (checked by [`crate::peering::check_report`]).
    Mesh(pb::MeshReport),
    /// The agent's answer to a lifecycle command this stream sent (each is answered once).
    Answered(pb::CommandResult),
}

/// The cell's side of one agent's stream.
#[derive(Debug)]
pub struct CellSession {
    peer: ClusterIdentity,
    open: bool,
    /// The clusters the agent last reported below its own: the only others its mesh
    /// reports may speak for.
    below: std::collections::HashSet<String>,
    /// What the agent holds once it applies the last sync sent (shared with the cell and
    /// every other session: a session costs no copy of the set).
    sent: Option<Arc<DistributedSet>>,
    /// Whether that last sync was the full set.
    sent_full: bool,
    /// The revision whose full set came back with another digest: it is not sent again
    /// until the set changes, so a broken agent cannot loop the cell.
    full_failed_at: Option<u64>,
    /// Lifecycle commands sent on this stream and not answered yet.
    outstanding: std::collections::HashSet<String>,
}

impl CellSession {
    /// A stream opened by `peer` (the identity its certificate carries).
    pub fn new(peer: ClusterIdentity) -> CellSession {
        CellSession {
            peer,
            open: false,
            below: Default::default(),
            sent: None,
            sent_full: false,
            full_failed_at: None,
            outstanding: Default::default(),
        }
    }

    /// The identity the stream was opened with.
    pub fn peer(&self) -> &ClusterIdentity {
        &self.peer
    }

    /// Records a lifecycle command sent on this stream: its answer is now expected, once.
    pub fn command_sent(&mut self, operation_id: &str) {
        self.outstanding.insert(operation_id.to_owned());
    }

    /// Whether the agent has said hello.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Takes one message from the agent.
    pub fn receive(&mut self, message: pb::AgentMessage) -> Result<Event, ProtocolError> {
        let body = message
            .body
            .ok_or_else(|| ProtocolError::new(Violation::InvalidArgument, "empty message"))?;
        if !self.open && !matches!(body, Body::Hello(_)) {
            return Err(ProtocolError::new(
                Violation::FailedPrecondition,
                "the first message must be a Hello",
            ));
        }
        match body {
            Body::Hello(hello) => {
                if self.open {
                    return Err(ProtocolError::new(
                        Violation::FailedPrecondition,
                        "Hello was already received",
                    ));
                }
                self.peer
                    .speaks_for(&hello.cluster)
                    .map_err(|e| ProtocolError::new(Violation::PermissionDenied, e.to_string()))?;
                let health = health(&hello.cluster, hello.health)?;
                self.open = true;
                self.below = health.descendants.iter().map(|d| d.name.clone()).collect();
                Ok(Event::Opened(health))
            }
            Body::Heartbeat(beat) => {
                let health = health(&self.peer.cluster, beat.health)?;
                self.below = health.descendants.iter().map(|d| d.name.clone()).collect();
                Ok(Event::Heartbeat(health))
            }
            Body::SyncAck(ack) => self.ack(ack),
            Body::MeshReport(report) => {
                crate::peering::check_report(&self.peer.cluster, &self.below, &report)?;
                Ok(Event::Mesh(report))
            }
            Body::CommandResult(r) => {
                if !self.outstanding.remove(&r.operation_id) {
                    return Err(ProtocolError::new(
                        Violation::InvalidArgument,
                        format!("no operation {:?} was sent", r.operation_id),
                    ));
                }
                if r.message.len() > MAX_RESULT_BYTES {
                    return Err(ProtocolError::new(
                        Violation::InvalidArgument,
                        format!("a command result over {MAX_RESULT_BYTES} bytes"),
                    ));
                }
                Ok(Event::Answered(r))
            }
        }
    }

    fn ack(&mut self, ack: pb::SyncAck) -> Result<Event, ProtocolError> {
        let Some(sent) = &self.sent else {
            return Err(ProtocolError::new(
                Violation::InvalidArgument,
                "an ack for a sync that was never sent",
            ));
        };
        if ack.revision > sent.revision() {
            return Err(ProtocolError::new(
                Violation::InvalidArgument,
                format!(
                    "an ack for revision {} but revision {} is the latest sent",
                    ack.revision,
                    sent.revision()
                ),
            ));
        }
        if ack.revision < sent.revision() {
            return Ok(Event::Superseded);
        }
        if ack.hash.as_slice() == sent.digest().as_slice() {
            self.full_failed_at = None;
            return Ok(Event::Synced {
                revision: ack.revision,
            });
        }
        let revision = ack.revision;
        // The next `sync` is a full one, unless a full one is what failed.
        self.full_failed_at = self.sent_full.then_some(revision);
        self.sent = None;
        Ok(Event::Diverged { revision })
    }

    /// The sync that brings the agent to `current`, if it needs one: the full set on a new
    /// stream or after a divergence, else the delta from what it was sent last.
    pub fn sync(&mut self, current: &Arc<DistributedSet>) -> Option<pb::Sync> {
        if !self.open {
            return None;
        }
        let sync = match &self.sent {
            Some(sent) if sent.revision() == current.revision() => return None,
            Some(sent) => sent.delta_to(current),
            None if self.full_failed_at == Some(current.revision()) => return None,
            None => current.full_sync(),
        };
        self.sent_full = sync.full;
        self.sent = Some(Arc::clone(current));
        Some(sync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distribution::ObjectKey;

    fn peer() -> ClusterIdentity {
        ClusterIdentity::new("lattice.test", "edge").unwrap()
    }

    fn hello(cluster: &str) -> pb::AgentMessage {
        pb::AgentMessage {
            body: Some(Body::Hello(pb::Hello {
                cluster: cluster.into(),
                health: Some(pb::Health {
                    nodes_ready: 2,
                    nodes_total: 3,
                    ..Default::default()
                }),
            })),
        }
    }

    fn ack(revision: u64, hash: [u8; 32]) -> pb::AgentMessage {
        pb::AgentMessage {
            body: Some(Body::SyncAck(pb::SyncAck {
                revision,
                hash: hash.to_vec(),
            })),
        }
    }

    fn set(revision: u64, names: &[&str]) -> Arc<DistributedSet> {
        Arc::new(DistributedSet::new(
            revision,
            names
                .iter()
                .map(|n| {
                    (
                        ObjectKey {
                            kind: "CedarPolicy".into(),
                            namespace: "ns".into(),
                            name: (*n).into(),
                        },
                        b"{}".to_vec(),
                    )
                })
                .collect(),
        ))
    }

    #[test]
    fn hello_first_and_only_for_its_own_cluster() {
        let mut s = CellSession::new(peer());
        let beat = pb::AgentMessage {
            body: Some(Body::Heartbeat(pb::Heartbeat::default())),
        };
        assert_eq!(
            s.receive(beat).unwrap_err().violation,
            Violation::FailedPrecondition
        );
        assert_eq!(
            s.receive(hello("other")).unwrap_err().violation,
            Violation::PermissionDenied
        );
        assert!(!s.is_open(), "a refused hello opens nothing");
        assert!(matches!(s.receive(hello("edge")), Ok(Event::Opened(h)) if h.nodes_ready == 2));
        assert_eq!(
            s.receive(hello("edge")).unwrap_err().violation,
            Violation::FailedPrecondition
        );
        assert_eq!(
            s.receive(pb::AgentMessage { body: None })
                .unwrap_err()
                .violation,
            Violation::InvalidArgument
        );
    }

    #[test]
    fn impossible_health_and_unsolicited_answers_are_refused() {
        let mut s = CellSession::new(peer());
        s.receive(hello("edge")).unwrap();
        let lying = pb::AgentMessage {
            body: Some(Body::Heartbeat(pb::Heartbeat {
                unix_millis: 0,
                health: Some(pb::Health {
                    nodes_ready: 4,
                    nodes_total: 3,
                    ..Default::default()
                }),
            })),
        };
        assert_eq!(
            s.receive(lying).unwrap_err().violation,
            Violation::InvalidArgument
        );
        let answer = pb::AgentMessage {
            body: Some(Body::CommandResult(pb::CommandResult::default())),
        };
        assert_eq!(
            s.receive(answer).unwrap_err().violation,
            Violation::InvalidArgument
        );
        assert_eq!(
            s.receive(ack(1, [0; 32])).unwrap_err().violation,
            Violation::InvalidArgument,
            "nothing was sent yet"
        );
    }

    fn beat_with(descendants: &[(&str, &str)]) -> pb::AgentMessage {
        pb::AgentMessage {
            body: Some(Body::Heartbeat(pb::Heartbeat {
                unix_millis: 0,
                health: Some(pb::Health {
                    descendants: descendants
                        .iter()
                        .map(|(name, parent)| pb::Descendant {
                            name: (*name).into(),
                            parent: (*parent).into(),
                            phase: "Ready".into(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
            })),
        }
    }

    #[test]
    fn an_agent_reports_only_a_tree_below_its_own_cluster() {
        let mut s = CellSession::new(peer());
        s.receive(hello("edge")).unwrap();
        let Ok(Event::Heartbeat(h)) = s.receive(beat_with(&[("leaf", "edge"), ("twig", "leaf")]))
        else {
            panic!("a tree below edge is a heartbeat");
        };
        assert_eq!(
            h.descendants
                .iter()
                .map(|d| (d.name.as_str(), d.parent.as_str()))
                .collect::<Vec<_>>(),
            [("leaf", "edge"), ("twig", "leaf")]
        );
        for (bad, why) in [
            (vec![("edge", "edge")], "itself"),
            (vec![("leaf", "edge"), ("leaf", "edge")], "twice"),
            (vec![("leaf", "root")], "a parent outside its subtree"),
            (
                vec![("twig", "leaf"), ("leaf", "edge")],
                "a child before its parent",
            ),
            (vec![("Leaf", "edge")], "not a cluster name"),
            (vec![("le.af", "edge")], "not a label"),
        ] {
            assert_eq!(
                s.receive(beat_with(&bad)).unwrap_err().violation,
                Violation::InvalidArgument,
                "{why}"
            );
        }
        let many: Vec<String> = (0..=MAX_DESCENDANTS).map(|i| format!("c{i}")).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|n| (n.as_str(), "edge")).collect();
        assert_eq!(
            s.receive(beat_with(&many)).unwrap_err().violation,
            Violation::InvalidArgument
        );
        let mut control = beat_with(&[("leaf", "edge")]);
        if let Some(Body::Heartbeat(b)) = &mut control.body {
            b.health.as_mut().unwrap().descendants[0].phase = "Re\nady".into();
        }
        assert_eq!(
            s.receive(control).unwrap_err().violation,
            Violation::InvalidArgument
        );
    }

    #[test]
    fn full_then_deltas_and_a_divergence_resends_the_full_set_once() {
        let mut s = CellSession::new(peer());
        let one = set(1, &["a"]);
        assert!(s.sync(&one).is_none(), "nothing before hello");
        s.receive(hello("edge")).unwrap();
        let first = s.sync(&one).unwrap();
        assert!(first.full);
        assert!(s.sync(&one).is_none(), "nothing new");
        assert_eq!(
            s.receive(ack(1, one.digest())).unwrap(),
            Event::Synced { revision: 1 }
        );
        let two = set(2, &["a", "b"]);
        let delta = s.sync(&two).unwrap();
        assert!(!delta.full);
        assert_eq!(delta.upserts.len(), 1);
        assert_eq!(
            s.receive(ack(3, two.digest())).unwrap_err().violation,
            Violation::InvalidArgument,
            "revision 3 was never sent"
        );
        assert_eq!(
            s.receive(ack(2, [9; 32])).unwrap(),
            Event::Diverged { revision: 2 }
        );
        let again = s.sync(&two).unwrap();
        assert!(again.full, "a divergence is answered with the full set");
        assert_eq!(
            s.receive(ack(2, [9; 32])).unwrap(),
            Event::Diverged { revision: 2 }
        );
        assert!(
            s.sync(&two).is_none(),
            "a full set that failed is not resent until the set changes"
        );
        let three = set(3, &["c"]);
        assert!(s.sync(&three).unwrap().full);
        assert_eq!(
            s.receive(ack(3, three.digest())).unwrap(),
            Event::Synced { revision: 3 }
        );
        assert!(!s.sync(&set(4, &[])).unwrap().full);
    }
}
