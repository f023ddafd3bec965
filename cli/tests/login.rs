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
