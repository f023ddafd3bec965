//! Verification against real peers: the CNCF distribution registry on loopback (TLS, its
//! own CA) and images signed by the real `cosign` CLI with keys it generated.

use std::time::Duration;

use lattice_schemas::crd::trust_policy::{SigningKey, TrustPolicySpec, TrustedRegistry};
use lattice_schemas::image::ImageRef;
use lattice_supply::layout::{Layout, LayoutWriter, copy};
use lattice_supply::{RegistryOptions, Source, Trust, Verifier};
use lattice_testkit::oci::Registry;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;

/// A verifier reading the OCI layout at `dir`, with no network.
fn from_layout(dir: &std::path::Path) -> Verifier {
    Verifier::new(
        Source::Layout(Layout::open(dir).unwrap()),
        Duration::from_secs(300),
    )
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
    let release_pub = registry.keygen(dir, "release");
    registry.keygen(dir, "stranger");
    let client = registry.client();

    let signed = registry.push("shop/api", "1.0", "api 1.0").await;
    registry.sign(dir, "release", &format!("{host}/shop/api@{signed}"));
    registry.push("shop/unsigned", "1.0", "unsigned").await;
    let stranger = registry.push("shop/stranger", "1.0", "stranger").await;
    registry.sign(dir, "stranger", &format!("{host}/shop/stranger@{stranger}"));
    // A valid release signature, copied to name another image: its payload still names
    // the first digest.
    let first = registry.push("shop/copied", "1.0", "copied 1.0").await;
    registry.sign(dir, "release", &format!("{host}/shop/copied@{first}"));
    let second = registry.push("shop/copied", "2.0", "copied 2.0").await;
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
    let verifier = Verifier::new(Source::registries(&options), Duration::from_secs(300));
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

    // The same images copied into an OCI image layout verify the same with no network.
    let layout_dir = dir.join("layout");
    let mut writer = LayoutWriter::create(&layout_dir).unwrap();
    let reader = lattice_supply::registry::Registry::new(&options);
    for image in [
        "shop/api:1.0",
        "shop/unsigned:1.0",
        "shop/stranger:1.0",
        "shop/copied:2.0",
    ] {
        let image = ImageRef::parse(&format!("{host}/{image}")).unwrap();
        copy(&reader, &image, &image.name(), &mut writer, 1 << 20)
            .await
            .unwrap();
    }
    writer.finish().unwrap();
    let offline = from_layout(&layout_dir);
    let v = offline
        .verify(&format!("{host}/shop/api:1.0"), &trust)
        .await;
    assert_eq!(
        (v.digest.as_str(), v.signed()),
        (signed.as_str(), true),
        "{v:?}"
    );
    for (image, reason) in [
        ("shop/unsigned:1.0", "no cosign signature".to_owned()),
        ("shop/stranger:1.0", "no trusted key".to_owned()),
        (
            "shop/copied:2.0",
            format!("names digest {first}, not {second}"),
        ),
        (
            "shop/absent:1.0",
            "is not in the OCI image layout".to_owned(),
        ),
    ] {
        let v = offline.verify(&format!("{host}/{image}"), &trust).await;
        assert!(!v.signed() && v.error.contains(&reason), "{image}: {v:?}");
    }
    // A layout whose blob was altered is refused, not believed.
    let sig_manifest_digest = {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout_dir.join("index.json")).unwrap()).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"]
                    == format!("{host}/shop/api:{}", sig(&signed))
            })
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let blob = layout_dir
        .join("blobs/sha256")
        .join(sig_manifest_digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes.push(b' ');
    std::fs::write(&blob, bytes).unwrap();
    let tampered = from_layout(&layout_dir);
    let v = tampered
        .verify(&format!("{host}/shop/api:1.0"), &trust)
        .await;
    assert!(!v.signed() && v.error.contains("does not hash"), "{v:?}");

    // A tag moved to an unsigned image: the new digest, not signed (revocation).
    let moved = registry.push("shop/api", "1.0", "api 1.0, rebuilt").await;
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

/// A registry that requires a login (htpasswd): anonymous verification is refused and says
/// so; the login from a Docker `config.json` verifies; a wrong password is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_requires_a_login_is_verified_with_the_login() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let registry = Registry::start_with_login(&dir.join("registry"), "ci", "s3cret");
    let host = registry.host.clone();
    let public = registry.keygen(dir, "release");
    let signed = registry.push("shop/api", "1.0", "api").await;
    registry.sign(dir, "release", &format!("{host}/shop/api@{signed}"));
    let trust = trust(&registry, &public);
    let image = format!("{host}/shop/api:1.0");
    let verifier = |config: Option<String>| {
        let credentials = config
            .map(|c| lattice_supply::docker_config::parse(&c).unwrap())
            .unwrap_or_default();
        Verifier::new(
            Source::registries(&RegistryOptions {
                ca_pem: vec![registry.ca_pem.clone().into_bytes()],
                credentials,
                ..RegistryOptions::default()
            }),
            Duration::from_secs(300),
        )
    };
    let login = |user: &str, password: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!(
            r#"{{"auths": {{"https://{host}/v2/": {{"auth": "{auth}"}}}}}}"#
        ))
    };

    let v = verifier(None).verify(&image, &trust).await;
    assert!(!v.signed(), "{v:?}");
    assert!(v.error.contains("refused access"), "anonymous: {v:?}");

    let v = verifier(login("ci", "s3cret")).verify(&image, &trust).await;
    assert!(v.signed(), "{v:?}");
    assert_eq!(v.digest, signed);

    let v = verifier(login("ci", "wrong")).verify(&image, &trust).await;
    assert!(!v.signed() && v.error.contains("refused access"), "{v:?}");
}
