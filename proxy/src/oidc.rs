//! OpenID Connect ID tokens, checked against the keys their issuer publishes, the way
//! kube-apiserver's JWT authenticator checks them: the issuer found by OIDC discovery, its
//! JWKS fetched over TLS (the provider's CA bundle, or the system's roots), cached and
//! fetched again on a schedule or when a token names a key not yet seen.
//!
//! A token whose (unverified) `iss` no provider names is not this module's: it goes to the
//! fallback authenticator (the API server's `TokenReview`). A token an issuer here claims
//! is verified here, and any doubt is a refusal: an unknown key, a symmetric or `none`
//! algorithm, a wrong audience, an expired token, a missing required claim, a user or
//! group beginning with `system:` (names the API server reserves; an IdP could otherwise
//! name itself an agent the proxy trusts to forward). The API server is then asked too, as
//! kube-apiserver's union of authenticators would, and only both refusing is a 401.
//!
//! Verification is `jsonwebtoken`'s; the one GET of a discovery document or key set is
//! hyper's client over rustls, hand-written because it is two requests with a size and
//! time bound and a per-issuer trust root, which a general HTTP client would only wrap.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lattice_gates::Requester;
use lattice_schemas::crd::oidc_provider::OIDCProviderSpec;
use rustls::pki_types::pem::PemObject;
use serde_json::{Map, Value};

use crate::authn::{Authenticator, AuthnError, Named, REVIEW_TTL};

/// Clock skew tolerated on `exp`, `nbf` and `iat` (kube-apiserver's is the same minute).
pub const LEEWAY: Duration = Duration::from_secs(60);

/// The soonest keys are fetched again for a token naming an unknown key: a flood of
/// forged key ids costs one fetch per issuer per this interval.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);

/// The largest discovery document or key set read.
pub const MAX_DOCUMENT: usize = 256 << 10;

/// How long one fetch (connect, TLS, request, body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The algorithms a token may be signed with: public-key ones only.
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// One provider as configured: its object's name, whether a parent distributed it, and
/// its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Configured {
    pub name: String,
    pub inherited: bool,
    pub spec: OIDCProviderSpec,
}

/// The providers that name callers: every one, unless an inherited provider says
/// `allowChildOverride: false`, in which case the inherited ones only. Two providers for
/// one issuer (the webhook refuses a second local one, but a parent may distribute one a
/// child already had): the inherited one, then the first by name.
pub fn in_force(mut configured: Vec<Configured>) -> Vec<Configured> {
    configured.sort_by(|a, b| b.inherited.cmp(&a.inherited).then(a.name.cmp(&b.name)));
    let sealed = configured
        .iter()
        .any(|c| c.inherited && !c.spec.allow_child_override);
    let mut seen = std::collections::BTreeSet::new();
    configured
        .into_iter()
        .filter(|c| !sealed || c.inherited)
        .filter(|c| seen.insert(c.spec.issuer_url.clone()))
        .collect()
}

/// ID tokens of the configured issuers; everything else to `fallback`.
pub struct Oidc {
    issuers: RwLock<Arc<BTreeMap<String, Arc<Issuer>>>>,
    fallback: Arc<dyn Authenticator>,
}

impl Oidc {
    /// No issuers yet: every token goes to `fallback` until [`Oidc::configure`].
    pub fn new(fallback: Arc<dyn Authenticator>) -> Oidc {
        Oidc {
            issuers: RwLock::default(),
            fallback,
        }
    }

    /// Makes `providers` (see [`in_force`]) the issuers. An issuer whose spec did not change
    /// keeps its fetched keys.
    pub fn configure(&self, providers: Vec<Configured>) {
        let before = self.current();
        let mut next = BTreeMap::new();
        for c in in_force(providers) {
            let issuer = match before.get(&c.spec.issuer_url) {
                Some(i) if i.spec == c.spec => i.clone(),
                _ => Arc::new(Issuer::new(c.name.clone(), c.spec.clone())),
            };
            next.insert(c.spec.issuer_url.clone(), issuer);
        }
        let mut issuers = self.issuers.write().unwrap_or_else(|e| e.into_inner());
        *issuers = Arc::new(next);
    }

