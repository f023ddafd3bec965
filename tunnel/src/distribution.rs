//! What a parent distributes to its descendants, as a versioned set of objects, and the
//! syncs that carry it down the tunnel: a full set when an agent connects, deltas after,
//! each with the SHA-256 digest of the whole set once applied. An agent that applies a
//! delta and finds a different digest (or a delta from a revision it does not hold) says
//! so, and the cell sends the full set again.
//!
//! No I/O here: the cell's session and the agent both drive these values.

use std::collections::BTreeMap;

use lattice_proto::tunnel::v1 as pb;
use sha2::{Digest, Sha256};

/// The largest object a sync may carry (a CedarPolicy with many policies fits easily).
pub const MAX_OBJECT_BYTES: usize = 1 << 20;

/// Where a distributed object lives: kind, namespace (empty when cluster-scoped), name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl From<&ObjectKey> for pb::ObjectKey {
    fn from(key: &ObjectKey) -> pb::ObjectKey {
        pb::ObjectKey {
            kind: key.kind.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        }
    }
}

/// Why a sync cannot be applied. The agent keeps what it had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("a delta from revision {base} cannot apply to revision {held}")]
    Base { base: u64, held: u64 },
    #[error("revision {revision} is not newer than revision {held}")]
    Stale { revision: u64, held: u64 },
    #[error("an object has no key")]
    MissingKey,
    #[error("object {0:?} has an empty kind or name")]
    EmptyKey(ObjectKey),
    #[error("object {key:?} is {bytes} bytes; at most {MAX_OBJECT_BYTES} are accepted")]
    TooLarge { key: ObjectKey, bytes: usize },
    #[error("object {0:?} appears twice in one sync")]
    Duplicate(ObjectKey),
    #[error("after applying revision {revision}, the set's digest differs from the cell's")]
    Diverged { revision: u64 },
}

/// A revision of the distributed set. Its digest is computed once, when it is made: the
/// cell compares it on every agent's ack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributedSet {
    revision: u64,
    objects: BTreeMap<ObjectKey, Vec<u8>>,
    digest: [u8; 32],
}

impl Default for DistributedSet {
    fn default() -> DistributedSet {
        DistributedSet::new(0, BTreeMap::new())
    }
}

fn digest_of(objects: &BTreeMap<ObjectKey, Vec<u8>>) -> [u8; 32] {
    let mut hash = Sha256::new();
    for (key, body) in objects {
        for part in [
            key.kind.as_bytes(),
            key.namespace.as_bytes(),
            key.name.as_bytes(),
            body.as_slice(),
        ] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
    }
    hash.finalize().into()
}

fn key_of(key: Option<pb::ObjectKey>) -> Result<ObjectKey, SyncError> {
    let key = key.ok_or(SyncError::MissingKey)?;
    let key = ObjectKey {
        kind: key.kind,
        namespace: key.namespace,
        name: key.name,
    };
    if key.kind.is_empty() || key.name.is_empty() {
        return Err(SyncError::EmptyKey(key));
    }
    Ok(key)
}

impl DistributedSet {
    /// A set at `revision` holding `objects`.
    pub fn new(revision: u64, objects: BTreeMap<ObjectKey, Vec<u8>>) -> DistributedSet {
        let digest = digest_of(&objects);
        DistributedSet {
            revision,
            objects,
            digest,
        }
    }

    /// Its revision (0: nothing received yet).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The objects, in key order.
    pub fn objects(&self) -> &BTreeMap<ObjectKey, Vec<u8>> {
        &self.objects
    }

    /// The SHA-256 digest of the set's contents (not its revision): every key and body,
    /// length-prefixed, in key order.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The sync that carries the whole set.
    pub fn full_sync(&self) -> pb::Sync {
        pb::Sync {
            revision: self.revision,
            base_revision: 0,
            full: true,
            upserts: self
                .objects
                .iter()
                .map(|(key, json)| pb::DistributedObject {
                    key: Some(key.into()),
                    json: json.clone(),
                })
                .collect(),
            deletes: Vec::new(),
            hash: self.digest().to_vec(),
        }
    }

    /// The delta that turns `self` into `next`.
    pub fn delta_to(&self, next: &DistributedSet) -> pb::Sync {
        let upserts = next
            .objects
            .iter()
            .filter(|(key, json)| self.objects.get(*key) != Some(*json))
            .map(|(key, json)| pb::DistributedObject {
                key: Some(key.into()),
                json: json.clone(),
            })
            .collect();
        let deletes = self
            .objects
            .keys()
            .filter(|key| !next.objects.contains_key(*key))
            .map(pb::ObjectKey::from)
            .collect();
        pb::Sync {
            revision: next.revision,
            base_revision: self.revision,
            full: false,
            upserts,
            deletes,
            hash: next.digest().to_vec(),
        }
    }

