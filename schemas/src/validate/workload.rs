//! Rules for the Score workload body shared by services, job tasks and model roles.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::Ctx;
use super::format::{is_dns_label, is_duration, is_port_name, is_quantity, is_sysctl};
use crate::crd::workload::{Container, Probe, Resource, WorkloadBody};
use crate::manifest::score::SCORE_METADATA_ANNOTATION;
use crate::manifest::yaml::push_pointer;
use crate::placeholder::{self, Segment};

/// Resource types Lattice knows the outputs of.
const SERVICE: &str = "service";
const SECRET: &str = "secret";
const VOLUME: &str = "volume";
const GPU: &str = "gpu";
const EXTERNAL: &str = "external-service";

/// What placeholders in a workload may refer to.
pub(crate) struct Scope<'a> {
    pub resources: &'a BTreeMap<String, Resource>,
    pub meta: &'a ObjectMeta,
}

/// Checks a workload body at JSON pointer `at`.
pub(crate) fn check_body(cx: &mut Ctx, body: &WorkloadBody, at: &str) {
    let m = cx.m;
    let scope = Scope {
        resources: &body.resources,
        meta: m.object.meta(),
    };
    let containers_at = push_pointer(at, "containers");
    if body.containers.is_empty() {
        cx.push(cx.m.error_at_key(
            "lattice::workload::no-containers",
            &containers_at,
            "a workload needs at least one container",
        ));
    }
    let all_names: BTreeSet<&str> = body
        .containers
        .keys()
        .chain(body.sidecars.keys())
        .map(String::as_str)
        .collect();
    for (field, set) in [
        ("containers", &body.containers),
        ("sidecars", &body.sidecars),
    ] {
        let set_at = push_pointer(at, field);
        for (name, c) in set {
            let c_at = push_pointer(&set_at, name);
            if !is_dns_label(name) {
                cx.push(
                    cx.m.error_at_key(
                        "lattice::workload::container-name",
                        &c_at,
                        format!("container name `{name}` is not a DNS label"),
                    )
                    .with_help("use lowercase letters, digits and `-`, at most 63 characters"),
                );
            }
            if field == "sidecars" && body.containers.contains_key(name) {
                cx.push(cx.m.error_at_key(
                    "lattice::workload::duplicate-container",
                    &c_at,
                    format!("sidecar `{name}` has the same name as a container"),
                ));
            }
            check_container(cx, &scope, c, &c_at, &all_names);
        }
    }
    check_start_order(cx, body, at);
    check_ports(cx, body, at);
    check_resources(cx, body, at);
    for (i, name) in body.image_pull_secrets.iter().enumerate() {
        let p = push_pointer(&push_pointer(at, "imagePullSecrets"), &i.to_string());
        // A name that is no resource names an ImageProvider: whether one exists, and may be
        // used, is the `UseImageProvider` decision (which fails closed when it does not).
        match body.resources.get(name) {
            Some(r) if r.type_ == SECRET => {}
            Some(r) => cx.push(cx.m.error_at("lattice::workload::pull-secret", &p, format!("image pull secret `{name}` is a `{}` resource, not a secret", r.type_))
                .with_help("name a `secret` resource (with `params.secretType: kubernetes.io/dockerconfigjson`) or an ImageProvider")),
            None => {}
        }
    }
    for name in body.sysctls.keys() {
        if !is_sysctl(name) {
            cx.push(cx.m.error_at_key(
                "lattice::workload::sysctl",
                &push_pointer(&push_pointer(at, "sysctls"), name),
                format!("`{name}` is not a sysctl name"),
            ));
        }
    }
}

