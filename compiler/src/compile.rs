//! Compiling a `LatticeService` whose gates all allowed into the Kubernetes objects it needs.
//!
//! Deterministic: the same workload, report and context give the same objects, byte for byte
//! (maps are ordered, and the config hash covers everything the pod template is made from).

use std::collections::BTreeMap;

use lattice_engine::World;
use lattice_engine::project::served_ports;
use lattice_gates::GateReport;
use lattice_schemas::crd::LatticeService;
use lattice_schemas::crd::service::DeniedGate;
use lattice_schemas::crd::workload::{Container, Probe, WorkloadBody};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::placeholders::{Piece, PlaceholderError, Scope};

/// The field manager and `managed-by` label of everything Lattice derives.
pub const MANAGER: &str = "lattice";
/// The annotation carrying the hash of the pod's inputs, so a change rolls the pods.
pub const CONFIG_HASH: &str = "lattice.dev/config-hash";

/// World facts a workload's placeholders resolve against.
#[derive(Clone, Debug, Default)]
pub struct CompileContext {
    /// `namespace/name` → served ports, for `${resources.peer.port}` and `.url`.
    pub peer_ports: BTreeMap<String, Vec<i64>>,
    pub cluster: String,
    pub environment: String,
}

impl CompileContext {
    /// The facts of `world`.
    pub fn of(world: &World) -> CompileContext {
        let mut ctx = CompileContext {
            cluster: lattice_engine::project::LOCAL_CLUSTER.to_owned(),
            ..CompileContext::default()
        };
        for (key, object) in world.objects() {
            if let Some(ns) = &key.namespace {
                let ports = served_ports(object);
                if !ports.is_empty() {
                    ctx.peer_ports
                        .insert(format!("{ns}/{}", key.name), ports.into_iter().collect());
                }
            }
            if let lattice_schemas::manifest::Object::Cluster(c) = object
                && c.spec.parent.is_none()
            {
                ctx.cluster = key.name.clone();
                ctx.environment = c.spec.environment.clone().unwrap_or_default();
            }
        }
        ctx
    }
}

/// Why nothing was derived.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A gate denied: no objects at all (no partial derivation).
    #[error("{workload}: {} gate(s) denied", .gates.len())]
    Denied {
        workload: String,
        gates: Vec<DeniedGate>,
    },
    #[error("{workload}: {source}")]
    Placeholder {
        workload: String,
        #[source]
        source: PlaceholderError,
    },
}

fn labels(name: &str) -> Value {
    json!({"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": MANAGER})
}

fn meta(name: &str, ns: &str, owner: &str) -> Value {
    json!({"name": name, "namespace": ns, "labels": labels(owner)})
}

/// A Kubernetes-safe name from parts (lowercase, `-` separated, ≤ 63).
fn object_name(parts: &[&str]) -> String {
    let joined: String = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("-");
    let trimmed = joined.trim_matches('-');
    if trimmed.len() <= 63 {
        return trimmed.to_owned();
    }
    let hash = format!("{:x}", Sha256::digest(joined.as_bytes()));
    format!("{}-{}", trimmed[..54].trim_end_matches('-'), &hash[..8])
}

