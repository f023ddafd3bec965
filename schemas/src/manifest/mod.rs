//! Reading manifests: YAML with source spans, typed Lattice objects, Score documents.
//!
//! [`load_source`] turns one file into typed [`Manifest`]s. Every document is checked
//! against its kind's strict JSON Schema before it is deserialized, so what loads is exactly
//! what the API server would accept; what does not load comes back as [`Finding`]s that
//! point at the offending line.

pub mod core;
pub mod score;
pub mod upstream;
pub mod yaml;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use jsonschema::error::ValidationErrorKind;
use k8s_openapi::api::core::v1::Namespace;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::crd::{self, API_VERSION, GROUP, Kind};
use crate::diagnostics::{Finding, SourceFile};
use crate::generate::{json_schema, namespace_json_schema};
use yaml::{ScalarStyle, YamlDocument, push_pointer};

/// A typed object read from a manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Service(crd::LatticeService),
    Job(crd::LatticeJob),
    Model(crd::LatticeModel),
    MeshMember(crd::LatticeMeshMember),
    Cluster(crd::LatticeCluster),
    CedarPolicy(crd::CedarPolicy),
    SecretProvider(crd::SecretProvider),
    ImageProvider(crd::ImageProvider),
    TrustPolicy(crd::TrustPolicy),
    InfraProvider(crd::InfraProvider),
    Package(crd::LatticePackage),
    ComplianceProfile(crd::LatticeComplianceProfile),
    OidcProvider(crd::OIDCProvider),
    Quota(crd::LatticeQuota),
    ClusterBackup(crd::LatticeClusterBackup),
    Restore(crd::LatticeRestore),
    CertIssuer(crd::CertIssuer),
    DnsProvider(crd::DNSProvider),
    /// A core/v1 Namespace (its labels are world facts).
    Namespace(Namespace),
    /// A Kubernetes object of another kind Lattice decides and scans (a Pod or a workload
    /// that runs one, RBAC, a Service, a NetworkPolicy, a ServiceAccount).
    Core(core::CoreObject),
}

