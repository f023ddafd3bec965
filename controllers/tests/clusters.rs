//! Provisioning on a real API server.
//!
//! - Every provider's derived CAPI objects are created on a testenv control plane with the
//!   providers' real CRDs installed, so the API server's own checks (OpenAPI and the CRDs'
//!   CEL rules, which no offline schema check runs) accept them, and reading them back
//!   gives what was written.
//! - The operator's cell, under its shipped RBAC, provisions a child once Cedar's
//!   `Provision` allows it, and a `forbid` keeps another `Pending` with the deciding policy
//!   in its status until it is withdrawn; it pivots the child, which then scales itself
//!   with the parent stopped, and decommissions both.
//!
//! Cluster API's real core manager and its webhooks run on the parent
//! (`lattice_testkit::capi::set_up`): they default and validate what the cell derives, own the
//! providers' objects, compute the CAPI `Cluster`'s phase and conditions, make lab's workers'
//! MachineSet and Machines (which the pivot then moves), and delete what a decommission
//! deletes. No machine, cloud or Docker engine runs here: Docker's and kubeadm's providers are
//! simulated (`lattice_testkit::capi::simulate_providers`), reporting lab's infrastructure,
//! control plane and workers' machines up (each worker's Node registered in lab, which
//! Cluster API finds, moving the Machine to `Running`) and writing its kubeconfig as they
//! would. In the derived-objects test
//! no controller runs: it is the API server's own checks that are tested there.

mod cluster;

use cluster::hierarchy::{eventually, namespace};
use cluster::{Operator, TestEnv, apply_yaml, free_port, install_crds, stamped};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use lattice_clusters::{BootstrapEndpoint, ProvisionOptions, provision};
use lattice_schemas::manifest::Object;
use serde_json::Value;

fn resource(object: &Value) -> ApiResource {
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap();
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        &format!("{}s", kind.to_lowercase()),
    )
}

#[tokio::test]
async fn derived_objects_are_accepted_by_a_real_api_server() {
    let env = TestEnv::start("clusters-provision");
    let client = env.client().await;
    install_crds(&client).await;
    let endpoint: BootstrapEndpoint = "cell.production.example.com:8443".parse().unwrap();
    let root = lattice_testkit::workspace_root().join("clusters/tests/clusters");
    let mut created = 0;
    for case in ["aws", "aws-rke2", "proxmox", "openstack", "docker"] {
        let report =
            lattice_schemas::validate::validate_paths(&[root.join(format!("{case}.yaml"))]);
        let mut cluster = None;
        let mut infra = None;
        for m in report.manifests {
            match m.object {
                Object::Cluster(c) => cluster = Some(c),
                Object::InfraProvider(p) => infra = Some(p.spec),
                _ => {}
            }
        }
        let provisioned = provision(
            &cluster.unwrap(),
            &ProvisionOptions {
                endpoint: Some(endpoint.clone()),
                infra: infra.as_ref(),
            },
        )
        .unwrap();
        for object in &provisioned.objects {
            let ar = resource(object);
            let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            let name = object["metadata"]["name"].as_str().unwrap();
            let applied = api
                .patch(
                    name,
                    &PatchParams::apply("lattice-clusters").force(),
                    &Patch::Apply(object),
                )
                .await
                .unwrap_or_else(|e| {
                    panic!("{case}: the API server refuses {} {name}: {e}", ar.kind)
                });
            let back = serde_json::to_value(&applied).unwrap();
            // What was written is what is stored (nothing pruned as unknown).
            if object.get("spec").is_some() {
                assert_subset(
                    &object["spec"],
                    &back["spec"],
                    &format!("{case} {} {name}", ar.kind),
                );
            }
            created += 1;
        }
    }
    assert!(created >= 40, "{created}");
}

/// Every field of `want` is in `got` with the same value (the API server may add defaults).
fn assert_subset(want: &Value, got: &Value, at: &str) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                let g = g.get(k).unwrap_or_else(|| panic!("{at}: `{k}` was pruned"));
                assert_subset(v, g, &format!("{at}.{k}"));
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            assert_eq!(w.len(), g.len(), "{at}");
            for (i, (w, g)) in w.iter().zip(g).enumerate() {
                assert_subset(w, g, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(want, got, "{at}"),
    }
}

