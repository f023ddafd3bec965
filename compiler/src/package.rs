//! A `LatticePackage`: the chart's source and a Flux `HelmRelease`. Flux installs, upgrades,
//! rolls back and removes the chart; Lattice decides whether it may (the package's gates)
//! and what it is given.
//!
//! Values that hold secrets never appear in the release. Each string holding a
//! `${resources.NAME.KEY}` of a secret resource moves (with the list it is in, since Helm
//! replaces lists whole) into a values document that an ExternalSecret renders from the
//! secret store; the release reads it through `valuesFrom`. Flux merges `valuesFrom` first
//! and `values` over it, so nothing inline shadows a secret.

use std::collections::BTreeMap;

use lattice_schemas::crd::LatticePackage;
use serde_json::{Map, Value, json};

use crate::objects::{CompileContext, CompileError, meta, object_name};
use crate::placeholders::{Piece, Scope};
use crate::secrets::{render_json_template, templated_external_secret, text_of};

/// How often Flux reconciles a package that does not say.
pub const DEFAULT_INTERVAL: &str = "10m";
/// The media type of a Helm chart's layer in an OCI artifact.
const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// The key the values document has in its Secret (`valuesFrom`'s default).
const VALUES_KEY: &str = "values.yaml";

/// The objects of one package whose gates all allowed, in apply order: the values
/// ExternalSecret (if any value holds a secret), the chart's source, the release.
pub fn compile_package(
    pkg: &LatticePackage,
    ctx: &CompileContext,
) -> Result<Vec<Value>, CompileError> {
    let name = pkg.metadata.name.clone().unwrap_or_default();
    let ns = pkg
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let workload = format!("{ns}/{name}");
    let empty = BTreeMap::new();
    let scope = Scope {
        name: &name,
        namespace: &ns,
        annotations: pkg.metadata.annotations.as_ref().unwrap_or(&empty),
        labels: pkg.metadata.labels.as_ref().unwrap_or(&empty),
        resources: &pkg.spec.resources,
        peer_ports: &ctx.peer_ports,
        cluster: &ctx.cluster,
        environment: &ctx.environment,
        image_providers: &ctx.image_providers,
        digests: &ctx.digests,
    };
    let spec = &pkg.spec;
    let interval = spec.interval.as_deref().unwrap_or(DEFAULT_INTERVAL);

    let values = Value::Object(
        spec.values
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<Map<String, Value>>(),
    );
    let (inline, secret) = split(&values, &scope).map_err(|source| CompileError::Placeholder {
        workload: workload.clone(),
        source,
    })?;

    let mut objects = Vec::new();
    let mut release = json!({
        "interval": interval,
        "install": {"remediation": {"retries": 3}},
        "upgrade": {"remediation": {"retries": 3, "remediateLastFailure": true}},
        "driftDetection": {"mode": "enabled"},
    });
    if let Some(secret) = secret {
        let values_secret = object_name(&[&name, "values"]);
        let mut keys = Vec::new();
        let resolved = |s: &str| scope.resolve(s).ok();
        let document = render_json_template(&secret, &resolved, &mut keys);
        objects.push(templated_external_secret(
            &values_secret,
            &ns,
            &name,
            &spec.resources,
            &BTreeMap::from([(VALUES_KEY.to_owned(), document)]),
            &keys,
        ));
        release["valuesFrom"] =
            json!([{"kind": "Secret", "name": values_secret, "valuesKey": VALUES_KEY}]);
    }
    if let Some(inline) = inline.filter(|v| v.as_object().is_some_and(|m| !m.is_empty())) {
        release["values"] = inline;
    }

    let chart = &spec.chart;
    if let Some(registry) = chart.repository.strip_prefix("oci://") {
        // An OCI registry holds each chart as its own artifact: the source is the chart.
        let reference = if is_exact_version(&chart.version) {
            json!({"tag": chart.version})
        } else {
            json!({"semver": chart.version})
        };
        objects.push(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": meta(&name, &ns, &name),
            "spec": {
                "interval": interval,
                "url": format!("oci://{}/{}", registry.trim_end_matches('/'), chart.name),
                "ref": reference,
                "layerSelector": {"mediaType": HELM_CHART_LAYER, "operation": "copy"},
            }
        }));
        release["chartRef"] = json!({"kind": "OCIRepository", "name": name});
    } else {
        objects.push(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
            "metadata": meta(&name, &ns, &name),
            "spec": {"interval": interval, "url": chart.repository}
        }));
        release["chart"] = json!({"spec": {
            "chart": chart.name,
            "version": chart.version,
            "sourceRef": {"kind": "HelmRepository", "name": name},
            "interval": interval,
        }});
    }
    if let Some(t) = &spec.timeout {
        release["timeout"] = json!(t);
    }
    if !spec.depends_on.is_empty() {
        release["dependsOn"] = Value::Array(
            spec.depends_on
                .iter()
                .map(|d| {
                    let (dns, dname) = d.split_once('/').unwrap_or((&ns, d));
                    json!({"name": dname, "namespace": dns})
                })
                .collect(),
        );
    }
    objects.push(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": meta(&name, &ns, &name),
        "spec": release,
    }));
    Ok(objects)
}

