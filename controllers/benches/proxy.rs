//! What the Kubernetes API proxy adds, against the API server directly, side by side in one
//! run, through one hop and two. Three real control planes in a line (`tools/testenv`):
//! root's `lattice-operator run` serves the cell and the proxy; edge's agent answers root
//! through the tunnel (TLS 1.3 and gRPC over loopback) and edge runs its own cell and proxy;
//! leaf's agent answers edge. The same caller reads edge and leaf both ways: through
//! `https://<root's proxy>/clusters/<cluster>` with a ServiceAccount token of root's
//! (reviewed, decided by Cedar at every hop, carried through the tunnels, impersonated by
//! the last agent), and directly as that cluster's admin impersonating that same caller, so
//! both pay the cluster's impersonation and RBAC checks and the difference is the hops.
//!
//! - GET of one ConfigMap, alternating direct and proxied: p50 and p99, and what the hops
//!   add (target ≤ 2 ms p50 per hop);
//! - LIST of every ConfigMap in the namespace (10,000): median time and the proxied
//!   throughput as a share of direct (target ≥ 50%);
//! - watch: objects made on the cluster, the time each event takes to arrive on a proxied
//!   watch minus a direct one (target ≤ 10 ms p99 through two hops).
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

/// Grants the reader `view` on ConfigMaps in `bench` on `client`'s cluster and seeds it
/// with `objects` ConfigMaps.
async fn prepare(client: &kube::Client, objects: usize) {
    namespace(client, "bench").await;
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
        apply(client, &cluster::resource_of(o), o).await;
    }
    let seeding = Instant::now();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "bench");
    futures::stream::iter(0..objects)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &config_map(&format!("cm-{i:05}")))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    eprintln!("seeded {objects} ConfigMaps in {:.1?}", seeding.elapsed());
}

fn policy(name: &str, rules: &str) -> serde_json::Value {
    stamped(json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "CedarPolicy",
        "metadata": {"name": name, "namespace": "lattice-system"},
        "spec": {"policies": rules},
    }))
}

/// What one path measured against its direct twin.
struct Figures {
    get_direct: Vec<Duration>,
    get_proxied: Vec<Duration>,
    list_direct: Duration,
    list_proxied: Duration,
    watch_added: Vec<Duration>,
}

struct Sizes {
    objects: usize,
    gets: usize,
    lists: usize,
    events: usize,
}

/// GET, LIST and watch through `proxied` and `direct` (the same caller, the same cluster),
/// alternating; `on_cluster` (its admin) makes the watched objects.
async fn measure(
    direct: &Api<ConfigMap>,
    proxied: &Api<ConfigMap>,
    on_cluster: &Api<ConfigMap>,
    n: &Sizes,
    tag: &str,
) -> Figures {
    // The policies reach the proxies' snapshots after each operator's next plan.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match proxied.get("cm-00000").await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the proxy never allowed the reader: {e}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    for _ in 0..5 {
        direct.get("cm-00001").await.unwrap();
        proxied.get("cm-00001").await.unwrap();
    }
    let (mut d, mut p) = (Vec::new(), Vec::new());
    for i in 0..n.gets {
        let name = format!("cm-{:05}", i % n.objects);
        let t = Instant::now();
        direct.get(&name).await.unwrap();
        d.push(t.elapsed());
        let t = Instant::now();
        proxied.get(&name).await.unwrap();
        p.push(t.elapsed());
    }
    d.sort();
    p.sort();

    let (mut ld, mut lp) = (Vec::new(), Vec::new());
    for _ in 0..n.lists {
        let t = Instant::now();
        let got = direct
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
        ld.push(t.elapsed());
        assert_eq!(got, n.objects);
        let t = Instant::now();
        let got = proxied
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
        lp.push(t.elapsed());
        assert_eq!(got, n.objects, "the proxy lists every object");
    }
    ld.sort();
    lp.sort();

    // Watch: both open from the same version; each object made arrives on both.
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
    for i in 0..n.events {
        let name = format!("watched-{tag}-{i:04}");
        on_cluster
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
    Figures {
        get_direct: d,
        get_proxied: p,
        list_direct: percentile(&ld, 0.5),
        list_proxied: percentile(&lp, 0.5),
        watch_added: w,
    }
}

