//! The bootstrap half: the control plane (`KubeadmControlPlane`, or `RKE2ControlPlane` for
//! `bootstrap: rke2`), each worker pool's bootstrap template, and the hook that joins the
//! new cluster to its parent.
//!
//! The hook runs on every control-plane node once Kubernetes is up. It fetches the
//! cluster's agent manifests from the parent's bootstrap endpoint
//! (`GET https://HOST:PORT/v1/bootstrap/<cluster>`, `Authorization: Bearer <token>`,
//! checked against the parent's CA) and applies them; the agent then dials out to the
//! parent's cell with the same one-time token and its own CSR. The token and the CA reach
//! the node from the Secret [`secret_name`] in the cluster's CAPI namespace (through
//! `contentFrom`, never in a spec), which the cluster controller writes from the parent's
//! bootstrap bundle. Applying is idempotent, so every control-plane node may run it.

use std::collections::BTreeMap;

use lattice_schemas::crd::cluster::{Bootstrap, LatticeClusterSpec, WorkerPool};
use serde_json::{Value, json};

use crate::capi::{self, metadata};
use crate::provider::{Infrastructure, VirtualIp};

/// Where a new cluster's first control-plane node fetches its agent: the parent's
/// bootstrap endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapEndpoint {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for BootstrapEndpoint {
    type Err = String;

    /// `HOST:PORT` (a name or an address; an IPv6 address in brackets).
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{s:?}: {port:?} is not a port"))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let valid = !bare.is_empty()
            && (bare.parse::<std::net::IpAddr>().is_ok()
                || bare.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !valid {
            return Err(format!("{s:?}: {host:?} is not a host name or address"));
        }
        Ok(BootstrapEndpoint {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for BootstrapEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// kube-vip, which announces a Proxmox cluster's endpoint address from its control plane.
pub const KUBE_VIP_IMAGE: &str = "ghcr.io/kube-vip/kube-vip:v0.8.9";

/// The Secret (in the cluster's CAPI namespace) holding the bootstrap token (`token`) and
/// the parent's CA (`ca.crt`).
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-lattice-bootstrap")
}

/// Where the hook's files go on a node.
const TOKEN_PATH: &str = "/etc/lattice/bootstrap-token";
const CA_PATH: &str = "/etc/lattice/parent-ca.crt";
const SCRIPT_PATH: &str = "/etc/lattice/bootstrap.sh";

/// How one distribution lays out a node.
struct Distribution {
    kubectl: &'static str,
    kubeconfig: &'static str,
    static_pods: &'static str,
}

const KUBEADM: Distribution = Distribution {
    kubectl: "kubectl",
    kubeconfig: "/etc/kubernetes/admin.conf",
    static_pods: "/etc/kubernetes/manifests",
};
const RKE2: Distribution = Distribution {
    kubectl: "/var/lib/rancher/rke2/bin/kubectl",
    kubeconfig: "/etc/rancher/rke2/rke2.yaml",
    static_pods: "/var/lib/rancher/rke2/agent/pod-manifests",
};

fn distribution(bootstrap: Bootstrap) -> &'static Distribution {
    match bootstrap {
        Bootstrap::Kubeadm => &KUBEADM,
        Bootstrap::Rke2 => &RKE2,
    }
}

/// The hook's script: fetch (retrying while the parent is unreachable), then apply.
fn script(cluster: &str, endpoint: &BootstrapEndpoint, d: &Distribution) -> String {
    format!(
        r#"#!/bin/sh
# Joins this cluster to its Lattice parent: fetches the agent's manifests with the
# one-time bootstrap token and applies them; the agent then dials out to the parent.
set -eu
token="$(cat {TOKEN_PATH})"
for attempt in $(seq 1 60); do
  if curl -fsS --cacert {CA_PATH} -H "Authorization: Bearer ${{token}}" \
      -o /etc/lattice/agent.yaml "https://{host}:{port}/v1/bootstrap/{cluster}"; then
    exec {kubectl} --kubeconfig {kubeconfig} apply -f /etc/lattice/agent.yaml
  fi
  echo "lattice bootstrap: parent not reachable (attempt ${{attempt}}); retrying" >&2
  sleep 10
done
echo "lattice bootstrap: gave up reaching the parent" >&2
exit 1
"#,
        host = endpoint.host,
        port = endpoint.port,
        kubectl = d.kubectl,
        kubeconfig = d.kubeconfig,
    )
}

/// The hook's files on a control-plane node: the token and CA from the bootstrap Secret,
/// and the script.
fn hook_files(cluster: &str, endpoint: &BootstrapEndpoint, d: &Distribution) -> Vec<Value> {
    let from = |key: &str| json!({"secret": {"name": secret_name(cluster), "key": key}});
    vec![
        json!({"path": TOKEN_PATH, "owner": "root:root", "permissions": "0600", "contentFrom": from("token")}),
        json!({"path": CA_PATH, "owner": "root:root", "permissions": "0644", "contentFrom": from("ca.crt")}),
        json!({"path": SCRIPT_PATH, "owner": "root:root", "permissions": "0700", "content": script(cluster, endpoint, d)}),
    ]
}

/// kube-vip as a static pod on each control-plane node, announcing `vip` by ARP from
/// whichever node leads.
fn kube_vip(vip: &VirtualIp, d: &Distribution) -> Value {
    let env: String = [
        ("vip_arp", "true"),
        ("port", "6443"),
        ("vip_interface", vip.interface.as_str()),
        ("vip_cidr", "32"),
        ("cp_enable", "true"),
        ("cp_namespace", "kube-system"),
        ("vip_leaderelection", "true"),
        ("vip_leasename", "plndr-cp-lock"),
        ("vip_leaseduration", "15"),
        ("vip_renewdeadline", "10"),
        ("vip_retryperiod", "2"),
        ("address", vip.address.as_str()),
    ]
    .iter()
    .map(|(k, v)| format!("    - name: {k}\n      value: \"{v}\"\n"))
    .collect();
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-vip\n  namespace: kube-system\nspec:\n  hostNetwork: true\n  containers:\n  - name: kube-vip\n    image: {KUBE_VIP_IMAGE}\n    args: [manager]\n    env:\n{env}    securityContext:\n      capabilities:\n        add: [NET_ADMIN, NET_RAW]\n    volumeMounts:\n    - mountPath: /etc/kubernetes/admin.conf\n      name: kubeconfig\n  hostAliases:\n  - hostnames: [kubernetes]\n    ip: 127.0.0.1\n  volumes:\n  - name: kubeconfig\n    hostPath:\n      path: {kubeconfig}\n",
        kubeconfig = d.kubeconfig,
    );
    json!({
        "path": format!("{}/kube-vip.yaml", d.static_pods),
        "owner": "root:root",
        "permissions": "0644",
        "content": manifest,
    })
}

