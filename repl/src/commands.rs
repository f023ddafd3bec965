//! The REPL's command language: one line (or a pasted policy) → one answer from the session.

use std::path::Path;

use lattice_engine::PolicyChange;
use lattice_schemas::crd::EnforcementMode;
use lattice_schemas::manifest::Object;

use crate::session::{Reply, Session};

/// The commands, for `help` and completion.
pub const COMMANDS: &[(&str, &str)] = &[
    (
        "can",
        "can PRINCIPAL ACTION RESOURCE [CONTEXT-JSON] — ALLOW or DENY with the determining policies",
    ),
    (
        "why",
        "why PRINCIPAL ACTION RESOURCE [CONTEXT-JSON] — the decision explained",
    ),
    (
        "gates",
        "gates NAMESPACE/NAME — every derivation question a workload raises, answered",
    ),
    (
        "mesh",
        "mesh [NAMESPACE] — allowed edges, denied ones with reasons, one-sided declarations",
    ),
    (
        "whatif",
        "whatif add FILE|POLICY · whatif remove POLICY-ID · whatif disable NS/NAME · whatif reset",
    ),
    ("entities", "entities [TYPE] — entity uids"),
    ("show", "show UID · show policy ID"),
    ("policies", "policies [PACK] — active policies"),
    ("load", "load PATH — add manifests to the world"),
    ("reload", "reload — read the world and policies again"),
    ("schema", "schema — the Cedar schema"),
    ("help", "help — this list"),
    ("quit", "quit — leave (also exit, Ctrl-D)"),
];

/// Runs one command. `None` means the user asked to leave.
pub fn execute(session: &mut Session, line: &str) -> Option<Reply> {
    let line = line.trim();
    // A terminal would act on control and text-direction characters echoed back in an
    // error (an escape sequence, a reordered line): such a line is refused, and named by
    // code point, never echoed.
    // Tabs and the line breaks of a pasted multi-line policy are text.
    if let Some(c) = line
        .chars()
        .find(|c| lattice_schemas::cedar::deceptive(*c) && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Some(Reply::error(format!(
            "the line holds U+{:04X}, a control or text-direction character; it is not read",
            u32::from(c)
        )));
    }
    let (cmd, rest) = line
        .split_once(char::is_whitespace)
        .map(|(c, r)| (c, r.trim()))
        .unwrap_or((line, ""));
    let args: Vec<&str> = rest.split_whitespace().collect();
    let reply = match cmd {
        "" => return Some(Reply::ok_empty()),
        "quit" | "exit" => return None,
        "help" => Reply::text(help()),
        "can" | "why" => {
            let mut parts = rest.splitn(4, char::is_whitespace);
            let (Some(p), Some(a), Some(r)) = (parts.next(), parts.next(), parts.next()) else {
                return Some(Reply::error(format!(
                    "usage: {cmd} PRINCIPAL ACTION RESOURCE [CONTEXT-JSON]"
                )));
            };
            let ctx = parts.next().map(str::trim).filter(|c| !c.is_empty());
            if cmd == "can" {
                session.can(p, a, r, ctx)
            } else {
                session.why(p, a, r, ctx)
            }
        }
        "gates" => match args.as_slice() {
            [id] => session.gates(id),
            _ => Reply::error("usage: gates NAMESPACE/NAME"),
        },
        "mesh" => session.mesh(args.first().copied()),
        "whatif" => whatif(session, rest),
        "entities" => session.entities(args.first().copied()),
        "show" => match args.as_slice() {
            ["policy", id] => session.show_policy(id),
            [uid] => session.show_entity(uid),
            _ if !rest.is_empty() => session.show_entity(rest),
            _ => Reply::error("usage: show UID | show policy ID"),
        },
        "policies" => session.policies(args.first().copied()),
        "load" => match args.as_slice() {
            [path] => session.load_path(Path::new(path)),
            _ => Reply::error("usage: load PATH"),
        },
        "reload" => session.reload(),
        "schema" => Reply::text(lattice_schemas::cedar::SCHEMA_TEXT.to_owned()),
        other => Reply::error(format!("unknown command `{other}`; `help` lists them")),
    };
    Some(reply)
}

