//! Admission: every write of every Lattice kind is a Cedar question, asked for the user the
//! API server authenticated (a `User` in a `Group` per group), so security teams decide
//! who may change the platform with policies like every other decision.
//!
//! | kind | action | resource | context |
//! |---|---|---|---|
//! | `CedarPolicy` | `ManagePolicy` | its `Namespace` | operation, effects, actions, mode, count |
//! | `TrustPolicy` | `ManageTrust` | the `Cluster` | operation, name, registries, unsigned registries, keys, verified images |
//! | `SecretProvider` | `ManageSecretProvider` | the `Cluster` | operation, name, backend |
//! | `ImageProvider` | `ManageImageProvider` | the `Cluster` | operation, name, registry |
//! | `OIDCProvider` | `ManageIdentityProvider` | the `Cluster` | operation, name, issuer, whether another provider has it, username prefix, inherited, whether an inherited provider allows others |
//! | `InfraProvider`, `LatticeCluster` (create, update) | `ManageInfrastructure` | the `Cluster` | operation, kind, name, provider, parent |
//! | `LatticeCluster` (delete) | `Decommission` | that `Cluster` | its phase, agent health, what it still holds, now |
//! | `LatticeComplianceProfile` | `ManageComplianceProfile` | the `Cluster` | operation, name, frameworks, sink |
//! | `LatticeQuota` | `ManageQuota` | the `Cluster` | operation, name, scope |
//! | `LatticeClusterBackup`, `LatticeRestore` (delete) | `ManageBackup` | the `Cluster` | operation, kind, name, namespaces, storage, credentials, paused |
//! | `CertIssuer` | `ManageCertIssuer` | the `Cluster` | operation, name, type, server, credentials, DNS provider |
//! | `DNSProvider` | `ManageDnsProvider` | the `Cluster` | operation, name, type, zone, credentials |
//! | `LatticeRestore` (create, update) | `Restore` | the `Cluster` | operation, name, backup, schedule, namespaces, excluded namespaces, volumes, existing resources |
//! | workloads (`LatticePackage` among them) | `ManageWorkload` | its `Namespace` | operation, kind, name |

use std::collections::{BTreeSet, HashSet};

use cedar_policy::EntityUid;
use cedar_policy::{ActionConstraint, Context, Effect, Entity, PolicySet, RestrictedExpression};
use lattice_engine::{Projection, Query, Snapshot, World, action, uid};
use lattice_schemas::manifest::Object;

use crate::derivation::{GateReport, evaluate, questions};
use lattice_schemas::crd::policy::CedarPolicySpec;

/// Who asks, as the API server authenticated them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requester {
    pub username: String,
    pub groups: Vec<String>,
}

impl Requester {
    /// The requester as Cedar entities: `User::"<username>"` in a `Group` per group.
    pub fn entities(&self) -> Vec<Entity> {
        // A group listed twice is one group (two entities with one uid would be refused).
        let names: BTreeSet<&String> = self.groups.iter().collect();
        let groups: Vec<_> = names.into_iter().map(|g| uid("Group", g)).collect();
        let mut out: Vec<Entity> = groups
            .iter()
            .map(|g| Entity::new_no_attrs(g.clone(), HashSet::new()))
            .collect();
        out.push(Entity::new_no_attrs(
            uid("User", &self.username),
            groups.into_iter().collect(),
        ));
        out
    }
}

/// The label on a CedarPolicy a child's agent wrote from its parent's distributed set
/// (valued with the parent's name).
pub const INHERITED_FROM: &str = "lattice.dev/inherited-from";

/// Whether `object` carries [`INHERITED_FROM`].
pub fn is_inherited(object: &Object) -> bool {
    object
        .meta()
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(INHERITED_FROM))
}

