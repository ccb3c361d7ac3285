//! Gateway spec → nginx configuration tree.
//!
//! The tree is `nginx.conf` (global settings, the `http {}` block with cache and rate-limit
//! zones, the default server with `/healthz`, and one `include` per file below),
//! `upstreams.conf` (one `upstream` block per distinct set of backends, named after a hash
//! of its contents, shared by every location that uses the same set), `sites/HOST.conf` (the
//! servers of one route) and `tls/HOST.crt|key` (0600 for keys). Routes are ordered by host
//! and locations by path, so the order in the spec does not change the output; rendering the
//! same input twice gives byte-identical trees and the same hash.
//!
//! Sharing upstream blocks matters at scale: nginx finds an upstream by a linear search over
//! all upstream blocks, so 10,000 per-location blocks cost seconds in every `nginx -t` and
//! reload, while routes of an estate point at a few hundred distinct backend sets at most.
//!
//! Every value from the spec, the directory or the options is checked by [`crate::safe`]
//! and written through [`crate::writer`], which accepts only checked arguments and constant
//! directive names. References between files are relative to the tree's root.

use std::collections::{BTreeMap, BTreeSet};

use phoenix_api::decode::quote;
use phoenix_api::kinds::common::Scheme;
use phoenix_api::kinds::gateway::{
    FrameOptions, GatewaySpec, LoadBalancing, Location, Route, WafMode,
};

use crate::backend::{self, BackendDirectory, ResolveError, UpstreamServer};
use crate::options::RenderOptions;
use crate::safe;
use crate::tls::{TlsCertificate, TlsError};
use crate::tree::{ConfigFile, ConfigTree, MODE_FILE, MODE_SECRET};
use crate::writer::{Arg, Conf};

/// The file with the `upstream` blocks.
const UPSTREAMS: &str = "upstreams.conf";

/// Everything a rendering needs.
#[derive(Debug, Clone, Copy)]
pub struct GatewayInput<'a> {
    /// The Gateway's spec (admitted, or not: the renderer checks again).
    pub spec: &'a GatewaySpec,
    /// Addresses of the guests and meshes that backends name.
    pub backends: &'a BackendDirectory,
    /// Certificates by route host, for every route with `tls: true`.
    pub certificates: &'a BTreeMap<String, TlsCertificate>,
    /// Listen address, ports and run-time paths.
    pub options: &'a RenderOptions,
}

/// Why a Gateway could not be rendered. `field` is the path of the offending value
/// (`spec.routes[2].host`, `options.runtime.logDir`), as admission reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A value that must not reach the configuration (structure characters, non-ASCII,
    /// overlong, or not of its kind).
    #[error("{field}: {reason}")]
    Unsafe {
        /// Field path.
        field: String,
        /// Why.
        reason: String,
    },
    /// A backend could not be resolved to an upstream server.
    #[error("{field}: {source}")]
    Backend {
        /// Field path of the backend.
        field: String,
        /// Why.
        #[source]
        source: ResolveError,
    },
    /// The backends of one location use both http and https.
    #[error("{field}: backends mix http and https; one location's upstream speaks one scheme")]
    MixedSchemes {
        /// Field path of the location's backends.
        field: String,
    },
    /// A `tls` route without a certificate in the input.
    #[error("{field}: no certificate for TLS host {host}")]
    MissingCertificate {
        /// Field path of the route.
        field: String,
        /// The host, quoted.
        host: String,
    },
    /// A certificate that is not PEM.
    #[error("{field}: {source}")]
    Certificate {
        /// Field path of the route.
        field: String,
        /// Why.
        #[source]
        source: TlsError,
    },
    /// A location names a rate limit or cache zone that the spec does not define.
    #[error("{field}: {name} is not a name in spec.{list}")]
    UnknownZone {
        /// Field path of the reference.
        field: String,
        /// The name, quoted.
        name: String,
        /// `rateLimits` or `caches`.
        list: &'static str,
    },
    /// A name that must be unique appears twice.
    #[error("{field}: {value} appears more than once")]
    Duplicate {
        /// Field path of the second occurrence.
        field: String,
        /// The value, quoted.
        value: String,
    },
    /// A list that must not be empty.
    #[error("{field}: must not be empty")]
    Empty {
        /// Field path.
        field: String,
    },
    /// `redirectHttp` or a certificate on a route without `tls: true`.
    #[error("{field}: needs tls: true")]
    NeedsTls {
        /// Field path.
        field: String,
    },
    /// A number outside its range.
    #[error("{field}: {value} is outside {min}..={max}")]
    OutOfRange {
        /// Field path.
        field: String,
        /// The value.
        value: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
}

impl RenderError {
    /// The path of the offending field, e.g. `spec.routes[2].host` (for a condition message).
    pub fn field(&self) -> &str {
        match self {
            RenderError::Unsafe { field, .. }
            | RenderError::Backend { field, .. }
            | RenderError::MixedSchemes { field }
            | RenderError::MissingCertificate { field, .. }
            | RenderError::Certificate { field, .. }
            | RenderError::UnknownZone { field, .. }
            | RenderError::Duplicate { field, .. }
            | RenderError::Empty { field }
            | RenderError::NeedsTls { field }
            | RenderError::OutOfRange { field, .. } => field,
        }
    }
}

