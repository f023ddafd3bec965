//! Phase timings on stderr, for measuring where a command's time goes.
//!
//! With `LATTICE_TIMINGS` set (or `LATTICE_PLAN_TIMINGS`, its older name), each phase's
//! wall time is printed as `command: phase: N ms`: how the README's breakdowns of a
//! 10,000-service `plan` and `mesh` are measured. Unset, a timer costs nothing.

use std::time::Instant;

/// A running timer for one command's phases.
pub struct Phases {
    command: &'static str,
    since: Option<Instant>,
}

impl Phases {
    /// Starts timing `command`'s first phase, when timings were asked for.
    pub fn start(command: &'static str) -> Phases {
        let on = ["LATTICE_TIMINGS", "LATTICE_PLAN_TIMINGS"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty() && v != "0"));
        Phases {
            command,
            since: on.then(Instant::now),
        }
    }

    /// Ends `phase` (printing its time) and starts the next.
    pub fn done(&mut self, phase: &str) {
        if let Some(t) = &mut self.since {
            eprintln!(
                "{}: {phase}: {:.0} ms{}",
                self.command,
                t.elapsed().as_secs_f64() * 1e3,
                resident().map_or(String::new(), |mb| format!(" (resident {mb} MB)"))
            );
            *t = Instant::now();
        }
    }
}

/// The process's resident memory in MB, where the system says (Linux's `/proc`).
fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096 / 1_000_000)
}
