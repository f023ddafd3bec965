//! Makes the example world's images: an OCI image layout holding small stand-in images for
//! the references the bundled worlds use, each signed by the real `cosign` CLI.
//!
//!   cargo run -p lattice-supply --example example_images -- examples/world/images
//!
//! It starts the CNCF distribution registry on loopback (tools/oci/build), generates the
//! signing keys with `cosign generate-key-pair`, pushes each image, signs it by digest with
//! the keys the table below names, and copies images and signatures into the layout under
//! their public names. The private keys are thrown away; the public keys are printed, for
//! the TrustPolicies of the worlds. The signatures' payloads name the loopback registry as
//! where they were made (`docker-reference`); verification reads only the digest.

use std::path::PathBuf;

use lattice_schemas::image::ImageRef;
use lattice_supply::layout::{LayoutWriter, copy};
use lattice_supply::registry::{Registry as Reader, RegistryOptions};
use lattice_testkit::oci::Registry;

/// Each image, and the keys that sign it.
const IMAGES: &[(&str, &[&str])] = &[
    (
        "ghcr.io/lattice-demo/shop-api:1.4.2",
        &["lattice-demo-release", "lattice-demo-ci"],
    ),
    (
        "ghcr.io/lattice-demo/checkout:3.1.0",
        &["lattice-demo-release"],
    ),
    (
        "ghcr.io/lattice-demo/ledger:2.3.0",
        &["lattice-demo-release", "lattice-demo-ci"],
    ),
    (
        "ghcr.io/lattice-demo/ledger-migrations:2.3.0",
        &["lattice-demo-release"],
    ),
    (
        "ghcr.io/lattice-demo/payment-gateway:1.9.1",
        &["lattice-demo-release"],
    ),
    (
        "ghcr.io/lattice-demo/syslog-relay:0.4.1",
        &["lattice-demo-ci"],
    ),
    ("ghcr.io/lattice-demo/auth:0.9.4", &["lattice-demo-release"]),
    (
        "ghcr.io/lattice-demo/recsys-trainer:0.7.0",
        &["lattice-demo-ci"],
    ),
    ("docker.io/myorg/api:v2.1.0", &["myorg-release"]),
    ("ghcr.io/acme/api:1.0.0", &["lattice-demo-release"]),
];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let out: PathBuf = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/world/images".into())
        .into();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let registry = Registry::start(&dir.join("registry"));
    let keys: std::collections::BTreeSet<&str> =
        IMAGES.iter().flat_map(|(_, k)| k.iter().copied()).collect();
    let mut public_keys = Vec::new();
    for key in &keys {
        public_keys.push((key, registry.keygen(dir, key)));
    }
    let reader = Reader::new(&RegistryOptions {
        ca_pem: vec![registry.ca_pem.clone().into_bytes()],
        ..RegistryOptions::default()
    });
    if out.exists() {
        std::fs::remove_dir_all(&out).expect("replace the layout");
    }
    let mut writer = LayoutWriter::create(&out).expect("layout");
    for (public, signers) in IMAGES {
        let image = ImageRef::parse(public).expect("reference");
        let local = format!("{}/{}", registry.host, image.repository);
        let digest = registry
            .push(
                &image.repository,
                &image.tag,
                &format!("stand-in for {public}\n"),
            )
            .await;
        for key in *signers {
            registry.sign(dir, key, &format!("{local}@{digest}"));
        }
        let stored = ImageRef::parse(&format!("{local}:{}", image.tag)).expect("reference");
        copy(&reader, &stored, &image.name(), &mut writer, 1 << 20)
            .await
            .expect("copy");
        println!("{public}@{digest}");
    }
    writer.finish().expect("index.json");
    for (key, public) in public_keys {
        println!("\n{key}:\n{public}");
    }
}
