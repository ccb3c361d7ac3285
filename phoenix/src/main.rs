//! `phoenix`: the Phoenix server binary. It composes the API server (`phoenix-apiserver`)
//! and the controllers ([`controllers`]): `serve` runs both in one process, `apiserver` and
//! `controller` each alone, `token` manages API tokens, `secrets` the keys of Secrets
//! encrypted at rest.

#![forbid(unsafe_code)]

mod controllers;
mod hosting;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use phoenix_api::client::{Client, ClientConfig, config_path};
use phoenix_apiserver::auth::Role;
use phoenix_apiserver::serve::{self, ServeArgs};
use phoenix_runtime::RuntimeMetrics;
use prometheus_client::registry::Registry;

use crate::controllers::ControllerFlags;

/// Phoenix: a declarative control plane for Proxmox VE.
#[derive(Debug, Parser)]
#[command(name = "phoenix", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server (embedded store by default) and every controller this build has.
    Serve(ServeCommand),
    /// Run the API server only (as `serve --no-controllers`).
    Apiserver(ServeArgs),
    /// Run controllers against an API server (e.g. inside the gateway guest).
    Controller(ControllerArgs),
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Restore a backup (`phoenix serve --backup-dir`) into a new data directory, then start
    /// `phoenix serve --data-dir` on it. Nothing is overwritten: a data directory that holds a
    /// store is refused.
    Restore {
        /// The backup: a `phoenix-<time>-r<revision>` directory.
        #[arg(long)]
        from: PathBuf,
        /// The new data directory.
        #[arg(long, env = "PHOENIX_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Secrets encrypted at rest: rotate keys, rewrite Secrets with the write key.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
struct ServeCommand {
    #[command(flatten)]
    server: ServeArgs,
    /// Serve the API only; host no controllers (run them with `phoenix controller`).
    #[arg(long)]
    no_controllers: bool,
    #[command(flatten)]
    controllers: ControllerFlags,
}

#[derive(Debug, clap::Args)]
struct ControllerArgs {
    /// Controllers to run (comma-separated); default: every one this build has.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// phoenixctl configuration file with the server, CA and token. Default:
    /// $PHOENIXCONFIG, else ~/.config/phoenix/config.yaml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Context in the configuration file (default: its current context).
    #[arg(long)]
    context: Option<String>,
    /// Listen address for /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:7081")]
    http_listen: std::net::SocketAddr,
    #[command(flatten)]
    controllers: ControllerFlags,
}

/// Where the tokens are: the etcd of the servers, else the server's data directory.
#[derive(Debug, clap::Args)]
struct TokenStoreArgs {
    /// Data directory of the server (embedded store: the running server applies the change).
    #[arg(long, env = "PHOENIX_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The etcd the servers use (comma-separated client URLs): every server on it sees the
    /// change within about a second.
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
}

/// Tokens live hashed in the store, shared by every server on it.
#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (shown once; stored hashed). Running servers pick it up.
    Create {
        #[command(flatten)]
        at: TokenStoreArgs,
        /// viewer (read; no Secret data), editor (write; no Secret data) or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// A name for the token (a-z, 0-9, '-', '.', '_').
        name: String,
    },
    /// Revoke a token: every server refuses it within about a second.
    Revoke {
        #[command(flatten)]
        at: TokenStoreArgs,
        /// The token's name.
        name: String,
    },
    /// List the tokens' names and roles (the embedded store: while the server is stopped).
    List {
        #[command(flatten)]
        at: TokenStoreArgs,
    },
}

#[derive(Debug, clap::Args)]
struct KeyFileArgs {
    /// Data directory of the server.
    #[arg(long, env = "PHOENIX_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The server's --encryption-key-file (default: <data-dir>/encryption-keys.yaml).
    #[arg(long, env = "PHOENIX_ENCRYPTION_KEY_FILE")]
    encryption_key_file: Option<PathBuf>,
}

impl KeyFileArgs {
    fn path(&self) -> PathBuf {
        phoenix_apiserver::encryption::key_file_path(
            &serve::data_dir(self.data_dir.as_deref()),
            self.encryption_key_file.as_deref(),
        )
    }
}

