//! Secrets rendered by External Secrets' templates: text mixed with secret keys, for a
//! container's variables and files and for a package's chart values. The secret itself never
//! passes through Lattice; only the template naming its keys does.

use std::collections::BTreeMap;

use lattice_schemas::crd::workload::Resource;
use serde_json::{Value, json};

use crate::objects::meta;
use crate::placeholders::Piece;

/// An ExternalSecret named `secret` in `ns`, owned by `owner`, rendering `template` (target
/// key → ESO template) from the secret keys `keys` (resource, key) of `resources`. Keys
/// from a second provider name their store per entry; the refresh interval is the shortest
/// any of the secrets asks for.
pub(crate) fn templated_external_secret(
    secret: &str,
    ns: &str,
    owner: &str,
    resources: &BTreeMap<String, Resource>,
    template: &BTreeMap<String, String>,
    keys: &[(String, String)],
) -> Value {
    let param = |r: &Resource, k: &str| {
        r.params
            .as_ref()
            .and_then(|p| p.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut store: Option<String> = None;
    let mut refresh: Option<(u64, String)> = None;
    let data: Vec<Value> = keys
        .iter()
        .filter_map(|(resource, key)| {
            let r = resources.get(resource)?;
            let provider = param(r, "provider").unwrap_or_default();
            let interval = param(r, "refreshInterval").unwrap_or_else(|| "1h".into());
            let seconds =
                lattice_schemas::validate::format::duration_seconds(&interval).unwrap_or(3600);
            if refresh.as_ref().is_none_or(|(s, _)| seconds < *s) {
                refresh = Some((seconds, interval));
            }
            let mut entry = json!({"secretKey": template_key(resource, key), "remoteRef": {"key": r.id.clone().unwrap_or_default(), "property": key}});
            match &store {
                None => store = Some(provider),
                Some(first) if *first != provider => {
                    entry["sourceRef"] =
                        json!({"storeRef": {"kind": "ClusterSecretStore", "name": provider}});
                }
                Some(_) => {}
            }
            Some(entry)
        })
        .collect();
    json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": meta(secret, ns, owner),
        "spec": {
            "refreshInterval": refresh.map(|(_, i)| i).unwrap_or_else(|| "1h".into()),
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": store.unwrap_or_default()},
            "target": {"name": secret, "creationPolicy": "Owner", "template": {"engineVersion": "v2", "data": template}},
            "data": data
        }
    })
}

/// The name a secret key has inside an ESO template: a Go template field name, so only
/// letters, digits and `_` (`db-creds`.`password` → `db_creds_password`).
fn template_key(resource: &str, key: &str) -> String {
    format!("{resource}_{key}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Template text for text mixed with secret keys (literal `{{` is escaped), recording the
/// keys it reads.
pub(crate) fn render_template(pieces: &[Piece], keys: &mut Vec<(String, String)>) -> String {
    let mut t = String::new();
    for p in pieces {
        match p {
            Piece::Text(s) => t.push_str(&escape(s)),
            Piece::Secret { resource, key } => {
                t.push_str(&format!("{{{{ .{} }}}}", template_key(resource, key)));
                note_key(keys, resource, key);
            }
        }
    }
    t
}

/// A value whose strings may hold secrets, as template text that renders it as JSON (which
/// is YAML too): each string holding a secret becomes one expression yielding a JSON
/// string, so a secret containing quotes, newlines or YAML syntax stays one string value,
/// exactly as written. Everything else is the value's own JSON.
pub(crate) fn render_json_template(
    value: &Value,
    resolved: &dyn Fn(&str) -> Option<Vec<Piece>>,
    keys: &mut Vec<(String, String)>,
) -> String {
    match value {
        Value::String(s) => match resolved(s) {
            Some(pieces) if pieces.iter().any(|p| matches!(p, Piece::Secret { .. })) => {
                let args: Vec<String> = pieces
                    .iter()
                    .map(|p| match p {
                        // A JSON string is a Go string literal; inside an action `{{` is
                        // plain text.
                        Piece::Text(t) => Value::String(t.clone()).to_string(),
                        Piece::Secret { resource, key } => {
                            note_key(keys, resource, key);
                            format!(".{}", template_key(resource, key))
                        }
                    })
                    .collect();
                match args.as_slice() {
                    [one] => format!("{{{{ {one} | toJson }}}}"),
                    _ => format!("{{{{ list {} | join \"\" | toJson }}}}", args.join(" ")),
                }
            }
            Some(pieces) => escape(&Value::String(text_of(&pieces)).to_string()),
            None => escape(&value.to_string()),
        },
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|v| render_json_template(v, resolved, keys))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!(
                    "{}:{}",
                    escape(&Value::String(k.clone()).to_string()),
                    render_json_template(v, resolved, keys)
                ))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// The text of `pieces`, secrets left out.
pub(crate) fn text_of(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => t.as_str(),
            Piece::Secret { .. } => "",
        })
        .collect()
}

/// Literal text in a Go template: `{{` would open an action.
fn escape(text: &str) -> String {
    text.replace("{{", "{{ `{{` }}")
}

fn note_key(keys: &mut Vec<(String, String)>, resource: &str, key: &str) {
    if !keys.iter().any(|(r, k)| r == resource && k == key) {
        keys.push((resource.to_owned(), key.to_owned()));
    }
}
