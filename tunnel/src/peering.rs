//! The cross-cluster mesh's messages and their rules, with no I/O: an agent's
//! [`pb::MeshReport`] (the workloads of its cluster that declare services in other clusters)
//! as the cell checks it, and the [`pb::MeshRoutes`] a cell sends down as the agent checks
//! them. A report may speak only for the reporting cluster and the clusters it reported
//! below itself (whose declarations it relays up from its own cell), so cluster A's
//! certificate can never declare (or open) an edge for a workload in a cluster outside A's
//! subtree; routes likewise reach an agent only for its own subtree.

use std::collections::HashSet;

use lattice_proto::tunnel::v1 as pb;

use crate::identity::{dns_name, is_cluster_name};
use crate::violation::{ProtocolError, Violation};

/// The most workloads one report may declare.
pub const MAX_DECLARATIONS: usize = 10_000;
/// The most peers one workload may declare, each way.
pub const MAX_PEERS: usize = 256;
/// The most ports one workload may serve.
pub const MAX_PORTS: usize = 64;
/// The most labels one workload's facts may carry.
pub const MAX_LABELS: usize = 64;
/// The most routes one message may carry.
pub const MAX_ROUTES: usize = 2 * MAX_DECLARATIONS;

/// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`: a workload's identity.
pub fn workload_spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// The namespace a workload SPIFFE id names, if it is one: a DNS trust domain and DNS
/// names for the namespace and service account, nothing else.
pub fn spiffe_namespace(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let (domain, path) = rest.split_once('/')?;
    let mut parts = path.split('/');
    let (Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    (dns_name(domain) && is_label(ns) && dns_name(sa)).then_some(ns)
}

/// A DNS-1123 label: a Kubernetes namespace or workload name.
fn is_label(s: &str) -> bool {
    is_cluster_name(s)
}

/// `host:port` where host is a DNS name or an IP address (IPv6 in brackets) and port is
/// 1–65535.
pub fn is_address(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.parse::<std::net::Ipv4Addr>().is_ok() || dns_name(host),
    };
    port_ok && host_ok
}

const KINDS: [&str; 5] = ["service", "job", "model", "package", "meshmember"];
const POD_SECURITY: [&str; 3] = ["privileged", "baseline", "restricted"];

fn invalid(message: String) -> ProtocolError {
    ProtocolError {
        violation: Violation::InvalidArgument,
        message,
    }
}

fn check_ref(at: &str, r: &pb::PeerRef, own: &str) -> Result<(), ProtocolError> {
    if !is_cluster_name(&r.cluster) || !is_label(&r.namespace) || !is_label(&r.name) {
        return Err(invalid(format!(
            "{at}: peer {:?}/{:?}/{:?} is not a cluster, namespace and name",
            r.cluster, r.namespace, r.name
        )));
    }
    if r.cluster == own {
        return Err(invalid(format!(
            "{at}: peer {}/{} is in the declaring cluster itself",
            r.namespace, r.name
        )));
    }
    Ok(())
}

fn check_ports(at: &str, ports: &[u32]) -> Result<(), ProtocolError> {
    if ports.len() > MAX_PORTS || ports.iter().any(|p| *p == 0 || *p > 65_535) {
        return Err(invalid(format!(
            "{at}: ports must be at most {MAX_PORTS} numbers in 1-65535"
        )));
    }
    Ok(())
}

fn printable(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(char::is_control)
}

