//! Fetching a repository with gix into a cache and reading the manifests of one commit.
//!
//! Blocking: call it from `spawn_blocking`. Nothing here writes outside the cache directory
//! it is given, and nothing is checked out: files are read from the object database.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::bstr::ByteSlice;
use gix::remote::Direction;
use phoenix_api::kinds::git_sync::GitRef;

use crate::credentials::Credentials;
use crate::transport::{self, SshFailure, SshFiles};

/// Longest manifest file read from a repository (the API's own source limit applies after).
const MAX_FILE_BYTES: usize = 16 << 20;

/// The manifests of one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The commit's full hex id.
    pub commit: String,
    /// `(path in the repository, content)` of every `*.yaml`, `*.yml` and `*.json` file under
    /// the path asked for, sorted by path; hidden files and directories are skipped.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Why a fetch or a read failed. Messages name the URL as written in the spec (which
/// validation keeps free of passwords) and never a credential.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The cache repository could not be opened or created.
    #[error("cannot open the cache repository {path}: {message}")]
    Cache {
        /// The cache repository's path.
        path: PathBuf,
        /// gix's explanation.
        message: String,
    },
    /// The remote could not be reached, or the fetch failed.
    #[error("cannot fetch {url}: {message}")]
    Fetch {
        /// The repository URL.
        url: String,
        /// gix's explanation.
        message: String,
    },
    /// The SSH server's host key is not in the Secret's `known_hosts`, or differs from it.
    #[error(
        "cannot fetch {url}: host key verification failed for {host}: its key is not in, or does not match, the known_hosts of spec.secretRef"
    )]
    HostKey {
        /// The repository URL.
        url: String,
        /// The host (and port) whose key was refused.
        host: String,
    },
    /// The server refused the credentials (SSH key refused, HTTP 401 or 403).
    #[error("cannot fetch {url}: authentication failed ({detail}); check spec.secretRef")]
    Authentication {
        /// The repository URL.
        url: String,
        /// What the server said, without any credential.
        detail: String,
    },
    /// The per-fetch SSH files or the TLS set-up could not be made.
    #[error("cannot fetch {url}: {message}")]
    Setup {
        /// The repository URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The branch or tag does not exist on the remote.
    #[error("{url} has no {what}")]
    RefNotFound {
        /// The repository URL.
        url: String,
        /// `branch "main"` or `tag "v1"`.
        what: String,
    },
    /// The commit is not in the repository.
    #[error("{url} has no commit {commit}")]
    CommitNotFound {
        /// The repository URL.
        url: String,
        /// The commit id asked for.
        commit: String,
    },
    /// `spec.path` is not a directory of the commit.
    #[error("spec.path: {path:?} is not a directory in commit {commit}")]
    PathNotFound {
        /// The path asked for.
        path: String,
        /// The commit.
        commit: String,
    },
    /// A manifest file is larger than [`MAX_FILE_BYTES`].
    #[error("{path} is {bytes} bytes, more than {MAX_FILE_BYTES}")]
    TooLarge {
        /// The file's path in the repository.
        path: String,
        /// Its size.
        bytes: usize,
    },
    /// An object of the commit could not be read.
    #[error("cannot read {what} of commit {commit}: {message}")]
    Read {
        /// What was being read.
        what: String,
        /// The commit.
        commit: String,
        /// gix's explanation.
        message: String,
    },
}

