//! The Cedar schema of Lattice and strict checking of policy text against it.

use std::collections::HashMap;
use std::ops::Range;
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

/// The text of `schemas/lattice.cedarschema`.
pub const SCHEMA_TEXT: &str = include_str!("../lattice.cedarschema");

/// The Cedar namespace every Lattice entity type and action lives in.
pub const NAMESPACE: &str = "Lattice";

/// The parsed Lattice schema.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        // The schema is part of this crate and a unit test parses it; failing here is a
        // build defect, not bad input.
        Schema::from_cedarschema_str(SCHEMA_TEXT)
            .expect("schemas/lattice.cedarschema parses (tested)")
            .0
    })
}

/// A problem found in policy text, located in that text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyProblem {
    pub message: String,
    /// Byte range in the checked text.
    pub span: Range<usize>,
    pub help: Option<String>,
    /// Warnings do not stop a policy from loading.
    pub warning: bool,
    /// For a duplicate id: where the first policy with that id stands in the text.
    pub first: Option<Range<usize>>,
}

/// What checking a policy text found.
#[derive(Debug, Default)]
pub struct PolicyCheck {
    /// The parsed policies, when the text parsed.
    pub policies: Option<PolicySet>,
    /// Each policy's `@id` and where the policy stands in the text, in source order.
    pub ids: Vec<(Option<String>, Range<usize>)>,
    pub problems: Vec<PolicyProblem>,
}

impl PolicyCheck {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| !p.warning)
    }
}

/// Parses `text`, requires a unique `@id` on every policy, and validates strictly against
/// the Lattice schema.
pub fn check_policies(text: &str) -> PolicyCheck {
    let mut check = PolicyCheck::default();
    let set = match PolicySet::from_str(text) {
        Ok(set) => set,
        Err(errors) => {
            for e in errors.iter() {
                check.problems.push(problem_from(e, text, false));
            }
            return check;
        }
    };
    let spans = statement_spans(text);
    // `from_str` numbers policies `policy0`, `policy1`, … in source order.
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    for (i, span) in spans.iter().enumerate() {
        let pid = cedar_policy::PolicyId::new(format!("policy{i}"));
        let id = set
            .policy(&pid)
            .and_then(|p| p.annotation("id"))
            .map(str::to_owned);
        match &id {
            None => check.problems.push(PolicyProblem {
                message: "policy has no `@id` annotation".into(),
                span: head(text, span),
                help: Some("add `@id(\"a-stable-name\")` before the effect; ids name policies in decisions and must be unique".into()),
                warning: false,
                first: None,
            }),
            Some(id) if id.trim().is_empty() => check.problems.push(PolicyProblem {
                message: "policy `@id` is empty".into(),
                span: head(text, span),
                help: Some("give the policy a stable, non-empty name".into()),
                warning: false,
                first: None,
            }),
            Some(id) => {
                if let Some(first) = seen.get(id) {
                    check.problems.push(PolicyProblem {
                        message: format!("duplicate `@id(\"{id}\")`"),
                        span: head(text, span),
                        help: Some("every policy id must be unique within its pack or CedarPolicy".into()),
                        warning: false,
                        first: Some(first.clone()),
                    });
                } else {
                    seen.insert(id.clone(), span.clone());
                }
            }
        }
        check.ids.push((id, span.clone()));
    }
    let result = Validator::new(schema().clone()).validate(&set, ValidationMode::Strict);
    let start = check.problems.len();
    for e in result.validation_errors() {
        check.problems.push(problem_from(e, text, false));
    }
    for w in result.validation_warnings() {
        check.problems.push(problem_from(w, text, true));
    }
    // Cedar names policies by their generated ids; users know them by `@id`.
    for p in &mut check.problems[start..] {
        for (i, (id, _)) in check.ids.iter().enumerate().rev() {
            if let Some(id) = id {
                p.message = p
                    .message
                    .replace(&format!("policy `policy{i}`"), &format!("policy `{id}`"));
            }
        }
    }
    check.policies = Some(set);
    check
}

/// The first line of a policy, for pointing at it as a whole.
fn head(text: &str, span: &Range<usize>) -> Range<usize> {
    let s = &text[span.clone()];
    let end = s.find('\n').map(|i| span.start + i).unwrap_or(span.end);
    span.start..end.max(span.start + 1).min(text.len())
}

