//! Keeping the images' verifications current: every image the world's workloads and pods
//! use, under a TrustPolicy registry with keys, is verified at its registry (or the OCI
//! layout the operator was given) through `lattice-supply`, and the results are handed to
//! the index, where the next plan decides on them.
//!
//! Everything is verified again when the TrustPolicies change and every `ttl`: a tag that
//! moved to an unsigned digest is then unsigned, and what was derived from it is revoked. An
//! image a workload starts to use is verified within a second. No plan is made before the
//! first verification (see [`super::index::Index::images_ready`]).
//!
//! With `--pull-secret-logins`, each image is read with the logins of the pull secrets of
//! the workloads that use it (the `kubernetes.io/dockerconfigjson` Secrets their pods
//! name, read when images are verified), then with the operator's own. A Secret that is
//! missing or not a Docker config is skipped, with a warning: its workload's image is read
//! as it would be without it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use lattice_engine::project::{ImageFacts, image_references};
use lattice_schemas::image::Verification;
use lattice_supply::{Logins, Trust, Verifier};
use tokio::time::Instant;

use super::watch::{Shared, watch_count};

/// How often the world is looked at for images not yet verified.
const POLL: Duration = Duration::from_secs(1);

/// Runs for the life of the operator.
pub async fn run(
    shared: Arc<Shared>,
    verifier: Verifier,
    ttl: Duration,
    pull_secrets: Option<Client>,
) {
    let mut synced = shared.synced.subscribe();
    let total = watch_count();
    if synced.wait_for(|n| *n >= total).await.is_err() {
        return;
    }
    let source = verifier.source().describe();
    let mut results: BTreeMap<String, Verification> = BTreeMap::new();
    let mut trust_seen: Option<String> = None;
    let mut whole_at: Option<Instant> = None;
    loop {
        // A copy of the World (persistent: its keys, not its objects) under the lock; the
        // scan for images runs outside it, so the watches never wait on it.
        let world = shared
            .index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .world()
            .clone();
        let references = image_references(&world);
        let specs = lattice_supply::trust_specs(&world);
        let fingerprint = serde_json::to_string(&specs).unwrap_or_default();
        let trust = Trust::of(&specs);
        let trust_changed = trust_seen.as_ref() != Some(&fingerprint);
        let due = whole_at.is_none_or(|at| at.elapsed() >= ttl);
        let next = if trust_changed || due {
            if trust_changed {
                verifier.forget();
            }
            let started = Instant::now();
            let logins = match &pull_secrets {
                Some(client) => pull_secret_logins(client, &world, &references).await,
                None => BTreeMap::new(),
            };
            let next = verifier
                .verify_all_with(references.iter().cloned(), &trust, &logins)
                .await;
            tracing::info!(
                images = next.len(),
                signed = next.values().filter(|v| v.signed()).count(),
                took_ms = started.elapsed().as_millis() as u64,
                against = %source,
                "verified images"
            );
            trust_seen = Some(fingerprint);
            whole_at = Some(Instant::now());
            next
        } else {
            let mut next = results.clone();
            next.retain(|image, _| references.contains(image));
            let new: Vec<String> = references
                .iter()
                .filter(|i| !results.contains_key(*i))
                .cloned()
                .collect();
            if !new.is_empty() {
                let wanted: BTreeSet<String> = new.iter().cloned().collect();
                let logins = match &pull_secrets {
                    Some(client) => pull_secret_logins(client, &world, &wanted).await,
                    None => BTreeMap::new(),
                };
                next.extend(verifier.verify_all_with(new, &trust, &logins).await);
            }
            next
        };
        for (image, v) in &next {
            if results.get(image) != Some(v) && !v.signed() && !v.error.is_empty() {
                tracing::warn!(image, error = %v.error, "image not signed");
            }
        }
        results = next;
        let facts = ImageFacts {
            source: Some(source.clone()),
            results: Arc::new(results.clone()),
        };
        let changed = shared
            .index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_images(facts);
        if changed {
            shared.changed.notify_one();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The logins of the pull secrets of the workloads that use each of `images`: every
/// distinct Secret read once, in the order the workloads name them.
async fn pull_secret_logins(
    client: &Client,
    world: &lattice_engine::World,
    images: &BTreeSet<String>,
) -> BTreeMap<String, Vec<Logins>> {
    let mut wanted: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (_, object) in world.objects() {
        for pull in lattice_compiler::pod::image_pulls(object) {
            let used: Vec<String> = pull.images.intersection(images).cloned().collect();
            if used.is_empty() {
                continue;
            }
            for secret in pull.secrets {
                wanted
                    .entry((pull.namespace.clone(), secret))
                    .or_default()
                    .extend(used.iter().cloned());
            }
        }
    }
    let mut out: BTreeMap<String, Vec<Logins>> = BTreeMap::new();
    for ((ns, name), used) in wanted {
        let Some(logins) = read_pull_secret(client, &ns, &name).await else {
            continue;
        };
        for image in used {
            let sets = out.entry(image).or_default();
            if !sets.contains(&logins) {
                sets.push(logins.clone());
            }
        }
    }
    out
}

/// The logins a `kubernetes.io/dockerconfigjson` Secret holds, or `None` (said in the log,
/// never with the Secret's contents) when it is missing or holds none.
async fn read_pull_secret(client: &Client, ns: &str, name: &str) -> Option<Logins> {
    let secret = match Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
    {
        Ok(Some(s)) => s,
        // Not synced yet, or an ImageProvider without credentials (nothing derived).
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(namespace = ns, secret = name, error = %e, "cannot read a pull secret");
            return None;
        }
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson"))
        .map(|b| b.0.clone());
    let Some(bytes) = bytes else {
        tracing::warn!(
            namespace = ns,
            secret = name,
            "a pull secret without .dockerconfigjson"
        );
        return None;
    };
    match std::str::from_utf8(&bytes)
        .map_err(|e| e.to_string())
        .and_then(lattice_supply::docker_config::parse)
    {
        Ok(logins) if !logins.is_empty() => Some(logins),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(namespace = ns, secret = name, error = %e, "a pull secret that is not a Docker config");
            None
        }
    }
}
