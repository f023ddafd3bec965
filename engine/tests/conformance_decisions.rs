//! Decision conformance: each `conformance/decisions/*.yaml` names a world, rule packs and
//! extra objects, the image verifications it assumes (what `lattice-supply` reports: the
//! engine does no I/O, so its cases state them), and lists queries with the decision (and
//! determining policies) expected.

use std::path::{Path, PathBuf};

use cedar_policy::Context;
use lattice_engine::{PolicyStore, Projection, Query, Snapshot, World, parse_uid};
use lattice_schemas::manifest::{Object, load_source};
use serde_json::Value;

fn root() -> PathBuf {
    lattice_testkit::workspace_root()
}

fn run_case(path: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&text);
    if let Some(e) = errors.first() {
        return Err(e.message.clone());
    }
    let spec = &docs[0].value;
    let list = |k: &str| {
        spec.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let paths: Vec<PathBuf> = list("world")
        .iter()
        .filter_map(Value::as_str)
        .map(|p| root().join(p))
        .collect();
    let mut world = if paths.is_empty() {
        World::new()
    } else {
        World::load(&paths).map_err(|e| e.to_string())?
    };
    // Inline objects, checked exactly like manifests.
    for (i, o) in list("objects").iter().enumerate() {
        let file = lattice_schemas::diagnostics::SourceFile::new(
            format!("{}#objects[{i}]", path.display()),
            serde_json::to_string(o).unwrap(),
        );
        let loaded = load_source(&file);
        if let Some(f) = loaded.findings.first() {
            return Err(format!("objects[{i}]: {}", f.message));
        }
        for m in loaded.manifests {
            world.upsert(m.object);
        }
    }
    let mut store = match spec.get("policies").and_then(Value::as_str) {
        Some(p) => PolicyStore::load_packs(&root().join(p)).map_err(|e| e.to_string())?,
        None => PolicyStore::new(),
    };
    for (_, o) in world.objects() {
        if let Object::CedarPolicy(p) = o {
            store.apply_object(p).map_err(|e| e.to_string())?;
        }
    }
    let empty = serde_json::Map::new();
    let stated = spec
        .get("images")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let live = lattice_engine::project::LiveFacts {
        images: lattice_engine::project::ImageFacts::stated(stated, &path.display().to_string())?,
        ..Default::default()
    };
    let snapshot = Snapshot::build(&world, &Projection::with_live(&world, live), &store)
        .map_err(|e| e.to_string())?;
    let mut failures = Vec::new();
    let cases = list("cases");
    for c in &cases {
        let name = c["name"].as_str().unwrap_or("?");
        let field = |k: &str| c[k].as_str().ok_or_else(|| format!("{name}: no `{k}`"));
        let principal = parse_uid(field("principal")?)?;
        let action = parse_uid(&format!("Action::{}", field("action")?))?;
        let resource = parse_uid(field("resource")?)?;
        let context = Context::from_json_value(
            c.get("context").cloned().unwrap_or(serde_json::json!({})),
            None,
        )
        .map_err(|e| e.to_string())?;
        let q = Query::new(principal, action, resource).with_context(context);
        let d = snapshot.decide(&q).map_err(|e| format!("{name}: {e}"))?;
        let verdict = if d.allowed { "allow" } else { "deny" };
        if verdict != field("expect")? {
            failures.push(format!(
                "{name}: expected {}, got {verdict} (determining {:?})",
                field("expect")?,
                d.determining.iter().map(|p| &p.id).collect::<Vec<_>>()
            ));
            continue;
        }
        if let Some(expected) = c.get("determining").and_then(Value::as_array) {
            let mut want: Vec<&str> = expected.iter().filter_map(Value::as_str).collect();
            let mut got: Vec<&str> = d.determining.iter().map(|p| p.id.as_str()).collect();
            want.sort();
            got.sort();
            if want != got {
                failures.push(format!("{name}: determining {got:?}, expected {want:?}"));
            }
        }
        if let Some(expected) = c.get("audit").and_then(Value::as_array) {
            let want: Vec<&str> = expected.iter().filter_map(Value::as_str).collect();
            let got: Vec<&str> = d.audit.iter().map(|p| p.id.as_str()).collect();
            if want != got {
                failures.push(format!("{name}: audit {got:?}, expected {want:?}"));
            }
        }
    }
    if failures.is_empty() {
        Ok(cases.len())
    } else {
        Err(failures.join("\n"))
    }
}

#[test]
fn every_decision_case_holds() {
    let dir = root().join("conformance/decisions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "decision cases missing in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    let mut total = 0;
    for f in &files {
        match run_case(f) {
            Ok(n) => total += n,
            Err(e) => failures.push(format!("{}:\n{e}", f.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!("{total} decision cases in {} files passed", files.len());
}
