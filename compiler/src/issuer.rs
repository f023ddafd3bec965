//! Certificate issuers and DNS zones: a `CertIssuer` becomes a cert-manager
//! `ClusterIssuer` of its name (what a service's `ingress.tls.issuerRef` names); a
//! `DNSProvider` becomes an external-dns instance keeping the records of the ingress hosts
//! in its zone. Their credentials come from a SecretProvider through External Secrets, into
//! the namespace the reader runs in (cert-manager's, external-dns's).
//!
//! A DNSProvider's secret holds what its reader expects: external-dns's environment
//! variables by name (`AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, `CF_API_TOKEN`,
//! OpenStack's `OS_*`, `EXTERNAL_DNS_PIHOLE_PASSWORD`), or a file (`credentials.json` for
//! Google, `azure.json` for Azure). cert-manager's DNS-01 solvers read the same keys.

use lattice_schemas::crd::issuer::{
    CERT_MANAGER_NAMESPACE, CertIssuer, Credentials, DNSProvider, DNSProviderSpec, DnsProviderType,
    EXTERNAL_DNS_NAMESPACE, IssuerType,
};
use serde_json::{Value, json};

use crate::objects::{CompileContext, CompileError, labels, meta};

/// The external-dns image a DNSProvider runs unless it names another: the release this
/// build's arguments were written for.
pub const EXTERNAL_DNS_IMAGE: &str = "registry.k8s.io/external-dns/external-dns:v0.15.1";

/// The service account external-dns runs as (`deploy/external-dns/`: read-only access to
/// Gateway API routes and namespaces, bound once for every instance).
pub const EXTERNAL_DNS_ACCOUNT: &str = "external-dns";

/// The cert-manager objects a CertIssuer derives: the secrets its issuer reads, then the
/// ClusterIssuer.
pub fn compile_issuer(
    issuer: &CertIssuer,
    ctx: &CompileContext,
) -> Result<Vec<Value>, CompileError> {
    let name = issuer.metadata.name.as_deref().unwrap_or_default();
    let spec = &issuer.spec;
    let invalid = |reason: String| CompileError::Invalid {
        workload: format!("CertIssuer {name}"),
        reason,
    };
    let missing = |block: &str| invalid(format!("type `{block}` without its `{block}` block"));
    let mut objects = Vec::new();
    let body = match spec.type_ {
        IssuerType::SelfSigned => json!({"selfSigned": {}}),
        IssuerType::Ca => {
            let ca = spec.ca.as_ref().ok_or_else(|| missing("ca"))?;
            let secret = format!("{name}-ca");
            objects.push(external_secret(
                &secret,
                CERT_MANAGER_NAMESPACE,
                name,
                &ca.credentials,
                &[("tls.crt", "tls.crt"), ("tls.key", "tls.key")],
                Some("kubernetes.io/tls"),
            ));
            json!({"ca": {"secretName": secret}})
        }
        IssuerType::Vault => {
            let vault = spec.vault.as_ref().ok_or_else(|| missing("vault"))?;
            let secret = format!("{name}-vault-token");
            let key = match vault.auth_credentials.keys.as_slice() {
                [] => "token",
                [one] => one.as_str(),
                _ => {
                    return Err(invalid(
                        "a Vault token is one key: list one in `authCredentials.keys`, or none for `token`".into(),
                    ));
                }
            };
            objects.push(external_secret(
                &secret,
                CERT_MANAGER_NAMESPACE,
                name,
                &vault.auth_credentials,
                &[("token", key)],
                None,
            ));
            json!({"vault": {"server": vault.server, "path": vault.path,
                             "auth": {"tokenSecretRef": {"name": secret, "key": "token"}}}})
        }
        IssuerType::Acme => {
            let acme = spec.acme.as_ref().ok_or_else(|| missing("acme"))?;
            let solver = match (&acme.dns_provider_ref, &acme.http01_gateway) {
                (Some(dns), None) => {
                    let provider = ctx.dns_providers.get(dns).ok_or_else(|| {
                        invalid(format!(
                            "its ACME challenges go through DNSProvider `{dns}`, which does not exist"
                        ))
                    })?;
                    let secret = format!("{name}-dns01");
                    let solver = dns01(provider, &secret)
                        .map_err(|e| invalid(format!("DNSProvider `{dns}`: {e}")))?;
                    if let Some(creds) = &provider.credentials {
                        objects.push(whole_secret(&secret, CERT_MANAGER_NAMESPACE, name, creds));
                    }
                    json!({"selector": {"dnsZones": [provider.zone]}, "dns01": solver})
                }
                (None, Some(gw)) => json!({"http01": {"gatewayHTTPRoute": {
                    "parentRefs": [{"name": gw.name, "namespace": gw.namespace, "kind": "Gateway"}]}}}),
                _ => {
                    return Err(invalid(
                        "an ACME issuer answers its challenges through exactly one of `dnsProviderRef` and `http01Gateway`".into(),
                    ));
                }
            };
            let mut acme_body = json!({
                "server": acme.server,
                "privateKeySecretRef": {"name": format!("{name}-acme-account")},
                "solvers": [solver],
            });
            if let Some(email) = &acme.email {
                acme_body["email"] = json!(email);
            }
            json!({"acme": acme_body})
        }
    };
    objects.push(json!({
        "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
        // Cluster-scoped: no namespace.
        "metadata": {"name": name, "labels": labels(name)},
        "spec": body,
    }));
    Ok(objects)
}

