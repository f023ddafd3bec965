//! A real control plane for the operator's integration tests: `tools/testenv` (etcd and
//! kube-apiserver 1.33, built from their Go modules) on loopback, the CRDs installed, and
//! the `lattice-operator` binary run against it as a user would run it.

#![allow(dead_code)]

pub mod fleet;
pub mod hierarchy;
pub mod kubelet;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ApiResource;
use kube::{Client, Config};
use lattice_controllers::operator::apply::lattice_resource;
use lattice_schemas::crd::Kind;
use serde_json::{Value, json};

pub fn root() -> PathBuf {
    lattice_testkit::workspace_root()
}

fn testenv_binary() -> PathBuf {
    lattice_testkit::testenv::binary()
}

/// `kubectl`, built by `tools/testenv/build` from the same Kubernetes module as the API
/// server, beside the testenv binary.
pub fn kubectl_binary() -> PathBuf {
    let path = testenv_binary().with_file_name("kubectl");
    assert!(
        path.exists(),
        "{} is missing: tools/testenv/build makes it",
        path.display()
    );
    path
}

/// A running etcd + kube-apiserver. Stopped (and its directory removed) on drop.
pub struct TestEnv {
    child: Child,
    stdin: Option<ChildStdin>,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// The extra kube-apiserver flags it was started with.
    flags: Vec<String>,
}

impl TestEnv {
    /// Starts a fresh control plane for one test.
    pub fn start(name: &str) -> TestEnv {
        TestEnv::start_with_flags(name, &[])
    }

    /// Starts a fresh control plane with more kube-apiserver flags (kept across restarts).
    pub fn start_with_flags(name: &str, flags: &[&str]) -> TestEnv {
        let dir = std::env::temp_dir().join(format!("lattice-it-{}-{name}", std::process::id()));
        let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
        let (child, stdin, kubeconfig) = spawn_testenv(&dir, "--wipe", &flags);
        TestEnv {
            child,
            stdin,
            dir,
            kubeconfig,
            flags,
        }
    }

