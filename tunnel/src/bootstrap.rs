//! One-time bootstrap tokens. A parent mints one per LatticeCluster; the child's agent
//! presents it once, with its CSR, to get its first certificate. The parent keeps only the
//! token's SHA-256 digest, compares in constant time, accepts a token once and never after
//! its expiry.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long a bootstrap token is valid by default.
pub const DEFAULT_TOKEN_TTL: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// A freshly minted token: the secret to hand to the child, once.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken(String);

impl std::fmt::Debug for BootstrapToken {
    // A token is a credential: it never reaches a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BootstrapToken(<redacted>)")
    }
}

impl BootstrapToken {
    /// 256 random bits, base64url.
    pub fn generate() -> Result<BootstrapToken, BootstrapError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| BootstrapError::Random)?;
        Ok(BootstrapToken(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The secret, to write into the child's bootstrap Secret.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

/// Why a bootstrap is refused. Deliberately vague towards the caller: which of these it
/// was goes to the parent's log, not to whoever presented the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapError {
    #[error("no bootstrap token is pending for cluster {0:?}")]
    Unknown(String),
    #[error("the bootstrap token does not match")]
    Mismatch,
    #[error("the bootstrap token was already used")]
    Used,
    #[error("the bootstrap token expired")]
    Expired,
    #[error("the system random number generator failed")]
    Random,
}

struct Pending {
    digest: [u8; 32],
    expires: jiff::Timestamp,
    used: bool,
}

/// The parent's pending bootstrap tokens, by cluster name.
#[derive(Default)]
pub struct TokenStore {
    pending: HashMap<String, Pending>,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl TokenStore {
    /// Mints a token for `cluster`, valid until `now + ttl`; a token minted before for it
    /// is replaced (no longer accepted).
    pub fn mint(
        &mut self,
        cluster: &str,
        now: jiff::Timestamp,
        ttl: jiff::SignedDuration,
    ) -> Result<BootstrapToken, BootstrapError> {
        let token = BootstrapToken::generate()?;
        let expires = now.checked_add(ttl).unwrap_or(now);
        self.pending.insert(
            cluster.to_owned(),
            Pending {
                digest: digest(token.secret()),
                expires,
                used: false,
            },
        );
        Ok(token)
    }

    /// Accepts `presented` for `cluster` once: the digests are compared in constant time,
    /// and a used or expired token is refused.
    pub fn redeem(
        &mut self,
        cluster: &str,
        presented: &str,
        now: jiff::Timestamp,
    ) -> Result<(), BootstrapError> {
        self.check(cluster, presented, now)?;
        if let Some(pending) = self.pending.get_mut(cluster) {
            pending.used = true;
        }
        Ok(())
    }

    /// Whether `presented` is `cluster`'s token, unused and unexpired, without using it:
    /// what the bootstrap endpoint asks before it hands out the agent's manifests (which
    /// carry the token, for the agent to redeem).
    pub fn check(
        &self,
        cluster: &str,
        presented: &str,
        now: jiff::Timestamp,
    ) -> Result<(), BootstrapError> {
        let pending = self
            .pending
            .get(cluster)
            .ok_or_else(|| BootstrapError::Unknown(cluster.to_owned()))?;
        let matches: bool = pending.digest.ct_eq(&digest(presented)).into();
        if !matches {
            return Err(BootstrapError::Mismatch);
        }
        if pending.used {
            return Err(BootstrapError::Used);
        }
        if now >= pending.expires {
            return Err(BootstrapError::Expired);
        }
        Ok(())
    }

    /// Takes back a token minted before a restart (the parent keeps it in the child's
    /// bootstrap Secret), unused, until `expires`.
    pub fn restore(&mut self, cluster: &str, secret: &str, expires: jiff::Timestamp) {
        self.pending.insert(
            cluster.to_owned(),
            Pending {
                digest: digest(secret),
                expires,
                used: false,
            },
        );
    }

    /// Whether `cluster`'s token was redeemed (and can be forgotten by whoever holds it).
    pub fn is_used(&self, cluster: &str) -> bool {
        self.pending.get(cluster).is_some_and(|p| p.used)
    }

    /// Whether a token is pending for `cluster` (minted or restored, used or not).
    pub fn contains(&self, cluster: &str) -> bool {
        self.pending.contains_key(cluster)
    }

    /// Forgets `cluster`'s token (the cluster was deleted).
    pub fn revoke(&mut self, cluster: &str) {
        self.pending.remove(cluster);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_token_is_accepted_once_before_it_expires() {
        let mut store = TokenStore::default();
        let now = at("2026-12-01T12:00:00Z");
        let token = store.mint("edge", now, DEFAULT_TOKEN_TTL).unwrap();
        assert_eq!(
            store.redeem("edge", "not-the-token", now),
            Err(BootstrapError::Mismatch)
        );
        assert_eq!(
            store.redeem("other", token.secret(), now),
            Err(BootstrapError::Unknown("other".into()))
        );
        // Checking (as the bootstrap endpoint does) uses nothing up.
        assert_eq!(store.check("edge", token.secret(), now), Ok(()));
        assert_eq!(
            store.check("edge", "not-the-token", now),
            Err(BootstrapError::Mismatch)
        );
        assert_eq!(store.redeem("edge", token.secret(), now), Ok(()));
        assert_eq!(
            store.redeem("edge", token.secret(), now),
            Err(BootstrapError::Used)
        );
        assert_eq!(
            store.check("edge", token.secret(), now),
            Err(BootstrapError::Used)
        );

        let late = store.mint("late", now, DEFAULT_TOKEN_TTL).unwrap();
        assert_eq!(
            store.redeem("late", late.secret(), at("2026-12-01T13:00:00Z")),
            Err(BootstrapError::Expired)
        );
        let replaced = store.mint("edge2", now, DEFAULT_TOKEN_TTL).unwrap();
        let fresh = store.mint("edge2", now, DEFAULT_TOKEN_TTL).unwrap();
        assert_eq!(
            store.redeem("edge2", replaced.secret(), now),
            Err(BootstrapError::Mismatch)
        );
        store.revoke("edge2");
        assert!(store.redeem("edge2", fresh.secret(), now).is_err());
    }

    #[test]
    fn tokens_are_random_and_never_printed() {
        let a = BootstrapToken::generate().unwrap();
        let b = BootstrapToken::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.secret().len(), 43, "256 bits in base64url");
        assert!(!format!("{a:?}").contains(a.secret()));
    }
}
