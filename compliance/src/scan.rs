//! A scan: every `Comply` question of every subject in scope for every framework, on one
//! snapshot, read back per check and per control.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use lattice_engine::Query;
use lattice_engine::{PolicyStore, Snapshot, World};
use lattice_gates::compliance::{
    ComplyFacts, Known, Subject, SubjectKind, comply_queries, subjects,
};
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::baselines::Baseline;
use crate::catalog::{CatalogError, Framework, frameworks};
pub use crate::subject::SubjectRef;

/// The framework `--baseline` applies to.
pub const BASELINE_FRAMEWORK: &str = "nist-800-53";

/// Why a control of a baseline that no pack names is not assessed.
pub const OUTSIDE_LATTICE: &str =
    "no platform fact evidences this control; it is assessed outside Lattice";

/// What to scan.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    /// Framework ids; empty for every framework the store evidences.
    pub frameworks: Vec<String>,
    /// Only subjects in these namespaces (clusters are always in scope).
    pub namespaces: Option<BTreeSet<String>>,
    /// The LatticeComplianceProfile the scope came from, if any (`name`).
    pub profile: Option<String>,
    /// The scan's time: audit periods end against it, and reports carry it.
    pub now: Option<jiff::Timestamp>,
    /// Report NIST SP 800-53 against this baseline: every control of it is listed, assessed
    /// or not (needs `nist-800-53` among the frameworks).
    pub baseline: Option<Baseline>,
    /// Derivation gates already decided on the same snapshot, by workload (see
    /// [`Known`]).
    pub decided_gates: Option<std::sync::Arc<lattice_gates::compliance::DecidedGates>>,
    /// What each workload's derived objects show, read from the objects derivation returned
    /// on the same snapshot (see [`lattice_gates::compliance::DerivedObjects`]). Without
    /// it, checks that read derived objects fail closed: a scan that should pass them must
    /// derive first, as `lattice-policy plan`, `compliance scan` and the operator do.
    pub derived: Option<std::sync::Arc<lattice_gates::compliance::DerivedByWorkload>>,
    /// The deviations derivation allowed on the same snapshot, by workload (see
    /// [`crate::exceptions::deviations`]): the exception register reads them rather than
    /// deciding those gates again. A workload absent from it is decided by the register.
    pub allowed_deviations: Option<std::sync::Arc<lattice_gates::compliance::AllowedDeviations>>,
    /// The mesh plan of the same snapshot and world, when the caller has one: unilateral
    /// callers are read from its decided edges rather than decided again.
    pub mesh: Option<std::sync::Arc<lattice_gates::MeshPlan>>,
}

/// The outcome of a check, or of a control over its checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pass,
    /// Passes only because a subject holds an approved exception (see
    /// [`crate::exceptions`]); the register lists it.
    PassWithException,
    Fail,
    /// A control whose checks all pass (some perhaps by an approved exception) but show
    /// only part of its objective (the pack's `partial:` says which part is missing).
    PartiallyEvidenced,
    /// No subject the check applies to is in scope.
    NotApplicable,
    /// A control of the framework no check of Lattice's evidences.
    NotAssessed,
}

impl Status {
    /// The status as reports print it.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::PassWithException => "pass (approved exception)",
            Status::Fail => "fail",
            Status::PartiallyEvidenced => "partially evidenced",
            Status::NotApplicable => "not applicable",
            Status::NotAssessed => "not assessed by Lattice",
        }
    }
}

/// Who ran the scan.
#[derive(Clone, Debug, Serialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

/// One subject that failed a check.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub subject: SubjectRef,
    /// Where the object that declares the subject was written (`path:line`), when the
    /// world was read from files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Set when the check could not be evaluated on this subject (counted as a failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A check's result.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// The determining policy's stable id.
    pub id: String,
    pub title: String,
    pub severity: String,
    pub remediation: String,
    pub controls: Vec<String>,
    pub applies_to: Vec<SubjectKind>,
    /// Where the policy is written: `policies/nist-800-53/network.cedar:12`.
    pub source: String,
    pub status: Status,
    /// Subjects the check applies to.
    pub applicable: usize,
    /// Subjects that passed, those by an approved exception included.
    pub passed: usize,
    /// Subjects that passed only by an approved exception.
    pub excepted: usize,
    /// The exceptions (policy ids) that excused them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<String>,
    pub failures: Vec<Failure>,
}

