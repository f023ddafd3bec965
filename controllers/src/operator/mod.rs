//! `lattice-operator run`: the controllers as thin effectors.
//!
//! ```text
//!  watches ─► index (World + policies) ─► planner: snapshot, every decision ─► Plan
//!                                                   │                          │
//!                                    webhook decides on the same snapshot      ▼
//!                      (leader only) effector: apply / revoke / status;  scans: evidence
//! ```
//!
//! The domain work is pure and tested without a cluster: [`index`] (what is known),
//! [`plan`] (what the decisions derive), [`status`] (how it reads). The rest is I/O:
//! [`watch`], [`drift`] (its comparison is pure), [`apply`], [`scans`], [`lease`].
//!
//! Why not `kube::runtime::Controller`: its unit of work is one object, and here it is one
//! snapshot. A policy, a namespace label or one side of a mesh declaration changes what
//! other workloads derive, so every change is decided on a whole, consistent snapshot and
//! the effector applies the difference. What a controller gives is kept, in that shape:
//! watches with backoff and relists (`kube::runtime::watcher`), per-object deduplication
//! (a workload is reconciled only when its digest changes; bursts of events coalesce into
//! one plan), an idempotent per-workload reconcile (server-side apply, then revocation,
//! then status), an error policy (per-workload exponential backoff, 1 s to 2 min), Events
//! through kube-runtime's recorder, and no finalizers: owner references clean up what a
//! garbage collector can, and the sweep and drift correction the rest.

pub mod apply;
pub mod drift;
pub mod events;
pub mod images;
pub mod index;
pub mod lease;
pub mod metrics;
pub mod plan;
pub mod planner;
pub mod resources;
pub mod scans;
pub mod status;
pub mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use lattice_engine::PolicyStore;
use tokio::sync::{Notify, watch as channel};
use tokio::time::Instant;

use crate::webhook::State;
use apply::Effector;
use index::Index;
use plan::Plan;
use watch::Shared;

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The rule packs directory.
    pub policies: Option<PathBuf>,
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's name in the lease (the pod name in a cluster).
    pub identity: String,
    pub lease_duration: Duration,
    /// How often derived objects nobody derives any more are looked for.
    pub sweep_every: Duration,
    /// Where volume-claim evidence sinks are mounted.
    pub evidence_root: Option<PathBuf>,
    /// Signs every evidence record and run, when set.
    pub evidence_signer: Option<Arc<lattice_compliance::evidence::Signer>>,
    /// Checks the admission stamp of every CedarPolicy before it is loaded.
    pub admission: Arc<crate::webhook::stamp::AdmissionKey>,
    /// Where `/metrics` is served (plain HTTP), if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the hierarchy's cell (this cluster is a parent), on the leader.
    pub parent: Option<crate::fleet::parent::ParentOptions>,
    /// This cluster's own LatticeCluster name: once pivoted, it manages its own Cluster
    /// API objects (`fleet::own`), on the leader.
    pub own_cluster: Option<String>,
    /// Where images are verified.
    pub images: ImageSource,
    /// How long a verification holds before it is taken again.
    pub image_ttl: Duration,
    /// Read each workload's pull secrets for the logins its images are verified with.
    pub pull_secret_logins: bool,
}

/// Where the operator verifies images.
#[derive(Clone, Debug)]
pub enum ImageSource {
    /// At their registries.
    Registries(lattice_supply::RegistryOptions),
    /// In an OCI image layout (air-gapped clusters, a mirrored set of images).
    Layout(PathBuf),
}

