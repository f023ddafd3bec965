//! One pod shape of a workload (a service's pods, a job's task, a model's role): its
//! containers with the restricted security defaults, and the objects the pod reads
//! (ExternalSecrets, ConfigMaps, PersistentVolumeClaims).

use std::collections::BTreeMap;

use lattice_schemas::crd::workload::{Container, Probe, ReadyState, WorkloadBody};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::objects::{CONFIG_HASH, CompileError, meta, object, object_name};
pub use crate::objects::{PART_LABEL, Part};
use crate::placeholders::{Piece, PlaceholderError, Scope};
use crate::secrets::{render_template, templated_external_secret};

/// The extended resource a `gpu` resource's `count` requests.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// A compiled pod shape: the template, and the objects it reads, in apply order.
pub struct Pod {
    pub objects: Vec<Value>,
    /// A `PodTemplateSpec` whose annotations carry the config hash.
    pub template: Value,
}

/// How a part's pods run.
pub struct PodOptions<'a> {
    /// `None` leaves the Kubernetes default (`Always`, as a Deployment needs).
    pub restart_policy: Option<&'a str>,
    /// Derive a Tetragon binary allowlist per container with a known entrypoint.
    pub runtime_enforcement: bool,
}

/// The pod `part` runs for `body`.
pub fn pod(
    part: &Part,
    body: &WorkloadBody,
    scope: &Scope,
    options: &PodOptions,
) -> Result<Pod, CompileError> {
    let workload = format!("{}/{}", part.ns, part.workload);
    let placeholder = |source| CompileError::Placeholder {
        workload: workload.clone(),
        source,
    };
    let mut objects = secret_objects(part, body);
    objects.extend(pull_secret_objects(part, body, scope).map_err(|reason| {
        CompileError::Invalid {
            workload: workload.clone(),
            reason,
        }
    })?);
    let (claims, mut volumes) = volume_objects(part, body);
    objects.extend(claims);
    let waited = init_order(body).map_err(|reason| CompileError::Invalid {
        workload: workload.clone(),
        reason,
    })?;
    let mut templated: BTreeMap<String, EnvTemplate> = BTreeMap::new();
    // name → (is a sidecar, container)
    let mut compiled: BTreeMap<&str, (bool, Value)> = BTreeMap::new();
    for (sidecar, set) in [(false, &body.containers), (true, &body.sidecars)] {
        for (cname, c) in set {
            let (container, extra_objects, extra_volumes, tmpl) =
                compile_container(part, cname, c, body, scope, sidecar).map_err(placeholder)?;
            objects.extend(extra_objects);
            volumes.extend(extra_volumes);
            if !tmpl.0.is_empty() {
                templated.insert(cname.clone(), tmpl);
            }
            compiled.insert(cname, (sidecar, container));
        }
    }
    for (cname, (template, keys)) in &templated {
        objects.push(templated_external_secret(
            &object_name(&[&part.base, cname, "env"]),
            part.ns,
            part.workload,
            &body.resources,
            template,
            keys,
        ));
    }
    // Score `before`: a container another one waits for starts first, as an init container;
    // one that must only start (or be healthy) keeps running beside the others.
    let mut init_containers = Vec::new();
    for (cname, state) in &waited {
        let Some((_, mut c)) = compiled.remove(cname.as_str()) else {
            continue;
        };
        if *state != ReadyState::Complete {
            c["restartPolicy"] = json!("Always");
            if *state == ReadyState::Healthy
                && c.get("startupProbe").is_none()
                && let Some(ready) = c.get("readinessProbe").cloned()
            {
                c["startupProbe"] = ready;
            }
        }
        init_containers.push(c);
    }
    let (sidecars, mut containers): (Vec<_>, Vec<_>) =
        compiled.into_values().partition(|(sidecar, _)| *sidecar);
    let sidecars = sidecars.into_iter().map(|(_, c)| c);
    let mut containers: Vec<Value> = containers.drain(..).map(|(_, c)| c).collect();
    if let Some(gpus) = gpu_count(body)
        && let Some(first) = containers.first_mut()
    {
        if !first["resources"].is_object() {
            first["resources"] = json!({});
        }
        if !first["resources"]["limits"].is_object() {
            first["resources"]["limits"] = json!({});
        }
        first["resources"]["limits"][GPU_RESOURCE] = json!(gpus.to_string());
    }
    containers.extend(sidecars);
    let mut pod_security =
        json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}});
    if !body.sysctls.is_empty() {
        pod_security["sysctls"] = Value::Array(
            body.sysctls
                .iter()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect(),
        );
    }
    let mut pod_spec = object([
        ("serviceAccountName", part.workload.into()),
        ("automountServiceAccountToken", false.into()),
        ("securityContext", pod_security),
    ]);
    if !init_containers.is_empty() {
        pod_spec["initContainers"] = Value::Array(init_containers);
    }
    pod_spec["containers"] = Value::Array(containers);
    if let Some(policy) = options.restart_policy {
        pod_spec["restartPolicy"] = json!(policy);
    }
    if !volumes.is_empty() {
        pod_spec["volumes"] = Value::Array(volumes);
    }
    if body.host_network == Some(true) {
        pod_spec["hostNetwork"] = json!(true);
    }
    if body.share_process_namespace == Some(true) {
        pod_spec["shareProcessNamespace"] = json!(true);
    }
    // Every pull secret but those naming an ImageProvider without credentials.
    let pull: Vec<Value> = body
        .image_pull_secrets
        .iter()
        .filter(|s| {
            body.resources.contains_key(*s)
                || scope
                    .image_providers
                    .get(*s)
                    .is_none_or(|ip| ip.credentials.is_some())
        })
        .map(|s| json!({"name": pull_secret_name(part, s)}))
        .collect();
    if !pull.is_empty() {
        pod_spec["imagePullSecrets"] = Value::Array(pull);
    }
    if options.runtime_enforcement {
        objects.extend(crate::runtime::binary_allowlists(part, body));
    }
    // Everything the pods are made from, so any change rolls them.
    // Hashed as it is written, never held as one buffer.
    let mut hasher = Sha256::new();
    let _ = serde_json::to_writer(&mut hasher, &(&pod_spec, &objects));
    let hash = format!("{:x}", hasher.finalize());
    let annotations = object([(CONFIG_HASH, format!("sha256:{}", &hash[..16]).into())]);
    let template = object([
        (
            "metadata",
            object([("labels", part.pod_labels()), ("annotations", annotations)]),
        ),
        ("spec", pod_spec),
    ]);
    Ok(Pod { objects, template })
}

