//! The plan written as nginx syntax: `upstreams.conf`, `sites/HOST.conf` and `nginx.conf`,
//! beside the certificate files the plan holds. Writes only values the plan checked, through
//! [`crate::writer`]; cannot fail.

use std::collections::BTreeMap;

use phoenix_api::kinds::common::Scheme;
use phoenix_api::kinds::gateway::{GatewaySpec, LoadBalancing};

use super::plan::{Headers, Loc, Plan, Site};
use crate::options::RenderOptions;
use crate::tree::{ConfigFile, ConfigTree, MODE_FILE};
use crate::writer::{Arg, Conf};

/// The file with the `upstream` blocks.
const UPSTREAMS: &str = "upstreams.conf";

/// The whole tree: the plan's certificate files, `upstreams.conf`, one `sites/STEM.conf` per
/// site and `nginx.conf`.
pub(super) fn tree(mut plan: Plan<'_>, spec: &GatewaySpec, o: &RenderOptions) -> ConfigTree {
    let mut files = std::mem::take(&mut plan.files);
    files.insert(
        UPSTREAMS.to_string(),
        ConfigFile {
            contents: upstreams_text(&plan.upstream_blocks()).into_bytes(),
            mode: MODE_FILE,
        },
    );
    for s in &plan.sites {
        files.insert(
            format!("sites/{}.conf", s.stem),
            ConfigFile {
                contents: site_text(s, spec, o, &plan.headers).into_bytes(),
                mode: MODE_FILE,
            },
        );
    }
    files.insert(
        ConfigTree::MAIN.to_string(),
        ConfigFile {
            contents: main_text(spec, o, &plan).into_bytes(),
            mode: MODE_FILE,
        },
    );
    ConfigTree::new(files)
}

fn upstreams_text(blocks: &[&Loc]) -> String {
    let mut c = Conf::new();
    c.comment(
        &[],
        "One block per distinct set of backends, named after its contents.",
    );
    for l in blocks {
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
    if let Some(responder) = o.acme_challenge {
        acme_challenge_location(&mut c, responder);
    }
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

/// ACME HTTP-01 (RFC 8555 §8.3): `/.well-known/acme-challenge/` goes to the responder, with
/// `^~` so that no regex location and no redirect of the route takes it.
fn acme_challenge_location(c: &mut Conf, responder: std::net::SocketAddr) {
    c.open(
        "location",
        &[Arg::lit("^~"), Arg::lit("/.well-known/acme-challenge/")],
    );
    let address = Arg::token(&responder.to_string()).expect("formatted from a socket address");
    c.line("proxy_pass", &[Arg::cat([Arg::lit("http://"), address])]);
    c.line("proxy_set_header", &[Arg::lit("Host"), Arg::lit("$host")]);
    c.close();
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

fn main_text(spec: &GatewaySpec, o: &RenderOptions, plan: &Plan<'_>) -> String {
    let p = &plan.paths;
    let sites = &plan.sites;
    let any_tls = sites.iter().any(|s| s.route.tls);
    let mut c = Conf::new();
    c.comment(
        &[],
        "Rendered by Phoenix from a Gateway. Do not edit: it is replaced whole.",
    );
    c.blank();
    if let Some(module) = &plan.main.waf_module {
        c.line("load_module", std::slice::from_ref(module));
    }
    if let Some(user) = &plan.main.user {
        c.line("user", std::slice::from_ref(user));
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
    for (directive, path) in &plan.main.temp_paths {
        c.line(directive, std::slice::from_ref(path));
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
    if !plan.rate.is_empty() {
        c.blank();
        c.line("limit_req_status", &[Arg::num(429u32)]);
        for (_, name, rps, mib) in &plan.rate {
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
    if !plan.caches.is_empty() {
        c.blank();
        for (_, name, dir, mib, inactive) in &plan.caches {
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
    if spec.waf.is_some() {
        c.blank();
        c.comment(&[], "ModSecurity with the OWASP core rule set.");
        c.line("modsecurity", &[Arg::lit("on")]);
        for rule in &plan.main.waf_rules {
            c.line("modsecurity_rules", std::slice::from_ref(rule));
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
        if let Some(stem) = &plan.default_cert {
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
    c.finish()
}