    /// Applies `sync` and returns the new set: a full one whole, a delta only onto the
    /// revision it was made from and only forward. Checks its keys and
    /// sizes, and that the result's digest is the one the cell computed. On any error the
    /// set held stays as it was.
    pub fn apply(&self, sync: pb::Sync) -> Result<DistributedSet, SyncError> {
        // A full set replaces whatever is held, whatever its revision: a restarted cell
        // counts from 1 again. Only deltas are ordered.
        if !sync.full && sync.revision <= self.revision {
            return Err(SyncError::Stale {
                revision: sync.revision,
                held: self.revision,
            });
        }
        if !sync.full && sync.base_revision != self.revision {
            return Err(SyncError::Base {
                base: sync.base_revision,
                held: self.revision,
            });
        }
        let mut objects = if sync.full {
            BTreeMap::new()
        } else {
            self.objects.clone()
        };
        let mut seen = std::collections::HashSet::new();
        for object in sync.upserts {
            let key = key_of(object.key)?;
            if object.json.len() > MAX_OBJECT_BYTES {
                return Err(SyncError::TooLarge {
                    key,
                    bytes: object.json.len(),
                });
            }
            if !seen.insert(key.clone()) {
                return Err(SyncError::Duplicate(key));
            }
            objects.insert(key, object.json);
        }
        for key in sync.deletes {
            let key = key_of(Some(key))?;
            if !seen.insert(key.clone()) {
                return Err(SyncError::Duplicate(key));
            }
            objects.remove(&key);
        }
        let next = DistributedSet::new(sync.revision, objects);
        if next.digest().as_slice() != sync.hash.as_slice() {
            return Err(SyncError::Diverged {
                revision: sync.revision,
            });
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: "CedarPolicy".into(),
            namespace: "lattice-system".into(),
            name: name.into(),
        }
    }

    fn set(revision: u64, items: &[(&str, &str)]) -> DistributedSet {
        DistributedSet::new(
            revision,
            items
                .iter()
                .map(|(n, body)| (key(n), body.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn a_full_sync_then_deltas_reach_the_same_set() {
        let agent = DistributedSet::default();
        let one = set(1, &[("a", "{}"), ("b", "{\"x\":1}")]);
        let agent = agent.apply(one.full_sync()).unwrap();
        assert_eq!(agent, one);

        let two = set(2, &[("b", "{\"x\":2}"), ("c", "{}")]);
        let delta = one.delta_to(&two);
        assert_eq!(
            delta.upserts.len(),
            2,
            "b changed, c is new; a is unchanged"
        );
        assert_eq!(delta.deletes.len(), 1, "a is gone");
        let agent = agent.apply(delta).unwrap();
        assert_eq!(agent, two);
        assert_eq!(agent.digest(), two.digest());
    }

    #[test]
    fn a_delta_on_the_wrong_base_or_a_wrong_digest_changes_nothing() {
        let one = set(1, &[("a", "{}")]);
        let two = set(2, &[("a", "{\"y\":1}")]);
        let three = set(3, &[]);
        let agent = DistributedSet::default().apply(one.full_sync()).unwrap();
        assert_eq!(
            agent.apply(two.delta_to(&three)),
            Err(SyncError::Base { base: 2, held: 1 })
        );
        let mut forged = one.delta_to(&two);
        forged.hash = three.digest().to_vec();
        assert_eq!(
            agent.apply(forged),
            Err(SyncError::Diverged { revision: 2 })
        );
        assert_eq!(
            agent.apply(one.full_sync().clone()).unwrap(),
            one,
            "the same full set again (a reconnect) is accepted"
        );
        let restarted = set(1, &[]);
        assert_eq!(
            agent.apply(restarted.full_sync()).unwrap(),
            restarted,
            "a restarted cell's full set replaces, though its revision is not newer"
        );
        let mut old = one.delta_to(&two);
        old.revision = 1;
        old.base_revision = 1;
        assert!(matches!(
            agent.apply(old),
            Err(SyncError::Stale {
                revision: 1,
                held: 1
            })
        ));
    }

    #[test]
    fn hostile_syncs_are_refused() {
        let agent = DistributedSet::default();
        let mut sync = set(1, &[("a", "{}")]).full_sync();
        sync.upserts.push(sync.upserts[0].clone());
        assert_eq!(agent.apply(sync), Err(SyncError::Duplicate(key("a"))));
        let mut sync = set(1, &[]).full_sync();
        sync.upserts.push(pb::DistributedObject {
            key: None,
            json: vec![],
        });
        assert_eq!(agent.apply(sync), Err(SyncError::MissingKey));
        let big = "x".repeat(MAX_OBJECT_BYTES + 1);
        let sync = set(1, &[("a", &big)]).full_sync();
        assert!(matches!(agent.apply(sync), Err(SyncError::TooLarge { .. })));
    }

    #[test]
    fn the_digest_separates_fields() {
        let a = DistributedSet::new(1, [(key("ab"), b"c".to_vec())].into());
        let b = DistributedSet::new(1, [(key("a"), b"bc".to_vec())].into());
        assert_ne!(a.digest(), b.digest());
    }
}
