//! Verifying images: the TrustPolicies' keys, the registry, and a cache of results by
//! digest.
//!
//! An image is verified only when a TrustPolicy registry prefix covers it (the longest
//! prefix decides, as in the projection): elsewhere there is no key to verify with, and the
//! image is simply not signed. The outcome is a [`Verification`] fact; every way of not
//! getting to "signed" keeps its reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lattice_schemas::crd::trust_policy::TrustPolicySpec;
use lattice_schemas::image::{ImageRef, Verification};
use sha2::{Digest as _, Sha256};

use crate::keyless::KeylessSigner;
use crate::keys::PublicKey;
use crate::registry::{Credentials, RegistryError};
use crate::signers::Signers;
use crate::source::Source;
use crate::{bundle, cosign};

/// How many images are verified at once.
const CONCURRENCY: usize = 32;
/// The most distinct sets of logins kept a client for.
const MAX_LOGIN_SETS: usize = 256;

/// The keys of one TrustPolicy registry prefix.
#[derive(Clone, Debug)]
pub struct TrustedPrefix {
    /// `host[/path]`, without a trailing `/`.
    pub prefix: String,
    /// Its public keys and keyless identities.
    pub signers: Signers,
    /// Keys named but not usable here (unreadable, or a keyless key with no trust root),
    /// with why.
    pub unusable: Vec<String>,
    /// Identifies the key set, so a cached result is not reused under other keys.
    fingerprint: String,
}

/// What the TrustPolicies of a world trust.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    prefixes: Vec<TrustedPrefix>,
}

impl Trust {
    /// The trust that `policies` declare.
    pub fn of<'a>(policies: impl IntoIterator<Item = &'a TrustPolicySpec>) -> Trust {
        let mut prefixes = Vec::new();
        for spec in policies {
            for r in &spec.registries {
                let mut signers = Signers::default();
                let mut unusable = Vec::new();
                let mut fingerprint = Sha256::new();
                for k in &r.keys {
                    let mut remember = |parts: &[&str]| {
                        for part in parts {
                            fingerprint.update(part.trim().as_bytes());
                            fingerprint.update([0]);
                        }
                    };
                    match (&k.public_key, &k.keyless) {
                        (Some(pem), _) => match PublicKey::from_pem(&k.name, pem) {
                            Ok(key) => {
                                remember(&[&k.name, pem]);
                                signers.keys.push(key);
                            }
                            Err(e) => unusable.push(format!("key `{}`: {e}", k.name)),
                        },
                        (None, Some(id)) => {
                            let root = id.trust_root.as_deref().unwrap_or("");
                            let log = id.transparency_log_key.as_deref();
                            match KeylessSigner::new(&k.name, &id.issuer, &id.subject, root, log) {
                                Ok(signer) => {
                                    remember(&[
                                        &k.name,
                                        &id.issuer,
                                        &id.subject,
                                        root,
                                        log.unwrap_or(""),
                                    ]);
                                    signers.keyless.push(signer);
                                }
                                Err(e) => unusable.push(format!("keyless key `{}`: {e}", k.name)),
                            }
                        }
                        (None, None) => unusable.push(format!(
                            "key `{}` has neither publicKey nor keyless",
                            k.name
                        )),
                    }
                }
                prefixes.push(TrustedPrefix {
                    prefix: r.prefix.trim_end_matches('/').to_owned(),
                    signers,
                    unusable,
                    fingerprint: crate::registry::sha256_of(&fingerprint.finalize()),
                });
            }
        }
        Trust { prefixes }
    }

    /// The prefix that governs `image` (the longest that covers it), if any.
    pub fn governing(&self, image: &ImageRef) -> Option<&TrustedPrefix> {
        let full = image.name();
        self.prefixes
            .iter()
            .filter(|p| full == p.prefix || full.starts_with(&format!("{}/", p.prefix)))
            .max_by_key(|p| p.prefix.len())
    }
}

/// Registry logins by host: a workload's pull secret, read as a Docker config.
pub type Logins = HashMap<String, Credentials>;

