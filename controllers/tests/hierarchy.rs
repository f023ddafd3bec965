//! Three real control planes, root → edge → leaf, each with its own `lattice-operator`
//! processes: root runs a cell, edge an agent and a cell, leaf an agent, and the tunnels
//! are real gRPC over mutual TLS on loopback. A child joins with the bootstrap Secret its
//! parent wrote, its health lands in the parent's LatticeCluster status, policies root
//! marks `propagate: true` are written into edge and from there into leaf (and withdrawn
//! from both), edge keeps them while root is down and resyncs when it returns, and a
//! deleted child is held while it still manages a cluster, then decommissioned, its
//! certificate revoked.

mod cluster;

use std::time::Duration;

use cluster::hierarchy::{
    AgentProcess, cluster_status, eventually, install_bundle, namespace, secret, world,
};
use cluster::{Operator, TestEnv, apply, apply_yaml, free_port, install_crds, stamped};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use lattice_controllers::lattice_api::lattice_resource;
use lattice_schemas::crd::Kind;
use serde_json::{Value, json};

async fn policies(client: &Client) -> Vec<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "lattice-system",
        &lattice_resource(Kind::CedarPolicy),
    );
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

/// A TrustPolicy, marked for distribution or not.
fn trust(propagate: bool) -> Value {
    json!({
        "apiVersion": "lattice.dev/v1alpha1",
        "kind": "TrustPolicy",
        "metadata": {"name": "fleet-trust", "labels": {"lattice.dev/propagate": propagate.to_string()}},
        "spec": {"registries": [{"prefix": "registry.example.com/fleet", "requireSignature": false}]},
    })
}

