//! A `LatticeJob`: a Volcano job whose tasks are gang-scheduled (`minAvailable` pods start
//! together or none do), or a Volcano CronJob of it when the job has a `schedule`.

use lattice_schemas::crd::LatticeJob;
use serde_json::{Value, json};

use crate::objects::{CompileContext, CompileError, meta, object, scope, service_account};
use crate::pod::{Part, PodOptions, pod};

/// The scheduler that gang-schedules Volcano jobs.
pub const SCHEDULER: &str = "volcano";
/// The queue a job runs in when it names none (Volcano's default queue).
pub const DEFAULT_QUEUE: &str = "default";
/// Retries of the whole job when it names none.
pub const DEFAULT_MAX_RETRY: i32 = 3;

/// The objects of one job whose gates all allowed, in apply order.
pub fn compile_job(job: &LatticeJob, ctx: &CompileContext) -> Result<Vec<Value>, CompileError> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let ns = job
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let empty = Default::default();
    let mut objects = vec![service_account(&name, &ns)];
    let mut tasks = Vec::new();
    let mut total = 0;
    for (task_name, task) in &job.spec.tasks {
        let body = &task.workload;
        let scope = scope(
            (
                job.metadata.annotations.as_ref(),
                job.metadata.labels.as_ref(),
            ),
            &name,
            &ns,
            body,
            ctx,
            &empty,
        );
        let part = Part::new(&name, &ns, task_name);
        let options = PodOptions {
            restart_policy: Some(task.restart_policy.as_deref().unwrap_or("OnFailure")),
            runtime_enforcement: true,
        };
        let pod = pod(&part, body, &scope, &options)?;
        objects.extend(pod.objects);
        let replicas = task.replicas.unwrap_or(1);
        total += replicas;
        tasks.push(object([
            ("name", task_name.as_str().into()),
            ("replicas", replicas.into()),
            ("template", pod.template),
        ]));
    }
    let spec = json!({
        "schedulerName": SCHEDULER,
        "minAvailable": job.spec.min_available.unwrap_or(total),
        "queue": job.spec.queue.as_deref().unwrap_or(DEFAULT_QUEUE),
        "maxRetry": job.spec.max_retry.unwrap_or(DEFAULT_MAX_RETRY),
        // `svc` gives every task pod a stable DNS name for rendezvous; Volcano's own network
        // policy is off because Lattice derives the job's network objects.
        "plugins": {"env": [], "svc": ["--disable-network-policy=true"]},
        "policies": [{"event": "PodEvicted", "action": "RestartJob"}],
        "tasks": tasks
    });
    objects.push(match &job.spec.schedule {
        None => json!({
            "apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job",
            "metadata": meta(&name, &ns, &name), "spec": spec
        }),
        Some(schedule) => json!({
            "apiVersion": "batch.volcano.sh/v1alpha1", "kind": "CronJob",
            "metadata": meta(&name, &ns, &name),
            "spec": {"schedule": schedule, "concurrencyPolicy": "Forbid", "jobTemplate": {"spec": spec}}
        }),
    });
    objects.extend(crate::mesh::self_edge(
        &name,
        &ns,
        &job.spec
            .tasks
            .values()
            .map(|t| &t.workload)
            .collect::<Vec<_>>(),
    ));
    Ok(objects)
}