/// The containers others wait for, in the order they must start, each with the state it
/// must reach. Fails on a cycle of `before`, which no order satisfies.
fn init_order(body: &WorkloadBody) -> Result<Vec<(String, ReadyState)>, String> {
    let rank = |s: ReadyState| match s {
        ReadyState::Started => 0,
        ReadyState::Healthy => 1,
        ReadyState::Complete => 2,
    };
    let mut waited: BTreeMap<&str, ReadyState> = BTreeMap::new();
    for c in body.containers.values().chain(body.sidecars.values()) {
        for (other, cond) in &c.before {
            let e = waited.entry(other.as_str()).or_insert(cond.ready);
            if rank(cond.ready) > rank(*e) {
                *e = cond.ready;
            }
        }
    }
    fn visit<'a>(
        name: &'a str,
        body: &'a WorkloadBody,
        path: &mut Vec<&'a str>,
        done: &mut Vec<&'a str>,
    ) -> Result<(), String> {
        if done.contains(&name) {
            return Ok(());
        }
        if let Some(at) = path.iter().position(|p| *p == name) {
            let mut cycle = path[at..].to_vec();
            cycle.push(name);
            return Err(format!(
                "containers wait for each other in a cycle ({}); no start order satisfies `before`",
                cycle.join(" → ")
            ));
        }
        path.push(name);
        if let Some(c) = body
            .containers
            .get(name)
            .or_else(|| body.sidecars.get(name))
        {
            for dep in c.before.keys() {
                visit(dep, body, path, done)?;
            }
        }
        path.pop();
        done.push(name);
        Ok(())
    }
    let mut done = Vec::new();
    for name in waited.keys() {
        visit(name, body, &mut Vec::new(), &mut done)?;
    }
    // Containers nobody waits for are not init containers, even when visited as a
    // dependency's dependency they are: only those in `waited` are kept.
    Ok(done
        .into_iter()
        .filter_map(|n| waited.get(n).map(|s| (n.to_owned(), *s)))
        .collect())
}

