//! A real OpenID Connect provider for tests: zitadel's certified provider package with its
//! example storage and login pages (`tools/oidc`, built from its Go module). [`Provider::start`]
//! serves one over TLS on loopback with one device-flow client (which may also refresh) and
//! the users given, and
//! [`Provider::answer`] plays the person at the page the device flow sends them to.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;

/// The provider's binary: `LATTICE_OIDC_PROVIDER`, else built (or found up to date) by
/// `tools/oidc/build`, which needs Go.
pub fn binary() -> PathBuf {
    crate::go_tool("LATTICE_OIDC_PROVIDER", "oidc")
}

/// A running provider. Stopped (killed) on drop.
pub struct Provider {
    child: Child,
    /// `https://127.0.0.1:PORT`, as its ID tokens' `iss` names it.
    pub issuer: String,
    /// The CA (PEM) its certificate chains to.
    pub ca_pem: String,
    /// Where the CA is written.
    pub ca_file: PathBuf,
    /// The device-flow client it knows.
    pub client_id: String,
    /// That client's secret (HTTP Basic), also written to `secret_file`.
    pub client_secret: String,
    pub secret_file: PathBuf,
}

/// What the person does at the device page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Approve,
    Deny,
}

impl Provider {
    /// Starts a provider under `dir` whose users are `users` (name, password; the ID
    /// token's subject is the name), its ID tokens valid for an hour.
    pub fn start(dir: &Path, users: &[(&str, &str)]) -> Provider {
        Provider::start_with_id_token_lifetime(dir, users, Duration::from_secs(3600))
    }

    /// [`Provider::start`], its ID tokens valid for `lifetime` (so a test sees one expire).
    pub fn start_with_id_token_lifetime(
        dir: &Path,
        users: &[(&str, &str)],
        lifetime: Duration,
    ) -> Provider {
        let port = crate::free_port();
        let ca_pem = crate::tls::serving_certificate(dir, "lattice test OIDC CA");
        let users: serde_json::Map<String, serde_json::Value> = users
            .iter()
            .map(|(name, password)| {
                (
                    (*name).to_owned(),
                    serde_json::json!({
                        "ID": name, "Username": name, "Password": password,
                        "Email": format!("{name}@example.com"), "EmailVerified": true,
                        "PreferredLanguage": "en",
                    }),
                )
            })
            .collect();
        std::fs::write(
            dir.join("users.json"),
            serde_json::Value::Object(users).to_string(),
        )
        .expect("write users");
        let (client_id, client_secret) = ("lattice".to_owned(), "lattice-test-secret".to_owned());
        let secret_file = dir.join("client-secret");
        std::fs::write(&secret_file, &client_secret).expect("write secret");
        let log = std::fs::File::create(dir.join("oidc-provider.log")).expect("log");
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(binary())
            .arg("--listen")
            .arg(&listen)
            .arg("--cert")
            .arg(dir.join("server.pem"))
            .arg("--key")
            .arg(dir.join("server.key"))
            .arg("--users")
            .arg(dir.join("users.json"))
            .args(["--client-id", &client_id, "--client-secret", &client_secret])
            .arg(format!(
                "--id-token-lifetime={}s",
                lifetime.as_secs().max(1)
            ))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the OIDC provider (tools/oidc/build)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "the OIDC provider did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Provider {
            child,
            issuer: format!("https://{listen}"),
            ca_pem,
            ca_file: dir.join("ca.pem"),
            client_id,
            client_secret,
            secret_file,
        }
    }

    /// Plays the person the device flow sent to the provider's page: enters `user_code`,
    /// logs in as `user` with `password`, and approves or denies. An error says which page
    /// did not answer as a person would expect.
    pub async fn answer(
        &self,
        user_code: &str,
        user: &str,
        password: &str,
        answer: Answer,
    ) -> Result<(), String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        // The login form: it answers with the confirmation page and a cookie naming the code.
        let login = http
            .post(format!("{}/device/login", self.issuer))
            .form(&[
                ("user_code", user_code),
                ("username", user),
                ("password", password),
            ])
            .send()
            .await
            .map_err(|e| format!("the login page: {e}"))?;
        let cookie = login
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .and_then(|c| c.to_str().ok())
            .and_then(|c| c.split(';').next())
            .map(str::to_owned);
        let page = login.text().await.map_err(|e| e.to_string())?;
        let Some(cookie) = cookie else {
            return Err(format!("the login was not accepted: {page}"));
        };
        let action = match answer {
            Answer::Approve => "allowed",
            Answer::Deny => "denied",
        };
        let confirm = http
            .post(format!("{}/device/confirm", self.issuer))
            .header(reqwest::header::COOKIE, cookie)
            .form(&[("action", action)])
            .send()
            .await
            .map_err(|e| format!("the confirmation page: {e}"))?;
        let done = confirm.text().await.map_err(|e| e.to_string())?;
        if done.contains(&format!("Device authorization {action}")) {
            Ok(())
        } else {
            Err(format!("the confirmation was not accepted: {done}"))
        }
    }
}

/// Reads a running `lattice login --oidc-issuer`'s stderr until it shows the code to enter:
/// the code, and a thread that gives all the stderr once the process has ended.
pub fn user_code_from(
    stderr: std::process::ChildStderr,
) -> (String, std::thread::JoinHandle<String>) {
    use std::io::BufRead;
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    let all = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = lines.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut so_far = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = seen
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no code to enter was shown: {so_far}"));
        if let Some((_, rest)) = line.split_once("enter the code ") {
            let code: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            return (code, all);
        }
        so_far.push_str(&line);
        so_far.push('\n');
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