    /// Each provider in force (by object name) and whether its keys are at hand, fetching
    /// those due: what the providers' status reports. Issuers are asked concurrently.
    pub async fn states(&self) -> BTreeMap<String, IssuerState> {
        let issuers: Vec<Arc<Issuer>> = self.current().values().cloned().collect();
        let states = futures::future::join_all(issuers.iter().map(|i| i.state())).await;
        issuers.iter().map(|i| i.name.clone()).zip(states).collect()
    }

    fn current(&self) -> Arc<BTreeMap<String, Arc<Issuer>>> {
        self.issuers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn check(&self, token: &str) -> Result<Requester, AuthnError> {
        let issuers = self.current();
        // No provider: the token is not decoded at all (service-account tokens are JWTs too).
        let issuer = if issuers.is_empty() {
            None
        } else {
            claimed_issuer(token).and_then(|iss| issuers.get(&iss).cloned())
        };
        let Some(issuer) = issuer else {
            return self.fallback.authenticate(token).await;
        };
        let refused = match issuer.authenticate(token).await {
            Ok(who) => return Ok(who),
            Err(e) => e,
        };
        // As kube-apiserver's union of authenticators: an issuer's refusal is not the last
        // word when the API server issued the token under the same name (a provider
        // configured with a cluster's service-account issuer). Either one vouching is
        // enough; both refusing is a 401 with both reasons.
        match self.fallback.authenticate(token).await {
            Ok(who) => Ok(who),
            Err(other) => {
                let why = format!(
                    "OIDCProvider {}: {}; the API server: {}",
                    issuer.name,
                    reason(&refused),
                    reason(&other)
                );
                Err(match (refused, other) {
                    (AuthnError::Unavailable(_), AuthnError::Unavailable(_)) => {
                        AuthnError::Unavailable(why)
                    }
                    _ => AuthnError::Refused(why),
                })
            }
        }
    }
}

impl Authenticator for Oidc {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Requester, AuthnError>> + Send + 'a>> {
        Box::pin(self.check(token))
    }
}

fn reason(e: &AuthnError) -> &str {
    match e {
        AuthnError::Missing => "no token",
        AuthnError::Refused(m) | AuthnError::Unavailable(m) => m,
    }
}

