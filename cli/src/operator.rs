//! The Lattice operator on a root `lattice install` made, and its removal at `uninstall`.
//!
//! What is applied is `deploy/` itself, read at build time, so the installed cluster runs
//! exactly what the repository ships: `deploy/operator` with `deploy/cell`'s patches (a root
//! is a parent: the cell, the API proxy and the bootstrap endpoint), `deploy/cell`'s RBAC
//! and Service, and `deploy/webhook`'s namespace, Service (selecting the operator's pods,
//! which serve admission) and webhook configurations.
//!
//! Three things `deploy/` expects from elsewhere are made here, since a new root has no
//! cert-manager and nobody has run `compliance keygen` for it yet:
//! - the webhook's serving certificate (`lattice-webhook-tls`), signed by a CA made for it
//!   whose certificate goes into every webhook configuration's `caBundle`, as
//!   cert-manager's CA injector would put it (one year; cert-manager takes the same Secret
//!   over when `deploy/webhook/certificate.yaml` is applied);
//! - the admission key every replica stamps and checks CedarPolicy writes with
//!   (`lattice-admission-key`, 32 random bytes as hex);
//! - the Ed25519 key evidence is signed with (`lattice-evidence-signing-key`).
//!
//! Secrets that exist are kept, never rotated by a second run. Their contents are never
//! printed.
//!
//! The webhook configurations are registered only once the operator's Deployment is
//! available: before, a `failurePolicy: Fail` webhook with no pod behind it would refuse
//! every write it matches, the installer's own included.

use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The field manager of what is written here (the installer's).
const MANAGER: &str = "lattice-install";

fn say(line: &str) {
    eprintln!("{line}");
}

async fn apply_all(client: &Client, objects: &[Value]) -> Result<(), String> {
    crate::apply::apply_all(client, objects, MANAGER).await
}

/// Where the operator runs.
pub const NAMESPACE: &str = "lattice-system";
/// The operator's Deployment.
pub const DEPLOYMENT: &str = "lattice-operator";
const TLS_SECRET: &str = "lattice-webhook-tls";
const ADMISSION_SECRET: &str = "lattice-admission-key";
const EVIDENCE_SECRET: &str = "lattice-evidence-signing-key";
/// The webhook's Service names on its certificate (how the API server reaches it).
const WEBHOOK_NAMES: [&str; 2] = [
    "lattice-webhook.lattice-system.svc",
    "lattice-webhook.lattice-system.svc.cluster.local",
];

const NAMESPACE_YAML: &str = include_str!("../../deploy/webhook/namespace.yaml");
const OPERATOR_RBAC: &str = include_str!("../../deploy/operator/rbac.yaml");
const OPERATOR_DEPLOYMENT: &str = include_str!("../../deploy/operator/deployment.yaml");
const CELL_KUSTOMIZATION: &str = include_str!("../../deploy/cell/kustomization.yaml");
const CELL_RBAC: &str = include_str!("../../deploy/cell/rbac.yaml");
const CELL_SERVICE: &str = include_str!("../../deploy/cell/service.yaml");
const WEBHOOK_SERVICE: &str = include_str!("../../deploy/webhook/service.yaml");
const WEBHOOK_CONFIGURATIONS: [&str; 4] = [
    include_str!("../../deploy/webhook/validatingwebhookconfiguration.yaml"),
    include_str!("../../deploy/webhook/validatingwebhookconfiguration-pods.yaml"),
    include_str!("../../deploy/webhook/validatingwebhookconfiguration-kubernetes.yaml"),
    include_str!("../../deploy/webhook/mutatingwebhookconfiguration.yaml"),
];

/// How the operator is installed.
#[derive(Debug, Clone, Default)]
pub struct OperatorOptions {
    /// The operator's image (default: the one `deploy/operator` names).
    pub image: Option<String>,
    /// The names children dial the cell at (default: the cell Service's in-cluster name).
    pub cell_addresses: Vec<String>,
}

/// The objects of the operator on `cluster`: what is applied first, and the webhook
/// configurations registered once it is available (without their `caBundle`).
#[derive(Debug)]
pub struct Manifests {
    pub platform: Vec<Value>,
    pub webhooks: Vec<Value>,
}

fn documents(file: &str, text: &str) -> Result<Vec<Value>, String> {
    let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(text);
    if let Some(e) = errors.first() {
        return Err(format!("{file} does not parse: {}", e.message));
    }
    Ok(docs
        .into_iter()
        .map(|d| d.value)
        .filter(Value::is_object)
        .collect())
}

fn one(file: &str, text: &str) -> Result<Value, String> {
    let mut docs = documents(file, text)?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        n => Err(format!("{file} holds {n} objects; one is expected")),
    }
}