fn check_container(cx: &mut Ctx, scope: &Scope, c: &Container, at: &str, names: &BTreeSet<&str>) {
    if let Err(e) = crate::image::ImageRef::parse(&c.image) {
        cx.push(
            cx.m.error_at("lattice::workload::image", &push_pointer(at, "image"), format!("image `{}` is not a valid reference: {}", c.image, e.reason))
                .with_help("write `registry/repository:tag` or `…@sha256:<digest>`, e.g. `ghcr.io/org/app:1.2.0`"),
        );
    }
    let vars_at = push_pointer(at, "variables");
    for (k, v) in &c.variables {
        check_placeholders(cx, scope, v, &push_pointer(&vars_at, k));
    }
    let files_at = push_pointer(at, "files");
    for (path, f) in &c.files {
        let p = push_pointer(&files_at, path);
        if !path.starts_with('/') {
            cx.push(
                cx.m.error_at_key(
                    "lattice::workload::file-path",
                    &p,
                    format!("file path `{path}` is not absolute"),
                )
                .with_help("mount paths start with `/`"),
            );
        }
        let given = [
            f.content.is_some(),
            f.source.is_some(),
            f.binary_content.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            cx.push(
                cx.m.error_at_key("lattice::workload::file-content", &p, format!("file `{path}` needs exactly one of `content`, `source` or `binaryContent` (has {given})")),
            );
        }
        if let Some(content) = &f.content
            && f.no_expand != Some(true)
        {
            check_placeholders(cx, scope, content, &push_pointer(&p, "content"));
        }
    }
    let vols_at = push_pointer(at, "volumes");
    for (path, v) in &c.volumes {
        let p = push_pointer(&vols_at, path);
        if !path.starts_with('/') {
            cx.push(
                cx.m.error_at_key(
                    "lattice::workload::volume-path",
                    &p,
                    format!("volume path `{path}` is not absolute"),
                )
                .with_help("mount paths start with `/`"),
            );
        }
        check_volume_source(cx, scope, &v.source, &push_pointer(&p, "source"));
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let value = match probe {
            "livenessProbe" => &c.liveness_probe,
            "readinessProbe" => &c.readiness_probe,
            _ => &c.startup_probe,
        };
        if let Some(p) = value {
            check_probe(cx, p, &push_pointer(at, probe));
        }
    }
    for other in c.before.keys() {
        if !names.contains(other.as_str()) {
            cx.push(cx.m.error_at_key(
                "lattice::workload::before",
                &push_pointer(&push_pointer(at, "before"), other),
                format!("`before` names `{other}`, which is not a container of this workload"),
            ));
        }
    }
    if let Some(sec) = &c.security {
        let sec_at = push_pointer(at, "security");
        for (i, cap) in sec.capabilities.iter().enumerate() {
            let p = push_pointer(&push_pointer(&sec_at, "capabilities"), &i.to_string());
            if let Some(bare) = cap.strip_prefix("CAP_") {
                cx.push(
                    cx.m.error_at(
                        "lattice::security::capability",
                        &p,
                        format!("write capability `{bare}`, not `{cap}`"),
                    )
                    .with_help("Kubernetes names capabilities without the `CAP_` prefix"),
                );
            } else if cap.is_empty()
                || !cap
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                cx.push(
                    cx.m.error_at(
                        "lattice::security::capability",
                        &p,
                        format!("`{cap}` is not a capability name"),
                    )
                    .with_help("capabilities are upper case, e.g. `NET_ADMIN`"),
                );
            }
        }
        for (field, value) in [
            ("seccompProfile", &sec.seccomp_profile),
            ("apparmorProfile", &sec.apparmor_profile),
        ] {
            if let Some(v) = value
                && !(v == "RuntimeDefault"
                    || v == "Unconfined"
                    || v.strip_prefix("Localhost/").is_some_and(|p| !p.is_empty()))
            {
                cx.push(
                    cx.m.error_at(
                        "lattice::security::profile",
                        &push_pointer(&sec_at, field),
                        format!("`{v}` is not a profile"),
                    )
                    .with_help("use `RuntimeDefault`, `Unconfined` or `Localhost/<profile>`"),
                );
            }
        }
        if sec.run_as_non_root == Some(true) && sec.run_as_user == Some(0) {
            cx.push(cx.m.error_at(
                "lattice::security::run-as",
                &push_pointer(&sec_at, "runAsUser"),
                "`runAsUser: 0` contradicts `runAsNonRoot: true`",
            ));
        }
    }
    if let Some(res) = &c.resources {
        let res_at = push_pointer(at, "resources");
        if let (Some(l), Some(r)) = (&res.limits, &res.requests) {
            for (field, lim, req) in [("memory", &l.memory, &r.memory), ("cpu", &l.cpu, &r.cpu)] {
                if let (Some(lim), Some(req)) = (lim, req)
                    && let (Some(lv), Some(rv)) = (
                        super::format::quantity_value(lim),
                        super::format::quantity_value(req),
                    )
                    && rv > lv
                {
                    cx.push(cx.m.error_at(
                        "lattice::workload::requests-above-limits",
                        &push_pointer(&push_pointer(&res_at, "requests"), field),
                        format!("{field} request `{req}` is above its limit `{lim}`"),
                    ));
                }
            }
        }
    }
}

