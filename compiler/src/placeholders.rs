//! Resolving Score placeholders for one workload.

use std::collections::BTreeMap;

use lattice_schemas::crd::workload::Resource;
use lattice_schemas::placeholder::{self, Segment};
use serde_json::Value;

/// Facts placeholders resolve against.
pub struct Scope<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub annotations: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    pub resources: &'a BTreeMap<String, Resource>,
    /// `namespace/name` → ports, for service outputs.
    pub peer_ports: &'a BTreeMap<String, Vec<i64>>,
    pub cluster: &'a str,
    pub environment: &'a str,
    /// The world's ImageProviders by name, for pull secrets that name one.
    pub image_providers:
        &'a BTreeMap<String, lattice_schemas::crd::image_provider::ImageProviderSpec>,
    /// Normalized image reference → resolved digest, for pinning the pod's images.
    pub digests: &'a BTreeMap<String, String>,
}

/// A value after resolution: text, or a reference to one secret key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// `${resources.NAME.KEY}` of a secret resource.
    Secret {
        resource: String,
        key: String,
    },
}

/// A placeholder that cannot be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("placeholder `{placeholder}`: {reason}")]
pub struct PlaceholderError {
    pub placeholder: String,
    pub reason: String,
}

impl Scope<'_> {
    /// Resolves `text` into pieces (adjacent text merged).
    pub fn resolve(&self, text: &str) -> Result<Vec<Piece>, PlaceholderError> {
        let segments = placeholder::parse(text).map_err(|e| PlaceholderError {
            placeholder: text.to_owned(),
            reason: e.message,
        })?;
        let mut out: Vec<Piece> = Vec::new();
        for seg in segments {
            let piece = match seg {
                Segment::Text(t) => Piece::Text(t),
                Segment::Ref { path, .. } => self.reference(&path)?,
            };
            match (out.last_mut(), piece) {
                (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
                (_, p) => out.push(p),
            }
        }
        Ok(out)
    }

    /// Resolves `text` that may not hold secrets.
    pub fn resolve_text(&self, text: &str) -> Result<String, PlaceholderError> {
        let mut s = String::new();
        for p in self.resolve(text)? {
            match p {
                Piece::Text(t) => s.push_str(&t),
                Piece::Secret { resource, key } => {
                    return Err(PlaceholderError {
                        placeholder: format!("${{resources.{resource}.{key}}}"),
                        reason: "a secret cannot be written here yet (files holding secrets are not derived yet); pass it as a variable".into(),
                    });
                }
            }
        }
        Ok(s)
    }

    fn reference(&self, path: &[String]) -> Result<Piece, PlaceholderError> {
        let shown = format!("${{{}}}", path.join("."));
        let err = |reason: &str| PlaceholderError {
            placeholder: shown.clone(),
            reason: reason.to_owned(),
        };
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = |s: &str| Ok(Piece::Text(s.to_owned()));
        match p.as_slice() {
            ["metadata", "name"] => text(self.name),
            ["metadata", "namespace"] => text(self.namespace),
            ["metadata", "annotations", k] => self
                .annotations
                .get(*k)
                .map(|v| Piece::Text(v.clone()))
                .ok_or_else(|| err("no such annotation")),
            ["metadata", "labels", k] => self
                .labels
                .get(*k)
                .map(|v| Piece::Text(v.clone()))
                .ok_or_else(|| err("no such label")),
            ["cluster", "name"] => text(self.cluster),
            ["cluster", "environment"] => text(self.environment),
            ["resources", name, rest @ ..] => {
                let r = self
                    .resources
                    .get(*name)
                    .ok_or_else(|| err("names a resource that is not declared"))?;
                let param = |k: &str| r.params.as_ref().and_then(|m| m.get(k));
                match (r.type_.as_str(), rest) {
                    ("secret", [key]) => Ok(Piece::Secret {
                        resource: (*name).to_owned(),
                        key: (*key).to_owned(),
                    }),
                    ("service", [out]) => {
                        let ns = r.namespace.as_deref().unwrap_or(self.namespace);
                        // A service in another cluster is reached by the name its route's
                        // ServiceEntry carries; its ports are known there, so the
                        // declaration says which one it calls (`params.port`).
                        let (host, port) = match &r.cluster {
                            Some(cluster) => (
                                lattice_schemas::crd::workload::remote_host(name, ns, cluster),
                                param("port").and_then(Value::as_i64),
                            ),
                            None => (
                                format!("{name}.{ns}.svc.cluster.local"),
                                self.peer_ports
                                    .get(&format!("{ns}/{name}"))
                                    .and_then(|p| p.first())
                                    .copied(),
                            ),
                        };
                        let no_port = || {
                            err(if r.cluster.is_some() {
                                "the service is in another cluster: name the port it calls in `params.port`"
                            } else {
                                "the service serves no port"
                            })
                        };
                        match *out {
                            "host" => Ok(Piece::Text(host)),
                            "name" => text(name),
                            "namespace" => text(ns),
                            "port" => port.map(|p| Piece::Text(p.to_string())).ok_or_else(no_port),
                            "url" => port
                                .map(|p| Piece::Text(format!("http://{host}:{p}")))
                                .ok_or_else(no_port),
                            _ => Err(err("a service offers host, port, url, name and namespace")),
                        }
                    }
                    ("external-service", [out]) => {
                        let host = param("host")
                            .and_then(Value::as_str)
                            .ok_or_else(|| err("the external service has no host"))?;
                        let port = param("port").and_then(Value::as_i64).unwrap_or(443);
                        match *out {
                            "host" => text(host),
                            "port" => Ok(Piece::Text(port.to_string())),
                            "url" => Ok(Piece::Text(if port == 443 {
                                format!("https://{host}")
                            } else {
                                format!("https://{host}:{port}")
                            })),
                            _ => Err(err("an external service offers host, port and url")),
                        }
                    }
                    ("gpu", [out @ ("count" | "memory" | "model")]) => {
                        let v = param(out).map(|v| {
                            v.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| v.to_string())
                        });
                        Ok(Piece::Text(v.unwrap_or_else(|| {
                            if *out == "count" {
                                "1".into()
                            } else {
                                String::new()
                            }
                        })))
                    }
                    _ => Err(err("this resource does not provide that output")),
                }
            }
            _ => Err(err("unknown placeholder")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_in_another_cluster_resolves_to_its_route_name_and_declared_port() {
        let resources: BTreeMap<String, Resource> = serde_json::from_value(serde_json::json!({
            "ledger": {"type": "service", "namespace": "payments", "cluster": "prod", "params": {"port": 8443}},
            "audit": {"type": "service", "cluster": "prod"},
        }))
        .unwrap();
        let empty = BTreeMap::new();
        let providers = BTreeMap::new();
        // A local peer of the same name serves another port: the remote one is not it.
        let peer_ports: BTreeMap<String, Vec<i64>> =
            [("payments/ledger".to_owned(), vec![1])].into();
        let scope = Scope {
            name: "api",
            namespace: "shop",
            annotations: &empty,
            labels: &empty,
            resources: &resources,
            peer_ports: &peer_ports,
            cluster: "edge",
            environment: "",
            image_providers: &providers,
            digests: &empty,
        };
        assert_eq!(
            scope.resolve_text("${resources.ledger.url}").unwrap(),
            "http://ledger.payments.prod.lattice.internal:8443"
        );
        assert_eq!(
            scope.resolve_text("${resources.audit.host}").unwrap(),
            "audit.shop.prod.lattice.internal"
        );
        let e = scope.resolve_text("${resources.audit.port}").unwrap_err();
        assert!(e.reason.contains("params.port"), "{e}");
    }
}