/// The control plane of cluster `name`, running `infra.control_plane` machines.
pub fn control_plane(
    name: &str,
    spec: &LatticeClusterSpec,
    infra: &Infrastructure,
    endpoint: Option<&BootstrapEndpoint>,
) -> Value {
    let bootstrap = spec.provider.kubernetes.bootstrap.unwrap_or_default();
    let d = distribution(bootstrap);
    let mut files = Vec::new();
    if let Some(vip) = &infra.virtual_ip {
        files.push(kube_vip(vip, d));
    }
    let mut after = Vec::new();
    if let Some(endpoint) = endpoint {
        files.extend(hook_files(name, endpoint, d));
        after.push(format!("sh {SCRIPT_PATH}"));
    }
    let template_ref = capi::reference_to(&infra.control_plane);
    let cp_name = format!("{name}-control-plane");
    let version = capi::kubernetes_version(&spec.provider.kubernetes.version);
    match bootstrap {
        Bootstrap::Kubeadm => {
            let registration = node_registration(infra, &BTreeMap::new());
            // CAPI refuses an empty file list and an empty config: each goes in only when
            // it holds something (a root `lattice install` makes on Docker holds neither).
            let mut config = json!({});
            if !files.is_empty() {
                config["files"] = json!(files);
            }
            if !after.is_empty() {
                config["postKubeadmCommands"] = json!(after);
            }
            // CAPI refuses an empty nodeRegistration.
            if registration.as_object().is_some_and(|r| !r.is_empty()) {
                config["initConfiguration"] = json!({"nodeRegistration": registration.clone()});
                config["joinConfiguration"] = json!({"nodeRegistration": registration});
            }
            let mut control_plane = json!({
                "apiVersion": capi::KUBEADM_CONTROL_PLANE_VERSION,
                "kind": "KubeadmControlPlane",
                "metadata": metadata(name, &cp_name),
                "spec": {
                    "replicas": spec.nodes.control_plane,
                    "version": version,
                    "machineTemplate": {"spec": {"infrastructureRef": template_ref}},
                },
            });
            if config.as_object().is_some_and(|c| !c.is_empty()) {
                control_plane["spec"]["kubeadmConfigSpec"] = config;
            }
            control_plane
        }
        Bootstrap::Rke2 => {
            let mut server = json!({"cni": "none"});
            if infra.external_cloud_provider {
                server["cloudProviderName"] = json!("external");
            }
            let mut control_plane = json!({
                "apiVersion": capi::RKE2_CONTROL_PLANE_VERSION,
                "kind": "RKE2ControlPlane",
                "metadata": metadata(name, &cp_name),
                "spec": {
                    "replicas": spec.nodes.control_plane,
                    "version": format!("{version}+rke2r1"),
                    "machineTemplate": {"spec": {"infrastructureRef": template_ref}},
                    "registrationMethod": "control-plane-endpoint",
                    "rolloutStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                    "serverConfig": server,
                },
            });
            if !files.is_empty() {
                control_plane["spec"]["files"] = json!(files);
            }
            if !after.is_empty() {
                control_plane["spec"]["postRKE2Commands"] = json!(after);
            }
            control_plane
        }
    }
}

