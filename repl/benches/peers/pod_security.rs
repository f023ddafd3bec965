//! Pod Security decisions side by side: Lattice's Pod Security Standards pack, Kyverno's
//! published PSS policies, and the Gatekeeper library's PSS bundles (through `gator` and
//! through OPA on their Rego), on the same Pods, with every verdict compared with Pod
//! Security Admission's.
//!
//! Inputs:
//! - every fixture PSA publishes for its newest version (`k8s.io/pod-security-admission`,
//!   `test/testdata/{baseline,restricted}/v1.<n>/{pass,fail}`, the module `tools/testenv`
//!   pins), each judged at its own level; PSA's verdict is the directory it sits in;
//! - `n` generated Pods at `restricted`: the even ones meet it, each odd one breaks exactly
//!   one control (cycling through [`BREAKS`]); the verdict is known by construction.
//!
//! A decision is one Pod judged against the whole level: every policy of the level, every
//! container. Time per decision excludes process start: a process engine is run on the `n`
//! Pods and on one Pod, and the difference is divided by `n − 1`; OPA reports its own
//! evaluation time. The peers' policies are read from `../shared/peers/` as they are
//! (`$LATTICE_PEERS_POLICIES`); the Gatekeeper constraints are the library's sample
//! constraints, with the Pod Security Standard's values as parameters wherever a template
//! can express them ([`gatekeeper_parameters`]).
//!
//! A peer that disagrees with PSA is a finding, listed fixture by fixture; Lattice must
//! agree with PSA on every Pod, or the bench fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_gates::Requester;
use lattice_gates::pod_security::{self, parse_version};
use serde_json::{Value, json};

#[path = "../../../controllers/tests/support/mod.rs"]
mod webhook_support;

use super::{peer, timed};

/// The two levels PSA publishes fixtures for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    Baseline,
    Restricted,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }

    /// The namespace whose labels enforce this level.
    fn namespace(self) -> String {
        format!("pss-{}", self.name())
    }
}

/// One Pod and what PSA answers for it.
pub struct Case {
    pub name: String,
    pub level: Level,
    pub pod: Value,
    pub psa_admits: bool,
    /// Generated (else one of PSA's fixtures).
    pub generated: bool,
}

/// Each engine's answer per Pod name: admitted or not.
type Verdicts = BTreeMap<String, bool>;

/// One engine's result.
pub struct Outcome {
    pub engine: String,
    pub how: String,
    /// `None` when the engine was not run, with why in `how`.
    pub verdicts: Option<Verdicts>,
    /// Time for the generated Pods, process start excluded.
    pub decide: Option<Duration>,
    pub decided: usize,
    pub start: Option<Duration>,
    pub rss_mib: Option<f64>,
}

impl Outcome {
    /// A row for an engine that did not run, and why.
    pub fn skipped(engine: &str, why: String) -> Outcome {
        Outcome {
            engine: engine.to_owned(),
            how: why,
            verdicts: None,
            decide: None,
            decided: 0,
            start: None,
            rss_mib: None,
        }
    }
}

/// The fixtures of PSA's newest version and that version, from Go's module cache (through
/// `go mod download` in `tools/testenv`, against its go.sum) or `$LATTICE_PSA_FIXTURES`.
pub fn fixtures() -> Result<(String, Vec<Case>), String> {
    let root = match std::env::var("LATTICE_PSA_FIXTURES") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => {
            let out = Command::new("go")
                .args(["mod", "download", "-json", "k8s.io/pod-security-admission"])
                .current_dir(lattice_testkit::workspace_root().join("tools/testenv"))
                .env("GOTOOLCHAIN", "auto")
                .output()
                .map_err(|e| format!("go: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            let info: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let dir = info["Dir"].as_str().ok_or("go named no module directory")?;
            Path::new(dir).join("test/testdata")
        }
    };
    let newest = |level: Level| -> Result<(i64, String), String> {
        std::fs::read_dir(root.join(level.name()))
            .map_err(|e| format!("{}: {e}", root.join(level.name()).display()))?
            .filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                Some((parse_version(&name)?, name))
            })
            .max()
            .ok_or_else(|| format!("no versions under {}", root.display()))
    };
    let version = newest(Level::Baseline)?.min(newest(Level::Restricted)?).1;
    let mut cases = Vec::new();
    for level in [Level::Baseline, Level::Restricted] {
        for admits in [true, false] {
            let dir =
                root.join(level.name())
                    .join(&version)
                    .join(if admits { "pass" } else { "fail" });
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
                let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&text);
                if !errors.is_empty() || docs.len() != 1 {
                    return Err(format!("{}: not one document", file.display()));
                }
                let stem = file.file_stem().unwrap().to_string_lossy();
                let name = format!(
                    "{}-{}-{stem}",
                    &level.name()[..1],
                    if admits { "pass" } else { "fail" }
                );
                cases.push(Case {
                    pod: place(docs[0].value.clone(), &name, level),
                    name,
                    level,
                    psa_admits: admits,
                    generated: false,
                });
            }
        }
    }
    Ok((version, cases))
}

