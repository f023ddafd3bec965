//! Reading an entity's attributes for explanations and reports: what the facts say, never a
//! decision (those are Cedar's).

/// Whether `name` of `e` is `true` (absent or of another type: false).
pub(crate) fn bool_attr(e: &cedar_policy::Entity, name: &str) -> bool {
    matches!(
        e.attr(name).and_then(Result::ok),
        Some(cedar_policy::EvalResult::Bool(true))
    )
}

/// `name` of `e` as a string (absent or of another type: empty).
pub(crate) fn string_attr(e: &cedar_policy::Entity, name: &str) -> String {
    match e.attr(name).and_then(Result::ok) {
        Some(cedar_policy::EvalResult::String(s)) => s,
        _ => String::new(),
    }
}

/// The strings of the set `name` of `e` (absent or of another type: none).
pub(crate) fn set_attr(e: &cedar_policy::Entity, name: &str) -> Vec<String> {
    match e.attr(name).and_then(Result::ok) {
        Some(cedar_policy::EvalResult::Set(items)) => items
            .iter()
            .filter_map(|v| match v {
                cedar_policy::EvalResult::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}
