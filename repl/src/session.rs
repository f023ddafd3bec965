//! A query session: one world, its policies and the snapshot of both, and every question the
//! REPL and the one-shot commands ask of it. Each answer comes as text for people and JSON
//! for machines, with the exit code a script sees (0 allow, 1 deny, 2 error).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cedar_policy::EntityUid;
use lattice_compiler::{CompileError, derive_in};
use lattice_engine::{Decision, PolicyChange, Query, Snapshot, Why, World};
use lattice_gates::{MeshPlan, evaluate, questions};
use lattice_schemas::crd::EnforcementMode;
use lattice_schemas::manifest::Object;
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::loading::{Loaded, try_load};
use crate::query::{context_for, parse_action, parse_uid, short};
use crate::style::Style;
use crate::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

/// One answer: what a person reads, what a script parses, and the exit code.
#[derive(Debug)]
pub struct Reply {
    pub text: String,
    pub json: Value,
    pub code: u8,
}

impl Reply {
    pub fn error(message: impl Into<String>) -> Reply {
        let message = message.into();
        Reply {
            text: format!("error: {message}\n"),
            json: json!({"error": message}),
            code: EXIT_USAGE,
        }
    }

    fn ok(text: String, json: Value) -> Reply {
        Reply {
            text,
            json,
            code: EXIT_OK,
        }
    }

    /// Text with no JSON form.
    pub fn text(text: String) -> Reply {
        Reply {
            json: json!({"text": text}),
            text,
            code: EXIT_OK,
        }
    }

    /// Nothing to say.
    pub fn ok_empty() -> Reply {
        Reply::text(String::new())
    }
}

/// The world and policies a session answers from, and the what-if changes applied on top.
pub struct Session {
    pub world_paths: Vec<PathBuf>,
    /// The rule-pack directory, or `None` for the bundled packs.
    pub policies: Option<PathBuf>,
    pub loaded: Loaded,
    /// The snapshot before the what-if changes (`None` when there are none).
    baseline: Option<Snapshot>,
    changes: Vec<PolicyChange>,
    pub style: Style,
}

impl Session {
    /// Loads a session; the error is the rendered diagnostics.
    pub fn open(world_paths: Vec<PathBuf>, policies: Option<PathBuf>) -> Result<Session, String> {
        let loaded = try_load(&world_paths, policies.as_deref())?;
        Ok(Session {
            world_paths,
            policies,
            loaded,
            baseline: None,
            changes: Vec::new(),
            style: Style::plain(),
        })
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.loaded.snapshot
    }

    /// Reloads the world and policies from disk. On any problem the session keeps its last
    /// good state and the problem is reported. What-if changes are kept and re-applied.
    pub fn reload(&mut self) -> Reply {
        match try_load(&self.world_paths, self.policies.as_deref()) {
            Ok(loaded) => {
                self.loaded = loaded;
                self.baseline = None;
                let changes = std::mem::take(&mut self.changes);
                let mut text = format!(
                    "reloaded: {} objects, {} policies — snapshot {}\n{}",
                    self.loaded.world.len(),
                    self.loaded.store.active().count(),
                    self.snapshot().digest(),
                    self.loaded.packs.line()
                );
                if !changes.is_empty() {
                    let r = self.apply_whatif(changes);
                    text.push_str(&r.text);
                }
                Reply::ok(
                    text,
                    json!({"reloaded": true, "snapshot": self.snapshot().digest(), "packs": self.loaded.packs.json()}),
                )
            }
            Err(diagnostics) => Reply {
                text: format!(
                    "{diagnostics}{}\n",
                    self.style
                        .warn("the edit is not applied; the last good snapshot stays")
                ),
                json: json!({"reloaded": false, "error": diagnostics}),
                code: EXIT_USAGE,
            },
        }
    }

    /// Adds a path to the world and reloads.
    pub fn load_path(&mut self, path: &Path) -> Reply {
        if !path.exists() {
            return Reply::error(format!("{} does not exist", path.display()));
        }
        self.world_paths.push(path.to_path_buf());
        let r = self.reload();
        if r.code != EXIT_OK {
            self.world_paths.pop();
        }
        r
    }

