//! Exit codes: scripts can tell usage, validation, not-found, conflict and connection
//! failures apart.

/// Why the command failed; the process exits with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Any other failure.
    Failure = 1,
    // 2: bad flags or arguments; clap exits with it before a command runs.
    /// A manifest did not decode or validate.
    Invalid = 3,
    /// The object or field does not exist.
    NotFound = 4,
    /// A conflict on resourceVersion (returned once phoenixctl talks to the API server).
    #[allow(dead_code)]
    Conflict = 5,
    /// The server could not be reached.
    Connection = 6,
}

/// A failed command: an exit code and a message (already printed when empty).
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: Code,
    /// One line for stderr; empty when details were printed already.
    pub message: String,
}

impl Failure {
    /// A failure with a message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Result of a command.
pub type CmdResult = Result<(), Failure>;
