//! `phoenix serve`: the API server with its store, caches, auth and HTTP endpoints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use phoenix_api::client::{ClientConfig, Context, default_config_path};
use phoenix_api::proto::phoenix_server::PhoenixServer;
use phoenix_store::Store;
use phoenix_store::embedded::{EmbeddedConfig, EmbeddedStore};
use phoenix_store::etcd::{EtcdConfig, EtcdStore};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::StreamExt as _;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::{Role, Tokens};
use crate::cache::Cache;
use crate::encryption::{EncryptedStore, Keyring};
use crate::metrics::Metrics;
use crate::objects::Objects;
use crate::service::Service;

/// Flags of `phoenix serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Data directory: embedded store, TLS material, tokens, admin.yaml.
    /// Default: $PHOENIX_DATA_DIR, else ~/.local/share/phoenix.
    #[arg(long, env = "PHOENIX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    /// HTTP listen address for /metrics, /healthz, /readyz.
    #[arg(long, default_value = "127.0.0.1:7080")]
    pub http_listen: SocketAddr,
    /// Use etcd (comma-separated client URLs) instead of the embedded store.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Extra names or addresses for the server certificate (repeatable).
    #[arg(long)]
    pub tls_san: Vec<String>,
    /// CA certificate (PEM) that signs the server certificate (with --tls-ca-key-file),
    /// instead of the CA generated into `<data-dir>/pki/` or, with --etcd-endpoints, the
    /// cluster CA kept in etcd (shared by every server on it). For a CA of your own, e.g. from a
    /// Kubernetes Secret.
    #[arg(long, requires = "tls_ca_key_file")]
    pub tls_ca_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --tls-ca-cert-file. Keep it readable by this server only.
    #[arg(long, requires = "tls_ca_cert_file")]
    pub tls_ca_key_file: Option<PathBuf>,
    /// Write a backup of the embedded store, the TLS material and the tokens into this
    /// directory every --backup-interval (`phoenix restore` restores one). Not with etcd: use
    /// `etcdctl snapshot save` there.
    #[arg(long)]
    pub backup_dir: Option<PathBuf>,
    /// How often to write a backup into --backup-dir (the first one at start).
    #[arg(long, default_value = "1h")]
    pub backup_interval: String,
    /// How many backups to keep in --backup-dir (0: all).
    #[arg(long, default_value_t = 24)]
    pub backup_keep: usize,
    /// Key file of Secrets encrypted at rest (YAML; the first key encrypts, every key
    /// decrypts). Default: <data-dir>/encryption-keys.yaml, generated (0600) on first start.
    /// Every server sharing one etcd must be given the same file; a given file must exist.
    #[arg(long, env = "PHOENIX_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
    /// How long Events are kept.
    #[arg(long, default_value = "1h")]
    pub event_ttl: String,
    /// Do not write ~/.config/phoenix/config.yaml even when it does not exist.
    #[arg(long)]
    pub no_user_config: bool,
}

impl ServeArgs {
    /// A server in `data_dir` on 127.0.0.1 at free ports, writing no user configuration, every
    /// other flag at its default: for embedding and tests.
    pub fn local(data_dir: &Path) -> ServeArgs {
        ServeArgs {
            data_dir: Some(data_dir.to_path_buf()),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            etcd_endpoints: vec![],
            tls_san: vec![],
            tls_ca_cert_file: None,
            tls_ca_key_file: None,
            backup_dir: None,
            backup_interval: "1h".into(),
            backup_keep: 24,
            encryption_key_file: None,
            event_ttl: "1h".into(),
            no_user_config: true,
        }
    }
}

/// The data directory to use.
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/phoenix"),
        None => PathBuf::from("phoenix-data"),
    }
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The gRPC address actually bound.
    pub grpc_addr: SocketAddr,
    /// The HTTP address actually bound.
    pub http_addr: SocketAddr,
    /// `<data-dir>/admin.yaml`. Absent when this server made no admin token: a server on an
    /// etcd whose store held tokens already and whose data directory had no valid admin.yaml.
    pub admin_config: PathBuf,
    /// The admin context of `admin.yaml`; without one, [`Running::process_context`].
    pub admin_context: Context,
    /// This process's own admin context (its in-memory token; for the controllers it hosts).
    pub process_context: Context,
    shutdown: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops taking requests, ends watches, and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(Duration::from_secs(10), &mut self.done)
            .await
            .is_err()
        {
            tracing::warn!("graceful shutdown took over 10 s; aborting");
            self.done.abort();
            let _ = (&mut self.done).await;
        }
    }

    /// Waits until the server ends (it ends only on [`Running::stop`] or a fatal error).
    pub async fn wait(&mut self) {
        let _ = (&mut self.done).await;
    }

    /// A handle that stops the server when called.
    pub fn take_shutdown(&mut self) -> Option<oneshot::Sender<()>> {
        self.shutdown.take()
    }
}

