//! The engine on the example world: projection, rule packs, CedarPolicy objects, decisions
//! with evidence, error semantics, audit mode, snapshots and incremental updates.

use std::path::PathBuf;

use cedar_policy::{Context, EntityUid};
use lattice_engine::policies::PolicyError;
use lattice_engine::{
    Engine, ObjectKey, PolicyStore, Projection, Query, Snapshot, World, action, uid,
};
use lattice_schemas::crd::CedarPolicy;
use lattice_schemas::manifest::Object;

fn root() -> PathBuf {
    lattice_testkit::workspace_root()
}

fn world() -> World {
    World::load(&[root().join("examples/world")]).unwrap()
}

/// The packs plus every CedarPolicy object of the world.
fn store(world: &World) -> PolicyStore {
    let mut store = PolicyStore::load_packs(&root().join("policies")).unwrap();
    for (_, o) in world.objects() {
        if let Object::CedarPolicy(p) = o {
            store.apply_object(p).unwrap();
        }
    }
    store
}

fn snapshot(world: &World, store: &PolicyStore) -> Snapshot {
    Snapshot::build(world, &Projection::of(world), store).unwrap()
}

fn connect(from: &str, to: &str) -> Query {
    Query::new(uid("Service", from), action("Connect"), uid("Service", to))
        .with_context(Context::from_json_value(serde_json::json!({"ports": [8080]}), None).unwrap())
}

/// The ids of every entity of one type.
fn ids_of_type(s: &Snapshot, type_name: &str) -> Vec<String> {
    s.entities()
        .iter()
        .filter(|e| e.uid().type_name().to_string() == type_name)
        .map(|e| e.uid().id().unescaped().to_owned())
        .collect()
}

fn attr(s: &Snapshot, e: &EntityUid, name: &str) -> String {
    let entity = s
        .entities()
        .get(e)
        .unwrap_or_else(|| panic!("no entity {e}"));
    let Some(Ok(value)) = entity.attr(name) else {
        panic!("{e} has no {name}")
    };
    format!("{value:?}")
}

#[test]
fn projection_follows_the_schema() {
    let w = world();
    let s = snapshot(&w, &store(&w));
    let checkout = uid("Service", "shop/checkout");
    // Cross-namespace references resolve to the peer's uid.
    assert!(
        attr(&s, &checkout, "dependencies").contains("payments/ledger"),
        "{}",
        attr(&s, &checkout, "dependencies")
    );
    assert!(attr(&s, &uid("Service", "payments/ledger"), "callers").contains("shop/checkout"));
    // The service is in its namespace, which is in the cluster.
    let ancestors: Vec<String> = s
        .entities()
        .ancestors(&checkout)
        .unwrap()
        .map(|a| a.to_string())
        .collect();
    assert!(
        ancestors
            .iter()
            .any(|a| a == r#"Lattice::Namespace::"shop""#),
        "{ancestors:?}"
    );
    assert!(
        ancestors
            .iter()
            .any(|a| a == r#"Lattice::Cluster::"production""#),
        "{ancestors:?}"
    );
    // One Container per container and sidecar, with its normalized image.
    let containers = ids_of_type(&s, "Lattice::Container");
    assert!(
        containers
            .iter()
            .any(|c| c.starts_with("payments/gateway/")),
        "{containers:?}"
    );
    let images = ids_of_type(&s, "Lattice::Image");
    assert!(
        images
            .iter()
            .all(|i| i.contains('/') && (i.contains(':') || i.contains('@'))),
        "{images:?}"
    );
    assert!(
        images.iter().any(|i| i.starts_with("docker.io/library/")),
        "{images:?}"
    );
    // Every entity validated against the schema when the snapshot was built.
    assert!(s.entities().iter().count() > 40);
}

#[test]
fn bilateral_connect_and_one_sided_declarations() {
    let w = world();
    let s = snapshot(&w, &store(&w));
    let both = s
        .decide(&connect("shop/checkout", "payments/ledger"))
        .unwrap();
    assert!(both.allowed, "{both:?}");
    assert_eq!(
        both.determining
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>(),
        ["baseline/bilateral-connect"]
    );
    assert!(both.digest.starts_with("sha256:"));
    // shop/api lists payments/ledger, but the ledger does not list shop/api: default deny.
    let one_sided = s.decide(&connect("shop/api", "payments/ledger")).unwrap();
    assert!(!one_sided.allowed);
    assert!(one_sided.is_default_deny());
}

#[test]
fn a_forbid_denies_with_its_evidence() {
    let w = world();
    let s = snapshot(&w, &store(&w));
    let d = s.decide(&connect("sandbox/scratch", "shop/web")).unwrap();
    assert!(!d.allowed);
    let p = &d.determining[0];
    assert_eq!(p.id, "platform/environment-isolation/no-dev-to-shop");
    assert!(p.annotations["advice"].contains("sandbox is a dev namespace"));
    assert_eq!(
        p.source.to_string(),
        "CedarPolicy platform/environment-isolation"
    );
    assert!(p.text.starts_with("@id(\"no-dev-to-shop\")"), "{}", p.text);
}

#[test]
fn pod_security_forbids_and_namespace_permits() {
    let w = world();
    let s = snapshot(&w, &store(&w));
    let ask = |svc: &str, ov: &str| {
        let q = Query::new(
            uid("Service", svc),
            action("OverrideSecurity"),
            uid("SecurityOverride", ov),
        )
        .with_context(
            Context::from_json_value(
                serde_json::json!({"raisedBy": "main", "workloadKind": "service"}),
                None,
            )
            .unwrap(),
        );
        s.decide(&q).unwrap()
    };
    assert!(ask("payments/gateway", "capability:NET_BIND_SERVICE").allowed);
    assert!(ask("payments/gateway", "sysctl:net.ipv4.ip_local_port_range").allowed);
    assert!(
        !ask("payments/ledger", "sysctl:net.ipv4.ip_local_port_range").allowed,
        "only the gateway has that permit"
    );
    let privileged = ask("payments/gateway", "privileged");
    assert!(!privileged.allowed);
    assert_eq!(privileged.determining[0].id, "pod-security/no-privileged");
}

fn cedar_policy(ns: &str, name: &str, mode: &str, policies: &str) -> CedarPolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "lattice.dev/v1alpha1", "kind": "CedarPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"policies": policies, "mode": mode}
    }))
    .unwrap()
}

