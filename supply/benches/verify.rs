//! Image verification at scale: 1,000 distinct images pushed to a real registry (the CNCF
//! distribution registry on loopback, TLS) and signed by the real `cosign`, verified cold
//! (every signature fetched and checked) and then cached (each tag resolved again, each
//! digest's result reused). Then the decide path: every workload's gates decided on a
//! snapshot carrying those verifications, against the same world decided offline (no
//! verification facts), side by side; deciding reads facts only, so the ratio is the cost
//! of the facts themselves.
//!
//! `cargo bench -p lattice-supply --bench verify` (1,000 images; `LATTICE_BENCH_IMAGES` sets
//! another count). `cargo test --benches` runs 20 as a check. Needs the registry and cosign
//! that `tools/oci/build` builds (`LATTICE_OCI_BIN`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lattice_engine::project::{ImageFacts, LiveFacts};
use lattice_engine::{PolicyStore, Projection, Snapshot, World};
use lattice_supply::{RegistryOptions, Source, Trust, Verifier, trust_specs};
use lattice_testkit::oci::Registry;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let count: usize = std::env::var("LATTICE_BENCH_IMAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if full { 1000 } else { 20 });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(measure(count));
}

async fn measure(count: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let registry = Registry::start(&dir.join("registry"));
    let host = registry.host.clone();
    let public = registry.keygen(dir, "release");

    let started = Instant::now();
    let digests: BTreeMap<usize, String> = futures_util::stream::iter(0..count)
        .map(|i| {
            let registry = &registry;
            async move {
                let d = registry
                    .push(&format!("bench/app-{i}"), "1.0", &format!("app {i}"))
                    .await;
                (i, d)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let pushed = started.elapsed();
    let started = Instant::now();
    let refs: Vec<String> = digests
        .iter()
        .map(|(i, d)| format!("{host}/bench/app-{i}@{d}"))
        .collect();
    for chunk in refs.chunks(200) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        registry.sign_all(dir, "release", &chunk);
    }
    let signed = started.elapsed();

    let world_dir = dir.join("world");
    std::fs::create_dir_all(&world_dir).unwrap();
    std::fs::write(
        world_dir.join("world.yaml"),
        world_of(&host, Some(&public), count),
    )
    .unwrap();
    let world = World::load(&[world_dir]).unwrap();
    let trust = Trust::of(trust_specs(&world).iter());
    let images: Vec<String> = (0..count)
        .map(|i| format!("{host}/bench/app-{i}:1.0"))
        .collect();
    let source = Source::registries(&RegistryOptions {
        ca_pem: vec![registry.ca_pem.clone().into_bytes()],
        ..RegistryOptions::default()
    });
    let verifier = Verifier::new(source, Duration::from_secs(3600));

    let started = Instant::now();
    let cold = verifier.verify_all(images.clone(), &trust).await;
    let cold_time = started.elapsed();
    let started = Instant::now();
    let cached = verifier.verify_all(images.clone(), &trust).await;
    let cached_time = started.elapsed();
    for results in [&cold, &cached] {
        assert_eq!(results.len(), count);
        for (image, v) in results.iter() {
            assert!(v.signed(), "{image}: {v:?}");
        }
    }
    assert_eq!(cold, cached, "the cache answers what verifying answered");

    // The decide path on the verified facts, against the same world offline.
    let store =
        PolicyStore::load_packs(&lattice_testkit::workspace_root().join("policies")).unwrap();
    let verified = ImageFacts {
        source: Some(format!("the registry at {host}")),
        results: Arc::new(cold),
    };
    let (with_facts, allowed) = decide_all(&world, &store, verified);
    assert_eq!(allowed, count, "every signed workload is allowed");
    let (offline, allowed_offline) = decide_all(&world, &store, ImageFacts::default());
    assert_eq!(allowed_offline, 0, "offline, nothing is signed");
    // The baseline: the same workloads allowed without any verification fact (their
    // registry trusted without signatures), so both sides take the allow path.
    let unsigned_dir = dir.join("unsigned-world");
    std::fs::create_dir_all(&unsigned_dir).unwrap();
    std::fs::write(
        unsigned_dir.join("world.yaml"),
        world_of(&host, None, count),
    )
    .unwrap();
    let unsigned_world = World::load(&[unsigned_dir]).unwrap();
    let (baseline, allowed_baseline) = decide_all(&unsigned_world, &store, ImageFacts::default());
    assert_eq!(allowed_baseline, count);

    let per = |d: Duration| d.as_secs_f64() * 1e3 / count as f64;
    println!("image verification: {count} distinct signed images, loopback registry (TLS)");
    println!(
        "  setup: pushed in {:.1} s, signed by cosign in {:.1} s",
        pushed.as_secs_f64(),
        signed.as_secs_f64()
    );
    println!(
        "  cold:   {:>8.0} ms  ({:.2} ms/image: resolve, signature manifest, payload, referrers, check)",
        cold_time.as_secs_f64() * 1e3,
        per(cold_time)
    );
    println!(
        "  cached: {:>8.0} ms  ({:.2} ms/image: resolve only)  cold/cached = {:.1}x",
        cached_time.as_secs_f64() * 1e3,
        per(cached_time),
        cold_time.as_secs_f64() / cached_time.as_secs_f64()
    );
    println!(
        "  decide every workload's gates, allowed on verified signatures: {:>6.1} ms",
        with_facts.as_secs_f64() * 1e3
    );
    println!(
        "  baseline, allowed by a registry trusted unsigned (no facts):   {:>6.1} ms  ratio {:.2}",
        baseline.as_secs_f64() * 1e3,
        with_facts.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "  (offline, every workload denied and explained: {:.1} ms)",
        offline.as_secs_f64() * 1e3
    );
}

/// Projects and snapshots `world` on `images`, then decides every workload's gates; returns
/// the deciding time (best of three) and how many workloads were allowed.
fn decide_all(world: &World, store: &PolicyStore, images: ImageFacts) -> (Duration, usize) {
    let live = LiveFacts {
        images,
        ..LiveFacts::default()
    };
    let projection = Projection::with_live(world, live);
    let snapshot = Snapshot::build(world, &projection, store).unwrap();
    let workloads: Vec<_> = world
        .objects()
        .filter(|(_, o)| o.is_workload())
        .map(|(_, o)| o)
        .collect();
    let mut best = Duration::MAX;
    let mut allowed = 0;
    for _ in 0..3 {
        let started = Instant::now();
        allowed = workloads
            .iter()
            .filter(|o| lattice_gates::evaluate(&snapshot, o).allowed())
            .count();
        best = best.min(started.elapsed());
    }
    (best, allowed)
}

/// A namespace, a TrustPolicy for the images' prefix (requiring `release`'s signature when
/// `public` is its key, else trusting the prefix unsigned), and one service per image.
fn world_of(host: &str, public: Option<&str>, count: usize) -> String {
    let trust = match public {
        Some(public) => {
            let key: String = public
                .lines()
                .map(|l| format!("            {l}\n"))
                .collect();
            format!(
                "      requireSignature: true
      keys:
        - name: release
          publicKey: |
{key}"
            )
        }
        None => "      requireSignature: false\n".to_owned(),
    };
    let mut out = format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: bench}}
---
apiVersion: lattice.dev/v1alpha1
kind: TrustPolicy
metadata: {{name: trust}}
spec:
  registries:
    - prefix: {host}/bench
{trust}"
    );
    for i in 0..count {
        out.push_str(&format!(
            "---
apiVersion: lattice.dev/v1alpha1
kind: LatticeService
metadata: {{name: app-{i}, namespace: bench}}
spec:
  containers:
    main:
      image: {host}/bench/app-{i}:1.0
      resources:
        limits: {{cpu: 100m, memory: 64Mi}}
"
        ));
    }
    out
}
