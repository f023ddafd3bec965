//! `lattice-policy test PATH…`: policy test files, run against the engine.
//!
//! A test file is YAML (the format of `conformance/decisions/`):
//!
//! ```yaml
//! world: [examples/world]      # directories or files of manifests (optional)
//! policies: policies           # a rule packs directory (optional)
//! objects: [ … ]               # inline manifests joining the world (optional)
//! cases:
//!   - name: checkout may call the ledger
//!     principal: Service::shop/checkout
//!     action: Connect
//!     resource: Service::payments/ledger
//!     context: {ports: [8080]}  # optional; defaults as for `can`
//!     expect: allow             # or deny
//!     determining: [baseline/bilateral-connect]   # optional: exactly these policies
//!     audit: []                 # optional: exactly these audit findings
//! ```
//!
//! Paths are relative to the working directory, else to the test file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lattice_engine::{PolicyStore, Projection, Query, Snapshot, World};
use lattice_schemas::manifest::{Object, load_source};
use serde_json::Value;

use crate::query::{context_for, parse_action, parse_uid};
use crate::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

/// One case's outcome.
struct Outcome {
    name: String,
    seconds: f64,
    /// `None` when it passed; else what differed.
    failure: Option<String>,
}

/// One file's outcome: its cases, or why it could not run.
struct FileOutcome {
    path: PathBuf,
    result: Result<Vec<Outcome>, String>,
}

fn resolve(file: &Path, p: &str) -> PathBuf {
    let direct = PathBuf::from(p);
    if direct.exists() {
        return direct;
    }
    file.parent().unwrap_or(Path::new(".")).join(p)
}

fn run_file(path: &Path) -> Result<Vec<Outcome>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&text);
    if let Some(e) = errors.first() {
        return Err(e.message.clone());
    }
    let spec = docs
        .first()
        .map(|d| d.value.clone())
        .ok_or("the file is empty")?;
    let list = |k: &str| -> Result<Vec<Value>, String> {
        match spec.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => Err(format!("`{k}` must be a list")),
        }
    };
    let world_paths: Vec<PathBuf> = list("world")?
        .iter()
        .map(|v| {
            v.as_str()
                .map(|p| resolve(path, p))
                .ok_or("`world` lists paths")
        })
        .collect::<Result<_, _>>()?;
    let mut world = if world_paths.is_empty() {
        World::new()
    } else {
        World::load(&world_paths).map_err(|e| {
            let first = e
                .report
                .findings
                .first()
                .map(|f| format!(": {}", f.message))
                .unwrap_or_default();
            format!("the world does not load{first}")
        })?
    };
    for (i, o) in list("objects")?.iter().enumerate() {
        let file = lattice_schemas::diagnostics::SourceFile::new(
            format!("{}#objects[{i}]", path.display()),
            serde_json::to_string(o).expect("JSON values serialize"),
        );
        let loaded = load_source(&file);
        if let Some(f) = loaded
            .findings
            .iter()
            .find(|f| f.severity == lattice_schemas::diagnostics::Severity::Error)
        {
            return Err(format!("objects[{i}]: {}", f.message));
        }
        for m in loaded.manifests {
            world.upsert(m.object);
        }
    }
    let mut store = match spec.get("policies").and_then(Value::as_str) {
        Some(p) => PolicyStore::load_packs(&resolve(path, p)).map_err(|e| e.to_string())?,
        None => PolicyStore::new(),
    };
    for (_, o) in world.objects() {
        if let Object::CedarPolicy(p) = o {
            store.apply_object(p).map_err(|e| e.to_string())?;
        }
    }
    // The image verifications the file assumes (the engine does no I/O): without any, no
    // image is signed.
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
    let cases = list("cases")?;
    if cases.is_empty() {
        return Err("no `cases`".into());
    }
    Ok(cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let start = Instant::now();
            let name = c["name"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("case {}", i + 1));
            let failure = run_case(c, &snapshot, &world).err();
            Outcome {
                name,
                seconds: start.elapsed().as_secs_f64(),
                failure,
            }
        })
        .collect())
}

fn ids(v: Option<&Value>) -> Option<Vec<String>> {
    let mut out: Vec<String> = v?
        .as_array()?
        .iter()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect();
    out.sort();
    Some(out)
}

