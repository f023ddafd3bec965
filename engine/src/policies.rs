//! The policy store: rule packs from `policies/<pack>/` and `CedarPolicy` objects.
//!
//! Every policy is validated strictly against the Lattice schema before it is stored, and
//! carries a stable id: `<pack>/<@id>` for packs, `<namespace>/<name>/<@id>` for objects. An
//! invalid CedarPolicy is rejected whole and whatever was stored before stays.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cedar_policy::{Effect, Policy, PolicyId};
use lattice_schemas::cedar::{self, PolicyProblem};
use lattice_schemas::crd::{CedarPolicy, EnforcementMode};
use lattice_schemas::manifest::yaml::parse_documents;
use lattice_schemas::validate::{Report, validate_paths};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Where a policy came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicySource {
    /// A `.cedar` file of a rule pack.
    Pack { pack: String, file: PathBuf },
    /// A `CedarPolicy` object.
    Object { namespace: String, name: String },
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicySource::Pack { file, .. } => write!(f, "{}", file.display()),
            PolicySource::Object { namespace, name } => write!(f, "CedarPolicy {namespace}/{name}"),
        }
    }
}

/// What is known about one stored policy: the evidence a decision cites.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyInfo {
    /// The stable id (`baseline/bilateral-connect`, `platform/image-hygiene/no-latest`).
    pub id: String,
    pub effect: Effect,
    pub mode: EnforcementMode,
    pub annotations: BTreeMap<String, String>,
    pub source: PolicySource,
    /// Byte range of the policy in its file or in `spec.policies`.
    pub span: Range<usize>,
    /// 1-based line of the policy in its file or in `spec.policies`.
    pub line: usize,
    /// The policy's source text.
    pub text: String,
}

/// A stored policy.
#[derive(Clone, Debug)]
pub struct StoredPolicy {
    pub policy: Policy,
    pub info: Arc<PolicyInfo>,
}

/// A rule pack's `pack.yaml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct PackMeta {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// The compliance framework the pack evidences, if any.
    #[serde(default)]
    pub framework: Option<String>,
    #[serde(default)]
    pub mode: EnforcementMode,
    /// The framework's name for people (`NIST SP 800-53 Rev. 5`).
    #[serde(default)]
    pub title: Option<String>,
    /// Control id → title, for every control the pack's checks cite.
    #[serde(default)]
    pub controls: BTreeMap<String, String>,
    /// Control family id → title (`SC` → `System and Communications Protection`).
    #[serde(default)]
    pub families: BTreeMap<String, String>,
    /// Controls of the framework that Lattice's facts cannot evidence → why; reports list
    /// them as "not assessed by Lattice" rather than pretending to check them.
    #[serde(default, rename = "notAssessed")]
    pub not_assessed: BTreeMap<String, String>,
    /// Controls of `controls` whose checks show only part of the control's objective → what
    /// they do not show. A passing control listed here is "partially evidenced", never
    /// "satisfied": a narrow platform fact must not read as the whole control.
    #[serde(default)]
    pub partial: BTreeMap<String, String>,
    /// Accept policies without `@id` (named `policy0`, `policy1`, … per file): for packs
    /// written for upstream Lattice. Off by default: a pack's ids are its public names.
    #[serde(default, rename = "allowUnnamedPolicies")]
    pub allow_unnamed_policies: bool,
}

/// A loaded rule pack.
#[derive(Clone, Debug)]
pub struct Pack {
    pub meta: PackMeta,
    pub policies: Vec<StoredPolicy>,
}

/// A CedarPolicy object's policies, as stored.
#[derive(Clone, Debug)]
pub struct ObjectPolicies {
    pub enabled: bool,
    pub mode: EnforcementMode,
    pub propagate: bool,
    pub policies: Vec<StoredPolicy>,
}

/// Why policies were rejected.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Pack files failed validation; the report has every finding.
    #[error("rule packs have {} error(s)", .0.errors().max(.0.unreadable.len()))]
    Packs(Box<Report>),
    /// A pack's files could not be read as a pack.
    #[error("rule pack {pack}: {message}")]
    Pack { pack: String, message: String },
    /// A CedarPolicy object was rejected whole; the store is unchanged.
    #[error("CedarPolicy {namespace}/{name} rejected: {}", .problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; "))]
    Object {
        namespace: String,
        name: String,
        problems: Vec<PolicyProblem>,
    },
}

