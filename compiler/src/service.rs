//! A `LatticeService`: its pods as a Deployment, and what a long-running service needs around
//! them (Service, autoscaling, disruption budget, ingress, canary, metrics scrape).

use lattice_schemas::crd::LatticeService;
use serde_json::{Value, json};

use crate::objects::{
    CompileContext, CompileError, disruption_budget, meta, object, object_name, scope,
    service_account, service_object,
};
use crate::pod::{Part, PodOptions, pod};

/// The objects of one service whose gates all allowed, in apply order.
pub fn compile_service(
    svc: &LatticeService,
    ctx: &CompileContext,
) -> Result<Vec<Value>, CompileError> {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let ns = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let body = &svc.spec.workload;
    let empty = Default::default();
    let scope = scope(
        (
            svc.metadata.annotations.as_ref(),
            svc.metadata.labels.as_ref(),
        ),
        &name,
        &ns,
        body,
        ctx,
        &empty,
    );
    let part = Part::new(&name, &ns, "");
    let options = PodOptions {
        restart_policy: None,
        runtime_enforcement: svc
            .spec
            .observability
            .as_ref()
            .and_then(|o| o.runtime_enforcement)
            .unwrap_or(true),
    };
    let pod = pod(&part, body, &scope, &options)?;
    let mut objects = vec![service_account(&name, &ns)];
    objects.extend(pod.objects);
    objects.extend(service_object(&name, &ns, &name, body, &part.selector()));
    let replicas = svc
        .spec
        .replicas
        .or(svc.spec.autoscaling.as_ref().and_then(|a| a.min))
        .unwrap_or(1);
    let mut deployment = deployment(
        meta(&name, &ns, &name),
        replicas,
        part.selector(),
        pod.template,
    );
    if svc.spec.autoscaling.is_some() {
        leave_replicas_to_the_autoscaler(&mut deployment);
    }
    objects.push(deployment);
    if let Some(a) = &svc.spec.autoscaling {
        objects.push(scaled_object(&name, &part, replicas, a));
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
                "selector": {"matchLabels": part.selector()},
                "endpoints": [{"port": "metrics", "path": scrape.path.as_deref().unwrap_or("/metrics"), "interval": scrape.interval.as_deref().unwrap_or("30s")}]
            }
        }));
    }
    if replicas >= 2 {
        objects.push(disruption_budget(&name, &ns, &name, &part.selector()));
    }
    Ok(objects)
}

/// A Deployment of `replicas` pods from `template`, selected by `selector`.
pub(crate) fn deployment(
    metadata: Value,
    replicas: i32,
    selector: Value,
    template: Value,
) -> Value {
    object([
        ("apiVersion", "apps/v1".into()),
        ("kind", "Deployment".into()),
        ("metadata", metadata),
        (
            "spec",
            object([
                ("replicas", replicas.into()),
                ("selector", object([("matchLabels", selector)])),
                ("template", template),
            ]),
        ),
    ])
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
    let (gateway, gateway_ns): (String, String) = match &ing.gateway_ref {
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
    out.extend(from_gateway(name, ns, &gateway, &gateway_ns, &ports));
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

/// What lets an exposed service's gateway through its namespace's default deny (the hosts
/// were allowed by `ExposeHost`): L4 ingress from the gateway's pods (the
/// `gateway.networking.k8s.io/gateway-name` label Gateway API implementations put on
/// them) and L7 from identities of the gateway's namespace, on the service's ports.
fn from_gateway(
    name: &str,
    ns: &str,
    gateway: &str,
    gateway_ns: &str,
    ports: &std::collections::BTreeMap<String, lattice_schemas::crd::workload::ServicePort>,
) -> Vec<Value> {
    let targets: std::collections::BTreeSet<i32> = ports
        .values()
        .map(|p| p.target_port.unwrap_or(p.port))
        .collect();
    if targets.is_empty() {
        return Vec::new();
    }
    let meta = meta(&object_name(&[name, "from-gateway"]), ns, name);
    let selector = json!({"app.kubernetes.io/name": name});
    let cilium_ports = crate::objects::tcp_ports(&targets);
    vec![
        json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": meta,
            "spec": {"endpointSelector": {"matchLabels": selector}, "ingress": [{
                "fromEndpoints": [{"matchLabels": {
                    "k8s:io.kubernetes.pod.namespace": gateway_ns,
                    "gateway.networking.k8s.io/gateway-name": gateway
                }}],
                "toPorts": cilium_ports
            }]}
        }),
        json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": meta,
            "spec": {"selector": {"matchLabels": selector}, "action": "ALLOW", "rules": [{
                "from": [{"source": {"namespaces": [gateway_ns]}}],
                "to": [{"operation": {"ports": targets.iter().map(|p| p.to_string()).collect::<Vec<_>>()}}]
            }]}
        }),
    ]
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

/// Where autoscaling metrics other than cpu and memory are read from (the platform's
/// VictoriaMetrics, Prometheus-compatible).
pub const METRICS_SERVER: &str = "http://vmsingle-lattice.lattice-system.svc:8429";

/// A KEDA ScaledObject for the Deployment `name` (pods of `part`): cpu and memory as
/// utilisation, any other metric averaged over the part's pods through Prometheus.
/// An autoscaled Deployment carries no replica count: the autoscaler owns it, and one
/// applied (or put back as drift) would undo its scaling. It starts at Kubernetes' default
/// of one and the ScaledObject's `minReplicaCount` brings it up.
pub(crate) fn leave_replicas_to_the_autoscaler(deployment: &mut Value) {
    if let Some(spec) = deployment["spec"].as_object_mut() {
        spec.remove("replicas");
    }
}

pub(crate) fn scaled_object(
    name: &str,
    part: &Part,
    replicas: i32,
    a: &lattice_schemas::crd::workload::Autoscaling,
) -> Value {
    let ns = part.ns;
    // Prometheus label names of the pod labels (`.`, `/` and `-` become `_`).
    let matchers: String = part
        .selector()
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let k: String = k
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!(",{k}=\"{}\"", v.as_str().unwrap_or_default())
        })
        .collect();
    let triggers: Vec<Value> = a
        .metrics
        .iter()
        .map(|m| match m.metric.as_str() {
            "cpu" | "memory" => json!({"type": m.metric, "metricType": "Utilization", "metadata": {"value": m.target.to_string()}}),
            metric => json!({"type": "prometheus", "metadata": {
                "serverAddress": METRICS_SERVER,
                "query": format!("avg({metric}{{namespace=\"{ns}\"{matchers}}})"),
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
    json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": meta(name, ns, part.workload), "spec": spec})
}