fn unsafe_at(field: impl Into<String>) -> impl FnOnce(String) -> RenderError {
    let field = field.into();
    move |reason| RenderError::Unsafe { field, reason }
}

fn range(field: impl Into<String>, value: u64, min: u64, max: u64) -> Result<(), RenderError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(RenderError::OutOfRange {
            field: field.into(),
            value,
            min,
            max,
        })
    }
}

fn duration_secs(field: &str, s: &str) -> Result<u64, RenderError> {
    safe::token(s, 32).map_err(unsafe_at(field))?;
    phoenix_api::duration::parse_duration(s)
        .map(|d| d.as_secs())
        .map_err(|e| RenderError::Unsafe {
            field: field.into(),
            reason: format!("{} {e}", quote(s)),
        })
}

/// A file-system path from the options, checked.
fn path_arg(field: &str, p: &str) -> Result<String, RenderError> {
    safe::file_path(p).map_err(unsafe_at(field))?;
    Ok(p.trim_end_matches('/').to_string())
}

/// File name stem of a host: `*.a.b` becomes `_.a.b`.
fn stem(host: &str) -> String {
    match host.strip_prefix('*') {
        Some(rest) => format!("_{rest}"),
        None => host.to_string(),
    }
}

/// Checked option values, ready to write.
struct Paths {
    pid: Arg,
    error_log: Arg,
    access_log: Arg,
    temp: String,
    cache: String,
    log_dir: String,
}

fn check_options(o: &RenderOptions) -> Result<Paths, RenderError> {
    if o.listen.http_port == 0 || o.listen.https_port == 0 {
        return Err(RenderError::OutOfRange {
            field: "options.listen".into(),
            value: 0,
            min: 1,
            max: 65535,
        });
    }
    if o.listen.http_port == o.listen.https_port {
        return Err(RenderError::Unsafe {
            field: "options.listen.httpsPort".into(),
            reason: "must differ from httpPort".into(),
        });
    }
    let r = &o.runtime;
    let pid = path_arg("options.runtime.pidFile", &r.pid_file)?;
    let log_dir = path_arg("options.runtime.logDir", &r.log_dir)?;
    let temp = path_arg("options.runtime.tempDir", &r.temp_dir)?;
    let cache = path_arg("options.runtime.cacheDir", &r.cache_dir)?;
    if let Some(u) = &o.user {
        safe::unix_user(u).map_err(unsafe_at("options.user"))?;
    }
    range(
        "options.workerProcesses",
        o.worker_processes.unwrap_or(1).into(),
        1,
        1024,
    )?;
    range(
        "options.workerConnections",
        o.worker_connections.into(),
        16,
        1_000_000,
    )?;
    let arg = |s: String| Arg::token(&s).map_err(unsafe_at("options.runtime"));
    Ok(Paths {
        pid: arg(pid)?,
        error_log: arg(format!("{log_dir}/error.log"))?,
        access_log: arg(format!("{log_dir}/access.log"))?,
        temp,
        cache,
        log_dir,
    })
}

/// One location, checked and resolved.
struct Loc {
    path: Arg,
    upstream: Arg,
    scheme: Scheme,
    balancing: LoadBalancing,
    servers: Vec<UpstreamServer>,
    websocket: bool,
    access: Vec<(&'static str, Arg)>,
    rate_limit: Option<(Arg, u32)>,
    cache: Option<(Arg, u64)>,
    headers: BTreeMap<String, (Arg, Arg)>,
}

/// One route, checked and resolved.
struct Site<'a> {
    route: &'a Route,
    host: Arg,
    stem: String,
    /// Stem of the `tls/STEM.crt|key` files of a TLS server that loads its own certificate;
    /// `None` for plain routes and for TLS routes served with the default TLS server's.
    cert: Option<String>,
    locations: Vec<Loc>,
}