/// Every policy Lattice evaluates, by where it came from.
#[derive(Clone, Debug, Default)]
pub struct PolicyStore {
    packs: BTreeMap<String, Pack>,
    objects: BTreeMap<(String, String), ObjectPolicies>,
}

impl PolicyStore {
    pub fn new() -> PolicyStore {
        PolicyStore::default()
    }

    /// Loads every pack under `root` (each subdirectory with a `pack.yaml`). All files are
    /// validated first; any error rejects the load.
    pub fn load_packs(root: &Path) -> Result<PolicyStore, PolicyError> {
        let report = validate_paths(&[root.to_path_buf()]);
        if report.errors() > 0 || !report.unreadable.is_empty() {
            return Err(PolicyError::Packs(Box::new(report)));
        }
        let mut store = PolicyStore::new();
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(|e| PolicyError::Pack {
                pack: root.display().to_string(),
                message: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("pack.yaml").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let pack = load_pack(&dir)?;
            store.packs.insert(pack.meta.name.clone(), pack);
        }
        Ok(store)
    }

    /// Loads the one pack in `dir` (a directory with a `pack.yaml`), validated first as
    /// [`PolicyStore::load_packs`] validates.
    pub fn load_pack_at(dir: &Path) -> Result<Pack, PolicyError> {
        let report = validate_paths(&[dir.to_path_buf()]);
        if report.errors() > 0 || !report.unreadable.is_empty() {
            return Err(PolicyError::Packs(Box::new(report)));
        }
        load_pack(dir)
    }

    /// Adds or replaces a pack.
    pub fn insert_pack(&mut self, pack: Pack) {
        self.packs.insert(pack.meta.name.clone(), pack);
    }

    /// Stores a CedarPolicy object's policies, replacing its previous version. On any
    /// problem the object is rejected whole and the store is unchanged.
    pub fn apply_object(&mut self, object: &CedarPolicy) -> Result<usize, PolicyError> {
        let (namespace, name) = object_key(object);
        let read = read_object(object)?;
        let policies = read.policies;
        // A policy the edit left exactly as it was stays the same policy (the same `Arc`),
        // so a snapshot sees only what the edit changed: the planner re-decides what the
        // changed policies' scopes reach, not everything the object holds.
        let policies = match self.objects.get(&(namespace.clone(), name.clone())) {
            Some(before) => policies
                .into_iter()
                .map(|p| {
                    before
                        .policies
                        .iter()
                        .find(|b| b.info == p.info)
                        .cloned()
                        .unwrap_or(p)
                })
                .collect(),
            None => policies,
        };
        let count = policies.len();
        self.objects
            .insert((namespace, name), ObjectPolicies { policies, ..read });
        Ok(count)
    }

    /// How many permits and forbids a stored CedarPolicy object holds (`(0, 0)` when it is
    /// not stored).
    pub fn effect_counts(&self, namespace: &str, name: &str) -> (usize, usize) {
        let Some(o) = self.objects.get(&(namespace.to_owned(), name.to_owned())) else {
            return (0, 0);
        };
        let permits = o
            .policies
            .iter()
            .filter(|p| p.info.effect == Effect::Permit)
            .count();
        (permits, o.policies.len() - permits)
    }

    /// Forgets a CedarPolicy object.
    pub fn remove_object(&mut self, namespace: &str, name: &str) -> bool {
        self.objects
            .remove(&(namespace.to_owned(), name.to_owned()))
            .is_some()
    }

    /// Turns a stored object's policies on or off (for what-if questions).
    pub fn set_object_enabled(&mut self, namespace: &str, name: &str, enabled: bool) -> bool {
        match self
            .objects
            .get_mut(&(namespace.to_owned(), name.to_owned()))
        {
            Some(o) => {
                o.enabled = enabled;
                true
            }
            None => false,
        }
    }

    /// Removes one policy, by stable id, wherever it is stored.
    pub fn remove_policy(&mut self, id: &str) -> bool {
        let lists = self
            .packs
            .values_mut()
            .map(|p| &mut p.policies)
            .chain(self.objects.values_mut().map(|o| &mut o.policies));
        for list in lists {
            if let Some(i) = list.iter().position(|p| p.info.id == id) {
                list.remove(i);
                return true;
            }
        }
        false
    }

    pub fn packs(&self) -> impl Iterator<Item = &Pack> {
        self.packs.values()
    }

    pub fn objects(&self) -> impl Iterator<Item = (&(String, String), &ObjectPolicies)> {
        self.objects.iter()
    }

    /// Every enabled policy, packs first, in a stable order.
    pub fn active(&self) -> impl Iterator<Item = &StoredPolicy> {
        self.packs.values().flat_map(|p| p.policies.iter()).chain(
            self.objects
                .values()
                .filter(|o| o.enabled)
                .flat_map(|o| o.policies.iter()),
        )
    }

    /// A digest of every active policy's id, mode and text.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for p in self.active() {
            h.update(p.info.id.as_bytes());
            h.update([0, p.info.mode as u8]);
            h.update(p.info.text.as_bytes());
            h.update([0]);
        }
        h.finalize().into()
    }
}

