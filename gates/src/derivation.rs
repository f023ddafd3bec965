//! Derivation gates: every question a workload raises before anything is derived for it,
//! each labelled with what raised it (a container, sidecar, resource, host or the pod).

use std::collections::BTreeSet;
use std::sync::Arc;

use cedar_policy::EntityUid;
use lattice_engine::project::{
    container_overrides, external_endpoint, gpu_model, image_uid_text, protocol_name,
    secret_path_id, workload_bodies,
};
use lattice_engine::{Decision, PolicyInfo, Query, Snapshot, action, context_from_json, uid};

use crate::attrs::{bool_attr, set_attr, string_attr};
use lattice_schemas::crd::service::DeniedGate;
use lattice_schemas::crd::workload::{Direction, WorkloadBody};
use lattice_schemas::manifest::Object;
use lattice_schemas::validate::format::quantity_value;
use serde_json::{Value, json};

/// One question: may this workload do this?
#[derive(Clone, Debug)]
pub struct Gate {
    /// The Cedar action, e.g. `DeployImage`.
    pub action: &'static str,
    pub resource: EntityUid,
    /// What raised it: `main`, `sidecar vpn`, `resource db`, `host api.example.com`, `pod`.
    pub raised_by: String,
    pub context: Value,
    /// Set when the declaration is too malformed to ask about (a secret without provider or
    /// id, an external service without a host): the gate denies with this reason. A gate is
    /// never skipped, so a malformed resource cannot bypass policy.
    pub malformed: Option<String>,
}

/// A gate and its answer.
#[derive(Clone, Debug)]
pub struct GateOutcome {
    pub gate: Gate,
    /// The decision, or why the question could not be asked (which denies).
    pub decision: Result<Decision, String>,
    /// For a default deny: the permits that came closest, and what stopped each.
    pub near_misses: Vec<lattice_engine::NearMiss>,
    /// For a denial, what the resource's facts say about it, when they explain it (an
    /// image's verification: why it is not signed, and which keys would count).
    pub facts: Option<String>,
}

impl GateOutcome {
    pub fn allowed(&self) -> bool {
        self.decision.as_ref().is_ok_and(|d| d.allowed)
    }
}

/// Every gate of one workload with its decision.
#[derive(Clone, Debug)]
pub struct GateReport {
    /// The workload's `Service` uid id (`namespace/name`).
    pub workload: String,
    pub outcomes: Vec<GateOutcome>,
    pub digest: String,
}

/// A gate that allowed, with the permits that determined it: what the exception register
/// reads from a derivation rather than deciding the same question again.
#[derive(Clone, Debug)]
pub struct AllowedGate {
    pub action: &'static str,
    pub resource: EntityUid,
    pub raised_by: String,
    pub determining: Vec<Arc<PolicyInfo>>,
}

impl GateReport {
    /// Whether every gate allowed (no partial derivation otherwise).
    pub fn allowed(&self) -> bool {
        self.outcomes.iter().all(GateOutcome::allowed)
    }

