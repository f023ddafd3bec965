//! The webhook under load, as the API server would load it: HTTPS on loopback with a real
//! certificate, a real HTTP client (hyper over rustls, keep-alive connections), an open-loop
//! schedule of 1,000 reviews per second (latency counts from when a review was due, so a
//! slow answer delays the ones behind it), half LatticeService and half CedarPolicy
//! reviews, over the example world with 1,000 more policies loaded. Target: p99 ≤ 5 ms and
//! no errors.
//!
//! The baseline, run side by side, is the same reviews decided in-process (`admit`) without
//! TLS or HTTP.
//!
//! With `--pods`, the reviews are Pods under the Pod Security Standards pack instead: half a
//! Pod that meets `restricted` in a namespace that enforces it, half a privileged Pod in a
//! namespace that only warns (admitted with the warning), each asked `ExemptPodSecurity` and
//! `RunPod` for the pod and every container in every mode.
//!
//! `cargo bench -p lattice-controllers --bench webhook` runs 10 s at 1,000/s; with `--
//! --soak`, the soak: 60 s at 1,000/s; under `cargo test` (CI's quick mode) 1 s at 200/s for
//! both sets of reviews, checking every answer.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_controllers::webhook::{Limits, admit, review};
use serde_json::Value;
use support::*;

const CONNECTIONS: usize = 32;

/// 1,000 policies in CedarPolicy objects of ten namespaces, of the shapes security teams
/// write: forbids between namespaces, pinned images, audit rules.
fn policies(dir: &std::path::Path) -> std::path::PathBuf {
    let mut text = String::new();
    for ns in 0..10 {
        let mut body = String::new();
        for i in 0..100 {
            let n = ns * 100 + i;
            body.push_str(&match i % 3 {
                0 => format!(
                    "@id(\"p{n}\")\nforbid (principal in Lattice::Namespace::\"team{n}\", action == Lattice::Action::\"Connect\", resource in Lattice::Namespace::\"prod{n}\");\n"
                ),
                1 => format!(
                    "@id(\"p{n}\")\nforbid (principal == Lattice::Service::\"team{ns}/svc{n}\", action == Lattice::Action::\"DeployImage\", resource) when {{ resource.registry == \"registry{n}.example.com\" }};\n"
                ),
                _ => format!(
                    "@id(\"p{n}\")\npermit (principal == Lattice::Service::\"team{ns}/svc{n}\", action == Lattice::Action::\"AccessSecret\", resource) when {{ resource.provider == \"vault{n}\" }};\n"
                ),
            });
        }
        let object = cedar_policy(&format!("team{ns}"), "rules", &body, "enforce");
        text.push_str(&lattice_schemas::generate::to_yaml(&object));
        text.push_str("---\n");
    }
    let path = dir.join("policies.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Namespaces for the Pod reviews: one enforcing restricted, one only warning.
fn namespaces(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("namespaces.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: pss-strict\n  labels: {pod-security.kubernetes.io/enforce: restricted}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: pss-warn\n  labels: {pod-security.kubernetes.io/enforce: privileged, pod-security.kubernetes.io/warn: restricted}\n",
    )
    .unwrap();
    path
}

/// A Pod with a sidecar and an init container.
fn pod(namespace: &str, security: Value) -> Value {
    let container = |name: &str| serde_json::json!({"name": name, "image": format!("registry.example.com/{name}:1.0"), "securityContext": security.clone()});
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-7d9f", "namespace": namespace, "labels": {"app": "web"}},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [container("init")],
            "containers": [container("app"), container("proxy")],
            "volumes": [{"name": "config", "configMap": {"name": "web"}}, {"name": "tmp", "emptyDir": {}}]
        }
    })
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let soak = std::env::args().any(|a| a == "--soak");
    let pods = std::env::args().any(|a| a == "--pods");
    let (rate, seconds) = match (soak, full) {
        (true, _) => (1000u64, 60u64),
        (false, true) => (1000, 10),
        (false, false) => (200, 1),
    };
    if full || soak {
        run(rate, seconds, pods);
    } else {
        run(rate, seconds, false);
        run(rate, seconds, true);
    }
}

