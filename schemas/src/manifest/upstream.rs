//! Migrating manifests written for upstream Lattice (`evan-hines-js/lattice`, its
//! `lattice.dev/v1alpha1` as defined in `crates/lattice-crd`) to this project's shapes.
//!
//! Both projects use the same group and version, so a document is told apart by its shape
//! (a LatticeService with `spec.workload`, a LatticeCluster whose `nodes.controlPlane` is a
//! mapping, …); `lattice-policy migrate` first checks whether a document already is in this
//! project's shape and leaves it alone when it is.
//!
//! Every transformation takes the keys it knows out of the upstream mapping and reports what
//! is left ([`Cx::rest`]), so a field is carried over, rewritten with a note, or reported as
//! dropped, and never lost in silence. Each [`Note`] points into the upstream document, so it
//! can be shown at its file and line. Where the meaning is the same and nothing is ambiguous,
//! this project reads the upstream form directly instead (a SecretProvider's External
//! Secrets-shaped `provider`): such fields pass through unchanged.

use serde_json::{Map, Value, json};

use crate::manifest::yaml::push_pointer;

/// What happened to one upstream field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Carried over in another form (the note says which); the meaning is kept.
    Rewritten,
    /// Not carried over: this project has no equivalent, or the value cannot be expressed.
    Dropped,
    /// The whole document is not carried over.
    NotCarried,
}

impl Change {
    pub fn label(self) -> &'static str {
        match self {
            Change::Rewritten => "rewritten",
            Change::Dropped => "dropped",
            Change::NotCarried => "not carried over",
        }
    }
}

/// One field not carried over as it was, at a JSON pointer into the upstream document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub pointer: String,
    pub change: Change,
    pub reason: String,
}

/// A migrated document: `None` when nothing of it can be carried over.
#[derive(Clone, Debug, Default)]
pub struct Migration {
    pub value: Option<Value>,
    pub notes: Vec<Note>,
}

/// Kinds upstream has and this project does not, with what to use instead.
const UPSTREAM_ONLY: &[(&str, &str)] = &[
    (
        "BackupStore",
        "write the store into each LatticeClusterBackup's `storage` (this project derives one Velero BackupStorageLocation per backup)",
    ),
    (
        "LatticeClusterRoutes",
        "a route table the upstream operator writes; nothing to migrate",
    ),
];

/// Whether `kind` is an upstream kind this project does not have.
pub fn upstream_only(kind: &str) -> bool {
    UPSTREAM_ONLY.iter().any(|(k, _)| *k == kind)
}

/// The scope of this project's kinds that upstream keeps in a namespace.
const CLUSTER_SCOPED: &[&str] = &[
    "LatticeCluster",
    "SecretProvider",
    "ImageProvider",
    "InfraProvider",
    "TrustPolicy",
    "LatticeComplianceProfile",
    "OIDCProvider",
    "LatticeClusterBackup",
    "LatticeRestore",
    "CertIssuer",
    "DNSProvider",
];

/// Migrates one upstream document.
pub fn migrate(doc: &Value) -> Migration {
    let mut cx = Cx::default();
    let Some(map) = doc.as_object() else {
        cx.note("", Change::NotCarried, "not a Kubernetes object");
        return cx.done(None);
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    if let Some((_, instead)) = UPSTREAM_ONLY.iter().find(|(k, _)| *k == kind) {
        cx.note(
            "",
            Change::NotCarried,
            format!("{kind} is an upstream kind this project does not have: {instead}"),
        );
        return cx.done(None);
    }
    if kind == "LatticeQuota" {
        // Reached only for upstream's shape: one of this project's loads as it is.
        cx.note(
            "/spec",
            Change::NotCarried,
            "upstream's quota limits a Cedar principal (`soft`, `hard`, `maxPerWorkload`); this project's LatticeQuota limits the workloads of a namespace, a group of namespaces or one workload (`namespace`, `namespaceSelector` or `service`, with `limits`), decided by Cedar's ConsumeQuota: write one per scope",
        );
        return cx.done(None);
    }
    let mut map = map.clone();
    let mut out = Map::new();
    out.insert(
        "apiVersion".into(),
        map.remove("apiVersion").unwrap_or(json!("")),
    );
    out.insert("kind".into(), map.remove("kind").unwrap_or(json!("")));
    if let Some(Value::Object(mut meta)) = map.remove("metadata") {
        if CLUSTER_SCOPED.contains(&kind)
            && let Some(ns) = meta.remove("namespace")
        {
            cx.note(
                "/metadata/namespace",
                Change::Dropped,
                format!(
                    "{kind} is cluster-scoped here (upstream keeps it in namespace {ns}); two of them with one name in different namespaces would collide"
                ),
            );
        }
        out.insert("metadata".into(), Value::Object(meta));
    }
    if map.remove("status").is_some() {
        cx.note(
            "/status",
            Change::Dropped,
            "status is written by the operator, not migrated",
        );
    }
    let spec = match map.remove("spec") {
        Some(Value::Object(spec)) => spec,
        _ => Map::new(),
    };
    cx.rest(map, "", "");
    let spec = match kind {
        "LatticeService" => service(&mut cx, spec),
        "LatticeJob" => job(&mut cx, spec),
        "LatticeModel" => match model(&mut cx, spec) {
            Some(s) => s,
            None => return cx.done(None),
        },
        "LatticeCluster" => match cluster(&mut cx, spec) {
            Some(s) => s,
            None => return cx.done(None),
        },
        "LatticeMeshMember" => mesh_member(&mut cx, spec),
        "SecretProvider" => secret_provider(&mut cx, spec),
        "ImageProvider" => image_provider(&mut cx, spec),
        "InfraProvider" => match infra_provider(&mut cx, spec) {
            Some(s) => s,
            None => return cx.done(None),
        },
        "CedarPolicy" => {
            let name = out
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("policy")
                .to_owned();
            cedar_policy(&mut cx, spec, &name)
        }
        "LatticePackage" => package(&mut cx, spec),
        "LatticeClusterBackup" => cluster_backup(&mut cx, spec),
        "CertIssuer" | "DNSProvider" => issuer_or_dns(&mut cx, spec),
        // OIDCProvider's and LatticeRestore's shapes are upstream's; shape is upstream's; TrustPolicy and LatticeComplianceProfile exist
        // only here: nothing to migrate.
        _ => spec,
    };
    out.insert("spec".into(), Value::Object(spec));
    cx.done(Some(Value::Object(out)))
}

/// The notes of one migration, and the reasons for fields that need more than "no
/// equivalent".
#[derive(Default)]
struct Cx {
    notes: Vec<Note>,
    /// Set when the document cannot be carried over at all (with a `NotCarried` note).
    whole: bool,
}

impl Cx {
    fn note(&mut self, at: &str, change: Change, reason: impl Into<String>) {
        self.notes.push(Note {
            pointer: at.to_owned(),
            change,
            reason: reason.into(),
        });
    }

    fn dropped(&mut self, at: &str, reason: impl Into<String>) {
        self.note(at, Change::Dropped, reason);
    }

    fn rewritten(&mut self, at: &str, reason: impl Into<String>) {
        self.note(at, Change::Rewritten, reason);
    }

    /// Reports every key left in `map` (at `at`) as dropped, with its known reason or
    /// `fallback`.
    fn rest(&mut self, map: Map<String, Value>, at: &str, fallback: &str) {
        for (key, value) in map {
            let reason = reason_for(&key, &value).unwrap_or(if fallback.is_empty() {
                "no equivalent in this project"
            } else {
                fallback
            });
            self.dropped(&push_pointer(at, &key), reason);
        }
    }

    fn done(mut self, value: Option<Value>) -> Migration {
        self.notes.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        Migration {
            value: value.filter(|_| !self.whole),
            notes: self.notes,
        }
    }
}

/// Why a well-known upstream field is dropped.
fn reason_for(key: &str, value: &Value) -> Option<&'static str> {
    Some(match key {
        "automountServiceAccountToken" => {
            "this project never mounts the service account token into workload pods"
        }
        "workingDir" => "containers run in their image's working directory here",
        "backup" => "this project has no per-workload Velero hooks",
        "advertise" => "cross-cluster service advertisement is not part of this project yet",
        "topology" => "this project places pods without network-topology constraints",
        "priorityClassName" => "workloads run under the namespace's default priority here",
        "concurrencyPolicy" => {
            "this project's cron jobs use Volcano's default (Allow): overlapping runs are allowed"
        }
        "suspend" if value == &Value::Bool(true) => {
            "this project has no suspended cron jobs: the migrated job runs on its schedule; remove its schedule to stop it"
        }
        "suspend" => "suspend: false is the default here",
        "successfulJobsHistoryLimit" | "failedJobsHistoryLimit" => {
            "this project keeps Volcano's default job history"
        }
        "startingDeadlineSeconds" => "missed cron runs follow Volcano's default here",
        "policies" => "Volcano lifecycle policies are not configurable here",
        "training" => {
            "distributed-training wiring (framework, coordinator, NCCL) is not derived here; set the variables in the containers"
        }
        "observability" => "metrics mappings are configured only on LatticeServices here",
        "timeoutSeconds" | "successThreshold" => "probes use the Kubernetes defaults here",
        "priority" => {
            "Cedar has no policy order: a forbid always overrides a permit, whatever the priority"
        }
        "latticeImage" => {
            "the operator image comes from the installation, not from each cluster's spec"
        }
        "registryMirrors" => {
            "this project configures no registry mirrors: an air-gapped cluster must mirror images itself"
        }
        "networkTopology" | "issuers" | "cascadeUpgrade" | "certPolicy" | "proxyPort" => {
            "no equivalent in this project's LatticeCluster"
        }
        "gpu" => "GPU support follows from the workloads' `gpu` resources here",
        "taints" => {
            "this project sets no taints on worker pools: pods that relied on them schedule anywhere"
        }
        "placement" | "rootVolume" | "displayName" | "capacity" => {
            "worker pools here carry replicas, bounds, an instance type name and labels only"
        }
        "credentialData" => "templated credentials are not derived here",
        "labels" => "provider labels are not carried over",
        "imagePullSecrets" => "ImageProvider references have no equivalent here",
        _ => return None,
    })
}