async fn trust_policies(client: &Client) -> Vec<Value> {
    let api: Api<DynamicObject> =
        Api::all_with(client.clone(), &lattice_resource(Kind::TrustPolicy));
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

fn policy(name: &str, propagate: bool) -> Value {
    stamped(json!({
        "apiVersion": "lattice.dev/v1alpha1",
        "kind": "CedarPolicy",
        "metadata": {"name": name, "namespace": "lattice-system", "labels": {"team": "platform"}},
        "spec": {
            "propagate": propagate,
            "policies": "@id(\"no-exec\")\nforbid (principal, action == Lattice::Action::\"exec\", resource);\n",
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_joins_reports_health_inherits_policies_and_survives_its_parent() {
    let parent_env = TestEnv::start("parent");
    let child_env = TestEnv::start("child");
    let parent = parent_env.client().await;
    let child = child_env.client().await;
    for c in [&parent, &child] {
        install_crds(c).await;
        namespace(c, "lattice-system").await;
    }
    apply_yaml(&parent, &world(&[("root", None), ("edge", Some("root"))])).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let cell_args = [
        "--cell-listen",
        listen.as_str(),
        "--cluster-name",
        "root",
        "--cell-address",
        "127.0.0.1",
        "--heartbeat-seconds",
        "1",
        "--cell-service",
        "lattice-cell",
        // What the downward API would give a pod (the API server refuses loopback
        // endpoints); the agents here dial loopback directly.
        "--pod-ip",
        "10.1.2.3",
    ];
    // Both run as their shipped ServiceAccounts and RBAC (deploy/operator with
    // deploy/cell; deploy/agent), so the test also proves those grant enough.
    parent_env.operator_account().await;
    let parent_account = parent_env
        .account("deploy/cell/rbac.yaml", "lattice-operator")
        .await;
    let child_account = child_env
        .account("deploy/agent/rbac.yaml", "lattice-agent")
        .await;
    let start = || {
        Operator::start_with(
            &parent_env,
            "parent",
            &parent_account,
            "lattice-system",
            &cell_args,
        )
    };
    let mut operator = start();

    // The parent writes the child's bootstrap Secret; the installer copies it over.
    let bundle = install_bundle(&parent, "edge", &child).await;
    let data = bundle.data.clone().unwrap();
    assert!(
        data.contains_key("token"),
        "a one-time token: {:?}",
        data.keys()
    );
    assert_eq!(
        String::from_utf8(data["endpoint"].0.clone()).unwrap(),
        format!("127.0.0.1:{port}")
    );

    // One Ready node on the child, for its health to count.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(child.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "node-1"}})).unwrap(),
        )
        .await
        .unwrap();
    nodes
        .patch_status(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "ready", "lastHeartbeatTime": "2026-12-01T00:00:00Z",
                "lastTransitionTime": "2026-12-01T00:00:00Z"}]}})),
        )
        .await
        .unwrap();

    let agent = AgentProcess::start(&child_env, &child_account);
    // The leader routes the cell's Service to itself.
    let slices: Api<DynamicObject> = Api::namespaced_with(
        parent.clone(),
        "lattice-system",
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("discovery.k8s.io", "v1", "EndpointSlice"),
            "endpointslices",
        ),
    );
    let slice = eventually("the cell's EndpointSlice", || async {
        slices.get_opt("lattice-cell-leader").await.unwrap()
    })
    .await;
    assert_eq!(slice.data["endpoints"][0]["addresses"][0], "10.1.2.3");
    assert_eq!(slice.data["ports"][0]["port"], port);
    assert_eq!(
        slice.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"],
        "lattice-cell"
    );
    let status = eventually("the child's health in the parent's status", || async {
        let s = cluster_status(&parent, "edge").await;
        (s["agentConnected"] == json!(true) && s["health"]["nodesReady"] == json!(1)).then_some(s)
    })
    .await;
    assert_eq!(status["health"]["nodesTotal"], 1);
    assert_eq!(status["health"]["controlPlaneReady"], true, "{status}");
    assert!(
        status["health"]["kubernetesVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1."),
        "{status}"
    );
    // The token was used: gone from both Secrets; the agent kept its credentials.
    eventually("the used token is cleared on the parent", || async {
        let s = secret(&parent, "lattice-bootstrap-edge").await?;
        (!s.data?.contains_key("token")).then_some(())
    })
    .await;
    let creds = secret(&child, "lattice-agent-credentials")
        .await
        .expect("the agent's credentials");
    assert!(creds.data.unwrap().contains_key("tls.key.der"));

    // A propagated policy reaches the child, labelled as inherited and stamped; a local
    // one does not.
    let cedar = lattice_resource(Kind::CedarPolicy);
    apply(&parent, &cedar, &policy("fleet-rules", true)).await;
    apply(&parent, &cedar, &policy("parent-only", false)).await;
    let inherited = eventually("the inherited policy on the child", || async {
        policies(&child)
            .await
            .into_iter()
            .find(|p| p["metadata"]["name"] == "fleet-rules")
    })
    .await;
    assert_eq!(
        inherited["metadata"]["labels"]["lattice.dev/inherited-from"],
        "root"
    );
    assert_eq!(inherited["metadata"]["labels"]["team"], "platform");
    assert!(inherited["metadata"]["annotations"]["lattice.dev/admitted"].is_string());
    assert!(
        !policies(&child)
            .await
            .iter()
            .any(|p| p["metadata"]["name"] == "parent-only")
    );
    // So does a TrustPolicy labelled lattice.dev/propagate, as it is.
    apply(&parent, &lattice_resource(Kind::TrustPolicy), &trust(true)).await;
    let trusted = eventually("the inherited TrustPolicy on the child", || async {
        trust_policies(&child)
            .await
            .into_iter()
            .find(|p| p["metadata"]["name"] == "fleet-trust")
    })
    .await;
    assert_eq!(
        trusted["metadata"]["labels"]["lattice.dev/inherited-from"],
        "root"
    );
    assert_eq!(trusted["spec"], trust(true)["spec"]);

    // Two hops: the child is a parent too (its own cell, its own child `leaf`), and what it
    // inherited, in force there, goes on down as inherited from it.
    let leaf_env = TestEnv::start("leaf");
    let leaf = leaf_env.client().await;
    install_crds(&leaf).await;
    namespace(&leaf, "lattice-system").await;
    apply_yaml(&child, &world(&[("leaf", Some("edge"))])).await;
    child_env.operator_account().await;
    let edge_account = child_env
        .account("deploy/cell/rbac.yaml", "lattice-operator")
        .await;
    let edge_listen = format!("127.0.0.1:{}", free_port());
    let _edge_operator = Operator::start_with(
        &child_env,
        "edge",
        &edge_account,
        "lattice-system",
        &[
            "--cell-listen",
            edge_listen.as_str(),
            "--cluster-name",
            "edge",
            "--cell-address",
            "127.0.0.1",
            "--heartbeat-seconds",
            "1",
        ],
    );
    install_bundle(&child, "leaf", &leaf).await;
    let leaf_account = leaf_env
        .account("deploy/agent/rbac.yaml", "lattice-agent")
        .await;
    let _leaf_agent = AgentProcess::start(&leaf_env, &leaf_account);
    let two_hops = eventually("the policy two hops down", || async {
        policies(&leaf)
            .await
            .into_iter()
            .find(|p| p["metadata"]["name"] == "fleet-rules")
    })
    .await;
    assert_eq!(
        two_hops["metadata"]["labels"]["lattice.dev/inherited-from"],
        "edge"
    );
    assert_eq!(two_hops["spec"], inherited["spec"]);
    eventually("the TrustPolicy two hops down", || async {
        trust_policies(&leaf).await.into_iter().find(|p| {
            p["metadata"]["name"] == "fleet-trust"
                && p["metadata"]["labels"]["lattice.dev/inherited-from"] == "edge"
        })
    })
    .await;

    // The parent stops: the child keeps what it inherited.
    operator.stop();
    eventually("the agent notices", || async {
        agent.logs().contains("tunnel down").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        policies(&child)
            .await
            .iter()
            .any(|p| p["metadata"]["name"] == "fleet-rules"),
        "offline, the child keeps its inherited policies"
    );

    // The parent returns (same CA, from its Secret): the agent reconnects, and a
    // withdrawn policy is removed on the child.
    apply(&parent, &cedar, &policy("fleet-rules", false)).await;
    apply(&parent, &lattice_resource(Kind::TrustPolicy), &trust(false)).await;
    let _operator = start();
    eventually("the withdrawn policy is deleted on the child", || async {
        (!policies(&child)
            .await
            .iter()
            .any(|p| p["metadata"]["name"] == "fleet-rules"))
        .then_some(())
    })
    .await;
    eventually("and two hops down", || async {
        (!policies(&leaf)
            .await
            .iter()
            .any(|p| p["metadata"]["name"] == "fleet-rules"))
        .then_some(())
    })
    .await;
    eventually("the unmarked TrustPolicy is withdrawn on both", || async {
        let gone = |l: Vec<Value>| !l.iter().any(|p| p["metadata"]["name"] == "fleet-trust");
        (gone(trust_policies(&child).await) && gone(trust_policies(&leaf).await)).then_some(())
    })
    .await;
    assert_eq!(
        agent.logs().matches("bootstrapped").count(),
        1,
        "it reconnected with its certificate, not a new bootstrap"
    );

    // The child is deleted while it still manages leaf: the baseline's
    // decommission-only-empty holds it, with the policy in its status.
    let clusters: Api<DynamicObject> =
        Api::all_with(parent.clone(), &lattice_resource(Kind::LatticeCluster));
    clusters
        .delete("edge", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "edge's decommission is held while it manages leaf",
        || async {
            let s = cluster_status(&parent, "edge").await;
            let d = s["decisions"]
                .as_array()?
                .iter()
                .find(|d| d["action"] == "Decommission")?
                .clone();
            (d["allowed"] == false && d["policies"] == json!(["baseline/decommission-only-empty"]))
                .then_some(())
        },
    )
    .await;
    assert!(clusters.get_opt("edge").await.unwrap().is_some());
    assert!(secret(&parent, "lattice-bootstrap-edge").await.is_some());
    // leaf is deleted on edge (edge's cell decommissions it), edge reports no cluster below
    // it any more, and edge's decommission proceeds: its bootstrap Secret goes and its
    // certificate is revoked.
    let on_edge: Api<DynamicObject> =
        Api::all_with(child.clone(), &lattice_resource(Kind::LatticeCluster));
    on_edge
        .delete("leaf", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the child's certificates are revoked", || async {
        let s = secret(&parent, "lattice-cell-ca").await?;
        let revoked = String::from_utf8(s.data?.get("revoked")?.0.clone()).ok()?;
        revoked.contains("cluster edge").then_some(())
    })
    .await;
    assert!(secret(&parent, "lattice-bootstrap-edge").await.is_none());
    eventually("the agent is refused", || async {
        agent.logs().contains("revoked").then_some(())
    })
    .await;
}
