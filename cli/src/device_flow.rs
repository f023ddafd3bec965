//! `lattice login --oidc-issuer`: an OpenID Connect ID token got with the OAuth 2.0 device
//! authorization grant (RFC 8628), the way a person logs in from a terminal with no browser
//! of its own.
//!
//! 1. Discovery: `<issuer>/.well-known/openid-configuration`, whose `issuer` must be the
//!    issuer asked for (OpenID Connect Discovery §4.3), and whose device authorization and
//!    token endpoints must be `https`.
//! 2. The device authorization request gives a user code and the page to enter it at,
//!    which `lattice login` prints.
//! 3. The token endpoint is polled at the interval the issuer asks for (five seconds more
//!    after each `slow_down`) until the person approves (`authorization_pending` until then),
//!    refuses (`access_denied`), or the code expires (`expired_token`, or its `expires_in`
//!    passing).
//! 4. The answer's `id_token` is checked as OpenID Connect Core §3.1.3.7 allows for a token
//!    received straight from the token endpoint over TLS: its `iss` is the issuer, its `aud`
//!    holds the client, and it has not expired. Its signature is the proxy's to verify, on
//!    every call, against the issuer's keys (`OIDCProvider`).
//!
//! 5. When the issuer lists `offline_access` among its scopes, it is asked for too, and the
//!    refresh token the issuer gives is kept with the login: `lattice token` trades it
//!    ([`DeviceFlow::refresh`]) for a new ID token when the old one expires, checked the same
//!    way, and keeps the refresh token the issuer rotates to. A refresh the issuer refuses
//!    ends the login (log in again).
//!
//! Every answer is read within [`MAX_ANSWER`] bytes and [`REQUEST_TIMEOUT`]; the parts that
//! read the issuer's answers are pure functions, tested without a network.

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

/// The most any answer of the issuer's may hold.
pub const MAX_ANSWER: usize = 64 * 1024;
/// How long one request to the issuer may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 8628 §3.2: the interval when the issuer states none.
const DEFAULT_INTERVAL: u64 = 5;
/// RFC 8628 §3.5: how much longer to wait after `slow_down`.
const SLOW_DOWN: u64 = 5;
/// The longest wait between polls honoured (an issuer asking for more is waited on this long).
const MAX_INTERVAL: u64 = 60;
/// The longest a code is waited on, whatever the issuer says (RFC 8628's example is 30 min).
pub const MAX_CODE_LIFETIME: u64 = 3600;

/// The OpenID Connect client `lattice login` acts as.
#[derive(Clone, Debug)]
pub struct Client {
    /// The issuer's URL, `https://…`, as its ID tokens name it.
    pub issuer: String,
    pub client_id: String,
    /// For an issuer that requires the client to authenticate (HTTP Basic).
    pub client_secret: Option<String>,
    /// The CA (PEM) the issuer's certificate chains to, if not the system's roots.
    pub certificate_authority: Option<String>,
    /// What is asked for; `openid` is always among them.
    pub scopes: Vec<String>,
}

/// Why a device-flow login did not give a token.
#[derive(Debug, thiserror::Error)]
pub enum DeviceFlowError {
    /// The person refused the request at the issuer (`access_denied`).
    #[error("the login was refused at {issuer}")]
    Refused { issuer: String },
    /// Nobody approved the code before it expired, or the issuer no longer honours the
    /// login's refresh token.
    #[error("the login at {issuer} expired: run `lattice login` again")]
    Expired { issuer: String },
    /// The issuer cannot be reached, or answered what a device-flow issuer does not.
    #[error("{0}")]
    Unusable(String),
}

/// Where the issuer's device flow is served (from its discovery document).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub device_authorization: String,
    pub token: String,
    /// Whether it lists `offline_access` (refresh tokens) among its scopes.
    pub offline_access: bool,
}

/// What the token endpoint gives for an approved code or a refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    pub id_token: String,
    pub refresh_token: Option<String>,
}