/// Fetches `git_ref` of `url` into the bare cache repository `cache` (made when absent) and
/// returns the manifests under `path` in the commit it resolves to.
///
/// # Guarantees
/// - A branch or tag is fetched shallow (depth 1); a commit fetches every branch and tag
///   (servers need not serve unadvertised commits) and must be reachable from one of them.
/// - The files returned are exactly those of the resolved commit, read from its tree.
/// - Setting `interrupt` stops a fetch under way.
/// - Only `credentials` authenticate: no git configuration of the host or its user, no
///   credential helper, SSH agent, SSH configuration or default key is used (see
///   [`crate::transport`]); SSH host keys must match the given `known_hosts`.
///
/// # Errors
/// [`GitError`]: one variant per step (cache, set-up, fetch, host key, authentication,
/// ref, commit, path, read).
pub fn fetch(
    url: &str,
    git_ref: &GitRef,
    path: Option<&str>,
    cache: &Path,
    credentials: &Credentials,
    interrupt: &AtomicBool,
) -> Result<Snapshot, GitError> {
    let mut repo = open_cache(cache)?;
    let setup_err = |e: &dyn std::fmt::Display| GitError::Setup {
        url: url.to_string(),
        message: e.to_string(),
    };
    let ssh = match credentials {
        Credentials::Ssh {
            private_key,
            known_hosts,
        } => {
            let files = SshFiles::write(cache, private_key, known_hosts)
                .map_err(|e| setup_err(&format!("writing the per-fetch SSH files: {e}")))?;
            let mut config = repo.config_snapshot_mut();
            config
                .set_value(
                    &gix::config::tree::Core::SSH_COMMAND,
                    files.command().as_str(),
                )
                .and_then(|_| config.set_value(&gix::config::tree::Ssh::VARIANT, "ssh"))
                .map_err(|e| setup_err(&e))?;
            config.commit().map_err(|e| setup_err(&e))?;
            Some(files)
        }
        _ => None,
    };
    let fetch_err = |e: &dyn std::error::Error| classify(url, e, ssh.as_ref());
    let (specs, what): (Vec<String>, Option<String>) = match (&git_ref.branch, &git_ref.tag) {
        (Some(b), _) => (
            vec![format!("+refs/heads/{b}:refs/phoenix/target")],
            Some(format!("branch {b:?}")),
        ),
        (None, Some(t)) => (
            vec![format!("+refs/tags/{t}:refs/phoenix/target")],
            Some(format!("tag {t:?}")),
        ),
        (None, None) => (
            vec![
                "+refs/heads/*:refs/phoenix/heads/*".to_string(),
                "+refs/tags/*:refs/phoenix/tags/*".to_string(),
            ],
            None,
        ),
    };
    let remote = repo
        .remote_at(url)
        .map_err(|e| fetch_err(&e))?
        .with_refspecs(specs.iter().map(String::as_str), Direction::Fetch)
        .map_err(|e| fetch_err(&e))?;
    let mut connection = remote
        .connect(Direction::Fetch)
        .map_err(|e| fetch_err(&e))?;
    let (login, ca) = match credentials {
        Credentials::Https { login, ca } => (login.clone(), ca.as_deref()),
        _ => (None, None),
    };
    if url.starts_with("https://") {
        // Always our TLS set-up: reqwest has no crypto provider of its own here.
        let options = transport::http_options(ca).map_err(|e| setup_err(&e))?;
        connection.set_transport_options(options);
    }
    // Only the Secret's login, never a credential helper or a prompt.
    connection.set_credentials(move |action| {
        Ok(match (action, &login) {
            (gix::credentials::helper::Action::Get(ctx), Some((user, password))) => {
                Some(gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: user.clone(),
                        password: password.clone(),
                        oauth_refresh_token: None,
                    },
                    next: ctx.into(),
                })
            }
            _ => None,
        })
    });
    let mut prepare = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| fetch_err(&e))?;
    if what.is_some() {
        prepare = prepare.with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(NonZeroU32::MIN));
    }
    let outcome = prepare
        .receive(gix::progress::Discard, interrupt)
        .map_err(|e| fetch_err(&e))?;

    let id = match (what, &git_ref.commit) {
        (Some(what), _) => outcome
            .ref_map
            .mappings
            .iter()
            .find_map(|m| m.remote.as_id().map(|id| id.to_owned()))
            .ok_or(GitError::RefNotFound {
                url: url.to_string(),
                what,
            })?,
        (None, Some(commit)) => {
            gix::ObjectId::from_hex(commit.as_bytes()).map_err(|_| GitError::CommitNotFound {
                url: url.to_string(),
                commit: commit.clone(),
            })?
        }
        (None, None) => unreachable!("validation requires exactly one ref"),
    };
    let commit = repo
        .find_object(id)
        .ok()
        .and_then(|o| o.peel_to_commit().ok())
        .ok_or_else(|| GitError::CommitNotFound {
            url: url.to_string(),
            commit: id.to_string(),
        })?;
    let commit_hex = commit.id.to_string();
    let read_err = |what: &str, e: &dyn std::fmt::Display| GitError::Read {
        what: what.to_string(),
        commit: commit_hex.clone(),
        message: e.to_string(),
    };
    let mut tree = commit.tree().map_err(|e| read_err("the tree", &e))?;
    let base = path
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty() && *p != ".");
    if let Some(base) = base {
        let not_found = || GitError::PathNotFound {
            path: base.to_string(),
            commit: commit_hex.clone(),
        };
        let entry = tree
            .lookup_entry_by_path(base)
            .map_err(|e| read_err(base, &e))?
            .ok_or_else(not_found)?;
        if !entry.mode().is_tree() {
            return Err(not_found());
        }
        tree = entry.object().map_err(|e| read_err(base, &e))?.into_tree();
    }
    let mut recorder = gix::traverse::tree::Recorder::default();
    tree.traverse()
        .breadthfirst(&mut recorder)
        .map_err(|e| read_err("the tree", &e))?;
    let mut files = Vec::new();
    for entry in recorder.records {
        if !entry.mode.is_blob() {
            continue;
        }
        let rel = entry.filepath.to_str_lossy().into_owned();
        if rel.split('/').any(|seg| seg.starts_with('.')) || !is_manifest_name(&rel) {
            continue;
        }
        let full = match base {
            Some(b) => format!("{b}/{rel}"),
            None => rel,
        };
        let blob = repo
            .find_object(entry.oid)
            .map_err(|e| read_err(&full, &e))?;
        if blob.data.len() > MAX_FILE_BYTES {
            return Err(GitError::TooLarge {
                path: full,
                bytes: blob.data.len(),
            });
        }
        files.push((full, blob.data.clone()));
    }
    files.sort();
    Ok(Snapshot {
        commit: commit_hex,
        files,
    })
}

