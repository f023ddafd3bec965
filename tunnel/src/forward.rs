//! Proxied requests through the tunnel. The cell cannot open a stream to an agent (the agent
//! dialled it), so it sends the request's head down the agent's `Connect` stream, and the
//! agent opens a `Proxy` stream of its own that names the request: the cell sends the body
//! down it, the agent sends the response up. One HTTP/2 stream per request means a long
//! watch holds up no other call, backpressure is HTTP/2 flow control end to end, and either
//! side ending the stream cancels the request (a client that hangs up stops the watch on the
//! child's API server).
//!
//! Requests and responses are [`http`] types, so the proxy in front and the API server
//! behind need no tunnel types; what crosses is only what the API server needs: the method,
//! path and query, content headers, and the authenticated caller it impersonates. The
//! caller's own credentials never cross.
//!
//! Exec, attach and port-forward are upgrades (`Connection: Upgrade`, to `websocket` or
//! `SPDY/3.1`): the head crosses naming the protocol, the far end's 101 comes back, and from
//! then on the same stream carries the connection's bytes both ways ([`Upgrade`]). The
//! tunnel reads none of them: whatever the client and the kubelet speak passes unchanged.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use lattice_proto::tunnel::v1 as pb;

/// An error inside a body stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body streamed through the tunnel.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The most request body the tunnel carries; the API server's own limit is 3 MiB.
pub const MAX_REQUEST_BODY: usize = 8 << 20;

/// The largest body chunk one message carries (well under the 4 MiB message limit).
pub const CHUNK: usize = 1 << 20;

/// A connection that switched protocols: bytes both ways until either side closes.
pub trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Duplex for T {}

/// An upgraded connection, whatever carries it.
pub type Upgraded = Box<dyn Duplex>;

/// How the far end answered an upgrade.
pub enum Upgrade {
    /// It switched protocols: its 101 head, and the connection.
    Switched(http::Response<()>, Upgraded),
    /// It answered instead (a refusal, an error); the answer streams as any other.
    Answered(http::Response<ProxyBody>),
}

/// The protocol a request asks to switch to: its `Upgrade` header. The proxy in front sends
/// one only with an upgrade it decided to open (see [`crate::cell::Cell::upgrade`]).
pub fn upgrade_of(headers: &http::HeaderMap) -> Option<&str> {
    let protocol = headers.get(http::header::UPGRADE)?.to_str().ok()?.trim();
    (!protocol.is_empty()).then_some(protocol)
}

/// Marks `headers` as asking to switch to `protocol` (or, on a response, as having switched).
fn set_upgrade(headers: &mut http::HeaderMap, protocol: &str) -> Result<(), String> {
    let value = http::HeaderValue::try_from(protocol)
        .map_err(|e| format!("upgrade protocol {protocol:?}: {e}"))?;
    headers.insert(http::header::UPGRADE, value);
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    Ok(())
}

/// Who a proxied request is for, and on whose behalf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// The cluster whose API server answers: the agent's own, or one below it.
    pub cluster: String,
    /// The authenticated caller, impersonated there.
    pub user: String,
    pub groups: Vec<String>,
}

/// Answers proxied requests on the agent's side: at the last hop by calling the cluster's
/// API server as the caller, in between by forwarding further down.
pub trait ProxyHandler: Send + Sync + 'static {
    /// The response to `request` for `target`; failures are responses too (a `Status`).
    fn handle(
        &self,
        target: Forwarded,
        request: http::Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = http::Response<ProxyBody>> + Send + 'static>>;

    /// Opens the connection `request` asks to switch to (exec, attach, port-forward) for
    /// `target`. A handler that opens none answers 501.
    fn upgrade(
        &self,
        target: Forwarded,
        request: http::Request<()>,
    ) -> Pin<Box<dyn Future<Output = Upgrade> + Send + 'static>> {
        let _ = (target, request);
        Box::pin(async {
            Upgrade::Answered(status_response(
                http::StatusCode::NOT_IMPLEMENTED,
                "this cluster's agent opens no exec, attach or port-forward streams",
            ))
        })
    }
}

/// Why the cell could not forward a request.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cluster {0:?} has no agent connected")]
    NotConnected(String),
    #[error("cluster {0:?}'s agent did not take the request within {1:?}")]
    NoAnswer(String, Duration),
    #[error("cluster {0:?}'s agent broke off: {1}")]
    Broken(String, String),
    #[error("the request cannot be forwarded: {0}")]
    Request(String),
}

/// Headers that never cross the tunnel: hop-by-hop ones, the caller's credentials, and
/// identity headers (the last hop sets impersonation from the authenticated caller).
pub fn crosses(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    !(matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "authorization"
            | "cookie"
    ) || name.starts_with("impersonate-")
        || name.starts_with("x-remote-")
        || name.starts_with("x-lattice-"))
}

