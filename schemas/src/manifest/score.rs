//! Importing Score documents (`apiVersion: score.dev/v1b1`) as `LatticeService`s.
//!
//! `containers`, `service` and `resources` map one to one onto the spec; `metadata.name` is
//! the object name and `metadata.annotations` its annotations. Score metadata keys that
//! Kubernetes metadata cannot hold are kept, as JSON, in the annotation
//! [`SCORE_METADATA_ANNOTATION`]. The deprecated list forms of `files` and `volumes` become
//! maps keyed by their `target`.

use serde_json::{Map, Value, json};

use crate::crd::API_VERSION;
use crate::manifest::yaml::push_pointer;

/// The `apiVersion` of Score workloads.
pub const SCORE_API_VERSION: &str = "score.dev/v1b1";

/// Where Score metadata beyond `name` and `annotations` is kept.
pub const SCORE_METADATA_ANNOTATION: &str = "lattice.dev/score-metadata";

/// A Score document that cannot be imported, at a JSON pointer into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreError {
    pub pointer: String,
    pub message: String,
}

/// Converts a Score document into a `LatticeService` document.
pub fn to_lattice_service(score: &Value) -> Result<Value, ScoreError> {
    let Value::Object(doc) = score else {
        return Err(err("", "a Score workload is a mapping"));
    };
    let mut metadata = Map::new();
    let mut annotations = Map::new();
    let mut extra = Map::new();
    match doc.get("metadata") {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match k.as_str() {
                    "name" => {
                        metadata.insert("name".into(), v.clone());
                    }
                    "annotations" => match v {
                        Value::Object(a) => annotations.extend(a.clone()),
                        _ => {
                            return Err(err(
                                "/metadata/annotations",
                                "annotations must be a mapping of strings",
                            ));
                        }
                    },
                    _ => {
                        extra.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        Some(_) => return Err(err("/metadata", "metadata must be a mapping")),
        None => {}
    }
    if !extra.is_empty() {
        annotations.insert(
            SCORE_METADATA_ANNOTATION.into(),
            Value::String(Value::Object(extra).to_string()),
        );
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    let mut spec = Map::new();
    for (k, v) in doc {
        match k.as_str() {
            "apiVersion" | "metadata" => {}
            "containers" => {
                let mut containers = v.clone();
                if let Value::Object(cs) = &mut containers {
                    for (name, c) in cs.iter_mut() {
                        let at = push_pointer("/containers", name);
                        if let Value::Object(c) = c {
                            for field in ["files", "volumes"] {
                                if let Some(list @ Value::Array(_)) = c.get_mut(field) {
                                    *list = list_to_map(list, &push_pointer(&at, field))?;
                                }
                            }
                        }
                    }
                }
                spec.insert(k.clone(), containers);
            }
            // Anything else (including unknown fields) is passed on, so strict validation
            // reports it against the LatticeService schema.
            _ => {
                spec.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(json!({
        "apiVersion": API_VERSION,
        "kind": "LatticeService",
        "metadata": metadata,
        "spec": spec,
    }))
}

fn list_to_map(list: &Value, pointer: &str) -> Result<Value, ScoreError> {
    let mut out = Map::new();
    for (i, item) in list.as_array().into_iter().flatten().enumerate() {
        let at = push_pointer(pointer, &i.to_string());
        let Value::Object(item) = item else {
            return Err(err(&at, "each entry must be a mapping"));
        };
        let mut item = item.clone();
        let Some(Value::String(target)) = item.remove("target") else {
            return Err(err(&at, "an entry of the list form needs a `target` path"));
        };
        if out.insert(target.clone(), Value::Object(item)).is_some() {
            return Err(err(&at, &format!("target `{target}` is listed twice")));
        }
    }
    Ok(Value::Object(out))
}

fn err(pointer: &str, message: &str) -> ScoreError {
    ScoreError {
        pointer: pointer.to_owned(),
        message: message.to_owned(),
    }
}

/// Maps a pointer into the imported `LatticeService` back to the Score document.
pub fn score_pointer(lattice_pointer: &str) -> &str {
    lattice_pointer
        .strip_prefix("/spec")
        .unwrap_or(lattice_pointer)
}
