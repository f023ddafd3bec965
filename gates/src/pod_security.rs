//! Pod Security: the Pod Security Standards asked of any object that carries a pod, as
//! Kubernetes' Pod Security Admission (PSA) asks them, with the standard itself a Cedar pack
//! (`policies/pod-security/standard.cedar`).
//!
//! A namespace chooses a level and a version per mode with PSA's labels
//! (`pod-security.kubernetes.io/<mode>` and `<mode>-version`), read with PSA's rules: an
//! enforce level that names no level is restricted (fail closed), an audit or warn one is
//! privileged, a version that is not `v1.<n>` is latest, and warn follows a stricter
//! enforce level unless it is set itself. For each mode above privileged, `RunPod` is asked
//! of the pod and of each container with the level and version in context; enforce refuses,
//! warn answers with warnings, audit annotates.
//!
//! First `ExemptPodSecurity` is asked for the requester and the pod: an exemption is a
//! permit (PSA's exempt users, namespaces and runtime classes), and an exempt request is
//! not checked at all.

use std::collections::BTreeMap;
use std::sync::Arc;

use cedar_policy::{Context, Entity, EntityUid, RestrictedExpression as Rx};
use lattice_engine::pod::PodEntities;
use lattice_engine::policies::PolicyInfo;
use lattice_engine::{Query, QueryError, Snapshot, action, uid};

use crate::admission::Requester;

/// The newest version of the standard this build knows: `latest` (Kubernetes 1.33's Pod
/// Security Admission, whose newest checks date from v1.32).
pub const LATEST: i64 = 33;

/// The label prefix PSA reads.
pub const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// A level at a version (`v1.<version>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelVersion {
    pub level: Level,
    pub version: i64,
}

impl std::fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.version >= LATEST {
            write!(f, "{}:latest", self.level.name())
        } else {
            write!(f, "{}:v1.{}", self.level.name(), self.version)
        }
    }
}

/// The three modes of a namespace's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Warn,
    Audit,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Enforce, Mode::Warn, Mode::Audit];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }
}

/// What a namespace asks of its pods, per mode, and the label values that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacePolicy {
    pub enforce: LevelVersion,
    pub warn: LevelVersion,
    pub audit: LevelVersion,
    pub errors: Vec<String>,
}

impl NamespacePolicy {
    /// The policy a namespace's labels set, over `default_enforce` for an unlabelled enforce
    /// mode (warn and audit default to privileged), all at latest.
    pub fn from_labels(labels: &BTreeMap<String, String>, default_enforce: Level) -> Self {
        let latest = |level| LevelVersion {
            level,
            version: LATEST,
        };
        let mut p = NamespacePolicy {
            enforce: latest(default_enforce),
            warn: latest(Level::Privileged),
            audit: latest(Level::Privileged),
            errors: Vec::new(),
        };
        let label = |mode: Mode, suffix: &str| {
            labels
                .get(&format!("{LABEL_PREFIX}{}{suffix}", mode.name()))
                .map(String::as_str)
        };
        let mut has_enforce = false;
        for mode in Mode::ALL {
            if let Some(text) = label(mode, "") {
                let level = match Level::parse(text) {
                    Some(l) => {
                        has_enforce |= mode == Mode::Enforce;
                        l
                    }
                    None => {
                        p.errors.push(format!(
                            "{LABEL_PREFIX}{}={text:?} must be privileged, baseline or restricted",
                            mode.name()
                        ));
                        // PSA: enforce fails closed, audit and warn fail open.
                        match mode {
                            Mode::Enforce => Level::Restricted,
                            _ => Level::Privileged,
                        }
                    }
                };
                p.mode_mut(mode).level = level;
            }
            if let Some(text) = label(mode, "-version") {
                p.mode_mut(mode).version = parse_version(text).unwrap_or_else(|| {
                    p.errors.push(format!(
                        "{LABEL_PREFIX}{}-version={text:?} must be \"latest\" or \"v1.<minor>\"",
                        mode.name()
                    ));
                    LATEST
                });
            }
        }
        if label(Mode::Warn, "").is_none() && has_enforce && p.enforce.level > p.warn.level {
            p.warn.level = p.enforce.level;
            if label(Mode::Warn, "-version").is_none() {
                p.warn.version = p.enforce.version;
            }
        }
        p
    }

    pub fn mode(&self, mode: Mode) -> LevelVersion {
        match mode {
            Mode::Enforce => self.enforce,
            Mode::Warn => self.warn,
            Mode::Audit => self.audit,
        }
    }

