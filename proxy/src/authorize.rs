//! One proxied call, decided: the request read ([`RequestInfo`]), then asked of Cedar for
//! the authenticated caller on the target cluster ([`lattice_gates::proxy`]). A request that
//! cannot be read is refused as a bad request, never guessed at; a deny carries the
//! Kubernetes `Status` a client shows (`kubectl` prints its message).

use std::net::IpAddr;

use lattice_engine::Snapshot;
use lattice_gates::Requester;
use lattice_gates::proxy::{ProxyDecision, ProxyRequest, decide_proxy, forbidden_status};

use crate::request_info::RequestInfo;

/// What the proxy does with a call.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// Forward it, as the caller (impersonated at the last hop).
    Allow(ProxyDecision),
    /// 403 with this `Status` body.
    Forbidden(serde_json::Value),
    /// 400: the request could not be read, so it was not decided.
    BadRequest(String),
}

/// Identity headers a client may never send through the proxy: the last hop sets them from
/// the authenticated caller, so a client sending its own would be asking to be someone else.
pub const IMPERSONATION_HEADERS: [&str; 4] = [
    "impersonate-user",
    "impersonate-group",
    "impersonate-uid",
    "impersonate-extra-",
];

/// Whether `header` (any case) is one of [`IMPERSONATION_HEADERS`] (`Impersonate-Extra-*`
/// by prefix).
pub fn is_impersonation_header(header: &str) -> bool {
    let h = header.to_ascii_lowercase();
    IMPERSONATION_HEADERS.iter().any(|p| {
        if p.ends_with('-') {
            h.starts_with(p)
        } else {
            h == *p
        }
    })
}

/// Decides one call: `method`, `path` and `query` as received, by `caller` from `source`,
/// on `cluster`, with `snapshot`'s policies at `now`.
#[allow(clippy::too_many_arguments)]
pub fn authorize(
    snapshot: &Snapshot,
    caller: &Requester,
    cluster: &str,
    method: &str,
    path: &str,
    query: &str,
    source: IpAddr,
    now: jiff::Timestamp,
) -> Verdict {
    let info = match RequestInfo::parse(method, path, query) {
        Ok(i) => i,
        Err(e) => return Verdict::BadRequest(e.to_string()),
    };
    let req = ProxyRequest {
        action: info.action().to_owned(),
        api_group: info.api_group.clone(),
        resource: info.resource.clone(),
        namespace: info.namespace.clone(),
        name: info.name.clone(),
        subresource: info.subresource.clone(),
        path: info.path.clone(),
        resource_request: info.is_resource_request,
        source_ip: source,
        now,
    };
    let decision = decide_proxy(snapshot, caller, cluster, &req);
    if decision.allowed {
        Verdict::Allow(decision)
    } else {
        Verdict::Forbidden(forbidden_status(&decision, caller, cluster, &req))
    }
}
