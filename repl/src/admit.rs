//! `lattice-policy admit`: what the admission webhook answers for Kubernetes objects in a
//! file, decided on the same rule packs and the same code path (`lattice_gates::pod_security`):
//! the `kyverno apply` / `gator test` of Lattice, for CI pipelines on plain manifests.
//!
//! Every object that carries a pod (Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet,
//! Job, CronJob, ReplicationController, PodTemplate) is decided under the Pod Security
//! Standards of its namespace; Roles, ClusterRoles, their bindings and Services are asked
//! `AdmitKubernetes` (`lattice_gates::kubernetes`); other Kubernetes kinds are admitted
//! untouched, as the webhook admits them. Exit 0 when every object is admitted, 1 when any
//! is refused, 2 on bad input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lattice_gates::Requester;
use lattice_gates::pod_security::{self, PodAdmission};
use lattice_schemas::manifest::core::CoreKind;
use miette::{LabeledSpan, NamedSource};
use serde_json::{Value, json};

use crate::output::{Format, render};
use crate::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

/// The arguments of `admit`.
#[derive(clap::Args)]
pub struct AdmitArgs {
    /// The manifest: one or more Kubernetes objects (YAML, `---` between documents).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// The namespace's labels, `k=v,k=v` (e.g.
    /// `pod-security.kubernetes.io/enforce=baseline`); else the world's Namespace, else none.
    #[arg(long, value_name = "K=V,…")]
    namespace_labels: Option<String>,
    /// The namespace of objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// The world the objects join: directories or files of manifests (repeatable).
    #[arg(long, default_value = "examples/world")]
    world: Vec<PathBuf>,
    /// A rule-pack directory to decide under instead of the bundled packs.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// The operation asked: CREATE or UPDATE.
    #[arg(long, default_value = "CREATE", value_parser = ["CREATE", "UPDATE"])]
    operation: String,
    /// Who asks (exemptions may name users).
    #[arg(long, default_value = "lattice-policy")]
    user: String,
    /// A group the user is in (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// `human` answers on stdout with warnings and deciding policies on stderr; `json` prints
    /// the AdmissionReview the webhook would return (an array for several objects).
    #[arg(short, long, value_enum, default_value_t = Format::Human)]
    output: Format,
}

/// Parses `k=v,k=v`.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not `key=value`"))?;
        if k.is_empty() {
            return Err(format!("`{pair}` has an empty key"));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

pub fn run(args: AdmitArgs) -> u8 {
    let labels = match args
        .namespace_labels
        .as_deref()
        .map(parse_labels)
        .transpose()
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: --namespace-labels: {e}");
            return EXIT_USAGE;
        }
    };
    let objects = match read_objects(&args.file) {
        Ok(o) => o,
        Err(text) => {
            eprint!("{text}");
            return EXIT_USAGE;
        }
    };
    let Some(loaded) = crate::loading::load(&args.world, args.policies.as_deref()) else {
        return EXIT_USAGE;
    };
    let requester = Requester {
        username: args.user.clone(),
        groups: args.groups.clone(),
    };
    let policies = pod_security::WorldPolicies::of_projection(&loaded.projection);
    let mut reviews = Vec::new();
    let mut refused_any = false;
    for (line, object) in &objects {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let at = format!("{}:{line}", args.file.display());
        if api_version.starts_with("lattice.dev/") {
            eprintln!(
                "error: {at}: {kind} {name} is a Lattice kind; `lattice-policy render` and `validate` decide those"
            );
            return EXIT_USAGE;
        }
        // By group and kind, as the webhook: another project's `Service` or `Deployment`
        // is not Kubernetes', and is admitted untouched.
        let Some(core_kind) = CoreKind::of(api_version, kind) else {
            if args.output == Format::Human {
                println!("admitted {kind} {name} ({at}): not a kind Lattice decides");
            }
            reviews.push(review(false, "", &[], &BTreeMap::new()));
            continue;
        };
        if lattice_gates::kubernetes::ADMITTED_KINDS.contains(&core_kind) {
            let decided = lattice_gates::kubernetes::admit(
                &loaded.snapshot,
                &loaded.world,
                &policies,
                kind,
                object,
                &args.namespace,
                &requester,
                &args.operation,
            );
            let (refused, message) = match decided {
                Ok(Some(a)) => (a.refused, a.message()),
                Ok(None) => (false, String::new()),
                Err(e) => (true, format!("{kind} {name:?} cannot be decided: {e}")),
            };
            refused_any |= refused;
            if args.output == Format::Human {
                if refused {
                    println!("refused {kind} {name} ({at}): {message}");
                } else {
                    println!("admitted {kind} {name} ({at})");
                }
            }
            reviews.push(review(refused, &message, &[], &BTreeMap::new()));
            continue;
        }
        let decided = pod_security::admit(
            &loaded.snapshot,
            &loaded.world,
            &policies,
            kind,
            object,
            &args.namespace,
            labels.as_ref(),
            &requester,
            &args.operation,
        );
        let review = match decided {
            Ok(Some(a)) => {
                refused_any |= a.refused;
                if args.output == Format::Human {
                    human(&at, &a);
                }
                review(a.refused, &a.message(), &a.warnings, &a.audit)
            }
            Ok(None) => {
                if args.output == Format::Human {
                    println!(
                        "admitted {kind} {name} ({at}): no Pod Security question for its kind"
                    );
                }
                review(false, "", &[], &BTreeMap::new())
            }
            Err(e) => {
                // What cannot be read cannot be decided: refused, as the webhook refuses it.
                refused_any = true;
                let message = format!("{kind} {name:?} cannot be decided: {e}");
                if args.output == Format::Human {
                    println!("refused {kind} {name} ({at}): {message}");
                }
                review(true, &message, &[], &BTreeMap::new())
            }
        };
        reviews.push(review);
    }
    if args.output == Format::Json {
        let out = match reviews.as_slice() {
            [one] => one.clone(),
            _ => Value::Array(reviews),
        };
        println!("{}", serde_json::to_string_pretty(&out).expect("JSON"));
    } else {
        eprint!("{}", loaded.packs.line());
    }
    if refused_any { EXIT_FINDINGS } else { EXIT_OK }
}

