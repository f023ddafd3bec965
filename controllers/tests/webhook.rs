//! The admission webhook as the API server meets it: HTTPS with a real certificate, real
//! AdmissionReview JSON, the example world and the real rule packs.

mod support;

use std::time::Duration;

use lattice_controllers::webhook::Limits;
use serde_json::{Value, json};
use support::*;
use tokio::io::AsyncWriteExt;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lattice-webhook-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The response half of an AdmissionReview answer.
fn response(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).expect("an AdmissionReview");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    v["response"].clone()
}

async fn post(c: &mut Client, review: &Value) -> Value {
    let (status, body) = c
        .send("POST", "/validate", serde_json::to_vec(review).unwrap())
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    response(&body)
}

const SECURITY_ADMIN: &str = "lattice:security-admins";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_are_decided_by_the_world_and_its_policies() {
    let dir = tmp("decide");
    let pki = Pki::issue(&dir.join("pki"));
    // An audit-mode policy, so some admission carries a warning.
    std::fs::write(
        dir.join("audit.yaml"),
        serde_yaml_text(&cedar_policy(
            "platform",
            "audit-web",
            "@id(\"web-images\")\n@advice(\"Pin images by digest.\")\nforbid (principal == Lattice::Service::\"shop/api\", action == Lattice::Action::\"DeployImage\", resource);\n",
            "audit",
        )),
    )
    .unwrap();
    let w = start(&pki, Limits::default()).await;
    let mut c = Client::connect(w.addr, client_config(&pki.ca_pem))
        .await
        .unwrap();

    // Not ready until a snapshot is loaded: health is fine, policy decisions are refused.
    assert_eq!(c.send("GET", "/healthz", vec![]).await.0, 200);
    assert_eq!(c.send("GET", "/readyz", vec![]).await.0, 503);
    let early = post(
        &mut c,
        &review(
            "u-0",
            "CREATE",
            Some(example("shop.yaml", "api")),
            None,
            "alice",
            &[],
        ),
    )
    .await;
    assert_eq!(early["allowed"], false);
    assert_eq!(early["status"]["code"], 503);

    load_examples(&w, &[dir.join("audit.yaml")]);
    assert_eq!(c.send("GET", "/readyz", vec![]).await.0, 200);

    // Allowed: an example service, with the server's metadata fields; the uid is echoed and
    // the audit-mode match comes back as a warning.
    let ok = post(
        &mut c,
        &review(
            "u-1",
            "CREATE",
            Some(example("shop.yaml", "api")),
            None,
            "alice",
            &[],
        ),
    )
    .await;
    assert_eq!(ok["uid"], "u-1");
    assert_eq!(ok["allowed"], true, "{ok}");
    let warnings = ok["warnings"].as_array().expect("warnings").clone();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("platform/audit-web/web-images")
            && w.as_str().unwrap().contains("Pin images by digest.")),
        "{warnings:?}"
    );

    // Denied by policy: an image nothing trusts. Each denied gate is named with its advice.
    let mut untrusted = example("shop.yaml", "api");
    untrusted["metadata"]["name"] = json!("rogue");
    untrusted["spec"]["containers"]["api"]["image"] = json!("evil.example.com/miner:latest");
    let denied = post(
        &mut c,
        &review("u-2", "CREATE", Some(untrusted), None, "alice", &[]),
    )
    .await;
    assert_eq!(denied["uid"], "u-2");
    assert_eq!(denied["allowed"], false);
    assert_eq!(denied["status"]["code"], 403);
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(message.contains("DeployImage"), "{message}");
    assert!(
        message.contains("evil.example.com/miner:latest"),
        "{message}"
    );
    assert!(message.contains("Sign the image"), "{message}");

    // An invalid policy: each error with its line and column in the policy text.
    let broken = cedar_policy(
        "shop",
        "broken",
        "@id(\"ok\")\npermit (principal, action == Lattice::Action::\"Connect\", resource);\n@id(\"bad\")\npermit (principal, action == Lattice::Action::\"Conect\", resource);\n",
        "enforce",
    );
    let invalid = post(
        &mut c,
        &review(
            "u-3",
            "CREATE",
            Some(broken),
            None,
            "sec",
            &[SECURITY_ADMIN],
        ),
    )
    .await;
    assert_eq!(invalid["allowed"], false);
    assert_eq!(invalid["status"]["code"], 422);
    let message = invalid["status"]["message"].as_str().unwrap();
    assert!(message.contains("Conect"), "{message}");
    assert!(message.contains("spec.policies:4:"), "{message}");

    // A valid policy: its author needs ManagePolicy on the namespace.
    let good = cedar_policy(
        "shop",
        "no-dev-to-prod",
        "@id(\"no-sandbox\")\nforbid (principal in Lattice::Namespace::\"sandbox\", action == Lattice::Action::\"Connect\", resource);\n",
        "enforce",
    );
    let unauthorized = post(
        &mut c,
        &review(
            "u-4",
            "CREATE",
            Some(good.clone()),
            None,
            "mallory",
            &["developers"],
        ),
    )
    .await;
    assert_eq!(unauthorized["allowed"], false);
    assert_eq!(unauthorized["status"]["code"], 403);
    let message = unauthorized["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("mallory") && message.contains("ManagePolicy"),
        "{message}"
    );
    let authorized = post(
        &mut c,
        &review(
            "u-5",
            "CREATE",
            Some(good.clone()),
            None,
            "sec",
            &[SECURITY_ADMIN],
        ),
    )
    .await;
    assert_eq!(authorized["allowed"], true, "{authorized}");

    // Deleting a policy widens access as surely as adding one.
    let delete = post(
        &mut c,
        &review(
            "u-6",
            "DELETE",
            None,
            Some(good),
            "mallory",
            &["developers"],
        ),
    )
    .await;
    assert_eq!(delete["allowed"], false);
    // Deleting a workload is ManageWorkload with operation DELETE, which the default pack
    // permits outside the platform's own namespaces.
    let gone = post(
        &mut c,
        &review(
            "u-7",
            "DELETE",
            None,
            Some(example("shop.yaml", "api")),
            "alice",
            &[],
        ),
    )
    .await;
    assert_eq!(gone["allowed"], true);

    // Schema and semantic errors in a workload.
    let mut unknown_field = example("shop.yaml", "api");
    unknown_field["spec"]["replicaz"] = json!(3);
    let bad = post(
        &mut c,
        &review(
            "u-8",
            "UPDATE",
            Some(unknown_field),
            Some(example("shop.yaml", "api")),
            "alice",
            &[],
        ),
    )
    .await;
    assert_eq!(bad["allowed"], false);
    assert_eq!(bad["status"]["code"], 422);
    assert!(
        bad["status"]["message"]
            .as_str()
            .unwrap()
            .contains("replicaz")
    );

    // An unknown Lattice kind is refused; a kind of another group is not ours to judge.
    let mut odd = example("shop.yaml", "api");
    odd["kind"] = json!("LatticeGizmo");
    let refused = post(
        &mut c,
        &review("u-9", "CREATE", Some(odd), None, "alice", &[]),
    )
    .await;
    assert_eq!(refused["allowed"], false);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "shop"}});
    let foreign = post(
        &mut c,
        &review("u-10", "CREATE", Some(cm), None, "alice", &[]),
    )
    .await;
    assert_eq!(foreign["allowed"], true);

    // Metrics count reviews by kind and verdict.
    let (status, metrics) = c.send("GET", "/metrics", vec![]).await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(
            "lattice_webhook_reviews_total{kind=\"LatticeService\",verdict=\"denied\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("lattice_webhook_review_duration_seconds_bucket"));
    let _ = std::fs::remove_dir_all(&dir);
}