/// `deploy/cell`'s JSON patches of the operator's Deployment, applied as kustomize would.
fn apply_cell_patches(deployment: &mut Value) -> Result<(), String> {
    let kustomization = one("deploy/cell/kustomization.yaml", CELL_KUSTOMIZATION)?;
    let patches = kustomization["patches"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for entry in patches {
        let target = &entry["target"];
        if target["kind"] != "Deployment" || target["name"] != DEPLOYMENT {
            return Err(format!(
                "deploy/cell/kustomization.yaml patches {target}; only the operator's Deployment is expected"
            ));
        }
        let text = entry["patch"].as_str().unwrap_or_default();
        let ops = one("a deploy/cell patch", &format!("ops: {}", indent(text)))?;
        let patch: json_patch::Patch = serde_json::from_value(ops["ops"].clone())
            .map_err(|e| format!("a deploy/cell patch is not a JSON patch: {e}"))?;
        json_patch::patch(deployment, &patch)
            .map_err(|e| format!("a deploy/cell patch does not apply: {e}"))?;
    }
    Ok(())
}

/// A YAML block sequence nested under a key.
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("\n  {l}")).collect::<String>()
}

/// The operator's objects for the root `cluster`.
pub fn manifests(cluster: &str, options: &OperatorOptions) -> Result<Manifests, String> {
    let mut platform = documents("deploy/webhook/namespace.yaml", NAMESPACE_YAML)?;
    platform.extend(documents("deploy/operator/rbac.yaml", OPERATOR_RBAC)?);
    platform.extend(documents("deploy/cell/rbac.yaml", CELL_RBAC)?);
    let mut webhook_service = one("deploy/webhook/service.yaml", WEBHOOK_SERVICE)?;
    // The operator's pods serve admission; deploy/webhook's own Deployment is not installed.
    webhook_service["spec"]["selector"] = json!({"app.kubernetes.io/name": DEPLOYMENT});
    platform.push(webhook_service);
    platform.push(one("deploy/cell/service.yaml", CELL_SERVICE)?);

    let mut deployment = one("deploy/operator/deployment.yaml", OPERATOR_DEPLOYMENT)?;
    apply_cell_patches(&mut deployment)?;
    let container = &mut deployment["spec"]["template"]["spec"]["containers"][0];
    if let Some(image) = &options.image {
        container["image"] = json!(image);
    }
    for env in container["env"].as_array_mut().into_iter().flatten() {
        if env["name"] == "LATTICE_CLUSTER_NAME" {
            env["value"] = json!(cluster);
        }
    }
    if !options.cell_addresses.is_empty()
        && let Some(args) = container["args"].as_array_mut()
    {
        args.retain(|a| !a.as_str().is_some_and(|a| a.starts_with("--cell-address=")));
        args.extend(
            options
                .cell_addresses
                .iter()
                .map(|a| json!(format!("--cell-address={a}"))),
        );
    }
    platform.push(deployment);

    let mut webhooks = Vec::new();
    for text in WEBHOOK_CONFIGURATIONS {
        let mut configuration = one("a deploy/webhook configuration", text)?;
        // The installer injects the CA itself (see the module doc).
        if let Some(annotations) = configuration["metadata"]["annotations"].as_object_mut() {
            annotations.remove("cert-manager.io/inject-ca-from");
        }
        webhooks.push(configuration);
    }
    Ok(Manifests { platform, webhooks })
}

/// The webhook's CA and serving certificate: (CA PEM, certificate PEM, key PEM).
fn serving_certificate() -> Result<(String, String, String), String> {
    let fail = |e: rcgen::Error| format!("cannot make the webhook's certificate: {e}");
    let year = jiff::Zoned::now().year();
    let ca_key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "lattice-webhook-ca");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params.not_after = rcgen::date_time_ymd(i32::from(year) + 10, 1, 1);
    let ca = ca_params.self_signed(&ca_key).map_err(fail)?;
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params =
        rcgen::CertificateParams::new(WEBHOOK_NAMES.map(str::to_owned).to_vec()).map_err(fail)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, WEBHOOK_NAMES[0]);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = jiff::Zoned::now();
    params.not_after = rcgen::date_time_ymd(
        i32::from(now.year()) + 1,
        now.month().unsigned_abs(),
        now.day().unsigned_abs().min(28),
    );
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).map_err(fail)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

