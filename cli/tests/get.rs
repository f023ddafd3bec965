//! `lattice get` against a real API server (`tools/testenv`) holding a three-level fleet:
//! root, its children edge and lab, and leaf below edge, known only from edge's status
//! (as root's cell writes it from edge's heartbeats). The output is compared with golden
//! files (`tests/golden/`, ages and heartbeat ages normalized); `LATTICE_UPDATE_GENERATED=1`
//! rewrites them.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::{client, cluster, seed, start};

fn lattice(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `text` with each line's ages (`12s`, `3m`, `5h`, `2d`, and `… ago`) as `<age>`.
fn normalized(text: &str) -> String {
    text.lines()
        .map(|line| {
            line.split(' ')
                .map(|word| {
                    let digits = word.trim_end_matches(['s', 'm', 'h', 'd']);
                    if !word.is_empty()
                        && digits.len() + 1 == word.len()
                        && digits.chars().all(|c| c.is_ascii_digit())
                        && !digits.is_empty()
                    {
                        "<age>"
                    } else {
                        word
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        })
        .collect()
}

fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("LATTICE_UPDATE_GENERATED").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (LATTICE_UPDATE_GENERATED=1 writes it)",
            path.display()
        )
    });
    assert_eq!(got, want, "{name} differs from its golden file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shows_the_fleet_as_it_is() {
    let env = start();
    let client = client(&env.kubeconfig).await;
    let beat = jiff::Timestamp::now().to_string();
    let health = |ready: i64, total: i64| {
        json!({"nodesReady": ready, "nodesTotal": total, "controlPlaneReady": ready > 0,
               "kubernetesVersion": "v1.32.4", "agentVersion": "0.1.0", "lastHeartbeatTime": beat})
    };
    seed(
        &client,
        &[
            (
                cluster("root", None, "proxmox", json!({"general": {"replicas": 3}})),
                json!({"phase": "Ready", "ready": true, "pivoted": true}),
            ),
            (
                cluster(
                    "edge",
                    Some("root"),
                    "aws",
                    json!({"general": {"replicas": 2, "min": 2, "max": 6}, "gpu": {"replicas": 1}}),
                ),
                json!({"phase": "Ready", "ready": true, "pivoted": true, "agentConnected": true,
                       "health": health(6, 6),
                       "descendants": [{"name": "leaf", "parent": "edge", "environment": "lab",
                                        "phase": "Ready", "ready": true, "agentConnected": true,
                                        "health": health(2, 3)}]}),
            ),
            (
                cluster("lab", Some("root"), "docker", json!({"default": {"replicas": 2}})),
                json!({"phase": "Provisioning", "agentConnected": false,
                       "decisions": [{"action": "Pivot", "principal": "root", "allowed": false,
                                      "policies": ["lattice-system/hold-pivot/hold"],
                                      "advice": ["Pivots wait for the storage migration."],
                                      "snapshot": "sha256:0", "time": "2026-12-03T12:00:00Z"}],
                       "conditions": [{"type": "PivotAllowed", "status": "False", "reason": "Denied",
                                       "message": "Pivot by Cluster::\"root\": denied (by lattice-system/hold-pivot/hold)"}]}),
            ),
        ],
    )
    .await;
    let kc = &env.kubeconfig;

    let (code, out, err) = lattice(kc, &["get", "clusters"]);
    assert_eq!(code, 0, "{err}");
    golden("get-clusters.txt", &normalized(&out));
    let (code, out, err) = lattice(kc, &["get", "hierarchy"]);
    assert_eq!(code, 0, "{err}");
    golden("get-hierarchy.txt", &out);
    let (code, out, err) = lattice(kc, &["get", "health"]);
    assert_eq!(code, 0, "{err}");
    golden("get-health.txt", &normalized(&out));
    let (code, out, err) = lattice(kc, &["get", "cluster", "lab"]);
    assert_eq!(code, 0, "{err}");
    golden("get-cluster-lab.txt", &normalized(&out));

    // Machines read the same facts.
    let (code, out, _) = lattice(kc, &["get", "clusters", "-o", "json"]);
    assert_eq!(code, 0);
    let all: Vec<Value> = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = all.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["edge", "lab", "leaf", "root"]);
    let leaf = &all[2];
    assert_eq!(leaf["parent"], "edge");
    assert_eq!(leaf["reportedByParent"], true);
    assert_eq!(leaf["health"]["nodesReady"], 2);
    let (code, out, _) = lattice(kc, &["get", "cluster", "edge", "-o", "yaml"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("kind: LatticeCluster") && out.contains("name: leaf"),
        "{out}"
    );

    // Documented exit codes: 1 for a cluster not in the fleet, 2 for a server not reached.
    let (code, _, err) = lattice(kc, &["get", "cluster", "nowhere"]);
    assert_eq!(code, 1);
    assert!(err.contains("no cluster \"nowhere\""), "{err}");
    let missing = std::env::temp_dir().join("lattice-cli-no-such-kubeconfig");
    let (code, _, err) = lattice(&missing, &["get", "clusters"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
    drop(env);
}
