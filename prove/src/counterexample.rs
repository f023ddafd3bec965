//! A refutation's witness: a request and the entities it needs, in the JSON forms
//! `lattice-policy authorize` reads, so anyone can replay it through Cedar's own authorizer.

use cedar_policy::{Authorizer, Decision, Entities, PolicySet, Request};
use serde_json::{Value, json};

/// A concrete request and entity store the solver produced.
#[derive(Debug)]
pub struct Counterexample {
    pub request: Request,
    pub entities: Entities,
}

impl Counterexample {
    pub fn new(request: Request, entities: Entities) -> Counterexample {
        Counterexample { request, entities }
    }

    /// `{"principal": "Lattice::User::\"…\"", "action": …, "resource": …, "context": {…}}`.
    pub fn request_json(&self) -> Value {
        let uid = |u: Option<&cedar_policy::EntityUid>| u.map(ToString::to_string);
        let context = self
            .request
            .context()
            .and_then(|c| c.to_json_value().ok())
            .unwrap_or_else(|| json!({}));
        json!({
            "principal": uid(self.request.principal()),
            "action": uid(self.request.action()),
            "resource": uid(self.request.resource()),
            "context": context,
        })
    }

    /// The entities, as Cedar's entity JSON.
    pub fn entities_json(&self) -> Value {
        self.entities.to_json_value().unwrap_or_else(|_| json!([]))
    }

    /// The entities the request reaches: its principal and resource and the groups they
    /// are in, transitively (the solver writes one entity of every type; the rest decide
    /// nothing here).
    pub fn entities_shown(&self) -> Value {
        let key = |uid: &Value| format!("{}::{}", uid["type"], uid["id"]);
        let all = match self.entities_json() {
            Value::Array(entities) => entities,
            _ => return json!([]),
        };
        let by_uid: std::collections::HashMap<String, &Value> =
            all.iter().map(|e| (key(&e["uid"]), e)).collect();
        let as_uid = |u: Option<&cedar_policy::EntityUid>| {
            u.map(|u| key(&json!({"type": u.type_name().to_string(), "id": u.id().unescaped()})))
        };
        let mut todo: Vec<String> = [
            as_uid(self.request.principal()),
            as_uid(self.request.resource()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut shown = Vec::new();
        while let Some(k) = todo.pop() {
            if !seen.insert(k.clone()) {
                continue;
            }
            if let Some(e) = by_uid.get(&k) {
                shown.push((*e).clone());
                if let Some(parents) = e["parents"].as_array() {
                    todo.extend(parents.iter().map(key));
                }
            }
        }
        Value::Array(shown)
    }

    /// How `policies` decide this request, by Cedar's concrete authorizer.
    pub fn decide(&self, policies: &PolicySet) -> Decision {
        Authorizer::new()
            .is_authorized(&self.request, policies, &self.entities)
            .decision()
    }

    /// Whether any policy of `policies` errors on this request.
    pub fn errors(&self, policies: &PolicySet) -> Vec<String> {
        Authorizer::new()
            .is_authorized(&self.request, policies, &self.entities)
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect()
    }
}
