//! The operator against a real API server (`tools/testenv`: etcd and kube-apiserver 1.33),
//! with the CRDs installed and `lattice-operator run` started as a user would start it.
//! Each test has its own control plane.

mod cluster;
mod support;

use std::time::Duration;

use cluster::{
    Operator, TestEnv, apply_yaml, eventually, free_port, get, http_get, install_crds,
    install_crds_except,
};
use k8s_openapi::ByteString;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use lattice_compliance::evidence::VerifyOptions;
use lattice_compliance::evidence::runs::verify_runs;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SHOP: &str = include_str!("data/shop.yaml");
const WAIT: Duration = Duration::from_secs(60);

const WITHDRAW_API: &str = r#"
apiVersion: lattice.dev/v1alpha1
kind: CedarPolicy
metadata:
  name: withdraw-api-1-0
  namespace: shop
spec:
  policies: |
    @id("withdrawn-api-image")
    @advice("api 1.0.0 is withdrawn; deploy 1.0.1")
    forbid (
      principal,
      action == Lattice::Action::"DeployImage",
      resource == Lattice::Image::"registry.example.com/shop/api:1.0.0"
    );
"#;

async fn object(
    client: &Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    name: &str,
) -> Option<Value> {
    get(client, api_version, kind, plural, Some("shop"), name).await
}

async fn service(client: &Client, name: &str) -> Value {
    object(
        client,
        "lattice.dev/v1alpha1",
        "LatticeService",
        "latticeservices",
        name,
    )
    .await
    .unwrap_or_else(|| panic!("LatticeService shop/{name} exists"))
}

/// Waits until the service's status reports `phase`, and returns the service.
async fn phase(client: &Client, name: &str, phase: &str) -> Value {
    eventually(&format!("shop/{name} to be {phase}"), WAIT, || async {
        let s = service(client, name).await;
        (s.pointer("/status/phase") == Some(&json!(phase))).then_some(s)
    })
    .await
}

fn condition<'a>(object: &'a Value, type_: &str) -> &'a Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("a {type_} condition in {}", object["status"]))
}

async fn deployment(client: &Client, name: &str) -> Option<Value> {
    object(client, "apps/v1", "Deployment", "deployments", name).await
}

async fn network_policy(client: &Client, name: &str) -> Option<Value> {
    object(
        client,
        "cilium.io/v2",
        "CiliumNetworkPolicy",
        "ciliumnetworkpolicies",
        name,
    )
    .await
}

async fn authorization_policy(client: &Client, name: &str) -> Option<Value> {
    object(
        client,
        "security.istio.io/v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
        name,
    )
    .await
}

async fn gone(
    client: &Client,
    what: &str,
    api_version: &str,
    kind: &str,
    plural: &str,
    name: &str,
) {
    eventually(what, WAIT, || async {
        object(client, api_version, kind, plural, name)
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

/// A control plane, and a real registry (behind `login`, if any) holding `shop/api:1.0`
/// signed by the cosign key `release`, with the world that uses it: the `shop` namespace, a
/// TrustPolicy requiring that key's signature, the documents `extra` makes for the registry's
/// host, and the LatticeService `api` running the image, with `spec_extra` in its spec.
struct SignedApi {
    env: TestEnv,
    client: Client,
    dir: std::path::PathBuf,
    registry: lattice_testkit::oci::Registry,
    host: String,
    /// The digest `shop/api:1.0` names, signed.
    signed: String,
}

impl SignedApi {
    async fn start(
        name: &str,
        login: Option<(&str, &str)>,
        extra: &dyn Fn(&str) -> String,
        spec_extra: &str,
    ) -> SignedApi {
        use lattice_testkit::oci::{Registry, trust_policy_yaml};
        let env = TestEnv::start(name);
        let client = env.client().await;
        install_crds(&client).await;
        let dir = env.dir.join("oci");
        std::fs::create_dir_all(&dir).unwrap();
        let registry = match login {
            Some((user, password)) => {
                Registry::start_with_login(&dir.join("registry"), user, password)
            }
            None => Registry::start(&dir.join("registry")),
        };
        let host = registry.host.clone();
        let public = registry.keygen(&dir, "release");
        let signed = registry.push("shop/api", "1.0", "api").await;
        registry.sign(&dir, "release", &format!("{host}/shop/api@{signed}"));
        let trust = trust_policy_yaml("registries", &format!("{host}/shop"), &public);
        let extra = extra(&host);
        apply_yaml(
            &client,
            &format!(
                "apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
{trust}---
{extra}apiVersion: lattice.dev/v1alpha1
kind: LatticeService
metadata: {{name: api, namespace: shop}}
spec:
{spec_extra}  containers:
    api:
      image: {host}/shop/api:1.0
      resources:
        limits: {{cpu: 100m, memory: 64Mi}}
"
            ),
        )
        .await;
        SignedApi {
            env,
            client,
            dir,
            registry,
            host,
            signed,
        }
    }

    /// The operator, trusting the registry's CA and verifying every 2 s, with `extra` flags.
    fn operator(&self, extra: &[&str]) -> Operator {
        let ca = self.registry.ca_file.to_str().unwrap().to_owned();
        let mut args = vec!["--registry-ca", &ca, "--image-verify-seconds", "2"];
        args.extend_from_slice(extra);
        Operator::start(&self.env, &args)
    }

    /// Waits for `api` to be Ready; its Deployment runs the image pinned to `digest`.
    async fn ready_pinned_to(&self, digest: &str, operator: &Operator) -> Value {
        phase(&self.client, "api", "Ready").await;
        let d = deployment(&self.client, "api")
            .await
            .expect("Deployment shop/api");
        assert_eq!(
            d.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!(format!("{}/shop/api:1.0@{digest}", self.host))),
            "{}",
            operator.logs()
        );
        d
    }
}

/// Supply chain on a real API server and a real registry: the operator verifies the cosign
/// signature at the registry, derives the Deployment pinned to the signed digest, and
/// revokes it when the tag is re-pushed to an unsigned image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_to_an_unsigned_digest_is_revoked() {
    let w = SignedApi::start("moved-tag", None, &|_| String::new(), "").await;
    let (client, host) = (&w.client, &w.host);
    let operator = w.operator(&[]);

    // Verified at the registry, derived pinned to the digest that was verified.
    w.ready_pinned_to(&w.signed, &operator).await;

    // The tag moves to an image nobody signed: revoked at the next verification.
    let moved = w.registry.push("shop/api", "1.0", "api, rebuilt").await;
    assert_ne!(moved, w.signed);
    let denied = phase(client, "api", "Denied").await;
    let gate = &denied["status"]["deniedGates"][0];
    assert_eq!(gate["action"], "DeployImage");
    let advice = gate["advice"].as_str().unwrap();
    assert!(advice.contains("no cosign signature"), "{advice}");
    assert!(
        advice.contains(&format!(
            "sign {host}/shop/api@{moved} with the TrustPolicy key `release`"
        )),
        "{advice}"
    );
    gone(
        client,
        "Deployment shop/api revoked",
        "apps/v1",
        "Deployment",
        "deployments",
        "api",
    )
    .await;

    // Signed again, at the new digest: derived again, pinned to it.
    w.registry
        .sign(&w.dir, "release", &format!("{host}/shop/api@{moved}"));
    w.ready_pinned_to(&moved, &operator).await;
}

/// A private registry, read with the workload's own pull secret: with
/// `--pull-secret-logins` and no login of its own, the operator reads the image with the
/// `kubernetes.io/dockerconfigjson` Secret the workload's pods pull with. Before that Secret
/// exists the registry refuses, and the workload is denied saying so; once it exists, the
/// signature is verified and the Deployment derived, pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workloads_pull_secret_is_its_registry_login() {
    let provider = |host: &str| {
        format!(
            "apiVersion: lattice.dev/v1alpha1
kind: ImageProvider
metadata: {{name: private}}
spec:
  type: generic
  registry: {host}
  credentials:
    provider: vault
    id: registry/private
    keys: [username, password]
---
"
        )
    };
    let w = SignedApi::start(
        "pull-secret",
        Some(("ci", "s3cret")),
        &provider,
        "  imagePullSecrets: [private]\n",
    )
    .await;
    let (client, host) = (&w.client, &w.host);
    let operator = w.operator(&["--pull-secret-logins"]);

    // No Secret yet (ESO has not synced it): the registry refuses, and the denial says so.
    let denied = phase(client, "api", "Denied").await;
    let advice = denied["status"]["deniedGates"][0]["advice"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        advice.contains("refused access"),
        "{advice}\n{}",
        operator.logs()
    );

    // The Secret the pods pull with, as ESO writes it from the ImageProvider.
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("ci:s3cret");
    let config = format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#);
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "api-private", "namespace": "shop"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config)},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "shop")
        .create(&Default::default(), &secret)
        .await
        .unwrap();

    let d = w.ready_pinned_to(&w.signed, &operator).await;
    assert_eq!(
        d.pointer("/spec/template/spec/imagePullSecrets/0/name"),
        Some(&json!("api-private"))
    );
    // The login never reaches the log.
    assert!(!operator.logs().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_derives_its_objects_and_a_forbid_revokes_them() {
    let env = TestEnv::start("revoke");
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(&client, SHOP).await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let operator = Operator::start(&env, &["--metrics-addr", &addr]);

    // The derived objects appear, with the right content and owned by their workload.
    let api = phase(&client, "api", "Ready").await;
    // Its log goes to a file here, as to a pod's log: no color codes in it.
    let logs = operator.logs();
    assert!(logs.contains("decided"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "colors in a log file: {logs}");
    let d = deployment(&client, "api")
        .await
        .expect("Deployment shop/api");
    assert_eq!(
        d.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("registry.example.com/shop/api:1.0.0"))
    );
    assert_eq!(d.pointer("/spec/replicas"), Some(&json!(2)));
    assert_eq!(
        d.pointer("/metadata/labels/app.kubernetes.io~1managed-by"),
        Some(&json!("lattice"))
    );
    let owner = &d["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "LatticeService");
    assert_eq!(owner["name"], "api");
    assert_eq!(owner["uid"], api["metadata"]["uid"]);
    let managers: Vec<&Value> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["manager"])
        .collect();
    assert!(
        managers.contains(&&json!("lattice")),
        "server-side applied by `lattice`: {managers:?}"
    );
    for (kind, plural, api_version) in [
        ("Service", "services", "v1"),
        ("ServiceAccount", "serviceaccounts", "v1"),
        ("PodDisruptionBudget", "poddisruptionbudgets", "policy/v1"),
    ] {
        assert!(
            object(&client, api_version, kind, plural, "api")
                .await
                .is_some(),
            "{kind} shop/api derived"
        );
    }
    // web resolves its placeholder against api's served port.
    let web = phase(&client, "web", "Ready").await;
    let env_vars = deployment(&client, "web")
        .await
        .expect("Deployment shop/web")["spec"]["template"]["spec"]["containers"][0]["env"]
        .clone();
    let url = env_vars
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "API_URL")
        .map(|e| e["value"].as_str().unwrap().to_owned())
        .expect("API_URL is set");
    assert!(url.contains("api.shop") && url.contains("8080"), "{url}");
    // The bilateral edge web → api: network objects in api's namespace, owned by api.
    let cnp = network_policy(&client, "api-from-shop-web")
        .await
        .expect("CiliumNetworkPolicy");
    assert_eq!(
        cnp.pointer("/spec/ingress/0/fromEndpoints/0/matchLabels/app.kubernetes.io~1name"),
        Some(&json!("web"))
    );
    assert_eq!(cnp["metadata"]["ownerReferences"][0]["name"], "api");
    assert!(
        authorization_policy(&client, "api-from-shop-web")
            .await
            .is_some()
    );
    // Status says what was decided, on which generation.
    assert_eq!(condition(&api, "Ready")["status"], "True");
    assert_eq!(condition(&api, "Authorized")["status"], "True");
    assert_eq!(
        api["status"]["observedGeneration"],
        api["metadata"]["generation"]
    );
    assert!(
        api["status"]["snapshotDigest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(condition(&web, "Ready")["status"], "True");

    // A forbid: the status shows the denial, and what api derived is revoked.
    apply_yaml(&client, WITHDRAW_API).await;
    let denied = phase(&client, "api", "Denied").await;
    assert_eq!(condition(&denied, "Authorized")["status"], "False");
    assert_eq!(condition(&denied, "Authorized")["reason"], "GatesDenied");
    let gate = &denied["status"]["deniedGates"][0];
    assert_eq!(gate["action"], "DeployImage");
    assert_eq!(
        gate["policies"],
        json!(["shop/withdraw-api-1-0/withdrawn-api-image"])
    );
    assert_eq!(gate["advice"], "api 1.0.0 is withdrawn; deploy 1.0.1");
    assert!(
        condition(&denied, "Authorized")["message"]
            .as_str()
            .unwrap()
            .contains("withdrawn-api-image")
    );
    gone(
        &client,
        "Deployment shop/api revoked",
        "apps/v1",
        "Deployment",
        "deployments",
        "api",
    )
    .await;
    for (kind, plural, api_version) in [
        ("Service", "services", "v1"),
        ("ServiceAccount", "serviceaccounts", "v1"),
        ("PodDisruptionBudget", "poddisruptionbudgets", "policy/v1"),
    ] {
        assert!(
            object(&client, api_version, kind, plural, "api")
                .await
                .is_none(),
            "{kind} revoked"
        );
    }
    assert!(
        network_policy(&client, "api-from-shop-web").await.is_none(),
        "edge objects revoked"
    );
    assert!(
        authorization_policy(&client, "api-from-shop-web")
            .await
            .is_none()
    );
    // Events say the same where `kubectl describe` shows them: applied, then revoked with
    // the deciding policy.
    let events = eventually("events of api's revocation", WAIT, || async {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "shop");
        let list = api.list(&Default::default()).await.ok()?;
        let about_api: Vec<_> = list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("api"))
            .collect();
        about_api
            .iter()
            .any(|e| e.reason.as_deref() == Some("Revoked"))
            .then_some(about_api)
    })
    .await;
    assert!(
        events.iter().any(|e| e.reason.as_deref() == Some("Applied")
            && e.type_.as_deref() == Some("Normal")),
        "{events:?}"
    );
    let revoked = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("Revoked"))
        .unwrap();
    assert_eq!(revoked.type_.as_deref(), Some("Warning"));
    assert!(
        revoked
            .note
            .as_deref()
            .is_some_and(|n| n.contains("shop/withdraw-api-1-0/withdrawn-api-image")),
        "{revoked:?}"
    );
    assert_eq!(
        revoked.reporting_controller.as_deref(),
        Some("lattice-operator")
    );
    // The metrics count what happened: reconciles applied, then api's revocation; plans;
    // this replica leads.
    let metrics = eventually("metrics of the revocation", WAIT, || async {
        let m = http_get(port, "/metrics").await?;
        m.contains(r#"lattice_operator_reconciles_total{kind="LatticeService",result="denied"}"#)
            .then_some(m)
    })
    .await;
    for line in [
        r#"lattice_operator_reconciles_total{kind="LatticeService",result="applied"}"#,
        "lattice_operator_leader 1",
        r#"lattice_operator_workloads{state="denied"} 1"#,
        "lattice_operator_plan_duration_seconds_count",
        "lattice_operator_reconciles_retrying 0",
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }
    let plans: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lattice_operator_plans_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        plans >= 2.0,
        "a plan before and after the forbid: {metrics}"
    );
    // A policy change is decided again only where its scope reaches. The forbid itself may
    // share a plan with the echo of the baselines the operator just wrote, which is planned
    // whole; so the forbid's advice is edited until an edit lands on a settled
    // cluster, and that plan must be incremental.
    let edits = std::sync::atomic::AtomicUsize::new(0);
    eventually("a policy edit planned incrementally", WAIT, || async {
        let n = edits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let edited = WITHDRAW_API.replace("deploy 1.0.1", &format!("deploy 1.0.1 (edit {n})"));
        apply_yaml(&client, &edited).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = http_get(port, "/metrics").await?;
        let incremental: f64 = m
            .lines()
            .find_map(|l| l.strip_prefix("lattice_operator_incremental_plans_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        (incremental >= 1.0).then_some(())
    })
    .await;
    // web is not what was forbidden: it stays.
    assert!(deployment(&client, "web").await.is_some());
    assert_eq!(service(&client, "web").await["status"]["phase"], "Ready");
    // The CedarPolicy's own status.
    let policy = eventually("CedarPolicy status", WAIT, || async {
        let p = object(
            &client,
            "lattice.dev/v1alpha1",
            "CedarPolicy",
            "cedarpolicies",
            "withdraw-api-1-0",
        )
        .await?;
        (p.pointer("/status/phase") == Some(&json!("Accepted"))).then_some(p)
    })
    .await;
    assert_eq!(policy["status"]["forbidCount"], 1);
    assert_eq!(policy["status"]["permitCount"], 0);

    // Withdrawing the forbid lets api derive again.
    let policies: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "shop",
        &lattice_controllers::operator::apply::lattice_resource(
            lattice_schemas::crd::Kind::CedarPolicy,
        ),
    );
    policies
        .delete("withdraw-api-1-0", &DeleteParams::default())
        .await
        .unwrap();
    phase(&client, "api", "Ready").await;
    eventually("Deployment shop/api back", WAIT, || async {
        deployment(&client, "api").await
    })
    .await;
    eventually("the edge back", WAIT, || async {
        network_policy(&client, "api-from-shop-web").await
    })
    .await;
    drop(operator);
}