/// The objects derived for one service, in apply order.
pub fn compile_service(
    svc: &LatticeService,
    report: &GateReport,
    ctx: &CompileContext,
) -> Result<Vec<Value>, CompileError> {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let ns = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let workload = format!("{ns}/{name}");
    if !report.allowed() {
        return Err(CompileError::Denied {
            workload,
            gates: report.denied_gates(),
        });
    }
    let body = &svc.spec.workload;
    let empty = BTreeMap::new();
    let scope = Scope {
        name: &name,
        namespace: &ns,
        annotations: svc.metadata.annotations.as_ref().unwrap_or(&empty),
        labels: svc.metadata.labels.as_ref().unwrap_or(&empty),
        resources: &body.resources,
        peer_ports: &ctx.peer_ports,
        cluster: &ctx.cluster,
        environment: &ctx.environment,
    };
    let placeholder = |source| CompileError::Placeholder {
        workload: workload.clone(),
        source,
    };
    let mut objects = vec![json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": meta(&name, &ns, &name),
        "automountServiceAccountToken": false
    })];
    objects.extend(secret_objects(&name, &ns, body));
    let (claims, mut volumes) = volume_objects(&name, &ns, body);
    objects.extend(claims);
    let mut templated: BTreeMap<String, EnvTemplate> = BTreeMap::new();
    let mut containers = Vec::new();
    for (sidecar, set) in [(false, &body.containers), (true, &body.sidecars)] {
        for (cname, c) in set {
            let (container, extra_objects, extra_volumes, tmpl) =
                compile_container(&name, &ns, cname, c, body, &scope, sidecar)
                    .map_err(placeholder)?;
            containers.push(container);
            objects.extend(extra_objects);
            volumes.extend(extra_volumes);
            if !tmpl.0.is_empty() {
                templated.insert(cname.clone(), tmpl);
            }
        }
    }
    for (cname, (template, keys)) in &templated {
        objects.push(templated_external_secret(
            &object_name(&[&name, cname, "env"]),
            &ns,
            &name,
            body,
            template,
            keys,
        ));
    }
    if let Some(service) = body.service.as_ref().filter(|s| !s.ports.is_empty()) {
        let ports: Vec<Value> = service
            .ports
            .iter()
            .map(|(pname, p)| {
                json!({"name": pname, "port": p.port, "targetPort": p.target_port.unwrap_or(p.port),
                       "protocol": format!("{:?}", p.protocol.unwrap_or_default()).to_uppercase()})
            })
            .collect();
        objects.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(&name, &ns, &name),
            "spec": {"selector": {"app.kubernetes.io/name": name}, "ports": ports}
        }));
    }
    let replicas = svc
        .spec
        .replicas
        .or(svc.spec.autoscaling.as_ref().and_then(|a| a.min))
        .unwrap_or(1);
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
    let mut pod_spec = json!({
        "serviceAccountName": name,
        "automountServiceAccountToken": false,
        "securityContext": pod_security,
        "containers": containers,
    });
    if !volumes.is_empty() {
        pod_spec["volumes"] = Value::Array(volumes);
    }
    if body.host_network == Some(true) {
        pod_spec["hostNetwork"] = json!(true);
    }
    if body.share_process_namespace == Some(true) {
        pod_spec["shareProcessNamespace"] = json!(true);
    }
    if !body.image_pull_secrets.is_empty() {
        pod_spec["imagePullSecrets"] = Value::Array(
            body.image_pull_secrets
                .iter()
                .map(|s| json!({"name": object_name(&[&name, s])}))
                .collect(),
        );
    }
    // Everything the pods are made from, so any change rolls them.
    let hash = format!(
        "{:x}",
        Sha256::digest(serde_json::to_vec(&(&pod_spec, &objects)).unwrap_or_default())
    );
    objects.push(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(&name, &ns, &name),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": labels(&name), "annotations": {CONFIG_HASH: format!("sha256:{}", &hash[..16])}},
                "spec": pod_spec
            }
        }
    }));
    if let Some(a) = &svc.spec.autoscaling {
        objects.push(scaled_object(&name, &ns, replicas, a));
    }
    objects.extend(ingress_objects(&name, &ns, svc));
    objects.extend(canary(&name, &ns, svc));
    if let (Some(ports), obs) = (
        body.service.as_ref().map(|s| &s.ports),
        &svc.spec.observability,
    ) && ports.contains_key("metrics")
    {
        let scrape = obs
            .as_ref()
            .and_then(|o| o.metrics.clone())
            .unwrap_or_default();
        objects.push(json!({
            "apiVersion": "operator.victoriametrics.com/v1beta1", "kind": "VMServiceScrape",
            "metadata": meta(&name, &ns, &name),
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "endpoints": [{"port": "metrics", "path": scrape.path.as_deref().unwrap_or("/metrics"), "interval": scrape.interval.as_deref().unwrap_or("30s")}]
            }
        }));
    }
    if replicas >= 2 {
        objects.push(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta(&name, &ns, &name),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}}}
        }));
    }
    Ok(objects)
}

/// An ExternalSecret per secret resource: listed keys map one to one; no keys means the
/// whole secret (`dataFrom`); a registry credential becomes `kubernetes.io/dockerconfigjson`.
fn secret_objects(name: &str, ns: &str, body: &WorkloadBody) -> Vec<Value> {
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
        out.push(json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": meta(&object_name(&[name, rname]), ns, name), "spec": spec}));
    }
    out
}

/// An ExternalSecret rendering variables that mix text and secrets (ESO templates).
fn templated_external_secret(
    secret: &str,
    ns: &str,
    owner: &str,
    body: &WorkloadBody,
    template: &BTreeMap<String, String>,
    keys: &[(String, String)],
) -> Value {
    let mut provider = "";
    let data: Vec<Value> = keys
        .iter()
        .map(|(resource, key)| {
            let r = &body.resources[resource];
            provider = r.params.as_ref().and_then(|p| p.get("provider")).and_then(Value::as_str).unwrap_or_default();
            json!({"secretKey": format!("{resource}_{key}"), "remoteRef": {"key": r.id.clone().unwrap_or_default(), "property": key}})
        })
        .collect();
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": meta(secret, ns, owner),
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": provider},
            "target": {"name": secret, "creationPolicy": "Owner", "template": {"engineVersion": "v2", "data": template}},
            "data": data
        }
    })
}

