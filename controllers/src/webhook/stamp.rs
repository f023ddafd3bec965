//! The admission stamp: proof, carried on a CedarPolicy or a LatticeRestore, that the
//! webhook allowed its question (`ManagePolicy`, `Restore`) for the user who wrote exactly
//! this spec.
//!
//! Kubernetes does not record who wrote an object, so a policy written while the webhook
//! was down, or with its configuration removed, would otherwise reach the operator looking
//! like any other. The mutating endpoint (`/mutate`) decides the write as the validating one
//! does and, when `ManagePolicy` allows it, sets the annotation [`ANNOTATION`]: the user, its
//! groups and an HMAC-SHA256 over the namespace, name, spec and user, under a key the
//! webhook and the operator share (`--admission-key`, a Secret). The operator loads a
//! CedarPolicy only when the stamp verifies for its current spec; anything else is refused
//! with a status that says why, and the version accepted before (if any) stays in force.
//! A LatticeRestore's stamp names the user the operator asks `Restore` for again before it
//! derives anything; without one that verifies, nothing is restored.

use std::path::Path;

use lattice_gates::admission::Requester;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// The annotation that carries the stamp.
pub const ANNOTATION: &str = "lattice.dev/admitted";

/// The fewest key bytes accepted.
pub const MIN_KEY_BYTES: usize = 32;

/// The key stamps are made and checked with.
pub struct AdmissionKey(hmac::Key);

impl std::fmt::Debug for AdmissionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.write_str("AdmissionKey(…)")
    }
}

#[derive(Serialize, Deserialize)]
struct Stamp {
    user: String,
    groups: Vec<String>,
    mac: String,
}

impl AdmissionKey {
    /// A key of at least [`MIN_KEY_BYTES`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<AdmissionKey, String> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the admission key has {} bytes; at least {MIN_KEY_BYTES} are needed",
                trimmed.len()
            ));
        }
        Ok(AdmissionKey(hmac::Key::new(hmac::HMAC_SHA256, trimmed)))
    }

    /// Reads a key file (a mounted Secret).
    pub fn from_file(path: &Path) -> Result<AdmissionKey, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the admission key {}: {e}", path.display()))?;
        AdmissionKey::from_bytes(&bytes)
    }

    /// A fresh random key: stamps made with it are known only to this process (one replica
    /// serving the webhook and the operator together).
    pub fn random() -> Result<AdmissionKey, String> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| "no randomness for an admission key".to_owned())?;
        Ok(AdmissionKey(key))
    }

    /// The annotation value for `requester` writing `spec` as `name` at `place` (see
    /// [`place`]).
    pub fn stamp<S: Serialize>(
        &self,
        namespace: &str,
        name: &str,
        spec: &S,
        requester: &Requester,
    ) -> String {
        let tag = hmac::sign(&self.0, &message(namespace, name, spec, requester));
        let stamp = Stamp {
            user: requester.username.clone(),
            groups: requester.groups.clone(),
            mac: tag.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
        };
        serde_json::to_string(&stamp).expect("a stamp serializes")
    }

    /// Who the webhook admitted this exact spec for, or why the stamp does not hold.
    pub fn verify<S: Serialize>(
        &self,
        namespace: &str,
        name: &str,
        spec: &S,
        annotation: Option<&str>,
    ) -> Result<Requester, String> {
        let text = annotation.ok_or_else(|| {
            format!("it carries no `{ANNOTATION}` stamp: it did not pass the admission webhook")
        })?;
        let stamp: Stamp = serde_json::from_str(text)
            .map_err(|_| format!("its `{ANNOTATION}` stamp cannot be read"))?;
        let mac = hex_bytes(&stamp.mac)
            .ok_or_else(|| format!("its `{ANNOTATION}` stamp is malformed"))?;
        let requester = Requester {
            username: stamp.user,
            groups: stamp.groups,
        };
        hmac::verify(&self.0, &message(namespace, name, spec, &requester), &mac).map_err(|_| {
            format!(
                "its `{ANNOTATION}` stamp does not match this spec (edited past the webhook, copied from another policy, or made with another key)"
            )
        })?;
        Ok(requester)
    }
}