fn check_probe(cx: &mut Ctx, p: &Probe, at: &str) {
    match (&p.http_get, &p.exec) {
        (Some(_), Some(_)) => cx.push(cx.m.error_at_key(
            "lattice::workload::probe",
            at,
            "a probe has either `httpGet` or `exec`, not both",
        )),
        (None, None) => cx.push(cx.m.error_at_key(
            "lattice::workload::probe",
            at,
            "a probe needs `httpGet` or `exec`",
        )),
        (None, Some(e)) if e.command.is_empty() => cx.push(cx.m.error_at_key(
            "lattice::workload::probe",
            &push_pointer(at, "exec"),
            "an `exec` probe needs a command",
        )),
        _ => {}
    }
}

fn check_ports(cx: &mut Ctx, body: &WorkloadBody, at: &str) {
    let Some(service) = &body.service else { return };
    let ports_at = push_pointer(&push_pointer(at, "service"), "ports");
    let mut seen: BTreeMap<(i32, String), &str> = BTreeMap::new();
    // In file order, so the second declaration is the one reported.
    let mut ports: Vec<_> = service.ports.iter().collect();
    ports.sort_by_key(|(name, _)| cx.m.key_span(&push_pointer(&ports_at, name)).start);
    for (name, port) in ports {
        let p = push_pointer(&ports_at, name);
        if !is_port_name(name) {
            cx.push(
                cx.m.error_at_key("lattice::workload::port-name", &p, format!("port name `{name}` is not a valid port name"))
                    .with_help("port names become container port names: at most 15 lowercase letters, digits and `-`, with at least one letter"),
            );
        }
        let proto = format!("{:?}", port.protocol.unwrap_or_default());
        if let Some(first) = seen.insert((port.port, proto.clone()), name) {
            cx.push(
                cx.m.error_at(
                    "lattice::workload::duplicate-port",
                    &push_pointer(&p, "port"),
                    format!(
                        "port {} ({}) is already served as `{first}`",
                        port.port,
                        proto.to_uppercase()
                    ),
                )
                .with_help("each port number may be served once per protocol"),
            );
        }
    }
}

fn check_resources(cx: &mut Ctx, body: &WorkloadBody, at: &str) {
    let res_at = push_pointer(at, "resources");
    for (name, r) in &body.resources {
        check_resource(cx, name, r, &push_pointer(&res_at, name));
    }
}

