//! Proofs about Lattice policies for **every** request the schema admits, not only the ones a
//! world raises today: Cedar's symbolic compiler (`cedar-policy-symcc`, whose encoding is
//! verified in Lean) turns each question into SMT, and cvc5 answers it.
//!
//! A question is asked once per request environment (a principal type, an action and a
//! resource type the schema allows together), so "proved" means proved for all of them, and
//! a refutation comes with a concrete counterexample: a request and the entities it needs,
//! which Cedar's own authorizer decides the way the refutation says (the tests replay every
//! one).
//!
//! | question | proved when |
//! |---|---|
//! | [`Prover::no_new_permits`] | every request NEW allows, OLD allows too |
//! | [`Prover::equivalent`] | A and B decide every request alike |
//! | [`Prover::never_errors`] | no policy errors on any request |
//! | [`Prover::shadowed`] | (a list) the policies whose removal changes no decision |
//! | [`Prover::always_denied`] | no request for the action is allowed |
//!
//! Only the policies given are reasoned about: callers pass the enforce-mode policies, the
//! ones that decide.

mod counterexample;
pub mod solver;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cedar_policy::{
    ActionConstraint, Entities, EntityUid, PolicyId, PolicySet, RequestEnv, Schema,
};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy, CompiledPolicySet, Env};

pub use counterexample::Counterexample;

/// Why a question could not be answered (never "proved" by default: callers fail closed).
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error(transparent)]
    Solver(#[from] solver::SolverMissing),
    #[error("the solver could not be started: {0}")]
    Start(String),
    #[error("{what}: {message}")]
    Symbolic { what: String, message: String },
    #[error(
        "the solver answered `unknown` for {0}: no proof either way (a time limit, or a question too hard)"
    )]
    Unknown(String),
    #[error("action {0} is not in the schema")]
    NoSuchAction(String),
}

/// A proof, or a request that refutes it.
#[derive(Debug)]
pub enum Outcome {
    /// Holds for every request of every environment checked.
    Proved { environments: usize },
    /// Does not hold: this request (in `environment`) shows it.
    Refuted {
        environment: String,
        counterexample: Box<Counterexample>,
    },
}

/// A policy that can error, and a request on which it does.
#[derive(Debug)]
pub struct Erroring {
    pub policy: PolicyId,
    pub environment: String,
    pub counterexample: Box<Counterexample>,
}

/// Asks questions of one solver process about policies under one schema.
pub struct Prover {
    compiler: CedarSymCompiler<LocalSolver>,
    schema: Schema,
    runtime: tokio::runtime::Runtime,
    /// Each action's groups, the action included.
    groups: BTreeMap<EntityUid, BTreeSet<EntityUid>>,
}

/// "principal action resource", as a refutation names its environment.
fn describe(env: &RequestEnv) -> String {
    format!("{} {} {}", env.principal(), env.action(), env.resource())
}

