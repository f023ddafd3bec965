//! The REPL driven through a real pseudo-terminal (tmux): completion, `can`, `why`, a
//! what-if, and hot reload of an edited world, including an invalid edit that must not
//! replace the last good snapshot.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    lattice_testkit::workspace_root()
}

struct Tmux {
    name: String,
}

impl Tmux {
    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.name])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.name];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }

    /// Types `line` literally and presses Enter. (tmux reads an argument ending in `;` as
    /// a command separator, so a final `;` is sent as its byte.)
    fn line(&self, line: &str) {
        match line.strip_suffix(';') {
            Some(body) => {
                self.keys(&["-l", body]);
                self.keys(&["-H", "3b"]);
            }
            None => self.keys(&["-l", line]),
        }
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", &self.name])
                .stdout,
        )
        .into_owned()
    }

    /// Sends `line` every half second until the screen shows `text` `times` times.
    fn line_until(&self, line: &str, text: &str, times: usize) -> String {
        let start = Instant::now();
        loop {
            self.line(line);
            std::thread::sleep(Duration::from_millis(500));
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {text:?} (×{times}); screen:\n{screen}"
            );
        }
    }

    /// Waits until the screen shows `text` `times` times in all.
    fn wait_for(&self, text: &str, times: usize) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {text:?} (×{times}); screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

#[test]
fn the_repl_answers_completes_explains_and_reloads_through_a_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "tmux is required in CI"
        );
        eprintln!("NOTICE: skipping: tmux is not installed");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("lattice-repl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let world = tmp.join("world");
    lattice_testkit::copy_dir(&workspace().join("examples/world"), &world);
    let t = Tmux {
        name: format!("lattice-repl-{}", std::process::id()),
    };
    let cmd = format!(
        "{} repl --world {} --policies {} --history {}",
        env!("CARGO_BIN_EXE_lattice-policy"),
        world.display(),
        workspace().join("policies").display(),
        tmp.join("history").display()
    );
    assert!(
        t.tmux(&[
            "new-session",
            "-d",
            "-s",
            &t.name,
            "-x",
            "220",
            "-y",
            "60",
            &cmd
        ])
        .status
        .success()
    );
    t.wait_for("lattice> ", 1);

    // A whole line in one write, as a paste or fast typeahead delivers it, is answered at
    // once (it once stalled after its first character until the next key).
    t.keys(&["-l", "can Service::shop/web Connect Service::shop/api\r"]);
    let started = Instant::now();
    t.wait_for("permit baseline/bilateral-connect", 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a pasted line took {:?}",
        started.elapsed()
    );

    // Completion: a command, then an entity of a type.
    // (Each step waits for the screen, as a person would before typing on.)
    t.keys(&["-l", "ca"]);
    t.keys(&["Tab"]);
    // (The pasted line above is on the screen too: counts include it.)
    t.wait_for("lattice> can ", 2);
    t.keys(&["-l", "Service::shop/chec"]);
    t.keys(&["Tab"]);
    t.wait_for("can Service::shop/checkout ", 1);
    t.keys(&["-l", "Conn"]);
    t.keys(&["Tab"]);
    t.wait_for("Service::shop/checkout Connect ", 1);
    t.keys(&["-l", "Service::payments/ledger"]);
    t.keys(&["Enter"]);
    t.wait_for(
        "lattice> can Service::shop/checkout Connect Service::payments/ledger",
        1,
    );
    t.wait_for("ALLOW", 2);
    t.wait_for("baseline/bilateral-connect", 2);

    // why: a one-sided declaration says which side is missing.
    t.line("why Service::shop/api Connect Service::payments/ledger");
    t.wait_for("payments/ledger does not list shop/api as a caller", 1);
    t.wait_for("nearest permit baseline/bilateral-connect", 1);

    // A what-if, pasted over two lines, then reset.
    t.line("whatif add forbid(principal, action == Lattice::Action::\"Connect\",");
    t.line("  resource in Lattice::Namespace::\"payments\");");
    t.wait_for("4 newly denied", 1);
    t.wait_for("-apiVersion: cilium.io/v2", 1);
    t.line("can Service::shop/checkout Connect Service::payments/ledger");
    t.wait_for("DENY", 1);
    t.line("whatif reset");
    t.wait_for("what-if reset: 1 change(s) dropped", 1);

    // Hot reload: a saved edit applies without a restart…
    std::fs::write(
        world.join("zz-freeze.yaml"),
        r#"apiVersion: lattice.dev/v1alpha1
kind: CedarPolicy
metadata:
  name: freeze
  namespace: platform
spec:
  policies: |
    @id("payments-freeze")
    forbid (principal, action == Lattice::Action::"Connect", resource in Lattice::Namespace::"payments");
"#,
    )
    .unwrap();
    // The reload applies at once; its notice comes with the next answer.
    t.line_until("", "reloaded:", 1);
    t.line("can Service::shop/checkout Connect Service::payments/ledger");
    let screen = t.wait_for("platform/freeze/payments-freeze", 1);
    assert!(screen.contains("DENY"), "{screen}");

    // …and an invalid one is reported while the last good snapshot stays.
    std::fs::write(
        world.join("zz-freeze.yaml"),
        "apiVersion: lattice.dev/v1alpha1\nkind: CedarPolicy\nmetadata:\n  name: freeze\n  namespace: platform\nspec:\n  policies: |\n    forbid (principal, action, resource) when { principal.nope };\n",
    )
    .unwrap();
    t.line_until("", "the last good snapshot stays", 1);
    t.line("can Service::shop/checkout Connect Service::payments/ledger");
    t.wait_for("platform/freeze/payments-freeze", 2);

    t.line("quit");
    let start = Instant::now();
    while t.tmux(&["has-session", "-t", &t.name]).status.success() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "quit did not end the REPL"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let history = std::fs::read_to_string(tmp.join("history")).unwrap();
    assert!(history.contains("whatif reset"), "{history}");
    let _ = std::fs::remove_dir_all(&tmp);
}
