//! `LatticeClusterBackup` and `LatticeRestore`: backups through Velero. A backup derives a
//! Velero `Schedule` (or, without a schedule, one `Backup`) and, when it names its own
//! storage, the `BackupStorageLocation` it writes to. A restore derives a Velero `Restore`,
//! and only once Cedar's `Restore` allowed it for the user who wrote it, because a restore
//! rewrites the cluster.
//!
//! Both are cluster-scoped: what they read and write spans namespaces, and the Velero
//! objects they derive (in Velero's namespace) can then name them as owner.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::service::WorkloadStatus;

/// The namespace the Velero server runs in and reads its objects from.
pub const VELERO_NAMESPACE: &str = "velero";

/// What is backed up, when, where to, and for how long.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "LatticeClusterBackup",
    status = "WorkloadStatus",
    shortname = "lbackup",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "Backups of the cluster through Velero: a schedule, or one backup now.",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct LatticeClusterBackupSpec {
    /// A five-field cron schedule (`0 2 * * *`) or a macro (`@daily`). Without one, a
    /// single backup is taken now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Where backups go. Without it, Velero's default storage location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<BackupStorage>,
    /// What is backed up; everything when left out.
    #[serde(default)]
    pub scope: BackupScope,
    /// How long each backup is kept.
    #[serde(default)]
    pub retention: BackupRetention,
    /// Take volume snapshots of persistent volumes (Velero's default when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_volumes: Option<bool>,
    /// Stop taking scheduled backups (those taken are kept).
    #[serde(default)]
    pub paused: bool,
}

/// Object storage a backup writes to: one Velero `BackupStorageLocation`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorage {
    /// `s3` (and S3-compatible stores), `gcs` or `azure`.
    pub provider: StorageProvider,
    /// The bucket (an Azure container).
    #[schemars(length(min = 1))]
    pub bucket: String,
    /// A path inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The region (S3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// An S3-compatible endpoint, `https://…` (MinIO, Ceph).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style addressing (most S3-compatible stores need it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// The store's credentials, synced by External Secrets from a SecretProvider into
    /// Velero's namespace. Without them, Velero's own (its service account's identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<BackupCredentials>,
}

/// A storage provider, as Velero's object-store plugins name them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageProvider {
    #[default]
    S3,
    Gcs,
    Azure,
}

impl StorageProvider {
    /// The Velero plugin that serves it (`BackupStorageLocation.spec.provider`).
    pub fn velero_plugin(self) -> &'static str {
        match self {
            StorageProvider::S3 => "aws",
            StorageProvider::Gcs => "gcp",
            StorageProvider::Azure => "azure",
        }
    }
}

/// Where a store's credentials are read: one key of a secret in a SecretProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupCredentials {
    /// The SecretProvider (a ClusterSecretStore).
    #[schemars(length(min = 1))]
    pub provider: String,
    /// The secret's path in the provider.
    #[schemars(length(min = 1))]
    pub id: String,
    /// The key holding the credentials file Velero's plugin reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What a backup covers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScope {
    /// These namespaces; every namespace when left out (and no selector is set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_namespaces: Vec<String>,
    /// The namespaces carrying all of these labels, resolved when derived (and again as
    /// namespaces come, go or are relabelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<BTreeMap<String, String>>,
    /// Never these namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_namespaces: Vec<String>,
    /// Cluster-scoped resources too (Velero decides when left out: with a whole-cluster
    /// backup, yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_resources: Option<bool>,
}

/// How long backups are kept.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRetention {
    /// A duration such as `720h` (30 days); Velero's default when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// A restore from a Velero backup: decided by Cedar (`Restore`) for the user who wrote it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lattice.dev",
    version = "v1alpha1",
    kind = "LatticeRestore",
    status = "WorkloadStatus",
    shortname = "lrestore",
    category = "lattice",
    derive = "PartialEq",
    derive = "Default",
    doc = "A restore from a Velero backup, allowed by Cedar's Restore decision.",
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backupName"),
    printcolumn(name = "From", type_ = "string", json_path = ".spec.clusterBackupRef"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
#[serde(rename_all = "camelCase")]
pub struct LatticeRestoreSpec {
    /// The Velero backup to restore. At least one of `backupName` and
    /// `clusterBackupRef` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// The LatticeClusterBackup whose backups it restores: its latest, unless
    /// `backupName` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_backup_ref: Option<String>,
    /// Restore only these namespaces; every namespace in the backup when left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_namespaces: Vec<String>,
    /// Never restore these namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_namespaces: Vec<String>,
    /// Restore persistent volumes' data too.
    #[serde(default = "yes")]
    pub restore_volumes: bool,
    /// What happens to an object that exists already: `none` leaves it (Velero's
    /// default), `update` overwrites it with the backup's.
    #[serde(default)]
    pub existing_resources: ExistingResources,
}

fn yes() -> bool {
    true
}

/// Velero's `existingResourcePolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExistingResources {
    #[default]
    None,
    Update,
}

impl ExistingResources {
    /// As written (`none`, `update`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExistingResources::None => "none",
            ExistingResources::Update => "update",
        }
    }
}

impl LatticeRestoreSpec {
    /// The namespaces it restores into, as Velero reads `includedNamespaces`: `*` for all.
    pub fn namespaces(&self) -> Vec<String> {
        if self.include_namespaces.is_empty() {
            vec!["*".to_owned()]
        } else {
            self.include_namespaces.clone()
        }
    }
}
