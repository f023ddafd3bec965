//! What the hierarchy tests share: a world of LatticeClusters, an installer copying a
//! child's bootstrap Secret over, and `lattice-operator agent` run as a process.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use lattice_controllers::lattice_api::lattice_resource;
use lattice_schemas::crd::Kind;
use serde_json::{Value, json};

use super::{TestEnv, apply, resource_of};

/// How long anything in a hierarchy test may take to happen.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `f` every 250 ms until it gives a value, for at most [`WAIT`].
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The InfraProvider every world here needs, and a LatticeCluster `name` under `parent`.
pub fn world(clusters: &[(&str, Option<&str>)]) -> String {
    let mut out = String::from(
        "apiVersion: lattice.dev/v1alpha1
kind: InfraProvider
metadata:
  name: aws
spec:
  type: aws
  region: eu-west-1
  credentialsSecretRef:
    name: aws-credentials
    namespace: lattice-system
",
    );
    for (name, parent) in clusters {
        let parent = parent
            .map(|p| format!("  parent: {p}\n"))
            .unwrap_or_default();
        out.push_str(&format!(
            "---
apiVersion: lattice.dev/v1alpha1
kind: LatticeCluster
metadata:
  name: {name}
spec:
  providerRef: aws
{parent}  provider:
    kubernetes:
      version: \"1.33.0\"
    config:
      aws:
        region: eu-west-1
  nodes:
    controlPlane: 1
"
        ));
    }
    out
}

pub async fn namespace(client: &Client, name: &str) {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    apply(client, &resource_of(&ns), &ns).await;
}

pub async fn secret(client: &Client, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), "lattice-system")
        .get_opt(name)
        .await
        .unwrap()
}

pub async fn cluster_status(client: &Client, name: &str) -> Value {
    let api: Api<DynamicObject> =
        Api::all_with(client.clone(), &lattice_resource(Kind::LatticeCluster));
    api.get(name)
        .await
        .map(|o| o.data["status"].clone())
        .unwrap_or(Value::Null)
}

/// What an installer does: copies the parent's `lattice-bootstrap-<child>` to the child as
/// `lattice-bootstrap`, once the parent has written it.
pub async fn install_bundle(parent: &Client, child_name: &str, child: &Client) -> Secret {
    let name = format!("lattice-bootstrap-{child_name}");
    let bundle = eventually("the bootstrap Secret", || async {
        secret(parent, &name).await
    })
    .await;
    let copy = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("lattice-bootstrap".into()),
            namespace: Some("lattice-system".into()),
            ..Default::default()
        },
        data: bundle.data.clone(),
        ..Default::default()
    };
    Api::<Secret>::namespaced(child.clone(), "lattice-system")
        .create(&PostParams::default(), &copy)
        .await
        .unwrap();
    bundle
}

/// A running `lattice-operator agent` against the child. Stopped on drop.
pub struct AgentProcess {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl AgentProcess {
    pub fn start(env: &TestEnv, kubeconfig: &std::path::Path) -> AgentProcess {
        let log = env.dir.join("agent.log");
        let key = env.dir.join("admission.key");
        std::fs::write(&key, super::ADMISSION_KEY).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_lattice-operator"))
            .args(["agent", "--namespace", "lattice-system", "--admission-key"])
            .arg(&key)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start lattice-operator agent");
        AgentProcess { child, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two real control planes, root and its child edge: root's `lattice-operator run` serves
/// the cell and the API proxy (as its shipped ServiceAccount), edge's agent runs as its own
/// ServiceAccount token with the shipped RBAC, and edge's agent is connected.
pub struct ProxiedPair {
    pub root_env: TestEnv,
    pub edge_env: TestEnv,
    pub root: Client,
    pub edge: Client,
    pub proxy_port: u16,
    /// The cell's CA: what a client of the proxy trusts.
    pub ca_pem: String,
    pub operator: super::Operator,
    pub agent: AgentProcess,
}

impl ProxiedPair {
    pub async fn start() -> ProxiedPair {
        let root_env = TestEnv::start("root");
        let edge_env = TestEnv::start("edge");
        let root = root_env.client().await;
        let edge = edge_env.client().await;
        for c in [&root, &edge] {
            super::install_crds(c).await;
            namespace(c, "lattice-system").await;
        }
        super::apply_yaml(&root, &world(&[("root", None), ("edge", Some("root"))])).await;
        root_env.operator_account().await;
        let root_account = root_env
            .account("deploy/cell/rbac.yaml", "lattice-operator")
            .await;
        let cell = format!("127.0.0.1:{}", super::free_port());
        let proxy_port = super::free_port();
        let proxy = format!("127.0.0.1:{proxy_port}");
        let operator = super::Operator::start_with(
            &root_env,
            "root",
            &root_account,
            "lattice-system",
            &[
                "--cell-listen",
                cell.as_str(),
                "--cluster-name",
                "root",
                "--cell-address",
                "127.0.0.1",
                "--heartbeat-seconds",
                "1",
                "--proxy-listen",
                proxy.as_str(),
            ],
        );
        let bundle = install_bundle(&root, "edge", &edge).await;
        let ca_pem = String::from_utf8(bundle.data.unwrap()["ca.crt"].0.clone()).unwrap();
        // The agent runs as its own ServiceAccount (a real token, as in a pod): an
        // impersonated account could not impersonate callers in turn.
        let agent_account = edge_env
            .token_account("deploy/agent/rbac.yaml", "lattice-agent")
            .await;
        let agent = AgentProcess::start(&edge_env, &agent_account);
        eventually("edge's agent connects", || async {
            (cluster_status(&root, "edge").await["agentConnected"] == json!(true)).then_some(())
        })
        .await;
        ProxiedPair {
            root_env,
            edge_env,
            root,
            edge,
            proxy_port,
            ca_pem,
            operator,
            agent,
        }
    }

    /// A kubeconfig (what `kubectl` is given) whose server is the proxy's path for
    /// `cluster`, trusting the cell's CA, with `token` (if any), in namespace `namespace`.
    pub fn kubeconfig(&self, cluster: &str, token: Option<&str>, namespace: &str) -> PathBuf {
        let ca = self.root_env.dir.join("cell-ca.pem");
        std::fs::write(&ca, &self.ca_pem).unwrap();
        let user = match token {
            Some(t) => json!({"token": t}),
            None => json!({}),
        };
        let kubeconfig = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster, "cluster": {
                "server": format!("https://127.0.0.1:{}/clusters/{cluster}", self.proxy_port),
                "certificate-authority": ca,
            }}],
            "users": [{"name": "caller", "user": user}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "caller", "namespace": namespace}}],
            "current-context": cluster,
        });
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .root_env
            .dir
            .join(format!("proxy-{cluster}-{n}.kubeconfig"));
        std::fs::write(&path, kubeconfig.to_string()).unwrap();
        path
    }

    /// A kube-rs client through the proxy (see [`ProxiedPair::kubeconfig`]).
    pub async fn client(&self, cluster: &str, token: Option<&str>, namespace: &str) -> Client {
        let path = self.kubeconfig(cluster, token, namespace);
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }
}
