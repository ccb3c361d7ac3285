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

/// The URL schemes this controller fetches from now.
pub const SUPPORTED_SCHEMES: &[&str] = &["file", "git"];

/// Checks that `url` uses a scheme this controller fetches from. `ssh://` and `https://`
/// are refused until they are fetched with the GitSync's `secretRef`: gix would otherwise
/// reach for the host's own SSH keys.
///
/// # Errors
/// A message naming the scheme and the ones supported.
pub fn check_supported(url: &str) -> Result<(), String> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
    if SUPPORTED_SCHEMES.contains(&scheme) {
        Ok(())
    } else {
        Err(format!(
            "spec.url: {scheme}:// is not fetched by this controller yet (supported: {})",
            SUPPORTED_SCHEMES
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Fetches `git_ref` of `url` into the bare cache repository `cache` (made when absent) and
/// returns the manifests under `path` in the commit it resolves to.
///
/// # Guarantees
/// - A branch or tag is fetched shallow (depth 1); a commit fetches every branch and tag
///   (servers need not serve unadvertised commits) and must be reachable from one of them.
/// - The files returned are exactly those of the resolved commit, read from its tree.
/// - Setting `interrupt` stops a fetch under way.
///
/// # Errors
/// [`GitError`]: one variant per step (cache, fetch, ref, commit, path, read).
pub fn fetch(
    url: &str,
    git_ref: &GitRef,
    path: Option<&str>,
    cache: &Path,
    interrupt: &AtomicBool,
) -> Result<Snapshot, GitError> {
    let repo = open_cache(cache)?;
    let fetch_err = |e: &dyn std::fmt::Display| GitError::Fetch {
        url: url.to_string(),
        message: e.to_string(),
    };
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
    let connection = remote
        .connect(Direction::Fetch)
        .map_err(|e| fetch_err(&e))?;
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

/// Opens the bare cache repository, making it when absent or unreadable.
fn open_cache(cache: &Path) -> Result<gix::Repository, GitError> {
    let err = |e: &dyn std::fmt::Display| GitError::Cache {
        path: cache.to_path_buf(),
        message: e.to_string(),
    };
    if cache.exists() {
        if let Ok(repo) = gix::open(cache) {
            return Ok(repo);
        }
        std::fs::remove_dir_all(cache).map_err(|e| err(&e))?;
    }
    if let Some(parent) = cache.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err(&e))?;
    }
    gix::init_bare(cache).map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_file_and_git_urls_are_fetched_for_now() {
        assert_eq!(check_supported("file:///srv/estate.git"), Ok(()));
        assert_eq!(check_supported("git://127.0.0.1:9418/estate.git"), Ok(()));
        let e = check_supported("ssh://git@host/estate.git").unwrap_err();
        assert!(e.contains("ssh:// is not fetched"), "{e}");
        assert!(check_supported("https://host/estate.git").is_err());
    }
}