fn take_map(map: &mut Map<String, Value>, key: &str) -> Option<Map<String, Value>> {
    match map.remove(key) {
        Some(Value::Object(m)) => Some(m),
        Some(other) => {
            // A value of the wrong shape is kept where it was, so the caller reports it.
            map.insert(key.to_owned(), other);
            None
        }
        None => None,
    }
}

fn put(out: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        out.insert(key.to_owned(), v);
    }
}

/// `${secret.R.K}` (upstream's secret placeholder) as `${resources.R.K}`.
fn placeholders(cx: &mut Cx, text: &str, at: &str) -> String {
    if !text.contains("${secret.") {
        return text.to_owned();
    }
    cx.rewritten(
        at,
        "`${secret.NAME.KEY}` is written `${resources.NAME.KEY}` here",
    );
    text.replace("${secret.", "${resources.")
}

// ---------------------------------------------------------------------------------------
// Workload pieces
// ---------------------------------------------------------------------------------------

/// The parts of an upstream workload: the Score core (`containers`, `resources`,
/// `service`) and the runtime fields (`sidecars`, `sysctls`, …), each with where it was.
struct Workload<'a> {
    core: Map<String, Value>,
    core_at: &'a str,
    runtime: Map<String, Value>,
    runtime_at: &'a str,
}

/// This project's workload body (Score core and runtime fields side by side).
fn workload_body(cx: &mut Cx, w: Workload<'_>) -> Map<String, Value> {
    let Workload {
        mut core,
        core_at,
        mut runtime,
        runtime_at,
    } = w;
    let mut body = Map::new();
    let resources_at = push_pointer(core_at, "resources");
    let resources = take_map(&mut core, "resources")
        .map(|r| resources_of(cx, r, &resources_at))
        .unwrap_or_default();
    let containers_at = push_pointer(core_at, "containers");
    let mut containers = Map::new();
    for (name, c) in take_map(&mut core, "containers").unwrap_or_default() {
        let at = push_pointer(&containers_at, &name);
        if let Value::Object(c) = c {
            let (c, _) = container(cx, c, &at, &resources, false);
            containers.insert(name, c);
        } else {
            cx.dropped(&at, "a container is a mapping");
        }
    }
    let sidecars_at = push_pointer(runtime_at, "sidecars");
    let mut sidecars = Map::new();
    let mut inits = Vec::new();
    for (name, c) in take_map(&mut runtime, "sidecars").unwrap_or_default() {
        let at = push_pointer(&sidecars_at, &name);
        if let Value::Object(c) = c {
            let (c, init) = container(cx, c, &at, &resources, true);
            if init {
                inits.push(name.clone());
            }
            sidecars.insert(name, c);
        } else {
            cx.dropped(&at, "a sidecar is a mapping");
        }
    }
    // An upstream init sidecar runs to completion before the main containers start: here
    // that is each main container's Score `before`.
    for c in containers.values_mut() {
        for init in &inits {
            c["before"][init.as_str()] = json!({"ready": "complete"});
        }
    }
    body.insert("containers".into(), Value::Object(containers));
    if !sidecars.is_empty() {
        body.insert("sidecars".into(), Value::Object(sidecars));
    }
    if let Some(service) = take_map(&mut core, "service") {
        let at = push_pointer(core_at, "service");
        if let Some(s) = service_ports(cx, service, &at) {
            body.insert("service".into(), s);
        }
    }
    let pull_at = push_pointer(runtime_at, "imagePullSecrets");
    if let Some(Value::Array(names)) = runtime.remove("imagePullSecrets") {
        let mut kept = Vec::new();
        for (i, n) in names.into_iter().enumerate() {
            let declared = n
                .as_str()
                .and_then(|n| resources.get(n))
                .is_some_and(|r| r["type"] == "secret");
            if declared {
                kept.push(n);
            } else {
                cx.dropped(
                    &push_pointer(&pull_at, &i.to_string()),
                    format!(
                        "{n} names an ImageProvider upstream; here a pull secret is a `secret` resource of the workload (type kubernetes.io/dockerconfigjson) named in `imagePullSecrets`"
                    ),
                );
            }
        }
        if !kept.is_empty() {
            body.insert("imagePullSecrets".into(), Value::Array(kept));
        }
    }
    if !resources.is_empty() {
        body.insert("resources".into(), Value::Object(resources));
    }
    for key in ["sysctls", "hostNetwork", "shareProcessNamespace"] {
        put(&mut body, key, runtime.remove(key));
    }
    cx.rest(core, core_at, "");
    cx.rest(runtime, runtime_at, "");
    body
}