/// Writes the certificate files and decides which TLS server loads which certificate.
///
/// nginx builds one OpenSSL context per server block that has `ssl_certificate` (about 3 ms
/// each with Debian's OpenSSL 3.0, in `nginx -t` and again in every reload). A server block
/// without one keeps the context of the listen socket's default server after SNI picked it.
/// So the certificate used by the most TLS routes (ties: the one of the first host) is loaded
/// once, by the default TLS server (which still refuses unknown names with
/// `ssl_reject_handshake`), from the files of the first host that uses it; the routes using it
/// load nothing. Every other TLS route loads its own certificate from `tls/HOST.crt|key`.
/// Returns the stem of the default server's files (`None` without TLS routes).
fn share_certificates(
    sites: &mut [Site<'_>],
    tls: Vec<(usize, TlsCertificate)>,
    files: &mut BTreeMap<String, ConfigFile>,
) -> Option<String> {
    // Routes by certificate, in host order (sites are sorted by host).
    let mut groups: Vec<(TlsCertificate, Vec<usize>)> = Vec::new();
    let mut index: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (site, cert) in &tls {
        match index.get(&(cert.chain_pem(), cert.key_pem())) {
            Some(&g) => groups[g].1.push(*site),
            None => {
                index.insert((cert.chain_pem(), cert.key_pem()), groups.len());
                groups.push((cert.clone(), vec![*site]));
            }
        }
    }
    // The largest group; `max_by_key` keeps the last of equals, so search from the back to
    // prefer the group met first.
    let shared = groups
        .iter()
        .enumerate()
        .rev()
        .max_by_key(|(_, (_, members))| members.len())
        .map(|(g, _)| g)?;
    let mut default_stem = None;
    for (g, (cert, members)) in groups.iter().enumerate() {
        let owners: Vec<usize> = if g == shared {
            members[..1].to_vec()
        } else {
            members.clone()
        };
        for &site in &owners {
            let stem = sites[site].stem.clone();
            files.insert(
                format!("tls/{stem}.crt"),
                ConfigFile {
                    contents: cert.chain_pem().as_bytes().to_vec(),
                    mode: MODE_FILE,
                },
            );
            files.insert(
                format!("tls/{stem}.key"),
                ConfigFile {
                    contents: cert.key_pem().as_bytes().to_vec(),
                    mode: MODE_SECRET,
                },
            );
            if g == shared {
                default_stem = Some(stem);
            } else {
                sites[site].cert = Some(stem);
            }
        }
    }
    default_stem
}

/// Headers every location sends: the security headers (HSTS only over TLS) merged with the
/// location's `setHeaders` (which win on the same name, compared case-insensitively).
struct Headers {
    common: BTreeMap<String, (Arg, Arg)>,
    hsts: Option<(Arg, Arg)>,
}

/// A header for `add_header`, keyed by its lowercase name. Only called with constants or
/// values that passed [`safe::header_name`] and [`safe::quoted`].
fn header_entry(name: &str, value: &str) -> (String, (Arg, Arg)) {
    (
        name.to_ascii_lowercase(),
        (
            Arg::token(name).expect("checked header name"),
            Arg::quoted(value).expect("checked header value"),
        ),
    )
}

fn security_headers(spec: &GatewaySpec) -> Result<Headers, RenderError> {
    let mut common = BTreeMap::new();
    let mut hsts = None;
    if let Some(h) = &spec.security_headers {
        let mut add = |name: &str, value: &str| {
            let (k, v) = header_entry(name, value);
            common.insert(k, v);
        };
        if let Some(f) = h.frame_options {
            add(
                "X-Frame-Options",
                match f {
                    FrameOptions::Deny => "DENY",
                    FrameOptions::Sameorigin => "SAMEORIGIN",
                },
            );
        }
        if h.content_type_options {
            add("X-Content-Type-Options", "nosniff");
        }
        if let Some(csp) = &h.content_security_policy {
            safe::quoted(csp).map_err(unsafe_at("spec.securityHeaders.contentSecurityPolicy"))?;
            add("Content-Security-Policy", csp);
        }
        if let Some(p) = &h.referrer_policy {
            const POLICIES: &[&str] = &[
                "no-referrer",
                "no-referrer-when-downgrade",
                "origin",
                "origin-when-cross-origin",
                "same-origin",
                "strict-origin",
                "strict-origin-when-cross-origin",
                "unsafe-url",
            ];
            if !POLICIES.contains(&p.as_str()) {
                return Err(RenderError::Unsafe {
                    field: "spec.securityHeaders.referrerPolicy".into(),
                    reason: format!("{} is not one of {}", quote(p), POLICIES.join(", ")),
                });
            }
            add("Referrer-Policy", p);
        }
        if h.hsts {
            let (_, v) = header_entry(
                "Strict-Transport-Security",
                "max-age=31536000; includeSubDomains",
            );
            hsts = Some(v);
        }
    }
    Ok(Headers { common, hsts })
}

struct Zones {
    rate: BTreeMap<String, (Arg, u32)>,
    cache: BTreeMap<String, (Arg, u64)>,
}

/// Renders the tree. Fails on the first value that is unsafe, unresolved or inconsistent,
/// naming its field; renders nothing partial.
pub fn render(input: &GatewayInput<'_>) -> Result<ConfigTree, RenderError> {
    let spec = input.spec;
    let paths = check_options(input.options)?;
    let headers = security_headers(spec)?;

    // Zones.
    let mut zones = Zones {
        rate: BTreeMap::new(),
        cache: BTreeMap::new(),
    };
    let mut rate_lines = Vec::new();
    for (i, r) in spec.rate_limits.iter().enumerate() {
        let f = format!("spec.rateLimits[{i}]");
        safe::label(&r.name).map_err(unsafe_at(format!("{f}.name")))?;
        range(
            format!("{f}.requestsPerSecond"),
            r.requests_per_second.into(),
            1,
            100_000,
        )?;
        range(format!("{f}.burst"), r.burst.into(), 0, 100_000)?;
        range(format!("{f}.zoneSizeMiB"), r.zone_size_mib.into(), 1, 1024)?;
        let name = Arg::token(&r.name).map_err(unsafe_at(format!("{f}.name")))?;
        if zones
            .rate
            .insert(r.name.clone(), (name.clone(), r.burst))
            .is_some()
        {
            return Err(RenderError::Duplicate {
                field: format!("{f}.name"),
                value: quote(&r.name),
            });
        }
        rate_lines.push((r.name.clone(), name, r.requests_per_second, r.zone_size_mib));
    }
    let mut cache_lines = Vec::new();
    for (i, c) in spec.caches.iter().enumerate() {
        let f = format!("spec.caches[{i}]");
        safe::label(&c.name).map_err(unsafe_at(format!("{f}.name")))?;
        range(format!("{f}.sizeMiB"), c.size_mib.into(), 1, 1024 * 1024)?;
        let inactive = duration_secs(&format!("{f}.inactive"), &c.inactive.0)?;
        let valid = duration_secs(&format!("{f}.valid"), &c.valid.0)?;
        let name = Arg::token(&c.name).map_err(unsafe_at(format!("{f}.name")))?;
        let dir = Arg::token(&format!("{}/{}", paths.cache, c.name))
            .map_err(unsafe_at("options.runtime.cacheDir"))?;
        if zones
            .cache
            .insert(c.name.clone(), (name.clone(), valid))
            .is_some()
        {
            return Err(RenderError::Duplicate {
                field: format!("{f}.name"),
                value: quote(&c.name),
            });
        }
        cache_lines.push((c.name.clone(), name, dir, c.size_mib, inactive));
    }
    rate_lines.sort_by(|a, b| a.0.cmp(&b.0));
    cache_lines.sort_by(|a, b| a.0.cmp(&b.0));

    // Routes, by host.
    let mut order: Vec<(usize, &Route)> = spec.routes.iter().enumerate().collect();
    order.sort_by(|a, b| a.1.host.cmp(&b.1.host));
    let mut sites = Vec::new();
    let mut hosts = BTreeSet::new();
    let mut files = BTreeMap::new();
    let mut tls_certs = Vec::new();
    for (i, route) in order {
        let site = site(i, route, input, &zones)?;
        if !hosts.insert(route.host.clone()) {
            return Err(RenderError::Duplicate {
                field: format!("spec.routes[{i}].host"),
                value: quote(&route.host),
            });
        }
        if route.tls {
            let cert = input.certificates.get(&route.host).ok_or_else(|| {
                RenderError::MissingCertificate {
                    field: format!("spec.routes[{i}]"),
                    host: quote(&route.host),
                }
            })?;
            // Re-check: a certificate built without `TlsCertificate::new` cannot exist, but
            // the files must hold PEM and nothing else.
            let cert = TlsCertificate::new(cert.chain_pem(), cert.key_pem()).map_err(|source| {
                RenderError::Certificate {
                    field: format!("spec.routes[{i}]"),
                    source,
                }
            })?;
            tls_certs.push((sites.len(), cert));
        }
        sites.push(site);
    }
    let default_cert = share_certificates(&mut sites, tls_certs, &mut files);

    files.insert(
        UPSTREAMS.to_string(),
        ConfigFile {
            contents: upstreams_text(&sites).into_bytes(),
            mode: MODE_FILE,
        },
    );
    for s in &sites {
        files.insert(
            format!("sites/{}.conf", s.stem),
            ConfigFile {
                contents: site_text(s, spec, input.options, &headers).into_bytes(),
                mode: MODE_FILE,
            },
        );
    }
    let main = main_text(
        spec,
        input.options,
        &paths,
        &sites,
        default_cert.as_deref(),
        &rate_lines,
        &cache_lines,
    )?;
    files.insert(
        ConfigTree::MAIN.to_string(),
        ConfigFile {
            contents: main.into_bytes(),
            mode: MODE_FILE,
        },
    );
    Ok(ConfigTree::new(files))
}

fn site<'a>(
    i: usize,
    route: &'a Route,
    input: &GatewayInput<'_>,
    zones: &Zones,
) -> Result<Site<'a>, RenderError> {
    let f = format!("spec.routes[{i}]");
    safe::host(&route.host).map_err(unsafe_at(format!("{f}.host")))?;
    let host = Arg::token(&route.host).map_err(unsafe_at(format!("{f}.host")))?;
    if route.redirect_http && !route.tls {
        return Err(RenderError::NeedsTls {
            field: format!("{f}.redirectHttp"),
        });
    }
    if route.tls_secret.is_some() && !route.tls {
        return Err(RenderError::NeedsTls {
            field: format!("{f}.tlsSecret"),
        });
    }
    if route.locations.is_empty() {
        return Err(RenderError::Empty {
            field: format!("{f}.locations"),
        });
    }
    let stem = stem(&route.host);
    let mut order: Vec<(usize, &Location)> = route.locations.iter().enumerate().collect();
    order.sort_by(|a, b| a.1.path.cmp(&b.1.path));
    let mut paths = BTreeSet::new();
    let mut locations = Vec::new();
    for (j, loc) in order {
        let lf = format!("{f}.locations[{j}]");
        safe::url_path(&loc.path).map_err(unsafe_at(format!("{lf}.path")))?;
        if !paths.insert(loc.path.as_str()) {
            return Err(RenderError::Duplicate {
                field: format!("{lf}.path"),
                value: quote(&loc.path),
            });
        }
        locations.push(location(&lf, loc, input.backends, zones)?);
    }
    Ok(Site {
        route,
        host,
        stem,
        cert: None,
        locations,
    })
}

