//! Verification against real peers: the CNCF distribution registry on loopback (TLS, its
//! own CA) and images signed by the real `cosign` CLI with keys it generated.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lattice_schemas::crd::trust_policy::{SigningKey, TrustPolicySpec, TrustedRegistry};
use lattice_supply::{RegistryOptions, Trust, Verifier};
use lattice_testkit::oci::Registry;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

fn run(mut c: Command) -> String {
    let out = c.output().expect("run");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test-side OCI client (pushing is not the product's business).
fn pusher(registry: &Registry) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        extra_root_certificates: vec![Certificate {
            encoding: CertificateEncoding::Pem,
            data: registry.ca_pem.clone().into_bytes(),
        }],
        ..ClientConfig::default()
    })
}

/// Pushes a one-layer image whose layer is `content` to `repo:tag`; returns its digest.
async fn push(
    client: &Client,
    registry: &Registry,
    repo: &str,
    tag: &str,
    content: &str,
) -> String {
    let reference = Reference::with_tag(registry.host.clone(), repo.into(), tag.into());
    let layer = ImageLayer::oci_v1(content.as_bytes().to_vec(), None);
    let config = Config::oci_v1(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec(),
        None,
    );
    let manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
    client
        .push(
            &reference,
            &[layer],
            config,
            &RegistryAuth::Anonymous,
            Some(manifest),
        )
        .await
        .expect("push");
    client
        .fetch_manifest_digest(&reference, &RegistryAuth::Anonymous)
        .await
        .expect("digest")
}

fn sign(registry: &Registry, dir: &Path, key: &str, image: &str) {
    let mut c = registry.cosign(dir);
    c.args(["sign", "--key", key, "--tlog-upload=false", "--yes", image]);
    run(c);
}

fn trust(registry: &Registry, public_pem: &str) -> Trust {
    let spec = TrustPolicySpec {
        registries: vec![TrustedRegistry {
            prefix: format!("{}/shop", registry.host),
            keys: vec![SigningKey {
                name: "release".into(),
                public_key: Some(public_pem.to_owned()),
                keyless: None,
            }],
            require_signature: Some(true),
            verified: vec![],
        }],
    };
    Trust::of([&spec])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_signatures_are_verified_against_trusted_keys_and_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut registry = Registry::start(&dir.join("registry"));
    let host = registry.host.clone();
    for prefix in ["release", "stranger"] {
        let mut c = registry.cosign(dir);
        c.args(["generate-key-pair", "--output-key-prefix", prefix]);
        run(c);
    }
    let release_pub = std::fs::read_to_string(dir.join("release.pub")).unwrap();
    let client = pusher(&registry);

    let signed = push(&client, &registry, "shop/api", "1.0", "api 1.0").await;
    sign(
        &registry,
        dir,
        "release.key",
        &format!("{host}/shop/api@{signed}"),
    );
    push(&client, &registry, "shop/unsigned", "1.0", "unsigned").await;
    let stranger = push(&client, &registry, "shop/stranger", "1.0", "stranger").await;
    sign(
        &registry,
        dir,
        "stranger.key",
        &format!("{host}/shop/stranger@{stranger}"),
    );
    // A valid release signature, copied to name another image: its payload still names
    // the first digest.
    let first = push(&client, &registry, "shop/copied", "1.0", "copied 1.0").await;
    sign(
        &registry,
        dir,
        "release.key",
        &format!("{host}/shop/copied@{first}"),
    );
    let second = push(&client, &registry, "shop/copied", "2.0", "copied 2.0").await;
    let sig = |d: &str| format!("sha256-{}.sig", d.trim_start_matches("sha256:"));
    let (sig_manifest, _) = client
        .pull_manifest_raw(
            &Reference::with_tag(host.clone(), "shop/copied".into(), sig(&first)),
            &RegistryAuth::Anonymous,
            &["application/vnd.oci.image.manifest.v1+json"],
        )
        .await
        .unwrap();
    client
        .push_manifest_raw(
            &Reference::with_tag(host.clone(), "shop/copied".into(), sig(&second)),
            sig_manifest.to_vec(),
            "application/vnd.oci.image.manifest.v1+json"
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();

    let options = RegistryOptions {
        ca_pem: vec![registry.ca_pem.clone().into_bytes()],
        ..RegistryOptions::default()
    };
    let verifier = Verifier::new(&options, Duration::from_secs(300));
    let trust = trust(&registry, &release_pub);

    // Signed by the release key: signed, with the digest the tag resolves to.
    let v = verifier
        .verify(&format!("{host}/shop/api:1.0"), &trust)
        .await;
    assert_eq!(v.digest, signed);
    assert_eq!(v.signers.iter().collect::<Vec<_>>(), ["release"]);
    assert!(v.error.is_empty(), "{v:?}");

    // Each way of not being signed, with its own reason.
    let v = verifier
        .verify(&format!("{host}/shop/unsigned:1.0"), &trust)
        .await;
    assert!(
        !v.signed() && v.error.contains("no cosign signature"),
        "{v:?}"
    );
    let v = verifier
        .verify(&format!("{host}/shop/stranger:1.0"), &trust)
        .await;
    assert!(!v.signed() && v.error.contains("no trusted key"), "{v:?}");
    let v = verifier
        .verify(&format!("{host}/shop/copied:2.0"), &trust)
        .await;
    assert!(!v.signed(), "{v:?}");
    assert!(
        v.error
            .contains(&format!("names digest {first}, not {second}")),
        "{v:?}"
    );
    // The same signature on the image it names counts.
    let v = verifier
        .verify(&format!("{host}/shop/copied:1.0"), &trust)
        .await;
    assert!(v.signed(), "{v:?}");

    // A tag moved to an unsigned image: the new digest, not signed (revocation).
    let moved = push(&client, &registry, "shop/api", "1.0", "api 1.0, rebuilt").await;
    assert_ne!(moved, signed);
    let v = verifier
        .verify(&format!("{host}/shop/api:1.0"), &trust)
        .await;
    assert_eq!(v.digest, moved);
    assert!(
        !v.signed() && v.error.contains("no cosign signature"),
        "{v:?}"
    );

    // `verify_all` keys by normalized reference and leaves out what no TrustPolicy covers.
    let all = verifier
        .verify_all(
            [
                format!("{host}/shop/api@{signed}"),
                format!("{host}/elsewhere/app:1"),
            ],
            &trust,
        )
        .await;
    assert_eq!(all.len(), 1);
    assert!(all[&format!("{host}/shop/api@{signed}")].signed());

    // Registry down: a digest already verified is answered from the cache; anything that
    // needs the registry is not signed, and says why.
    registry.stop();
    let v = verifier
        .verify(&format!("{host}/shop/api@{signed}"), &trust)
        .await;
    assert!(v.signed(), "cached by digest: {v:?}");
    verifier.forget();
    let v = verifier
        .verify(&format!("{host}/shop/api@{signed}"), &trust)
        .await;
    assert!(
        !v.signed() && v.error.contains("cannot be reached"),
        "{v:?}"
    );
    let v = verifier
        .verify(&format!("{host}/shop/api:1.0"), &trust)
        .await;
    assert!(
        !v.signed() && v.error.contains("cannot be reached"),
        "{v:?}"
    );
}