/// The GPUs the workload's `gpu` resources ask for in all.
fn gpu_count(body: &WorkloadBody) -> Option<u64> {
    let total: u64 = body
        .resources
        .values()
        .filter(|r| r.type_ == "gpu")
        .map(|r| {
            let count = r.params.as_ref().and_then(|p| p.get("count"));
            count
                .and_then(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .unwrap_or(1)
        })
        .sum();
    (total > 0).then_some(total)
}

/// An ExternalSecret per secret resource: listed keys map one to one; no keys means the
/// whole secret (`dataFrom`); a registry credential becomes `kubernetes.io/dockerconfigjson`.
fn secret_objects(part: &Part, body: &WorkloadBody) -> Vec<Value> {
    let (name, ns) = (part.base.as_str(), part.ns);
    let mut out = Vec::new();
    for (rname, r) in &body.resources {
        if r.type_ != "secret" {
            continue;
        }
        let params = r.params.clone().unwrap_or_default();
        let provider = params
            .get("provider")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let path = r.id.clone().unwrap_or_default();
        let keys: Vec<&str> = params
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut spec = json!({
            "refreshInterval": params.get("refreshInterval").and_then(Value::as_str).unwrap_or("1h"),
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": provider},
            "target": {"name": object_name(&[name, rname]), "creationPolicy": "Owner"}
        });
        if keys.is_empty() {
            spec["dataFrom"] = json!([{"extract": {"key": path}}]);
        } else {
            spec["data"] = Value::Array(
                keys.iter()
                    .map(|k| json!({"secretKey": k, "remoteRef": {"key": path, "property": k}}))
                    .collect(),
            );
        }
        if let Some(t) = params.get("secretType").and_then(Value::as_str) {
            spec["target"]["template"] = json!({"type": t});
        }
        out.push(json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": meta(&object_name(&[name, rname]), ns, part.workload), "spec": spec}));
    }
    out
}

/// The Kubernetes Secret a part's pods pull with for its pull secret `name` (a secret
/// resource's or an ImageProvider's, named alike).
fn pull_secret_name(part: &Part, name: &str) -> String {
    object_name(&[&part.base, name])
}

/// The images one part of a workload pulls, and the Kubernetes Secrets (in `namespace`)
/// it pulls them with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePull {
    pub namespace: String,
    /// Pull secrets, as the pod template names them; one whose ImageProvider has no
    /// credentials derives no Secret and is simply absent from the cluster.
    pub secrets: Vec<String>,
    /// The images, normalized as the projection's `Image` entities are.
    pub images: std::collections::BTreeSet<String>,
}

/// What each part of `object` pulls and with which Secrets: where the logins for its
/// images are found (the operator verifies images with them).
pub fn image_pulls(object: &lattice_schemas::manifest::Object) -> Vec<ImagePull> {
    let ns = object.namespace().unwrap_or("default");
    lattice_engine::project::workload_bodies(object)
        .into_iter()
        .map(|(part_name, body, _)| {
            let part = Part::new(object.name(), ns, part_name);
            ImagePull {
                namespace: ns.to_owned(),
                secrets: body
                    .image_pull_secrets
                    .iter()
                    .map(|s| pull_secret_name(&part, s))
                    .collect(),
                images: body
                    .containers
                    .values()
                    .chain(body.sidecars.values())
                    .map(|c| lattice_engine::project::image_uid_text(&c.image))
                    .collect(),
            }
        })
        .collect()
}

/// An ExternalSecret of type `kubernetes.io/dockerconfigjson` for each pull secret that names
/// an ImageProvider, named as a secret resource's would be, so the pod refers to both alike.
/// The Docker config is the provider's `credentialData` templates (`${secret.credentials.K}`
/// read as the remote key K); without them, `username` and `password` (or `token`) make one;
/// with neither, the remote secret is taken whole and must hold `.dockerconfigjson`.
fn pull_secret_objects(
    part: &Part,
    body: &WorkloadBody,
    scope: &Scope,
) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for pname in &body.image_pull_secrets {
        if body
            .resources
            .get(pname)
            .is_some_and(|r| r.type_ == "secret")
        {
            continue;
        }
        let Some(ip) = scope.image_providers.get(pname) else {
            return Err(format!(
                "pull secret `{pname}` names neither a secret resource of the workload nor an ImageProvider"
            ));
        };
        // A registry pulled from anonymously (or with the node's identity) needs no secret.
        let Some(creds) = &ip.credentials else {
            continue;
        };
        let secret = pull_secret_name(part, pname);
        let value_of = |k: &str| format!("{{{{ index . \"{k}\" }}}}");
        let has = |k: &str| creds.keys.iter().any(|x| x == k);
        let data: BTreeMap<String, String> = if !ip.credential_data.is_empty() {
            ip.credential_data
                .iter()
                .map(|(k, t)| (k.clone(), go_template(t, &value_of)))
                .collect()
        } else if has("username") && (has("password") || has("token")) {
            let password = if has("password") { "password" } else { "token" };
            let config = format!(
                "{{\"auths\":{{\"{}\":{{\"username\":\"{}\",\"password\":\"{}\"}}}}}}",
                ip.registry,
                value_of("username"),
                value_of(password)
            );
            BTreeMap::from([(".dockerconfigjson".to_owned(), config)])
        } else {
            BTreeMap::new()
        };
        let mut template = json!({"type": "kubernetes.io/dockerconfigjson"});
        if !data.is_empty() {
            template["engineVersion"] = json!("v2");
            template["data"] = json!(data);
        }
        let mut spec = json!({
            "refreshInterval": creds.refresh_interval.as_deref().unwrap_or("1h"),
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": creds.provider},
            "target": {"name": secret, "creationPolicy": "Owner", "template": template}
        });
        if creds.keys.is_empty() {
            spec["dataFrom"] = json!([{"extract": {"key": creds.id}}]);
        } else {
            spec["data"] = Value::Array(
                creds
                    .keys
                    .iter()
                    .map(|k| json!({"secretKey": k, "remoteRef": {"key": creds.id, "property": k}}))
                    .collect(),
            );
        }
        out.push(json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": meta(&secret, part.ns, part.workload), "spec": spec}));
    }
    Ok(out)
}

/// `${secret.credentials.KEY}` in an upstream-style template, as an ESO (Go) template of
/// the remote key.
fn go_template(text: &str, value_of: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${secret.credentials.") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "${secret.credentials.".len()..];
        match after.find('}') {
            Some(end) => {
                out.push_str(&value_of(&after[..end]));
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A file mode written as octal text (`"0400"`), as the decimal Kubernetes stores.
fn file_mode(mode: Option<&String>) -> Option<i64> {
    i64::from_str_radix(mode?.trim_start_matches("0o"), 8).ok()
}

/// Variables that mix text and secrets: rendered text per variable, and the secret keys
/// (resource, key) the templates read.
type EnvTemplate = (BTreeMap<String, String>, Vec<(String, String)>);

/// A compiled container, the objects and volumes it needs, and its templated variables.
type Compiled = (Value, Vec<Value>, Vec<Value>, EnvTemplate);

fn compile_container(
    part: &Part,
    cname: &str,
    c: &Container,
    body: &WorkloadBody,
    scope: &Scope,
    sidecar: bool,
) -> Result<Compiled, PlaceholderError> {
    let owner = part.base.as_str();
    let mut env = Vec::new();
    let mut template = BTreeMap::new();
    let mut template_keys: Vec<(String, String)> = Vec::new();
    let env_secret = object_name(&[owner, cname, "env"]);
    for (var, value) in &c.variables {
        let pieces = scope.resolve(value)?;
        match pieces.as_slice() {
            [] => env.push(json!({"name": var, "value": ""})),
            [Piece::Text(t)] => env.push(json!({"name": var, "value": t})),
            // Exactly one secret: read straight from the ExternalSecret's target.
            [Piece::Secret { resource, key }] => {
                env.push(json!({"name": var, "valueFrom": {"secretKeyRef": {"name": object_name(&[owner, resource]), "key": key}}}))
            }
            // Text and secrets mixed: a templated ExternalSecret renders the whole value.
            mixed => {
                let t = render_template(mixed, &mut template_keys);
                template.insert(var.clone(), t);
                env.push(json!({"name": var, "valueFrom": {"secretKeyRef": {"name": env_secret, "key": var}}}));
            }
        }
    }
    let image = pinned(&c.image, scope.digests);
    let mut container = json!({"name": cname, "image": image, "imagePullPolicy": "IfNotPresent"});
    if let Some(cmd) = &c.command {
        container["command"] = json!(cmd);
    }
    if let Some(args) = &c.args {
        container["args"] = json!(args);
    }
    if !env.is_empty() {
        container["env"] = Value::Array(env);
    }
    if !sidecar && let Some(service) = &body.service {
        let ports: Vec<Value> = service
            .ports
            .iter()
            .map(|(pname, p)| json!({"name": pname, "containerPort": p.target_port.unwrap_or(p.port), "protocol": format!("{:?}", p.protocol.unwrap_or_default()).to_uppercase()}))
            .collect();
        if !ports.is_empty() {
            container["ports"] = Value::Array(ports);
        }
    }
    if let Some(r) = &c.resources {
        let mut res = Map::new();
        for (field, amounts) in [("requests", &r.requests), ("limits", &r.limits)] {
            if let Some(a) = amounts {
                let mut m = Map::new();
                if let Some(cpu) = &a.cpu {
                    m.insert("cpu".into(), json!(cpu));
                }
                if let Some(mem) = &a.memory {
                    m.insert("memory".into(), json!(mem));
                }
                res.insert(field.into(), Value::Object(m));
            }
        }
        container["resources"] = Value::Object(res);
    }
    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(p) = probe {
            container[field] = compile_probe(p);
        }
    }
    container["securityContext"] = security_context(c);
    // Plain files become a ConfigMap mounted file by file.
    let mut objects = Vec::new();
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let secret_name = object_name(&[owner, cname, "secret-files"]);
    let mut secret_files = BTreeMap::new();
    let mut secret_file_keys = Vec::new();
    let mut secret_mounts = Vec::new();
    // Files with a `mode` are projected with it; the others keep the volume default.
    let mut cm_modes = Vec::new();
    let mut secret_modes = Vec::new();
    if !c.files.is_empty() {
        let cm = object_name(&[owner, cname, "files"]);
        let mut data = Map::new();
        let mut binary = Map::new();
        for (i, (path, f)) in c.files.iter().enumerate() {
            let key = format!("file-{i}");
            let mode =
                file_mode(f.mode.as_ref()).map(|m| json!({"key": key, "path": key, "mode": m}));
            match (&f.content, &f.binary_content) {
                (Some(content), _) if f.no_expand == Some(true) => {
                    data.insert(key.clone(), json!(content));
                }
                (Some(content), _) => {
                    let pieces = scope.resolve(content).map_err(|e| PlaceholderError {
                        reason: format!("in file {path}: {}", e.reason),
                        ..e
                    })?;
                    if pieces.iter().all(|p| matches!(p, Piece::Text(_))) {
                        let text: String = pieces
                            .iter()
                            .map(|p| {
                                if let Piece::Text(t) = p {
                                    t.as_str()
                                } else {
                                    ""
                                }
                            })
                            .collect();
                        data.insert(key.clone(), json!(text));
                    } else {
                        // A file holding secrets is rendered by a templated ExternalSecret and
                        // mounted from the Secret it writes, never from a ConfigMap.
                        secret_files
                            .insert(key.clone(), render_template(&pieces, &mut secret_file_keys));
                        secret_mounts.push(json!({"name": secret_name, "mountPath": path, "subPath": key, "readOnly": true}));
                        secret_modes.push((key.clone(), mode));
                        continue;
                    }
                }
                (None, Some(b64)) => {
                    binary.insert(key.clone(), json!(b64));
                }
                // Validation rejects a file with neither; a `source` is a path on the author's
                // machine that only the CLI could read. Refuse rather than drop the file.
                (None, None) => {
                    return Err(PlaceholderError {
                        placeholder: path.clone(),
                        reason: "files given by `source` are not derived yet; inline them with `content`".into(),
                    });
                }
            }
            cm_modes.push((key.clone(), mode));
            mounts.push(json!({"name": cm, "mountPath": path, "subPath": key, "readOnly": true}));
        }
        if !data.is_empty() || !binary.is_empty() {
            let mut config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(&cm, part.ns, part.workload)});
            if !data.is_empty() {
                config_map["data"] = Value::Object(data);
            }
            if !binary.is_empty() {
                config_map["binaryData"] = Value::Object(binary);
            }
            objects.push(config_map);
            let mut source = json!({"name": cm});
            if let Some(items) = projected_items(&cm_modes) {
                source["items"] = items;
            }
            volumes.push(json!({"name": cm, "configMap": source}));
        }
    }
    if !secret_files.is_empty() {
        objects.push(templated_external_secret(
            &secret_name,
            part.ns,
            part.workload,
            &body.resources,
            &secret_files,
            &secret_file_keys,
        ));
        let mut source = json!({"secretName": secret_name});
        if let Some(items) = projected_items(&secret_modes) {
            source["items"] = items;
        }
        volumes.push(json!({"name": secret_name, "secret": source}));
        mounts.extend(secret_mounts);
    }
    for (path, v) in &c.volumes {
        if let Some(res) = volume_resource(&v.source, body) {
            let mut mount = json!({"name": object_name(&["vol", res]), "mountPath": path, "readOnly": v.read_only.unwrap_or(false)});
            if let Some(sub) = &v.path {
                mount["subPath"] = json!(sub);
            }
            mounts.push(mount);
        }
    }
    if c.security
        .as_ref()
        .and_then(|s| s.read_only_root_filesystem)
        != Some(false)
    {
        // A read-only root still needs a writable /tmp.
        let tmp = format!("{cname}-tmp");
        mounts.push(json!({"name": tmp, "mountPath": "/tmp"}));
        volumes.push(json!({"name": tmp, "emptyDir": {}}));
    }
    if !mounts.is_empty() {
        container["volumeMounts"] = Value::Array(mounts);
    }
    Ok((container, objects, volumes, (template, template_keys)))
}

/// When any file has a mode: every key listed (a listed volume projects only what it lists),
/// each with its mode when it has one.
fn projected_items(files: &[(String, Option<Value>)]) -> Option<Value> {
    if files.iter().all(|(_, m)| m.is_none()) {
        return None;
    }
    Some(Value::Array(
        files
            .iter()
            .map(|(key, m)| {
                m.clone()
                    .unwrap_or_else(|| json!({"key": key, "path": key}))
            })
            .collect(),
    ))
}

/// The volume resource a mount's `${resources.NAME}` source names.
fn volume_resource<'a>(source: &str, body: &'a WorkloadBody) -> Option<&'a str> {
    let name = source.strip_prefix("${resources.")?.strip_suffix('}')?;
    body.resources
        .get_key_value(name)
        .filter(|(_, r)| r.type_ == "volume")
        .map(|(k, _)| k.as_str())
}

/// The claim a volume resource mounts: a shared volume (with an `id`) is known by its id to
/// every consumer; a private one by its owner and name.
fn claim_name(owner: &str, resource: &str, r: &lattice_schemas::crd::workload::Resource) -> String {
    match &r.id {
        Some(id) => object_name(&["vol", id]),
        None => object_name(&[owner, resource]),
    }
}

/// A PersistentVolumeClaim per owned volume, and the pod volume of every volume resource.
fn volume_objects(part: &Part, body: &WorkloadBody) -> (Vec<Value>, Vec<Value>) {
    let owner = part.base.as_str();
    let mut claims = Vec::new();
    let mut volumes = Vec::new();
    for (rname, r) in body.resources.iter().filter(|(_, r)| r.type_ == "volume") {
        let claim = claim_name(owner, rname, r);
        let param = |k: &str| {
            r.params
                .as_ref()
                .and_then(|p| p.get(k))
                .and_then(Value::as_str)
        };
        if let Some(size) = param("size") {
            let mut spec = json!({
                "accessModes": [param("accessMode").unwrap_or("ReadWriteOnce")],
                "resources": {"requests": {"storage": size}}
            });
            if let Some(class) = param("storageClass") {
                spec["storageClassName"] = json!(class);
            }
            claims.push(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(&claim, part.ns, part.workload), "spec": spec}));
        }
        volumes.push(json!({"name": object_name(&["vol", rname]), "persistentVolumeClaim": {"claimName": claim}}));
    }
    (claims, volumes)
}

