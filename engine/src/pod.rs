//! The projection of a Kubernetes object that carries a pod (a Pod, or a workload with a pod
//! template) into a `Pod` entity and one `Container` entity per container, init container
//! and ephemeral container (DESIGN §5).
//!
//! Each container holds its settings resolved as Kubernetes resolves them: the container's
//! own security context, else the pod's. The pod holds its own settings as written, so a
//! policy can tell a bad pod-level setting that every container overrides (the Pod Security
//! Standards refuse that too). Only the fields the decisions read are parsed; a field of the
//! wrong type is an error, never a default, so a malformed object is refused rather than
//! judged on what could be read of it.

use std::collections::{BTreeMap, BTreeSet};

use cedar_policy::{Entity, EntityUid};

use crate::attr::Rx;
use lattice_schemas::image::ImageRef;
use serde::Deserialize;
use serde_json::Value;

use crate::entity::{entity_with_tags, image_uid_text, s, uid};

/// The kinds that carry a pod, with the path to the pod template's object (empty for a Pod
/// itself, whose metadata and spec are its own).
pub const POD_KINDS: [(&str, &[&str]); 9] = [
    ("Pod", &[]),
    ("Deployment", &["spec", "template"]),
    ("ReplicaSet", &["spec", "template"]),
    ("StatefulSet", &["spec", "template"]),
    ("DaemonSet", &["spec", "template"]),
    ("Job", &["spec", "template"]),
    ("CronJob", &["spec", "jobTemplate", "spec", "template"]),
    ("ReplicationController", &["spec", "template"]),
    ("PodTemplate", &["template"]),
];

