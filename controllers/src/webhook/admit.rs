//! What the webhook answers, decided without any I/O: a [`Review`] and the current
//! snapshot in, a [`Verdict`] out.
//!
//! The rules, by kind and operation: every write of every Lattice kind is a Cedar question
//! (`lattice_gates::admission` lists them), asked for the requesting user and its groups.
//!
//! | request | answer |
//! |---|---|
//! | CREATE / UPDATE of a Kubernetes object that carries a pod (Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob, ReplicationController, PodTemplate) | the Pod Security Standards of its namespace (`lattice_gates::pod_security`): `ExemptPodSecurity`, then `RunPod` per mode; enforce refuses a Pod (and a template where the namespace asks), warn and a template's enforce warn, audit annotates. An UPDATE of a Pod that changes neither its spec nor its security annotations is not asked again |
//! | any other kind outside `lattice.dev`, and DELETE of one | allowed untouched |
//! | an unknown `lattice.dev` kind, or CONNECT | denied: this webhook cannot vouch for it (fail closed) |
//! | CREATE / UPDATE of any Lattice kind | schema and semantic validation (what `lattice-policy validate` checks), then the kind's question (`ManagePolicy`, `ManageTrust`, `ManageSecretProvider`, `ManageImageProvider`, `ManageIdentityProvider`, `ManageInfrastructure`, `ManageComplianceProfile`, `ManageQuota`, `ManageBackup`, `Restore`, `ManageWorkload`; for a workload its gates too, its quotas measured with it written in) |
//! | … of a workload (`LatticeService`, `LatticeJob`, `LatticeModel`, `LatticeMeshMember`) | then every derivation gate on the current snapshot; audit-mode findings become warnings |
//! | DELETE of any Lattice kind | the kind's question with operation `DELETE`, on the object as stored; a `LatticeCluster` is `Decommission`; an old object that cannot be read is denied |
//!
//! Policy decisions need a snapshot; without one every such request is denied.

use std::collections::BTreeMap;

use kube::core::admission::Operation;
use lattice_engine::{Projection, Snapshot, World};
use lattice_gates::admission::{decide_write, evaluate_object, write_query};
use lattice_schemas::crd::Kind;
use lattice_schemas::diagnostics::{Finding, Severity};
use lattice_schemas::manifest::Object;
use serde_json::Value;

use super::review::{GROUP, Review, clip};
use lattice_schemas::manifest::core::CoreKind;

/// The answer to one review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// HTTP-style status code shown by kubectl (200, 403 forbidden, 422 invalid, 503).
    pub code: u16,
    pub message: String,
    pub warnings: Vec<String>,
    /// Audit annotations for the API server's audit log (Pod Security's audit mode).
    pub audit: BTreeMap<String, String>,
}

impl Verdict {
    fn allow(warnings: Vec<String>) -> Verdict {
        Verdict {
            allowed: true,
            code: 200,
            message: String::new(),
            warnings: bounded_warnings(warnings),
            audit: BTreeMap::new(),
        }
    }