fn location(
    lf: &str,
    loc: &Location,
    dir: &BackendDirectory,
    zones: &Zones,
) -> Result<Loc, RenderError> {
    if loc.backends.is_empty() {
        return Err(RenderError::Empty {
            field: format!("{lf}.backends"),
        });
    }
    let mut servers = Vec::new();
    for (k, b) in loc.backends.iter().enumerate() {
        let s = backend::resolve(b, dir).map_err(|source| RenderError::Backend {
            field: format!("{lf}.backends[{k}]"),
            source,
        })?;
        servers.push(s);
    }
    let scheme = servers[0].scheme;
    if servers.iter().any(|s| s.scheme != scheme) {
        return Err(RenderError::MixedSchemes {
            field: format!("{lf}.backends"),
        });
    }
    let mut access = Vec::new();
    for (k, d) in loc.deny.iter().enumerate() {
        let v = safe::ip_or_cidr(d).map_err(unsafe_at(format!("{lf}.deny[{k}]")))?;
        access.push((
            "deny",
            Arg::token(&v).map_err(unsafe_at(format!("{lf}.deny[{k}]")))?,
        ));
    }
    for (k, a) in loc.allow.iter().enumerate() {
        let v = safe::ip_or_cidr(a).map_err(unsafe_at(format!("{lf}.allow[{k}]")))?;
        access.push((
            "allow",
            Arg::token(&v).map_err(unsafe_at(format!("{lf}.allow[{k}]")))?,
        ));
    }
    if !loc.allow.is_empty() {
        access.push(("deny", Arg::lit("all")));
    }
    let rate_limit = match &loc.rate_limit {
        None => None,
        Some(z) => Some(
            zones
                .rate
                .get(z)
                .cloned()
                .ok_or_else(|| RenderError::UnknownZone {
                    field: format!("{lf}.rateLimit"),
                    name: quote(z),
                    list: "rateLimits",
                })?,
        ),
    };
    let cache = match &loc.cache {
        None => None,
        Some(c) => Some(
            zones
                .cache
                .get(c)
                .cloned()
                .ok_or_else(|| RenderError::UnknownZone {
                    field: format!("{lf}.cache"),
                    name: quote(c),
                    list: "caches",
                })?,
        ),
    };
    let mut headers = BTreeMap::new();
    for (name, value) in &loc.set_headers {
        let hf = format!("{lf}.setHeaders[{}]", quote(name));
        safe::header_name(name).map_err(unsafe_at(hf.clone()))?;
        safe::quoted(value).map_err(unsafe_at(hf))?;
        let (k, v) = header_entry(name, value);
        headers.insert(k, v);
    }
    Ok(Loc {
        path: Arg::token(&loc.path).map_err(unsafe_at(format!("{lf}.path")))?,
        upstream: upstream_name(loc.load_balancing, &servers),
        scheme,
        balancing: loc.load_balancing,
        servers,
        websocket: loc.websocket,
        access,
        rate_limit,
        cache,
        headers,
    })
}

