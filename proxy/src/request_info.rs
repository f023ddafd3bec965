//! What a Kubernetes API request asks for, read from its method, path and query the way
//! kube-apiserver's `RequestInfo` reads them: the verb (with list, watch and
//! deletecollection told apart from get and delete), the API group and version, the
//! namespace, resource, name and subresource.
//!
//! Written here rather than taken from a crate: no Rust crate implements kube-apiserver's
//! request parsing, and the proxy must agree with the API server on every request it decides,
//! or a request Cedar allowed as one thing would be served as another. The parser is total:
//! any method, path and query give an answer or an error, never a panic (fuzzed by
//! `fuzz/fuzz_targets/request_info.rs`).

use std::fmt;

/// The longest path the proxy reads; a longer one is refused before it is parsed.
pub const MAX_PATH: usize = 8 * 1024;

/// What one request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether it is about an API resource (`/api/...`, `/apis/...`); discovery, `/version`,
    /// `/healthz` and the like are not.
    pub is_resource_request: bool,
    /// The URL path, as sent.
    pub path: String,
    /// The Kubernetes verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `proxy`; for a non-resource request, the lowercase HTTP method.
    pub verb: String,
    /// `api` or `apis` (empty for a non-resource request).
    pub api_prefix: String,
    /// Empty for the core group.
    pub api_group: String,
    pub api_version: String,
    /// Empty for a cluster-scoped resource.
    pub namespace: String,
    /// Plural resource name, e.g. `pods`.
    pub resource: String,
    /// e.g. `log`, `exec`, `attach`, `portforward`, `proxy`, `status`, `scale`.
    pub subresource: String,
    /// Empty for collections; for a list or watch of one object selected by
    /// `fieldSelector=metadata.name=…`, that name (as kube-apiserver reads it).
    pub name: String,
}

/// A request the proxy cannot read, so cannot decide: it is refused (400), never forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestInfoError {
    /// The path is longer than [`MAX_PATH`].
    PathTooLong(usize),
    /// The path or query is not valid percent-encoded UTF-8.
    BadEncoding(String),
    /// A path segment is `.` or `..`, or empty inside the path: the API server would
    /// normalize it differently from how it was decided.
    BadSegment(String),
    /// A special verb (`watch`, `proxy`) with nothing after it.
    NoResource(String),
    /// The method is not one the Kubernetes API serves.
    UnknownMethod(String),
}

impl fmt::Display for RequestInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestInfoError::PathTooLong(n) => {
                write!(f, "the path is {n} bytes; at most {MAX_PATH} are read")
            }
            RequestInfoError::BadEncoding(s) => write!(f, "not valid percent-encoded UTF-8: {s}"),
            RequestInfoError::BadSegment(s) => {
                write!(f, "the path has an empty, `.` or `..` segment: {s}")
            }
            RequestInfoError::NoResource(s) => {
                write!(f, "unable to determine the resource and namespace from {s}")
            }
            RequestInfoError::UnknownMethod(m) => write!(f, "unknown HTTP method {m}"),
        }
    }
}

impl std::error::Error for RequestInfoError {}