/// The `iss` a token claims, read without verifying anything: only to pick the issuer
/// that will verify it.
pub fn claimed_issuer(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    if payload.len() > MAX_DOCUMENT {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// Whether a provider can verify tokens now, and why (or why not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerState {
    pub ready: bool,
    pub message: String,
}

/// One issuer: its spec, its TLS trust, and its keys as last fetched.
struct Issuer {
    name: String,
    spec: OIDCProviderSpec,
    tls: Result<Arc<rustls::ClientConfig>, String>,
    keys: tokio::sync::Mutex<Option<Keys>>,
    /// The last fetch that failed while no keys were held: callers wait [`MIN_REFETCH`]
    /// before the issuer is asked again.
    failed: std::sync::Mutex<Option<(Instant, String)>>,
    /// Tokens verified, for [`REVIEW_TTL`] or until they expire, whichever is sooner: a
    /// client reuses its token, and a signature check costs as much as the Cedar decision.
    named: Named,
}

struct Keys {
    set: JwkSet,
    fetched: Instant,
}

impl Issuer {
    fn new(name: String, spec: OIDCProviderSpec) -> Issuer {
        let tls = client_tls(spec.ca_bundle.as_deref()).map(Arc::new);
        Issuer {
            name,
            spec,
            tls,
            keys: tokio::sync::Mutex::default(),
            failed: std::sync::Mutex::default(),
            named: Named::default(),
        }
    }

    async fn authenticate(&self, token: &str) -> Result<Requester, AuthnError> {
        let digest = Named::digest(token);
        if let Some(who) = self.named.get(&digest) {
            return Ok(who);
        }
        let header = header(token)?;
        let key = self.key(header.kid.as_deref(), header.alg).await?;
        let claims = verify(&self.spec, &key, header.alg, token)?;
        let who = identity(&self.spec, &claims)?;
        let left = claims
            .get("exp")
            .and_then(Value::as_i64)
            .map_or(0, |exp| exp - jiff::Timestamp::now().as_second());
        let ttl = REVIEW_TTL.min(Duration::from_secs(u64::try_from(left).unwrap_or(0)));
        if !ttl.is_zero() {
            self.named.put(digest, &who, ttl);
        }
        Ok(who)
    }

    /// The key that signed a token naming `kid` with `alg`: from the cached set, or after
    /// fetching it again when it is stale or lacks the key (at most once per
    /// [`MIN_REFETCH`]). A fetch that fails leaves the last good set in use.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, AuthnError> {
        let mut keys = self.keys.lock().await;
        let missing = keys
            .as_ref()
            .is_none_or(|k| pick(&k.set, kid, alg).ok().flatten().is_none());
        self.refresh(&mut keys, missing)
            .await
            .map_err(AuthnError::Unavailable)?;
        let set = &keys
            .as_ref()
            .ok_or_else(|| {
                AuthnError::Unavailable("the issuer's keys have not been fetched".into())
            })?
            .set;
        pick(set, kid, alg)?.ok_or_else(|| {
            AuthnError::Refused(match kid {
                Some(k) => format!("the issuer publishes no key {k:?}"),
                None => "the token names no key and the issuer publishes more than one".into(),
            })
        })
    }

    /// Fetches the keys when none are held, when they are older than the refresh interval,
    /// or when `wanted` (a token names a key the set lacks), but never twice within
    /// [`MIN_REFETCH`]. An error only while no keys are held: a failed refresh keeps the
    /// last good set, and says so in [`Issuer::state`].
    async fn refresh(&self, keys: &mut Option<Keys>, wanted: bool) -> Result<(), String> {
        let refresh =
            Duration::from_secs(u64::from(self.spec.jwks_refresh_interval_seconds.max(60)));
        let last_try = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(at, why)| (*at, why.clone()));
        let tried_at = [
            keys.as_ref().map(|k| k.fetched),
            last_try.as_ref().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .max();
        if tried_at.is_some_and(|at| at.elapsed() < MIN_REFETCH) {
            return match (keys.as_ref(), last_try) {
                (None, Some((at, why))) => Err(format!(
                    "{why} ({}s ago; asked again after {}s)",
                    at.elapsed().as_secs(),
                    MIN_REFETCH.as_secs()
                )),
                _ => Ok(()),
            };
        }
        let stale = keys.as_ref().is_none_or(|k| k.fetched.elapsed() >= refresh);
        if !(stale || wanted) {
            return Ok(());
        }
        match self.fetch().await {
            Ok(set) => {
                *keys = Some(Keys {
                    set,
                    fetched: Instant::now(),
                });
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(provider = %self.name, issuer = %self.spec.issuer_url, held = keys.is_some(), "OIDC keys cannot be fetched: {e}");
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), e.clone()));
                if keys.is_none() { Err(e) } else { Ok(()) }
            }
        }
    }

    /// Whether the issuer's keys are at hand (fetching them when due), as a status says it.
    async fn state(&self) -> IssuerState {
        let mut keys = self.keys.lock().await;
        let fetched = self.refresh(&mut keys, false).await;
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, why)| why.clone());
        match (keys.as_ref(), fetched) {
            (Some(k), _) => IssuerState {
                ready: true,
                message: match failed {
                    None => format!("{} keys from the issuer's JWKS", k.set.keys.len()),
                    Some(why) => format!(
                        "{} keys in use; the last refresh failed: {why}",
                        k.set.keys.len()
                    ),
                },
            },
            (None, Err(why)) => IssuerState {
                ready: false,
                message: why,
            },
            (None, Ok(())) => IssuerState {
                ready: false,
                message: "the issuer's keys have not been fetched yet".into(),
            },
        }
    }

    /// Discovery, then the key set it points to.
    async fn fetch(&self) -> Result<JwkSet, String> {
        let tls = self.tls.clone()?;
        let discovery: Value =
            serde_json::from_slice(&get(&tls, &self.spec.discovery(), "application/json").await?)
                .map_err(|e| format!("the discovery document is not JSON: {e}"))?;
        let issuer = discovery.get("issuer").and_then(Value::as_str);
        if issuer != Some(self.spec.issuer_url.as_str()) {
            return Err(format!(
                "the discovery document names issuer {issuer:?}, not {:?}",
                self.spec.issuer_url
            ));
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("the discovery document names no jwks_uri")?;
        // RFC 7517's media type first: kube-apiserver answers 406 to a plain JSON accept.
        let accept = "application/jwk-set+json, application/json;q=0.9";
        let set: JwkSet = serde_json::from_slice(&get(&tls, jwks_uri, accept).await?)
            .map_err(|e| format!("the key set at {jwks_uri} does not read: {e}"))?;
        tracing::info!(provider = %self.name, issuer = %self.spec.issuer_url, keys = set.keys.len(), "OIDC keys fetched");
        Ok(set)
    }
}