fn compile_probe(p: &Probe) -> Value {
    let mut out = json!({});
    if let Some(h) = &p.http_get {
        let mut get = json!({"path": h.path, "port": h.port});
        if let Some(host) = &h.host {
            get["host"] = json!(host);
        }
        if let Some(s) = h.scheme {
            get["scheme"] = json!(format!("{s:?}").to_uppercase());
        }
        if !h.http_headers.is_empty() {
            get["httpHeaders"] = Value::Array(
                h.http_headers
                    .iter()
                    .map(|x| json!({"name": x.name, "value": x.value}))
                    .collect(),
            );
        }
        out["httpGet"] = get;
    }
    if let Some(e) = &p.exec {
        out["exec"] = json!({"command": e.command});
    }
    for (field, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("periodSeconds", p.period_seconds),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(v) = v {
            out[field] = json!(v);
        }
    }
    out
}

/// The restricted defaults, with each deviation the gates allowed.
fn security_context(c: &Container) -> Value {
    let s = c.security.clone().unwrap_or_default();
    let mut out = json!({
        "allowPrivilegeEscalation": s.allow_privilege_escalation.unwrap_or(false),
        "readOnlyRootFilesystem": s.read_only_root_filesystem.unwrap_or(true),
        "runAsNonRoot": s.run_as_non_root.unwrap_or(s.run_as_user != Some(0)),
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": profile(s.seccomp_profile.as_deref()),
    });
    if !s.capabilities.is_empty() {
        out["capabilities"]["add"] = json!(s.capabilities);
    }
    if s.privileged == Some(true) {
        out["privileged"] = json!(true);
    }
    if let Some(u) = s.run_as_user {
        out["runAsUser"] = json!(u);
    }
    if let Some(g) = s.run_as_group {
        out["runAsGroup"] = json!(g);
    }
    if let Some(a) = s.apparmor_profile.as_deref() {
        out["appArmorProfile"] = profile(Some(a));
    }
    out
}

fn profile(p: Option<&str>) -> Value {
    match p {
        None | Some("RuntimeDefault") => json!({"type": "RuntimeDefault"}),
        Some("Unconfined") => json!({"type": "Unconfined"}),
        Some(other) => {
            json!({"type": "Localhost", "localhostProfile": other.strip_prefix("Localhost/").unwrap_or(other)})
        }
    }
}

/// `image` as the pod runs it: `name:tag@sha256:…` when verification resolved its digest,
/// so that what was verified is what runs, and a tag moved later derives a new template.
/// A reference that already names a digest is kept as written (it resolves to itself).
fn pinned(image: &str, digests: &BTreeMap<String, String>) -> String {
    if image.contains('@') {
        return image.to_owned();
    }
    match digests.get(&lattice_engine::project::image_uid_text(image)) {
        Some(digest) => format!("{image}@{digest}"),
        None => image.to_owned(),
    }
}