/// The subresources of a namespace itself (`/api/v1/namespaces/x/status`), as opposed to a
/// resource inside the namespace.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl RequestInfo {
    /// Reads a request: `method` (`GET`, `POST`, …), the URL `path` (percent-encoded, as on
    /// the wire) and the raw `query` (without `?`).
    pub fn parse(method: &str, path: &str, query: &str) -> Result<RequestInfo, RequestInfoError> {
        if path.len() > MAX_PATH {
            return Err(RequestInfoError::PathTooLong(path.len()));
        }
        let method = method.to_ascii_uppercase();
        if !matches!(
            method.as_str(),
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"
        ) {
            return Err(RequestInfoError::UnknownMethod(method));
        }
        let trimmed = path.trim_matches('/');
        let parts: Vec<String> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed
                .split('/')
                .map(|s| {
                    let decoded = percent_decode(s)
                        .ok_or_else(|| RequestInfoError::BadEncoding(path.to_owned()))?;
                    if decoded.is_empty() || decoded == "." || decoded == ".." {
                        return Err(RequestInfoError::BadSegment(path.to_owned()));
                    }
                    Ok(decoded)
                })
                .collect::<Result<_, _>>()?
        };
        let mut info = RequestInfo {
            is_resource_request: false,
            path: path.to_owned(),
            verb: method.to_ascii_lowercase(),
            api_prefix: String::new(),
            api_group: String::new(),
            api_version: String::new(),
            namespace: String::new(),
            resource: String::new(),
            subresource: String::new(),
            name: String::new(),
        };
        // /api/{version}/... or /apis/{group}/{version}/...; anything shorter is discovery
        // or another non-resource path.
        let mut rest: &[String] = &parts;
        match rest.first().map(String::as_str) {
            Some("api") if rest.len() >= 3 => {
                info.api_prefix = "api".into();
                info.api_version = rest[1].clone();
                rest = &rest[2..];
            }
            Some("apis") if rest.len() >= 4 => {
                info.api_prefix = "apis".into();
                info.api_group = rest[1].clone();
                info.api_version = rest[2].clone();
                rest = &rest[3..];
            }
            _ => return Ok(info),
        }
        info.is_resource_request = true;
        if rest[0] == "watch" || rest[0] == "proxy" {
            if rest.len() < 2 {
                return Err(RequestInfoError::NoResource(path.to_owned()));
            }
            info.verb = rest[0].clone();
            rest = &rest[1..];
        } else {
            info.verb = match method.as_str() {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                // OPTIONS on a resource has no Kubernetes verb: nothing could authorize it.
                _ => return Err(RequestInfoError::UnknownMethod(method)),
            }
            .into();
        }
        if rest[0] == "namespaces" && rest.len() > 1 {
            info.namespace = rest[1].clone();
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2].as_str()) {
                rest = &rest[2..];
            }
        }
        // resource / name / subresource / anything after, not interpreted.
        if rest.len() >= 3 && info.verb != "proxy" {
            info.subresource = rest[2].clone();
        }
        if rest.len() >= 2 {
            info.name = rest[1].clone();
        }
        info.resource = rest[0].clone();

        // Read only when a collection is asked for; read once.
        let params = if info.name.is_empty() {
            query_params(query)?
        } else {
            Vec::new()
        };
        if info.name.is_empty() && info.verb == "get" {
            info.verb = match params.iter().find(|(k, _)| k == "watch") {
                Some((_, v)) if v.eq_ignore_ascii_case("false") || v == "0" => "list",
                Some(_) => "watch",
                None => "list",
            }
            .into();
        }
        if info.name.is_empty() && (info.verb == "list" || info.verb == "watch") {
            // `kubectl get pod x -w` watches one object through a field selector; the
            // API server authorizes that as the named object, and so does the proxy.
            if let Some((_, selector)) = params.iter().find(|(k, _)| k == "fieldSelector")
                && let Some(name) = single_name(selector)
            {
                info.name = name;
            }
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".into();
        }
        Ok(info)
    }

    /// The Cedar action that decides this request: the verb, except that the subresources
    /// that run code in or tunnel into a pod are actions of their own (`exec`, `attach`,
    /// `portforward`, `proxy`) whatever the method (kubectl opens them with a GET upgrade or
    /// a POST). `pods/log` stays `get`, with `subresource` in the context.
    pub fn action(&self) -> &str {
        if !self.is_resource_request {
            // Discovery and the like read; anything else on a non-resource path writes.
            return match self.verb.as_str() {
                "get" | "head" | "options" => "get",
                _ => "create",
            };
        }
        match self.subresource.as_str() {
            "exec" => "exec",
            "attach" => "attach",
            "portforward" => "portforward",
            "proxy" => "proxy",
            _ => &self.verb,
        }
    }
}

/// The name a field selector picks when it is exactly `metadata.name=<name>` (or `==`).
fn single_name(selector: &str) -> Option<String> {
    if selector.contains(',') {
        return None;
    }
    let value = selector
        .strip_prefix("metadata.name==")
        .or_else(|| selector.strip_prefix("metadata.name="))?;
    (!value.is_empty()).then(|| value.to_owned())
}