/// The kinds of other projects that Lattice derives are applied against those projects'
/// real CRDs (no permissive stand-ins): a gang-scheduled LatticeJob becomes a Volcano Job,
/// and a TLS ingress a cert-manager Certificate beside its Gateway and HTTPRoute, each
/// accepted by the API server's validation against the project's own schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volcano_jobs_and_certificates_are_applied_against_their_projects_crds() {
    let env = TestEnv::start("foreign-crds");
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(&client, SHOP).await;
    apply_yaml(
        &client,
        r#"
apiVersion: lattice.dev/v1alpha1
kind: CedarPolicy
metadata: {name: hosts, namespace: shop}
spec:
  policies: |
    @id("tls-hosts-under-example-com")
    permit (principal, action == Lattice::Action::"ExposeHost", resource)
    when { resource.name like "*.example.com" && context.tls };
---
apiVersion: lattice.dev/v1alpha1
kind: LatticeService
metadata: {name: help, namespace: shop}
spec:
  containers:
    help:
      image: registry.example.com/shop/help:1.0
      resources:
        limits: {cpu: 100m, memory: 64Mi}
  service:
    ports:
      http: {port: 8080}
  ingress:
    hosts: [help.example.com]
    tls:
      mode: auto
      issuerRef: {name: letsencrypt-staging, kind: Issuer, group: cert-manager.io}
    routes:
      - {path: /, pathType: PathPrefix, port: http}
---
apiVersion: lattice.dev/v1alpha1
kind: LatticeJob
metadata: {name: train, namespace: shop}
spec:
  minAvailable: 3
  maxRetry: 2
  tasks:
    master:
      replicas: 1
      restartPolicy: Never
      workload:
        containers:
          trainer:
            image: registry.example.com/shop/trainer:1.0
            resources:
              limits: {cpu: 100m, memory: 64Mi}
    worker:
      replicas: 2
      restartPolicy: OnFailure
      workload:
        containers:
          trainer:
            image: registry.example.com/shop/trainer:1.0
            resources:
              limits: {cpu: 100m, memory: 64Mi}
"#,
    )
    .await;
    let operator = Operator::start(&env, &[]);

    let certificate = eventually("the Certificate shop/help-tls", WAIT, || {
        object(
            &client,
            "cert-manager.io/v1",
            "Certificate",
            "certificates",
            "help-tls",
        )
    })
    .await;
    assert_eq!(
        certificate.pointer("/spec/dnsNames/0"),
        Some(&json!("help.example.com")),
        "{}",
        operator.logs()
    );
    assert_eq!(
        certificate.pointer("/spec/issuerRef/name"),
        Some(&json!("letsencrypt-staging"))
    );
    let job = eventually("the Volcano Job shop/train", WAIT, || {
        object(&client, "batch.volcano.sh/v1alpha1", "Job", "jobs", "train")
    })
    .await;
    assert_eq!(job.pointer("/spec/minAvailable"), Some(&json!(3)));
    let tasks: Vec<&str> = job["spec"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(tasks, ["master", "worker"], "{job}");

    // The server validates against the real schema: a field Volcano's Job does not have
    // is refused, not kept (a permissive stand-in would have accepted it).
    let mut forged = job.clone();
    forged["spec"]["notAVolcanoField"] = json!(1);
    forged["metadata"]["managedFields"] = Value::Null;
    let api = derived_api(&client, "batch.volcano.sh/v1alpha1", "Job", "jobs");
    let strict = kube::api::PostParams {
        dry_run: true,
        field_manager: None,
    };
    let forged: DynamicObject = serde_json::from_value(forged).unwrap();
    let refused = api.replace("train", &strict, &forged).await;
    assert!(
        refused.is_err() || {
            let kept = serde_json::to_value(refused.unwrap()).unwrap();
            kept.pointer("/spec/notAVolcanoField").is_none()
        },
        "an unknown field kept: the CRD is not Volcano's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_sided_mesh_declaration_derives_no_network_objects_until_completed() {
    let env = TestEnv::start("mesh");
    let client = env.client().await;
    install_crds(&client).await;
    // api does not (yet) accept web: only web declares the edge.
    let one_sided = SHOP.replace(
        "  resources:\n    web:\n      type: service\n      direction: inbound\n",
        "",
    );
    assert_ne!(one_sided, SHOP);
    apply_yaml(&client, &one_sided).await;
    // Logs as JSON lines here, as a log pipeline reads them.
    let operator = Operator::start(&env, &["--log-format", "json"]);
    phase(&client, "api", "Ready").await;
    phase(&client, "web", "Ready").await;
    let logs = operator.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "no logs");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{logs}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("decided"))),
        "{logs}"
    );
    // A reconcile's lines carry its span: the workload and the snapshot it was decided on.
    let reconciled = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "reconciled"
                && l["span"]["workload"] == "LatticeService shop/api"
        })
        .unwrap_or_else(|| panic!("no reconcile of shop/api in: {logs}"));
    assert_eq!(reconciled["span"]["name"], "reconcile");
    assert!(
        reconciled["span"]["snapshot"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:")),
        "{reconciled}"
    );
    assert!(deployment(&client, "api").await.is_some());
    assert!(
        network_policy(&client, "api-from-shop-web").await.is_none(),
        "one-sided: no CiliumNetworkPolicy"
    );
    assert!(
        authorization_policy(&client, "api-from-shop-web")
            .await
            .is_none(),
        "one-sided: no AuthorizationPolicy"
    );

    // api completes the declaration: the edge's objects appear.
    apply_yaml(&client, SHOP).await;
    let cnp = eventually("the completed edge's CiliumNetworkPolicy", WAIT, || async {
        network_policy(&client, "api-from-shop-web").await
    })
    .await;
    assert_eq!(
        cnp.pointer("/spec/ingress/0/toPorts/0/ports/0/port"),
        Some(&json!("8080"))
    );
    // Applied in the same layer as the CiliumNetworkPolicy, so possibly a moment later.
    let ap = eventually("the completed edge's AuthorizationPolicy", WAIT, || async {
        authorization_policy(&client, "api-from-shop-web").await
    })
    .await;
    assert_eq!(
        ap.pointer("/spec/rules/0/from/0/source/principals/0"),
        Some(&json!("cluster.local/ns/shop/sa/web"))
    );

    // And withdrawing it again removes them.
    apply_yaml(&client, &one_sided).await;
    gone(
        &client,
        "the edge's CiliumNetworkPolicy",
        "cilium.io/v2",
        "CiliumNetworkPolicy",
        "ciliumnetworkpolicies",
        "api-from-shop-web",
    )
    .await;
    // Deleted one after the other in the same reconcile, so possibly a moment later.
    gone(
        &client,
        "the edge's AuthorizationPolicy",
        "security.istio.io/v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
        "api-from-shop-web",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_rejects_an_invalid_cedar_policy_through_the_webhook() {
    let env = TestEnv::start("webhook");
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(&client, SHOP).await;
    apply_yaml(&client, EDGE_CLUSTER).await;
    // Written before any webhook configuration exists: no admission stamp.
    cluster::apply_yaml_unstamped(&client, WITHDRAW_API).await;
    let pki = support::Pki::issue(&env.dir.join("pki"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _operator = Operator::start(
        &env,
        &[
            "--webhook-addr",
            &addr,
            "--tls-cert",
            pki.cert.to_str().unwrap(),
            "--tls-key",
            pki.key.to_str().unwrap(),
        ],
    );
    // The deployed configurations, pointed at this webhook with the test CA.
    register_webhook(
        &client,
        "validatingwebhookconfiguration.yaml",
        "/validate",
        &addr,
        &pki,
    )
    .await;
    register_webhook(
        &client,
        "mutatingwebhookconfiguration.yaml",
        "/mutate",
        &addr,
        &pki,
    )
    .await;

    // The policy written past the webhook is not loaded; its status says why, and api
    // (whose image it would forbid) stays Ready.
    let sneaked = eventually("the unstamped policy's status", WAIT, || async {
        let p = object(
            &client,
            "lattice.dev/v1alpha1",
            "CedarPolicy",
            "cedarpolicies",
            "withdraw-api-1-0",
        )
        .await?;
        (p.pointer("/status/phase") == Some(&json!("Rejected"))).then_some(p)
    })
    .await;
    assert!(
        sneaked["status"].to_string().contains("not admitted"),
        "{}",
        sneaked["status"]
    );
    // ... and a PolicyRejected event on it says the same where `kubectl describe` shows it.
    eventually("a PolicyRejected event", WAIT, || async {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "shop");
        let list = api.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("PolicyRejected")
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                        == Some("withdraw-api-1-0")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("not admitted"))
            })
            .then_some(())
    })
    .await;
    phase(&client, "api", "Ready").await;

    let invalid: Value = json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "CedarPolicy",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"policies": "permit (principal, action == Lattice::Action::\"DeployImage\" resource);\n"},
    });
    let policies: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "shop",
        &lattice_controllers::operator::apply::lattice_resource(
            lattice_schemas::crd::Kind::CedarPolicy,
        ),
    );
    // Until the webhook has a snapshot it refuses policy decisions (503); wait for an answer
    // about the policy itself.
    let error = eventually("the webhook's verdict on the policy", WAIT, || async {
        match policies
            .patch(
                "broken",
                &PatchParams::apply("test"),
                &Patch::Apply(&invalid),
            )
            .await
        {
            Ok(_) => Some(Err("the invalid policy was admitted".to_owned())),
            Err(kube::Error::Api(s)) if s.message.contains("is invalid") => Some(Ok(s)),
            Err(_) => None,
        }
    })
    .await
    .expect("rejected");
    // The stamping webhook runs first and decides as the validating one does.
    assert!(
        error
            .message
            .contains("admission webhook \"stamp.lattice.dev\" denied the request"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("spec.policies"),
        "the diagnostic names the field: {}",
        error.message
    );
    assert!(
        error.message.contains("spec.policies:1:61")
            && error.message.contains("unexpected token `resource`"),
        "the diagnostic says what and where: {}",
        error.message
    );
    assert!(
        policies.get_opt("broken").await.unwrap().is_none(),
        "nothing was stored"
    );

    // A well-formed policy from a user no permit lets manage policies is denied by Cedar.
    let valid: Value = json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "CedarPolicy",
        "metadata": {"name": "fine", "namespace": "shop"},
        "spec": {"policies": "@id(\"anything-goes\")\npermit (principal, action == Lattice::Action::\"DeployImage\", resource);\n"},
    });
    let err = policies
        .patch("fine", &PatchParams::apply("test"), &Patch::Apply(&valid))
        .await
        .expect_err("the test admin holds no ManagePolicy permit");
    assert!(err.to_string().contains("ManagePolicy"), "{err}");

    // A security administrator's write is admitted and stamped on the way in, and the
    // operator loads it.
    // (system:masters only so that Kubernetes RBAC lets the write reach admission.)
    let sec = env
        .client_as("sec", &["system:masters", "lattice:security-admins"])
        .await;
    let as_sec: Api<DynamicObject> = Api::namespaced_with(
        sec,
        "shop",
        &lattice_controllers::operator::apply::lattice_resource(
            lattice_schemas::crd::Kind::CedarPolicy,
        ),
    );
    let mut admitted = valid.clone();
    admitted["metadata"]["name"] = json!("admitted");
    admitted["spec"]["policies"] = json!(
        "@id(\"no-web-image\")\nforbid (principal == Lattice::Service::\"shop/web\", action == Lattice::Action::\"DeployImage\", resource);\n"
    );
    let stored = as_sec
        .patch(
            "admitted",
            &PatchParams::apply("sec"),
            &Patch::Apply(&admitted),
        )
        .await
        .expect("a security administrator may write policies");
    let stamp = stored
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(lattice_controllers::webhook::stamp::ANNOTATION))
        .expect("the stamp the webhook set");
    assert!(stamp.contains("\"user\":\"sec\""), "{stamp}");
    let loaded = eventually("the admitted policy's status", WAIT, || async {
        let p = object(
            &client,
            "lattice.dev/v1alpha1",
            "CedarPolicy",
            "cedarpolicies",
            "admitted",
        )
        .await?;
        (p.pointer("/status/phase") == Some(&json!("Accepted"))).then_some(p)
    })
    .await;
    assert_eq!(loaded["status"]["forbidCount"], 1, "{}", loaded["status"]);
    phase(&client, "web", "Denied").await;

    // Every Lattice write is a Cedar question. Whoever writes a TrustPolicy decides which
    // images count as trusted: the test admin is no platform administrator, and the API
    // server refuses the write with the policy's advice.
    let trust: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &lattice_controllers::operator::apply::lattice_resource(
            lattice_schemas::crd::Kind::TrustPolicy,
        ),
    );
    let widened: Value = json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "TrustPolicy",
        "metadata": {"name": "registries"},
        "spec": {"registries": [{"prefix": "docker.io", "requireSignature": false}]},
    });
    let err = trust
        .patch(
            "registries",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&widened),
        )
        .await
        .expect_err("no policy lets the test admin write a TrustPolicy");
    let text = err.to_string();
    assert!(text.contains("ManageTrust"), "{text}");
    assert!(
        text.contains("members of the group lattice:platform-admins"),
        "the refusal carries the policy's advice: {text}"
    );
    let stored = trust.get("registries").await.unwrap();
    assert_eq!(
        stored.data["spec"]["registries"][0]["prefix"], "registry.example.com/shop",
        "nothing was changed"
    );
    // Deleting a LatticeCluster is Decommission, which nothing permits the test admin.
    let clusters: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &lattice_controllers::operator::apply::lattice_resource(
            lattice_schemas::crd::Kind::LatticeCluster,
        ),
    );
    let err = clusters
        .delete("edge", &DeleteParams::default())
        .await
        .expect_err("no permit for Decommission");
    assert!(err.to_string().contains("Decommission"), "{err}");
    assert!(
        clusters.get_opt("edge").await.unwrap().is_some(),
        "still there"
    );
}