    fn query(&self, p: &str, a: &str, r: &str, ctx: Option<&str>) -> Result<Query, String> {
        let principal = parse_uid(p)?;
        let action = parse_action(a)?;
        let resource = parse_uid(r)?;
        let context = context_for(&principal, &action, &resource, &self.loaded.world, ctx)?;
        Ok(Query::new(principal, action, resource).with_context(context))
    }

    /// `can P A R [context]`: the decision and the policies that determined it.
    pub fn can(&self, p: &str, a: &str, r: &str, ctx: Option<&str>) -> Reply {
        let q = match self.query(p, a, r, ctx) {
            Ok(q) => q,
            Err(e) => return Reply::error(e),
        };
        match self.snapshot().decide(&q) {
            Ok(d) => {
                let mut text = format!("{}\n", self.verdict(d.allowed));
                if d.determining.is_empty() && !d.allowed {
                    text.push_str("  no policy permits it (default deny)\n");
                }
                for p in &d.determining {
                    text.push_str(&format!("  {} {}\n", effect(p), self.style.id(&p.id)));
                }
                text.push_str(&self.decision_notes(&d));
                Reply {
                    text,
                    json: decision_json(&q, &d),
                    code: if d.allowed { EXIT_OK } else { EXIT_FINDINGS },
                }
            }
            Err(e) => Reply::error(e.to_string()),
        }
    }

    fn verdict(&self, allowed: bool) -> String {
        if allowed {
            self.style.allow("ALLOW")
        } else {
            self.style.deny("DENY")
        }
    }

    fn decision_notes(&self, d: &Decision) -> String {
        let mut text = String::new();
        for p in &d.audit {
            text.push_str(&format!(
                "  {} audit policy {} would decide\n",
                self.style.warn("note:"),
                p.id
            ));
        }
        for e in d.errors.iter().chain(&d.audit_errors) {
            text.push_str(&format!(
                "  {} {} errored: {}\n",
                self.style.warn("note:"),
                e.policy.id,
                e.message
            ));
        }
        text.push_str(&format!("  snapshot {}\n", d.digest));
        text
    }

    /// `why P A R [context]`: the decision explained.
    pub fn why(&self, p: &str, a: &str, r: &str, ctx: Option<&str>) -> Reply {
        let q = match self.query(p, a, r, ctx) {
            Ok(q) => q,
            Err(e) => return Reply::error(e),
        };
        let e = match self.snapshot().explain(&q) {
            Ok(e) => e,
            Err(e) => return Reply::error(e.to_string()),
        };
        let mut text = format!("{}\n", self.verdict(e.decision.allowed));
        let mut why_json = json!({});
        match &e.why {
            Why::Permitted(ps) | Why::Forbidden(ps) => {
                let verb = if e.decision.allowed {
                    "permitted by"
                } else {
                    "forbidden by"
                };
                for p in ps {
                    text.push_str(&format!(
                        "  {verb} {} ({}:{})\n",
                        self.style.id(&p.id),
                        p.source,
                        p.line
                    ));
                    for line in p.text.lines() {
                        text.push_str(&format!("    │ {line}\n"));
                    }
                    if let Some(a) = p.annotations.get("advice") {
                        text.push_str(&format!("    advice: {a}\n"));
                    }
                }
                why_json = json!({"policies": ps.iter().map(|p| json!({"id": p.id, "source": p.source.to_string(), "line": p.line, "text": p.text})).collect::<Vec<_>>()});
            }
            Why::NothingPermitted(misses) => {
                text.push_str("  no policy permits it (default deny)\n");
                if let Some(reason) = self.connect_reason(&q) {
                    text.push_str(&format!("  mesh: {reason}\n"));
                    why_json["mesh"] = json!(reason);
                }
                if misses.is_empty() {
                    text.push_str("  no permit applies to this principal, action and resource\n");
                }
                for m in misses {
                    text.push_str(&format!(
                        "  nearest permit {} ({}:{})\n",
                        self.style.id(&m.policy.id),
                        m.policy.source,
                        m.policy.line
                    ));
                    if let Some(c) = &m.condition {
                        text.push_str(&format!("    condition `{c}` was {}\n", m.outcome));
                    }
                    if let Some(a) = m.policy.annotations.get("advice") {
                        text.push_str(&format!("    advice: {a}\n"));
                    }
                }
                why_json["nearMisses"] = json!(misses.iter().map(|m| json!({"id": m.policy.id, "condition": m.condition, "outcome": m.outcome})).collect::<Vec<_>>());
            }
        }
        text.push_str(&self.decision_notes(&e.decision));
        let mut j = decision_json(&q, &e.decision);
        j["why"] = why_json;
        Reply {
            text,
            json: j,
            code: if e.decision.allowed {
                EXIT_OK
            } else {
                EXIT_FINDINGS
            },
        }
    }

