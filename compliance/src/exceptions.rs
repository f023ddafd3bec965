//! The exception register: every permit in force that grants a deviation from the posture,
//! with who approved it, until when, and the subjects it covers.
//!
//! A deviation is what a policy must permit beyond the baseline: a security override
//! (`OverrideSecurity`: a capability, privilege, root, a sysctl…), a wildcard mesh
//! declaration (`AllowWildcard`), a namespace without the default-deny baseline
//! (`OptOutDefaultDeny`), an image from an untrusted registry or unsigned where a signature
//! is required (`DeployImage`), and a policy in audit mode (it decides nothing). Each entry
//! comes from the decisions themselves: the permits that determined an allowed deviation on
//! the scanned snapshot.
//!
//! Policies record the approval as annotations: `@approver("…")` and `@expires("…")` (a date,
//! `2027-03-31`, through which the exception holds; an RFC 3339 time; or `never`, for a
//! standing rule decided as such). An audit-mode CedarPolicy's `spec.auditUntil` is its
//! expiry when it has no `@expires`. A check that tolerates a deviation (its condition reads
//! `context.unapprovedOverrides` or `context.unapprovedWildcards`) passes *with an approved
//! exception* for a subject that holds one, and fails once the exception has expired.

use std::collections::{BTreeMap, HashMap};

use lattice_engine::project::{namespaces, root_cluster};
use lattice_engine::{PolicyInfo, PolicyStore, Query, Snapshot, World, action, opt_out_query, uid};
use lattice_gates::AllowedGate;
use lattice_gates::compliance::{AllowedDeviations, Subject, SubjectKind};
use lattice_gates::questions;
use lattice_schemas::crd::EnforcementMode;
use lattice_schemas::manifest::Object;
use rayon::prelude::*;
use serde::Serialize;

use crate::subject::SubjectRef;

/// The exceptions each subject holds (see [`held`]).
pub type Held<'a> = HashMap<(SubjectKind, &'a str), Vec<(String, &'a Exception)>>;

/// What an exception lets a subject do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExceptionKind {
    /// `OverrideSecurity`.
    SecurityOverride,
    /// `AllowWildcard`.
    Wildcard,
    /// `OptOutDefaultDeny`.
    DefaultDenyOptOut,
    /// `DeployImage` of an image outside the trusted registries, or unsigned where a
    /// signature is required.
    Image,
    /// A policy in audit mode: reported, never enforced.
    AuditMode,
}

impl ExceptionKind {
    pub fn label(self) -> &'static str {
        match self {
            ExceptionKind::SecurityOverride => "security override",
            ExceptionKind::Wildcard => "wildcard",
            ExceptionKind::DefaultDenyOptOut => "default-deny opt-out",
            ExceptionKind::Image => "image",
            ExceptionKind::AuditMode => "audit mode",
        }
    }
}

/// Whether an exception is approved and in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExceptionState {
    /// It names an approver and an expiry that has not passed.
    Approved,
    /// Its expiry has passed: the checks it excused fail.
    Expired,
    /// It lacks an approver or an expiry (or its expiry cannot be read).
    Incomplete,
}

impl ExceptionState {
    pub fn label(self) -> &'static str {
        match self {
            ExceptionState::Approved => "approved",
            ExceptionState::Expired => "expired",
            ExceptionState::Incomplete => "incomplete",
        }
    }
}

/// One permit that grants a deviation, and what it covers on the scanned snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Exception {
    /// The permit's stable id.
    pub policy: String,
    /// Where it is written: `payments/payments-security-overrides:8`.
    pub source: String,
    pub kind: ExceptionKind,
    /// What it grants, as the decisions asked (`capability:NET_BIND_SERVICE`, `outbound`,
    /// a namespace, an image).
    pub grants: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub state: ExceptionState,
    /// Why it is not approved (for `expired` and `incomplete`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The subjects it covers.
    pub subjects: Vec<SubjectRef>,
}

impl Exception {
    /// The category of deviation a grant is, as checks name it: an override's category
    /// (`capability`, `runAsRoot`, `sysctl`…), `wildcard`, `opt-out`, `image`, `audit`.
    pub fn categories(&self) -> Vec<String> {
        match self.kind {
            ExceptionKind::SecurityOverride => self
                .grants
                .iter()
                .map(|g| g.split(':').next().unwrap_or(g).to_owned())
                .collect(),
            ExceptionKind::Wildcard => vec!["wildcard".into()],
            ExceptionKind::DefaultDenyOptOut => vec!["opt-out".into()],
            ExceptionKind::Image => vec!["image".into()],
            ExceptionKind::AuditMode => vec!["audit".into()],
        }
    }
}

