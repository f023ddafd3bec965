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
        AgentProcess::start_with(env, kubeconfig, &[])
    }

    /// Starts it with `extra` arguments.
    pub fn start_with(
        env: &TestEnv,
        kubeconfig: &std::path::Path,
        extra: &[&std::ffi::OsStr],
    ) -> AgentProcess {
        let log = env.dir.join("agent.log");
        let key = env.dir.join("admission.key");
        std::fs::write(&key, super::ADMISSION_KEY).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_lattice-operator"))
            .args(["agent", "--namespace", "lattice-system", "--admission-key"])
            .arg(&key)
            .args(extra)
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

/// Real control planes in a line: root, its child edge, and (with
/// [`ProxiedPair::start_chain`]) edge's child leaf. Root's `lattice-operator run` serves the
/// cell and the API proxy (as its shipped ServiceAccount); edge's agent runs as its own
/// ServiceAccount token with the shipped RBAC, and is connected. In a chain, edge also runs
/// its own operator with a cell and a proxy that trusts edge's agent as a forwarder, edge's
/// agent sends calls below to that proxy, and leaf's agent is connected to edge's cell.
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
    pub leaf: Option<Leaf>,
}

/// The third control plane of a chain, and what runs for it.
pub struct Leaf {
    pub env: TestEnv,
    pub client: Client,
    /// Edge's operator: its cell (leaf's agent dials it) and its proxy.
    pub edge_operator: super::Operator,
    /// Where edge's proxy listens.
    pub edge_proxy_port: u16,
    pub agent: AgentProcess,
}

/// The user edge's agent runs as, which edge's proxy trusts to forward.
pub const AGENT_USER: &str = "system:serviceaccount:lattice-system:lattice-agent";

/// The east-west gateway address each cluster of a line reports (data only: no gateway
/// runs here; route objects are checked as the API server stores them).
pub fn gateway_of(cluster: &str) -> &'static str {
    match cluster {
        "root" => "10.9.0.1:15443",
        "edge" => "10.9.0.2:15443",
        _ => "10.9.0.3:15443",
    }
}

/// An agent's arguments for the cross-cluster mesh: `cluster`'s gateway, read every second.
fn mesh_args(cluster: &str) -> Vec<&'static std::ffi::OsStr> {
    vec![
        "--mesh-gateway".as_ref(),
        gateway_of(cluster).as_ref(),
        "--mesh-interval-seconds".as_ref(),
        "1".as_ref(),
    ]
}

/// Starts `name`'s operator as a parent: the cell and the proxy on fresh loopback ports.
async fn start_parent(
    env: &TestEnv,
    name: &str,
    forwarder: Option<&str>,
) -> (super::Operator, u16) {
    env.operator_account().await;
    let account = env
        .account("deploy/cell/rbac.yaml", "lattice-operator")
        .await;
    let cell = format!("127.0.0.1:{}", super::free_port());
    let proxy_port = super::free_port();
    let proxy = format!("127.0.0.1:{proxy_port}");
    let mut args = vec![
        "--cell-listen",
        cell.as_str(),
        "--cluster-name",
        name,
        "--cell-address",
        "127.0.0.1",
        "--heartbeat-seconds",
        "1",
        "--proxy-listen",
        proxy.as_str(),
        "--mesh-gateway",
        gateway_of(name),
    ];
    if let Some(f) = forwarder {
        args.extend(["--proxy-trusted-forwarder", f]);
    }
    let operator = super::Operator::start_with(env, name, &account, "lattice-system", &args);
    (operator, proxy_port)
}

impl ProxiedPair {
    /// Root and edge.
    pub async fn start() -> ProxiedPair {
        ProxiedPair::start_line(false).await
    }

    /// Root, edge and leaf.
    pub async fn start_chain() -> ProxiedPair {
        ProxiedPair::start_line(true).await
    }