/// cert-manager's DNS-01 solver for `provider`, reading its credentials from `secret`.
fn dns01(provider: &DNSProviderSpec, secret: &str) -> Result<Value, String> {
    let has_creds = provider.credentials.is_some();
    let key = |k: &str| json!({"name": secret, "key": k});
    Ok(match provider.type_ {
        DnsProviderType::Route53 => {
            let r = provider.route53.clone().unwrap_or_default();
            let mut v = json!({});
            if let Some(region) = r.region {
                v["region"] = json!(region);
            }
            if let Some(zone) = r.hosted_zone_id {
                v["hostedZoneID"] = json!(zone);
            }
            if has_creds {
                v["accessKeyIDSecretRef"] = key("AWS_ACCESS_KEY_ID");
                v["secretAccessKeySecretRef"] = key("AWS_SECRET_ACCESS_KEY");
            }
            json!({"route53": v})
        }
        DnsProviderType::Cloudflare => {
            if !has_creds {
                return Err("Cloudflare needs credentials (`CF_API_TOKEN`)".into());
            }
            json!({"cloudflare": {"apiTokenSecretRef": key("CF_API_TOKEN")}})
        }
        DnsProviderType::Google => {
            let project = provider
                .google
                .as_ref()
                .map(|g| g.project.clone())
                .ok_or("type `google` without its `google` block")?;
            let mut v = json!({"project": project});
            if has_creds {
                v["serviceAccountSecretRef"] = key("credentials.json");
            }
            json!({"cloudDNS": v})
        }
        DnsProviderType::Azure => {
            let a = provider
                .azure
                .as_ref()
                .ok_or("type `azure` without its `azure` block")?;
            // The workload identity of cert-manager's pods: a client secret would need the
            // client and tenant ids besides, which an azure.json file does not give it.
            json!({"azureDNS": {"subscriptionID": a.subscription_id, "resourceGroupName": a.resource_group,
                                "hostedZoneName": provider.zone}})
        }
        DnsProviderType::Designate | DnsProviderType::Pihole => {
            return Err(format!(
                "cert-manager answers no DNS-01 challenge through {}; use `http01Gateway`",
                provider.type_.as_str()
            ));
        }
    })
}

