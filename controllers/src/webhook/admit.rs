//! What the webhook answers, decided without any I/O: a [`Review`] and the current
//! snapshot in, a [`Verdict`] out.
//!
//! The rules, by kind and operation:
//!
//! | request | answer |
//! |---|---|
//! | a kind outside `lattice.dev` | allowed untouched (the webhook configuration never sends one) |
//! | an unknown `lattice.dev` kind | denied: this webhook cannot vouch for it (fail closed) |
//! | DELETE of a `CedarPolicy` | `ManagePolicy` with operation `DELETE`: removing a forbid widens access as surely as adding a permit |
//! | any other DELETE, or CONNECT | allowed |
//! | CREATE / UPDATE of any Lattice kind | schema and semantic validation (what `lattice-policy validate` checks) |
//! | … of a `CedarPolicy` | then `ManagePolicy` for the requesting user and its groups on the namespace |
//! | … of a workload (`LatticeService`, `LatticeJob`, `LatticeModel`, `LatticeMeshMember`) | then every derivation gate on the current snapshot; audit-mode findings become warnings |
//!
//! Policy decisions need a snapshot; without one every such request is denied.

use kube::core::admission::Operation;
use lattice_engine::{Projection, Snapshot, World};
use lattice_gates::admission::{evaluate_object, manage_policy};
use lattice_schemas::crd::Kind;
use lattice_schemas::crd::policy::CedarPolicySpec;
use lattice_schemas::diagnostics::{Finding, Severity, SourceFile};
use lattice_schemas::manifest::Object;
use miette::{GraphicalReportHandler, GraphicalTheme};
use serde_json::Value;

use super::review::{GROUP, Review};

/// The answer to one review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// HTTP-style status code shown by kubectl (200, 403 forbidden, 422 invalid, 503).
    pub code: u16,
    pub message: String,
    pub warnings: Vec<String>,
}

impl Verdict {
    fn allow(warnings: Vec<String>) -> Verdict {
        Verdict {
            allowed: true,
            code: 200,
            message: String::new(),
            warnings,
        }
    }

    fn deny(code: u16, message: String, warnings: Vec<String>) -> Verdict {
        Verdict {
            allowed: false,
            code,
            message,
            warnings,
        }
    }

    /// `allowed`, `denied`, `invalid` or `unavailable` (no snapshot yet), for metrics and
    /// logs.
    pub fn label(&self) -> &'static str {
        match (self.allowed, self.code) {
            (true, _) => "allowed",
            (false, 422 | 400) => "invalid",
            (false, 503) => "unavailable",
            (false, _) => "denied",
        }
    }
}

/// What the webhook decides on: the world, its projection and the snapshot built from
/// them.
pub struct Current {
    pub world: World,
    pub projection: Projection,
    pub snapshot: Snapshot,
}

/// Decides one review. `current` is `None` until a snapshot is loaded.
pub fn admit(current: Option<&Current>, review: &Review) -> Verdict {
    if review.group != GROUP {
        return Verdict::allow(Vec::new());
    }
    let Some(kind) = Kind::from_name(&review.kind) else {
        return Verdict::deny(
            400,
            format!(
                "{} is not a kind this webhook knows; it admits only the Lattice kinds",
                review.describe()
            ),
            Vec::new(),
        );
    };
    match review.operation {
        Operation::Create | Operation::Update => {}
        Operation::Delete if kind == Kind::CedarPolicy => {
            let spec = review
                .old_object
                .as_ref()
                .and_then(|o| o.get("spec"))
                .and_then(|s| serde_json::from_value::<CedarPolicySpec>(s.clone()).ok())
                .unwrap_or_default();
            return may_manage(current, review, "DELETE", &spec, Vec::new());
        }
        Operation::Delete | Operation::Connect => return Verdict::allow(Vec::new()),
    }
    let Some(object) = &review.object else {
        return Verdict::deny(400, "no object to admit".into(), Vec::new());
    };
    let (typed, warnings) = match validate(review, object) {
        Ok(v) => v,
        Err(message) => return Verdict::deny(422, message, Vec::new()),
    };
    match &typed {
        Object::CedarPolicy(p) => {
            let op = if review.operation == Operation::Create {
                "CREATE"
            } else {
                "UPDATE"
            };
            may_manage(current, review, op, &p.spec, warnings)
        }
        o if o.is_workload() => gates(current, review, o, warnings),
        _ => Verdict::allow(warnings),
    }
}

