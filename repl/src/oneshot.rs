//! One-shot equivalents of the REPL's questions, for scripts and CI: the same session code,
//! JSON with `-o json`, exit codes 0 allow, 1 deny, 2 error.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::EXIT_USAGE;
use crate::loading::PacksInForce;
use crate::output::{Format, emit, emit_json};
use crate::session::{Reply, Session};

/// Where the answers come from, and how they are printed.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// The world: directories or files of manifests (repeatable).
    #[arg(long, global = true, default_value = "examples/world")]
    pub world: Vec<PathBuf>,
    /// A rule-pack directory (each subdirectory with a pack.yaml) to decide under instead of
    /// the bundled packs, which the binary carries.
    #[arg(long, global = true)]
    pub policies: Option<PathBuf>,
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Human)]
    pub output: Format,
}

/// A decision query.
#[derive(Args, Clone, Debug)]
pub struct QueryArgs {
    pub principal: String,
    pub action: String,
    pub resource: String,
    /// The request context as a JSON object (merged over the defaults).
    pub context: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

/// A what-if change.
#[derive(Subcommand, Clone, Debug)]
pub enum Change {
    /// Add policies: a .cedar file, a manifest with one CedarPolicy, or policy text.
    Add { source: String },
    /// Remove one policy by id.
    Remove { id: String },
    /// Disable a CedarPolicy object, as namespace/name.
    Disable { object: String },
}

fn open(common: &Common) -> Option<Session> {
    match Session::open(common.world.clone(), common.policies.clone()) {
        Ok(s) => Some(s),
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            None
        }
    }
}

/// Prints an answer with the packs that decided it (a usage error decided nothing).
fn print(mut reply: Reply, format: Format, packs: &PacksInForce) -> u8 {
    let decided = reply.code != EXIT_USAGE;
    match format {
        Format::Json => {
            if decided && let Some(doc) = reply.json.as_object_mut() {
                doc.insert("packs".into(), packs.json());
            }
            emit_json(&reply.json)
        }
        Format::Human if !decided => eprint!("{}", reply.text),
        Format::Human => emit(&format!("{}{}", reply.text, packs.line())),
    }
    reply.code
}

pub fn can(args: QueryArgs, explain: bool) -> u8 {
    let Some(session) = open(&args.common) else {
        return EXIT_USAGE;
    };
    let ctx = args.context.as_deref();
    let reply = if explain {
        session.why(&args.principal, &args.action, &args.resource, ctx)
    } else {
        session.can(&args.principal, &args.action, &args.resource, ctx)
    };
    print(reply, args.common.output, &session.loaded.packs)
}

pub fn gates(workload: &str, common: Common) -> u8 {
    let Some(session) = open(&common) else {
        return EXIT_USAGE;
    };
    print(
        session.gates(workload),
        common.output,
        &session.loaded.packs,
    )
}

pub fn whatif(change: Change, common: Common) -> u8 {
    let Some(mut session) = open(&common) else {
        return EXIT_USAGE;
    };
    let change = match change {
        Change::Add { source } => match crate::commands::policy_source(&source) {
            Ok(c) => c,
            Err(e) => return print(Reply::error(e), common.output, &session.loaded.packs),
        },
        Change::Remove { id } => lattice_engine::PolicyChange::Remove { id },
        Change::Disable { object } => match object.split_once('/') {
            Some((ns, name)) => lattice_engine::PolicyChange::Disable {
                namespace: ns.into(),
                name: name.into(),
            },
            None => {
                return print(
                    Reply::error("disable takes namespace/name"),
                    common.output,
                    &session.loaded.packs,
                );
            }
        },
    };
    let reply = session.whatif(change);
    print(reply, common.output, &session.loaded.packs)
}