/// The `ManagePolicy` question for `requester` writing `spec` into `namespace` with
/// `operation` (`CREATE`, `UPDATE` or `DELETE`). The context says what the policies do:
/// their effects, the actions they constrain, their mode and how many there are, and
/// whether the object is (or would become, or was) one inherited from a parent cluster.
pub fn manage_policy_query(
    requester: &Requester,
    namespace: &str,
    operation: &str,
    spec: &CedarPolicySpec,
    inherited: bool,
) -> Query {
    let mut effects = BTreeSet::new();
    let mut actions = BTreeSet::new();
    // Text that does not parse (a stored object written past admission) claims the most it
    // could: both effects, no action constraint, one policy at least. Reading it as "no
    // effects" would let a permit that looks at `context.effects` open its deletion.
    let set = match lattice_schemas::cedar::parse_bounded(&spec.policies) {
        Ok(set) => set,
        Err(_) => {
            effects.extend(["permit", "forbid"]);
            PolicySet::new()
        }
    };
    let count = set.policies().count().max(usize::from(!effects.is_empty()));
    for p in set.policies() {
        effects.insert(match p.effect() {
            Effect::Permit => "permit",
            Effect::Forbid => "forbid",
        });
        match p.action_constraint() {
            ActionConstraint::Any => {}
            ActionConstraint::Eq(a) => {
                actions.insert(a.id().unescaped().to_owned());
            }
            ActionConstraint::In(list) => {
                actions.extend(list.iter().map(|a| a.id().unescaped().to_owned()));
            }
        }
    }
    let strings = |v: BTreeSet<String>| {
        RestrictedExpression::new_set(v.into_iter().map(RestrictedExpression::new_string))
    };
    // An unset mode is enforce, as the policy store reads it.
    let mode = match spec.mode.unwrap_or_default() {
        lattice_schemas::crd::EnforcementMode::Enforce => "enforce",
        lattice_schemas::crd::EnforcementMode::Audit => "audit",
    };
    let context = Context::from_pairs([
        (
            "operation".to_owned(),
            RestrictedExpression::new_string(operation.to_owned()),
        ),
        (
            "effects".to_owned(),
            strings(effects.into_iter().map(str::to_owned).collect()),
        ),
        ("actions".to_owned(), strings(actions)),
        (
            "mode".to_owned(),
            RestrictedExpression::new_string(mode.to_owned()),
        ),
        (
            "policyCount".to_owned(),
            RestrictedExpression::new_long(i64::try_from(count).unwrap_or(i64::MAX)),
        ),
        (
            "inherited".to_owned(),
            RestrictedExpression::new_bool(inherited),
        ),
    ])
    .expect("strings, sets of strings, a long and a bool make a valid context");
    Query::new(
        uid("User", &requester.username),
        action("ManagePolicy"),
        uid("Namespace", namespace),
    )
    .with_context(context)
}

/// The gates of a workload that may not be in the world yet (an object under admission):
/// asked on `snapshot`'s policies over the object's own projection (with `projection`'s
/// facts), its namespace and the cluster, and the snapshot's entities for what its gates
/// name. Its quotas are measured on `world` (the snapshot's) with this object written in:
/// as it will stand once admitted, older workloads before it.
pub fn evaluate_object(
    snapshot: &Snapshot,
    projection: &Projection,
    world: &World,
    object: &Object,
) -> Result<GateReport, String> {
    let ledger = if world.of_kind("LatticeQuota").next().is_some() {
        let mut written = world.clone();
        written.upsert(object.clone());
        lattice_engine::quota::Ledger::of(&written)
    } else {
        lattice_engine::quota::Ledger::default()
    };
    let id = format!(
        "{}/{}",
        object.namespace().unwrap_or("default"),
        object.name()
    );
    let named: Vec<EntityUid> = questions(object)
        .into_iter()
        .map(|g| g.resource)
        .chain(
            ledger
                .consumption(&id)
                .iter()
                .map(|c| uid("Quota", &c.quota)),
        )
        .collect();
    let entities = projection.entities_of(object).map_err(|e| e.to_string())?;
    let scoped = snapshot
        .scoped(entities, &named)
        .map_err(|e| e.to_string())?
        .with_quotas(ledger);
    Ok(evaluate(&scoped, object))
}

