//! What the hierarchy keeps in Secrets, and how it reads them back. Every reader refuses a
//! Secret that is incomplete or malformed, with the key at fault; none of these values is
//! ever logged.
//!
//! - `lattice-cell-ca` (parent): the cluster CA's certificate and key, its trust domain and
//!   revocation list.
//! - `lattice-bootstrap-<child>` (parent): what a child needs to join, until its agent has
//!   used the token: the cell's endpoint and name, the CA, the token and its expiry. The
//!   installer copies it to the child as `lattice-bootstrap`.
//! - `lattice-agent-credentials` (child): the agent's key (generated there, never sent),
//!   certificate and CA.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use lattice_tunnel::Revocations;
use lattice_tunnel::agent::Credentials;

/// The parent's CA Secret.
pub const CA_SECRET: &str = "lattice-cell-ca";
/// The bootstrap Secret's name on the child.
pub const CHILD_BOOTSTRAP_SECRET: &str = "lattice-bootstrap";
/// The agent's credentials on the child.
pub const AGENT_SECRET: &str = "lattice-agent-credentials";
/// The label that marks a parent's bootstrap Secret, valued with the child's name.
pub const BOOTSTRAP_FOR: &str = "lattice.dev/bootstrap-for";

/// The bootstrap Secret for `child` on the parent.
pub fn bootstrap_secret_name(child: &str) -> String {
    format!("lattice-bootstrap-{child}")
}

fn get<'a>(secret: &'a Secret, key: &str) -> Result<&'a [u8], String> {
    let name = secret.metadata.name.as_deref().unwrap_or("<unnamed>");
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
        .ok_or_else(|| format!("Secret {name} has no `{key}`"))
}

fn text<'a>(secret: &'a Secret, key: &str) -> Result<&'a str, String> {
    let name = secret.metadata.name.as_deref().unwrap_or("<unnamed>");
    std::str::from_utf8(get(secret, key)?)
        .map_err(|_| format!("Secret {name}: `{key}` is not UTF-8"))
}

fn time(secret: &Secret, key: &str) -> Result<jiff::Timestamp, String> {
    let name = secret.metadata.name.as_deref().unwrap_or("<unnamed>");
    text(secret, key)?
        .parse()
        .map_err(|e| format!("Secret {name}: `{key}` is not a time: {e}"))
}

fn secret(name: &str, namespace: &str, data: Vec<(&str, Vec<u8>)>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "lattice".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v)))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// The cluster CA as kept in `lattice-cell-ca`.
pub struct StoredCa {
    pub trust_domain: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub revocations: Revocations,
}

impl StoredCa {
    pub fn to_secret(&self, namespace: &str) -> Secret {
        secret(
            CA_SECRET,
            namespace,
            vec![
                ("trustDomain", self.trust_domain.clone().into_bytes()),
                ("ca.crt", self.cert_pem.clone().into_bytes()),
                ("ca.key", self.key_pem.clone().into_bytes()),
                ("revoked", self.revocations.to_text().into_bytes()),
            ],
        )
    }

    pub fn from_secret(secret: &Secret) -> Result<StoredCa, String> {
        Ok(StoredCa {
            trust_domain: text(secret, "trustDomain")?.to_owned(),
            cert_pem: text(secret, "ca.crt")?.to_owned(),
            key_pem: text(secret, "ca.key")?.to_owned(),
            revocations: Revocations::parse(text(secret, "revoked").unwrap_or(""))
                .map_err(|e| format!("Secret {CA_SECRET}: {e}"))?,
        })
    }
}

