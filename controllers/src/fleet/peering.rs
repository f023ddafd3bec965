//! The cross-cluster mesh in the operator (DESIGN §6, PeerRouteSync): what a cluster
//! reports of its own declarations, what the nearest common ancestor's cell decides, and
//! what each side writes from its routes.
//!
//! - A child's agent reads its cluster's workloads and namespaces, derives their
//!   declarations with the same projection the operator decides on
//!   ([`lattice_gates::peering::declarations`]), and reports them up the tunnel.
//! - A parent's cell pairs its own declarations with its children's
//!   ([`lattice_gates::peering::plan`]), on its own snapshot, and sends each child its
//!   routes; its own routes it writes itself.
//! - Each side writes the objects its routes derive ([`lattice_compiler::peering`]) by
//!   server-side apply, and deletes those no route derives any more, so withdrawing either
//!   side's declaration (or a policy that denied the edge) removes both sides' objects.

use std::collections::BTreeSet;

use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use lattice_compiler::peering::{Gateway, PEERING_MANAGER, routes_objects};
use lattice_engine::{Projection, World};
use lattice_gates::peering::{Declaration, Facts, Role, Route, Workload};
use lattice_proto::tunnel::v1 as pb;
use lattice_schemas::crd::Kind;
use lattice_schemas::manifest::Object;

use crate::lattice_api::lattice_resource;

/// How a cluster takes part in the cross-cluster mesh.
#[derive(Clone, Debug)]
pub struct MeshOptions {
    /// Where workloads in other clusters reach this one's (its east-west gateway,
    /// `host:port`). Without it this cluster reports no declarations.
    pub gateway_address: Option<String>,
    /// This cluster's workload trust domain (Istio's `trustDomain` here).
    pub trust_domain: String,
    /// Where the east-west gateway's pods run, which callee routes admit.
    pub gateway: Gateway,
}

/// The kinds route objects are, with their plurals.
const ROUTE_KINDS: [(&str, &str, &str, &str); 3] = [
    (
        "networking.istio.io",
        "v1",
        "ServiceEntry",
        "serviceentries",
    ),
    (
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    ),
    (
        "cilium.io",
        "v2",
        "CiliumNetworkPolicy",
        "ciliumnetworkpolicies",
    ),
];

fn route_resource(kind: &str) -> Option<ApiResource> {
    ROUTE_KINDS
        .iter()
        .find(|(_, _, k, _)| *k == kind)
        .map(|(group, version, kind, plural)| {
            ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk(group, version, kind),
                plural,
            )
        })
}

fn peer_ref(w: &Workload) -> pb::PeerRef {
    pb::PeerRef {
        cluster: w.cluster.clone(),
        namespace: w.namespace.clone(),
        name: w.name.clone(),
    }
}

fn workload(r: &pb::PeerRef) -> Workload {
    Workload::new(&r.cluster, &r.namespace, &r.name)
}

/// Declarations as the tunnel carries them.
pub fn to_report(declarations: &[Declaration]) -> pb::MeshReport {
    pb::MeshReport {
        declarations: declarations
            .iter()
            .map(|d| pb::PeerDeclaration {
                cluster: d.workload.cluster.clone(),
                namespace: d.workload.namespace.clone(),
                name: d.workload.name.clone(),
                spiffe_id: d.spiffe_id.clone(),
                ports: d.ports.clone(),
                address: d.address.clone(),
                outbound: d.outbound.iter().map(peer_ref).collect(),
                inbound: d.inbound.iter().map(peer_ref).collect(),
                facts: Some(pb::ServiceFacts {
                    kind: d.facts.kind.clone(),
                    replicas: d.facts.replicas,
                    pod_security: d.facts.pod_security.clone(),
                    ingress_tls: d.facts.ingress_tls,
                    uses_secret_provider: d.facts.uses_secret_provider,
                    literal_secrets: d.facts.literal_secrets,
                    secrets_in_env: d.facts.secrets_in_env,
                    strict_mtls: d.facts.strict_mtls,
                    labels: d.facts.labels.clone().into_iter().collect(),
                    namespace_default_deny: d.facts.namespace_default_deny,
                }),
            })
            .collect(),
    }
}

