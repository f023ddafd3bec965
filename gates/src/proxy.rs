//! Proxy access: every Kubernetes API call through the proxy is one Cedar question, asked at
//! every hop with that hop's own (inherited and local) policies: may this `User` (in a
//! `Group` per group the caller authenticated with) do this verb on this `Cluster`, with
//! what the request names (API group, resource, namespace, name, subresource, path) and
//! where and when it came from as context.
//!
//! | request | action |
//! |---|---|
//! | `GET` a named object, a collection, `?watch=true` | `get`, `list`, `watch` |
//! | `POST`, `PUT`, `PATCH`, `DELETE` one, `DELETE` a collection | `create`, `update`, `patch`, `delete`, `deletecollection` |
//! | `pods/exec`, `pods/attach`, `pods/portforward`, `…/proxy` (any method) | `exec`, `attach`, `portforward`, `proxy` |
//! | `pods/log` | `get` (`subresource` is `log`) |
//! | discovery, `/version` and other non-resource paths | `get` to read, `create` to write |
//!
//! The actions sit in three groups: `ClusterRead` (get, list, watch) in `ClusterWrite` (and
//! create … deletecollection) in `ClusterAdmin` (and exec, attach, portforward, proxy).
//! Reading the request is the proxy's (`lattice-proxy`); this module only asks.

use std::net::IpAddr;
use std::sync::Arc;

use cedar_policy::{Context, RestrictedExpression};
use lattice_engine::policies::PolicyInfo;
use lattice_engine::{Query, Snapshot, action, uid};

use crate::admission::Requester;

/// Every action a proxied request can be asked as.
pub const PROXY_ACTIONS: [&str; 12] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "exec",
    "attach",
    "portforward",
    "proxy",
];

/// The action groups the proxy actions sit in (never asked themselves).
pub const PROXY_GROUPS: [&str; 3] = ["ClusterRead", "ClusterWrite", "ClusterAdmin"];

/// The proxy actions that run code in or tunnel into a cluster's pods, and their group.
pub const EXEC_ACTIONS: [&str; 5] = ["exec", "attach", "portforward", "proxy", "ClusterAdmin"];

/// What one proxied request asks for, as the proxy read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyRequest {
    /// One of [`PROXY_ACTIONS`] (not a group).
    pub action: String,
    /// Empty for the core group.
    pub api_group: String,
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub subresource: String,
    /// The URL path, for non-resource requests (`/version`, discovery).
    pub path: String,
    pub resource_request: bool,
    /// Where the request came from (the first hop's client).
    pub source_ip: IpAddr,
    pub now: jiff::Timestamp,
}

/// The answer to a proxied request.
#[derive(Clone, Debug)]
pub struct ProxyDecision {
    pub allowed: bool,
    /// On a deny by forbid, the forbids that denied; on an allow, the permits. Empty on a
    /// default deny (nothing permits it).
    pub determining: Vec<Arc<PolicyInfo>>,
    /// Why the question could not be asked or evaluated, when it could not (a deny).
    pub error: Option<String>,
}

impl ProxyDecision {
    /// The message of a 403: what was refused, the deciding policies with their `@advice`,
    /// or that nothing permits it.
    pub fn message(&self, requester: &Requester, cluster: &str, req: &ProxyRequest) -> String {
        let what = if req.resource_request {
            let mut r = req.resource.clone();
            if !req.subresource.is_empty() {
                r = format!("{r}/{}", req.subresource);
            }
            let group = if req.api_group.is_empty() {
                String::new()
            } else {
                format!(" in API group {:?}", req.api_group)
            };
            let name = if req.name.is_empty() {
                String::new()
            } else {
                format!(" {:?}", req.name)
            };
            let ns = if req.namespace.is_empty() {
                String::new()
            } else {
                format!(" in namespace {:?}", req.namespace)
            };
            format!("{} {r}{name}{group}{ns}", req.action)
        } else {
            format!("{} {}", req.action, req.path)
        };
        let mut out = format!(
            "Lattice denied {:?} {what} on cluster {cluster:?}",
            requester.username
        );
        if let Some(e) = &self.error {
            out.push_str(&format!(": the request could not be decided ({e})"));
        } else if self.determining.is_empty() {
            out.push_str(": no policy permits it");
        } else {
            for p in &self.determining {
                out.push_str(&format!("; forbidden by {}", p.id));
                if let Some(advice) = p.annotations.get("advice") {
                    out.push_str(&format!(": {advice}"));
                }
            }
        }
        out
    }
}

