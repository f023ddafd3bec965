//! Explanations: why a decision came out the way it did.
//!
//! - allowed: the permits that fired;
//! - denied by a forbid: the forbids that fired (or errored);
//! - denied because nothing permitted: each permit whose scope matched the request, with
//!   the first condition (conjunct of its `when`, or its `unless`) that did not hold, the
//!   expression's text and what it evaluated to.

use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{Effect, EvalResult, Expression, Policy, PolicyId, eval_expression};
use serde_json::{Value, json};

use crate::policies::PolicyInfo;
use crate::snapshot::{Decision, Query, QueryError, Snapshot};

/// A permit that matched the request's scope but did not fire.
#[derive(Clone, Debug)]
pub struct NearMiss {
    pub policy: Arc<PolicyInfo>,
    /// The condition that did not hold: its Cedar text.
    pub condition: Option<String>,
    /// What it evaluated to (`false`, `true` for an `unless`, or the error).
    pub outcome: String,
}

/// Why a decision came out as it did.
#[derive(Clone, Debug)]
pub enum Why {
    Permitted(Vec<Arc<PolicyInfo>>),
    Forbidden(Vec<Arc<PolicyInfo>>),
    /// Default deny: the permits that came closest, and what stopped each.
    NothingPermitted(Vec<NearMiss>),
}

/// A decision and its explanation.
#[derive(Clone, Debug)]
pub struct Explanation {
    pub decision: Decision,
    pub why: Why,
}

impl Explanation {
    /// What to tell whoever was refused: the `@advice` of the first deciding policy that has
    /// one, or, for a default deny, of the permit that came closest. `None` when allowed or
    /// when no such policy says any.
    pub fn advice(&self) -> Option<String> {
        match &self.why {
            Why::Permitted(_) => None,
            Why::Forbidden(policies) => policies
                .iter()
                .find_map(|p| p.annotations.get("advice").cloned()),
            Why::NothingPermitted(near) => near
                .iter()
                .find_map(|n| n.policy.annotations.get("advice").cloned()),
        }
    }
}

impl Snapshot {
    /// Decides `q` and explains the answer.
    pub fn explain(&self, q: &Query) -> Result<Explanation, QueryError> {
        let decision = self.decide(q)?;
        let why = if decision.allowed {
            Why::Permitted(decision.determining.clone())
        } else if !decision.determining.is_empty() {
            Why::Forbidden(decision.determining.clone())
        } else {
            Why::NothingPermitted(self.near_misses(q)?)
        };
        Ok(Explanation { decision, why })
    }

    fn near_misses(&self, q: &Query) -> Result<Vec<NearMiss>, QueryError> {
        let request = self.request(q)?;
        let mut out = Vec::new();
        for policy in self.enforce_index().scope_matches(
            &q.principal,
            &q.action,
            &q.resource,
            self.entities(),
        ) {
            if policy.effect() != Effect::Permit {
                continue;
            }
            let Some(info) = self.policy_info(policy.id()).cloned() else {
                continue;
            };
            let (condition, outcome) = match failing_condition(policy, &request, self) {
                Some((text, outcome)) => (Some(text), outcome),
                None => (
                    None,
                    "the scope matched but the policy did not apply".to_owned(),
                ),
            };
            out.push(NearMiss {
                policy: info,
                condition,
                outcome,
            });
        }
        Ok(out)
    }
}

/// The first conjunct of a `when` that is not true, or an `unless` that is not false.
fn failing_condition(
    policy: &Policy,
    request: &cedar_policy::Request,
    snapshot: &Snapshot,
) -> Option<(String, String)> {
    let est = policy.to_json().ok()?;
    for cond in est.get("conditions")?.as_array()? {
        let unless = cond.get("kind").and_then(Value::as_str) == Some("unless");
        let body = cond.get("body")?;
        let parts = if unless {
            vec![body.clone()]
        } else {
            conjuncts(body)
        };
        for part in parts {
            let text = expression_text(&part)?;
            let expr = Expression::from_str(&text).ok()?;
            let outcome = match eval_expression(request, snapshot.entities(), &expr) {
                Ok(EvalResult::Bool(b)) if b != unless => continue,
                Ok(v) => format!("{v}"),
                Err(e) => format!("error: {e}"),
            };
            let shown = if unless {
                format!("unless {{ {text} }}")
            } else {
                text
            };
            return Some((shown, outcome));
        }
    }
    None
}

/// `a && b && c` → `[a, b, c]` (in the JSON form of Cedar expressions).
fn conjuncts(body: &Value) -> Vec<Value> {
    match body.get("&&") {
        Some(and) => {
            let mut out = conjuncts(&and["left"]);
            out.extend(conjuncts(&and["right"]));
            out
        }
        None => vec![body.clone()],
    }
}

/// The Cedar text of an expression in JSON form, printed by Cedar itself.
fn expression_text(expr: &Value) -> Option<String> {
    let wrapper = json!({
        "effect": "permit",
        "principal": {"op": "All"},
        "action": {"op": "All"},
        "resource": {"op": "All"},
        "conditions": [{"kind": "when", "body": expr}]
    });
    let policy = Policy::from_json(Some(PolicyId::new("explain")), wrapper).ok()?;
    let printed = policy.to_string();
    let start = printed.find("when {")? + "when {".len();
    let end = printed.rfind('}')?;
    Some(printed[start..end].trim().to_owned())
}