fn headers_to_pb(headers: &http::HeaderMap) -> Vec<pb::Header> {
    headers
        .iter()
        .filter(|(name, _)| crosses(name.as_str()))
        .filter_map(|(name, value)| {
            Some(pb::Header {
                name: name.as_str().to_owned(),
                value: value.to_str().ok()?.to_owned(),
            })
        })
        .collect()
}

fn headers_from_pb(
    headers: Vec<pb::Header>,
    into: &mut http::HeaderMap,
    keep: impl Fn(&str) -> bool,
) -> Result<(), String> {
    for h in headers {
        if !keep(&h.name) {
            continue;
        }
        let name = http::HeaderName::try_from(h.name.as_str())
            .map_err(|e| format!("header name {:?}: {e}", h.name))?;
        let value = http::HeaderValue::try_from(h.value.as_str())
            .map_err(|e| format!("header {:?}: {e}", h.name))?;
        into.append(name, value);
    }
    Ok(())
}

/// The head the cell sends down `Connect` for `request`.
pub(crate) fn request_head(
    id: &str,
    target: &Forwarded,
    request: &http::request::Parts,
) -> pb::ProxyRequest {
    pb::ProxyRequest {
        request_id: id.to_owned(),
        method: request.method.as_str().to_owned(),
        path: request
            .uri
            .path_and_query()
            .map_or_else(|| request.uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: headers_to_pb(&request.headers),
        user: target.user.clone(),
        groups: target.groups.clone(),
        cluster: target.cluster.clone(),
        upgrade: upgrade_of(&request.headers).unwrap_or_default().to_owned(),
    }
}

/// The request an agent reads from `head` and `body`; anything it cannot read is refused
/// before the handler sees it.
pub fn request_from_head(
    head: pb::ProxyRequest,
    body: Bytes,
) -> Result<(Forwarded, http::Request<Bytes>), String> {
    if head.cluster.is_empty() || head.user.is_empty() {
        return Err("a proxied request names no cluster or no caller".into());
    }
    let method = http::Method::from_bytes(head.method.as_bytes())
        .map_err(|e| format!("method {:?}: {e}", head.method))?;
    if !head.path.starts_with('/') {
        return Err(format!("path {:?} is not absolute", head.path));
    }
    let uri = http::Uri::try_from(head.path.as_str())
        .map_err(|e| format!("path {:?}: {e}", head.path))?;
    let mut request = http::Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    headers_from_pb(head.headers, request.headers_mut(), crosses)?;
    if !head.upgrade.is_empty() {
        set_upgrade(request.headers_mut(), &head.upgrade)?;
    }
    Ok((
        Forwarded {
            cluster: head.cluster,
            user: head.user,
            groups: head.groups,
        },
        request,
    ))
}

/// The response head the agent sends up.
pub(crate) fn response_head(parts: &http::response::Parts) -> pb::ProxyResponseHead {
    let switched = parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
    pb::ProxyResponseHead {
        status: u32::from(parts.status.as_u16()),
        headers: headers_to_pb(&parts.headers),
        upgrade: switched
            .then(|| parts.headers.get(http::header::UPGRADE))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    }
}

/// The response the cell reads from `head`, with `body` to come.
pub(crate) fn response_from_head<B>(
    head: pb::ProxyResponseHead,
    body: B,
) -> Result<http::Response<B>, String> {
    let status = u16::try_from(head.status)
        .ok()
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .ok_or_else(|| format!("status {} is not an HTTP status", head.status))?;
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    headers_from_pb(head.headers, response.headers_mut(), crosses)?;
    if status == http::StatusCode::SWITCHING_PROTOCOLS {
        if head.upgrade.is_empty() {
            return Err("a 101 that names no protocol".into());
        }
        set_upgrade(response.headers_mut(), &head.upgrade)?;
    }
    Ok(response)
}

/// A Kubernetes `Status` response: how the tunnel's own failures reach a client.
pub fn status_response(code: http::StatusCode, message: &str) -> http::Response<ProxyBody> {
    let reason = match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        413 => "RequestEntityTooLarge",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    json_response(code, &body)
}

/// `body` as a JSON response with `code`.
pub fn json_response(
    code: http::StatusCode,
    body: &serde_json::Value,
) -> http::Response<ProxyBody> {
    let bytes = Bytes::from(body.to_string());
    let mut response = http::Response::new(full(bytes));
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A whole body.
pub fn full(bytes: Bytes) -> ProxyBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_identity_headers_never_cross() {
        for name in [
            "Authorization",
            "authorization",
            "Impersonate-User",
            "impersonate-group",
            "Impersonate-Extra-Scopes",
            "X-Remote-User",
            "X-Lattice-Forwarded-User",
            "Cookie",
            "Connection",
            "Transfer-Encoding",
        ] {
            assert!(!crosses(name), "{name} must not cross");
        }
        for name in ["Accept", "Content-Type", "User-Agent"] {
            assert!(crosses(name), "{name} crosses");
        }
    }

    #[test]
    fn a_request_survives_the_round_trip_without_its_credentials() {
        let request = http::Request::builder()
            .method("PATCH")
            .uri("/apis/apps/v1/namespaces/shop/deployments/web?fieldManager=x")
            .header("content-type", "application/merge-patch+json")
            .header("authorization", "Bearer secret")
            .header("impersonate-user", "root")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let target = Forwarded {
            cluster: "edge".into(),
            user: "alice".into(),
            groups: vec!["devs".into()],
        };
        let head = request_head("r1", &target, &parts);
        let (back, request) = request_from_head(head, Bytes::from_static(b"{}")).unwrap();
        assert_eq!(back, target);
        assert_eq!(request.method(), "PATCH");
        assert_eq!(
            request.uri(),
            "/apis/apps/v1/namespaces/shop/deployments/web?fieldManager=x"
        );
        assert_eq!(
            request.headers()["content-type"],
            "application/merge-patch+json"
        );
        assert!(request.headers().get("authorization").is_none());
        assert!(request.headers().get("impersonate-user").is_none());
        assert_eq!(request.body().as_ref(), b"{}");
    }

    #[test]
    fn an_upgrade_crosses_with_its_protocol_and_handshake_and_comes_back_switched() {
        let request = http::Request::get("/api/v1/namespaces/shop/pods/web/exec?command=sh")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-protocol", "v5.channel.k8s.io")
            .header("authorization", "Bearer secret")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let target = Forwarded {
            cluster: "edge".into(),
            user: "alice".into(),
            groups: Vec::new(),
        };
        let head = request_head("r1", &target, &parts);
        assert_eq!(head.upgrade, "websocket");
        let (_, request) = request_from_head(head, Bytes::new()).unwrap();
        assert_eq!(upgrade_of(request.headers()), Some("websocket"));
        assert_eq!(request.headers()["connection"], "Upgrade");
        assert_eq!(
            request.headers()["sec-websocket-key"],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        assert!(request.headers().get("authorization").is_none());

        let response = http::Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(())
            .unwrap();
        let (parts, ()) = response.into_parts();
        let head = response_head(&parts);
        assert_eq!(head.upgrade, "websocket");
        let back = response_from_head(head.clone(), ()).unwrap();
        assert_eq!(back.status(), 101);
        assert_eq!(back.headers()["upgrade"], "websocket");
        assert_eq!(back.headers()["connection"], "Upgrade");
        assert_eq!(
            back.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        // A switch that names no protocol, or one that is no header value, is refused.
        let unnamed = pb::ProxyResponseHead {
            upgrade: String::new(),
            ..head.clone()
        };
        assert!(response_from_head(unnamed, ()).is_err());
        let unreadable = pb::ProxyRequest {
            request_id: "r".into(),
            method: "GET".into(),
            path: "/api".into(),
            user: "u".into(),
            cluster: "c".into(),
            upgrade: "web\nsocket".into(),
            ..Default::default()
        };
        assert!(request_from_head(unreadable, Bytes::new()).is_err());
    }

    #[test]
    fn unreadable_heads_are_refused() {
        let good = pb::ProxyRequest {
            request_id: "r".into(),
            method: "GET".into(),
            path: "/api".into(),
            user: "u".into(),
            cluster: "c".into(),
            ..Default::default()
        };
        for (what, head) in [
            (
                "no caller",
                pb::ProxyRequest {
                    user: String::new(),
                    ..good.clone()
                },
            ),
            (
                "no cluster",
                pb::ProxyRequest {
                    cluster: String::new(),
                    ..good.clone()
                },
            ),
            (
                "a relative path",
                pb::ProxyRequest {
                    path: "api/v1".into(),
                    ..good.clone()
                },
            ),
            (
                "a bad method",
                pb::ProxyRequest {
                    method: "GE T".into(),
                    ..good.clone()
                },
            ),
            (
                "a bad header",
                pb::ProxyRequest {
                    headers: vec![pb::Header {
                        name: "accept".into(),
                        value: "a\nb".into(),
                    }],
                    ..good.clone()
                },
            ),
        ] {
            assert!(request_from_head(head, Bytes::new()).is_err(), "{what}");
        }
        assert!(request_from_head(good, Bytes::new()).is_ok());
    }
}