    /// The gates of `actions` that allowed, with the permits that allowed each.
    pub fn allowed_gates(&self, actions: &[&str]) -> Vec<AllowedGate> {
        self.outcomes
            .iter()
            .filter(|o| actions.contains(&o.gate.action))
            .filter_map(|o| match &o.decision {
                Ok(d) if d.allowed => Some(AllowedGate {
                    action: o.gate.action,
                    resource: o.gate.resource.clone(),
                    raised_by: o.gate.raised_by.clone(),
                    determining: d.determining.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    pub fn denied(&self) -> impl Iterator<Item = &GateOutcome> {
        self.outcomes.iter().filter(|o| !o.allowed())
    }

    /// What audit-mode policies would have decided differently, one line each (for render
    /// warnings and AdmissionReview `warnings`); they never change the outcome.
    pub fn audit_findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for o in &self.outcomes {
            let Ok(d) = &o.decision else { continue };
            for p in &d.audit {
                let mut line = format!(
                    "audit policy {} matched {} {} (raised by {})",
                    p.id, o.gate.action, o.gate.resource, o.gate.raised_by
                );
                if let Some(a) = p.annotations.get("advice") {
                    line.push_str(&format!(": {a}"));
                }
                out.push(line);
            }
            for f in &d.audit_errors {
                out.push(format!(
                    "audit policy {} failed on {} {} (raised by {}): {}",
                    f.policy.id, o.gate.action, o.gate.resource, o.gate.raised_by, f.message
                ));
            }
        }
        out
    }

    /// The denials as they appear in a workload's status.
    pub fn denied_gates(&self) -> Vec<DeniedGate> {
        self.denied()
            .map(|o| {
                let (policies, advice) = match &o.decision {
                    // A default deny cites the permit that came closest.
                    Ok(d) if d.determining.is_empty() => (
                        Vec::new(),
                        o.near_misses
                            .iter()
                            .find_map(|n| n.policy.annotations.get("advice").cloned()),
                    ),
                    Ok(d) => (
                        d.determining.iter().map(|p| p.id.clone()).collect(),
                        d.determining
                            .iter()
                            .find_map(|p| p.annotations.get("advice").cloned()),
                    ),
                    Err(e) => (Vec::new(), Some(e.clone())),
                };
                let advice = advice.unwrap_or_else(|| {
                    "no policy permits this; ask the security team for a permit".into()
                });
                DeniedGate {
                    action: o.gate.action.to_owned(),
                    resource: o.gate.resource.to_string(),
                    raised_by: o.gate.raised_by.clone(),
                    policies,
                    advice: Some(match &o.facts {
                        Some(facts) => format!("{facts}. {advice}"),
                        None => advice,
                    }),
                }
            })
            .collect()
    }
}

fn kind_of(object: &Object) -> &'static str {
    match object {
        Object::Job(_) => "job",
        Object::Model(_) => "model",
        Object::MeshMember(_) => "meshmember",
        Object::Package(_) => "package",
        _ => "service",
    }
}

/// The workload bodies of an object, with the prefix their containers carry (`task.`).
fn bodies(object: &Object) -> Vec<(String, &WorkloadBody)> {
    workload_bodies(object)
        .into_iter()
        .map(|(name, body, _)| {
            (
                if name.is_empty() {
                    String::new()
                } else {
                    format!("{name}.")
                },
                body,
            )
        })
        .collect()
}

/// What an image's verification says about a denied `DeployImage`: why it is not signed,
/// and the keys that would count (the governing TrustPolicy prefix's), with the digest to
/// sign. `None` when the image is signed or needs no signature.
fn image_facts(snapshot: &Snapshot, image: &EntityUid) -> Option<String> {
    let e = snapshot.entities().get(image)?;
    let text = |name: &str| string_attr(e, name);
    let flag = |name: &str| bool_attr(e, name);
    let keys = set_attr(e, "trustedKeys");
    if !flag("trustedRegistry") {
        return Some("no TrustPolicy registry covers this image".to_owned());
    }
    if flag("signed") || !flag("signatureRequired") {
        return None;
    }
    let reference = image.id().unescaped();
    // The repository without tag or digest: what `cosign sign` names with the digest.
    let name = match reference.split_once('@') {
        Some((name, _)) => name,
        None => {
            let slash = reference.rfind('/').map_or(0, |i| i + 1);
            match reference[slash..].rfind(':') {
                Some(i) => &reference[..slash + i],
                None => reference,
            }
        }
    };
    let target = match text("resolvedDigest") {
        d if d.is_empty() => format!("{name}@DIGEST (the digest its tag names)"),
        d => format!("{name}@{d}"),
    };
    let why = match text("verifyError") {
        e if e.is_empty() => "not signed".to_owned(),
        e => format!("not signed: {e}"),
    };
    Some(match keys.as_slice() {
        [] => format!("{why}; its TrustPolicy registry lists no key to sign {name} with"),
        keys => format!(
            "{why}; sign {target} with the TrustPolicy key {}",
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    })
}

/// The `ConsumeQuota` question of each quota covering `object`, with what it asks for and
/// what the quota's earlier workloads use: facts of the world `snapshot` was taken of.
pub fn quota_questions(snapshot: &Snapshot, object: &Object) -> Vec<Gate> {
    let id = format!(
        "{}/{}",
        object.namespace().unwrap_or("default"),
        object.name()
    );
    snapshot
        .quotas()
        .consumption(&id)
        .iter()
        .map(|c| {
            let raised_by = format!("quota {}", c.quota);
            Gate {
                action: "ConsumeQuota",
                resource: uid("Quota", &c.quota),
                context: json!({
                    "raisedBy": raised_by,
                    "workloadKind": kind_of(object),
                    "demand": c.demand.to_cedar_json(),
                    "usage": c.usage.to_cedar_json(),
                    "total": c.total().to_cedar_json(),
                }),
                raised_by,
                malformed: None,
            }
        })
        .collect()
}

/// For a refused quota, by how much each limit would be passed.
fn quota_facts(snapshot: &Snapshot, workload: &str, quota: &EntityUid) -> Option<String> {
    let name = quota.id().unescaped();
    let ledger = snapshot.quotas();
    let c = ledger
        .consumption(workload)
        .iter()
        .find(|c| c.quota == name)?;
    let over = lattice_engine::quota::overruns(c, ledger.limits(name)?);
    (!over.is_empty()).then(|| format!("over quota `{name}`: {}", over.join(", ")))
}

/// Every question `object` raises, in a stable order.
pub fn questions(object: &Object) -> Vec<Gate> {
    let kind = kind_of(object);
    let ns = object.namespace().unwrap_or("default");
    let mut out = Vec::new();
    let mut bad: Vec<Gate> = Vec::new();
    let mut push = |action: &'static str, resource: EntityUid, raised_by: String, extra: Value| {
        let mut context = json!({"raisedBy": raised_by, "workloadKind": kind});
        if let (Value::Object(c), Value::Object(e)) = (&mut context, extra) {
            c.extend(e);
        }
        out.push(Gate {
            action,
            malformed: None,
            resource,
            raised_by,
            context,
        });
    };
    let mut wildcards = (false, false);
    for (prefix, body) in bodies(object) {
        for (sidecar, set) in [(false, &body.containers), (true, &body.sidecars)] {
            for (name, c) in set {
                let by = format!("{}{prefix}{name}", if sidecar { "sidecar " } else { "" });
                push(
                    "DeployImage",
                    uid("Image", &image_uid_text(&c.image)),
                    by.clone(),
                    json!({"sidecar": sidecar}),
                );
                for (category, value) in container_overrides(c) {
                    let id = if value.is_empty() {
                        category
                    } else {
                        format!("{category}:{value}")
                    };
                    push(
                        "OverrideSecurity",
                        uid("SecurityOverride", &id),
                        by.clone(),
                        json!({}),
                    );
                }
            }
        }
        for name in body.sysctls.keys() {
            push(
                "OverrideSecurity",
                uid("SecurityOverride", &format!("sysctl:{name}")),
                format!("{prefix}pod"),
                json!({}),
            );
        }
        for (flag, set) in [
            ("hostNetwork", body.host_network),
            ("shareProcessNamespace", body.share_process_namespace),
        ] {
            if set == Some(true) {
                push(
                    "OverrideSecurity",
                    uid("SecurityOverride", flag),
                    format!("{prefix}pod"),
                    json!({}),
                );
            }
        }
        let read_only_mounts: BTreeSet<String> = body
            .containers
            .values()
            .chain(body.sidecars.values())
            .flat_map(|c| c.volumes.values())
            .filter(|v| v.read_only == Some(true))
            .map(|v| v.source.clone())
            .collect();
        // A pull secret that is no secret resource of the workload names an ImageProvider.
        for name in &body.image_pull_secrets {
            if body
                .resources
                .get(name)
                .is_some_and(|r| r.type_ == "secret")
            {
                continue;
            }
            push(
                "UseImageProvider",
                uid("ImageProvider", name),
                format!("pull secret {prefix}{name}"),
                json!({}),
            );
        }
        for (name, r) in &body.resources {
            let by = format!("resource {prefix}{name}");
            match r.type_.as_str() {
                "secret" => {
                    if let Some(id) = secret_path_id(r) {
                        let keys: Vec<&str> = r
                            .params
                            .as_ref()
                            .and_then(|p| p.get("keys"))
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        push(
                            "AccessSecret",
                            uid("SecretPath", &id),
                            by,
                            json!({"keys": keys}),
                        );
                    } else {
                        bad.push(malformed(
                            "AccessSecret",
                            uid("SecretPath", ""),
                            by,
                            kind,
                            "the secret names no provider (`params.provider`) or no path (`id`)",
                        ));
                    }
                }
                // A volume with an id and no size is owned elsewhere: its owner's consent.
                "volume"
                    if r.id.is_some()
                        && !r.params.as_ref().is_some_and(|p| p.contains_key("size")) =>
                {
                    let read_only = read_only_mounts.contains(&format!("${{resources.{name}}}"));
                    push(
                        "AccessVolume",
                        uid(
                            "Volume",
                            &format!("{ns}/{}", r.id.as_deref().unwrap_or_default()),
                        ),
                        by,
                        json!({"readOnly": read_only}),
                    );
                }
                "external-service" => {
                    if let Some((host, port, _)) = external_endpoint(r) {
                        push(
                            "AccessExternalEndpoint",
                            uid("ExternalEndpoint", &format!("{host}:{port}")),
                            by,
                            json!({}),
                        );
                    } else {
                        bad.push(malformed(
                            "AccessExternalEndpoint",
                            uid("ExternalEndpoint", ""),
                            by,
                            kind,
                            "the external service names no host (`params.host`)",
                        ));
                    }
                }
                "gpu" => {
                    let params = r.params.as_ref();
                    let count = params
                        .and_then(|p| p.get("count"))
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    let memory = params
                        .and_then(|p| p.get("memory"))
                        .and_then(Value::as_str)
                        .and_then(quantity_value)
                        .map(|b| (b / (1024.0 * 1024.0)) as i64)
                        .unwrap_or(0);
                    push(
                        "UseGpu",
                        uid("Gpu", &gpu_model(r)),
                        by,
                        json!({"count": count, "memoryMiB": memory}),
                    );
                }
                "service" if name == "*" => {
                    let d = r.direction.unwrap_or(Direction::Outbound);
                    wildcards.0 |= d.is_outbound();
                    wildcards.1 |= d.is_inbound();
                }
                _ => {}
            }
        }
    }
    match object {
        Object::Service(s) => {
            if let Some(ing) = &s.spec.ingress {
                // The ClusterIssuer a certificate is requested from ("" for none, a secret
                // given by hand, or a namespaced Issuer).
                let issuer = ing
                    .tls
                    .as_ref()
                    .filter(|t| t.mode == lattice_schemas::crd::service::TlsMode::Auto)
                    .and_then(|t| t.issuer_ref.as_ref())
                    .filter(|r| r.kind.as_deref().is_none_or(|k| k == "ClusterIssuer"))
                    .map_or("", |r| r.name.as_str());
                for h in &ing.hosts {
                    push(
                        "ExposeHost",
                        uid("Host", h),
                        format!("host {h}"),
                        json!({"tls": ing.tls.is_some(), "issuer": issuer}),
                    );
                }
            }
        }
        Object::MeshMember(mm) => {
            wildcards = (
                mm.spec.dependencies.iter().any(|d| d == "*"),
                mm.spec.allowed_callers.iter().any(|c| c == "*"),
            );
            for (i, e) in mm.spec.egress.iter().enumerate() {
                for p in &e.ports {
                    let host = lattice_engine::project::egress_host(e);
                    let _ = protocol_name(e.protocol);
                    push(
                        "AccessExternalEndpoint",
                        uid("ExternalEndpoint", &format!("{host}:{p}")),
                        format!("egress {i}"),
                        json!({}),
                    );
                }
            }
        }
        Object::Package(p) => {
            for (name, r) in &p.spec.resources {
                if r.type_ == "secret"
                    && let Some(id) = secret_path_id(r)
                {
                    push(
                        "AccessSecret",
                        uid("SecretPath", &id),
                        format!("resource {name}"),
                        json!({"keys": []}),
                    );
                }
            }
        }
        _ => {}
    }
    if wildcards.0 {
        push(
            "AllowWildcard",
            uid("Mesh", "outbound"),
            "dependency *".into(),
            json!({}),
        );
    }
    if wildcards.1 {
        push(
            "AllowWildcard",
            uid("Mesh", "inbound"),
            "caller *".into(),
            json!({}),
        );
    }
    out.extend(bad);
    out
}

/// A gate for a declaration too malformed to ask about; it always denies.
fn malformed(
    action: &'static str,
    resource: EntityUid,
    raised_by: String,
    kind: &str,
    reason: &str,
) -> Gate {
    Gate {
        action,
        resource,
        context: json!({"raisedBy": raised_by, "workloadKind": kind}),
        raised_by,
        malformed: Some(reason.to_owned()),
    }
}

/// The decision on one of `object`'s gates, without the explanation [`evaluate`] gives:
/// for a caller that needs only the verdict (the mesh report's egress). A malformed gate,
/// or a context Cedar cannot read, is an error, which denies.
pub fn decide(snapshot: &Snapshot, object: &Object, gate: &Gate) -> Result<Decision, String> {
    if let Some(reason) = &gate.malformed {
        return Err(reason.clone());
    }
    let ns = object.namespace().unwrap_or("default");
    let principal = uid("Service", &format!("{ns}/{}", object.name()));
    let query = gate_query(&principal, gate)?;
    snapshot.decide(&query).map_err(|e| e.to_string())
}

/// The Cedar question a (well-formed) gate asks for `principal`; a context Cedar cannot
/// read is an error.
fn gate_query(principal: &EntityUid, gate: &Gate) -> Result<Query, String> {
    let context = context_from_json(&gate.context).map_err(|e| e.to_string())?;
    Ok(Query::new(
        principal.clone(),
        action(gate.action),
        gate.resource.clone(),
    )
    .with_context(context))
}

/// Asks every question `object` raises on `snapshot`.
pub fn evaluate(snapshot: &Snapshot, object: &Object) -> GateReport {
    let mut gates = questions(object);
    gates.extend(quota_questions(snapshot, object));
    let ns = object.namespace().unwrap_or("default");
    let workload = format!("{ns}/{}", object.name());
    let principal = uid("Service", &workload);
    let outcomes = gates
        .into_iter()
        .map(|gate| {
            if let Some(reason) = &gate.malformed {
                return GateOutcome {
                    decision: Err(reason.clone()),
                    near_misses: Vec::new(),
                    facts: None,
                    gate,
                };
            }
            let query = gate_query(&principal, &gate);
            let explained = query.and_then(|q| snapshot.explain(&q).map_err(|e| e.to_string()));
            match explained {
                Ok(e) => {
                    let near_misses = match e.why {
                        lattice_engine::Why::NothingPermitted(near) => near,
                        _ => Vec::new(),
                    };
                    let facts = match gate.action {
                        _ if e.decision.allowed => None,
                        "DeployImage" => image_facts(snapshot, &gate.resource),
                        "ConsumeQuota" => quota_facts(snapshot, &workload, &gate.resource),
                        _ => None,
                    };
                    GateOutcome {
                        gate,
                        decision: Ok(e.decision),
                        near_misses,
                        facts,
                    }
                }
                Err(e) => GateOutcome {
                    gate,
                    decision: Err(e),
                    near_misses: Vec::new(),
                    facts: None,
                },
            }
        })
        .collect();
    GateReport {
        workload,
        outcomes,
        digest: snapshot.digest().to_owned(),
    }
}