/// A report the cell accepted (see `lattice_tunnel::peering::check_report`), as
/// declarations.
pub fn from_report(report: &pb::MeshReport) -> Vec<Declaration> {
    report
        .declarations
        .iter()
        .map(|d| {
            let f = d.facts.clone().unwrap_or_default();
            Declaration {
                workload: Workload::new(&d.cluster, &d.namespace, &d.name),
                spiffe_id: d.spiffe_id.clone(),
                ports: d.ports.clone(),
                address: d.address.clone(),
                outbound: d.outbound.iter().map(workload).collect(),
                inbound: d.inbound.iter().map(workload).collect(),
                facts: Facts {
                    kind: f.kind,
                    replicas: f.replicas,
                    pod_security: f.pod_security,
                    ingress_tls: f.ingress_tls,
                    uses_secret_provider: f.uses_secret_provider,
                    literal_secrets: f.literal_secrets,
                    secrets_in_env: f.secrets_in_env,
                    strict_mtls: f.strict_mtls,
                    labels: f.labels.into_iter().collect(),
                    namespace_default_deny: f.namespace_default_deny,
                },
            }
        })
        .collect()
}

/// Routes as the tunnel carries them.
pub fn to_routes(routes: &[Route]) -> pb::MeshRoutes {
    pb::MeshRoutes {
        routes: routes
            .iter()
            .map(|r| pb::MeshRoute {
                cluster: r.side.cluster.clone(),
                namespace: r.side.namespace.clone(),
                name: r.side.name.clone(),
                role: match r.role {
                    Role::Caller => pb::mesh_route::Role::Caller,
                    Role::Callee => pb::mesh_route::Role::Callee,
                } as i32,
                peer: Some(peer_ref(&r.peer)),
                peer_spiffe_id: r.peer_spiffe_id.clone(),
                peer_address: r.peer_address.clone(),
                ports: r.ports.clone(),
            })
            .collect(),
    }
}

/// Routes an agent accepted (see `lattice_tunnel::peering::check_routes`).
pub fn from_routes(routes: &pb::MeshRoutes) -> Vec<Route> {
    routes
        .routes
        .iter()
        .filter_map(|r| {
            let role = match pb::mesh_route::Role::try_from(r.role).ok()? {
                pb::mesh_route::Role::Caller => Role::Caller,
                pb::mesh_route::Role::Callee => Role::Callee,
                pb::mesh_route::Role::Unspecified => return None,
            };
            Some(Route {
                side: Workload::new(&r.cluster, &r.namespace, &r.name),
                role,
                peer: workload(r.peer.as_ref()?),
                peer_spiffe_id: r.peer_spiffe_id.clone(),
                peer_address: r.peer_address.clone(),
                ports: r.ports.clone(),
            })
        })
        .collect()
}

/// This cluster's declarations from `world` (none without a gateway address).
pub fn own_declarations(world: &World, cluster: &str, options: &MeshOptions) -> Vec<Declaration> {
    let Some(address) = &options.gateway_address else {
        return Vec::new();
    };
    // Projecting the world costs a pass over every object's entities; most worlds declare
    // nothing across clusters, and a scan of the declarations tells.
    if !world
        .objects()
        .any(|(_, o)| !lattice_engine::project::remote_peers(o).is_empty())
    {
        return Vec::new();
    }
    lattice_gates::peering::declarations(
        world,
        &Projection::of(world),
        cluster,
        &options.trust_domain,
        address,
    )
}

