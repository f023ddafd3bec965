//! Who is calling: a bearer token, checked by the API server of the cluster the proxy runs
//! in (a `TokenReview`, as kube-apiserver's webhook token authenticator does). Anything
//! else — no token, a token the API server does not know, an API server that cannot be
//! asked — is a 401: the proxy never decides for a caller it could not name.
//!
//! Reviews are cached briefly by the token's SHA-256 digest (never the token), so a watch's
//! reconnects and a burst of `kubectl` calls cost one review; a refused token is never
//! cached, and neither is an unreachable API server's silence.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use lattice_gates::Requester;
use sha2::{Digest, Sha256};

/// Why a caller was not authenticated; every one is a 401.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("no bearer token was presented")]
    Missing,
    #[error("the bearer token was refused: {0}")]
    Refused(String),
    #[error("the token could not be reviewed: {0}")]
    Unavailable(String),
}

/// Names the caller behind a bearer token.
pub trait Authenticator: Send + Sync + 'static {
    /// The caller `token` belongs to.
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Requester, AuthnError>> + Send + 'a>>;
}

/// How long a review's answer is reused.
pub const REVIEW_TTL: Duration = Duration::from_secs(10);

/// The most reviews held; past it, the cache starts over (a flood of distinct tokens
/// costs reviews, not memory).
pub const MAX_CACHED: usize = 4096;

/// Callers already named, by their token's SHA-256 digest (never the token), each until
/// its own expiry; at most [`MAX_CACHED`], after which the expired go, and if none have,
/// everything.
#[derive(Default)]
pub struct Named {
    by_digest: Mutex<HashMap<[u8; 32], (Requester, Instant)>>,
}

impl Named {
    /// The digest a token is kept under.
    pub fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The caller named for `digest`, if still current.
    pub fn get(&self, digest: &[u8; 32]) -> Option<Requester> {
        let cache = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(digest)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(who, _)| who.clone())
    }

    /// Keeps `who` for `digest` for `ttl`.
    pub fn put(&self, digest: [u8; 32], who: &Requester, ttl: Duration) {
        let now = Instant::now();
        let mut cache = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, until)| now < *until);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(digest, (who.clone(), now + ttl));
    }
}

/// Bearer tokens reviewed by the local API server (`TokenReview`).
pub struct TokenReviewer {
    client: kube::Client,
    /// Audiences the token must be for; empty: the API server's own.
    audiences: Vec<String>,
    named: Named,
}

impl TokenReviewer {
    /// Reviews with `client`'s API server, for `audiences` (empty: the API server's).
    pub fn new(client: kube::Client, audiences: Vec<String>) -> TokenReviewer {
        TokenReviewer {
            client,
            audiences,
            named: Named::default(),
        }
    }

    async fn review(&self, token: &str) -> Result<Requester, AuthnError> {
        let digest = Named::digest(token);
        if let Some(who) = self.named.get(&digest) {
            return Ok(who);
        }
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| AuthnError::Unavailable(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(AuthnError::Refused(
                status
                    .error
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "not authenticated".into()),
            ));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        if username.is_empty() {
            return Err(AuthnError::Refused("the review named no user".into()));
        }
        let who = Requester {
            username,
            groups: user.groups.unwrap_or_default(),
        };
        self.named.put(digest, &who, REVIEW_TTL);
        Ok(who)
    }
}

impl Authenticator for TokenReviewer {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Requester, AuthnError>> + Send + 'a>> {
        Box::pin(self.review(token))
    }
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_caller_is_kept_until_its_own_expiry_and_never_by_its_token() {
        let named = Named::default();
        let who = Requester {
            username: "alice".into(),
            groups: vec![],
        };
        let (a, b) = (Named::digest("token-a"), Named::digest("token-b"));
        named.put(a, &who, Duration::from_secs(10));
        named.put(b, &who, Duration::ZERO);
        assert_eq!(named.get(&a), Some(who.clone()));
        assert_eq!(named.get(&b), None, "expired at once");
        assert_eq!(named.get(&Named::digest("token-c")), None);
        // Full of live entries: it starts over rather than grow.
        for i in 0..MAX_CACHED {
            named.put(Named::digest(&i.to_string()), &who, Duration::from_secs(10));
        }
        assert!(named.by_digest.lock().unwrap().len() <= MAX_CACHED);
    }

    #[test]
    fn only_bearer_tokens_are_read() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer(""), None);
    }
}