    async fn start_line(chain: bool) -> ProxiedPair {
        let root_env = TestEnv::start("root");
        // Exec, attach and port-forward end at the simulated kubelet, which speaks the
        // WebSocket protocols only: the API servers pass a WebSocket upgrade on unchanged
        // instead of re-speaking it as SPDY (see `kubelet`).
        let streams = ["--feature-gates=TranslateStreamCloseWebsocketRequests=false"];
        let edge_env = TestEnv::start_with_flags("edge", &streams);
        let leaf_env = chain.then(|| TestEnv::start_with_flags("leaf", &streams));
        let root = root_env.client().await;
        let edge = edge_env.client().await;
        let leaf_client = match &leaf_env {
            Some(env) => Some(env.client().await),
            None => None,
        };
        for c in [&root, &edge].into_iter().chain(leaf_client.as_ref()) {
            super::install_crds(c).await;
            namespace(c, "lattice-system").await;
        }
        super::apply_yaml(&root, &world(&[("root", None), ("edge", Some("root"))])).await;
        let (operator, proxy_port) = start_parent(&root_env, "root", None).await;
        let bundle = install_bundle(&root, "edge", &edge).await;
        let ca_pem = String::from_utf8(bundle.data.unwrap()["ca.crt"].0.clone()).unwrap();
        // The agent runs as its own ServiceAccount (a real token, as in a pod): an
        // impersonated account could not impersonate callers in turn.
        let agent_account = edge_env
            .token_account("deploy/agent/rbac.yaml", "lattice-agent")
            .await;
        let mut edge_parent = None;
        let agent = if chain {
            super::apply_yaml(
                &edge,
                &world(&[("edge", Some("root")), ("leaf", Some("edge"))]),
            )
            .await;
            let (edge_operator, edge_proxy) =
                start_parent(&edge_env, "edge", Some(AGENT_USER)).await;
            // What the agent's pod mounts: edge's cell CA, as edge's cell publishes it.
            let published = eventually("edge's cell publishes its CA", || async {
                Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
                    edge.clone(),
                    "lattice-system",
                )
                .get_opt("lattice-cell-ca")
                .await
                .unwrap()
                .and_then(|c| c.data)
                .and_then(|d| d.get("ca.crt").cloned())
            })
            .await;
            let ca_file = edge_env.dir.join("edge-cell-ca.pem");
            std::fs::write(&ca_file, published).unwrap();
            let url = format!("https://127.0.0.1:{edge_proxy}");
            edge_parent = Some((edge_operator, edge_proxy));
            let mut args: Vec<&std::ffi::OsStr> = vec![
                "--local-proxy".as_ref(),
                url.as_ref(),
                "--local-proxy-ca".as_ref(),
                ca_file.as_os_str(),
            ];
            args.extend(mesh_args("edge"));
            AgentProcess::start_with(&edge_env, &agent_account, &args)
        } else {
            AgentProcess::start_with(&edge_env, &agent_account, &mesh_args("edge"))
        };
        eventually("edge's agent connects", || async {
            (cluster_status(&root, "edge").await["agentConnected"] == json!(true)).then_some(())
        })
        .await;
        let leaf = match (leaf_env, leaf_client, edge_parent) {
            (Some(env), Some(client), Some((edge_operator, edge_proxy_port))) => {
                install_bundle(&edge, "leaf", &client).await;
                let account = env
                    .token_account("deploy/agent/rbac.yaml", "lattice-agent")
                    .await;
                let agent = AgentProcess::start_with(&env, &account, &mesh_args("leaf"));
                eventually(
                    "leaf's agent connects to edge, and root hears of leaf",
                    || async {
                        let below = cluster_status(&root, "edge").await["descendants"].clone();
                        below
                            .as_array()
                            .is_some_and(|d| {
                                d.iter().any(|d| {
                                    d["name"] == json!("leaf") && d["agentConnected"] == json!(true)
                                })
                            })
                            .then_some(())
                    },
                )
                .await;
                Some(Leaf {
                    env,
                    client,
                    edge_operator,
                    edge_proxy_port,
                    agent,
                })
            }
            _ => None,
        };
        ProxiedPair {
            root_env,
            edge_env,
            root,
            edge,
            proxy_port,
            ca_pem,
            operator,
            agent,
            leaf,
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