/// Variables that mix text and secrets: rendered text per variable, and the secret keys
/// (resource, key) the templates read.
type EnvTemplate = (BTreeMap<String, String>, Vec<(String, String)>);

/// A compiled container, the objects and volumes it needs, and its templated variables.
type Compiled = (Value, Vec<Value>, Vec<Value>, EnvTemplate);

fn compile_container(
    owner: &str,
    ns: &str,
    cname: &str,
    c: &Container,
    body: &WorkloadBody,
    scope: &Scope,
    sidecar: bool,
) -> Result<Compiled, PlaceholderError> {
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
    let mut container = json!({"name": cname, "image": c.image, "imagePullPolicy": "IfNotPresent"});
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
    if !c.files.is_empty() {
        let cm = object_name(&[owner, cname, "files"]);
        let mut data = Map::new();
        let mut binary = Map::new();
        for (i, (path, f)) in c.files.iter().enumerate() {
            let key = format!("file-{i}");
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
            mounts.push(json!({"name": cm, "mountPath": path, "subPath": key, "readOnly": true}));
        }
        if !data.is_empty() || !binary.is_empty() {
            let mut config_map =
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(&cm, ns, owner)});
            if !data.is_empty() {
                config_map["data"] = Value::Object(data);
            }
            if !binary.is_empty() {
                config_map["binaryData"] = Value::Object(binary);
            }
            objects.push(config_map);
            volumes.push(json!({"name": cm, "configMap": {"name": cm}}));
        }
    }
    if !secret_files.is_empty() {
        objects.push(templated_external_secret(
            &secret_name,
            ns,
            owner,
            body,
            &secret_files,
            &secret_file_keys,
        ));
        volumes.push(json!({"name": secret_name, "secret": {"secretName": secret_name}}));
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

/// The GatewayClass of the Gateways Lattice derives for services that name none.
pub const GATEWAY_CLASS: &str = "lattice";

/// Gateway API objects for ingress: an HTTPRoute to the service, the Gateway (listener per
/// host) it attaches to unless `gatewayRef` names one, and a cert-manager Certificate for
/// `tls.mode: auto`.
fn ingress_objects(name: &str, ns: &str, svc: &LatticeService) -> Vec<Value> {
    let Some(ing) = &svc.spec.ingress else {
        return Vec::new();
    };
    let ports = svc
        .spec
        .workload
        .service
        .as_ref()
        .map(|s| s.ports.clone())
        .unwrap_or_default();
    let port_of = |port_name: Option<&String>| {
        port_name
            .and_then(|p| ports.get(p))
            .or_else(|| ports.values().next())
            .map(|p| p.port)
            .unwrap_or(80)
    };
    let mut out = Vec::new();
    let tls_secret = ing.tls.as_ref().map(|t| {
        t.secret_name
            .clone()
            .unwrap_or_else(|| object_name(&[name, "tls"]))
    });
    let (gateway, gateway_ns) = match &ing.gateway_ref {
        Some(r) => (
            r.name.clone(),
            r.namespace.clone().unwrap_or_else(|| ns.to_owned()),
        ),
        None => {
            let gw = object_name(&[name, "ingress"]);
            let listeners: Vec<Value> = ing
                .hosts
                .iter()
                .enumerate()
                .map(|(i, h)| match &tls_secret {
                    Some(secret) => json!({"name": format!("https-{i}"), "hostname": h, "port": 443, "protocol": "HTTPS",
                        "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secret}]}}),
                    None => json!({"name": format!("http-{i}"), "hostname": h, "port": 80, "protocol": "HTTP"}),
                })
                .collect();
            out.push(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": meta(&gw, ns, name),
                "spec": {"gatewayClassName": GATEWAY_CLASS, "listeners": listeners}
            }));
            (gw, ns.to_owned())
        }
    };
    let routes: Vec<(Option<String>, &str, Option<&String>)> = if ing.routes.is_empty() {
        vec![(None, "PathPrefix", None)]
    } else {
        ing.routes
            .iter()
            .map(|r| {
                let t = match r.path_type {
                    Some(lattice_schemas::crd::service::PathType::Exact) => "Exact",
                    _ => "PathPrefix",
                };
                (r.path.clone(), t, r.port.as_ref())
            })
            .collect()
    };
    let rules: Vec<Value> = routes
        .iter()
        .map(|(path, kind, port)| {
            json!({"matches": [{"path": {"type": kind, "value": path.clone().unwrap_or_else(|| "/".into())}}],
                   "backendRefs": [{"name": name, "port": port_of(*port)}]})
        })
        .collect();
    out.push(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": meta(name, ns, name),
        "spec": {"parentRefs": [{"name": gateway, "namespace": gateway_ns}], "hostnames": ing.hosts, "rules": rules}
    }));
    if let (Some(tls), Some(secret)) = (&ing.tls, &tls_secret)
        && tls.mode == lattice_schemas::crd::service::TlsMode::Auto
        && let Some(issuer) = &tls.issuer_ref
    {
        out.push(json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": meta(&object_name(&[name, "tls"]), ns, name),
            "spec": {
                "secretName": secret,
                "dnsNames": ing.hosts,
                "issuerRef": {"name": issuer.name, "kind": issuer.kind.clone().unwrap_or_else(|| "ClusterIssuer".into()),
                              "group": issuer.group.clone().unwrap_or_else(|| "cert-manager.io".into())}
            }
        }));
    }
    out
}