/// Checks a report from `reporter`'s agent: every declaration is for `reporter` or a cluster
/// in `below` (what it last reported below itself; PERMISSION_DENIED otherwise), names
/// workloads and peers by valid names, once each, with a workload SPIFFE id in its own
/// namespace, an address, and facts within bounds.
pub fn check_report(
    reporter: &str,
    below: &HashSet<String>,
    report: &pb::MeshReport,
) -> Result<(), ProtocolError> {
    if report.declarations.len() > MAX_DECLARATIONS {
        return Err(invalid(format!(
            "{} declarations are more than the {MAX_DECLARATIONS} one report may carry",
            report.declarations.len()
        )));
    }
    let mut seen = HashSet::with_capacity(report.declarations.len());
    for d in &report.declarations {
        if d.cluster != reporter && !below.contains(&d.cluster) {
            return Err(ProtocolError {
                violation: Violation::PermissionDenied,
                message: format!(
                    "a declaration for cluster {:?} from cluster {reporter:?}: an agent declares only the workloads of its own cluster and the clusters it reported below it",
                    d.cluster
                ),
            });
        }
        let at = format!("declaration {:?}/{:?}/{:?}", d.cluster, d.namespace, d.name);
        if !is_label(&d.namespace) || !is_label(&d.name) {
            return Err(invalid(format!("{at}: not a namespace and workload name")));
        }
        if !seen.insert((d.cluster.as_str(), d.namespace.as_str(), d.name.as_str())) {
            return Err(invalid(format!("{at}: declared twice")));
        }
        if d.spiffe_id.len() > 2048 || spiffe_namespace(&d.spiffe_id) != Some(d.namespace.as_str())
        {
            return Err(invalid(format!(
                "{at}: {:?} is not a workload SPIFFE id in namespace {:?}",
                d.spiffe_id, d.namespace
            )));
        }
        if !is_address(&d.address) {
            return Err(invalid(format!(
                "{at}: address {:?} is not host:port",
                d.address
            )));
        }
        check_ports(&at, &d.ports)?;
        if d.outbound.len() > MAX_PEERS || d.inbound.len() > MAX_PEERS {
            return Err(invalid(format!(
                "{at}: more than {MAX_PEERS} peers one way"
            )));
        }
        if d.outbound.is_empty() && d.inbound.is_empty() {
            return Err(invalid(format!("{at}: declares no peer")));
        }
        for r in d.outbound.iter().chain(&d.inbound) {
            check_ref(&at, r, &d.cluster)?;
        }
        let facts = d
            .facts
            .as_ref()
            .ok_or_else(|| invalid(format!("{at}: facts are missing")))?;
        if !KINDS.contains(&facts.kind.as_str())
            || !POD_SECURITY.contains(&facts.pod_security.as_str())
            || !(0..=1_000_000).contains(&facts.replicas)
        {
            return Err(invalid(format!(
                "{at}: kind {:?}, pod security {:?} or replicas {} cannot be true",
                facts.kind, facts.pod_security, facts.replicas
            )));
        }
        if facts.labels.len() > MAX_LABELS
            || facts
                .labels
                .iter()
                .any(|(k, v)| k.is_empty() || !printable(k, 317) || !printable(v, 63))
        {
            return Err(invalid(format!(
                "{at}: at most {MAX_LABELS} labels, of Kubernetes label sizes"
            )));
        }
    }
    Ok(())
}