/// Names a Pod and puts it in its level's namespace.
fn place(mut pod: Value, name: &str, level: Level) -> Value {
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = json!(level.namespace());
    pod
}

/// How a generated Pod is made to break one control.
type Break = fn(&mut Value);

/// The controls a generated Pod breaks, one each: the control's name and how it is broken.
pub const BREAKS: &[(&str, Break)] = &[
    ("privileged", |p| {
        p["spec"]["containers"][0]["securityContext"]["privileged"] = json!(true)
    }),
    ("host-network", |p| p["spec"]["hostNetwork"] = json!(true)),
    ("host-pid", |p| p["spec"]["hostPID"] = json!(true)),
    ("host-ipc", |p| p["spec"]["hostIPC"] = json!(true)),
    (
        "host-path",
        |p| p["spec"]["volumes"] = json!([{"name": "host", "hostPath": {"path": "/var/run"}}]),
    ),
    ("host-port", |p| {
        p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080, "hostPort": 8080}])
    }),
    ("capability-sys-admin", |p| {
        p["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"])
    }),
    ("proc-mount", |p| {
        p["spec"]["containers"][0]["securityContext"]["procMount"] = json!("Unmasked")
    }),
    ("selinux-type", |p| {
        p["spec"]["securityContext"]["seLinuxOptions"] = json!({"type": "spc_t"})
    }),
    (
        "apparmor-unconfined",
        |p| {
            p["metadata"]["annotations"] =
                json!({"container.apparmor.security.beta.kubernetes.io/app": "unconfined"})
        },
    ),
    ("seccomp-unconfined", |p| {
        p["spec"]["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"})
    }),
    ("sysctl", |p| {
        p["spec"]["securityContext"]["sysctls"] = json!([{"name": "kernel.msgmax", "value": "1"}])
    }),
    ("windows-host-process", |p| {
        p["spec"]["securityContext"]["windowsOptions"] = json!({"hostProcess": true})
    }),
    ("privilege-escalation", |p| {
        p["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true)
    }),
    ("run-as-root-allowed", |p| {
        p["spec"]["securityContext"]["runAsNonRoot"] = json!(false)
    }),
    ("run-as-user-0", |p| {
        p["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(0)
    }),
    ("capabilities-not-dropped", |p| {
        p["spec"]["containers"][0]["securityContext"]["capabilities"] = json!({"drop": ["NET_RAW"]})
    }),
    ("capability-net-raw", |p| {
        p["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["NET_RAW"])
    }),
    ("seccomp-unset", |p| {
        p["spec"]["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("seccompProfile");
    }),
    (
        "volume-nfs",
        |p| {
            p["spec"]["volumes"] =
                json!([{"name": "share", "nfs": {"server": "nfs.example.com", "path": "/share"}}])
        },
    ),
];

/// `n` Pods at `restricted`: the even ones meet it, each odd one breaks one control.
pub fn generated(n: usize) -> Vec<Case> {
    (0..n)
        .map(|i| {
            let mut pod = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": ""},
                "spec": {
                    "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "app",
                        "image": format!("registry.example.com/team{}/app:1.{i}", i % 50),
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]}
                        }
                    }],
                    "volumes": [{"name": "data", "emptyDir": {}}]
                }
            });
            let (name, admits) = if i % 2 == 0 {
                (format!("gen-{i:05}-compliant"), true)
            } else {
                let (control, apply) = BREAKS[(i / 2) % BREAKS.len()];
                apply(&mut pod);
                (format!("gen-{i:05}-{control}"), false)
            };
            Case {
                pod: place(pod, &name, Level::Restricted),
                name,
                level: Level::Restricted,
                psa_admits: admits,
                generated: true,
            }
        })
        .collect()
}

