//! Verification against real peers: the CNCF distribution registry on loopback (TLS, its
//! own CA) and images signed by the real `cosign` CLI with keys it generated.

use std::time::Duration;

use lattice_schemas::crd::trust_policy::{
    KeylessIdentity, SigningKey, TrustPolicySpec, TrustedRegistry,
};
use lattice_schemas::image::ImageRef;
use lattice_supply::layout::{Layout, LayoutWriter, copy};
use lattice_supply::{RegistryOptions, Source, Trust, Verifier};
use lattice_testkit::oci::{Registry, SigningCa};
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

    // A workload's pull secrets: tried in turn, before the verifier's own (anonymous
    // here); a wrong one is passed over for one the registry lets in.
    let parse = |c: Option<String>| lattice_supply::docker_config::parse(&c.unwrap()).unwrap();
    let anonymous = verifier(None);
    let pull_secrets = std::collections::BTreeMap::from([(
        image.clone(),
        vec![parse(login("ci", "wrong")), parse(login("ci", "s3cret"))],
    )]);
    let all = anonymous
        .verify_all_with([image.clone()], &trust, &pull_secrets)
        .await;
    assert!(all[&image].signed(), "{all:?}");
    // Only the wrong one: refused, and a login for another registry is no login here.
    let other_host = lattice_supply::docker_config::parse(
        r#"{"auths": {"elsewhere.example.com": {"username": "ci", "password": "s3cret"}}}"#,
    )
    .unwrap();
    let v = anonymous
        .verify_with(&image, &trust, &[parse(login("ci", "wrong")), other_host])
        .await;
    assert!(!v.signed() && v.error.contains("refused access"), "{v:?}");
}

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/shop/api/.github/workflows/release.yml@refs/heads/main";