    /// Stops the control plane cleanly, waits `down_for`, and starts it again on the same
    /// state and ports (`testenv --resume`): to a client, an API server restart.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        let (child, stdin, kubeconfig) = spawn_testenv(&self.dir, "--resume", &self.flags);
        assert_eq!(
            kubeconfig, self.kubeconfig,
            "the same kubeconfig after a restart"
        );
        self.child = child;
        self.stdin = stdin;
    }

    fn stop(&mut self) {
        // Closing stdin is testenv's signal to stop cleanly.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A client as the cluster admin impersonating `user` in `groups` (what the API server
    /// then tells the webhook in `userInfo`).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig is usable");
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups =
            Some(groups.iter().map(|g| (*g).to_owned()).collect());
        Client::try_from(config).expect("client")
    }

    /// Installs the operator's shipped RBAC (`deploy/operator/rbac.yaml`) and writes a
    /// kubeconfig that acts as its ServiceAccount (the admin impersonating
    /// `system:serviceaccount:lattice-system:lattice-operator`): an operator started with
    /// it can do exactly what the ClusterRole and Role grant.
    pub async fn operator_account(&self) -> PathBuf {
        self.account("deploy/operator/rbac.yaml", "lattice-operator")
            .await
    }

    /// Installs the shipped RBAC in `rbac` (a path under the workspace) and writes a
    /// kubeconfig acting as ServiceAccount `lattice-system/<service_account>`.
    pub async fn account(&self, rbac: &str, service_account: &str) -> PathBuf {
        let client = self.client().await;
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lattice-system"}});
        apply(&client, &resource_of(&namespace), &namespace).await;
        let text = std::fs::read_to_string(root().join(rbac)).unwrap();
        for object in documents(&text) {
            let kind = object["kind"].as_str().unwrap();
            let (group, plural) = match kind {
                "ServiceAccount" => ("", "serviceaccounts"),
                "ClusterRole" => ("rbac.authorization.k8s.io", "clusterroles"),
                "ClusterRoleBinding" => ("rbac.authorization.k8s.io", "clusterrolebindings"),
                "Role" => ("rbac.authorization.k8s.io", "roles"),
                "RoleBinding" => ("rbac.authorization.k8s.io", "rolebindings"),
                other => panic!("{rbac} holds a {other}"),
            };
            let resource = ApiResource::from_gvk_with_plural(
                &kube::core::GroupVersionKind::gvk(group, "v1", kind),
                plural,
            );
            apply(&client, &resource, &object).await;
        }
        let mut kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        for user in &mut kubeconfig.auth_infos {
            if let Some(auth) = user.auth_info.as_mut() {
                auth.impersonate = Some(format!(
                    "system:serviceaccount:lattice-system:{service_account}"
                ));
                auth.impersonate_groups = Some(vec![
                    "system:serviceaccounts".into(),
                    "system:serviceaccounts:lattice-system".into(),
                    "system:authenticated".into(),
                ]);
            }
        }
        let path = self
            .dir
            .join(format!("{service_account}-account.kubeconfig"));
        std::fs::write(&path, serde_json::to_string(&kubeconfig).unwrap()).unwrap();
        path
    }

    /// A bearer token of ServiceAccount `namespace/name` (a TokenRequest; the account is
    /// made if missing), valid for an hour.
    pub async fn token(&self, namespace: &str, name: &str) -> String {
        self.token_for(namespace, name, &[]).await
    }

    /// Like [`TestEnv::token`], for `audiences` (empty: the API server's own). The API
    /// server signs it with its service-account key as issuer
    /// `https://kubernetes.default.svc.cluster.local`, and publishes that key by OIDC
    /// discovery.
    pub async fn token_for(&self, namespace: &str, name: &str, audiences: &[&str]) -> String {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let client = self.client().await;
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        apply(&client, &resource_of(&ns), &ns).await;
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace}});
        apply(&client, &resource_of(&sa), &sa).await;
        let api: Api<ServiceAccount> = Api::namespaced(client, namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create_token_request(name, &Default::default(), &request)
            .await
            .expect("a token")
            .status
            .expect("a token in the answer")
            .token
    }

    /// Like [`TestEnv::account`], but the kubeconfig carries the ServiceAccount's own
    /// bearer token, as a pod's mounted token would: the API server sees the account
    /// itself, so it may impersonate others (an impersonated account could not).
    pub async fn token_account(&self, rbac: &str, service_account: &str) -> PathBuf {
        self.account(rbac, service_account).await;
        let token = self.token("lattice-system", service_account).await;
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let mut value = serde_json::to_value(&kubeconfig).unwrap();
        for user in value["users"].as_array_mut().unwrap() {
            user["user"] = json!({"token": token});
        }
        let path = self.dir.join(format!("{service_account}-token.kubeconfig"));
        std::fs::write(&path, value.to_string()).unwrap();
        path
    }

    /// The API server's URL, and the CA its certificate is signed by (PEM).
    pub fn server_and_ca(&self) -> (String, String) {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let server = kubeconfig.clusters[0]
            .cluster
            .as_ref()
            .and_then(|c| c.server.clone())
            .expect("a server");
        let ca = std::fs::read_to_string(self.dir.join("ca.crt")).expect("testenv's CA");
        (server, ca)
    }

    /// A client as the cluster admin.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig is usable");
        Client::try_from(config).expect("client")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs testenv on `dir` (`mode`: `--wipe` for a fresh one, `--resume` to restart) and
/// waits for its ready line.
fn spawn_testenv(dir: &Path, mode: &str, flags: &[String]) -> (Child, Option<ChildStdin>, PathBuf) {
    lattice_testkit::testenv::spawn_with(dir, mode, flags)
}

/// Server-side applies one object as field manager `test`.
pub async fn apply(client: &Client, resource: &ApiResource, object: &Value) {
    let name = object["metadata"]["name"].as_str().expect("a name");
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    api.patch(
        name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {} {name}: {e}", resource.kind));
}

/// Reads YAML documents into JSON values.
pub fn documents(text: &str) -> Vec<Value> {
    let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(text);
    assert!(errors.is_empty(), "test YAML does not parse: {errors:?}");
    docs.into_iter()
        .map(|d| d.value)
        .filter(|v| v.is_object())
        .collect()
}

/// The API resource of a Lattice kind, a Namespace, a ServiceAccount, an RBAC object, a Pod,
/// a Node or a Deployment.
pub fn resource_of(object: &Value) -> ApiResource {
    use k8s_openapi::api::rbac::v1 as rbac;
    let kind = object["kind"].as_str().expect("a kind");
    match kind {
        "Namespace" => return ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()),
        "ServiceAccount" => {
            return ApiResource::erase::<k8s_openapi::api::core::v1::ServiceAccount>(&());
        }
        "Role" => return ApiResource::erase::<rbac::Role>(&()),
        "RoleBinding" => return ApiResource::erase::<rbac::RoleBinding>(&()),
        "ClusterRole" => return ApiResource::erase::<rbac::ClusterRole>(&()),
        "ClusterRoleBinding" => return ApiResource::erase::<rbac::ClusterRoleBinding>(&()),
        "Pod" => return ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
        "Node" => return ApiResource::erase::<k8s_openapi::api::core::v1::Node>(&()),
        "Deployment" => return ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
        _ => {}
    }
    lattice_resource(Kind::from_name(kind).unwrap_or_else(|| panic!("not a Lattice kind: {kind}")))
}