/// A token's header, if it is a JWT signed with a public-key algorithm.
fn header(token: &str) -> Result<jsonwebtoken::Header, AuthnError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| AuthnError::Refused(format!("not a JWT: {e}")))?;
    if !ASYMMETRIC.contains(&header.alg) {
        return Err(AuthnError::Refused(format!(
            "tokens signed with {:?} are refused; only public-key signatures are accepted",
            header.alg
        )));
    }
    Ok(header)
}

/// Everything the proxy checks of a token once its issuer's keys are at hand: what
/// [`Oidc`] does after fetching them, without the network (tests and the fuzz target use
/// it).
pub fn check_token(
    spec: &OIDCProviderSpec,
    set: &JwkSet,
    token: &str,
) -> Result<Requester, AuthnError> {
    let header = header(token)?;
    let key = pick(set, header.kid.as_deref(), header.alg)?
        .ok_or_else(|| AuthnError::Refused("the issuer publishes no such key".into()))?;
    identity(spec, &verify(spec, &key, header.alg, token)?)
}

/// The key in `set` for `kid` (or the only key, when the token names none), if it may
/// sign with `alg`.
fn pick(
    set: &JwkSet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Option<DecodingKey>, AuthnError> {
    let jwk = match kid {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    };
    let Some(jwk) = jwk else { return Ok(None) };
    if let Some(declared) = jwk.common.key_algorithm {
        let (declared, used) = (
            serde_json::to_value(declared).ok(),
            serde_json::to_value(alg).ok(),
        );
        if declared != used {
            return Err(AuthnError::Refused(format!(
                "the key is for {declared:?}, the token is signed with {used:?}"
            )));
        }
    }
    DecodingKey::from_jwk(jwk)
        .map(Some)
        .map_err(|e| AuthnError::Refused(format!("the issuer's key does not read: {e}")))
}

/// The token's claims, if `key` signed it for one of the accepted audiences, by this
/// issuer, and it is in its validity window.
pub fn verify(
    spec: &OIDCProviderSpec,
    key: &DecodingKey,
    alg: Algorithm,
    token: &str,
) -> Result<Map<String, Value>, AuthnError> {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY.as_secs();
    v.validate_nbf = true;
    v.set_issuer(&[&spec.issuer_url]);
    v.set_audience(&spec.accepted_audiences());
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &v)
        .map_err(|e| AuthnError::Refused(format!("the ID token is not valid: {e}")))?;
    let claims = data.claims;
    // `iat` in the future is a token from a clock that cannot be trusted.
    if let Some(iat) = claims.get("iat").and_then(Value::as_i64) {
        let now = jiff::Timestamp::now().as_second();
        if iat > now + LEEWAY.as_secs() as i64 {
            return Err(AuthnError::Refused(
                "the token was issued in the future".into(),
            ));
        }
    }
    Ok(claims)
}