fn random_hex(bytes: usize) -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| "the system random source failed".to_owned())?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn secret(name: &str, type_: Option<&str>, data: &[(&str, String)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            labels: Some([("app.kubernetes.io/part-of".to_owned(), "lattice".to_owned())].into()),
            ..Default::default()
        },
        type_: type_.map(str::to_owned),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Creates `secret` unless one of its name exists; the one in the cluster.
async fn create_once(api: &Api<Secret>, secret: Secret) -> Result<Secret, String> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let failed = |e: kube::Error| format!("Secret {NAMESPACE}/{name}: {e}");
    if let Some(existing) = api.get_opt(&name).await.map_err(failed)? {
        return Ok(existing);
    }
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => Ok(created),
        // Made meanwhile (another run): that one is kept.
        Err(kube::Error::Api(s)) if s.code == 409 => api.get(&name).await.map_err(failed),
        Err(e) => Err(failed(e)),
    }
}

/// Makes the Secrets the operator mounts, once; the webhook CA's PEM.
async fn ensure_secrets(client: &Client) -> Result<String, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let existing = api
        .get_opt(TLS_SECRET)
        .await
        .map_err(|e| format!("Secret {NAMESPACE}/{TLS_SECRET}: {e}"))?;
    let tls = if let Some(tls) = existing {
        tls
    } else {
        let (ca, cert, key) = serving_certificate()?;
        create_once(
            &api,
            secret(
                TLS_SECRET,
                Some("kubernetes.io/tls"),
                &[("tls.crt", cert), ("tls.key", key), ("ca.crt", ca)],
            ),
        )
        .await?
    };
    let ca = tls
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|pem| pem.contains("BEGIN CERTIFICATE"))
        .ok_or_else(|| {
            format!(
                "Secret {NAMESPACE}/{TLS_SECRET} has no ca.crt: the webhook configurations cannot name the CA that signed it"
            )
        })?;
    if api
        .get_opt(ADMISSION_SECRET)
        .await
        .map_err(|e| format!("Secret {NAMESPACE}/{ADMISSION_SECRET}: {e}"))?
        .is_none()
    {
        let key = random_hex(32)?;
        create_once(&api, secret(ADMISSION_SECRET, None, &[("key", key)])).await?;
    }
    if api
        .get_opt(EVIDENCE_SECRET)
        .await
        .map_err(|e| format!("Secret {NAMESPACE}/{EVIDENCE_SECRET}: {e}"))?
        .is_none()
    {
        let (pem, _) = lattice_compliance::evidence::keys::Signer::generate()
            .map_err(|e| format!("the evidence signing key: {e}"))?;
        create_once(&api, secret(EVIDENCE_SECRET, None, &[("ed25519.pem", pem)])).await?;
    }
    Ok(ca)
}

/// Installs the operator on `client`'s cluster `cluster` and, once its Deployment is
/// available (within `timeout`), registers its webhooks.
pub async fn install(
    client: &Client,
    cluster: &str,
    options: &OperatorOptions,
    timeout: Duration,
) -> Result<(), String> {
    let manifests = manifests(cluster, options)?;
    let (namespace, rest) = manifests.platform.split_at(1);
    apply_all(client, namespace).await?;
    let ca = ensure_secrets(client).await?;
    apply_all(client, rest).await?;
    say(&format!(
        "applied the Lattice operator to {cluster} ({} objects from deploy/cell, its Secrets in {NAMESPACE})",
        rest.len()
    ));
    wait_available(client, timeout).await?;
    let bundle = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &ca);
    let mut webhooks = manifests.webhooks;
    for configuration in &mut webhooks {
        for webhook in configuration["webhooks"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            webhook["clientConfig"]["caBundle"] = json!(bundle);
        }
    }
    apply_all(client, &webhooks).await?;
    say(&format!(
        "registered the operator's {} admission webhooks on {cluster}",
        webhooks.len()
    ));
    Ok(())
}

/// A Deployment's available and wanted replicas, and whether its status, describing its
/// current spec, says `Available`.
fn availability(deployment: &Deployment) -> (i32, i32, bool) {
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let current =
        status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    let available = status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Available" && c.status == "True");
    (
        status.available_replicas.unwrap_or(0),
        wanted,
        current && available,
    )
}

