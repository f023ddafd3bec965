//! The registry side: resolving a reference to the digest of what it names, and reading a
//! signature manifest and its payloads, over the OCI distribution API (`oci-client`).
//!
//! Everything read is bounded and checked: a manifest's digest is computed here from its
//! bytes (the digest a tag resolves to is what the registry *serves*, not what a header
//! says), and a payload blob is read to at most [`MAX_PAYLOAD_BYTES`] and must hash to the
//! digest its signature manifest names.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use lattice_schemas::image::ImageRef;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE, OciDescriptor,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};

use crate::cosign::MAX_PAYLOAD_BYTES;

/// Manifests accepted when resolving: an image, or an index of images (whose digest is what
/// `cosign sign` signs for a multi-platform tag).
const MANIFEST_TYPES: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// How to reach registries.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// CA certificates (PEM) trusted for registries besides the system's roots.
    pub ca_pem: Vec<Vec<u8>>,
    /// Registries (`host:port`) spoken to over plain HTTP: development registries only.
    pub plain_http: Vec<String>,
    /// Credentials per registry host (`host[:port]`); anonymous elsewhere.
    pub credentials: HashMap<String, Credentials>,
    /// Per request (connect and read).
    pub timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            ca_pem: Vec::new(),
            plain_http: Vec::new(),
            credentials: HashMap::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A registry login. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// Why the registry did not answer what was asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The manifest or tag does not exist.
    #[error("{0} is not in the registry")]
    NotFound(String),
    /// The reference or blob is not in the OCI image layout verified against.
    #[error("{0} is not in the OCI image layout")]
    NotInLayout(String),
    /// The registry refused the credentials (or anonymous access).
    #[error("the registry refused access to {0}")]
    Unauthorized(String),
    /// No answer, or one that is not the distribution API's.
    #[error("the registry of {reference} cannot be reached: {reason}")]
    Unreachable { reference: String, reason: String },
    /// An answer that breaks the rules (a digest that does not match its bytes, a blob too
    /// large).
    #[error("the registry's answer for {reference} is refused: {reason}")]
    Invalid { reference: String, reason: String },
}

/// A client for the registries images live in.
pub struct Registry {
    /// Made on first use: building it reads the system's roots, which cost a command more
    /// than anything else in a world whose images no TrustPolicy governs (none is
    /// verified, so no registry is asked).
    client: std::sync::OnceLock<Client>,
    options: RegistryOptions,
}

impl Registry {
    /// A client with `options`.
    pub fn new(options: &RegistryOptions) -> Registry {
        Registry {
            client: std::sync::OnceLock::new(),
            options: options.clone(),
        }
    }

    fn client(&self) -> &Client {
        self.client.get_or_init(|| Self::connect(&self.options))
    }

