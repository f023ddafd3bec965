//! The operator under faults, on a real API server (`tools/testenv`): the API server
//! restarted in the middle of a reconcile, and the leader killed in the middle of applying.
//! Each converges to exactly what the decisions derive: every derived object present once,
//! nothing left behind, and every status written.

mod cluster;

use std::time::Duration;

use cluster::fleet::{count, derived_on_cluster, expected, ready, seed, world};
use cluster::{Operator, TestEnv, eventually};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject};
use serde_json::Value;

const SERVICES: usize = 200;

/// One fault at a time: two control planes and four hundred services at once on a small
/// machine would test the machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const WAIT: Duration = Duration::from_secs(180);

async fn seeded(env: &TestEnv, objects: &[Value]) -> Client {
    let client = env.client().await;
    seed(&client, objects, "test").await;
    client
}

/// Waits until some Deployments exist but not all: the operator is mid-apply.
async fn mid_apply(client: &Client, total: usize) -> usize {
    eventually("the first Deployments", WAIT, || async {
        let n = count(client, "apps/v1", "Deployment").await;
        (n >= 5).then_some(n)
    })
    .await
    .min(total)
}

/// Waits until the cluster holds exactly `wanted` and `services` services are Ready at their
/// generation.
async fn converged(
    client: &Client,
    wanted: &std::collections::BTreeSet<lattice_controllers::operator::resources::ObjectId>,
    services: usize,
    logs: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let on_cluster = derived_on_cluster(client).await;
        let ready = ready(client).await;
        if &on_cluster == wanted && ready == services {
            return;
        }
        if std::time::Instant::now() > deadline {
            let missing: Vec<_> = wanted.difference(&on_cluster).take(5).collect();
            let extra: Vec<_> = on_cluster.difference(wanted).take(5).collect();
            panic!(
                "not converged: {ready}/{services} Ready; {} missing (first {missing:?}), {} left behind (first {extra:?})\n{}",
                wanted.difference(&on_cluster).count(),
                on_cluster.difference(wanted).count(),
                logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_mid_reconcile_converges_with_every_object_once() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut env = TestEnv::start("fault-restart");
    let objects = world(SERVICES);
    let client = seeded(&env, &objects).await;
    let wanted = expected(&client, &objects).await;
    // A lease long enough that the leader keeps it through the outage, however slowly a
    // loaded machine stops and starts the API server: what is tested is reconnecting, not
    // a handover (crash-only: a leader that cannot renew in time exits).
    let operator = Operator::start(&env, &["--lease-seconds", "180"]);
    let at = mid_apply(&client, SERVICES).await;
    let down = std::time::Instant::now();
    env.restart(Duration::from_secs(6));
    eprintln!("the API server was away for {:?}", down.elapsed());
    let back = std::time::Instant::now();
    let client = env.client().await;
    converged(&client, &wanted, SERVICES, || operator.logs()).await;
    let took = back.elapsed();
    eprintln!("converged {took:?} after the API server came back");
    let logs = operator.logs();
    // Reconciles that failed while it was away are tried again when the watches list
    // again, not after a backoff that grew meanwhile (16 s and more).
    assert!(
        took < Duration::from_secs(15),
        "{took:?} to converge\n{logs}"
    );
    assert!(
        at < SERVICES,
        "the restart came after the apply ({at} Deployments): nothing was interrupted\n{logs}"
    );
    // The outage was seen (the watches broke and came back), not slept through.
    assert!(
        logs.contains("watch error") || logs.contains("reconcile failed"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_apply_is_succeeded_with_nothing_duplicated_or_left_behind() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::start("fault-kill");
    let objects = world(SERVICES);
    let client = seeded(&env, &objects).await;
    let mut leader = Operator::start_as(&env, "replica-a", &["--lease-seconds", "4"]);
    // The takeover waits out the dead leader's 4 s lease, as written in the Lease. The
    // successor's own, longer lease only widens its renew deadline (two thirds of it), so a
    // machine loaded by other builds (the API server shares its two cores) does not make it
    // give the lease up mid-test: this test is about succession, not renewal under load.
    let follower = Operator::start_as(&env, "replica-b", &["--lease-seconds", "12"]);
    let at = mid_apply(&client, SERVICES).await;
    leader.kill();
    // While nobody leads, ten services go: what the dead leader derived for them must not
    // outlive them (no garbage collector runs here; the successor has to).
    let gone: Vec<Value> = objects
        .iter()
        .filter(|o| o["kind"] == "LatticeService" && o["metadata"]["namespace"] == "team3")
        .cloned()
        .collect();
    for o in &gone {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), "team3", &cluster::resource_of(o));
        api.delete(
            o["metadata"]["name"].as_str().unwrap(),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    }
    let remaining: Vec<Value> = objects
        .iter()
        .filter(|o| !gone.contains(o))
        .cloned()
        .collect();
    let wanted = expected(&client, &remaining).await;
    converged(&client, &wanted, SERVICES - gone.len(), || follower.logs()).await;
    let logs = follower.logs();
    assert!(logs.contains("leading"), "replica-b took over\n{logs}");
    assert!(
        at < SERVICES,
        "the kill came after the apply ({at} Deployments): nothing was interrupted"
    );
}