fn human(at: &str, a: &PodAdmission) {
    let who = format!("{} {}/{}", a.pod.kind, a.pod.namespace, a.pod.name);
    if a.refused {
        println!("refused {who} ({at}): {}", a.message());
    } else if !a.verdict.exempted_by.is_empty() {
        println!("admitted {who} ({at}): exempt from the Pod Security Standards");
    } else {
        println!(
            "admitted {who} ({at}) under PodSecurity \"{}\"",
            a.policy.enforce
        );
    }
    for w in &a.warnings {
        eprintln!("warning: {w}");
    }
    for p in &a.verdict.exempted_by {
        eprintln!("  exempted by {}", p.id);
    }
    for o in &a.verdict.modes {
        for v in &o.violations {
            eprintln!(
                "  {} {}: {} ({})",
                o.mode.name(),
                o.policy,
                if v.policy.is_empty() {
                    &v.check
                } else {
                    &v.policy
                },
                v.subjects.join(", ")
            );
        }
    }
    for (k, v) in &a.audit {
        eprintln!("  audit {k}: {v}");
    }
}

/// The AdmissionReview (admission.k8s.io/v1) the webhook answers with.
fn review(
    refused: bool,
    message: &str,
    warnings: &[String],
    audit: &BTreeMap<String, String>,
) -> Value {
    let mut response = json!({"uid": "", "allowed": !refused});
    if refused {
        response["status"] = json!({"code": 403, "reason": "Forbidden", "message": message});
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    if !audit.is_empty() {
        response["auditAnnotations"] = json!(audit);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// The objects of a YAML file with the line each starts on; a diagnostic on bad YAML or on a
/// document that is not a Kubernetes object.
fn read_objects(path: &Path) -> Result<Vec<(usize, Value)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("error: cannot read {}: {e}\n", path.display()))?;
    let (docs, errors) = lattice_schemas::manifest::yaml::parse_documents(&text);
    let diagnostic = |span: std::ops::Range<usize>, message: &str| {
        let report = miette::miette!(
            labels = vec![LabeledSpan::at(span, message.to_owned())],
            "{}",
            message
        )
        .with_source_code(NamedSource::new(path.display().to_string(), text.clone()));
        render(report.as_ref())
    };
    if let Some(e) = errors.first() {
        return Err(diagnostic(e.span.clone(), &e.message));
    }
    // Documents come in order: count lines from the previous one, not from the top, so a
    // file of 10,000 Pods is read in linear time.
    let (mut counted_to, mut lines_before) = (0usize, 0usize);
    let mut line = |offset: usize| {
        let offset = offset.min(text.len()).max(counted_to);
        lines_before += text[counted_to..offset].matches('\n').count();
        counted_to = offset;
        lines_before + 1
    };
    let mut out = Vec::new();
    for d in docs {
        if d.value.is_null() {
            continue;
        }
        let ok = d.value.get("kind").and_then(Value::as_str).is_some()
            && d.value.get("apiVersion").and_then(Value::as_str).is_some();
        if !ok {
            return Err(diagnostic(
                d.start..d.end.max(d.start + 1).min(text.len()),
                "not a Kubernetes object: it needs `apiVersion` and `kind`",
            ));
        }
        out.push((line(d.start), d.value));
    }
    if out.is_empty() {
        return Err(format!("error: {} holds no object\n", path.display()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_and_bad_ones_refused() {
        let l = parse_labels("pod-security.kubernetes.io/enforce=baseline, a=b").unwrap();
        assert_eq!(l["pod-security.kubernetes.io/enforce"], "baseline");
        assert_eq!(l["a"], "b");
        assert!(parse_labels("novalue").is_err());
        assert!(parse_labels("=x").is_err());
    }
}
