//! Real OCI peers for tests: the CNCF distribution registry and the cosign CLI, built from
//! their Go modules by `tools/oci/build`. [`Registry::start`] serves one on loopback over
//! TLS, with a CA made for it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The directory holding `registry` and `cosign`: `LATTICE_OCI_BIN`, else built (or found
/// fresh) by `tools/oci/build`, which needs Go.
pub fn bin_dir() -> PathBuf {
    crate::go_tool("LATTICE_OCI_BIN", "oci")
}

/// A running registry. Stopped (killed) on drop.
pub struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:PORT`, as image references name it.
    pub host: String,
    /// The CA (PEM) its certificate chains to.
    pub ca_pem: String,
    /// Where the CA is written, for `SSL_CERT_FILE`.
    pub ca_file: PathBuf,
    /// The login it requires (htpasswd), if any; pushes and `cosign` use it.
    pub login: Option<(String, String)>,
    dir: PathBuf,
}

impl Registry {
    /// Starts a registry storing under `dir`, serving TLS on a free loopback port.
    pub fn start(dir: &Path) -> Registry {
        Registry::start_as(dir, None)
    }

    /// [`Registry::start`], requiring the login `user` / `password` (htpasswd, bcrypt) for
    /// every request.
    pub fn start_with_login(dir: &Path, user: &str, password: &str) -> Registry {
        Registry::start_as(dir, Some((user.to_owned(), password.to_owned())))
    }

    fn start_as(dir: &Path, login: Option<(String, String)>) -> Registry {
        let port = crate::free_port();
        let ca_pem = crate::tls::serving_certificate(dir, "lattice test registry CA");
        let ca_file = dir.join("ca.pem");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {dir}/server.pem\n    key: {dir}/server.key\n",
            root = dir.join("data").display(),
            dir = dir.display(),
        );
        if let Some((user, password)) = &login {
            // The lowest bcrypt cost: a test's login, checked on every request.
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            std::fs::write(dir.join("htpasswd"), format!("{user}:{hash}\n")).expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: lattice-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
            // cosign reads logins from DOCKER_CONFIG.
            use base64::Engine as _;
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            std::fs::create_dir_all(dir.join("docker")).expect("docker dir");
            std::fs::write(
                dir.join("docker/config.json"),
                format!(r#"{{"auths": {{"127.0.0.1:{port}": {{"auth": "{auth}"}}}}}}"#),
            )
            .expect("docker config");
        }
        std::fs::write(dir.join("config.yml"), config).expect("write config");
        let mut r = Registry {
            child: None,
            host: format!("127.0.0.1:{port}"),
            ca_pem,
            ca_file,
            login,
            dir: dir.to_owned(),
        };
        r.restart();
        r
    }

    /// Starts it again (after [`Registry::stop`]) on the same port and storage.
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.join("registry.log")).expect("log");
        let child = Command::new(bin_dir().join("registry"))
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the registry (tools/oci/build)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&self.host).is_err() {
            assert!(Instant::now() < deadline, "the registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (the port refuses connections until [`Registry::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A `cosign` command that trusts this registry's CA, with an empty key password.
    pub fn cosign(&self, cwd: &Path) -> Command {
        let mut c = Command::new(bin_dir().join("cosign"));
        c.current_dir(cwd)
            .env("SSL_CERT_FILE", &self.ca_file)
            .env("COSIGN_PASSWORD", "")
            .env("COSIGN_YES", "true")
            .env("DOCKER_CONFIG", self.dir.join("docker"))
            // Nothing here may reach the public Sigstore services.
            .env("TUF_ROOT", cwd.join("tuf"))
            .env("SIGSTORE_NO_CACHE", "true");
        c
    }
}

