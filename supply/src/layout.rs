//! An OCI image layout on disk as the source of images and their signatures: verification
//! with no network, for air-gapped planning and for the bundled example world.
//!
//! The layout is the OCI image-layout specification's: an `oci-layout` file, an
//! `index.json` whose manifests name their reference in the
//! `org.opencontainers.image.ref.name` annotation (`ghcr.io/org/app:1.0`, and the signature
//! tags `ghcr.io/org/app:sha256-<hex>.sig` beside them), and content-addressed
//! `blobs/sha256/<hex>`. `skopeo copy … oci:DIR:REF` and `oras` write this form. Every blob
//! read is bounded and must hash to its name, so the layout is checked exactly as a
//! registry's answers are; only its tags are taken on trust, as a registry's are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lattice_schemas::image::ImageRef;
use serde_json::Value;

use crate::cosign::MAX_PAYLOAD_BYTES;
use crate::registry::{RegistryError, sha256_of};

/// The annotation naming a manifest's reference in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The largest manifest read from a layout.
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Why a layout cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct LayoutError {
    pub path: PathBuf,
    pub reason: String,
}

/// The layout a world carries: `images/` (holding an `oci-layout` file) in the first of
/// `world` that is a directory and has one.
pub fn beside(world: &[PathBuf]) -> Option<PathBuf> {
    world
        .iter()
        .filter(|p| p.is_dir())
        .map(|p| p.join("images"))
        .find(|p| p.join("oci-layout").is_file())
}

/// An opened OCI image layout.
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
    /// `registry/repository:tag` → manifest digest.
    tags: HashMap<String, String>,
}

impl Layout {
    /// Opens the layout at `dir`, reading its `index.json`.
    pub fn open(dir: &Path) -> Result<Layout, LayoutError> {
        let err = |path: PathBuf, reason: String| LayoutError { path, reason };
        let marker = dir.join("oci-layout");
        let text =
            std::fs::read_to_string(&marker).map_err(|e| err(marker.clone(), e.to_string()))?;
        let version = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_owned));
        if version.as_deref() != Some("1.0.0") {
            return Err(err(marker, "not an OCI image layout 1.0.0".into()));
        }
        let index_path = dir.join("index.json");
        let index: Value = std::fs::read(&index_path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| err(index_path.clone(), e))?;
        let manifests = index
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| err(index_path.clone(), "no `manifests` list".into()))?;
        let mut tags = HashMap::new();
        for m in manifests {
            let (Some(name), Some(digest)) = (
                m.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1")))
                    .and_then(Value::as_str),
                m.get("digest").and_then(Value::as_str),
            ) else {
                continue;
            };
            // Names are stored as references read them, so a lookup needs no second parse.
            let Ok(image) = ImageRef::parse(name) else {
                return Err(err(
                    index_path.clone(),
                    format!("`{name}` is not an image reference"),
                ));
            };
            tags.insert(
                format!("{}:{}", image.name(), image.tag),
                digest.to_ascii_lowercase(),
            );
        }
        Ok(Layout {
            dir: dir.to_owned(),
            tags,
        })
    }

    /// The directory it was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The digest `image` names, as [`crate::registry::Registry::resolve`] answers it.
    pub fn resolve(&self, image: &ImageRef) -> Result<String, RegistryError> {
        if !image.digest.is_empty() {
            return Ok(image.digest.clone());
        }
        let key = format!("{}:{}", image.name(), image.tag);
        let digest = self
            .tags
            .get(&key)
            .ok_or_else(|| RegistryError::NotInLayout(image.to_string()))?;
        // The tag must name a manifest that is really there.
        self.blob(&key, digest, MAX_MANIFEST_BYTES)?;
        Ok(digest.clone())
    }

    /// The manifest tagged `tag` in `image`'s repository, or `None`.
    pub fn manifest(&self, image: &ImageRef, tag: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let key = format!("{}:{tag}", image.name());
        match self.tags.get(&key) {
            Some(digest) => self.blob(&key, digest, MAX_MANIFEST_BYTES).map(Some),
            None => Ok(None),
        }
    }

    /// The manifest `digest`, or `None` when the layout does not hold it.
    pub fn manifest_at(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        match self.blob(
            &format!("{}@{digest}", image.name()),
            digest,
            MAX_MANIFEST_BYTES,
        ) {
            Ok(b) => Ok(Some(b)),
            Err(RegistryError::NotInLayout(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The manifests that refer to `digest`: a layout keeps them as the referrers tag
    /// schema does, in an index tagged `sha256-<hex>`.
    pub fn referrers(&self, image: &ImageRef, digest: &str) -> Result<Vec<String>, RegistryError> {
        let Some(index) = self.manifest(image, &referrers_tag(digest))? else {
            return Ok(Vec::new());
        };
        crate::bundle::referrer_digests(&index).map_err(|e| RegistryError::Invalid {
            reference: format!("{}@{digest}", image.name()),
            reason: e.to_string(),
        })
    }

    /// A payload blob, bounded and checked against its digest.
    pub fn payload(&self, image: &ImageRef, digest: &str) -> Result<Vec<u8>, RegistryError> {
        self.blob(
            &format!("{}@{digest}", image.name()),
            digest,
            MAX_PAYLOAD_BYTES,
        )
    }

    fn blob(&self, shown: &str, digest: &str, limit: u64) -> Result<Vec<u8>, RegistryError> {
        let invalid = |reason: String| RegistryError::Invalid {
            reference: shown.to_owned(),
            reason,
        };
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| invalid(format!("`{digest}` is not a sha256 digest")))?;
        let path = self.dir.join("blobs/sha256").join(hex);
        let size = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(_) => return Err(RegistryError::NotInLayout(shown.to_owned())),
        };
        if size > limit {
            return Err(invalid(format!("{size} bytes, more than {limit}")));
        }
        let bytes = std::fs::read(&path).map_err(|e| invalid(e.to_string()))?;
        if sha256_of(&bytes) != digest.to_ascii_lowercase() {
            return Err(invalid("the blob does not hash to its name".into()));
        }
        Ok(bytes)
    }
}

/// The tag under which the referrers tag schema keeps the referrers of `digest`.
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Writes images into a layout: what `Layout` reads. Used to make the example world's
/// layout from a real registry, and by tests.
pub struct LayoutWriter {
    dir: PathBuf,
    index: Vec<Value>,
}

impl LayoutWriter {
    /// Starts a layout at `dir` (created; an existing `index.json` is replaced on finish).
    pub fn create(dir: &Path) -> std::io::Result<LayoutWriter> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        std::fs::write(
            dir.join("oci-layout"),
            "{\"imageLayoutVersion\":\"1.0.0\"}\n",
        )?;
        Ok(LayoutWriter {
            dir: dir.to_owned(),
            index: Vec::new(),
        })
    }

    /// Stores a blob; returns its digest.
    pub fn blob(&mut self, bytes: &[u8]) -> std::io::Result<String> {
        let digest = sha256_of(bytes);
        let path = self
            .dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        std::fs::write(path, bytes)?;
        Ok(digest)
    }

    /// Stores a manifest and tags it `reference` (`registry/repository:tag`).
    pub fn manifest(
        &mut self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> std::io::Result<String> {
        let digest = self.blob(bytes)?;
        self.index.push(serde_json::json!({
            "mediaType": media_type,
            "digest": digest,
            "size": bytes.len(),
            "annotations": {REF_NAME: reference},
        }));
        Ok(digest)
    }

    /// Writes `index.json`, references sorted so the layout is reproducible.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.index.sort_by(|a, b| {
            a.pointer("/annotations")
                .map(|x| x.to_string())
                .cmp(&b.pointer("/annotations").map(|x| x.to_string()))
        });
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": self.index,
        });
        let mut text = serde_json::to_string_pretty(&index).expect("json");
        text.push('\n');
        std::fs::write(self.dir.join("index.json"), text)
    }
}