/// The device authorization response (RFC 8628 §3.2).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DeviceCode {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    #[serde(default)]
    pub interval: Option<u64>,
}

/// What one poll of the token endpoint says (RFC 8628 §3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Approved: the tokens.
    Token(Tokens),
    Pending,
    SlowDown,
    Denied,
    Expired,
    /// Anything else: why.
    Failed(String),
}

/// The issuer without a trailing `/`, if it is `https://HOST[:PORT][/PATH]` with no query.
pub fn check_issuer(issuer: &str) -> Result<String, DeviceFlowError> {
    let trimmed = issuer.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|_| DeviceFlowError::Unusable(format!("{issuer:?} is not a URL")))?;
    if uri.scheme_str() != Some("https")
        || uri.host().is_none_or(str::is_empty)
        || uri.query().is_some()
        || trimmed.contains('@')
    {
        return Err(DeviceFlowError::Unusable(format!(
            "the issuer {issuer:?} is not https://HOST[:PORT][/PATH]"
        )));
    }
    Ok(trimmed.to_owned())
}

/// The endpoints of `issuer`'s discovery document, if it is `issuer`'s and offers the
/// device flow over `https`.
pub fn read_discovery(issuer: &str, body: &[u8]) -> Result<Endpoints, DeviceFlowError> {
    #[derive(Deserialize)]
    struct Discovery {
        issuer: String,
        token_endpoint: Option<String>,
        device_authorization_endpoint: Option<String>,
        #[serde(default)]
        scopes_supported: Vec<String>,
    }
    let unusable = DeviceFlowError::Unusable;
    let document: Discovery = serde_json::from_slice(body)
        .map_err(|e| unusable(format!("{issuer}'s discovery document does not read: {e}")))?;
    if document.issuer.trim_end_matches('/') != issuer {
        return Err(unusable(format!(
            "the discovery document at {issuer} names another issuer, {:?}",
            document.issuer
        )));
    }
    let device_authorization = document.device_authorization_endpoint.ok_or_else(|| {
        unusable(format!(
            "{issuer} does not offer the device flow (its discovery document has no device_authorization_endpoint)"
        ))
    })?;
    let token = document.token_endpoint.ok_or_else(|| {
        unusable(format!(
            "{issuer}'s discovery document has no token_endpoint"
        ))
    })?;
    for endpoint in [&device_authorization, &token] {
        if !endpoint.starts_with("https://") {
            return Err(unusable(format!(
                "{issuer} names an endpoint that is not https: {endpoint}"
            )));
        }
    }
    Ok(Endpoints {
        device_authorization,
        token,
        offline_access: document
            .scopes_supported
            .iter()
            .any(|s| s == "offline_access"),
    })
}

/// The device authorization response, if the request succeeded and it is one.
pub fn read_device_code(
    issuer: &str,
    status: u16,
    body: &[u8],
) -> Result<DeviceCode, DeviceFlowError> {
    if status != 200 {
        return Err(DeviceFlowError::Unusable(format!(
            "{issuer} refused the device authorization request ({status}{})",
            oauth_error(body)
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )));
    }
    let code: DeviceCode = serde_json::from_slice(body).map_err(|e| {
        DeviceFlowError::Unusable(format!(
            "{issuer}'s device authorization response does not read: {e}"
        ))
    })?;
    let printable = |s: &str| !s.is_empty() && !s.chars().any(char::is_control);
    if code.expires_in == 0
        || !printable(&code.user_code)
        || !printable(&code.device_code)
        || !code.verification_uri.starts_with("https://")
        || !printable(&code.verification_uri)
        || code
            .verification_uri_complete
            .as_deref()
            .is_some_and(|u| !u.starts_with("https://") || !printable(u))
    {
        return Err(DeviceFlowError::Unusable(format!(
            "{issuer}'s device authorization response is not usable: an empty code or a page that is not https"
        )));
    }
    Ok(code)
}