const PLATFORM_ADMIN: &str = "lattice:platform-admins";

/// A webhook serving the example world, a client of it, and the test's scratch directory.
struct Served {
    dir: std::path::PathBuf,
    w: Webhook,
    c: Client,
}

async fn serve_examples(name: &str) -> Served {
    let dir = tmp(name);
    let pki = Pki::issue(&dir.join("pki"));
    let w = start(&pki, Limits::default()).await;
    let c = Client::connect(w.addr, client_config(&pki.ca_pem))
        .await
        .unwrap();
    load_examples(&w, &[]);
    Served { dir, w, c }
}

/// On a child cluster, a policy inherited from its parent (labelled
/// `lattice.dev/inherited-from`) is written only by the child's agent: a security
/// administrator may not edit it, delete it, strip its label or forge one, and the agent
/// may write nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inherited_policies_are_read_only_except_to_the_agent() {
    let Served {
        dir, w: _w, mut c, ..
    } = serve_examples("inherited").await;
    const AGENT: &str = "system:serviceaccount:lattice-system:lattice-agent";
    let local = example("policies.yaml", "image-hygiene");
    let mut inherited = local.clone();
    inherited["metadata"]["labels"] = json!({"lattice.dev/inherited-from": "root"});
    let decide = |uid: &str, op: &str, new: Option<&Value>, old: Option<&Value>, user: &str| {
        review(
            uid,
            op,
            new.cloned(),
            old.cloned(),
            user,
            if user == AGENT {
                &["system:serviceaccounts"]
            } else {
                &[SECURITY_ADMIN]
            },
        )
    };
    let cases = [
        (
            "an admin edits it",
            "UPDATE",
            Some(&inherited),
            Some(&inherited),
            "sam",
            false,
        ),
        (
            "an admin deletes it",
            "DELETE",
            None,
            Some(&inherited),
            "sam",
            false,
        ),
        (
            "an admin strips the label",
            "UPDATE",
            Some(&local),
            Some(&inherited),
            "sam",
            false,
        ),
        (
            "an admin forges one",
            "CREATE",
            Some(&inherited),
            None,
            "sam",
            false,
        ),
        (
            "the agent writes it",
            "CREATE",
            Some(&inherited),
            None,
            AGENT,
            true,
        ),
        (
            "the agent updates it",
            "UPDATE",
            Some(&inherited),
            Some(&inherited),
            AGENT,
            true,
        ),
        (
            "the agent withdraws it",
            "DELETE",
            None,
            Some(&inherited),
            AGENT,
            true,
        ),
        (
            "the agent writes a local policy",
            "CREATE",
            Some(&local),
            None,
            AGENT,
            false,
        ),
        (
            "an admin writes a local policy",
            "CREATE",
            Some(&local),
            None,
            "sam",
            true,
        ),
    ];
    for (i, (what, op, new, old, user, allowed)) in cases.into_iter().enumerate() {
        let answer = post(&mut c, &decide(&format!("i-{i}"), op, new, old, user)).await;
        assert_eq!(answer["allowed"], allowed, "{what}: {answer}");
        if !allowed && user != AGENT {
            let m = answer["status"]["message"].as_str().unwrap_or_default();
            assert!(
                m.contains("inherited-policies-are-read-only") && m.contains("on the parent"),
                "{what}: the deciding policy and its advice: {m}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The TrustPolicy and SecretProvider objects a parent distributes are read-only on the
/// child as its policies are: a platform administrator may not edit, delete, unlabel or
/// forge one, and the agent may write only inherited ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inherited_trust_and_secret_providers_are_read_only_except_to_the_agent() {
    let Served {
        dir, w: _w, mut c, ..
    } = serve_examples("inherited-platform").await;
    const AGENT: &str = "system:serviceaccount:lattice-system:lattice-agent";
    for (n, name) in ["image-trust", "vault-prod", "corporate-sso"]
        .into_iter()
        .enumerate()
    {
        let local = example("infrastructure.yaml", name);
        let mut inherited = local.clone();
        inherited["metadata"]["labels"] = json!({"lattice.dev/inherited-from": "root"});
        let cases = [
            (
                "an admin edits it",
                "UPDATE",
                Some(&inherited),
                Some(&inherited),
                "pat",
                false,
            ),
            (
                "an admin deletes it",
                "DELETE",
                None,
                Some(&inherited),
                "pat",
                false,
            ),
            (
                "an admin strips the label",
                "UPDATE",
                Some(&local),
                Some(&inherited),
                "pat",
                false,
            ),
            (
                "an admin forges one",
                "CREATE",
                Some(&inherited),
                None,
                "pat",
                false,
            ),
            (
                "the agent writes it",
                "CREATE",
                Some(&inherited),
                None,
                AGENT,
                true,
            ),
            (
                "the agent withdraws it",
                "DELETE",
                None,
                Some(&inherited),
                AGENT,
                true,
            ),
            (
                "the agent writes a local one",
                "CREATE",
                Some(&local),
                None,
                AGENT,
                false,
            ),
            (
                "an admin writes a local one",
                "CREATE",
                Some(&local),
                None,
                "pat",
                true,
            ),
        ];
        for (i, (what, op, new, old, user, allowed)) in cases.into_iter().enumerate() {
            let groups: &[&str] = if user == AGENT {
                &["system:serviceaccounts"]
            } else {
                &[PLATFORM_ADMIN]
            };
            let asked = review(
                &format!("p-{n}-{i}"),
                op,
                new.cloned(),
                old.cloned(),
                user,
                groups,
            );
            let answer = post(&mut c, &asked).await;
            assert_eq!(answer["allowed"], allowed, "{name}: {what}: {answer}");
            if !allowed && user != AGENT {
                let m = answer["status"]["message"].as_str().unwrap_or_default();
                assert!(
                    m.contains("inherited-platform-objects-are-read-only")
                        && m.contains("on the parent"),
                    "{name}: {what}: the deciding policy and its advice: {m}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// An identity provider a parent distributed with `allowChildOverride: false` is the only
/// one: a platform administrator of the child may not add another (nor, by renaming, the
/// same issuer), and may still remove one the child had. With overrides allowed, adding
/// one is an ordinary platform write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inherited_identity_provider_can_forbid_the_child_its_own() {
    const AGENT: &str = "system:serviceaccount:lattice-system:lattice-agent";
    let dir = tmp("sealed-idp");
    let pki = Pki::issue(&dir.join("pki"));
    let w = start(&pki, Limits::default()).await;
    let mut c = Client::connect(w.addr, client_config(&pki.ca_pem))
        .await
        .unwrap();
    let mut local = example("infrastructure.yaml", "corporate-sso");
    local["metadata"]["name"] = json!("team-sso");
    local["spec"]["issuerUrl"] = json!("https://team.example.com");
    for (allow, allowed) in [(false, false), (true, true)] {
        let mut inherited = example("infrastructure.yaml", "corporate-sso");
        inherited["metadata"]["name"] = json!("root-sso");
        inherited["metadata"]["labels"] = json!({"lattice.dev/inherited-from": "root"});
        inherited["spec"]["allowChildOverride"] = json!(allow);
        let world = dir.join(format!("inherited-{allow}"));
        std::fs::create_dir_all(&world).unwrap();
        std::fs::write(
            world.join("idp.yaml"),
            serde_json::to_string(&inherited).unwrap(),
        )
        .unwrap();
        load_examples(&w, &[world]);
        for (i, (op, new, old, expect)) in [
            ("CREATE", Some(&local), None, allowed),
            ("UPDATE", Some(&local), Some(&local), allowed),
            ("DELETE", None, Some(&local), true),
        ]
        .into_iter()
        .enumerate()
        {
            let asked = review(
                &format!("s-{allow}-{i}"),
                op,
                new.cloned(),
                old.cloned(),
                "pat",
                &[PLATFORM_ADMIN],
            );
            let answer = post(&mut c, &asked).await;
            assert_eq!(
                answer["allowed"], expect,
                "allowChildOverride {allow}: {op}: {answer}"
            );
            if !expect {
                let m = answer["status"]["message"].as_str().unwrap_or_default();
                assert!(
                    m.contains("inherited-identity-provider-is-the-only-one")
                        && m.contains("allowChildOverride: false"),
                    "{m}"
                );
            }
        }
    }
    // One provider per issuer: a second local one for the example's issuer is refused; the
    // agent's write of the parent's (which has it too) is not.
    let mut second = example("infrastructure.yaml", "corporate-sso");
    second["metadata"]["name"] = json!("sso-again");
    let mut root_sso = example("infrastructure.yaml", "corporate-sso");
    root_sso["metadata"]["name"] = json!("root-sso");
    root_sso["metadata"]["labels"] = json!({"lattice.dev/inherited-from": "root"});
    root_sso["spec"]["allowChildOverride"] = json!(true);
    for (uid, object, user, groups, allowed) in [
        ("i-1", &second, "pat", &[PLATFORM_ADMIN][..], false),
        (
            "i-2",
            &root_sso,
            AGENT,
            &["system:serviceaccounts"][..],
            true,
        ),
    ] {
        let asked = review(
            uid,
            "UPDATE",
            Some(object.clone()),
            Some(object.clone()),
            user,
            groups,
        );
        let answer = post(&mut c, &asked).await;
        assert_eq!(answer["allowed"], allowed, "{uid}: {answer}");
        if !allowed {
            let m = answer["status"]["message"].as_str().unwrap_or_default();
            assert!(m.contains("one-identity-provider-per-issuer"), "{m}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Every write of every Lattice kind is a Cedar question, denied by default with the
/// deciding policy's advice: platform kinds for platform administrators, a LatticeCluster
/// delete as `Decommission`, workloads outside the platform's namespaces, and a delete whose
/// stored object cannot be read is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lattice_write_is_a_cedar_question() {
    let Served {
        dir, w: _w, mut c, ..
    } = serve_examples("writes").await;
    let ask = |uid: &str,
               op: &str,
               object: Option<Value>,
               old: Option<Value>,
               user: &str,
               groups: &[&str]| { review(uid, op, object, old, user, groups) };
    let message = |v: &Value| {
        v["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    // A TrustPolicy decides which images count as signed: alice may not write one, and is
    // told why and whom to ask; a platform administrator may.
    for (i, op) in ["CREATE", "UPDATE", "DELETE"].into_iter().enumerate() {
        let trust = example("infrastructure.yaml", "image-trust");
        let (object, old) = match op {
            "CREATE" => (Some(trust), None),
            "UPDATE" => (Some(trust.clone()), Some(trust)),
            _ => (None, Some(trust)),
        };
        let denied = post(
            &mut c,
            &ask(
                &format!("t-{i}"),
                op,
                object.clone(),
                old.clone(),
                "alice",
                &["developers"],
            ),
        )
        .await;
        assert_eq!(denied["allowed"], false, "{op}: {denied}");
        assert_eq!(denied["status"]["code"], 403);
        let m = message(&denied);
        assert!(m.contains("ManageTrust") && m.contains("alice"), "{m}");
        assert!(
            m.contains("lattice:platform-admins"),
            "the advice names who may: {m}"
        );
        let allowed = post(
            &mut c,
            &ask(
                &format!("ta-{i}"),
                op,
                object,
                old,
                "pat",
                &[PLATFORM_ADMIN],
            ),
        )
        .await;
        assert_eq!(allowed["allowed"], true, "{op}: {allowed}");
    }

    // The other platform kinds ask their own question.
    for (file, name, action) in [
        ("infrastructure.yaml", "vault-prod", "ManageSecretProvider"),
        ("infrastructure.yaml", "ghcr", "ManageImageProvider"),
        (
            "infrastructure.yaml",
            "corporate-sso",
            "ManageIdentityProvider",
        ),
        ("infrastructure.yaml", "aws-prod", "ManageInfrastructure"),
        ("infrastructure.yaml", "production", "ManageInfrastructure"),
        (
            "infrastructure.yaml",
            "production-baseline",
            "ManageComplianceProfile",
        ),
        ("infrastructure.yaml", "ml-gpus", "ManageQuota"),
        ("infrastructure.yaml", "nightly", "ManageBackup"),
        (
            "infrastructure.yaml",
            "letsencrypt-prod",
            "ManageCertIssuer",
        ),
        ("infrastructure.yaml", "example-com", "ManageDnsProvider"),
    ] {
        let o = example(file, name);
        let denied = post(
            &mut c,
            &ask(
                "p-1",
                "UPDATE",
                Some(o.clone()),
                Some(o.clone()),
                "alice",
                &[],
            ),
        )
        .await;
        assert_eq!(denied["allowed"], false, "{name}: {denied}");
        assert!(
            message(&denied).contains(action),
            "{name}: {}",
            message(&denied)
        );
        let allowed = post(
            &mut c,
            &ask(
                "p-2",
                "UPDATE",
                Some(o.clone()),
                Some(o),
                "pat",
                &[PLATFORM_ADMIN],
            ),
        )
        .await;
        assert_eq!(allowed["allowed"], true, "{name}: {allowed}");
    }

    // Deleting a LatticeCluster is Decommission: refused for alice, and for a platform
    // administrator too while the cluster still runs the world's workloads.
    let cluster = example("infrastructure.yaml", "production");
    let denied = post(
        &mut c,
        &ask("d-1", "DELETE", None, Some(cluster.clone()), "alice", &[]),
    )
    .await;
    assert_eq!(denied["allowed"], false);
    assert!(
        message(&denied).contains("Decommission"),
        "{}",
        message(&denied)
    );
    let busy = post(
        &mut c,
        &ask(
            "d-2",
            "DELETE",
            None,
            Some(cluster.clone()),
            "pat",
            &[PLATFORM_ADMIN],
        ),
    )
    .await;
    assert_eq!(busy["allowed"], false, "{busy}");
    assert!(
        message(&busy).contains("decommission-only-empty")
            && message(&busy).contains("Move or delete the cluster's workloads first"),
        "{}",
        message(&busy)
    );
    // A cluster the world runs nothing on (a declared child with no children) may go.
    let mut child = cluster.clone();
    child["metadata"]["name"] = json!("edge-7");
    child["spec"]["parent"] = json!("production");
    let empty = post(
        &mut c,
        &ask("d-3", "DELETE", None, Some(child), "pat", &[PLATFORM_ADMIN]),
    )
    .await;
    assert_eq!(empty["allowed"], true, "{empty}");

    // Workloads are written outside the platform's own namespaces.
    let mut sneaky = example("shop.yaml", "api");
    sneaky["metadata"]["namespace"] = json!("lattice-system");
    let refused = post(
        &mut c,
        &ask("w-1", "CREATE", Some(sneaky.clone()), None, "alice", &[]),
    )
    .await;
    assert_eq!(refused["allowed"], false, "{refused}");
    let m = message(&refused);
    assert!(
        m.contains("ManageWorkload") && m.contains("deploy into your team's namespace"),
        "{m}"
    );
    let removal = post(
        &mut c,
        &ask("w-2", "DELETE", None, Some(sneaky), "alice", &[]),
    )
    .await;
    assert_eq!(removal["allowed"], false, "{removal}");

    // A delete is decided on the stored object; one that cannot be read is refused.
    let mut unreadable = example("infrastructure.yaml", "image-trust");
    unreadable["spec"]["registries"] = json!("not a list");
    let refused = post(
        &mut c,
        &ask(
            "u-1",
            "DELETE",
            None,
            Some(unreadable),
            "pat",
            &[PLATFORM_ADMIN],
        ),
    )
    .await;
    assert_eq!(refused["allowed"], false, "{refused}");
    assert!(
        message(&refused).contains("cannot be read"),
        "{}",
        message(&refused)
    );
    let mut unreadable = cedar_policy(
        "shop",
        "p",
        "@id(\"x\")\nforbid (principal, action, resource);\n",
        "enforce",
    );
    unreadable["spec"]["mode"] = json!(7);
    let refused = post(
        &mut c,
        &ask(
            "u-2",
            "DELETE",
            None,
            Some(unreadable),
            "sec",
            &[SECURITY_ADMIN],
        ),
    )
    .await;
    assert_eq!(
        refused["allowed"], false,
        "an unreadable policy is not deleted as if it held nothing: {refused}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `bytes` on a fresh TLS connection and reads what comes back until the server
/// closes it (or 5 s pass).
async fn raw(
    w: &Webhook,
    config: &std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    bytes: &[u8],
) -> String {
    use tokio::io::AsyncReadExt;
    let tcp = tokio::net::TcpStream::connect(w.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(
            tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let _ = tls.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn serde_yaml_text(v: &Value) -> String {
    lattice_schemas::generate::to_yaml(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_refusal_and_changes_nothing() {
    let dir = tmp("bad");
    let pki = Pki::issue(&dir.join("pki"));
    let limits = Limits {
        body: Duration::from_millis(500),
        headers: Duration::from_millis(500),
        ..Limits::default()
    };
    let w = start(&pki, limits).await;
    load_examples(&w, &[]);
    let config = client_config(&pki.ca_pem);
    let mut c = Client::connect(w.addr, config.clone()).await.unwrap();

    let good = review(
        "u-1",
        "CREATE",
        Some(example("shop.yaml", "api")),
        None,
        "alice",
        &[],
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"{\"apiVersion\": ".to_vec(), "malformed"),
        ("not an object", b"[1, 2]".to_vec(), "malformed"),
        (
            "v1beta1",
            {
                let mut r = good.clone();
                r["apiVersion"] = json!("admission.k8s.io/v1beta1");
                serde_json::to_vec(&r).unwrap()
            },
            "apiVersion",
        ),
        (
            "wrong kind",
            {
                let mut r = good.clone();
                r["kind"] = json!("TokenReview");
                serde_json::to_vec(&r).unwrap()
            },
            "kind",
        ),
        (
            "no request",
            {
                let mut r = good.clone();
                r.as_object_mut().unwrap().remove("request");
                serde_json::to_vec(&r).unwrap()
            },
            "no `request`",
        ),
        (
            "request of the wrong shape",
            {
                let mut r = good.clone();
                r["request"]["operation"] = json!("EXPLODE");
                serde_json::to_vec(&r).unwrap()
            },
            "malformed",
        ),
    ];
    for (what, body, expect) in cases {
        let (status, text) = c.send("POST", "/validate", body).await;
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, 400, "{what}: {text}");
        assert!(text.contains(expect), "{what}: {text}");
    }

    // An object that is not what `kind` says: a denial that still echoes the uid.
    let mut liar = good.clone();
    liar["request"]["kind"]["kind"] = json!("CedarPolicy");
    let r = post(&mut c, &liar).await;
    assert_eq!(r["uid"], "u-1");
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 400);

    // Too large: refused from the declared length, before reading a byte of it.
    let answer = raw(
        &w,
        &config,
        b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 3145729\r\n\r\n{",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // And when no length is declared, once the limit is passed.
    let mut chunked =
        b"POST /validate HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..4 {
        chunked.extend_from_slice(format!("{:x}\r\n", 1024 * 1024).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 1024 * 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    let answer = raw(&w, &config, &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Wrong method, unknown path.
    let mut c = Client::connect(w.addr, config.clone()).await.unwrap();
    assert_eq!(c.send("GET", "/validate", vec![]).await.0, 405);
    assert_eq!(c.send("GET", "/nope", vec![]).await.0, 404);

    // A client that promises a body and stalls is answered 408 and cut off, not waited on.
    let tcp = tokio::net::TcpStream::connect(w.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(
            tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(
        b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\n{\"apiVersion\"",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let _ = tls.read_to_end(&mut answer).await;
    })
    .await;
    assert!(read.is_ok(), "the server waited on a stalled client");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // Headers that never finish: the connection is closed.
    let tcp = tokio::net::TcpStream::connect(w.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(
            tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(b"POST /validate HTTP/1.1\r\nhost: loc")
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let _ = tls.read_to_end(&mut buf).await;
    })
    .await;
    assert!(closed.is_ok(), "the server waited on stalled headers");

    // A client that is not TLS at all is dropped at the handshake, never answered in HTTP.
    let mut plain = tokio::net::TcpStream::connect(w.addr).await.unwrap();
    plain
        .write_all(b"POST /validate HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut back = Vec::new();
    let dropped = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let _ = plain.read_to_end(&mut back).await;
    })
    .await;
    assert!(dropped.is_ok(), "a plain-text client was kept open");
    assert!(
        !String::from_utf8_lossy(&back).contains("HTTP/1.1"),
        "a plain-text client got an HTTP answer"
    );

    // A LatticeCluster that cannot be provisioned is refused at admission, saying why, even
    // for a platform administrator.
    let mut c = Client::connect(w.addr, config).await.unwrap();
    for (case, expect) in [
        (
            "cluster-no-provider",
            "provider config needs exactly one of aws, proxmox, openstack or docker (has 0)",
        ),
        ("cluster-unknown-provider", "unknown field `gcp`"),
        (
            "cluster-pool-min-above-max",
            "pool `gpu`: `min` 4 is above `max` 1",
        ),
        (
            "cluster-proxmox-bad-addresses",
            "is not in the gateway 10.20.0.1's network",
        ),
    ] {
        let text = std::fs::read_to_string(
            lattice_testkit::workspace_root().join(format!("conformance/validate/{case}.yaml")),
        )
        .unwrap();
        let (docs, _) = lattice_schemas::manifest::yaml::parse_documents(&text);
        let r = post(
            &mut c,
            &review(
                "u-cluster",
                "CREATE",
                Some(docs[0].value.clone()),
                None,
                "pat",
                &["lattice:platform-admins"],
            ),
        )
        .await;
        assert_eq!(r["allowed"], false, "{case}: {r}");
        let message = r["status"]["message"].as_str().unwrap();
        assert!(message.contains(expect), "{case}: {message}");
    }

    // And the server is still up and deciding.
    let ok = post(&mut c, &good).await;
    assert_eq!(ok["allowed"], true);
    let metrics = String::from_utf8(c.send("GET", "/metrics", vec![]).await.1).unwrap();
    assert!(metrics.contains("reason=\"stalled\""), "{metrics}");
    assert!(metrics.contains("reason=\"too-large\""), "{metrics}");
    assert!(metrics.contains("reason=\"tls\""), "{metrics}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tmp("reload");
    let first = Pki::issue(&dir.join("pki"));
    let w = start(&first, Limits::default()).await;
    let _watcher = w.certs.watch().unwrap();
    assert!(
        Client::connect(w.addr, client_config(&first.ca_pem))
            .await
            .is_ok()
    );

    // Other files beside the certificate (a log written in a loop) never cause a reload.
    let log = first.cert.parent().unwrap().join("webhook.log");
    for i in 0..2_000 {
        std::fs::write(&log, format!("line {i}\n")).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        Client::connect(w.addr, client_config(&first.ca_pem))
            .await
            .is_ok()
    );
    assert_eq!(
        w.certs.reloads(),
        0,
        "a log file beside the certificate reloaded it"
    );

    // A broken renewal is refused and the old certificate stays.
    std::fs::write(&first.cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        Client::connect(w.addr, client_config(&first.ca_pem))
            .await
            .is_ok()
    );

    // A new CA and certificate, written over the same files.
    let second = Pki::issue(&dir.join("pki"));
    let trusts_second = client_config(&second.ca_pem);
    let mut served = false;
    for _ in 0..50 {
        if Client::connect(w.addr, trusts_second.clone()).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the renewed certificate was never served");
    assert!(
        w.certs.reloads() <= 6,
        "a burst of writes is a reload or two, not one per event: {}",
        w.certs.reloads()
    );
    assert!(
        Client::connect(w.addr, client_config(&first.ca_pem))
            .await
            .is_err(),
        "the old certificate is still served"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The 361-byte CedarPolicy that once aborted the webhook (parentheses 150 deep) is refused
/// with a diagnostic and the server answers on; reviews of made-up kinds never grow the
/// metrics past a closed set of labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_policy_or_kind_never_takes_the_webhook_down() {
    let Served {
        dir, w: _w, mut c, ..
    } = serve_examples("hostile").await;
    let text = format!(
        "@id(\"x\")\npermit (principal, action, resource) when {{ {}true{} }};\n",
        "(".repeat(150),
        ")".repeat(150)
    );
    let deep = cedar_policy("shop", "deep", &text, "enforce");
    for (i, user) in [("anyone", vec![]), ("sec", vec![SECURITY_ADMIN])]
        .into_iter()
        .enumerate()
    {
        let answer = post(
            &mut c,
            &review(
                &format!("h-{i}"),
                "CREATE",
                Some(deep.clone()),
                None,
                user.0,
                &user.1,
            ),
        )
        .await;
        assert_eq!(answer["allowed"], false);
        assert_eq!(answer["status"]["code"], 422, "{answer}");
        let message = answer["status"]["message"].as_str().unwrap();
        assert!(message.contains("levels deep"), "{message}");
    }
    let started = std::time::Instant::now();
    assert_eq!(c.send("GET", "/readyz", vec![]).await.0, 200);
    assert!(started.elapsed() < Duration::from_millis(100));

    // Forty made-up kinds, half a megabyte each: one `other` label, not forty.
    for i in 0..40 {
        let mut odd = example("shop.yaml", "api");
        odd["kind"] = json!(format!("Kind{i}{}", "x".repeat(512 * 1024)));
        let _ = post(
            &mut c,
            &review("k", "CREATE", Some(odd), None, "alice", &[]),
        )
        .await;
    }
    let (_, metrics) = c.send("GET", "/metrics", vec![]).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.len() < 64 * 1024,
        "metrics grew to {} bytes",
        metrics.len()
    );
    assert!(!metrics.contains("Kind1"), "a client's kind became a label");
    assert!(metrics.contains("kind=\"other\""), "{metrics}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 590 KB LatticeService with 40,000 unknown fields once took 29 s of CPU: findings are
/// now located once per file and capped per object, and the denial is plain and bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_thousand_unknown_fields_are_refused_quickly_and_briefly() {
    let Served {
        dir, w: _w, mut c, ..
    } = serve_examples("fields").await;
    let mut svc = example("shop.yaml", "api");
    for i in 0..40_000 {
        svc["spec"][format!("unknownField{i}")] = json!(i);
    }
    let body = serde_json::to_vec(&review("f-1", "CREATE", Some(svc), None, "alice", &[])).unwrap();
    assert!(body.len() > 500_000, "{} bytes", body.len());
    let started = std::time::Instant::now();
    let (status, answer) = c.send("POST", "/validate", body).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    let answer = response(&answer);
    assert_eq!(answer["allowed"], false);
    assert_eq!(answer["status"]["code"], 422);
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(message.len() <= 17 * 1024, "{} bytes", message.len());
    assert!(message.contains("more"), "the rest are counted: {message}");
    // A debug build on two shared cores; the release figure is in the README.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    eprintln!("40,000 unknown fields refused in {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Many clients that each send a body of 3 MiB less one byte and stall once drove the
/// webhook to 650 MB. Connections are capped and bodies reserve their bytes before they are
/// read, so memory stays bounded and health answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_large_bodies_cannot_exhaust_memory() {
    let dir = tmp("stalls");
    let pki = Pki::issue(&dir.join("pki"));
    let limits = Limits {
        body: Duration::from_secs(20),
        ..Limits::default()
    };
    let w = start(&pki, limits).await;
    load_examples(&w, &[]);
    let config = client_config(&pki.ca_pem);
    let before = rss_bytes();
    let size = lattice_controllers::webhook::review::MAX_BODY;
    let chunk = std::sync::Arc::new(vec![b'x'; size - 1]);
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let config = config.clone();
        let chunk = chunk.clone();
        let addr = w.addr;
        stalled.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect(
                    tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .unwrap();
            let head = format!(
                "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
            );
            let _ = tls.write_all(head.as_bytes()).await;
            // All but the last byte, then nothing: the body never completes.
            let _ = tokio::time::timeout(Duration::from_secs(15), tls.write_all(&chunk)).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tls);
        }));
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let grown = rss_bytes().saturating_sub(before);
    // Health answers while they stall.
    let mut c = Client::connect(w.addr, config.clone()).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(c.send("GET", "/readyz", vec![]).await.0, 200);
    let probe = started.elapsed();
    for s in stalled {
        s.abort();
    }
    eprintln!(
        "100 stalled 3 MiB bodies: RSS grew {} MiB; /readyz in {probe:?}",
        grown >> 20
    );
    // The client's own 3 MiB buffer and TLS state are in this process too.
    assert!(grown < 160 << 20, "RSS grew {} MiB", grown >> 20);
    assert!(probe < Duration::from_millis(500), "/readyz took {probe:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What arrives as JSON is read as JSON: no value goes through YAML's plain-scalar rules on
/// the way (a JSON → YAML → JSON round trip once turned the name "0o17" into 15, renamed a
/// label key, and broke file content starting with a space).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_values_are_read_as_they_arrived() {
    let Served {
        dir, w: _w, mut c, ..
    } = serve_examples("json").await;
    let mut svc = example("shop.yaml", "api");
    svc["metadata"]["name"] = json!("o017");
    svc["metadata"]["labels"] = json!({"0o17": "yes", "n": "010"});
    svc["spec"]["containers"]["api"]["files"] =
        json!({"/etc/motd": {"content": "  indented first line\nsecond"}});
    let answer = post(
        &mut c,
        &review("j-1", "CREATE", Some(svc), None, "alice", &[]),
    )
    .await;
    assert_eq!(answer["allowed"], true, "{answer}");
    let mut named = example("shop.yaml", "api");
    named["metadata"]["name"] = json!("0o17");
    let answer = post(
        &mut c,
        &review("j-2", "CREATE", Some(named), None, "alice", &[]),
    )
    .await;
    // Refused for what it is (not a DNS-1035 name), never as the number 15.
    let message = answer["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("`0o17`"), "{answer}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn pod(namespace: &str, name: &str, security: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0", "securityContext": security}]}
    })
}

fn restricted() -> Value {
    json!({
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

/// Objects that carry a pod are decided under their namespace's Pod Security Standards, the
/// way Pod Security Admission decides them: enforce refuses with the check and its advice,
/// warn and audit admit with warnings and audit annotations, a template only warns unless
/// its namespace asks to refuse it, and kube-system is exempt by a permit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_decided_under_their_namespaces_pod_security_standards() {
    let dir = tmp("pss");
    let pki = Pki::issue(&dir.join("pki"));
    let namespaces = [
        (
            "strict",
            json!({"pod-security.kubernetes.io/enforce": "restricted"}),
        ),
        (
            "lenient",
            json!({"pod-security.kubernetes.io/enforce": "privileged", "pod-security.kubernetes.io/warn": "restricted"}),
        ),
        (
            "audited",
            json!({"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/audit": "restricted"}),
        ),
        (
            "templates",
            json!({"pod-security.kubernetes.io/enforce": "baseline", "lattice.dev/pod-security-templates": "enforce"}),
        ),
        ("kube-system", json!({})),
    ];
    let text: String = namespaces
        .iter()
        .map(|(n, labels)| {
            serde_yaml_text(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels}}))
                + "---\n"
        })
        .collect();
    std::fs::write(dir.join("namespaces.yaml"), text).unwrap();
    let w = start(&pki, Limits::default()).await;
    let mut c = Client::connect(w.addr, client_config(&pki.ca_pem))
        .await
        .unwrap();
    load_examples(&w, &[dir.join("namespaces.yaml")]);
    let privileged = json!({"privileged": true});

    // Enforce: refused with the check, the policy's title and its advice.
    let r = post(
        &mut c,
        &review(
            "p-1",
            "CREATE",
            Some(pod("strict", "root", privileged.clone())),
            None,
            "alice",
            &[],
        ),
    )
    .await;
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(r["status"]["code"], 403);
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("violates PodSecurity \"restricted:latest\""),
        "{message}"
    );
    assert!(
        message.contains("privileged (Privileged containers): container \"app\""),
        "{message}"
    );
    assert!(
        message.contains("Remove `securityContext.privileged: true`"),
        "{message}"
    );

    // The same namespace admits a pod that meets the standard.
    let r = post(
        &mut c,
        &review(
            "p-2",
            "CREATE",
            Some(pod("strict", "ok", restricted())),
            None,
            "alice",
            &[],
        ),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(r.get("warnings").is_none_or(Value::is_null), "{r}");

    // Warn: admitted, with the violation as a warning.
    let r = post(
        &mut c,
        &review(
            "p-3",
            "CREATE",
            Some(pod("lenient", "root", privileged.clone())),
            None,
            "alice",
            &[],
        ),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("would violate PodSecurity \\\"restricted:latest\\\""),
        "{warnings}"
    );

    // Audit: baseline is met, restricted is not: admitted, annotated for the audit log.
    let r = post(
        &mut c,
        &review(
            "p-4",
            "CREATE",
            Some(pod("audited", "plain", json!({}))),
            None,
            "alice",
            &[],
        ),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");
    let audit = r["auditAnnotations"]["audit-violations"]
        .as_str()
        .unwrap_or_default();
    assert!(
        audit.contains("restricted:latest") && audit.contains("runAsNonRoot"),
        "{r}"
    );

    // A Deployment whose template breaks baseline: warned where templates are only warned
    // about, refused where the namespace asks.
    let deployment = |ns: &str| {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "agent", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"hostPID": true, "containers": [{"name": "agent", "image": "registry.example/agent:1"}]}
            }}
        })
    };
    let r = post(
        &mut c,
        &review(
            "d-1",
            "CREATE",
            Some(deployment("audited")),
            None,
            "alice",
            &[],
        ),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(r["warnings"].to_string().contains("hostNamespaces"), "{r}");
    let r = post(
        &mut c,
        &review(
            "d-2",
            "CREATE",
            Some(deployment("templates")),
            None,
            "alice",
            &[],
        ),
    )
    .await;
    assert_eq!(r["allowed"], false, "{r}");
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("hostNamespaces"),
        "{r}"
    );

    // kube-system is exempt by a permit, which the audit annotation names.
    let r = post(
        &mut c,
        &review(
            "p-5",
            "CREATE",
            Some(pod("kube-system", "proxy", privileged.clone())),
            None,
            "system:serviceaccount:kube-system:x",
            &[],
        ),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(
        r["auditAnnotations"]["exempt"], "pod-security/exempt-kube-system",
        "{r}"
    );

    // A template that cannot be read is refused, not guessed at.
    let mut broken = deployment("audited");
    broken["spec"]["template"]["spec"]["containers"] = json!("not a list");
    let r = post(
        &mut c,
        &review("d-3", "CREATE", Some(broken), None, "alice", &[]),
    )
    .await;
    assert_eq!(r["allowed"], false, "{r}");
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be decided"),
        "{r}"
    );

    // A label update of a running pod is not asked again; deletes and other kinds pass.
    let old = pod("strict", "root", privileged.clone());
    let mut relabelled = old.clone();
    relabelled["metadata"]["labels"] = json!({"tier": "web"});
    let r = post(
        &mut c,
        &review(
            "p-6",
            "UPDATE",
            Some(relabelled),
            Some(old.clone()),
            "alice",
            &[],
        ),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");
    let r = post(
        &mut c,
        &review("p-7", "DELETE", None, Some(old), "alice", &[]),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");
}

/// RBAC and Services are asked `AdmitKubernetes` on the same snapshot: cluster-admin for
/// anonymous users and a Service that claims external IPs are refused with the forbid's
/// advice; a narrow binding, a plain Service and a deletion are admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_and_services_are_decided_and_what_must_never_exist_is_refused() {
    let dir = tmp("rbac");
    let pki = Pki::issue(&dir.join("pki"));
    let w = start(&pki, Limits::default()).await;
    let mut c = Client::connect(w.addr, client_config(&pki.ca_pem))
        .await
        .unwrap();
    load_examples(&w, &[]);
    let anonymous = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "anonymous-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "system:anonymous", "apiGroup": "rbac.authorization.k8s.io"}]});
    let r = post(
        &mut c,
        &review("r-1", "CREATE", Some(anonymous.clone()), None, "alice", &[]),
    )
    .await;
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(r["status"]["code"], 403);
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "ClusterRoleBinding anonymous-admin: refused by baseline/no-anonymous-access"
        ),
        "{message}"
    );
    // Deleting it is always allowed: removing a grant never widens one.
    let r = post(
        &mut c,
        &review("r-2", "DELETE", None, Some(anonymous), "alice", &[]),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");

    let exposed = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"externalIPs": ["203.0.113.9"], "ports": [{"port": 80}]}});
    let r = post(
        &mut c,
        &review("r-3", "CREATE", Some(exposed), None, "alice", &[]),
    )
    .await;
    assert_eq!(r["allowed"], false, "{r}");
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("CVE-2020-8554"),
        "{r}"
    );
    // Another project's kind of the same name is not Kubernetes' Service.
    let knative = json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"externalIPs": ["203.0.113.9"]}});
    let r = post(
        &mut c,
        &review("r-3b", "CREATE", Some(knative), None, "alice", &[]),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");
    let plain = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"}, "spec": {"ports": [{"port": 80}]}});
    let r = post(
        &mut c,
        &review("r-4", "CREATE", Some(plain), None, "alice", &[]),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");
    let narrow = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "readers", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "Group", "name": "shop-team", "apiGroup": "rbac.authorization.k8s.io"}]});
    let r = post(
        &mut c,
        &review(
            "r-5",
            "UPDATE",
            Some(narrow.clone()),
            Some(narrow),
            "alice",
            &[],
        ),
    )
    .await;
    assert_eq!(r["allowed"], true, "{r}");
}

/// With `--prove-policy-changes`, an admitted CedarPolicy write carries a proof, as a warning
/// `kubectl apply` prints: a write that changes nothing is proved to permit nothing new, one
/// that turns a forbid off is refuted with the request it newly permits. The proof decides
/// nothing: a refused write gets none, and one past the budget is admitted with a note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_policy_writes_carry_a_proof_when_asked() {
    use lattice_controllers::webhook::proof::PolicyProofs;
    let Served { dir, w, mut c } = serve_examples("proofs").await;
    let solver = lattice_prove::solver::find(None)
        .expect("cvc5: install it with tools/cvc5/install DIR and set CVC5");
    let proofs = |v: &Value| -> Vec<String> {
        v["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str())
            .filter(|w| {
                ["lattice: proved", "lattice: refuted", "lattice: no proof"]
                    .iter()
                    .any(|p| w.starts_with(p))
            })
            .map(str::to_owned)
            .collect()
    };
    let write = |uid: &str, new: &Value, old: &Value, user: &str, groups: &[&str]| {
        review(
            uid,
            "UPDATE",
            Some(new.clone()),
            Some(old.clone()),
            user,
            groups,
        )
    };
    let policy = example("policies.yaml", "environment-isolation");
    let mut disabled = policy.clone();
    disabled["spec"]["enabled"] = json!(false);

    let off = post(
        &mut c,
        &write("p-0", &disabled, &policy, "sam", &[SECURITY_ADMIN]),
    )
    .await;
    assert_eq!(off["allowed"], true, "{off}");
    assert!(proofs(&off).is_empty(), "off by default: {off}");

    w.state
        .set_policy_proofs(PolicyProofs::new(solver.clone()).with_budget(Duration::from_secs(60)));
    let same = post(
        &mut c,
        &write("p-1", &policy, &policy, "sam", &[SECURITY_ADMIN]),
    )
    .await;
    assert_eq!(same["allowed"], true, "{same}");
    let said = proofs(&same);
    assert!(
        said.len() == 1 && said[0].starts_with("lattice: proved: this change permits nothing new"),
        "{said:?}"
    );
    println!("{}", said[0]);

    let widened = post(
        &mut c,
        &write("p-2", &disabled, &policy, "sam", &[SECURITY_ADMIN]),
    )
    .await;
    assert_eq!(
        widened["allowed"], true,
        "the proof decides nothing: {widened}"
    );
    let said = proofs(&widened);
    assert!(
        said.len() == 1 && said[0].starts_with("lattice: refuted:") && said[0].contains("Connect"),
        "turning the dev-to-prod forbid off permits a Connect: {said:?}"
    );
    println!("{}", said[0]);

    let refused = post(
        &mut c,
        &write("p-3", &disabled, &policy, "alice", &["developers"]),
    )
    .await;
    assert_eq!(refused["allowed"], false, "{refused}");
    assert!(
        proofs(&refused).is_empty(),
        "a refused write is not proved: {refused}"
    );

    w.state
        .set_policy_proofs(PolicyProofs::new(solver).with_budget(Duration::from_millis(1)));
    let late = post(
        &mut c,
        &write("p-4", &disabled, &policy, "sam", &[SECURITY_ADMIN]),
    )
    .await;
    assert_eq!(late["allowed"], true, "{late}");
    let said = proofs(&late);
    assert!(
        said.len() == 1 && said[0].contains("no proof for this change within 1 ms"),
        "{said:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The standalone webhook takes the same image-verification flags as `run`, and a CA or a
/// login file it cannot read stops it before it serves (it would otherwise find every
/// image unsigned).
#[test]
fn the_standalone_webhook_refuses_registry_files_it_cannot_read() {
    let dir = std::env::temp_dir().join(format!("lattice-webhook-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("config.json");
    std::fs::write(&bad, "[]").unwrap();
    let world = lattice_testkit::workspace_root().join("examples/world");
    for (flag, file, says) in [
        ("--registry-auth", bad.clone(), "not a Docker config.json"),
        (
            "--registry-ca",
            dir.join("missing.pem"),
            "cannot read the registry CA",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lattice-operator"))
            .args(["webhook", "--tls-cert", "none.pem", "--tls-key", "none.key"])
            .arg("--world")
            .arg(&world)
            .arg(flag)
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(says), "{flag}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A workload is measured against its quotas at admission, as it will stand once written
/// (after every older workload): one that would pass a limit is refused, saying which and by
/// how much; the example's own job, which fits, is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_over_its_quota_is_refused_at_admission_saying_by_how_much() {
    let Served { w: _w, mut c, .. } = serve_examples("quota").await;
    let job = example("ml.yaml", "recsys-train");
    let fits = post(
        &mut c,
        &review(
            "q-1",
            "UPDATE",
            Some(job.clone()),
            Some(job.clone()),
            "alice",
            &[],
        ),
    )
    .await;
    assert_eq!(fits["allowed"], true, "{fits}");

    // The same job with eight GPUs per worker: sixteen more than the quota's eight allow.
    let mut big = job;
    big["metadata"]["name"] = json!("big-train");
    for task in big["spec"]["tasks"].as_object_mut().unwrap().values_mut() {
        if let Some(gpu) = task.pointer_mut("/workload/resources/gpu/params/count") {
            *gpu = json!(8);
        }
    }
    let refused = post(
        &mut c,
        &review("q-2", "CREATE", Some(big), None, "alice", &[]),
    )
    .await;
    assert_eq!(refused["allowed"], false, "{refused}");
    assert_eq!(refused["status"]["code"], 403);
    let m = refused["status"]["message"].as_str().unwrap();
    assert!(
        m.contains("ConsumeQuota") && m.contains("baseline/quota-gpu"),
        "{m}"
    );
    assert!(m.contains("over quota `ml-gpus`: gpu "), "{m}");
}

async fn mutate(c: &mut Client, review: Value) -> Value {
    let (status, body) = c
        .send("POST", "/mutate", serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    response(&body)
}

/// A LatticeRestore at `/mutate`: a platform administrator's is admitted and stamped for
/// them (the stamp the operator verifies before asking Restore again); anyone else's, and
/// one that would restore the platform's own namespace, is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_is_stamped_for_whoever_restore_allows_and_refused_otherwise() {
    use base64::Engine;
    use lattice_controllers::webhook::stamp::{ANNOTATION, AdmissionKey, place};
    let dir = tmp("restore");
    let pki = Pki::issue(&dir.join("pki"));
    let w = start(&pki, Limits::default()).await;
    load_examples(&w, &[]);
    w.state.set_admission_key(std::sync::Arc::new(
        AdmissionKey::from_bytes(&[42u8; 32]).unwrap(),
    ));
    let mut c = Client::connect(w.addr, client_config(&pki.ca_pem))
        .await
        .unwrap();
    let message = |v: &Value| {
        v["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let restore = |namespaces: &[&str]| {
        json!({
            "apiVersion": "lattice.dev/v1alpha1", "kind": "LatticeRestore",
            "metadata": {"name": "shop-back"},
            "spec": {"clusterBackupRef": "nightly", "includeNamespaces": namespaces}
        })
    };
    let admitted = mutate(
        &mut c,
        review(
            "m-1",
            "CREATE",
            Some(restore(&["shop"])),
            None,
            "pat",
            &[PLATFORM_ADMIN],
        ),
    )
    .await;
    assert_eq!(admitted["allowed"], true, "{admitted}");
    // kube-core writes the patch's bytes as a JSON list (the API server reads that as well
    // as base64).
    let bytes: Vec<u8> = match &admitted["patch"] {
        Value::String(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        Value::Array(list) => list.iter().map(|b| b.as_u64().unwrap() as u8).collect(),
        other => panic!("a stamp patch: {other}"),
    };
    let patch: Value = serde_json::from_slice(&bytes).unwrap();
    let stamp = patch[0]["value"][ANNOTATION]
        .as_str()
        .expect("the stamp")
        .to_owned();
    let spec: lattice_schemas::crd::backup::LatticeRestoreSpec =
        serde_json::from_value(restore(&["shop"])["spec"].clone()).unwrap();
    let key = AdmissionKey::from_bytes(&[42u8; 32]).unwrap();
    let who = key
        .verify(
            place("LatticeRestore", None),
            "shop-back",
            &spec,
            Some(&stamp),
        )
        .unwrap();
    assert_eq!(who.username, "pat");

    let refused = mutate(
        &mut c,
        review(
            "m-2",
            "CREATE",
            Some(restore(&["shop"])),
            None,
            "dev",
            &["shop-developers"],
        ),
    )
    .await;
    assert_eq!(refused["allowed"], false);
    assert!(
        message(&refused).contains("Restore"),
        "{}",
        message(&refused)
    );
    let everything = mutate(
        &mut c,
        review(
            "m-3",
            "CREATE",
            Some(restore(&[])),
            None,
            "pat",
            &[PLATFORM_ADMIN],
        ),
    )
    .await;
    assert_eq!(everything["allowed"], false);
    assert!(
        message(&everything).contains("restore-spares-the-platform"),
        "{}",
        message(&everything)
    );
}