const EDGE_CLUSTER: &str = r#"
apiVersion: lattice.dev/v1alpha1
kind: LatticeCluster
metadata:
  name: edge
spec:
  providerRef: docker
  parent: production
  provider:
    kubernetes: {version: "1.33.1"}
    config: {docker: {}}
  nodes: {controlPlane: 1}
"#;

async fn namespaced(
    client: &Client,
    ns: &str,
    api_version: &str,
    kind: &str,
    plural: &str,
    name: &str,
) -> Option<Value> {
    get(client, api_version, kind, plural, Some(ns), name).await
}

/// The three baseline objects of `ns`, once all exist.
async fn baseline(client: &Client, ns: &str) -> (Value, Value, Value) {
    eventually(&format!("{ns}'s default-deny baseline"), WAIT, || async {
        let l4 = namespaced(
            client,
            ns,
            "cilium.io/v2",
            "CiliumNetworkPolicy",
            "ciliumnetworkpolicies",
            "lattice-default-deny",
        )
        .await?;
        let l7 = namespaced(
            client,
            ns,
            "security.istio.io/v1",
            "AuthorizationPolicy",
            "authorizationpolicies",
            "lattice-default-deny",
        )
        .await?;
        let mtls = namespaced(
            client,
            ns,
            "security.istio.io/v1",
            "PeerAuthentication",
            "peerauthentications",
            "default",
        )
        .await?;
        Some((l4, l7, mtls))
    })
    .await
}