fn lattice_cluster(name: &str, parent: Option<&str>, bootstrap_port: Option<u16>) -> String {
    let mut parent = parent
        .map(|p| format!("  parent: {p}\n"))
        .unwrap_or_default();
    if let Some(port) = bootstrap_port {
        parent.push_str(&format!("  parentConfig:\n    bootstrapPort: {port}\n"));
    }
    format!(
        "---
apiVersion: lattice.dev/v1alpha1
kind: LatticeCluster
metadata:
  name: {name}
spec:
  providerRef: docker
{parent}  provider:
    kubernetes:
      version: \"1.32.0\"
    config:
      docker: {{}}
  nodes:
    controlPlane: 1
    workerPools:
      default:
        replicas: 2
  backups: true
"
    )
}

async fn status(client: &kube::Client, name: &str) -> Value {
    cluster::hierarchy::cluster_status(client, name).await
}

fn kubeadm_control_planes(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    lattice_testkit::capi::api(
        client,
        namespace,
        "controlplane.cluster.x-k8s.io",
        "KubeadmControlPlane",
        "kubeadmcontrolplanes",
    )
}

fn capi(client: &kube::Client, kind: &str, plural: &str, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", kind),
            plural,
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_provisions_children_that_provision_allows_and_explains_the_others() {
    let env = TestEnv::start("clusters-parent");
    let client = env.client().await;
    install_crds(&client).await;
    // Cluster API's real core manager and webhooks on the parent (see the module doc).
    let _cluster_api =
        lattice_testkit::capi::set_up(&client, &env.dir.join("cluster-api"), &env.kubeconfig).await;
    namespace(&client, "lattice-system").await;
    let bootstrap_port = free_port();
    let forbid = stamped(serde_json::json!({
        "apiVersion": "lattice.dev/v1alpha1",
        "kind": "CedarPolicy",
        "metadata": {"name": "no-new-clusters", "namespace": "lattice-system"},
        "spec": {"policies": "@id(\"freeze\")\n@advice(\"New clusters wait for the change freeze to end.\")\nforbid (principal, action == Lattice::Action::\"Provision\", resource)\nwhen { resource.name == \"frozen\" };\n"},
    }));
    apply_yaml(
        &client,
        &format!(
            "apiVersion: lattice.dev/v1alpha1
kind: InfraProvider
metadata:
  name: docker
spec:
  type: docker
{}{}{}",
            lattice_cluster("root", None, Some(bootstrap_port)),
            lattice_cluster("lab", Some("root"), None),
            lattice_cluster("frozen", Some("root"), None),
        ),
    )
    .await;
    cluster::apply(&client, &cluster::resource_of(&forbid), &forbid).await;
    env.operator_account().await;
    let account = env
        .account("deploy/cell/rbac.yaml", "lattice-operator")
        .await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let bootstrap_listen = format!("127.0.0.1:{bootstrap_port}");
    let args = [
        "--cell-listen",
        listen.as_str(),
        "--cluster-name",
        "root",
        "--cell-address",
        "127.0.0.1",
        "--bootstrap-listen",
        bootstrap_listen.as_str(),
        "--heartbeat-seconds",
        "1",
    ];
    let start_operator = || Operator::start_with(&env, "parent", &account, "lattice-system", &args);
    let mut operator = start_operator();

    // lab: allowed, its objects applied in capi-lab, its bootstrap Secret beside them.
    let lab = eventually("lab provisioned", || async {
        let s = status(&client, "lab").await;
        (s["phase"] == "Provisioning").then_some(s)
    })
    .await;
    let decision = &lab["decisions"][0];
    assert_eq!(decision["action"], "Provision");
    assert_eq!(decision["principal"], "root");
    assert_eq!(decision["allowed"], true);
    assert_eq!(
        decision["policies"],
        serde_json::json!(["baseline/parent-manages-children"])
    );
    let components: Vec<&str> = lab["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        components,
        [
            "cilium",
            "lattice-agent",
            "istio",
            "lattice-operator",
            "velero"
        ]
    );
    let md = capi(
        &client,
        "MachineDeployment",
        "machinedeployments",
        "capi-lab",
    )
    .get("lab-default")
    .await
    .unwrap();
    assert_eq!(md.data["spec"]["replicas"], 2);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "capi-lab");
    let bootstrap = secrets.get("lab-lattice-bootstrap").await.unwrap();
    let data = bootstrap.data.unwrap();
    assert!(data.contains_key("token") && data.contains_key("ca.crt"));
    let kcp = kubeadm_control_planes(&client, "capi-lab");
    let kcp = kcp.get("lab-control-plane").await.unwrap();
    let script = kcp.data["spec"]["kubeadmConfigSpec"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/lattice/bootstrap.sh")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("https://127.0.0.1:{bootstrap_port}/v1/bootstrap/lab");
    assert!(script.contains(&url), "{script}");

    // The hook's fetch, as the node makes it: the token and CA from the bootstrap Secret,
    // the URL from the script.
    let token = String::from_utf8(data["token"].0.clone()).unwrap();
    let ca = String::from_utf8(data["ca.crt"].0.clone()).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{bootstrap_port}").parse().unwrap();
    let (code, body) = https_get(addr, &ca, "/v1/bootstrap/lab", Some(&token), "GET").await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let manifests = String::from_utf8(body).unwrap();
    let docs = cluster::documents(&manifests);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in [
        "Namespace",
        "Secret",
        "ServiceAccount",
        "ClusterRole",
        "Deployment",
    ] {
        assert!(kinds.contains(&kind), "{kind} not in {kinds:?}");
    }
    let joined = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
    assert_eq!(joined["metadata"]["name"], "lattice-bootstrap");
    // Anything else is refused alike, and says nothing of why.
    for (path, token, method, code) in [
        ("/v1/bootstrap/lab", Some("not-the-token"), "GET", 401),
        ("/v1/bootstrap/lab", None, "GET", 401),
        ("/v1/bootstrap/frozen", Some(token.as_str()), "GET", 401),
        ("/v1/bootstrap/nobody", Some(token.as_str()), "GET", 401),
        ("/v1/bootstrap/lab", Some(token.as_str()), "POST", 405),
        ("/v1/other", Some(token.as_str()), "GET", 404),
    ] {
        let (got, body) = https_get(addr, &ca, path, token, method).await;
        assert_eq!(
            got,
            code,
            "{method} {path}: {}",
            String::from_utf8_lossy(&body)
        );
        if code == 401 {
            assert_eq!(body, b"bootstrap refused\n");
        }
    }

    // frozen: denied, Pending, the forbid and its advice in status; nothing applied.
    let frozen = eventually("frozen explained", || async {
        let s = status(&client, "frozen").await;
        (s["phase"] == "Pending" && !s["decisions"].is_null()).then_some(s)
    })
    .await;
    let decision = &frozen["decisions"][0];
    assert_eq!(decision["allowed"], false);
    assert_eq!(
        decision["policies"],
        serde_json::json!(["lattice-system/no-new-clusters/freeze"])
    );
    assert_eq!(
        decision["advice"],
        serde_json::json!(["New clusters wait for the change freeze to end."])
    );
    let condition = frozen["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ProvisionAllowed")
        .unwrap();
    assert_eq!(condition["status"], "False");
    assert!(
        capi(&client, "Cluster", "clusters", "capi-frozen")
            .get_opt("frozen")
            .await
            .unwrap()
            .is_none()
    );
    // A decision that stays the same is not written again: its own status write changes
    // the world, and with it the snapshot, which must not start a write loop.
    let clusters_api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &lattice_controllers::lattice_api::lattice_resource(
            lattice_schemas::crd::Kind::LatticeCluster,
        ),
    );
    let before = clusters_api
        .get("frozen")
        .await
        .unwrap()
        .metadata
        .resource_version;
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    let after = clusters_api
        .get("frozen")
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_eq!(
        before, after,
        "frozen's status was rewritten with nothing new"
    );

    // lab's machines come up (simulated: CAPD and KCP report them, see the module doc) and
    // Cluster API's manager reports the control plane available: the phase follows (the
    // agent has not dialled in, so it is still provisioning, with the condition saying so).
    // The kubeconfig KCP writes reaches lab's own control plane.
    let child_env = TestEnv::start("clusters-child");
    let child = child_env.client().await;
    install_crds(&child).await;
    // lab serves every Cluster API kind the move brings (as a cluster that will run Cluster
    // API does); without them its agent refuses the batch and the cell tries again.
    lattice_testkit::capi::install_crds(&child).await;
    let clusters = capi(&client, "Cluster", "clusters", "capi-lab");
    lattice_testkit::capi::simulate_providers(
        client.clone(),
        "capi-lab",
        "lab",
        &std::fs::read_to_string(&child_env.kubeconfig).unwrap(),
        2,
    )
    .await;
    eventually("lab reads CAPI's status", || async {
        let s = status(&client, "lab").await;
        s["conditions"].as_array().and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "ControlPlaneAvailable" && c["status"] == "True")
                .map(drop)
        })
    })
    .await;

    // A forbid holds lab's pivot. Beside what Cluster API and the providers made, enough
    // labelled objects that the move takes several batches.
    let hold = stamped(serde_json::json!({
        "apiVersion": "lattice.dev/v1alpha1",
        "kind": "CedarPolicy",
        "metadata": {"name": "hold-pivot", "namespace": "lattice-system"},
        "spec": {"policies": "@id(\"hold\")\n@advice(\"Pivots wait for the storage migration.\")\nforbid (principal, action == Lattice::Action::\"Pivot\", resource)\nwhen { resource.name == \"lab\" };\n"},
    }));
    cluster::apply(&client, &cluster::resource_of(&hold), &hold).await;
    let source_uid = clusters.get("lab").await.unwrap().metadata.uid.unwrap();
    let source_secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "capi-lab");
    let mut extra = Vec::new();
    for i in 0..PIVOT_FILLER {
        extra.push(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("lab-machine-state-{i:03}"), "namespace": "capi-lab",
                         "labels": {"cluster.x-k8s.io/cluster-name": "lab"}},
            "data": {"index": i.to_string()},
        }));
    }
    // What Cluster API and the providers made, labelled for lab: the MachineSet, the
    // Machines with their DockerMachines and KubeadmConfigs, the kubeconfig Secret.
    let provisioned =
        cluster::count_in(&client, "capi-lab", "cluster.x-k8s.io/cluster-name=lab").await;
    for o in &extra {
        cluster::apply(&client, &resource(o), o).await;
    }
    let moving = cluster::count_in(&client, "capi-lab", "cluster.x-k8s.io/cluster-name=lab").await;
    assert_eq!(moving, provisioned + PIVOT_FILLER);

    // The new cluster applies what the endpoint gave it (its control plane would, with
    // kubectl; no kubelet runs here, so the agent runs as a process) and its agent joins
    // with the token: the control plane is available and the agent connected, but the
    // forbid denies the pivot, so lab stays Provisioning with the policy in its status.
    // The token is used up: the endpoint refuses it from now on.
    for doc in &docs {
        let ar = resource(doc);
        let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(child.clone(), ns, &ar),
            None => Api::all_with(child.clone(), &ar),
        };
        let name = doc["metadata"]["name"].as_str().unwrap();
        api.patch(
            name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(doc),
        )
        .await
        .unwrap_or_else(|e| panic!("the child refuses {} {name}: {e}", ar.kind));
    }
    let agent_account = child_env
        .account("deploy/agent/rbac.yaml", "lattice-agent")
        .await;
    let mut agent = cluster::hierarchy::AgentProcess::start(&child_env, &agent_account);
    let held = eventually("lab's agent joins; the pivot is held", || async {
        let s = status(&client, "lab").await;
        let pivot = s["decisions"]
            .as_array()?
            .iter()
            .find(|d| d["action"] == "Pivot")?
            .clone();
        (s["agentConnected"] == true).then_some((s, pivot))
    })
    .await;
    let (lab, pivot) = held;
    assert_eq!(lab["phase"], "Provisioning", "{lab}\n{}", agent.logs());
    assert_eq!(pivot["allowed"], false);
    assert_eq!(
        pivot["policies"],
        serde_json::json!(["lattice-system/hold-pivot/hold"])
    );
    assert_eq!(
        pivot["advice"],
        serde_json::json!(["Pivots wait for the storage migration."])
    );
    let condition = |s: &Value, t: &str| {
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(condition(&lab, "AgentConnected")["status"], "True");
    assert_eq!(condition(&lab, "PivotAllowed")["status"], "False");
    assert!(
        capi(&child, "Cluster", "clusters", "capi-lab")
            .get_opt("lab")
            .await
            .unwrap()
            .is_none(),
        "nothing moves while the pivot is denied"
    );
    let (code, _) = https_get(addr, &ca, "/v1/bootstrap/lab", Some(&token), "GET").await;
    assert_eq!(code, 401, "a used token fetches nothing");

    // Withdrawing the forbid provisions frozen.
    let policies: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "lattice-system",
        &lattice_controllers::lattice_api::lattice_resource(
            lattice_schemas::crd::Kind::CedarPolicy,
        ),
    );
    policies
        .delete("no-new-clusters", &Default::default())
        .await
        .unwrap();
    eventually(
        "frozen provisioned once the forbid is withdrawn",
        || async {
            let s = status(&client, "frozen").await;
            (s["phase"] == "Provisioning" && s["decisions"][0]["allowed"] == true).then_some(())
        },
    )
    .await;
    assert!(
        capi(&client, "Cluster", "clusters", "capi-frozen")
            .get_opt("frozen")
            .await
            .unwrap()
            .is_some()
    );
    // Each change of decision is an Event on the LatticeCluster.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("frozen"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.contains(&"ProvisionDenied".to_owned()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"ProvisionAllowed".to_owned()),
        "{reasons:?}"
    );

    // Withdrawing the hold lets the pivot proceed. The cell is killed once the first batch
    // has landed in lab, and lab's agent once the restarted cell has begun the move
    // again; each time the move has not completed, and after both it does, with nothing
    // lost and nothing left behind.
    policies
        .delete("hold-pivot", &Default::default())
        .await
        .unwrap();
    let target = |namespace: &str| {
        let child = child.clone();
        let namespace = namespace.to_owned();
        async move { cluster::count_in(&child, &namespace, "cluster.x-k8s.io/cluster-name=lab").await }
    };
    eventually("the first batch lands in lab", || async {
        (target("capi-lab").await > 0).then_some(())
    })
    .await;
    operator.kill();
    assert_ne!(
        status(&client, "lab").await["pivoted"],
        true,
        "the cell was killed after the move completed: nothing was interrupted"
    );
    assert!(
        clusters.get_opt("lab").await.unwrap().is_some(),
        "the source is intact"
    );
    operator = start_operator();
    eventually("the restarted cell moves lab again", || async {
        operator
            .logs()
            .contains("pivot allowed: moving")
            .then_some(())
    })
    .await;
    drop(agent);
    assert_ne!(
        status(&client, "lab").await["pivoted"],
        true,
        "the agent was killed after the move completed: nothing was interrupted"
    );
    agent = cluster::hierarchy::AgentProcess::start(&child_env, &agent_account);
    let lab = eventually("lab pivoted: Ready", || async {
        let s = status(&client, "lab").await;
        (s["pivoted"] == true && s["phase"] == "Ready").then_some(s)
    })
    .await;
    let pivot = lab["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["action"] == "Pivot")
        .unwrap();
    assert_eq!(pivot["allowed"], true);
    assert_eq!(
        pivot["policies"],
        serde_json::json!(["baseline/parent-manages-children"])
    );
    assert_eq!(condition(&lab, "Pivoted")["status"], "True");
    // Lab holds everything, once, unpaused, with its status, and owner references
    // pointing at its own objects.
    assert_eq!(target("capi-lab").await, moving, "{}", operator.logs());
    let moved = capi(&child, "Cluster", "clusters", "capi-lab")
        .get("lab")
        .await
        .unwrap();
    assert_eq!(moved.data["spec"]["paused"], false);
    assert_eq!(moved.data["status"]["phase"], "Provisioned");
    let child_uid = moved.metadata.uid.clone().unwrap();
    assert_ne!(child_uid, source_uid);
    let child_secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(child.clone(), "capi-lab");
    // The kubeconfig Secret is owned by lab's own control plane, which lab's own Cluster
    // owns (Cluster API set that owner on the parent; the move remapped both).
    let control_plane = kubeadm_control_planes(&child, "capi-lab")
        .get("lab-control-plane")
        .await
        .unwrap();
    use lattice_testkit::capi::owner_uids;
    assert_eq!(owner_uids(&control_plane.metadata), vec![child_uid.clone()]);
    let kubeconfig = child_secrets.get("lab-kubeconfig").await.unwrap();
    assert_eq!(
        owner_uids(&kubeconfig.metadata),
        vec![control_plane.metadata.uid.clone().unwrap()]
    );
    // The workers' Machines Cluster API made moved too, owned by lab's own MachineSet.
    let (sets, machines) = lattice_testkit::capi::workers(&child, "capi-lab").await;
    assert_eq!(machines.len(), 2);
    assert_eq!(sets.len(), 1);
    for machine in &machines {
        assert_eq!(
            owner_uids(&machine.metadata),
            vec![sets[0].metadata.uid.clone().unwrap()]
        );
        // Running, as Cluster API said before the move: it found the machine's Node in lab.
        assert_eq!(machine.data["status"]["phase"], "Running", "{machine:?}");
    }
    assert_eq!(
        capi(
            &child,
            "MachineDeployment",
            "machinedeployments",
            "capi-lab"
        )
        .get("lab-default")
        .await
        .unwrap()
        .data["spec"]["replicas"],
        2
    );
    // The parent's copies go once `pivoted` is recorded, and it provisions nothing again.
    eventually("the parent's copies are deleted", || async {
        (clusters.get_opt("lab").await.unwrap().is_none()
            && cluster::count_in(&client, "capi-lab", "cluster.x-k8s.io/cluster-name=lab").await
                == 0)
            .then_some(())
    })
    .await;
    assert!(
        source_secrets
            .get_opt("lab-kubeconfig")
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    assert!(clusters.get_opt("lab").await.unwrap().is_none());
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("lab"))
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["PivotDenied", "PivotAllowed", "Pivoted"] {
        assert!(
            reasons.contains(&reason.to_owned()),
            "{reason} not in {reasons:?}"
        );
    }

    // Independence: the parent is stopped, and lab scales itself through its own
    // operator, which asks Provision of lab about lab.
    // Everything the pivot moved (its count is in the Moved condition, which the operator
    // keeps until it restarts) comes back in the decommission.
    let moved = status(&client, "lab").await["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Moved")
        .and_then(|c| {
            c["message"]
                .as_str()?
                .split(' ')
                .nth(1)?
                .parse::<usize>()
                .ok()
        })
        .expect("the pivot's Moved condition");
    operator.kill();
    independence(&child_env, &child).await;
    operator = start_operator();
    decommission(
        &client,
        &child,
        &clusters_api,
        &policies,
        &operator,
        &agent,
        moved,
    )
    .await;
    assert!(operator.running(), "{}", operator.logs());
    drop(agent);
}