    fn mode_mut(&mut self, mode: Mode) -> &mut LevelVersion {
        match mode {
            Mode::Enforce => &mut self.enforce,
            Mode::Warn => &mut self.warn,
            Mode::Audit => &mut self.audit,
        }
    }
}

/// `latest` or `v1.<minor>`, as PSA reads a version label; a version newer than this build
/// knows is latest.
pub fn parse_version(text: &str) -> Option<i64> {
    if text == "latest" {
        return Some(LATEST);
    }
    let minor = text.strip_prefix("v1.")?;
    // PSA's pattern: `^v1\.([0-9]|[1-9][0-9]*)$`.
    if minor.is_empty()
        || !minor.bytes().all(|b| b.is_ascii_digit())
        || (minor.len() > 1 && minor.starts_with('0'))
    {
        return None;
    }
    Some(minor.parse::<i64>().map_or(LATEST, |m| m.min(LATEST)))
}

/// One check a pod fails: the policy that forbids it and what in the pod it found (`pod`, or
/// container names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The PSA check (`@control("pod-security:<check>")`), else the policy id; `default-deny`
    /// when no policy permits `RunPod` at all.
    pub check: String,
    /// The deciding policy's stable id (empty for a default deny).
    pub policy: String,
    pub title: String,
    pub advice: String,
    pub subjects: Vec<String>,
}

impl Violation {
    fn of(policy: &PolicyInfo, subject: String) -> Violation {
        let annotation = |k: &str| policy.annotations.get(k).cloned().unwrap_or_default();
        Violation {
            check: check_of(policy),
            policy: policy.id.clone(),
            title: annotation("title"),
            advice: annotation("advice"),
            subjects: vec![subject],
        }
    }

    fn default_deny(subject: String) -> Violation {
        Violation {
            check: "default-deny".into(),
            policy: String::new(),
            title: "No policy permits RunPod".into(),
            advice: "Load the pod-security pack, or permit RunPod.".into(),
            subjects: vec![subject],
        }
    }

    /// `check (title): subjects — advice`, one line.
    pub fn describe(&self) -> String {
        let mut out = self.check.clone();
        if !self.title.is_empty() {
            out.push_str(&format!(" ({})", self.title));
        }
        out.push_str(&format!(": {}", self.subjects.join(", ")));
        if !self.advice.is_empty() {
            out.push_str(&format!(" — {}", self.advice));
        }
        out
    }
}

/// One mode's evaluation.
#[derive(Clone, Debug)]
pub struct ModeOutcome {
    pub mode: Mode,
    pub policy: LevelVersion,
    pub violations: Vec<Violation>,
}

impl ModeOutcome {
    pub fn allowed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The answer for one pod.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The permits that exempted the request (empty when it is not exempt).
    pub exempted_by: Vec<Arc<PolicyInfo>>,
    /// Each mode above privileged, evaluated (none when exempt).
    pub modes: Vec<ModeOutcome>,
}

impl Verdict {
    /// Whether enforce allows the pod.
    pub fn allowed(&self) -> bool {
        self.modes
            .iter()
            .all(|m| m.mode != Mode::Enforce || m.allowed())
    }

    pub fn outcome(&self, mode: Mode) -> Option<&ModeOutcome> {
        self.modes.iter().find(|m| m.mode == mode)
    }
}

/// The `RunPod` question for one principal (the pod or a container) under `lv` in `mode`.
pub fn run_query(principal: EntityUid, namespace: &str, mode: Mode, lv: LevelVersion) -> Query {
    let context = Context::from_pairs([
        (
            "level".to_owned(),
            Rx::new_string(lv.level.name().to_owned()),
        ),
        ("version".to_owned(), Rx::new_long(lv.version)),
        ("mode".to_owned(), Rx::new_string(mode.name().to_owned())),
    ])
    .expect("distinct keys");
    Query::new(principal, action("RunPod"), uid("Namespace", namespace)).with_context(context)
}

/// The `ExemptPodSecurity` question for `requester` and the pod.
pub fn exempt_query(requester: &Requester, pod: &PodEntities, operation: &str) -> Query {
    let context =
        Context::from_pairs([("operation".to_owned(), Rx::new_string(operation.to_owned()))])
            .expect("one key");
    Query::new(
        uid("User", &requester.username),
        action("ExemptPodSecurity"),
        pod.pod.clone(),
    )
    .with_context(context)
}