fn report(path: &str, hops: u32, f: &Figures, n: &Sizes) {
    let (d, p) = (&f.get_direct, &f.get_proxied);
    let added = percentile(p, 0.5).saturating_sub(percentile(d, 0.5));
    let share = f.list_direct.as_secs_f64() / f.list_proxied.as_secs_f64();
    println!(
        "| {path}: GET one object, p50 ({} each) | {} | {} | **{}** ({} per hop) | ≤ 2 ms p50 per hop |",
        n.gets,
        ms(percentile(d, 0.5)),
        ms(percentile(p, 0.5)),
        ms(added),
        ms(added / hops)
    );
    println!(
        "| {path}: GET one object, p99 | {} | {} | {} | |",
        ms(percentile(d, 0.99)),
        ms(percentile(p, 0.99)),
        ms(percentile(p, 0.99).saturating_sub(percentile(d, 0.99)))
    );
    println!(
        "| {path}: LIST {} objects, median of {} | {} ({:.0}/s) | {} ({:.0}/s) | throughput **{:.0}%** of direct | ≥ 50% |",
        n.objects,
        n.lists,
        ms(f.list_direct),
        n.objects as f64 / f.list_direct.as_secs_f64(),
        ms(f.list_proxied),
        n.objects as f64 / f.list_proxied.as_secs_f64(),
        share * 100.0
    );
    println!(
        "| {path}: watch event latency ({} events) | | | p50 {}, **p99 {}** | ≤ 10 ms p99 (two hops) |",
        n.events,
        ms(percentile(&f.watch_added, 0.5)),
        ms(percentile(&f.watch_added, 0.99))
    );
    println!(
        "ratio proxied/direct ({path}): GET p50 {:.2}, LIST {:.2}",
        percentile(p, 0.5).as_secs_f64() / percentile(d, 0.5).as_secs_f64(),
        1.0 / share
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full {
        Sizes {
            objects: 10_000,
            gets: 500,
            lists: 10,
            events: 200,
        }
    } else {
        Sizes {
            objects: 300,
            gets: 40,
            lists: 3,
            events: 20,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let chain = ProxiedPair::start_chain().await;
        let leaf = chain.leaf.as_ref().unwrap();
        let on_root = format!(
            "@id(\"bench-reader\")\npermit (principal == Lattice::User::\"{READER}\", action in Lattice::Action::\"ClusterRead\", resource in Lattice::Cluster::\"edge\");\n"
        );
        let on_edge = format!(
            "@id(\"bench-reader\")\npermit (principal == Lattice::User::\"{READER}\", action in Lattice::Action::\"ClusterRead\", resource == Lattice::Cluster::\"leaf\");\n"
        );
        let cedar = lattice_resource(Kind::CedarPolicy);
        apply(&chain.root, &cedar, &policy("bench-reader", &on_root)).await;
        apply(&chain.edge, &cedar, &policy("bench-reader", &on_edge)).await;
        prepare(&chain.edge, n.objects).await;
        prepare(&leaf.client, n.objects).await;

        let token = chain.root_env.token("bench", "reader").await;
        let groups = [
            "system:serviceaccounts",
            "system:serviceaccounts:bench",
            "system:authenticated",
        ];
        let mut measured = Vec::new();
        for (cluster, env, admin, hops) in [
            ("edge", &chain.edge_env, &chain.edge, 1),
            ("leaf", &leaf.env, &leaf.client, 2),
        ] {
            let proxied: Api<ConfigMap> =
                Api::namespaced(chain.client(cluster, Some(&token), "bench").await, "bench");
            let direct: Api<ConfigMap> =
                Api::namespaced(env.client_as(READER, &groups).await, "bench");
            let on_cluster: Api<ConfigMap> = Api::namespaced(admin.clone(), "bench");
            let f = measure(&direct, &proxied, &on_cluster, &n, cluster).await;
            measured.push((cluster, hops, f));
        }

        println!("proxy: root's proxy → tunnel → edge's agent (→ edge's proxy → tunnel → leaf's agent) → the API server, against that API server directly");
        println!("| | direct | through the proxy | added | target |");
        println!("|---|---|---|---|---|");
        for (cluster, hops, f) in &measured {
            let path = if *hops == 1 {
                format!("{cluster}, one hop")
            } else {
                format!("{cluster}, two hops")
            };
            report(&path, *hops, f, &n);
        }
        drop(chain);
    });
}