/// The canonical text of an upstream block's contents.
fn upstream_key(balancing: LoadBalancing, servers: &[UpstreamServer]) -> String {
    let mut key = format!("{balancing:?}");
    for s in servers {
        key.push_str(&format!(
            "|{}://{}:{} weight={}",
            s.scheme.as_str(),
            s.host,
            s.port,
            s.weight
        ));
    }
    key
}

/// `u_` and 16 hex digits of the SHA-256 of the block's contents: equal sets of backends
/// share one block, and a block keeps its name whatever else changes.
fn upstream_name(balancing: LoadBalancing, servers: &[UpstreamServer]) -> Arg {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(upstream_key(balancing, servers).as_bytes());
    let name = format!("u_{}", &hex::encode(digest)[..16]);
    Arg::token(&name).expect("hex digits")
}

fn upstreams_text(sites: &[Site<'_>]) -> String {
    let mut blocks: BTreeMap<String, &Loc> = BTreeMap::new();
    for s in sites {
        for l in &s.locations {
            blocks
                .entry(upstream_key(l.balancing, &l.servers))
                .or_insert(l);
        }
    }
    let mut by_name: Vec<&Loc> = blocks.into_values().collect();
    by_name.sort_by(|a, b| a.upstream.text().cmp(b.upstream.text()));
    let mut c = Conf::new();
    c.comment(
        &[],
        "One block per distinct set of backends, named after its contents.",
    );
    for l in by_name {
        c.blank();
        c.open("upstream", std::slice::from_ref(&l.upstream));
        match l.balancing {
            LoadBalancing::RoundRobin => {}
            LoadBalancing::LeastConn => c.line("least_conn", &[]),
            LoadBalancing::IpHash => c.line("ip_hash", &[]),
        }
        for srv in &l.servers {
            let addr = Arg::token(&format!("{}:{}", srv.host, srv.port))
                .expect("resolved upstream addresses are checked");
            c.line(
                "server",
                &[
                    addr,
                    Arg::cat([Arg::lit("weight="), Arg::num(srv.weight)]),
                    Arg::lit("max_fails=1"),
                    Arg::lit("fail_timeout=10s"),
                ],
            );
        }
        c.line("keepalive", &[Arg::num(32u32)]);
        c.close();
    }
    c.finish()
}

fn listen_addr(o: &RenderOptions, port: u16) -> Arg {
    let text = match o.listen.address {
        std::net::IpAddr::V4(ip) => format!("{ip}:{port}"),
        std::net::IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    };
    Arg::token(&text).expect("formatted from an IP address and a port")
}

fn site_text(s: &Site<'_>, spec: &GatewaySpec, o: &RenderOptions, headers: &Headers) -> String {
    let mut c = Conf::new();
    c.comment(&[&s.host], "route");
    c.blank();
    let http = listen_addr(o, o.listen.http_port);
    // Plain HTTP: a redirect, or the locations.
    c.open("server", &[]);
    c.line("listen", &[http]);
    c.line("server_name", std::slice::from_ref(&s.host));
    if s.route.redirect_http {
        c.open("location", &[Arg::lit("/")]);
        let target = if o.listen.https_port == 443 {
            Arg::lit("https://$host$request_uri")
        } else {
            Arg::cat([
                Arg::lit("https://$host:"),
                Arg::num(o.listen.https_port),
                Arg::lit("$request_uri"),
            ])
        };
        c.line("return", &[Arg::num(308u32), target]);
        c.close();
    } else {
        for l in &s.locations {
            location_text(&mut c, l, headers, false);
        }
    }
    c.close();
    if s.route.tls {
        c.blank();
        let mut listen = vec![listen_addr(o, o.listen.https_port), Arg::lit("ssl")];
        if spec.http2 {
            listen.push(Arg::lit("http2"));
        }
        c.open("server", &[]);
        c.line("listen", &listen);
        c.line("server_name", std::slice::from_ref(&s.host));
        if let Some(stem) = &s.cert {
            certificate_lines(&mut c, stem);
        }
        for l in &s.locations {
            location_text(&mut c, l, headers, true);
        }
        c.close();
    }
    c.finish()
}

/// `ssl_certificate` and `ssl_certificate_key` for the files `tls/STEM.crt|key`.
fn certificate_lines(c: &mut Conf, stem: &str) {
    let file = |ext: &'static str| {
        Arg::token(&format!("tls/{stem}.{ext}")).expect("stem of a checked host")
    };
    c.line("ssl_certificate", &[file("crt")]);
    c.line("ssl_certificate_key", &[file("key")]);
}

