//! `lattice login`, `use`, `token` and `logout` as a user meets them before any proxy is
//! reached: bad input is refused with a reason and an exit code, and changes no file. (The
//! way through a real proxy, with kubectl, is `controllers/tests/proxy.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;

struct Home {
    dir: PathBuf,
}

impl Home {
    fn new(name: &str) -> Home {
        let dir = std::env::temp_dir().join(format!("lattice-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Home { dir }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    fn lattice(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .env("LATTICE_HOME", self.dir.join("home"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn untouched(&self) -> bool {
        !self.kubeconfig().exists() && !self.dir.join("home").exists()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn token_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn without_a_login_token_use_and_logout_say_so_and_exit_1() {
    let home = Home::new("none");
    for args in [&["token"][..], &["use", "edge"], &["logout"]] {
        let (code, out, err) = home.lattice(args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains("run `lattice login` first"), "{args:?}: {err}");
    }
    assert!(home.untouched());
}

#[test]
fn a_login_with_bad_input_is_refused_before_anything_is_written() {
    let home = Home::new("bad");
    let token = token_file(&home.dir, "token", "abc.def.ghi\n");
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "login",
                "http://127.0.0.1:6443",
                "--token-file",
                &token,
                "--cluster",
                "edge",
            ],
            "is not https://HOST[:PORT]",
        ),
        (
            &[
                "login",
                "https://127.0.0.1:6443",
                "--token-file",
                &token,
                "--cluster",
                "Edge",
            ],
            "is not a usable name",
        ),
        (
            &[
                "login",
                "https://127.0.0.1:6443",
                "--token-file",
                &token,
                "--cluster",
                "edge",
                "--name",
                "../x",
            ],
            "is not a usable name",
        ),
        (
            &[
                "login",
                "https://127.0.0.1:6443",
                "--token-file",
                "/nonexistent/token",
                "--cluster",
                "edge",
            ],
            "cannot read the token",
        ),
        (
            &[
                "login",
                "https://127.0.0.1:6443",
                "--token-file",
                &token_file(&home.dir, "blank", " \n"),
                "--cluster",
                "edge",
            ],
            "the token is empty",
        ),
    ];
    for (args, why) in cases {
        let (code, out, err) = home.lattice(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    // Nothing listens here: the token cannot be checked, so it is not kept.
    let closed = lattice_testkit::free_port();
    let (code, _, err) = home.lattice(&[
        "login",
        &format!("https://127.0.0.1:{closed}"),
        "--token-file",
        &token,
        "--cluster",
        "edge",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot check the token"), "{err}");
    assert!(home.untouched());
}

/// `lattice login --oidc-issuer … ` against a real OpenID Connect provider (tools/oidc), with
/// the test as the person at its device page; `--cluster edge` names a proxy that is not
/// there, so only what comes before the proxy's check is seen here (the way through a real
/// proxy is `controllers/tests/proxy.rs`).
mod device_flow {
    use super::Home;
    use lattice_testkit::oidc::{Answer, Provider, user_code_from};
    use std::process::{Command, Stdio};

    const DAVE: (&str, &str) = ("dave", "correct-horse-battery");

    fn login(home: &Home, idp: &Provider, secret_file: &str) -> std::process::Child {
        let closed = lattice_testkit::free_port();
        Command::new(env!("CARGO_BIN_EXE_lattice"))
            .arg("--kubeconfig")
            .arg(home.kubeconfig())
            .arg("login")
            .arg(format!("https://127.0.0.1:{closed}"))
            .args([
                "--oidc-issuer",
                &idp.issuer,
                "--oidc-client-id",
                &idp.client_id,
            ])
            .args(["--oidc-client-secret-file", secret_file])
            .arg("--oidc-certificate-authority")
            .arg(&idp.ca_file)
            .args(["--cluster", "edge"])
            .env("LATTICE_HOME", home.dir.join("home"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The person answers at the page; then `login`'s exit and stderr.
    async fn answered(home: &Home, idp: &Provider, answer: Answer) -> (i32, String) {
        let mut child = login(home, idp, idp.secret_file.to_str().unwrap());
        let (code, stderr) = user_code_from(child.stderr.take().unwrap());
        assert!(
            code.len() >= 8 && code.contains('-'),
            "a user code: {code:?}"
        );
        idp.answer(&code, DAVE.0, DAVE.1, answer)
            .await
            .expect("the page takes the answer");
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        (status.code().unwrap_or(-1), stderr.join().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_login_refused_at_the_issuer_exits_1_and_writes_nothing() {
        let home = Home::new("device-denied");
        let idp = Provider::start(&home.dir.join("idp"), &[DAVE]);
        let (code, err) = answered(&home, &idp, Answer::Deny).await;
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("To log in, open https://"), "{err}");
        assert!(
            err.contains(&format!("the login was refused at {}", idp.issuer)),
            "{err}"
        );
        assert!(home.untouched());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_approved_login_gets_the_id_token_and_keeps_it_only_once_the_proxy_takes_it() {
        let home = Home::new("device-approved");
        let idp = Provider::start(&home.dir.join("idp"), &[DAVE]);
        let (code, err) = answered(&home, &idp, Answer::Approve).await;
        // The ID token passed `login`'s own checks (issuer, audience, expiry); the proxy
        // that would verify it cannot be reached, so nothing is kept.
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("cannot check the token"), "{err}");
        assert!(home.untouched());
    }

    #[test]
    fn an_issuer_that_cannot_be_used_is_refused_before_any_code_is_shown() {
        let home = Home::new("device-bad");
        let idp = Provider::start(&home.dir.join("idp"), &[DAVE]);
        let wrong_secret = home.dir.join("wrong-secret");
        std::fs::write(&wrong_secret, "not-the-secret").unwrap();
        let ca = idp.ca_file.to_str().unwrap().to_owned();
        let plain = idp.issuer.replace("https://", "http://");
        let cases: [(&[&str], &str); 4] = [
            (
                &["--oidc-issuer", &plain, "--oidc-client-id", "lattice"],
                "is not https://",
            ),
            (
                // The system's roots do not hold the test CA.
                &["--oidc-issuer", &idp.issuer, "--oidc-client-id", "lattice"],
                "cannot reach the issuer",
            ),
            (
                &[
                    "--oidc-issuer",
                    &idp.issuer,
                    "--oidc-client-id",
                    "lattice",
                    "--oidc-certificate-authority",
                    &ca,
                    "--oidc-client-secret-file",
                    wrong_secret.to_str().unwrap(),
                ],
                "refused the device authorization request",
            ),
            (&["--oidc-client-id", "lattice"], "--token-file"),
        ];
        for (args, why) in cases {
            let mut all = vec!["login", "https://127.0.0.1:6443", "--cluster", "edge"];
            all.extend_from_slice(args);
            let (code, out, err) = home.lattice(&all);
            assert_eq!(code, 2, "{args:?}: {out}{err}");
            assert!(err.contains(why), "{args:?}: {err}");
            assert!(!err.contains("enter the code"), "{err}");
        }
        assert!(home.untouched());
    }
}
