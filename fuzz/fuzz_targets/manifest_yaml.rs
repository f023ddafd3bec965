//! Manifest files as `lattice-policy validate` reads them: YAML (with duplicate keys,
//! aliases, YAML 1.1 forms), schemas, semantic rules; every LatticeCluster that validates,
//! provisioned into Cluster API objects; and every Kubernetes object read, projected into
//! its entities. Never a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = lattice_schemas::manifest::source_from_bytes("fuzz.yaml", data) else {
        return;
    };
    let report = lattice_schemas::validate::validate_text("fuzz.yaml", &file.text);
    for f in &report.findings {
        let _ = f.line_col();
    }
    let options = lattice_clusters::ProvisionOptions {
        endpoint: Some(lattice_clusters::BootstrapEndpoint {
            host: "cell.example.com".into(),
            port: 8443,
        }),
        infra: None,
    };
    for m in &report.manifests {
        match &m.object {
            lattice_schemas::manifest::Object::Cluster(c) => {
                let _ = lattice_clusters::provision(c, &options);
            }
            lattice_schemas::manifest::Object::Core(o) => {
                let _ = lattice_engine::pod::project(o.kind.name(), &o.value, "default");
                let _ = lattice_engine::kubernetes::project(o);
            }
            _ => {}
        }
    }
});