async fn no_baseline(client: &Client, ns: &str) {
    eventually(&format!("{ns} without a baseline"), WAIT, || async {
        namespaced(
            client,
            ns,
            "cilium.io/v2",
            "CiliumNetworkPolicy",
            "ciliumnetworkpolicies",
            "lattice-default-deny",
        )
        .await
        .is_none()
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_deny_is_applied_both_ways_put_right_and_opted_out_only_by_decision() {
    let env = TestEnv::start("baseline");
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(&client, SHOP).await;
    let _operator = Operator::start(&env, &[]);

    // Every namespace gets its baseline: L4 ingress and egress deny (DNS allowed), L7
    // allow-nothing, STRICT mTLS, owned by the Namespace; and the Pod Security level the
    // platform enforces is written on it.
    let (l4, l7, mtls) = baseline(&client, "shop").await;
    assert_eq!(l4["spec"]["ingress"], json!([{}]));
    assert_eq!(
        l4["spec"]["egress"][0]["toEndpoints"][0]["matchLabels"]["k8s:k8s-app"],
        "kube-dns"
    );
    assert_eq!(l4["spec"]["egress"].as_array().unwrap().len(), 1);
    assert_eq!(l7["spec"], json!({}));
    assert_eq!(mtls["spec"]["mtls"]["mode"], "STRICT");
    assert_eq!(l4["metadata"]["ownerReferences"][0]["kind"], "Namespace");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    eventually("shop's Pod Security label", WAIT, || async {
        let ns = namespaces.get("shop").await.ok()?;
        (ns.metadata
            .labels?
            .get("pod-security.kubernetes.io/enforce")?
            == "restricted")
            .then_some(())
    })
    .await;
    // Kubernetes' own namespaces are opted out by the default pack.
    assert!(
        namespaced(
            &client,
            "kube-system",
            "cilium.io/v2",
            "CiliumNetworkPolicy",
            "ciliumnetworkpolicies",
            "lattice-default-deny"
        )
        .await
        .is_none()
    );

    // An allowed edge opens exactly the caller's egress; the callee's ingress comes with it.
    let web_out = eventually("web's egress to api", WAIT, || async {
        network_policy(&client, "web-to-shop-api").await
    })
    .await;
    assert_eq!(
        web_out["spec"]["egress"][0]["toEndpoints"][0]["matchLabels"]["app.kubernetes.io/name"],
        "api"
    );
    // api declares no outbound edge: it has no egress path but DNS.
    let cnps: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "shop",
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("cilium.io", "v2", "CiliumNetworkPolicy"),
            "ciliumnetworkpolicies",
        ),
    );
    let egress_of_api: Vec<String> = cnps
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|o| {
            o.data["spec"]["endpointSelector"]["matchLabels"]["app.kubernetes.io/name"] == "api"
                && o.data["spec"]["egress"].is_array()
        })
        .filter_map(|o| o.metadata.name)
        .collect();
    assert!(
        egress_of_api.is_empty(),
        "api has egress: {egress_of_api:?}"
    );

    // A new namespace gets its baseline.
    apply_yaml(
        &client,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: fresh\n",
    )
    .await;
    baseline(&client, "fresh").await;

    // A baseline object deleted by hand is restored; one edited to allow everything is put
    // back.
    let uid = l4["metadata"]["uid"].clone();
    cnps.delete("lattice-default-deny", &DeleteParams::default())
        .await
        .unwrap();
    let restored = eventually("the deleted baseline restored", WAIT, || async {
        let o = network_policy(&client, "lattice-default-deny").await?;
        (o["metadata"]["uid"] != uid).then_some(o)
    })
    .await;
    assert_eq!(restored["spec"]["ingress"], json!([{}]));
    let authz: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "shop",
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("security.istio.io", "v1", "AuthorizationPolicy"),
            "authorizationpolicies",
        ),
    );
    authz
        .patch(
            "lattice-default-deny",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"action": "ALLOW", "rules": [{}]}})),
        )
        .await
        .unwrap();
    eventually("the widened L7 baseline put back", WAIT, || async {
        let o = authorization_policy(&client, "lattice-default-deny").await?;
        (o["spec"] == json!({})).then_some(())
    })
    .await;
    // ... and said so, on the object that was edited.
    eventually("a DriftCorrected event", WAIT, || async {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "shop");
        let list = api.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("DriftCorrected")
                    && e.regarding.as_ref().is_some_and(|r| {
                        r.kind.as_deref() == Some("AuthorizationPolicy")
                            && r.name.as_deref() == Some("lattice-default-deny")
                    })
            })
            .then_some(())
    })
    .await;

    // A label alone never switches the baseline off.
    namespaces
        .patch(
            "fresh",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"lattice.dev/default-deny": "false"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    baseline(&client, "fresh").await;
    // A permit for the opt-out takes it away; withdrawing the permit brings it back.
    let opt_out = r#"
apiVersion: lattice.dev/v1alpha1
kind: CedarPolicy
metadata:
  name: fresh-runs-open
  namespace: fresh
spec:
  policies: |
    @id("fresh-opt-out")
    permit (
      principal == Lattice::Namespace::"fresh",
      action == Lattice::Action::"OptOutDefaultDeny",
      resource
    )
    when { context.requested };
"#;
    apply_yaml(&client, opt_out).await;
    no_baseline(&client, "fresh").await;
    let policies: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "fresh",
        &lattice_controllers::operator::apply::lattice_resource(
            lattice_schemas::crd::Kind::CedarPolicy,
        ),
    );
    policies
        .delete("fresh-runs-open", &DeleteParams::default())
        .await
        .unwrap();
    baseline(&client, "fresh").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compliance_profile_writes_its_evidence() {
    let env = TestEnv::start("compliance");
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(&client, SHOP).await;
    let evidence_root = env.dir.join("evidence");
    apply_yaml(
        &client,
        r#"
apiVersion: lattice.dev/v1alpha1
kind: LatticeComplianceProfile
metadata:
  name: soc2-weekly
spec:
  frameworks: [soc2]
  scanInterval: 168h
  formats: [oscal, markdown]
  evidenceSink:
    configMap:
      name: soc2-evidence
      namespace: default
---
apiVersion: lattice.dev/v1alpha1
kind: LatticeComplianceProfile
metadata:
  name: nist-daily
spec:
  frameworks: [nist-800-53]
  scanInterval: 24h
  namespaces: [shop]
  evidenceSink:
    volumeClaim:
      name: audit-log
"#,
    )
    .await;
    let (private, signer) = lattice_compliance::evidence::Signer::generate().unwrap();
    let key = env.dir.join("evidence.key");
    std::fs::write(&key, private).unwrap();
    let _operator = Operator::start(
        &env,
        &[
            "--evidence-root",
            evidence_root.to_str().unwrap(),
            "--evidence-signing-key",
            key.to_str().unwrap(),
        ],
    );

    // The ConfigMap sink: one run, its renderings, and a digest that covers them.
    let cm = eventually("the first evidence ConfigMap", WAIT, || async {
        get(
            &client,
            "v1",
            "ConfigMap",
            "configmaps",
            Some("default"),
            "soc2-evidence-1",
        )
        .await
    })
    .await;
    let data = cm["data"].as_object().expect("data");
    let keys: Vec<&String> = data.keys().collect();
    assert_eq!(keys, ["report.json", "report.md", "report.oscal.json"]);
    let oscal: Value = serde_json::from_str(data["report.oscal.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        oscal["assessment-results"]["metadata"]["oscal-version"],
        "1.1.3"
    );
    assert!(data["report.md"].as_str().unwrap().contains("SOC 2"));
    let annotations = &cm["metadata"]["annotations"];
    assert_eq!(annotations["lattice.dev/evidence-seq"], "1");
    assert_eq!(annotations["lattice.dev/previous-evidence-sha256"], "");
    let mut hash = Sha256::new();
    hash.update(
        annotations["lattice.dev/previous-evidence-sha256"]
            .as_str()
            .unwrap()
            .as_bytes(),
    );
    for (file, content) in data {
        hash.update(file.as_bytes());
        hash.update(Sha256::digest(content.as_str().unwrap().as_bytes()));
    }
    assert_eq!(
        annotations["lattice.dev/evidence-sha256"],
        format!("{:x}", hash.finalize())
    );
    let profile = scanned(&client, "soc2-weekly").await;
    let status = &profile["status"];
    assert_eq!(status["evidenceRef"], "configmap/default/soc2-evidence-1");
    assert!(
        status["passed"].as_i64().unwrap() + status["failed"].as_i64().unwrap() > 0,
        "{status}"
    );
    // SOC 2 criteria are evidenced in part by platform facts, and the status says how many.
    assert!(
        status["partiallyEvidenced"].as_i64().unwrap() > 0,
        "{status}"
    );
    // The run's evidence was written: CA-7's `scans-recorded` reads this time.
    assert_eq!(
        status["lastRecordedTime"], status["lastScanTime"],
        "{status}"
    );
    assert_eq!(condition(&profile, "Scanned")["status"], "True");
    assert_eq!(
        status["observedGeneration"],
        profile["metadata"]["generation"]
    );

    // The volume-claim sink: the hash-chained log that `compliance verify` checks.
    let nist = scanned(&client, "nist-daily").await;
    assert_eq!(
        condition(&nist, "Scanned")["status"],
        "True",
        "{}",
        nist["status"]
    );
    // Signed by the operator's key, and its head anchored in the status: a verifier who
    // trusts the key and takes the head from the cluster finds it intact.
    let trusted = [signer.public()];
    let verified = lattice_compliance::evidence::verify(
        &evidence_root.join("audit-log"),
        &VerifyOptions {
            expected_head: nist["status"]["evidenceHead"].as_str(),
            trusted_keys: &trusted,
        },
    )
    .expect("the log is intact, signed, and ends at the anchored head");
    assert_eq!(verified.records, 1);
    assert_eq!(nist["status"]["evidenceSeq"], 1);
    assert!(
        nist["status"]["evidenceRef"]
            .as_str()
            .unwrap()
            .contains("audit-log"),
        "{}",
        nist["status"]
    );

    // Exactly one run per scanInterval: several scan ticks (every 5 s) later, still one
    // ConfigMap and one log record (it was one per tick).
    tokio::time::sleep(Duration::from_secs(16)).await;
    let runs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::core::ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
    );
    let listed = runs
        .list(
            &kube::api::ListParams::default().labels("lattice.dev/compliance-profile=soc2-weekly"),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1, "one run per interval");
    let verified = lattice_compliance::evidence::verify(
        &evidence_root.join("audit-log"),
        &VerifyOptions::default(),
    )
    .expect("the log is intact");
    assert_eq!(verified.records, 1, "one record per interval");

    // The ConfigMap sink's head is anchored in a ConfigMap of the operator's namespace and
    // in the status; its runs are signed.
    let run_digest = annotations["lattice.dev/evidence-sha256"].clone();
    let head = eventually("the anchored head", WAIT, || async {
        get(
            &client,
            "v1",
            "ConfigMap",
            "configmaps",
            Some("default"),
            "lattice-evidence-head-soc2-weekly",
        )
        .await
    })
    .await;
    assert_eq!(head["data"]["head"], run_digest);
    assert_eq!(head["data"]["seq"], "1");
    assert_eq!(status["evidenceHead"], run_digest);
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    let listed = config_maps
        .list(
            &kube::api::ListParams::default().labels("lattice.dev/compliance-profile=soc2-weekly"),
        )
        .await
        .unwrap();
    let runs = lattice_controllers::operator::scans::runs_of(&listed.items);
    verify_runs(
        &runs,
        &VerifyOptions {
            expected_head: run_digest.as_str(),
            trusted_keys: &trusted,
        },
    )
    .expect("the runs are intact, signed, and end at the anchored head");

    // `lattice-policy compliance verify` reads the same from the cluster, as an auditor
    // would run it with a kubeconfig.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(lattice_policy_binary())
            .args(args)
            .env("KUBECONFIG", &env.kubeconfig)
            .output()
            .expect("run lattice-policy");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let public = env.dir.join("evidence.pub");
    std::fs::write(&public, signer.public().to_pem()).unwrap();
    let (code, said) = cli(&[
        "compliance",
        "verify",
        "--config-maps",
        "soc2-weekly",
        "--namespace",
        "default",
        "--head-from-cluster",
        "soc2-weekly",
        "--operator-namespace",
        "default",
        "--trusted-key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("every record signed by a trusted key"),
        "{said}"
    );
    assert!(said.contains("head as expected"), "{said}");
    let (code, said) = cli(&[
        "compliance",
        "verify",
        evidence_root.join("audit-log").to_str().unwrap(),
        "--head-from-cluster",
        "nist-daily",
        "--operator-namespace",
        "default",
        "--trusted-key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{said}");

    // The newest run deleted by hand: the CLI names it against the anchored head, and the
    // operator's next run refuses to link past it instead of starting over silently.
    config_maps
        .delete("soc2-evidence-1", &DeleteParams::default())
        .await
        .unwrap();
    let (code, said) = cli(&[
        "compliance",
        "verify",
        "--config-maps",
        "soc2-weekly",
        "--namespace",
        "default",
        "--head-from-cluster",
        "soc2-weekly",
        "--operator-namespace",
        "default",
    ]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("every record was deleted"), "{said}");
    let profiles: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &lattice_controllers::operator::apply::lattice_resource(
            lattice_schemas::crd::Kind::LatticeComplianceProfile,
        ),
    );
    profiles
        .patch(
            "soc2-weekly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"formats": ["oscal"]}})),
        )
        .await
        .unwrap();
    let refused = eventually("the next run refused", WAIT, || async {
        let p = get(
            &client,
            "lattice.dev/v1alpha1",
            "LatticeComplianceProfile",
            "latticecomplianceprofiles",
            None,
            "soc2-weekly",
        )
        .await?;
        (p["status"]["observedGeneration"] == p["metadata"]["generation"]).then_some(p)
    })
    .await;
    let scanned_condition = condition(&refused, "Scanned");
    assert_eq!(scanned_condition["status"], "False", "{refused}");
    assert!(
        scanned_condition["message"]
            .as_str()
            .unwrap()
            .contains("every record was deleted"),
        "{scanned_condition}"
    );
    assert_eq!(
        refused["status"]["evidenceHead"], run_digest,
        "the anchor stays"
    );
    let listed = config_maps
        .list(
            &kube::api::ListParams::default().labels("lattice.dev/compliance-profile=soc2-weekly"),
        )
        .await
        .unwrap();
    assert!(
        listed.items.is_empty(),
        "no run re-linked past the deleted one"
    );
}

/// The `lattice-policy` binary `cargo test --workspace` builds beside this test's own.
fn lattice_policy_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("lattice-policy"))
        .unwrap();
    assert!(
        bin.is_file(),
        "{} is not built: run the tests with `cargo test --workspace`, which builds it",
        bin.display()
    );
    bin
}

