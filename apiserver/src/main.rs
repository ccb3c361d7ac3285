//! `phoenix`: the Phoenix server binary.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use phoenix_apiserver::auth::{Role, Tokens};
use phoenix_apiserver::serve::{self, ServeArgs};

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
    /// Run the API server (embedded store by default).
    Serve(ServeArgs),
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (shown once; stored hashed). A running server picks it up.
    Create {
        /// Data directory of the server.
        #[arg(long, env = "PHOENIX_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// viewer (read; no Secret data), editor (write; no Secret data) or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// A name for the token.
        name: String,
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
        Command::Serve(args) => {
            let mut running = serve::start(args).await?;
            let stop = running.take_shutdown();
            tokio::select! {
                _ = shutdown_signal() => {
                    tracing::info!("shutting down");
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
        Command::Token {
            command:
                TokenCommand::Create {
                    data_dir,
                    role,
                    name,
                },
        } => {
            let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let dir = serve::data_dir(data_dir.as_deref());
            let token = Tokens::new(&dir)
                .create(&name, role)
                .with_context(|| format!("creating a token in {}", dir.display()))?;
            println!("{token}");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