fn run_case(c: &Value, snapshot: &Snapshot, world: &World) -> Result<(), String> {
    let field = |k: &str| c[k].as_str().ok_or_else(|| format!("no `{k}`"));
    let principal = parse_uid(field("principal")?)?;
    let action = parse_action(field("action")?)?;
    let resource = parse_uid(field("resource")?)?;
    let context_text = c.get("context").map(Value::to_string);
    let context = context_for(
        &principal,
        &action,
        &resource,
        world,
        context_text.as_deref(),
    )?;
    let expect = field("expect")?;
    if expect != "allow" && expect != "deny" {
        return Err(format!("`expect` is `{expect}`; write allow or deny"));
    }
    let q = Query::new(principal, action, resource).with_context(context);
    let d = snapshot.decide(&q).map_err(|e| e.to_string())?;
    let got = if d.allowed { "allow" } else { "deny" };
    let mut determining: Vec<String> = d.determining.iter().map(|p| p.id.clone()).collect();
    determining.sort();
    let mut audit: Vec<String> = d.audit.iter().map(|p| p.id.clone()).collect();
    audit.sort();
    let want_determining = ids(c.get("determining"));
    let want_audit = ids(c.get("audit"));
    let mut diffs = Vec::new();
    if got != expect {
        diffs.push(format!("decision:    expected {expect}, got {got}"));
    }
    if let Some(w) = &want_determining
        && *w != determining
    {
        diffs.push(format!(
            "determining: expected [{}], got [{}]",
            w.join(", "),
            determining.join(", ")
        ));
    }
    if let Some(w) = &want_audit
        && *w != audit
    {
        diffs.push(format!(
            "audit:       expected [{}], got [{}]",
            w.join(", "),
            audit.join(", ")
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        if want_determining.is_none() {
            diffs.push(format!("(decided by [{}])", determining.join(", ")));
        }
        Err(diffs.join("\n"))
    }
}

fn test_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut stack = paths.to_vec();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            let entries =
                std::fs::read_dir(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            stack.extend(entries.flatten().map(|e| e.path()));
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        } else if paths.contains(&p) {
            return Err(format!("{} is not a YAML test file", p.display()));
        }
    }
    out.sort();
    Ok(out)
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JUnit XML: a suite per file, a test case per case; a file that cannot run is an error.
fn junit(files: &[FileOutcome]) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"lattice-policy test\">\n",
    );
    for f in files {
        let name = xml(&f.path.display().to_string());
        match &f.result {
            Err(e) => out.push_str(&format!(
                "  <testsuite name=\"{name}\" tests=\"1\" failures=\"0\" errors=\"1\">\n    <testcase name=\"load\" classname=\"{name}\"><error message=\"{}\"/></testcase>\n  </testsuite>\n",
                xml(e)
            )),
            Ok(cases) => {
                let failures = cases.iter().filter(|c| c.failure.is_some()).count();
                out.push_str(&format!(
                    "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">\n",
                    cases.len()
                ));
                for c in cases {
                    out.push_str(&format!(
                        "    <testcase name=\"{}\" classname=\"{name}\" time=\"{:.6}\"",
                        xml(&c.name),
                        c.seconds
                    ));
                    match &c.failure {
                        None => out.push_str("/>\n"),
                        Some(m) => out.push_str(&format!(
                            "><failure message=\"{}\">{}</failure></testcase>\n",
                            xml(m.lines().next().unwrap_or_default()),
                            xml(m)
                        )),
                    }
                }
                out.push_str("  </testsuite>\n");
            }
        }
    }
    out.push_str("</testsuites>\n");
    out
}

/// Runs every test file under `paths`.
pub fn run(paths: &[PathBuf], junit_file: Option<&Path>) -> u8 {
    let files = match test_files(paths) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("error: no test files (*.yaml) found");
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let outcomes: Vec<FileOutcome> = files
        .into_iter()
        .map(|path| FileOutcome {
            result: run_file(&path),
            path,
        })
        .collect();
    let (mut passed, mut failed, mut broken) = (0, 0, 0);
    let mut out = String::new();
    for f in &outcomes {
        match &f.result {
            Err(e) => {
                broken += 1;
                out.push_str(&format!("ERROR {}: {e}\n", f.path.display()));
            }
            Ok(cases) => {
                for c in cases {
                    match &c.failure {
                        None => passed += 1,
                        Some(m) => {
                            failed += 1;
                            out.push_str(&format!("FAIL  {}: {}\n", f.path.display(), c.name));
                            for line in m.lines() {
                                out.push_str(&format!("      {line}\n"));
                            }
                        }
                    }
                }
            }
        }
    }
    out.push_str(&format!(
        "{passed} passed, {failed} failed, {broken} file(s) could not run\n"
    ));
    crate::output::emit(&out);
    if let Some(j) = junit_file
        && let Err(e) = std::fs::write(j, junit(&outcomes))
    {
        eprintln!("error: cannot write {}: {e}", j.display());
        return EXIT_USAGE;
    }
    if broken > 0 {
        EXIT_USAGE
    } else if failed > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}