/// An OAuth error answer's `error` code, if the body is one.
fn oauth_error_code(body: &[u8]) -> Option<&str> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        error: std::borrow::Cow<'a, str>,
    }
    match serde_json::from_slice::<Answer>(body).ok()?.error {
        std::borrow::Cow::Borrowed(code) => Some(code),
        // An escaped code names none of the registered ones.
        std::borrow::Cow::Owned(_) => None,
    }
}

/// An OAuth error answer's `error` (and `error_description`), if the body is one.
fn oauth_error(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?.as_str()?;
    Some(
        match value.get("error_description").and_then(Value::as_str) {
            Some(d) if !d.is_empty() => format!("{error} ({d})"),
            _ => error.to_owned(),
        },
    )
}

/// What one answer of the token endpoint says.
pub fn read_poll(status: u16, body: &[u8]) -> Poll {
    if status == 200 {
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return Poll::Failed(format!("the token response does not read: {e}")),
        };
        let refresh_token = value
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        return match value.get("id_token").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => Poll::Token(Tokens {
                id_token: t.to_owned(),
                refresh_token,
            }),
            _ => Poll::Failed(
                "the token response holds no id_token (is `openid` among the scopes the client may ask for?)".into(),
            ),
        };
    }
    match oauth_error_code(body) {
        Some("authorization_pending") => Poll::Pending,
        Some("slow_down") => Poll::SlowDown,
        Some("access_denied") => Poll::Denied,
        Some("expired_token") => Poll::Expired,
        _ => Poll::Failed(format!(
            "the token endpoint answered {status}{}",
            oauth_error(body)
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )),
    }
}

/// Checks an ID token received from `issuer`'s token endpoint: its `iss`, that its `aud`
/// holds `client_id`, and that it has not expired at `now`. Its expiry.
pub fn check_id_token(
    token: &str,
    issuer: &str,
    client_id: &str,
    now: jiff::Timestamp,
) -> Result<jiff::Timestamp, DeviceFlowError> {
    let bad = |why: String| DeviceFlowError::Unusable(format!("the ID token from {issuer} {why}"));
    let mut parts = token.split('.');
    let claims = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(claims), Some(_), None) => claims,
        _ => return Err(bad("is not a JWT".into())),
    };
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .map_err(|_| bad("is not a JWT".into()))?;
    let claims: Value =
        serde_json::from_slice(&claims).map_err(|_| bad("holds no JSON claims".into()))?;
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if iss.trim_end_matches('/') != issuer {
        return Err(bad(format!("names another issuer, {iss:?}")));
    }
    let audience = match claims.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    };
    if !audience {
        return Err(bad(format!("is not for the client {client_id:?}")));
    }
    let expiry = claims
        .get("exp")
        .and_then(Value::as_i64)
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .ok_or_else(|| bad("states no expiry".into()))?;
    if expiry <= now {
        return Err(bad(format!("expired at {expiry}")));
    }
    Ok(expiry)
}

/// The scopes asked for: `openid` first, then the others given, each once.
pub fn scopes(given: &[String]) -> Vec<String> {
    let mut all = vec!["openid".to_owned()];
    for s in given.iter().flat_map(|s| s.split_whitespace()) {
        if !all.iter().any(|a| a == s) {
            all.push(s.to_owned());
        }
    }
    all
}

/// How long to wait before the next poll, after `answer`, having waited `interval` so far.
pub fn next_interval(interval: u64, answer: &Poll) -> u64 {
    let next = match answer {
        Poll::SlowDown => interval + SLOW_DOWN,
        _ => interval,
    };
    next.clamp(1, MAX_INTERVAL)
}

/// The device flow against one issuer, over HTTPS.
pub struct DeviceFlow {
    client: Client,
    http: reqwest::Client,
}