/// The query's `key=value` pairs, percent-decoded (`+` is a space, as in forms).
fn query_params(query: &str) -> Result<Vec<(String, String)>, RequestInfoError> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode(&s.replace('+', " "))
                    .ok_or_else(|| RequestInfoError::BadEncoding(query.to_owned()))
            };
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Percent-decodes `s`; `None` when an escape is malformed or the bytes are not UTF-8.
/// Written here because the `percent-encoding` crate passes a malformed escape through as
/// text, and a request the proxy reads differently from the API server must be refused.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (method, path with query, verb, group, version, namespace, resource, subresource,
    /// name): the cases kube-apiserver's own RequestInfo table covers, and the ones kubectl
    /// sends that matter for authorization.
    /// method, URL, then the expected verb, group, version, namespace, resource,
    /// subresource and name.
    type Case = (&'static str, &'static str, [&'static str; 7]);

    #[rustfmt::skip]
    const CASES: &[Case] = &[
        ("GET", "/api/v1/namespaces", ["list", "", "v1", "", "namespaces", "", ""]),
        ("GET", "/api/v1/namespaces/other", ["get", "", "v1", "other", "namespaces", "", "other"]),
        ("GET", "/api/v1/namespaces/other/pods", ["list", "", "v1", "other", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/other/pods/foo", ["get", "", "v1", "other", "pods", "", "foo"]),
        ("HEAD", "/api/v1/namespaces/other/pods/foo", ["get", "", "v1", "other", "pods", "", "foo"]),
        ("GET", "/api/v1/pods", ["list", "", "v1", "", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/other/pods?watch=true", ["watch", "", "v1", "other", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/other/pods?watch=1", ["watch", "", "v1", "other", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/other/pods?watch=false", ["list", "", "v1", "other", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/other/pods?watch=0", ["list", "", "v1", "other", "pods", "", ""]),
        ("GET", "/api/v1/watch/namespaces/other/pods", ["watch", "", "v1", "other", "pods", "", ""]),
        ("GET", "/api/v1/watch/pods", ["watch", "", "v1", "", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/other/pods?watch=true&fieldSelector=metadata.name%3Dfoo", ["watch", "", "v1", "other", "pods", "", "foo"]),
        ("GET", "/api/v1/namespaces/other/pods?fieldSelector=metadata.name%3D%3Dfoo", ["list", "", "v1", "other", "pods", "", "foo"]),
        ("GET", "/api/v1/namespaces/other/pods?fieldSelector=metadata.name%3Dfoo,status.phase%3DRunning", ["list", "", "v1", "other", "pods", "", ""]),
        ("POST", "/api/v1/namespaces/other/pods", ["create", "", "v1", "other", "pods", "", ""]),
        ("PUT", "/api/v1/namespaces/other/pods/foo", ["update", "", "v1", "other", "pods", "", "foo"]),
        ("PATCH", "/api/v1/namespaces/other/pods/foo", ["patch", "", "v1", "other", "pods", "", "foo"]),
        ("DELETE", "/api/v1/namespaces/other/pods/foo", ["delete", "", "v1", "other", "pods", "", "foo"]),
        ("DELETE", "/api/v1/namespaces/other/pods", ["deletecollection", "", "v1", "other", "pods", "", ""]),
        ("GET", "/api/v1/namespaces/other/pods/foo/log", ["get", "", "v1", "other", "pods", "log", "foo"]),
        ("POST", "/api/v1/namespaces/other/pods/foo/exec", ["create", "", "v1", "other", "pods", "exec", "foo"]),
        ("GET", "/api/v1/namespaces/other/pods/foo/exec?command=sh&stdin=true", ["get", "", "v1", "other", "pods", "exec", "foo"]),
        ("POST", "/api/v1/namespaces/other/pods/foo/attach", ["create", "", "v1", "other", "pods", "attach", "foo"]),
        ("POST", "/api/v1/namespaces/other/pods/foo/portforward", ["create", "", "v1", "other", "pods", "portforward", "foo"]),
        ("GET", "/api/v1/namespaces/other/services/web/proxy/healthz", ["get", "", "v1", "other", "services", "proxy", "web"]),
        ("GET", "/api/v1/proxy/namespaces/other/pods/foo/extra", ["proxy", "", "v1", "other", "pods", "", "foo"]),
        ("PUT", "/api/v1/namespaces/other/finalize", ["update", "", "v1", "other", "namespaces", "finalize", "other"]),
        ("PUT", "/api/v1/namespaces/other/status", ["update", "", "v1", "other", "namespaces", "status", "other"]),
        ("GET", "/apis/apps/v1/namespaces/other/deployments", ["list", "apps", "v1", "other", "deployments", "", ""]),
        ("PATCH", "/apis/apps/v1/namespaces/other/deployments/web/scale", ["patch", "apps", "v1", "other", "deployments", "scale", "web"]),
        ("GET", "/apis/lattice.dev/v1alpha1/latticeclusters/edge", ["get", "lattice.dev", "v1alpha1", "", "latticeclusters", "", "edge"]),
        ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", ["list", "rbac.authorization.k8s.io", "v1", "", "clusterroles", "", ""]),
        ("GET", "/api/v1/namespaces/other/pods/foo%20bar", ["get", "", "v1", "other", "pods", "", "foo bar"]),
        ("GET", "/api/v1/namespaces/other/pods/", ["list", "", "v1", "other", "pods", "", ""]),
    ];

    #[test]
    fn requests_read_as_kube_apiserver_reads_them() {
        for (method, url, [verb, group, version, ns, resource, sub, name]) in CASES {
            let (path, query) = url.split_once('?').unwrap_or((url, ""));
            let got = RequestInfo::parse(method, path, query)
                .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            assert!(got.is_resource_request, "{method} {url}");
            assert_eq!(
                (
                    got.verb.as_str(),
                    got.api_group.as_str(),
                    got.api_version.as_str(),
                    got.namespace.as_str(),
                    got.resource.as_str(),
                    got.subresource.as_str(),
                    got.name.as_str()
                ),
                (*verb, *group, *version, *ns, *resource, *sub, *name),
                "{method} {url}"
            );
        }
    }

    #[test]
    fn discovery_and_health_are_not_resource_requests() {
        for path in [
            "/",
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/healthz",
            "/openapi/v3",
        ] {
            let got = RequestInfo::parse("GET", path, "").unwrap();
            assert!(!got.is_resource_request, "{path}");
            assert_eq!(got.verb, "get");
            assert_eq!(got.action(), "get");
        }
        let post = RequestInfo::parse("POST", "/apis", "").unwrap();
        assert_eq!(
            post.action(),
            "create",
            "a write to a non-resource path is no read"
        );
    }

    #[test]
    fn pod_subresources_that_run_code_are_actions_of_their_own() {
        for (method, sub, action) in [
            ("GET", "exec", "exec"),
            ("POST", "exec", "exec"),
            ("POST", "attach", "attach"),
            ("GET", "portforward", "portforward"),
            ("GET", "proxy", "proxy"),
            ("GET", "log", "get"),
            ("PUT", "status", "update"),
        ] {
            let path = format!("/api/v1/namespaces/a/pods/p/{sub}");
            assert_eq!(
                RequestInfo::parse(method, &path, "").unwrap().action(),
                action,
                "{method} {sub}"
            );
        }
        assert_eq!(
            RequestInfo::parse("GET", "/api/v1/proxy/namespaces/a/pods/p", "")
                .unwrap()
                .action(),
            "proxy"
        );
        assert_eq!(
            RequestInfo::parse("DELETE", "/api/v1/namespaces/a/pods", "")
                .unwrap()
                .action(),
            "deletecollection"
        );
    }

    #[test]
    fn unreadable_requests_are_errors_not_guesses() {
        let bad = |m: &str, p: &str, q: &str| RequestInfo::parse(m, p, q).unwrap_err();
        assert!(matches!(
            bad("GET", "/api/v1/namespaces/a/pods/%zz", ""),
            RequestInfoError::BadEncoding(_)
        ));
        assert!(matches!(
            bad("GET", "/api/v1/namespaces/a/pods/%ff%fe", ""),
            RequestInfoError::BadEncoding(_)
        ));
        assert!(matches!(
            bad("GET", "/api/v1/namespaces/a/../b/pods", ""),
            RequestInfoError::BadSegment(_)
        ));
        assert!(matches!(
            bad("GET", "/api/v1/namespaces/a/%2e%2e/secrets", ""),
            RequestInfoError::BadSegment(_)
        ));
        assert!(
            matches!(
                bad("GET", "/api//v1/pods", ""),
                RequestInfoError::BadSegment(_)
            ),
            "an empty segment would be read differently by a server that cleans paths"
        );
        assert!(matches!(
            bad("GET", "/api/v1/watch", ""),
            RequestInfoError::NoResource(_)
        ));
        assert!(matches!(
            bad("TRACE", "/api/v1/pods", ""),
            RequestInfoError::UnknownMethod(_)
        ));
        assert!(matches!(
            bad("OPTIONS", "/api/v1/pods", ""),
            RequestInfoError::UnknownMethod(_)
        ));
        assert!(matches!(
            bad("GET", &"/a".repeat(MAX_PATH), ""),
            RequestInfoError::PathTooLong(_)
        ));
        assert!(matches!(
            bad("GET", "/api/v1/pods", "watch=%"),
            RequestInfoError::BadEncoding(_)
        ));
    }

    #[test]
    fn an_encoded_slash_stays_inside_its_segment() {
        // `%2F` must not split a name into two segments the API server would not see.
        let got = RequestInfo::parse("GET", "/api/v1/namespaces/a/pods/x%2Fexec", "").unwrap();
        assert_eq!(got.name, "x/exec");
        assert_eq!(got.subresource, "");
        assert_eq!(got.action(), "get");
    }
}