/// The workloads, namespaces and clusters of this cluster, read from its API server: what
/// its declarations and their facts are derived from. An object that does not read as its
/// kind is left out (the webhook admits nothing such; the operator reports it).
pub async fn read_world(client: &Client) -> Result<World, String> {
    let mut objects = Vec::new();
    for kind in [
        Kind::LatticeService,
        Kind::LatticeJob,
        Kind::LatticeModel,
        Kind::LatticeCluster,
    ] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &lattice_resource(kind));
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list {}: {e}", kind.name()))?;
        for o in list.items {
            let value = serde_json::to_value(&o).map_err(|e| e.to_string())?;
            match Object::from_api(kind.name(), &value) {
                Ok(object) => objects.push(object),
                Err(e) => {
                    tracing::debug!(kind = kind.name(), error = %e, "left out of the mesh report")
                }
            }
        }
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for ns in namespaces
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("cannot list namespaces: {e}"))?
        .items
    {
        let value = serde_json::to_value(&ns).map_err(|e| e.to_string())?;
        if let Ok(object) = Object::from_api("Namespace", &value) {
            objects.push(object);
        }
    }
    Ok(World::from_objects(objects))
}

/// The label naming the cluster whose cell decided a route object: a cluster that is
/// both a child and a parent holds routes its parent decided (written by its agent) and
/// routes it decided itself (written by its cell), and each writer withdraws only its own.
pub const ROUTED_BY: &str = "lattice.dev/routed-by";

/// Makes this cluster's route objects decided by `routed_by`'s cell exactly what `routes`
/// derive: applies each, then deletes every such object no route derives. Returns how
/// many objects are wanted.
pub async fn write_routes(
    client: &Client,
    routed_by: &str,
    routes: &[Route],
    gateway: &Gateway,
) -> Result<usize, String> {
    let mut objects = routes_objects(routes, gateway);
    for o in &mut objects {
        o["metadata"]["labels"][ROUTED_BY] = routed_by.into();
    }
    let mut wanted: BTreeSet<(String, String, String)> = BTreeSet::new();
    for o in &objects {
        let kind = o["kind"].as_str().unwrap_or_default();
        let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let resource = route_resource(kind).ok_or_else(|| format!("{kind} is not a route kind"))?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
        api.patch(
            name,
            &PatchParams::apply(PEERING_MANAGER).force(),
            &Patch::Apply(o),
        )
        .await
        .map_err(|e| format!("cannot write {kind} {ns}/{name}: {e}"))?;
        wanted.insert((kind.to_owned(), ns.to_owned(), name.to_owned()));
    }
    let selector =
        format!("app.kubernetes.io/managed-by={PEERING_MANAGER},{ROUTED_BY}={routed_by}");
    for (_, _, kind, _) in ROUTE_KINDS {
        let Some(resource) = route_resource(kind) else {
            continue;
        };
        let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let present = match all.list(&ListParams::default().labels(&selector)).await {
            Ok(l) => l.items,
            // The kind is not installed here: nothing of it to withdraw.
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(format!("cannot list {kind}: {e}")),
        };
        for o in present {
            let ns = o.metadata.namespace.clone().unwrap_or_default();
            let name = o.metadata.name.clone().unwrap_or_default();
            if wanted.contains(&(kind.to_owned(), ns.clone(), name.clone())) {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
            super::absent_ok(api.delete(&name, &DeleteParams::default()).await)
                .map_err(|e| format!("cannot delete {kind} {ns}/{name}: {e}"))?;
            tracing::info!(kind, namespace = %ns, %name, "cross-cluster route withdrawn");
        }
    }
    Ok(wanted.len())
}

/// Why each denied or unmatched edge is not routed, for the log.
pub fn unrouted(plan: &lattice_gates::peering::PeeringPlan) -> Vec<(String, String, String)> {
    plan.edges
        .values()
        .filter_map(|e| {
            e.reason()
                .map(|why| (e.caller.to_string(), e.callee.to_string(), why))
        })
        .collect()
}

/// The ConfigMap (in the operator's namespace) through which a cluster that is both a child
/// and a parent relays the mesh between its cell and its agent, two processes:
/// [`RELAY_UP`] holds the declarations reported from below whose edges reach above this
/// cluster (written by the cell, sent up by the agent), [`RELAY_DOWN`] the routes the
/// parent decided for clusters below (written by the agent, sent down by the cell). Each is
/// a protobuf message, as the tunnel carries it, and each has one writer.
pub const RELAY: &str = "lattice-mesh-relay";
/// A `MeshReport`.
pub const RELAY_UP: &str = "up";
/// A `MeshRoutes`.
pub const RELAY_DOWN: &str = "down";

/// One key of the relay ConfigMap; `None` when it or the key is not there.
pub async fn read_relay(
    client: &Client,
    namespace: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, String> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), namespace);
    let cm = api
        .get_opt(RELAY)
        .await
        .map_err(|e| format!("cannot read ConfigMap {namespace}/{RELAY}: {e}"))?;
    Ok(cm
        .and_then(|c| c.binary_data)
        .and_then(|mut d| d.remove(key))
        .map(|b| b.0))
}