/// Checks one resource declaration (shared with packages).
pub(crate) fn check_resource(cx: &mut Ctx, name: &str, r: &Resource, p: &str) {
    let param = |k: &str| r.params.as_ref().and_then(|m| m.get(k));
    let params_at = push_pointer(p, "params");
    if r.type_ != SERVICE {
        for (field, set) in [
            ("direction", r.direction.is_some()),
            ("namespace", r.namespace.is_some()),
            ("cluster", r.cluster.is_some()),
        ] {
            if set {
                cx.push(cx.m.error_at_key(
                    "lattice::resource::service-only",
                    &push_pointer(p, field),
                    format!(
                        "`{field}` applies only to `service` resources; `{name}` is a `{}`",
                        r.type_
                    ),
                ));
            }
        }
    }
    match r.type_.as_str() {
        SERVICE => {
            if let Some(ns) = &r.namespace
                && !is_dns_label(ns)
            {
                cx.push(cx.m.error_at("lattice::resource::namespace", &push_pointer(p, "namespace"), format!("`{ns}` is not a namespace name")));
            }
            if let Some(cluster) = &r.cluster
                && !is_dns_label(cluster)
            {
                cx.push(cx.m.error_at("lattice::resource::cluster", &push_pointer(p, "cluster"), format!("`{cluster}` is not a cluster name")));
            }
            if r.cluster.is_some() && name == "*" {
                cx.push(
                    cx.m.error_at_key("lattice::resource::cluster", p, "a wildcard cannot name another cluster")
                        .with_help("declare each service in another cluster by name: cross-cluster edges are matched one by one"),
                );
            }
        }
        SECRET => {
            match param("provider") {
                Some(Value::String(s)) if !s.is_empty() => {}
                Some(_) => cx.push(cx.m.error_at("lattice::resource::secret-provider", &push_pointer(&params_at, "provider"), "`params.provider` must name a SecretProvider")),
                None => cx.push(
                    cx.m.error_at_key("lattice::resource::secret-provider", p, format!("secret `{name}` has no provider"))
                        .with_help("set `params.provider` to the name of a SecretProvider"),
                ),
            }
            if r.id.as_deref().is_none_or(str::is_empty) {
                cx.push(
                    cx.m.error_at_key("lattice::resource::secret-id", p, format!("secret `{name}` has no `id`"))
                        .with_help("set `id` to the secret's path in the provider, e.g. `database/prod/creds`"),
                );
            }
            if let Some(keys) = param("keys")
                && !keys.as_array().is_some_and(|a| a.iter().all(|k| k.as_str().is_some_and(|s| !s.is_empty())))
            {
                cx.push(cx.m.error_at("lattice::resource::secret-keys", &push_pointer(&params_at, "keys"), "`params.keys` must be a list of key names"));
            }
            check_duration_param(cx, param("refreshInterval"), &push_pointer(&params_at, "refreshInterval"));
        }
        VOLUME => {
            match param("size") {
                Some(Value::String(s)) if is_quantity(s) => {}
                Some(v) => cx.push(
                    cx.m.error_at("lattice::resource::volume-size", &push_pointer(&params_at, "size"), format!("volume size {v} is not a quantity"))
                        .with_help("write a size such as `10Gi`"),
                ),
                None if r.id.is_none() => cx.push(
                    cx.m.error_at_key("lattice::resource::volume", p, format!("volume `{name}` has neither `params.size` nor `id`"))
                        .with_help("give `params.size` to own a new volume, or `id` to use one owned by another workload"),
                ),
                None => {}
            }
        }
        GPU => {
            match param("count") {
                None => {}
                Some(v) if v.as_i64().is_some_and(|n| n >= 1) => {}
                Some(v) => cx.push(cx.m.error_at("lattice::resource::gpu", &push_pointer(&params_at, "count"), format!("GPU count {v} must be a whole number of at least 1"))),
            }
            if let Some(v) = param("memory")
                && !v.as_str().is_some_and(is_quantity)
            {
                cx.push(cx.m.error_at("lattice::resource::gpu", &push_pointer(&params_at, "memory"), format!("GPU memory {v} is not a quantity")).with_help("write memory per GPU such as `20Gi`"));
            }
        }
        EXTERNAL => {
            if param("host").and_then(Value::as_str).is_none_or(str::is_empty) {
                cx.push(cx.m.error_at_key("lattice::resource::external", p, format!("external service `{name}` has no `params.host`")));
            }
            if let Some(port) = param("port")
                && !port.as_i64().is_some_and(|n| (1..=65535).contains(&n))
            {
                cx.push(cx.m.error_at("lattice::resource::external", &push_pointer(&params_at, "port"), format!("port {port} is not between 1 and 65535")));
            }
        }
        _ => {}
    }
}