async fn wait_available(client: &Client, timeout: Duration) -> Result<(), String> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    let mut said = String::new();
    loop {
        let deployment = api
            .get(DEPLOYMENT)
            .await
            .map_err(|e| format!("cannot read Deployment {NAMESPACE}/{DEPLOYMENT}: {e}"))?;
        let (ready, wanted, available) = availability(&deployment);
        if available && ready > 0 {
            say(&format!(
                "the Lattice operator is available ({ready}/{wanted} replicas)"
            ));
            return Ok(());
        }
        let line = format!("waiting for the Lattice operator: {ready}/{wanted} replicas available");
        if line != said {
            say(&line);
            said = line;
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "Deployment {NAMESPACE}/{DEPLOYMENT} is not available after {} s ({ready}/{wanted} replicas; `kubectl -n {NAMESPACE} describe deployment {DEPLOYMENT}` says why); its admission webhooks are registered once it is: run the same command again",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Stops the operator before its cluster is taken down: its webhooks are removed (they
/// would judge writes for an operator that is going away) and its Deployment scaled to
/// zero, so nothing on the cluster derives again what is being moved out. Nothing to do
/// where it was never installed.
pub async fn stop(client: &Client, cluster: &str, timeout: Duration) -> Result<(), String> {
    let manifests = manifests(cluster, &OperatorOptions::default())?;
    let mut removed = 0;
    for configuration in &manifests.webhooks {
        let ar = crate::apply::resource_of(configuration);
        let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &ar);
        let name = configuration["metadata"]["name"]
            .as_str()
            .unwrap_or_default();
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => removed += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(format!(
                    "cannot remove the webhook configuration {name}: {e}"
                ));
            }
        }
    }
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let read = |e: kube::Error| format!("cannot read Deployment {NAMESPACE}/{DEPLOYMENT}: {e}");
    if api.get_opt(DEPLOYMENT).await.map_err(read)?.is_none() {
        if removed > 0 {
            say(&format!(
                "removed the operator's admission webhooks from {cluster}"
            ));
        }
        return Ok(());
    }
    api.patch(
        DEPLOYMENT,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await
    .map_err(|e| format!("cannot scale {DEPLOYMENT} to zero: {e}"))?;
    let started = Instant::now();
    loop {
        let deployment = api.get(DEPLOYMENT).await.map_err(read)?;
        let status = deployment.status.clone().unwrap_or_default();
        let current =
            status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
        if current && status.replicas.unwrap_or(0) == 0 {
            break;
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "the Lattice operator on {cluster} still runs {} replicas after {} s; nothing was moved: run the same command again",
                status.replicas.unwrap_or(0),
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    say(&format!(
        "stopped the Lattice operator on {cluster} and removed its admission webhooks, so nothing there derives again what moves out"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(m: &Manifests) -> &Value {
        let deployment = m
            .platform
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .unwrap();
        &deployment["spec"]["template"]["spec"]["containers"][0]
    }

    #[test]
    fn the_operator_is_deploy_with_the_cell_patches_for_this_cluster() {
        let m = manifests(
            "root",
            &OperatorOptions {
                image: Some("registry.example/lattice-operator:test".into()),
                cell_addresses: vec!["cell.example.com".into(), "10.0.0.5".into()],
            },
        )
        .unwrap();
        let c = container(&m);
        assert_eq!(c["image"], "registry.example/lattice-operator:test");
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for wanted in [
            "run",
            "--cell-listen=0.0.0.0:50051",
            "--cell-address=cell.example.com",
            "--cell-address=10.0.0.5",
            "--bootstrap-listen=0.0.0.0:8444",
            "--webhook-addr=0.0.0.0:8443",
        ] {
            assert!(args.contains(&wanted), "{wanted} not in {args:?}");
        }
        assert!(
            !args.contains(&"--cell-address=lattice-cell.lattice-system.svc"),
            "{args:?}"
        );
        let name = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "LATTICE_CLUSTER_NAME")
            .unwrap();
        assert_eq!(name["value"], "root");
        // No two listeners on one port: the pod would fail to start.
        let ports: Vec<&str> = args
            .iter()
            .filter_map(|a| a.split_once("=0.0.0.0:").map(|(_, p)| p))
            .collect();
        let unique: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        let service = m
            .platform
            .iter()
            .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "lattice-webhook")
            .unwrap();
        assert_eq!(
            service["spec"]["selector"]["app.kubernetes.io/name"],
            "lattice-operator"
        );
        assert_eq!(m.platform[0]["kind"], "Namespace");
        assert_eq!(m.webhooks.len(), 4);
        for w in &m.webhooks {
            assert!(
                w["metadata"]["annotations"]
                    .get("cert-manager.io/inject-ca-from")
                    .is_none()
            );
        }
    }

    #[test]
    fn the_serving_certificate_names_the_service() {
        let (ca, cert, key) = serving_certificate().unwrap();
        assert!(ca.contains("BEGIN CERTIFICATE"));
        assert!(key.contains("PRIVATE KEY"));
        let der = der_of(&cert);
        for name in WEBHOOK_NAMES {
            assert!(
                der.windows(name.len()).any(|w| w == name.as_bytes()),
                "{name} is not on the certificate"
            );
        }
    }

    /// The DER of a PEM certificate (its DNS names are plain ASCII inside it).
    fn der_of(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &body).unwrap()
    }

    #[test]
    fn a_random_admission_key_is_long_enough_and_differs() {
        let a = random_hex(32).unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_hex(32).unwrap());
    }
}
