//! Reading queries as people type them: entity uids in full Cedar syntax or a short form, action
//! names, and request contexts filled in from the schema and the world.

use std::str::FromStr;

use cedar_policy::{Context, EntityUid, SchemaFragment};
use lattice_engine::{World, action};
use serde_json::{Map, Value, json};

/// The namespace of every Lattice entity type.
pub const NAMESPACE: &str = "Lattice";

/// Reads an entity uid: `Lattice::Service::"shop/api"` (full Cedar syntax), or the short form
/// `Service::shop/api` / `Lattice::Service::shop/api` (the type, `::`, then the id verbatim).
pub fn parse_uid(text: &str) -> Result<EntityUid, String> {
    let text = text.trim();
    if text.contains("::\"") && text.ends_with('"') {
        return EntityUid::from_str(text)
            .map_err(|e| format!("`{text}` is not an entity uid: {e}"));
    }
    // The type ends at the first `::` after the namespace, so ids may hold `::` too.
    let bare = text.strip_prefix(&format!("{NAMESPACE}::")).unwrap_or(text);
    let (ty, id) = bare.split_once("::").ok_or_else(|| {
        format!("`{text}` is not an entity uid; write `Type::id`, e.g. `Service::shop/api`")
    })?;
    if id.is_empty() {
        return Err(format!("`{text}` has no id after `::`"));
    }
    let ty = format!("{NAMESPACE}::{ty}");
    let quoted = serde_json::to_string(id).expect("strings serialize");
    EntityUid::from_str(&format!("{ty}::{quoted}")).map_err(|e| format!("`{text}`: {e}"))
}

/// Reads an action: `Connect`, `Action::Connect` or `Lattice::Action::"Connect"`.
pub fn parse_action(text: &str) -> Result<EntityUid, String> {
    let text = text.trim();
    if text.contains("::") {
        let uid = parse_uid(text)?;
        if uid.type_name().to_string() != format!("{NAMESPACE}::Action") {
            return Err(format!("`{text}` is not an action"));
        }
        return Ok(uid);
    }
    Ok(action(text))
}

/// The short form of a uid, as the REPL prints and completes it.
pub fn short(uid: &EntityUid) -> String {
    let ty = uid.type_name().to_string();
    let ty = ty.strip_prefix("Lattice::").unwrap_or(&ty);
    format!("{ty}::{}", uid.id().unescaped())
}

/// Every action's context type as JSON schema fragments, for defaults.
fn schema_json() -> &'static Value {
    static JSON: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        SchemaFragment::from_cedarschema_str(lattice_schemas::cedar::SCHEMA_TEXT)
            .ok()
            .and_then(|(f, _)| f.to_json_value().ok())
            .unwrap_or(Value::Null)
    })
}

