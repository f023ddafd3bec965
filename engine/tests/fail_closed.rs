//! Facts that fail closed: a misspelled Pod Security level, a namespace's opt-out of the
//! default-deny baseline, a baseline missing from the cluster, and an entity that cannot be
//! built. Each of these once opened something by default.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use cedar_policy::EntityUid;
use lattice_engine::project::{ImageFacts, LiveFacts};
use lattice_engine::{PolicyStore, Projection, Query, Snapshot, World, action, uid};
use lattice_schemas::image::Verification;
use lattice_schemas::manifest::Object;

fn root() -> PathBuf {
    lattice_testkit::workspace_root()
}

/// A world from YAML text, as `validate` reads it (errors allowed: the projection must be
/// safe on what a running cluster holds, which `validate` never saw).
fn world(text: &str) -> World {
    let report = lattice_schemas::validate::validate_text("world.yaml", text);
    World::from_objects(report.manifests.into_iter().map(|m| m.object).collect())
}

/// The bundled packs plus the world's CedarPolicy objects.
fn store(w: &World) -> PolicyStore {
    let mut store = PolicyStore::load_packs(&root().join("policies")).unwrap();
    for (_, o) in w.objects() {
        if let Object::CedarPolicy(p) = o {
            store.apply_object(p).unwrap();
        }
    }
    store
}

fn attr(s: &Snapshot, e: &EntityUid, name: &str) -> String {
    let entity = s.entities().get(e).unwrap_or_else(|| panic!("no {e}"));
    match entity.attr(name) {
        Some(Ok(v)) => v.to_string(),
        other => panic!("{e}.{name}: {other:?}"),
    }
}

const SERVICE: &str = "
---
apiVersion: lattice.dev/v1alpha1
kind: LatticeService
metadata: {name: web, namespace: team}
spec:
  containers:
    main:
      image: ghcr.io/acme/web:1.0
      security:
        capabilities: [SYS_ADMIN, NET_RAW]
        runAsUser: 0
        allowPrivilegeEscalation: true
  service:
    ports:
      http: {port: 8080}
";

/// A namespace permit for every override: only the Pod Security forbids stand in the way.
const PERMIT_OVERRIDES: &str = r#"
---
apiVersion: lattice.dev/v1alpha1
kind: CedarPolicy
metadata: {name: overrides, namespace: team}
spec:
  policies: |
    @id("team-overrides")
    permit (
      principal in Lattice::Namespace::"team",
      action == Lattice::Action::"OverrideSecurity",
      resource
    );
"#;

fn override_allowed(s: &Snapshot, what: &str) -> bool {
    let q = Query::new(
        uid("Service", "team/web"),
        action("OverrideSecurity"),
        uid("SecurityOverride", what),
    )
    .with_context(
        lattice_engine::context_from_json(
            &serde_json::json!({"raisedBy": "main", "workloadKind": "service"}),
        )
        .unwrap(),
    );
    s.decide(&q).unwrap().allowed
}

#[test]
fn a_misspelled_pod_security_level_is_enforced_as_restricted() {
    for label in ["Restricted", "restricted ", "strict", ""] {
        let w = world(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n  labels:\n    pod-security.kubernetes.io/enforce: {label:?}\n{SERVICE}{PERMIT_OVERRIDES}"
        ));
        let s = Snapshot::build(&w, &Projection::of(&w), &store(&w)).unwrap();
        assert_eq!(
            attr(&s, &uid("Namespace", "team"), "podSecurity"),
            "\"restricted\"",
            "label {label:?}"
        );
        for what in [
            "capability:SYS_ADMIN",
            "capability:NET_RAW",
            "runAsRoot",
            "privilegeEscalation",
        ] {
            assert!(
                !override_allowed(&s, what),
                "{what} must stay forbidden under label {label:?}"
            );
        }
        // And `validate` says so.
        let report = lattice_schemas::validate::validate_text(
            "ns.yaml",
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n  labels:\n    pod-security.kubernetes.io/enforce: {label:?}\n"
            ),
        );
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.code == "lattice::namespace::pod-security"),
            "validate reports {label:?}: {:?}",
            report.findings
        );
    }
    // A level spelled right is read as written: privileged lets the permit through.
    let w = world(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n  labels:\n    pod-security.kubernetes.io/enforce: privileged\n{SERVICE}{PERMIT_OVERRIDES}"
    ));
    let s = Snapshot::build(&w, &Projection::of(&w), &store(&w)).unwrap();
    assert!(override_allowed(&s, "capability:SYS_ADMIN"));
}

