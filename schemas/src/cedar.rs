//! The Cedar schema of Lattice and strict checking of policy text against it.
//!
//! Policy text is untrusted input (any user may send a CedarPolicy to the webhook), and
//! Cedar 4.14 parses, validates and evaluates it by recursion with no bound of its own: a
//! policy nested a few hundred levels deep overflows a thread's stack and aborts the
//! process. So text is measured before Cedar sees it ([`nesting`], a scan of tokens written
//! here because no crate measures Cedar's nesting), refused past [`MAX_NESTING`] levels or
//! [`MAX_DEPTH`] of estimated expression depth, and parsed and validated on a thread with a
//! stack of [`PARSE_STACK`] bytes.

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

/// The deepest nesting of parentheses, brackets, braces and `if`s a policy may have.
pub const MAX_NESTING: usize = 32;
/// The deepest expression a policy may build, estimated as each open nesting level
/// counting 16 and each binary operator (`||`, `&&`, `==`, `+`, `.`, …) at an open level
/// counting 1: Cedar's trees are as deep as its operator chains are long.
pub const MAX_DEPTH: usize = 768;
/// The stack policy text is parsed and validated on (reserved, not committed, until used).
pub const PARSE_STACK: usize = 256 << 20;
/// The stack of every thread that decides (the binaries' runtimes and rayon pools): with
/// policies bounded by [`MAX_NESTING`] and [`MAX_DEPTH`], evaluation stays far inside it.
pub const DECIDE_STACK: usize = 16 << 20;

/// How deeply policy text nests, measured before any parser sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nesting {
    /// The deepest nesting of `(`, `[`, `{` and `if`.
    pub levels: usize,
    /// The deepest estimated expression (see [`MAX_DEPTH`]).
    pub depth: usize,
    /// Where the first bound was passed, when one was.
    pub exceeded_at: Option<usize>,
}

/// Measures `text`: strings and comments are skipped; each `;` at the top level ends a
/// policy and resets the count. Linear in the text, no recursion.
pub fn nesting(text: &str) -> Nesting {
    let bytes = text.as_bytes();
    let mut out = Nesting::default();
    // Per open level: (is an `if`, binary operators seen at that level).
    let mut stack: Vec<(bool, usize)> = vec![(false, 0)];
    let depth_of = |stack: &[(bool, usize)]| -> usize {
        stack.iter().skip(1).map(|(_, ops)| 16 + ops).sum::<usize>() + stack[0].1
    };
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let note = |stack: &Vec<(bool, usize)>, at: usize, out: &mut Nesting| {
            let levels = stack.len() - 1;
            let depth = depth_of(stack);
            out.levels = out.levels.max(levels);
            out.depth = out.depth.max(depth);
            if out.exceeded_at.is_none() && (levels > MAX_NESTING || depth > MAX_DEPTH) {
                out.exceeded_at = Some(at);
            }
        };
        match b {
            b'"' => {
                // A string literal: skip to its closing quote, past escapes.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                stack.push((false, 0));
                note(&stack, i, &mut out);
            }
            b')' | b']' | b'}' => {
                // Close the `if`s this bracket encloses, then the bracket itself.
                while stack.len() > 1 && stack.last().is_some_and(|(is_if, _)| *is_if) {
                    stack.pop();
                }
                if stack.len() > 1 {
                    stack.pop();
                }
            }
            b';' if stack.len() == 1 || stack.iter().all(|(is_if, _)| *is_if) => {
                stack.truncate(1);
                stack[0].1 = 0;
            }
            b'i' if word_at(bytes, i, b"if") => {
                stack.push((true, 0));
                note(&stack, i, &mut out);
                i += 1;
            }
            b'&' | b'|' | b'=' | b'!' | b'<' | b'>' | b'+' | b'-' | b'*' | b'.' => {
                // A two-character operator counts once.
                if matches!(
                    (b, bytes.get(i + 1)),
                    (b'&', Some(b'&'))
                        | (b'|', Some(b'|'))
                        | (b'=' | b'!' | b'<' | b'>', Some(b'='))
                ) {
                    i += 1;
                }
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                note(&stack, i, &mut out);
            }
            b'i' if word_at(bytes, i, b"in") => {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                note(&stack, i, &mut out);
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Whether the keyword `word` stands at `i` (not inside a longer identifier).
fn word_at(bytes: &[u8], i: usize, word: &[u8]) -> bool {
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    bytes[i..].starts_with(word)
        && (i == 0 || !ident(bytes[i - 1]))
        && bytes.get(i + word.len()).is_none_or(|b| !ident(*b))
}

/// The problem of text that nests past the bounds, located where it first did; `None` when
/// it is within them.
pub fn nesting_problem(text: &str) -> Option<PolicyProblem> {
    let n = nesting(text);
    let at = n.exceeded_at?;
    let end = text[at..]
        .char_indices()
        .nth(1)
        .map_or(text.len(), |(i, _)| at + i);
    Some(PolicyProblem {
        message: if n.levels > MAX_NESTING {
            format!(
                "policy text nests {} levels deep (parentheses, brackets, braces and `if`s); at most {MAX_NESTING} are accepted",
                n.levels
            )
        } else {
            format!(
                "policy expression is too deep (an estimated depth of {}; at most {MAX_DEPTH}): long chains of operators build deep trees",
                n.depth
            )
        },
        span: at..end,
        help: Some(
            "split the condition into several policies, or use a set (`[\"a\", \"b\"].contains(x)`) instead of long `||` chains".into(),
        ),
        warning: false,
        first: None,
    })
}

/// Runs `work` on a thread with a [`PARSE_STACK`]-byte stack (Cedar's parser and validator
/// recurse). A panic in `work` comes back as an error rather than unwinding further.
pub fn on_parse_stack<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cedar-parse".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(scope, work)
            .map_err(|e| format!("cannot start the policy parser: {e}"))?
            .join()
            .map_err(|_| "the policy parser failed on this text".to_owned())
    })
}