/// Where a stamped object lives, as its stamp covers it: a CedarPolicy's namespace, or for a
/// cluster-scoped kind its kind's name (no namespace can be named so: names are lowercase),
/// so no stamp moves between kinds.
pub fn place<'a>(kind: &'a str, namespace: Option<&'a str>) -> &'a str {
    match namespace {
        Some(ns) if kind == "CedarPolicy" => ns,
        _ => kind,
    }
}

/// What a stamp covers: where the object lives, exactly what it says (its spec as JSON,
/// fields in declaration order) and who wrote it. Lines are separated by NUL, which none of
/// the parts can hold unescaped.
fn message<S: Serialize>(namespace: &str, name: &str, spec: &S, requester: &Requester) -> Vec<u8> {
    let spec = serde_json::to_string(spec).expect("a spec serializes");
    let mut out = Vec::new();
    for part in [namespace, name, spec.as_str(), requester.username.as_str()] {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    for g in &requester.groups {
        out.extend_from_slice(g.as_bytes());
        out.push(0);
    }
    out
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_schemas::crd::policy::CedarPolicySpec;

    fn spec(text: &str) -> CedarPolicySpec {
        CedarPolicySpec {
            policies: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_stamp_holds_only_for_its_spec_place_and_key() {
        let key = AdmissionKey::from_bytes(&[7u8; 32]).unwrap();
        let sec = Requester {
            username: "sec".into(),
            groups: vec!["lattice:security-admins".into()],
        };
        let s = spec("@id(\"a\") forbid (principal, action, resource);");
        let stamp = key.stamp("shop", "p", &s, &sec);
        assert_eq!(key.verify("shop", "p", &s, Some(&stamp)).unwrap(), sec);
        // Another spec, place or key: refused.
        let widened = spec("@id(\"a\") permit (principal, action, resource);");
        assert!(key.verify("shop", "p", &widened, Some(&stamp)).is_err());
        assert!(key.verify("shop", "q", &s, Some(&stamp)).is_err());
        assert!(key.verify("other", "p", &s, Some(&stamp)).is_err());
        let other = AdmissionKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.verify("shop", "p", &s, Some(&stamp)).is_err());
        // Another user claimed in the stamp: refused.
        let forged = stamp.replace("\"sec\"", "\"mallory\"");
        assert!(key.verify("shop", "p", &s, Some(&forged)).is_err());
        // No stamp, or garbage: refused with a reason.
        assert!(
            key.verify("shop", "p", &s, None)
                .unwrap_err()
                .contains("did not pass")
        );
        assert!(key.verify("shop", "p", &s, Some("{")).is_err());
        assert!(AdmissionKey::from_bytes(b"short").is_err());
    }

    #[test]
    fn a_restore_stamp_covers_its_spec_and_moves_to_no_other_kind() {
        use lattice_schemas::crd::backup::LatticeRestoreSpec;
        let key = AdmissionKey::from_bytes(&[7u8; 32]).unwrap();
        let pat = Requester {
            username: "pat".into(),
            groups: vec!["lattice:platform-admins".into()],
        };
        let spec = LatticeRestoreSpec {
            cluster_backup_ref: Some("nightly".into()),
            include_namespaces: vec!["shop".into()],
            restore_volumes: true,
            ..Default::default()
        };
        let at = place("LatticeRestore", None);
        let stamp = key.stamp(at, "r", &spec, &pat);
        assert_eq!(key.verify(at, "r", &spec, Some(&stamp)).unwrap(), pat);
        // Widened after admission: every namespace. Refused.
        let widened = LatticeRestoreSpec {
            include_namespaces: Vec::new(),
            ..spec.clone()
        };
        assert!(key.verify(at, "r", &widened, Some(&stamp)).is_err());
        // A CedarPolicy's place is its namespace, never a kind's name.
        assert_eq!(place("CedarPolicy", Some("shop")), "shop");
        assert!(key.verify("shop", "r", &spec, Some(&stamp)).is_err());
    }
}