/// Volume sources, by their field names in `VolumeSource` (Kubernetes 1.33), named as Pod
/// Security Admission names them.
const VOLUME_SOURCES: [&str; 30] = [
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION: &str = "container.seccomp.security.alpha.kubernetes.io/";
const APPARMOR_ANNOTATION: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Whether objects of this kind carry a pod.
pub fn carries_pod(kind: &str) -> bool {
    POD_KINDS.iter().any(|(k, _)| *k == kind)
}

/// The entities of the pod an object runs.
#[derive(Clone, Debug)]
pub struct PodEntities {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    /// `Lattice::Pod::"ns/Kind/name"`.
    pub pod: EntityUid,
    /// The pod's containers, in PSA's order: init containers, containers, ephemeral
    /// containers.
    pub containers: Vec<EntityUid>,
    /// The images the containers run (normalized `Image` uids).
    pub images: Vec<String>,
    /// The `Pod` and `Container` entities (not the images).
    pub entities: Vec<Entity>,
}

/// Why an object's pod cannot be projected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {message}")]
pub struct PodError {
    pub kind: String,
    pub name: String,
    pub message: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    host_network: Option<bool>,
    #[serde(rename = "hostPID")]
    host_pid: Option<bool>,
    #[serde(rename = "hostIPC")]
    host_ipc: Option<bool>,
    host_users: Option<bool>,
    os: Option<PodOs>,
    runtime_class_name: Option<String>,
    service_account_name: Option<String>,
    automount_service_account_token: Option<bool>,
    volumes: Option<Vec<serde_json::Map<String, Value>>>,
    security_context: Option<PodSecurity>,
    init_containers: Option<Vec<ContainerSpec>>,
    containers: Option<Vec<ContainerSpec>>,
    ephemeral_containers: Option<Vec<ContainerSpec>>,
}

#[derive(Deserialize, Default)]
struct PodOs {
    name: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct PodSecurity {
    run_as_non_root: Option<bool>,
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    seccomp_profile: Option<Profile>,
    app_armor_profile: Option<Profile>,
    #[serde(rename = "seLinuxOptions")]
    se_linux_options: Option<SeLinux>,
    sysctls: Option<Vec<Sysctl>>,
    windows_options: Option<WindowsOptions>,
}

#[derive(Deserialize, Default, Clone)]
struct Profile {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct SeLinux {
    #[serde(rename = "type")]
    kind: Option<String>,
    user: Option<String>,
    role: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct Sysctl {
    name: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct WindowsOptions {
    host_process: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ContainerSpec {
    name: Option<String>,
    image: Option<String>,
    ports: Option<Vec<ContainerPort>>,
    resources: Option<Resources>,
    restart_policy: Option<String>,
    security_context: Option<ContainerSecurity>,
    env: Option<Vec<EnvVar>>,
    env_from: Option<Vec<EnvFrom>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EnvVar {
    value_from: Option<EnvVarSource>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EnvVarSource {
    secret_key_ref: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EnvFrom {
    secret_ref: Option<Value>,
}

impl ContainerSpec {
    /// Some variable of it is read from a Secret (`secretKeyRef` or an `envFrom` Secret).
    fn secrets_in_env(&self) -> bool {
        let set = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
        self.env.iter().flatten().any(|e| {
            e.value_from
                .as_ref()
                .is_some_and(|s| set(&s.secret_key_ref))
        }) || self.env_from.iter().flatten().any(|e| set(&e.secret_ref))
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    host_port: Option<i64>,
}

#[derive(Deserialize, Default)]
struct Resources {
    limits: Option<BTreeMap<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ContainerSecurity {
    privileged: Option<bool>,
    allow_privilege_escalation: Option<bool>,
    read_only_root_filesystem: Option<bool>,
    run_as_non_root: Option<bool>,
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    capabilities: Option<Capabilities>,
    seccomp_profile: Option<Profile>,
    app_armor_profile: Option<Profile>,
    #[serde(rename = "seLinuxOptions")]
    se_linux_options: Option<SeLinux>,
    proc_mount: Option<String>,
    windows_options: Option<WindowsOptions>,
}

#[derive(Deserialize, Default)]
struct Capabilities {
    add: Option<Vec<String>>,
    drop: Option<Vec<String>>,
}

/// The pod template of an object of `kind`, or `None` when the kind carries no pod. A
/// template that is absent or not a mapping is an empty one.
pub fn template<'a>(kind: &str, object: &'a Value) -> Option<&'a Value> {
    let (_, path) = POD_KINDS.iter().find(|(k, _)| *k == kind)?;
    let mut at = object;
    for step in *path {
        at = at.get(step).unwrap_or(&Value::Null);
    }
    Some(at)
}

/// Projects the pod `object` (of `kind`) runs, in `namespace` when the object names none.
/// `Ok(None)` when the kind carries no pod.
pub fn project(
    kind: &str,
    object: &Value,
    namespace: &str,
) -> Result<Option<PodEntities>, PodError> {
    let Some(pod) = template(kind, object) else {
        return Ok(None);
    };
    let object_meta: Metadata = field(object, "metadata").unwrap_or_default();
    let name = object_meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or(object_meta.generate_name.clone())
        .unwrap_or_default();
    let fail = |message: String| PodError {
        kind: kind.to_owned(),
        name: name.clone(),
        message,
    };
    let meta: Metadata = parse(pod, "metadata").map_err(&fail)?;
    let spec: PodSpec = parse(pod, "spec").map_err(&fail)?;
    let namespace = object_meta
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| namespace.to_owned());
    let pod_uid = uid("Pod", &format!("{namespace}/{kind}/{name}"));
    let psc = spec.security_context.clone().unwrap_or_default();
    let windows = spec.os.as_ref().and_then(|o| o.name.as_deref()) == Some("windows");
    let annotations = meta.annotations.clone().unwrap_or_default();

    let init = spec.init_containers.unwrap_or_default();
    let main = spec.containers.unwrap_or_default();
    let ephemeral = spec.ephemeral_containers.unwrap_or_default();
    let all: Vec<(&str, &ContainerSpec)> = init
        .iter()
        .map(|c| ("initContainer", c))
        .chain(main.iter().map(|c| ("container", c)))
        .chain(ephemeral.iter().map(|c| ("ephemeralContainer", c)))
        .collect();

    let mut seccomp_annotations = BTreeSet::new();
    if let Some(v) = annotations.get(SECCOMP_POD_ANNOTATION) {
        seccomp_annotations.insert(annotation_value(v));
    }
    for (_, c) in &all {
        let key = format!(
            "{SECCOMP_CONTAINER_ANNOTATION}{}",
            c.name.as_deref().unwrap_or("")
        );
        if let Some(v) = annotations.get(&key) {
            seccomp_annotations.insert(annotation_value(v));
        }
    }
    let apparmor_annotations: BTreeSet<String> = annotations
        .iter()
        .filter(|(k, _)| k.starts_with(APPARMOR_ANNOTATION))
        .map(|(_, v)| annotation_value(v))
        .collect();
    let volume_types: BTreeSet<String> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| volume_type(v).to_owned())
        .collect();
    let sysctls: BTreeSet<String> = psc
        .sysctls
        .iter()
        .flatten()
        .map(|s| s.name.clone().unwrap_or_default())
        .collect();
    let selinux = psc.se_linux_options.clone().unwrap_or_default();
    let secrets_in_env = all.iter().any(|(_, c)| c.secrets_in_env());

    let mut entities = Vec::with_capacity(all.len() + 1);
    entities.push(
        entity_with_tags(
            pod_uid.clone(),
            vec![
                ("kind", s(kind)),
                ("name", s(&name)),
                ("namespace", s(&namespace)),
                ("hostNetwork", Rx::new_bool(spec.host_network == Some(true))),
                ("hostPID", Rx::new_bool(spec.host_pid == Some(true))),
                ("hostIPC", Rx::new_bool(spec.host_ipc == Some(true))),
                ("hostUsers", Rx::new_bool(spec.host_users != Some(false))),
                ("windows", Rx::new_bool(windows)),
                (
                    "runtimeClassName",
                    s(spec.runtime_class_name.as_deref().unwrap_or("")),
                ),
                (
                    "serviceAccountName",
                    s(spec.service_account_name.as_deref().unwrap_or("")),
                ),
                (
                    "automountServiceAccountToken",
                    Rx::new_bool(spec.automount_service_account_token != Some(false)),
                ),
                ("volumeTypes", set(&volume_types)),
                ("sysctls", set(&sysctls)),
                (
                    "runAsNonRoot",
                    s(match psc.run_as_non_root {
                        Some(true) => "true",
                        Some(false) => "false",
                        None => "",
                    }),
                ),
                ("runAsUser", Rx::new_long(psc.run_as_user.unwrap_or(-1))),
                ("seccompProfile", s(&profile_type(&psc.seccomp_profile))),
                ("appArmorProfile", s(&profile_type(&psc.app_armor_profile))),
                ("seLinuxType", s(selinux.kind.as_deref().unwrap_or(""))),
                ("seLinuxUser", s(selinux.user.as_deref().unwrap_or(""))),
                ("seLinuxRole", s(selinux.role.as_deref().unwrap_or(""))),
                (
                    "hostProcess",
                    Rx::new_bool(host_process(&psc.windows_options) == Some(true)),
                ),
                ("seccompAnnotations", set(&seccomp_annotations)),
                ("appArmorAnnotations", set(&apparmor_annotations)),
                ("secretsInEnv", Rx::new_bool(secrets_in_env)),
            ],
            [uid("Namespace", &namespace)],
            meta.labels.as_ref(),
        )
        .map_err(&fail)?,
    );

    let mut containers = Vec::with_capacity(all.len());
    let mut images = Vec::with_capacity(all.len());
    for (container_type, c) in all {
        let cname = c.name.clone().unwrap_or_default();
        let sec = c.security_context.as_ref();
        let own = |f: fn(&ContainerSecurity) -> Option<i64>| sec.and_then(f);
        let run_as_user = own(|s| s.run_as_user).or(psc.run_as_user);
        let run_as_group = own(|s| s.run_as_group).or(psc.run_as_group);
        let run_as_non_root = sec.and_then(|s| s.run_as_non_root).or(psc.run_as_non_root);
        let seccomp = match sec.and_then(|s| s.seccomp_profile.clone()) {
            Some(p) => profile_type(&Some(p)),
            None => profile_type(&psc.seccomp_profile),
        };
        let apparmor = match sec.and_then(|s| s.app_armor_profile.clone()) {
            Some(p) => profile_type(&Some(p)),
            None => profile_type(&psc.app_armor_profile),
        };
        let selinux = sec
            .and_then(|s| s.se_linux_options.clone())
            .or(psc.se_linux_options.clone())
            .unwrap_or_default();
        let host_process = sec
            .and_then(|s| host_process(&s.windows_options))
            .or(host_process(&psc.windows_options));
        let caps = sec.and_then(|s| s.capabilities.as_ref());
        let added: BTreeSet<String> = caps
            .and_then(|c| c.add.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let drops_all = caps
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|c| c == "ALL"));
        let host_ports: Vec<Rx> = c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.host_port.filter(|h| *h != 0))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(Rx::new_long)
            .collect();
        let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        let has_limits = limits.is_some_and(|l| l.contains_key("cpu") && l.contains_key("memory"));
        let image = image_uid_text(c.image.as_deref().unwrap_or(""));
        let container_uid = uid("Container", &format!("{namespace}/{kind}/{name}/{cname}"));
        entities.push(
            entity_with_tags(
                container_uid.clone(),
                vec![
                    ("name", s(&cname)),
                    ("containerType", s(container_type)),
                    ("image", Rx::new_entity_uid(uid("Image", &image))),
                    // A pod runs the reference as written: pinned only when it names a digest.
                    (
                        "pinned",
                        Rx::new_bool(ImageRef::parse(&image).is_ok_and(|i| !i.digest.is_empty())),
                    ),
                    (
                        "privileged",
                        Rx::new_bool(sec.and_then(|s| s.privileged) == Some(true)),
                    ),
                    (
                        "runAsRoot",
                        Rx::new_bool(
                            run_as_user == Some(0)
                                || run_as_group == Some(0)
                                || run_as_non_root == Some(false),
                        ),
                    ),
                    (
                        "readOnlyRootFilesystem",
                        Rx::new_bool(sec.and_then(|s| s.read_only_root_filesystem) == Some(true)),
                    ),
                    (
                        "allowPrivilegeEscalation",
                        Rx::new_bool(sec.and_then(|s| s.allow_privilege_escalation) != Some(false)),
                    ),
                    ("capabilities", set(&added)),
                    ("dropsAllCapabilities", Rx::new_bool(drops_all)),
                    ("runAsNonRoot", Rx::new_bool(run_as_non_root == Some(true))),
                    ("runAsUser", Rx::new_long(run_as_user.unwrap_or(-1))),
                    ("seccompProfile", s(&seccomp)),
                    ("appArmorProfile", s(&apparmor)),
                    ("seLinuxType", s(selinux.kind.as_deref().unwrap_or(""))),
                    ("seLinuxUser", s(selinux.user.as_deref().unwrap_or(""))),
                    ("seLinuxRole", s(selinux.role.as_deref().unwrap_or(""))),
                    (
                        "procMount",
                        s(sec.and_then(|s| s.proc_mount.as_deref()).unwrap_or("")),
                    ),
                    ("hostPorts", Rx::new_set(host_ports)),
                    ("hostProcess", Rx::new_bool(host_process == Some(true))),
                    ("windows", Rx::new_bool(windows)),
                    ("hasLimits", Rx::new_bool(has_limits)),
                    (
                        "sidecar",
                        Rx::new_bool(
                            container_type == "initContainer"
                                && c.restart_policy.as_deref() == Some("Always"),
                        ),
                    ),
                ],
                [pod_uid.clone()],
                None,
            )
            .map_err(&fail)?,
        );
        containers.push(container_uid);
        images.push(image);
    }
    Ok(Some(PodEntities {
        kind: kind.to_owned(),
        name,
        namespace,
        pod: pod_uid,
        containers,
        images,
        entities,
    }))
}

/// A volume's source type. A volume that names no source is an `emptyDir`, as the API
/// server defaults it; one whose only source this build does not know is `unknown`, which the
/// restricted level refuses (fail closed).
fn volume_type(volume: &serde_json::Map<String, Value>) -> &'static str {
    if let Some(src) = VOLUME_SOURCES
        .iter()
        .find(|src| volume.get(**src).is_some_and(|x| !x.is_null()))
    {
        return src;
    }
    let named_anything = volume.iter().any(|(k, v)| k != "name" && !v.is_null());
    if named_anything {
        "unknown"
    } else {
        "emptyDir"
    }
}

/// An `Image` entity for a reference no world describes: what the reference says, and no
/// trust (unsigned, outside every trusted registry, a signature required).
pub fn untrusted_image(reference: &str) -> Result<Entity, String> {
    let parsed = ImageRef::parse(reference).ok();
    let part = |f: fn(&ImageRef) -> &str| parsed.as_ref().map_or("", f).to_owned();
    entity_with_tags(
        uid("Image", reference),
        vec![
            ("registry", s(&part(|i| &i.registry))),
            ("repository", s(&part(|i| &i.repository))),
            ("tag", s(&part(|i| &i.tag))),
            ("digest", s(&part(|i| &i.digest))),
            ("resolvedDigest", s(&part(|i| &i.digest))),
            ("signed", Rx::new_bool(false)),
            ("trustedRegistry", Rx::new_bool(false)),
            ("signatureRequired", Rx::new_bool(true)),
            ("signers", Rx::new_set([])),
            (
                "verifyError",
                s("not verified: the image is not in the decided world"),
            ),
            ("trustedKeys", Rx::new_set([])),
        ],
        [],
        None,
    )
}

/// `key` of `value` as `T`; absent or null is `T::default()`, anything else that does not
/// read as `T` is an error naming the field.
fn parse<T: for<'de> Deserialize<'de> + Default>(value: &Value, key: &str) -> Result<T, String> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => T::deserialize(v).map_err(|e| format!("`{key}` cannot be read: {e}")),
    }
}

/// Like [`parse`], for the object's own metadata, which only names the pod: an unreadable
/// one names nothing rather than failing (the template is what is judged).
fn field<T: for<'de> Deserialize<'de> + Default>(value: &Value, key: &str) -> Option<T> {
    parse(value, key).ok()
}

fn profile_type(p: &Option<Profile>) -> String {
    p.as_ref()
        .map(|p| p.kind.clone().unwrap_or_default())
        .unwrap_or_default()
}

fn host_process(w: &Option<WindowsOptions>) -> Option<bool> {
    w.as_ref().and_then(|w| w.host_process)
}

/// An annotation's profile, with any `localhost/<profile>` written `localhost/*` so a policy
/// can allow every local profile with one set.
fn annotation_value(v: &str) -> String {
    if v.starts_with("localhost/") {
        "localhost/*".to_owned()
    } else {
        v.to_owned()
    }
}

fn set(values: &BTreeSet<String>) -> Rx {
    Rx::new_set(values.iter().map(|v| s(v)))
}

/// A `Namespace` entity for a namespace the world does not describe, from its labels: the
/// platform applies no baseline there (`defaultDeny` false), and its `podSecurity` is the
/// level its enforce label names (`pod_security` when unlabelled, restricted when the label
/// names no level).
pub fn unmanaged_namespace(
    name: &str,
    labels: &BTreeMap<String, String>,
    cluster: &str,
    pod_security: &str,
) -> Result<Entity, String> {
    let level = match labels
        .get("pod-security.kubernetes.io/enforce")
        .map(String::as_str)
    {
        None => pod_security,
        Some(l @ ("privileged" | "baseline" | "restricted")) => l,
        Some(_) => "restricted",
    };
    entity_with_tags(
        uid("Namespace", name),
        vec![
            ("name", s(name)),
            ("defaultDeny", Rx::new_bool(false)),
            (
                "defaultDenyOptOutRequested",
                Rx::new_bool(crate::entity::opt_out_requested(Some(labels))),
            ),
            ("podSecurity", s(level)),
        ],
        [uid("Cluster", cluster)],
        Some(labels),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::EvalResult;
    use serde_json::json;

    fn attr(e: &Entity, name: &str) -> EvalResult {
        match e.attr(name) {
            Some(Ok(v)) => v,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn strings(e: &Entity, name: &str) -> Vec<String> {
        match attr(e, name) {
            EvalResult::Set(s) => s
                .iter()
                .map(|v| match v {
                    EvalResult::String(s) => s.clone(),
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_template_is_projected_with_settings_resolved_as_kubernetes_resolves_them() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {
                "metadata": {"labels": {"app": "web"},
                             "annotations": {"container.apparmor.security.beta.kubernetes.io/app": "localhost/strict"}},
                "spec": {
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "initContainers": [{"name": "setup", "image": "busybox", "restartPolicy": "Always"}],
                    "containers": [{"name": "app", "image": "nginx",
                                    "ports": [{"containerPort": 80, "hostPort": 8080}],
                                    "securityContext": {"runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}}],
                    "volumes": [{"name": "a"}, {"name": "b", "hostPath": {"path": "/"}}, {"name": "c", "someFutureSource": {}}]
                }
            }}
        });
        let pod = project("Deployment", &deployment, "default")
            .unwrap()
            .unwrap();
        assert_eq!(
            pod.pod.to_string(),
            r#"Lattice::Pod::"shop/Deployment/web""#
        );
        assert_eq!(pod.containers.len(), 2);
        assert_eq!(
            pod.images,
            [
                "docker.io/library/busybox:latest",
                "docker.io/library/nginx:latest"
            ]
        );
        let p = &pod.entities[0];
        assert_eq!(attr(p, "runAsNonRoot"), EvalResult::String("true".into()));
        let mut volumes = strings(p, "volumeTypes");
        volumes.sort();
        assert_eq!(volumes, ["emptyDir", "hostPath", "unknown"]);
        assert_eq!(strings(p, "appArmorAnnotations"), ["localhost/*"]);
        let setup = &pod.entities[1];
        assert_eq!(
            attr(setup, "containerType"),
            EvalResult::String("initContainer".into())
        );
        assert_eq!(attr(setup, "sidecar"), EvalResult::Bool(true));
        // Inherited from the pod.
        assert_eq!(attr(setup, "runAsUser"), EvalResult::Long(1000));
        assert_eq!(attr(setup, "runAsNonRoot"), EvalResult::Bool(true));
        assert_eq!(
            attr(setup, "seccompProfile"),
            EvalResult::String("RuntimeDefault".into())
        );
        // Unset means Kubernetes' default: escalation allowed, nothing dropped.
        assert_eq!(
            attr(setup, "allowPrivilegeEscalation"),
            EvalResult::Bool(true)
        );
        assert_eq!(attr(setup, "dropsAllCapabilities"), EvalResult::Bool(false));
        let app = &pod.entities[2];
        // The container's own wins.
        assert_eq!(attr(app, "runAsUser"), EvalResult::Long(0));
        assert_eq!(attr(app, "runAsRoot"), EvalResult::Bool(true));
        assert_eq!(strings(app, "capabilities"), ["NET_ADMIN"]);
        assert_eq!(attr(app, "dropsAllCapabilities"), EvalResult::Bool(true));
        match attr(app, "hostPorts") {
            EvalResult::Set(s) => {
                assert_eq!(s.iter().collect::<Vec<_>>(), [&EvalResult::Long(8080)])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_pod_kind_finds_its_template_and_others_carry_none() {
        let cron = json!({"metadata": {"name": "nightly"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "x"}]}}}}}});
        let pod = project("CronJob", &cron, "ops").unwrap().unwrap();
        assert_eq!(pod.namespace, "ops");
        assert_eq!(
            attr(&pod.entities[0], "hostNetwork"),
            EvalResult::Bool(true)
        );
        assert!(
            project("Service", &json!({"spec": {}}), "x")
                .unwrap()
                .is_none()
        );
        assert!(carries_pod("StatefulSet") && !carries_pod("ConfigMap"));
    }

    #[test]
    fn a_field_of_the_wrong_type_is_an_error_not_a_default() {
        let bad = json!({"metadata": {"name": "p"}, "spec": {"containers": "nope"}});
        let e = project("Pod", &bad, "x").unwrap_err();
        assert!(e.message.contains("spec"), "{e}");
        let bad = json!({"metadata": {"name": "p"}, "spec": {"hostPID": "yes"}});
        assert!(project("Pod", &bad, "x").is_err());
        let bad = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "securityContext": {"runAsUser": "root"}}]}});
        assert!(project("Pod", &bad, "x").is_err());
    }
}