impl Registry {
    /// An OCI client (push is a test's business, not the product's) trusting this CA.
    pub fn client(&self) -> oci_client::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        oci_client::Client::new(oci_client::client::ClientConfig {
            extra_root_certificates: vec![oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: self.ca_pem.clone().into_bytes(),
            }],
            ..Default::default()
        })
    }

    /// Pushes a one-layer image whose layer is `content` to `repository:tag`; returns the
    /// digest the tag now names.
    pub async fn push(&self, repository: &str, tag: &str, content: &str) -> String {
        use oci_client::client::{Config, ImageLayer};
        use oci_client::secrets::RegistryAuth;
        let client = self.client();
        let reference = oci_client::Reference::with_tag(
            self.host.clone(),
            repository.to_owned(),
            tag.to_owned(),
        );
        let auth = match &self.login {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let layer = ImageLayer::oci_v1(content.as_bytes().to_vec(), None);
        let config = Config::oci_v1(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec(),
            None,
        );
        let manifest = oci_client::manifest::OciImageManifest::build(
            std::slice::from_ref(&layer),
            &config,
            None,
        );
        client
            .push(&reference, &[layer], config, &auth, Some(manifest))
            .await
            .expect("push");
        client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .expect("digest")
    }

    /// Generates a cosign key pair `NAME.key` / `NAME.pub` in `dir` (empty password);
    /// returns the public key (PEM).
    pub fn keygen(&self, dir: &Path, name: &str) -> String {
        let mut c = self.cosign(dir);
        c.args(["generate-key-pair", "--output-key-prefix", name]);
        run(c);
        std::fs::read_to_string(dir.join(format!("{name}.pub"))).expect("public key")
    }

    /// Signs `image` (`host/repository@digest`) with `dir/NAME.key`, as `cosign sign` does,
    /// with no transparency log.
    pub fn sign(&self, dir: &Path, key: &str, image: &str) {
        self.sign_all(dir, key, &[image]);
    }

    /// Signs every one of `images` with `dir/NAME.key` in one `cosign sign` run.
    pub fn sign_all(&self, dir: &Path, key: &str, images: &[&str]) {
        self.sign_with(dir, key, &[], images);
    }

    /// Signs `images` with `dir/NAME.key` and `cosign sign`'s `extra` flags (a certificate,
    /// the Sigstore bundle form), with no transparency log.
    pub fn sign_with(&self, dir: &Path, key: &str, extra: &[&str], images: &[&str]) {
        let mut c = self.cosign(dir);
        c.args([
            "sign",
            "--key",
            &format!("{key}.key"),
            "--tlog-upload=false",
            "--yes",
        ]);
        if extra.contains(&"--new-bundle-format") {
            // The bundle form is stored as an OCI 1.1 referrer, which cosign still calls
            // experimental; no signing config, so nothing public is consulted.
            c.env("COSIGN_EXPERIMENTAL", "1")
                .arg("--use-signing-config=false");
        }
        c.args(extra);
        c.args(images);
        run(c);
    }

    /// Imports the PKCS#8 private key `pkcs8_pem` as the cosign key pair `NAME.key` /
    /// `NAME.pub` in `dir` (empty password): how a certificate's key signs with cosign.
    pub fn import_key(&self, dir: &Path, name: &str, pkcs8_pem: &str) -> String {
        let source = dir.join(format!("{name}.pkcs8.pem"));
        std::fs::write(&source, pkcs8_pem).expect("write key");
        let mut c = self.cosign(dir);
        c.args(["import-key-pair", "--key"])
            .arg(&source)
            .args(["--output-key-prefix", name]);
        run(c);
        std::fs::read_to_string(dir.join(format!("{name}.pub"))).expect("public key")
    }
}

fn run(mut c: Command) {
    let out = c.output().expect("run cosign");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TrustPolicy document named `name` that requires images under `prefix` to be signed
/// by the key `release`, whose public half is `public_pem`: the policy the supply-chain
/// tests verify under.
pub fn trust_policy_yaml(name: &str, prefix: &str, public_pem: &str) -> String {
    let key: String = public_pem
        .lines()
        .map(|l| format!("            {l}\n"))
        .collect();
    format!(
        "apiVersion: lattice.dev/v1alpha1
kind: TrustPolicy
metadata: {{name: {name}}}
spec:
  registries:
    - prefix: {prefix}
      requireSignature: true
      keys:
        - name: release
          publicKey: |
{key}"
    )
}

/// A certificate authority for keyless signing, as Fulcio is one: it issues code-signing
/// certificates that name a signer (a URI subject alternative name) and the OIDC issuer
/// that vouched for it (Fulcio's issuer extension). Its own certificate is the trust root
/// a TrustPolicy names.
pub struct SigningCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate (PEM).
    pub pem: String,
}

impl SigningCa {
    /// A new self-signed CA called `name`.
    pub fn new(name: &str) -> SigningCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let pem = params.self_signed(&key).expect("CA cert").pem();
        SigningCa {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A key (PKCS#8 PEM) and a code-signing certificate for it (PEM) naming `subject`
    /// as vouched for by `oidc_issuer`.
    pub fn issue(&self, subject: &str, oidc_issuer: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("leaf");
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(subject.try_into().expect("URI")));
        params
            .extended_key_usages
            .push(rcgen::ExtendedKeyUsagePurpose::CodeSigning);
        // 1.3.6.1.4.1.57264.1.8: the issuer, a DER UTF8String (short enough for one length
        // byte).
        assert!(oidc_issuer.len() < 128);
        let mut value = vec![0x0c, oidc_issuer.len() as u8];
        value.extend_from_slice(oidc_issuer.as_bytes());
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
                value,
            ));
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (key.serialize_pem(), cert.pem())
    }
}