/// A container or sidecar; for a sidecar, whether upstream ran it as an init container.
fn container(
    cx: &mut Cx,
    mut c: Map<String, Value>,
    at: &str,
    resources: &Map<String, Value>,
    sidecar: bool,
) -> (Value, bool) {
    let mut out = Map::new();
    for key in ["image", "command", "args"] {
        put(&mut out, key, c.remove(key));
    }
    if out.get("image").and_then(Value::as_str) == Some(".") {
        cx.note(
            &push_pointer(at, "image"),
            Change::NotCarried,
            "`.` (an image supplied at deploy time) has no meaning here: set the image reference and migrate again",
        );
        cx.whole = true;
    }
    let mut variables = take_map(&mut c, "variables").unwrap_or_default();
    let vars_at = push_pointer(at, "variables");
    for (k, v) in variables.iter_mut() {
        if let Value::String(s) = v {
            *s = placeholders(cx, s, &push_pointer(&vars_at, k));
        }
    }
    // `envFrom: [R]` puts every key of secret resource R in the environment; here each
    // variable is named, which needs R's keys.
    if let Some(Value::Array(from)) = c.remove("envFrom") {
        for (i, r) in from.iter().enumerate() {
            let at_i = push_pointer(&push_pointer(at, "envFrom"), &i.to_string());
            let name = r.as_str().unwrap_or_default();
            let keys: Vec<String> = resources
                .get(name)
                .and_then(|r| r.pointer("/params/keys"))
                .and_then(Value::as_array)
                .map(|k| {
                    k.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if keys.is_empty() {
                cx.dropped(
                    &at_i,
                    format!(
                        "envFrom {name}: here every variable is named (`VAR: ${{resources.{name}.KEY}}`), and {name} lists no `params.keys` to name them by"
                    ),
                );
            } else {
                for k in &keys {
                    variables
                        .entry(k.clone())
                        .or_insert_with(|| json!(format!("${{resources.{name}.{k}}}")));
                }
                cx.rewritten(
                    &at_i,
                    format!(
                        "envFrom {name} is written as one variable per key: {}",
                        keys.join(", ")
                    ),
                );
            }
        }
    }
    if !variables.is_empty() {
        out.insert("variables".into(), Value::Object(variables));
    }
    if let Some(files) = take_map(&mut c, "files") {
        let files_at = push_pointer(at, "files");
        let mut kept = Map::new();
        for (path, f) in files {
            let f_at = push_pointer(&files_at, &path);
            let Value::Object(mut f) = f else {
                cx.dropped(&f_at, "a file is a mapping");
                continue;
            };
            let reverse = f.remove("reverseExpand") == Some(Value::Bool(true));
            if let Some(Value::String(content)) = f.get_mut("content") {
                let mut text = placeholders(cx, content, &push_pointer(&f_at, "content"));
                if reverse {
                    // Upstream: `${X}` literal, `$${X}` expands. Here: the other way round.
                    text = text
                        .replace("$${", "\u{0}")
                        .replace("${", "$${")
                        .replace('\u{0}', "${");
                    cx.rewritten(
                        &push_pointer(&f_at, "reverseExpand"),
                        "reverseExpand is written out: `$${X}` expands, a bare `${X}` is escaped as `$${X}`",
                    );
                }
                *content = text;
            } else if reverse {
                cx.dropped(
                    &push_pointer(&f_at, "reverseExpand"),
                    "reverseExpand applies only to inline content",
                );
            }
            let mut file = Map::new();
            for key in ["content", "binaryContent", "source", "mode", "noExpand"] {
                put(&mut file, key, f.remove(key));
            }
            cx.rest(f, &f_at, "");
            kept.insert(path, Value::Object(file));
        }
        if !kept.is_empty() {
            out.insert("files".into(), Value::Object(kept));
        }
    }
    if let Some(volumes) = take_map(&mut c, "volumes") {
        let v_at = push_pointer(at, "volumes");
        let mut kept = Map::new();
        for (path, v) in volumes {
            let at_p = push_pointer(&v_at, &path);
            let Value::Object(mut v) = v else {
                cx.dropped(&at_p, "a volume mount is a mapping");
                continue;
            };
            let Some(Value::String(source)) = v.remove("source") else {
                cx.dropped(
                    &at_p,
                    if path == "/tmp" {
                        "a mount with no source is an emptyDir upstream; here every container already has a writable /tmp"
                    } else {
                        "a mount with no source is an emptyDir upstream; here a volume is a `volume` resource (persistent) named in `source`"
                    },
                );
                continue;
            };
            let mut mount = Map::new();
            mount.insert(
                "source".into(),
                json!(placeholders(cx, &source, &push_pointer(&at_p, "source"))),
            );
            for key in ["path", "readOnly"] {
                put(&mut mount, key, v.remove(key));
            }
            cx.rest(
                v,
                &at_p,
                "emptyDir settings apply only to mounts with no source",
            );
            kept.insert(path, Value::Object(mount));
        }
        if !kept.is_empty() {
            out.insert("volumes".into(), Value::Object(kept));
        }
    }
    put(&mut out, "resources", c.remove("resources"));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = take_map(&mut c, probe) {
            let p_at = push_pointer(at, probe);
            out.insert(probe.into(), probe_of(cx, p, &p_at));
        }
    }
    if let Some(s) = take_map(&mut c, "security") {
        out.insert(
            "security".into(),
            security(cx, s, &push_pointer(at, "security")),
        );
    }
    let init = sidecar && c.remove("init") == Some(Value::Bool(true));
    if init {
        cx.rewritten(
            &push_pointer(at, "init"),
            "an init sidecar: every main container waits for it to complete (Score `before`)",
        );
    }
    cx.rest(c, at, "");
    (Value::Object(out), init)
}

fn probe_of(cx: &mut Cx, mut p: Map<String, Value>, at: &str) -> Value {
    let mut out = Map::new();
    for key in [
        "httpGet",
        "exec",
        "initialDelaySeconds",
        "periodSeconds",
        "failureThreshold",
    ] {
        put(&mut out, key, p.remove(key));
    }
    if let Some(scheme) = out
        .get_mut("httpGet")
        .and_then(|h| h.get_mut("scheme"))
        .filter(|s| s.is_string())
    {
        *scheme = json!(scheme.as_str().unwrap_or_default().to_ascii_uppercase());
    }
    cx.rest(p, at, "");
    Value::Object(out)
}

fn security(cx: &mut Cx, mut s: Map<String, Value>, at: &str) -> Value {
    let mut out = Map::new();
    for key in [
        "capabilities",
        "privileged",
        "readOnlyRootFilesystem",
        "runAsNonRoot",
        "runAsUser",
        "runAsGroup",
        "allowPrivilegeEscalation",
    ] {
        put(&mut out, key, s.remove(key));
    }
    for (profile, local) in [
        ("seccompProfile", "seccompLocalhostProfile"),
        ("apparmorProfile", "apparmorLocalhostProfile"),
    ] {
        let p = s.remove(profile);
        let l = s.remove(local);
        match (
            p.as_ref().and_then(Value::as_str),
            l.as_ref().and_then(Value::as_str),
        ) {
            (Some("Localhost"), Some(path)) => {
                out.insert(profile.into(), json!(format!("Localhost/{path}")));
                cx.rewritten(
                    &push_pointer(at, local),
                    format!("written `{profile}: Localhost/{path}`"),
                );
            }
            (Some(_), _) => {
                put(&mut out, profile, p);
                if l.is_some() {
                    cx.dropped(
                        &push_pointer(at, local),
                        format!("used only with `{profile}: Localhost`"),
                    );
                }
            }
            (None, Some(_)) => cx.dropped(
                &push_pointer(at, local),
                format!("used only with `{profile}: Localhost`"),
            ),
            (None, None) => {}
        }
    }
    if let Some(drop) = s.remove("dropCapabilities") {
        let all = drop
            .as_array()
            .is_some_and(|d| d.len() == 1 && d[0] == "ALL");
        if !all {
            cx.dropped(
                &push_pointer(at, "dropCapabilities"),
                "every container drops ALL capabilities here and adds back only `capabilities`: it runs with fewer than upstream granted",
            );
        }
    }
    if let Some(b) = s.remove("allowedBinaries") {
        let any = b.as_array().is_some_and(|b| b.iter().any(|x| x == "*"));
        cx.dropped(
            &push_pointer(at, "allowedBinaries"),
            if any {
                "`*`: here runtime enforcement is switched off for a whole service with `observability.runtimeEnforcement: false`"
            } else {
                "here runtime enforcement allows exactly the container's command and its exec probes; other binaries are killed"
            },
        );
    }
    cx.rest(s, at, "");
    Value::Object(out)
}

fn service_ports(cx: &mut Cx, mut s: Map<String, Value>, at: &str) -> Option<Value> {
    let mut out = Map::new();
    if let Some(mut ports) = take_map(&mut s, "ports") {
        for (name, p) in ports.iter_mut() {
            if let Some(proto) = p.get_mut("protocol").filter(|p| p.is_string()) {
                let upper = proto.as_str().unwrap_or_default().to_ascii_uppercase();
                if upper == "TCP" || upper == "UDP" {
                    *proto = json!(upper);
                } else {
                    cx.dropped(
                        &push_pointer(&push_pointer(&push_pointer(at, "ports"), name), "protocol"),
                        format!("protocol {upper}: service ports here are TCP or UDP; TCP is the default"),
                    );
                    if let Some(o) = p.as_object_mut() {
                        o.remove("protocol");
                    }
                }
            }
        }
        out.insert("ports".into(), Value::Object(ports));
    }
    if s.get("serviceType") == Some(&json!("ClusterIP")) {
        s.remove("serviceType");
    }
    cx.rest(
        s,
        at,
        "a workload is exposed only through `ingress` here (its gateway), never by its Service type, hostnames or TLS",
    );
    (!out.is_empty()).then_some(Value::Object(out))
}

/// Workload resources; an `external-service` with upstream `endpoints` becomes one with
/// `host`, `port` and `protocol`.
fn resources_of(cx: &mut Cx, r: Map<String, Value>, at: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, res) in r {
        let r_at = push_pointer(at, &name);
        let Value::Object(mut res) = res else {
            cx.dropped(&r_at, "a resource is a mapping");
            continue;
        };
        let mut kept = Map::new();
        let ty = match res.remove("type") {
            Some(t) => t,
            None => {
                cx.rewritten(
                    &r_at,
                    "no `type`: upstream reads it as a service; written `type: service`",
                );
                json!("service")
            }
        };
        kept.insert("type".into(), ty.clone());
        for key in ["class", "id", "metadata"] {
            put(&mut kept, key, res.remove(key));
        }
        let mut params = take_map(&mut res, "params");
        let params_at = push_pointer(&r_at, "params");
        match ty.as_str() {
            Some("external-service") => {
                for key in ["direction", "namespace"] {
                    if res.remove(key).is_some() {
                        cx.dropped(
                            &push_pointer(&r_at, key),
                            "an external service has no direction or namespace here",
                        );
                    }
                }
                if let Some(p) = params.as_mut() {
                    external_endpoints(cx, p, &params_at);
                }
            }
            Some("gpu") => {
                for key in ["compute", "tolerations"] {
                    if let Some(p) = params.as_mut()
                        && p.remove(key).is_some()
                    {
                        cx.dropped(
                            &push_pointer(&params_at, key),
                            "GPU sharing and tolerations are not configurable here",
                        );
                    }
                }
            }
            _ => {}
        }
        for key in ["direction", "namespace"] {
            put(&mut kept, key, res.remove(key));
        }
        if let Some(p) = params {
            kept.insert("params".into(), Value::Object(p));
        }
        cx.rest(res, &r_at, "upstream ignores this key too");
        out.insert(name, Value::Object(kept));
    }
    out
}