/// A control's result over the checks that evidence it.
#[derive(Clone, Debug, Serialize)]
pub struct ControlResult {
    pub id: String,
    pub title: String,
    pub family: String,
    pub status: Status,
    pub checks: Vec<String>,
    /// Why Lattice does not assess it (for `not-assessed`), or what its checks do not show
    /// (for `partially-evidenced`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Counts of statuses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub pass: usize,
    pub pass_with_exception: usize,
    pub fail: usize,
    /// Controls only (a check is never partially evidenced).
    pub partially_evidenced: usize,
    pub not_applicable: usize,
    pub not_assessed: usize,
}

impl Tally {
    /// Counts one more result of status `s`.
    pub fn add(&mut self, s: Status) {
        match s {
            Status::Pass => self.pass += 1,
            Status::PassWithException => self.pass_with_exception += 1,
            Status::Fail => self.fail += 1,
            Status::PartiallyEvidenced => self.partially_evidenced += 1,
            Status::NotApplicable => self.not_applicable += 1,
            Status::NotAssessed => self.not_assessed += 1,
        }
    }
}

/// One framework's results.
#[derive(Clone, Debug, Serialize)]
pub struct FrameworkResult {
    pub id: String,
    pub title: String,
    /// `name@version` of the pack that defines it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    /// Family id → title.
    pub families: BTreeMap<String, String>,
    pub checks: Vec<CheckResult>,
    pub controls: Vec<ControlResult>,
    pub check_tally: Tally,
    pub control_tally: Tally,
    /// How much of the chosen baseline Lattice covers (NIST with a baseline only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Coverage>,
}

/// How a scan covers a NIST baseline: every control of it is counted once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// `Low`, `Moderate`, `High`.
    pub baseline: String,
    /// Controls the baseline selects.
    pub controls: usize,
    /// Of those, the ones Lattice's checks evidence (the next four counts).
    pub assessed: usize,
    /// Pass, by an approved exception or not.
    pub satisfied: usize,
    pub partially_evidenced: usize,
    pub failed: usize,
    pub not_applicable: usize,
    /// Not assessed by Lattice.
    pub not_assessed: usize,
    /// Controls the pack evidences or lists that the baseline does not select: reported
    /// all the same.
    pub outside: Vec<String>,
}

impl Coverage {
    /// "Moderate baseline: 287 controls — 22 assessed (2 satisfied, 20 partially evidenced,
    /// 0 failed), 265 not assessed by Lattice; 1 evidenced control outside it (SI-7(15))".
    pub fn line(&self) -> String {
        let na = if self.not_applicable > 0 {
            format!(", {} not applicable", self.not_applicable)
        } else {
            String::new()
        };
        let outside = if self.outside.is_empty() {
            String::new()
        } else {
            format!(
                "; also reported, outside the baseline: {}",
                self.outside.join(", ")
            )
        };
        format!(
            "{} baseline: {} controls — {} assessed ({} satisfied, {} partially evidenced, {} failed{na}), {} not assessed by Lattice{outside}",
            self.baseline,
            self.controls,
            self.assessed,
            self.satisfied,
            self.partially_evidenced,
            self.failed,
            self.not_assessed
        )
    }
}

/// Everything one scan found, with what it was taken on.
#[derive(Clone, Debug, Serialize)]
pub struct ScanReport {
    pub tool: Tool,
    /// RFC 3339.
    pub started: String,
    pub finished: String,
    /// The snapshot every decision was taken on.
    pub snapshot_digest: String,
    /// SHA-256 of the world's objects and of the active policies.
    pub world_digest: String,
    pub policies_digest: String,
    /// The rule packs in force, `name@version`, in load order.
    pub packs: Vec<String>,
    pub frameworks_scanned: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Subjects in scope by kind.
    pub subjects: BTreeMap<SubjectKind, usize>,
    /// SHA-256 of the sorted list of subject uids in scope, one per line.
    pub subject_inventory_sha256: String,
    /// Every subject in scope, sorted: what OSCAL lists as inventory, passing subjects
    /// included, so an assessor can sample the whole population. Not serialized: the JSON
    /// report (and the evidence log that keeps it) carries its count and hash instead.
    #[serde(skip)]
    pub inventory: Vec<SubjectRef>,
    pub frameworks: Vec<FrameworkResult>,
    /// With the `pod-security` framework: the Pod Security level each namespace enforces and
    /// the levels its pods meet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pod_security: Vec<NamespaceLevels>,
    /// Every permit in force that grants a deviation, with its approval and subjects.
    pub exceptions: Vec<crate::exceptions::Exception>,
}

