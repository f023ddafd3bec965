//! Where images and their signatures are read: registries over the network, or an OCI image
//! layout on disk. Both answer the same questions with the same checks.

use lattice_schemas::image::ImageRef;

use crate::layout::Layout;
use crate::registry::{Registry, RegistryError, RegistryOptions};

/// A source of manifests and signature payloads.
pub enum Source {
    /// The registries images name, over the OCI distribution API.
    Registries(Registry),
    /// An OCI image layout, with no network.
    Layout(Layout),
}

impl Source {
    /// Registries, reached with `options`.
    pub fn registries(options: &RegistryOptions) -> Source {
        Source::Registries(Registry::new(options))
    }

    /// The same source logging in with `logins` (by registry host) first; `None` for a
    /// layout, which needs no login.
    pub fn logged_in(
        &self,
        logins: &std::collections::HashMap<String, crate::Credentials>,
    ) -> Option<Source> {
        match self {
            Source::Registries(r) => Some(Source::Registries(r.logged_in(logins))),
            Source::Layout(_) => None,
        }
    }

    /// What a verification says it was checked against, for people.
    pub fn describe(&self) -> String {
        match self {
            Source::Registries(_) => "the images' registries".to_owned(),
            Source::Layout(l) => format!("the OCI image layout {} (offline)", l.dir().display()),
        }
    }

    /// The digest `image` names (its own, or its tag's now).
    pub async fn resolve(&self, image: &ImageRef) -> Result<String, RegistryError> {
        match self {
            Source::Registries(r) => r.resolve(image).await,
            Source::Layout(l) => l.resolve(image),
        }
    }

    /// The manifest tagged `tag` in `image`'s repository, or `None`.
    pub async fn manifest(
        &self,
        image: &ImageRef,
        tag: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        match self {
            Source::Registries(r) => r.manifest(image, tag).await,
            Source::Layout(l) => l.manifest(image, tag),
        }
    }

    /// The manifest `digest` of `image`'s repository, or `None`.
    pub async fn manifest_at(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        match self {
            Source::Registries(r) => r.manifest_at(image, digest).await,
            Source::Layout(l) => l.manifest_at(image, digest),
        }
    }

    /// The manifests (digests) that refer to `digest`: OCI 1.1 referrers.
    pub async fn referrers(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> Result<Vec<String>, RegistryError> {
        match self {
            Source::Registries(r) => r.referrers(image, digest).await,
            Source::Layout(l) => l.referrers(image, digest),
        }
    }

    /// A signature payload blob of `image`'s repository.
    pub async fn payload(&self, image: &ImageRef, digest: &str) -> Result<Vec<u8>, RegistryError> {
        match self {
            Source::Registries(r) => r.payload(image, digest).await,
            Source::Layout(l) => l.payload(image, digest),
        }
    }
}