/// The namespaces that enforce each level at `version`.
fn namespaces_yaml(version: &str) -> String {
    [Level::Baseline, Level::Restricted]
        .iter()
        .map(|l| {
            format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  labels:\n    pod-security.kubernetes.io/enforce: {}\n    pod-security.kubernetes.io/enforce-version: {version}\n",
                l.namespace(),
                l.name()
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn write_pods(path: &Path, cases: &[&Case]) {
    let text: Vec<String> = cases
        .iter()
        .map(|c| serde_json::to_string(&c.pod).unwrap())
        .collect();
    std::fs::write(path, text.join("\n---\n")).unwrap();
}

/// Lattice in this process, through `pod_security::admit`, the entry point the webhook and
/// `lattice-policy admit` share: each Pod's namespace labels read as PSA reads them, the Pod
/// projected, scoped and decided.
pub fn lattice_in_process(version: &str, fixtures: &[Case], generated: &[Case]) -> Outcome {
    let world = lattice_engine::World::new();
    let store = lattice_engine::PolicyStore::bundled().expect("the bundled packs");
    let snapshot =
        lattice_engine::Snapshot::build(&world, &lattice_engine::Projection::of(&world), &store)
            .expect("a snapshot");
    let policies = pod_security::WorldPolicies::of(&world);
    let requester = Requester {
        username: "bench".into(),
        groups: Vec::new(),
    };
    let labels: BTreeMap<Level, BTreeMap<String, String>> = [Level::Baseline, Level::Restricted]
        .into_iter()
        .map(|l| {
            let labels = [
                ("pod-security.kubernetes.io/enforce", l.name()),
                ("pod-security.kubernetes.io/enforce-version", version),
            ];
            (l, labels.map(|(k, v)| (k.to_owned(), v.to_owned())).into())
        })
        .collect();
    let decide = |case: &Case| -> bool {
        let admission = pod_security::admit(
            &snapshot,
            &world,
            &policies,
            "Pod",
            &case.pod,
            &case.level.namespace(),
            Some(&labels[&case.level]),
            &requester,
            "CREATE",
        )
        .expect("decided")
        .expect("a Pod carries a pod");
        !admission.refused
    };
    let mut verdicts: Verdicts = fixtures
        .iter()
        .map(|c| (c.name.clone(), decide(c)))
        .collect();
    let t = Instant::now();
    for c in generated {
        let admitted = decide(c);
        verdicts.insert(c.name.clone(), admitted);
    }
    Outcome {
        engine: "Lattice".into(),
        how: "Pod Security pack, in process (`pod_security::admit`)".into(),
        decide: Some(t.elapsed()),
        decided: generated.len(),
        verdicts: Some(verdicts),
        start: None,
        rss_mib: None,
    }
}

/// Runs one process engine on the fixtures (by level), the generated Pods, and one Pod:
/// `run(pods file, level)` gives (wall time, verdicts of the Pods in the file, peak RSS).
fn process_engine(
    dir: &Path,
    fixtures: &[Case],
    generated: &[Case],
    mut run: impl FnMut(&Path, Level) -> Result<(Duration, Verdicts, Option<f64>), String>,
) -> Result<(Verdicts, Duration, Duration, Option<f64>), String> {
    let mut verdicts = Verdicts::new();
    for level in [Level::Baseline, Level::Restricted] {
        let of_level: Vec<&Case> = fixtures.iter().filter(|c| c.level == level).collect();
        let file = dir.join(format!("fixtures-{}.yaml", level.name()));
        write_pods(&file, &of_level);
        let (_, v, _) = run(&file, level)?;
        verdicts.extend(v);
    }
    let all: Vec<&Case> = generated.iter().collect();
    let file = dir.join("generated.yaml");
    write_pods(&file, &all);
    let (took, v, rss) = run(&file, Level::Restricted)?;
    verdicts.extend(v);
    let one = dir.join("one.yaml");
    write_pods(&one, &all[..1]);
    let (start, _, _) = run(&one, Level::Restricted)?;
    Ok((verdicts, took.saturating_sub(start), start, rss))
}

/// `lattice-policy admit` on the files: the whole process, each verdict from its JSON answer.
pub fn lattice_admit(dir: &Path, version: &str, fixtures: &[Case], generated: &[Case]) -> Outcome {
    let world = dir.join("admit-world");
    std::fs::create_dir_all(&world).unwrap();
    std::fs::write(world.join("namespaces.yaml"), namespaces_yaml(version)).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_lattice-policy"));
    let result = process_engine(dir, fixtures, generated, |file, _| {
        let (took, out, rss) = timed(
            bin,
            &[
                "admit",
                "-f",
                file.to_str().unwrap(),
                "--world",
                world.to_str().unwrap(),
                "-o",
                "json",
            ],
        );
        let doc = json_answer("admit", &String::from_utf8_lossy(&out.stdout), &out)?;
        let reviews = match doc {
            Value::Array(a) => a,
            one => vec![one],
        };
        let names = pod_names(file);
        if reviews.len() != names.len() {
            return Err(format!(
                "{} answers for {} Pods",
                reviews.len(),
                names.len()
            ));
        }
        let verdicts = names
            .into_iter()
            .zip(reviews)
            .map(|(n, r)| (n, r["response"]["allowed"] == true))
            .collect();
        Ok((took, verdicts, rss))
    });
    // Lattice's own path must run: an error here fails the bench, never skips a row.
    let result = result.unwrap_or_else(|e| panic!("lattice-policy admit: {e}"));
    finish(
        "Lattice".into(),
        "`lattice-policy admit -f pods.yaml`, a process".into(),
        generated,
        Ok(result),
    )
}

/// `text` (a process's answer) as one JSON document, or why not, with the process's stderr.
fn json_answer(what: &str, text: &str, out: &std::process::Output) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| {
        format!(
            "{what} answers JSON ({e}; exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The Pod names of a file `write_pods` wrote, in order.
fn pod_names(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .split("\n---\n")
        .map(|d| {
            let v: Value = serde_json::from_str(d).unwrap();
            v["metadata"]["name"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The real admission webhook on loopback over TLS (a certificate from a CA made for the
/// run), asked by two HTTPS clients with keep-alive connections at once, one
/// AdmissionReview per Pod.
pub fn lattice_webhook(
    dir: &Path,
    version: &str,
    fixtures: &[Case],
    generated: &[Case],
) -> Outcome {
    use lattice_controllers::webhook::{self, Limits};
    use webhook_support::{Client, Pki, client_config, review, start};

    let world = dir.join("webhook-world");
    std::fs::create_dir_all(&world).unwrap();
    std::fs::write(world.join("namespaces.yaml"), namespaces_yaml(version)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = Pki::issue(&dir.join("pki"));
        let hook = start(&pki, Limits::default()).await;
        let current = webhook::load_current(
            std::slice::from_ref(&world),
            Some(&lattice_testkit::workspace_root().join("policies")),
            &webhook::Images::default(),
        )
        .expect("the webhook loads the namespaces and the packs");
        hook.state.set(current);
        let config = client_config(&pki.ca_pem);
        let reviews = |cases: &[Case]| -> Vec<(String, Vec<u8>)> {
            cases
                .iter()
                .map(|c| {
                    let r = review(&c.name, "CREATE", Some(c.pod.clone()), None, "bench", &[]);
                    (c.name.clone(), serde_json::to_vec(&r).unwrap())
                })
                .collect()
        };
        let ask = |batch: Vec<(String, Vec<u8>)>| {
            let config = config.clone();
            let addr = hook.addr;
            async move {
                let halves: Vec<Vec<(String, Vec<u8>)>> = {
                    let mut a = Vec::new();
                    let mut b = Vec::new();
                    for (i, r) in batch.into_iter().enumerate() {
                        if i % 2 == 0 { a.push(r) } else { b.push(r) }
                    }
                    vec![a, b]
                };
                let t = Instant::now();
                let mut tasks = Vec::new();
                for half in halves {
                    let config = Arc::clone(&config);
                    tasks.push(tokio::spawn(async move {
                        let mut client = Client::connect(addr, config).await.unwrap();
                        let mut out = Vec::new();
                        for (name, body) in half {
                            let (status, body) = client.send("POST", "/validate", body).await;
                            assert_eq!(status, 200, "the webhook answers");
                            let v: Value = serde_json::from_slice(&body).unwrap();
                            out.push((name, v["response"]["allowed"] == true));
                        }
                        out
                    }));
                }
                let mut verdicts = Verdicts::new();
                for t in tasks {
                    verdicts.extend(t.await.unwrap());
                }
                (t.elapsed(), verdicts)
            }
        };
        let (_, mut verdicts) = ask(reviews(fixtures)).await;
        let (took, generated_verdicts) = ask(reviews(generated)).await;
        verdicts.extend(generated_verdicts);
        Outcome {
            engine: "Lattice".into(),
            how: "the admission webhook over TLS, 2 keep-alive HTTPS clients".into(),
            verdicts: Some(verdicts),
            decide: Some(took),
            decided: generated.len(),
            start: None,
            rss_mib: None,
        }
    })
}

/// Where the peers' published policies are: `$LATTICE_PEERS_POLICIES`, else `peers/`
/// beside `$LATTICE_REFERENCE_DIR`, else `../shared/peers/` beside the checkout.
pub fn peer_policies() -> Option<PathBuf> {
    let dir = std::env::var_os("LATTICE_PEERS_POLICIES")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("LATTICE_REFERENCE_DIR").map(|r| PathBuf::from(r).join("../peers"))
        })
        .unwrap_or_else(|| lattice_testkit::workspace_root().join("../shared/peers"));
    (dir.join("kyverno").is_dir() && dir.join("gatekeeper").is_dir()).then_some(dir)
}

/// Kyverno's Pod Security policies of a level, as its kustomizations list them (restricted
/// includes baseline).
fn kyverno_policies(peers: &Path, level: Level) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut levels = vec![Level::Baseline];
    if level == Level::Restricted {
        levels.push(Level::Restricted);
    }
    for l in levels {
        let dir = peers.join("kyverno/pod-security").join(l.name());
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        entries.sort();
        for d in entries {
            let name = d.file_name().unwrap().to_string_lossy().into_owned();
            let file = d.join(format!("{name}.yaml"));
            if file.exists() {
                files.push(file);
            }
        }
    }
    files
}

/// `kyverno apply` with the level's policies on the Pods: a Pod is refused when any rule
/// fails on it.
pub fn kyverno(dir: &Path, peers: &Path, fixtures: &[Case], generated: &[Case]) -> Outcome {
    let Some((bin, version)) = peer("kyverno") else {
        return Outcome::skipped("Kyverno", "skipped: not built (bench/peers/build)".into());
    };
    let engine = format!("Kyverno {version}");
    let result = process_engine(dir, fixtures, generated, |file, level| {
        let policies = kyverno_policies(peers, level);
        let mut args: Vec<String> = vec!["apply".into()];
        args.extend(policies.iter().map(|p| p.display().to_string()));
        args.extend([
            "--resource".into(),
            file.display().to_string(),
            "--policy-report".into(),
            "--output-format".into(),
            "json".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (took, out, rss) = timed(&bin, &args);
        // Deprecation warnings come first on stdout; the report is the line that opens a
        // JSON object.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json_at = stdout
            .lines()
            .position(|l| l.starts_with('{') || l.starts_with('['))
            .map(|i| stdout.lines().skip(i).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        let report = json_answer("kyverno apply", &json_at, &out)?;
        let mut verdicts: Verdicts = pod_names(file).into_iter().map(|n| (n, true)).collect();
        for report in reports(&report) {
            for result in report["results"].as_array().into_iter().flatten() {
                if result["result"] == "fail" || result["result"] == "error" {
                    for r in result["resources"].as_array().into_iter().flatten() {
                        if let Some(name) = r["name"].as_str() {
                            verdicts.insert(name.to_owned(), false);
                        }
                    }
                }
            }
        }
        Ok((took, verdicts, rss))
    });
    finish(
        engine,
        "`kyverno apply` with its PSS policies, a process".into(),
        generated,
        result,
    )
}

/// The policy reports in Kyverno's answer: one report, or a list of them.
fn reports(doc: &Value) -> Vec<&Value> {
    match doc {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.contains_key("items") => {
            doc["items"].as_array().into_iter().flatten().collect()
        }
        other => vec![other],
    }
}

/// A process engine's row: its verdicts and times, or, when it failed, a skipped row that
/// says why (never one that agrees).
fn finish(
    engine: String,
    how: String,
    generated: &[Case],
    result: Result<(Verdicts, Duration, Duration, Option<f64>), String>,
) -> Outcome {
    match result {
        Ok((verdicts, decide, start, rss)) => Outcome {
            engine,
            how,
            verdicts: Some(verdicts),
            decide: Some(decide),
            decided: generated.len().saturating_sub(1),
            start: Some(start),
            rss_mib: rss,
        },
        // One line, without the table's separators.
        Err(e) => Outcome::skipped(
            &engine,
            format!(
                "failed: {}",
                e.lines().next().unwrap_or("").replace('|', "/")
            ),
        ),
    }
}

/// A Gatekeeper library template of the Pod Security bundles.
struct Template {
    kind: String,
    file: PathBuf,
    rego: String,
    libs: Vec<String>,
    levels: Vec<Level>,
    constraint: Value,
}

/// Every template of the library's `pod-security-baseline` / `pod-security-restricted`
/// bundles, with its Rego, its libraries and its sample constraint.
fn gatekeeper_templates(peers: &Path) -> Vec<Template> {
    let root = peers.join("gatekeeper/pod-security-policy");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    let yaml = |p: &Path| -> Value {
        let text = std::fs::read_to_string(p).unwrap();
        let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&text);
        assert!(errors.is_empty(), "{}: {errors:?}", p.display());
        docs.into_iter().next().expect("a document").value
    };
    let mut out = Vec::new();
    for d in dirs {
        let file = d.join("template.yaml");
        if !file.exists() {
            continue;
        }
        let t = yaml(&file);
        let bundle = t["metadata"]["annotations"]["metadata.gatekeeper.sh/bundle"]
            .as_str()
            .unwrap_or("");
        let mut levels = Vec::new();
        if bundle.contains("pod-security-baseline") {
            levels.push(Level::Baseline);
        }
        if bundle.contains("pod-security-restricted") {
            levels.push(Level::Restricted);
        }
        if levels.is_empty() {
            continue;
        }
        let target = &t["spec"]["targets"][0];
        let source = target["code"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["engine"] == "Rego")
            .map(|c| c["source"].clone())
            .unwrap_or_else(|| target.clone());
        out.push(Template {
            kind: t["spec"]["crd"]["spec"]["names"]["kind"]
                .as_str()
                .unwrap()
                .to_owned(),
            file,
            rego: source["rego"].as_str().unwrap_or_default().to_owned(),
            libs: source["libs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect(),
            levels,
            constraint: yaml(&d.join("constraint.yaml")),
        });
    }
    out
}

/// The constraint parameters of a template at a level: the Pod Security Standard's own
/// values wherever the template can express them (no host ports or host paths at all;
/// baseline's capability list, which has no NET_RAW; the safe sysctls of v1.32;
/// restricted's capabilities and seccomp profiles), else the library's sample parameters.
fn gatekeeper_parameters(t: &Template, level: Level) -> Value {
    let mut p = t.constraint["spec"]["parameters"].clone();
    if p.is_null() {
        p = json!({});
    }
    match (t.kind.as_str(), level) {
        ("K8sPSPHostNetworkingPorts", _) => {
            p = json!({"hostNetwork": false, "min": 0, "max": 0});
        }
        ("K8sPSPHostFilesystem", _) => p = json!({"allowedHostPaths": []}),
        ("K8sPSPCapabilities", Level::Baseline) => {
            p = json!({"allowedCapabilities": [
                "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"
            ]});
        }
        ("K8sPSPCapabilities", Level::Restricted) => {
            p = json!({"allowedCapabilities": ["NET_BIND_SERVICE"], "requiredDropCapabilities": ["ALL"]});
        }
        ("K8sPSPForbiddenSysctls", _) => {
            p = json!({"forbiddenSysctls": [], "allowedSysctls": [
                "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
                "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"
            ]});
        }
        ("K8sPSPSeccompV2", Level::Restricted) => {
            p["allowedProfiles"] = json!(["RuntimeDefault", "Localhost"]);
        }
        _ => {}
    }
    p
}

/// The level's constraints, one per template, as Gatekeeper objects.
fn gatekeeper_constraints(templates: &[Template], level: Level) -> Vec<Value> {
    templates
        .iter()
        .filter(|t| t.levels.contains(&level))
        .map(|t| {
            let mut c = t.constraint.clone();
            c["spec"]["parameters"] = gatekeeper_parameters(t, level);
            c
        })
        .collect()
}

/// `gator test` with the level's templates and constraints on the Pods: a Pod is refused
/// when any constraint reports it.
pub fn gator(dir: &Path, peers: &Path, fixtures: &[Case], generated: &[Case]) -> Outcome {
    let Some((bin, version)) = peer("gator") else {
        return Outcome::skipped("gator", "skipped: not built (bench/peers/build)".into());
    };
    let templates = gatekeeper_templates(peers);
    let result = process_engine(dir, fixtures, generated, |file, level| {
        let constraints = dir.join(format!("gator-{}", level.name()));
        std::fs::create_dir_all(&constraints).unwrap();
        let docs: Vec<String> = gatekeeper_constraints(&templates, level)
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect();
        std::fs::write(constraints.join("constraints.yaml"), docs.join("\n---\n")).unwrap();
        let mut args = vec!["test".to_owned(), "-o".into(), "json".into()];
        for t in templates.iter().filter(|t| t.levels.contains(&level)) {
            args.extend(["-f".into(), t.file.display().to_string()]);
        }
        args.extend(["-f".into(), constraints.display().to_string()]);
        args.extend(["-f".into(), file.display().to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (took, out, rss) = timed(&bin, &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // gator prints nothing when nothing is violated, and exits 0 then; silence from a
        // failed run is an error, never "every Pod admitted".
        let violations = if stdout.trim().is_empty() && out.status.success() {
            json!([])
        } else {
            json_answer("gator test", &stdout, &out)?
        };
        let mut verdicts: Verdicts = pod_names(file).into_iter().map(|n| (n, true)).collect();
        for v in violations.as_array().into_iter().flatten() {
            if v["enforcementAction"] == "deny"
                && let Some(name) = v["violatingObject"]["metadata"]["name"].as_str()
            {
                verdicts.insert(name.to_owned(), false);
            }
        }
        Ok((took, verdicts, rss))
    });
    finish(
        format!("Gatekeeper gator {version}"),
        "`gator test` with the library's PSS bundles, a process".into(),
        generated,
        result,
    )
}

/// OPA on the templates' Rego: every template's `violation` asked of every Pod (as
/// Gatekeeper asks it: the Pod as `input.review.object`, the constraint's parameters as
/// `input.parameters`), by a wrapper policy the harness writes; OPA's own evaluation time.
pub fn opa(dir: &Path, peers: &Path, fixtures: &[Case], generated: &[Case]) -> Outcome {
    let Some((bin, version)) = peer("opa") else {
        return Outcome::skipped("OPA", "skipped: not built (bench/peers/build)".into());
    };
    let templates = gatekeeper_templates(peers);
    let mut eval_time = Duration::ZERO;
    let result = process_engine(dir, fixtures, generated, |file, level| {
        let rego = dir.join(format!("rego-{}", level.name()));
        std::fs::create_dir_all(&rego).unwrap();
        // The bundles' libraries are identical copies: load each once.
        let mut libs = BTreeSet::new();
        let mut wrapper = String::from("package bench\n\n");
        for (i, t) in templates
            .iter()
            .filter(|t| t.levels.contains(&level))
            .enumerate()
        {
            std::fs::write(rego.join(format!("template{i}.rego")), &t.rego).unwrap();
            libs.extend(t.libs.iter().cloned());
            let package = t
                .rego
                .lines()
                .find_map(|l| l.trim().strip_prefix("package "))
                .unwrap()
                .trim();
            let parameters = gatekeeper_parameters(t, level);
            wrapper.push_str(&format!(
                "deny[[name, \"{}\"]] {{\n  pod := data.pods[name]\n  data.{package}.violation[_] with input as {{\"review\": {{\"object\": pod, \"operation\": \"CREATE\", \"kind\": {{\"group\": \"\", \"version\": \"v1\", \"kind\": \"Pod\"}}}}, \"parameters\": {parameters}}}\n}}\n\n",
                t.kind
            ));
        }
        for (i, lib) in libs.iter().enumerate() {
            std::fs::write(rego.join(format!("lib{i}.rego")), lib).unwrap();
        }
        std::fs::write(rego.join("bench.rego"), wrapper).unwrap();
        let names = pod_names(file);
        let pods: serde_json::Map<String, Value> = std::fs::read_to_string(file)
            .unwrap()
            .split("\n---\n")
            .zip(&names)
            .map(|(d, n)| (n.clone(), serde_json::from_str(d).unwrap()))
            .collect();
        let data = file.with_extension("json");
        std::fs::write(&data, serde_json::to_vec(&json!({"pods": pods})).unwrap()).unwrap();
        let (took, out, rss) = timed(
            &bin,
            &[
                "eval",
                "--v0-compatible",
                "--metrics",
                "-f",
                "json",
                "-d",
                rego.to_str().unwrap(),
                "-d",
                data.to_str().unwrap(),
                "data.bench.deny",
            ],
        );
        let doc = json_answer("opa eval", &String::from_utf8_lossy(&out.stdout), &out)?;
        if let Some(errors) = doc.get("errors") {
            return Err(format!("opa eval: {errors}"));
        }
        if names.len() > 1 {
            eval_time = Duration::from_nanos(
                doc["metrics"]["timer_rego_query_eval_ns"]
                    .as_u64()
                    .unwrap_or_default(),
            );
        }
        let mut verdicts: Verdicts = names.into_iter().map(|n| (n, true)).collect();
        let denied = &doc["result"][0]["expressions"][0]["value"];
        for d in denied.as_array().into_iter().flatten() {
            if let Some(name) = d[0].as_str() {
                verdicts.insert(name.to_owned(), false);
            }
        }
        Ok((took, verdicts, rss))
    });
    let mut outcome = finish(
        format!("OPA {version}"),
        "the library's PSS Rego by `opa eval` (OPA's evaluation time)".into(),
        generated,
        result,
    );
    if outcome.verdicts.is_some() {
        // OPA measures its own evaluation: the last multi-Pod run, the generated Pods.
        outcome.decide = Some(eval_time);
        outcome.decided = generated.len();
    }
    outcome
}

/// The disagreements of one engine with PSA: fixture names, and generated Pods per control.
pub fn disagreements(
    cases: &[Case],
    verdicts: &Verdicts,
) -> (Vec<String>, BTreeMap<String, usize>) {
    let mut fixtures = Vec::new();
    let mut generated = BTreeMap::new();
    for c in cases {
        let Some(&admitted) = verdicts.get(&c.name) else {
            fixtures.push(format!("{} (no answer)", c.name));
            continue;
        };
        if admitted != c.psa_admits {
            if c.generated {
                let control = c.name.splitn(3, '-').nth(2).unwrap_or("").to_owned();
                *generated.entry(control).or_default() += 1;
            } else {
                fixtures.push(format!(
                    "{}/{} ({})",
                    c.level.name(),
                    c.name,
                    if c.psa_admits {
                        "PSA admits, refused"
                    } else {
                        "PSA refuses, admitted"
                    }
                ));
            }
        }
    }
    (fixtures, generated)
}
