//! A cluster's worth of plain Kubernetes manifests, as `helm template` writes them: `n`
//! Deployments in 50 namespaces (every fifth one runs privileged on the host network, every
//! third one reads a Secret into its environment, the rest meet the restricted standard),
//! and `rbac` RBAC objects (a quarter each of Roles, ClusterRoles, RoleBindings and
//! ClusterRoleBindings; some roles use wildcards or read Secrets). One ClusterRoleBinding
//! grants cluster-admin to `system:anonymous`.

use std::fmt::Write as _;
use std::path::Path;

pub const NAMESPACES: usize = 50;

fn deployment(i: usize) -> String {
    let ns = i % NAMESPACES;
    let security = if i.is_multiple_of(5) {
        "      hostNetwork: true\n      containers:\n        - name: agent\n          image: quay.io/vendor/agent:2.1\n          securityContext:\n            privileged: true\n"
            .to_owned()
    } else {
        "      automountServiceAccountToken: false\n      securityContext:\n        runAsNonRoot: true\n        seccompProfile:\n          type: RuntimeDefault\n      containers:\n        - name: app\n          image: ghcr.io/org/app:1.0@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945\n          securityContext:\n            allowPrivilegeEscalation: false\n            readOnlyRootFilesystem: true\n            capabilities:\n              drop: [ALL]\n          resources:\n            limits:\n              cpu: 500m\n              memory: 256Mi\n"
            .to_owned()
    };
    let env = if i.is_multiple_of(3) {
        "          env:\n            - name: DB_PASSWORD\n              valueFrom:\n                secretKeyRef:\n                  name: db\n                  key: password\n"
    } else {
        ""
    };
    format!(
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app{i}\n  namespace: ns{ns}\n  labels:\n    app.kubernetes.io/name: app{i}\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: app{i}\n  template:\n    metadata:\n      labels:\n        app.kubernetes.io/name: app{i}\n    spec:\n      serviceAccountName: app{i}\n{security}{env}"
    )
}

fn rbac(i: usize) -> String {
    let ns = i % NAMESPACES;
    let rules = match i % 8 {
        0 => "rules:\n  - apiGroups: [\"*\"]\n    resources: [\"*\"]\n    verbs: [\"*\"]\n",
        1 => "rules:\n  - apiGroups: [\"\"]\n    resources: [secrets]\n    verbs: [get, list]\n",
        _ => {
            "rules:\n  - apiGroups: [apps]\n    resources: [deployments]\n    verbs: [get, list, watch]\n"
        }
    };
    let subjects =
        format!("subjects:\n  - kind: ServiceAccount\n    name: app{i}\n    namespace: ns{ns}\n");
    match i % 4 {
        0 => format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: role{i}\n  namespace: ns{ns}\n{rules}"
        ),
        1 => format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: clusterrole{i}\n{rules}"
        ),
        2 => format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: binding{i}\n  namespace: ns{ns}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: role{}\n{subjects}",
            i - 2
        ),
        _ => format!(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: clusterbinding{i}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: clusterrole{}\n{subjects}",
            i - 2
        ),
    }
}

/// Writes the manifests: one file per namespace of Deployments, one of RBAC, and the
/// namespaces themselves (enforcing baseline, warning at restricted).
pub fn generate(dir: &Path, n: usize, rbac_objects: usize) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut files = vec![String::new(); NAMESPACES];
    for i in 0..n {
        files[i % NAMESPACES].push_str(&deployment(i));
    }
    for (k, text) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("ns{k}.yaml")), text).unwrap();
    }
    let mut namespaces = String::new();
    for k in 0..NAMESPACES {
        let _ = write!(
            namespaces,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns{k}\n  labels:\n    pod-security.kubernetes.io/enforce: baseline\n    pod-security.kubernetes.io/warn: restricted\n"
        );
    }
    std::fs::write(dir.join("namespaces.yaml"), namespaces).unwrap();
    let mut text: String = (0..rbac_objects.saturating_sub(1)).map(rbac).collect();
    text.push_str("---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: anonymous-admin\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n  - kind: User\n    name: system:anonymous\n    apiGroup: rbac.authorization.k8s.io\n");
    std::fs::write(dir.join("rbac.yaml"), text).unwrap();
}