/// A Flagger Canary for `strategy: canary`.
fn canary(name: &str, ns: &str, svc: &LatticeService) -> Option<Value> {
    let deploy = svc.spec.deploy.as_ref()?;
    if deploy.strategy != Some(lattice_schemas::crd::service::Strategy::Canary) {
        return None;
    }
    let c = deploy.canary.as_ref()?;
    let port = svc
        .spec
        .workload
        .service
        .as_ref()
        .and_then(|s| s.ports.values().next())
        .map(|p| p.port)
        .unwrap_or(80);
    let mut spec = json!({
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "service": {"port": port},
        "analysis": {"interval": c.interval, "threshold": c.threshold, "maxWeight": c.max_weight, "stepWeight": c.step_weight}
    });
    if svc.spec.autoscaling.is_some() {
        spec["autoscalerRef"] =
            json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": name});
    }
    Some(
        json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": meta(name, ns, name), "spec": spec}),
    )
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
fn volume_objects(owner: &str, ns: &str, body: &WorkloadBody) -> (Vec<Value>, Vec<Value>) {
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
            claims.push(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(&claim, ns, owner), "spec": spec}));
        }
        volumes.push(json!({"name": object_name(&["vol", rname]), "persistentVolumeClaim": {"claimName": claim}}));
    }
    (claims, volumes)
}

/// Where autoscaling metrics other than cpu and memory are read from (the platform's
/// VictoriaMetrics, Prometheus-compatible).
pub const METRICS_SERVER: &str = "http://vmsingle-lattice.lattice-system.svc:8429";

/// A KEDA ScaledObject: cpu and memory as utilisation, any other metric through Prometheus.
fn scaled_object(
    name: &str,
    ns: &str,
    replicas: i32,
    a: &lattice_schemas::crd::workload::Autoscaling,
) -> Value {
    let triggers: Vec<Value> = a
        .metrics
        .iter()
        .map(|m| match m.metric.as_str() {
            "cpu" | "memory" => json!({"type": m.metric, "metricType": "Utilization", "metadata": {"value": m.target.to_string()}}),
            metric => json!({"type": "prometheus", "metadata": {
                "serverAddress": METRICS_SERVER,
                "query": format!("avg({metric}{{namespace=\"{ns}\",app_kubernetes_io_name=\"{name}\"}})"),
                "threshold": m.target.to_string()
            }}),
        })
        .collect();
    let mut spec = json!({
        "scaleTargetRef": {"name": name},
        "minReplicaCount": a.min.unwrap_or(replicas),
        "maxReplicaCount": a.max,
        "triggers": triggers,
    });
    let mut behavior = serde_json::Map::new();
    if let Some(s) = a.scale_up_stabilization_seconds {
        behavior.insert("scaleUp".into(), json!({"stabilizationWindowSeconds": s}));
    }
    if let Some(s) = a.scale_down_stabilization_seconds {
        behavior.insert("scaleDown".into(), json!({"stabilizationWindowSeconds": s}));
    }
    if !behavior.is_empty() {
        spec["advanced"] = json!({"horizontalPodAutoscalerConfig": {"behavior": behavior}});
    }
    json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": meta(name, ns, name), "spec": spec})
}

/// An ExternalSecret template for text mixed with secret keys (ESO's Go templates; literal
/// `{{` is escaped), recording the keys it reads.
fn render_template(pieces: &[Piece], keys: &mut Vec<(String, String)>) -> String {
    let mut t = String::new();
    for p in pieces {
        match p {
            Piece::Text(s) => t.push_str(&s.replace("{{", "{{ `{{` }}")),
            Piece::Secret { resource, key } => {
                t.push_str(&format!("{{{{ .{resource}_{key} }}}}"));
                if !keys.contains(&(resource.clone(), key.clone())) {
                    keys.push((resource.clone(), key.clone()));
                }
            }
        }
    }
    t
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
