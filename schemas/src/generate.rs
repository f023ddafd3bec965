//! Generated artifacts: CRD YAML for the API server and strict JSON Schemas for editors and
//! `lattice-policy validate`.
//!
//! The JSON Schema of a kind is derived from the structural schema in its CRD, so validation
//! accepts exactly what the API server accepts, made strict the way `kubectl
//! --validate=strict` is: unknown fields are errors, and `apiVersion`, `kind` and
//! `metadata` are checked too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use yaml_rust2::{Yaml, YamlEmitter, yaml::Hash};

use crate::crd::{API_VERSION, Kind};

/// The command that regenerates every checked-in artifact.
pub const REGENERATE_COMMAND: &str =
    "LATTICE_UPDATE_GENERATED=1 cargo test -p lattice-schemas --test generated";

/// The CRD of `kind` as a JSON value.
pub fn crd_json(kind: Kind) -> Value {
    serde_json::to_value(kind.crd()).expect("a CRD always serializes")
}

/// The CRD of `kind` as YAML, ready for `kubectl apply`.
pub fn crd_yaml(kind: Kind) -> String {
    to_yaml(&crd_json(kind))
}

/// Every CRD in one multi-document YAML stream.
pub fn all_crds_yaml() -> String {
    Kind::ALL
        .iter()
        .map(|k| crd_yaml(*k))
        .collect::<Vec<_>>()
        .join("")
}

/// The file name of a kind's CRD under `schemas/crds/`.
pub fn crd_file_name(kind: Kind) -> String {
    let crd = kind.crd();
    format!("{}.yaml", crd.metadata.name.unwrap_or_default())
}

/// The file name of a kind's JSON Schema under `schemas/jsonschema/`.
pub fn json_schema_file_name(kind: Kind) -> String {
    format!("{}.json", kind.name().to_ascii_lowercase())
}

/// The strict JSON Schema (draft 2020-12) for documents of `kind`. Cached.
pub fn json_schema(kind: Kind) -> &'static Value {
    static CACHE: OnceLock<BTreeMap<Kind, Value>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        Kind::ALL
            .iter()
            .map(|k| (*k, build_json_schema(*k)))
            .collect()
    });
    &all[&kind]
}

fn build_json_schema(kind: Kind) -> Value {
    let crd = crd_json(kind);
    let mut root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    strictify(&mut root);
    let props = root["properties"]
        .as_object_mut()
        .expect("a CRD schema has properties");
    props.insert("apiVersion".into(), json!({"const": API_VERSION}));
    props.insert("kind".into(), json!({"const": kind.name()}));
    props.insert("metadata".into(), object_meta_schema(kind.namespaced()));
    let mut required = vec!["apiVersion", "kind", "metadata"];
    if props.contains_key("spec") {
        required.push("spec");
    }
    let description = root.get("description").cloned().unwrap_or(Value::Null);
    let mut out = Map::new();
    out.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    out.insert(
        "$id".into(),
        json!(format!(
            "https://lattice.dev/schemas/v1alpha1/{}",
            json_schema_file_name(kind)
        )),
    );
    out.insert("title".into(), json!(kind.name()));
    if !description.is_null() {
        out.insert("description".into(), description);
    }
    out.insert("type".into(), json!("object"));
    out.insert("required".into(), json!(required));
    out.insert("additionalProperties".into(), json!(false));
    out.insert("properties".into(), root["properties"].take());
    Value::Object(out)
}

/// The strict JSON Schema for core/v1 Namespaces, which worlds may include for their labels.
pub fn namespace_json_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Namespace",
            "type": "object",
            "required": ["apiVersion", "kind", "metadata"],
            "additionalProperties": false,
            "properties": {
                "apiVersion": {"const": "v1"},
                "kind": {"const": "Namespace"},
                "metadata": object_meta_schema(false),
                "spec": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {"finalizers": {"type": "array", "items": {"type": "string"}}}
                },
                "status": {"type": "object"}
            }
        })
    })
}

/// OpenAPI v3 structural schema → strict JSON Schema: `nullable` becomes a `null` type, and
/// objects with declared properties reject any other property.
fn strictify(schema: &mut Value) {
    let Value::Object(m) = schema else { return };
    if m.remove("nullable") == Some(Value::Bool(true))
        && let Some(Value::String(t)) = m.get("type").cloned()
    {
        m.insert("type".into(), json!([t, "null"]));
    }
    let preserve = m.remove("x-kubernetes-preserve-unknown-fields") == Some(Value::Bool(true));
    if m.contains_key("properties") && !preserve && !m.contains_key("additionalProperties") {
        m.insert("additionalProperties".into(), Value::Bool(false));
    }
    if let Some(Value::Object(props)) = m.get_mut("properties") {
        props.values_mut().for_each(strictify);
    }
    if let Some(ap @ Value::Object(_)) = m.get_mut("additionalProperties") {
        strictify(ap);
    }
    if let Some(items) = m.get_mut("items") {
        strictify(items);
    }
}

/// The fields of `metav1.ObjectMeta` a manifest may carry.
fn object_meta_schema(namespaced: bool) -> Value {
    let dns_subdomain = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
    let dns_label = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
    let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let mut props = json!({
        "name": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": dns_subdomain,
                 "description": "The object's name, a DNS subdomain."},
        "generateName": {"type": "string"},
        "labels": string_map.clone(),
        "annotations": string_map,
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": ["string", "null"]},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "managedFields": {"type": "array", "items": {"type": "object"}}
    });
    if namespaced {
        props["namespace"] = json!({"type": "string", "maxLength": 63, "pattern": dns_label,
                                    "description": "The object's namespace, a DNS label."});
    }
    json!({
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": props
    })
}

/// Renders a JSON value as YAML (keys in the value's order; multi-line strings as blocks).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    emitter.multiline_strings(true);
    emitter
        .dump(&to_yaml_node(value))
        .expect("writing to a String cannot fail");
    out.push('\n');
    out
}

fn to_yaml_node(value: &Value) -> Yaml {
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(a) => Yaml::Array(a.iter().map(to_yaml_node).collect()),
        Value::Object(m) => {
            let mut h = Hash::new();
            for (k, v) in m {
                h.insert(Yaml::String(k.clone()), to_yaml_node(v));
            }
            Yaml::Hash(h)
        }
    }
}

/// One generated file: where it goes and what it holds.
pub struct Artifact {
    /// Relative to the `schemas/` crate directory.
    pub path: PathBuf,
    pub contents: String,
}

/// Every generated artifact.
pub fn artifacts() -> Vec<Artifact> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        out.push(Artifact {
            path: Path::new("crds").join(crd_file_name(kind)),
            contents: crd_yaml(kind),
        });
        let mut schema =
            serde_json::to_string_pretty(json_schema(kind)).expect("schemas serialize");
        schema.push('\n');
        out.push(Artifact {
            path: Path::new("jsonschema").join(json_schema_file_name(kind)),
            contents: schema,
        });
    }
    out
}