fn may_manage(
    current: Option<&Current>,
    review: &Review,
    operation: &str,
    spec: &CedarPolicySpec,
    warnings: Vec<String>,
) -> Verdict {
    let Some(current) = current else {
        return not_ready(warnings);
    };
    let ns = review.namespace.as_deref().unwrap_or("default");
    let user = &review.requester;
    match manage_policy(&current.snapshot, user, ns, operation, spec) {
        Ok(d) if d.allowed => Verdict::allow(warnings),
        Ok(d) => {
            let why = if d.determining.is_empty() {
                "no policy permits it".to_owned()
            } else {
                let ids: Vec<&str> = d.determining.iter().map(|p| p.id.as_str()).collect();
                format!("forbidden by {}", ids.join(", "))
            };
            let groups = if user.groups.is_empty() {
                "no groups".to_owned()
            } else {
                format!("groups {}", user.groups.join(", "))
            };
            Verdict::deny(
                403,
                format!(
                    "{} may not {} CedarPolicy objects in namespace {ns} ({groups}): ManagePolicy is denied, {why}. Security administrators decide who manages policies (policies/baseline/identities.cedar).",
                    user.username,
                    operation.to_lowercase()
                ),
                warnings,
            )
        }
        Err(e) => Verdict::deny(
            403,
            format!("ManagePolicy cannot be decided: {e}"),
            warnings,
        ),
    }
}

fn gates(
    current: Option<&Current>,
    review: &Review,
    object: &Object,
    mut warnings: Vec<String>,
) -> Verdict {
    let Some(current) = current else {
        return not_ready(warnings);
    };
    let report = match evaluate_object(&current.snapshot, &current.projection, object) {
        Ok(r) => r,
        Err(e) => {
            return Verdict::deny(403, format!("the gates cannot be decided: {e}"), warnings);
        }
    };
    warnings.extend(report.audit_findings());
    if report.allowed() {
        return Verdict::allow(warnings);
    }
    let mut message = format!("{} is denied by policy:", review.describe());
    for g in report.denied_gates() {
        message.push_str(&format!(
            "\n- {} {} (raised by {})",
            g.action, g.resource, g.raised_by
        ));
        if !g.policies.is_empty() {
            message.push_str(&format!(": forbidden by {}", g.policies.join(", ")));
        }
        if let Some(advice) = &g.advice {
            message.push_str(&format!(" — {advice}"));
        }
    }
    Verdict::deny(403, message, warnings)
}

fn not_ready(warnings: Vec<String>) -> Verdict {
    Verdict::deny(
        503,
        "the webhook has no policy snapshot yet; try again shortly".into(),
        warnings,
    )
}

/// Schema and semantic validation of the object as `lattice-policy validate` runs it.
/// Errors are rendered as plain-text diagnostics with line:column in the object as YAML
/// (for a CedarPolicy's own policies, in its `spec.policies` text); warnings come back.
fn validate(review: &Review, object: &Value) -> Result<(Object, Vec<String>), String> {
    let name = format!("{} (as YAML)", review.describe());
    let yaml = lattice_schemas::generate::to_yaml(&without_server_fields(object));
    let report = lattice_schemas::validate::validate_text(&name, &yaml);
    let policies_text = object
        .pointer("/spec/policies")
        .and_then(Value::as_str)
        .filter(|_| review.kind == "CedarPolicy");
    let mut findings: Vec<Finding> = report
        .findings
        .into_iter()
        // A CedarPolicy's policy problems are located in its own text instead.
        .filter(|f| !(policies_text.is_some() && f.code == "lattice::cedar"))
        .collect();
    if let Some(text) = policies_text {
        let file = SourceFile::new(format!("{} spec.policies", review.describe()), text);
        for p in lattice_schemas::cedar::check_policies(text).problems {
            let mut f = Finding::error("lattice::cedar", &file, p.span, p.message);
            if let Some(h) = p.help {
                f = f.with_help(h);
            }
            if p.warning {
                f = f.warning();
            }
            findings.push(f);
        }
    }
    let errors: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    if !errors.is_empty() {
        let mut message = format!("{} is invalid:\n", review.describe());
        for f in errors {
            message.push_str(&plain(f));
        }
        return Err(message);
    }
    let warnings = findings
        .iter()
        .map(|f| {
            let (line, col) = f.line_col();
            format!("{}:{line}:{col}: {}", f.file.name, f.message)
        })
        .collect();
    match report.manifests.into_iter().next() {
        Some(m) => Ok((m.object, warnings)),
        None => Err(format!("{} could not be read", review.describe())),
    }
}

/// The object without what the API server adds to metadata (uid, resourceVersion,
/// managedFields, …) and without `status`, which users do not write.
fn without_server_fields(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
            "generateName",
            "ownerReferences",
            "finalizers",
        ] {
            meta.remove(f);
        }
    }
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
    }
    o
}

/// A diagnostic as miette renders it, without color or Unicode (it ends up in kubectl's
/// output and in logs).
fn plain(f: &Finding) -> String {
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::none()).with_context_lines(1);
    let mut out = String::new();
    if handler.render_report(&mut out, f).is_err() {
        let (line, col) = f.line_col();
        out = format!("{}:{line}:{col}: {}\n", f.file.name, f.message);
    }
    out
}
