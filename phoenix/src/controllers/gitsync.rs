//! The `--gitsync-*` flags of `phoenix serve` and `phoenix controller`.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::hosting::{ClientSlot, Host, Hosted, Prepared};
use anyhow::Context;
use phoenix_gitsync::GitSyncOptions;

/// `--gitsync-*` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GitSyncArgs {
    /// Where each GitSync keeps its bare cache repository (`DIR/NAME.git`). Whoever can write
    /// it chooses what gets applied: keep it private. Default: `<data-dir>/gitsync` in
    /// `phoenix serve` (kept across restarts); in `phoenix controller` a new private
    /// directory (mode 0700) under the system's temporary directory.
    #[arg(long, value_name = "DIR", env = "PHOENIX_GITSYNC_CACHE_DIR")]
    pub gitsync_cache_dir: Option<PathBuf>,
}

impl GitSyncArgs {
    /// The cache directory: the flag's (made 0700 when absent), else `gitsync` in the
    /// server's data directory, else a new private one.
    fn cache_dir(&self, data_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        let given = self
            .gitsync_cache_dir
            .clone()
            .or_else(|| data_dir.map(|d| d.join("gitsync")));
        if let Some(dir) = &given {
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

    fn prepare(&self, host: &mut Host<'_>) -> anyhow::Result<Prepared> {
        let metrics = phoenix_gitsync::GitSyncMetrics::new(host.registry);
        let options = GitSyncOptions {
            cache_dir: self.cache_dir(host.data_dir)?,
            metrics: metrics.clone(),
        };
        // The webhook (POST /hooks/gitsync/NAME) on the process's HTTP port.
        let client = ClientSlot::default();
        let routes = phoenix_gitsync::webhook::router(client.clone(), metrics);
        Ok(Prepared::ready(move |manager, common| {
            manager.add(phoenix_gitsync::controller(options).options(common));
        })
        .with_routes(routes, client))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_cache_is_under_the_data_dir_unless_the_flag_says_otherwise() {
        let data = std::env::temp_dir().join(format!("phoenix-gs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let dir = GitSyncArgs::default().cache_dir(Some(&data)).unwrap();
        assert_eq!(dir, data.join("gitsync"));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "a private cache: {mode:o}");
        // Kept across restarts: the same directory again.
        assert_eq!(GitSyncArgs::default().cache_dir(Some(&data)).unwrap(), dir);
        let flag = data.join("elsewhere");
        let args = GitSyncArgs {
            gitsync_cache_dir: Some(flag.clone()),
        };
        assert_eq!(args.cache_dir(Some(&data)).unwrap(), flag);
        std::fs::remove_dir_all(&data).unwrap();
    }
}