impl Object {
    /// The object's metadata.
    pub fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::Service(o) => &o.metadata,
            Object::Job(o) => &o.metadata,
            Object::Model(o) => &o.metadata,
            Object::MeshMember(o) => &o.metadata,
            Object::Cluster(o) => &o.metadata,
            Object::CedarPolicy(o) => &o.metadata,
            Object::SecretProvider(o) => &o.metadata,
            Object::ImageProvider(o) => &o.metadata,
            Object::TrustPolicy(o) => &o.metadata,
            Object::InfraProvider(o) => &o.metadata,
            Object::Package(o) => &o.metadata,
            Object::ComplianceProfile(o) => &o.metadata,
            Object::OidcProvider(o) => &o.metadata,
            Object::Quota(o) => &o.metadata,
            Object::ClusterBackup(o) => &o.metadata,
            Object::Restore(o) => &o.metadata,
            Object::CertIssuer(o) => &o.metadata,
            Object::DnsProvider(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Core(o) => &o.metadata,
        }
    }

    /// Types an object read from an API server (JSON, as the server stores it), by its
    /// `kind:` (`Namespace` or a Lattice kind). Only serde's checks apply: the API server
    /// has already enforced the CRD schema, and the admission webhook the semantic rules.
    pub fn from_api(kind: &str, value: &Value) -> Result<Object, String> {
        let target = match Kind::from_name(kind) {
            Some(k) => Target::Lattice(k),
            None if kind == "Namespace" => Target::Namespace,
            None => match core::CoreKind::from_name(kind) {
                Some(k) => return core::CoreObject::read(k, value.clone()).map(Object::Core),
                None => return Err(format!("`{kind}` is not a kind Lattice reads")),
            },
        };
        target.build(value).map_err(|e| e.to_string())
    }

    /// [`Object::from_api`] from the JSON text itself, typed without an intermediate tree
    /// (core kinds, which read their own tree, excepted).
    pub fn from_api_slice(kind: &str, json: &[u8]) -> Result<Object, String> {
        let target = match Kind::from_name(kind) {
            Some(k) => Target::Lattice(k),
            None if kind == "Namespace" => Target::Namespace,
            None => {
                let value: Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
                return Object::from_api(kind, &value);
            }
        };
        target.build_from_slice(json).map_err(|e| e.to_string())
    }

    /// The object as JSON, as an API server would store it (`apiVersion`, `kind`, …): what
    /// [`Object::from_api`] reads back. Deterministic: maps are ordered and struct fields
    /// have a fixed order, so it is also what content digests are taken of.
    pub fn to_api_json(&self) -> Vec<u8> {
        match self {
            Object::Service(o) => serde_json::to_vec(o),
            Object::Job(o) => serde_json::to_vec(o),
            Object::Model(o) => serde_json::to_vec(o),
            Object::MeshMember(o) => serde_json::to_vec(o),
            Object::Cluster(o) => serde_json::to_vec(o),
            Object::CedarPolicy(o) => serde_json::to_vec(o),
            Object::SecretProvider(o) => serde_json::to_vec(o),
            Object::ImageProvider(o) => serde_json::to_vec(o),
            Object::TrustPolicy(o) => serde_json::to_vec(o),
            Object::InfraProvider(o) => serde_json::to_vec(o),
            Object::Package(o) => serde_json::to_vec(o),
            Object::ComplianceProfile(o) => serde_json::to_vec(o),
            Object::OidcProvider(o) => serde_json::to_vec(o),
            Object::Quota(o) => serde_json::to_vec(o),
            Object::ClusterBackup(o) => serde_json::to_vec(o),
            Object::Restore(o) => serde_json::to_vec(o),
            Object::CertIssuer(o) => serde_json::to_vec(o),
            Object::DnsProvider(o) => serde_json::to_vec(o),
            Object::Namespace(o) => serde_json::to_vec(o),
            Object::Core(o) => serde_json::to_vec(&*o.value),
        }
        // Typed objects with string keys always serialize.
        .unwrap_or_default()
    }

    /// Whether this is a workload (raises derivation gates and mesh edges, derives objects).
    pub fn is_workload(&self) -> bool {
        self.kind().is_some_and(Kind::is_workload)
    }

    /// The Lattice kind, or `None` for a Namespace or another Kubernetes kind.
    pub fn kind(&self) -> Option<Kind> {
        Some(match self {
            Object::Service(_) => Kind::LatticeService,
            Object::Job(_) => Kind::LatticeJob,
            Object::Model(_) => Kind::LatticeModel,
            Object::MeshMember(_) => Kind::LatticeMeshMember,
            Object::Cluster(_) => Kind::LatticeCluster,
            Object::CedarPolicy(_) => Kind::CedarPolicy,
            Object::SecretProvider(_) => Kind::SecretProvider,
            Object::ImageProvider(_) => Kind::ImageProvider,
            Object::TrustPolicy(_) => Kind::TrustPolicy,
            Object::InfraProvider(_) => Kind::InfraProvider,
            Object::Package(_) => Kind::LatticePackage,
            Object::ComplianceProfile(_) => Kind::LatticeComplianceProfile,
            Object::OidcProvider(_) => Kind::OIDCProvider,
            Object::Quota(_) => Kind::LatticeQuota,
            Object::ClusterBackup(_) => Kind::LatticeClusterBackup,
            Object::Restore(_) => Kind::LatticeRestore,
            Object::CertIssuer(_) => Kind::CertIssuer,
            Object::DnsProvider(_) => Kind::DNSProvider,
            Object::Namespace(_) | Object::Core(_) => return None,
        })
    }

    /// The kind as written in manifests.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Object::Core(o) => o.kind.name(),
            _ => self.kind().map(Kind::name).unwrap_or("Namespace"),
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or("")
    }

    /// The object's namespace, for namespaced kinds (`default` when unset).
    pub fn namespace(&self) -> Option<&str> {
        let namespaced = match self {
            Object::Core(o) => o.kind.namespaced(),
            _ => self.kind().is_some_and(Kind::namespaced),
        };
        namespaced.then(|| self.meta().namespace.as_deref().unwrap_or("default"))
    }
}

/// How a document was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A `lattice.dev/v1alpha1` (or core/v1) object.
    Kubernetes,
    /// A Score workload imported as a `LatticeService`.
    Score,
}

/// One object and where it came from.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub object: Object,
    pub file: Arc<SourceFile>,
    pub doc: Arc<YamlDocument>,
    pub origin: Origin,
}

