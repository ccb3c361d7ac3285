//! Exit codes: scripts can tell usage, validation, not-found, conflict and connection
//! failures apart.

use phoenix_api::client::{ClientError, ConfigError};

/// Why the command failed; the process exits with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Code {
    /// Any other failure (also: `diff` found differences).
    Failure = 1,
    // 2: bad flags or arguments; clap exits with it before a command runs.
    /// A manifest did not decode or validate.
    Invalid = 3,
    /// The object or field does not exist.
    NotFound = 4,
    /// A conflict on resourceVersion, or the object already exists.
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

/// The exit code for a client error.
pub fn code_of(e: &ClientError) -> Code {
    match e {
        ClientError::NotFound(_) => Code::NotFound,
        ClientError::Conflict(_) => Code::Conflict,
        ClientError::Invalid(_) | ClientError::Decode(_) | ClientError::UnexpectedKind { .. } => {
            Code::Invalid
        }
        ClientError::Connect { .. } | ClientError::BadServer { .. } => Code::Connection,
        ClientError::Unauthenticated(_)
        | ClientError::Forbidden(_)
        | ClientError::TooOld(_)
        | ClientError::Server { .. } => Code::Failure,
    }
}

/// Joins a multi-line server message into one line.
pub fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::new(code_of(&e), one_line(&e.to_string()))
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::new(Code::Failure, e.to_string())
    }
}

/// Result of a command.
pub type CmdResult = Result<(), Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_documented_codes() {
        let f = |e| Failure::from(e).code as u8;
        assert_eq!(f(ClientError::NotFound("x".into())), 4);
        assert_eq!(f(ClientError::Conflict("x".into())), 5);
        assert_eq!(f(ClientError::Invalid("a\nb".into())), 3);
        assert_eq!(
            f(ClientError::Connect {
                server: "s".into(),
                message: "m".into()
            }),
            6
        );
        assert_eq!(f(ClientError::Forbidden("no".into())), 1);
        assert_eq!(
            Failure::from(ClientError::Invalid("a: x\nb: y\n".into())).message,
            "a: x; b: y"
        );
    }
}