#[test]
fn an_invalid_cedar_policy_is_rejected_whole_and_the_last_good_stays() {
    let w = world();
    let mut st = store(&w);
    let good = cedar_policy(
        "shop",
        "allow-web",
        "enforce",
        r#"@id("a") permit(principal, action == Lattice::Action::"Connect", resource == Lattice::Service::"shop/web");"#,
    );
    st.apply_object(&good).unwrap();
    let before = st.digest();
    // Second policy is invalid: the whole object is rejected, the first one included.
    let bad = cedar_policy(
        "shop",
        "allow-web",
        "enforce",
        "@id(\"a\") permit(principal, action, resource);\n@id(\"b\") permit(principal, action == Lattice::Action::\"Connect\", resource) when { principal.nope };",
    );
    let err = st.apply_object(&bad).unwrap_err();
    let PolicyError::Object { problems, .. } = &err else {
        panic!("{err}")
    };
    assert!(problems[0].message.contains("nope"), "{err}");
    assert!(
        problems[0].span.start > 40,
        "the problem is located in the text"
    );
    assert_eq!(st.digest(), before, "the store is unchanged");
    let s = snapshot(&w, &st);
    assert!(
        s.decide(&connect("payments/ledger", "shop/web"))
            .unwrap()
            .allowed,
        "the last good version still decides"
    );
}

#[test]
fn erroring_policies_fail_closed_and_are_reported() {
    let w = world();
    let mut st = store(&w);
    // Overflows for any service with 2+ replicas: an evaluation error, not a validation one.
    st.apply_object(&cedar_policy(
        "platform",
        "overflow",
        "enforce",
        r#"@id("erroring-forbid") forbid(principal, action == Lattice::Action::"Connect", resource == Lattice::Service::"payments/ledger") when { principal.replicas * 4611686018427387904 > 0 };"#,
    ))
    .unwrap();
    let s = snapshot(&w, &st);
    let d = s
        .decide(&connect("shop/checkout", "payments/ledger"))
        .unwrap();
    assert!(!d.allowed, "an erroring forbid denies");
    assert_eq!(d.errors.len(), 1);
    assert!(
        d.errors[0].message.contains("overflow"),
        "{}",
        d.errors[0].message
    );
    assert!(
        d.determining
            .iter()
            .any(|p| p.id == "platform/overflow/erroring-forbid")
    );
    // An erroring permit permits nothing.
    let mut st = store(&w);
    st.apply_object(&cedar_policy(
        "platform",
        "overflow",
        "enforce",
        r#"@id("erroring-permit") permit(principal, action == Lattice::Action::"Connect", resource == Lattice::Service::"shop/web") when { principal.replicas * 4611686018427387904 > 0 };"#,
    ))
    .unwrap();
    let d = snapshot(&w, &st)
        .decide(&connect("payments/ledger", "shop/web"))
        .unwrap();
    assert!(!d.allowed);
    assert_eq!(d.errors[0].policy.id, "platform/overflow/erroring-permit");
}