async fn lease_holder(client: &Client) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "default");
    leases
        .get_opt("lattice-operator")
        .await
        .unwrap()?
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_and_a_successor_takes_over() {
    let env = TestEnv::start("lease");
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(&client, SHOP).await;
    let mut first = Operator::start_as(&env, "replica-a", &["--lease-seconds", "4"]);
    phase(&client, "api", "Ready").await;
    assert_eq!(lease_holder(&client).await.as_deref(), Some("replica-a"));

    // A second replica waits: it watches, but does not write.
    let second = Operator::start_as(&env, "replica-b", &["--lease-seconds", "4"]);
    eventually("replica-b to see the lease taken", WAIT, || async {
        second
            .logs()
            .contains("waiting for the lease")
            .then_some(())
    })
    .await;
    assert_eq!(lease_holder(&client).await.as_deref(), Some("replica-a"));
    assert!(!second.logs().contains("leading"), "{}", second.logs());

    // The leader stops as Kubernetes stops it; it gives the lease up and the other leads.
    let status = first.stop().expect("the leader stops on SIGTERM");
    assert!(status.success(), "{}", first.logs());
    eventually("replica-b to take the lease", WAIT, || async {
        (lease_holder(&client).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    // The successor's writes: a new forbid is enforced.
    apply_yaml(&client, WITHDRAW_API).await;
    phase(&client, "api", "Denied").await;
    gone(
        &client,
        "Deployment shop/api revoked",
        "apps/v1",
        "Deployment",
        "deployments",
        "api",
    )
    .await;
    assert!(second.logs().contains("leading"), "{}", second.logs());
}

/// Waits until a compliance profile reports its first scan, and returns it.
async fn scanned(client: &Client, name: &str) -> Value {
    eventually(&format!("{name} to be scanned"), WAIT, || async {
        let p = get(
            client,
            "lattice.dev/v1alpha1",
            "LatticeComplianceProfile",
            "latticecomplianceprofiles",
            None,
            name,
        )
        .await?;
        p.pointer("/status/lastScanTime").is_some().then_some(p)
    })
    .await
}

/// A leader whose API server stops answering gives up before its lease can expire, so no
/// successor can take the lease while it still writes. Measured from the moment the API
/// server stops (which is after the leader's last renewal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_before_its_lease_expires() {
    use lattice_controllers::operator::lease::Elector;
    let env = TestEnv::start("lease-deadline");
    let client = env.client().await;
    let duration = Duration::from_secs(6);
    let elector = Elector::new(client, "default", "deadline-test", "leader", duration);
    elector.acquire().await.expect("takes the free lease");
    // At the latest one retry after the renew deadline, with room to spare before expiry.
    let limit = elector.renew_deadline() + elector.retry_period() + Duration::from_millis(500);
    assert!(limit < duration);
    let keep = tokio::spawn(async move { elector.keep().await });
    // A renewal or two succeed, then the API server goes away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !keep.is_finished(),
        "the leader lost a lease it could renew"
    );
    let stopped = std::time::Instant::now();
    tokio::task::spawn_blocking(move || drop(env))
        .await
        .unwrap();
    let why = tokio::time::timeout(duration * 2, keep)
        .await
        .expect("the leader gives up")
        .unwrap();
    let after = stopped.elapsed();
    assert!(
        after < limit,
        "gave up {after:?} after the API server stopped (limit {limit:?}, lease {duration:?}): {why}"
    );
    assert!(why.contains("not renewed within"), "{why}");
    eprintln!("stopped leading {after:?} after the API server went away: {why}");
}

/// A cluster without some Lattice CRDs (here the compliance profiles and the packages): the
/// operator says so once and runs everything else, instead of waiting for a list that can
/// never succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_crd_idles_only_what_needs_it() {
    let env = TestEnv::start("optional-crds");
    let client = env.client().await;
    install_crds_except(&client, &["latticecomplianceprofiles", "latticepackages"]).await;
    apply_yaml(&client, SHOP).await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let operator = Operator::start(&env, &["--metrics-addr", &addr]);
    phase(&client, "api", "Ready").await;
    assert!(deployment(&client, "api").await.is_some());
    let logs = operator.logs();
    for kind in ["LatticeComplianceProfile", "LatticePackage"] {
        assert_eq!(
            logs.matches(&format!("the {kind} CRD is not installed"))
                .count(),
            1,
            "said once: {logs}"
        );
    }
    // And in a gauge an alert can watch.
    let metrics = http_get(port, "/metrics").await.unwrap_or_default();
    for kind in ["LatticeComplianceProfile", "LatticePackage"] {
        let line = format!("lattice_operator_kind_not_served{{kind=\"{kind}\"}} 1");
        assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
    }
}

/// A restarted operator catches up without announcing anything new: a workload already
/// Ready on the same snapshot gets no second `Applied` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_announces_nothing_that_did_not_change() {
    let env = TestEnv::start("restart-events");
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(&client, SHOP).await;
    let applied = || async {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "shop");
        api.list(&Default::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|e| {
                        e.reason.as_deref() == Some("Applied")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("api")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let first = Operator::start_as(&env, "first", &[]);
    phase(&client, "api", "Ready").await;
    eventually("api's Applied event", WAIT, || async {
        (applied().await == 1).then_some(())
    })
    .await;
    drop(first);
    let second = Operator::start_as(&env, "second", &[]);
    eventually("the second replica leads and decides", WAIT, || async {
        let logs = second.logs();
        (logs.contains("leading") && logs.contains("decided")).then_some(())
    })
    .await;
    // Time for a pass of reconciles (a fresh effector reconciles every workload once).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(applied().await, 1, "{}", second.logs());
}

/// The API of one derived kind in `shop`.
fn derived_api(client: &Client, api_version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let resource = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(group, version, kind),
        plural,
    );
    Api::namespaced_with(client.clone(), "shop", &resource)
}

async fn drift_events(client: &Client) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "shop");
    let mut found: Vec<(String, String)> = api
        .list(&Default::default())
        .await
        .expect("events list")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("DriftCorrected"))
        .map(|e| {
            let r = e.regarding.unwrap_or_default();
            (
                format!(
                    "{}/{}",
                    r.kind.unwrap_or_default(),
                    r.name.unwrap_or_default()
                ),
                e.note.unwrap_or_default(),
            )
        })
        .collect();
    found.sort();
    found
}