impl Manifest {
    fn source_pointer<'p>(&self, pointer: &'p str) -> &'p str {
        match self.origin {
            Origin::Kubernetes => pointer,
            Origin::Score => score::score_pointer(pointer),
        }
    }

    /// The span of the value at `pointer` (or its nearest written ancestor).
    pub fn span(&self, pointer: &str) -> Range<usize> {
        self.doc
            .spans(&self.file.text)
            .find(self.source_pointer(pointer))
            .map(|s| s.value.clone())
            .unwrap_or(self.doc.start..self.doc.start)
    }

    /// The span of the key holding the value at `pointer`, else of the value.
    pub fn key_span(&self, pointer: &str) -> Range<usize> {
        match self
            .doc
            .spans(&self.file.text)
            .find(self.source_pointer(pointer))
        {
            Some(s) => s.key.clone().unwrap_or_else(|| s.value.clone()),
            None => self.doc.start..self.doc.start,
        }
    }

    /// The span of `range` (a byte range of the string value at `pointer`) in the file,
    /// exact for plain and quoted one-line scalars and for literal blocks; otherwise the
    /// scalar's start.
    pub fn span_in_scalar(&self, pointer: &str, range: Range<usize>) -> Range<usize> {
        let sp = self.source_pointer(pointer);
        let Some(span) = self.doc.spans(&self.file.text).get(sp) else {
            return self.span(pointer);
        };
        let Some(Value::String(value)) = self.doc.value.pointer(sp) else {
            return span.value.clone();
        };
        locate_in_scalar(&self.file.text, span.value.start, span.style, value, range)
            .unwrap_or(span.value.clone())
    }

    /// `range` of the string at `pointer` in the file, when the file spells that string
    /// literally up to the range (a block scalar does; a quoted string with escapes, as
    /// JSON writes one, does not).
    pub fn exact_in_scalar(&self, pointer: &str, range: Range<usize>) -> Option<Range<usize>> {
        let sp = self.source_pointer(pointer);
        let span = self.doc.spans(&self.file.text).get(sp)?;
        let Some(Value::String(value)) = self.doc.value.pointer(sp) else {
            return None;
        };
        locate_in_scalar(&self.file.text, span.value.start, span.style, value, range)
    }

    /// A finding at the value at `pointer`.
    pub fn error_at(
        &self,
        code: &'static str,
        pointer: &str,
        message: impl Into<String>,
    ) -> Finding {
        Finding::error(code, &self.file, self.span(pointer), message).with_path(self.place(pointer))
    }

    /// A finding at the key of `pointer`.
    pub fn error_at_key(
        &self,
        code: &'static str,
        pointer: &str,
        message: impl Into<String>,
    ) -> Finding {
        Finding::error(code, &self.file, self.key_span(pointer), message)
            .with_path(self.place(pointer))
    }

    /// `pointer` as the user wrote the document (`spec.containers.main`).
    fn place(&self, pointer: &str) -> String {
        human_path(&self.doc.value, self.source_pointer(pointer))
    }

    /// `Kind namespace/name` for messages.
    pub fn describe(&self) -> String {
        match self.object.namespace() {
            Some(ns) => format!("{} {}/{}", self.object.kind_name(), ns, self.object.name()),
            None => format!("{} {}", self.object.kind_name(), self.object.name()),
        }
    }
}

/// Maps a byte range of a scalar's value to the file.
pub fn locate_in_scalar(
    text: &str,
    start: usize,
    style: Option<ScalarStyle>,
    value: &str,
    range: Range<usize>,
) -> Option<Range<usize>> {
    if range.end > value.len() {
        return None;
    }
    match style? {
        ScalarStyle::Plain | ScalarStyle::Quoted => {
            let skip = usize::from(style == Some(ScalarStyle::Quoted));
            let raw = text.get(start + skip..)?;
            // Exact only when the source spells the value literally up to the range.
            raw.get(..range.end)
                .filter(|r| *r == &value[..range.end])
                .map(|_| start + skip + range.start..start + skip + range.end)
        }
        ScalarStyle::Literal => {
            // The scalar's event stands at its first content character, after any leading
            // blank lines; content lines are indented like that first one.
            let first_line = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
            let indent = text[first_line..]
                .lines()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start_matches(' ').len())?;
            let leading = value.len() - value.trim_start_matches('\n').len();
            let before = &value[..range.start];
            let line = before.matches('\n').count().checked_sub(leading)?;
            let col = range.start - before.rfind('\n').map(|i| i + 1).unwrap_or(0);
            let mut line_start = first_line;
            for _ in 0..line {
                line_start += text[line_start..].find('\n')? + 1;
            }
            let s = line_start + indent + col;
            let len = range
                .len()
                .min(value[range.start..].find('\n').unwrap_or(range.len()));
            (s <= text.len()).then(|| s..(s + len.max(1)).min(text.len()))
        }
        ScalarStyle::Folded => None,
    }
}