/// The rule packs of this repository's `policies/`, compiled into the binary: what every
/// command decides under unless `--policies DIR` names others.
static BUNDLED: include_dir::Dir<'static> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/../policies");

impl PolicyStore {
    /// The bundled rule packs. Their policies' sources read `policies/<pack>/<file>`.
    pub fn bundled() -> Result<PolicyStore, PolicyError> {
        let mut store = PolicyStore::new();
        let mut dirs: Vec<&include_dir::Dir<'static>> = BUNDLED.dirs().collect();
        dirs.sort_by_key(|d| d.path());
        // Packs are read on every core, and stored in order.
        let packs: Vec<Result<Pack, PolicyError>> = dirs
            .par_iter()
            .filter_map(|dir| {
                let meta = dir.get_file(dir.path().join("pack.yaml"))?;
                let mut files: Vec<(PathBuf, String)> = dir
                    .files()
                    .filter(|f| f.path().extension().is_some_and(|x| x == "cedar"))
                    .map(|f| {
                        (
                            Path::new("policies").join(f.path()),
                            f.contents_utf8().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                files.sort();
                let label = Path::new("policies").join(dir.path());
                Some(pack_from(
                    &label,
                    meta.contents_utf8().unwrap_or_default(),
                    files,
                ))
            })
            .collect();
        for pack in packs {
            let pack = pack?;
            store.packs.insert(pack.meta.name.clone(), pack);
        }
        Ok(store)
    }
}

fn load_pack(dir: &Path) -> Result<Pack, PolicyError> {
    let pack_err = |message: String| PolicyError::Pack {
        pack: dir.display().to_string(),
        message,
    };
    let text =
        std::fs::read_to_string(dir.join("pack.yaml")).map_err(|e| pack_err(e.to_string()))?;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| pack_err(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    paths.sort();
    let mut files = Vec::new();
    for file in paths {
        let body = std::fs::read_to_string(&file).map_err(|e| pack_err(e.to_string()))?;
        files.push((file, body));
    }
    pack_from(dir, &text, files)
}

/// A pack from its `pack.yaml` text and its `.cedar` files (path, text), in order.
fn pack_from(dir: &Path, text: &str, files: Vec<(PathBuf, String)>) -> Result<Pack, PolicyError> {
    let pack_err = |message: String| PolicyError::Pack {
        pack: dir.display().to_string(),
        message,
    };
    let (docs, errors) = parse_documents(text);
    if let Some(e) = errors.first() {
        return Err(pack_err(e.message.clone()));
    }
    let meta: PackMeta = docs
        .into_iter()
        .next()
        .map(|d| serde_json::from_value(d.value))
        .transpose()
        .map_err(|e| pack_err(e.to_string()))?
        .ok_or_else(|| pack_err("pack.yaml is empty".into()))?;
    // Each file is parsed and validated on its own (Cedar's parser and typechecker are
    // most of a command's fixed cost), so the files are checked on every core; the first
    // problem in file order is the one reported.
    let per_file: Vec<Result<Vec<StoredPolicy>, String>> = files
        .par_iter()
        .map(|(file, text)| {
            let source = PolicySource::Pack {
                pack: meta.name.clone(),
                file: file.clone(),
            };
            let check = cedar::check_policies(text);
            if !meta.allow_unnamed_policies {
                let unnamed = check.ids.iter().filter(|(id, _)| id.is_none()).count();
                if unnamed > 0 {
                    return Err(format!(
                        "{}: {unnamed} policy(ies) without `@id`; give each an `@id`, or set `allowUnnamedPolicies: true` in pack.yaml to accept them as `policy0`, `policy1`, …",
                        file.display()
                    ));
                }
            }
            stored_from_check(check, text, &meta.name, meta.mode, &source).map_err(|problems| {
                problems
                    .iter()
                    .map(|p| p.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .collect();
    let mut policies = Vec::new();
    for parsed in per_file {
        policies.extend(parsed.map_err(pack_err)?);
    }
    Ok(Pack { meta, policies })
}

/// Where a CedarPolicy object is stored: its namespace (`default` when unset) and name.
pub fn object_key(object: &CedarPolicy) -> (String, String) {
    let namespace = object
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    (namespace, object.metadata.name.clone().unwrap_or_default())
}

/// A CedarPolicy object as the store reads it: its policies parsed and checked under the ids
/// `namespace/name/id`, an unset mode enforcing, an unset `enabled` on. The one reading
/// [`PolicyStore::apply_object`] and the webhook's proof of a write share.
pub fn read_object(object: &CedarPolicy) -> Result<ObjectPolicies, PolicyError> {
    let (namespace, name) = object_key(object);
    let mode = object.spec.mode.unwrap_or_default();
    let source = PolicySource::Object {
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let policies = parse_checked(
        &object.spec.policies,
        &format!("{namespace}/{name}"),
        mode,
        &source,
    )
    .map_err(|problems| PolicyError::Object {
        namespace,
        name,
        problems,
    })?;
    Ok(ObjectPolicies {
        enabled: object.spec.enabled.unwrap_or(true),
        mode,
        propagate: object.spec.propagate.unwrap_or(false),
        policies,
    })
}

/// Checks `text` strictly and returns its policies under stable ids `<prefix>/<@id>`.
pub fn parse_checked(
    text: &str,
    prefix: &str,
    mode: EnforcementMode,
    source: &PolicySource,
) -> Result<Vec<StoredPolicy>, Vec<PolicyProblem>> {
    stored_from_check(cedar::check_policies(text), text, prefix, mode, source)
}

/// [`parse_checked`] on the result of checking `text`.
fn stored_from_check(
    check: cedar::PolicyCheck,
    text: &str,
    prefix: &str,
    mode: EnforcementMode,
    source: &PolicySource,
) -> Result<Vec<StoredPolicy>, Vec<PolicyProblem>> {
    if check.has_errors() {
        return Err(check.problems.into_iter().filter(|p| !p.warning).collect());
    }
    let Some(set) = &check.policies else {
        return Ok(Vec::new());
    };
    if let Some(t) = set.templates().next() {
        return Err(vec![PolicyProblem {
            message: format!(
                "template `{}` has slots; Lattice stores only static policies",
                t.id()
            ),
            span: 0..0,
            help: Some("write the principal and resource out".into()),
            warning: false,
            first: None,
        }]);
    }
    let mut out = Vec::new();
    // Lines counted as the statements go (in source order), not from the start each time.
    let (mut line, mut counted) = (1, 0);
    for (i, (id, span)) in check.ids.iter().enumerate() {
        line += text[counted..span.start.max(counted)].matches('\n').count();
        counted = counted.max(span.start);
        // Without `@id`, Cedar's own name: `policy<N>` by place in the text.
        let id = id.clone().unwrap_or_else(|| format!("policy{i}"));
        let Some(original) = set.policy(&PolicyId::new(format!("policy{i}"))) else {
            // The statement splitter and Cedar disagree on where policies end; refuse rather
            // than attach evidence to the wrong policy.
            return Err(vec![PolicyProblem {
                message: format!("cannot match statement {} to a parsed policy", i + 1),
                span: span.clone(),
                help: Some("put each policy in its own statement ending with `;`".into()),
                warning: false,
                first: None,
            }]);
        };
        let stable = format!("{prefix}/{id}");
        let policy = original.new_id(PolicyId::new(stable.clone()));
        let annotations = policy
            .annotations()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        out.push(StoredPolicy {
            info: Arc::new(PolicyInfo {
                id: stable,
                effect: policy.effect(),
                mode,
                annotations,
                source: source.clone(),
                span: span.clone(),
                line,
                text: text[span.clone()].to_owned(),
            }),
            policy,
        });
    }
    Ok(out)
}
