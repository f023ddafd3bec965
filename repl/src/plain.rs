//! Plain Cedar, outside the Lattice model: `authorize` (any schema, any entities, one
//! request, with the decision, reasons and errors Cedar's own integration tests check) and
//! `fmt` (the official formatter).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityUid, PolicyId, PolicySet, Request, Schema,
};
use serde_json::{Value, json};

use crate::output::{Format, emit, emit_json};
use crate::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Policies with their `@id` as id, else `policy0`, `policy1`… in source order (Cedar's own
/// default), so reasons name what the author wrote.
pub fn policy_set(text: &str) -> Result<PolicySet, String> {
    let parsed =
        lattice_schemas::cedar::parse_bounded(text).map_err(|e| format!("policies: {e}"))?;
    let mut out = PolicySet::new();
    let mut policies: Vec<_> = parsed.policies().collect();
    // `policies()` is unordered; Cedar numbers them in source order.
    policies.sort_by_key(|p| {
        p.id()
            .to_string()
            .strip_prefix("policy")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    for p in policies {
        let p = match p.annotation("id") {
            Some(id) => p.new_id(PolicyId::new(id)),
            None => p.clone(),
        };
        let id = p.id().clone();
        out.add(p)
            .map_err(|_| format!("policies: the id `{id}` is used twice"))?;
    }
    for t in parsed.templates() {
        out.add_template(t.clone())
            .map_err(|e| format!("policies: {e}"))?;
    }
    Ok(out)
}

fn uid(v: &Value, field: &str) -> Result<EntityUid, String> {
    match v {
        Value::String(s) => EntityUid::from_str(s).map_err(|e| format!("request `{field}`: {e}")),
        Value::Object(_) => {
            EntityUid::from_json(v.clone()).map_err(|e| format!("request `{field}`: {e}"))
        }
        _ => Err(format!(
            "request `{field}` must be an entity uid such as \"User::\\\"alice\\\"\""
        )),
    }
}

/// Cedar's answer: the decision, the reasons (policy ids) and the erroring policies with
/// their messages.
type Answer = (Decision, Vec<String>, Vec<(String, String)>);

/// The answer to one plain Cedar request.
fn authorize_files(
    policies: &Path,
    entities: &Path,
    schema: Option<&Path>,
    request: &Path,
) -> Result<Answer, String> {
    let schema = match schema {
        None => None,
        Some(p) => {
            let text = read(p)?;
            let s = if p.extension().is_some_and(|e| e == "json") {
                Schema::from_json_str(&text).map_err(|e| format!("schema: {e}"))?
            } else {
                Schema::from_cedarschema_str(&text)
                    .map(|(s, _)| s)
                    .map_err(|e| format!("schema: {e}"))?
            };
            Some(s)
        }
    };
    let set = policy_set(&read(policies)?)?;
    let entities = Entities::from_json_str(&read(entities)?, schema.as_ref())
        .map_err(|e| format!("entities: {e}"))?;
    let req: Value =
        serde_json::from_str(&read(request)?).map_err(|e| format!("request: not JSON: {e}"))?;
    let principal = uid(&req["principal"], "principal")?;
    let action = uid(&req["action"], "action")?;
    let resource = uid(&req["resource"], "resource")?;
    let context_json = req.get("context").cloned().unwrap_or_else(|| json!({}));
    let context = Context::from_json_value(context_json, schema.as_ref().map(|s| (s, &action)))
        .map_err(|e| format!("request `context`: {e}"))?;
    let request = Request::new(principal, action, resource, context, schema.as_ref())
        .map_err(|e| format!("request: {e}"))?;
    let response = Authorizer::new().is_authorized(&request, &set, &entities);
    let mut reasons: Vec<String> = response
        .diagnostics()
        .reason()
        .map(ToString::to_string)
        .collect();
    reasons.sort();
    let mut errors: Vec<(String, String)> = response
        .diagnostics()
        .errors()
        .map(|e| match e {
            cedar_policy::AuthorizationError::PolicyEvaluationError(err) => {
                (err.policy_id().to_string(), err.to_string())
            }
        })
        .collect();
    errors.sort();
    Ok((response.decision(), reasons, errors))
}

/// `lattice-policy authorize`.
pub fn authorize(
    policies: &Path,
    entities: &Path,
    schema: Option<&Path>,
    request: &Path,
    format: Format,
) -> u8 {
    let (decision, reasons, errors) = match authorize_files(policies, entities, schema, request) {
        Ok(r) => r,
        Err(e) => {
            match format {
                Format::Json => emit(&format!("{}\n", json!({"error": e}))),
                Format::Human => eprintln!("error: {e}"),
            }
            return EXIT_USAGE;
        }
    };
    let allowed = decision == Decision::Allow;
    match format {
        Format::Json => emit_json(&json!({
            "decision": if allowed { "allow" } else { "deny" },
            "reason": reasons,
            "errors": errors.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            "errorMessages": errors.iter().map(|(id, m)| json!({"policy": id, "message": m})).collect::<Vec<_>>(),
        })),
        Format::Human => {
            let mut out = format!("{}\n", if allowed { "ALLOW" } else { "DENY" });
            if !reasons.is_empty() {
                out.push_str(&format!("  reasons: {}\n", reasons.join(", ")));
            }
            for (id, m) in &errors {
                out.push_str(&format!("  error in {id}: {m}\n"));
            }
            emit(&out);
        }
    }
    if allowed { EXIT_OK } else { EXIT_FINDINGS }
}

fn cedar_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            let entries =
                std::fs::read_dir(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            stack.extend(entries.flatten().map(|e| e.path()));
        } else if p.extension().is_some_and(|e| e == "cedar") {
            out.push(p);
        } else if paths.contains(&p) {
            return Err(format!("{} is not a .cedar file", p.display()));
        }
    }
    out.sort();
    Ok(out)
}

/// `lattice-policy fmt [--check]`: formats Cedar files in place with the official formatter;
/// with `--check`, lists the files that are not formatted (exit 1) and changes nothing.
pub fn fmt(paths: &[PathBuf], check: bool) -> u8 {
    let files = match cedar_files(paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let config = cedar_policy_formatter::Config {
        line_width: 100,
        indent_width: 2,
    };
    let (mut unformatted, mut failed) = (0, 0);
    for f in &files {
        let text = match read(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
        };
        // The formatter parses with Cedar's recursive parser: bounded text, large stack.
        if let Some(p) = lattice_schemas::cedar::nesting_problem(&text) {
            eprintln!("error: {}: {}", f.display(), p.message);
            failed += 1;
            continue;
        }
        let formatted = lattice_schemas::cedar::on_parse_stack(|| {
            cedar_policy_formatter::policies_str_to_pretty(&text, &config)
                .map_err(|e| format!("{e:?}"))
        })
        .and_then(|r| r);
        let pretty = match formatted {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {}: {e}", f.display());
                failed += 1;
                continue;
            }
        };
        if pretty == text {
            continue;
        }
        unformatted += 1;
        if check {
            println!("{} is not formatted", f.display());
            let diff = similar::TextDiff::from_lines(&text, &pretty);
            print!("{}", diff.unified_diff().context_radius(1));
        } else if std::fs::symlink_metadata(f).is_ok_and(|m| !m.file_type().is_file()) {
            // Writing through a link would rewrite a file outside what was named.
            eprintln!(
                "error: {} is a symlink or not a regular file; not rewritten",
                f.display()
            );
            failed += 1;
        } else if let Err(e) = std::fs::write(f, &pretty) {
            eprintln!("error: cannot write {}: {e}", f.display());
            failed += 1;
        } else {
            println!("formatted {}", f.display());
        }
    }
    if failed > 0 {
        EXIT_USAGE
    } else if check && unformatted > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}