/// What loading one file produced.
#[derive(Debug, Default)]
pub struct Loaded {
    pub manifests: Vec<Manifest>,
    pub findings: Vec<Finding>,
    /// Objects of other API groups, left alone: (file, apiVersion, kind).
    pub skipped: Vec<(String, String, String)>,
    /// Documents that failed their schema but could still be read, kept so validation can
    /// report their semantic problems too. Never part of a world.
    pub partial: Vec<Manifest>,
}

/// The largest manifest file read.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// Reads bytes as a manifest file: UTF-8 text of at most [`MAX_FILE_BYTES`].
pub fn source_from_bytes(name: &str, bytes: &[u8]) -> Result<Arc<SourceFile>, Finding> {
    // A UTF-8 byte order mark is no content (kubectl drops it too).
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.len() > MAX_FILE_BYTES {
        let empty = SourceFile::new(name, "");
        return Err(Finding::error(
            "lattice::input::too-large",
            &empty,
            0..0,
            format!(
                "file is {} bytes, more than the {MAX_FILE_BYTES} a manifest may be",
                bytes.len()
            ),
        ));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(SourceFile::new(name, text)),
        Err(e) => {
            let valid = String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned();
            let at = valid.len();
            let file = SourceFile::new(name, valid);
            Err(Finding::error(
                "lattice::input::not-utf8",
                &file,
                at..at,
                "file is not UTF-8 text",
            )
            .with_help("manifests and policies are UTF-8 text; is this a binary file?"))
        }
    }
}

/// At most this many findings of one kind are located and shown for one object (schema
/// errors) or one file (YAML errors); the rest are counted in one more finding. Locating and
/// rendering tens of thousands of findings took longer than any admission timeout.
pub const MAX_FINDINGS_PER_OBJECT: usize = 100;

/// Schema errors counted (not shown) in one object before counting stops.
const MAX_COUNTED_FINDINGS: usize = 10_000;

/// Loads every document of a YAML file.
pub fn load_source(file: &Arc<SourceFile>) -> Loaded {
    let mut loaded = Loaded::default();
    let (docs, errors) = yaml::parse_documents(&file.text);
    let total = errors.len();
    for e in errors.into_iter().take(MAX_FINDINGS_PER_OBJECT) {
        let mut f = Finding::error("lattice::yaml", file, e.span, e.message);
        if let Some(h) = e.help {
            f = f.with_help(h);
        }
        loaded.findings.push(f);
    }
    if total > MAX_FINDINGS_PER_OBJECT {
        let at = loaded.findings.last().map_or(0..0, |f| f.span.clone());
        loaded.findings.push(Finding::error(
            "lattice::yaml::more",
            file,
            at,
            format!(
                "and {} more YAML errors in this file (the first {MAX_FINDINGS_PER_OBJECT} are shown)",
                total - MAX_FINDINGS_PER_OBJECT
            ),
        ));
    }
    // A manifest is about a kilobyte: grown a step at a time, the vector was copied over
    // and over.
    loaded.manifests.reserve(docs.len());
    for doc in docs {
        if doc.value.is_null() {
            continue;
        }
        load_document(file, doc, &mut loaded);
    }
    loaded
}

/// Reads one object that arrived already parsed (the JSON of an AdmissionReview): checked
/// exactly as a document of a file, with no text to parse or point into, so findings name
/// their field by path ([`Finding::path`]) and nothing is read twice.
pub fn load_json(name: &str, value: Value) -> Loaded {
    let file = SourceFile::new(name, "");
    let mut loaded = Loaded::default();
    load_document(&file, YamlDocument::from_value(value), &mut loaded);
    loaded
}