/// The admission key the tests' operators check stamps with (`--admission-key`).
pub const ADMISSION_KEY: [u8; 32] = [42; 32];

/// A CedarPolicy stamped as the webhook stamps a write it admitted for a security
/// administrator: what the operator loads. The tests that write policies straight to the
/// API server (no webhook configured) use it; the webhook test shows the real path.
pub fn stamped(mut policy: Value) -> Value {
    use lattice_controllers::webhook::stamp::{ANNOTATION, AdmissionKey};
    let key = AdmissionKey::from_bytes(&ADMISSION_KEY).unwrap();
    let spec: lattice_schemas::crd::policy::CedarPolicySpec =
        serde_json::from_value(policy["spec"].clone()).unwrap();
    let ns = policy["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let name = policy["metadata"]["name"].as_str().unwrap().to_owned();
    let sec = lattice_gates::admission::Requester {
        username: "test-security-admin".into(),
        groups: vec!["lattice:security-admins".into()],
    };
    policy["metadata"]["annotations"][ANNOTATION] = json!(key.stamp(&ns, &name, &spec, &sec));
    policy
}

/// A LatticeRestore stamped as the webhook stamps a write it admitted for `user` in
/// `groups`: the user the operator asks `Restore` for again.
pub fn stamped_restore(mut restore: Value, user: &str, groups: &[&str]) -> Value {
    use lattice_controllers::webhook::stamp::{ANNOTATION, AdmissionKey, place};
    let key = AdmissionKey::from_bytes(&ADMISSION_KEY).unwrap();
    let spec: lattice_schemas::crd::backup::LatticeRestoreSpec =
        serde_json::from_value(restore["spec"].clone()).unwrap();
    let name = restore["metadata"]["name"].as_str().unwrap().to_owned();
    let requester = lattice_gates::admission::Requester {
        username: user.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    restore["metadata"]["annotations"][ANNOTATION] =
        json!(key.stamp(place("LatticeRestore", None), &name, &spec, &requester));
    restore
}

/// Applies every Lattice object and Namespace in `yaml`; CedarPolicies carry the stamp of
/// an admitted write (see [`stamped`]).
pub async fn apply_yaml(client: &Client, yaml: &str) {
    for object in documents(yaml) {
        let object = if object["kind"] == "CedarPolicy" {
            stamped(object)
        } else {
            object
        };
        apply(client, &resource_of(&object), &object).await;
    }
}

/// Applies `yaml` as it is: CedarPolicies unstamped, as if written past the webhook.
pub async fn apply_yaml_unstamped(client: &Client, yaml: &str) {
    for object in documents(yaml) {
        apply(client, &resource_of(&object), &object).await;
    }
}

/// Installs the Lattice CRDs and the CRDs of the kinds Lattice derives, the real ones from
/// `../shared/reference/crds` (cert-manager's and Volcano's among them: the API server
/// validates what the operator applies against their schemas). Waits until every CRD is
/// established.
pub async fn install_crds(client: &Client) {
    install_crds_except(client, &[]).await;
}

/// As [`install_crds`], without the Lattice CRDs of `missing` (by plural).
pub async fn install_crds_except(client: &Client, missing: &[&str]) {
    let mut crds: Vec<Value> = documents(&lattice_schemas::generate::all_crds_yaml());
    crds.retain(|c| {
        !missing.iter().any(|m| {
            c["spec"]["names"]["plural"].as_str() == Some(m) && c["spec"]["group"] == "lattice.dev"
        })
    });
    let reference = lattice_testkit::reference_dir().expect("reference material");
    let dir = reference.join("crds");
    let mut files: Vec<PathBuf> = walk(&dir);
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if file.extension().is_some_and(|e| e == "yaml") {
            crds.extend(documents(&text));
        } else if file
            .to_string_lossy()
            .ends_with("ciliumnetworkpolicy_v2.jsonschema.json")
        {
            let mut schema: Value = serde_json::from_str(&text).unwrap();
            // A CRD schema may not constrain metadata beyond its type, and says "no unknown
            // fields" by pruning them rather than with `additionalProperties: false`.
            schema["properties"]["metadata"] = json!({"type": "object"});
            strip_closed_objects(&mut schema);
            crds.push(crd(
                "cilium.io",
                "v2",
                "CiliumNetworkPolicy",
                "ciliumnetworkpolicies",
                schema,
            ));
        }
    }
    let resource = ApiResource::erase::<CustomResourceDefinition>(&());
    for c in &crds {
        apply(client, &resource, c).await;
    }
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for c in &crds {
        let name = c["metadata"]["name"].as_str().unwrap().to_owned();
        let api = api.clone();
        eventually(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await;
    }
}

fn strip_closed_objects(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties")
                && map.get("additionalProperties") == Some(&json!(false))
            {
                map.remove("additionalProperties");
            }
            map.values_mut().for_each(strip_closed_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_closed_objects),
        _ => {}
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn crd(group: &str, version: &str, kind: &str, plural: &str, schema: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
            "versions": [{"name": version, "served": true, "storage": true, "schema": {"openAPIV3Schema": schema}}],
        }
    })
}

