//! The tunnel's message handling, both ends: any byte frames, read as agent messages by a
//! cell's session or as syncs by an agent's distributed set, are taken or refused, never a
//! panic. A session opens only for the cluster its certificate names; a sync that applies
//! leaves exactly the digest the cell computed, and one that is refused leaves the set as
//! it was. A proxied request's head is read or refused, and never carries the client's
//! credentials or identity headers. A cross-cluster mesh report is taken only for the
//! cluster the certificate names and the clusters it reported below itself; routes an agent
//! takes are only for its own subtree.
#![no_main]

use lattice_proto::tunnel::v1 as pb;
use lattice_tunnel::ClusterIdentity;
use lattice_tunnel::distribution::{DistributedSet, ObjectKey};
use lattice_tunnel::session::{CellSession, Event};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Frames: a big-endian u16 length, then that many bytes.
fn frames(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
        let frame = &data[2..2 + len];
        data = &data[2 + len..];
        Some(frame)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let current = std::sync::Arc::new(DistributedSet::new(
        3,
        [(
            ObjectKey {
                kind: "CedarPolicy".into(),
                namespace: "lattice-system".into(),
                name: "base".into(),
            },
            b"{}".to_vec(),
        )]
        .into(),
    ));
    if mode % 4 == 3 {
        // Cross-cluster routes, as an agent for `edge` checks them.
        for frame in frames(rest) {
            let Ok(routes) = pb::MeshRoutes::decode(frame) else {
                return;
            };
            let below: std::collections::HashSet<String> = ["leaf".to_owned()].into();
            if lattice_tunnel::peering::check_routes("edge", &below, &routes).is_ok() {
                for r in &routes.routes {
                    assert!(r.cluster == "edge" || r.cluster == "leaf");
                    assert!(!r.ports.is_empty());
                    assert!(lattice_tunnel::peering::spiffe_namespace(&r.peer_spiffe_id).is_some());
                }
            }
        }
    } else if mode % 4 == 2 {
        // A proxied request's head, as an agent reads it: taken or refused, and whatever
        // is taken carries no credential or identity header of the client's.
        for frame in frames(rest) {
            let Ok(head) = pb::ProxyRequest::decode(frame) else {
                return;
            };
            if let Ok((target, request)) =
                lattice_tunnel::forward::request_from_head(head, Default::default())
            {
                assert!(!target.cluster.is_empty() && !target.user.is_empty());
                assert!(request.uri().path().starts_with('/'));
                for name in request.headers().keys() {
                    assert!(lattice_tunnel::forward::crosses(name.as_str()), "{name}");
                }
            }
        }
    } else if mode % 4 == 0 {
        let peer = ClusterIdentity::new("lattice.test", "edge").unwrap();
        let mut session = CellSession::new(peer);
        // One command was sent: its result is taken once, any other is refused.
        session.command_sent("op1");
        let mut answered = false;
        // The clusters the agent last reported below it: its mesh reports may speak for them.
        let mut below: Vec<String> = Vec::new();
        for frame in frames(rest) {
            // An undecodable frame ends the stream (tonic's status) before the session.
            let Ok(message) = pb::AgentMessage::decode(frame) else {
                return;
            };
            let hello_for = match &message.body {
                Some(pb::agent_message::Body::Hello(h)) => Some(h.cluster.clone()),
                _ => None,
            };
            let was_open = session.is_open();
            match session.receive(message) {
                Err(_) => {
                    assert_eq!(session.is_open(), was_open, "a refused message opens nothing");
                    return;
                }
                Ok(Event::Opened(h)) => {
                    assert!(!was_open);
                    assert_eq!(hello_for.as_deref(), Some("edge"));
                    below = h.descendants.into_iter().map(|d| d.name).collect();
                }
                Ok(Event::Heartbeat(h)) => {
                    assert!(was_open);
                    below = h.descendants.into_iter().map(|d| d.name).collect();
                }
                Ok(Event::Mesh(report)) => {
                    assert!(was_open);
                    assert!(report.declarations.iter().all(|d| d.cluster == "edge" || below.contains(&d.cluster)));
                }
                Ok(Event::Answered(result)) => {
                    assert!(was_open);
                    assert_eq!(result.operation_id, "op1");
                    assert!(!answered, "a command is answered once");
                    answered = true;
                }
                Ok(_) => assert!(was_open),
            }
            if let Some(sync) = session.sync(&current) {
                assert_eq!(sync.hash, current.digest().to_vec());
            }
        }
    } else {
        let mut held = DistributedSet::default();
        for frame in frames(rest) {
            let Ok(sync) = pb::Sync::decode(frame) else {
                return;
            };
            let hash = sync.hash.clone();
            let before = held.clone();
            match held.apply(sync) {
                Ok(next) => {
                    assert_eq!(next.digest().to_vec(), hash);
                    held = next;
                }
                Err(_) => assert_eq!(held, before),
            }
        }
        // Whatever it holds, the cell's own full sync and delta reach the cell's set.
        assert_eq!(held.apply(held.delta_to(&current)).ok().as_ref(), (current.revision() > held.revision()).then_some(&*current));
    }
});