/// The Cedar question of `req` by `requester` on `cluster`.
pub fn proxy_query(
    requester: &Requester,
    cluster: &str,
    req: &ProxyRequest,
) -> Result<Query, String> {
    if !PROXY_ACTIONS.contains(&req.action.as_str()) {
        return Err(format!("`{}` is not a proxy action", req.action));
    }
    let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
    let now = crate::time::datetime(req.now)?;
    let context = Context::from_pairs([
        ("apiGroup".to_owned(), s(&req.api_group)),
        ("resource".to_owned(), s(&req.resource)),
        ("namespace".to_owned(), s(&req.namespace)),
        ("name".to_owned(), s(&req.name)),
        ("subresource".to_owned(), s(&req.subresource)),
        ("path".to_owned(), s(&req.path)),
        (
            "resourceRequest".to_owned(),
            RestrictedExpression::new_bool(req.resource_request),
        ),
        (
            "sourceIp".to_owned(),
            RestrictedExpression::new_ip(req.source_ip.to_string()),
        ),
        ("now".to_owned(), now),
    ])
    .map_err(|e| e.to_string())?;
    Ok(Query::new(
        uid("User", &requester.username),
        action(&req.action),
        uid("Cluster", cluster),
    )
    .with_context(context))
}

/// Decides `req` by `requester` on `cluster` with `snapshot`'s policies. The requester and
/// its groups are the request's own entities; the cluster and its ancestors come from the
/// snapshot, and a cluster the snapshot does not hold is refused. Any error denies.
pub fn decide_proxy(
    snapshot: &Snapshot,
    requester: &Requester,
    cluster: &str,
    req: &ProxyRequest,
) -> ProxyDecision {
    let denied = |e: String| ProxyDecision {
        allowed: false,
        determining: Vec::new(),
        error: Some(e),
    };
    if requester.username.is_empty() {
        return denied("no authenticated user".into());
    }
    let query = match proxy_query(requester, cluster, req) {
        Ok(q) => q,
        Err(e) => return denied(e),
    };
    let cluster_uid = uid("Cluster", cluster);
    if snapshot.entities().get(&cluster_uid).is_none() {
        return denied(format!("{cluster:?} is not a cluster of this hierarchy"));
    }
    let scoped = match snapshot.scoped(requester.entities(), std::slice::from_ref(&cluster_uid)) {
        Ok(s) => s,
        Err(e) => return denied(e.to_string()),
    };
    match scoped.decide(&query) {
        Err(e) => denied(e.to_string()),
        Ok(d) => ProxyDecision {
            allowed: d.allowed,
            determining: d.determining,
            error: None,
        },
    }
}

/// Whether a call for `cluster` may go through the child `via`: `via` is the cluster
/// itself or, in `snapshot`'s hierarchy, above it. Agents report what is below them, but a
/// cluster declared here under another parent (its LatticeCluster wins over any report) is
/// never sent to a child that claims it, so no child can answer for a sibling.
pub fn routes_through(snapshot: &Snapshot, cluster: &str, via: &str) -> bool {
    if cluster == via {
        return true;
    }
    let via = uid("Cluster", via);
    snapshot
        .entities()
        .ancestors(&uid("Cluster", cluster))
        .is_some_and(|mut above| above.any(|u| *u == via))
}

/// The Kubernetes `Status` body of a 403 for a denied request.
pub fn forbidden_status(
    decision: &ProxyDecision,
    requester: &Requester,
    cluster: &str,
    req: &ProxyRequest,
) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": decision.message(requester, cluster, req),
        "reason": "Forbidden",
        "details": {
            "name": req.name,
            "group": req.api_group,
            "kind": req.resource,
        },
        "code": 403,
    })
}