/// Runs until `shutdown` completes (clean exit) or leadership is lost (an error: the
/// process should exit and start over).
pub async fn run(
    client: Client,
    options: Options,
    webhook: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let packs = match &options.policies {
        None => PolicyStore::bundled()
            .map_err(|e| format!("the bundled rule packs did not load: {e}"))?,
        Some(dir) if dir.is_dir() => PolicyStore::load_packs(dir)
            .map_err(|e| format!("the rule packs in {} did not load: {e}", dir.display()))?,
        Some(dir) => return Err(format!("no rule packs at {} (--policies)", dir.display())),
    };
    let (synced, _) = channel::channel(0);
    let metrics = Arc::new(metrics::Metrics::new());
    if let Some(addr) = options.metrics_addr {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, metrics).await {
                tracing::error!(%addr, "cannot serve metrics: {e}");
            }
        });
    }
    let shared = Arc::new(Shared {
        index: Mutex::new(Index::new(packs, options.admission.clone())),
        changed: Notify::new(),
        synced,
        reconnected: Notify::new(),
        metrics: metrics.clone(),
    });
    let source = match &options.images {
        ImageSource::Registries(r) => lattice_supply::Source::registries(r),
        ImageSource::Layout(dir) => lattice_supply::Source::Layout(
            lattice_supply::layout::Layout::open(dir)
                .map_err(|e| format!("the OCI image layout cannot be read: {e}"))?,
        ),
    };
    let verifier = lattice_supply::Verifier::new(source, options.image_ttl);
    watch::spawn_all(&client, &shared);
    let pull_secrets = options.pull_secret_logins.then(|| client.clone());
    tokio::spawn(images::run(
        shared.clone(),
        verifier,
        options.image_ttl,
        pull_secrets,
    ));
    let inbox = Arc::new(drift::Inbox::default());
    drift::spawn_all(&client, &inbox, &metrics);
    let (plans, plan_rx) = channel::channel::<Option<Arc<Plan>>>(None);
    tokio::spawn(planner(shared.clone(), plans, webhook.clone()));
    // The cell reads each plan's world (its children, what it distributes).
    let (worlds, worlds_rx) = channel::channel(None);
    {
        let mut plan_rx = plan_rx.clone();
        tokio::spawn(async move {
            while plan_rx.changed().await.is_ok() {
                let published = plan_rx.borrow_and_update().as_ref().map(|p| {
                    Arc::new(crate::fleet::parent::Published {
                        world: p.current.world.clone(),
                        admitted: p
                            .policies
                            .iter()
                            .filter(|(_, (_, outcome, _))| {
                                matches!(outcome, index::PolicyOutcome::Accepted { .. })
                            })
                            .map(|(id, _)| id.clone())
                            .collect(),
                    })
                });
                worlds.send_replace(published);
            }
        });
    }

    let elector = Arc::new(lease::Elector::new(
        client.clone(),
        &options.lease_namespace,
        &options.lease_name,
        &options.identity,
        options.lease_duration,
    ));
    let lead = async {
        elector
            .acquire()
            .await
            .map_err(|e| format!("cannot take the lease: {e}"))?;
        tracing::info!(identity = %options.identity, "leading: writes enabled");
        metrics.leading(true);
        // Renewal runs on its own task: however busy the writer is, its deadline is kept.
        let mut keeper = {
            let elector = elector.clone();
            tokio::spawn(async move { elector.keep().await })
        };
        let own = options.own_cluster.clone().map(|cluster| {
            tokio::spawn(crate::fleet::own::run(
                client.clone(),
                cluster,
                worlds_rx.clone(),
                webhook.clone(),
            ))
        });
        let cell = async {
            match options.parent.clone() {
                Some(parent) => {
                    crate::fleet::parent::run(client.clone(), parent, worlds_rx, webhook.clone())
                        .await
                }
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            lost = &mut keeper => Err(format!(
                "leadership lost: {}",
                lost.unwrap_or_else(|e| format!("the lease task failed: {e}"))
            )),
            () = write(client.clone(), plan_rx, &inbox, &shared.reconnected, &options, metrics.clone()) => Ok(()),
            failed = cell => Err(format!(
                "the cell stopped: {}",
                failed.err().unwrap_or_else(|| "without an error".into())
            )),
        };
        keeper.abort();
        if let Some(own) = own {
            own.abort();
        }
        metrics.leading(false);
        result
    };
    let result = tokio::select! {
        r = lead => r,
        () = shutdown => Ok(()),
    };
    elector.release().await;
    result
}