    /// For a `Connect` between services: which side's declaration is missing.
    fn connect_reason(&self, q: &Query) -> Option<String> {
        if q.action.id().unescaped() != "Connect" {
            return None;
        }
        let caller = q.principal.id().unescaped().to_owned();
        let callee = q.resource.id().unescaped().to_owned();
        let by_caller = self.loaded.world.workload(&caller).is_some_and(|o| {
            lattice_engine::project::declared_peers(o)
                .0
                .contains(&callee)
        });
        let by_callee = self.loaded.world.workload(&callee).is_some_and(|o| {
            lattice_engine::project::declared_peers(o)
                .1
                .contains(&caller)
        });
        Some(match (by_caller, by_callee) {
            (true, true) => "both sides declare the edge".into(),
            (true, false) => format!("{callee} does not list {caller} as a caller"),
            (false, true) => format!("{caller} does not list {callee} as a dependency"),
            (false, false) => format!("neither {caller} nor {callee} declares this edge"),
        })
    }

    fn workload(&self, id: &str) -> Option<&Object> {
        self.loaded.world.workload(id)
    }

    /// `gates NS/NAME`: every derivation question the workload raises and its answer.
    pub fn gates(&self, id: &str) -> Reply {
        let id = id.strip_prefix("Service::").unwrap_or(id);
        let Some(object) = self.workload(id) else {
            return Reply::error(format!(
                "no workload `{id}` in the world (write namespace/name)"
            ));
        };
        let report = evaluate(self.snapshot(), object);
        let mut text = String::new();
        let mut rows = Vec::new();
        for o in &report.outcomes {
            let (verdict, policies) = match &o.decision {
                Ok(d) => (
                    self.verdict(d.allowed),
                    d.determining
                        .iter()
                        .map(|p| p.id.clone())
                        .collect::<Vec<_>>(),
                ),
                Err(e) => (self.verdict(false), vec![format!("error: {e}")]),
            };
            text.push_str(&format!(
                "{verdict:<6} {} {} (raised by {})",
                o.gate.action,
                short(&o.gate.resource),
                o.gate.raised_by
            ));
            if !policies.is_empty() {
                text.push_str(&format!("  [{}]", policies.join(", ")));
            }
            text.push('\n');
            rows.push(json!({"action": o.gate.action, "resource": o.gate.resource.to_string(), "raisedBy": o.gate.raised_by, "allowed": o.allowed(), "policies": policies}));
        }
        let allowed = report.allowed();
        text.push_str(&format!(
            "{} of {} gates allowed — {} — snapshot {}\n",
            report.outcomes.iter().filter(|o| o.allowed()).count(),
            report.outcomes.len(),
            if allowed {
                "derives"
            } else {
                "derives nothing"
            },
            self.snapshot().digest()
        ));
        for w in report.audit_findings() {
            text.push_str(&format!("{} {w}\n", self.style.warn("warning:")));
        }
        Reply {
            text,
            json: json!({"workload": id, "allowed": allowed, "gates": rows, "snapshot": self.snapshot().digest()}),
            code: if allowed { EXIT_OK } else { EXIT_FINDINGS },
        }
    }

    /// `mesh [NAMESPACE]`: allowed edges, denied ones with reasons.
    pub fn mesh(&self, namespace: Option<&str>) -> Reply {
        let plan = MeshPlan::plan(self.snapshot(), &self.loaded.world);
        let (text, json) =
            crate::mesh::describe(&plan, self.snapshot(), &self.loaded.world, namespace, None);
        Reply::ok(text, json)
    }

