//! How the cell refuses what an agent sends: a protocol violation, and the gRPC status it
//! closes the stream with. Shared by the session and the message rules it applies.

/// A gRPC code for a protocol violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The message is malformed or answers nothing.
    InvalidArgument,
    /// The message came out of order.
    FailedPrecondition,
    /// The message speaks for another cluster.
    PermissionDenied,
}

/// Why the cell closes an agent's stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProtocolError {
    pub violation: Violation,
    pub message: String,
}

impl ProtocolError {
    pub(crate) fn new(violation: Violation, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            violation,
            message: message.into(),
        }
    }
}

impl From<ProtocolError> for tonic::Status {
    fn from(e: ProtocolError) -> tonic::Status {
        match e.violation {
            Violation::InvalidArgument => tonic::Status::invalid_argument(e.message),
            Violation::FailedPrecondition => tonic::Status::failed_precondition(e.message),
            Violation::PermissionDenied => tonic::Status::permission_denied(e.message),
        }
    }
}