/// Writes one key of the relay ConfigMap, as `manager` (the other key is the other
/// writer's).
pub async fn write_relay(
    client: &Client,
    namespace: &str,
    key: &str,
    bytes: Vec<u8>,
    manager: &str,
) -> Result<(), String> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), namespace);
    let cm = k8s_openapi::api::core::v1::ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(RELAY.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        binary_data: Some(
            [(key.to_owned(), k8s_openapi::ByteString(bytes))]
                .into_iter()
                .collect(),
        ),
        ..Default::default()
    };
    let value = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": cm.metadata, "binaryData": cm.binary_data,
    });
    api.patch(
        RELAY,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&value),
    )
    .await
    .map_err(|e| format!("cannot write ConfigMap {namespace}/{RELAY}: {e}"))?;
    Ok(())
}

/// The declarations of `declarations` from below `own` whose edges an ancestor decides
/// (a side outside this cluster's subtree): what this cluster relays up.
pub fn relayed_up(
    own: &str,
    plan: &lattice_gates::peering::PeeringPlan,
    declarations: &[Declaration],
) -> Vec<Declaration> {
    let above: BTreeSet<&Workload> = plan
        .edges
        .values()
        .filter(|e| matches!(e.state, lattice_gates::peering::EdgeState::Above))
        .flat_map(|e| [&e.caller, &e.callee])
        .collect();
    declarations
        .iter()
        .filter(|d| d.workload.cluster != own && above.contains(&d.workload))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_and_routes_cross_the_tunnel_unchanged_and_as_the_cell_accepts_them() {
        let d = Declaration {
            workload: Workload::new("edge", "shop", "frontend"),
            spiffe_id: "spiffe://edge.lattice.test/ns/shop/sa/frontend".into(),
            ports: vec![8080],
            address: "10.0.0.2:15443".into(),
            outbound: [Workload::new("root", "payments", "api")].into(),
            inbound: BTreeSet::new(),
            facts: Facts {
                kind: "service".into(),
                replicas: 3,
                pod_security: "baseline".into(),
                labels: [("team".to_owned(), "shop".to_owned())].into(),
                ..Facts::default()
            },
        };
        let report = to_report(std::slice::from_ref(&d));
        lattice_tunnel::peering::check_report("edge", &Default::default(), &report).unwrap();
        assert_eq!(from_report(&report), vec![d]);
        let route = Route {
            side: Workload::new("edge", "shop", "frontend"),
            role: Role::Caller,
            peer: Workload::new("root", "payments", "api"),
            peer_spiffe_id: "spiffe://root.lattice.test/ns/payments/sa/api".into(),
            peer_address: "10.0.0.1:15443".into(),
            ports: vec![8080],
        };
        let routes = to_routes(std::slice::from_ref(&route));
        lattice_tunnel::peering::check_routes("edge", &Default::default(), &routes).unwrap();
        assert_eq!(from_routes(&routes), vec![route]);
    }
}