#[test]
fn audit_policies_report_but_never_decide() {
    let w = world();
    let mut st = store(&w);
    st.apply_object(&cedar_policy(
        "platform",
        "all-images",
        "enforce",
        r#"@id("any") permit(principal, action == Lattice::Action::"DeployImage", resource);"#,
    ))
    .unwrap();
    let s = snapshot(&w, &st);
    let latest = w
        .objects()
        .find_map(|(k, o)| match o {
            Object::Service(svc) if k.namespace.as_deref() == Some("sandbox") => svc
                .spec
                .workload
                .containers
                .values()
                .next()
                .map(|c| c.image.clone()),
            _ => None,
        })
        .unwrap();
    let q = Query::new(
        uid("Service", "sandbox/scratch"),
        action("DeployImage"),
        uid("Image", &lattice_engine::project::image_uid_text(&latest)),
    )
    .with_context(
        Context::from_json_value(
            serde_json::json!({"raisedBy": "main", "workloadKind": "service", "sidecar": false}),
            None,
        )
        .unwrap(),
    );
    let d = s.decide(&q).unwrap();
    assert!(d.allowed, "the audit forbid does not deny");
    assert_eq!(
        d.audit.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["platform/image-hygiene/no-latest-tag"]
    );
}

#[test]
fn queries_the_schema_rejects_are_errors() {
    let w = world();
    let s = snapshot(&w, &store(&w));
    let wrong_types = Query::new(
        uid("Namespace", "shop"),
        action("Connect"),
        uid("Service", "shop/web"),
    );
    assert!(s.decide(&wrong_types).is_err());
    let missing_context = Query::new(
        uid("Service", "shop/web"),
        action("Connect"),
        uid("Service", "shop/api"),
    );
    assert!(s.decide(&missing_context).is_err());
}

