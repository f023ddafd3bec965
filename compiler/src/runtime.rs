//! Runtime enforcement: a Tetragon `TracingPolicyNamespaced` per container whose entrypoint
//! Lattice knows, allowing exactly the binaries the workload says it runs (its `command` and
//! its exec probes) and killing any other `execve` in that container.
//!
//! A container without an absolute `command` runs whatever its image's entrypoint is; that is
//! not known without pulling the image, so no allowlist is derived for it (rather than one
//! that would kill the real entrypoint).

use std::collections::BTreeSet;

use lattice_schemas::crd::workload::{Container, WorkloadBody};
use serde_json::{Value, json};

use crate::objects::Part;
use crate::objects::{meta, object_name};

/// The kernel function every program execution passes through, with the binary being run.
pub const EXEC_HOOK: &str = "security_bprm_creds_for_exec";

/// The binaries a container is declared to run, when its entrypoint is known.
pub fn allowed_binaries(c: &Container) -> Option<BTreeSet<String>> {
    let entry = c.command.as_ref()?.first()?;
    if !entry.starts_with('/') {
        return None;
    }
    let mut out = BTreeSet::from([entry.clone()]);
    for probe in [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
        .into_iter()
        .flatten()
    {
        if let Some(bin) = probe.exec.as_ref().and_then(|e| e.command.first())
            && bin.starts_with('/')
        {
            out.insert(bin.clone());
        }
    }
    Some(out)
}

/// The allowlist policies of one part's containers and sidecars.
pub fn binary_allowlists(part: &Part, body: &WorkloadBody) -> Vec<Value> {
    body.containers
        .iter()
        .chain(&body.sidecars)
        .filter_map(|(cname, c)| {
            let binaries = allowed_binaries(c)?;
            Some(json!({
                "apiVersion": "cilium.io/v1alpha1", "kind": "TracingPolicyNamespaced",
                "metadata": meta(&object_name(&[&part.base, cname, "exec"]), part.ns, part.workload),
                "spec": {
                    "podSelector": {"matchLabels": part.selector()},
                    "containerSelector": {"matchExpressions": [{"key": "name", "operator": "In", "values": [cname]}]},
                    "kprobes": [{
                        "call": EXEC_HOOK,
                        "syscall": false,
                        "message": format!("{}/{} ran a binary outside its Lattice allowlist", part.ns, part.workload),
                        "args": [{"index": 0, "type": "linux_binprm"}],
                        "selectors": [{
                            "matchArgs": [{"index": 0, "operator": "NotEqual", "values": binaries}],
                            "matchActions": [{"action": "Sigkill"}]
                        }],
                        "tags": ["lattice", "binary-allowlist"]
                    }]
                }
            }))
        })
        .collect()
}