/// A running `lattice-operator run`. Stopped with SIGTERM on drop.
pub struct Operator {
    child: Child,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator binary against `env` with the workspace's rule packs.
    pub fn start(env: &TestEnv, extra: &[&str]) -> Operator {
        Operator::start_as(env, "test-operator", extra)
    }

    /// Starts a replica named `identity` in the Lease (in `default`), as the cluster admin.
    pub fn start_as(env: &TestEnv, identity: &str, extra: &[&str]) -> Operator {
        Operator::start_with(env, identity, &env.kubeconfig, "default", extra)
    }

    /// Starts the operator with the credentials of `kubeconfig`, holding its Lease in
    /// `lease_namespace`.
    pub fn start_with(
        env: &TestEnv,
        identity: &str,
        kubeconfig: &Path,
        lease_namespace: &str,
        extra: &[&str],
    ) -> Operator {
        let log = env.dir.join(format!("operator-{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let key = env.dir.join("admission.key");
        std::fs::write(&key, ADMISSION_KEY).unwrap();
        // Metrics only where a test asks for them: replicas would share one port.
        let metrics: &[&str] = if extra.contains(&"--metrics-addr") {
            &[]
        } else {
            &["--metrics-addr", "none"]
        };
        // The example world's images, signed by cosign, with no network, unless the test
        // names a registry or a layout of its own.
        let layout = root().join("examples/world/images");
        let images: Vec<&std::ffi::OsStr> =
            if extra.contains(&"--images") || extra.contains(&"--registry-ca") {
                Vec::new()
            } else {
                vec!["--images".as_ref(), layout.as_os_str()]
            };
        let child = Command::new(env!("CARGO_BIN_EXE_lattice-operator"))
            .arg("run")
            .arg("--policies")
            .arg(root().join("policies"))
            .arg("--admission-key")
            .arg(&key)
            .args(images)
            .args(["--lease-namespace", lease_namespace, "--identity", identity])
            .args(metrics)
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start lattice-operator");
        Operator { child, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it outright (SIGKILL): no lease released, nothing finished.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it as Kubernetes would (SIGTERM) and returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: `kill` takes plain integers and touches no memory of ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// How many Secrets and ConfigMaps in `namespace` match the label `selector`.
pub async fn count_in(client: &Client, namespace: &str, selector: &str) -> usize {
    let params = kube::api::ListParams::default().labels(selector);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), namespace);
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), namespace);
    secrets.list(&params).await.map_or(0, |l| l.items.len())
        + maps.list(&params).await.map_or(0, |l| l.items.len())
}

/// Polls `check` until it yields a value, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads one object as JSON (`None` when absent).
pub async fn get(
    client: &Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<Value> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let resource = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(group, version, kind),
        plural,
    );
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let object = api.get_opt(name).await.expect("the API server answers")?;
    Some(serde_json::to_value(object).unwrap())
}

/// A free loopback port below the ephemeral range (see `lattice_testkit::free_port`).
pub fn free_port() -> u16 {
    lattice_testkit::free_port()
}

/// `GET path` on a plain-HTTP server on loopback: the body, or `None` when it does not
/// answer (yet).
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response
        .starts_with("HTTP/1.1 200")
        .then(|| response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()))
        .flatten()
}
