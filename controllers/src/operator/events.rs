//! Kubernetes Events (`events.k8s.io/v1`) on the objects the operator acts for, through
//! kube-runtime's recorder (which aggregates repeats into a series): a workload `Applied`,
//! `Denied` (with the gates), `Revoked` (what it derived was removed), `ReconcileFailed` or
//! `Invalid`; a derived object `DriftCorrected`; a CedarPolicy `PolicyRejected`. Events are
//! what `kubectl describe` shows; they are best effort, and one that cannot be written is
//! logged and changes nothing else.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// The longest note an Event may carry.
const MAX_NOTE: usize = 1024;

/// Publishes Events as `lattice-operator` (instance: this replica).
pub struct Events {
    recorder: Recorder,
}

/// One Event to publish, and the object it is about.
pub struct Pending {
    pub regarding: ObjectReference,
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

impl Events {
    pub fn new(client: Client, instance: &str) -> Events {
        Events {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "lattice-operator".into(),
                    instance: Some(instance.to_owned()),
                },
            ),
        }
    }

    /// Publishes `events`, a few at a time.
    pub async fn publish(&self, events: Vec<Pending>) {
        use futures::StreamExt;
        futures::stream::iter(events.into_iter().map(|p| async move {
            let mut note = p.note;
            if note.len() > MAX_NOTE {
                let mut end = MAX_NOTE - 3;
                while !note.is_char_boundary(end) {
                    end -= 1;
                }
                note.truncate(end);
                note.push('…');
            }
            let event = Event {
                type_: if p.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: p.reason.to_owned(),
                note: Some(note),
                action: p.action.to_owned(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, &p.regarding).await {
                tracing::debug!(reason = p.reason, "cannot write an event: {e}");
            }
        }))
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    }
}

/// A reference to a Lattice object (or any object) by its type, place and uid.
pub fn reference(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    uid: Option<&str>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(kind.to_owned()),
        namespace: namespace.map(str::to_owned),
        name: Some(name.to_owned()),
        uid: uid.filter(|u| !u.is_empty()).map(str::to_owned),
        ..ObjectReference::default()
    }
}