/// The framework whose scans list Pod Security levels per namespace.
pub const POD_SECURITY_FRAMEWORK: &str = "pod-security";

/// One namespace's Pod Security levels.
#[derive(Clone, Debug, Serialize)]
pub struct NamespaceLevels {
    pub namespace: String,
    /// The level and version it enforces (`restricted:latest`, `baseline:v1.29`), as its
    /// labels say (the cluster's default level when unlabelled).
    pub enforces: String,
    /// Pods in it (each object that runs one), and how many meet each level (latest).
    pub pods: usize,
    pub meet_baseline: usize,
    pub meet_restricted: usize,
    /// How many fail the level it enforces.
    pub violate_enforced: usize,
    /// The highest level every one of its pods meets: `restricted`, `baseline` or
    /// `privileged`.
    pub level: &'static str,
}

/// The Pod Security levels of every namespace in scope, from the facts the scan derived.
fn namespace_levels(
    world: &World,
    subjects: &[Subject],
    facts: &ComplyFacts,
) -> Vec<NamespaceLevels> {
    let policies = lattice_gates::pod_security::WorldPolicies::of(world);
    let mut out: BTreeMap<&str, NamespaceLevels> = BTreeMap::new();
    for s in subjects.iter().filter(|s| s.kind == SubjectKind::Namespace) {
        let policy = policies.namespace(world, &s.id);
        out.insert(
            &s.id,
            NamespaceLevels {
                namespace: s.id.clone(),
                enforces: policy.enforce.to_string(),
                pods: 0,
                meet_baseline: 0,
                meet_restricted: 0,
                violate_enforced: 0,
                level: "restricted",
            },
        );
    }
    for s in subjects.iter().filter(|s| s.kind == SubjectKind::Pod) {
        let Some(ns) = s.namespace.as_deref().and_then(|ns| out.get_mut(ns)) else {
            continue;
        };
        let f = facts.of(s);
        ns.pods += 1;
        ns.meet_baseline += usize::from(f.baseline_violations.is_empty());
        ns.meet_restricted += usize::from(f.restricted_violations.is_empty());
        ns.violate_enforced += usize::from(!f.pod_security_violations.is_empty());
    }
    for ns in out.values_mut() {
        ns.level = if ns.meet_restricted == ns.pods {
            "restricted"
        } else if ns.meet_baseline == ns.pods {
            "baseline"
        } else {
            "privileged"
        };
    }
    out.into_values().collect()
}

impl ScanReport {
    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.frameworks.iter().any(|f| f.check_tally.fail > 0)
    }
}

/// Why a scan could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A baseline was asked for without the framework it belongs to.
    #[error("a baseline applies to {BASELINE_FRAMEWORK}, which this scan does not include")]
    BaselineWithoutFramework,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A subject as reports name it, and where the object that declares it was written.
struct Named<'w> {
    subject: SubjectRef,
    source: Option<&'w str>,
}

