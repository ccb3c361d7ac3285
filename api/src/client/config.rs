//! The client configuration file (contexts with server URL, CA and token) that `phoenix serve`
//! writes and `phoenixctl` reads, and where it is looked for.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The client configuration file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    /// `phoenix.thinkheads.ai/v1alpha1`.
    pub api_version: String,
    /// `Config`.
    pub kind: String,
    /// The context used when none is named.
    pub current_context: String,
    /// Named servers with their credentials.
    pub contexts: Vec<Context>,
}

/// One server and the credentials to use with it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    /// Context name.
    pub name: String,
    /// `https://HOST:PORT` (or `http://` for a server started without TLS). With
    /// [`Context::servers`] it may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    /// Several servers of one system (one store, one CA, the same tokens), tried in this order
    /// (after `server`, when both are given); see [`Context::urls`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// PEM of the CA that signed the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    /// Bearer token.
    pub token: String,
}

impl std::fmt::Debug for Context {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("servers", &self.servers)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Context {
    /// The servers to try, in order: `server` (if set), then each of `servers` not already
    /// listed.
    pub fn urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = Vec::new();
        for u in std::iter::once(&self.server).chain(&self.servers) {
            if !u.is_empty() && !urls.contains(u) {
                urls.push(u.clone());
            }
        }
        urls
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("current_context", &self.current_context)
            .field("contexts", &self.contexts)
            .finish()
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No file at the path (and none given by flag or `$PHOENIXCONFIG`).
    #[error(
        "no client configuration at {0} (run `phoenix serve` once, or pass --config / --server and --token)"
    )]
    Missing(PathBuf),
    /// The file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        error: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The named context does not exist.
    #[error("no context named {0:?} in the configuration")]
    NoSuchContext(String),
}

impl ClientConfig {
    /// A configuration with one context, made current.
    pub fn single(context: Context) -> Self {
        Self {
            api_version: crate::API_VERSION.into(),
            kind: "Config".into(),
            current_context: context.name.clone(),
            contexts: vec![context],
        }
    }

    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing(path.into()));
            }
            Err(error) => {
                return Err(ConfigError::Io {
                    path: path.into(),
                    error,
                });
            }
        };
        let config: Self = serde_saphyr::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.into(),
            message: e.without_snippet().to_string(),
        })?;
        for (i, c) in config.contexts.iter().enumerate() {
            if c.urls().is_empty() {
                return Err(ConfigError::Invalid {
                    path: path.into(),
                    message: format!(
                        "contexts[{i}] ({:?}): needs server or servers (a list of URLs)",
                        c.name
                    ),
                });
            }
        }
        Ok(config)
    }

    /// Writes the file with mode 0600 (it holds a token), creating parent directories.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let io = |error| ConfigError::Io {
            path: path.into(),
            error,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let text = serde_saphyr::to_string(self).map_err(|e| ConfigError::Invalid {
            path: path.into(),
            message: e.to_string(),
        })?;
        write_private(path, text.as_bytes()).map_err(io)
    }

    /// The named context, or the current one.
    pub fn context(&self, name: Option<&str>) -> Result<&Context, ConfigError> {
        let name = name.unwrap_or(&self.current_context);
        self.contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ConfigError::NoSuchContext(name.into()))
    }
}

/// Writes `bytes` to `path` with mode 0600, atomically: a temporary file (a dot-name unique to
/// this process and call) in `path`'s directory, written and synced, renamed over `path`, then
/// the directory synced.
///
/// A reader of `path` sees the old file or the new one, whole. On failure `path` is unchanged
/// and the temporary file is removed.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(dir)?.sync_all()
}

/// `~/.config/phoenix/config.yaml`, if `$HOME` is set.
pub fn default_config_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/phoenix/config.yaml"))
}

/// The configuration file to use: `flag`, else `$PHOENIXCONFIG`, else the default path.
pub fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PHOENIXCONFIG").map(PathBuf::from))
        .or_else(default_config_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_lists_one_server_or_several() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let write = |text: &str| std::fs::write(&path, text).unwrap();
        write(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Config\ncurrentContext: ha\ncontexts:\n- name: ha\n  servers: [https://a:7443, https://b:7443]\n  token: t\n- name: one\n  server: https://a:7443\n  token: t\n- name: both\n  server: https://a:7443\n  servers: [https://b:7443, https://a:7443]\n  token: t\n",
        );
        let c = ClientConfig::load(&path).unwrap();
        assert_eq!(
            c.context(None).unwrap().urls(),
            ["https://a:7443", "https://b:7443"]
        );
        assert_eq!(c.context(Some("one")).unwrap().urls(), ["https://a:7443"]);
        assert_eq!(
            c.context(Some("both")).unwrap().urls(),
            ["https://a:7443", "https://b:7443"]
        );
        // Saved and loaded again: the same.
        c.save(&path).unwrap();
        assert_eq!(ClientConfig::load(&path).unwrap(), c);
        write(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Config\ncurrentContext: x\ncontexts:\n- name: x\n  token: t\n",
        );
        let err = ClientConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("contexts[0]") && err.contains("servers"),
            "{err}"
        );
    }
}