/// Approver, expiry and state of a permit, read from its annotations (with `fallback` as
/// the expiry when it has no `@expires`).
fn approval(
    info: &PolicyInfo,
    fallback: Option<&str>,
    now: jiff::Timestamp,
) -> (
    Option<String>,
    Option<String>,
    ExceptionState,
    Option<String>,
) {
    let approver = info
        .annotations
        .get("approver")
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty());
    let expires = info
        .annotations
        .get("expires")
        .map(String::as_str)
        .or(fallback)
        .map(str::to_owned);
    let (state, reason) = match (&approver, &expires) {
        (None, _) => (
            ExceptionState::Incomplete,
            Some("no @approver: nobody is on record as having approved it".into()),
        ),
        (_, None) => (
            ExceptionState::Incomplete,
            Some("no @expires: write a date, or `never` for a standing rule".into()),
        ),
        (Some(_), Some(text)) => match lattice_schemas::cedar::expiry(text) {
            Err(e) => (ExceptionState::Incomplete, Some(format!("@expires {e}"))),
            Ok(Some(until)) if until <= now => {
                (ExceptionState::Expired, Some(format!("expired {until}")))
            }
            Ok(_) => (ExceptionState::Approved, None),
        },
    };
    (approver, expires, state, reason)
}

/// Every exception in force on `snapshot`, over the subjects in scope. `allowed` holds the
/// deviations derivation already decided on the same snapshot, by workload; a workload it
/// does not hold has its deviation gates decided here.
pub fn register(
    snapshot: &Snapshot,
    world: &World,
    store: &PolicyStore,
    subjects: &[Subject],
    now: jiff::Timestamp,
    allowed: Option<&AllowedDeviations>,
) -> Vec<Exception> {
    // By kind and id, which name a uid one to one, so no uid is rendered to be looked up.
    let by_uid: HashMap<(SubjectKind, &str), &Subject> = subjects
        .iter()
        .map(|s| ((s.kind, s.id.as_str()), s))
        .collect();
    // (policy id) → (info, kind, grants, subjects)
    let mut found: Vec<(
        std::sync::Arc<PolicyInfo>,
        ExceptionKind,
        String,
        Vec<SubjectRef>,
    )> = Vec::new();
    let workloads: Vec<&Object> = world
        .objects()
        .filter(|(_, o)| o.is_workload())
        .map(|(_, o)| o)
        .collect::<Vec<_>>()
        .into_par_iter()
        .filter(|o| {
            let id = format!("{}/{}", o.namespace().unwrap_or("default"), o.name());
            by_uid.contains_key(&(SubjectKind::Service, id.as_str()))
        })
        .collect();
    let per_workload: Vec<Vec<_>> = workloads
        .par_iter()
        .map(|o| {
            let decided = allowed.and_then(|a| {
                a.get(&format!(
                    "{}/{}",
                    o.namespace().unwrap_or("default"),
                    o.name()
                ))
            });
            workload_exceptions(snapshot, o, &by_uid, decided)
        })
        .collect();
    found.extend(per_workload.into_iter().flatten());
    // Namespaces that run without the baseline.
    let (cluster, _) = root_cluster(world);
    for (ns, requested) in namespaces(world) {
        let Some(subject) = by_uid.get(&(SubjectKind::Namespace, ns.as_str())) else {
            continue;
        };
        if !snapshot.opted_out(&ns) {
            continue;
        }
        if let Ok(d) = snapshot.decide(&opt_out_query(&cluster, &ns, requested))
            && d.allowed
        {
            for p in d.determining {
                found.push((
                    p,
                    ExceptionKind::DefaultDenyOptOut,
                    ns.clone(),
                    vec![SubjectRef::of(subject)],
                ));
            }
        }
    }
    let mut out: BTreeMap<(String, ExceptionKind), Exception> = BTreeMap::new();
    for (info, kind, grant, covered) in found {
        let entry = out.entry((info.id.clone(), kind)).or_insert_with(|| {
            let (approver, expires, state, reason) = approval(&info, None, now);
            Exception {
                policy: info.id.clone(),
                source: format!("{}:{}", info.source, info.line),
                kind,
                grants: Vec::new(),
                approver,
                expires,
                state,
                reason,
                subjects: Vec::new(),
            }
        });
        // Duplicates go at the end, by sorting: an exception can cover every workload of an
        // estate, and a search per subject would be quadratic.
        entry.grants.push(grant);
        entry.subjects.extend(covered);
    }
    // Audit-mode policies: each decides nothing while in audit.
    let audit_until: BTreeMap<(String, String), String> = world
        .objects()
        .filter_map(|(_, o)| match o {
            Object::CedarPolicy(p) => Some((
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                ),
                p.spec.audit_until.clone()?,
            )),
            _ => None,
        })
        .collect();
    for p in store
        .active()
        .filter(|p| p.info.mode == EnforcementMode::Audit)
    {
        let fallback = match &p.info.source {
            lattice_engine::PolicySource::Object { namespace, name } => audit_until
                .get(&(namespace.clone(), name.clone()))
                .map(String::as_str),
            _ => None,
        };
        let (approver, expires, state, reason) = approval(&p.info, fallback, now);
        out.insert(
            (p.info.id.clone(), ExceptionKind::AuditMode),
            Exception {
                policy: p.info.id.clone(),
                source: format!("{}:{}", p.info.source, p.info.line),
                kind: ExceptionKind::AuditMode,
                grants: vec![format!("{:?}", p.info.effect).to_lowercase()],
                approver,
                expires,
                state,
                reason,
                subjects: Vec::new(),
            },
        );
    }
    let mut all: Vec<Exception> = out.into_values().collect();
    for e in &mut all {
        e.grants.sort();
        e.grants.dedup();
        e.subjects.sort();
        e.subjects.dedup();
    }
    all
}