/// What a child needs to join its parent.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    pub cluster: String,
    pub parent: String,
    pub trust_domain: String,
    /// The cell's `host:port`.
    pub endpoint: String,
    /// The name the cell's certificate carries for that host.
    pub server_name: String,
    pub ca_pem: String,
    /// The one-time token; gone once the agent has used it.
    pub token: Option<String>,
    pub expires: jiff::Timestamp,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("cluster", &self.cluster)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// As a Secret called `name` (the parent's `lattice-bootstrap-<child>`, or the child's
    /// `lattice-bootstrap`).
    pub fn to_secret(&self, name: &str, namespace: &str) -> Secret {
        let mut data = vec![
            ("cluster", self.cluster.clone().into_bytes()),
            ("parent", self.parent.clone().into_bytes()),
            ("trustDomain", self.trust_domain.clone().into_bytes()),
            ("endpoint", self.endpoint.clone().into_bytes()),
            ("serverName", self.server_name.clone().into_bytes()),
            ("ca.crt", self.ca_pem.clone().into_bytes()),
            ("expires", self.expires.to_string().into_bytes()),
        ];
        if let Some(token) = &self.token {
            data.push(("token", token.clone().into_bytes()));
        }
        let mut s = secret(name, namespace, data);
        s.metadata
            .labels
            .get_or_insert_default()
            .insert(BOOTSTRAP_FOR.to_owned(), self.cluster.clone());
        s
    }

    pub fn from_secret(secret: &Secret) -> Result<Bundle, String> {
        Ok(Bundle {
            cluster: text(secret, "cluster")?.to_owned(),
            parent: text(secret, "parent")?.to_owned(),
            trust_domain: text(secret, "trustDomain")?.to_owned(),
            endpoint: text(secret, "endpoint")?.to_owned(),
            server_name: text(secret, "serverName")?.to_owned(),
            ca_pem: text(secret, "ca.crt")?.to_owned(),
            token: text(secret, "token").ok().map(str::to_owned),
            expires: time(secret, "expires")?,
        })
    }
}

/// The agent's credentials as kept in `lattice-agent-credentials`.
pub fn credentials_to_secret(creds: &Credentials, namespace: &str) -> Secret {
    secret(
        AGENT_SECRET,
        namespace,
        vec![
            ("tls.key.der", creds.key_der.clone()),
            ("tls.crt", creds.cert_pem.clone().into_bytes()),
            ("ca.crt", creds.ca_pem.clone().into_bytes()),
            ("notAfter", creds.not_after.to_string().into_bytes()),
            ("renewAt", creds.renew_at.to_string().into_bytes()),
        ],
    )
}

pub fn credentials_from_secret(secret: &Secret) -> Result<Credentials, String> {
    Ok(Credentials {
        key_der: get(secret, "tls.key.der")?.to_vec(),
        cert_pem: text(secret, "tls.crt")?.to_owned(),
        ca_pem: text(secret, "ca.crt")?.to_owned(),
        not_after: time(secret, "notAfter")?,
        renew_at: time(secret, "renewAt")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_round_trips_and_an_incomplete_one_says_what_is_missing() {
        let bundle = Bundle {
            cluster: "edge".into(),
            parent: "root".into(),
            trust_domain: "lattice.test".into(),
            endpoint: "cell.example:50051".into(),
            server_name: "cell.example".into(),
            ca_pem: "PEM".into(),
            token: Some("secret-token".into()),
            expires: "2026-12-02T00:00:00Z".parse().unwrap(),
        };
        let s = bundle.to_secret("lattice-bootstrap-edge", "lattice-system");
        assert_eq!(
            s.metadata.labels.as_ref().unwrap().get(BOOTSTRAP_FOR),
            Some(&"edge".to_owned())
        );
        assert_eq!(Bundle::from_secret(&s).unwrap(), bundle);
        assert!(!format!("{bundle:?}").contains("secret-token"));

        let mut used = s.clone();
        used.data.as_mut().unwrap().remove("token");
        assert_eq!(Bundle::from_secret(&used).unwrap().token, None);
        let mut broken = s;
        broken.data.as_mut().unwrap().remove("endpoint");
        assert_eq!(
            Bundle::from_secret(&broken).unwrap_err(),
            "Secret lattice-bootstrap-edge has no `endpoint`"
        );
    }

    #[test]
    fn the_ca_round_trips_with_its_revocations() {
        let ca =
            lattice_tunnel::ClusterCa::generate("lattice.test", jiff::Timestamp::now()).unwrap();
        let mut revocations = Revocations::default();
        revocations
            .clusters
            .insert("gone".into(), "2026-12-01T00:00:00Z".parse().unwrap());
        let stored = StoredCa {
            trust_domain: "lattice.test".into(),
            cert_pem: ca.cert_pem(),
            key_pem: ca.key_pem().to_owned(),
            revocations: revocations.clone(),
        };
        let back = StoredCa::from_secret(&stored.to_secret("lattice-system")).unwrap();
        assert_eq!(back.revocations, revocations);
        assert_eq!(back.cert_pem, ca.cert_pem());
    }
}