/// Kubeadm's node registration: node labels and, on a cloud, the external cloud provider.
fn node_registration(infra: &Infrastructure, labels: &BTreeMap<String, String>) -> Value {
    let mut args = Vec::new();
    if infra.external_cloud_provider {
        args.push(json!({"name": "cloud-provider", "value": "external"}));
    }
    if !labels.is_empty() {
        let joined = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        args.push(json!({"name": "node-labels", "value": joined}));
    }
    if args.is_empty() {
        json!({})
    } else {
        json!({"kubeletExtraArgs": args})
    }
}

/// The labels every node of pool `pool` carries: the pool's own and [`capi::POOL_LABEL`].
pub fn pool_labels(pool: &str, p: &WorkerPool) -> BTreeMap<String, String> {
    let mut labels = p.labels.clone();
    labels.insert(capi::POOL_LABEL.into(), pool.into());
    labels
}

/// The bootstrap template of worker pool `pool`.
pub fn worker_template(
    name: &str,
    pool: &str,
    p: &WorkerPool,
    spec: &LatticeClusterSpec,
    infra: &Infrastructure,
) -> Value {
    let labels = pool_labels(pool, p);
    let template_name = format!("{name}-{pool}");
    match spec.provider.kubernetes.bootstrap.unwrap_or_default() {
        Bootstrap::Kubeadm => json!({
            "apiVersion": capi::KUBEADM_BOOTSTRAP_VERSION,
            "kind": "KubeadmConfigTemplate",
            "metadata": metadata(name, &template_name),
            "spec": {"template": {"spec": {
                "joinConfiguration": {"nodeRegistration": node_registration(infra, &labels)},
            }}},
        }),
        Bootstrap::Rke2 => {
            let node_labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut agent = json!({"nodeLabels": node_labels});
            if infra.external_cloud_provider {
                agent["kubelet"] = json!({"extraArgs": ["cloud-provider=external"]});
            }
            json!({
                "apiVersion": capi::RKE2_BOOTSTRAP_VERSION,
                "kind": "RKE2ConfigTemplate",
                "metadata": metadata(name, &template_name),
                "spec": {"template": {"spec": {
                    "agentConfig": agent,
                }}},
            })
        }
    }
}