/// Upstream `params.endpoints: {NAME: URL}` as this project's single `host`, `port` and
/// `protocol`.
fn external_endpoints(cx: &mut Cx, p: &mut Map<String, Value>, at: &str) {
    if p.remove("resolution").is_some() {
        cx.dropped(
            &push_pointer(at, "resolution"),
            "external endpoints are always resolved by DNS here",
        );
    }
    let Some(Value::Object(endpoints)) = p.remove("endpoints") else {
        return;
    };
    let e_at = push_pointer(at, "endpoints");
    let mut first = true;
    for (name, url) in endpoints {
        let u_at = push_pointer(&e_at, &name);
        let parsed = url.as_str().and_then(parse_endpoint);
        match (first, parsed) {
            (true, Some((host, port, protocol))) => {
                p.insert("host".into(), json!(host));
                p.insert("port".into(), json!(port));
                p.insert("protocol".into(), json!(protocol));
                cx.rewritten(
                    &u_at,
                    format!("written `host: {host}`, `port: {port}`, `protocol: {protocol}`"),
                );
                first = false;
            }
            (false, Some(_)) => cx.dropped(
                &u_at,
                "a resource here names one endpoint: declare another external-service resource for this one",
            ),
            (_, None) => cx.dropped(&u_at, "not a URL or host:port this project can read"),
        }
    }
}

/// `https://h[:p]`, `http://h[:p]`, `tcp://h:p`, `grpc://h:p` or `h:p`, as host, port and
/// this project's protocol name.
fn parse_endpoint(url: &str) -> Option<(String, u16, &'static str)> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("tcp", url));
    let authority = rest.split(['/', '?', '#']).next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (authority, None),
    };
    let (protocol, default) = match scheme {
        "https" => ("https", Some(443)),
        "http" => ("http", Some(80)),
        "grpc" | "grpcs" => ("grpc", None),
        "tcp" => ("tcp", None),
        _ => return None,
    };
    (!host.is_empty()).then_some(())?;
    Some((host.to_owned(), port.or(default)?, protocol))
}

fn autoscaling(cx: &mut Cx, mut a: Map<String, Value>, at: &str) -> Value {
    let mut out = Map::new();
    put(&mut out, "max", a.remove("max"));
    if let Some(Value::Array(metrics)) = a.remove("metrics") {
        let m_at = push_pointer(at, "metrics");
        let mut kept = Vec::new();
        for (i, m) in metrics.into_iter().enumerate() {
            let t = m.get("target").and_then(Value::as_f64);
            match t {
                Some(t) if t.fract() == 0.0 && t >= 1.0 => {
                    kept.push(json!({"metric": m["metric"], "target": t as i64}));
                }
                _ => cx.dropped(
                    &push_pointer(&push_pointer(&m_at, &i.to_string()), "target"),
                    "targets here are whole numbers of at least 1; rounding would change when it scales",
                ),
            }
        }
        out.insert("metrics".into(), Value::Array(kept));
    }
    if let Some(mut behavior) = take_map(&mut a, "behavior") {
        let b_at = push_pointer(at, "behavior");
        for (dir, key) in [
            ("scaleUp", "scaleUpStabilizationSeconds"),
            ("scaleDown", "scaleDownStabilizationSeconds"),
        ] {
            if let Some(mut d) = take_map(&mut behavior, dir) {
                let d_at = push_pointer(&b_at, dir);
                if let Some(w) = d.remove("stabilizationWindow") {
                    match w
                        .as_str()
                        .and_then(crate::validate::format::duration_seconds)
                    {
                        Some(s) => {
                            out.insert(key.into(), json!(s));
                            cx.rewritten(
                                &push_pointer(&d_at, "stabilizationWindow"),
                                format!("written `{key}: {s}`"),
                            );
                        }
                        None => cx.dropped(
                            &push_pointer(&d_at, "stabilizationWindow"),
                            "not a duration",
                        ),
                    }
                }
                cx.rest(d, &d_at, "");
            }
        }
        cx.rest(behavior, &b_at, "");
    }
    cx.rest(a, at, "");
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------
// Kinds
// ---------------------------------------------------------------------------------------

const RUNTIME: &[&str] = &[
    "sidecars",
    "sysctls",
    "hostNetwork",
    "shareProcessNamespace",
    "automountServiceAccountToken",
    "imagePullSecrets",
];

fn split_runtime(map: &mut Map<String, Value>) -> Map<String, Value> {
    RUNTIME
        .iter()
        .filter_map(|k| map.remove(*k).map(|v| ((*k).to_owned(), v)))
        .collect()
}

fn service(cx: &mut Cx, mut spec: Map<String, Value>) -> Map<String, Value> {
    let core = take_map(&mut spec, "workload").unwrap_or_default();
    let runtime = split_runtime(&mut spec);
    let mut out = workload_body(
        cx,
        Workload {
            core,
            core_at: "/spec/workload",
            runtime,
            runtime_at: "/spec",
        },
    );
    put(&mut out, "replicas", spec.remove("replicas"));
    if let Some(a) = take_map(&mut spec, "autoscaling") {
        out.insert(
            "autoscaling".into(),
            autoscaling(cx, a, "/spec/autoscaling"),
        );
    }
    if let Some(d) = take_map(&mut spec, "deploy") {
        out.insert("deploy".into(), deploy(cx, d, "/spec/deploy"));
    }
    if let Some(i) = take_map(&mut spec, "ingress")
        && let Some(i) = ingress(cx, i, "/spec/ingress")
    {
        out.insert("ingress".into(), i);
    }
    if let Some(mut o) = take_map(&mut spec, "observability") {
        if let Some(mut m) = take_map(&mut o, "metrics") {
            if m.remove("mappings").is_some() {
                cx.dropped(
                    "/spec/observability/metrics/mappings",
                    "metric mappings are not derived here",
                );
            }
            if m.remove("port").is_some() {
                cx.dropped(
                    "/spec/observability/metrics/port",
                    "metrics are scraped from the service port named `metrics` here; name the port so",
                );
            }
            cx.rest(m, "/spec/observability/metrics", "");
        }
        cx.rest(o, "/spec/observability", "");
    }
    cx.rest(spec, "/spec", "");
    out
}

fn deploy(cx: &mut Cx, mut d: Map<String, Value>, at: &str) -> Value {
    let mut out = Map::new();
    put(&mut out, "strategy", d.remove("strategy"));
    if let Some(mut c) = take_map(&mut d, "canary") {
        // Flagger's defaults, which upstream leaves to Flagger and this project writes out.
        let mut canary = Map::new();
        for (key, default) in [
            ("interval", json!("1m")),
            ("stepWeight", json!(10)),
            ("maxWeight", json!(50)),
            ("threshold", json!(5)),
        ] {
            match c.remove(key) {
                Some(v) => {
                    canary.insert(key.into(), v);
                }
                None => {
                    cx.rewritten(
                        &push_pointer(&push_pointer(at, "canary"), key),
                        format!("unset upstream (Flagger's default); written `{key}: {default}`"),
                    );
                    canary.insert(key.into(), default);
                }
            }
        }
        cx.rest(c, &push_pointer(at, "canary"), "");
        out.insert("canary".into(), Value::Object(canary));
    }
    cx.rest(d, at, "");
    Value::Object(out)
}

/// Upstream's named routes (each with its hosts and TLS) as this project's one host list,
/// one TLS and a list of path routes.
fn ingress(cx: &mut Cx, mut i: Map<String, Value>, at: &str) -> Option<Value> {
    if i.remove("gatewayClass").is_some() || i.remove("gateway_class").is_some() {
        cx.dropped(
            &push_pointer(at, "gatewayClass"),
            "routes attach to the platform's gateway here (`gatewayRef` names a Gateway, not a class)",
        );
    }
    let routes_at = push_pointer(at, "routes");
    let mut hosts: Vec<Value> = Vec::new();
    let mut tls: Option<Value> = None;
    let mut routes = Vec::new();
    for (name, r) in take_map(&mut i, "routes").unwrap_or_default() {
        let r_at = push_pointer(&routes_at, &name);
        let Value::Object(mut r) = r else {
            cx.dropped(&r_at, "a route is a mapping");
            continue;
        };
        let kind = r
            .remove("kind")
            .and_then(|k| k.as_str().map(str::to_owned))
            .unwrap_or_else(|| "HTTPRoute".into());
        if kind != "HTTPRoute" {
            cx.dropped(
                &r_at,
                format!("{kind}: the gateway here serves HTTP routes only"),
            );
            continue;
        }
        for h in r
            .remove("hosts")
            .and_then(|h| h.as_array().cloned())
            .unwrap_or_default()
        {
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        if let Some(Value::Object(t)) = r.remove("tls") {
            let t = tls_of(cx, t, &push_pointer(&r_at, "tls"));
            match &tls {
                None => tls = Some(t),
                Some(existing) if *existing == t => {}
                Some(_) => cx.dropped(
                    &push_pointer(&r_at, "tls"),
                    "one TLS setting covers every host here; the first route's is kept",
                ),
            }
        }
        let port = r.remove("port");
        let mut any = false;
        let rules_at = push_pointer(&r_at, "rules");
        for (ri, rule) in r
            .remove("rules")
            .and_then(|x| x.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let rule_at = push_pointer(&rules_at, &ri.to_string());
            for (mi, m) in rule
                .get("matches")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                let m_at = push_pointer(&push_pointer(&rule_at, "matches"), &mi.to_string());
                let Value::Object(mut m) = m else { continue };
                let mut route = Map::new();
                if let Some(Value::Object(p)) = m.remove("path") {
                    put(&mut route, "path", p.get("value").cloned());
                    put(&mut route, "pathType", p.get("type").cloned());
                }
                put(&mut route, "port", port.clone());
                cx.rest(
                    m,
                    &m_at,
                    "routes here match on path only; header, method and gRPC matches are not carried",
                );
                routes.push(Value::Object(route));
                any = true;
            }
        }
        if !any {
            let mut route = Map::new();
            put(&mut route, "port", port);
            routes.push(Value::Object(route));
        }
        if r.remove("listenPort").is_some() {
            cx.dropped(
                &push_pointer(&r_at, "listenPort"),
                "the gateway listens on its own ports here",
            );
        }
        cx.rest(r, &r_at, "");
    }
    cx.rest(i, at, "");
    if hosts.is_empty() {
        cx.dropped(at, "no HTTP route with hosts: nothing to expose here");
        return None;
    }
    let mut out = Map::new();
    out.insert("hosts".into(), Value::Array(hosts));
    put(&mut out, "tls", tls);
    // Routes that say only "everything on the port" add nothing to the default route.
    let routes: Vec<Value> = routes
        .into_iter()
        .filter(|r| r.as_object().is_some_and(|o| !o.is_empty()))
        .collect();
    if !routes.is_empty() {
        out.insert("routes".into(), Value::Array(routes));
    }
    Some(Value::Object(out))
}

fn tls_of(cx: &mut Cx, mut t: Map<String, Value>, at: &str) -> Value {
    let out = if let Some(secret) = t.remove("secretName") {
        json!({"mode": "manual", "secretName": secret})
    } else if let Some(issuer) = t.remove("issuerRef") {
        json!({"mode": "auto", "issuerRef": issuer})
    } else {
        cx.rewritten(
            at,
            "`tls: {}` means upstream's platform CA: written `issuerRef: {name: lattice-ca, kind: ClusterIssuer}`",
        );
        json!({"mode": "auto", "issuerRef": {"name": "lattice-ca", "kind": "ClusterIssuer"}})
    };
    cx.rest(t, at, "");
    out
}

/// Merges upstream `defaults` into `target` the way upstream's `merge.rs` does: mappings
/// merge key by key with the target's values winning, a non-empty target list wins whole,
/// a set target scalar wins.
fn merge_defaults(target: &mut Value, defaults: &Value) {
    match (target, defaults) {
        (Value::Object(t), Value::Object(d)) => {
            for (k, dv) in d {
                match t.get_mut(k) {
                    Some(tv) => merge_defaults(tv, dv),
                    None => {
                        t.insert(k.clone(), dv.clone());
                    }
                }
            }
        }
        (t @ Value::Array(_), d) if t.as_array().is_some_and(Vec::is_empty) => *t = d.clone(),
        (t @ Value::Null, d) => *t = d.clone(),
        (t @ Value::String(_), d) if t.as_str() == Some("") => *t = d.clone(),
        _ => {}
    }
}

fn job(cx: &mut Cx, mut spec: Map<String, Value>) -> Map<String, Value> {
    let defaults = spec.remove("defaults");
    if defaults.is_some() {
        cx.rewritten(
            "/spec/defaults",
            "expanded into every task (mappings merged key by key, the task's values winning)",
        );
    }
    if let Some(s) = spec.remove("schedulerName")
        && s != "volcano"
    {
        cx.dropped("/spec/schedulerName", "jobs run on Volcano here");
    }
    let mut out = Map::new();
    let mut tasks = Map::new();
    for (name, task) in take_map(&mut spec, "tasks").unwrap_or_default() {
        let at = push_pointer("/spec/tasks", &name);
        let mut task = task;
        if let Some(d) = &defaults {
            merge_defaults(&mut task, d);
        }
        let Value::Object(mut task) = task else {
            cx.dropped(&at, "a task is a mapping");
            continue;
        };
        let core = take_map(&mut task, "workload").unwrap_or_default();
        let runtime = split_runtime(&mut task);
        let body = workload_body(
            cx,
            Workload {
                core,
                core_at: &push_pointer(&at, "workload"),
                runtime,
                runtime_at: &at,
            },
        );
        let mut t = Map::new();
        put(&mut t, "replicas", task.remove("replicas"));
        t.insert("workload".into(), Value::Object(body));
        match task.remove("restartPolicy") {
            Some(p) if p == "Always" => cx.dropped(
                &push_pointer(&at, "restartPolicy"),
                "a job task here restarts Never or OnFailure; one that restarts even after success is a LatticeService",
            ),
            p => put(&mut t, "restartPolicy", p),
        }
        cx.rest(task, &at, "");
        tasks.insert(name, Value::Object(t));
    }
    out.insert("tasks".into(), Value::Object(tasks));
    for key in ["minAvailable", "queue", "schedule", "maxRetry"] {
        put(&mut out, key, spec.remove(key));
    }
    cx.rest(spec, "/spec", "");
    out
}

fn model(cx: &mut Cx, mut spec: Map<String, Value>) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    let Some(mut source) = take_map(&mut spec, "modelSource") else {
        cx.note(
            "/spec",
            Change::NotCarried,
            "a LatticeModel here needs `source.uri` (where the weights come from), and this one has no `modelSource`",
        );
        return None;
    };
    let mut s = Map::new();
    put(&mut s, "uri", source.remove("uri"));
    if source.remove("tokenSecret").is_some() {
        cx.dropped(
            "/spec/modelSource/tokenSecret",
            "credentials here are a `secret` resource of a role (read through a SecretProvider), named in `source.credentials`",
        );
    }
    cx.rest(
        source,
        "/spec/modelSource",
        "the weights are fetched and cached by the platform here",
    );
    out.insert("source".into(), Value::Object(s));
    if spec.remove("schedulerName").is_some_and(|s| s != "volcano") {
        cx.dropped("/spec/schedulerName", "models run on Volcano here");
    }
    let defaults = spec.remove("defaults");
    if defaults.is_some() {
        cx.rewritten(
            "/spec/defaults",
            "expanded into every role (mappings merged key by key, the role's values winning)",
        );
    }
    let mut roles = Map::new();
    for (name, role) in take_map(&mut spec, "roles").unwrap_or_default() {
        let at = push_pointer("/spec/roles", &name);
        let mut role = role;
        if let Some(d) = &defaults {
            merge_defaults(&mut role, d);
        }
        let Value::Object(mut role) = role else {
            cx.dropped(&at, "a role is a mapping");
            continue;
        };
        let core = take_map(&mut role, "entryWorkload").unwrap_or_default();
        let runtime = take_map(&mut role, "entryRuntime").unwrap_or_default();
        let body = workload_body(
            cx,
            Workload {
                core,
                core_at: &push_pointer(&at, "entryWorkload"),
                runtime,
                runtime_at: &push_pointer(&at, "entryRuntime"),
            },
        );
        let mut r = Map::new();
        put(&mut r, "replicas", role.remove("replicas"));
        r.insert("workload".into(), Value::Object(body));
        if let Some(a) = take_map(&mut role, "autoscaling") {
            r.insert(
                "autoscaling".into(),
                autoscaling(cx, a, &push_pointer(&at, "autoscaling")),
            );
        }
        for key in ["workerReplicas", "workerWorkload", "workerRuntime"] {
            if role.remove(key).is_some() {
                cx.dropped(
                    &push_pointer(&at, key),
                    "a role here is one set of identical pods; leader/worker groups are not derived (declare the workers as a role of their own)",
                );
            }
        }
        cx.rest(role, &at, "");
        roles.insert(name, Value::Object(r));
    }
    out.insert("roles".into(), Value::Object(roles));
    cx.rest(
        spec,
        "/spec",
        "inference routing, model ingress and recovery settings are not derived here",
    );
    Some(out)
}

