//! The finalizer that holds a child LatticeCluster's deletion until this cluster has torn
//! it down: put on when the child is provisioned ([`hold`]) and taken off when its
//! decommission is done ([`release`]).
//!
//! Apart from both so that provisioning can hold a child without depending on the
//! decommission controller, which itself builds on provisioning.

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use lattice_schemas::crd::Kind;
use serde_json::json;

use super::absent_ok;
use crate::lattice_api::lattice_resource;

/// The finalizer that holds a child's deletion until it is torn down here.
pub const FINALIZER: &str = "lattice.dev/decommission";

fn clusters(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &lattice_resource(Kind::LatticeCluster))
}

/// Sets `names` as `child`'s finalizers, guarded by the resource version they were read
/// at (a concurrent change is a conflict, tried again next round).
async fn set_finalizers(
    client: &Client,
    child: &str,
    names: Vec<String>,
    resource_version: Option<String>,
) -> Result<(), String> {
    let patch = json!({"metadata": {"finalizers": names, "resourceVersion": resource_version}});
    absent_ok(
        clusters(client)
            .patch(child, &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    )
    .map_err(|e| format!("cannot set {child}'s finalizers: {e}"))
}

/// `child` as the server holds it now, if it is still there.
async fn read(client: &Client, child: &str) -> Result<Option<DynamicObject>, String> {
    clusters(client)
        .get_opt(child)
        .await
        .map_err(|e| format!("cannot read {child}: {e}"))
}

/// Makes sure `child` carries [`FINALIZER`].
pub async fn hold(client: &Client, child: &str) -> Result<(), String> {
    let Some(current) = read(client, child).await? else {
        return Ok(());
    };
    if current.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let mut names = current.metadata.finalizers.unwrap_or_default();
    if names.iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    names.push(FINALIZER.to_owned());
    set_finalizers(client, child, names, current.metadata.resource_version).await?;
    tracing::info!(cluster = %child, "held for decommission");
    Ok(())
}

/// Releases [`FINALIZER`] from `child`: its teardown is done.
pub(super) async fn release(client: &Client, child: &str) -> Result<(), String> {
    let Some(current) = read(client, child).await? else {
        return Ok(());
    };
    let names = current.metadata.finalizers.unwrap_or_default();
    if !names.iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let kept = names.into_iter().filter(|f| f != FINALIZER).collect();
    set_finalizers(client, child, kept, current.metadata.resource_version).await
}
