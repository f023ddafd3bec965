//! Cluster API's real core manager for tests: the Cluster, Machine, MachineSet and
//! MachineDeployment controllers of `sigs.k8s.io/cluster-api` (`tools/capi`, built from its Go
//! module), run against a test control plane.
//!
//! No infrastructure or control-plane provider runs beside it (none can here: Docker's needs
//! a Docker engine, and the in-memory one's module is not served), so a test that needs one
//! plays it itself and says so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The directory holding `cluster-api-core` and `cluster-api-crds/`: `LATTICE_CAPI_BIN`, else
/// built (or found up to date) by `tools/capi/build`, which needs Go.
pub fn bin_dir() -> PathBuf {
    crate::go_tool("LATTICE_CAPI_BIN", "capi")
}

/// The core CRDs of the manager's own module version (every kind it watches).
pub fn core_crds() -> Vec<serde_json::Value> {
    let dir = bin_dir().join("cluster-api-crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            crate::schemas::yaml_documents(&std::fs::read_to_string(f).expect("CRD file"))
        })
        .filter(serde_json::Value::is_object)
        .collect()
}

/// Docker's (CAPD) DockerMachine CRD, which the reference material lacks (it holds the
/// templates only): v1.13.7's, from `sigs.k8s.io/cluster-api/test` (see `tools/capi/build`).
pub fn docker_machine_crd() -> serde_json::Value {
    let file =
        bin_dir().join("cluster-api-crds/capd/infrastructure.cluster.x-k8s.io_dockermachines.yaml");
    crate::schemas::yaml_documents(
        &std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display())),
    )
    .into_iter()
    .find(serde_json::Value::is_object)
    .expect("a CRD")
}

/// A running core manager. Stopped (killed) on drop; its log is `dir/cluster-api.log`.
pub struct Manager {
    child: Child,
    /// Where it logs.
    pub log: PathBuf,
    webhook_port: u16,
    ca_pem: String,
}

impl Manager {
    /// Starts the manager against the API server `kubeconfig` reaches, its files under `dir`.
    /// The API server must already serve the core CRDs ([`core_crds`]).
    pub fn start(dir: &Path, kubeconfig: &Path) -> Manager {
        // It serves webhooks (no configuration points the API server at them here) and will
        // not start without a serving certificate.
        let ca_pem = crate::tls::serving_certificate(dir, "lattice test Cluster API webhook CA");
        let health = crate::free_port();
        let webhook_port = crate::free_port();
        let log = dir.join("cluster-api.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(bin_dir().join("cluster-api-core"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg(format!("--webhook-port={webhook_port}"))
            .arg(format!("--webhook-cert-dir={}", dir.display()))
            .args([
                "--webhook-cert-name=server.pem",
                "--webhook-key-name=server.key",
            ])
            .arg(format!("--health-addr=127.0.0.1:{health}"))
            .arg("--diagnostics-address=0")
            .arg("--insecure-diagnostics")
            .arg("--sync-period=1m")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start Cluster API's core manager (tools/capi/build)");
        let mut manager = Manager {
            child,
            log,
            webhook_port,
            ca_pem,
        };
        manager.wait_ready(health);
        manager
    }

    /// Waits until the manager's readiness probe passes (its caches synced).
    fn wait_ready(&mut self, health: u16) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "Cluster API's core manager exited ({status}):\n{}",
                    self.log_tail()
                );
            }
            if ready(health) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Cluster API's core manager was not ready within 120 s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The manager's mutating and validating webhook configurations, as its module ships them
    /// but pointed at this manager (`https://127.0.0.1:PORT/…`, its CA as the bundle) rather
    /// than at an in-cluster Service. Applied, the API server defaults and validates Cluster
    /// API's objects through the manager, as on a cluster `clusterctl init` set up.
    pub fn webhook_configurations(&self) -> Vec<serde_json::Value> {
        use base64::Engine as _;
        let file = bin_dir().join("cluster-api-crds/webhooks.yaml.in");
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let bundle = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        crate::schemas::yaml_documents(&text)
            .into_iter()
            .filter(serde_json::Value::is_object)
            .map(|mut config| {
                let name = config["metadata"]["name"].as_str().unwrap_or_default();
                config["metadata"]["name"] = format!("cluster-api-{name}").into();
                for webhook in config["webhooks"].as_array_mut().into_iter().flatten() {
                    let path = webhook["clientConfig"]["service"]["path"]
                        .as_str()
                        .unwrap_or("/")
                        .to_owned();
                    webhook["clientConfig"] = serde_json::json!({
                        "url": format!("https://127.0.0.1:{}{path}", self.webhook_port),
                        "caBundle": bundle,
                    });
                }
                config
            })
            .collect()
    }

    /// The last lines the manager logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // A failing test shows what Cluster API made of it.
        if std::thread::panicking() {
            eprintln!(
                "Cluster API's core manager logged, last:\n{}",
                self.log_tail()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /readyz` on the probe port answers 200.
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}