/// Runs as the shipped ServiceAccount and RBAC (`deploy/operator/rbac.yaml`), so what it
/// does is also proof that the ClusterRole grants enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_objects_edited_deleted_or_forged_by_hand_are_put_right() {
    let env = TestEnv::start("drift");
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(&client, SHOP).await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let account = env.operator_account().await;
    let operator = Operator::start_with(
        &env,
        "test-operator",
        &account,
        "lattice-system",
        &["--metrics-addr", &addr],
    );
    let api = phase(&client, "api", "Ready").await;
    phase(&client, "web", "Ready").await;
    let services = derived_api(&client, "v1", "Service", "services");
    let deployments = derived_api(&client, "apps/v1", "Deployment", "deployments");
    let authz = derived_api(
        &client,
        "security.istio.io/v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    );
    let configmaps = derived_api(&client, "v1", "ConfigMap", "configmaps");
    let edge = eventually("the web → api AuthorizationPolicy", WAIT, || async {
        authorization_policy(&client, "api-from-shop-web").await
    })
    .await;
    let service_spec = object(&client, "v1", "Service", "services", "api")
        .await
        .expect("Service shop/api")["spec"]["ports"]
        .clone();
    let image = deployment(&client, "api").await.unwrap()["spec"]["template"]["spec"]["containers"]
        [0]["image"]
        .clone();
    // Let the operator's own writes settle: none of them is drift.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(drift_events(&client).await, vec![], "{}", operator.logs());

    // 1. A derived Service deleted by hand comes back.
    let started = std::time::Instant::now();
    services
        .delete("api", &DeleteParams::default())
        .await
        .unwrap();
    let back = eventually("Service shop/api applied again", WAIT, || async {
        object(&client, "v1", "Service", "services", "api").await
    })
    .await;
    let restored_in = started.elapsed();
    eprintln!("a deleted Service came back in {restored_in:?}");
    assert_eq!(back["spec"]["ports"], service_spec);
    assert_eq!(
        back["metadata"]["ownerReferences"][0]["uid"],
        api["metadata"]["uid"]
    );

    // 2. The bilateral edge's AuthorizationPolicy opened to everyone, and switched to dry
    //    run: both put back.
    authz
        .patch(
            "api-from-shop-web",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {"istio.io/dry-run": "true"}},
                "spec": {"rules": [{}]}
            })),
        )
        .await
        .unwrap();
    let fixed = eventually("the AuthorizationPolicy put back", WAIT, || async {
        let now = authorization_policy(&client, "api-from-shop-web").await?;
        (now["spec"] == edge["spec"]
            && now["metadata"]["annotations"]
                .get("istio.io/dry-run")
                .is_none())
        .then_some(now)
    })
    .await;
    assert_eq!(fixed["spec"], edge["spec"]);

    // 3. The Deployment's image swapped by hand: put back.
    deployments
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{
                    "op": "replace",
                    "path": "/spec/template/spec/containers/0/image",
                    "value": "registry.example.com/shop/api:evil"
                }]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    eventually("the Deployment's image put back", WAIT, || async {
        let d = deployment(&client, "api").await?;
        (d["spec"]["template"]["spec"]["containers"][0]["image"] == image).then_some(())
    })
    .await;

    // 4. An object forged to look derived (Lattice's label, api as its owner): deleted.
    let forged: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": "forged", "namespace": "shop",
            "labels": {"app.kubernetes.io/managed-by": "lattice"},
            "ownerReferences": [{"apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeService",
                                  "name": "api", "uid": api["metadata"]["uid"]}]
        },
        "data": {"x": "y"}
    }))
    .unwrap();
    configmaps
        .create(&Default::default(), &forged)
        .await
        .unwrap();
    eventually("the forged ConfigMap deleted", WAIT, || async {
        object(&client, "v1", "ConfigMap", "configmaps", "forged")
            .await
            .is_none()
            .then_some(())
    })
    .await;

    // 5. What Kubernetes' own controllers write is not drift.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"deployment.kubernetes.io/revision": "7"}}}),
            ),
        )
        .await
        .unwrap();
    // Each correction is one Event, and nothing is corrected twice (no fight with the
    // API server's defaults).
    let expected = [
        "AuthorizationPolicy/api-from-shop-web",
        "ConfigMap/forged",
        "Deployment/api",
        "Service/api",
    ];
    let events = eventually("an Event per correction", WAIT, || async {
        let events = drift_events(&client).await;
        (events.len() >= expected.len()).then_some(events)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = drift_events(&client).await;
    assert_eq!(settled, events, "corrected again: {}", operator.logs());
    let regarding: Vec<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(regarding, expected, "{events:#?}");
    let (_, note) = &events[0];
    assert!(
        note.contains("spec.rules") || note.contains("istio.io/dry-run"),
        "{note}"
    );
    let d = deployment(&client, "web").await.unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "7"
    );
    let metrics = http_get(port, "/metrics").await.expect("metrics");
    let corrections: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("lattice_operator_drift_corrections_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(corrections, expected.len() as f64, "{metrics}");
    assert!(
        restored_in < Duration::from_secs(5),
        "a deleted Service took {restored_in:?} to come back"
    );
}

/// Applies the webhook configuration `deploy/webhook/<file>` as deployed, but for its client
/// config: `https://<addr><path>` with the test CA, and a 10 s timeout for a loaded machine.
async fn register_webhook(client: &Client, file: &str, path: &str, addr: &str, pki: &support::Pki) {
    let deployed =
        std::fs::read_to_string(cluster::root().join("deploy/webhook").join(file)).unwrap();
    let mut config = cluster::documents(&deployed).remove(0);
    let ca = serde_json::to_value(ByteString(pki.ca_pem.clone().into_bytes())).unwrap();
    config["webhooks"][0]["clientConfig"] =
        json!({"url": format!("https://{addr}{path}"), "caBundle": ca});
    config["webhooks"][0]["timeoutSeconds"] = json!(10);
    use k8s_openapi::api::admissionregistration::v1 as reg;
    let resource = match config["kind"].as_str() {
        Some("MutatingWebhookConfiguration") => {
            kube::core::ApiResource::erase::<reg::MutatingWebhookConfiguration>(&())
        }
        _ => kube::core::ApiResource::erase::<reg::ValidatingWebhookConfiguration>(&()),
    };
    cluster::apply(client, &resource, &config).await;
}

/// `kubectl apply -f -` of `manifest` as the cluster admin: success, and stderr (where
/// kubectl prints the API server's warnings and refusals).
fn kubectl_apply(env: &TestEnv, manifest: &Value) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(cluster::kubectl_binary())
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// On a real API server whose own Pod Security admission is off (so that Lattice alone
/// decides), with the deployed pod webhook configuration registered: kubectl is refused a
/// privileged Pod in an `enforce: restricted` namespace with the check and its advice, is
/// warned about the same Pod under `warn: restricted` (and creates it), and is warned about a
/// Deployment whose template breaks `enforce: baseline`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_meets_the_pod_security_standards_through_the_webhook() {
    let env = TestEnv::start_with_flags("pss", &["--disable-admission-plugins=PodSecurity"]);
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(
        &client,
        r#"
apiVersion: v1
kind: Namespace
metadata:
  name: strict
  labels: {pod-security.kubernetes.io/enforce: restricted}
---
apiVersion: v1
kind: Namespace
metadata:
  name: lenient
  labels: {pod-security.kubernetes.io/enforce: privileged, pod-security.kubernetes.io/warn: restricted}
---
apiVersion: v1
kind: Namespace
metadata:
  name: legacy
  labels: {pod-security.kubernetes.io/enforce: baseline}
---
# No controller manager runs here to make each namespace's default ServiceAccount, which
# the API server's ServiceAccount admission requires of a Pod.
apiVersion: v1
kind: ServiceAccount
metadata: {name: default, namespace: strict}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: default, namespace: lenient}
"#,
    )
    .await;
    let pki = support::Pki::issue(&env.dir.join("pki"));
    let addr = format!("127.0.0.1:{}", free_port());
    let _operator = Operator::start(
        &env,
        &[
            "--webhook-addr",
            &addr,
            "--tls-cert",
            pki.cert.to_str().unwrap(),
            "--tls-key",
            pki.key.to_str().unwrap(),
        ],
    );
    register_webhook(
        &client,
        "validatingwebhookconfiguration-pods.yaml",
        "/validate",
        &addr,
        &pki,
    )
    .await;

    let pod = |ns: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "root", "namespace": ns},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0",
                                     "securityContext": {"privileged": true}}]}
        })
    };
    // Until the operator's snapshot holds the namespaces, the webhook answers 503 (or,
    // for a namespace it does not know yet, the cluster default): wait for the answer its
    // labels give.
    let refused = eventually("the privileged pod refused by Lattice", WAIT, || async {
        let (ok, stderr) = kubectl_apply(&env, &pod("strict"));
        (!ok && stderr.contains("Privileged containers")).then_some(stderr)
    })
    .await;
    assert!(
        refused.contains("violates PodSecurity \"restricted:latest\""),
        "{refused}"
    );
    assert!(
        refused.contains("Remove `securityContext.privileged: true`"),
        "{refused}"
    );
    let warned = eventually("the privileged pod warned about", WAIT, || async {
        let (ok, stderr) = kubectl_apply(&env, &pod("lenient"));
        ok.then_some(stderr)
    })
    .await;
    assert!(
        warned.contains("Warning: would violate PodSecurity \"restricted:latest\""),
        "{warned}"
    );
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "lenient");
    assert!(pods.get("root").await.is_ok(), "the warned pod exists");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "strict");
    assert!(pods.get("root").await.is_err(), "the refused pod does not");

    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "agent", "namespace": "legacy"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
            "metadata": {"labels": {"app": "agent"}},
            "spec": {"hostPID": true, "containers": [{"name": "agent", "image": "registry.example/agent:1"}]}
        }}
    });
    let warned = eventually("the deployment warned about", WAIT, || async {
        let (ok, stderr) = kubectl_apply(&env, &deployment);
        (ok && stderr.contains("hostNamespaces")).then_some(stderr)
    })
    .await;
    assert!(
        warned.contains("Warning: would violate PodSecurity \"baseline:latest\""),
        "{warned}"
    );

    // RBAC through the second configuration: cluster-admin for anonymous users is refused
    // with the forbid and its advice; a grant to a group is created.
    register_webhook(
        &client,
        "validatingwebhookconfiguration-kubernetes.yaml",
        "/validate",
        &addr,
        &pki,
    )
    .await;
    let binding = |name: &str, subject: Value| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [subject]
        })
    };
    let refused = eventually("cluster-admin for anonymous users refused", WAIT, || async {
        let (ok, stderr) = kubectl_apply(
            &env,
            &binding(
                "anonymous-admin",
                json!({"kind": "User", "name": "system:anonymous", "apiGroup": "rbac.authorization.k8s.io"}),
            ),
        );
        (!ok && stderr.contains("no-anonymous-access")).then_some(stderr)
    })
    .await;
    assert!(refused.contains("Remove `system:anonymous`"), "{refused}");
    let (ok, stderr) = kubectl_apply(
        &env,
        &binding(
            "oncall-admin",
            json!({"kind": "Group", "name": "oncall", "apiGroup": "rbac.authorization.k8s.io"}),
        ),
    );
    assert!(ok, "{stderr}");
}