    /// Every question the world raises: each workload's gates, each declared edge (with
    /// the mesh plan they come from), and `RunPod` for each pod the world's Kubernetes
    /// objects run.
    /// With each question, its decision on `base` where already known.
    fn every_query(
        &self,
        base: &Snapshot,
    ) -> (Vec<(String, Query)>, Vec<Option<Decision>>, MeshPlan) {
        let workloads: Vec<&Object> = self
            .loaded
            .world
            .objects()
            .filter(|(_, o)| o.is_workload())
            .map(|(_, o)| o)
            .collect();
        let asked: Vec<Vec<(String, Query)>> = workloads
            .par_iter()
            .map(|o| {
                let id = format!("{}/{}", o.namespace().unwrap_or("default"), o.name());
                let principal = lattice_engine::uid("Service", &id);
                questions(o)
                    .into_iter()
                    .filter(|g| g.malformed.is_none())
                    .filter_map(|g| {
                        let ctx = lattice_engine::context_from_json(&g.context).ok()?;
                        let q = Query::new(
                            principal.clone(),
                            lattice_engine::action(g.action),
                            g.resource,
                        )
                        .with_context(ctx);
                        Some((id.clone(), q))
                    })
                    .collect()
            })
            .collect();
        let mut out: Vec<(String, Query)> = asked.into_iter().flatten().collect();
        out.extend(lattice_gates::pod_security::world_questions(
            &self.loaded.world,
        ));
        let plan = MeshPlan::plan(base, &self.loaded.world);
        let mut known = vec![None; out.len()];
        let edges: Vec<&lattice_gates::EdgeDecision> = plan.edges().collect();
        let asked: Vec<((String, Query), Option<Decision>)> = edges
            .par_iter()
            .map(|e| {
                let q = plan.connect_query(&e.caller, &e.callee);
                // The plan has already decided the edge on `base`.
                ((e.callee.clone(), q), e.decision.as_ref().ok().cloned())
            })
            .collect();
        for (q, k) in asked {
            out.push(q);
            known.push(k);
        }
        (out, known, plan)
    }

    /// `whatif add FILE|POLICY`, `whatif remove ID`, `whatif disable NS/NAME`: applies the
    /// change on top of the earlier ones and shows what it changes.
    pub fn whatif(&mut self, change: PolicyChange) -> Reply {
        let mut changes = self.changes.clone();
        changes.push(change);
        self.apply_whatif(changes)
    }

    /// Drops every what-if change.
    pub fn whatif_reset(&mut self) -> Reply {
        if let Some(base) = self.baseline.take() {
            self.loaded.snapshot = base;
        }
        let n = self.changes.len();
        self.changes.clear();
        Reply::ok(
            format!(
                "what-if reset: {n} change(s) dropped — snapshot {}\n",
                self.snapshot().digest()
            ),
            json!({"dropped": n, "snapshot": self.snapshot().digest()}),
        )
    }

