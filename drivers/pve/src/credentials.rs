//! PVE credentials: an API token or a user with a password, read from files.
//!
//! Neither the secret nor the password ever appears in a `Debug` or `Display` output, an error
//! message or a log line; errors about a file name the file and what is wrong, not its content.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret string. `Debug` and `Display` show `***`; [`Secret::expose`] is the one way to
/// read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for building the request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the client authenticates.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// An API token: sent as `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET` on every
    /// request; no ticket, no CSRF token.
    Token {
        /// `USER@REALM!TOKENID`.
        token_id: String,
        /// The token's secret (a UUID on PVE).
        secret: Secret,
    },
    /// A user and password: the client logs in (`POST /access/ticket`) for a ticket and CSRF
    /// token, renews it before PVE's 2 hour expiry, and logs in again once on a 401.
    Password {
        /// `USER@REALM`.
        user: String,
        /// The password.
        password: Secret,
    },
}

/// Why credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        /// `token` or `password`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds nothing.
    #[error("{what} file {path} is empty")]
    Empty {
        /// `token` or `password`.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The file holds more than one line.
    #[error("{what} file {path} must hold one line, it holds {lines}")]
    Lines {
        /// `token` or `password`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// How many non-empty lines it holds.
        lines: usize,
    },
    /// The token is not `USER@REALM!TOKENID=SECRET`.
    #[error("token {source_name}: expected USER@REALM!TOKENID=SECRET: {reason}")]
    TokenFormat {
        /// The file (or `value` for a token given directly).
        source_name: String,
        /// What is missing; never the token itself.
        reason: &'static str,
    },
    /// The user is not `USER@REALM`.
    #[error("user {user:?}: expected USER@REALM (e.g. root@pam)")]
    UserFormat {
        /// The user as given (not a secret).
        user: String,
    },
}

fn read_one_line(what: &'static str, path: &Path) -> Result<String, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    warn_if_readable_by_others(what, path);
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    match lines.as_slice() {
        [] => Err(CredentialsError::Empty {
            what,
            path: path.to_path_buf(),
        }),
        [line] => Ok(line.trim().to_string()),
        many => Err(CredentialsError::Lines {
            what,
            path: path.to_path_buf(),
            lines: many.len(),
        }),
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(what: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the PVE {what} file is readable by others than its owner; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_what: &str, _path: &Path) {}

fn valid_user(user: &str) -> bool {
    match user.split_once('@') {
        Some((name, realm)) => {
            !name.is_empty()
                && !realm.is_empty()
                && !user.contains(['!', '=', ':'])
                && !user.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

impl Credentials {
    /// An API token from one line `USER@REALM!TOKENID=SECRET`; `source_name` names where it
    /// came from in errors.
    pub fn token(line: &str, source_name: &str) -> Result<Self, CredentialsError> {
        let fail = |reason| CredentialsError::TokenFormat {
            source_name: source_name.to_string(),
            reason,
        };
        let line = line.trim();
        let (token_id, secret) = line
            .split_once('=')
            .ok_or_else(|| fail("no '=' before the secret"))?;
        let (user, token_name) = token_id
            .split_once('!')
            .ok_or_else(|| fail("no '!' between the user and the token id"))?;
        if !valid_user(user) {
            return Err(fail("the user is not USER@REALM"));
        }
        if token_name.is_empty() || token_name.chars().any(|c| c.is_whitespace() || c == '=') {
            return Err(fail("the token id is empty or has spaces"));
        }
        if secret.is_empty() || secret.chars().any(char::is_whitespace) {
            return Err(fail("the secret is empty or has spaces"));
        }
        Ok(Credentials::Token {
            token_id: token_id.to_string(),
            secret: Secret::new(secret),
        })
    }

    /// An API token from a file holding one line `USER@REALM!TOKENID=SECRET`.
    pub fn token_from_file(path: impl AsRef<Path>) -> Result<Self, CredentialsError> {
        let path = path.as_ref();
        let line = read_one_line("token", path)?;
        Credentials::token(&line, &path.display().to_string())
    }

    /// A user (`USER@REALM`) and a password.
    pub fn password(user: &str, password: Secret) -> Result<Self, CredentialsError> {
        if !valid_user(user) {
            return Err(CredentialsError::UserFormat {
                user: user.to_string(),
            });
        }
        Ok(Credentials::Password {
            user: user.to_string(),
            password,
        })
    }

    /// A user (`USER@REALM`) and the password in a file (its one line, without the newline).
    pub fn password_from_file(
        user: &str,
        path: impl AsRef<Path>,
    ) -> Result<Self, CredentialsError> {
        if !valid_user(user) {
            return Err(CredentialsError::UserFormat {
                user: user.to_string(),
            });
        }
        let password = read_one_line("password", path.as_ref())?;
        Credentials::password(user, Secret::new(password))
    }

    /// The user (for a token, the token's user) these credentials act as.
    pub fn user(&self) -> &str {
        match self {
            Credentials::Token { token_id, .. } => token_id.split('!').next().unwrap_or(token_id),
            Credentials::Password { user, .. } => user,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(
            &path,
            "root@pam!phoenix=0b121ed6-aa17-560a-dd55-daefd8dda748\n",
        )
        .unwrap();
        let creds = Credentials::token_from_file(&path).unwrap();
        match &creds {
            Credentials::Token { token_id, secret } => {
                assert_eq!(token_id, "root@pam!phoenix");
                assert_eq!(secret.expose(), "0b121ed6-aa17-560a-dd55-daefd8dda748");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(creds.user(), "root@pam");
        let shown = format!("{creds:?}");
        assert!(!shown.contains("0b121ed6"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn token_errors_name_the_file_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        for (content, reason) in [
            ("root@pam!phoenix\n", "no '='"),
            ("root@pam=s3cr3t-value\n", "no '!'"),
            ("root!phoenix=s3cr3t-value\n", "USER@REALM"),
            ("root@pam!=s3cr3t-value\n", "token id"),
            ("root@pam!phoenix=\n", "secret is empty"),
            ("", "is empty"),
            (
                "root@pam!a=s3cr3t-value\nroot@pam!b=s3cr3t-value\n",
                "one line, it holds 2",
            ),
        ] {
            std::fs::write(&path, content).unwrap();
            let err = Credentials::token_from_file(&path).unwrap_err().to_string();
            assert!(err.contains(reason), "{content:?}: {err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(!err.contains("s3cr3t"), "{err}");
        }
        let err = Credentials::token_from_file(dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, CredentialsError::Read { .. }), "{err}");
    }

    #[test]
    fn reads_a_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "correct horse battery\n").unwrap();
        let creds = Credentials::password_from_file("ops@pve", &path).unwrap();
        match &creds {
            Credentials::Password { user, password } => {
                assert_eq!(user, "ops@pve");
                assert_eq!(password.expose(), "correct horse battery");
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{creds:?}").contains("horse"));
        let err = Credentials::password_from_file("ops", &path).unwrap_err();
        assert!(err.to_string().contains("USER@REALM"), "{err}");
    }
}
