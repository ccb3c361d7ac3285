//! `phoenix`: the Phoenix server binary.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use std::sync::Arc;

use phoenix_api::client::{Client, ClientConfig, config_path};
use phoenix_apiserver::auth::{Role, Tokens};
use phoenix_apiserver::hosting::{self, HostOptions};
use phoenix_apiserver::serve::{self, ServeArgs};
use phoenix_runtime::RuntimeMetrics;

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
    /// Run controllers against an API server (e.g. inside the gateway guest).
    Controller(ControllerArgs),
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
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
    /// Leader-election lease TTL: a standby takes over this long after the leader died.
    #[arg(long, default_value = "15s")]
    leader_ttl: String,
    /// The Proxmox VE provider (guest controller).
    #[command(flatten)]
    pve: phoenix_apiserver::provider::PveArgs,
    /// Gateway controller settings.
    #[command(flatten)]
    gateway: phoenix_apiserver::gateway::GatewayArgs,
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
            let no_controllers = args.no_controllers;
            let gateway = args.gateway.clone();
            let mut running = serve::start(args).await?;
            let pve = running.pve.clone();
            let stop = running.take_shutdown();
            let mut hosted = if no_controllers {
                None
            } else {
                let options = HostOptions {
                    pve,
                    gateway: gateway.settings(),
                    gateway_ssh: gateway.ssh(),
                    gateway_metrics: Some(running.gateway_metrics.clone()),
                    ..HostOptions::default()
                };
                let controllers = hosting::available(&hosting::registered(), &options);
                if controllers.is_empty() {
                    None
                } else {
                    let client = Client::connect(&running.admin_context)
                        .await
                        .context("connecting the hosted controllers to this server")?;
                    Some(hosting::host(
                        client,
                        running.runtime_metrics.clone(),
                        &controllers,
                        &options,
                    ))
                }
            };
            tokio::select! {
                _ = shutdown_signal() => {
                    tracing::info!("shutting down");
                    // Controllers first (they need the API to finish), then the server.
                    if let Some(h) = hosted.as_mut() {
                        h.request_stop();
                        tokio::select! {
                            r = h.wait() => if let Err(e) = r { tracing::warn!(error = %e, "controller error") },
                            _ = shutdown_signal() => {
                                tracing::warn!("second signal: forcing");
                                h.request_stop();
                                let _ = h.wait().await;
                            }
                        }
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
        Command::Controller(args) => run_controllers(args).await,
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

async fn run_controllers(args: ControllerArgs) -> anyhow::Result<()> {
    let selected = hosting::select(&args.only)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let pve = args.pve.client(&mut registry)?;
    let leader_ttl = phoenix_api::duration::parse_duration(&args.leader_ttl)
        .map_err(|e| anyhow::anyhow!("--leader-ttl {:?} {e}", args.leader_ttl))?;
    let path = config_path(args.config.as_deref()).context(
        "no client configuration: pass --config FILE or set PHOENIXCONFIG (phoenix serve writes <data-dir>/admin.yaml)",
    )?;
    let config = ClientConfig::load(&path)?;
    let context = config.context(args.context.as_deref())?;
    let options = HostOptions {
        leader_ttl,
        pve,
        gateway: args.gateway.settings(),
        gateway_ssh: args.gateway.ssh(),
        gateway_metrics: Some(phoenix_gateway::GatewayMetrics::new(&mut registry)),
    };
    let controllers = hosting::available(&selected, &options);
    if controllers.is_empty() {
        anyhow::bail!(
            "no controllers to run: none of {} can run with these flags (see the log)",
            selected
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    let client = Client::connect(context).await?;
    let metrics = RuntimeMetrics::register(&mut registry);
    let (addr, http) = hosting::serve_metrics(args.http_listen, Arc::new(registry))
        .await
        .with_context(|| format!("listening on {}", args.http_listen))?;
    eprintln!(
        "phoenix controller: running {} against {}; metrics on http://{addr}/metrics",
        controllers
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(","),
        context.server
    );
    let mut hosted = hosting::host(client, metrics, &controllers, &options);
    let result = tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            hosted.request_stop();
            tokio::select! {
                r = hosted.wait() => r,
                _ = shutdown_signal() => {
                    tracing::warn!("second signal: forcing");
                    hosted.request_stop();
                    hosted.wait().await
                }
            }
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