/// Verifies images at their registries, remembering conclusive results by digest.
pub struct Verifier {
    source: Arc<Source>,
    /// The source logged in with each set of logins seen (by their fingerprint).
    logged_in: Mutex<HashMap<String, Arc<Source>>>,
    ttl: Duration,
    /// (digest, key set) → when verified, and the outcome.
    cache: Mutex<HashMap<(String, String), (Instant, Verification)>>,
    /// (reference, key set) → the last conclusive outcome, kept through a registry outage
    /// for one more `ttl` (see [`Verifier::verify`]).
    last: Mutex<HashMap<(String, String), (Instant, Verification)>>,
}

impl Verifier {
    /// A verifier that reads images from `source` and trusts a result for `ttl`.
    pub fn new(source: Source, ttl: Duration) -> Verifier {
        Verifier {
            source: Arc::new(source),
            logged_in: Mutex::new(HashMap::new()),
            ttl,
            cache: Mutex::new(HashMap::new()),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies each of `images` (as workloads write them), keyed by the normalized
    /// reference, as the projection reads them. Images that no prefix governs, or whose
    /// prefix names no key, are left out: there is nothing to verify them with.
    pub async fn verify_all(
        &self,
        images: impl IntoIterator<Item = String>,
        trust: &Trust,
    ) -> BTreeMap<String, Verification> {
        self.verify_all_with(images, trust, &BTreeMap::new()).await
    }

    /// [`Verifier::verify_all`], reading each image with the `logins` given for it (by
    /// normalized reference: the pull secrets of the workloads that use it) before the
    /// verifier's own.
    pub async fn verify_all_with(
        &self,
        images: impl IntoIterator<Item = String>,
        trust: &Trust,
        logins: &BTreeMap<String, Vec<Logins>>,
    ) -> BTreeMap<String, Verification> {
        let wanted: BTreeSet<String> = images
            .into_iter()
            .filter_map(|i| ImageRef::parse(&i).ok())
            .filter(|i| {
                trust
                    .governing(i)
                    .is_some_and(|p| !p.signers.is_empty() || !p.unusable.is_empty())
            })
            .map(|i| i.to_string())
            .collect();
        futures_util::stream::iter(wanted)
            .map(|image| async move {
                let with = logins.get(&image).map(Vec::as_slice).unwrap_or_default();
                let v = self.verify_with(&image, trust, with).await;
                (image, v)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await
    }

    /// Verifies one image. When its registry cannot be reached, an image verified
    /// conclusively by this verifier within the last two `ttl`s keeps that outcome (a
    /// registry's blip does not revoke every workload); one never verified, or verified
    /// longer ago, is not signed, with the registry's error.
    pub async fn verify(&self, image: &str, trust: &Trust) -> Verification {
        self.verify_with(image, trust, &[]).await
    }

    /// [`Verifier::verify`], trying each of `logins` in turn, then the verifier's own,
    /// until one is not refused by the registry.
    pub async fn verify_with(&self, image: &str, trust: &Trust, logins: &[Logins]) -> Verification {
        let img = match ImageRef::parse(image) {
            Ok(i) => i,
            Err(e) => return Verification::failed("", e.to_string()),
        };
        let Some(prefix) = trust.governing(&img) else {
            return Verification::failed("", "no TrustPolicy registry covers this image");
        };
        let mut sources: Vec<Arc<Source>> = logins
            .iter()
            .filter(|l| l.contains_key(&img.registry))
            .filter_map(|l| self.logged_in_source(l))
            .collect();
        sources.push(self.source.clone());
        let mut failure = None;
        for source in &sources {
            match self.attempt(source, &img, prefix).await {
                Ok(v) => {
                    self.last.lock().expect("lock").insert(
                        (img.to_string(), prefix.fingerprint.clone()),
                        (Instant::now(), v.clone()),
                    );
                    return v;
                }
                // Refused: another login may be let in.
                Err(e @ RegistryError::Unauthorized(_)) => failure = Some(e),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let e = failure.expect("at least one source was tried");
        let remembered = (img.to_string(), prefix.fingerprint.clone());
        if matches!(e, RegistryError::Unreachable { .. })
            && let Some((at, v)) = self.last.lock().expect("lock").get(&remembered)
            && at.elapsed() < self.ttl * 2
        {
            tracing::warn!(image, error = %e, "registry unreachable; keeping the last verification");
            return v.clone();
        }
        Verification::failed("", e.to_string())
    }

    /// The conclusive outcome for `img` read from `source` (cached by digest), or the
    /// registry's failure.
    async fn attempt(
        &self,
        source: &Source,
        img: &ImageRef,
        prefix: &TrustedPrefix,
    ) -> Result<Verification, RegistryError> {
        let digest = source.resolve(img).await?;
        let key = (digest.clone(), prefix.fingerprint.clone());
        if let Some((at, v)) = self.cache.lock().expect("cache lock").get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(v.clone());
        }
        let v = self.check_signatures(source, img, &digest, prefix).await?;
        tracing::debug!(image = %img, %digest, ?v, "verified");
        // Conclusive (signed, or signatures that do not count): cached by digest.
        self.cache
            .lock()
            .expect("cache lock")
            .insert(key, (Instant::now(), v.clone()));
        Ok(v)
    }

    /// The source logged in with `logins`, made once per distinct set.
    fn logged_in_source(&self, logins: &Logins) -> Option<Arc<Source>> {
        let mut fingerprint = Sha256::new();
        let mut hosts: Vec<_> = logins.iter().collect();
        hosts.sort_by(|a, b| a.0.cmp(b.0));
        for (host, c) in hosts {
            for part in [host, &c.username, &c.password] {
                fingerprint.update(part.as_bytes());
                fingerprint.update([0]);
            }
        }
        let key = crate::registry::sha256_of(&fingerprint.finalize());
        let mut made = self.logged_in.lock().expect("lock");
        if let Some(s) = made.get(&key) {
            return Some(s.clone());
        }
        if made.len() >= MAX_LOGIN_SETS {
            // Rotated secrets leave old sets behind; start over rather than grow.
            made.clear();
        }
        let source = Arc::new(self.source.logged_in(logins)?);
        made.insert(key, source.clone());
        Some(source)
    }

    /// Where images are read.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Forgets every cached result (the TrustPolicies changed, say).
    pub fn forget(&self) {
        self.cache.lock().expect("cache lock").clear();
        self.last.lock().expect("lock").clear();
        self.logged_in.lock().expect("lock").clear();
    }

    /// The signatures of `digest` under `prefix`'s signers, in both of cosign's forms (the
    /// `.sig` tag, and Sigstore bundles among the referrers). `Err` only when the registry
    /// did not answer.
    async fn check_signatures(
        &self,
        source: &Source,
        img: &ImageRef,
        digest: &str,
        prefix: &TrustedPrefix,
    ) -> Result<Verification, RegistryError> {
        let now = pki_types::UnixTime::now();
        let mut signers = BTreeSet::new();
        let mut reasons = BTreeSet::new();
        let mut found = 0;
        let tag = match cosign::signature_tag(digest) {
            Ok(t) => t,
            Err(e) => return Ok(Verification::failed(digest, e.to_string())),
        };
        if let Some(manifest) = source.manifest(img, &tag).await? {
            match cosign::signature_layers(&manifest) {
                Ok(layers) => {
                    found += layers.len();
                    for layer in &layers {
                        let payload = match source.payload(img, &layer.payload_digest).await {
                            Ok(p) => p,
                            Err(e @ RegistryError::Unreachable { .. }) => return Err(e),
                            Err(e) => {
                                reasons.insert(e.to_string());
                                continue;
                            }
                        };
                        match cosign::check(layer, &payload, digest, &prefix.signers, now) {
                            Ok(names) => signers.extend(names),
                            Err(r) => {
                                reasons.insert(r.to_string());
                            }
                        }
                    }
                }
                Err(e) => {
                    reasons.insert(e.to_string());
                }
            }
        }
        // A referrers index that cannot be read hides bundles, not the tag form's
        // signatures: it is a reason, unless the registry is down.
        let referrers = match source.referrers(img, digest).await {
            Ok(r) => r,
            Err(e @ RegistryError::Unreachable { .. }) => return Err(e),
            Err(e) => {
                reasons.insert(e.to_string());
                Vec::new()
            }
        };
        for referrer in referrers {
            let manifest = match source.manifest_at(img, &referrer).await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e @ RegistryError::Unreachable { .. }) => return Err(e),
                Err(e) => {
                    reasons.insert(e.to_string());
                    continue;
                }
            };
            let layer = match bundle::bundle_layer(&manifest, digest) {
                Ok(Some(l)) => l,
                Ok(None) => continue,
                Err(e) => {
                    reasons.insert(e.to_string());
                    continue;
                }
            };
            found += 1;
            let verdict = match source.payload(img, &layer.digest).await {
                Ok(bytes) => bundle::parse(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|b| {
                        bundle::check(&b, digest, &prefix.signers, now).map_err(|r| r.to_string())
                    }),
                Err(e @ RegistryError::Unreachable { .. }) => return Err(e),
                Err(e) => Err(e.to_string()),
            };
            match verdict {
                Ok(names) => signers.extend(names),
                Err(r) => {
                    reasons.insert(r);
                }
            }
        }
        if signers.is_empty() {
            let mut why: Vec<String> = if found == 0 && reasons.is_empty() {
                vec![format!(
                    "no cosign signature: neither {}:{tag} nor a Sigstore bundle among its referrers",
                    img.name()
                )]
            } else {
                reasons.into_iter().collect()
            };
            if prefix.signers.is_empty() {
                why.push(format!("no usable key for {}", prefix.prefix));
            }
            why.extend(prefix.unusable.iter().cloned());
            return Ok(Verification::failed(digest, why.join("; ")));
        }
        Ok(Verification {
            digest: digest.to_owned(),
            signers,
            error: String::new(),
        })
    }
}

/// Verifies `images` under the trust of `specs`, once, from `source`: what a command that
/// loads a world does before it decides. Blocks the calling thread (the work runs on a
/// thread and runtime of its own, so this may be called inside an async runtime or not).
/// Returns what was verified against, for people, and the results.
pub fn verify_blocking(
    source: Source,
    specs: &[TrustPolicySpec],
    images: Vec<String>,
) -> (String, BTreeMap<String, Verification>) {
    let described = source.describe();
    let trust = Trust::of(specs);
    let verifier = Verifier::new(source, Duration::from_secs(300));
    let results = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(verifier.verify_all(images, &trust)),
                    // No runtime, no verification: every image stays unsigned, and says why.
                    Err(e) => {
                        let why = format!("not verified: cannot start the verifier: {e}");
                        images
                            .into_iter()
                            .filter_map(|i| ImageRef::parse(&i).ok())
                            .filter(|i| trust.governing(i).is_some())
                            .map(|i| (i.to_string(), Verification::failed("", why.clone())))
                            .collect()
                    }
                }
            })
            .join()
            .unwrap_or_default()
    });
    (described, results)
}

/// Verifies every image `world` uses, under its TrustPolicies, once, from `source`
/// (blocking, as [`verify_blocking`]): the image facts a world is projected with.
pub fn facts_of(
    world: &lattice_engine::World,
    source: Source,
) -> lattice_engine::project::ImageFacts {
    let specs = trust_specs(world);
    if specs.is_empty() {
        // No TrustPolicy, so no image is governed: none is verified, and no registry (nor
        // the runtime that would ask one) is needed to say so.
        return lattice_engine::project::ImageFacts {
            source: Some(source.describe()),
            results: Default::default(),
        };
    }
    let images = lattice_engine::project::image_references(world)
        .into_iter()
        .collect();
    let (source, results) = verify_blocking(source, &specs, images);
    lattice_engine::project::ImageFacts {
        source: Some(source),
        results: std::sync::Arc::new(results),
    }
}

/// The specs of every TrustPolicy in `world`: what [`Trust::of`] reads.
pub fn trust_specs(world: &lattice_engine::World) -> Vec<TrustPolicySpec> {
    world
        .objects()
        .filter_map(|(_, o)| match o {
            lattice_schemas::manifest::Object::TrustPolicy(t) => Some(t.spec.clone()),
            _ => None,
        })
        .collect()
}