/// `values` as (what the release may carry inline, what must come from the secret store):
/// a string holding a secret goes to the second, and so does a whole list holding one
/// (Helm merges maps key by key but replaces lists). Placeholders without secrets are
/// resolved in place.
fn split(
    value: &Value,
    scope: &Scope,
) -> Result<(Option<Value>, Option<Value>), crate::placeholders::PlaceholderError> {
    Ok(match value {
        Value::String(s) => {
            let pieces = scope.resolve(s)?;
            if pieces.iter().any(|p| matches!(p, Piece::Secret { .. })) {
                (None, Some(value.clone()))
            } else {
                (Some(Value::String(text_of(&pieces))), None)
            }
        }
        Value::Array(items) => {
            let mut any_secret = false;
            let mut resolved = Vec::with_capacity(items.len());
            for item in items {
                let (inline, secret) = split(item, scope)?;
                any_secret |= secret.is_some();
                resolved.push(inline);
            }
            if any_secret {
                (None, Some(value.clone()))
            } else {
                (
                    Some(Value::Array(resolved.into_iter().flatten().collect())),
                    None,
                )
            }
        }
        Value::Object(map) => {
            let (mut inline, mut secret) = (Map::new(), Map::new());
            for (k, v) in map {
                let (i, s) = split(v, scope)?;
                if let Some(i) = i {
                    inline.insert(k.clone(), i);
                }
                if let Some(s) = s {
                    secret.insert(k.clone(), s);
                }
            }
            (
                // A map whose every entry is secret is not also written inline, empty.
                (!inline.is_empty() || secret.is_empty()).then_some(Value::Object(inline)),
                (!secret.is_empty()).then_some(Value::Object(secret)),
            )
        }
        other => (Some(other.clone()), None),
    })
}