impl DeviceFlow {
    /// A flow for `client`, trusting its CA or the system's roots.
    pub fn new(client: Client) -> Result<DeviceFlow, DeviceFlowError> {
        let tls = lattice_proxy::oidc::client_tls(client.certificate_authority.as_deref())
            .map_err(|e| DeviceFlowError::Unusable(format!("TLS for the issuer: {e}")))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DeviceFlowError::Unusable(format!("cannot make an HTTPS client: {e}")))?;
        Ok(DeviceFlow { client, http })
    }

    /// Discovery, then the device authorization request: the code to show the person.
    pub async fn begin(&self) -> Result<(Endpoints, DeviceCode), DeviceFlowError> {
        let issuer = &self.client.issuer;
        let url = format!("{issuer}/.well-known/openid-configuration");
        let (status, body) = self.send(self.http.get(&url)).await?;
        if status != 200 {
            return Err(DeviceFlowError::Unusable(format!("GET {url}: {status}")));
        }
        let endpoints = read_discovery(issuer, &body)?;
        let mut asked = self.client.scopes.clone();
        if endpoints.offline_access {
            asked.push("offline_access".into());
        }
        let scope = scopes(&asked).join(" ");
        let form = [
            ("client_id", self.client.client_id.as_str()),
            ("scope", scope.as_str()),
        ];
        let (status, body) = self.post(&endpoints.device_authorization, &form).await?;
        Ok((endpoints, read_device_code(issuer, status, &body)?))
    }

    /// Polls the token endpoint until the code is approved, refused or expired: the
    /// tokens, the ID token checked.
    pub async fn finish(
        &self,
        endpoints: &Endpoints,
        code: &DeviceCode,
    ) -> Result<Tokens, DeviceFlowError> {
        let issuer = &self.client.issuer;
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(code.expires_in.min(MAX_CODE_LIFETIME));
        let mut interval = code
            .interval
            .unwrap_or(DEFAULT_INTERVAL)
            .clamp(1, MAX_INTERVAL);
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", code.device_code.as_str()),
            ("client_id", self.client.client_id.as_str()),
        ];
        loop {
            let wake = tokio::time::Instant::now() + Duration::from_secs(interval);
            if wake > deadline {
                return Err(DeviceFlowError::Expired {
                    issuer: issuer.clone(),
                });
            }
            tokio::time::sleep_until(wake).await;
            let (status, body) = self.post(&endpoints.token, &form).await?;
            let answer = read_poll(status, &body);
            match answer {
                Poll::Token(tokens) => return self.checked(tokens),
                Poll::Denied => {
                    return Err(DeviceFlowError::Refused {
                        issuer: issuer.clone(),
                    });
                }
                Poll::Expired => {
                    return Err(DeviceFlowError::Expired {
                        issuer: issuer.clone(),
                    });
                }
                Poll::Failed(why) => {
                    return Err(DeviceFlowError::Unusable(format!("{issuer}: {why}")));
                }
                Poll::Pending | Poll::SlowDown => interval = next_interval(interval, &answer),
            }
        }
    }

    /// Trades `refresh_token` at `token_endpoint` for new tokens, the ID token checked; the
    /// refresh token given back (the issuer may rotate it), or the old one. A refusal
    /// (`invalid_grant`: revoked, expired or already used) is [`DeviceFlowError::Expired`].
    pub async fn refresh(
        &self,
        token_endpoint: &str,
        refresh_token: &str,
    ) -> Result<Tokens, DeviceFlowError> {
        let issuer = &self.client.issuer;
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", self.client.client_id.as_str()),
        ];
        let (status, body) = self.post(token_endpoint, &form).await?;
        match read_poll(status, &body) {
            Poll::Token(tokens) => {
                let mut tokens = self.checked(tokens)?;
                tokens
                    .refresh_token
                    .get_or_insert_with(|| refresh_token.to_owned());
                Ok(tokens)
            }
            Poll::Failed(_) if oauth_error_code(&body) == Some("invalid_grant") => {
                Err(DeviceFlowError::Expired {
                    issuer: issuer.clone(),
                })
            }
            Poll::Failed(why) => Err(DeviceFlowError::Unusable(format!("{issuer}: {why}"))),
            other => Err(DeviceFlowError::Unusable(format!(
                "{issuer} answered a refresh with {other:?}"
            ))),
        }
    }

    /// `tokens`, once their ID token is checked as this issuer's for this client, now.
    fn checked(&self, tokens: Tokens) -> Result<Tokens, DeviceFlowError> {
        check_id_token(
            &tokens.id_token,
            &self.client.issuer,
            &self.client.client_id,
            jiff::Timestamp::now(),
        )?;
        Ok(tokens)
    }

    /// POSTs `form` to `url` as the client (HTTP Basic when it has a secret).
    async fn post(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<(u16, Vec<u8>), DeviceFlowError> {
        let request = self.http.post(url).form(form);
        let request = match &self.client.client_secret {
            Some(secret) => request.basic_auth(&self.client.client_id, Some(secret)),
            None => request,
        };
        self.send(request).await
    }

    /// Sends `request`: the status and the body, read within [`MAX_ANSWER`].
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), DeviceFlowError> {
        let issuer = &self.client.issuer;
        let unreachable = |e: reqwest::Error| {
            DeviceFlowError::Unusable(format!("cannot reach the issuer {issuer}: {e}"))
        };
        let mut response = request
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(DeviceFlowError::Unusable(format!(
                    "{issuer} answered more than {MAX_ANSWER} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISSUER: &str = "https://idp.example.com";

    fn jwt(claims: Value) -> String {
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!("{}.{}.c2ln", b64(&json!({"alg": "RS256"})), b64(&claims))
    }

    #[test]
    fn issuers_must_be_https_without_a_query() {
        assert_eq!(check_issuer("https://idp.example.com/").unwrap(), ISSUER);
        assert_eq!(
            check_issuer("https://idp.example.com/realms/ops").unwrap(),
            "https://idp.example.com/realms/ops"
        );
        for bad in [
            "http://idp.example.com",
            "https://",
            "https://idp.example.com/?x=1",
            "https://u:p@idp.example.com",
            "idp",
        ] {
            assert!(check_issuer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn discovery_must_be_the_issuers_own_and_offer_the_device_flow_over_https() {
        let document = |v: Value| serde_json::to_vec(&v).unwrap();
        let good = json!({
            "issuer": "https://idp.example.com/",
            "token_endpoint": "https://idp.example.com/token",
            "device_authorization_endpoint": "https://idp.example.com/device",
        });
        assert_eq!(
            read_discovery(ISSUER, &document(good.clone())).unwrap(),
            Endpoints {
                device_authorization: "https://idp.example.com/device".into(),
                token: "https://idp.example.com/token".into(),
                offline_access: false,
            }
        );
        let mut refreshing = good.clone();
        refreshing["scopes_supported"] = json!(["openid", "offline_access"]);
        assert!(
            read_discovery(ISSUER, &document(refreshing))
                .unwrap()
                .offline_access
        );
        let mut other = good.clone();
        other["issuer"] = json!("https://evil.example.com");
        let mut no_device = good.clone();
        no_device
            .as_object_mut()
            .unwrap()
            .remove("device_authorization_endpoint");
        let mut plain = good.clone();
        plain["token_endpoint"] = json!("http://idp.example.com/token");
        for (body, says) in [
            (document(other), "names another issuer"),
            (document(no_device), "does not offer the device flow"),
            (document(plain), "not https"),
            (b"<html>".to_vec(), "does not read"),
        ] {
            let e = read_discovery(ISSUER, &body).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_device_code_must_name_an_https_page_and_a_code() {
        let body = |v: Value| serde_json::to_vec(&v).unwrap();
        let good = json!({
            "device_code": "dc", "user_code": "ABCD-EFGH",
            "verification_uri": "https://idp.example.com/device",
            "verification_uri_complete": "https://idp.example.com/device?user_code=ABCD-EFGH",
            "expires_in": 300, "interval": 5,
        });
        let code = read_device_code(ISSUER, 200, &body(good.clone())).unwrap();
        assert_eq!(code.user_code, "ABCD-EFGH");
        assert_eq!(code.interval, Some(5));
        let mut phishing = good.clone();
        phishing["verification_uri"] = json!("http://idp.example.com/device");
        let mut control = good.clone();
        control["user_code"] = json!("AB\u{1b}[2J");
        let mut dead = good.clone();
        dead["expires_in"] = json!(0);
        for b in [body(phishing), body(control), body(dead)] {
            assert!(read_device_code(ISSUER, 200, &b).is_err());
        }
        let refused = read_device_code(
            ISSUER,
            401,
            &body(json!({"error": "invalid_client", "error_description": "bad secret"})),
        )
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains("401: invalid_client (bad secret)"),
            "{refused}"
        );
    }

    #[test]
    fn token_answers_are_read_as_rfc_8628_says() {
        let error = |e: &str| serde_json::to_vec(&json!({"error": e})).unwrap();
        assert_eq!(
            read_poll(400, &error("authorization_pending")),
            Poll::Pending
        );
        assert_eq!(read_poll(400, &error("slow_down")), Poll::SlowDown);
        assert_eq!(read_poll(400, &error("access_denied")), Poll::Denied);
        assert_eq!(read_poll(400, &error("expired_token")), Poll::Expired);
        assert!(
            matches!(read_poll(400, &error("invalid_grant")), Poll::Failed(w) if w.contains("invalid_grant"))
        );
        assert!(matches!(read_poll(502, b"<html>"), Poll::Failed(w) if w.contains("502")));
        assert_eq!(
            read_poll(200, br#"{"access_token":"a","id_token":"x.y.z"}"#),
            Poll::Token(Tokens {
                id_token: "x.y.z".into(),
                refresh_token: None
            })
        );
        assert_eq!(
            read_poll(200, br#"{"id_token":"x.y.z","refresh_token":"r1"}"#),
            Poll::Token(Tokens {
                id_token: "x.y.z".into(),
                refresh_token: Some("r1".into())
            })
        );
        assert!(
            matches!(read_poll(200, br#"{"access_token":"a"}"#), Poll::Failed(w) if w.contains("no id_token"))
        );
        // slow_down adds five seconds, and waits are bounded.
        assert_eq!(next_interval(5, &Poll::SlowDown), 10);
        assert_eq!(next_interval(5, &Poll::Pending), 5);
        assert_eq!(next_interval(58, &Poll::SlowDown), MAX_INTERVAL);
    }

    #[test]
    fn an_id_token_must_be_the_issuers_for_this_client_and_live() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let good = jwt(
            json!({"iss": ISSUER, "aud": ["lattice", "other"], "sub": "dave", "exp": 1_800_003_600}),
        );
        assert_eq!(
            check_id_token(&good, ISSUER, "lattice", now).unwrap(),
            jiff::Timestamp::from_second(1_800_003_600).unwrap()
        );
        for (token, says) in [
            (
                jwt(json!({"iss": "https://evil", "aud": "lattice", "exp": 1_800_003_600})),
                "another issuer",
            ),
            (
                jwt(json!({"iss": ISSUER, "aud": "someone-else", "exp": 1_800_003_600})),
                "not for the client",
            ),
            (
                jwt(json!({"iss": ISSUER, "aud": "lattice", "exp": 1_799_999_999})),
                "expired",
            ),
            (jwt(json!({"iss": ISSUER, "aud": "lattice"})), "no expiry"),
            ("opaque".to_owned(), "not a JWT"),
        ] {
            let e = check_id_token(&token, ISSUER, "lattice", now)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn openid_is_always_asked_for_once() {
        assert_eq!(scopes(&[]), vec!["openid"]);
        assert_eq!(
            scopes(&["groups email".into(), "openid".into(), "groups".into()]),
            vec!["openid", "groups", "email"]
        );
    }
}