/// The request-scoped snapshot a pod is decided on: the pod, its containers, the requester,
/// the namespace (the snapshot's own when it has one, else `namespace`) and the images (the
/// snapshot's, with their trust facts, else untrusted ones).
pub fn scope(
    snapshot: &Snapshot,
    pod: &PodEntities,
    requester: &Requester,
    namespace: Option<Entity>,
) -> Result<Snapshot, QueryError> {
    let mut extra = pod.entities.clone();
    extra.extend(requester.entities());
    let mut also = Vec::new();
    let ns = uid("Namespace", &pod.namespace);
    if snapshot.entities().get(&ns).is_some() {
        also.push(ns);
    } else if let Some(n) = namespace {
        extra.push(n);
    }
    let mut seen = std::collections::BTreeSet::new();
    for image in &pod.images {
        if !seen.insert(image.as_str()) {
            continue;
        }
        let u = uid("Image", image);
        if snapshot.entities().get(&u).is_some() {
            also.push(u);
        } else {
            extra.push(lattice_engine::pod::untrusted_image(image).map_err(QueryError)?);
        }
    }
    snapshot.scoped(extra, &also)
}

/// Decides one pod on `scoped` (see [`scope`]) under `policy`, in `modes`. Any error
/// denies: a query that cannot be asked is an error, and an erroring forbid is a violation.
pub fn evaluate(
    scoped: &Snapshot,
    pod: &PodEntities,
    policy: &NamespacePolicy,
    modes: &[Mode],
    requester: &Requester,
    operation: &str,
) -> Result<Verdict, QueryError> {
    let exempt = scoped.decide(&exempt_query(requester, pod, operation))?;
    if exempt.allowed {
        return Ok(Verdict {
            exempted_by: exempt.determining,
            modes: Vec::new(),
        });
    }
    let asked = modes;
    let mut modes = Vec::new();
    for &mode in asked {
        let lv = policy.mode(mode);
        if lv.level == Level::Privileged {
            continue;
        }
        let mut by_policy: Vec<Violation> = Vec::new();
        let subjects = std::iter::once((pod.pod.clone(), "pod".to_owned())).chain(
            pod.containers.iter().map(|c| {
                let name = c
                    .id()
                    .unescaped()
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                (c.clone(), format!("container {name:?}"))
            }),
        );
        for (principal, label) in subjects {
            let d = scoped.decide(&run_query(principal, &pod.namespace, mode, lv))?;
            if d.allowed {
                continue;
            }
            if d.determining.is_empty() {
                // Default deny: nothing permits RunPod (the pack is not loaded). Say so
                // rather than allow.
                by_policy.push(Violation::default_deny(label.clone()));
                continue;
            }
            for p in &d.determining {
                match by_policy.iter_mut().find(|v| v.policy == p.id) {
                    Some(v) => v.subjects.push(label.clone()),
                    None => by_policy.push(Violation::of(p, label.clone())),
                }
            }
        }
        modes.push(ModeOutcome {
            mode,
            policy: lv,
            violations: by_policy,
        });
    }
    Ok(Verdict {
        exempted_by: Vec::new(),
        modes,
    })
}

/// The namespace label that makes a workload whose pod template breaks the enforce level
/// refused at once (`enforce`). By default a template is judged as PSA judges it: warn and
/// audit only (warn follows a stricter enforce label), and its pods are refused later.
pub const TEMPLATES_LABEL: &str = "lattice.dev/pod-security-templates";

/// The admission of one object that carries a pod.
#[derive(Clone, Debug)]
pub struct PodAdmission {
    pub pod: PodEntities,
    pub policy: NamespacePolicy,
    pub verdict: Verdict,
    /// Whether enforce refuses the object: a Pod its enforce level refuses, or a template
    /// in a namespace that enforces on templates ([`TEMPLATES_LABEL`]).
    pub refused: bool,
    /// The warnings to return: warn-mode violations of an admitted object.
    pub warnings: Vec<String>,
    /// Audit annotations, as PSA writes them (`enforce-policy`, `audit-violations`,
    /// `exempt`, `error`; the API server prefixes them with the webhook's name).
    pub audit: BTreeMap<String, String>,
}

impl PodAdmission {
    /// The refusal message, PSA's shape: `violates PodSecurity "restricted:latest": …`.
    pub fn message(&self) -> String {
        let Some(o) = self.verdict.outcome(Mode::Enforce) else {
            return String::new();
        };
        format!(
            "{} {:?}: violates PodSecurity \"{}\": {}",
            self.pod.kind,
            self.pod.name,
            o.policy,
            describe(&o.violations)
        )
    }
}

fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(Violation::describe)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The `RunPod` question of every pod the world's Kubernetes objects run, and of each of its
/// containers, under its namespace's enforce level and version (none where that is
/// privileged), keyed by the pod (`ns/Kind/name`): what admission asks of them, so that a
/// what-if shows which running pods a policy change would refuse. Exemptions concern who
/// makes a request and are not asked. A pod that cannot be projected asks nothing here (the
/// world's projection already fails on it).
pub fn world_questions(world: &lattice_engine::World) -> Vec<(String, Query)> {
    use lattice_schemas::manifest::Object;
    let world_policies = WorldPolicies::of(world);
    let mut policies: BTreeMap<String, NamespacePolicy> = BTreeMap::new();
    let mut out = Vec::new();
    for (_, object) in world.objects() {
        let Object::Core(core) = object else {
            continue;
        };
        let ns = object.namespace().unwrap_or("default");
        let Ok(Some(pod)) = lattice_engine::pod::project(core.kind.name(), &core.value, ns) else {
            continue;
        };
        let policy = policies
            .entry(pod.namespace.clone())
            .or_insert_with(|| world_policies.namespace(world, &pod.namespace));
        if policy.enforce.level == Level::Privileged {
            continue;
        }
        let id = pod.pod.id().unescaped().to_owned();
        for principal in std::iter::once(&pod.pod).chain(&pod.containers) {
            out.push((
                id.clone(),
                run_query(
                    principal.clone(),
                    &pod.namespace,
                    Mode::Enforce,
                    policy.enforce,
                ),
            ));
        }
    }
    out
}

/// The labels of `namespace` as the world declares it (looked up by key: admission asks
/// this for every review).
pub fn namespace_labels(
    world: &lattice_engine::World,
    namespace: &str,
) -> Option<BTreeMap<String, String>> {
    let key = lattice_engine::ObjectKey {
        kind: "Namespace",
        namespace: None,
        name: namespace.to_owned(),
    };
    world
        .get(&key)
        .map(|o| o.meta().labels.clone().unwrap_or_default())
}

/// How a world's namespaces choose their Pod Security policy: their labels, read with PSA's
/// rules, with the root cluster's `podSecurityDefault` for an unlabelled one. The cluster is
/// read once (reading it walks the world); each namespace on demand.
#[derive(Clone, Debug)]
pub struct WorldPolicies {
    /// The root cluster's name.
    pub cluster: String,
    /// The enforce level of an unlabelled namespace.
    pub default_enforce: Level,
}

impl WorldPolicies {
    /// Read from the world (walks it once).
    pub fn of(world: &lattice_engine::World) -> WorldPolicies {
        let (cluster, default_level) = lattice_engine::project::root_cluster(world);
        WorldPolicies {
            cluster,
            default_enforce: Level::parse(default_level.as_str()).unwrap_or(Level::Restricted),
        }
    }

    /// Read from the world's projection, which already holds it: what admission uses, once
    /// per review.
    pub fn of_projection(projection: &lattice_engine::Projection) -> WorldPolicies {
        let (cluster, default_level) = projection.root_cluster();
        WorldPolicies {
            cluster: cluster.to_owned(),
            default_enforce: Level::parse(default_level).unwrap_or(Level::Restricted),
        }
    }

    /// The policy of `namespace` as the world labels it.
    pub fn namespace(&self, world: &lattice_engine::World, namespace: &str) -> NamespacePolicy {
        let labels = namespace_labels(world, namespace).unwrap_or_default();
        NamespacePolicy::from_labels(&labels, self.default_enforce)
    }
}

/// The PSA check a deciding policy stands for (`@control("pod-security:<check>")`), else its
/// id.
pub fn check_of(policy: &PolicyInfo) -> String {
    policy
        .annotations
        .get("control")
        .and_then(|c| c.strip_prefix("pod-security:"))
        .map_or_else(|| policy.id.clone(), str::to_owned)
}