/// The cluster's own objects, the ones Lattice did not derive, are watched and scanned: a
/// vendor Deployment that takes the host and cluster-admin bound to `system:anonymous` fail
/// their CIS and Pod Security checks in the profile's evidence. A Pod run by a controller is
/// judged through its controller, not twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_own_objects_are_scanned() {
    // The API server's own Pod Security admission is off: a privileged Pod that predates a
    // policy, or came past it, is what a scan must find.
    let env = TestEnv::start_with_flags("core-scan", &["--disable-admission-plugins=PodSecurity"]);
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(
        &client,
        r#"
apiVersion: v1
kind: Namespace
metadata:
  name: vendor
  labels:
    pod-security.kubernetes.io/enforce: baseline
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: agent
  namespace: vendor
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      hostNetwork: true
      containers:
        - name: agent
          image: quay.io/vendor/agent:2.1
          securityContext:
            privileged: true
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: anonymous-admin
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
  - kind: User
    name: system:anonymous
    apiGroup: rbac.authorization.k8s.io
---
apiVersion: lattice.dev/v1alpha1
kind: LatticeComplianceProfile
metadata:
  name: cluster-objects
spec:
  frameworks: [cis-kubernetes, pod-security]
  scanInterval: 24h
  namespaces: [vendor]
  formats: [markdown]
  evidenceSink:
    configMap:
      name: cluster-objects-evidence
      namespace: default
---
apiVersion: lattice.dev/v1alpha1
kind: LatticeComplianceProfile
metadata:
  name: whole-cluster
spec:
  frameworks: [cis-kubernetes]
  scanInterval: 24h
  evidenceSink:
    configMap:
      name: whole-cluster-evidence
      namespace: default
"#,
    )
    .await;
    // A Pod its Deployment's ReplicaSet would run (this control plane runs no controllers).
    let deployment = get(
        &client,
        "apps/v1",
        "Deployment",
        "deployments",
        Some("vendor"),
        "agent",
    )
    .await
    .expect("the Deployment");
    let uid = deployment["metadata"]["uid"].as_str().unwrap().to_owned();
    apply_yaml(
        &client,
        &format!(
            r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: default
  namespace: vendor
---
apiVersion: v1
kind: Pod
metadata:
  name: agent-x1
  namespace: vendor
  ownerReferences:
    - apiVersion: apps/v1
      kind: Deployment
      name: agent
      uid: {uid}
      controller: true
spec:
  hostNetwork: true
  containers:
    - name: agent
      image: quay.io/vendor/agent:2.1
      securityContext:
        privileged: true
"#
        ),
    )
    .await;
    let _operator = Operator::start(&env, &[]);

    let report = |cm: Value| -> Value {
        serde_json::from_str(cm["data"]["report.json"].as_str().unwrap()).unwrap()
    };
    let failures = |report: &Value, check: &str| -> Vec<String> {
        report["frameworks"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|f| f["checks"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["id"] == check)
            .flat_map(|c| c["failures"].as_array().cloned().unwrap_or_default())
            .map(|f| f["subject"]["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let scoped = report(
        eventually("the vendor namespace's evidence", WAIT, || async {
            get(
                &client,
                "v1",
                "ConfigMap",
                "configmaps",
                Some("default"),
                "cluster-objects-evidence-1",
            )
            .await
        })
        .await,
    );
    assert_eq!(
        failures(&scoped, "cis-kubernetes/pod-host-network"),
        ["vendor/Deployment/agent"],
        "the Deployment, once; its Pod is judged through it"
    );
    assert_eq!(
        failures(&scoped, "cis-kubernetes/privileged-approved"),
        ["vendor/Deployment/agent/agent"]
    );
    assert_eq!(
        failures(&scoped, "pod-security/meets-namespace-level"),
        ["vendor/Deployment/agent"],
        "privileged breaks the baseline the namespace enforces"
    );
    assert!(
        failures(&scoped, "cis-kubernetes/cluster-admin-bindings").is_empty(),
        "cluster-scoped RBAC is outside a namespace-scoped profile"
    );
    let vendor = scoped["pod_security"]
        .as_array()
        .and_then(|l| l.iter().find(|n| n["namespace"] == "vendor"))
        .cloned()
        .unwrap_or_else(|| panic!("levels per namespace: {scoped}"));
    assert_eq!(vendor["enforces"], "baseline:latest");
    assert_eq!(vendor["pods"], 1);
    assert_eq!(vendor["level"], "privileged");
    let whole = report(
        eventually("the whole cluster's evidence", WAIT, || async {
            get(
                &client,
                "v1",
                "ConfigMap",
                "configmaps",
                Some("default"),
                "whole-cluster-evidence-1",
            )
            .await
        })
        .await,
    );
    assert_eq!(
        failures(&whole, "cis-kubernetes/cluster-admin-bindings"),
        ["ClusterRoleBinding/anonymous-admin"]
    );
    assert_eq!(
        failures(&whole, "cis-kubernetes/no-anonymous-bindings"),
        ["ClusterRoleBinding/anonymous-admin"]
    );
}

/// A LatticePackage on a server with Flux's real CRDs: applied, its chart's source and
/// HelmRelease are created (the secret value reaching the release only through an
/// ExternalSecret); changed, they follow; deleted, they go. A package whose secret the
/// policies do not grant derives nothing and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_becomes_a_flux_release_that_follows_it_and_goes_with_it() {
    let env = TestEnv::start("packages");
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(&client, SHOP).await;
    let package = |version: &str, secret_path: &str| {
        format!(
            r#"
apiVersion: lattice.dev/v1alpha1
kind: LatticePackage
metadata: {{name: cache, namespace: shop}}
spec:
  chart: {{repository: "oci://registry.example.com/charts", name: redis, version: "{version}"}}
  dependsOn: [storage]
  values:
    architecture: standalone
    auth: {{password: "${{resources.redis-auth.password}}"}}
  resources:
    redis-auth:
      type: secret
      id: {secret_path}
      params: {{provider: vault, keys: [password]}}
"#
        )
    };
    apply_yaml(
        &client,
        &format!(
            r#"
apiVersion: lattice.dev/v1alpha1
kind: SecretProvider
metadata: {{name: vault}}
spec:
  backend: vault
  provider: {{server: "https://vault.example.com:8200", path: secret, version: v2}}
---
apiVersion: lattice.dev/v1alpha1
kind: CedarPolicy
metadata: {{name: own-secrets, namespace: shop}}
spec:
  policies: |
    @id("shop-reads-shop-secrets")
    @advice("shop reads only secrets under shop/")
    permit (principal, action == Lattice::Action::"AccessSecret", resource)
    when {{ principal in Lattice::Namespace::"shop" && resource.path like "shop/*" }};
---
{}"#,
            package("19.6.4", "shop/redis/auth")
        ),
    )
    .await;
    let operator = Operator::start(&env, &[]);
    let release = || {
        object(
            &client,
            "helm.toolkit.fluxcd.io/v2",
            "HelmRelease",
            "helmreleases",
            "cache",
        )
    };
    let source = || {
        object(
            &client,
            "source.toolkit.fluxcd.io/v1",
            "OCIRepository",
            "ocirepositories",
            "cache",
        )
    };
    let hr = eventually("the HelmRelease shop/cache", WAIT, release).await;
    assert_eq!(
        hr["spec"]["chartRef"],
        json!({"kind": "OCIRepository", "name": "cache"}),
        "{}",
        operator.logs()
    );
    assert_eq!(hr["spec"]["values"], json!({"architecture": "standalone"}));
    assert_eq!(
        hr["spec"]["valuesFrom"],
        json!([{"kind": "Secret", "name": "cache-values", "valuesKey": "values.yaml"}])
    );
    assert_eq!(
        hr["spec"]["dependsOn"],
        json!([{"name": "storage", "namespace": "shop"}])
    );
    assert_eq!(
        hr["metadata"]["ownerReferences"][0]["kind"],
        "LatticePackage"
    );
    let oci = eventually("OCIRepository shop/cache", WAIT, source).await;
    assert_eq!(oci["spec"]["ref"], json!({"tag": "19.6.4"}));
    let es = eventually("ExternalSecret shop/cache-values", WAIT, || {
        object(
            &client,
            "external-secrets.io/v1",
            "ExternalSecret",
            "externalsecrets",
            "cache-values",
        )
    })
    .await;
    assert_eq!(es["spec"]["data"][0]["remoteRef"]["key"], "shop/redis/auth");
    let status = eventually("shop/cache Ready", WAIT, || async {
        let p = get(
            &client,
            "lattice.dev/v1alpha1",
            "LatticePackage",
            "latticepackages",
            Some("shop"),
            "cache",
        )
        .await?;
        (p.pointer("/status/phase") == Some(&json!("Ready"))).then_some(p)
    })
    .await;
    assert_eq!(condition(&status, "Authorized")["status"], "True");

    // Changed: a new chart version is a new source reference.
    apply_yaml(&client, &package("19.7.0", "shop/redis/auth")).await;
    eventually("the OCIRepository at 19.7.0", WAIT, || async {
        let oci = source().await?;
        (oci["spec"]["ref"]["tag"] == "19.7.0").then_some(())
    })
    .await;

    // Deleted: what it derived goes with it.
    let packages = derived_api(
        &client,
        "lattice.dev/v1alpha1",
        "LatticePackage",
        "latticepackages",
    );
    packages
        .delete("cache", &DeleteParams::default())
        .await
        .unwrap();
    gone(
        &client,
        "the HelmRelease shop/cache removed",
        "helm.toolkit.fluxcd.io/v2",
        "HelmRelease",
        "helmreleases",
        "cache",
    )
    .await;
    assert!(
        source().await.is_none(),
        "the OCIRepository outlived its package"
    );

    // A package reading another namespace's secret: denied, nothing derived, and said why.
    apply_yaml(&client, &package("19.7.0", "payments/ledger/db")).await;
    let denied = eventually("shop/cache Denied", WAIT, || async {
        let p = get(
            &client,
            "lattice.dev/v1alpha1",
            "LatticePackage",
            "latticepackages",
            Some("shop"),
            "cache",
        )
        .await?;
        (p.pointer("/status/phase") == Some(&json!("Denied"))).then_some(p)
    })
    .await;
    let why = condition(&denied, "Authorized")["message"].to_string();
    assert!(why.contains("AccessSecret"), "{why}");
    assert!(release().await.is_none(), "a denied package got a release");
    assert!(source().await.is_none(), "a denied package got a source");
}

/// A LatticeQuota on a real API server: the workload that would pass it derives nothing and
/// says by how much; when an older workload goes, the room it leaves is taken without any
/// other change (the planner re-derives every workload under the quota).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refuses_the_newest_workload_and_admits_it_when_room_is_made() {
    let env = TestEnv::start("quotas");
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(&client, SHOP).await;
    apply_yaml(
        &client,
        r#"
apiVersion: lattice.dev/v1alpha1
kind: LatticeQuota
metadata: {name: shop-count}
spec:
  namespace: shop
  limits: {workloads: 2, cpu: "4"}
"#,
    )
    .await;
    let operator = Operator::start(&env, &[]);
    phase(&client, "api", "Ready").await;
    phase(&client, "web", "Ready").await;
    // Created after api and web: the third workload under a quota of two.
    tokio::time::sleep(Duration::from_secs(1)).await;
    apply_yaml(
        &client,
        r#"
apiVersion: lattice.dev/v1alpha1
kind: LatticeService
metadata: {name: extra, namespace: shop}
spec:
  containers:
    main:
      image: registry.example.com/shop/api:1.0.0
      resources:
        requests: {cpu: 100m, memory: 64Mi}
"#,
    )
    .await;
    let denied = phase(&client, "extra", "Denied").await;
    let why = condition(&denied, "Authorized")["message"].to_string();
    assert!(why.contains("ConsumeQuota"), "{why}");
    assert!(
        why.contains("over quota `shop-count`: workloads 3.0000 of 2.0000 (1.0000 over)"),
        "{why}\n{}",
        operator.logs()
    );
    assert!(deployment(&client, "extra").await.is_none());
    // The older ones keep running.
    assert_eq!(service(&client, "api").await["status"]["phase"], "Ready");
    // The quota says what it holds and whom it refused.
    let quota = || {
        get(
            &client,
            "lattice.dev/v1alpha1",
            "LatticeQuota",
            "latticequotas",
            None,
            "shop-count",
        )
    };
    let status = eventually("the quota's usage", WAIT, || async {
        let q = quota().await?;
        (q.pointer("/status/usage/workloads") == Some(&json!("3"))).then_some(q)
    })
    .await;
    assert_eq!(
        status["status"]["refused"],
        json!(["shop/extra"]),
        "{status}"
    );
    // api (2 × 100m), web and extra (100m each).
    assert_eq!(status["status"]["usage"]["cpu"], "0.4", "{status}");

    let services = derived_api(
        &client,
        "lattice.dev/v1alpha1",
        "LatticeService",
        "latticeservices",
    );
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    phase(&client, "extra", "Ready").await;
    eventually("the quota to refuse no one", WAIT, || async {
        let q = quota().await?;
        (q.pointer("/status/usage/workloads") == Some(&json!("2"))
            && q.pointer("/status/refused").is_none())
        .then_some(())
    })
    .await;
    assert!(
        deployment(&client, "extra").await.is_some(),
        "{}",
        operator.logs()
    );
}