/// The names of the schema's actions.
pub fn action_names() -> Vec<String> {
    schema_json()[NAMESPACE]["actions"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// The names of the schema's entity types (without the namespace).
pub fn entity_type_names() -> Vec<String> {
    schema_json()[NAMESPACE]["entityTypes"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// A neutral value of a schema type: "", 0, false, empty set, a record of neutral attributes.
/// An optional attribute is neutral when absent (a `Connect` within one cluster has no
/// `callerCluster`), as is one no neutral value can stand for (an entity).
fn neutral(ty: &Value) -> Value {
    let common = &schema_json()[NAMESPACE]["commonTypes"];
    match ty["type"].as_str() {
        Some("String") => json!(""),
        Some("Long") => json!(0),
        Some("Boolean" | "Bool") => json!(false),
        Some("Set") => json!([]),
        Some("Record") => Value::Object(
            ty["attributes"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| v["required"] != json!(false))
                .map(|(k, v)| (k.clone(), neutral(v)))
                .filter(|(_, v)| !v.is_null())
                .collect(),
        ),
        Some("Extension") => match ty["name"].as_str() {
            Some("ipaddr") => json!({"__extn": {"fn": "ip", "arg": "127.0.0.1"}}),
            Some("datetime") => json!({"__extn": {"fn": "datetime", "arg": "1970-01-01"}}),
            Some("decimal") => json!({"__extn": {"fn": "decimal", "arg": "0.0"}}),
            _ => Value::Null,
        },
        Some("EntityOrCommon") | Some(_) => {
            let name = ty["name"].as_str().or(ty["type"].as_str()).unwrap_or("");
            let name = name.strip_prefix("Lattice::").unwrap_or(name);
            match common.get(name) {
                Some(t) => neutral(t),
                None => match name {
                    "String" => json!(""),
                    "Long" => json!(0),
                    "Bool" | "Boolean" => json!(false),
                    _ => Value::Null,
                },
            }
        }
        None => Value::Null,
    }
}

/// The context of a query: neutral values for every attribute the action's context has,
/// then what the world knows (a `Connect`'s ports are the callee's served ports; a
/// `ConsumeQuota`'s demand, usage and total are the principal's standing under the quota),
/// then what the user wrote, which wins.
pub fn context_for(
    principal: &EntityUid,
    action_uid: &EntityUid,
    resource: &EntityUid,
    world: &World,
    given: Option<&str>,
) -> Result<Context, String> {
    let name = action_uid.id().unescaped().to_owned();
    let declared = &schema_json()[NAMESPACE]["actions"][&name]["appliesTo"]["context"];
    let mut ctx = match neutral(declared) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if name == "Connect"
        && let Some(object) = world.workload(resource.id().unescaped())
    {
        let ports: Vec<i64> = lattice_engine::project::served_ports(object)
            .into_iter()
            .collect();
        ctx.insert("ports".into(), json!(ports));
    }
    if name == "ConsumeQuota" {
        let ledger = lattice_engine::quota::Ledger::of(world);
        if let Some(c) = ledger
            .consumption(principal.id().unescaped())
            .iter()
            .find(|c| c.quota == resource.id().unescaped())
        {
            ctx.insert("demand".into(), c.demand.to_cedar_json());
            ctx.insert("usage".into(), c.usage.to_cedar_json());
            ctx.insert("total".into(), c.total().to_cedar_json());
            ctx.insert("raisedBy".into(), json!(format!("quota {}", c.quota)));
        }
    }
    if let Some(text) = given {
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("the context is not JSON: {e}"))?;
        let Value::Object(m) = v else {
            return Err("the context must be a JSON object".into());
        };
        ctx.extend(m);
    }
    Context::from_json_value(Value::Object(ctx), None).map_err(|e| format!("context: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_full_uids_are_the_same_entity() {
        let full = parse_uid(r#"Lattice::Service::"shop/api""#).unwrap();
        assert_eq!(parse_uid("Service::shop/api").unwrap(), full);
        assert_eq!(parse_uid("Lattice::Service::shop/api").unwrap(), full);
        assert_eq!(short(&full), "Service::shop/api");
        assert!(parse_uid("shop/api").is_err());
        assert!(parse_uid("Service::").is_err());
        // Ids with quotes and colons survive the short form.
        let odd = parse_uid(r#"SecretPath::vault-prod:shop/"x""#).unwrap();
        assert_eq!(odd.id().unescaped(), r#"vault-prod:shop/"x""#);
        let colons = parse_uid("Lattice::Host::a::b").unwrap();
        assert_eq!(colons.type_name().to_string(), "Lattice::Host");
        assert_eq!(colons.id().unescaped(), "a::b");
    }

    #[test]
    fn actions_read_by_name_or_uid() {
        assert_eq!(parse_action("Connect").unwrap(), action("Connect"));
        assert_eq!(
            parse_action(r#"Lattice::Action::"Connect""#).unwrap(),
            action("Connect")
        );
        assert!(parse_action("Service::shop/api").is_err());
        assert!(action_names().contains(&"DeployImage".to_owned()));
    }

    #[test]
    fn contexts_get_neutral_defaults_and_user_values_win() {
        let w = World::new();
        let c = context_for(
            &parse_uid("Service::a/b").unwrap(),
            &action("ExposeHost"),
            &parse_uid("Host::a.example.com").unwrap(),
            &w,
            Some(r#"{"tls": true}"#),
        )
        .unwrap();
        let v = c.into_iter().collect::<Vec<_>>();
        assert!(v.iter().any(|(k, _)| k == "raisedBy"));
        let tls = v
            .iter()
            .find(|(k, _)| k == "tls")
            .map(|(_, x)| format!("{x:?}"))
            .expect("tls is in the context");
        assert!(
            tls.contains("true") && !tls.contains("false"),
            "the user's value wins over the default: {tls}"
        );
        // An optional attribute is left out: a Connect within one cluster names none.
        let connect: Vec<String> = context_for(
            &parse_uid("Service::c/d").unwrap(),
            &action("Connect"),
            &parse_uid("Service::a/b").unwrap(),
            &w,
            None,
        )
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
        assert_eq!(connect, ["ports"]);
        assert!(
            context_for(
                &parse_uid("Service::c/d").unwrap(),
                &action("Connect"),
                &parse_uid("Service::a/b").unwrap(),
                &w,
                Some("[1]")
            )
            .is_err()
        );
        assert!(
            context_for(
                &parse_uid("Service::c/d").unwrap(),
                &action("Connect"),
                &parse_uid("Service::a/b").unwrap(),
                &w,
                Some("{")
            )
            .is_err()
        );
    }
}