fn check_duration_param(cx: &mut Ctx, v: Option<&Value>, p: &str) {
    match v {
        None => {}
        Some(Value::String(s)) if is_duration(s) => {}
        Some(v) => cx.push(
            cx.m.error_at(
                "lattice::format::duration",
                p,
                format!("{v} is not a duration"),
            )
            .with_help("write a duration such as `30s`, `5m` or `1h`"),
        ),
    }
}

fn check_volume_source(cx: &mut Ctx, scope: &Scope, source: &str, p: &str) {
    match placeholder::parse(source) {
        Ok(segments) => {
            if let [Segment::Ref { path, .. }] = segments.as_slice()
                && path.len() == 2
                && path[0] == "resources"
            {
                match scope.resources.get(&path[1]) {
                    Some(r) if r.type_ == VOLUME => return,
                    Some(r) => {
                        cx.push(cx.m.error_at(
                            "lattice::placeholder::volume",
                            p,
                            format!(
                                "volume source names `{}`, a `{}` resource, not a volume",
                                path[1], r.type_
                            ),
                        ));
                        return;
                    }
                    None => {}
                }
            }
            check_placeholders(cx, scope, source, p);
        }
        Err(_) => check_placeholders(cx, scope, source, p),
    }
}

/// Checks every placeholder in a string value at `p`.
pub(crate) fn check_placeholders(cx: &mut Ctx, scope: &Scope, value: &str, p: &str) {
    let segments = match placeholder::parse(value) {
        Ok(s) => s,
        Err(e) => {
            let span = cx.m.span_in_scalar(p, e.span);
            cx.push(crate::diagnostics::Finding::error("lattice::placeholder::syntax", &cx.m.file, span, e.message).with_help("placeholders look like `${resources.NAME.OUTPUT}`; write `$$` for a literal `$`"));
            return;
        }
    };
    for seg in segments {
        let Segment::Ref { path, span } = seg else {
            continue;
        };
        if let Some((message, help)) = resolve(scope, &path) {
            let text = format!("${{{}}}", path.join("."));
            let at = cx.m.span_in_scalar(p, span);
            let mut f = crate::diagnostics::Finding::error(
                "lattice::placeholder::unresolved",
                &cx.m.file,
                at,
                format!("placeholder `{text}` {message}"),
            )
            .with_label("cannot be resolved");
            if let Some(h) = help {
                f = f.with_help(h);
            }
            cx.push(f);
        }
    }
}

/// Why a reference cannot resolve, or `None` when it can.
fn resolve(scope: &Scope, path: &[String]) -> Option<(String, Option<String>)> {
    let rest: Vec<&str> = path.iter().skip(1).map(String::as_str).collect();
    match path[0].as_str() {
        "metadata" => resolve_metadata(scope.meta, &rest),
        "cluster" => match rest.as_slice() {
            ["name"] | ["environment"] => None,
            _ => Some((
                "is not a cluster fact".into(),
                Some("use `${cluster.name}` or `${cluster.environment}`".into()),
            )),
        },
        "resources" => {
            let name = rest.first()?;
            let Some(r) = scope.resources.get(*name) else {
                let declared: Vec<&String> = scope.resources.keys().collect();
                let help = match crate::manifest::suggest(name, &declared) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if declared.is_empty() => format!("declare `{name}` under `resources`"),
                    None => format!(
                        "declare `{name}` under `resources` (declared: {})",
                        declared
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                return Some((
                    format!("names resource `{name}`, which is not declared"),
                    Some(help),
                ));
            };
            resolve_output(name, r, &rest[1..])
        }
        other => Some((
            format!("has unknown root `{other}`"),
            Some("placeholders start with `metadata`, `resources` or `cluster`".into()),
        )),
    }
}

fn resolve_metadata(meta: &ObjectMeta, rest: &[&str]) -> Option<(String, Option<String>)> {
    let has = |map: &Option<BTreeMap<String, String>>, k: &str| {
        map.as_ref().is_some_and(|m| m.contains_key(k))
    };
    match rest {
        ["name"] | ["namespace"] => None,
        ["annotations", k] if has(&meta.annotations, k) => None,
        ["labels", k] if has(&meta.labels, k) => None,
        ["annotations", k] => Some((format!("names annotation `{k}`, which is not set"), None)),
        ["labels", k] => Some((format!("names label `{k}`, which is not set"), None)),
        [k] => {
            // Score documents may carry their own metadata keys.
            let extra = meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(SCORE_METADATA_ANNOTATION))
                .and_then(|s| serde_json::from_str::<serde_json::Map<String, Value>>(s).ok());
            if extra.is_some_and(|e| e.contains_key(*k)) {
                None
            } else {
                Some((
                    format!("names metadata `{k}`, which is not set"),
                    Some(
                        "metadata offers `name`, `namespace`, `annotations.KEY` and `labels.KEY`"
                            .into(),
                    ),
                ))
            }
        }
        _ => Some(("is not a metadata field".into(), None)),
    }
}