/// The question a write of `object` by `requester` raises (for a `CedarPolicy`, see
/// [`manage_policy_query`]). `operation` is `CREATE`, `UPDATE` or `DELETE`; on a
/// DELETE `object` is the object as stored; on an UPDATE `stored` is (when known). `world`
/// gives what a decommission would take down and the cluster the platform runs in. `None`
/// for a kind with no such question (`Namespace`).
pub fn write_query(
    requester: &Requester,
    operation: &str,
    object: &Object,
    stored: Option<&Object>,
    world: &World,
    now: jiff::Timestamp,
) -> Result<Option<Query>, String> {
    if let Object::CedarPolicy(p) = object {
        // Namespaced: without one, where the policy would apply cannot be decided.
        let ns = object
            .namespace()
            .filter(|n| !n.is_empty())
            .ok_or("a CedarPolicy names no namespace, so where it would apply cannot be decided")?;
        // Inherited before or after: removing the label is editing an inherited policy.
        let inherited = is_inherited(object) || stored.is_some_and(is_inherited);
        return Ok(Some(manage_policy_query(
            requester, ns, operation, &p.spec, inherited,
        )));
    }
    let user = uid("User", &requester.username);
    // Inherited before or after, as for a CedarPolicy.
    let inherited =
        RestrictedExpression::new_bool(is_inherited(object) || stored.is_some_and(is_inherited));
    let (cluster, _) = lattice_engine::project::root_cluster(world);
    let cluster = uid("Cluster", &cluster);
    let name = object.name().to_owned();
    let strings = |v: BTreeSet<String>| {
        RestrictedExpression::new_set(v.into_iter().map(RestrictedExpression::new_string))
    };
    let string = |v: &str| RestrictedExpression::new_string(v.to_owned());
    let pairs: Vec<(&str, RestrictedExpression)>;
    let (act, resource) = match object {
        Object::TrustPolicy(t) => {
            let registries = t.spec.registries.iter().map(|r| r.prefix.clone()).collect();
            let unsigned = t
                .spec
                .registries
                .iter()
                .filter(|r| r.require_signature == Some(false))
                .map(|r| r.prefix.clone())
                .collect();
            let keys = t
                .spec
                .registries
                .iter()
                .flat_map(|r| r.keys.iter().map(|k| k.name.clone()))
                .collect();
            let verified: usize = t.spec.registries.iter().map(|r| r.verified.len()).sum();
            pairs = vec![
                ("operation", string(operation)),
                ("name", string(&name)),
                ("registries", strings(registries)),
                ("unsignedRegistries", strings(unsigned)),
                ("keys", strings(keys)),
                (
                    "verifiedImages",
                    RestrictedExpression::new_long(i64::try_from(verified).unwrap_or(i64::MAX)),
                ),
                ("inherited", inherited),
            ];
            ("ManageTrust", cluster)
        }
        Object::SecretProvider(sp) => {
            pairs = vec![
                ("operation", string(operation)),
                ("name", string(&name)),
                ("backend", string(sp.spec.backend().unwrap_or_default())),
                ("inherited", inherited),
            ];
            ("ManageSecretProvider", cluster)
        }
        Object::ImageProvider(ip) => {
            pairs = vec![
                ("operation", string(operation)),
                ("name", string(&name)),
                ("registry", string(&ip.spec.registry)),
            ];
            ("ManageImageProvider", cluster)
        }
        Object::OidcProvider(p) => {
            // Other than this object: an inherited provider that allows no others.
            let sealed = world.objects().any(|(_, o)| {
                matches!(o, Object::OidcProvider(q) if !q.spec.allow_child_override)
                    && is_inherited(o)
                    && o.name() != name
            });
            // Another provider already names this issuer: two would disagree on who a
            // token's caller is.
            let taken = world.objects().any(|(_, o)| {
                matches!(o, Object::OidcProvider(q) if q.spec.issuer_url == p.spec.issuer_url)
                    && o.name() != name
            });
            pairs = vec![
                ("operation", string(operation)),
                ("name", string(&name)),
                ("issuer", string(&p.spec.issuer_url)),
                ("issuerTaken", RestrictedExpression::new_bool(taken)),
                (
                    "usernamePrefix",
                    string(p.spec.username_prefix.as_deref().unwrap_or("")),
                ),
                ("inherited", inherited),
                (
                    "childOverrideAllowed",
                    RestrictedExpression::new_bool(!sealed),
                ),
            ];
            ("ManageIdentityProvider", cluster)
        }
        Object::InfraProvider(ip) => {
            let provider = serde_json::to_value(ip.spec.type_)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .ok_or("the InfraProvider's type cannot be read")?;
            pairs = vec![
                ("operation", string(operation)),
                ("kind", string("InfraProvider")),
                ("name", string(&name)),
                ("provider", string(&provider)),
                ("parent", string("")),
            ];
            ("ManageInfrastructure", cluster)
        }
        Object::Cluster(c) if operation == "DELETE" => {
            let status = c.status.clone().unwrap_or_default();
            // What the platform knows it would take down: the clusters this one manages
            // and, for the cluster the platform runs in, every workload of the world.
            let children = world
                .objects()
                .filter(|(_, o)| matches!(o, Object::Cluster(x) if x.spec.parent.as_deref() == Some(name.as_str())))
                .count();
            let workloads = if uid("Cluster", &name) == cluster {
                world.objects().filter(|(_, o)| o.is_workload()).count()
            } else {
                0
            };
            let now = crate::time::datetime(now)?;
            pairs = vec![
                (
                    "phase",
                    string(status.phase.as_deref().unwrap_or("Pending")),
                ),
                (
                    "agentHealthy",
                    RestrictedExpression::new_bool(status.agent_connected.unwrap_or(false)),
                ),
                (
                    "objectCount",
                    RestrictedExpression::new_long(
                        i64::try_from(children + workloads).unwrap_or(i64::MAX),
                    ),
                ),
                ("now", now),
            ];
            ("Decommission", uid("Cluster", &name))
        }
        Object::Cluster(c) => {
            let cfg = &c.spec.provider.config;
            let provider = cfg.name().unwrap_or("");
            pairs = vec![
                ("operation", string(operation)),
                ("kind", string("LatticeCluster")),
                ("name", string(&name)),
                ("provider", string(provider)),
                ("parent", string(c.spec.parent.as_deref().unwrap_or(""))),
            ];
            ("ManageInfrastructure", cluster)
        }
        Object::ComplianceProfile(p) => {
            let sink = &p.spec.evidence_sink;
            let sink = if sink.config_map.is_some() {
                "configMap"
            } else if sink.volume_claim.is_some() {
                "volumeClaim"
            } else {
                "s3"
            };
            pairs = vec![
                ("operation", string(operation)),
                ("name", string(&name)),
                (
                    "frameworks",
                    strings(p.spec.frameworks.iter().cloned().collect()),
                ),
                ("sink", string(sink)),
            ];
            ("ManageComplianceProfile", cluster)
        }
        Object::Quota(q) => {
            pairs = vec![
                ("operation", string(operation)),
                ("name", string(&name)),
                ("scope", string(&lattice_engine::quota::scope_text(&q.spec))),
            ];
            ("ManageQuota", cluster)
        }
        Object::ClusterBackup(b) => {
            let scope = &b.spec.scope;
            let namespaces = match &scope.namespace_selector {
                Some(labels) => BTreeSet::from([format!(
                    "selector:{}",
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                )]),
                None if scope.include_namespaces.is_empty() => BTreeSet::from(["*".to_owned()]),
                None => scope.include_namespaces.iter().cloned().collect(),
            };
            let storage = b.spec.storage.as_ref();
            let provider = storage.map_or("default".to_owned(), |s| {
                serde_json::to_value(s.provider)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            });
            let credentials = storage
                .and_then(|s| s.credentials.as_ref())
                .map(|c| format!("{}:{}", c.provider, c.id))
                .unwrap_or_default();
            pairs = vec![
                ("operation", string(operation)),
                ("kind", string("LatticeClusterBackup")),
                ("name", string(&name)),
                ("namespaces", strings(namespaces)),
                ("storage", string(&provider)),
                ("credentials", string(&credentials)),
                ("paused", RestrictedExpression::new_bool(b.spec.paused)),
            ];
            ("ManageBackup", cluster)
        }
        Object::CertIssuer(i) => {
            use lattice_schemas::crd::issuer::IssuerType;
            let spec = &i.spec;
            let path =
                |c: &lattice_schemas::crd::issuer::Credentials| format!("{}:{}", c.provider, c.id);
            let (server, credentials) = match spec.type_ {
                IssuerType::Acme => (spec.acme.as_ref().map(|a| a.server.clone()), None),
                IssuerType::Ca => (None, spec.ca.as_ref().map(|c| path(&c.credentials))),
                IssuerType::Vault => (
                    spec.vault.as_ref().map(|v| v.server.clone()),
                    spec.vault.as_ref().map(|v| path(&v.auth_credentials)),
                ),
                IssuerType::SelfSigned => (None, None),
            };
            let (server, credentials) =
                (server.unwrap_or_default(), credentials.unwrap_or_default());
            let dns = spec
                .acme
                .as_ref()
                .and_then(|a| a.dns_provider_ref.clone())
                .unwrap_or_default();
            pairs = vec![
                ("operation", string(operation)),
                ("name", string(&name)),
                ("type", string(spec.type_.as_str())),
                ("server", string(&server)),
                ("credentials", string(&credentials)),
                ("dnsProvider", string(&dns)),
            ];
            ("ManageCertIssuer", cluster)
        }
        Object::DnsProvider(d) => {
            let credentials = d
                .spec
                .credentials
                .as_ref()
                .map(|c| format!("{}:{}", c.provider, c.id))
                .unwrap_or_default();
            pairs = vec![
                ("operation", string(operation)),
                ("name", string(&name)),
                ("type", string(d.spec.type_.as_str())),
                ("zone", string(d.spec.zone.trim_end_matches('.'))),
                ("credentials", string(&credentials)),
            ];
            ("ManageDnsProvider", cluster)
        }
        // Removing a restore's record rewrites nothing: it is managed like a backup.
        Object::Restore(r) if operation == "DELETE" => {
            pairs = vec![
                ("operation", string(operation)),
                ("kind", string("LatticeRestore")),
                ("name", string(&name)),
                (
                    "namespaces",
                    strings(r.spec.namespaces().into_iter().collect()),
                ),
                ("storage", string("")),
                ("credentials", string("")),
                ("paused", RestrictedExpression::new_bool(false)),
            ];
            ("ManageBackup", cluster)
        }
        Object::Restore(r) => {
            let spec = &r.spec;
            pairs = vec![
                ("operation", string(operation)),
                ("name", string(&name)),
                ("backup", string(spec.backup_name.as_deref().unwrap_or(""))),
                (
                    "schedule",
                    string(spec.cluster_backup_ref.as_deref().unwrap_or("")),
                ),
                (
                    "namespaces",
                    strings(spec.namespaces().into_iter().collect()),
                ),
                (
                    "excludedNamespaces",
                    strings(spec.exclude_namespaces.iter().cloned().collect()),
                ),
                (
                    "restoreVolumes",
                    RestrictedExpression::new_bool(spec.restore_volumes),
                ),
                (
                    "existingResources",
                    string(spec.existing_resources.as_str()),
                ),
            ];
            ("Restore", cluster)
        }
        o if o.is_workload() => {
            pairs = vec![
                ("operation", string(operation)),
                ("kind", string(o.kind_name())),
                ("name", string(&name)),
            ];
            let ns = o.namespace().unwrap_or("default");
            ("ManageWorkload", uid("Namespace", ns))
        }
        _ => return Ok(None),
    };
    let context = Context::from_pairs(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .map_err(|e| format!("the {act} context cannot be built: {e}"))?;
    Ok(Some(
        Query::new(user, action(act), resource).with_context(context),
    ))
}

/// Decides a write question for `requester` on `snapshot`: over the requester's entities
/// and the snapshot's entity for the resource, or, for a namespace the world does not hold
/// yet, its default facts from `projection` (so policies about it evaluate rather than
/// error).
pub fn decide_write(
    snapshot: &Snapshot,
    projection: &Projection,
    requester: &Requester,
    query: &Query,
) -> Result<lattice_engine::Explanation, String> {
    let mut extra = Vec::new();
    if snapshot.entities().get(&query.resource).is_none()
        && query.resource.type_name().basename() == "Namespace"
    {
        let ns = query.resource.id().unescaped().to_owned();
        extra.push(projection.namespace(&ns).map_err(|e| e.to_string())?);
    }
    explain_as(snapshot, requester, query, extra)
}

/// Explains `query` on `snapshot` with the requester's entities (and `extra`) taken in.
fn explain_as(
    snapshot: &Snapshot,
    requester: &Requester,
    query: &Query,
    extra: Vec<Entity>,
) -> Result<lattice_engine::Explanation, String> {
    let mut entities = requester.entities();
    entities.extend(extra);
    let scoped = snapshot
        .scoped(entities, std::slice::from_ref(&query.resource))
        .map_err(|e| e.to_string())?;
    scoped.explain(query).map_err(|e| e.to_string())
}

/// The operation a restore is asked with when the operator asks again, before it derives
/// the Velero `Restore` (admission asks with `CREATE` or `UPDATE`).
pub const RESTORE_APPLY: &str = "APPLY";

/// Whether `requester` (the user the restore's admission stamp names) may restore
/// `restore` now: the `Restore` question admission asked, asked again on `snapshot` with
/// operation [`RESTORE_APPLY`]. `Err` is the denied gate, with the deciding policies and
/// their advice; any error in asking denies.
pub fn decide_restore(
    snapshot: &Snapshot,
    world: &World,
    requester: &Requester,
    restore: &Object,
    now: jiff::Timestamp,
) -> Result<(), lattice_schemas::crd::service::DeniedGate> {
    let (cluster, _) = lattice_engine::project::root_cluster(world);
    let denied =
        |policies: Vec<String>, advice: String| lattice_schemas::crd::service::DeniedGate {
            action: "Restore".into(),
            resource: uid("Cluster", &cluster).to_string(),
            raised_by: format!("User::\"{}\" (the admission stamp)", requester.username),
            policies,
            advice: Some(advice),
        };
    let explained = write_query(requester, RESTORE_APPLY, restore, None, world, now)
        .and_then(|q| q.ok_or_else(|| "a restore raises no Restore question".to_owned()))
        .and_then(|query| explain_as(snapshot, requester, &query, Vec::new()));
    let explanation = explained.map_err(|e| {
        denied(
            Vec::new(),
            format!("the Restore question cannot be asked: {e}"),
        )
    })?;
    if explanation.decision.allowed {
        return Ok(());
    }
    let advice = explanation.advice().unwrap_or_else(|| {
        "no policy permits this restore; ask the security team for a permit naming Restore".into()
    });
    Err(denied(
        explanation
            .decision
            .determining
            .iter()
            .map(|p| p.id.clone())
            .collect(),
        advice,
    ))
}