fn cluster(cx: &mut Cx, mut spec: Map<String, Value>) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    put(&mut out, "providerRef", spec.remove("providerRef"));
    let mut provider = take_map(&mut spec, "provider").unwrap_or_default();
    let mut k8s = take_map(&mut provider, "kubernetes").unwrap_or_default();
    let mut kubernetes = Map::new();
    for key in ["version", "bootstrap"] {
        put(&mut kubernetes, key, k8s.remove(key));
    }
    cx.rest(
        k8s,
        "/spec/provider/kubernetes",
        "the API server's SANs and the pod and service networks take the provider's defaults here",
    );
    let mut config = take_map(&mut provider, "config").unwrap_or_default();
    let mut cfg = Map::new();
    if config.contains_key("basis") {
        cx.note(
            "/spec/provider/config/basis",
            Change::NotCarried,
            "the basis provider is not one of this project's (AWS, Proxmox, OpenStack, Docker)",
        );
        return None;
    }
    let mut nodes = take_map(&mut spec, "nodes").unwrap_or_default();
    let mut cp = take_map(&mut nodes, "controlPlane");
    let cp_type = cp
        .as_mut()
        .and_then(|c| c.get("instanceType").cloned())
        .and_then(|t| t.get("name").cloned());
    if let Some(mut aws) = take_map(&mut config, "aws") {
        let mut a = Map::new();
        for key in ["region", "sshKeyName"] {
            put(&mut a, key, aws.remove(key));
        }
        if let Some(ami) = aws.remove("amiId") {
            a.insert("ami".into(), ami);
        }
        if let Some(t) = cp_type.clone() {
            a.insert("cpInstanceType".into(), t);
            cx.rewritten(
                "/spec/nodes/controlPlane/instanceType/name",
                "written `provider.config.aws.cpInstanceType`",
            );
        }
        cx.rest(
            aws,
            "/spec/provider/config/aws",
            "the VPC, subnets, instance profiles and load balancer take the provider's defaults here (the InfraProvider's `config` may carry them)",
        );
        cfg.insert("aws".into(), Value::Object(a));
    }
    // The other providers' blocks are passed to Cluster API as written.
    for key in ["proxmox", "openstack", "docker"] {
        put(&mut cfg, key, config.remove(key));
    }
    cx.rest(config, "/spec/provider/config", "");
    cx.rest(provider, "/spec/provider", "");
    out.insert(
        "provider".into(),
        json!({"kubernetes": kubernetes, "config": cfg}),
    );
    let mut n = Map::new();
    match cp {
        Some(mut c) => {
            put(&mut n, "controlPlane", c.remove("replicas"));
            if let Some(Value::Object(mut t)) = c.remove("instanceType") {
                let it_at = "/spec/nodes/controlPlane/instanceType";
                if t.remove("name").is_some() && !cfg.contains_key("aws") {
                    cx.dropped(
                        &format!("{it_at}/name"),
                        "a control-plane instance type is set here only for AWS (`provider.config.aws.cpInstanceType`); for other providers, in their config block",
                    );
                }
                cx.rest(
                    t,
                    it_at,
                    "machine sizes are the provider's (its config block), not the cluster's",
                );
            }
            cx.rest(
                c,
                "/spec/nodes/controlPlane",
                "the control plane here is a replica count",
            );
        }
        None => put(&mut n, "controlPlane", nodes.remove("controlPlane")),
    }
    let mut pools = Map::new();
    for (name, pool) in take_map(&mut nodes, "workerPools").unwrap_or_default() {
        let at = push_pointer("/spec/nodes/workerPools", &name);
        let Value::Object(mut pool) = pool else {
            cx.dropped(&at, "a worker pool is a mapping");
            continue;
        };
        let mut p = Map::new();
        for key in ["replicas", "min", "max", "labels"] {
            put(&mut p, key, pool.remove(key));
        }
        match pool.remove("instanceType") {
            Some(Value::String(s)) => {
                p.insert("instanceType".into(), json!(s));
            }
            Some(Value::Object(mut t)) => {
                let it_at = push_pointer(&at, "instanceType");
                if let Some(name) = t.remove("name") {
                    p.insert("instanceType".into(), name);
                }
                cx.rest(
                    t,
                    &it_at,
                    "machine sizes are the provider's (its config block), not the pool's",
                );
            }
            Some(_) => cx.dropped(&push_pointer(&at, "instanceType"), "not an instance type"),
            None => {}
        }
        cx.rest(pool, &at, "");
        pools.insert(name, Value::Object(p));
    }
    n.insert("workerPools".into(), Value::Object(pools));
    cx.rest(nodes, "/spec/nodes", "");
    out.insert("nodes".into(), Value::Object(n));
    if let Some(mut pc) = take_map(&mut spec, "parentConfig") {
        let mut p = Map::new();
        for key in ["grpcPort", "bootstrapPort"] {
            put(&mut p, key, pc.remove(key));
        }
        if let Some(mut svc) = take_map(&mut pc, "service") {
            if let Some(t) = svc.remove("type") {
                p.insert("serviceType".into(), t);
                cx.rewritten(
                    "/spec/parentConfig/service/type",
                    "written `parentConfig.serviceType`",
                );
            }
            cx.rest(svc, "/spec/parentConfig/service", "");
        }
        cx.rest(pc, "/spec/parentConfig", "");
        out.insert("parentConfig".into(), Value::Object(p));
    }
    put(&mut out, "services", spec.remove("services"));
    // Upstream installs monitoring and backups unless told not to.
    for key in ["monitoring", "backups"] {
        let at = format!("/spec/{key}");
        match spec.remove(key) {
            None => {
                out.insert(key.into(), json!(true));
            }
            Some(Value::Bool(b)) => {
                out.insert(key.into(), json!(b));
            }
            Some(Value::Object(mut m)) => {
                let enabled = m
                    .remove("enabled")
                    .and_then(|e| e.as_bool())
                    .unwrap_or(true);
                out.insert(key.into(), json!(enabled));
                cx.rest(m, &at, "only whether it is installed is set here");
            }
            Some(_) => cx.dropped(&at, "neither a mapping nor a boolean"),
        }
    }
    cx.rest(spec, "/spec", "");
    Some(out)
}