/// The request headers every proxied request carries; with `websocket`, also the upgrade.
fn proxy_headers(c: &mut Conf, websocket: bool) {
    for (name, value) in [
        ("Host", "$host"),
        ("X-Real-IP", "$remote_addr"),
        ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
        ("X-Forwarded-Proto", "$scheme"),
        ("X-Forwarded-Host", "$host"),
    ] {
        c.line("proxy_set_header", &[Arg::lit(name), Arg::lit(value)]);
    }
    if websocket {
        c.line(
            "proxy_set_header",
            &[Arg::lit("Upgrade"), Arg::lit("$http_upgrade")],
        );
        c.line(
            "proxy_set_header",
            &[Arg::lit("Connection"), Arg::lit("$phoenix_connection")],
        );
    } else {
        // Empty: upstream connections stay open for keepalive.
        c.line(
            "proxy_set_header",
            &[Arg::lit("Connection"), Arg::lit("\"\"")],
        );
    }
}

fn location_text(c: &mut Conf, l: &Loc, headers: &Headers, tls: bool) {
    c.open("location", std::slice::from_ref(&l.path));
    for (verb, who) in &l.access {
        c.line(verb, std::slice::from_ref(who));
    }
    if let Some((zone, burst)) = &l.rate_limit {
        let mut args = vec![Arg::cat([Arg::lit("zone=rl_"), zone.clone()])];
        if *burst > 0 {
            args.push(Arg::cat([Arg::lit("burst="), Arg::num(*burst)]));
            args.push(Arg::lit("nodelay"));
        }
        c.line("limit_req", &args);
    }
    if let Some((zone, valid)) = &l.cache {
        c.line(
            "proxy_cache",
            &[Arg::cat([Arg::lit("cache_"), zone.clone()])],
        );
        // Upstream blocks are shared between hosts: the key names the host, not the block.
        c.line("proxy_cache_key", &[Arg::lit("$scheme$host$request_uri")]);
        c.line(
            "proxy_cache_valid",
            &[
                Arg::num(200u32),
                Arg::num(301u32),
                Arg::num(302u32),
                Arg::cat([Arg::num(*valid), Arg::lit("s")]),
            ],
        );
        c.line(
            "proxy_cache_use_stale",
            &[Arg::lit("error"), Arg::lit("timeout"), Arg::lit("updating")],
        );
        c.line("proxy_cache_lock", &[Arg::lit("on")]);
        // Answers to authenticated requests are neither served from nor stored in the cache.
        c.line("proxy_cache_bypass", &[Arg::lit("$http_authorization")]);
        c.line("proxy_no_cache", &[Arg::lit("$http_authorization")]);
    }
    let pass = match l.scheme {
        Scheme::Http => Arg::cat([Arg::lit("http://"), l.upstream.clone()]),
        Scheme::Https => Arg::cat([Arg::lit("https://"), l.upstream.clone()]),
    };
    c.line("proxy_pass", &[pass]);
    // The forwarding headers are set once in `http {}` and inherited; a location that sets
    // any `proxy_set_header` loses them all, so a WebSocket location repeats the full set.
    if l.websocket {
        proxy_headers(c, true);
        c.line("proxy_read_timeout", &[Arg::lit("3600s")]);
        c.line("proxy_send_timeout", &[Arg::lit("3600s")]);
    }
    if l.scheme == Scheme::Https {
        c.line("proxy_ssl_server_name", &[Arg::lit("on")]);
        c.line("proxy_ssl_name", &[Arg::lit("$host")]);
    }
    let mut all: BTreeMap<&str, (&Arg, &Arg)> = BTreeMap::new();
    for (k, (n, v)) in &headers.common {
        all.insert(k, (n, v));
    }
    if tls && let Some((n, v)) = &headers.hsts {
        all.insert("strict-transport-security", (n, v));
    }
    for (k, (n, v)) in &l.headers {
        all.insert(k, (n, v));
    }
    for (n, v) in all.values() {
        c.line(
            "add_header",
            &[(*n).clone(), (*v).clone(), Arg::lit("always")],
        );
    }
    if l.cache.is_some() {
        c.line(
            "add_header",
            &[
                Arg::lit("X-Cache-Status"),
                Arg::lit("$upstream_cache_status"),
                Arg::lit("always"),
            ],
        );
    }
    c.close();
}

