//! Connection flags (`--config`, `--context`, `--server`, `--token`, `--ca-file`) and
//! connecting to the API server.

use std::path::PathBuf;

use clap::Args;
use phoenix_api::client::{self, Client, ClientConfig, ConfigError, Context};

use crate::exit::{Code, Failure};

/// Where the API server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Client configuration file (default: `$PHOENIXCONFIG`, else `~/.config/phoenix/config.yaml`).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Context of the configuration to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Server URL, overriding the context's server(s) (`https://HOST:PORT`). A context may list
    /// several servers of one system (`servers: [URL, ...]`): they are tried in order, and a
    /// call that finds its server unavailable is made on the next one.
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token, overriding the context's.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// PEM file of the CA that signed the server certificate, overriding the context's.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ConnArgs {
    /// The context to connect with: the configuration's, with the flags applied.
    pub fn resolve(&self) -> Result<Context, Failure> {
        let path = client::config_path(self.config.as_deref());
        let loaded = match &path {
            Some(p) => match ClientConfig::load(p) {
                Ok(c) => Some(c),
                // Without a file, `--server` and `--token` are enough.
                Err(ConfigError::Missing(_)) if self.config.is_none() && self.server.is_some() => {
                    None
                }
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let mut ctx = match loaded {
            Some(cfg) => cfg.context(self.context.as_deref())?.clone(),
            None => {
                let Some(server) = &self.server else {
                    return Err(Failure::new(
                        Code::Failure,
                        "no client configuration: pass --config FILE, or --server URL and --token TOKEN",
                    ));
                };
                if self.token.is_none() {
                    return Err(Failure::new(
                        Code::Failure,
                        "--server without a configuration file needs --token",
                    ));
                }
                Context {
                    name: "flags".into(),
                    server: server.clone(),
                    servers: vec![],
                    certificate_authority_data: None,
                    token: String::new(),
                }
            }
        };
        if let Some(s) = &self.server {
            // The flag names the one server to use, instead of the context's list.
            ctx.server = s.clone();
            ctx.servers.clear();
        }
        if let Some(t) = &self.token {
            ctx.token = t.clone();
        }
        if let Some(f) = &self.ca_file {
            let pem = std::fs::read_to_string(f).map_err(|e| {
                Failure::new(Code::Failure, format!("{}: cannot read: {e}", f.display()))
            })?;
            ctx.certificate_authority_data = Some(pem);
        }
        Ok(ctx)
    }

    /// Connects to the server.
    pub async fn connect(&self) -> Result<Client, Failure> {
        let ctx = self.resolve()?;
        Ok(Client::connect(&ctx).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_flag_replaces_the_contexts_servers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        ClientConfig::single(Context {
            name: "ha".into(),
            server: String::new(),
            servers: vec!["https://a:1".into(), "https://b:1".into()],
            certificate_authority_data: None,
            token: "t".into(),
        })
        .save(&path)
        .unwrap();
        let args = |server: Option<&str>| ConnArgs {
            config: Some(path.clone()),
            context: None,
            server: server.map(str::to_string),
            token: None,
            ca_file: None,
        };
        assert_eq!(
            args(None).resolve().unwrap().urls(),
            ["https://a:1", "https://b:1"]
        );
        assert_eq!(
            args(Some("https://c:1")).resolve().unwrap().urls(),
            ["https://c:1"]
        );
    }
}