/// After the pivot, with the parent stopped: lab holds its own LatticeCluster (handed over
/// by the pivot), and editing a worker pool there changes lab's own MachineDeployment
/// through lab's own operator (under its shipped RBAC and the rights the bootstrap
/// manifests gave it in `capi-lab`). A `forbid` on lab's Provision of itself holds the
/// change, with the policy in lab's status; withdrawn, the change lands. Returns once
/// lab's operator is stopped again.
async fn independence(child_env: &TestEnv, child: &kube::Client) {
    let own: Api<DynamicObject> = Api::all_with(
        child.clone(),
        &lattice_controllers::lattice_api::lattice_resource(
            lattice_schemas::crd::Kind::LatticeCluster,
        ),
    );
    let adopted = own
        .get("lab")
        .await
        .expect("the pivot hands lab its LatticeCluster");
    assert_eq!(adopted.data["status"]["pivoted"], true);
    assert_eq!(adopted.data["spec"]["parent"], "root");
    assert!(
        adopted
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("lattice.dev/bootstrap-endpoint"))
            .is_some(),
        "{:?}",
        adopted.metadata
    );
    let providers: Api<DynamicObject> = Api::all_with(
        child.clone(),
        &lattice_controllers::lattice_api::lattice_resource(
            lattice_schemas::crd::Kind::InfraProvider,
        ),
    );
    assert!(providers.get_opt("docker").await.unwrap().is_some());
    let deployments = capi(child, "MachineDeployment", "machinedeployments", "capi-lab");
    let replicas = || {
        let deployments = deployments.clone();
        async move {
            deployments.get("lab-default").await.unwrap().data["spec"]["replicas"]
                .as_i64()
                .unwrap()
        }
    };
    let control_planes = kubeadm_control_planes(child, "capi-lab");
    let templates_before = control_planes
        .get("lab-control-plane")
        .await
        .unwrap()
        .metadata
        .generation;

    let account = child_env.operator_account().await;
    let args = ["--cluster-name", "lab"];
    let mut lab_operator =
        Operator::start_with(child_env, "lab", &account, "lattice-system", &args);
    let scale = |n: i64| {
        let own = own.clone();
        async move {
            own.patch(
                "lab",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"nodes": {"workerPools": {"default": {"replicas": n}}}}})),
            )
            .await
            .unwrap();
        }
    };
    let decision = |s: &Value| {
        s["decisions"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["action"] == "Provision").cloned())
            .unwrap_or_default()
    };
    scale(3).await;
    eventually("lab scales its own pool", || async {
        (replicas().await == 3).then_some(())
    })
    .await;
    // The status is written after the objects are applied.
    let s = eventually("lab's status says why", || async {
        let s = status(child, "lab").await;
        (decision(&s)["principal"] == "lab").then_some(s)
    })
    .await;
    let d = decision(&s);
    assert_eq!(d["allowed"], true, "{s}");
    assert_eq!(
        d["policies"],
        serde_json::json!(["baseline/pivoted-cluster-manages-itself"])
    );
    assert_eq!(s["phase"], "Ready");
    // The same derivation as the parent's: the control plane's spec was not rewritten (its
    // generation moves with the spec only; taking the fields over writes managedFields).
    let templates_after = control_planes
        .get("lab-control-plane")
        .await
        .unwrap()
        .metadata
        .generation;
    assert_eq!(
        templates_before,
        templates_after,
        "lab rewrote its control plane: {}",
        lab_operator.logs()
    );

    // lab's own forbid holds its next change.
    let hold = stamped(serde_json::json!({
        "apiVersion": "lattice.dev/v1alpha1",
        "kind": "CedarPolicy",
        "metadata": {"name": "hold-scaling", "namespace": "lattice-system"},
        "spec": {"policies": "@id(\"hold\")\n@advice(\"Capacity changes wait for the quarterly review.\")\nforbid (principal, action == Lattice::Action::\"Provision\", resource)\nwhen { resource.name == \"lab\" };\n"},
    }));
    cluster::apply(child, &cluster::resource_of(&hold), &hold).await;
    let held = eventually("lab's forbid holds its own change", || async {
        let s = status(child, "lab").await;
        (decision(&s)["allowed"] == false).then_some(s)
    })
    .await;
    scale(5).await;
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    assert_eq!(replicas().await, 3, "a denied change is not applied");
    let d = decision(&held);
    assert_eq!(
        d["policies"],
        serde_json::json!(["lattice-system/hold-scaling/hold"])
    );
    assert_eq!(
        d["advice"],
        serde_json::json!(["Capacity changes wait for the quarterly review."])
    );
    let policies: Api<DynamicObject> = Api::namespaced_with(
        child.clone(),
        "lattice-system",
        &lattice_controllers::lattice_api::lattice_resource(
            lattice_schemas::crd::Kind::CedarPolicy,
        ),
    );
    policies
        .delete("hold-scaling", &Default::default())
        .await
        .unwrap();
    eventually("withdrawn, lab's change lands", || async {
        (replicas().await == 5).then_some(())
    })
    .await;
    for reason in ["ProvisionAllowed", "ProvisionDenied"] {
        assert!(
            reasons(child, "lab").await.contains(&reason.to_owned()),
            "{reason}"
        );
    }
    assert!(lab_operator.running(), "{}", lab_operator.logs());
    lab_operator.kill();
}

