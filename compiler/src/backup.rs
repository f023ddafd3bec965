//! Backups and restores through Velero: a `LatticeClusterBackup` becomes a Velero
//! `Schedule` (or, without a schedule, one `Backup`), with its own `BackupStorageLocation`
//! and credentials when it names storage; a `LatticeRestore` becomes a Velero `Restore`.
//!
//! Everything lands in Velero's namespace, where its server reads it, and is owned by the
//! cluster-scoped Lattice object. Velero does the work (snapshots, uploads, restores);
//! Lattice decides what may be asked of it.

use std::collections::BTreeMap;

use lattice_schemas::crd::backup::{
    BackupStorage, LatticeClusterBackup, LatticeRestore, VELERO_NAMESPACE,
};
use serde_json::{Map, Value, json};

use crate::objects::{CompileContext, CompileError, meta};

const VELERO: &str = "velero.io/v1";

/// The key Velero's object-store plugins read a credentials file from.
const CREDENTIALS_KEY: &str = "cloud";

/// The Velero objects a backup derives: its storage location and credentials (when it names
/// storage), then its `Schedule`, or a `Backup` taken now when it has no schedule.
pub fn compile_backup(
    backup: &LatticeClusterBackup,
    ctx: &CompileContext,
) -> Result<Vec<Value>, CompileError> {
    let name = backup.metadata.name.as_deref().unwrap_or_default();
    let spec = &backup.spec;
    let invalid = |reason: String| CompileError::Invalid {
        workload: format!("LatticeClusterBackup {name}"),
        reason,
    };
    let mut objects = Vec::new();
    let mut template = Map::new();
    template.insert(
        "includedNamespaces".into(),
        json!(included_namespaces(backup, ctx).map_err(invalid)?),
    );
    if !spec.scope.exclude_namespaces.is_empty() {
        template.insert(
            "excludedNamespaces".into(),
            json!(spec.scope.exclude_namespaces),
        );
    }
    if let Some(cluster) = spec.scope.cluster_resources {
        template.insert("includeClusterResources".into(), json!(cluster));
    }
    if let Some(snapshots) = spec.snapshot_volumes {
        template.insert("snapshotVolumes".into(), json!(snapshots));
    }
    if let Some(ttl) = &spec.retention.ttl {
        template.insert("ttl".into(), json!(ttl));
    }
    if let Some(storage) = &spec.storage {
        template.insert("storageLocation".into(), json!(name));
        objects.extend(storage_location(name, storage));
    }
    objects.push(match &spec.schedule {
        Some(schedule) => json!({
            "apiVersion": VELERO, "kind": "Schedule",
            "metadata": meta(name, VELERO_NAMESPACE, name),
            "spec": {"schedule": schedule, "paused": spec.paused, "template": template},
        }),
        None => json!({
            "apiVersion": VELERO, "kind": "Backup",
            "metadata": meta(name, VELERO_NAMESPACE, name),
            "spec": template,
        }),
    });
    Ok(objects)
}

/// The namespaces a backup covers, as Velero reads `includedNamespaces`: `*` for all, or
/// those a selector picks out of the world now. A selector that picks none is an error,
/// never an empty list (which Velero reads as every namespace).
fn included_namespaces(
    backup: &LatticeClusterBackup,
    ctx: &CompileContext,
) -> Result<Vec<String>, String> {
    let scope = &backup.spec.scope;
    if let Some(selector) = &scope.namespace_selector {
        let picked: Vec<String> = ctx
            .namespace_labels
            .iter()
            .filter(|(_, labels)| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .map(|(ns, _)| ns.clone())
            .collect();
        if picked.is_empty() {
            return Err(format!(
                "its namespace selector ({}) matches no namespace, and an empty list would back up every one",
                selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        return Ok(picked);
    }
    if scope.include_namespaces.is_empty() {
        Ok(vec!["*".to_owned()])
    } else {
        Ok(scope.include_namespaces.clone())
    }
}

/// A `BackupStorageLocation` named after the backup, and the ExternalSecret that syncs its
/// credentials into Velero's namespace.
fn storage_location(name: &str, storage: &BackupStorage) -> Vec<Value> {
    let mut out = Vec::new();
    let mut object_storage = json!({"bucket": storage.bucket});
    if let Some(prefix) = &storage.prefix {
        object_storage["prefix"] = json!(prefix);
    }
    let mut config = BTreeMap::new();
    if let Some(region) = &storage.region {
        config.insert("region", region.clone());
    }
    if let Some(endpoint) = &storage.endpoint {
        config.insert("s3Url", endpoint.clone());
    }
    if let Some(path_style) = storage.force_path_style {
        config.insert("s3ForcePathStyle", path_style.to_string());
    }
    let mut spec = json!({
        "provider": storage.provider.velero_plugin(),
        "objectStorage": object_storage,
        "accessMode": "ReadWrite",
    });
    if !config.is_empty() {
        spec["config"] = json!(config);
    }
    if let Some(creds) = &storage.credentials {
        let secret = format!("{name}-storage-credentials");
        spec["credential"] = json!({"name": secret, "key": CREDENTIALS_KEY});
        out.push(json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": meta(&secret, VELERO_NAMESPACE, name),
            "spec": {
                "refreshInterval": "1h",
                "secretStoreRef": {"kind": "ClusterSecretStore", "name": creds.provider},
                "target": {"name": secret, "creationPolicy": "Owner"},
                "data": [{
                    "secretKey": CREDENTIALS_KEY,
                    "remoteRef": {"key": creds.id, "property": creds.key.as_deref().unwrap_or(CREDENTIALS_KEY)},
                }],
            }
        }));
    }
    out.push(json!({
        "apiVersion": VELERO, "kind": "BackupStorageLocation",
        "metadata": meta(name, VELERO_NAMESPACE, name),
        "spec": spec,
    }));
    out
}

/// The Velero `Restore` a restore derives. Only for a restore Cedar's `Restore` allowed:
/// [`crate::compile`] refuses a `LatticeRestore`, and the operator calls this after asking.
pub fn compile_restore(restore: &LatticeRestore) -> Vec<Value> {
    let name = restore.metadata.name.as_deref().unwrap_or_default();
    let spec = &restore.spec;
    let mut out = json!({
        "restorePVs": spec.restore_volumes,
        "existingResourcePolicy": spec.existing_resources.as_str(),
        "includedNamespaces": spec.namespaces(),
    });
    match (&spec.backup_name, &spec.cluster_backup_ref) {
        (Some(backup), _) => out["backupName"] = json!(backup),
        // A LatticeClusterBackup's Schedule bears its name: Velero restores its latest.
        (None, Some(schedule)) => out["scheduleName"] = json!(schedule),
        (None, None) => {}
    }
    if !spec.exclude_namespaces.is_empty() {
        out["excludedNamespaces"] = json!(spec.exclude_namespaces);
    }
    vec![json!({
        "apiVersion": VELERO, "kind": "Restore",
        "metadata": meta(name, VELERO_NAMESPACE, name),
        "spec": out,
    })]
}