/// Rotation: `add-key`, restart every server, `rewrap`, `remove-key` the old one.
#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Add a new random key to the key file as its write key (servers use it once restarted;
    /// with several servers, copy the file to each).
    AddKey(KeyFileArgs),
    /// Rewrite every Secret with the write key (also those stored before encryption at rest).
    /// The embedded store: stop `phoenix serve` first. etcd: while servers run.
    Rewrap {
        #[command(flatten)]
        keys: KeyFileArgs,
        /// The etcd the servers use (comma-separated client URLs); default: the embedded store.
        #[arg(long, value_delimiter = ',')]
        etcd_endpoints: Vec<String>,
    },
    /// Remove a key (not the write key) from the key file, after `rewrap`.
    RemoveKey {
        #[command(flatten)]
        keys: KeyFileArgs,
        /// The key id.
        id: String,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Apiserver(args) => {
            serve(ServeCommand {
                server: args,
                no_controllers: true,
                controllers: ControllerFlags::default(),
            })
            .await
        }
        Command::Controller(args) => run_controllers(args).await,
        Command::Restore { from, data_dir } => {
            let revision = phoenix_apiserver::backup::restore(&from, &data_dir)
                .await
                .with_context(|| format!("restoring {}", from.display()))?;
            println!(
                "restored {} (store revision {revision}) into {}; start it with: phoenix serve --data-dir {}",
                from.display(),
                data_dir.display(),
                data_dir.display()
            );
            Ok(())
        }
        Command::Secrets { command } => secrets(command).await,
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "phoenix",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Token { command } => token(command).await,
    }
}

/// How long `phoenix token` waits for a running server to apply a request on the embedded
/// store.
const TOKEN_REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn token(command: TokenCommand) -> anyhow::Result<()> {
    use phoenix_apiserver::auth::{self, Outcome, Request};
    let (at, req, token) = match command {
        TokenCommand::Create { at, role, name } => {
            let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let (token, entry) = auth::generate(&name, role)?;
            (at, Request::Create(entry), Some(token))
        }
        TokenCommand::Revoke { at, name } => (at, Request::Revoke(name), None),
        TokenCommand::List { at } => {
            let dir = serve::data_dir(at.data_dir.as_deref());
            if at.etcd_endpoints.is_empty() && !dir.join("store").exists() {
                anyhow::bail!(
                    "{} holds no store (give the server's --data-dir, or --etcd-endpoints)",
                    dir.display()
                );
            }
            let (store, _) = serve::open_store(&dir, &at.etcd_endpoints).await.context(
                "opening the store (the embedded store opens only while `phoenix serve` is stopped)",
            )?;
            for (name, role) in auth::list(store.as_ref()).await? {
                println!("{name}\t{role}");
            }
            return Ok(());
        }
    };
    if !at.etcd_endpoints.is_empty() {
        let dir = serve::data_dir(at.data_dir.as_deref());
        let (store, _) = serve::open_store(&dir, &at.etcd_endpoints).await?;
        match &req {
            Request::Create(entry) => auth::store_entry(store.as_ref(), entry).await?,
            Request::Revoke(name) => auth::revoke(store.as_ref(), name).await?,
        }
    } else {
        let dir = serve::data_dir(at.data_dir.as_deref());
        let outcome = auth::request(&dir, &req, TOKEN_REQUEST_WAIT)
            .await
            .with_context(|| format!("changing the tokens of {}", dir.display()))?;
        if outcome == Outcome::Pending {
            eprintln!(
                "phoenix: no server running on {} took the request; the next `phoenix serve` there applies it",
                dir.display()
            );
        }
    }
    match (req, token) {
        (_, Some(token)) => println!("{token}"),
        (Request::Revoke(name), None) => println!("token {name:?} revoked"),
        _ => {}
    }
    Ok(())
}

async fn secrets(command: SecretsCommand) -> anyhow::Result<()> {
    use phoenix_apiserver::encryption;
    match command {
        SecretsCommand::AddKey(keys) => {
            let path = keys.path();
            let id = encryption::add_key(&path)?;
            println!(
                "added key {id} to {} as the write key; restart the servers, then run `phoenix secrets rewrap`",
                path.display()
            );
        }
        SecretsCommand::Rewrap {
            keys,
            etcd_endpoints,
        } => {
            let census = serve::rewrap_store(
                keys.data_dir.as_deref(),
                &etcd_endpoints,
                keys.encryption_key_file.as_deref(),
            )
            .await?;
            println!(
                "rewrapped {} Secrets ({} under older keys, {} unencrypted); {} already had the write key",
                census.older + census.plaintext,
                census.older,
                census.plaintext,
                census.current
            );
        }
        SecretsCommand::RemoveKey { keys, id } => {
            let path = keys.path();
            encryption::remove_key(&path, &id)?;
            println!("removed key {id} from {}", path.display());
        }
    }
    Ok(())
}