fn mesh_member(cx: &mut Cx, mut spec: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut target = Map::new();
    if let Some(mut t) = take_map(&mut spec, "target") {
        put(&mut target, "selector", t.remove("selector"));
        put(&mut target, "serviceAccount", t.remove("serviceAccount"));
        if t.remove("namespace").is_some() {
            cx.note(
                "/spec/target/namespace",
                Change::NotCarried,
                "a mesh member here is the pods a label selector picks; a whole namespace cannot be one",
            );
            cx.whole = true;
        }
        cx.rest(t, "/spec/target", "");
    }
    put(&mut target, "serviceAccount", spec.remove("serviceAccount"));
    out.insert("target".into(), Value::Object(target));
    match spec.remove("ports") {
        Some(Value::Array(ports)) => {
            let mut map = Map::new();
            for (i, p) in ports.into_iter().enumerate() {
                let at = format!("/spec/ports/{i}");
                let Value::Object(mut p) = p else { continue };
                let name = p
                    .remove("name")
                    .and_then(|n| n.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("port-{i}"));
                let mut port = Map::new();
                put(&mut port, "port", p.remove("port"));
                match p.remove("peerAuth").as_ref().and_then(Value::as_str) {
                    Some("Strict") | None => {}
                    Some("Permissive") => {
                        port.insert("peerAuth".into(), json!("permissive"));
                    }
                    Some(other) => {
                        port.insert("peerAuth".into(), json!("permissive"));
                        cx.rewritten(
                            &format!("{at}/peerAuth"),
                            format!("{other}: written `permissive`, which also admits plaintext from other callers"),
                        );
                    }
                }
                cx.rest(p, &at, "");
                map.insert(name, Value::Object(port));
            }
            out.insert("ports".into(), Value::Object(map));
            cx.rewritten("/spec/ports", "a list upstream, a mapping by name here");
        }
        Some(other) => {
            out.insert("ports".into(), other);
        }
        None => {}
    }
    for key in ["allowedCallers", "dependencies"] {
        if let Some(Value::Array(refs)) = spec.remove(key) {
            let names: Vec<Value> = refs
                .into_iter()
                .map(|r| match (r.get("namespace"), r.get("name")) {
                    (Some(ns), Some(n)) => json!(format!(
                        "{}/{}",
                        ns.as_str().unwrap_or_default(),
                        n.as_str().unwrap_or_default()
                    )),
                    (None, Some(n)) => n.clone(),
                    _ => r,
                })
                .collect();
            out.insert(key.into(), Value::Array(names));
        }
    }
    if spec.remove("dependsAll") == Some(Value::Bool(true)) {
        let deps = out.entry("dependencies").or_insert(json!([]));
        if let Some(d) = deps.as_array_mut() {
            d.push(json!("*"));
        }
        cx.rewritten(
            "/spec/dependsAll",
            "written `dependencies: [\"*\"]` (an AllowWildcard decision)",
        );
    }
    if let Some(Value::Array(rules)) = spec.remove("egress") {
        let mut kept = Vec::new();
        for (i, r) in rules.into_iter().enumerate() {
            let at = format!("/spec/egress/{i}");
            let Value::Object(mut r) = r else { continue };
            let mut e = Map::new();
            match r.remove("target") {
                Some(Value::Object(t)) if t.contains_key("fqdn") => {
                    e.insert("host".into(), t["fqdn"].clone());
                }
                Some(Value::Object(t)) if t.contains_key("entity") => {
                    e.insert("entity".into(), t["entity"].clone());
                }
                _ => {
                    cx.dropped(&at, "egress here names a host or an entity, not a CIDR");
                    continue;
                }
            }
            match r.remove("ports") {
                Some(Value::Array(p)) if !p.is_empty() => {
                    e.insert("ports".into(), Value::Array(p));
                }
                _ => {
                    cx.dropped(
                        &at,
                        "every port (upstream's empty list): egress here names its ports",
                    );
                    continue;
                }
            }
            put(&mut e, "protocol", r.remove("protocol"));
            cx.rest(r, &at, "");
            kept.push(Value::Object(e));
        }
        if !kept.is_empty() {
            out.insert("egress".into(), Value::Array(kept));
        }
    }
    if spec.get("ambient") == Some(&Value::Bool(true)) {
        spec.remove("ambient");
    }
    if spec.get("allowPeerTraffic") == Some(&Value::Bool(false)) {
        spec.remove("allowPeerTraffic");
    }
    cx.rest(spec, "/spec", "");
    out
}