/// Starts the server; returns once it accepts connections.
pub async fn start(args: ServeArgs) -> anyhow::Result<Running> {
    start_with_metrics(args, None).await
}

/// [`start`], with the metrics of whatever else runs in this process (e.g. hosted
/// controllers) served on `/metrics` after the server's own.
pub async fn start_with_metrics(
    args: ServeArgs,
    extra: Option<Registry>,
) -> anyhow::Result<Running> {
    start_with_routes(args, extra, axum::Router::new()).await
}

/// [`start_with_metrics`], with `routes` (e.g. hosted controllers' webhooks) served on the
/// HTTP port next to `/metrics`.
pub async fn start_with_routes(
    args: ServeArgs,
    extra: Option<Registry>,
    routes: axum::Router,
) -> anyhow::Result<Running> {
    let dir = data_dir(args.data_dir.as_deref());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("securing {}", dir.display()))?;
    }
    let event_ttl = phoenix_api::duration::parse_duration(&args.event_ttl)
        .map_err(|e| anyhow::anyhow!("--event-ttl {:?} {e}", args.event_ttl))?;

    let backup_interval = phoenix_api::duration::parse_duration(&args.backup_interval)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--backup-interval {:?}: a duration above zero, e.g. 1h",
                args.backup_interval
            )
        })?;
    if args.backup_dir.is_some() && !args.etcd_endpoints.is_empty() {
        anyhow::bail!(
            "--backup-dir backs up the embedded store; with --etcd-endpoints use `etcdctl snapshot save`"
        );
    }
    let (raw, embedded) = open_store(&dir, &args.etcd_endpoints).await?;
    let keys = load_keys(&dir, args.encryption_key_file.as_deref())?;
    let census = crate::encryption::check(raw.as_ref(), &keys)
        .await
        .context("checking the encryption keys against the stored Secrets")?;
    tracing::info!(
        file = %keys.file().display(),
        write_key = keys.write_id(),
        secrets_with_write_key = census.current,
        secrets_with_older_keys = census.older,
        "Secrets are encrypted at rest"
    );
    if census.plaintext + census.older > 0 {
        tracing::warn!(
            plaintext = census.plaintext,
            older_keys = census.older,
            "some Secrets are not encrypted with the write key: run `phoenix secrets rewrap`"
        );
    }
    let key_file = keys.file().to_path_buf();
    // The CA: given by flag; on etcd the cluster CA every server on it shares; else this
    // server's own in <data-dir>/pki/.
    let ca = match (&args.tls_ca_cert_file, &args.tls_ca_key_file) {
        (Some(cert), Some(key)) => Some(
            crate::pki::CaFiles {
                cert: cert.clone(),
                key: key.clone(),
            }
            .read()
            .context("reading the CA given by --tls-ca-cert-file/--tls-ca-key-file")?,
        ),
        _ if !args.etcd_endpoints.is_empty() => Some(
            crate::pki::cluster_ca(raw.as_ref(), &keys, &dir)
                .await
                .context("loading the cluster CA (every server on one etcd needs the same --encryption-key-file)")?,
        ),
        _ => None,
    };
    let store: Arc<dyn Store> = Arc::new(EncryptedStore::new(raw, keys));
    let mut embedded = embedded;

    let mut sans = args.tls_san.clone();
    if !args.listen.ip().is_unspecified() {
        sans.push(args.listen.ip().to_string());
    }
    let pki = crate::pki::load_or_create(&dir, &sans, ca.as_ref())
        .context("loading the server's TLS material")?;
    let (tokens, token_task) = Tokens::start(store.clone(), &dir)
        .await
        .context("loading the API tokens from the store")?;
    let metrics = Arc::new(Metrics::new());
    let objects = Objects::new(store.clone(), metrics.clone());
    let (cache, mut background) = Cache::start(store.clone());
    background.push(token_task);
    background.extend(crate::gc::start(objects.clone(), cache.clone(), event_ttl));
    if let (Some(store), Some(backup_dir)) = (embedded.take(), args.backup_dir.clone()) {
        tracing::info!(dir = %backup_dir.display(), every = ?backup_interval, keep = args.backup_keep, "backing up the embedded store");
        background.push(tokio::spawn(crate::backup::run_periodic(
            store,
            dir.clone(),
            key_file,
            backup_dir,
            backup_interval,
            args.backup_keep,
            metrics.clone(),
        )));
    }
    drop(embedded);

    let grpc = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let grpc_addr = grpc.local_addr()?;
    let http = TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("listening on {}", args.http_listen))?;
    let http_addr = http.local_addr()?;

    let server_url = server_url(grpc_addr);
    let shared_store = !args.etcd_endpoints.is_empty();
    let admin_config = write_admin_config(
        &dir,
        &tokens,
        &pki.ca_pem,
        &server_url,
        !args.no_user_config,
        shared_store,
    )
    .await?;
    let process_context = Context {
        name: "process".into(),
        server: server_url.clone(),
        servers: vec![],
        certificate_authority_data: Some(pki.ca_pem.clone()),
        token: tokens.process_token().to_string(),
    };
    std::fs::write(dir.join("http.addr"), http_addr.to_string())?;

    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let service = Service::new(objects, cache.clone(), tokens, metrics.clone(), stopping_rx);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<PhoenixServer<Service>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(phoenix_api::proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (http_stop_tx, http_stop_rx) = oneshot::channel::<()>();
    let router = crate::http::router(metrics, cache, extra.map(Arc::new), routes);
    let http_task = tokio::spawn(async move {
        let r = axum::serve(http, router)
            .with_graceful_shutdown(async {
                let _ = http_stop_rx.await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    let server = Server::builder()
        .tls_config(
            ServerTlsConfig::new().identity(Identity::from_pem(&pki.cert_pem, &pki.key_pem)),
        )?
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            PhoenixServer::new(service)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        );
    // No Nagle: watch events and small answers go out at once instead of waiting for the
    // peer's (delayed) acknowledgement of the previous segment.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc).map(|conn| {
        conn.inspect(|s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::debug!(error = %e, "setting TCP_NODELAY failed");
            }
        })
    });
    let done = tokio::spawn(async move {
        let r = server
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = shutdown_rx.await;
                // End the watch streams, or the graceful shutdown would wait for them.
                let _ = stopping_tx.send(true);
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "gRPC server failed");
        }
        let _ = http_stop_tx.send(());
        let _ = http_task.await;
        // Stop the caches and collectors so that the last reference to the store goes and
        // it closes (the embedded store flushes and releases its lock).
        for task in &background {
            task.abort();
        }
        for task in background {
            let _ = task.await;
        }
        drop(store);
    });
    tracing::info!(grpc = %format!("https://{grpc_addr}"), http = %http_addr, "serving");
    let admin_context = match &admin_config {
        Some(path) => {
            eprintln!(
                "phoenix: serving on https://{grpc_addr}; http on {http_addr}; client config {}",
                path.display()
            );
            ClientConfig::load(path)?
                .context(None)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .clone()
        }
        None => {
            eprintln!(
                "phoenix: serving on https://{grpc_addr}; http on {http_addr}; the store's tokens apply (no admin.yaml written: see docs/ha.md)"
            );
            process_context.clone()
        }
    };
    Ok(Running {
        grpc_addr,
        http_addr,
        admin_config: admin_config.unwrap_or_else(|| dir.join("admin.yaml")),
        admin_context,
        process_context,
        shutdown: Some(shutdown_tx),
        done,
    })
}