/// Copies `image` (by tag) from a registry into `writer`, named `stored_as`
/// (`registry/repository`) there: its manifest, the blobs it names, its cosign signatures
/// when it has any, and its referrers (Sigstore bundles). Blobs up to `limit` bytes.
pub async fn copy(
    registry: &crate::registry::Registry,
    image: &ImageRef,
    stored_as: &str,
    writer: &mut LayoutWriter,
    limit: u64,
) -> Result<(), RegistryError> {
    let io = |e: std::io::Error| RegistryError::Invalid {
        reference: image.to_string(),
        reason: format!("writing the layout: {e}"),
    };
    let digest = registry.resolve(image).await?;
    let mut tags = vec![(image.tag.clone(), true)];
    tags.push((
        crate::cosign::signature_tag(&digest).map_err(|e| RegistryError::Invalid {
            reference: image.to_string(),
            reason: e.to_string(),
        })?,
        false,
    ));
    for (tag, required) in tags {
        let Some(manifest) = registry.manifest(image, &tag).await? else {
            if required {
                return Err(RegistryError::NotFound(format!("{}:{tag}", image.name())));
            }
            continue;
        };
        let media_type = copy_blobs(registry, image, &manifest, writer, limit).await?;
        writer
            .manifest(&format!("{stored_as}:{tag}"), &media_type, &manifest)
            .map_err(io)?;
    }
    // Referrers (Sigstore bundles and other artifacts about the image), kept as the
    // referrers tag schema keeps them.
    let mut referrers = Vec::new();
    for d in registry.referrers(image, &digest).await? {
        let Some(manifest) = registry.manifest_at(image, &d).await? else {
            continue;
        };
        let media_type = copy_blobs(registry, image, &manifest, writer, limit).await?;
        writer.blob(&manifest).map_err(io)?;
        let mut entry = serde_json::json!({
            "mediaType": media_type,
            "digest": d,
            "size": manifest.len(),
        });
        if let Some(t) = serde_json::from_slice::<Value>(&manifest)
            .ok()
            .and_then(|m| m.get("artifactType").cloned())
        {
            entry["artifactType"] = t;
        }
        referrers.push(entry);
    }
    if !referrers.is_empty() {
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": referrers,
        }))
        .expect("json");
        writer
            .manifest(
                &format!("{stored_as}:{}", referrers_tag(&digest)),
                "application/vnd.oci.image.index.v1+json",
                &index,
            )
            .map_err(io)?;
    }
    Ok(())
}

/// Copies the blobs `manifest` names (config and layers) into `writer`; returns the
/// manifest's media type.
async fn copy_blobs(
    registry: &crate::registry::Registry,
    image: &ImageRef,
    manifest: &[u8],
    writer: &mut LayoutWriter,
    limit: u64,
) -> Result<String, RegistryError> {
    let invalid = |reason: String| RegistryError::Invalid {
        reference: image.to_string(),
        reason,
    };
    let doc: Value = serde_json::from_slice(manifest).map_err(|e| invalid(e.to_string()))?;
    let media_type = doc
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_owned();
    let blobs = doc.get("config").into_iter().chain(
        doc.get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten(),
    );
    for b in blobs {
        if let Some(d) = b.get("digest").and_then(Value::as_str) {
            let bytes = registry.blob(image, d, limit).await?;
            writer
                .blob(&bytes)
                .map_err(|e| invalid(format!("writing the layout: {e}")))?;
        }
    }
    Ok(media_type)
}
