//! Keeping the images' verifications current: every image the world's workloads and pods
//! use, under a TrustPolicy registry with keys, is verified at its registry (or the OCI
//! layout the operator was given) through `lattice-supply`, and the results are handed to
//! the index, where the next plan decides on them.
//!
//! Everything is verified again when the TrustPolicies change and every `ttl`: a tag that
//! moved to an unsigned digest is then unsigned, and what was derived from it is revoked. An
//! image a workload starts to use is verified within a second. No plan is made before the
//! first verification (see [`super::index::Index::images_ready`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lattice_engine::project::{ImageFacts, image_references};
use lattice_schemas::image::Verification;
use lattice_supply::{Trust, Verifier};
use tokio::time::Instant;

use super::watch::{Shared, watch_count};

/// How often the world is looked at for images not yet verified.
const POLL: Duration = Duration::from_secs(1);

/// Runs for the life of the operator.
pub async fn run(shared: Arc<Shared>, verifier: Verifier, ttl: Duration) {
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
            let next = verifier
                .verify_all(references.iter().cloned(), &trust)
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
                next.extend(verifier.verify_all(new, &trust).await);
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
