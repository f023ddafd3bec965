//! What `compliance verify` reads from a cluster (the current kubeconfig context, as
//! kubectl uses it): the head the operator anchored for a profile, and the runs of a
//! ConfigMap sink. Read only: nothing here writes to the cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use lattice_compliance::evidence::runs::{HEAD_PREFIX, PROFILE_LABEL, Run};

fn block_on<T>(work: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the client runtime: {e}"))?
        .block_on(work)
}

async fn client() -> Result<kube::Client, String> {
    kube::Client::try_default()
        .await
        .map_err(|e| format!("no cluster to read from (KUBECONFIG or in-cluster): {e}"))
}

/// The head anchored for `profile` in the operator's `namespace`.
pub fn anchored_head(profile: &str, namespace: &str) -> Result<String, String> {
    block_on(async {
        let api: Api<ConfigMap> = Api::namespaced(client().await?, namespace);
        let name = format!("{HEAD_PREFIX}{profile}");
        let cm = api
            .get_opt(&name)
            .await
            .map_err(|e| format!("cannot read {namespace}/{name}: {e}"))?
            .ok_or_else(|| {
                format!(
                    "no anchored head for profile `{profile}`: ConfigMap {namespace}/{name} does not exist (has the operator scanned it?)"
                )
            })?;
        cm.data
            .unwrap_or_default()
            .remove("head")
            .ok_or_else(|| format!("{namespace}/{name} holds no `head`"))
    })
}

/// The runs of `profile`'s ConfigMap sink in `namespace`.
pub fn config_map_runs(profile: &str, namespace: &str) -> Result<Vec<Run>, String> {
    block_on(async {
        let api: Api<ConfigMap> = Api::namespaced(client().await?, namespace);
        let listed = api
            .list(&ListParams::default().labels(&format!("{PROFILE_LABEL}={profile}")))
            .await
            .map_err(|e| format!("cannot list the runs of `{profile}` in {namespace}: {e}"))?;
        Ok(listed
            .items
            .into_iter()
            .map(|cm| {
                let annotations: BTreeMap<String, String> =
                    cm.metadata.annotations.unwrap_or_default();
                Run::from_object(
                    cm.metadata.name.as_deref().unwrap_or_default(),
                    &annotations,
                    cm.data.unwrap_or_default(),
                )
            })
            .collect())
    })
}
