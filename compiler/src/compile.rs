//! Compiling a workload whose gates all allowed into the Kubernetes objects it needs: the
//! entry point, which hands each kind to its module.
//!
//! Deterministic: the same workload, report and context give the same objects, byte for byte
//! (maps are ordered, and the config hash covers everything the pod template is made from).

use lattice_gates::GateReport;
use lattice_schemas::manifest::Object;
use serde_json::Value;

pub use crate::objects::{CONFIG_HASH, CompileContext, CompileError, MANAGER};

/// The objects a workload derives, in apply order; nothing at all unless every gate of
/// `report` allowed. A mesh member derives no objects of its own (its network objects come
/// from the mesh plan). A `CertIssuer` derives its cert-manager ClusterIssuer, a
/// `DNSProvider` its external-dns instance, a `LatticeClusterBackup` its Velero objects; a
/// `LatticeRestore` is refused here (see [`crate::backup::compile_restore`]).
pub fn compile(
    object: &Object,
    report: &GateReport,
    ctx: &CompileContext,
) -> Result<Vec<Value>, CompileError> {
    let key = lattice_engine::ObjectKey::of(object);
    let workload = format!(
        "{}/{}",
        key.namespace.as_deref().unwrap_or("default"),
        key.name
    );
    if !report.allowed() {
        return Err(CompileError::Denied {
            workload,
            gates: report.denied_gates(),
        });
    }
    match object {
        Object::Service(s) => crate::service::compile_service(s, ctx),
        Object::Job(j) => crate::batch::compile_job(j, ctx),
        Object::Model(m) => crate::model::compile_model(m, ctx),
        Object::MeshMember(_) => Ok(Vec::new()),
        Object::Package(p) => crate::package::compile_package(p, ctx),
        Object::ClusterBackup(b) => crate::backup::compile_backup(b, ctx),
        Object::CertIssuer(i) => crate::issuer::compile_issuer(i, ctx),
        Object::DnsProvider(d) => crate::issuer::compile_dns_provider(d, ctx),
        Object::Restore(_) => Err(CompileError::RestoreUndecided(format!(
            "LatticeRestore {}",
            key.name
        ))),
        _ => Err(CompileError::NotAWorkload(format!(
            "{} {workload}",
            key.kind
        ))),
    }
}