/// Opens the store a server uses: etcd at `etcd_endpoints` if any, else the embedded store in
/// `<dir>/store` (also returned, for backups). Values are as stored (Secrets sealed).
pub async fn open_store(
    dir: &Path,
    etcd_endpoints: &[String],
) -> anyhow::Result<(Arc<dyn Store>, Option<Arc<EmbeddedStore>>)> {
    if etcd_endpoints.is_empty() {
        let path = dir.join("store");
        tracing::info!(path = %path.display(), "opening the embedded store");
        let opened = Arc::new(
            EmbeddedStore::open(&path, EmbeddedConfig::default())
                .with_context(|| format!("opening the embedded store in {}", path.display()))?,
        );
        Ok((opened.clone(), Some(opened)))
    } else {
        tracing::info!(endpoints = ?etcd_endpoints, "connecting to etcd");
        let store = EtcdStore::connect(EtcdConfig::new(etcd_endpoints.to_vec()))
            .await
            .context("connecting to etcd")?;
        Ok((Arc::new(store), None))
    }
}

/// Loads the keys of Secrets encrypted at rest: `flag`'s file (which must exist), else
/// `<dir>/encryption-keys.yaml` (generated when absent).
pub fn load_keys(dir: &Path, flag: Option<&Path>) -> anyhow::Result<Arc<Keyring>> {
    let path = crate::encryption::key_file_path(dir, flag);
    Ok(Arc::new(
        Keyring::load(&path, flag.is_none()).context("loading the encryption keys")?,
    ))
}