type RateLine = (String, Arg, u32, u32);
type CacheLine = (String, Arg, Arg, u32, u64);

fn main_text(
    spec: &GatewaySpec,
    o: &RenderOptions,
    p: &Paths,
    sites: &[Site<'_>],
    default_cert: Option<&str>,
    rate: &[RateLine],
    caches: &[CacheLine],
) -> Result<String, RenderError> {
    let any_tls = sites.iter().any(|s| s.route.tls);
    let mut c = Conf::new();
    c.comment(
        &[],
        "Rendered by Phoenix from a Gateway. Do not edit: it is replaced whole.",
    );
    c.blank();
    if spec.waf.is_some() {
        let module = path_arg("options.waf.module", &o.waf.module)?;
        c.line(
            "load_module",
            &[Arg::token(&module).map_err(unsafe_at("options.waf.module"))?],
        );
    }
    if let Some(u) = &o.user {
        c.line("user", &[Arg::token(u).map_err(unsafe_at("options.user"))?]);
    }
    c.line(
        "worker_processes",
        &[match o.worker_processes {
            Some(n) => Arg::num(n),
            None => Arg::lit("auto"),
        }],
    );
    c.line("pid", std::slice::from_ref(&p.pid));
    c.line("error_log", &[p.error_log.clone(), Arg::lit("notice")]);
    c.line("worker_shutdown_timeout", &[Arg::lit("30s")]);
    c.blank();
    c.open("events", &[]);
    c.line("worker_connections", &[Arg::num(o.worker_connections)]);
    c.close();
    c.blank();

    c.open("http", &[]);
    c.line(
        "server_tokens",
        &[Arg::lit(if spec.server_tokens { "on" } else { "off" })],
    );
    c.line("default_type", &[Arg::lit("application/octet-stream")]);
    c.line("sendfile", &[Arg::lit("on")]);
    c.line("tcp_nopush", &[Arg::lit("on")]);
    c.line("keepalive_timeout", &[Arg::lit("65s")]);
    let longest = sites.iter().map(|s| s.route.host.len()).max().unwrap_or(0);
    let bucket = (longest as u64 + 32).next_power_of_two().clamp(64, 512);
    let max = (sites.len() as u64 * 2).next_power_of_two().max(512);
    c.line("server_names_hash_bucket_size", &[Arg::num(bucket)]);
    c.line("server_names_hash_max_size", &[Arg::num(max)]);
    c.line("proxy_headers_hash_bucket_size", &[Arg::num(128u32)]);
    c.line("proxy_headers_hash_max_size", &[Arg::num(1024u32)]);
    c.line(
        "log_format",
        &[
            Arg::lit("phoenix"),
            Arg::lit(
                "'$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\" host=$host upstream=$upstream_addr rt=$request_time cache=$upstream_cache_status'",
            ),
        ],
    );
    c.line("access_log", &[p.access_log.clone(), Arg::lit("phoenix")]);
    for (directive, sub) in [
        ("client_body_temp_path", "client_body"),
        ("proxy_temp_path", "proxy"),
        ("fastcgi_temp_path", "fastcgi"),
        ("uwsgi_temp_path", "uwsgi"),
        ("scgi_temp_path", "scgi"),
    ] {
        let path = Arg::token(&format!("{}/{sub}", p.temp))
            .map_err(unsafe_at("options.runtime.tempDir"))?;
        c.line(directive, &[path]);
    }
    c.line("proxy_connect_timeout", &[Arg::lit("5s")]);
    c.line("proxy_http_version", &[Arg::lit("1.1")]);
    c.line(
        "proxy_next_upstream",
        &[Arg::lit("error"), Arg::lit("timeout")],
    );
    proxy_headers(&mut c, false);
    c.blank();
    if spec.gzip {
        c.line("gzip", &[Arg::lit("on")]);
        c.line("gzip_vary", &[Arg::lit("on")]);
        c.line("gzip_proxied", &[Arg::lit("any")]);
        c.line("gzip_comp_level", &[Arg::num(5u32)]);
        c.line("gzip_min_length", &[Arg::num(256u32)]);
        c.line(
            "gzip_types",
            &[
                Arg::lit("text/plain"),
                Arg::lit("text/css"),
                Arg::lit("text/xml"),
                Arg::lit("text/javascript"),
                Arg::lit("application/javascript"),
                Arg::lit("application/json"),
                Arg::lit("application/xml"),
                Arg::lit("image/svg+xml"),
            ],
        );
    } else {
        c.line("gzip", &[Arg::lit("off")]);
    }
    if any_tls {
        c.blank();
        c.line("ssl_protocols", &[Arg::lit("TLSv1.2"), Arg::lit("TLSv1.3")]);
        c.line("ssl_prefer_server_ciphers", &[Arg::lit("off")]);
        c.line("ssl_session_cache", &[Arg::lit("shared:phoenix_tls:10m")]);
        c.line("ssl_session_timeout", &[Arg::lit("1d")]);
        c.line("ssl_session_tickets", &[Arg::lit("off")]);
    }
    c.blank();
    c.comment(
        &[],
        "WebSocket upgrades; an empty Connection header keeps upstream keepalive.",
    );
    c.open(
        "map",
        &[Arg::lit("$http_upgrade"), Arg::lit("$phoenix_connection")],
    );
    c.line("default", &[Arg::lit("upgrade")]);
    c.line("''", &[Arg::lit("''")]);
    c.close();
    if !rate.is_empty() {
        c.blank();
        c.line("limit_req_status", &[Arg::num(429u32)]);
        for (_, name, rps, mib) in rate {
            c.line(
                "limit_req_zone",
                &[
                    Arg::lit("$binary_remote_addr"),
                    Arg::cat([
                        Arg::lit("zone=rl_"),
                        name.clone(),
                        Arg::lit(":"),
                        Arg::num(*mib),
                        Arg::lit("m"),
                    ]),
                    Arg::cat([Arg::lit("rate="), Arg::num(*rps), Arg::lit("r/s")]),
                ],
            );
        }
    }
    if !caches.is_empty() {
        c.blank();
        for (_, name, dir, mib, inactive) in caches {
            c.line(
                "proxy_cache_path",
                &[
                    dir.clone(),
                    Arg::lit("levels=1:2"),
                    Arg::cat([Arg::lit("keys_zone=cache_"), name.clone(), Arg::lit(":10m")]),
                    Arg::cat([Arg::lit("max_size="), Arg::num(*mib), Arg::lit("m")]),
                    Arg::cat([Arg::lit("inactive="), Arg::num(*inactive), Arg::lit("s")]),
                    Arg::lit("use_temp_path=off"),
                ],
            );
        }
    }
    if let Some(waf) = &spec.waf {
        c.blank();
        c.comment(&[], "ModSecurity with the OWASP core rule set.");
        c.line("modsecurity", &[Arg::lit("on")]);
        let w = &o.waf;
        let setup = path_arg("options.waf.crsSetup", &w.crs_setup)?;
        let before = path_arg("options.waf.crsBefore", &w.crs_before)?;
        let rules = path_arg("options.waf.crsRulesDir", &w.crs_rules_dir)?;
        let after = path_arg("options.waf.crsAfter", &w.crs_after)?;
        let rule_lines = [
            "SecRequestBodyAccess On".to_string(),
            "SecAuditEngine RelevantOnly".to_string(),
            "SecAuditLogParts ABIJDEFHZ".to_string(),
            "SecAuditLogType Serial".to_string(),
            format!("SecAuditLog {}/modsec_audit.log", p.log_dir),
            format!("SecTmpDir {}", p.temp),
            format!("SecDataDir {}", p.temp),
            format!("Include {setup}"),
            format!("Include {before}"),
            format!("Include {rules}/*.conf"),
            format!("Include {after}"),
            format!(
                "SecRuleEngine {}",
                match waf.mode {
                    WafMode::DetectionOnly => "DetectionOnly",
                    WafMode::On => "On",
                }
            ),
        ];
        for line in rule_lines {
            c.line(
                "modsecurity_rules",
                &[Arg::quoted(&line).map_err(unsafe_at("options.waf"))?],
            );
        }
    }
    c.blank();
    c.comment(
        &[],
        "Requests for unknown hosts, and the gateway's own health check.",
    );
    c.open("server", &[]);
    c.line(
        "listen",
        &[
            listen_addr(o, o.listen.http_port),
            Arg::lit("default_server"),
        ],
    );
    c.line("server_name", &[Arg::lit("_")]);
    c.open("location", &[Arg::lit("="), Arg::lit("/healthz")]);
    c.line("access_log", &[Arg::lit("off")]);
    c.line("default_type", &[Arg::lit("text/plain")]);
    c.line("return", &[Arg::num(200u32), Arg::lit("\"ok\\n\"")]);
    c.close();
    c.open("location", &[Arg::lit("/")]);
    c.line("return", &[Arg::num(404u32)]);
    c.close();
    c.close();
    if any_tls {
        c.open("server", &[]);
        let mut listen = vec![listen_addr(o, o.listen.https_port), Arg::lit("ssl")];
        if spec.http2 {
            listen.push(Arg::lit("http2"));
        }
        listen.push(Arg::lit("default_server"));
        c.line("listen", &listen);
        c.line("server_name", &[Arg::lit("_")]);
        // Unknown or missing SNI names are refused; TLS routes without a certificate of their
        // own are served with this one (see `share_certificates`).
        c.line("ssl_reject_handshake", &[Arg::lit("on")]);
        if let Some(stem) = default_cert {
            certificate_lines(&mut c, stem);
        }
        c.close();
    }
    c.blank();
    c.line("include", &[Arg::lit(UPSTREAMS)]);
    for s in sites {
        let file = Arg::token(&format!("sites/{}.conf", s.stem)).expect("stem of a checked host");
        c.line("include", &[file]);
    }
    c.close();
    Ok(c.finish())
}
