//! The frameworks a policy store can evidence: their controls, families, the controls Lattice
//! cannot assess, and the checks (`forbid`s on `Comply`) that evidence each control.
//!
//! A rule pack with `framework:` in its `pack.yaml` names the framework and its controls.
//! Any active forbid on `Comply` whose resource is `Lattice::Framework::"<id>"` is a check of
//! that framework, wherever it came from (a pack or a CedarPolicy object).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cedar_policy::Effect;
use lattice_engine::{PolicyInfo, PolicyStore};
use lattice_gates::compliance::{SubjectKind, applies_to, framework_of};
use lattice_schemas::crd::EnforcementMode;
use rayon::prelude::*;

/// The frameworks Lattice ships packs for, in report order.
pub const FRAMEWORKS: [&str; 4] = ["nist-800-53", "soc2", "cis-kubernetes", "pod-security"];

/// One framework and everything a scan reports about it.
#[derive(Clone, Debug)]
pub struct Framework {
    /// `nist-800-53`, `soc2`, `cis-kubernetes`.
    pub id: String,
    pub title: String,
    /// The pack that defines it: (name, version).
    pub pack: Option<(String, String)>,
    /// Control id (as the framework writes it: `SC-7(5)`, `CC6.1`, `5.2.2`) → title.
    pub controls: BTreeMap<String, String>,
    /// Family id → title.
    pub families: BTreeMap<String, String>,
    /// Control id → why Lattice cannot assess it.
    pub not_assessed: BTreeMap<String, String>,
    /// Control id → what part of its objective the checks do not show: a control listed
    /// here whose checks pass is "partially evidenced", not satisfied.
    pub partial: BTreeMap<String, String>,
    pub checks: Vec<Check>,
}

/// One compliance check.
#[derive(Clone, Debug)]
pub struct Check {
    pub policy: Arc<PolicyInfo>,
    pub title: String,
    /// `critical`, `high`, `medium` or `low`.
    pub severity: String,
    pub remediation: String,
    /// Control ids of this framework the check evidences.
    pub controls: Vec<String>,
    pub applies_to: BTreeSet<SubjectKind>,
    /// Deviations the check lets an approved exception excuse: the override categories its
    /// condition tests in `context.unapprovedOverrides`, and `wildcard` when it reads
    /// `context.unapprovedWildcards`. A subject that passes while holding one of them
    /// passes with an approved exception.
    pub tolerates: BTreeSet<String>,
}

impl Check {
    /// The check's stable id (its policy id).
    pub fn id(&self) -> &str {
        &self.policy.id
    }
}

/// Why the catalog is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("unknown framework `{0}`; known: {1}")]
    UnknownFramework(String, String),
    #[error("check {check}: {message}")]
    BadCheck { check: String, message: String },
    /// A pack's `partial:` names a control its `controls:` does not: a typo there would
    /// silently let the control read "satisfied".
    #[error("pack {pack}: `partial` names {control}, which is not one of the pack's `controls`")]
    UnknownPartial { pack: String, control: String },
}

/// The family a control id belongs to: `SC` for `SC-7(5)`, `CC6` for `CC6.1`, `5.2` for
/// `5.2.2`.
pub fn family_of(control: &str) -> String {
    if let Some((family, _)) = control.split_once('-') {
        return family.to_owned();
    }
    if control.starts_with(|c: char| c.is_ascii_digit()) {
        let parts: Vec<&str> = control.split('.').collect();
        return parts[..parts.len().min(2)].join(".");
    }
    control.split('.').next().unwrap_or(control).to_owned()
}

impl Framework {
    /// The family of a control with its title, e.g. (`SC`, `System and Communications
    /// Protection`).
    pub fn family(&self, control: &str) -> (String, String) {
        let id = family_of(control);
        let title = self
            .families
            .get(&id)
            .cloned()
            .unwrap_or_else(|| id.clone());
        (id, title)
    }
}

