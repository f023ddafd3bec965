//! Side by side with the peers (`bench/peers/`): the same decisions by Lattice and by OPA,
//! on the same inputs, in one run, with their verdicts compared.
//!
//! **Bilateral mesh at scale.** The REPL bench's estate (10,000 services in 50 namespaces,
//! 50,000 declared edges), with every seventh service not accepting its nearest caller, so
//! 1 in 35 edges is one-sided and must be denied. Lattice decides every edge with its mesh
//! plan under the bundled rule packs (in process, the world loaded once); OPA evaluates the
//! same rule written as a data-driven Rego policy (`bench/peers/mesh.rego`, the
//! declarations as `data.json`) for every edge: `opa bench` for the evaluation alone, `opa
//! eval` for the whole process from files, beside `lattice-policy mesh` from files. Both must
//! allow exactly the same edges.
//!
//! **Policy count scaling.** One `DeployImage` request decided against 10, 100, 1,000 and
//! 10,000 permits, each naming one service and requiring a first-party registry: Lattice
//! (the policy index), plain Cedar (`Authorizer` over the same policy set and entities) and
//! OPA (the same rules in Rego, one per service, which OPA's rule index can select by the
//! principal). p50 and p99 over many requests for the two in-process engines; `opa bench`
//! reports the time per evaluation over its own repetitions. Every engine must give the same answer, for a principal a
//! rule names (allow) and one none does (deny).
//!
//! The peers are built by `bench/peers/build` into `~/.cache/lattice-ci/peers/bin` (or
//! `$LATTICE_PEERS_BIN`); one that is not there is reported as skipped, never as agreeing.
//! `cargo bench -p lattice-policy --bench peers` runs the full size and writes
//! `peers.md` and `peers.json` into `$LATTICE_PEERS_OUT` (default: the target directory);
//! under `cargo test` (CI's smoke run) 500 services run once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lattice_engine::{PolicyStore, Projection, Snapshot, World};
use lattice_gates::MeshPlan;
use lattice_schemas::manifest::Object;
use serde_json::{Value, json};

// The allocator `lattice-policy` ships with (`src/main.rs`): the in-process rows measure the
// code the binary runs, under the allocator it runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/estate.rs"]
mod estate;
#[path = "peers/pod_security.rs"]
mod pod_security;

/// Every seventh service leaves its nearest caller undeclared.
const ONE_SIDED_EVERY: usize = 7;

type Edges = BTreeSet<(String, String)>;