/// Rewrites every Secret of a server's store with the write key of its key file (see
/// [`crate::encryption::rewrap`]); returns the census before. The embedded store must not be
/// in use (stop `phoenix serve` first); etcd can be rewrapped while servers run on it. The key
/// file must exist (it is never generated here).
pub async fn rewrap_store(
    data_dir: Option<&Path>,
    etcd_endpoints: &[String],
    key_file: Option<&Path>,
) -> anyhow::Result<crate::encryption::Census> {
    let dir = self::data_dir(data_dir);
    let path = crate::encryption::key_file_path(&dir, key_file);
    let keys = Arc::new(Keyring::load(&path, false).context("loading the encryption keys")?);
    if etcd_endpoints.is_empty() && !dir.join("store").exists() {
        anyhow::bail!(
            "{} holds no store (give the server's --data-dir, or --etcd-endpoints)",
            dir.display()
        );
    }
    let (raw, _) = open_store(&dir, etcd_endpoints).await.context(
        "opening the store to rewrap (the embedded store opens only while `phoenix serve` is stopped)",
    )?;
    let store = EncryptedStore::new(raw, keys);
    Ok(crate::encryption::rewrap(&store).await?)
}

/// `https://HOST:PORT` of a listening address (an unspecified address as 127.0.0.1).
fn server_url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("https://{host}:{}", addr.port())
}

/// Writes `<dir>/admin.yaml` (server URL, CA, an admin token) and, once, the user's config;
/// returns its path, or `None` when this server has no admin token to write.
///
/// The token is the one of an existing admin.yaml while the store accepts it. Otherwise a new
/// admin token is made: `admin` on a store without tokens (the first server), `admin-<random>`
/// on the embedded store (a single server whose admin.yaml was lost). A server on a shared
/// store (etcd) that holds tokens makes none: its operator reuses a configuration of the
/// first server (see docs/ha.md).
async fn write_admin_config(
    dir: &Path,
    tokens: &Tokens,
    ca_pem: &str,
    server: &str,
    user_config: bool,
    shared_store: bool,
) -> anyhow::Result<Option<PathBuf>> {
    let path = dir.join("admin.yaml");
    let known = ClientConfig::load(&path)
        .ok()
        .and_then(|c| c.contexts.into_iter().next())
        .map(|c| c.token)
        .filter(|t| tokens.authenticate(Some(&format!("Bearer {t}"))).is_ok());
    let token = match known {
        Some(t) => t,
        None if tokens.is_empty() => match tokens.create("admin", Role::Admin).await {
            Ok(t) => t,
            // Another server on this store made it first.
            Err(crate::auth::TokenError::Exists(_)) if shared_store => return Ok(None),
            Err(e) => return Err(e.into()),
        },
        None if !shared_store => {
            // Unique even across restarts within one second.
            let name = format!("admin-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            tokens.create(&name, Role::Admin).await?
        }
        None => {
            tracing::info!(
                "the store holds tokens already: no admin token made; use a configuration of the first server (see docs/ha.md)"
            );
            return Ok(None);
        }
    };
    let config = ClientConfig::single(Context {
        name: "default".into(),
        server: server.to_string(),
        servers: vec![],
        certificate_authority_data: Some(ca_pem.to_string()),
        token,
    });
    config.save(&path)?;
    if user_config
        && let Some(user) = default_config_path()
        && !user.exists()
    {
        config.save(&user)?;
        tracing::info!(path = %user.display(), "wrote the phoenixctl configuration");
    }
    Ok(Some(path))
}