/// The frameworks `store` evidences; with `only`, just those (in that order).
pub fn frameworks(store: &PolicyStore, only: &[String]) -> Result<Vec<Framework>, CatalogError> {
    let mut by_id: BTreeMap<String, Framework> = BTreeMap::new();
    for pack in store.packs() {
        let Some(id) = &pack.meta.framework else {
            continue;
        };
        if let Some(control) = pack
            .meta
            .partial
            .keys()
            .find(|c| !pack.meta.controls.contains_key(*c))
        {
            return Err(CatalogError::UnknownPartial {
                pack: pack.meta.name.clone(),
                control: control.clone(),
            });
        }
        by_id.insert(
            id.clone(),
            Framework {
                id: id.clone(),
                title: pack.meta.title.clone().unwrap_or_else(|| id.clone()),
                pack: Some((pack.meta.name.clone(), pack.meta.version.clone())),
                controls: pack.meta.controls.clone(),
                families: pack.meta.families.clone(),
                not_assessed: pack.meta.not_assessed.clone(),
                partial: pack.meta.partial.clone(),
                checks: Vec::new(),
            },
        );
    }
    let candidates: Vec<_> = store
        .active()
        .filter(|p| p.info.effect == Effect::Forbid && p.info.mode == EnforcementMode::Enforce)
        .filter_map(|p| Some((p, framework_of(&p.policy)?)))
        .collect();
    // Reading a check parses its policy again (for its JSON form): on every core.
    let checks: Vec<Result<Check, CatalogError>> = candidates
        .par_iter()
        .map(|(p, fw)| check(&p.info, &p.policy, fw))
        .collect();
    for ((_, fw), check) in candidates.into_iter().zip(checks) {
        let framework = by_id.entry(fw.clone()).or_insert_with(|| Framework {
            id: fw.clone(),
            title: fw.clone(),
            pack: None,
            controls: BTreeMap::new(),
            families: BTreeMap::new(),
            not_assessed: BTreeMap::new(),
            partial: BTreeMap::new(),
            checks: Vec::new(),
        });
        framework.checks.push(check?);
    }
    let order = |id: &str| {
        FRAMEWORKS
            .iter()
            .position(|f| *f == id)
            .unwrap_or(FRAMEWORKS.len())
    };
    let mut all: Vec<Framework> = by_id.into_values().collect();
    all.sort_by(|a, b| (order(&a.id), &a.id).cmp(&(order(&b.id), &b.id)));
    if only.is_empty() {
        return Ok(all);
    }
    only.iter()
        .map(|want| {
            all.iter().find(|f| &f.id == want).cloned().ok_or_else(|| {
                CatalogError::UnknownFramework(
                    want.clone(),
                    all.iter()
                        .map(|f| f.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })
        })
        .collect()
}

/// A check from its policy: `@control("<framework>:<id>[, …]")`, `@title`, `@severity`,
/// `@remediation`. A check without a control of its own framework evidences nothing and is
/// refused, as is a severity outside the four levels.
fn check(
    info: &Arc<PolicyInfo>,
    policy: &cedar_policy::Policy,
    framework: &str,
) -> Result<Check, CatalogError> {
    let bad = |message: String| CatalogError::BadCheck {
        check: info.id.clone(),
        message,
    };
    let annotation = |k: &str| info.annotations.get(k).cloned().unwrap_or_default();
    let mut controls = Vec::new();
    for c in annotation("control")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        match c.split_once(':') {
            Some((fw, id)) if fw == framework && !id.is_empty() => controls.push(id.to_owned()),
            _ => {
                return Err(bad(format!(
                    "@control `{c}` is not `{framework}:<control id>`"
                )));
            }
        }
    }
    if controls.is_empty() {
        return Err(bad(format!(
            "no @control(\"{framework}:…\"): a check must say which controls it evidences"
        )));
    }
    let severity = annotation("severity");
    if !["critical", "high", "medium", "low"].contains(&severity.as_str()) {
        return Err(bad(format!(
            "@severity must be critical, high, medium or low, not `{severity}`"
        )));
    }
    let title = annotation("title");
    Ok(Check {
        policy: info.clone(),
        title: if title.is_empty() {
            info.id.clone()
        } else {
            title
        },
        severity,
        remediation: annotation("remediation"),
        controls,
        applies_to: applies_to(policy),
        tolerates: policy
            .to_json()
            .map(|est| {
                let mut out = BTreeSet::new();
                tolerated(&est, &mut out);
                out
            })
            .unwrap_or_default(),
    })
}

/// The deviations a check's condition lets an approval excuse (see [`Check::tolerates`]),
/// read from its JSON form: `context.unapprovedOverrides.contains("<category>")` and any
/// reading of `context.unapprovedWildcards`.
fn tolerated(est: &serde_json::Value, out: &mut BTreeSet<String>) {
    use serde_json::Value;
    let context_attr = |v: &Value| -> Option<String> {
        let dot = v.get(".")?;
        (dot.get("left")?.get("Var")?.as_str()? == "context")
            .then(|| dot.get("attr")?.as_str().map(str::to_owned))?
    };
    match est {
        Value::Object(map) => {
            if let Some(call) = map.get("contains")
                && let Some(left) = call.get("left")
                && context_attr(left).as_deref() == Some("unapprovedOverrides")
                && let Some(category) = call
                    .get("right")
                    .and_then(|r| r.get("Value"))
                    .and_then(Value::as_str)
            {
                out.insert(category.to_owned());
            }
            if context_attr(est).as_deref() == Some("unapprovedWildcards") {
                out.insert("wildcard".into());
            }
            for v in map.values() {
                tolerated(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| tolerated(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::family_of;

    #[test]
    fn families_follow_each_frameworks_numbering() {
        assert_eq!(family_of("SC-7(5)"), "SC");
        assert_eq!(family_of("AC-6"), "AC");
        assert_eq!(family_of("CC6.1"), "CC6");
        assert_eq!(family_of("5.2.2"), "5.2");
        assert_eq!(family_of("5.7.4"), "5.7");
    }
}
