//! Phase timings on stderr, for measuring where a command's time goes.
//!
//! With `LATTICE_TIMINGS` set (or `LATTICE_PLAN_TIMINGS`, its older name), each phase's
//! wall time is printed as `command: phase: N ms`, with the CPU time every thread spent in
//! it (so a phase that leaves a core idle shows) and the resident memory at its end: how the
//! README's breakdowns of a 10,000-service `plan` and `mesh` are measured. Unset, a timer
//! costs nothing.

use std::time::Instant;

/// A running timer for one command's phases.
pub struct Phases {
    command: &'static str,
    since: Option<(Instant, Option<f64>)>,
}

impl Phases {
    /// Starts timing `command`'s first phase, when timings were asked for.
    pub fn start(command: &'static str) -> Phases {
        let on = ["LATTICE_TIMINGS", "LATTICE_PLAN_TIMINGS"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty() && v != "0"));
        Phases {
            command,
            since: on.then(|| (Instant::now(), cpu_seconds())),
        }
    }

    /// Ends `phase` (printing its time) and starts the next.
    pub fn done(&mut self, phase: &str) {
        if let Some((t, cpu)) = &mut self.since {
            let now = cpu_seconds();
            let spent = match (*cpu, now) {
                (Some(before), Some(after)) => format!(", cpu {:.0} ms", (after - before) * 1e3),
                _ => String::new(),
            };
            eprintln!(
                "{}: {phase}: {:.0} ms{spent}{}",
                self.command,
                t.elapsed().as_secs_f64() * 1e3,
                resident().map_or(String::new(), |mb| format!(" (resident {mb} MB)"))
            );
            *t = Instant::now();
            *cpu = now;
        }
    }
}

/// User and system CPU time of every thread of the process so far, in seconds, where the
/// system says (Linux's `/proc`, in its fixed 100 ticks a second: 10 ms steps).
fn cpu_seconds() -> Option<f64> {
    cpu_seconds_of(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// The user and system CPU time a `/proc/PID/stat` line gives, in seconds.
fn cpu_seconds_of(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses; the fields after its
    // last `)` do not.
    let mut after = stat.rsplit_once(')')?.1.split_whitespace();
    // utime and stime are fields 14 and 15; `after` starts at field 3.
    let utime: u64 = after.nth(11)?.parse().ok()?;
    let stime: u64 = after.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The process's resident memory in MB, where the system says (Linux's `/proc`).
fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096 / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_from_fields_14_and_15_after_the_command_name() {
        // A command name with a space and a `)` of its own; utime 250, stime 30 ticks.
        let stat = "4242 (lattice) policy) R 1 4242 4242 0 -1 4194304 900 0 0 0 250 30 0 0 \
                    20 0 3 0 100 1000 200";
        assert_eq!(cpu_seconds_of(stat), Some(2.8));
        assert_eq!(cpu_seconds_of("4242 (short) R 1"), None);
        assert_eq!(cpu_seconds_of("no parenthesis at all"), None);
    }
}