/// Decides the admission of `object` (of `kind`) into `namespace` for `requester`: the
/// object's pod, under the policy of the namespace's labels (`labels` when given, else the
/// world's), with the world's default enforce level for an unlabelled namespace. `Ok(None)`
/// when the kind carries no pod; an object whose pod cannot be read is an error (deny).
#[allow(clippy::too_many_arguments)]
pub fn admit(
    snapshot: &Snapshot,
    world: &lattice_engine::World,
    policies: &WorldPolicies,
    kind: &str,
    object: &serde_json::Value,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    requester: &Requester,
    operation: &str,
) -> Result<Option<PodAdmission>, String> {
    let Some(pod) =
        lattice_engine::pod::project(kind, object, namespace).map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let labels = labels
        .cloned()
        .or_else(|| namespace_labels(world, &pod.namespace))
        .unwrap_or_default();
    let policy = NamespacePolicy::from_labels(&labels, policies.default_enforce);
    let ns_entity = lattice_engine::pod::unmanaged_namespace(
        &pod.namespace,
        &labels,
        &policies.cluster,
        policies.default_enforce.name(),
    )?;
    let scoped = scope(snapshot, &pod, requester, Some(ns_entity)).map_err(|e| e.0)?;
    // PSA enforces on Pods; a template is only warned about and audited, unless its
    // namespace asks to refuse it.
    let enforcing =
        kind == "Pod" || labels.get(TEMPLATES_LABEL).map(String::as_str) == Some("enforce");
    let modes: &[Mode] = if enforcing {
        &Mode::ALL
    } else {
        &[Mode::Warn, Mode::Audit]
    };
    let verdict = evaluate(&scoped, &pod, &policy, modes, requester, operation).map_err(|e| e.0)?;
    let mut warnings = Vec::new();
    let mut audit = BTreeMap::new();
    if !policy.errors.is_empty() {
        audit.insert(
            "error".to_owned(),
            format!("Failed to parse policy: {}", policy.errors.join("; ")),
        );
    }
    if !verdict.exempted_by.is_empty() {
        let ids: Vec<&str> = verdict.exempted_by.iter().map(|p| p.id.as_str()).collect();
        audit.insert("exempt".to_owned(), ids.join(","));
    } else if enforcing {
        audit.insert("enforce-policy".to_owned(), policy.enforce.to_string());
    }
    let refused = verdict.outcome(Mode::Enforce).is_some_and(|o| !o.allowed());
    if let Some(o) = verdict.outcome(Mode::Audit).filter(|o| !o.allowed()) {
        audit.insert(
            "audit-violations".to_owned(),
            format!(
                "would violate PodSecurity \"{}\": {}",
                o.policy,
                describe(&o.violations)
            ),
        );
    }
    // As PSA: warnings only for what is admitted.
    if !refused && let Some(o) = verdict.outcome(Mode::Warn).filter(|o| !o.allowed()) {
        warnings.push(format!(
            "would violate PodSecurity \"{}\": {}",
            o.policy,
            describe(&o.violations)
        ));
    }
    Ok(Some(PodAdmission {
        pod,
        policy,
        verdict,
        refused,
        warnings,
        audit,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{LABEL_PREFIX}{k}"), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn labels_are_read_with_psa_rules() {
        // Unlabelled: the default enforce level, warn and audit privileged, all latest.
        let p = NamespacePolicy::from_labels(&BTreeMap::new(), Level::Restricted);
        assert_eq!(p.enforce.level, Level::Restricted);
        assert_eq!(p.warn.level, Level::Privileged);
        assert_eq!(p.enforce.version, LATEST);
        // Warn follows a stricter enforce level, and its version, unless set itself.
        let p = NamespacePolicy::from_labels(
            &labels(&[("enforce", "baseline"), ("enforce-version", "v1.22")]),
            Level::Privileged,
        );
        assert_eq!(
            p.warn,
            LevelVersion {
                level: Level::Baseline,
                version: 22
            }
        );
        let p = NamespacePolicy::from_labels(
            &labels(&[("enforce", "baseline"), ("warn", "privileged")]),
            Level::Privileged,
        );
        assert_eq!(p.warn.level, Level::Privileged);
        // A bad enforce level fails closed, a bad warn or audit level fails open, a bad
        // version is latest; each is reported.
        let p = NamespacePolicy::from_labels(
            &labels(&[
                ("enforce", "strict"),
                ("audit", "x"),
                ("warn-version", "1.25"),
            ]),
            Level::Privileged,
        );
        assert_eq!(p.enforce.level, Level::Restricted);
        assert_eq!(p.audit.level, Level::Privileged);
        assert_eq!(p.warn.version, LATEST);
        assert_eq!(p.errors.len(), 3, "{:?}", p.errors);
    }

    #[test]
    fn versions_are_psas() {
        assert_eq!(parse_version("latest"), Some(LATEST));
        assert_eq!(parse_version("v1.0"), Some(0));
        assert_eq!(parse_version("v1.25"), Some(25));
        assert_eq!(parse_version("v1.99"), Some(LATEST));
        for bad in ["v1.025", "1.25", "v2.1", "v1.", "v1.x", "v1.-1"] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
        assert_eq!(
            LevelVersion {
                level: Level::Baseline,
                version: 20
            }
            .to_string(),
            "baseline:v1.20"
        );
    }
}