    fn connect(options: &RegistryOptions) -> Client {
        // reqwest is built without a provider of its own: rustls with ring, like the rest
        // of the workspace. A provider installed earlier (by kube, say) is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: if options.plain_http.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(options.plain_http.clone())
            },
            extra_root_certificates: options
                .ca_pem
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            connect_timeout: Some(options.timeout),
            read_timeout: Some(options.timeout),
            ..ClientConfig::default()
        };
        Client::new(config)
    }

    /// A client like this one that logs in with `logins` (by registry host) first, and
    /// with this one's logins for the other hosts. A client of its own: the OCI client
    /// keeps one login per host.
    pub fn logged_in(&self, logins: &HashMap<String, Credentials>) -> Registry {
        let mut options = self.options.clone();
        options
            .credentials
            .extend(logins.iter().map(|(h, c)| (h.clone(), c.clone())));
        Registry::new(&options)
    }

    /// `image`'s repository at `digest`, with this client's login for its registry stored
    /// for the calls that take none of their own.
    async fn at_digest(&self, image: &ImageRef, digest: &str) -> Reference {
        let reference = Reference::with_digest(
            image.registry.clone(),
            image.repository.clone(),
            digest.to_owned(),
        );
        self.client()
            .store_auth_if_needed(reference.resolve_registry(), &self.auth(&image.registry))
            .await;
        reference
    }

    fn auth(&self, registry: &str) -> RegistryAuth {
        match self.options.credentials.get(registry) {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// The digest `image` names: its own digest when it has one, else what its tag
    /// resolves to now (the digest of the manifest bytes served).
    pub async fn resolve(&self, image: &ImageRef) -> Result<String, RegistryError> {
        if !image.digest.is_empty() {
            return Ok(image.digest.clone());
        }
        let reference = Reference::with_tag(
            image.registry.clone(),
            image.repository.clone(),
            image.tag.clone(),
        );
        let (body, _) = self
            .client()
            .pull_manifest_raw(&reference, &self.auth(&image.registry), MANIFEST_TYPES)
            .await
            .map_err(|e| classify(&image.to_string(), e))?;
        Ok(sha256_of(&body))
    }

    /// The manifest tagged `tag` in `image`'s repository, or `None` when there is none.
    pub async fn manifest(
        &self,
        image: &ImageRef,
        tag: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let reference = Reference::with_tag(
            image.registry.clone(),
            image.repository.clone(),
            tag.to_owned(),
        );
        let shown = format!("{}:{tag}", image.name());
        match self
            .client()
            .pull_manifest_raw(&reference, &self.auth(&image.registry), MANIFEST_TYPES)
            .await
        {
            Ok((body, _)) => Ok(Some(body.to_vec())),
            Err(e) => match classify(&shown, e) {
                RegistryError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// The manifest `digest` of `image`'s repository, or `None`; exactly its bytes.
    pub async fn manifest_at(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let shown = format!("{}@{digest}", image.name());
        let reference = Reference::with_digest(
            image.registry.clone(),
            image.repository.clone(),
            digest.to_owned(),
        );
        match self
            .client()
            .pull_manifest_raw(&reference, &self.auth(&image.registry), MANIFEST_TYPES)
            .await
        {
            Ok((body, _)) if sha256_of(&body) == digest.to_ascii_lowercase() => {
                Ok(Some(body.to_vec()))
            }
            Ok(_) => Err(RegistryError::Invalid {
                reference: shown,
                reason: "the manifest does not hash to its digest".into(),
            }),
            Err(e) => match classify(&shown, e) {
                RegistryError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// The manifests that refer to `digest` (OCI 1.1 referrers: the registry's referrers
    /// API, or the `sha256-<hex>` index of the referrers tag schema where it has none).
    pub async fn referrers(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let shown = format!("{}@{digest}", image.name());
        let reference = self.at_digest(image, digest).await;
        match self.client().pull_referrers(&reference, None).await {
            Ok(index) => Ok(index
                .manifests
                .into_iter()
                .map(|m| m.digest.to_ascii_lowercase())
                .filter(|d| crate::cosign::signature_tag(d).is_ok())
                .take(crate::bundle::MAX_REFERRERS)
                .collect()),
            Err(e) => match classify(&shown, e) {
                RegistryError::NotFound(_) => Ok(Vec::new()),
                other => Err(other),
            },
        }
    }

    /// A payload blob of `image`'s repository: at most [`MAX_PAYLOAD_BYTES`], and exactly
    /// the bytes of `digest`.
    pub async fn payload(&self, image: &ImageRef, digest: &str) -> Result<Vec<u8>, RegistryError> {
        self.blob(image, digest, MAX_PAYLOAD_BYTES).await
    }

    /// A blob of `image`'s repository: at most `limit` bytes, and exactly the bytes of
    /// `digest`.
    pub async fn blob(
        &self,
        image: &ImageRef,
        digest: &str,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let shown = format!("{}@{digest}", image.name());
        let reference = self.at_digest(image, digest).await;
        let descriptor = OciDescriptor {
            digest: digest.to_owned(),
            ..OciDescriptor::default()
        };
        let mut stream = self
            .client()
            .pull_blob_stream(&reference, &descriptor)
            .await
            .map_err(|e| classify(&shown, e))?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Unreachable {
                reference: shown.clone(),
                reason: e.to_string(),
            })?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > limit {
                return Err(RegistryError::Invalid {
                    reference: shown,
                    reason: format!("a blob over {limit} bytes"),
                });
            }
        }
        if sha256_of(&bytes) != digest.to_ascii_lowercase() {
            return Err(RegistryError::Invalid {
                reference: shown,
                reason: "the blob does not hash to its digest".into(),
            });
        }
        Ok(bytes)
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Sorts a client error into what verification reports.
fn classify(reference: &str, e: OciDistributionError) -> RegistryError {
    let reference = reference.to_owned();
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound(reference),
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) =>
        {
            RegistryError::NotFound(reference)
        }
        OciDistributionError::ServerError { code: 404, .. } => RegistryError::NotFound(reference),
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized(reference),
        OciDistributionError::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            RegistryError::Unauthorized(reference)
        }
        OciDistributionError::DigestError(d) => RegistryError::Invalid {
            reference,
            reason: d.to_string(),
        },
        OciDistributionError::RequestError(r) => RegistryError::Unreachable {
            reference,
            reason: request_reason(&r),
        },
        other => RegistryError::Unreachable {
            reference,
            reason: other.to_string(),
        },
    }
}

/// The innermost cause of a transport error (reqwest's own message is only "error sending
/// request for url (…)").
fn request_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
