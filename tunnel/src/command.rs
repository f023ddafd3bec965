//! Lifecycle commands down the tunnel: the cell asks a connected agent to do one step of a
//! pivot (or another lifecycle operation) and waits for its answer on the same stream.
//!
//! A command goes through the agent's session task, which records it in the
//! [`crate::session::CellSession`] before sending it: an answer to anything else is a
//! protocol violation, and each command is answered once. The payload's meaning belongs to
//! whoever sends it (the operator's pivot sends `lattice_clusters::pivot::Step`s); the
//! tunnel only carries it, bounded by [`MAX_PAYLOAD_BYTES`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use lattice_proto::tunnel::v1 as pb;

/// The largest payload one command carries (the agent accepts cell messages up to
/// [`crate::agent::MAX_CELL_MESSAGE_BYTES`]).
pub const MAX_PAYLOAD_BYTES: usize = 16 << 20;

/// Why a command got no successful answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("cluster {0:?} has no agent connected")]
    NotConnected(String),
    #[error("cluster {0:?}'s agent did not answer within {1:?}")]
    NoAnswer(String, Duration),
    #[error("cluster {0:?}'s stream closed before it answered")]
    Closed(String),
    #[error("cluster {0:?}'s agent refused: {1}")]
    Refused(String, String),
    #[error("the command cannot be sent: {0}")]
    Command(String),
}

/// Does what the cell's commands ask, on the agent's side. Answers `Ok(message)` when the
/// step is done (and doing it again would change nothing), `Err(why)` otherwise.
pub trait CommandHandler: Send + Sync + 'static {
    fn handle(
        &self,
        operation: pb::lifecycle_command::Operation,
        payload: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
}

/// A command on its way to a session task, with where its answer goes.
pub(crate) struct Queued {
    pub command: pb::LifecycleCommand,
    pub answer: tokio::sync::oneshot::Sender<pb::CommandResult>,
}

/// Truncates `message` to what a result may carry, on a character boundary.
pub(crate) fn bounded(mut message: String) -> String {
    let max = crate::session::MAX_RESULT_BYTES;
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}
