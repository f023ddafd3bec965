//! A `LatticeModel`: one Deployment per role (for example prefill and decode), each with its
//! own Service, autoscaling on the model's metrics and disruption budget. Every role is told
//! where the weights come from.

use lattice_schemas::crd::LatticeModel;
use serde_json::Value;

use crate::objects::{
    CompileContext, CompileError, disruption_budget, meta, scope, service_account, service_object,
};
use crate::pod::{Part, PodOptions, pod};
use crate::service::{deployment, scaled_object};

/// The variables every model container gets unless it sets them itself.
pub const MODEL_URI_VAR: &str = "LATTICE_MODEL_URI";
pub const MODEL_REVISION_VAR: &str = "LATTICE_MODEL_REVISION";

/// The objects of one model whose gates all allowed, in apply order.
pub fn compile_model(
    model: &LatticeModel,
    ctx: &CompileContext,
) -> Result<Vec<Value>, CompileError> {
    let name = model.metadata.name.clone().unwrap_or_default();
    let ns = model
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let empty = Default::default();
    let mut objects = vec![service_account(&name, &ns)];
    for (role_name, role) in &model.spec.roles {
        let mut body = role.workload.clone();
        for c in body.containers.values_mut() {
            c.variables
                .entry(MODEL_URI_VAR.into())
                .or_insert_with(|| model.spec.source.uri.clone());
            if let Some(rev) = &model.spec.source.revision {
                c.variables
                    .entry(MODEL_REVISION_VAR.into())
                    .or_insert_with(|| rev.clone());
            }
        }
        let scope = scope(
            (
                model.metadata.annotations.as_ref(),
                model.metadata.labels.as_ref(),
            ),
            &name,
            &ns,
            &body,
            ctx,
            &empty,
        );
        let part = Part::new(&name, &ns, role_name);
        let options = PodOptions {
            restart_policy: None,
            runtime_enforcement: true,
        };
        let pod = pod(&part, &body, &scope, &options)?;
        objects.extend(pod.objects);
        let selector = part.selector();
        objects.extend(service_object(&part.base, &ns, &name, &body, &selector));
        let replicas = role
            .replicas
            .or(role.autoscaling.as_ref().and_then(|a| a.min))
            .unwrap_or(1);
        let mut deployment = deployment(
            meta(&part.base, &ns, &name),
            replicas,
            selector.clone(),
            pod.template,
        );
        if role.autoscaling.is_some() {
            crate::service::leave_replicas_to_the_autoscaler(&mut deployment);
        }
        objects.push(deployment);
        if let Some(a) = &role.autoscaling {
            objects.push(scaled_object(&part.base, &part, replicas, a));
        }
        if replicas >= 2 {
            objects.push(disruption_budget(&part.base, &ns, &name, &selector));
        }
    }
    let bodies: Vec<_> = model.spec.roles.values().map(|r| &r.workload).collect();
    objects.extend(crate::mesh::self_edge(&name, &ns, &bodies));
    Ok(objects)
}