fn secret_provider(cx: &mut Cx, mut spec: Map<String, Value>) -> Map<String, Value> {
    // The External Secrets shape (`provider: {vault: {…}}`) is read as it is.
    let mut out = Map::new();
    for key in ["backend", "provider", "refreshInterval"] {
        put(&mut out, key, spec.remove(key));
    }
    cx.rest(spec, "/spec", "");
    out
}

/// An ImageProvider reads as it is (its shape is upstream's), but for what this project
/// does not derive: insecure registries, ECR token refresh, and signature trust (a
/// TrustPolicy here).
fn image_provider(cx: &mut Cx, mut spec: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for key in ["type", "registry", "credentials", "credentialData"] {
        put(&mut out, key, spec.remove(key));
    }
    if spec.get("insecure") == Some(&Value::Bool(false)) {
        spec.remove("insecure");
    }
    for (key, reason) in [
        (
            "insecure",
            "pulling over plain HTTP is the node runtime's configuration, not a workload's",
        ),
        (
            "ecr",
            "ECR tokens expire every 12 hours and are not refreshed here: keep a long-lived credential in the secret backend",
        ),
        (
            "trust",
            "signature trust is a TrustPolicy here (registries with their public keys)",
        ),
    ] {
        if spec.remove(key).is_some() {
            cx.dropped(&push_pointer("/spec", key), reason);
        }
    }
    cx.rest(spec, "/spec", "");
    out
}

fn infra_provider(cx: &mut Cx, mut spec: Map<String, Value>) -> Option<Map<String, Value>> {
    let ty = spec.remove("type");
    if ty.as_ref().and_then(Value::as_str) == Some("basis") {
        cx.note(
            "/spec/type",
            Change::NotCarried,
            "the basis provider is not one of this project's (AWS, Proxmox, OpenStack, Docker)",
        );
        return None;
    }
    let mut out = Map::new();
    put(&mut out, "type", ty);
    put(&mut out, "region", spec.remove("region"));
    if spec.remove("credentials").is_some() {
        cx.dropped(
            "/spec/credentials",
            "credentials here are an existing Secret named in `credentialsSecretRef`; upstream synced one through External Secrets",
        );
    }
    let mut config = Map::new();
    for block in ["aws", "proxmox", "openstack", "docker"] {
        if let Some(mut b) = take_map(&mut spec, block) {
            for endpoint in ["serverUrl", "authUrl"] {
                if let Some(e) = b.remove(endpoint) {
                    out.insert("endpoint".into(), e);
                    cx.rewritten(&format!("/spec/{block}/{endpoint}"), "written `endpoint`");
                }
            }
            config.extend(b);
        }
    }
    if !config.is_empty() {
        out.insert("config".into(), Value::Object(config));
    }
    cx.rest(spec, "/spec", "");
    Some(out)
}