#[test]
fn snapshots_swap_atomically_and_digests_track_content() {
    let w = world();
    let st = store(&w);
    let engine = Engine::new(snapshot(&w, &st));
    let old = engine.snapshot();
    assert_eq!(
        snapshot(&w, &st).digest(),
        old.digest(),
        "same input, same digest"
    );
    let mut st2 = st.clone();
    st2.apply_object(&cedar_policy("shop", "x", "enforce", r#"@id("x") permit(principal, action == Lattice::Action::"Connect", resource == Lattice::Service::"shop/web");"#)).unwrap();
    let previous = engine.swap(snapshot(&w, &st2));
    assert_eq!(previous.digest(), old.digest());
    assert_ne!(engine.snapshot().digest(), old.digest());
    // A reader holding the old snapshot still decides on it.
    assert!(
        !old.decide(&connect("payments/ledger", "shop/web"))
            .unwrap()
            .allowed
    );
    assert!(
        engine
            .snapshot()
            .decide(&connect("payments/ledger", "shop/web"))
            .unwrap()
            .allowed
    );
}

#[test]
fn upserting_one_service_rebuilds_only_its_entities() {
    let mut w = world();
    let mut projection = Projection::of(&w);
    let key = ObjectKey {
        kind: "LatticeService",
        namespace: Some("shop".into()),
        name: "web".into(),
    };
    let Some(Object::Service(mut web)) = w.get(&key).cloned() else {
        panic!()
    };
    web.spec.replicas = Some(7);
    w.upsert(Object::Service(web));
    assert_eq!(projection.update(&w, &key), vec![key.clone()]);
    let s = Snapshot::build(&w, &projection, &store(&w)).unwrap();
    assert_eq!(attr(&s, &uid("Service", "shop/web"), "replicas"), "Long(7)");
    // A namespace change reaches the workloads in it.
    let ns_key = ObjectKey {
        kind: "Namespace",
        namespace: None,
        name: "shop".into(),
    };
    let rebuilt = projection.update(&w, &ns_key);
    assert!(rebuilt.contains(&key) && rebuilt.len() > 2, "{rebuilt:?}");
}

#[test]
fn explain_names_the_side_of_a_one_sided_declaration() {
    let w = world();
    let s = snapshot(&w, &store(&w));
    let e = s.explain(&connect("shop/api", "payments/ledger")).unwrap();
    let lattice_engine::Why::NothingPermitted(near) = &e.why else {
        panic!("{:?}", e.why)
    };
    let bilateral = near
        .iter()
        .find(|n| n.policy.id == "baseline/bilateral-connect")
        .expect("the bilateral rule's scope matched");
    let condition = bilateral.condition.as_deref().unwrap();
    // The caller's side holds; the callee's does not list the caller.
    assert!(
        condition.contains("resource.callers") && !condition.contains("principal.dependencies"),
        "{condition}"
    );
    assert_eq!(bilateral.outcome, "false");
    // Allowed and forbidden decisions name the policies that decided.
    let allowed = s
        .explain(&connect("shop/checkout", "payments/ledger"))
        .unwrap();
    assert!(
        matches!(&allowed.why, lattice_engine::Why::Permitted(p) if p[0].id == "baseline/bilateral-connect")
    );
    let forbidden = s.explain(&connect("sandbox/scratch", "shop/web")).unwrap();
    assert!(
        matches!(&forbidden.why, lattice_engine::Why::Forbidden(p) if p[0].id.ends_with("no-dev-to-shop"))
    );
}

#[test]
fn what_if_reports_exactly_what_changes() {
    use lattice_engine::{PolicyChange, what_if};
    use lattice_schemas::crd::EnforcementMode;
    let w = world();
    let st = store(&w);
    let projection = Projection::of(&w);
    let s = Snapshot::build(&w, &projection, &st).unwrap();
    let queries = vec![
        connect("shop/checkout", "payments/ledger"),
        connect("shop/api", "payments/ledger"),
        connect("sandbox/scratch", "shop/web"),
        connect("shop/web", "shop/api"),
    ];
    // Forbidding everything into payments denies the one allowed edge into it.
    let add = PolicyChange::Add {
        namespace: "platform".into(),
        name: "freeze-payments".into(),
        policies: r#"@id("freeze") forbid(principal, action == Lattice::Action::"Connect", resource in Lattice::Namespace::"payments");"#.into(),
        mode: EnforcementMode::Enforce,
    };
    let r = what_if(&s, &w, &projection, &st, &[add], &queries).unwrap();
    assert_eq!(r.newly_denied.len(), 1);
    assert_eq!(
        r.newly_denied[0].after.determining[0].id,
        "platform/freeze-payments/freeze"
    );
    assert!(r.newly_allowed.is_empty());
    // The one-sided edge stays denied, now by the forbid rather than by default.
    assert_eq!(r.reasons_changed.len(), 1);
    assert!(
        r.reasons_changed[0].before.is_default_deny()
            && !r.reasons_changed[0].after.is_default_deny()
    );
    assert_eq!(r.unchanged, 2);
    assert_ne!(r.digest_before, r.digest_after);
    // Removing the dev isolation rule turns sandbox -> shop from a forbid into a default deny.
    let remove = PolicyChange::Remove {
        id: "platform/environment-isolation/no-dev-to-shop".into(),
    };
    let r = what_if(&s, &w, &projection, &st, &[remove], &queries).unwrap();
    assert_eq!(r.reasons_changed.len(), 1);
    assert!(r.reasons_changed[0].after.is_default_deny());
    // Disabling an object, and unknown targets.
    let disable = PolicyChange::Disable {
        namespace: "platform".into(),
        name: "environment-isolation".into(),
    };
    assert_eq!(
        what_if(&s, &w, &projection, &st, &[disable], &queries)
            .unwrap()
            .reasons_changed
            .len(),
        1
    );
    assert!(
        what_if(
            &s,
            &w,
            &projection,
            &st,
            &[PolicyChange::Remove { id: "nope".into() }],
            &queries
        )
        .is_err()
    );
    // A rejected policy is an error, and nothing changes.
    let bad = PolicyChange::Add {
        namespace: "x".into(),
        name: "y".into(),
        policies: "permit(".into(),
        mode: EnforcementMode::Enforce,
    };
    assert!(what_if(&s, &w, &projection, &st, &[bad], &queries).is_err());
}

#[test]
fn approved_wildcards_open_the_mesh_and_unapproved_ones_do_not() {
    let mut w = world();
    // shop/web accepts any caller.
    let key = ObjectKey {
        kind: "LatticeService",
        namespace: Some("shop".into()),
        name: "web".into(),
    };
    let Some(Object::Service(mut web)) = w.get(&key).cloned() else {
        panic!()
    };
    web.spec.workload.resources.insert(
        "*".into(),
        serde_json::from_value(serde_json::json!({"type": "service", "direction": "inbound"}))
            .unwrap(),
    );
    w.upsert(Object::Service(web));
    let projection = Projection::of(&w);
    let st = store(&w);
    // ledger lists shop/web as a dependency, but shop/web's side is only the wildcard.
    let q = connect("payments/ledger", "shop/web");
    let ledger_lists_web = Snapshot::build(&w, &projection, &st).unwrap();
    let deps = attr(
        &ledger_lists_web,
        &uid("Service", "payments/ledger"),
        "dependencies",
    );
    let unapproved = ledger_lists_web.decide(&q).unwrap();
    assert!(
        !unapproved.allowed,
        "a wildcard nobody approved opens nothing ({deps})"
    );
    let mut approving = st.clone();
    approving
        .apply_object(&cedar_policy(
            "platform",
            "wildcards",
            "enforce",
            r#"@id("web-public") permit(principal == Lattice::Service::"shop/web", action == Lattice::Action::"AllowWildcard", resource == Lattice::Mesh::"inbound");"#,
        ))
        .unwrap();
    let s = ledger_lists_web
        .with_policies(&w, &projection, &approving)
        .unwrap();
    assert_eq!(
        attr(&s, &uid("Service", "shop/web"), "callersAll"),
        "Bool(true)"
    );
    let expected = deps.contains("shop/web");
    assert_eq!(
        s.decide(&q).unwrap().allowed,
        expected,
        "allowed exactly when the caller's side is declared ({deps})"
    );
}

#[test]
fn an_incremental_policy_rebuild_equals_a_full_build() {
    let w = world();
    let projection = Projection::of(&w);
    let before = store(&w);
    let s1 = Snapshot::build(&w, &projection, &before).unwrap();
    let mut after = before.clone();
    after
        .apply_object(&cedar_policy(
            "platform",
            "environment-isolation",
            "audit",
            r#"@id("no-dev-to-shop") forbid(principal in Lattice::Namespace::"sandbox", action == Lattice::Action::"Connect", resource in Lattice::Namespace::"shop");"#,
        ))
        .unwrap();
    after.apply_object(&cedar_policy("shop", "open-web", "enforce", r#"@id("w") permit(principal, action == Lattice::Action::"Connect", resource == Lattice::Service::"shop/web");"#)).unwrap();
    assert!(after.remove_policy("baseline/bilateral-connect"));
    let incremental = s1.with_policies(&w, &projection, &after).unwrap();
    let full = Snapshot::build(&w, &projection, &after).unwrap();
    assert_eq!(incremental.digest(), full.digest());
    assert_eq!(
        incremental.enforce_index().len(),
        full.enforce_index().len()
    );
    let services = [
        "shop/web",
        "shop/api",
        "shop/checkout",
        "payments/ledger",
        "payments/gateway",
        "sandbox/scratch",
        "platform/auth",
    ];
    for from in services {
        for to in services {
            let (a, b) = (
                incremental.decide(&connect(from, to)).unwrap(),
                full.decide(&connect(from, to)).unwrap(),
            );
            let ids = |d: &lattice_engine::Decision| {
                (
                    d.allowed,
                    d.determining
                        .iter()
                        .map(|p| p.id.clone())
                        .collect::<Vec<_>>(),
                    d.audit.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
                )
            };
            assert_eq!(ids(&a), ids(&b), "{from} -> {to}");
        }
    }
    // The change took effect: the dev isolation rule now only audits.
    let d = incremental
        .decide(&connect("sandbox/scratch", "shop/web"))
        .unwrap();
    assert!(
        d.allowed
            && d.audit
                .iter()
                .any(|p| p.id == "platform/environment-isolation/no-dev-to-shop")
    );
}

/// Every entity of a snapshot as canonical JSON, sorted by uid.
fn entities_json(s: &Snapshot) -> Vec<String> {
    let mut out: Vec<String> = s
        .entities()
        .iter()
        .map(|e| {
            // Parents are a set: their order is not part of the entity.
            let mut v = e.to_json_value().unwrap();
            if let Some(p) = v["parents"].as_array_mut() {
                p.sort_by_key(|x| x.to_string());
            }
            v.to_string()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_consuming_build_is_the_same_snapshot() {
    let world = world();
    let store = store(&world);
    let built = snapshot(&world, &store);
    let consumed = Snapshot::build_consuming(&world, Projection::of(&world), &store).unwrap();
    assert_eq!(built.digest(), consumed.digest());
    let (a, b) = (entities_json(&built), entities_json(&consumed));
    let differ: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).take(2).collect();
    assert!(a.len() == b.len() && differ.is_empty(), "{differ:?}");
    // Ask something that depends on the entities.
    let q = connect("shop/api", "shop/checkout");
    assert_eq!(
        built.decide(&q).unwrap().allowed,
        consumed.decide(&q).unwrap().allowed
    );
}

/// Whether two snapshots hold the same entities: the same uids, each with the same
/// attributes, tags and (closed) ancestors.
fn same_entities(a: &Snapshot, b: &Snapshot) -> Result<(), String> {
    let (na, nb) = (a.entities().iter().count(), b.entities().iter().count());
    if na != nb {
        return Err(format!("{na} entities against {nb}"));
    }
    for e in b.entities().iter() {
        match a.entities().get(&e.uid()) {
            Some(x) if x.deep_eq(e) => {}
            Some(x) => return Err(format!("{} differs: {x:?} against {e:?}", e.uid())),
            None => return Err(format!("{} is missing", e.uid())),
        }
    }
    Ok(())
}

#[test]
fn a_snapshot_taking_one_workloads_change_holds_what_a_rebuild_holds() {
    let base = world();
    let store = store(&base);
    let projection = Projection::of(&base);
    let before = Snapshot::build(&base, &projection, &store).unwrap();
    let services: Vec<ObjectKey> = base
        .objects()
        .filter(|(_, o)| matches!(o, Object::Service(_)))
        .map(|(k, _)| k.clone())
        .collect();
    let mut taken = 0;
    for key in &services {
        let Some(Object::Service(svc)) = base.get(key).cloned() else {
            unreachable!()
        };
        // Scaled; given a capability (a new override entity); re-imaged; deleted.
        let mut scaled = svc.clone();
        scaled.spec.replicas = Some(scaled.spec.replicas.unwrap_or(1) + 3);
        let mut capable = svc.clone();
        let mut imaged = svc.clone();
        if let Some(c) = capable.spec.workload.containers.values_mut().next() {
            c.security.get_or_insert_with(Default::default).capabilities = vec!["SYS_TIME".into()];
        }
        if let Some(c) = imaged.spec.workload.containers.values_mut().next() {
            c.image = "registry.example.com/fresh/never-seen:1.0".into();
        }
        let edits: [Option<Object>; 4] = [
            Some(Object::Service(scaled)),
            Some(Object::Service(capable)),
            Some(Object::Service(imaged)),
            None,
        ];
        for edit in edits {
            let mut w = base.clone();
            match edit {
                Some(o) => {
                    w.upsert(o);
                }
                None => {
                    w.delete(key);
                }
            }
            let id = format!("{}/{}", key.namespace.as_deref().unwrap(), key.name);
            if before.approval_concerns(key.namespace.as_deref().unwrap(), &id) {
                continue;
            }
            let mut p = projection.clone();
            let Ok(delta) = p.update_workload(&w, key) else {
                continue;
            };
            let incremental = before
                .with_entity_delta(&w, &store, p.live(), delta)
                .unwrap();
            let rebuilt = Snapshot::build(&w, &Projection::of(&w), &store).unwrap();
            if let Err(e) = same_entities(&incremental, &rebuilt) {
                panic!("{key} changed: {e}");
            }
            assert_eq!(incremental.digest(), rebuilt.digest());
            taken += 1;
        }
    }
    assert!(
        taken >= services.len() * 3,
        "most changes are taken in, not refused: {taken} of {}",
        services.len() * 4
    );
}
