//! The optional proof warning on a CedarPolicy write: once a write is admitted, whether the
//! policies in force after it permit anything they did not before, for any request the schema
//! admits ([`lattice_prove`]), said as an admission warning that `kubectl apply` prints.
//!
//! Off by default (`--prove-policy-changes`): it starts an SMT solver per write and takes a
//! few hundred milliseconds where every other answer takes under one, and it decides nothing
//! (the write's own `ManagePolicy` question did); a reviewer gets the same answer from
//! `lattice-policy prove no-new-permits` before applying. Bounded by [`BUDGET`]: a proof not
//! finished by then says so and the answer goes out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cedar_policy::PolicySet;
use lattice_engine::Snapshot;
use lattice_engine::policies::{object_key, read_object};
use lattice_prove::{Outcome, Prover};
use lattice_schemas::crd::{CedarPolicy, EnforcementMode};

/// The most a proof may add to an admission answer (the webhook configuration gives the API
/// server 3 s for a Lattice write).
pub const BUDGET: Duration = Duration::from_millis(1500);

/// The enforce-mode policies once `object` is stored, replacing what it held before, read as
/// the store reads it ([`lattice_engine::policies::read_object`]).
fn after_write(snapshot: &Snapshot, object: &CedarPolicy) -> Result<PolicySet, String> {
    let (namespace, name) = object_key(object);
    let prefix = format!("{namespace}/{name}/");
    let read = read_object(object).map_err(|e| e.to_string())?;
    let mut after = PolicySet::new();
    for p in snapshot.enforce_index().policy_set().policies() {
        if !p.id().to_string().starts_with(&prefix) {
            after.add(p.clone()).map_err(|e| e.to_string())?;
        }
    }
    if read.enabled && read.mode == EnforcementMode::Enforce {
        for p in read.policies {
            after.add(p.policy).map_err(|e| e.to_string())?;
        }
    }
    Ok(after)
}

/// The warning for admitting `object` over `snapshot`'s policies, proved with `solver`.
/// Runs the solver in the calling thread: call it off the runtime's workers.
pub fn warning(snapshot: &Snapshot, object: &CedarPolicy, solver: &Path) -> String {
    let before = snapshot.enforce_index().policy_set();
    let answer = after_write(snapshot, object).and_then(|after| {
        let mut prover = Prover::start(snapshot.schema(), solver).map_err(|e| e.to_string())?;
        prover
            .no_new_permits(before, &after, None)
            .map_err(|e| e.to_string())
    });
    match answer {
        Ok(Outcome::Proved { environments }) => format!(
            "lattice: proved: this change permits nothing new, for any request ({environments} request types)"
        ),
        Ok(Outcome::Refuted {
            environment,
            counterexample,
        }) => format!(
            "lattice: refuted: this change permits a request that was denied before, in {environment}: {} (`lattice-policy prove no-new-permits` shows the entities)",
            counterexample.request_json()
        ),
        Err(e) => format!("lattice: no proof for this change: {e}"),
    }
}

/// Where proofs run, when they are asked for, and how long one may take.
#[derive(Clone, Debug)]
pub struct PolicyProofs {
    /// The cvc5 executable ([`lattice_prove::solver::find`]).
    pub solver: PathBuf,
    /// The most a proof may add to an answer; [`BUDGET`] unless a test says otherwise.
    pub budget: Duration,
    /// One proof at a time: a proof cut off by the budget still holds its permit until its
    /// solver answers, so a burst of writes cannot start a solver each.
    running: std::sync::Arc<tokio::sync::Semaphore>,
}

impl PolicyProofs {
    /// Proofs with `solver` within [`BUDGET`].
    pub fn new(solver: PathBuf) -> Self {
        PolicyProofs {
            solver,
            budget: BUDGET,
            running: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// The same proofs with another budget.
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }
}

/// [`warning`] within the proofs' budget, off the async runtime's threads. A proof cut off
/// by the budget finishes in the background (the solver is not killed mid-answer) and is
/// dropped.
pub async fn bounded_warning(
    proofs: &PolicyProofs,
    current: std::sync::Arc<super::admit::Current>,
    object: CedarPolicy,
) -> String {
    let Ok(permit) = proofs.running.clone().try_acquire_owned() else {
        return "lattice: no proof for this change: another proof is still running".into();
    };
    let solver = proofs.solver.clone();
    let proving = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        warning(&current.snapshot, &object, &solver)
    });
    match tokio::time::timeout(proofs.budget, proving).await {
        Ok(Ok(w)) => w,
        Ok(Err(_)) => "lattice: no proof for this change: the prover failed".into(),
        Err(_) => format!(
            "lattice: no proof for this change within {} ms; `lattice-policy prove no-new-permits` has no limit",
            proofs.budget.as_millis()
        ),
    }
}