fn resolve_output(name: &str, r: &Resource, output: &[&str]) -> Option<(String, Option<String>)> {
    let outputs: &[&str] = match r.type_.as_str() {
        SERVICE => &["host", "port", "url", "name", "namespace"],
        EXTERNAL => &["host", "port", "url"],
        GPU => &["count", "memory", "model"],
        VOLUME => &["source"],
        SECRET => {
            let keys: Option<Vec<String>> = r
                .params
                .as_ref()
                .and_then(|p| p.get("keys"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                });
            return match (output, keys) {
                ([], _) => Some((
                    format!("names secret `{name}` without a key"),
                    Some(format!("name a key, e.g. `${{resources.{name}.password}}`")),
                )),
                ([k], Some(keys)) if !keys.iter().any(|x| x == k) => Some((
                    format!("names key `{k}`, which secret `{name}` does not list"),
                    Some(format!("`params.keys` lists {}", keys.join(", "))),
                )),
                ([_], _) => None,
                _ => Some(("has more than one key segment".into(), None)),
            };
        }
        // Other Score types: their outputs are the provisioner's to define.
        _ => return None,
    };
    match output {
        [] if r.type_ == VOLUME => None,
        [] => Some((
            format!("names `{name}` without an output"),
            Some(format!(
                "outputs of a {} resource: {}",
                r.type_,
                outputs.join(", ")
            )),
        )),
        [o] if outputs.contains(o) => None,
        _ => Some((
            format!(
                "asks `{name}` for `{}`, which a {} resource does not provide",
                output.join("."),
                r.type_
            ),
            Some(format!(
                "outputs of a {} resource: {}",
                r.type_,
                outputs.join(", ")
            )),
        )),
    }
}

/// Score `before` must leave some order in which to start the containers.
fn check_start_order(cx: &mut Ctx, body: &WorkloadBody, at: &str) {
    let all = || body.containers.iter().chain(&body.sidecars);
    // Kahn's algorithm: whatever is never freed sits on a cycle.
    let mut waiting: BTreeMap<&str, BTreeSet<&str>> = all()
        .map(|(n, c)| {
            let deps = c
                .before
                .keys()
                .map(String::as_str)
                .filter(|d| body.containers.contains_key(*d) || body.sidecars.contains_key(*d))
                .collect();
            (n.as_str(), deps)
        })
        .collect();
    loop {
        let ready: Vec<&str> = waiting
            .iter()
            .filter(|(_, deps)| deps.is_empty())
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            break;
        }
        for n in &ready {
            waiting.remove(n);
        }
        for deps in waiting.values_mut() {
            for n in &ready {
                deps.remove(n);
            }
        }
    }
    if let Some(first) = waiting.keys().next() {
        let field = if body.containers.contains_key(*first) {
            "containers"
        } else {
            "sidecars"
        };
        let names: Vec<&str> = waiting.keys().copied().collect();
        cx.push(
            cx.m.error_at_key(
                "lattice::workload::before-cycle",
                &push_pointer(&push_pointer(&push_pointer(at, field), first), "before"),
                format!(
                    "containers {} wait for each other (`before`); no start order exists",
                    names.join(", ")
                ),
            )
            .with_help("remove one `before` entry so the containers can start one after another"),
        );
    }
}