fn load_document(file: &Arc<SourceFile>, doc: YamlDocument, loaded: &mut Loaded) {
    // Located only when a finding needs it: locating reads the document again.
    let at_doc = |doc: &YamlDocument| {
        doc.spans(&file.text)
            .get("")
            .map(|s| s.value.clone())
            .unwrap_or(doc.start..doc.start)
    };
    let Value::Object(map) = &doc.value else {
        loaded.findings.push(
            Finding::error(
                "lattice::manifest::not-an-object",
                file,
                at_doc(&doc),
                "expected a Kubernetes object",
            )
            .with_help("a manifest is a mapping with `apiVersion`, `kind`, `metadata` and `spec`"),
        );
        return;
    };
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind_name = map.get("kind").and_then(Value::as_str).unwrap_or("");

    if api_version == score::SCORE_API_VERSION {
        let converted = match score::to_lattice_service(&doc.value) {
            Ok(v) => v,
            Err(e) => {
                let span = doc
                    .spans(&file.text)
                    .find(&e.pointer)
                    .map(|s| s.value.clone())
                    .unwrap_or_else(|| at_doc(&doc));
                loaded
                    .findings
                    .push(Finding::error("lattice::score", file, span, e.message));
                return;
            }
        };
        check_and_build(
            file,
            Arc::new(doc),
            Some(converted),
            Target::Lattice(Kind::LatticeService),
            Origin::Score,
            loaded,
        );
        return;
    }
    if api_version.is_empty() || kind_name.is_empty() {
        let missing = if api_version.is_empty() {
            "apiVersion"
        } else {
            "kind"
        };
        loaded.findings.push(
            Finding::error("lattice::manifest::missing-type", file, at_doc(&doc), format!("document has no `{missing}`"))
                .with_help(format!(
                    "Lattice objects start with `apiVersion: {API_VERSION}` and a `kind`; Score workloads with `apiVersion: {}`",
                    score::SCORE_API_VERSION
                )),
        );
        return;
    }
    if api_version == "v1" && kind_name == "Namespace" {
        check_and_build(
            file,
            Arc::new(doc),
            None,
            Target::Namespace,
            Origin::Kubernetes,
            loaded,
        );
        return;
    }
    if let Some(kind) = core::CoreKind::of(api_version, kind_name) {
        match core::CoreObject::read(kind, doc.value.clone()) {
            Ok(object) => loaded.manifests.push(Manifest {
                object: Object::Core(object),
                file: file.clone(),
                doc: Arc::new(doc),
                origin: Origin::Kubernetes,
            }),
            Err(message) => loaded.findings.push(
                Finding::error(
                    "lattice::manifest::kubernetes",
                    file,
                    at_doc(&doc),
                    format!("this {kind_name} cannot be read as Kubernetes reads it: {message}"),
                )
                .with_help(format!(
                    "the document must decode as a {} {kind_name}, as the API server would",
                    kind.api_version()
                )),
            ),
        }
        return;
    }
    // `group/version`; a bare `lattice.dev` is our group with its version missing.
    let group = match api_version.split_once('/') {
        Some((g, _)) => g,
        None if api_version.contains('.') => api_version,
        None => "",
    };
    if group != GROUP {
        loaded.skipped.push((
            file.name.clone(),
            api_version.to_owned(),
            kind_name.to_owned(),
        ));
        return;
    }
    let span_of = |p: &str| {
        doc.spans(&file.text)
            .find(p)
            .map(|s| s.value.clone())
            .unwrap_or_else(|| at_doc(&doc))
    };
    let Some(kind) = Kind::from_name(kind_name) else {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        let mut f = Finding::error(
            "lattice::manifest::unknown-kind",
            file,
            span_of("/kind"),
            format!("unknown kind `{kind_name}` in {GROUP}"),
        );
        f = match suggest(kind_name, &names) {
            Some(s) => f.with_help(format!("did you mean `{s}`?")),
            None => f.with_help(format!("Lattice kinds are {}", names.join(", "))),
        };
        loaded.findings.push(f);
        return;
    };
    if api_version != API_VERSION {
        loaded.findings.push(
            Finding::error(
                "lattice::manifest::unknown-version",
                file,
                span_of("/apiVersion"),
                format!("unsupported apiVersion `{api_version}`"),
            )
            .with_help(format!("use `apiVersion: {API_VERSION}`")),
        );
        return;
    }
    check_and_build(
        file,
        Arc::new(doc),
        None,
        Target::Lattice(kind),
        Origin::Kubernetes,
        loaded,
    );
}