/// Keyless signatures (a certificate from a CA the TrustPolicy names, for an exact issuer
/// and subject) and the Sigstore bundle form stored as an OCI 1.1 referrer, each signed by
/// the real cosign; each way of not counting says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_certificates_and_sigstore_bundles_are_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let registry = Registry::start(&dir.join("registry"));
    let host = registry.host.clone();
    let release_pub = registry.keygen(dir, "release");
    let ca = SigningCa::new("lattice test Fulcio");
    let stranger_ca = SigningCa::new("someone else's CA");
    let issue = |name: &str, ca: &SigningCa, subject: &str| {
        let (key, cert) = ca.issue(subject, ISSUER);
        registry.import_key(dir, name, &key);
        std::fs::write(dir.join(format!("{name}.crt")), cert).unwrap();
        std::fs::write(dir.join(format!("{name}.chain")), &ca.pem).unwrap();
    };
    issue("ci", &ca, WORKFLOW);
    issue("forged", &stranger_ca, WORKFLOW);
    issue(
        "intern",
        &ca,
        "https://github.com/shop/api/.github/workflows/try.yml@refs/heads/dev",
    );
    let with_cert = |name: &str| {
        [
            "--certificate".to_owned(),
            format!("{name}.crt"),
            "--certificate-chain".to_owned(),
            format!("{name}.chain"),
        ]
    };
    let sign = |key: &str, extra: &[String], image: &str, digest: &str| {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        registry.sign_with(dir, key, &extra, &[&format!("{host}/{image}@{digest}")]);
    };
    let bundle = ["--new-bundle-format".to_owned()];

    let keyless = registry.push("shop/keyless", "1.0", "keyless").await;
    sign("ci", &with_cert("ci"), "shop/keyless", &keyless);
    let forged = registry.push("shop/forged", "1.0", "forged").await;
    sign("forged", &with_cert("forged"), "shop/forged", &forged);
    let intern = registry.push("shop/intern", "1.0", "intern").await;
    sign("intern", &with_cert("intern"), "shop/intern", &intern);
    let bundled = registry.push("shop/bundle", "1.0", "bundle 1.0").await;
    sign("release", &bundle, "shop/bundle", &bundled);
    let bundled_keyless = registry.push("shop/bundle-keyless", "1.0", "bk").await;
    let mut extra = bundle.to_vec();
    extra.extend(["--certificate".to_owned(), "ci.crt".to_owned()]);
    sign("ci", &extra, "shop/bundle-keyless", &bundled_keyless);
    // The release key's bundle for 1.0, made to refer to 2.0: the referrer manifest says
    // 2.0, the signed statement still names 1.0.
    let other = registry.push("shop/bundle", "2.0", "bundle 2.0").await;
    forge_referrer(&registry, "shop/bundle", &bundled, &other).await;

    let spec = TrustPolicySpec {
        registries: vec![TrustedRegistry {
            prefix: format!("{host}/shop"),
            keys: vec![
                SigningKey {
                    name: "release".into(),
                    public_key: Some(release_pub),
                    keyless: None,
                },
                SigningKey {
                    name: "ci".into(),
                    public_key: None,
                    keyless: Some(KeylessIdentity {
                        issuer: ISSUER.into(),
                        subject: WORKFLOW.into(),
                        trust_root: Some(ca.pem.clone()),
                        transparency_log_key: None,
                    }),
                },
            ],
            require_signature: Some(true),
            verified: vec![],
        }],
    };
    let trust = Trust::of([&spec]);
    let options = RegistryOptions {
        ca_pem: vec![registry.ca_pem.clone().into_bytes()],
        ..RegistryOptions::default()
    };
    let verifier = Verifier::new(Source::registries(&options), Duration::from_secs(300));
    let signers =
        |v: &lattice_schemas::image::Verification| v.signers.iter().cloned().collect::<Vec<_>>();

    let v = verifier
        .verify(&format!("{host}/shop/keyless:1.0"), &trust)
        .await;
    assert_eq!(
        (v.digest.as_str(), signers(&v)),
        (keyless.as_str(), vec!["ci".to_owned()]),
        "{v:?}"
    );
    let v = verifier
        .verify(&format!("{host}/shop/bundle:1.0"), &trust)
        .await;
    assert_eq!(signers(&v), ["release"], "the bundle form, by key: {v:?}");
    let v = verifier
        .verify(&format!("{host}/shop/bundle-keyless:1.0"), &trust)
        .await;
    assert_eq!(signers(&v), ["ci"], "the bundle form, keyless: {v:?}");
    for (image, reason) in [
        (
            "shop/forged:1.0",
            "does not chain to the trustRoot of `ci`".to_owned(),
        ),
        ("shop/intern:1.0", "try.yml@refs/heads/dev".to_owned()),
        (
            "shop/bundle:2.0",
            format!("names digest {bundled}, not {other}"),
        ),
    ] {
        let v = verifier.verify(&format!("{host}/{image}"), &trust).await;
        assert!(!v.signed() && v.error.contains(&reason), "{image}: {v:?}");
    }

    // Bundles travel into an OCI image layout with their image and verify offline.
    let layout_dir = dir.join("layout");
    let mut writer = LayoutWriter::create(&layout_dir).unwrap();
    let reader = lattice_supply::registry::Registry::new(&options);
    for image in [
        "shop/bundle:1.0",
        "shop/bundle-keyless:1.0",
        "shop/keyless:1.0",
    ] {
        let image = ImageRef::parse(&format!("{host}/{image}")).unwrap();
        copy(&reader, &image, &image.name(), &mut writer, 1 << 20)
            .await
            .unwrap();
    }
    writer.finish().unwrap();
    let offline = from_layout(&layout_dir);
    for (image, signer) in [
        ("shop/bundle:1.0", "release"),
        ("shop/bundle-keyless:1.0", "ci"),
        ("shop/keyless:1.0", "ci"),
    ] {
        let v = offline.verify(&format!("{host}/{image}"), &trust).await;
        assert_eq!(signers(&v), [signer], "{image} offline: {v:?}");
    }

    // An unreadable referrers index hides no tag-form signature.
    let garbled_dir = dir.join("garbled");
    let mut writer = LayoutWriter::create(&garbled_dir).unwrap();
    let image = ImageRef::parse(&format!("{host}/shop/keyless:1.0")).unwrap();
    copy(&reader, &image, &image.name(), &mut writer, 1 << 20)
        .await
        .unwrap();
    writer
        .manifest(
            &format!(
                "{}:{}",
                image.name(),
                lattice_supply::layout::referrers_tag(&keyless)
            ),
            "application/vnd.oci.image.index.v1+json",
            b"not an index",
        )
        .unwrap();
    writer.finish().unwrap();
    let v = from_layout(&garbled_dir)
        .verify(&format!("{host}/shop/keyless:1.0"), &trust)
        .await;
    assert_eq!(signers(&v), ["ci"], "a garbled referrers index: {v:?}");

    // With a transparency log required, the same signature needs an entry that log
    // promised. The log is simulated (a key of this test's signs the entry as Rekor does;
    // no Rekor runs here); the entry rides in cosign's bundle annotation, as `cosign sign`
    // attaches it when it uploads to Rekor.
    let log = rcgen::KeyPair::generate().unwrap();
    let mut logged = spec.clone();
    logged.registries[0].keys[1]
        .keyless
        .as_mut()
        .unwrap()
        .transparency_log_key = Some(log.public_key_pem());
    let logged = Trust::of([&logged]);
    let fresh = || Verifier::new(Source::registries(&options), Duration::from_secs(300));
    let v = fresh()
        .verify(&format!("{host}/shop/keyless:1.0"), &logged)
        .await;
    assert!(
        !v.signed() && v.error.contains("no transparency-log entry came with it"),
        "{v:?}"
    );
    log_signature(&registry, "shop/keyless", &keyless, &log).await;
    let v = fresh()
        .verify(&format!("{host}/shop/keyless:1.0"), &logged)
        .await;
    assert_eq!(signers(&v), ["ci"], "logged: {v:?}");

    // A keyless key whose trust root is unreadable verifies nothing, and says so.
    let mut broken = spec.clone();
    broken.registries[0].keys[1]
        .keyless
        .as_mut()
        .unwrap()
        .trust_root = Some("not PEM".into());
    let v = verifier
        .verify(&format!("{host}/shop/keyless:1.0"), &Trust::of([&broken]))
        .await;
    assert!(
        !v.signed()
            && v.error
                .contains("keyless key `ci`: its trustRoot is unusable"),
        "{v:?}"
    );
}