    /// A denial. Whatever built the message, the answer stays within [`MAX_MESSAGE`]: the
    /// API server stores it in events, and a client controls some of what it quotes.
    fn deny(code: u16, message: String, warnings: Vec<String>) -> Verdict {
        Verdict {
            allowed: false,
            code,
            message: clip(message, MAX_MESSAGE),
            warnings: bounded_warnings(warnings),
            audit: BTreeMap::new(),
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
        return kubernetes_object(current, review);
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
    let operation = match review.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => {
            return Verdict::deny(
                400,
                format!(
                    "{}: CONNECT is not an operation on Lattice kinds",
                    review.describe()
                ),
                Vec::new(),
            );
        }
    };
    if review.operation == Operation::Delete {
        // Who may delete is decided on the object as stored; one that cannot be read
        // cannot be decided on, and is not deleted.
        let Some(old) = &review.old_object else {
            return Verdict::deny(
                403,
                format!(
                    "{} cannot be deleted: the request carries no stored object to decide on",
                    review.describe()
                ),
                Vec::new(),
            );
        };
        let stored = match Object::from_api(kind.name(), &without_server_fields(old)) {
            Ok(o) => o,
            Err(e) => {
                return Verdict::deny(
                    403,
                    format!(
                        "{} cannot be deleted: the stored object cannot be read ({e}), so who may delete it cannot be decided",
                        review.describe()
                    ),
                    Vec::new(),
                );
            }
        };
        return ask(current, review, operation, &stored, None, Vec::new());
    }
    let Some(object) = &review.object else {
        return Verdict::deny(400, "no object to admit".into(), Vec::new());
    };
    let (typed, warnings) = match validate(review, object) {
        Ok(v) => v,
        Err(message) => return Verdict::deny(422, message, Vec::new()),
    };
    // An update is decided on what it changes from, too (an inherited policy stays
    // inherited); a stored object that cannot be read is not updated.
    let stored = match (&review.operation, &review.old_object) {
        (Operation::Update, Some(old)) => {
            match Object::from_api(kind.name(), &without_server_fields(old)) {
                Ok(o) => Some(o),
                Err(e) => {
                    return Verdict::deny(
                        403,
                        format!(
                            "{} cannot be updated: the stored object cannot be read ({e}), so who may change it cannot be decided",
                            review.describe()
                        ),
                        warnings,
                    );
                }
            }
        }
        _ => None,
    };
    ask(
        current,
        review,
        operation,
        &typed,
        stored.as_ref(),
        warnings,
    )
}

/// A Kubernetes object outside `lattice.dev`: one that carries a pod is decided under its
/// namespace's Pod Security Standards; RBAC and Services are asked `AdmitKubernetes`;
/// anything else is admitted untouched.
fn kubernetes_object(current: Option<&Current>, review: &Review) -> Verdict {
    let operation = match review.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete | Operation::Connect => return Verdict::allow(Vec::new()),
    };
    // By group and kind: another project's `Service` or `Deployment` is not Kubernetes'.
    let api_version = match review.group.as_str() {
        "" => review.version.clone(),
        group => format!("{group}/{}", review.version),
    };
    let Some(kind) = CoreKind::of(&api_version, &review.kind) else {
        return Verdict::allow(Vec::new());
    };
    if lattice_gates::kubernetes::ADMITTED_KINDS.contains(&kind) {
        return rbac_or_service(current, review, operation);
    }
    if !kind.carries_pod() {
        return Verdict::allow(Vec::new());
    }
    let Some(object) = &review.object else {
        return Verdict::deny(400, "no object to admit".into(), Vec::new());
    };
    if review.operation == Operation::Update
        && review.kind == "Pod"
        && let Some(old) = &review.old_object
        && !significant_pod_update(old, object)
    {
        return Verdict::allow(Vec::new());
    }
    let Some(current) = current else {
        return not_ready(Vec::new());
    };
    let namespace = review.namespace.as_deref().unwrap_or("default");
    match lattice_gates::pod_security::admit(
        &current.snapshot,
        &current.world,
        &lattice_gates::pod_security::WorldPolicies::of_projection(&current.projection),
        &review.kind,
        object,
        namespace,
        None,
        &review.requester,
        operation,
    ) {
        Ok(Some(a)) => {
            let mut verdict = if a.refused {
                Verdict::deny(403, a.message(), a.warnings.clone())
            } else {
                Verdict::allow(a.warnings.clone())
            };
            verdict.audit = a.audit;
            verdict
        }
        Ok(None) => Verdict::allow(Vec::new()),
        Err(e) => Verdict::deny(
            403,
            format!(
                "{}: its pod cannot be decided under the Pod Security Standards: {e}",
                review.describe()
            ),
            Vec::new(),
        ),
    }
}