/// Parses untrusted policy text: refused past the nesting bounds, parsed on a large stack.
/// What every path that reads policy text not already checked by [`check_policies`] uses.
pub fn parse_bounded(text: &str) -> Result<PolicySet, String> {
    if let Some(p) = nesting_problem(text) {
        return Err(p.message);
    }
    on_parse_stack(|| PolicySet::from_str(text).map_err(|e| e.to_string()))?
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
/// the Lattice schema. Text past the nesting bounds is refused before Cedar reads it; the
/// rest is parsed and validated on a large stack.
pub fn check_policies(text: &str) -> PolicyCheck {
    if let Some(problem) = nesting_problem(text) {
        return PolicyCheck {
            problems: vec![problem],
            ..PolicyCheck::default()
        };
    }
    match on_parse_stack(|| check_within_bounds(text)) {
        Ok(check) => check,
        Err(message) => PolicyCheck {
            problems: vec![PolicyProblem {
                message,
                span: 0..text.len().min(1),
                help: None,
                warning: false,
                first: None,
            }],
            ..PolicyCheck::default()
        },
    }
}

fn check_within_bounds(text: &str) -> PolicyCheck {
    let mut check = PolicyCheck::default();
    let spans = statement_spans(text);
    // Each statement is parsed on its own: Cedar 4.14 keeps the validator's findings in a
    // hash set, and each finding's location holds the source text it was parsed from, hashed
    // with it. Parsed from the whole text, validation cost the number of findings times the
    // text's length (2,000 invalid policies in 300 KB took 37 s); parsed apart, each finding
    // hashes only its statement. The whole text is parsed only when a statement does not
    // parse, for Cedar's own account of the syntax errors.
    let (set, apart) = match parse_apart(text, &spans) {
        Some(set) => (set, true),
        None => match PolicySet::from_str(text) {
            Ok(set) => (set, false),
            Err(errors) => {
                for e in errors.iter() {
                    check.problems.push(problem_from(e, text, 0, false));
                }
                return check;
            }
        },
    };
    // `from_str` numbers policies `policy0`, `policy1`, … in source order.
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    for (i, span) in spans.iter().enumerate() {
        let pid = cedar_policy::PolicyId::new(format!("policy{i}"));
        let id = set
            .policy(&pid)
            .and_then(|p| p.annotation("id"))
            .map(str::to_owned);
        match &id {
            // Cedar needs no `@id` (its own tools say `policy0`, `policy1`, … in source
            // order), and neither do policies written for upstream Lattice: accepted under
            // that name, with a warning, since it changes when a policy before it goes.
            None => {
                let generated = format!("policy{i}");
                check.problems.push(PolicyProblem {
                    message: format!("policy has no `@id`; it is named `{generated}` by its place in the text"),
                    span: head(text, span),
                    help: Some(format!("add `@id(\"a-stable-name\")` before the effect: `{generated}` names another policy once one before it is added or removed")),
                    warning: true,
                    first: None,
                });
                if let Some(first) = seen.get(&generated) {
                    check.problems.push(PolicyProblem {
                        message: format!("`{generated}`, the name this policy gets, is an `@id` of another policy"),
                        span: head(text, span),
                        help: Some("give this policy an `@id`".into()),
                        warning: false,
                        first: Some(first.clone()),
                    });
                } else {
                    seen.insert(generated, span.clone());
                }
            }
            Some(id) if id.chars().any(deceptive) => {
                let c = id.chars().find(|c| deceptive(*c)).unwrap_or_default();
                check.problems.push(PolicyProblem {
                    message: format!(
                        "policy `@id` holds U+{:04X}, a control, zero-width or text-direction character",
                        u32::from(c)
                    ),
                    span: head(text, span),
                    help: Some("ids are shown in decisions, reports and terminals, where such characters hide or reorder text; use letters, digits, `-`, `_`, `.` and `/`".into()),
                    warning: false,
                    first: None,
                })
            }
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
                        help: Some(
                            "every policy id must be unique within its pack or CedarPolicy".into(),
                        ),
                        warning: false,
                        first: Some(first.clone()),
                    });
                } else {
                    seen.insert(id.clone(), span.clone());
                }
            }
        }
        check.ids.push((id, span.clone()));
        if let Some(policy) = set.policy(&pid) {
            check
                .problems
                .extend(exception_problems(policy, text, span));
        }
    }
    let offsets = apart.then_some(spans.as_slice());
    check
        .problems
        .extend(validate(&set, text, offsets, &check.ids));
    check.policies = Some(set);
    check
}