/// Makes the first Sigstore bundle referrer of `from` refer to `to` as well: the same
/// bundle layer, under a manifest whose subject is `to`, listed in `to`'s referrers index
/// (the tag schema, as this registry has no referrers API).
async fn forge_referrer(registry: &Registry, repository: &str, from: &str, to: &str) {
    let client = registry.client();
    let host = registry.host.clone();
    let get = |reference: Reference| {
        let client = client.clone();
        async move {
            let (bytes, _) = client
                .pull_manifest_raw(
                    &reference,
                    &RegistryAuth::Anonymous,
                    &[
                        "application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.oci.image.index.v1+json",
                    ],
                )
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        }
    };
    let tag = |d: &str| d.replacen(':', "-", 1);
    let index = get(Reference::with_tag(
        host.clone(),
        repository.into(),
        tag(from),
    ))
    .await;
    let first = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let mut manifest = get(Reference::with_digest(
        host.clone(),
        repository.into(),
        first,
    ))
    .await;
    manifest["subject"]["digest"] = to.into();
    let body = serde_json::to_vec(&manifest).unwrap();
    let digest = lattice_supply::registry::sha256_of(&body);
    let media = |t: &str| t.parse().unwrap();
    client
        .push_manifest_raw(
            &Reference::with_digest(host.clone(), repository.into(), digest.clone()),
            body.clone(),
            media("application/vnd.oci.image.manifest.v1+json"),
        )
        .await
        .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": body.len(),
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        }],
    });
    client
        .push_manifest_raw(
            &Reference::with_tag(host, repository.into(), tag(to)),
            serde_json::to_vec(&index).unwrap(),
            media("application/vnd.oci.image.index.v1+json"),
        )
        .await
        .unwrap();
}

/// Adds to the tag-form signature of `repository@digest` the entry a transparency log
/// (simulated: `log` signs it as Rekor signs its entry timestamps) would give it: a
/// `hashedrekord` body naming the payload's hash, the signature and its certificate.
async fn log_signature(registry: &Registry, repository: &str, digest: &str, log: &rcgen::KeyPair) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let client = registry.client();
    let host = registry.host.clone();
    let tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
    let reference = Reference::with_tag(host.clone(), repository.into(), tag);
    let media = "application/vnd.oci.image.manifest.v1+json";
    let (bytes, _) = client
        .pull_manifest_raw(&reference, &RegistryAuth::Anonymous, &[media])
        .await
        .unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let layer = &mut manifest["layers"][0];
    let payload_digest = layer["digest"].as_str().unwrap().to_owned();
    let signature = layer["annotations"]["dev.cosignproject.cosign/signature"]
        .as_str()
        .unwrap()
        .to_owned();
    let certificate = layer["annotations"]["dev.sigstore.cosign/certificate"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = serde_json::json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": payload_digest.trim_start_matches("sha256:")}},
        "signature": {"content": signature, "publicKey": {"content": b64(certificate.as_bytes())}}}});
    let log_der = pem::parse(log.public_key_pem()).unwrap().into_contents();
    let mut entry = lattice_supply::tlog::LogEntry {
        body: b64(&serde_json::to_vec(&body).unwrap()),
        integrated_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
        log_index: 1,
        log_id: hex(&sha2::Sha256::digest(&log_der)),
        promise: Vec::new(),
    };
    let rng = ring::rand::SystemRandom::new();
    let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &log.serialize_der(),
        &rng,
    )
    .unwrap();
    entry.promise = signer
        .sign(&rng, &entry.promised())
        .unwrap()
        .as_ref()
        .to_vec();
    layer["annotations"]["dev.sigstore.cosign/bundle"] = serde_json::json!({
        "SignedEntryTimestamp": b64(&entry.promise),
        "Payload": {"body": entry.body, "integratedTime": entry.integrated_time,
                    "logIndex": entry.log_index, "logID": entry.log_id},
    })
    .to_string()
    .into();
    client
        .push_manifest_raw(
            &reference,
            serde_json::to_vec(&manifest).unwrap(),
            media.parse().unwrap(),
        )
        .await
        .unwrap();
}