/// The caller verified claims name, as `spec` maps them.
pub fn identity(
    spec: &OIDCProviderSpec,
    claims: &Map<String, Value>,
) -> Result<Requester, AuthnError> {
    let refused = |why: String| AuthnError::Refused(why);
    for required in &spec.required_claims {
        let Some(value) = claims.get(&required.name) else {
            return Err(refused(format!(
                "the token lacks the required claim {:?}",
                required.name
            )));
        };
        if let Some(want) = &required.value {
            let have = match value {
                Value::String(s) => s.clone(),
                Value::Bool(_) | Value::Number(_) => value.to_string(),
                _ => String::new(),
            };
            if &have != want {
                return Err(refused(format!(
                    "claim {:?} is not {want:?}",
                    required.name
                )));
            }
        }
    }
    let user = claims
        .get(&spec.username_claim)
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            refused(format!(
                "the token has no {:?} claim naming a user",
                spec.username_claim
            ))
        })?;
    // As kube-apiserver: an email names a user only once verified.
    if spec.username_claim == "email"
        && claims
            .get("email_verified")
            .is_some_and(|v| v != &Value::Bool(true))
    {
        return Err(refused("the token's email is not verified".into()));
    }
    let groups: Vec<String> = match claims.get(&spec.groups_claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(g)) => vec![g.clone()],
        Some(Value::Array(gs)) => gs
            .iter()
            .map(|g| g.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                refused(format!(
                    "claim {:?} is not a list of strings",
                    spec.groups_claim
                ))
            })?,
        Some(_) => {
            return Err(refused(format!(
                "claim {:?} is not a list of strings",
                spec.groups_claim
            )));
        }
    };
    let username = format!("{}{user}", spec.username_prefix.as_deref().unwrap_or(""));
    let group_prefix = spec.groups_prefix.as_deref().unwrap_or("");
    let groups: Vec<String> = groups
        .into_iter()
        .map(|g| format!("{group_prefix}{g}"))
        .collect();
    if let Some(reserved) = std::iter::once(&username)
        .chain(&groups)
        .find(|n| n.starts_with("system:"))
    {
        return Err(refused(format!(
            "{reserved:?} begins with `system:`, which only the API server names; set a usernamePrefix / groupsPrefix"
        )));
    }
    Ok(Requester { username, groups })
}