/// Backups and restores on a real API server with Velero's CRDs: a LatticeClusterBackup
/// becomes a Velero Schedule with its storage location and credentials, follows a change
/// and goes with it; a LatticeRestore becomes a Velero Restore only when its admission
/// stamp verifies and Cedar's Restore allows the user it names, and otherwise derives
/// nothing and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_becomes_a_velero_schedule_and_a_restore_waits_for_cedar() {
    let env = TestEnv::start("backups");
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(&client, SHOP).await;
    let backup = |paused: bool| {
        format!(
            r#"
apiVersion: v1
kind: Namespace
metadata: {{name: velero}}
---
apiVersion: lattice.dev/v1alpha1
kind: LatticeClusterBackup
metadata: {{name: nightly}}
spec:
  schedule: "0 2 * * *"
  paused: {paused}
  storage:
    provider: s3
    bucket: cluster-backups
    region: eu-west-1
    credentials: {{provider: vault, id: platform/velero, key: aws}}
  scope: {{excludeNamespaces: [scratch]}}
  retention: {{ttl: 720h}}
"#
        )
    };
    apply_yaml(&client, &backup(false)).await;
    let operator = Operator::start(&env, &[]);
    let velero = |kind: &'static str, plural: &'static str, name: &'static str| {
        let client = client.clone();
        async move { get(&client, "velero.io/v1", kind, plural, Some("velero"), name).await }
    };
    let schedule = eventually("the Velero Schedule velero/nightly", WAIT, || {
        velero("Schedule", "schedules", "nightly")
    })
    .await;
    assert_eq!(
        schedule["spec"]["template"]["storageLocation"],
        "nightly",
        "{}",
        operator.logs()
    );
    assert_eq!(schedule["spec"]["template"]["ttl"], "720h");
    assert_eq!(
        schedule["metadata"]["ownerReferences"][0]["kind"],
        "LatticeClusterBackup"
    );
    let bsl = eventually("the BackupStorageLocation velero/nightly", WAIT, || {
        velero("BackupStorageLocation", "backupstoragelocations", "nightly")
    })
    .await;
    assert_eq!(bsl["spec"]["provider"], "aws");
    assert_eq!(
        bsl["spec"]["credential"],
        json!({"name": "nightly-storage-credentials", "key": "cloud"})
    );
    let credentials = eventually(
        "the ExternalSecret velero/nightly-storage-credentials",
        WAIT,
        || {
            get(
                &client,
                "external-secrets.io/v1",
                "ExternalSecret",
                "externalsecrets",
                Some("velero"),
                "nightly-storage-credentials",
            )
        },
    )
    .await;
    assert_eq!(
        credentials["spec"]["data"][0]["remoteRef"],
        json!({"key": "platform/velero", "property": "aws"})
    );
    let lattice = |kind: &'static str, plural: &'static str, name: &'static str| {
        let client = client.clone();
        async move { get(&client, "lattice.dev/v1alpha1", kind, plural, None, name).await }
    };
    eventually("nightly Ready", WAIT, || async {
        let b = lattice("LatticeClusterBackup", "latticeclusterbackups", "nightly").await?;
        (b.pointer("/status/phase") == Some(&json!("Ready"))).then_some(())
    })
    .await;

    // Changed: paused.
    apply_yaml(&client, &backup(true)).await;
    eventually("the Schedule paused", WAIT, || async {
        let s = velero("Schedule", "schedules", "nightly").await?;
        (s["spec"]["paused"] == json!(true)).then_some(())
    })
    .await;

    let restore = |name: &str, namespaces: &[&str]| -> Value {
        json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeRestore",
            "metadata": {"name": name},
            "spec": {"clusterBackupRef": "nightly", "includeNamespaces": namespaces}
        })
    };
    let apply_object = |object: Value| {
        let client = client.clone();
        async move { cluster::apply(&client, &cluster::resource_of(&object), &object).await }
    };
    let phase_of = |name: &'static str, phase: &'static str| async move {
        eventually(&format!("restore {name} {phase}"), WAIT, || async {
            let r = lattice("LatticeRestore", "latticerestores", name).await?;
            (r.pointer("/status/phase") == Some(&json!(phase))).then_some(r)
        })
        .await
    };
    // Written past the webhook: no stamp, nothing restored.
    apply_object(restore("unstamped", &["shop"])).await;
    let failed = phase_of("unstamped", "Failed").await;
    let why = condition(&failed, "Ready")["message"].to_string();
    assert!(why.contains("not admitted"), "{why}");
    // A platform administrator restoring shop: allowed, a Velero Restore of the latest.
    let admin = ["lattice:platform-admins"];
    apply_object(cluster::stamped_restore(
        restore("shop-back", &["shop"]),
        "alice",
        &admin,
    ))
    .await;
    let velero_restore = eventually("the Velero Restore velero/shop-back", WAIT, || {
        velero("Restore", "restores", "shop-back")
    })
    .await;
    assert_eq!(velero_restore["spec"]["scheduleName"], "nightly");
    assert_eq!(
        velero_restore["spec"]["includedNamespaces"],
        json!(["shop"])
    );
    assert_eq!(velero_restore["spec"]["restorePVs"], json!(true));
    // The same administrator restoring everything, the platform's namespace with it: the
    // baseline forbids it, and nothing is restored.
    apply_object(cluster::stamped_restore(
        restore("everything", &[]),
        "alice",
        &admin,
    ))
    .await;
    let denied = phase_of("everything", "Denied").await;
    let why = condition(&denied, "Authorized")["message"].to_string();
    assert!(why.contains("restore-spares-the-platform"), "{why}");
    // Someone who is no platform administrator: no permit.
    apply_object(cluster::stamped_restore(
        restore("by-dev", &["shop"]),
        "dev",
        &["shop-developers"],
    ))
    .await;
    let denied = phase_of("by-dev", "Denied").await;
    let why = condition(&denied, "Authorized")["message"].to_string();
    assert!(why.contains("Restore"), "{why}");
    for name in ["unstamped", "everything", "by-dev"] {
        assert!(
            get(
                &client,
                "velero.io/v1",
                "Restore",
                "restores",
                Some("velero"),
                name
            )
            .await
            .is_none(),
            "{name} was restored"
        );
    }
    // Edited past the webhook (widened to another namespace, the stamp kept): the stamp no
    // longer holds, and the Velero Restore is withdrawn.
    let mut widened = cluster::stamped_restore(restore("shop-back", &["shop"]), "alice", &admin);
    widened["spec"]["includeNamespaces"] = json!(["shop", "payments"]);
    apply_object(widened).await;
    let failed = phase_of("shop-back", "Failed").await;
    assert!(
        condition(&failed, "Ready")["message"]
            .to_string()
            .contains("does not match this spec"),
        "{failed}"
    );
    eventually("the Velero Restore withdrawn", WAIT, || async {
        velero("Restore", "restores", "shop-back")
            .await
            .is_none()
            .then_some(())
    })
    .await;

    // Deleted: the schedule and its storage go with the backup.
    let backups: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("lattice.dev", "v1alpha1", "LatticeClusterBackup"),
            "latticeclusterbackups",
        ),
    );
    backups
        .delete("nightly", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Schedule removed", WAIT, || async {
        velero("Schedule", "schedules", "nightly")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        velero("BackupStorageLocation", "backupstoragelocations", "nightly")
            .await
            .is_none(),
        "the storage location outlived its backup"
    );
}

/// A CertIssuer and a DNSProvider on a real API server with cert-manager's CRDs: the
/// ClusterIssuer (DNS-01 through the provider's zone, its credentials synced into
/// cert-manager's namespace) and the external-dns Deployment for the zone are created,
/// follow a change of zone, and go with their objects; an issuer naming a DNSProvider that
/// does not exist derives nothing and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_and_a_dns_zone_become_cert_manager_and_external_dns_objects() {
    let env = TestEnv::start("issuers");
    let client = env.client().await;
    install_crds(&client).await;
    apply_yaml(&client, SHOP).await;
    let dns = |zone: &str| {
        format!(
            r#"
apiVersion: v1
kind: Namespace
metadata: {{name: cert-manager}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: external-dns}}
---
apiVersion: lattice.dev/v1alpha1
kind: DNSProvider
metadata: {{name: public}}
spec:
  type: cloudflare
  zone: {zone}
  credentials: {{provider: vault, id: dns/cloudflare, keys: [CF_API_TOKEN]}}
  cloudflare: {{proxied: true}}
---
apiVersion: lattice.dev/v1alpha1
kind: CertIssuer
metadata: {{name: letsencrypt}}
spec:
  type: acme
  acme:
    server: https://acme-staging-v02.api.letsencrypt.org/directory
    email: ops@example.com
    dnsProviderRef: public
"#
        )
    };
    apply_yaml(&client, &dns("example.com")).await;
    let operator = Operator::start(&env, &[]);
    let issuer = || {
        let client = client.clone();
        async move {
            get(
                &client,
                "cert-manager.io/v1",
                "ClusterIssuer",
                "clusterissuers",
                None,
                "letsencrypt",
            )
            .await
        }
    };
    let deployment = || {
        let client = client.clone();
        async move {
            get(
                &client,
                "apps/v1",
                "Deployment",
                "deployments",
                Some("external-dns"),
                "external-dns-public",
            )
            .await
        }
    };
    let ci = eventually("the ClusterIssuer letsencrypt", WAIT, issuer).await;
    let solver = &ci["spec"]["acme"]["solvers"][0];
    assert_eq!(
        solver["dns01"]["cloudflare"]["apiTokenSecretRef"],
        json!({"name": "letsencrypt-dns01", "key": "CF_API_TOKEN"}),
        "{}",
        operator.logs()
    );
    assert_eq!(solver["selector"]["dnsZones"], json!(["example.com"]));
    assert_eq!(ci["metadata"]["ownerReferences"][0]["kind"], "CertIssuer");
    let synced = eventually(
        "the DNS-01 credentials in cert-manager's namespace",
        WAIT,
        || {
            get(
                &client,
                "external-secrets.io/v1",
                "ExternalSecret",
                "externalsecrets",
                Some("cert-manager"),
                "letsencrypt-dns01",
            )
        },
    )
    .await;
    assert_eq!(
        synced["spec"]["data"][0]["remoteRef"]["key"],
        "dns/cloudflare"
    );
    let d = eventually("the external-dns Deployment", WAIT, deployment).await;
    let args = d["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("--domain-filter=example.com") && args.contains("--cloudflare-proxied"),
        "{args}"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["serviceAccountName"],
        "external-dns"
    );

    // Changed: another zone, in both the instance and the issuer's solver.
    apply_yaml(&client, &dns("shop.example.com")).await;
    eventually("external-dns on the new zone", WAIT, || async {
        let d = deployment().await?;
        d["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string()
            .contains("--domain-filter=shop.example.com")
            .then_some(())
    })
    .await;
    eventually("the solver on the new zone", WAIT, || async {
        let ci = issuer().await?;
        (ci["spec"]["acme"]["solvers"][0]["selector"]["dnsZones"] == json!(["shop.example.com"]))
            .then_some(())
    })
    .await;

    // The DNSProvider deleted: its instance goes, and the issuer naming it derives nothing
    // and says why.
    let providers: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &lattice_controllers::operator::apply::lattice_resource(
            lattice_schemas::crd::Kind::DNSProvider,
        ),
    );
    providers
        .delete("public", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the external-dns Deployment removed", WAIT, || async {
        deployment().await.is_none().then_some(())
    })
    .await;
    let failed = eventually("the issuer Failed", WAIT, || async {
        let i = get(
            &client,
            "lattice.dev/v1alpha1",
            "CertIssuer",
            "certissuers",
            None,
            "letsencrypt",
        )
        .await?;
        (i.pointer("/status/phase") == Some(&json!("Failed"))).then_some(i)
    })
    .await;
    let why = condition(&failed, "Ready")["message"].to_string();
    assert!(why.contains("does not exist"), "{why}");
    assert!(
        issuer().await.is_none(),
        "a ClusterIssuer outlived its DNSProvider"
    );
}
