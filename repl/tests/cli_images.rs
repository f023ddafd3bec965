//! `lattice-policy` verifies images before it decides: against a real registry (the CNCF
//! distribution registry on loopback, TLS) with images signed by the real `cosign`, against
//! the OCI layout a world carries, or not at all with `--offline`.

use std::path::Path;
use std::process::{Command, Output};

use lattice_testkit::oci::Registry;

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lattice-policy"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn service(name: &str, image: &str) -> String {
    format!(
        "---
apiVersion: lattice.dev/v1alpha1
kind: LatticeService
metadata: {{name: {name}, namespace: shop}}
spec:
  containers:
    main:
      image: {image}
      resources:
        limits: {{cpu: 100m, memory: 64Mi}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_verified_at_the_registry_before_anything_is_decided() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let registry = Registry::start(&dir.join("registry"));
    let host = registry.host.clone();
    let public = registry.keygen(dir, "release");
    let signed = registry.push("shop/api", "1.0", "api").await;
    registry.sign(dir, "release", &format!("{host}/shop/api@{signed}"));
    registry.push("shop/worker", "1.0", "worker").await;
    // Signed, but by a key no TrustPolicy names.
    registry.keygen(dir, "intruder");
    let other = registry.push("shop/other", "1.0", "other").await;
    registry.sign(dir, "intruder", &format!("{host}/shop/other@{other}"));

    let world = dir.join("world");
    std::fs::create_dir_all(&world).unwrap();
    let trust = lattice_testkit::oci::trust_policy_yaml("trust", &format!("{host}/shop"), &public);
    std::fs::write(
        world.join("world.yaml"),
        format!(
            "apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
{trust}{}{}{}",
            service("api", &format!("{host}/shop/api:1.0")),
            service("worker", &format!("{host}/shop/worker:1.0")),
            service("other", &format!("{host}/shop/other:1.0")),
        ),
    )
    .unwrap();
    let ca_file = registry.ca_file.clone();
    let ca = ca_file.to_str().unwrap();
    let w = world.to_str().unwrap();

    // The verification, as the decisions read it: api signed by `release` at the digest
    // its tag names; worker not signed, and why.
    let o = run(dir, &["images", w, "--registry-ca", ca]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("against the images' registries"), "{out}");
    assert!(
        out.contains(&format!(
            "SIGNED   {host}/shop/api:1.0\n           digest {signed}\n           signed by release"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("UNSIGNED {host}/shop/worker:1.0")),
        "{out}"
    );
    assert!(out.contains("no cosign signature"), "{out}");

    // `plan` decides on it: api derives, worker is denied at DeployImage.
    let o = run(dir, &["plan", w, "--registry-ca", ca]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("ALLOW shop/api"), "{out}");
    assert!(out.contains("DENY  shop/worker"), "{out}");
    assert!(out.contains("DENY  shop/other"), "{out}");
    let o = run(dir, &["images", w, "--registry-ca", ca]);
    assert!(
        text(&o).contains("no trusted key"),
        "signed by another key: {}",
        text(&o)
    );

    // `render` derives api's Deployment pinned to the digest that was verified.
    let api_file = dir.join("api.yaml");
    std::fs::write(&api_file, service("api", &format!("{host}/shop/api:1.0"))).unwrap();
    let render = |dir: &Path| {
        let o = run(
            dir,
            &[
                "render",
                "-f",
                api_file.to_str().unwrap(),
                "--world",
                w,
                "--registry-ca",
                ca,
                "-o",
                "json",
            ],
        );
        (o.status.code(), text(&o), o.stdout)
    };
    let (code, out, stdout) = render(dir);
    assert_eq!(code, Some(0), "{out}");
    let objects: Vec<serde_json::Value> = serde_json::from_slice(&stdout).unwrap();
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{host}/shop/api:1.0@{signed}"),
        "{deployment}"
    );

    // `why` shows the fact the decision read.
    let o = run(
        dir,
        &[
            "why",
            "--world",
            w,
            "--registry-ca",
            ca,
            "Service::shop/api",
            "DeployImage",
            &format!("Image::{host}/shop/api:1.0"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("baseline/signed-images"), "{}", text(&o));

    // The tag moves to an unsigned digest: api is denied, and nothing is rendered.
    let moved = registry.push("shop/api", "1.0", "api, rebuilt").await;
    assert_ne!(moved, signed);
    let (code, out, _) = render(dir);
    assert_eq!(code, Some(1), "{out}");
    // The denial says why and names the key to sign the new digest with.
    assert!(out.contains("no cosign signature"), "{out}");
    assert!(
        out.contains(&format!(
            "sign {host}/shop/api@{moved} with the TrustPolicy key `release`"
        )),
        "{out}"
    );
    let o = run(dir, &["images", w, "--registry-ca", ca]);
    assert!(
        text(&o).contains(&format!(
            "UNSIGNED {host}/shop/api:1.0\n           digest {moved}"
        )),
        "{}",
        text(&o)
    );

    // Offline: nothing is verified, so nothing is signed, and it says so.
    let o = run(dir, &["images", w, "--offline"]);
    assert!(text(&o).contains("nothing (offline)"), "{}", text(&o));
    let o = run(dir, &["plan", w, "--offline"]);
    assert!(text(&o).contains("DENY  shop/api"), "{}", text(&o));

    // A registry that is down: not signed, and the reason is the registry's.
    drop(registry);
    let o = run(dir, &["images", w, "--registry-ca", ca]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("cannot be reached"), "{out}");
    assert!(!out.contains("SIGNED   "), "{out}");
}

#[test]
fn the_example_world_verifies_offline_against_the_layout_it_carries() {
    let root = lattice_testkit::workspace_root();
    let o = run(&root, &["images", "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let images = doc["images"].as_array().unwrap();
    assert!(images.len() >= 8, "{doc}");
    for i in images {
        assert_eq!(i["signed"], true, "{i}");
        assert!(i["digest"].as_str().unwrap().starts_with("sha256:"), "{i}");
    }
    // A blob altered in a copy of the layout is refused, not believed.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("images");
    lattice_testkit::copy_dir(&root.join("examples/world/images"), &copy);
    for e in std::fs::read_dir(copy.join("blobs/sha256"))
        .unwrap()
        .flatten()
    {
        let mut bytes = std::fs::read(e.path()).unwrap();
        if bytes.starts_with(b"{\"critical\"") {
            bytes.push(b' ');
            std::fs::write(e.path(), bytes).unwrap();
        }
    }
    let o = run(
        &root,
        &["images", "--images", copy.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for i in doc["images"].as_array().unwrap() {
        assert_eq!(i["signed"], false, "{i}");
    }
}

/// `--registry-auth`: a registry that requires a login is verified with the login of a
/// Docker `config.json`, refused without it, and a config that cannot be read is an error
/// that decides nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_login_comes_from_a_docker_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let registry = Registry::start_with_login(&dir.join("registry"), "ci", "s3cret");
    let host = registry.host.clone();
    let public = registry.keygen(dir, "release");
    let signed = registry.push("shop/api", "1.0", "api").await;
    registry.sign(dir, "release", &format!("{host}/shop/api@{signed}"));
    let world = dir.join("world");
    std::fs::create_dir_all(&world).unwrap();
    let trust = lattice_testkit::oci::trust_policy_yaml("trust", &format!("{host}/shop"), &public);
    std::fs::write(
        world.join("world.yaml"),
        format!("{trust}{}", service("api", &format!("{host}/shop/api:1.0")),),
    )
    .unwrap();
    // What `docker login` writes (the registry's own copy of it, for cosign).
    let auth = dir.join("registry/docker/config.json");
    let ca = registry.ca_file.to_str().unwrap();
    let w = world.to_str().unwrap();

    let o = run(
        dir,
        &[
            "images",
            w,
            "--registry-ca",
            ca,
            "--registry-auth",
            auth.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("SIGNED   {host}/shop/api:1.0")),
        "{}",
        text(&o)
    );

    let o = run(dir, &["images", w, "--registry-ca", ca]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("refused access"), "{}", text(&o));

    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"auths": {"r.example": {"auth": "%%%"}}}"#).unwrap();
    let o = run(
        dir,
        &[
            "plan",
            w,
            "--registry-ca",
            ca,
            "--registry-auth",
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("`auth` is not base64"), "{}", text(&o));
    assert!(!text(&o).contains("ALLOW"), "{}", text(&o));
}
