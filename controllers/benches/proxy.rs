//! What the Kubernetes API proxy adds, against the API server directly, side by side in one
//! run. Two real control planes (`tools/testenv`): root's `lattice-operator run` serves the
//! cell and the proxy, edge's agent answers through the tunnel (TLS 1.3 and gRPC over
//! loopback). The same caller reads edge both ways: through
//! `https://<root's proxy>/clusters/edge` with a ServiceAccount token of root's (reviewed,
//! decided by Cedar, carried through the tunnel, impersonated by the agent), and directly
//! as edge's admin impersonating that same caller, so both pay edge's impersonation and
//! RBAC checks and the difference is the hop.
//!
//! - GET of one ConfigMap, alternating direct and proxied: p50 and p99, and what the hop
//!   adds (target ≤ 2 ms p50 per hop);
//! - LIST of every ConfigMap in the namespace (10,000): median time and the proxied
//!   throughput as a share of direct (target ≥ 50%);
//! - watch: objects made on edge, the time each event takes to arrive on a proxied watch
//!   minus a direct one (target ≤ 10 ms p99 through two hops; this is one).
//!
//! `cargo bench -p lattice-controllers --bench proxy`; under `cargo test` (CI's quick mode)
//! 300 objects and fewer rounds.

#[path = "../tests/cluster/mod.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::hierarchy::{ProxiedPair, namespace};
use cluster::{apply, stamped};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use lattice_controllers::lattice_api::lattice_resource;
use lattice_schemas::crd::Kind;
use serde_json::json;