/// Rebuilds the plan whenever the index changes (coalescing bursts), once every watch
/// has listed.
async fn planner(
    shared: Arc<Shared>,
    plans: channel::Sender<Option<Arc<Plan>>>,
    webhook: Arc<State>,
) {
    let mut synced = shared.synced.subscribe();
    let total = watch::watch_count();
    if synced.wait_for(|n| *n >= total).await.is_err() {
        return;
    }
    // No plan before the images are verified once: it would find every image unsigned.
    while !shared
        .index
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .images_ready()
    {
        shared.changed.notified().await;
    }
    tracing::info!("every watch listed, images verified; deciding");
    let planner = Arc::new(Mutex::new(planner::Planner::new()));
    let mut last_started: Option<Instant> = None;
    loop {
        // A burst of events (a `kubectl apply -f dir`) becomes one snapshot: a change after
        // a quiet spell is planned at once, one close behind the last plan waits a little.
        if let Some(at) = last_started {
            tokio::time::sleep_until(at + Duration::from_millis(150)).await;
        }
        let started = Instant::now();
        last_started = Some(started);
        let shared_for_plan = shared.clone();
        let planner = planner.clone();
        let planned = tokio::task::spawn_blocking(move || {
            // The lock is held only for the copy (persistent maps: no object is copied),
            // so the watches (async tasks sharing the runtime with the webhook) never wait
            // for a plan.
            let (index, changes) = {
                let mut index = shared_for_plan
                    .index
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let changes = index.take_changes();
                (index.clone(), changes)
            };
            let mut planner = planner.lock().unwrap_or_else(|p| p.into_inner());
            planner.next(&index, &changes)
        })
        .await;
        match planned {
            Ok(Ok((plan, made))) => {
                let authorized = plan
                    .workloads
                    .values()
                    .filter(|d| matches!(d.verdict, plan::Verdict::Authorized))
                    .count();
                shared.metrics.planned(
                    started.elapsed(),
                    (authorized, plan.workloads.len() - authorized),
                    (plan.allowed_edges, plan.edges - plan.allowed_edges),
                    matches!(made, planner::Made::Incremental { .. }),
                );
                let (incremental, derived, whole_because) = match &made {
                    planner::Made::Incremental { derived } => (true, *derived, ""),
                    planner::Made::Whole(why) => (false, plan.workloads.len(), why.as_str()),
                };
                tracing::info!(
                    snapshot = plan.current.snapshot.digest(),
                    workloads = plan.workloads.len(),
                    edges = plan.edges,
                    allowed_edges = plan.allowed_edges,
                    incremental,
                    derived,
                    whole_because,
                    took_ms = started.elapsed().as_millis() as u64,
                    "decided"
                );
                webhook.publish(plan.current.clone());
                plans.send_replace(Some(plan));
            }
            // Fail closed: the last good plan stays; nothing new is applied on a world
            // that cannot be decided.
            Ok(Err(e)) => {
                shared.metrics.plan_failed();
                tracing::error!("no snapshot: {e}");
            }
            Err(e) => {
                shared.metrics.plan_failed();
                tracing::error!("the planner failed: {e}");
            }
        }
        shared.changed.notified().await;
    }
}

/// The leader's loop: apply each new plan, retry failures with backoff, put right what
/// drifted, sweep orphans, and run due compliance scans.
async fn write(
    client: Client,
    mut plan_rx: channel::Receiver<Option<Arc<Plan>>>,
    inbox: &drift::Inbox,
    reconnected: &Notify,
    options: &Options,
    metrics: Arc<metrics::Metrics>,
) {
    let mut effector = Effector::new(client.clone(), metrics, &options.identity);
    let sinks = scans::Sinks {
        evidence_root: options.evidence_root.clone(),
        signer: options.evidence_signer.clone(),
        namespace: options.lease_namespace.clone(),
    };
    let mut next_sweep: Option<Instant> = None;
    let mut scan_tick = tokio::time::interval(Duration::from_secs(5));
    scan_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scan_due = false;
    let mut scans_written = std::collections::BTreeMap::new();
    loop {
        let Some(plan) = plan_rx.borrow_and_update().clone() else {
            if plan_rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        let started = Instant::now();
        let pass = effector.run(&plan).await;
        if pass.reconciled > 0 || pass.removed_owners > 0 {
            tracing::info!(
                reconciled = pass.reconciled,
                failed = pass.failed,
                removed = pass.removed_owners,
                took_ms = started.elapsed().as_millis() as u64,
                "applied"
            );
        }
        // The first sweep waits for a clean pass, so nothing is taken for an orphan
        // because its owner failed to apply.
        if next_sweep.is_none_or(|at| at <= Instant::now()) && pass.failed == 0 {
            let deleted = effector.sweep(&plan).await;
            if deleted > 0 {
                tracing::info!(deleted, "orphans removed");
            }
            next_sweep = Some(Instant::now() + options.sweep_every);
        }
        // After the pass: what it wrote itself is known, and drift is judged against the
        // plan that is now applied.
        let corrected = effector.correct_drift(&plan, inbox).await;
        if corrected > 0 {
            tracing::info!(corrected, "drift corrected");
        }
        if scan_due {
            scans::run_due(&client, &plan, &sinks, &mut scans_written).await;
            scan_due = false;
        }
        let retry = effector.next_retry();
        tokio::select! {
            changed = plan_rx.changed() => if changed.is_err() { return },
            () = sleep_until(retry) => {}
            () = sleep_until(next_sweep) => {}
            _ = scan_tick.tick() => scan_due = true,
            () = inbox.arrived.notified() => {}
            // The API server answers again: what failed against it is tried now, not
            // after a backoff that grew while it was away.
            () = reconnected.notified() => effector.retry_now(),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
