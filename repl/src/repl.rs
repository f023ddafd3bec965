//! `lattice-policy repl`: an interactive session over one snapshot, with history, completion,
//! multi-line policies and hot reload of the world and policy directories.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper};

use crate::commands::{COMMANDS, execute};
use crate::query::{action_names, entity_type_names};
use crate::session::Session;
use crate::style::Style;
use crate::{EXIT_OK, EXIT_USAGE};

/// How long file events settle before a reload (editors write in several steps).
const SETTLE: Duration = Duration::from_millis(250);

struct LatticeHelper {
    session: Arc<Mutex<Session>>,
    files: FilenameCompleter,
}

impl Helper for LatticeHelper {}
impl Highlighter for LatticeHelper {}
impl Hinter for LatticeHelper {
    type Hint = String;
}

impl Validator for LatticeHelper {
    /// A pasted policy (`whatif add permit(…` without its final `;`) continues on the next
    /// line.
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input().trim_end();
        if input.starts_with("whatif add") && input.contains('(') && !input.ends_with(';') {
            return Ok(ValidationResult::Incomplete);
        }
        Ok(ValidationResult::Valid(None))
    }
}

/// Candidates starting with `prefix`; a finished word gets its separating space (a uid type
/// such as `Service::` does not: its id follows).
fn pairs(prefix: &str, options: impl IntoIterator<Item = String>) -> Vec<Pair> {
    let mut out: Vec<Pair> = options
        .into_iter()
        .filter(|o| o.starts_with(prefix))
        .map(|o| Pair {
            replacement: if o.ends_with("::") {
                o.clone()
            } else {
                format!("{o} ")
            },
            display: o,
        })
        .collect();
    out.sort_by(|a, b| a.display.cmp(&b.display));
    out.dedup_by(|a, b| a.display == b.display);
    out
}

impl Completer for LatticeHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        // The current word starts after the last whitespace (which may be wider than a byte).
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &before[start..];
        let words: Vec<&str> = before[..start].split_whitespace().collect();
        let Ok(session) = self.session.lock() else {
            return Ok((start, Vec::new()));
        };
        let uids = || {
            // Complete a type first, then the uids of that type.
            if word.contains("::") {
                session.entity_uids()
            } else {
                entity_type_names()
                    .into_iter()
                    .map(|t| format!("{t}::"))
                    .collect()
            }
        };
        let candidates = match words.as_slice() {
            [] => pairs(word, COMMANDS.iter().map(|(c, _)| (*c).to_owned())),
            ["can" | "why"] | ["can" | "why", _, _] => pairs(word, uids()),
            ["can" | "why", _] => pairs(word, action_names()),
            ["gates"] => pairs(
                word,
                session
                    .entity_uids()
                    .into_iter()
                    .filter_map(|u| u.strip_prefix("Service::").map(str::to_owned)),
            ),
            ["show"] => {
                let mut o = uids();
                o.push("policy".into());
                pairs(word, o)
            }
            ["show", "policy"] | ["whatif", "remove"] => pairs(word, session.policy_ids()),
            ["policies"] => pairs(word, session.pack_names()),
            ["entities"] => pairs(word, entity_type_names()),
            ["whatif"] => pairs(
                word,
                ["add", "remove", "disable", "reset"].map(str::to_owned),
            ),
            ["whatif", "disable"] => pairs(
                word,
                session
                    .loaded
                    .store
                    .objects()
                    .map(|((ns, name), _)| format!("{ns}/{name}")),
            ),
            ["load"] | ["whatif", "add"] => {
                drop(session);
                return self.files.complete(line, pos, ctx);
            }
            _ => Vec::new(),
        };
        Ok((start, candidates))
    }
}

/// Runs the REPL until `quit` or end of input.
pub fn run(world: Vec<PathBuf>, policies: Option<PathBuf>, history: Option<PathBuf>) -> u8 {
    let style = Style::detect();
    let mut session = match Session::open(world.clone(), policies.clone()) {
        Ok(s) => s,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            return EXIT_USAGE;
        }
    };
    session.style = style;
    println!(
        "lattice-policy repl — {} objects, {} policies — snapshot {}\n{}`help` lists the commands; edits to the world and policies apply as you save them.",
        session.loaded.world.len(),
        session.loaded.store.active().count(),
        session.snapshot().digest(),
        session.loaded.packs.line()
    );
    let session = Arc::new(Mutex::new(session));
    let mut editor: Editor<LatticeHelper, DefaultHistory> = match Editor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return EXIT_USAGE;
        }
    };
    editor.set_helper(Some(LatticeHelper {
        session: session.clone(),
        files: FilenameCompleter::new(),
    }));
    let history = history.or_else(default_history);
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let notices: Notices = Arc::default();
    let _watcher = watch(&world, &policies, session.clone(), notices.clone());
    loop {
        match editor.readline("lattice> ") {
            Ok(line) => {
                show(&notices);
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                let reply = {
                    let Ok(mut s) = session.lock() else { break };
                    execute(&mut s, &line)
                };
                match reply {
                    None => break,
                    Some(r) => print!("{}", r.text),
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(h);
    }
    EXIT_OK
}

/// `$XDG_STATE_HOME/lattice/history`, else `~/.local/state/lattice/history`.
fn default_history() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("lattice/history"))
}

/// Watches the world and policy paths; each settled burst of changes reloads the session at
/// once, and the outcome is shown with the next answer (see [`Notices`]).
fn watch(
    world: &[PathBuf],
    policies: &Option<PathBuf>,
    session: Arc<Mutex<Session>>,
    notices: Notices,
) -> Option<notify::RecommendedWatcher> {
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .ok()?;
    // The bundled packs are part of the binary: only a named directory is watched.
    for path in world.iter().chain(policies.iter()) {
        if path.exists() {
            let _ = watcher.watch(path, RecursiveMode::Recursive);
        }
    }
    std::thread::spawn(move || {
        while rx.recv().is_ok() {
            // Let the burst settle, then reload once.
            while rx.recv_timeout(SETTLE).is_ok() {}
            let text = match session.lock() {
                Ok(mut s) => s.reload().text,
                Err(_) => return,
            };
            if let Ok(mut n) = notices.lock() {
                n.push(text);
            }
        }
    });
    Some(watcher)
}

/// Reload outcomes waiting to be shown. They are printed with the next answer (or an empty
/// Enter) rather than above the prompt: rustyline 17's external printer makes it wait on
/// the terminal before reading what it has already buffered, so a pasted line stalled
/// after its first character until the next key.
type Notices = Arc<Mutex<Vec<String>>>;

fn show(notices: &Notices) {
    if let Ok(mut n) = notices.lock() {
        for text in n.drain(..) {
            print!("{text}");
        }
    }
}