/// Scans `world` on `snapshot` (built from `world` and `store`). `progress` is told how
/// many questions are done as they finish, from any thread.
pub fn scan(
    world: &World,
    store: &PolicyStore,
    snapshot: &Snapshot,
    options: &ScanOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ScanReport, ScanError> {
    let started = options.now.unwrap_or_else(jiff::Timestamp::now);
    let catalog = frameworks(store, &options.frameworks)?;
    if options.baseline.is_some() && !catalog.iter().any(|f| f.id == BASELINE_FRAMEWORK) {
        return Err(ScanError::BaselineWithoutFramework);
    }
    let subjects = subjects(world, options.namespaces.as_ref());
    let facts = ComplyFacts::derive(
        snapshot,
        world,
        store,
        &subjects,
        started,
        Known {
            gates: options.decided_gates.as_deref(),
            derived: options.derived.as_deref(),
            mesh: options.mesh.as_deref(),
        },
    );
    // One decision per subject and framework; its reasons are the failed checks. A
    // framework none of whose checks applies to the subject's kind is not asked: nothing
    // would read the answer.
    let kinds: Vec<BTreeSet<SubjectKind>> = catalog
        .iter()
        .map(|fw| {
            fw.checks
                .iter()
                .flat_map(|c| c.applies_to.iter().copied())
                .collect()
        })
        .collect();
    let outcomes: Vec<Vec<Outcome>> = subjects
        .par_iter()
        .map(|s| {
            let f = facts.of(s);
            let ids: Vec<&str> = catalog
                .iter()
                .zip(&kinds)
                .filter(|(_, k)| k.contains(&s.kind))
                .map(|(fw, _)| fw.id.as_str())
                .collect();
            let mut answers = comply_queries(s, &ids, &f)
                .into_iter()
                .map(|q| ask(snapshot, &q));
            let out = kinds
                .iter()
                .map(|k| match k.contains(&s.kind) {
                    true => answers
                        .next()
                        .unwrap_or_else(|| Outcome::Broken("the question was not asked".into())),
                    false => Outcome::Decided {
                        failed: Vec::new(),
                        errors: HashMap::new(),
                    },
                })
                .collect();
            progress(catalog.len() as u64);
            out
        })
        .collect();
    let register = crate::exceptions::register(
        snapshot,
        world,
        store,
        &subjects,
        started,
        options.allowed_deviations.as_deref(),
    );
    let held = crate::exceptions::held(&register);
    let mut by_kind: BTreeMap<SubjectKind, usize> = BTreeMap::new();
    for s in &subjects {
        *by_kind.entry(s.kind).or_default() += 1;
    }
    // Rendering a uid is most of this at estate scale: done on every core.
    let mut inventory: Vec<String> = subjects.par_iter().map(|s| s.uid().to_string()).collect();
    inventory.par_sort_unstable();
    let mut h = Sha256::new();
    for line in &inventory {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    // Each subject's held exceptions, looked up once rather than once per check.
    let excusable: Vec<&[(String, &crate::exceptions::Exception)]> = if held.is_empty() {
        vec![&[]; subjects.len()]
    } else {
        subjects
            .par_iter()
            .map(|s| {
                held.get(&(s.kind, s.id.as_str()))
                    .map_or(&[][..], Vec::as_slice)
            })
            .collect()
    };
    // Each subject named as reports name it, and where it was written, once: an estate's
    // subjects can fail tens of thousands of checks.
    let named: Vec<Named> = subjects
        .par_iter()
        .map(|s| Named {
            subject: SubjectRef::of(s),
            source: s.object.as_ref().and_then(|k| world.location(k)),
        })
        .collect();
    let results: Vec<FrameworkResult> = catalog
        .par_iter()
        .enumerate()
        .map(|(i, fw)| {
            let baseline = options.baseline.filter(|_| fw.id == BASELINE_FRAMEWORK);
            framework_result(fw, &subjects, &named, &outcomes, i, &excusable, baseline)
        })
        .collect();
    let pod_security = if catalog.iter().any(|f| f.id == POD_SECURITY_FRAMEWORK) {
        namespace_levels(world, &subjects, &facts)
    } else {
        Vec::new()
    };
    // What only the scan read is freed on a worker while its caller goes on: at estate
    // scale, tens of thousands of facts and answers, freed one by one.
    rayon::spawn(move || drop((facts, outcomes)));
    let finished = if options.now.is_some() {
        started
    } else {
        jiff::Timestamp::now()
    };
    Ok(ScanReport {
        tool: Tool {
            name: "lattice-policy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        started: started.to_string(),
        finished: finished.to_string(),
        snapshot_digest: snapshot.digest().to_owned(),
        world_digest: hex(&world.digest()),
        policies_digest: hex(&store.digest()),
        packs: store
            .packs()
            .map(|p| format!("{}@{}", p.meta.name, p.meta.version))
            .collect(),
        frameworks_scanned: catalog.iter().map(|f| f.id.clone()).collect(),
        namespaces: options
            .namespaces
            .as_ref()
            .map(|n| n.iter().cloned().collect()),
        profile: options.profile.clone(),
        subjects: by_kind,
        subject_inventory_sha256: hex(&h.finalize()),
        inventory: {
            let mut all: Vec<SubjectRef> = named.into_par_iter().map(|n| n.subject).collect();
            all.par_sort_unstable();
            all
        },
        frameworks: results,
        pod_security,
        exceptions: register,
    })
}

/// What one decision said about one framework's checks on one subject.
enum Outcome {
    /// Ids of the checks that failed (determining forbids), with errors by check id.
    Decided {
        failed: Vec<String>,
        errors: HashMap<String, String>,
    },
    /// The question itself could not be asked, or nothing permits `Comply`: every
    /// applicable check fails with this message (fail closed).
    Broken(String),
}

fn ask(snapshot: &Snapshot, q: &Query) -> Outcome {
    // Comply contexts have one shape, checked against the schema by a test
    // (`comply_contexts_fit_the_schema`), so each request is not validated again.
    match snapshot.decide_prechecked(q) {
        Err(e) => Outcome::Broken(e.to_string()),
        Ok(d) if !d.allowed && d.determining.is_empty() => Outcome::Broken(
            "no policy permits Comply, so no check can pass; load the baseline pack (its \
             `compliance-blanket` permit)"
                .into(),
        ),
        Ok(d) => Outcome::Decided {
            failed: if d.allowed {
                Vec::new()
            } else {
                d.determining.iter().map(|p| p.id.clone()).collect()
            },
            errors: d
                .errors
                .iter()
                .map(|f| (f.policy.id.clone(), f.message.clone()))
                .collect(),
        },
    }
}

fn framework_result(
    fw: &Framework,
    subjects: &[Subject],
    named: &[Named],
    outcomes: &[Vec<Outcome>],
    index: usize,
    excusable: &[&[(String, &crate::exceptions::Exception)]],
    baseline: Option<Baseline>,
) -> FrameworkResult {
    let mut checks: Vec<CheckResult> = fw
        .checks
        .iter()
        .map(|c| CheckResult {
            id: c.id().to_owned(),
            title: c.title.clone(),
            severity: c.severity.clone(),
            remediation: c.remediation.clone(),
            controls: c.controls.clone(),
            applies_to: c.applies_to.iter().copied().collect(),
            source: format!("{}:{}", c.policy.source, c.policy.line),
            status: Status::NotApplicable,
            applicable: 0,
            passed: 0,
            excepted: 0,
            exceptions: Vec::new(),
            failures: Vec::new(),
        })
        .collect();
    for (((subject, named), outcome), held) in
        subjects.iter().zip(named).zip(outcomes).zip(excusable)
    {
        let outcome = &outcome[index];
        for (check, result) in fw.checks.iter().zip(checks.iter_mut()) {
            if !check.applies_to.contains(&subject.kind) {
                continue;
            }
            result.applicable += 1;
            let error = match outcome {
                Outcome::Broken(message) => Some(Some(message.clone())),
                Outcome::Decided { failed, errors } => match errors.get(check.id()) {
                    Some(e) => Some(Some(format!("the check could not be evaluated: {e}"))),
                    None if failed.iter().any(|f| f == check.id()) => Some(None),
                    None => None,
                },
            };
            // A pass the subject owes to an exception the check tolerates: excused while
            // the exception holds, a failure once it has expired.
            let excused: Vec<&crate::exceptions::Exception> =
                if error.is_none() && !check.tolerates.is_empty() {
                    held.iter()
                        .filter(|(category, _)| check.tolerates.contains(category))
                        .map(|(_, e)| *e)
                        .collect()
                } else {
                    Vec::new()
                };
            let expired = excused
                .iter()
                .find(|e| e.state == crate::exceptions::ExceptionState::Expired);
            let error = match expired {
                Some(e) => Some(Some(format!(
                    "the exception `{}` that excused it has {}",
                    e.policy,
                    e.reason.as_deref().unwrap_or("expired")
                ))),
                None => error,
            };
            match error {
                None => {
                    result.passed += 1;
                    if !excused.is_empty() {
                        result.excepted += 1;
                        for e in excused {
                            if !result.exceptions.contains(&e.policy) {
                                result.exceptions.push(e.policy.clone());
                            }
                        }
                    }
                }
                Some(error) => result.failures.push(Failure {
                    subject: named.subject.clone(),
                    source: named.source.map(str::to_owned),
                    error,
                }),
            }
        }
    }
    let mut check_tally = Tally::default();
    for c in &mut checks {
        c.exceptions.sort();
        c.status = if !c.failures.is_empty() {
            Status::Fail
        } else if c.excepted > 0 {
            Status::PassWithException
        } else if c.applicable > 0 {
            Status::Pass
        } else {
            Status::NotApplicable
        };
        check_tally.add(c.status);
    }
    // Controls: the pack's, any a check cites, and those it says Lattice cannot assess.
    let mut ids: BTreeSet<&String> = fw.controls.keys().collect();
    ids.extend(checks.iter().flat_map(|c| &c.controls));
    ids.extend(fw.not_assessed.keys());
    // With a baseline, every control it selects, titled from the list when the pack does not.
    let selected: BTreeMap<String, String> = baseline
        .map(Baseline::controls)
        .unwrap_or_default()
        .into_iter()
        .collect();
    ids.extend(selected.keys());
    let mut controls = Vec::new();
    let mut control_tally = Tally::default();
    for id in ids {
        let cited: Vec<&CheckResult> = checks.iter().filter(|c| c.controls.contains(id)).collect();
        let status = if cited.is_empty() {
            Status::NotAssessed
        } else if cited.iter().any(|c| c.status == Status::Fail) {
            Status::Fail
        } else if fw.partial.contains_key(id)
            && cited
                .iter()
                .any(|c| matches!(c.status, Status::Pass | Status::PassWithException))
        {
            // Passing checks that show part of the objective are evidence, not a verdict.
            Status::PartiallyEvidenced
        } else if cited.iter().any(|c| c.status == Status::PassWithException) {
            Status::PassWithException
        } else if cited.iter().any(|c| c.status == Status::Pass) {
            Status::Pass
        } else {
            Status::NotApplicable
        };
        control_tally.add(status);
        controls.push(ControlResult {
            id: id.clone(),
            title: fw
                .controls
                .get(id)
                .or_else(|| selected.get(id))
                .cloned()
                .unwrap_or_else(|| id.clone()),
            family: fw.family(id).0,
            status,
            checks: cited.iter().map(|c| c.id.clone()).collect(),
            reason: match status {
                Status::NotAssessed => {
                    Some(fw.not_assessed.get(id).cloned().unwrap_or_else(|| {
                        if selected.contains_key(id) && !fw.controls.contains_key(id) {
                            OUTSIDE_LATTICE.into()
                        } else {
                            "no check in the loaded packs evidences it".into()
                        }
                    }))
                }
                Status::PartiallyEvidenced => fw.partial.get(id).cloned(),
                _ => None,
            },
        });
    }
    controls.sort_by_key(|a| control_order(&a.id));
    let coverage = baseline.map(|b| {
        let mut c = Coverage {
            baseline: b.label().to_owned(),
            controls: selected.len(),
            ..Coverage::default()
        };
        for control in &controls {
            if !selected.contains_key(&control.id) {
                c.outside.push(control.id.clone());
                continue;
            }
            match control.status {
                Status::Pass | Status::PassWithException => c.satisfied += 1,
                Status::PartiallyEvidenced => c.partially_evidenced += 1,
                Status::Fail => c.failed += 1,
                Status::NotApplicable => c.not_applicable += 1,
                Status::NotAssessed => c.not_assessed += 1,
            }
        }
        c.assessed = c.satisfied + c.partially_evidenced + c.failed + c.not_applicable;
        c
    });
    FrameworkResult {
        id: fw.id.clone(),
        title: fw.title.clone(),
        pack: fw.pack.as_ref().map(|(n, v)| format!("{n}@{v}")),
        families: fw.families.clone(),
        checks,
        controls,
        check_tally,
        control_tally,
        baseline: coverage,
    }
}

/// Sorts control ids as people number them: `AC-2` before `AC-10`, `5.2.9` before `5.2.10`.
pub(crate) fn control_order(id: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut num = String::new();
    for ch in id.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
        } else {
            if !num.is_empty() || !text.is_empty() {
                out.push((std::mem::take(&mut text), num.parse().unwrap_or(0)));
                num.clear();
            }
            text.push(ch);
        }
    }
    out.push((text, num.parse().unwrap_or(0)));
    out
}

#[cfg(test)]
mod tests {
    use super::control_order;

    #[test]
    fn controls_sort_by_number_not_text() {
        let mut ids = vec![
            "AC-10", "AC-2", "SC-7(5)", "SC-7", "5.2.10", "5.2.9", "CC6.1",
        ];
        ids.sort_by_key(|a| control_order(a));
        assert_eq!(
            ids,
            vec![
                "5.2.9", "5.2.10", "AC-2", "AC-10", "CC6.1", "SC-7", "SC-7(5)"
            ]
        );
    }
}