    fn apply_whatif(&mut self, changes: Vec<PolicyChange>) -> Reply {
        let base = self.baseline.as_ref().unwrap_or(&self.loaded.snapshot);
        let (keyed, known, before_plan) = self.every_query(base);
        let queries: Vec<Query> = keyed.iter().map(|(_, q)| q.clone()).collect();
        let after_store = match lattice_engine::what_if::apply_changes(&self.loaded.store, &changes)
        {
            Ok(s) => s,
            Err(e) => return Reply::error(format!("what-if not applied: {e}")),
        };
        let after =
            match base.with_policies(&self.loaded.world, &self.loaded.projection, &after_store) {
                Ok(s) => s,
                Err(e) => return Reply::error(format!("what-if not applied: {e}")),
            };
        let result = lattice_engine::what_if::compare_known(base, &after, &queries, &known);
        // The workloads whose decisions changed: their derived objects, before and after.
        let owner_of: BTreeMap<String, String> = keyed
            .iter()
            .map(|(owner, q)| (query_key(q), owner.clone()))
            .collect();
        let mut touched: Vec<String> = result
            .newly_allowed
            .iter()
            .chain(&result.newly_denied)
            .chain(&result.reasons_changed)
            .filter_map(|c| owner_of.get(&query_key(&c.query)).cloned())
            .collect();
        touched.sort();
        touched.dedup();
        // The plan after the change: the edges whose decision changed, re-decided.
        let mut after_plan = before_plan.clone();
        for c in result
            .newly_allowed
            .iter()
            .chain(&result.newly_denied)
            .chain(&result.reasons_changed)
            .filter(|c| c.query.action.id().unescaped() == "Connect")
        {
            after_plan.set_decision(
                c.query.principal.id().unescaped(),
                c.query.resource.id().unescaped(),
                Ok(c.after.clone()),
            );
        }
        let ctx = lattice_compiler::CompileContext::of(&self.loaded.world, base);
        // Each touched workload is derived twice and diffed, independently of the others.
        let diffs: Vec<String> = touched
            .par_iter()
            .filter_map(|id| {
                let object = self.workload(id)?;
                let b = rendered(base, &self.loaded.world, &before_plan, &ctx, object);
                let a = rendered(&after, &self.loaded.world, &after_plan, &ctx, object);
                (a != b).then(|| {
                    similar::TextDiff::from_lines(&b, &a)
                        .unified_diff()
                        .context_radius(2)
                        .header(&format!("{id} (before)"), &format!("{id} (after)"))
                        .to_string()
                })
            })
            .collect();
        let diff = diffs.concat();
        let line = |c: &lattice_engine::what_if::Changed| {
            format!(
                "{} {} {}",
                short(&c.query.principal),
                c.query.action.id().unescaped(),
                short(&c.query.resource)
            )
        };
        let mut text = String::new();
        text.push_str(&format!(
            "what-if ({} change(s)): {} decisions recomputed — {} newly allowed, {} newly denied, {} with other reasons, {} unchanged\n",
            changes.len(),
            queries.len(),
            result.newly_allowed.len(),
            result.newly_denied.len(),
            result.reasons_changed.len(),
            result.unchanged
        ));
        for c in &result.newly_allowed {
            text.push_str(&format!("  {} {}\n", self.style.allow("+ ALLOW"), line(c)));
        }
        for c in &result.newly_denied {
            let by: Vec<&str> = c.after.determining.iter().map(|p| p.id.as_str()).collect();
            text.push_str(&format!(
                "  {} {}{}\n",
                self.style.deny("- DENY "),
                line(c),
                if by.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", by.join(", "))
                }
            ));
        }
        for c in &result.reasons_changed {
            text.push_str(&format!("  ~ {}\n", line(c)));
        }
        if diff.is_empty() {
            text.push_str("derived objects: unchanged\n");
        } else {
            text.push_str("derived objects:\n");
            text.push_str(&self.style.diff(&diff));
        }
        text.push_str(&format!(
            "snapshot {} → {}\n",
            result.digest_before, result.digest_after
        ));
        let (proof, proof_json) = crate::prove::whatif_line(&self.loaded.store, &after_store);
        text.push_str(&proof);
        let j = json!({
            "proof": proof_json,
            "changes": changes.len(),
            "decisions": queries.len(),
            "newlyAllowed": result.newly_allowed.iter().map(&line).collect::<Vec<_>>(),
            "newlyDenied": result.newly_denied.iter().map(&line).collect::<Vec<_>>(),
            "reasonsChanged": result.reasons_changed.iter().map(&line).collect::<Vec<_>>(),
            "unchanged": result.unchanged,
            "diff": diff,
            "snapshotBefore": result.digest_before,
            "snapshotAfter": result.digest_after,
        });
        let code = if result.newly_denied.is_empty() {
            EXIT_OK
        } else {
            EXIT_FINDINGS
        };
        // The session now answers under the changed policies (until `whatif reset`).
        if self.baseline.is_none() {
            self.baseline = Some(std::mem::replace(&mut self.loaded.snapshot, after));
        } else {
            self.loaded.snapshot = after;
        }
        self.changes = changes;
        Reply {
            text,
            json: j,
            code,
        }
    }

    /// `entities [TYPE]`: the uids of the snapshot's entities, by type.
    pub fn entities(&self, ty: Option<&str>) -> Reply {
        let mut uids: Vec<String> = self
            .snapshot()
            .entities()
            .iter()
            .map(|e| e.uid())
            .filter(|u| {
                ty.is_none_or(|t| {
                    let name = u.type_name().to_string();
                    name == t || name == format!("Lattice::{t}")
                })
            })
            .map(|u| short(&u))
            .collect();
        uids.sort();
        let mut text = uids.join("\n");
        text.push_str(&format!("\n{} entities\n", uids.len()));
        Reply::ok(text, json!(uids))
    }

    /// `show UID`: one entity's attributes, tags and parents.
    pub fn show_entity(&self, text: &str) -> Reply {
        let uid = match parse_uid(text) {
            Ok(u) => u,
            Err(e) => return Reply::error(e),
        };
        match self.snapshot().entities().get(&uid) {
            None => Reply::error(format!("no entity {}", short(&uid))),
            Some(e) => match e.to_json_value() {
                Ok(v) => Reply::ok(
                    format!(
                        "{}\n",
                        serde_json::to_string_pretty(&v).expect("JSON values serialize")
                    ),
                    v,
                ),
                Err(err) => Reply::error(err.to_string()),
            },
        }
    }

    /// `policies [PACK]`: the active policies with their ids, effects and modes.
    pub fn policies(&self, pack: Option<&str>) -> Reply {
        let mut rows: Vec<_> = self
            .loaded
            .store
            .active()
            .filter(|p| pack.is_none_or(|k| p.info.id.starts_with(&format!("{k}/"))))
            .map(|p| {
                (
                    p.info.id.clone(),
                    effect(&p.info),
                    p.info.mode,
                    p.info.source.to_string(),
                )
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut text = String::new();
        for (id, eff, mode, source) in &rows {
            let mode = if *mode == EnforcementMode::Audit {
                " (audit)"
            } else {
                ""
            };
            text.push_str(&format!("{eff:<6} {id}{mode}  — {source}\n"));
        }
        text.push_str(&format!("{} policies\n", rows.len()));
        Reply::ok(
            text,
            json!(rows.iter().map(|(id, e, m, s)| json!({"id": id, "effect": e, "audit": *m == EnforcementMode::Audit, "source": s})).collect::<Vec<_>>()),
        )
    }

    /// `show policy ID`: one policy's source.
    pub fn show_policy(&self, id: &str) -> Reply {
        match self.loaded.store.active().find(|p| p.info.id == id) {
            None => Reply::error(format!("no active policy `{id}` (see `policies`)")),
            Some(p) => Reply::ok(
                format!(
                    "// {} ({}:{})\n{}\n",
                    p.info.id, p.info.source, p.info.line, p.info.text
                ),
                json!({"id": p.info.id, "source": p.info.source.to_string(), "line": p.info.line, "text": p.info.text}),
            ),
        }
    }

    /// Ids of the active policies, for completion.
    pub fn policy_ids(&self) -> Vec<String> {
        self.loaded
            .store
            .active()
            .map(|p| p.info.id.clone())
            .collect()
    }

    /// Short uids of every entity, for completion.
    pub fn entity_uids(&self) -> Vec<String> {
        self.snapshot()
            .entities()
            .iter()
            .map(|e| short(&e.uid()))
            .collect()
    }

    /// Pack names, for completion.
    pub fn pack_names(&self) -> Vec<String> {
        self.loaded
            .store
            .packs()
            .map(|p| p.meta.name.clone())
            .collect()
    }
}

fn effect(p: &lattice_engine::PolicyInfo) -> &'static str {
    match p.effect {
        cedar_policy::Effect::Permit => "permit",
        cedar_policy::Effect::Forbid => "forbid",
    }
}