fn help() -> String {
    let mut out = String::new();
    for (_, usage) in COMMANDS {
        out.push_str(&format!("  {usage}\n"));
    }
    out.push_str(
        "Entity uids: full Cedar syntax (Lattice::Service::\"shop/api\") or short (Service::shop/api).\n",
    );
    out
}

/// Reads `whatif …` into a change and applies it.
fn whatif(session: &mut Session, rest: &str) -> Reply {
    let (verb, arg) = rest
        .split_once(char::is_whitespace)
        .map(|(v, a)| (v, a.trim()))
        .unwrap_or((rest, ""));
    match (verb, arg) {
        ("reset", "") => session.whatif_reset(),
        ("remove", id) if !id.is_empty() => session.whatif(PolicyChange::Remove { id: id.into() }),
        ("disable", object) if object.contains('/') => {
            let (namespace, name) = object.split_once('/').expect("checked");
            session.whatif(PolicyChange::Disable {
                namespace: namespace.into(),
                name: name.into(),
            })
        }
        ("add", source) if !source.is_empty() => match policy_source(source) {
            Ok(change) => session.whatif(change),
            Err(e) => Reply::error(e),
        },
        _ => Reply::error(
            "usage: whatif add FILE|POLICY · whatif remove POLICY-ID · whatif disable NAMESPACE/NAME · whatif reset",
        ),
    }
}

/// A what-if addition: a `.cedar` file, a manifest holding one CedarPolicy, or policy text.
pub fn policy_source(source: &str) -> Result<PolicyChange, String> {
    let path = Path::new(source);
    let inline = |policies: String| PolicyChange::Add {
        namespace: "whatif".into(),
        name: "repl".into(),
        policies,
        mode: EnforcementMode::Enforce,
    };
    if !source.contains('(') && path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if path.extension().is_some_and(|e| e == "cedar") {
            return Ok(inline(text));
        }
        let report = lattice_schemas::validate::validate_paths(&[path.to_path_buf()]);
        if report.errors() > 0 {
            return Err(format!(
                "{} has {} error(s); `lattice-policy validate {}` shows them",
                path.display(),
                report.errors(),
                path.display()
            ));
        }
        let policies: Vec<_> = report
            .manifests
            .iter()
            .filter_map(|m| match &m.object {
                Object::CedarPolicy(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        let [p] = policies.as_slice() else {
            return Err(format!(
                "{} holds {} CedarPolicy objects; whatif adds one",
                path.display(),
                policies.len()
            ));
        };
        return Ok(PolicyChange::Add {
            namespace: p
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: p.metadata.name.clone().unwrap_or_default(),
            policies: p.spec.policies.clone(),
            mode: p.spec.mode.unwrap_or_default(),
        });
    }
    if path
        .extension()
        .is_some_and(|e| e == "cedar" || e == "yaml" || e == "yml")
    {
        return Err(format!("{source} does not exist"));
    }
    // A single policy typed inline needs no id of its own.
    if !source.contains("@id(") {
        return Ok(inline(format!("@id(\"whatif\")\n{source}")));
    }
    Ok(inline(source.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_direction_characters_are_named_never_echoed() {
        let root = lattice_testkit::workspace_root();
        let mut session = Session::open(
            vec![root.join("examples/world")],
            Some(root.join("policies")),
        )
        .unwrap();
        for line in [
            "can Service::\u{1b}[31mshop/api Connect Service::shop/web",
            "why Service::shop/\u{202e}ipa Connect Service::shop/web",
            "show \u{0}",
        ] {
            let reply = execute(&mut session, line).unwrap();
            assert!(reply.text.contains("U+"), "{line:?}: {}", reply.text);
            assert!(
                !reply.text.contains('\u{1b}') && !reply.text.contains('\u{202e}'),
                "{line:?} echoed: {:?}",
                reply.text
            );
        }
    }
}