/// The reasons of the Events about LatticeCluster `name`.
async fn reasons(client: &kube::Client, name: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

/// Deleting children: frozen (its CAPI objects here) is held by a forbid on
/// `Decommission`, then torn down in order once it is withdrawn; lab (pivoted) is moved
/// back first, then torn down, and its agent's certificate is refused afterwards.
async fn decommission(
    client: &kube::Client,
    child: &kube::Client,
    clusters_api: &Api<DynamicObject>,
    policies: &Api<DynamicObject>,
    operator: &Operator,
    agent: &cluster::hierarchy::AgentProcess,
    moved: usize,
) {
    let finalizers = |o: &DynamicObject| o.metadata.finalizers.clone().unwrap_or_default();
    for name in ["frozen", "lab"] {
        let held = clusters_api.get(name).await.unwrap();
        assert!(
            finalizers(&held).contains(&"lattice.dev/decommission".to_owned()),
            "{name} is held for its decommission: {:?}",
            held.metadata.finalizers
        );
    }
    let hold = stamped(serde_json::json!({
        "apiVersion": "lattice.dev/v1alpha1",
        "kind": "CedarPolicy",
        "metadata": {"name": "hold-decommission", "namespace": "lattice-system"},
        "spec": {"policies": "@id(\"hold\")\n@advice(\"Keep frozen until its backups are verified.\")\nforbid (principal, action == Lattice::Action::\"Decommission\", resource)\nwhen { resource.name == \"frozen\" };\n"},
    }));
    cluster::apply(client, &cluster::resource_of(&hold), &hold).await;
    // The forbid is in the snapshot once frozen's status would show it; wait for the
    // operator to have read it before deleting.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    clusters_api
        .delete("frozen", &Default::default())
        .await
        .unwrap();
    let frozen = eventually("frozen's decommission is held", || async {
        let s = status(client, "frozen").await;
        let d = s["decisions"]
            .as_array()?
            .iter()
            .find(|d| d["action"] == "Decommission")?
            .clone();
        (s["phase"] == "Deleting" && d["allowed"] == false).then_some((s, d))
    })
    .await;
    let (frozen, decision) = frozen;
    assert_eq!(
        decision["policies"],
        serde_json::json!(["lattice-system/hold-decommission/hold"])
    );
    assert_eq!(
        decision["advice"],
        serde_json::json!(["Keep frozen until its backups are verified."])
    );
    let torn = frozen["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "TornDown")
        .unwrap();
    assert_eq!(torn["reason"], "Held", "{torn}");
    let frozen_capi = capi(client, "Cluster", "clusters", "capi-frozen");
    assert!(
        frozen_capi.get_opt("frozen").await.unwrap().is_some(),
        "nothing is torn down while Decommission is denied"
    );
    assert!(clusters_api.get_opt("frozen").await.unwrap().is_some());

    // Withdrawn: the CAPI Cluster goes, then what is left of frozen's objects, then the
    // LatticeCluster itself.
    policies
        .delete("hold-decommission", &Default::default())
        .await
        .unwrap();
    eventually("frozen is decommissioned", || async {
        clusters_api
            .get_opt("frozen")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(frozen_capi.get_opt("frozen").await.unwrap().is_none());
    assert_eq!(
        cluster::count_in(client, "capi-frozen", "lattice.dev/cluster=frozen").await,
        0,
        "frozen's objects are deleted"
    );
    let frozen_reasons = reasons(client, "frozen").await;
    for reason in [
        "DecommissionDenied",
        "DecommissionAllowed",
        "Decommissioned",
    ] {
        assert!(
            frozen_reasons.contains(&reason.to_owned()),
            "{reason} not in {frozen_reasons:?}"
        );
    }

    // lab manages itself: its objects come back here (Unpivot), and are torn down here.
    let on_lab = cluster::count_in(child, "capi-lab", "cluster.x-k8s.io/cluster-name=lab").await;
    assert!(on_lab > PIVOT_FILLER, "{on_lab}");
    clusters_api
        .delete("lab", &Default::default())
        .await
        .unwrap();
    eventually("lab is moved back and decommissioned", || async {
        clusters_api
            .get_opt("lab")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let lab_reasons = reasons(client, "lab").await;
    for reason in [
        "DecommissionAllowed",
        "UnpivotAllowed",
        "Unpivoted",
        "Decommissioned",
    ] {
        assert!(
            lab_reasons.contains(&reason.to_owned()),
            "{reason} not in {lab_reasons:?}\n{}",
            operator.logs()
        );
    }
    assert!(
        operator
            .logs()
            .contains(&format!("moved {moved} Cluster API objects back from lab")),
        "every object came back: {}",
        operator.logs()
    );
    assert_eq!(
        cluster::count_in(child, "capi-lab", "cluster.x-k8s.io/cluster-name=lab").await,
        0,
        "lab released its copies"
    );
    assert_eq!(
        cluster::count_in(client, "capi-lab", "cluster.x-k8s.io/cluster-name=lab").await,
        0,
        "and the parent tore them down"
    );
    // lab is gone: its certificate is revoked, and its agent is refused from now on.
    eventually("lab's agent is refused", || async {
        agent
            .logs()
            .contains("its certificates revoked")
            .then_some(())
    })
    .await;
}

/// Objects labelled for lab beyond what provisioning derives: enough for several batches.
const PIVOT_FILLER: usize = 400;

/// One HTTPS request to the bootstrap endpoint at `addr`, trusting `ca`: the status and body.
async fn https_get(
    addr: std::net::SocketAddr,
    ca: &str,
    path: &str,
    token: Option<&str>,
    method: &str,
) -> (u16, Vec<u8>) {
    use http_body_util::{BodyExt, Empty};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let response = sender
        .send_request(request.body(Empty::<hyper::body::Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}