fn problem_from(d: &dyn Diagnostic, text: &str, warning: bool) -> PolicyProblem {
    let span = d
        .labels()
        .and_then(|mut l| l.next())
        .map(|l| {
            let start = l.offset().min(text.len());
            start..(start + l.len()).min(text.len())
        })
        .unwrap_or(0..0);
    let mut message = d.to_string();
    // Cedar's top-level message is generic for some errors; the cause says what is wrong.
    let mut cause = std::error::Error::source(d);
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !message.contains(&c_text) {
            message = format!("{message}: {c_text}");
        }
        cause = c.source();
    }
    PolicyProblem {
        message,
        span,
        help: d.help().map(|h| h.to_string()),
        warning,
        first: None,
    }
}

/// The byte range of each top-level statement (policy) in Cedar text, in source order,
/// from its first annotation or effect keyword through its closing `;`. Comments and string
/// literals are skipped, so a `;` inside them does not end a statement.
pub fn statement_spans(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut start: Option<usize> = None;
    let mut depth = 0i32;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                start.get_or_insert(i);
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' | b'{' | b'[' => {
                start.get_or_insert(i);
                depth += 1;
            }
            b')' | b'}' | b']' => depth -= 1,
            b';' if depth <= 0 => {
                if let Some(s) = start.take() {
                    spans.push(s..i + 1);
                }
                depth = 0;
            }
            b if !b.is_ascii_whitespace() => {
                start.get_or_insert(i);
            }
            _ => {}
        }
        i += 1;
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parses() {
        let (_, warnings) = Schema::from_cedarschema_str(SCHEMA_TEXT).expect("schema parses");
        let warnings: Vec<_> = warnings.map(|w| w.to_string()).collect();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(schema().actions().count() > 20);
    }

    #[test]
    fn statement_spans_skip_comments_and_strings() {
        let text = "// a; comment\n@id(\"a;b\") permit(principal, action, resource);\n\nforbid(principal, action, resource) when { context has \"x;\" };";
        let spans = statement_spans(text);
        assert_eq!(spans.len(), 2);
        assert!(text[spans[0].clone()].starts_with("@id(\"a;b\")"));
        assert!(text[spans[1].clone()].starts_with("forbid"));
        assert!(text[spans[1].clone()].ends_with("};"));
    }

    #[test]
    fn a_valid_policy_passes() {
        let c = check_policies(
            r#"@id("ok") permit(principal, action == Lattice::Action::"Connect", resource) when { principal.dependencies.contains(resource) };"#,
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.ids[0].0.as_deref(), Some("ok"));
    }

    #[test]
    fn missing_and_duplicate_ids_are_errors() {
        let text = "permit(principal, action, resource);\n@id(\"x\") permit(principal, action, resource);\n@id(\"x\") forbid(principal, action, resource);";
        let c = check_policies(text);
        let messages: Vec<_> = c.problems.iter().map(|p| p.message.as_str()).collect();
        let dup = c.problems.iter().find(|p| p.first.is_some()).unwrap();
        assert_eq!(&text[dup.first.clone().unwrap()][..8], "@id(\"x\")");
        assert!(
            messages.iter().any(|m| m.contains("no `@id`")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("duplicate `@id(\"x\")`")),
            "{messages:?}"
        );
    }

    #[test]
    fn schema_violations_point_into_the_text() {
        let text = "@id(\"bad\")\npermit(principal, action == Lattice::Action::\"Connect\", resource)\nwhen { principal.nosuch == 1 };";
        let c = check_policies(text);
        assert!(c.has_errors());
        let p = &c.problems[0];
        assert!(p.message.contains("nosuch"), "{}", p.message);
        assert!(
            text[p.span.clone()].contains("nosuch"),
            "{:?}",
            &text[p.span.clone()]
        );
    }

    #[test]
    fn parse_errors_are_located() {
        let text = "@id(\"x\") permit(principal, action, resource) when { 1 + };";
        let c = check_policies(text);
        assert!(c.has_errors());
        assert!(c.problems[0].span.start > 0);
    }
}