/// Checks routes a cell sent to `own`'s agent: each is for `own` or a cluster in `below`
/// (the agent relays those down), names a caller or callee side, a peer in another
/// cluster, the peer's workload SPIFFE id, and (for a caller) the address it is reached at.
pub fn check_routes(
    own: &str,
    below: &HashSet<String>,
    routes: &pb::MeshRoutes,
) -> Result<(), ProtocolError> {
    if routes.routes.len() > MAX_ROUTES {
        return Err(invalid(format!(
            "{} routes are more than the {MAX_ROUTES} one message may carry",
            routes.routes.len()
        )));
    }
    for r in &routes.routes {
        let at = format!("route {:?}/{:?}", r.namespace, r.name);
        if r.cluster != own && !below.contains(&r.cluster) {
            return Err(ProtocolError {
                violation: Violation::PermissionDenied,
                message: format!(
                    "{at} is for cluster {:?}, which is neither {own:?} nor below it",
                    r.cluster
                ),
            });
        }
        if !is_label(&r.namespace) || !is_label(&r.name) {
            return Err(invalid(format!("{at}: not a namespace and workload name")));
        }
        let peer = r
            .peer
            .as_ref()
            .ok_or_else(|| invalid(format!("{at}: no peer")))?;
        check_ref(&at, peer, &r.cluster)?;
        if spiffe_namespace(&r.peer_spiffe_id) != Some(peer.namespace.as_str()) {
            return Err(invalid(format!(
                "{at}: {:?} is not a workload SPIFFE id in the peer's namespace",
                r.peer_spiffe_id
            )));
        }
        check_ports(&at, &r.ports)?;
        if r.ports.is_empty() {
            return Err(invalid(format!("{at}: opens no port")));
        }
        match pb::mesh_route::Role::try_from(r.role) {
            Ok(pb::mesh_route::Role::Caller) if is_address(&r.peer_address) => {}
            Ok(pb::mesh_route::Role::Caller) => {
                return Err(invalid(format!(
                    "{at}: a caller's route needs the peer's address as host:port"
                )));
            }
            Ok(pb::mesh_route::Role::Callee) => {}
            _ => {
                return Err(invalid(format!(
                    "{at}: the role is neither caller nor callee"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declaration(cluster: &str) -> pb::PeerDeclaration {
        pb::PeerDeclaration {
            cluster: cluster.into(),
            namespace: "shop".into(),
            name: "frontend".into(),
            spiffe_id: "spiffe://edge.lattice.test/ns/shop/sa/frontend".into(),
            ports: vec![8080],
            address: "10.0.0.7:15443".into(),
            outbound: vec![pb::PeerRef {
                cluster: "root".into(),
                namespace: "payments".into(),
                name: "api".into(),
            }],
            inbound: vec![],
            facts: Some(pb::ServiceFacts {
                kind: "service".into(),
                replicas: 2,
                pod_security: "restricted".into(),
                ..Default::default()
            }),
        }
    }

    fn report(d: Vec<pb::PeerDeclaration>) -> pb::MeshReport {
        pb::MeshReport { declarations: d }
    }

    fn none() -> HashSet<String> {
        HashSet::new()
    }

    #[test]
    fn an_agent_speaks_only_for_its_own_subtree() {
        assert!(check_report("edge", &none(), &report(vec![declaration("edge")])).is_ok());
        let e = check_report("edge", &none(), &report(vec![declaration("other")])).unwrap_err();
        assert_eq!(e.violation, Violation::PermissionDenied);
        // A cluster it reported below itself: relayed from its own cell.
        let below: HashSet<String> = ["leaf".to_owned()].into();
        assert!(check_report("edge", &below, &report(vec![declaration("leaf")])).is_ok());
    }

    #[test]
    fn malformed_declarations_are_refused_with_what_is_wrong() {
        type Mutation = Box<dyn Fn(&mut pb::PeerDeclaration)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "SPIFFE",
                Box::new(|d| d.spiffe_id = "spiffe://x/ns/other/sa/a".into()),
            ),
            (
                "SPIFFE",
                Box::new(|d| d.spiffe_id = "https://x/ns/shop/sa/a".into()),
            ),
            ("host:port", Box::new(|d| d.address = "10.0.0.7".into())),
            ("host:port", Box::new(|d| d.address = "a b:1".into())),
            ("ports", Box::new(|d| d.ports = vec![0])),
            (
                "declaring cluster itself",
                Box::new(|d| d.outbound[0].cluster = "edge".into()),
            ),
            ("no peer", Box::new(|d| d.outbound.clear())),
            ("facts", Box::new(|d| d.facts = None)),
            (
                "cannot be true",
                Box::new(|d| d.facts.as_mut().unwrap().pod_security = "lax".into()),
            ),
            ("not a namespace", Box::new(|d| d.namespace = "Shop".into())),
        ];
        for (expected, mutate) in cases {
            let mut d = declaration("edge");
            mutate(&mut d);
            let e = check_report("edge", &none(), &report(vec![d])).unwrap_err();
            assert_eq!(e.violation, Violation::InvalidArgument);
            assert!(e.message.contains(expected), "{expected}: {}", e.message);
        }
        let twice = report(vec![declaration("edge"), declaration("edge")]);
        assert!(
            check_report("edge", &none(), &twice)
                .unwrap_err()
                .message
                .contains("twice")
        );
    }

    #[test]
    fn routes_are_for_the_subtree_of_the_agent_that_receives_them() {
        let route = pb::MeshRoute {
            cluster: "edge".into(),
            namespace: "shop".into(),
            name: "frontend".into(),
            role: pb::mesh_route::Role::Caller as i32,
            peer: Some(pb::PeerRef {
                cluster: "root".into(),
                namespace: "payments".into(),
                name: "api".into(),
            }),
            peer_spiffe_id: "spiffe://root.lattice.test/ns/payments/sa/api".into(),
            peer_address: "gateway.root.example.com:15443".into(),
            ports: vec![8080],
        };
        let ok = pb::MeshRoutes {
            routes: vec![route.clone()],
        };
        assert!(check_routes("edge", &none(), &ok).is_ok());
        assert_eq!(
            check_routes("leaf", &none(), &ok).unwrap_err().violation,
            Violation::PermissionDenied
        );
        let mut no_address = route.clone();
        no_address.peer_address.clear();
        assert!(
            check_routes(
                "edge",
                &none(),
                &pb::MeshRoutes {
                    routes: vec![no_address]
                }
            )
            .is_err()
        );
        // Routes for a cluster below are taken (the agent relays them down).
        let mut for_leaf = route.clone();
        for_leaf.cluster = "leaf".into();
        let below: HashSet<String> = ["leaf".to_owned()].into();
        let relayed = pb::MeshRoutes {
            routes: vec![for_leaf],
        };
        assert!(check_routes("edge", &below, &relayed).is_ok());
        assert!(check_routes("edge", &none(), &relayed).is_err());
        let mut no_role = route;
        no_role.role = 0;
        assert!(
            check_routes(
                "edge",
                &none(),
                &pb::MeshRoutes {
                    routes: vec![no_role]
                }
            )
            .is_err()
        );
    }

    #[test]
    fn addresses_are_host_and_port() {
        for ok in [
            "10.0.0.1:15443",
            "[::1]:15443",
            "eastwest.edge.example.com:443",
        ] {
            assert!(is_address(ok), "{ok}");
        }
        for bad in [
            "10.0.0.1",
            ":15443",
            "host:0",
            "host:99999",
            "[::1:1",
            "HOST:1",
        ] {
            assert!(!is_address(bad), "{bad}");
        }
    }
}