/// `phoenix serve`: the controllers are prepared first (wrong flags fail before anything is
/// opened), then the server starts with their metrics on its `/metrics`, then they run
/// against it.
async fn serve(args: ServeCommand) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let data_dir = serve::data_dir(args.server.data_dir.as_deref());
    let controllers = if args.no_controllers {
        Vec::new()
    } else {
        let mut host = hosting::Host {
            registry: &mut registry,
            data_dir: Some(&data_dir),
        };
        hosting::prepare(&args.controllers, controllers::NAMES, &mut host)?
    };
    let metrics = RuntimeMetrics::register(&mut registry);
    let routes = hosting::routes(&controllers);
    let mut running = serve::start_with_routes(args.server, Some(registry), routes).await?;
    let stop = running.take_shutdown();
    let mut hosted = if controllers.is_empty() {
        None
    } else {
        let client = Client::connect(&running.process_context)
            .await
            .context("connecting the hosted controllers to this server")?;
        Some(hosting::host(
            client,
            metrics,
            controllers,
            &args.controllers,
        ))
    };
    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            // Controllers first (they need the API to finish), then the server.
            if let Some(h) = hosted.as_mut() {
                let _ = stop_controllers(h).await;
            }
            if let Some(stop) = stop {
                let _ = stop.send(());
            }
            tokio::select! {
                _ = running.wait() => {}
                _ = shutdown_signal() => tracing::warn!("second signal: exiting now"),
                _ = tokio::time::sleep(std::time::Duration::from_secs(20)) => tracing::warn!("shutdown took too long"),
            }
        }
        _ = running.wait() => anyhow::bail!("the server stopped unexpectedly"),
    }
    Ok(())
}

/// Lets running reconciles finish and releases the leases; a second signal forces the stop.
async fn stop_controllers(
    hosted: &mut phoenix_runtime::Running,
) -> Result<(), phoenix_runtime::ControllerError> {
    hosted.request_stop();
    tokio::select! {
        r = hosted.wait() => {
            if let Err(e) = &r {
                tracing::warn!(error = %e, "controller error");
            }
            r
        }
        _ = shutdown_signal() => {
            tracing::warn!("second signal: forcing");
            hosted.request_stop();
            hosted.wait().await
        }
    }
}

/// `phoenix controller`: the chosen controllers against a remote API server.
async fn run_controllers(args: ControllerArgs) -> anyhow::Result<()> {
    let selected = hosting::select(&args.only)?;
    let mut registry = Registry::default();
    let mut host = hosting::Host {
        registry: &mut registry,
        data_dir: None,
    };
    let controllers = hosting::prepare(&args.controllers, &selected, &mut host)?;
    if controllers.is_empty() {
        anyhow::bail!(
            "no controllers to run: none of {} can run with these flags (see the log)",
            selected.join(",")
        );
    }
    let path = config_path(args.config.as_deref()).context(
        "no client configuration: pass --config FILE or set PHOENIXCONFIG (phoenix serve writes <data-dir>/admin.yaml)",
    )?;
    let config = ClientConfig::load(&path)?;
    let context = config.context(args.context.as_deref())?;
    let client = Client::connect(context).await?;
    let names: Vec<&str> = controllers.iter().map(|c| c.name).collect();
    let metrics = RuntimeMetrics::register(&mut registry);
    let routes = hosting::routes(&controllers);
    let (addr, http) = hosting::serve_metrics(args.http_listen, Arc::new(registry), routes)
        .await
        .with_context(|| format!("listening on {}", args.http_listen))?;
    eprintln!(
        "phoenix controller: running {} against {}; metrics on http://{addr}/metrics",
        names.join(","),
        context.urls().join(",")
    );
    let mut hosted = hosting::host(client, metrics, controllers, &args.controllers);
    let result = tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            stop_controllers(&mut hosted).await
        }
        r = hosted.wait() => r,
    };
    http.abort();
    Ok(result?)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