/// Actions whose permits grant a deviation from the posture: an exception, which the
/// compliance register lists with its `@approver` and `@expires`.
pub const DEVIATION_ACTIONS: [&str; 3] = ["OverrideSecurity", "AllowWildcard", "OptOutDefaultDeny"];

/// When an `@expires` value ends an exception: `None` for `never`; an error when it cannot
/// be read. A date holds through that day (UTC).
pub fn expiry(text: &str) -> Result<Option<jiff::Timestamp>, String> {
    let text = text.trim();
    if text == "never" {
        return Ok(None);
    }
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(Some(t));
    }
    match text.parse::<jiff::civil::Date>() {
        Ok(d) => d
            .tomorrow()
            .and_then(|next| next.to_zoned(jiff::tz::TimeZone::UTC))
            .map(|z| Some(z.timestamp()))
            .map_err(|e| format!("`{text}` is past the last date: {e}")),
        Err(_) => Err(format!(
            "`{text}` is not a date (2027-03-31), an RFC 3339 time or `never`"
        )),
    }
}

/// A permit that grants a deviation without the approval an auditor asks for (a warning),
/// or with an `@expires` that cannot be read (an error).
fn exception_problems(
    policy: &cedar_policy::Policy,
    text: &str,
    span: &Range<usize>,
) -> Vec<PolicyProblem> {
    use cedar_policy::ActionConstraint;
    if policy.effect() != cedar_policy::Effect::Permit {
        return Vec::new();
    }
    let names = |uids: Vec<cedar_policy::EntityUid>| {
        uids.iter()
            .any(|u| DEVIATION_ACTIONS.contains(&u.id().unescaped()))
    };
    let deviation = match policy.action_constraint() {
        ActionConstraint::Eq(u) => names(vec![u]),
        ActionConstraint::In(us) => names(us),
        ActionConstraint::Any => false,
    };
    if !deviation {
        return Vec::new();
    }
    let problem = |message: String, help: &str, warning: bool| PolicyProblem {
        message,
        span: head(text, span),
        help: Some(help.to_owned()),
        warning,
        first: None,
    };
    let mut out = Vec::new();
    if policy
        .annotation("approver")
        .is_none_or(|a| a.trim().is_empty())
    {
        out.push(problem(
            "this permit grants an exception but names no `@approver`".into(),
            "record who approved it: `@approver(\"security-team@example.com\")`; the compliance register lists it as incomplete until then",
            true,
        ));
    }
    match policy.annotation("expires") {
        None => out.push(problem(
            "this permit grants an exception but has no `@expires`".into(),
            "give the date it ends, `@expires(\"2027-03-31\")`, or `@expires(\"never\")` for a standing rule",
            true,
        )),
        Some(when) => {
            if let Err(e) = expiry(when) {
                out.push(problem(
                    format!("@expires {e}"),
                    "write a date, `2027-03-31`, an RFC 3339 time, or `never`",
                    false,
                ));
            }
        }
    }
    out
}