/// A Role, ClusterRole, binding or Service: one `AdmitKubernetes` question. What cannot be
/// read or decided is refused.
fn rbac_or_service(current: Option<&Current>, review: &Review, operation: &str) -> Verdict {
    let Some(object) = &review.object else {
        return Verdict::deny(400, "no object to admit".into(), Vec::new());
    };
    let Some(current) = current else {
        return not_ready(Vec::new());
    };
    match lattice_gates::kubernetes::admit(
        &current.snapshot,
        &current.world,
        &lattice_gates::pod_security::WorldPolicies::of_projection(&current.projection),
        &review.kind,
        object,
        review.namespace.as_deref().unwrap_or("default"),
        &review.requester,
        operation,
    ) {
        Ok(Some(a)) if a.refused => Verdict::deny(403, a.message(), Vec::new()),
        Ok(_) => Verdict::allow(Vec::new()),
        Err(e) => Verdict::deny(
            403,
            format!("{}: the write cannot be decided: {e}", review.describe()),
            Vec::new(),
        ),
    }
}

/// Whether a Pod update changes what the Pod Security Standards read: its spec, or the
/// seccomp and AppArmor annotations (everything else of its metadata is free to change).
fn significant_pod_update(old: &Value, new: &Value) -> bool {
    let security_annotations = |v: &Value| -> BTreeMap<String, Value> {
        v.pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| {
                        k.contains("seccomp.security") || k.contains("apparmor.security")
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    old.get("spec") != new.get("spec") || security_annotations(old) != security_annotations(new)
}

/// The write's own question, then (for a created or updated workload) its gates.
fn ask(
    current: Option<&Current>,
    review: &Review,
    operation: &str,
    object: &Object,
    stored: Option<&Object>,
    warnings: Vec<String>,
) -> Verdict {
    let Some(current) = current else {
        return not_ready(warnings);
    };
    let user = &review.requester;
    let query = match write_query(
        user,
        operation,
        object,
        stored,
        &current.world,
        jiff::Timestamp::now(),
    ) {
        Ok(Some(q)) => q,
        Ok(None) => {
            return Verdict::deny(
                400,
                format!("{}: no question decides this write", review.describe()),
                warnings,
            );
        }
        Err(e) => {
            return Verdict::deny(
                403,
                format!("{}: the write cannot be decided: {e}", review.describe()),
                warnings,
            );
        }
    };
    let action = query.action.id().unescaped().to_owned();
    match decide_write(&current.snapshot, &current.projection, user, &query) {
        Ok(e) if e.decision.allowed => {}
        Ok(e) => {
            return Verdict::deny(403, refusal(review, user, operation, &action, &e), warnings);
        }
        Err(e) => {
            return Verdict::deny(
                403,
                format!("{}: {action} cannot be decided: {e}", review.describe()),
                warnings,
            );
        }
    }
    if operation != "DELETE" && object.is_workload() {
        return gates(Some(current), review, object, warnings);
    }
    Verdict::allow(warnings)
}

/// Why a write was refused: who, what, the deciding policies and their `@advice` (for a
/// default deny, the advice of the permits that came closest).
fn refusal(
    review: &Review,
    user: &lattice_gates::admission::Requester,
    operation: &str,
    action: &str,
    e: &lattice_engine::Explanation,
) -> String {
    let groups = if user.groups.is_empty() {
        "no groups".to_owned()
    } else {
        format!("groups {}", user.groups.join(", "))
    };
    let why = match &e.why {
        lattice_engine::Why::NothingPermitted(_) => "no policy permits it".to_owned(),
        _ => {
            let ids: Vec<&str> = e
                .decision
                .determining
                .iter()
                .map(|p| p.id.as_str())
                .collect();
            format!("forbidden by {}", ids.join(", "))
        }
    };
    let advice = e.advice();
    let mut message = format!(
        "{} may not {} {} ({groups}): {action} is denied, {why}.",
        user.username,
        operation.to_lowercase(),
        review.describe(),
    );
    if let Some(advice) = advice {
        message.push_str(&format!(" {advice}"));
    }
    message
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
    let report = match evaluate_object(
        &current.snapshot,
        &current.projection,
        &current.world,
        object,
    ) {
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
    // The object is checked as the JSON value it arrived as: no value goes through YAML's
    // plain-scalar rules (a JSON → YAML → JSON round trip turned the name "0o17" into the
    // number 15, and renamed a label key "0o17" to "15"), and nothing is parsed again (a
    // 3 MiB body once took a second to re-read as YAML and locate). Findings name their
    // field by path; a CedarPolicy's policy problems are located in its own text.
    let name = review.describe();
    let report = lattice_schemas::validate::validate_value(&name, without_server_fields(object));
    let findings: Vec<Finding> = report.findings;
    let errors: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    if !errors.is_empty() {
        let mut message = format!("{} is invalid:\n", review.describe());
        for (i, f) in errors.iter().enumerate() {
            let line = plain(f);
            if i >= MAX_ERRORS_SHOWN || message.len() + line.len() > MAX_MESSAGE {
                message.push_str(&format!(
                    "and {} more error(s); validate the object with `lattice-policy validate` to see them all\n",
                    errors.len() - i
                ));
                break;
            }
            message.push_str(&line);
        }
        return Err(message);
    }
    let warnings = findings.iter().map(place_and_message).collect();
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

/// Errors shown in one denial; the rest are counted.
const MAX_ERRORS_SHOWN: usize = 20;
/// The longest denial message (kubectl shows it, the API server stores it in events).
const MAX_MESSAGE: usize = 16 * 1024;
/// Quoted source longer than this is cut in a message.
const MAX_QUOTE: usize = 120;
/// Warnings in one answer, and the length of each (kubectl prints every one).
const MAX_WARNINGS: usize = 20;
const MAX_WARNING: usize = 512;

fn bounded_warnings(mut warnings: Vec<String>) -> Vec<String> {
    let more = warnings.len().saturating_sub(MAX_WARNINGS);
    warnings.truncate(MAX_WARNINGS);
    let mut out: Vec<String> = warnings.into_iter().map(|w| clip(w, MAX_WARNING)).collect();
    if more > 0 {
        out.push(format!("and {more} more warnings"));
    }
    out
}

/// Where a finding is and what it says, in one line: `Kind ns/name: spec.x.y: message` for
/// the object (named by path), `name:line:column: message` for text it holds (policies).
fn place_and_message(f: &Finding) -> String {
    if f.file.text.is_empty() {
        match &f.path {
            Some(p) if !p.is_empty() => format!("{}: {p}: {}", f.file.name, f.message),
            _ => format!("{}: {}", f.file.name, f.message),
        }
    } else {
        let (line, col) = f.line_col();
        format!("{}:{line}:{col}: {}", f.file.name, f.message)
    }
}

/// A diagnostic as plain text: where it is and what it says, the offending text quoted
/// (cut to [`MAX_QUOTE`] characters: one 15 MB string literal must not be repeated per
/// error) and the help. Cheap, bounded, and free of color and Unicode art (it ends up in
/// kubectl's output and in logs).
fn plain(f: &Finding) -> String {
    let mut out = format!("{}\n", place_and_message(f));
    let mut start = f.span.start.min(f.file.text.len());
    while !f.file.text.is_char_boundary(start) {
        start -= 1;
    }
    let quoted: String = f.file.text[start..]
        .chars()
        .take_while(|c| *c != '\n')
        .take(MAX_QUOTE + 1)
        .collect();
    if !quoted.trim().is_empty() {
        let cut = quoted.chars().count() > MAX_QUOTE;
        let shown: String = quoted.chars().take(MAX_QUOTE).collect();
        out.push_str(&format!(
            "  | {}{}\n",
            shown.escape_debug(),
            if cut { "…" } else { "" }
        ));
    }
    if let Some(help) = &f.help {
        out.push_str(&format!("  help: {help}\n"));
    }
    out
}
