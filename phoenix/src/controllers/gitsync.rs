//! The `--gitsync-*` flags of `phoenix serve` and `phoenix controller`.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::Context;
use phoenix_gitsync::GitSyncOptions;
use prometheus_client::registry::Registry;

use crate::hosting::{Hosted, Prepared};

/// `--gitsync-*` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GitSyncArgs {
    /// Where each GitSync keeps its bare cache repository (`DIR/NAME.git`). Whoever can write
    /// it chooses what gets applied: keep it private. Default: a new private directory
    /// (mode 0700) under the system's temporary directory, so a restart fetches afresh.
    #[arg(long, value_name = "DIR", env = "PHOENIX_GITSYNC_CACHE_DIR")]
    pub gitsync_cache_dir: Option<PathBuf>,
}

impl GitSyncArgs {
    /// The cache directory: the flag's (made 0700 when absent), or a new private one.
    fn cache_dir(&self) -> anyhow::Result<PathBuf> {
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        if let Some(dir) = &self.gitsync_cache_dir {
            if !dir.is_dir() {
                builder
                    .recursive(true)
                    .create(dir)
                    .with_context(|| format!("--gitsync-cache-dir {}", dir.display()))?;
            }
            return Ok(dir.clone());
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("phoenix-gitsync-{}-{nanos}", std::process::id()));
        // `create`, not `create_all`: a directory someone made in advance is refused.
        builder
            .create(&dir)
            .with_context(|| format!("making the GitSync cache {}", dir.display()))?;
        Ok(dir)
    }
}

impl Hosted for GitSyncArgs {
    const NAME: &'static str = phoenix_gitsync::NAME;

    fn prepare(&self, _registry: &mut Registry) -> anyhow::Result<Prepared> {
        let options = GitSyncOptions {
            cache_dir: self.cache_dir()?,
        };
        Ok(Prepared::ready(move |manager, common| {
            manager.add(phoenix_gitsync::controller(options).options(common));
        }))
    }
}