/// The statements of `text` parsed one by one, as the set Cedar would parse from the whole
/// text (policies named `policy0`, `policy1`, … in source order); `None` when one does not
/// parse (or holds a template).
fn parse_apart(text: &str, spans: &[Range<usize>]) -> Option<PolicySet> {
    let policies = spans
        .iter()
        .enumerate()
        .map(|(i, span)| {
            cedar_policy::Policy::parse(
                Some(cedar_policy::PolicyId::new(format!("policy{i}"))),
                &text[span.clone()],
            )
            .ok()
        })
        .collect::<Option<Vec<_>>>()?;
    PolicySet::from_policies(policies).ok()
}

/// Strict validation of `set`, parsed from `text` (statement by statement, at `offsets`,
/// or whole), with each finding named by the policy's `@id` and located in `text`.
fn validate(
    set: &PolicySet,
    text: &str,
    offsets: Option<&[Range<usize>]>,
    ids: &[(Option<String>, Range<usize>)],
) -> Vec<PolicyProblem> {
    let validator = Validator::new(schema().clone());
    // Cedar names policies by their generated ids; users know them by `@id`. Each finding
    // says which policy it is about: one lookup per finding.
    let index = |generated: &cedar_policy::PolicyId| {
        generated
            .to_string()
            .strip_prefix("policy")
            .and_then(|n| n.parse::<usize>().ok())
    };
    let locate = |generated: &cedar_policy::PolicyId, d: &dyn Diagnostic, warning: bool| {
        let i = index(generated);
        let base = offsets
            .zip(i)
            .and_then(|(o, i)| o.get(i))
            .map_or(0, |r| r.start);
        let mut p = problem_from(d, text, base, warning);
        if let Some(id) = i.and_then(|i| ids.get(i)).and_then(|(id, _)| id.as_deref()) {
            p.message = p
                .message
                .replace(&format!("policy `{generated}`"), &format!("policy `{id}`"));
        }
        p
    };
    // Strict validation looks at one policy at a time, so the set is validated in chunks,
    // in source order, and stops once it has found enough errors to refuse the text: the
    // errors past that are not shown anyway, and Cedar spends a spelling search on each.
    let policies: Vec<cedar_policy::Policy> = set.policies().cloned().collect();
    let mut found = Vec::new();
    let mut errors = 0;
    for (n, chunk) in policies.chunks(VALIDATION_CHUNK).enumerate() {
        if errors >= MAX_VALIDATION_ERRORS {
            let first = chunk.first().and_then(|p| index(p.id()));
            let at = first
                .and_then(|i| ids.get(i))
                .map_or(0..0, |(_, span)| head(text, span));
            found.push(PolicyProblem {
                message: format!(
                    "validation stopped after {errors} errors: {} more policies from here on were not validated",
                    policies.len() - n * VALIDATION_CHUNK
                ),
                span: at,
                help: Some("fix the errors shown and validate again".into()),
                warning: false,
                first: None,
            });
            break;
        }
        let Ok(part) = PolicySet::from_policies(chunk.iter().cloned()) else {
            continue;
        };
        let result = validator.validate(&part, ValidationMode::Strict);
        for e in result.validation_errors() {
            found.push(locate(e.policy_id(), e, false));
            errors += 1;
        }
        for w in result.validation_warnings() {
            found.push(locate(w.policy_id(), w, true));
        }
    }
    found
}