impl Prover {
    /// Starts the solver at `solver` (see [`solver::find`]) for policies of `schema`.
    pub fn start(schema: &Schema, solver: &Path) -> Result<Prover, ProveError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ProveError::Start(e.to_string()))?;
        let process = runtime
            .block_on(async {
                LocalSolver::from_command(tokio::process::Command::new(solver).args([
                    "--lang",
                    "smt",
                    "--tlimit-per=60000",
                ]))
            })
            .map_err(|e| ProveError::Start(format!("{}: {e}", solver.display())))?;
        let compiler =
            CedarSymCompiler::new(process).map_err(|e| ProveError::Start(e.to_string()))?;
        let actions = schema
            .action_entities()
            .map_err(|e| ProveError::Start(format!("the schema's actions: {e}")))?;
        let groups = schema
            .actions()
            .map(|a| (a.clone(), groups_of(&actions, a)))
            .collect();
        Ok(Prover {
            compiler,
            schema: schema.clone(),
            runtime,
            groups,
        })
    }

    /// The request environments for `action` (an action, or a group: its members), or all.
    fn environments(&self, action: Option<&EntityUid>) -> Result<Vec<RequestEnv>, ProveError> {
        if let Some(a) = action
            && !self.groups.values().any(|g| g.contains(a))
        {
            return Err(ProveError::NoSuchAction(a.to_string()));
        }
        Ok(self
            .schema
            .request_envs()
            .filter(|env| action.is_none_or(|a| self.in_group(env.action(), a)))
            .collect())
    }

    fn in_group(&self, action: &EntityUid, group: &EntityUid) -> bool {
        self.groups.get(action).is_some_and(|g| g.contains(group))
    }

    /// Whether `policy`'s action scope can match `env` at all (the cheap filter before the
    /// solver is asked anything).
    fn may_apply(&self, policy: &cedar_policy::Policy, env: &RequestEnv) -> bool {
        match policy.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(a) => env.action() == &a,
            ActionConstraint::In(groups) => groups.iter().any(|g| self.in_group(env.action(), g)),
        }
    }

    /// Only the policies of `set` that may apply in `env` (the others are false there).
    fn relevant(&self, set: &PolicySet, env: &RequestEnv) -> PolicySet {
        let mut out = PolicySet::new();
        for p in set.policies().filter(|p| self.may_apply(p, env)) {
            // Ids are unique in `set`, so adding cannot fail.
            let _ = out.add(p.clone());
        }
        out
    }

    fn compile(&self, set: &PolicySet, env: &RequestEnv) -> Result<CompiledPolicySet, ProveError> {
        CompiledPolicySet::compile(&self.relevant(set, env), env, &self.schema).map_err(|e| {
            ProveError::Symbolic {
                what: format!("compiling the policies for {}", describe(env)),
                message: e.to_string(),
            }
        })
    }

    fn solved<T>(
        &self,
        env: &RequestEnv,
        answer: Result<T, cedar_policy_symcc::err::Error>,
    ) -> Result<T, ProveError> {
        answer.map_err(|e| match e {
            cedar_policy_symcc::err::Error::SolverUnknown => ProveError::Unknown(describe(env)),
            e => ProveError::Symbolic {
                what: format!("the solver, for {}", describe(env)),
                message: e.to_string(),
            },
        })
    }

    /// Proves that `new` permits nothing `old` denies (for `action` only, when given).
    pub fn no_new_permits(
        &mut self,
        old: &PolicySet,
        new: &PolicySet,
        action: Option<&EntityUid>,
    ) -> Result<Outcome, ProveError> {
        let environments = self.environments(action)?;
        self.first_refutation(&environments, |p, env| {
            let (old_c, new_c) = (p.compile(old, env)?, p.compile(new, env)?);
            let answer = p.runtime.block_on(
                p.compiler
                    .check_implies_with_counterexample_opt(&new_c, &old_c),
            );
            p.solved(env, answer)
        })
    }

    /// Proves that `a` and `b` decide every request alike.
    pub fn equivalent(&mut self, a: &PolicySet, b: &PolicySet) -> Result<Outcome, ProveError> {
        let environments = self.environments(None)?;
        self.first_refutation(&environments, |p, env| {
            let (a_c, b_c) = (p.compile(a, env)?, p.compile(b, env)?);
            let answer = p.runtime.block_on(
                p.compiler
                    .check_equivalent_with_counterexample_opt(&a_c, &b_c),
            );
            p.solved(env, answer)
        })
    }

    /// Every policy of `set` that can error on some request, with one such request each.
    pub fn never_errors(&mut self, set: &PolicySet) -> Result<(Vec<Erroring>, usize), ProveError> {
        let environments = self.environments(None)?;
        let mut erroring = Vec::new();
        let mut asked = 0;
        for policy in set.policies() {
            let applicable: Vec<&RequestEnv> = environments
                .iter()
                .filter(|e| self.may_apply(policy, e))
                .collect();
            for env in applicable {
                asked += 1;
                let compiled = CompiledPolicy::compile(policy, env, &self.schema).map_err(|e| {
                    ProveError::Symbolic {
                        what: format!("compiling {} for {}", policy.id(), describe(env)),
                        message: e.to_string(),
                    }
                })?;
                let answer = self.runtime.block_on(
                    self.compiler
                        .check_never_errors_with_counterexample_opt(&compiled),
                );
                if let Some(found) = self.solved(env, answer)? {
                    erroring.push(Erroring {
                        policy: policy.id().clone(),
                        environment: describe(env),
                        counterexample: Box::new(Counterexample::new(
                            found.request,
                            found.entities,
                        )),
                    });
                    break;
                }
            }
        }
        Ok((erroring, asked))
    }

    /// The policies of `set` that never change a decision: removing one leaves every
    /// request decided as before (a permit whose requests the others allow anyway, or that
    /// a forbid always overrides; a forbid whose requests are denied anyway).
    pub fn shadowed(&mut self, set: &PolicySet) -> Result<Vec<PolicyId>, ProveError> {
        let environments = self.environments(None)?;
        let mut shadowed = Vec::new();
        for policy in set.policies() {
            let mut without = PolicySet::new();
            for p in set.policies().filter(|p| p.id() != policy.id()) {
                let _ = without.add(p.clone());
            }
            let mut changes = false;
            let applicable: Vec<&RequestEnv> = environments
                .iter()
                .filter(|e| self.may_apply(policy, e))
                .collect();
            for env in applicable {
                let (all, rest) = (self.compile(set, env)?, self.compile(&without, env)?);
                // Removing a permit can only deny more, and removing a forbid only allow
                // more, so one direction of equivalence is all that can fail.
                let answer = match policy.effect() {
                    cedar_policy::Effect::Permit => self
                        .runtime
                        .block_on(self.compiler.check_implies_opt(&all, &rest)),
                    cedar_policy::Effect::Forbid => self
                        .runtime
                        .block_on(self.compiler.check_implies_opt(&rest, &all)),
                };
                if !self.solved(env, answer)? {
                    changes = true;
                    break;
                }
            }
            if !changes {
                shadowed.push(policy.id().clone());
            }
        }
        Ok(shadowed)
    }

    /// Proves that `set` allows no request for `action` (a group: each of its actions).
    pub fn always_denied(
        &mut self,
        set: &PolicySet,
        action: &EntityUid,
    ) -> Result<Outcome, ProveError> {
        let environments = self.environments(Some(action))?;
        self.first_refutation(&environments, |p, env| {
            let compiled = p.compile(set, env)?;
            let answer = p.runtime.block_on(
                p.compiler
                    .check_always_denies_with_counterexample_opt(&compiled),
            );
            p.solved(env, answer)
        })
    }

    /// Asks `ask` of each environment in turn: the first counterexample refutes, none
    /// proves.
    fn first_refutation(
        &mut self,
        environments: &[RequestEnv],
        mut ask: impl FnMut(&mut Prover, &RequestEnv) -> Result<Option<Env>, ProveError>,
    ) -> Result<Outcome, ProveError> {
        for env in environments {
            if let Some(found) = ask(self, env)? {
                return Ok(refuted(env, found.request, found.entities));
            }
        }
        Ok(Outcome::Proved {
            environments: environments.len(),
        })
    }
}

fn refuted(env: &RequestEnv, request: cedar_policy::Request, entities: Entities) -> Outcome {
    Outcome::Refuted {
        environment: describe(env),
        counterexample: Box::new(Counterexample::new(request, entities)),
    }
}

/// `action` and every group it is in, transitively.
fn groups_of(actions: &Entities, action: &EntityUid) -> BTreeSet<EntityUid> {
    let mut out: BTreeSet<EntityUid> = actions
        .ancestors(action)
        .map(|a| a.cloned().collect())
        .unwrap_or_default();
    out.insert(action.clone());
    out
}