/// The external-dns instance a DNSProvider derives: its credentials, then a Deployment
/// that keeps the records of the Gateway API routes' hosts in the zone, owned (through the
/// TXT registry) by this cluster.
pub fn compile_dns_provider(
    provider: &DNSProvider,
    ctx: &CompileContext,
) -> Result<Vec<Value>, CompileError> {
    let name = provider.metadata.name.as_deref().unwrap_or_default();
    let spec = &provider.spec;
    let invalid = |reason: String| CompileError::Invalid {
        workload: format!("DNSProvider {name}"),
        reason,
    };
    let instance = crate::objects::object_name(&["external-dns", name]);
    let secret = format!("{name}-credentials");
    let mut objects = Vec::new();
    let mut args = vec![
        format!("--provider={}", external_dns_provider(spec.type_)),
        format!("--domain-filter={}", spec.zone.trim_end_matches('.')),
        "--source=gateway-httproute".to_owned(),
        "--registry=txt".to_owned(),
        format!("--txt-owner-id={}", ctx.cluster),
        format!(
            "--policy={}",
            if spec.upsert_only.unwrap_or(false) {
                "upsert-only"
            } else {
                "sync"
            }
        ),
        "--interval=1m".to_owned(),
    ];
    let mut env = Vec::new();
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    let mut file = |key: &str, path: &str| {
        volumes.push(json!({"name": "credentials", "secret": {"secretName": secret, "items": [{"key": key, "path": key}]}}));
        mounts.push(json!({"name": "credentials", "mountPath": path, "readOnly": true}));
        format!("{path}/{key}")
    };
    match spec.type_ {
        DnsProviderType::Route53 => {
            let r = spec.route53.clone().unwrap_or_default();
            if let Some(zone) = r.hosted_zone_id {
                args.push(format!("--zone-id-filter={zone}"));
            }
            if let Some(region) = r.region {
                env.push(json!({"name": "AWS_REGION", "value": region}));
            }
        }
        DnsProviderType::Cloudflare => {
            if spec.cloudflare.as_ref().is_some_and(|c| c.proxied) {
                args.push("--cloudflare-proxied".into());
            }
        }
        DnsProviderType::Google => {
            let g = spec
                .google
                .as_ref()
                .ok_or_else(|| invalid("type `google` without its `google` block".into()))?;
            args.push(format!("--google-project={}", g.project));
            if spec.credentials.is_some() {
                let path = file("credentials.json", "/etc/external-dns/google");
                env.push(json!({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": path}));
            }
        }
        DnsProviderType::Azure => {
            let a = spec
                .azure
                .as_ref()
                .ok_or_else(|| invalid("type `azure` without its `azure` block".into()))?;
            args.push(format!("--azure-resource-group={}", a.resource_group));
            args.push(format!("--azure-subscription-id={}", a.subscription_id));
            if spec.credentials.is_some() {
                let path = file("azure.json", "/etc/external-dns/azure");
                args.push(format!("--azure-config-file={path}"));
            }
        }
        DnsProviderType::Designate => {}
        DnsProviderType::Pihole => {
            let p = spec
                .pihole
                .as_ref()
                .ok_or_else(|| invalid("type `pihole` without its `pihole` block".into()))?;
            args.push(format!("--pihole-server={}", p.url));
        }
    }
    let mut container = json!({
        "name": "external-dns",
        "image": spec.image.as_deref().unwrap_or(EXTERNAL_DNS_IMAGE),
        "args": args,
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true, "runAsUser": 65534, "capabilities": {"drop": ["ALL"]}},
    });
    if let Some(creds) = &spec.credentials {
        objects.push(whole_secret(&secret, EXTERNAL_DNS_NAMESPACE, name, creds));
        if matches!(
            spec.type_,
            DnsProviderType::Route53
                | DnsProviderType::Cloudflare
                | DnsProviderType::Designate
                | DnsProviderType::Pihole
        ) {
            container["envFrom"] = json!([{"secretRef": {"name": secret}}]);
        }
    }
    if !env.is_empty() {
        container["env"] = json!(env);
    }
    if !mounts.is_empty() {
        container["volumeMounts"] = json!(mounts);
    }
    let pod_labels = labels(&instance);
    let mut pod = json!({
        "serviceAccountName": EXTERNAL_DNS_ACCOUNT,
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    });
    if !volumes.is_empty() {
        pod["volumes"] = json!(volumes);
    }
    objects.push(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(&instance, EXTERNAL_DNS_NAMESPACE, name),
        "spec": {
            "replicas": 1,
            // One writer per zone: never two at once, even while rolling.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app.kubernetes.io/name": instance}},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod},
        }
    }));
    Ok(objects)
}

/// external-dns's `--provider` for a DNS provider type.
fn external_dns_provider(t: DnsProviderType) -> &'static str {
    match t {
        DnsProviderType::Route53 => "aws",
        DnsProviderType::Cloudflare => "cloudflare",
        DnsProviderType::Google => "google",
        DnsProviderType::Azure => "azure",
        DnsProviderType::Designate => "designate",
        DnsProviderType::Pihole => "pihole",
    }
}

/// An ExternalSecret named `secret` in `ns` copying `keys` (target key, source property) of
/// `source`'s secret, as a Secret of `type_` when given.
fn external_secret(
    secret: &str,
    ns: &str,
    owner: &str,
    source: &Credentials,
    keys: &[(&str, &str)],
    type_: Option<&str>,
) -> Value {
    let data: Vec<Value> = keys
        .iter()
        .map(|(target, property)| json!({"secretKey": target, "remoteRef": {"key": source.id, "property": property}}))
        .collect();
    let mut target = json!({"name": secret, "creationPolicy": "Owner"});
    if let Some(t) = type_ {
        target["template"] = json!({"type": t});
    }
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": meta(secret, ns, owner),
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": source.provider},
            "target": target,
            "data": data,
        }
    })
}

/// An ExternalSecret copying a DNS provider's secret: the keys it lists, or every key.
fn whole_secret(secret: &str, ns: &str, owner: &str, source: &Credentials) -> Value {
    if !source.keys.is_empty() {
        let keys: Vec<(&str, &str)> = source
            .keys
            .iter()
            .map(|k| (k.as_str(), k.as_str()))
            .collect();
        return external_secret(secret, ns, owner, source, &keys, None);
    }
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": meta(secret, ns, owner),
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": source.provider},
            "target": {"name": secret, "creationPolicy": "Owner"},
            "dataFrom": [{"extract": {"key": source.id}}],
        }
    })
}
