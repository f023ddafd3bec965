//! Reading an `admission.k8s.io/v1` AdmissionReview: everything the API server sends is
//! untrusted input, so every way it can be wrong is a [`ReviewError`], never a panic.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use lattice_gates::Requester;
use serde_json::Value;

/// `text` cut to at most `max` bytes, on a character boundary, marked where it was cut:
/// what a client chose is quoted back only within bounds.
pub(crate) fn clip(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(" … (cut)".len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(" … (cut)");
    text
}

/// The largest body read. The API server caps a request at 3 MiB; anything larger is not
/// from it.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The most values (scalars, lists and mappings, counted together) one object may hold.
pub const MAX_OBJECT_VALUES: usize = 100_000;

/// The values in `v`, counted up to `limit` (past it, counting stops).
fn count_values(v: &Value, limit: usize) -> usize {
    let mut count = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        count += 1;
        if count >= limit {
            return count;
        }
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    count
}

/// The API group of Lattice's kinds.
pub const GROUP: &str = "lattice.dev";

/// What one review asks, read and checked.
#[derive(Clone, Debug)]
pub struct Review {
    /// Echoed in the response.
    pub uid: String,
    pub operation: Operation,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The object as written (absent on DELETE).
    pub object: Option<Value>,
    /// The object before (UPDATE and DELETE).
    pub old_object: Option<Value>,
    pub requester: Requester,
    pub dry_run: bool,
    /// The request as read, for building the response.
    pub(crate) request: AdmissionRequest<DynamicObject>,
}

impl Review {
    /// `Kind namespace/name`, each part cut to the longest Kubernetes allows (a client
    /// chooses them, and messages and logs quote them).
    pub fn describe(&self) -> String {
        let cut = |s: &str| clip(s.to_owned(), 253);
        let name = match &self.namespace {
            Some(ns) if !ns.is_empty() => format!("{}/{}", cut(ns), cut(&self.name)),
            _ => cut(&self.name),
        };
        format!("{} {name}", cut(&self.kind))
    }
}

/// Why a body is not a review this webhook can answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    /// Not JSON, or not the shape of an AdmissionReview: no uid can be echoed, so the
    /// answer is HTTP 400.
    #[error("malformed AdmissionReview: {0}")]
    Malformed(String),
    #[error("unsupported apiVersion `{0}`: this webhook reads admission.k8s.io/v1")]
    ApiVersion(String),
    #[error("unsupported kind `{0}`: expected AdmissionReview")]
    Kind(String),
    #[error("the AdmissionReview has no `request`")]
    NoRequest,
    /// The review is readable (its uid is known) but its object contradicts it.
    #[error("{message}")]
    Inconsistent { uid: String, message: String },
}

/// Reads a review from a request body.
pub fn parse(body: &[u8]) -> Result<Review, ReviewError> {
    if body.len() > MAX_BODY {
        return Err(ReviewError::Malformed(format!(
            "body of {} bytes is over the {MAX_BODY}-byte limit",
            body.len()
        )));
    }
    // Type and version first, from a loose read, so a v1beta1 review is named as such
    // rather than reported as a shape error.
    let loose: Value = serde_json::from_slice(body)
        .map_err(|e| ReviewError::Malformed(format!("not JSON: {e}")))?;
    let Value::Object(top) = &loose else {
        return Err(ReviewError::Malformed("not a JSON object".into()));
    };
    let api_version = top.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api_version != "admission.k8s.io/v1" {
        return Err(ReviewError::ApiVersion(api_version.to_owned()));
    }
    let kind = top.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "AdmissionReview" {
        return Err(ReviewError::Kind(kind.to_owned()));
    }
    if top.get("request").is_none_or(Value::is_null) {
        return Err(ReviewError::NoRequest);
    }
    // The objects are taken out as the JSON they are, and only the rest of the request is
    // read into kube's types: an object of 3 MiB is parsed once, never converted to a
    // `DynamicObject` and back.
    let mut loose = loose;
    let mut take = |key: &str| {
        loose
            .get_mut("request")
            .and_then(Value::as_object_mut)
            .and_then(|r| r.remove(key))
            .filter(|v| !v.is_null())
    };
    let object = take("object");
    let old_object = take("oldObject");
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(loose).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| ReviewError::NoRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::Malformed("`request.uid` is empty".into()));
    }
    let inconsistent = |message: String| ReviewError::Inconsistent {
        uid: request.uid.clone(),
        message,
    };
    for o in [&object, &old_object].into_iter().flatten() {
        if !o.is_object() {
            return Err(inconsistent("the object is not a JSON object".into()));
        }
        // A Kubernetes object of the Lattice kinds holds hundreds of values; checking one
        // of hundreds of thousands costs more than an admission answer may take.
        let values = count_values(o, MAX_OBJECT_VALUES + 1);
        if values > MAX_OBJECT_VALUES {
            return Err(inconsistent(format!(
                "the object holds more than {MAX_OBJECT_VALUES} values; an object of the Lattice kinds holds at most that many"
            )));
        }
    }
    // The object must be what the request says it is.
    let gvk = &request.kind;
    let expected_api = if gvk.group.is_empty() {
        gvk.version.clone()
    } else {
        format!("{}/{}", gvk.group, gvk.version)
    };
    for o in [&object, &old_object].into_iter().flatten() {
        let api = o.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let k = o.get("kind").and_then(Value::as_str).unwrap_or("");
        if api != expected_api || k != gvk.kind {
            return Err(inconsistent(format!(
                "the request is for {expected_api} {}, but the object is `{api}` `{k}`",
                gvk.kind
            )));
        }
    }
    let needs_object = matches!(request.operation, Operation::Create | Operation::Update);
    if needs_object && object.is_none() {
        return Err(inconsistent(format!(
            "a {:?} request without an `object`",
            request.operation
        )));
    }
    let user = &request.user_info;
    Ok(Review {
        uid: request.uid.clone(),
        operation: request.operation.clone(),
        group: gvk.group.clone(),
        version: gvk.version.clone(),
        kind: gvk.kind.clone(),
        namespace: request.namespace.clone().filter(|n| !n.is_empty()),
        name: request.name.clone(),
        object,
        old_object,
        requester: Requester {
            username: user.username.clone().unwrap_or_default(),
            groups: user.groups.clone().unwrap_or_default(),
        },
        dry_run: request.dry_run,
        request,
    })
}