/// Chart values: a `$secret` directive (upstream builds a Secret from resource keys and puts
/// its name here) has no equivalent and is dropped with its key; `${R.K}` and
/// `${secret.R.K}` naming a declared resource are written `${resources.R.K}`.
fn package_values(cx: &mut Cx, v: &mut Value, at: &str, resources: &Map<String, Value>) {
    match v {
        Value::Object(map) => {
            let directives: Vec<String> = map
                .iter()
                .filter(|(_, x)| x.get("$secret").is_some())
                .map(|(k, _)| k.clone())
                .collect();
            for k in directives {
                map.remove(&k);
                cx.dropped(
                    &push_pointer(at, &k),
                    "a `$secret` directive (upstream makes a Secret of resource keys and puts its name here) has no equivalent: create the Secret and name it here, or pass a key as `${resources.NAME.KEY}`",
                );
            }
            for (k, x) in map.iter_mut() {
                package_values(cx, x, &push_pointer(at, k), resources);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter_mut().enumerate() {
                package_values(cx, x, &push_pointer(at, &i.to_string()), resources);
            }
        }
        Value::String(text) if text.contains("${") => {
            let mut out = placeholders(cx, text, at);
            for name in resources.keys() {
                let bare = format!("${{{name}.");
                if out.contains(&bare) {
                    out = out.replace(&bare, &format!("${{resources.{name}."));
                    cx.rewritten(
                        at,
                        format!("`${{{name}.KEY}}` is written `${{resources.{name}.KEY}}` here"),
                    );
                }
            }
            *text = out;
        }
        _ => {}
    }
}

/// A CedarPolicy already in this project's shape whose policies lack `@id`: each gets
/// `@id("policyN")`, the id it has anyway, now written down so that it survives edits.
pub fn name_policies(doc: &Value) -> Migration {
    let mut cx = Cx::default();
    let mut doc = doc.clone();
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("policy")
        .to_owned();
    if let Some(Value::String(text)) = doc.pointer_mut("/spec/policies") {
        let named = policies(&mut cx, text, &name);
        if named != *text {
            cx.rewritten(
                "/spec/policies",
                "each policy without `@id` is given the one it has anyway (`policy0`, `policy1`, …), written down so that it survives edits",
            );
        }
        *text = named;
    }
    cx.done(Some(doc))
}

/// Upstream SecurityOverride ids spelled otherwise here.
const OVERRIDE_RENAMES: &[(&str, &str)] = &[(
    "SecurityOverride::\"readWriteRootFilesystem\"",
    "SecurityOverride::\"writableRootFilesystem\"",
)];

/// A CedarPolicy: each policy without `@id` gets `@id("policyN")` (the id this project
/// would give it anyway, now written down), and each policy that does not validate against
/// this project's schema is commented out and reported, with Cedar's reason.
fn cedar_policy(cx: &mut Cx, mut spec: Map<String, Value>, name: &str) -> Map<String, Value> {
    let mut out = Map::new();
    put(&mut out, "description", spec.remove("description"));
    if let Some(Value::String(text)) = spec.remove("policies") {
        let mut text = text;
        for (from, to) in OVERRIDE_RENAMES {
            if text.contains(from) {
                text = text.replace(from, to);
                cx.rewritten("/spec/policies", format!("{from} is written {to}"));
            }
        }
        out.insert("policies".into(), json!(policies(cx, &text, name)));
    }
    for key in ["enabled", "mode", "auditUntil"] {
        put(&mut out, key, spec.remove(key));
    }
    // Upstream propagates to child clusters unless told not to.
    out.insert(
        "propagate".into(),
        spec.remove("propagate").unwrap_or(json!(true)),
    );
    cx.rest(spec, "/spec", "");
    out
}

fn policies(cx: &mut Cx, text: &str, name: &str) -> String {
    let spans = crate::cedar::statement_spans(text);
    let mut out = String::new();
    let mut last = 0;
    for (i, span) in spans.iter().enumerate() {
        out.push_str(&text[last..span.start]);
        last = span.end;
        let statement = &text[span.clone()];
        // Whether it has an `@id` is Cedar's reading of it, wherever the annotation stands.
        let has_id = crate::cedar::check_policies(statement)
            .ids
            .first()
            .is_some_and(|(id, _)| id.is_some());
        let named = if has_id {
            statement.to_owned()
        } else {
            format!("@id(\"policy{i}\")\n{statement}")
        };
        let check = crate::cedar::check_policies(&named);
        let errors: Vec<&str> = check
            .problems
            .iter()
            .filter(|p| !p.warning)
            .map(|p| p.message.as_str())
            .collect();
        if errors.is_empty() {
            out.push_str(&named);
        } else {
            cx.dropped(
                "/spec/policies",
                format!(
                    "policy {} of {name} (`{}`) does not validate against this project's schema and is commented out: {}",
                    i,
                    statement.lines().next().unwrap_or_default().trim(),
                    errors.join("; ")
                ),
            );
            out.push_str(
                "// lattice-policy migrate: does not validate here; see the migration notes\n",
            );
            for line in named.lines() {
                out.push_str("// ");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.push_str(&text[last..]);
    out
}

fn package(cx: &mut Cx, mut spec: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    put(&mut out, "chart", spec.remove("chart"));
    // Flux's own field, as upstream means it.
    put(&mut out, "timeout", spec.remove("timeout"));
    let resources = take_map(&mut spec, "resources")
        .map(|r| resources_of(cx, r, "/spec/resources"))
        .unwrap_or_default();
    if let Some(mut v) = spec.remove("values") {
        package_values(cx, &mut v, "/spec/values", &resources);
        out.insert("values".into(), v);
    }
    if !resources.is_empty() {
        out.insert("resources".into(), Value::Object(resources));
    }
    if spec.remove("mesh").is_some() {
        cx.dropped(
            "/spec/mesh",
            "declare the package's mesh membership as a LatticeMeshMember selecting its pods",
        );
    }
    for key in ["createNamespace", "skipCrds", "propagate"] {
        if spec.get(key) == Some(&Value::Bool(false)) {
            spec.remove(key);
        }
    }
    cx.rest(spec, "/spec", "");
    out
}

/// Upstream's CertIssuer and DNSProvider are this project's, credentials and all
/// (`{id, provider, keys}`), except for what would put a credential or a CoreDNS change in
/// a manifest.
fn issuer_or_dns(cx: &mut Cx, mut spec: Map<String, Value>) -> Map<String, Value> {
    if spec.remove("credentialData").is_some() {
        cx.dropped(
            "/spec/credentialData",
            "files are not templated from the credentials here: store the file itself (such as `azure.json`) as a key of the secret in the SecretProvider",
        );
    }
    if spec.remove("resolver").is_some() {
        cx.dropped(
            "/spec/resolver",
            "the platform does not configure CoreDNS: forward a private zone with your cluster's DNS",
        );
    }
    if spec.remove("designate").is_some() {
        cx.dropped(
            "/spec/designate",
            "external-dns finds the zone by its name (`zone`); OpenStack's region and account are the `OS_*` keys of the credentials",
        );
    }
    spec
}

/// Upstream's backup names a BackupStore and counts retention in days; here the storage is
/// the backup's own and retention is Velero's `ttl`.
fn cluster_backup(cx: &mut Cx, mut spec: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    put(&mut out, "schedule", spec.remove("schedule"));
    if let Some(store) = spec.remove("storeRef") {
        cx.dropped(
            "/spec/storeRef",
            format!(
                "write BackupStore {store}'s storage here as `storage` (provider, bucket, credentials); without it Velero's default storage location is used"
            ),
        );
    }
    if let Some(mut scope) = take_map(&mut spec, "scope") {
        let mut kept = Map::new();
        put(
            &mut kept,
            "includeNamespaces",
            scope.remove("includeNamespaces"),
        );
        put(
            &mut kept,
            "excludeNamespaces",
            scope.remove("excludeNamespaces"),
        );
        if let Some(selector) = scope.remove("workloadNamespaces") {
            match selector.get("matchLabels") {
                Some(labels @ Value::Object(_)) => {
                    kept.insert("namespaceSelector".into(), labels.clone());
                    cx.rewritten(
                        "/spec/scope/workloadNamespaces",
                        "the namespaces' labels are `scope.namespaceSelector` here",
                    );
                }
                _ => cx.dropped(
                    "/spec/scope/workloadNamespaces",
                    "only `matchLabels` carries over (as `scope.namespaceSelector`)",
                ),
            }
        }
        for key in ["controlPlane", "gpuPaasResources"] {
            if scope.remove(key).is_some() {
                cx.dropped(
                    &format!("/spec/scope/{key}"),
                    "a whole-cluster backup takes every kind; name namespaces to narrow it",
                );
            }
        }
        cx.rest(scope, "/spec/scope", "");
        if !kept.is_empty() {
            out.insert("scope".into(), Value::Object(kept));
        }
    }
    if let Some(mut retention) = take_map(&mut spec, "retention") {
        let daily = retention.remove("daily");
        let mut kept = Map::new();
        put(&mut kept, "ttl", retention.remove("ttl"));
        if let Some(days) = daily.as_ref().and_then(Value::as_u64) {
            if kept.is_empty() {
                kept.insert("ttl".into(), json!(format!("{}h", days * 24)));
                cx.rewritten(
                    "/spec/retention/daily",
                    format!(
                        "Velero keeps each backup for a time: {days} days is `ttl: {}h`",
                        days * 24
                    ),
                );
            } else {
                cx.dropped(
                    "/spec/retention/daily",
                    "`ttl` says how long backups are kept",
                );
            }
        }
        cx.rest(retention, "/spec/retention", "");
        if !kept.is_empty() {
            out.insert("retention".into(), Value::Object(kept));
        }
    }
    put(&mut out, "paused", spec.remove("paused"));
    cx.rest(spec, "/spec", "");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointers(m: &Migration) -> Vec<(&str, Change)> {
        m.notes
            .iter()
            .map(|n| (n.pointer.as_str(), n.change))
            .collect()
    }

    #[test]
    fn an_upstream_backup_keeps_its_schedule_and_scope_and_says_where_its_store_goes() {
        let up = json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeClusterBackup",
            "metadata": {"name": "nightly", "namespace": "lattice-system"},
            "spec": {
                "schedule": "0 2 * * *", "storeRef": "production-s3",
                "scope": {"controlPlane": true, "workloadNamespaces": {"matchLabels": {"tier": "prod"}},
                          "excludeNamespaces": ["scratch"]},
                "retention": {"daily": 30}, "paused": false
            }
        });
        let m = migrate(&up);
        let v = m.value.clone().expect("carried over");
        assert_eq!(v["metadata"].get("namespace"), None);
        assert_eq!(
            v["spec"],
            json!({"schedule": "0 2 * * *", "scope": {"excludeNamespaces": ["scratch"], "namespaceSelector": {"tier": "prod"}},
                   "retention": {"ttl": "720h"}, "paused": false})
        );
        let notes = pointers(&m);
        assert!(notes.contains(&("/spec/storeRef", Change::Dropped)));
        assert!(notes.contains(&("/spec/retention/daily", Change::Rewritten)));
        assert!(notes.contains(&("/spec/scope/controlPlane", Change::Dropped)));
        assert!(m.notes.iter().any(|n| n.reason.contains("production-s3")));
        // What it migrated to loads as this project's kind.
        let back: crate::crd::LatticeClusterBackup = serde_json::from_value(v).unwrap();
        assert_eq!(back.spec.retention.ttl.as_deref(), Some("720h"));
    }

    #[test]
    fn a_service_comes_out_of_its_workload_and_reports_what_stays_behind() {
        let up = json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {
                "workload": {
                    "containers": {"main": {"image": "a:1", "workingDir": "/srv",
                        "variables": {"T": "${secret.db.password}"}}},
                    "resources": {"db": {"type": "secret", "id": "shop/db", "params": {"provider": "vault", "keys": ["password"]}}}
                },
                "automountServiceAccountToken": true,
                "replicas": 2
            }
        });
        let m = migrate(&up);
        let v = m.value.clone().unwrap();
        assert_eq!(v["spec"]["containers"]["main"]["image"], "a:1");
        assert_eq!(
            v["spec"]["containers"]["main"]["variables"]["T"],
            "${resources.db.password}"
        );
        assert_eq!(v["spec"]["replicas"], 2);
        assert!(v["spec"].get("workload").is_none());
        let p = pointers(&m);
        assert!(p.contains(&("/spec/automountServiceAccountToken", Change::Dropped)));
        assert!(p.contains(&("/spec/workload/containers/main/workingDir", Change::Dropped)));
        assert!(p.contains(&(
            "/spec/workload/containers/main/variables/T",
            Change::Rewritten
        )));
    }

    #[test]
    fn endpoints_are_read_as_host_port_and_protocol() {
        assert_eq!(
            parse_endpoint("https://api.stripe.com"),
            Some(("api.stripe.com".into(), 443, "https"))
        );
        assert_eq!(
            parse_endpoint("files.example.com:8443"),
            Some(("files.example.com".into(), 8443, "tcp"))
        );
        assert_eq!(parse_endpoint("tcp://db"), None, "no port to name");
        assert_eq!(parse_endpoint("ftp://x:21"), None);
    }

    #[test]
    fn defaults_fill_what_a_task_leaves_unset() {
        let mut task = json!({"workload": {"containers": {"main": {"image": "t:1", "args": []}}}});
        let defaults = json!({"workload": {"containers": {"main": {"image": "d:1", "args": ["--x"], "command": ["/bin/run"]}}}, "replicas": 2});
        merge_defaults(&mut task, &defaults);
        assert_eq!(task["workload"]["containers"]["main"]["image"], "t:1");
        assert_eq!(
            task["workload"]["containers"]["main"]["args"],
            json!(["--x"])
        );
        assert_eq!(
            task["workload"]["containers"]["main"]["command"],
            json!(["/bin/run"])
        );
        assert_eq!(task["replicas"], 2);
    }

    #[test]
    fn kinds_only_upstream_has_are_reported_whole() {
        let m = migrate(
            &json!({"apiVersion": "lattice.dev/v1alpha1", "kind": "BackupStore", "metadata": {"name": "d"}, "spec": {}}),
        );
        assert!(m.value.is_none());
        assert_eq!(m.notes[0].change, Change::NotCarried);
    }

    #[test]
    fn a_policy_that_does_not_validate_is_commented_out_and_reported() {
        let text = "permit(principal, action, resource);\nforbid(principal, action == Lattice::Action::\"launchMissiles\", resource);\n";
        let mut cx = Cx::default();
        let out = policies(&mut cx, text, "p");
        assert!(out.contains("@id(\"policy0\")\npermit"), "{out}");
        assert!(out.contains("// forbid(principal"), "{out}");
        assert_eq!(cx.notes.len(), 1, "{:?}", cx.notes);
        assert!(
            crate::cedar::check_policies(&out)
                .problems
                .iter()
                .all(|p| p.warning)
        );
        // An `@id` after another annotation on the same line is kept, not doubled.
        let mut cx = Cx::default();
        let text = "@advice(\"a\") @id(\"kept\") permit(principal, action, resource);\n";
        assert_eq!(policies(&mut cx, text, "p"), text);
    }
}
