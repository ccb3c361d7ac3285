//! Bearer tokens with roles. Tokens live hashed (SHA-256) in `<data-dir>/tokens.yaml`; the
//! file is re-read when it changes, so `phoenix token create` takes effect on a running server.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What a token may do. Ordered: each role can do what the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything except Secret data.
    Viewer,
    /// Also create, change and delete objects (Secrets included), but not read Secret data.
    Editor,
    /// Everything.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "editor" => Ok(Role::Editor),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?} (viewer, editor, admin)")),
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    /// Hex SHA-256 of the token.
    sha256: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

/// Why the token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading or writing failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        error: std::io::Error,
    },
    /// The file does not parse.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A token of that name exists.
    #[error("a token named {0:?} exists already")]
    Exists(String),
}

/// The token store of a data directory.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, TokenFile)>,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Tokens {
    /// The tokens of `data_dir` (the file may not exist yet).
    pub fn new(data_dir: &Path) -> Self {
        Tokens {
            path: data_dir.join("tokens.yaml"),
            cache: Mutex::new((None, TokenFile::default())),
        }
    }

    fn read(&self) -> Result<TokenFile, TokenError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_saphyr::from_str(&text).map_err(|e| TokenError::Invalid {
                path: self.path.clone(),
                message: e.without_snippet().to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(error) => Err(TokenError::Io {
                path: self.path.clone(),
                error,
            }),
        }
    }

    /// Creates a token; returns it (the only time it is shown). Stored hashed.
    pub fn create(&self, name: &str, role: Role) -> Result<String, TokenError> {
        let mut file = self.read()?;
        if file.tokens.iter().any(|t| t.name == name) {
            return Err(TokenError::Exists(name.into()));
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!("phx_{}", hex::encode(bytes));
        file.tokens.push(TokenEntry {
            name: name.into(),
            role,
            sha256: hash(&token),
        });
        let text = serde_saphyr::to_string(&file).map_err(|e| TokenError::Invalid {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        phoenix_api::client::write_private(&self.path, text.as_bytes()).map_err(|error| {
            TokenError::Io {
                path: self.path.clone(),
                error,
            }
        })?;
        Ok(token)
    }

    /// Whether any token exists.
    pub fn is_empty(&self) -> Result<bool, TokenError> {
        Ok(self.read()?.tokens.is_empty())
    }

    /// The caller behind an `authorization` header value (`Bearer TOKEN`).
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, ApiError> {
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(ApiError::Unauthenticated(
                "a bearer token is required (phoenixctl sends the one in its config)".into(),
            ));
        };
        let digest = hash(token.trim());
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.cache.lock().expect("token cache lock");
        if cache.0 != mtime || mtime.is_none() {
            match self.read() {
                Ok(f) => *cache = (mtime, f),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the token file");
                }
            }
        }
        cache
            .1
            .tokens
            .iter()
            .find(|t| t.sha256 == digest)
            .map(|t| Caller {
                name: t.name.clone(),
                role: t.role,
            })
            .ok_or_else(|| ApiError::Unauthenticated("the token is not valid".into()))
    }
}

/// Fails unless `caller` has at least `needed`.
pub fn require(caller: &Caller, needed: Role, what: &str) -> Result<(), ApiError> {
    if caller.role >= needed {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "token {:?} (role {:?}) may not {what}",
            caller.name, caller.role
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::new(dir.path());
        assert!(tokens.is_empty().unwrap());
        let t = tokens.create("ops", Role::Editor).unwrap();
        let file = std::fs::read_to_string(dir.path().join("tokens.yaml")).unwrap();
        assert!(!file.contains(&t), "the token itself is never stored");
        let caller = tokens.authenticate(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!(caller.role, Role::Editor);
        assert!(tokens.authenticate(Some("Bearer nope")).is_err());
        assert!(tokens.authenticate(None).is_err());
        assert!(matches!(
            tokens.create("ops", Role::Admin),
            Err(TokenError::Exists(_))
        ));
        assert!(require(&caller, Role::Admin, "read secrets").is_err());
        assert!(require(&caller, Role::Viewer, "read").is_ok());
    }
}