/// The most policy text one CedarPolicy object may hold.
pub const MAX_OBJECT_TEXT: usize = 256 * 1024;
/// The most policies one CedarPolicy object may hold.
pub const MAX_OBJECT_POLICIES: usize = 500;

/// Policies validated at a time (see [`validate`]).
const VALIDATION_CHUNK: usize = 64;
/// Validation errors after which the rest of a text is not validated.
pub const MAX_VALIDATION_ERRORS: usize = 100;

/// Characters that hide or reorder text on a terminal: controls (NUL, newline, escape),
/// zero-width characters and the bidirectional controls. Ids must not hold them.
pub fn deceptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}'
        )
}

/// The first line of a policy, for pointing at it as a whole.
fn head(text: &str, span: &Range<usize>) -> Range<usize> {
    let s = &text[span.clone()];
    let end = s.find('\n').map(|i| span.start + i).unwrap_or(span.end);
    span.start..end.max(span.start + 1).min(text.len())
}

/// A Cedar diagnostic as a problem in `text`; its labels count from `base`.
fn problem_from(d: &dyn Diagnostic, text: &str, base: usize, warning: bool) -> PolicyProblem {
    let span = d
        .labels()
        .and_then(|mut l| l.next())
        .map(|l| {
            let start = (base + l.offset()).min(text.len());
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
    // Text after the last `;` is a statement too (one that will not parse), never ignored.
    if let Some(s) = start {
        spans.push(s..text.len());
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
    fn a_permit_granting_an_exception_asks_for_its_approver_and_expiry() {
        let messages = |text: &str| -> Vec<(bool, String)> {
            check_policies(text)
                .problems
                .into_iter()
                .map(|p| (p.warning, p.message))
                .collect()
        };
        let grant = r#"permit (principal, action == Lattice::Action::"OverrideSecurity", resource == Lattice::SecurityOverride::"capability:NET_ADMIN");"#;
        let bare = messages(&format!("@id(\"caps\")\n{grant}"));
        assert_eq!(bare.len(), 2, "{bare:?}");
        assert!(bare.iter().all(|(warning, _)| *warning));
        assert!(bare[0].1.contains("@approver") && bare[1].1.contains("@expires"));
        let recorded = messages(&format!(
            "@id(\"caps\")\n@approver(\"sec\")\n@expires(\"2027-03-31\")\n{grant}"
        ));
        assert!(recorded.is_empty(), "{recorded:?}");
        let standing = messages(&format!(
            "@id(\"caps\")\n@approver(\"sec\")\n@expires(\"never\")\n{grant}"
        ));
        assert!(standing.is_empty(), "{standing:?}");
        let unreadable = messages(&format!(
            "@id(\"caps\")\n@approver(\"sec\")\n@expires(\"soon\")\n{grant}"
        ));
        assert_eq!(unreadable.len(), 1);
        assert!(!unreadable[0].0, "an unreadable expiry is an error");
        // A permit for anything else, or a forbid, grants no exception.
        assert!(messages(r#"@id("x") permit (principal, action == Lattice::Action::"DeployImage", resource);"#).is_empty());
        assert!(messages(r#"@id("x") forbid (principal, action == Lattice::Action::"OverrideSecurity", resource);"#).is_empty());
        // A date holds through that day.
        let end = expiry("2027-03-31").unwrap().unwrap();
        assert_eq!(end.to_string(), "2027-04-01T00:00:00Z");
        assert_eq!(expiry("never").unwrap(), None);
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

    fn policy(condition: &str) -> String {
        format!(
            "@id(\"deep\")\npermit (principal, action == Lattice::Action::\"Connect\", resource)\nwhen {{ {condition} }};\n"
        )
    }

    /// The 361-byte policy that aborted the webhook, and its siblings: refused with a
    /// diagnostic at the place the bound was passed, never parsed by Cedar.
    #[test]
    fn text_nested_past_the_bound_is_refused_before_cedar_reads_it() {
        let parens = policy(&format!("{}true{}", "(".repeat(150), ")".repeat(150)));
        let lists = policy(&format!(
            "{}1{}.contains(1)",
            "[".repeat(700),
            "]".repeat(700)
        ));
        let records = policy(&format!("{}1{}.a == 1", "{a:".repeat(700), "}".repeat(700)));
        let ifs = policy(&format!(
            "{}true",
            "if context.ports.contains(1) then true else ".repeat(700)
        ));
        let chain = policy(
            &(0..2000)
                .map(|i| format!("context.ports.contains({i})"))
                .collect::<Vec<_>>()
                .join(" || "),
        );
        for (what, text) in [
            ("parentheses", &parens),
            ("lists", &lists),
            ("records", &records),
            ("ifs", &ifs),
            ("an operator chain", &chain),
        ] {
            let c = check_policies(text);
            assert_eq!(c.problems.len(), 1, "{what}: {:?}", c.problems);
            let p = &c.problems[0];
            assert!(!p.warning);
            assert!(
                p.message.contains("levels deep") || p.message.contains("too deep"),
                "{what}: {}",
                p.message
            );
            assert!(
                p.span.start > 0 && p.span.end <= text.len(),
                "{what}: located"
            );
            assert!(parse_bounded(text).is_err(), "{what}");
        }
        assert!(parens.len() < 400, "the reported policy was 361 bytes");
    }

    #[test]
    fn text_within_the_bounds_parses_and_validates() {
        let at_limit = policy(&format!(
            "{}true{}",
            "(".repeat(MAX_NESTING - 2),
            ")".repeat(MAX_NESTING - 2)
        ));
        let c = check_policies(&at_limit);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        let n = nesting(&at_limit);
        assert_eq!(n.levels, MAX_NESTING - 1, "the braces of `when` count too");
        // Strings and comments do not count.
        let quoted = policy(&format!(
            "context.ports.contains(1) // {}\n && \"{}\" != \"\"",
            "(".repeat(500),
            "[".repeat(500)
        ));
        assert_eq!(nesting(&quoted).exceeded_at, None);
        assert!(check_policies(&quoted).problems.is_empty());
        // Bounds reset per policy: many policies, each within them, are fine.
        let many: String = (0..200)
            .map(|_| policy("context.ports.contains(1)"))
            .collect();
        assert_eq!(nesting(&many).exceeded_at, None);
    }

    #[test]
    fn ids_that_hide_or_reorder_text_are_refused() {
        for id in [
            "a\\u{202E}b",
            "a\\u{200B}b",
            "a\\u{0000}b",
            "a\\nb",
            "a\\u{001B}[31mb",
        ] {
            let text = format!(
                "@id(\"{id}\") permit(principal, action == Lattice::Action::\"Connect\", resource);"
            );
            let c = check_policies(&text);
            assert!(
                c.problems
                    .iter()
                    .any(|p| p.message.contains("text-direction")),
                "{id}: {:?}",
                c.problems
            );
        }
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