/// What a document is checked as.
#[derive(Clone, Copy)]
enum Target {
    Lattice(Kind),
    /// A core/v1 Namespace.
    Namespace,
}

impl Target {
    fn schema(self) -> &'static Value {
        match self {
            Target::Lattice(k) => json_schema(k),
            Target::Namespace => namespace_json_schema(),
        }
    }

    fn validator(self) -> &'static jsonschema::Validator {
        static VALIDATORS: OnceLock<HashMap<Option<Kind>, jsonschema::Validator>> = OnceLock::new();
        let all = VALIDATORS.get_or_init(|| {
            let targets = Kind::ALL
                .iter()
                .map(|k| Target::Lattice(*k))
                .chain([Target::Namespace]);
            targets
                .map(|t| {
                    let v = jsonschema::validator_for(t.schema())
                        .expect("generated schemas compile (tested)");
                    (t.kind(), v)
                })
                .collect()
        });
        &all[&self.kind()]
    }

    fn kind(self) -> Option<Kind> {
        match self {
            Target::Lattice(k) => Some(k),
            Target::Namespace => None,
        }
    }

    fn build_from_slice(self, json: &[u8]) -> Result<Object, serde_json::Error> {
        let Target::Lattice(kind) = self else {
            return serde_json::from_slice(json).map(Object::Namespace);
        };
        let mut d = serde_json::Deserializer::from_slice(json);
        let object = match kind {
            Kind::LatticeService => Deserialize::deserialize(&mut d).map(Object::Service),
            Kind::LatticeJob => Deserialize::deserialize(&mut d).map(Object::Job),
            Kind::LatticeModel => Deserialize::deserialize(&mut d).map(Object::Model),
            Kind::LatticeMeshMember => Deserialize::deserialize(&mut d).map(Object::MeshMember),
            Kind::LatticeCluster => Deserialize::deserialize(&mut d).map(Object::Cluster),
            Kind::CedarPolicy => Deserialize::deserialize(&mut d).map(Object::CedarPolicy),
            Kind::SecretProvider => Deserialize::deserialize(&mut d).map(Object::SecretProvider),
            Kind::ImageProvider => Deserialize::deserialize(&mut d).map(Object::ImageProvider),
            Kind::TrustPolicy => Deserialize::deserialize(&mut d).map(Object::TrustPolicy),
            Kind::InfraProvider => Deserialize::deserialize(&mut d).map(Object::InfraProvider),
            Kind::LatticePackage => Deserialize::deserialize(&mut d).map(Object::Package),
            Kind::LatticeComplianceProfile => {
                Deserialize::deserialize(&mut d).map(Object::ComplianceProfile)
            }
            Kind::OIDCProvider => Deserialize::deserialize(&mut d).map(Object::OidcProvider),
            Kind::LatticeQuota => Deserialize::deserialize(&mut d).map(Object::Quota),
            Kind::LatticeClusterBackup => {
                Deserialize::deserialize(&mut d).map(Object::ClusterBackup)
            }
            Kind::LatticeRestore => Deserialize::deserialize(&mut d).map(Object::Restore),
            Kind::CertIssuer => Deserialize::deserialize(&mut d).map(Object::CertIssuer),
            Kind::DNSProvider => Deserialize::deserialize(&mut d).map(Object::DnsProvider),
        }?;
        d.end()?;
        Ok(object)
    }

    fn build(self, value: &Value) -> Result<Object, serde_json::Error> {
        let Target::Lattice(kind) = self else {
            return typed(value).map(Object::Namespace);
        };
        match kind {
            Kind::LatticeService => typed(value).map(Object::Service),
            Kind::LatticeJob => typed(value).map(Object::Job),
            Kind::LatticeModel => typed(value).map(Object::Model),
            Kind::LatticeMeshMember => typed(value).map(Object::MeshMember),
            Kind::LatticeCluster => typed(value).map(Object::Cluster),
            Kind::CedarPolicy => typed(value).map(Object::CedarPolicy),
            Kind::SecretProvider => typed(value).map(Object::SecretProvider),
            Kind::ImageProvider => typed(value).map(Object::ImageProvider),
            Kind::TrustPolicy => typed(value).map(Object::TrustPolicy),
            Kind::InfraProvider => typed(value).map(Object::InfraProvider),
            Kind::LatticePackage => typed(value).map(Object::Package),
            Kind::LatticeComplianceProfile => typed(value).map(Object::ComplianceProfile),
            Kind::OIDCProvider => typed(value).map(Object::OidcProvider),
            Kind::LatticeQuota => typed(value).map(Object::Quota),
            Kind::LatticeClusterBackup => typed(value).map(Object::ClusterBackup),
            Kind::LatticeRestore => typed(value).map(Object::Restore),
            Kind::CertIssuer => typed(value).map(Object::CertIssuer),
            Kind::DNSProvider => typed(value).map(Object::DnsProvider),
        }
    }
}