/// One engine's row.
struct Row {
    engine: String,
    what: String,
    total: Option<Duration>,
    per_decision_us: Option<f64>,
    rss_mib: Option<f64>,
    /// `None` when the engine was not run.
    agrees: Option<bool>,
    note: String,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Peak resident memory of this process so far, in MiB (Linux: VmHWM).
fn own_peak_rss() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs `cmd` under `/usr/bin/time -f %M` when it exists: (wall time, output, peak RSS).
fn timed(program: &Path, args: &[&str]) -> (Duration, std::process::Output, Option<f64>) {
    timed_with(program, args, &[])
}

/// [`timed`] with environment variables set for the program.
fn timed_with(
    program: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
) -> (Duration, std::process::Output, Option<f64>) {
    let time = Path::new("/usr/bin/time");
    let mut cmd = if time.exists() {
        let mut c = Command::new(time);
        c.args(["-f", "peak-rss-kib %M"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let out = cmd.output().expect("the program runs");
    let took = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rss = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("peak-rss-kib "))
        .and_then(|k| k.trim().parse::<f64>().ok())
        .map(|k| k / 1024.0);
    (took, out, rss)
}

fn peers_bin() -> PathBuf {
    std::env::var_os("LATTICE_PEERS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/lattice-ci/peers/bin")
        })
}

/// The version a peer was built at, when it was.
fn peer(name: &str) -> Option<(PathBuf, String)> {
    let dir = peers_bin();
    let bin = dir.join(name);
    bin.exists().then(|| {
        let version = std::fs::read_to_string(dir.join(format!("{name}.version")))
            .unwrap_or_default()
            .trim()
            .to_owned();
        (bin, version)
    })
}

/// Lattice's mesh plan, in process: the world and packs loaded once, then every declared
/// edge decided `runs` times.
fn lattice_in_process(world: &Path, runs: usize) -> (Duration, usize, Edges) {
    let root = lattice_testkit::workspace_root();
    let w = World::load(&[world.to_path_buf()]).expect("the estate loads");
    let mut store = PolicyStore::load_packs(&root.join("policies")).expect("the packs load");
    for (_, o) in w.objects() {
        if let Object::CedarPolicy(p) = o {
            store.apply_object(p).expect("the estate's grants load");
        }
    }
    let snapshot = Snapshot::build(&w, &Projection::of(&w), &store).expect("a snapshot");
    let mut times = Vec::new();
    let mut plan = None;
    for _ in 0..runs {
        let t = Instant::now();
        let p = MeshPlan::plan(&snapshot, &w);
        times.push(t.elapsed());
        plan = Some(p);
    }
    let plan = plan.expect("at least one run");
    let allowed = plan
        .edges()
        .filter(|e| e.allowed())
        .map(|e| (e.caller.clone(), e.callee.clone()))
        .collect();
    (median(times), plan.len(), allowed)
}

/// `lattice-policy mesh` from files, the whole process, three times: cold (the caches
/// empty: every manifest parsed, validated and projected, and every edge decided), warm
/// (the validated world and its entities read back from the cache the first run stored,
/// every edge decided afresh: `LATTICE_NO_CACHE=outputs`) and kept (the first run's answer
/// read back). Each run's time and peak RSS, and the edges it allows (which must be the
/// same).
fn lattice_from_files(world: &Path, cache: &Path) -> [(Duration, Option<f64>, Edges); 3] {
    let bin = Path::new(env!("CARGO_BIN_EXE_lattice-policy"));
    let _ = std::fs::remove_dir_all(cache);
    let run = |no_cache: &str| {
        // The bundled packs, which the binary carries: the packs the in-process plan loads.
        let (took, out, rss) = timed_with(
            bin,
            &["mesh", "--world", world.to_str().unwrap(), "-o", "json"],
            &[
                ("LATTICE_CACHE_DIR", cache),
                ("LATTICE_NO_CACHE", Path::new(no_cache)),
            ],
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "lattice-policy mesh answers one JSON document ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let edges = doc["edges"]
            .as_array()
            .expect("a list of edges")
            .iter()
            .filter(|e| e["allowed"] == true)
            .map(|e| {
                (
                    e["caller"].as_str().unwrap().to_owned(),
                    e["callee"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        (took, rss, edges)
    };
    let cold = run("0");
    let warm = run("outputs");
    let kept = run("0");
    [cold, warm, kept]
}

/// The declarations as OPA data: each service's calls and accepts as sets, and every
/// declared edge.
fn opa_data(declared: &[(String, String, bool, bool)]) -> Value {
    let mut services = serde_json::Map::new();
    let mut edges = Vec::new();
    for (caller, callee, calls, accepts) in declared {
        let entry = |m: &mut serde_json::Map<String, Value>, s: &str| {
            m.entry(s.to_owned())
                .or_insert_with(|| json!({"calls": {}, "accepts": {}}))
                .clone()
        };
        let mut c = entry(&mut services, caller);
        if *calls {
            c["calls"][callee] = json!(true);
        }
        services.insert(caller.clone(), c);
        let mut d = entry(&mut services, callee);
        if *accepts {
            d["accepts"][caller] = json!(true);
        }
        services.insert(callee.clone(), d);
        edges.push(json!({"caller": caller, "callee": callee}));
    }
    json!({"services": services, "edges": edges})
}

/// The median time per evaluation, in ns, of `opa bench -f json` (one document per
/// `--count`).
fn opa_bench_median(stdout: &[u8]) -> Option<f64> {
    let mut per_op: Vec<f64> = serde_json::Deserializer::from_slice(stdout)
        .into_iter::<Value>()
        .filter_map(Result::ok)
        .filter_map(|b| Some(b["T"].as_f64()? / b["N"].as_f64()?))
        .collect();
    per_op.sort_by(f64::total_cmp);
    per_op.get(per_op.len() / 2).copied()
}

fn opa_edges(doc: &Value) -> Edges {
    doc["result"][0]["expressions"][0]["value"]
        .as_array()
        .expect("a set of edges")
        .iter()
        .map(|e| {
            (
                e[0].as_str().unwrap().to_owned(),
                e[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

/// One scaling point: (policies, Lattice p50/p99 µs, plain Cedar p50/p99 µs, OPA µs per
/// evaluation, every engine agreed, the policies Lattice's index hands Cedar).
type Scale = (usize, (f64, f64), (f64, f64), Option<f64>, bool, usize);

/// The service a permit names, by index, and the image it deploys.
fn scaled_service(j: usize) -> (String, String) {
    (
        format!("ns{}/s{j}", j % estate::NAMESPACES),
        format!("ghcr.io/org/app{j}:1.0"),
    )
}

fn policy_count_scaling(world: &Path, sizes: &[usize], samples: usize, dir: &Path) -> Vec<Scale> {
    use cedar_policy::{Authorizer, Context};
    use lattice_engine::{Query, action, uid};
    let w = World::load(&[world.to_path_buf()]).expect("the estate loads");
    let services = w.objects().filter(|(_, o)| o.is_workload()).count();
    let opa = peer("opa");
    sizes
        .iter()
        .map(|&k| {
            let text: String = (0..k)
                .map(|j| {
                    let (svc, _) = scaled_service(j);
                    format!(
                        "@id(\"p{j}\")\npermit (principal == Lattice::Service::\"{svc}\", action == Lattice::Action::\"DeployImage\", resource)\nwhen {{ resource.registry == \"ghcr.io\" }};\n"
                    )
                })
                .collect();
            let mut store = PolicyStore::new();
            let mut p = lattice_schemas::crd::CedarPolicy::new(
                "scale",
                lattice_schemas::crd::policy::CedarPolicySpec {
                    policies: text,
                    ..Default::default()
                },
            );
            p.metadata.namespace = Some("platform".into());
            store.apply_object(&p).expect("the permits load");
            let snapshot =
                Snapshot::build(&w, &Projection::of(&w), &store).expect("a snapshot");
            let context = || {
                Context::from_json_value(json!({"raisedBy": "main", "workloadKind": "service", "sidecar": false}), None)
                    .unwrap()
            };
            let ask = |j: usize| {
                let (svc, image) = scaled_service(j);
                Query::new(uid("Service", &svc), action("DeployImage"), uid("Image", &image))
                    .with_context(context())
            };
            // The same ten principals at every size (each named by a permit), so only the
            // number of policies changes, not which entities the requests touch; and one
            // principal no permit names.
            let named = 10.min(k).min(services);
            let queries: Vec<Query> = (0..samples).map(|i| ask((i * 7919) % named)).collect();
            let stranger = ask(named.max(k) % services.max(1) + services * 2);
            let all = snapshot.enforce_index().policy_set();
            let looked_at = snapshot.enforce_index().candidate_count(
                &queries[0].principal,
                &queries[0].action,
                &queries[0].resource,
                snapshot.entities(),
            );
            let authorizer = Authorizer::new();
            let mut agree = true;
            for q in queries.iter().take(50).chain(std::iter::once(&stranger)) {
                let ours = snapshot.decide(q).expect("decides").allowed;
                let r = snapshot.request(q).expect("a request");
                let plain = authorizer.is_authorized(&r, all, snapshot.entities()).decision()
                    == cedar_policy::Decision::Allow;
                agree &= ours == plain;
            }
            agree &= snapshot.decide(&queries[0]).unwrap().allowed;
            agree &= !snapshot.decide(&stranger).unwrap().allowed;
            let requests: Vec<_> = queries.iter().map(|q| snapshot.request(q).unwrap()).collect();
            // Each engine in its own loop: interleaved, plain Cedar's walk over every policy
            // evicts the caches Lattice's next request would find warm, and Lattice's time
            // grew with a policy count it never looks at.
            let (mut ours, mut plain) = (Vec::new(), Vec::new());
            for q in &queries {
                let t = Instant::now();
                std::hint::black_box(snapshot.decide(q).unwrap());
                ours.push(t.elapsed());
            }
            for r in &requests {
                let t = Instant::now();
                std::hint::black_box(authorizer.is_authorized(r, all, snapshot.entities()));
                plain.push(t.elapsed());
            }
            let opa_mean = opa.as_ref().and_then(|(bin, _)| {
                let rego: String = std::iter::once(
                    "package lattice.scale\n\nimport rego.v1\n\ndefault allow := false\n".to_owned(),
                )
                .chain((0..k).map(|j| {
                    let (svc, _) = scaled_service(j);
                    format!(
                        "\nallow if {{\n\tinput.principal == \"{svc}\"\n\tinput.action == \"DeployImage\"\n\tinput.resource.registry == \"ghcr.io\"\n}}\n"
                    )
                }))
                .collect();
                let file = dir.join(format!("scale-{k}.rego"));
                std::fs::write(&file, rego).unwrap();
                let input = |j: usize| {
                    let (svc, _) = scaled_service(j);
                    json!({"principal": svc, "action": "DeployImage", "resource": {"registry": "ghcr.io"}})
                };
                let eval = |j: usize, name: &str| -> Option<bool> {
                    let path = dir.join(name);
                    std::fs::write(&path, serde_json::to_vec(&input(j)).unwrap()).unwrap();
                    let (_, out, _) = timed(
                        bin,
                        &["eval", "-f", "json", "-d", file.to_str()?, "-i", path.to_str()?, "data.lattice.scale.allow"],
                    );
                    serde_json::from_slice::<Value>(&out.stdout).ok()?["result"][0]["expressions"][0]["value"].as_bool()
                };
                let allowed = eval(named / 2, "named.json")?;
                let denied = eval(services * 3, "stranger.json")?;
                agree &= allowed && !denied;
                let (_, out, _) = timed(
                    bin,
                    &["bench", "-f", "json", "-d", file.to_str()?, "-i", dir.join("named.json").to_str()?, "data.lattice.scale.allow"],
                );
                opa_bench_median(&out.stdout).map(|ns| ns / 1e3)
            });
            (k, percentiles(ours), percentiles(plain), opa_mean, agree, looked_at)
        })
        .collect()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 10_000 } else { 500 };
    let runs = if full { 5 } else { 1 };
    let dir = std::env::temp_dir().join(format!("lattice-peers-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let world = dir.join("world");
    estate::generate_with(&world, n, ONE_SIDED_EVERY);
    let declared = estate::declared_edges(n, ONE_SIDED_EVERY);
    let expected: Edges = declared
        .iter()
        .filter(|(_, _, calls, accepts)| *calls && *accepts)
        .map(|(a, b, _, _)| (a.clone(), b.clone()))
        .collect();
    let edges = declared.len();

    let mut rows = Vec::new();
    let (plan, decided, allowed) = lattice_in_process(&world, runs);
    assert_eq!(decided, edges, "Lattice decides every declared edge");
    rows.push(Row {
        engine: "Lattice".into(),
        what: format!("mesh plan, {edges} edges, every bundled pack (in process)"),
        total: Some(plan),
        per_decision_us: Some(plan.as_secs_f64() * 1e6 / edges as f64),
        rss_mib: own_peak_rss(),
        agrees: Some(allowed == expected),
        note: format!("{} allowed", allowed.len()),
    });
    let [cold, warm, kept] = lattice_from_files(&world, &dir.join("cache"));
    for ((took, rss, from_files), how) in [
        (
            cold,
            "`lattice-policy mesh`, whole process from files (cold: caches empty)",
        ),
        (
            warm,
            "`lattice-policy mesh`, whole process from files (warm: validated world and entities cached, every edge decided afresh)",
        ),
        (
            kept,
            "`lattice-policy mesh`, whole process from files (the kept answer read back: same inputs)",
        ),
    ] {
        rows.push(Row {
            engine: "Lattice".into(),
            what: how.into(),
            total: Some(took),
            per_decision_us: None,
            rss_mib: rss,
            agrees: Some(from_files == expected),
            note: String::new(),
        });
    }

    let mut versions = json!({"lattice": env!("CARGO_PKG_VERSION")});
    match peer("opa") {
        None => rows.push(Row {
            engine: "OPA".into(),
            what: "skipped: not built (bench/peers/build)".into(),
            total: None,
            per_decision_us: None,
            rss_mib: None,
            agrees: None,
            note: String::new(),
        }),
        Some((opa, version)) => {
            versions["opa"] = json!(version);
            let rego = lattice_testkit::workspace_root().join("bench/peers/mesh.rego");
            let data = dir.join("data.json");
            std::fs::write(&data, serde_json::to_vec(&opa_data(&declared)).unwrap()).unwrap();
            let (rego, data) = (rego.to_str().unwrap(), data.to_str().unwrap());
            let query = "data.lattice.mesh.allowed";
            let (took, out, rss) =
                timed(&opa, &["eval", "-f", "json", "-d", rego, "-d", data, query]);
            assert!(
                out.status.success(),
                "opa eval: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let doc: Value = serde_json::from_slice(&out.stdout).expect("opa's JSON");
            let opa_allowed = opa_edges(&doc);
            let count = if full { "5" } else { "1" };
            let (_, bench, _) = timed(
                &opa,
                &[
                    "bench", "-f", "json", "--count", count, "-d", rego, "-d", data, query,
                ],
            );
            let per_eval =
                opa_bench_median(&bench.stdout).map(|ns| Duration::from_nanos(ns as u64));
            rows.push(Row {
                engine: format!("OPA {version}"),
                what: format!(
                    "the same rule in Rego over {edges} edges (`opa bench`: evaluation only)"
                ),
                total: per_eval,
                per_decision_us: per_eval.map(|d| d.as_secs_f64() * 1e6 / edges as f64),
                rss_mib: None,
                agrees: Some(opa_allowed == expected),
                note: format!("{} allowed", opa_allowed.len()),
            });
            rows.push(Row {
                engine: format!("OPA {version}"),
                what: "`opa eval`, whole process from files".into(),
                total: Some(took),
                per_decision_us: None,
                rss_mib: rss,
                agrees: Some(opa_allowed == expected),
                note: String::new(),
            });
        }
    }
    // After the mesh, so that the in-process plan's peak RSS is its own.
    let (pods_md, pods_json, lattice_agrees) =
        pod_security_comparison(&dir.join("pods"), if full { 10_000 } else { 200 });
    let sizes: &[usize] = if full {
        &[10, 100, 1_000, 10_000]
    } else {
        &[10, 100]
    };
    let scaling = policy_count_scaling(&world, sizes, if full { 5_000 } else { 200 }, &dir);
    let _ = std::fs::remove_dir_all(&dir);

    let ms = |d: Option<Duration>| {
        d.map_or("–".to_owned(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        })
    };
    let mut md = format!(
        "Bilateral mesh, {n} services, {edges} declared edges ({} allowed, {} one-sided), this machine, {}\n\n| engine | what | time | µs per decision | peak RSS | same verdicts |\n|---|---|---|---|---|---|\n",
        expected.len(),
        edges - expected.len(),
        if full { "full run" } else { "smoke run" }
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.engine,
            r.what,
            ms(r.total),
            r.per_decision_us.map_or("–".into(), |u| format!("{u:.2}")),
            r.rss_mib.map_or("–".into(), |m| format!("{m:.0} MiB")),
            match r.agrees {
                Some(true) => format!("yes {}", r.note).trim().to_owned(),
                Some(false) => format!("**NO** {}", r.note),
                None => "not run".into(),
            }
        ));
    }
    md.push_str(&format!(
        "\nOne DeployImage request against N permits (µs; Lattice and plain Cedar p50 / p99 over {} requests, OPA per evaluation, by `opa bench`)\n\n| policies | Lattice (indexed) | policies Lattice evaluates | plain Cedar | OPA | Lattice vs Cedar (p50) | Lattice vs OPA | same verdicts |\n|---|---|---|---|---|---|---|---|\n",
        if full { 5_000 } else { 200 }
    ));
    for (k, (o50, o99), (c50, c99), opa, agree, looked_at) in &scaling {
        md.push_str(&format!(
            "| {k} | {o50:.1} / {o99:.1} | {looked_at} | {c50:.1} / {c99:.1} | {} | {:.1}× | {} | {} |\n",
            opa.map_or("skipped: not built".into(), |m| format!("{m:.1}")),
            c50 / o50.max(1e-9),
            opa.map_or("–".into(), |m| format!("{:.1}×", m / o50.max(1e-9))),
            if *agree { "yes" } else { "**NO**" }
        ));
    }
    md = format!("{pods_md}\n{md}");
    let doc = json!({
        "podSecurity": pods_json,
        "scaling": scaling.iter().map(|(k, (o50, o99), (c50, c99), opa, agree, looked_at)| json!({
            "evaluated": looked_at,
            "policies": k, "lattice": {"p50": o50, "p99": o99}, "cedar": {"p50": c50, "p99": c99},
            "opaPerEvaluation": opa, "sameVerdicts": agree,
        })).collect::<Vec<_>>(),
        "benchmark": "bilateral-mesh",
        "services": n, "edges": edges, "allowed": expected.len(), "full": full,
        "versions": versions,
        "rows": rows.iter().map(|r| json!({
            "engine": r.engine, "what": r.what,
            "ns": r.total.map(|d| d.as_nanos() as u64),
            "usPerDecision": r.per_decision_us, "peakRssMiB": r.rss_mib,
            "sameVerdicts": r.agrees,
        })).collect::<Vec<_>>(),
    });
    print!("{md}");
    let out = std::env::var_os("LATTICE_PEERS_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("peers"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("peers.md"), &md).unwrap();
    std::fs::write(
        out.join("peers.json"),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
    eprintln!("written: {}", out.display());
    // A peer's disagreement with PSA is a finding to read; Lattice's is a failure.
    assert!(lattice_agrees, "Lattice disagrees with PSA: see the table");
    // Disagreement is a finding to read, but an engine that ran must agree with the rule
    // both encode: a wrong table is worse than none.
    for r in &rows {
        assert_ne!(r.agrees, Some(false), "{} disagrees: {}", r.engine, r.what);
    }
    for (k, .., agree, _) in &scaling {
        assert!(agree, "the engines disagree at {k} policies");
    }
}

/// The Pod Security comparison (`peers/pod_security.rs`): its Markdown, its JSON, and
/// whether every Lattice path agreed with PSA on every Pod.
fn pod_security_comparison(dir: &Path, n: usize) -> (String, Value, bool) {
    use pod_security as ps;
    std::fs::create_dir_all(dir).unwrap();
    let (version, fixtures) = ps::fixtures().expect("PSA's fixtures (Go fetches them)");
    let generated = ps::generated(n);
    let mut outcomes = vec![
        ps::lattice_in_process(&version, &fixtures, &generated),
        ps::lattice_webhook(dir, &version, &fixtures, &generated),
        ps::lattice_admit(dir, &version, &fixtures, &generated),
    ];
    match ps::peer_policies() {
        Some(peers) => {
            outcomes.push(ps::kyverno(dir, &peers, &fixtures, &generated));
            outcomes.push(ps::gator(dir, &peers, &fixtures, &generated));
            outcomes.push(ps::opa(dir, &peers, &fixtures, &generated));
        }
        None => {
            for engine in ["Kyverno", "gator", "OPA"] {
                outcomes.push(ps::Outcome::skipped(
                    engine,
                    "skipped: the peers' policies are not here (LATTICE_PEERS_POLICIES)".into(),
                ));
            }
        }
    }
    let all: Vec<ps::Case> = fixtures.into_iter().chain(generated).collect();
    let fixture_count = all.iter().filter(|c| !c.generated).count();
    let mut md = format!(
        "Pod Security decisions: {fixture_count} PSA fixtures ({version}, each at its level) and {n} generated Pods at restricted (half meet it, half break one control each), this machine\n\n| engine | how | decisions/s | µs per decision | process start | peak RSS | agrees with PSA: fixtures | generated |\n|---|---|---|---|---|---|---|---|\n"
    );
    let mut findings = String::new();
    let mut rows = Vec::new();
    let mut lattice_agrees = true;
    for o in &outcomes {
        let per = o
            .decide
            .filter(|_| o.decided > 0)
            .map(|d| d.as_secs_f64() * 1e6 / o.decided as f64);
        let (agree_fixtures, agree_generated, wrong) = match &o.verdicts {
            None => ("not run".to_owned(), "not run".to_owned(), None),
            Some(v) => {
                let (fx, gen_) = ps::disagreements(&all, v);
                let generated_wrong: usize = gen_.values().sum();
                if o.engine == "Lattice" && (!fx.is_empty() || generated_wrong > 0) {
                    lattice_agrees = false;
                }
                (
                    format!("{}/{fixture_count}", fixture_count - fx.len()),
                    format!("{}/{n}", n - generated_wrong),
                    Some((fx, gen_)),
                )
            }
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            o.engine,
            o.how,
            per.map_or("–".into(), |u| format!("{:.0}", 1e6 / u)),
            per.map_or("–".into(), |u| format!("{u:.1}")),
            o.start
                .map_or("–".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
            o.rss_mib.map_or("–".into(), |m| format!("{m:.0} MiB")),
            agree_fixtures,
            agree_generated,
        ));
        if let Some((fx, gen_)) = &wrong
            && (!fx.is_empty() || !gen_.is_empty())
        {
            findings.push_str(&format!("- **{}** ({}):", o.engine, o.how));
            if !fx.is_empty() {
                findings.push_str(&format!(" fixtures: {}.", fx.join(", ")));
            }
            if !gen_.is_empty() {
                let by: Vec<String> = gen_.iter().map(|(c, k)| format!("{c} ×{k}")).collect();
                findings.push_str(&format!(
                    " generated, by the control broken: {}.",
                    by.join(", ")
                ));
            }
            findings.push('\n');
        }
        rows.push(json!({
            "engine": o.engine, "how": o.how, "usPerDecision": per,
            "decisionsPerSecond": per.map(|u| 1e6 / u),
            "processStartMs": o.start.map(|d| d.as_secs_f64() * 1e3),
            "peakRssMiB": o.rss_mib,
            "ran": o.verdicts.is_some(),
            "disagreements": wrong.as_ref().map(|(fx, gen_)| json!({"fixtures": fx, "generated": gen_})),
        }));
    }
    if !findings.is_empty() {
        md.push_str(&format!(
            "\nWhere an engine disagrees with PSA:\n\n{findings}"
        ));
    }
    let doc = json!({
        "psaVersion": version, "fixtures": fixture_count, "generated": n, "rows": rows,
    });
    (md, doc, lattice_agrees)
}
