//! What a Gateway becomes, before any nginx syntax: every value checked, every backend
//! resolved, every decision taken (zones, sites in host order with their locations in path
//! order, which upstream blocks exist, which server loads which certificate, the values
//! `nginx.conf` takes from the options). Fails on the first problem, naming its field.

use std::collections::{BTreeMap, BTreeSet};

use phoenix_api::decode::quote;
use phoenix_api::kinds::common::Scheme;
use phoenix_api::kinds::gateway::{
    FrameOptions, GatewaySpec, LoadBalancing, Location, Route, WafMode,
};
use phoenix_api::validation::rules;

use super::{GatewayInput, RenderError};
use crate::backend::{self, BackendDirectory, UpstreamServer};
use crate::options::RenderOptions;
use crate::safe;
use crate::tls::TlsCertificate;
use crate::tree::{ConfigFile, MODE_FILE, MODE_SECRET};
use crate::writer::Arg;

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
pub(super) struct Paths {
    pub(super) pid: Arg,
    pub(super) error_log: Arg,
    pub(super) access_log: Arg,
    pub(super) temp: String,
    pub(super) cache: String,
    pub(super) log_dir: String,
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
pub(super) struct Loc {
    pub(super) path: Arg,
    pub(super) upstream: Arg,
    pub(super) scheme: Scheme,
    pub(super) balancing: LoadBalancing,
    pub(super) servers: Vec<UpstreamServer>,
    pub(super) websocket: bool,
    pub(super) access: Vec<(&'static str, Arg)>,
    pub(super) rate_limit: Option<(Arg, u32)>,
    pub(super) cache: Option<(Arg, u64)>,
    pub(super) headers: BTreeMap<String, (Arg, Arg)>,
}

/// One route, checked and resolved.
pub(super) struct Site<'a> {
    pub(super) route: &'a Route,
    pub(super) host: Arg,
    pub(super) stem: String,
    /// Stem of the `tls/STEM.crt|key` files of a TLS server that loads its own certificate;
    /// `None` for plain routes and for TLS routes served with the default TLS server's.
    pub(super) cert: Option<String>,
    pub(super) locations: Vec<Loc>,
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
pub(super) struct Headers {
    pub(super) common: BTreeMap<String, (Arg, Arg)>,
    pub(super) hsts: Option<(Arg, Arg)>,
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
            rules::referrer_policy(p).map_err(unsafe_at("spec.securityHeaders.referrerPolicy"))?;
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

pub(super) type RateLine = (String, Arg, u32, u32);
pub(super) type CacheLine = (String, Arg, Arg, u32, u64);

/// A Gateway checked and decided, ready to be written.
pub(super) struct Plan<'a> {
    pub(super) paths: Paths,
    pub(super) headers: Headers,
    /// Rate-limit zones, by name.
    pub(super) rate: Vec<RateLine>,
    /// Cache zones, by name.
    pub(super) caches: Vec<CacheLine>,
    /// Sites, by host.
    pub(super) sites: Vec<Site<'a>>,
    /// Stem of the certificate files the default TLS server loads (see `share_certificates`).
    pub(super) default_cert: Option<String>,
    pub(super) main: MainArgs,
    /// The certificate files, `tls/STEM.crt|key`.
    pub(super) files: BTreeMap<String, ConfigFile>,
}

/// Checks and decides everything, in the order the checks have always run (options, security
/// headers, zones, routes by host, certificates, then the options `nginx.conf` uses), so the
/// first problem found is the one reported.
pub(super) fn plan<'a>(input: &GatewayInput<'a>) -> Result<Plan<'a>, RenderError> {
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
    let main = main_args(spec, input.options, &paths)?;
    Ok(Plan {
        paths,
        headers,
        rate: rate_lines,
        caches: cache_lines,
        sites,
        default_cert,
        main,
        files,
    })
}

impl Plan<'_> {
    /// The distinct upstream blocks, one per set of backends (balancing and servers), in
    /// name order; each is given by the first location, in host and path order, that uses it.
    pub(super) fn upstream_blocks(&self) -> Vec<&Loc> {
        let mut blocks: BTreeMap<String, &Loc> = BTreeMap::new();
        for s in &self.sites {
            for l in &s.locations {
                blocks
                    .entry(upstream_key(l.balancing, &l.servers))
                    .or_insert(l);
            }
        }
        let mut by_name: Vec<&Loc> = blocks.into_values().collect();
        by_name.sort_by(|a, b| a.upstream.text().cmp(b.upstream.text()));
        by_name
    }
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
    let rate_limit = zone(
        &zones.rate,
        loc.rate_limit.as_deref(),
        lf,
        "rateLimit",
        "rateLimits",
    )?;
    let cache = zone(&zones.cache, loc.cache.as_deref(), lf, "cache", "caches")?;
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

/// The zone a location names in its field `key` (`None` when it names none).
///
/// # Errors
///
/// [`RenderError::UnknownZone`] at `LF.key` when the spec's `list` does not define it.
fn zone<T: Clone>(
    zones: &BTreeMap<String, T>,
    name: Option<&str>,
    lf: &str,
    key: &str,
    list: &'static str,
) -> Result<Option<T>, RenderError> {
    name.map(|z| {
        zones
            .get(z)
            .cloned()
            .ok_or_else(|| RenderError::UnknownZone {
                field: format!("{lf}.{key}"),
                name: quote(z),
                list,
            })
    })
    .transpose()
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

/// The values of `nginx.conf` that come from the options, checked.
pub(super) struct MainArgs {
    /// `load_module` of ModSecurity, with a WAF.
    pub(super) waf_module: Option<Arg>,
    /// `user`, when the options set one.
    pub(super) user: Option<Arg>,
    /// The `*_temp_path` directives and their directories.
    pub(super) temp_paths: Vec<(&'static str, Arg)>,
    /// The `modsecurity_rules` lines, with a WAF.
    pub(super) waf_rules: Vec<Arg>,
}

fn main_args(spec: &GatewaySpec, o: &RenderOptions, p: &Paths) -> Result<MainArgs, RenderError> {
    let waf_module = if spec.waf.is_some() {
        let module = path_arg("options.waf.module", &o.waf.module)?;
        Some(Arg::token(&module).map_err(unsafe_at("options.waf.module"))?)
    } else {
        None
    };
    let user = match &o.user {
        Some(u) => Some(Arg::token(u).map_err(unsafe_at("options.user"))?),
        None => None,
    };
    let mut temp_paths = Vec::new();
    for (directive, sub) in [
        ("client_body_temp_path", "client_body"),
        ("proxy_temp_path", "proxy"),
        ("fastcgi_temp_path", "fastcgi"),
        ("uwsgi_temp_path", "uwsgi"),
        ("scgi_temp_path", "scgi"),
    ] {
        let path = Arg::token(&format!("{}/{sub}", p.temp))
            .map_err(unsafe_at("options.runtime.tempDir"))?;
        temp_paths.push((directive, path));
    }
    let mut waf_rules = Vec::new();
    if let Some(waf) = &spec.waf {
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
            waf_rules.push(Arg::quoted(&line).map_err(unsafe_at("options.waf"))?);
        }
    }
    Ok(MainArgs {
        waf_module,
        user,
        temp_paths,
        waf_rules,
    })
}