/// Checks `doc` against `target`'s schema and builds its object: the document as written,
/// or `converted` from it (a Score workload). It is read in place, never copied: at 10,000
/// documents a copy of each was a fifth of a load's allocations.
fn check_and_build(
    file: &Arc<SourceFile>,
    doc: Arc<YamlDocument>,
    converted: Option<Value>,
    target: Target,
    origin: Origin,
    loaded: &mut Loaded,
) {
    let value = converted.as_ref().unwrap_or(&doc.value);
    let object = target.build(value);
    let manifest = |object: Object| Manifest {
        object,
        file: file.clone(),
        doc: doc.clone(),
        origin,
    };
    // Findings are located through a manifest; until the object is typed, a stand-in
    // holds the document.
    let locator = manifest(Object::Namespace(Namespace::default()));
    let mut errors: Vec<Finding> = Vec::new();
    // Most documents are valid: the yes/no check is several times cheaper than collecting
    // errors, which runs only when there are some.
    if !target.validator().is_valid(value) {
        // Located one by one (each reads the document again): only the first ones are,
        // the rest are counted.
        let mut more = 0usize;
        let mut counted_all = true;
        for e in target.validator().iter_errors(value) {
            // Past a point, even counting costs more than it tells.
            if more >= MAX_COUNTED_FINDINGS {
                counted_all = false;
                break;
            }
            // One error may stand for many findings (every unknown field of a mapping).
            let budget = MAX_FINDINGS_PER_OBJECT.saturating_sub(errors.len());
            let (found, skipped) = schema_finding(&locator, value, target.schema(), &e, budget);
            errors.extend(found);
            more += skipped;
        }
        if more > 0 {
            let count = if counted_all {
                format!("{more}")
            } else {
                format!("more than {more}")
            };
            errors.push(
                locator
                    .error_at(
                        "lattice::schema::more",
                        "",
                        format!(
                            "and {count} more schema errors in this object (the first {MAX_FINDINGS_PER_OBJECT} are shown)"
                        ),
                    )
                    .with_help("fix the ones shown and validate again"),
            );
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|f| (f.span.start, f.message.clone()));
        errors.dedup_by(|a, b| a.span == b.span && a.message == b.message);
        loaded.findings.extend(errors);
        // Still readable (e.g. only unknown fields): keep it for the semantic rules, so one
        // run reports every problem, but never as a loaded object.
        if let Ok(object) = object {
            loaded.partial.push(manifest(object));
        }
        return;
    }
    match object {
        Ok(object) => loaded.manifests.push(manifest(object)),
        // Schema-valid input that serde still rejects is a bug in the schema; report it
        // rather than lose the document.
        Err(e) => loaded.findings.push(locator.error_at(
            "lattice::schema",
            "",
            format!("cannot read the document: {e}"),
        )),
    }
}

fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, serde_json::Error> {
    T::deserialize(value)
}

/// Turns one JSON Schema error into at most `budget` findings located in the source, and
/// the number of findings past the budget (counted, never located: locating and suggesting
/// cost per finding, and 380,000 unknown fields once took a second).
fn schema_finding(
    m: &Manifest,
    value: &Value,
    schema: &Value,
    e: &jsonschema::ValidationError<'_>,
    budget: usize,
) -> (Vec<Finding>, usize) {
    let total = match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected.len(),
        _ => 1,
    };
    if budget == 0 {
        return (Vec::new(), total);
    }
    let found = schema_findings(m, value, schema, e, budget);
    let skipped = total.saturating_sub(found.len());
    (found, skipped)
}

