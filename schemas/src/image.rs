//! Image references, normalized the way container runtimes (containerd, Docker) read them:
//! `nginx` is `docker.io/library/nginx:latest`.

use std::fmt;

/// The default registry of unqualified references.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    /// Empty when the reference has only a digest.
    pub tag: String,
    /// `algorithm:hex`, or empty.
    pub digest: String,
}

/// Why a reference cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference `{reference}`: {reason}")]
pub struct ImageRefError {
    pub reference: String,
    pub reason: &'static str,
}

impl ImageRef {
    /// Parses and normalizes a reference.
    pub fn parse(reference: &str) -> Result<ImageRef, ImageRefError> {
        let err = |reason| ImageRefError {
            reference: reference.to_owned(),
            reason,
        };
        if reference.is_empty()
            || reference.len() > 4096
            || reference
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(err("empty, too long, or contains whitespace"));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((r, d)) => {
                let (alg, hex) = d
                    .split_once(':')
                    .ok_or_else(|| err("a digest is `algorithm:hex`"))?;
                if alg.is_empty() || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(err(
                        "a digest is `algorithm:hex` with at least 32 hex digits",
                    ));
                }
                (r, d.to_ascii_lowercase())
            }
            None => (reference, String::new()),
        };
        // A tag follows the last `:` after the last `/` (a `:` before it is a registry port).
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], &rest[last_slash + i + 1..]),
            None => (rest, ""),
        };
        if !tag.is_empty()
            && (tag.len() > 128
                || !tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
        {
            return Err(err("a tag is up to 128 letters, digits, `_`, `.` and `-`"));
        }
        if rest.ends_with(':') {
            return Err(err("empty tag"));
        }
        let (registry, repository) = match name.split_once('/') {
            // The first component is a registry when it looks like a host.
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_ascii_lowercase(), path.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY.to_owned()
        } else {
            registry
        };
        let (host, port) = registry.split_once(':').unwrap_or((&registry, ""));
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        if !host_ok
            || (registry.contains(':')
                && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit())))
        {
            return Err(err(
                "a registry is a host name with an optional numeric port",
            ));
        }
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        };
        if !repository.split('/').all(component_ok) {
            return Err(err(
                "repository path components are lowercase letters, digits and separators",
            ));
        }
        let tag = if tag.is_empty() && digest.is_empty() {
            "latest".to_owned()
        } else {
            tag.to_owned()
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for ImageRef {
    /// The canonical reference, which is also the `Image` entity's uid.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if !self.tag.is_empty() {
            write!(f, ":{}", self.tag)?;
        }
        if !self.digest.is_empty() {
            write!(f, "@{}", self.digest)?;
        }
        Ok(())
    }
}

/// What verifying an image at its registry established: the fact `DeployImage` decides on.
///
/// Produced by `lattice-supply` (which talks to registries); read by the projection. It says
/// only what was checked: a signature counts when it verified under a trusted key *and* its
/// payload names exactly `digest`. Anything that went wrong is in `error`, and then
/// `signers` is empty: an unreachable registry never reads as "signed".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Verification {
    /// The digest the reference resolved to at the registry (`sha256:…`), or empty when it
    /// could not be resolved.
    pub digest: String,
    /// Names of the trusted keys (as the TrustPolicy names them) whose signatures verified.
    pub signers: std::collections::BTreeSet<String>,
    /// Why verification did not complete (registry unreachable, no signature, a signature
    /// naming another digest, …), or empty. Policies may read it.
    pub error: String,
}

impl Verification {
    /// A verification that failed for `reason`: unsigned, with the reason kept.
    pub fn failed(digest: impl Into<String>, reason: impl Into<String>) -> Verification {
        Verification {
            digest: digest.into(),
            signers: Default::default(),
            error: reason.into(),
        }
    }

    /// Whether a trusted key's signature verified.
    pub fn signed(&self) -> bool {
        !self.signers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalizes_like_container_runtimes() {
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("nginx:1.27"), "docker.io/library/nginx:1.27");
        assert_eq!(norm("myorg/api:v2.1.0"), "docker.io/myorg/api:v2.1.0");
        assert_eq!(
            norm("index.docker.io/library/redis"),
            "docker.io/library/redis:latest"
        );
        assert_eq!(norm("ghcr.io/org/app"), "ghcr.io/org/app:latest");
        assert_eq!(norm("localhost:5000/app:dev"), "localhost:5000/app:dev");
        assert_eq!(
            norm("registry.example.com:443/team/app:1"),
            "registry.example.com:443/team/app:1"
        );
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            norm(&format!("ghcr.io/org/app@{d}")),
            format!("ghcr.io/org/app@{d}")
        );
        assert_eq!(
            norm(&format!("app:1.0@{d}")),
            format!("docker.io/library/app:1.0@{d}")
        );
        let r = ImageRef::parse(&format!("ghcr.io/org/app@{d}")).unwrap();
        assert_eq!(
            (r.tag.as_str(), r.registry.as_str(), r.repository.as_str()),
            ("", "ghcr.io", "org/app")
        );
    }

    #[test]
    fn rejects_what_runtimes_reject() {
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx@sha256:zz",
            "a b",
            "ghcr.io/org/App:1",
            "nginx:bad/tag",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent(s in "[a-z0-9./:@-]{1,40}") {
            if let Ok(r) = ImageRef::parse(&s) {
                prop_assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
            }
        }
    }
}