fn query_key(q: &Query) -> String {
    format!("{}|{}|{}", q.principal, q.action, q.resource)
}

fn uid_json(u: &EntityUid) -> Value {
    json!(u.to_string())
}

fn decision_json(q: &Query, d: &Decision) -> Value {
    json!({
        "principal": uid_json(&q.principal),
        "action": uid_json(&q.action),
        "resource": uid_json(&q.resource),
        "decision": if d.allowed { "allow" } else { "deny" },
        "determining": d.determining.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        "audit": d.audit.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        "errors": d.errors.iter().map(|e| json!({"policy": e.policy.id, "message": e.message})).collect::<Vec<_>>(),
        "snapshot": d.digest,
    })
}

/// A workload's derived objects as YAML, or its denial, for diffs.
fn rendered(
    snapshot: &Snapshot,
    world: &World,
    plan: &MeshPlan,
    ctx: &lattice_compiler::CompileContext,
    object: &Object,
) -> String {
    match derive_in(snapshot, world, plan, ctx, object) {
        Ok(d) => d
            .objects
            .iter()
            .map(lattice_schemas::generate::to_yaml)
            .collect(),
        Err(CompileError::Denied { gates, .. }) => gates
            .iter()
            .map(|g| {
                format!(
                    "# DENIED {} {} (raised by {})\n",
                    g.action, g.resource, g.raised_by
                )
            })
            .collect(),
        Err(e) => format!("# error: {e}\n"),
    }
}