#[test]
fn an_unlabelled_namespace_gets_the_clusters_default_level() {
    let w = world(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: team}}\n{SERVICE}"
    ));
    let s = Snapshot::build(&w, &Projection::of(&w), &store(&w)).unwrap();
    assert_eq!(
        attr(&s, &uid("Namespace", "team"), "podSecurity"),
        "\"restricted\""
    );
    assert_eq!(
        attr(&s, &uid("Cluster", "local"), "defaultPodSecurity"),
        "\"restricted\""
    );
    let text = std::fs::read_to_string(root().join("examples/world/infrastructure.yaml")).unwrap();
    let with_default = text.replace(
        "  providerRef: aws-prod\n",
        "  providerRef: aws-prod\n  podSecurityDefault: baseline\n",
    );
    assert_ne!(text, with_default, "the example cluster names its provider");
    let w = world(&format!(
        "{with_default}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: team}}\n{SERVICE}"
    ));
    let s = Snapshot::build(&w, &Projection::of(&w), &store(&w)).unwrap();
    assert_eq!(
        attr(&s, &uid("Namespace", "team"), "podSecurity"),
        "\"baseline\""
    );
}

const OPT_OUT_PERMIT: &str = r#"
---
apiVersion: lattice.dev/v1alpha1
kind: CedarPolicy
metadata: {name: open, namespace: team}
spec:
  policies: |
    @id("team-runs-open")
    permit (
      principal == Lattice::Namespace::"team",
      action == Lattice::Action::"OptOutDefaultDeny",
      resource
    )
    when { context.requested };
"#;

const ASKS_TO_OPT_OUT: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n  labels:\n    lattice.dev/default-deny: \"false\"\n";

#[test]
fn a_label_alone_never_switches_default_deny_off() {
    let w = world(&format!("{ASKS_TO_OPT_OUT}{SERVICE}"));
    let s = Snapshot::build(&w, &Projection::of(&w), &store(&w)).unwrap();
    assert!(!s.opted_out("team"));
    assert_eq!(attr(&s, &uid("Namespace", "team"), "defaultDeny"), "true");
    assert_eq!(
        attr(&s, &uid("Namespace", "team"), "defaultDenyOptOutRequested"),
        "true"
    );
    assert_eq!(attr(&s, &uid("Service", "team/web"), "strictMtls"), "true");
}

#[test]
fn an_allowed_opt_out_is_reported_and_ends_strict_mtls() {
    let w = world(&format!("{ASKS_TO_OPT_OUT}{SERVICE}{OPT_OUT_PERMIT}"));
    for s in [
        Snapshot::build(&w, &Projection::of(&w), &store(&w)).unwrap(),
        // The one-shot path (compliance scans) decides the same.
        Snapshot::build_consuming(&w, Projection::of(&w), &store(&w)).unwrap(),
    ] {
        assert!(s.opted_out("team"));
        assert_eq!(attr(&s, &uid("Namespace", "team"), "defaultDeny"), "false");
        assert_eq!(
            attr(&s, &uid("Service", "team/web"), "strictMtls"),
            "false",
            "no STRICT PeerAuthentication is derived in an opted-out namespace"
        );
    }
    // Withdrawing the permit brings the baseline back.
    let w = world(&format!("{ASKS_TO_OPT_OUT}{SERVICE}"));
    let s = Snapshot::build(&w, &Projection::of(&w), &store(&w)).unwrap();
    assert!(!s.opted_out("team"));
    assert_eq!(attr(&s, &uid("Service", "team/web"), "strictMtls"), "true");
}

#[test]
fn kubernetes_own_namespaces_run_without_the_baseline_by_default() {
    let w = world(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-system}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n",
    );
    let s = Snapshot::build(&w, &Projection::of(&w), &store(&w)).unwrap();
    assert!(s.opted_out("kube-system"));
    assert!(!s.opted_out("team"));
}

#[test]
fn a_baseline_missing_from_the_cluster_is_not_default_deny() {
    let w = world(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: team}}\n{SERVICE}"
    ));
    let store = store(&w);
    let decided = Snapshot::build(&w, &Projection::of(&w), &store).unwrap();
    let live = LiveFacts {
        baseline_missing: BTreeSet::from(["team".to_owned()]),
        ..LiveFacts::default()
    };
    let observed = Snapshot::build(&w, &Projection::with_live(&w, live), &store).unwrap();
    assert_eq!(
        attr(&decided, &uid("Namespace", "team"), "defaultDeny"),
        "true"
    );
    assert_eq!(
        attr(&observed, &uid("Namespace", "team"), "defaultDeny"),
        "false"
    );
    assert_eq!(
        attr(&observed, &uid("Service", "team/web"), "strictMtls"),
        "false"
    );
    assert!(
        !observed.opted_out("team"),
        "missing objects are a fact, not an opt-out: the baseline is still derived"
    );
    assert_ne!(
        decided.digest(),
        observed.digest(),
        "what the cluster showed is part of what was decided on"
    );
}