/// The derivation actions whose allowed gates are deviations an exception grants.
const DEVIATION_ACTIONS: [&str; 3] = ["OverrideSecurity", "AllowWildcard", "DeployImage"];

/// The gates of a derivation that allowed a deviation: what [`register`] reads, through the
/// scan's `allowed_deviations` option, instead of deciding them again.
pub fn deviations(report: &lattice_gates::GateReport) -> Vec<AllowedGate> {
    report.allowed_gates(&DEVIATION_ACTIONS)
}

/// The deviations `object` is allowed on `snapshot`, decided here: for a workload the scan
/// was given no derivation of.
fn decide_deviations(snapshot: &Snapshot, object: &Object) -> Vec<AllowedGate> {
    let ns = object.namespace().unwrap_or("default");
    let principal = uid("Service", &format!("{ns}/{}", object.name()));
    questions(object)
        .into_iter()
        .filter(|gate| DEVIATION_ACTIONS.contains(&gate.action) && gate.malformed.is_none())
        // A trusted image is no deviation: not worth a decision.
        .filter(|gate| gate.action != "DeployImage" || !trusted_image(snapshot, &gate.resource))
        .filter_map(|gate| {
            let context = lattice_engine::context_from_json(&gate.context).ok()?;
            let q = Query::new(
                principal.clone(),
                action(gate.action),
                gate.resource.clone(),
            )
            .with_context(context);
            let d = snapshot.decide(&q).ok().filter(|d| d.allowed)?;
            Some(AllowedGate {
                action: gate.action,
                resource: gate.resource,
                raised_by: gate.raised_by,
                determining: d.determining,
            })
        })
        .collect()
}

/// The deviations one workload was allowed, with the permits that allowed each: from its
/// derivation's `allowed` gates when given, else decided here.
fn workload_exceptions(
    snapshot: &Snapshot,
    object: &Object,
    by_uid: &HashMap<(SubjectKind, &str), &Subject>,
    allowed: Option<&Vec<AllowedGate>>,
) -> Vec<(
    std::sync::Arc<PolicyInfo>,
    ExceptionKind,
    String,
    Vec<SubjectRef>,
)> {
    let ns = object.namespace().unwrap_or("default");
    let id = format!("{ns}/{}", object.name());
    let decided_here;
    let gates = match allowed {
        Some(gates) => gates.as_slice(),
        None => {
            decided_here = decide_deviations(snapshot, object);
            decided_here.as_slice()
        }
    };
    let mut out = Vec::new();
    for gate in gates {
        let kind = match gate.action {
            "OverrideSecurity" => ExceptionKind::SecurityOverride,
            "AllowWildcard" => ExceptionKind::Wildcard,
            "DeployImage" if !trusted_image(snapshot, &gate.resource) => ExceptionKind::Image,
            _ => continue,
        };
        // Who holds it: the workload, and the container that raised it.
        let mut covered = Vec::new();
        if let Some(s) = by_uid.get(&(SubjectKind::Service, id.as_str())) {
            covered.push(SubjectRef::of(s));
        }
        let container = gate
            .raised_by
            .strip_prefix("sidecar ")
            .unwrap_or(&gate.raised_by);
        if let Some(s) = by_uid.get(&(SubjectKind::Container, format!("{id}/{container}").as_str()))
        {
            covered.push(SubjectRef::of(s));
        }
        let grant = gate.resource.id().unescaped().to_owned();
        for p in &gate.determining {
            out.push((p.clone(), kind, grant.clone(), covered.clone()));
        }
    }
    out
}

/// Whether an image needs no exception: under a trusted registry, and signed where a
/// signature is required (what the projection says of it).
fn trusted_image(snapshot: &Snapshot, image: &cedar_policy::EntityUid) -> bool {
    let Some(entity) = snapshot.entities().get(image) else {
        return false;
    };
    let flag = |name: &str| {
        matches!(
            entity.attr(name),
            Some(Ok(cedar_policy::EvalResult::Bool(true)))
        )
    };
    flag("trustedRegistry") && (flag("signed") || !flag("signatureRequired"))
}

/// Per subject (by kind and id, as its Cedar uid names it), the exceptions it holds, by
/// category.
pub fn held(register: &[Exception]) -> Held<'_> {
    let mut out: Held<'_> = HashMap::new();
    for e in register {
        let categories = e.categories();
        for s in &e.subjects {
            for c in &categories {
                out.entry((s.kind, s.id.as_str()))
                    .or_default()
                    .push((c.clone(), e));
            }
        }
    }
    out
}
