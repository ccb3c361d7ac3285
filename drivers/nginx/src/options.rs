//! Where nginx listens and where it keeps its run-time files: chosen by whoever runs nginx
//! (the controller from the Gateway's `listen` and the operator's flags, a test with random
//! ports and a temp directory), never by a Gateway's author (ADR 0021).

use std::net::IpAddr;

use phoenix_api::kinds::gateway::GatewaySpec;

use crate::render::RenderError;

/// Listen address and ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Address to bind (`0.0.0.0` for all IPv4 addresses).
    pub address: IpAddr,
    /// Plain HTTP port.
    pub http_port: u16,
    /// HTTPS port.
    pub https_port: u16,
}

/// Paths nginx writes at run time; all absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePaths {
    /// PID file of the master process.
    pub pid_file: String,
    /// Directory of `error.log`, `access.log` and the ModSecurity audit log.
    pub log_dir: String,
    /// Parent of the request-body and proxy temp directories.
    pub temp_dir: String,
    /// Parent of the cache zones' directories (one per zone, named after it).
    pub cache_dir: String,
}

impl Default for RuntimePaths {
    /// Debian's paths.
    fn default() -> Self {
        RuntimePaths {
            pid_file: "/run/nginx.pid".into(),
            log_dir: "/var/log/nginx".into(),
            temp_dir: "/var/lib/nginx".into(),
            cache_dir: "/var/cache/nginx".into(),
        }
    }
}

/// Files of ModSecurity and the OWASP core rule set, as Debian installs them
/// (`libnginx-mod-http-modsecurity`, `modsecurity-crs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WafPaths {
    /// The dynamic module.
    pub module: String,
    /// CRS set-up file.
    pub crs_setup: String,
    /// Directory of the CRS rule files (`*.conf` in it are included).
    pub crs_rules_dir: String,
    /// Local exclusions included before the rules.
    pub crs_before: String,
    /// Local exclusions included after the rules.
    pub crs_after: String,
}

impl Default for WafPaths {
    fn default() -> Self {
        WafPaths {
            module: "/usr/lib/nginx/modules/ngx_http_modsecurity_module.so".into(),
            crs_setup: "/etc/modsecurity/crs/crs-setup.conf".into(),
            crs_rules_dir: "/usr/share/modsecurity-crs/rules".into(),
            crs_before: "/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf".into(),
            crs_after: "/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf".into(),
        }
    }
}

/// Everything the renderer needs besides the spec, the backends and the certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Listen address and ports (the spec's `listen`, or a test's random ports).
    pub listen: Listen,
    /// Run-time paths.
    pub runtime: RuntimePaths,
    /// Worker user (`user` directive); `None` leaves nginx's default (an unprivileged test
    /// nginx runs its workers as itself).
    pub user: Option<String>,
    /// `worker_processes`; `None` is `auto`.
    pub worker_processes: Option<u32>,
    /// `worker_connections`.
    pub worker_connections: u32,
    /// ModSecurity files, used when the spec asks for a WAF.
    pub waf: WafPaths,
    /// Where ACME HTTP-01 challenges go (the CertificateAuthority's responder): every route's
    /// plain-HTTP server passes `/.well-known/acme-challenge/` there, before any redirect.
    pub acme_challenge: Option<std::net::SocketAddr>,
}

impl RenderOptions {
    /// Options for `listen`, with Debian's run-time paths and `auto` workers.
    pub fn new(listen: Listen) -> RenderOptions {
        RenderOptions {
            listen,
            runtime: RuntimePaths::default(),
            user: None,
            worker_processes: None,
            worker_connections: 1024,
            waf: WafPaths::default(),
            acme_challenge: None,
        }
    }

    /// Options from a Gateway spec: its `listen`, Debian's run-time paths and `auto`
    /// workers. A spec's `target.*.runtime` (refused at admission since ADR 0021) is ignored:
    /// run-time paths are the operator's. Fails when the listen address is not an IP address.
    pub fn from_spec(spec: &GatewaySpec) -> Result<RenderOptions, RenderError> {
        let address = spec
            .listen
            .address
            .parse::<IpAddr>()
            .map_err(|_| RenderError::Unsafe {
                field: "spec.listen.address".into(),
                reason: format!(
                    "{} is not an IP address",
                    phoenix_api::decode::quote(&spec.listen.address)
                ),
            })?;
        Ok(RenderOptions::new(Listen {
            address,
            http_port: spec.listen.http_port,
            https_port: spec.listen.https_port,
        }))
    }

    /// The error log nginx writes (`<log_dir>/error.log`).
    pub fn error_log(&self) -> String {
        format!("{}/error.log", self.runtime.log_dir.trim_end_matches('/'))
    }
}