fn run(rate: u64, seconds: u64, pods: bool) {
    let dir = std::env::temp_dir().join(format!(
        "lattice-webhook-bench-{}-{pods}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::issue(&dir.join("pki"));
    let extra = [policies(&dir), namespaces(&dir)];

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let w = start(&pki, Limits::default()).await;
        load_examples(&w, &extra);
        let loaded = w.state.current().unwrap();
        let policy_count = loaded.snapshot.enforce_index().policy_set().policies().count();
        assert!(policy_count >= 1000, "{policy_count} policies");

        let service = review("s", "UPDATE", Some(example("shop.yaml", "api")), Some(example("shop.yaml", "api")), "alice", &[]);
        let policy = review(
            "p",
            "CREATE",
            Some(cedar_policy(
                "shop",
                "no-sandbox",
                "@id(\"no-sandbox\")\nforbid (principal in Lattice::Namespace::\"sandbox\", action == Lattice::Action::\"Connect\", resource);\n",
                "enforce",
            )),
            None,
            "sec",
            &["lattice:security-admins"],
        );
        let restricted = serde_json::json!({
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}
        });
        let strict_pod = review("a", "CREATE", Some(pod("pss-strict", restricted)), None, "alice", &[]);
        let warned_pod = review("b", "CREATE", Some(pod("pss-warn", serde_json::json!({"privileged": true}))), None, "alice", &[]);
        let (mix, bodies) = if pods {
            ("half a restricted Pod, half a privileged Pod warned about", vec![strict_pod, warned_pod])
        } else {
            ("half LatticeService, half CedarPolicy", vec![service, policy])
        };
        let bodies: Arc<Vec<Vec<u8>>> =
            Arc::new(bodies.iter().map(|b| serde_json::to_vec(b).unwrap()).collect());

        // Baseline: the same decisions in-process.
        let mut in_process = Vec::new();
        for i in 0..2000 {
            let body = &bodies[i % 2];
            let t = Instant::now();
            let r = review::parse(body).unwrap();
            let v = admit(Some(&loaded), &r);
            in_process.push(t.elapsed());
            assert!(v.allowed, "{}", v.message);
            // The warned Pod comes back with its warning.
            if pods {
                assert_eq!(!v.warnings.is_empty(), i % 2 == 1, "{:?}", v.warnings);
            }
        }
        in_process.sort();

        let config = client_config(&pki.ca_pem);
        let total = rate * seconds;
        let period = Duration::from_nanos(1_000_000_000 / rate);
        let start_at = tokio::time::Instant::now() + Duration::from_millis(200);
        let mut workers = Vec::new();
        for k in 0..CONNECTIONS {
            let config = config.clone();
            let bodies = bodies.clone();
            let addr = w.addr;
            workers.push(tokio::spawn(async move {
                let mut c = Client::connect(addr, config).await.unwrap();
                let mut out = Vec::new();
                let mut i = k as u64;
                while i < total {
                    let due = start_at + period * u32::try_from(i).unwrap();
                    tokio::time::sleep_until(due).await;
                    let (status, body) = c
                        .send("POST", "/validate", bodies[(i % 2) as usize].clone())
                        .await;
                    let took = due.elapsed();
                    let ok = status == 200
                        && serde_json::from_slice::<Value>(&body)
                            .is_ok_and(|v| v["response"]["allowed"] == true);
                    out.push((took, ok));
                    i += CONNECTIONS as u64;
                }
                out
            }));
        }
        let mut latencies = Vec::new();
        let mut errors = 0usize;
        for wk in workers {
            for (d, ok) in wk.await.unwrap() {
                latencies.push(d);
                errors += usize::from(!ok);
            }
        }
        latencies.sort();
        let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
        let (b50, b99) = (percentile(&in_process, 0.50), percentile(&in_process, 0.99));
        println!(
            "webhook over TLS, {rate} reviews/s for {seconds} s ({} reviews, {mix}, {policy_count} policies): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 ≤ 5 ms), errors {errors}",
            latencies.len(),
            ms(p50),
            ms(p99),
            ms(*latencies.last().unwrap()),
        );
        println!(
            "baseline, the same reviews decided in-process: p50 {:.2} ms, p99 {:.2} ms; ratio at p50 {:.1}x",
            ms(b50),
            ms(b99),
            p50.as_secs_f64() / b50.as_secs_f64()
        );
        assert_eq!(errors, 0, "every review answered, and allowed");
        assert_eq!(latencies.len() as u64, total);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