/// The names `phoenixctl apply DIR` reads.
fn is_manifest_name(path: &str) -> bool {
    [".yaml", ".yml", ".json"].iter().any(|e| path.ends_with(e))
}

/// Opens the bare cache repository, making it when absent or unreadable. Isolated: the
/// git configuration of the system, the user and the environment (`GIT_SSH_COMMAND`,
/// `url.*.insteadOf`, credential helpers, ...) is not read.
fn open_cache(cache: &Path) -> Result<gix::Repository, GitError> {
    let err = |e: &dyn std::fmt::Display| GitError::Cache {
        path: cache.to_path_buf(),
        message: e.to_string(),
    };
    let open = || gix::open_opts(cache, gix::open::Options::isolated());
    if cache.exists() {
        if let Ok(repo) = open() {
            return Ok(repo);
        }
        std::fs::remove_dir_all(cache).map_err(|e| err(&e))?;
    }
    if let Some(parent) = cache.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err(&e))?;
    }
    gix::init_bare(cache).map_err(|e| err(&e))?;
    open().map_err(|e| err(&e))
}

/// `e` and its sources, each message once, joined by `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// A fetch failure as [`GitError`]: host key and authentication failures named as such
/// (from ssh's log, or the HTTP status), else gix's explanation.
fn classify(url: &str, e: &dyn std::error::Error, ssh: Option<&SshFiles>) -> GitError {
    let message = chain(e);
    let log = ssh.map(SshFiles::log).unwrap_or_default();
    match transport::ssh_failure(&log) {
        Some(SshFailure::HostKey) => {
            return GitError::HostKey {
                url: url.to_string(),
                host: host_of(url),
            };
        }
        Some(SshFailure::Authentication) => {
            return GitError::Authentication {
                url: url.to_string(),
                detail: "the SSH server refused the key of spec.secretRef".into(),
            };
        }
        None => {}
    }
    let lower = message.to_ascii_lowercase();
    if lower.contains("no credentials were returned") {
        return GitError::Authentication {
            url: url.to_string(),
            detail: "the HTTP server asks for a login and spec.secretRef gives none".into(),
        };
    }
    // Whole phrases only: a port or path in the message may contain "401".
    let refused = [
        "were not accepted by the remote",
        "http status 401",
        "http status 403",
        "401 unauthorized",
        "403 forbidden",
    ];
    if refused.iter().any(|p| lower.contains(p)) {
        return GitError::Authentication {
            url: url.to_string(),
            detail:
                "the HTTP server answered 401/403 to the login of spec.secretRef (or to no login)"
                    .into(),
        };
    }
    let message = if log.is_empty() {
        message
    } else {
        format!("{message} (ssh: {})", log.replace(['\r', '\n'], " "))
    };
    GitError::Fetch {
        url: url.to_string(),
        message,
    }
}

/// `host` or `[host]:port` of `url`, as `known_hosts` names it.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    match host_port.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']'))) =>
        {
            format!("[{}]:{port}", host.trim_matches(['[', ']']))
        }
        _ => host_port.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Message(&'static str);
    impl std::fmt::Display for Message {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Message {}

    #[test]
    fn http_refusals_are_authentication_failures_and_other_errors_are_not() {
        let url = "https://127.0.0.1:40123/estate.git";
        let refused = Message(
            "Credentials provided for \"https://127.0.0.1:40123/estate.git\" were not accepted by the remote: Received HTTP status 401: Unauthenticated",
        );
        assert!(matches!(
            classify(url, &refused, None),
            GitError::Authentication { .. }
        ));
        let tls = Message(
            "error sending request for url (https://127.0.0.1:40123/estate.git/info/refs?service=git-upload-pack): invalid peer certificate: UnknownIssuer",
        );
        let e = classify(url, &tls, None);
        assert!(matches!(e, GitError::Fetch { .. }), "{e:?}");
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    }

    #[test]
    fn hosts_are_named_as_known_hosts_does() {
        assert_eq!(host_of("ssh://git@example.com/r.git"), "example.com");
        assert_eq!(
            host_of("ssh://git@127.0.0.1:2222/r.git"),
            "[127.0.0.1]:2222"
        );
        assert_eq!(host_of("ssh://[::1]:22/r.git"), "[::1]:22");
        assert_eq!(host_of("ssh://[::1]/r.git"), "[::1]");
    }
}