fn schema_findings(
    m: &Manifest,
    value: &Value,
    schema: &Value,
    e: &jsonschema::ValidationError<'_>,
    budget: usize,
) -> Vec<Finding> {
    let path = e.instance_path().as_str().to_owned();
    // Name the place as the user wrote it (a Score document has no `spec`).
    let place = match m.origin {
        Origin::Kubernetes => human_path(value, &path),
        Origin::Score => human_path(&m.doc.value, score::score_pointer(&path)),
    };
    let within = if place.is_empty() {
        String::new()
    } else {
        format!(" in `{place}`")
    };
    match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let known = known_properties(schema, e.schema_path().as_str());
            unexpected
                .iter()
                .take(budget)
                .map(|field| {
                    let f = m.error_at_key(
                        "lattice::schema::unknown-field",
                        &push_pointer(&path, field),
                        format!("unknown field `{field}`{within}"),
                    );
                    match suggest(field, &known) {
                        Some(s) => f
                            .with_help(format!("did you mean `{s}`?"))
                            .with_label("not a field here"),
                        None if known.is_empty() => f.with_label("not a field here"),
                        None => f
                            .with_help(format!("fields here: {}", known.join(", ")))
                            .with_label("not a field here"),
                    }
                })
                .collect()
        }
        ValidationErrorKind::Required { property } => {
            let p = property.as_str().unwrap_or_default();
            vec![
                m.error_at_key(
                    "lattice::schema::required",
                    &path,
                    format!("missing required field `{p}`{within}"),
                )
                .with_label(format!("needs `{p}`")),
            ]
        }
        ValidationErrorKind::Type { kind: expected } => {
            let found = json_type(e.instance());
            vec![
                m.error_at(
                    "lattice::schema::type",
                    &path,
                    format!(
                        "`{place}` must be {}, not {found}",
                        type_name(&format!("{expected:?}"))
                    ),
                )
                .with_label(format!("this is {found}")),
            ]
        }
        ValidationErrorKind::Enum { options } => {
            let allowed: Vec<String> = options
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| !o.is_null())
                .map(|o| o.to_string())
                .collect();
            vec![
                m.error_at(
                    "lattice::schema::enum",
                    &path,
                    format!("`{place}` must be one of {}", allowed.join(", ")),
                )
                .with_label("not an allowed value"),
            ]
        }
        ValidationErrorKind::Pattern { pattern } => vec![
            m.error_at(
                "lattice::schema::pattern",
                &path,
                format!("`{place}` is not in the required format"),
            )
            .with_label("does not match")
            .with_help(format!("it must match the pattern `{pattern}`")),
        ],
        _ => vec![m.error_at("lattice::schema", &path, format!("`{place}`: {e}"))],
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// "Single(Integer)" / "Multiple(…)" → readable.
fn type_name(debug: &str) -> String {
    let lower = debug.to_ascii_lowercase();
    let mut names = Vec::new();
    for (word, name) in [
        ("integer", "an integer"),
        ("number", "a number"),
        ("string", "a string"),
        ("boolean", "a boolean"),
        ("array", "a list"),
        ("object", "a mapping"),
    ] {
        if lower.contains(word) {
            names.push(name);
        }
    }
    if names.is_empty() {
        debug.to_owned()
    } else {
        names.join(" or ")
    }
}

/// The property names of the object schema whose `additionalProperties` failed.
fn known_properties(schema: &Value, schema_path: &str) -> Vec<String> {
    let parent = schema_path
        .strip_suffix("/additionalProperties")
        .unwrap_or(schema_path);
    schema
        .pointer(parent)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The closest candidate to a misspelling, if one is close enough.
pub fn suggest<S: AsRef<str>>(word: &str, candidates: &[S]) -> Option<String> {
    candidates
        .iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(
                    &word.to_ascii_lowercase(),
                    &c.as_ref().to_ascii_lowercase(),
                ),
                c.as_ref(),
            )
        })
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

/// `/spec/containers/main/volumes/~1data` → `spec.containers.main.volumes["/data"]`.
pub fn human_path(value: &Value, pointer: &str) -> String {
    let mut out = String::new();
    let mut current = Some(value);
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        match current {
            Some(Value::Array(a)) => {
                out.push_str(&format!("[{seg}]"));
                current = seg.parse::<usize>().ok().and_then(|i| a.get(i));
            }
            other => {
                let plain = !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if plain {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&seg);
                } else {
                    out.push_str(&format!("[{seg:?}]"));
                }
                current = other.and_then(|v| v.get(&seg));
            }
        }
    }
    out
}