const READER: &str = "system:serviceaccount:bench:reader";

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": {"app": "web", "tier": "frontend", "value": name},
    }))
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// When the watch behind `rx` delivered `name`.
async fn arrival(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    name: &str,
) -> Instant {
    loop {
        let (n, at) = rx.recv().await.expect("the watch is open");
        if n == name {
            return at;
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (objects, gets, lists, events) = if full {
        (10_000, 500, 10, 200)
    } else {
        (300, 40, 3, 20)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pair = ProxiedPair::start().await;
        let rules = format!(
            "@id(\"bench-reader\")\npermit (principal == Lattice::User::\"{READER}\", action in Lattice::Action::\"ClusterRead\", resource == Lattice::Cluster::\"edge\");\n"
        );
        apply(
            &pair.root,
            &lattice_resource(Kind::CedarPolicy),
            &stamped(json!({
                "apiVersion": "lattice.dev/v1alpha1", "kind": "CedarPolicy",
                "metadata": {"name": "bench-reader", "namespace": "lattice-system"},
                "spec": {"policies": rules},
            })),
        )
        .await;
        namespace(&pair.edge, "bench").await;
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "reader-views", "namespace": "bench"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "bench"}],
        });
        let view = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "view"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}],
        });
        for o in [&view, &binding] {
            apply(&pair.edge, &cluster::resource_of(o), o).await;
        }
        let seeding = Instant::now();
        let on_edge: Api<ConfigMap> = Api::namespaced(pair.edge.clone(), "bench");
        futures::stream::iter(0..objects)
            .map(|i| {
                let api = on_edge.clone();
                async move {
                    api.create(&PostParams::default(), &config_map(&format!("cm-{i:05}")))
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
        eprintln!("seeded {objects} ConfigMaps on edge in {:.1?}", seeding.elapsed());

        let token = pair.root_env.token("bench", "reader").await;
        let proxied: Api<ConfigMap> =
            Api::namespaced(pair.client("edge", Some(&token), "bench").await, "bench");
        let direct: Api<ConfigMap> = Api::namespaced(
            pair.edge_env
                .client_as(READER, &["system:serviceaccounts", "system:serviceaccounts:bench", "system:authenticated"])
                .await,
            "bench",
        );
        // The policy reaches the proxy's snapshot after the operator's next plan.
        let deadline = Instant::now() + Duration::from_secs(60);
        while proxied.get("cm-00000").await.is_err() {
            assert!(Instant::now() < deadline, "the proxy never allowed the reader");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        // GET, alternating, after a warm-up of each.
        for _ in 0..5 {
            direct.get("cm-00001").await.unwrap();
            proxied.get("cm-00001").await.unwrap();
        }
        let (mut d, mut p) = (Vec::new(), Vec::new());
        for i in 0..gets {
            let name = format!("cm-{:05}", i % objects);
            let t = Instant::now();
            direct.get(&name).await.unwrap();
            d.push(t.elapsed());
            let t = Instant::now();
            proxied.get(&name).await.unwrap();
            p.push(t.elapsed());
        }
        d.sort();
        p.sort();
        let get_added = percentile(&p, 0.5).saturating_sub(percentile(&d, 0.5));

        // LIST everything, alternating.
        let (mut ld, mut lp) = (Vec::new(), Vec::new());
        for _ in 0..lists {
            let t = Instant::now();
            let n = direct.list(&ListParams::default()).await.unwrap().items.len();
            ld.push(t.elapsed());
            assert_eq!(n, objects);
            let t = Instant::now();
            let n = proxied.list(&ListParams::default()).await.unwrap().items.len();
            lp.push(t.elapsed());
            assert_eq!(n, objects, "the proxy lists every object");
        }
        ld.sort();
        lp.sort();
        let (list_d, list_p) = (percentile(&ld, 0.5), percentile(&lp, 0.5));
        let list_share = list_d.as_secs_f64() / list_p.as_secs_f64();

        // Watch: both open from the same version; each object made on edge arrives on both.
        let version = direct
            .list(&ListParams::default().limit(1))
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let arrivals = |api: Api<ConfigMap>, version: String| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut stream = api
                    .watch(&WatchParams::default().timeout(290), &version)
                    .await
                    .unwrap()
                    .boxed();
                while let Ok(Some(event)) = stream.try_next().await {
                    if let WatchEvent::Added(cm) = event {
                        let _ = tx.send((cm.metadata.name.unwrap_or_default(), Instant::now()));
                    }
                }
            });
            rx
        };
        let mut direct_events = arrivals(direct.clone(), version.clone());
        let mut proxied_events = arrivals(proxied.clone(), version);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut w = Vec::new();
        for i in 0..events {
            let name = format!("watched-{i:04}");
            on_edge
                .create(&PostParams::default(), &config_map(&name))
                .await
                .unwrap();
            let limit = Duration::from_secs(30);
            let at_direct = tokio::time::timeout(limit, arrival(&mut direct_events, &name))
                .await
                .expect("the direct watch delivers");
            let at_proxied = tokio::time::timeout(limit, arrival(&mut proxied_events, &name))
                .await
                .expect("the proxied watch delivers");
            w.push(at_proxied.saturating_duration_since(at_direct));
        }
        w.sort();

        println!("proxy: one hop (root's proxy → tunnel → edge's agent → edge's API server) against edge's API server directly");
        println!("| | direct | through the proxy | added by the hop | target |");
        println!("|---|---|---|---|---|");
        println!(
            "| GET one object, p50 ({gets} each) | {} | {} | **{}** | ≤ 2 ms p50 per hop |",
            ms(percentile(&d, 0.5)),
            ms(percentile(&p, 0.5)),
            ms(get_added)
        );
        println!(
            "| GET one object, p99 | {} | {} | {} | |",
            ms(percentile(&d, 0.99)),
            ms(percentile(&p, 0.99)),
            ms(percentile(&p, 0.99).saturating_sub(percentile(&d, 0.99)))
        );
        println!(
            "| LIST {objects} objects, median of {lists} | {} ({:.0}/s) | {} ({:.0}/s) | throughput **{:.0}%** of direct | ≥ 50% |",
            ms(list_d),
            objects as f64 / list_d.as_secs_f64(),
            ms(list_p),
            objects as f64 / list_p.as_secs_f64(),
            list_share * 100.0
        );
        println!(
            "| watch event latency ({events} events) | | | p50 {}, **p99 {}** | ≤ 10 ms p99 (two hops) |",
            ms(percentile(&w, 0.5)),
            ms(percentile(&w, 0.99))
        );
        println!("ratio proxied/direct: GET p50 {:.2}, LIST {:.2}", percentile(&p, 0.5).as_secs_f64() / percentile(&d, 0.5).as_secs_f64(), 1.0 / list_share);
        drop(pair);
    });
}
