//! How the fleet CLI writes objects to a cluster: server-side apply under one field manager,
//! and the API resource of each kind it writes. Shared by `install` and the operator it
//! puts on a new root.

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use lattice_controllers::lattice_api::lattice_resource;
use lattice_schemas::crd::Kind;
use serde_json::Value;

/// The CustomResourceDefinition resource.
pub fn crd_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    )
}

/// Server-side applies each object (CRDs, Lattice kinds, namespaced or cluster-scoped
/// Kubernetes and Cluster API objects) as `manager`, taking its fields over.
pub async fn apply_all(client: &Client, objects: &[Value], manager: &str) -> Result<(), String> {
    let params = PatchParams::apply(manager).force();
    for object in objects {
        let ar = resource_of(object);
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        api.patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| format!("cannot apply {} {name}: {e}", ar.kind))?;
    }
    Ok(())
}

/// The API resource of an object the CLI writes.
pub fn resource_of(object: &Value) -> ApiResource {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    if kind == "CustomResourceDefinition" {
        return crd_resource();
    }
    if api_version == lattice_schemas::crd::API_VERSION
        && let Some(k) = Kind::ALL.iter().find(|k| k.name() == kind)
    {
        return lattice_resource(*k);
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    // Every kind the CLI writes pluralizes as lowercase + `s`.
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        &format!("{}s", kind.to_lowercase()),
    )
}