/// TLS for fetching from an issuer: its CA bundle, or the system's roots. (Also what
/// `lattice login --oidc-issuer` trusts an issuer by.)
pub fn client_tls(ca_bundle: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_bundle {
        Some(pem) => {
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the CA bundle does not read: {e}"))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err("the CA bundle holds no usable certificate".into());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("no CA bundle is set and the system has no roots".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// One HTTPS GET: the body, if the answer is a 200 within the bounds.
async fn get(tls: &Arc<rustls::ClientConfig>, url: &str, accept: &str) -> Result<Bytes, String> {
    tokio::time::timeout(FETCH_TIMEOUT, get_unbounded(tls, url, accept))
        .await
        .map_err(|_| format!("GET {url}: no answer within {FETCH_TIMEOUT:?}"))?
}

async fn get_unbounded(
    tls: &Arc<rustls::ClientConfig>,
    url: &str,
    accept: &str,
) -> Result<Bytes, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("{url} is not https"));
    }
    let host = uri.host().ok_or_else(|| format!("{url} names no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("{host:?} is not a server name: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("GET {url}: TLS: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or(host);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, accept)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = send
        .send_request(request)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("GET {url}: {}", response.status()));
    }
    Limited::new(response.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("GET {url}: the body is not read within {MAX_DOCUMENT} bytes: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use lattice_schemas::crd::oidc_provider::RequiredClaim;
    use serde_json::json;

    const ISSUER: &str = "https://idp.example.com";

    struct Signer {
        encoding: EncodingKey,
        set: JwkSet,
    }

    fn signer(kid: &str) -> Signer {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let set: JwkSet = serde_json::from_value(json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }]}))
        .unwrap();
        Signer {
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            set,
        }
    }

    fn sign(s: &Signer, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &s.encoding).unwrap()
    }

    fn spec() -> OIDCProviderSpec {
        OIDCProviderSpec {
            issuer_url: ISSUER.into(),
            client_id: "lattice".into(),
            username_prefix: Some("oidc:".into()),
            groups_prefix: Some("oidc:".into()),
            ..OIDCProviderSpec::default()
        }
    }

    fn claims(extra: Value) -> Value {
        let now = jiff::Timestamp::now().as_second();
        let mut c = json!({
            "iss": ISSUER, "aud": "lattice", "sub": "alice", "groups": ["dev", "ops"],
            "iat": now, "exp": now + 600,
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    use super::check_token as check;

    fn refused(r: Result<Requester, AuthnError>, why: &str) {
        match r {
            Err(AuthnError::Refused(m)) => assert!(m.contains(why), "{m:?} does not say {why:?}"),
            other => panic!("expected a refusal ({why}), got {other:?}"),
        }
    }

    #[test]
    fn a_valid_token_names_its_prefixed_user_and_groups() {
        let s = signer("k1");
        let who = check(&spec(), &s.set, &sign(&s, "k1", &claims(json!({})))).unwrap();
        assert_eq!(who.username, "oidc:alice");
        assert_eq!(who.groups, ["oidc:dev", "oidc:ops"]);
        // A single group as a string, another username claim, extra audiences.
        let mut sp = spec();
        sp.username_claim = "email".into();
        sp.audiences = vec!["kubernetes".into(), "lattice-proxy".into()];
        let t = sign(
            &s,
            "k1",
            &claims(
                json!({"aud": ["other", "lattice-proxy"], "email": "a@x.io", "email_verified": true, "groups": "dev"}),
            ),
        );
        let who = check(&sp, &s.set, &t).unwrap();
        assert_eq!(
            (who.username.as_str(), who.groups.as_slice()),
            ("oidc:a@x.io", &["oidc:dev".to_owned()][..])
        );
    }

    #[test]
    fn every_doubt_is_a_refusal() {
        let s = signer("k1");
        let now = jiff::Timestamp::now().as_second();
        let sp = spec();
        let t = |extra: Value| sign(&s, "k1", &claims(extra));
        refused(
            check(&sp, &s.set, &t(json!({"aud": "someone-else"}))),
            "InvalidAudience",
        );
        refused(
            check(&sp, &s.set, &t(json!({"iss": "https://evil.example.com"}))),
            "InvalidIssuer",
        );
        refused(
            check(&sp, &s.set, &t(json!({"exp": now - 120}))),
            "ExpiredSignature",
        );
        refused(check(&sp, &s.set, &t(json!({"exp": null}))), "exp");
        refused(
            check(&sp, &s.set, &t(json!({"nbf": now + 600}))),
            "ImmatureSignature",
        );
        refused(check(&sp, &s.set, &t(json!({"iat": now + 600}))), "future");
        refused(check(&sp, &s.set, &t(json!({"sub": null}))), "\"sub\"");
        refused(
            check(&sp, &s.set, &t(json!({"groups": [1, 2]}))),
            "list of strings",
        );
        // Another key, claiming the published kid: the signature does not verify.
        let forger = signer("k1");
        refused(
            check(&sp, &s.set, &sign(&forger, "k1", &claims(json!({})))),
            "InvalidSignature",
        );
        // A tampered payload under a valid signature.
        let good = t(json!({}));
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(claims(json!({"sub": "admin"})).to_string());
        parts[1] = &evil;
        refused(check(&sp, &s.set, &parts.join(".")), "InvalidSignature");
        // A key declared for another algorithm.
        let mut set = s.set.clone();
        set.keys[0].common.key_algorithm = Some(jsonwebtoken::jwk::KeyAlgorithm::ES384);
        refused(check(&sp, &set, &t(json!({}))), "the key is for");
    }

    #[test]
    fn reserved_names_unverified_emails_and_missing_claims_are_refused() {
        let s = signer("k1");
        let mut sp = spec();
        sp.username_prefix = None;
        let t = |extra: Value| sign(&s, "k1", &claims(extra));
        refused(
            check(
                &sp,
                &s.set,
                &t(json!({"sub": "system:serviceaccount:lattice-system:lattice-agent"})),
            ),
            "system:",
        );
        sp.groups_prefix = None;
        refused(
            check(&sp, &s.set, &t(json!({"groups": ["system:masters"]}))),
            "system:",
        );
        let mut sp = spec();
        sp.username_claim = "email".into();
        refused(
            check(
                &sp,
                &s.set,
                &t(json!({"email": "a@x.io", "email_verified": false})),
            ),
            "not verified",
        );
        let mut sp = spec();
        sp.required_claims = vec![
            RequiredClaim {
                name: "hd".into(),
                value: Some("example.com".into()),
            },
            RequiredClaim {
                name: "mfa".into(),
                value: Some("true".into()),
            },
        ];
        refused(check(&sp, &s.set, &t(json!({"mfa": true}))), "\"hd\"");
        refused(
            check(&sp, &s.set, &t(json!({"hd": "evil.com", "mfa": true}))),
            "\"hd\"",
        );
        refused(
            check(&sp, &s.set, &t(json!({"hd": "example.com", "mfa": false}))),
            "\"mfa\"",
        );
        assert!(check(&sp, &s.set, &t(json!({"hd": "example.com", "mfa": true}))).is_ok());
    }

    #[tokio::test]
    async fn only_public_key_algorithms_and_known_issuers_reach_verification() {
        struct Nobody;
        impl Authenticator for Nobody {
            fn authenticate<'a>(
                &'a self,
                _: &'a str,
            ) -> Pin<Box<dyn Future<Output = Result<Requester, AuthnError>> + Send + 'a>>
            {
                Box::pin(async { Err(AuthnError::Refused("fallback".into())) })
            }
        }
        let oidc = Oidc::new(Arc::new(Nobody));
        oidc.configure(vec![Configured {
            name: "idp".into(),
            inherited: false,
            spec: spec(),
        }]);
        // HMAC with a guessable secret, claiming the configured issuer: refused before any key.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(json!({})),
            &EncodingKey::from_secret(b"x"),
        )
        .unwrap();
        refused(oidc.check(&hs).await, "HS256");
        // Another issuer, or no JWT at all: the fallback decides.
        let s = signer("k1");
        let other = sign(
            &s,
            "k1",
            &claims(json!({"iss": "https://elsewhere.example.com"})),
        );
        refused(oidc.check(&other).await, "fallback");
        refused(oidc.check("not-a-jwt").await, "fallback");
        assert_eq!(claimed_issuer("a.b"), None);
        assert_eq!(claimed_issuer("a.!!!.c"), None);
        assert_eq!(
            claimed_issuer(&other).as_deref(),
            Some("https://elsewhere.example.com")
        );
    }

    #[test]
    fn an_inherited_provider_that_allows_no_others_is_the_only_one() {
        let p = |name: &str, inherited: bool, issuer: &str, allow: bool| Configured {
            name: name.into(),
            inherited,
            spec: OIDCProviderSpec {
                issuer_url: issuer.into(),
                allow_child_override: allow,
                ..spec()
            },
        };
        let names = |v: Vec<Configured>| v.into_iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(
            names(in_force(vec![
                p("local", false, "https://a", false),
                p("parent", true, "https://b", true)
            ])),
            ["parent", "local"]
        );
        assert_eq!(
            names(in_force(vec![
                p("local", false, "https://a", false),
                p("parent", true, "https://b", false)
            ])),
            ["parent"]
        );
        // One issuer twice: the inherited one, else the first by name.
        assert_eq!(
            names(in_force(vec![
                p("z", false, "https://a", true),
                p("a", false, "https://a", true)
            ])),
            ["a"]
        );
        assert_eq!(
            names(in_force(vec![
                p("a", false, "https://a", true),
                p("z", true, "https://a", true)
            ])),
            ["z"]
        );
    }
}