/// Whether `version` names one version (an OCI tag) rather than a range.
fn is_exact_version(version: &str) -> bool {
    let core = version.strip_prefix('v').unwrap_or(version);
    let core = core.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(yaml: &str) -> LatticePackage {
        let file = lattice_schemas::manifest::source_from_bytes("p.yaml", yaml.as_bytes()).unwrap();
        let loaded = lattice_schemas::manifest::load_source(&file);
        match &loaded.manifests[..] {
            [m] => match &m.object {
                lattice_schemas::manifest::Object::Package(p) => p.clone(),
                other => panic!("not a package: {other:?}"),
            },
            _ => panic!("{:?}", loaded.findings),
        }
    }

    fn kinds(objects: &[Value]) -> Vec<&str> {
        objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect()
    }

    const GRAFANA: &str = r#"
apiVersion: lattice.dev/v1alpha1
kind: LatticePackage
metadata: {name: grafana, namespace: platform}
spec:
  chart: {repository: "https://grafana.github.io/helm-charts", name: grafana, version: "8.8.2"}
  dependsOn: [loki, monitoring/prometheus]
  values:
    replicas: 1
    adminPassword: ${resources.admin.password}
    datasource: "postgres://grafana:${resources.admin.password}@db:5432/{{ not a template }}"
    server: {root_url: "https://${metadata.name}.example.com", port: 3000}
    extraEnv: [{name: A, value: "1"}, {name: TOKEN, value: "${resources.admin.token}"}]
    plain: [a, b]
  resources:
    admin: {type: secret, id: platform/grafana/admin, params: {provider: vault, keys: [password, token]}}
"#;

    #[test]
    fn secrets_leave_the_release_for_a_rendered_values_document() {
        let objects = compile_package(&package(GRAFANA), &CompileContext::default()).unwrap();
        assert_eq!(
            kinds(&objects),
            ["ExternalSecret", "HelmRepository", "HelmRelease"]
        );
        let release = &objects[2]["spec"];
        // Inline: what holds no secret, placeholders resolved; no secret-bearing key at all.
        assert_eq!(
            release["values"],
            json!({"replicas": 1, "server": {"root_url": "https://grafana.example.com", "port": 3000}, "plain": ["a", "b"]})
        );
        assert_eq!(
            release["valuesFrom"],
            json!([{"kind": "Secret", "name": "grafana-values", "valuesKey": "values.yaml"}])
        );
        assert_eq!(
            release["dependsOn"],
            json!([{"name": "loki", "namespace": "platform"}, {"name": "prometheus", "namespace": "monitoring"}])
        );
        assert_eq!(
            release["chart"]["spec"]["sourceRef"],
            json!({"kind": "HelmRepository", "name": "grafana"})
        );
        let es = &objects[0]["spec"];
        let doc = es["target"]["template"]["data"]["values.yaml"]
            .as_str()
            .unwrap();
        // Each secret string is one toJson expression; the list holding one moves whole;
        // literal `{{` is escaped.
        assert!(
            doc.contains(r#""adminPassword":{{ .admin_password | toJson }}"#),
            "{doc}"
        );
        assert!(
            doc.contains(r#"{{ list "postgres://grafana:" .admin_password "@db:5432/{{ not a template }}" | join "" | toJson }}"#),
            "{doc}"
        );
        assert!(
            doc.contains(r#""extraEnv":[{"name":"A","value":"1"},{"name":"TOKEN","value":{{ .admin_token | toJson }}}]"#),
            "{doc}"
        );
        let read: Vec<&str> = es["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["secretKey"].as_str().unwrap())
            .collect();
        assert_eq!(read, ["admin_password", "admin_token"]);
    }

    #[test]
    fn an_oci_chart_is_its_own_source_pinned_by_tag_or_ranged_by_semver() {
        let yaml = r#"
apiVersion: lattice.dev/v1alpha1
kind: LatticePackage
metadata: {name: redis, namespace: shop}
spec:
  chart: {repository: "oci://registry.example.com/charts/", name: redis, version: "19.6.4"}
  timeout: 10m
"#;
        let objects = compile_package(&package(yaml), &CompileContext::default()).unwrap();
        assert_eq!(kinds(&objects), ["OCIRepository", "HelmRelease"]);
        assert_eq!(
            objects[0]["spec"]["url"],
            "oci://registry.example.com/charts/redis"
        );
        assert_eq!(objects[0]["spec"]["ref"], json!({"tag": "19.6.4"}));
        assert_eq!(
            objects[1]["spec"]["chartRef"],
            json!({"kind": "OCIRepository", "name": "redis"})
        );
        assert_eq!(objects[1]["spec"]["timeout"], "10m");
        assert!(objects[1]["spec"]["values"].is_null());
        let ranged = yaml.replace("\"19.6.4\"", "\">=19.0.0 <20.0.0\"");
        let objects = compile_package(&package(&ranged), &CompileContext::default()).unwrap();
        assert_eq!(
            objects[0]["spec"]["ref"],
            json!({"semver": ">=19.0.0 <20.0.0"})
        );
    }

    #[test]
    fn an_unresolvable_placeholder_derives_nothing() {
        let yaml = GRAFANA.replace("${metadata.name}", "${resources.nope.host}");
        let err = compile_package(&package(&yaml), &CompileContext::default()).unwrap_err();
        assert!(err.to_string().contains("platform/grafana"), "{err}");
    }
}