#[test]
fn an_entity_that_cannot_be_built_is_an_error_naming_its_object() {
    // A running cluster can hold what `validate` refuses: an image reference that does not
    // parse. The projection must not strip the entity and decide on what is left.
    let w = world(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: team}}\n{SERVICE}"
    ));
    let mut objects: Vec<Object> = w.objects().map(|(_, o)| o.clone()).collect();
    for o in &mut objects {
        if let Object::Service(svc) = o {
            svc.spec.workload.containers.get_mut("main").unwrap().image = "Not An Image!!".into();
        }
    }
    let broken = World::from_objects(objects);
    let err = Snapshot::build(&broken, &Projection::of(&broken), &store(&broken))
        .err()
        .expect("no snapshot on a partial fact");
    let message = err.to_string();
    assert!(message.contains("Not An Image!!"), "{message}");
    let service = broken
        .objects()
        .find(|(_, o)| matches!(o, Object::Service(_)))
        .unwrap()
        .1;
    let projection = Projection::of(&broken);
    let err = projection.entities_of(service).unwrap_err().to_string();
    assert!(err.contains("LatticeService team/web"), "{err}");
}

#[test]
fn an_image_is_signed_only_by_a_verification_under_its_registrys_keys() {
    // A TrustPolicy whose `verified` list declares the image signed: ignored.
    let w = world(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: team}}\n---
apiVersion: lattice.dev/v1alpha1
kind: TrustPolicy
metadata: {{name: trust}}
spec:
  registries:
    - prefix: ghcr.io/acme
      requireSignature: true
      keys:
        - name: release
          publicKey: unused here
      verified:
        - image: ghcr.io/acme/web:1.0
          signers: [release]
{SERVICE}"
    ));
    let store = store(&w);
    let image = uid("Image", "ghcr.io/acme/web:1.0");
    let deploy = |s: &Snapshot| {
        let context = lattice_engine::context_from_json(&serde_json::json!({
            "raisedBy": "main", "workloadKind": "service", "sidecar": false
        }))
        .unwrap();
        s.decide(
            &Query::new(
                uid("Service", "team/web"),
                action("DeployImage"),
                image.clone(),
            )
            .with_context(context),
        )
        .unwrap()
        .allowed
    };
    let with = |facts: ImageFacts| {
        let live = LiveFacts {
            images: facts,
            ..LiveFacts::default()
        };
        Snapshot::build(&w, &Projection::with_live(&w, live), &store).unwrap()
    };
    let results = |v: Verification| ImageFacts {
        source: Some("a registry".into()),
        results: Arc::new(BTreeMap::from([("ghcr.io/acme/web:1.0".to_owned(), v)])),
    };
    let digest = "sha256:0bfc567d40eb049300c9ed13dfac942dfe5f3eff852453de9900520a79dd4ad0";

    // Offline: nothing verified, so not signed, and the entity says why.
    let offline = with(ImageFacts::default());
    assert_eq!(attr(&offline, &image, "signed"), "false");
    assert!(attr(&offline, &image, "verifyError").contains("offline"));
    assert!(!deploy(&offline), "a declared verification grants nothing");

    // Verified under the registry's key: signed, with the digest it resolved to.
    let signed = with(results(Verification {
        digest: digest.into(),
        signers: BTreeSet::from(["release".to_owned()]),
        error: String::new(),
    }));
    assert_eq!(attr(&signed, &image, "signed"), "true");
    assert_eq!(
        attr(&signed, &image, "resolvedDigest"),
        format!("\"{digest}\"")
    );
    assert_eq!(
        attr(&signed, &image, "digest"),
        "\"\"",
        "the reference names none"
    );
    assert!(deploy(&signed));
    assert_ne!(
        offline.digest(),
        signed.digest(),
        "the snapshot digest covers them"
    );

    // A signer the registry does not list counts for nothing.
    let stranger = with(results(Verification {
        digest: digest.into(),
        signers: BTreeSet::from(["someone-else".to_owned()]),
        error: String::new(),
    }));
    assert_eq!(attr(&stranger, &image, "signed"), "false");
    assert!(!deploy(&stranger));

    // A registry that did not answer: not signed, and the reason reaches policies.
    let down = with(results(Verification::failed(
        "",
        "the registry of ghcr.io/acme/web:1.0 cannot be reached: connection refused",
    )));
    assert_eq!(attr(&down, &image, "signed"), "false");
    assert!(attr(&down, &image, "verifyError").contains("cannot be reached"));
    assert!(!deploy(&down));
}
