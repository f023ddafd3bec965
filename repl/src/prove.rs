//! `lattice-policy prove`: questions about policies answered for every request the schema
//! admits ([`lattice_prove`]), each side read as the platform reads it (rule packs, `.cedar`
//! files, CedarPolicy manifests), its enforce-mode policies being what decides.

use std::path::{Path, PathBuf};

use cedar_policy::{Decision, EntityUid, PolicySet};
use clap::{Args, Subcommand};
use lattice_engine::PolicyStore;
use lattice_engine::policies::{Pack, PackMeta, PolicySource, parse_checked};
use lattice_prove::{Counterexample, Outcome, Prover};
use lattice_schemas::crd::EnforcementMode;
use lattice_schemas::manifest::Object;
use serde_json::{Value, json};

use crate::output::{Format, emit};
use crate::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

/// What to prove.
#[derive(Subcommand)]
pub enum ProveCommand {
    /// NEW permits nothing OLD denies: the change widens no access, for any request. A
    /// refutation is a request NEW allows and OLD denies.
    NoNewPermits {
        old: PathBuf,
        new: PathBuf,
        /// Only requests for this action (or the actions of this group), e.g. `exec`.
        #[arg(long)]
        action: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// A and B decide every request alike.
    Equivalent {
        a: PathBuf,
        b: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// No policy errors on any request the schema admits (an erroring forbid denies, an
    /// erroring permit permits nothing: either way a decision nobody wrote).
    NeverErrors {
        #[arg(required = true)]
        policies: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// The policies that can never change a decision: each one, removed alone, leaves every
    /// request decided as before (a permit others cover, a forbid others cover).
    Shadowed {
        #[arg(required = true)]
        policies: Vec<PathBuf>,
        /// Shadowed policies kept on purpose, one `<id>: <why>` per line (`#` comments):
        /// exit 0 when every one found is listed, 1 naming the others. A listed policy that
        /// is no longer shadowed is reported too, so the list stays true.
        #[arg(long, value_name = "FILE")]
        accepted: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// No request for ACTION is ever allowed, e.g. that nothing grants `OverrideSecurity`.
    AlwaysDenied {
        #[arg(long, required = true)]
        action: String,
        #[arg(default_value = "bundled")]
        policies: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

/// What every question shares.
#[derive(Args)]
pub struct Common {
    /// Policies both sides hold besides their own (`bundled`, a rule-pack directory, a
    /// directory of packs, a `.cedar` file, or manifests with CedarPolicy objects);
    /// repeatable. For a CedarPolicy change: `--base bundled OLD.yaml NEW.yaml`.
    #[arg(long)]
    base: Vec<PathBuf>,
    /// The SMT solver (default: `$CVC5`, else `cvc5` on PATH).
    #[arg(long)]
    solver: Option<PathBuf>,
    /// Write a refutation here, ready for `lattice-policy authorize`: request.json,
    /// entities.json, the policies of each side and the schema.
    #[arg(long, value_name = "DIR")]
    counterexample: Option<PathBuf>,
    #[arg(short, long, value_enum, default_value_t = Format::Human)]
    output: Format,
}

/// `lattice-policy prove …`: exit 0 proved, 1 refuted (or policies found), 2 no answer.
pub fn run(command: ProveCommand) -> u8 {
    let outcome = match &command {
        ProveCommand::NoNewPermits {
            old,
            new,
            action,
            common,
        } => two_sides(common, old, new, |prover, a, b| {
            let action = action.as_deref().map(action_uid).transpose()?;
            prover
                .no_new_permits(a, b, action.as_ref())
                .map_err(|e| e.to_string())
        })
        .and_then(|(outcome, a, b)| {
            pair_report(
                "no-new-permits",
                "every request NEW allows, OLD allows too",
                "NEW allows a request OLD denies",
                outcome,
                ("old", &a),
                ("new", &b),
                common,
            )
        }),
        ProveCommand::Equivalent { a, b, common } => {
            two_sides(common, a, b, |prover, a, b| {
                prover.equivalent(a, b).map_err(|e| e.to_string())
            })
            .and_then(|(outcome, a, b)| {
                pair_report(
                    "equivalent",
                    "A and B decide every request alike",
                    "A and B decide a request differently",
                    outcome,
                    ("a", &a),
                    ("b", &b),
                    common,
                )
            })
        }
        ProveCommand::NeverErrors { policies, common } => {
            one_side(common, policies).and_then(|(mut prover, set)| {
                let (erroring, asked) = prover.never_errors(&set).map_err(|e| e.to_string())?;
                let mut lines = Vec::new();
                let mut found = Vec::new();
                for e in &erroring {
                    let errors = e.counterexample.errors(&set);
                    if !errors.iter().any(|m| m.contains(&e.policy.to_string())) {
                        return Err(format!(
                            "the counterexample for {} does not reproduce with Cedar's authorizer ({errors:?}); no answer",
                            e.policy
                        ));
                    }
                    lines.push(format!(
                        "  {} errors, for example on {}:\n    {}",
                        e.policy,
                        e.environment,
                        errors.join("\n    ")
                    ));
                    found.push(json!({
                        "policy": e.policy.to_string(),
                        "environment": e.environment,
                        "request": e.counterexample.request_json(),
                        "entities": e.counterexample.entities_json(),
                        "errors": errors,
                    }));
                }
                let proved = erroring.is_empty();
                Ok(Report {
                    proved,
                    human: if proved {
                        format!(
                            "PROVED  never-errors: none of {} policies errors on any request ({asked} policy and request-type pairs)\n",
                            set.policies().count()
                        )
                    } else {
                        format!(
                            "REFUTED  never-errors: {} of {} policies can error\n{}\n",
                            erroring.len(),
                            set.policies().count(),
                            lines.join("\n")
                        )
                    },
                    json: json!({"property": "never-errors", "result": verdict(proved), "policies": set.policies().count(), "erroring": found}),
                })
            })
        }
        ProveCommand::Shadowed {
            policies,
            accepted,
            common,
        } => one_side(common, policies).and_then(|(mut prover, set)| {
            let accepted = match accepted {
                Some(file) => read_accepted(file)?,
                None => Default::default(),
            };
            let mut shadowed: Vec<String> = prover
                .shadowed(&set)
                .map_err(|e| e.to_string())?
                .iter()
                .map(ToString::to_string)
                .collect();
            shadowed.sort();
            let new: Vec<&String> = shadowed
                .iter()
                .filter(|id| !accepted.contains_key(*id))
                .collect();
            let stale: Vec<&String> = accepted
                .keys()
                .filter(|id| !shadowed.contains(id))
                .collect();
            let mut human = if shadowed.is_empty() {
                format!(
                    "PROVED  shadowed: each of {} policies changes some decision\n",
                    set.policies().count()
                )
            } else {
                let lines: Vec<String> = shadowed
                    .iter()
                    .map(|id| match accepted.get(id) {
                        Some(why) => format!("  {id}  (accepted: {why})"),
                        None => format!("  {id}"),
                    })
                    .collect();
                format!(
                    "FOUND  shadowed: {} of {} policies change no decision (each removable alone, not all together):\n{}\n",
                    shadowed.len(),
                    set.policies().count(),
                    lines.join("\n")
                )
            };
            if !new.is_empty() && !accepted.is_empty() {
                human.push_str(&format!(
                    "  not accepted: {}\n",
                    new.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            if !stale.is_empty() {
                human.push_str(&format!(
                    "  accepted but no longer shadowed (take them off the list): {}\n",
                    stale.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            Ok(Report {
                proved: new.is_empty() && stale.is_empty(),
                human,
                json: json!({
                    "property": "shadowed",
                    "policies": set.policies().count(),
                    "shadowed": shadowed,
                    "notAccepted": new,
                    "noLongerShadowed": stale,
                }),
            })
        }),
        ProveCommand::AlwaysDenied {
            action,
            policies,
            common,
        } => one_side(common, policies).and_then(|(mut prover, set)| {
            let uid = action_uid(action)?;
            let outcome = prover
                .always_denied(&set, &uid)
                .map_err(|e| e.to_string())?;
            single_report(
                "always-denied",
                &format!("no request for {uid} is allowed"),
                &format!("a request for {uid} is allowed"),
                outcome,
                &set,
                common,
            )
        }),
    };
    let format = match &command {
        ProveCommand::NoNewPermits { common, .. }
        | ProveCommand::Equivalent { common, .. }
        | ProveCommand::NeverErrors { common, .. }
        | ProveCommand::Shadowed { common, .. }
        | ProveCommand::AlwaysDenied { common, .. } => common.output,
    };
    match outcome {
        Ok(report) => {
            match format {
                Format::Human => emit(&report.human),
                Format::Json => emit(&format!("{:#}\n", report.json)),
            }
            if report.proved {
                EXIT_OK
            } else {
                EXIT_FINDINGS
            }
        }
        Err(e) => {
            match format {
                Format::Human => eprintln!("error: {e}"),
                Format::Json => emit(&format!("{}\n", json!({"error": e}))),
            }
            EXIT_USAGE
        }
    }
}

/// What a question printed, and whether it held.
struct Report {
    proved: bool,
    human: String,
    json: Value,
}

fn verdict(proved: bool) -> &'static str {
    if proved { "proved" } else { "refuted" }
}

/// An accepted-shadowed list: `<id>: <why>` per line, `#` comments, blank lines.
fn read_accepted(file: &Path) -> Result<std::collections::BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut out = std::collections::BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((id, why)) = line.split_once(": ") else {
            return Err(format!(
                "{}:{}: expected `<policy id>: <why it stays>`",
                file.display(),
                n + 1
            ));
        };
        let why = why.trim().trim_matches('"');
        if why.is_empty() {
            return Err(format!(
                "{}:{}: {id} needs a reason it stays",
                file.display(),
                n + 1
            ));
        }
        out.insert(id.trim().to_owned(), why.to_owned());
    }
    Ok(out)
}

/// `exec`, `Action::"exec"` or `Lattice::Action::"exec"` as the schema's action.
fn action_uid(text: &str) -> Result<EntityUid, String> {
    let full = if text.contains("::") {
        if text.starts_with("Lattice::") {
            text.to_owned()
        } else {
            format!("Lattice::{text}")
        }
    } else {
        format!("Lattice::Action::{text:?}")
    };
    full.parse()
        .map_err(|e| format!("{text:?} is not an action: {e}"))
}

/// The solver, started for the Lattice schema.
fn prover(common: &Common) -> Result<Prover, String> {
    let path = lattice_prove::solver::find(common.solver.as_deref()).map_err(|e| e.to_string())?;
    Prover::start(lattice_schemas::cedar::schema(), &path).map_err(|e| e.to_string())
}

/// The proof line `whatif` adds: whether the change permits anything new for any request
/// the schema admits, beyond the decisions this world raises. No solver is a note, not an
/// error: the recomputed decisions above it stand either way.
pub fn whatif_line(before: &PolicyStore, after: &PolicyStore) -> (String, Value) {
    let (Ok(old), Ok(new)) = (enforced(before), enforced(after)) else {
        return (
            "proof: not attempted (the policies do not form one set)\n".into(),
            json!({"result": "not attempted"}),
        );
    };
    let started = lattice_prove::solver::find(None)
        .map_err(|e| e.to_string())
        .and_then(|path| {
            Prover::start(lattice_schemas::cedar::schema(), &path).map_err(|e| e.to_string())
        });
    let outcome = started.and_then(|mut p| {
        p.no_new_permits(&old, &new, None)
            .map_err(|e| e.to_string())
    });
    match outcome {
        Ok(Outcome::Proved { environments }) => (
            format!("proved: no new permits for any request ({environments} request types)\n"),
            json!({"result": "proved", "requestTypes": environments}),
        ),
        Ok(Outcome::Refuted {
            environment,
            counterexample,
        }) => (
            format!(
                "refuted: the change permits a request it denied before, in {environment}:\n  request:  {}\n  entities: {}\n",
                counterexample.request_json(),
                counterexample.entities_shown()
            ),
            json!({
                "result": "refuted",
                "environment": environment,
                "request": counterexample.request_json(),
                "entities": counterexample.entities_json(),
            }),
        ),
        Err(e) => (
            format!("proof: not attempted ({e})\n"),
            json!({"result": "not attempted", "why": e}),
        ),
    }
}

/// The enforce-mode policies of `paths` and `base`.
fn side(base: &[PathBuf], paths: &[&Path]) -> Result<PolicySet, String> {
    let mut store = PolicyStore::new();
    for path in base
        .iter()
        .map(PathBuf::as_path)
        .chain(paths.iter().copied())
    {
        load_into(&mut store, path)?;
    }
    enforced(&store)
}

/// The enforce-mode policies of `store`: the ones that decide.
fn enforced(store: &PolicyStore) -> Result<PolicySet, String> {
    let policies = store
        .active()
        .filter(|p| p.info.mode == EnforcementMode::Enforce)
        .map(|p| p.policy.clone());
    PolicySet::from_policies(policies).map_err(|e| format!("the policies do not form a set: {e}"))
}

/// Adds what `path` holds: `bundled`, a pack, a directory of packs, a `.cedar` file (a pack
/// named after it), or manifests whose CedarPolicy objects are applied.
fn load_into(store: &mut PolicyStore, path: &Path) -> Result<(), String> {
    let shown = path.display();
    if path == Path::new("bundled") {
        let bundled = PolicyStore::bundled().map_err(|e| format!("the bundled packs: {e}"))?;
        bundled.packs().for_each(|p| store.insert_pack(p.clone()));
        return Ok(());
    }
    if path.is_dir() {
        if path.join("pack.yaml").is_file() {
            let pack = PolicyStore::load_pack_at(path).map_err(|e| format!("{shown}: {e}"))?;
            store.insert_pack(pack);
        } else {
            let packs = PolicyStore::load_packs(path).map_err(|e| format!("{shown}: {e}"))?;
            if packs.packs().next().is_none() {
                return Err(format!(
                    "{shown} holds no rule pack (a directory with a pack.yaml)"
                ));
            }
            packs.packs().for_each(|p| store.insert_pack(p.clone()));
        }
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if path.extension().is_some_and(|e| e == "cedar") {
        let name = path.file_stem().map_or_else(
            || "policies".to_owned(),
            |s| s.to_string_lossy().into_owned(),
        );
        let source = PolicySource::Pack {
            pack: name.clone(),
            file: path.to_owned(),
        };
        let policies =
            parse_checked(&text, &name, EnforcementMode::Enforce, &source).map_err(|problems| {
                format!(
                    "{shown}: {}",
                    problems
                        .iter()
                        .map(|p| p.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?;
        store.insert_pack(Pack {
            meta: PackMeta {
                name,
                ..PackMeta::default()
            },
            policies,
        });
        return Ok(());
    }
    let report = lattice_schemas::validate::validate_paths(&[path.to_path_buf()]);
    if report.errors() > 0 || !report.unreadable.is_empty() {
        return Err(format!(
            "{shown} has {} error(s); `lattice-policy validate {shown}` shows them",
            report.errors().max(report.unreadable.len())
        ));
    }
    let mut applied = 0;
    for manifest in &report.manifests {
        if let Object::CedarPolicy(p) = &manifest.object {
            store.apply_object(p).map_err(|e| e.to_string())?;
            applied += 1;
        }
    }
    if applied == 0 {
        return Err(format!("{shown} holds no CedarPolicy object"));
    }
    Ok(())
}

fn one_side(common: &Common, paths: &[PathBuf]) -> Result<(Prover, PolicySet), String> {
    let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let set = side(&common.base, &paths)?;
    Ok((prover(common)?, set))
}

type Sides = (Outcome, PolicySet, PolicySet);

fn two_sides(
    common: &Common,
    a: &Path,
    b: &Path,
    ask: impl FnOnce(&mut Prover, &PolicySet, &PolicySet) -> Result<Outcome, String>,
) -> Result<Sides, String> {
    let (a, b) = (side(&common.base, &[a])?, side(&common.base, &[b])?);
    let mut prover = prover(common)?;
    let outcome = ask(&mut prover, &a, &b)?;
    Ok((outcome, a, b))
}

fn decision(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "ALLOW",
        Decision::Deny => "DENY",
    }
}

/// A two-sided question's report, its refutation replayed on both sides by Cedar's own
/// authorizer: a counterexample that does not reproduce is no answer.
fn pair_report(
    property: &str,
    holds: &str,
    fails: &str,
    outcome: Outcome,
    (a_name, a): (&str, &PolicySet),
    (b_name, b): (&str, &PolicySet),
    common: &Common,
) -> Result<Report, String> {
    let (environment, cex) = match refutation(property, holds, outcome) {
        Ok(refuted) => refuted,
        Err(proved) => return Ok(proved),
    };
    let (da, db) = (cex.decide(a), cex.decide(b));
    let reproduces = match property {
        "no-new-permits" => da == Decision::Deny && db == Decision::Allow,
        _ => da != db,
    };
    if !reproduces {
        return Err(format!(
            "the solver's counterexample does not reproduce with Cedar's authorizer ({a_name} {}, {b_name} {}); no answer",
            decision(da),
            decision(db)
        ));
    }
    let written = write_counterexample(common, &cex, &[(a_name, a), (b_name, b)])?;
    let mut human = format!(
        "REFUTED  {property}: {fails}, in {environment}\n  {a_name}: {}   {b_name}: {}   (replayed by Cedar's authorizer)\n{}",
        decision(da),
        decision(db),
        show(&cex)
    );
    human.push_str(&written);
    Ok(Report {
        proved: false,
        human,
        json: json!({
            "property": property,
            "result": "refuted",
            "environment": environment,
            "decisions": {a_name: decision(da), b_name: decision(db)},
            "request": cex.request_json(),
            "entities": cex.entities_json(),
        }),
    })
}

/// The refutation in `outcome`, or the report of its proof.
fn refutation(
    property: &str,
    holds: &str,
    outcome: Outcome,
) -> Result<(String, Box<Counterexample>), Report> {
    match outcome {
        Outcome::Proved { environments } => Err(Report {
            proved: true,
            human: format!(
                "PROVED  {property}: {holds} ({environments} request types, every request of each)\n"
            ),
            json: json!({"property": property, "result": "proved", "requestTypes": environments}),
        }),
        Outcome::Refuted {
            environment,
            counterexample,
        } => Ok((environment, counterexample)),
    }
}

fn single_report(
    property: &str,
    holds: &str,
    fails: &str,
    outcome: Outcome,
    set: &PolicySet,
    common: &Common,
) -> Result<Report, String> {
    let (environment, cex) = match refutation(property, holds, outcome) {
        Ok(refuted) => refuted,
        Err(proved) => return Ok(proved),
    };
    if cex.decide(set) != Decision::Allow {
        return Err(
            "the solver's counterexample does not reproduce with Cedar's authorizer; no answer"
                .into(),
        );
    }
    let written = write_counterexample(common, &cex, &[("policies", set)])?;
    Ok(Report {
        proved: false,
        human: format!(
            "REFUTED  {property}: {fails}, in {environment}\n  policies: ALLOW   (replayed by Cedar's authorizer)\n{}{written}",
            show(&cex)
        ),
        json: json!({
            "property": property,
            "result": "refuted",
            "environment": environment,
            "request": cex.request_json(),
            "entities": cex.entities_json(),
        }),
    })
}

/// `set` as Cedar text whose `@id`s are the stable ids (`pack/@id`), so that a file holding
/// policies of several packs names each once, as the store does.
fn with_stable_ids(set: &PolicySet) -> String {
    let mut out = String::new();
    for policy in set.policies() {
        let text = policy.to_string();
        let stable = format!("@id({:?})", policy.id().to_string());
        let text = match policy.annotation("id") {
            Some(own) => text.replacen(&format!("@id({own:?})"), &stable, 1),
            None => format!("{stable}\n{text}"),
        };
        out.push_str(&text);
        out.push_str("\n\n");
    }
    out
}

fn show(cex: &Counterexample) -> String {
    format!(
        "  request:  {}\n  entities: {}\n",
        cex.request_json(),
        cex.entities_shown()
    )
}

/// Writes the counterexample and what replays it; returns the lines that say so.
fn write_counterexample(
    common: &Common,
    cex: &Counterexample,
    sides: &[(&str, &PolicySet)],
) -> Result<String, String> {
    let Some(dir) = &common.counterexample else {
        return Ok(String::new());
    };
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write("request.json", format!("{:#}\n", cex.request_json()))?;
    write("entities.json", format!("{:#}\n", cex.entities_json()))?;
    write(
        "lattice.cedarschema",
        lattice_schemas::cedar::SCHEMA_TEXT.to_owned(),
    )?;
    let mut out = format!("  written to {}; replay with:\n", dir.display());
    for (name, set) in sides {
        write(&format!("{name}.cedar"), with_stable_ids(set))?;
        out.push_str(&format!(
            "    lattice-policy authorize --policies {d}/{name}.cedar --entities {d}/entities.json --schema {d}/lattice.cedarschema --request-json {d}/request.json\n",
            d = dir.display()
        ));
    }
    Ok(out)
}
