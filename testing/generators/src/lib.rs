//! Test-only proptest strategies shared by the property tests of the API and of every
//! renderer (docs/fuzzing.md).
//!
//! - [`gateway_spec`], [`mesh_spec`], [`stack_spec`], [`dns_zone_spec`]: specs admission
//!   accepts, including the legal corners (63-character labels, 253-character names, `xn--`
//!   labels, wildcard hosts, IPv6, 1024-character paths, many routes, CSP and header values
//!   with `'` and `;`). `api/tests/properties.rs` checks that admission accepts every one of
//!   them: a refusal there is a bug in the generator (or a new rule it has to learn).
//! - [`hostile_text`], [`mutated`]: manifest-ish text for the decoder.
//! - [`string_leaves`] and [`with_leaf`]: every string of a spec as JSON, to put the injection
//!   corpus (`phoenix_api::validation::injection::ATTACKS`) into each one.
//! - [`config`]: the case count, from `PROPTEST_CASES` or the test's CI default.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use phoenix_api::duration::Duration;
use phoenix_api::kinds::common::DeletionPolicy;
use phoenix_api::kinds::common::{Backend, Scheme, SshTarget};
use phoenix_api::kinds::dns_zone::{
    DnsRecordSources, DnsZoneSpec, DnsZoneTarget, GuestRecords, HostsDirTarget, RecordType,
    Rfc2136Target, StaticRecord,
};
use phoenix_api::kinds::gateway::{
    Cache, FrameOptions, GatewaySpec, GatewayTarget, Listen, LoadBalancing, LocalNginx, Location,
    RateLimit, Route, SecurityHeaders, SshNginx, Waf, WafMode,
};
use phoenix_api::kinds::mesh::{
    CaddyAdminTarget, EntryPoint, FileTarget, HealthCheck, HttpTarget, MeshProvider, MeshService,
    MeshSpec, MeshTarget,
};
use phoenix_api::kinds::stack::{DockerTarget, SecretKeyRef, StackSpec, StackTarget};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};

/// The proptest configuration of a property test: `PROPTEST_CASES` when set (long runs,
/// docs/fuzzing.md), else `ci_cases`; shrinking bounded so that a failure against a real
/// peer is reported in minutes, not hours.
pub fn config(ci_cases: u32) -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = ci_cases;
    }
    c.max_shrink_iters = 256;
    // Integration tests have no lib.rs for proptest to put regressions next to; a failure
    // found is turned into a named regression test instead (docs/fuzzing.md).
    c.failure_persistence = None;
    c
}

// ---- values -----------------------------------------------------------------------------

/// Valid IDNA (punycode) labels: unicode host names as they reach admission.
const IDNA: &[&str] = &[
    "xn--bcher-kva",
    "xn--mnchen-3ya",
    "xn--fiqs8s",
    "xn--e1afmkfd",
    "xn--wgv71a119e",
    "xn--80akhbyknj4f",
];

/// An RFC 1123 label: short ones mostly, 63-character ones, `xn--` (IDNA) ones, digits only.
pub fn dns_label() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "[a-z][a-z0-9]{0,8}",
        2 => "[a-z0-9][a-z0-9-]{0,61}[a-z0-9]".prop_map(unreserved),
        1 => "[a-z0-9]{63}",
        1 => prop::sample::select(IDNA).prop_map(str::to_string),
        1 => "[0-9]{1,3}",
    ]
    .boxed()
}

/// `label` without hyphens in its 3rd and 4th places: such labels are reserved (RFC 5891
/// 4.2.3.1; `xn--` marks an IDNA label, which must then be valid punycode), and URL parsers
/// refuse a random one. Valid IDNA labels come from [`IDNA`].
fn unreserved(mut label: String) -> String {
    if label.get(2..4) == Some("--") {
        label.replace_range(3..4, "a");
    }
    label
}

/// A lowercase RFC 1123 host name whose last label starts with a letter (so a URL parser
/// never takes it for an IPv4 number), at most 253 characters.
pub fn hostname() -> BoxedStrategy<String> {
    (
        prop::collection::vec(dns_label(), 0..4),
        prop_oneof![
            4 => "[a-z][a-z0-9]{0,6}",
            1 => "[a-z][a-z0-9-]{61}[a-z0-9]".prop_map(unreserved),
        ],
    )
        .prop_map(|(mut labels, last)| {
            labels.push(last);
            let mut s = labels.join(".");
            while s.len() > 253 {
                labels.remove(0);
                s = labels.join(".");
            }
            s
        })
        .boxed()
}

/// A host name, or one with a leading `*.`.
pub fn hostname_or_wildcard() -> BoxedStrategy<String> {
    prop_oneof![4 => hostname(), 1 => hostname().prop_map(|h| format!("*.{h}"))].boxed()
}

/// An IPv4 address in dotted-quad form.
pub fn ipv4() -> BoxedStrategy<String> {
    any::<[u8; 4]>()
        .prop_map(|o| Ipv4Addr::from(o).to_string())
        .boxed()
}

/// An IPv6 address as Rust prints it (compressed; v4-mapped with a dotted tail).
pub fn ipv6() -> BoxedStrategy<String> {
    prop_oneof![
        any::<[u16; 8]>().prop_map(|s| Ipv6Addr::from(s).to_string()),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| format!("fd00::{a:x}:{b:x}")),
    ]
    .boxed()
}

/// An IPv4 or IPv6 address.
pub fn ip() -> BoxedStrategy<String> {
    prop_oneof![ipv4(), ipv6()].boxed()
}

/// An address or CIDR as allow/deny lists take them (host bits may be set).
pub fn ip_or_cidr() -> BoxedStrategy<String> {
    prop_oneof![
        ip(),
        (ipv4(), 0u8..=32).prop_map(|(a, n)| format!("{a}/{n}")),
        (ipv6(), 0u8..=128).prop_map(|(a, n)| format!("{a}/{n}")),
    ]
    .boxed()
}

/// A port, 1..=65535, with the edges often.
pub fn port() -> BoxedStrategy<u16> {
    prop_oneof![1 => Just(1u16), 1 => Just(65535u16), 8 => 1u16..=65535].boxed()
}

/// Two different ports.
pub fn two_ports() -> BoxedStrategy<(u16, u16)> {
    (port(), port())
        .prop_filter("distinct", |(a, b)| a != b)
        .boxed()
}

/// A duration (`90s`, `0007m`, `1h30m`, `250ms`), at most a few years.
pub fn duration() -> BoxedStrategy<String> {
    prop::collection::vec("[0-9]{1,4}(ms|s|m|h|d)", 1..3)
        .prop_map(|parts| parts.concat())
        .boxed()
}

/// A URL path prefix: `/`, segments of `A-Za-z0-9._~-` (no `..`, no `//`), sometimes with a
/// trailing `/`, sometimes 1024 characters long.
pub fn url_path() -> BoxedStrategy<String> {
    prop_oneof![
        2 => Just("/".to_string()),
        8 => (
            prop::collection::vec(
                "[A-Za-z0-9._~-]{1,10}".prop_filter("no ..", |s| s != ".."),
                1..5
            ),
            any::<bool>()
        )
            .prop_map(|(segs, slash)| {
                let mut p = format!("/{}", segs.join("/"));
                if slash {
                    p.push('/');
                }
                p
            }),
        1 => "[a-z]{1}".prop_map(|c| format!("/{}", c.repeat(1023))),
    ]
    .boxed()
}

/// A relative path under an operator's root: components of `A-Za-z0-9._-`, none `.`/`..`.
pub fn relative_path() -> BoxedStrategy<String> {
    prop::collection::vec(
        "[A-Za-z0-9._-]{1,16}".prop_filter("not . or ..", |s| s != "." && s != ".."),
        1..4,
    )
    .prop_map(|c| c.join("/"))
    .boxed()
}

/// Printable ASCII that a double-quoted config value may hold: spaces, `'`, `;`, `(`, `*`, but
/// none of `"`, `\`, `$`, `{`, `}`, `#`, backquote.
pub fn config_quoted(max: usize) -> BoxedStrategy<String> {
    let chars: Vec<char> = (0x20u8..0x7f)
        .map(char::from)
        .filter(|c| !"\"\\${}#`".contains(*c))
        .collect();
    prop::collection::vec(prop::sample::select(chars), 0..max)
        .prop_map(|v| v.into_iter().collect())
        .boxed()
}

/// An HTTP header name.
pub fn header_name() -> BoxedStrategy<String> {
    prop_oneof![4 => "X-[A-Za-z0-9]{1,12}", 1 => "[A-Za-z0-9-]{1,64}"].boxed()
}

/// A Unix user name.
pub fn unix_user() -> BoxedStrategy<String> {
    prop_oneof![3 => Just("root".to_string()), 1 => "[a-z_][a-z0-9_-]{0,31}"].boxed()
}

/// An SSH target; `host` may be absent (then the spec needs a guest).
pub fn ssh_target() -> BoxedStrategy<SshTarget> {
    (
        prop::option::of(prop_oneof![hostname(), ip()]),
        port(),
        unix_user(),
        dns_label(),
    )
        .prop_map(|(host, port, user, secret_ref)| SshTarget {
            host,
            port,
            user,
            secret_ref,
        })
        .boxed()
}

/// Hosts of backend URLs: addresses and host names.
pub fn url_host() -> BoxedStrategy<String> {
    prop_oneof![ipv4(), ipv6(), hostname()].boxed()
}

/// `http(s)://HOST[:PORT][/]` with a host from `host` (IPv6 in brackets).
pub fn url(schemes: &'static [&'static str], host: BoxedStrategy<String>) -> BoxedStrategy<String> {
    (
        prop::sample::select(schemes),
        host,
        prop::option::of(port()),
        any::<bool>(),
    )
        .prop_map(|(scheme, host, port, slash)| {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let slash = if slash { "/" } else { "" };
            format!("{scheme}://{host}{port}{slash}")
        })
        .boxed()
}

fn scheme() -> BoxedStrategy<Scheme> {
    prop_oneof![Just(Scheme::Http), Just(Scheme::Https)].boxed()
}

fn opt_select(names: &[String]) -> BoxedStrategy<Option<String>> {
    if names.is_empty() {
        Just(None).boxed()
    } else {
        prop::option::of(prop::sample::select(names.to_vec())).boxed()
    }
}

// ---- Gateway ----------------------------------------------------------------------------

/// A Gateway backend speaking `scheme`: a URL (host from `url_host`), a guest with a port,
/// or (plain HTTP only: the test directory's meshes speak it) a mesh; an optional weight.
/// One location's backends share a scheme (admission's rule, and nginx's).
fn gateway_backend(url_host: BoxedStrategy<String>, scheme: Scheme) -> BoxedStrategy<Backend> {
    let weight = prop::option::of(1u32..=100);
    let with_scheme = (mesh_backend(url_host, Some(scheme)), weight.clone())
        .prop_map(|(b, weight)| Backend { weight, ..b });
    if scheme == Scheme::Https {
        return with_scheme.boxed();
    }
    prop_oneof![
        2 => with_scheme,
        1 => (dns_label(), weight).prop_map(|(m, weight)| Backend {
            mesh: Some(m),
            weight,
            ..Backend::default()
        }),
    ]
    .boxed()
}

fn location(
    path: String,
    zones: Vec<String>,
    caches: Vec<String>,
    url_host: BoxedStrategy<String>,
) -> BoxedStrategy<Location> {
    (
        scheme().prop_flat_map(move |s| {
            prop::collection::vec(gateway_backend(url_host.clone(), s), 1..4)
        }),
        prop_oneof![
            Just(LoadBalancing::RoundRobin),
            Just(LoadBalancing::LeastConn),
            Just(LoadBalancing::IpHash)
        ],
        any::<bool>(),
        opt_select(&zones),
        opt_select(&caches),
        prop::collection::vec(ip_or_cidr(), 0..3),
        prop::collection::vec(ip_or_cidr(), 0..3),
        prop::collection::btree_map(header_name(), config_quoted(40), 0..3),
    )
        .prop_map(
            move |(backends, load_balancing, websocket, rate_limit, cache, allow, deny, h)| {
                Location {
                    path: path.clone(),
                    backends,
                    load_balancing,
                    websocket,
                    rate_limit,
                    cache,
                    allow,
                    deny,
                    set_headers: h,
                }
            },
        )
        .boxed()
}

fn route(
    host: String,
    zones: Vec<String>,
    caches: Vec<String>,
    url_host: BoxedStrategy<String>,
) -> BoxedStrategy<Route> {
    (
        any::<bool>(),
        prop::option::of(dns_label()),
        any::<bool>(),
        prop::collection::btree_set(url_path(), 1..4),
    )
        .prop_flat_map(move |(tls, secret, redirect, paths)| {
            let locations: Vec<_> = paths
                .into_iter()
                .map(|p| location(p, zones.clone(), caches.clone(), url_host.clone()))
                .collect();
            let host = host.clone();
            locations.prop_map(move |locations| Route {
                host: host.clone(),
                tls,
                tls_secret: if tls { secret.clone() } else { None },
                redirect_http: tls && redirect,
                locations,
            })
        })
        .boxed()
}

/// A valid Gateway spec with backend URL hosts from [`url_host`].
pub fn gateway_spec() -> BoxedStrategy<GatewaySpec> {
    gateway_spec_with(url_host())
}

/// A valid Gateway spec whose backend URLs take their hosts from `url_host` (a peer test
/// that cannot resolve names passes addresses only).
pub fn gateway_spec_with(url_host: BoxedStrategy<String>) -> BoxedStrategy<GatewaySpec> {
    let zones = prop::collection::btree_set(dns_label(), 0..3);
    let caches = prop::collection::btree_set(dns_label(), 0..3);
    let hosts = prop_oneof![
        9 => prop::collection::btree_set(hostname_or_wildcard(), 0..5),
        1 => prop::collection::btree_set(hostname_or_wildcard(), 20..40),
    ];
    (zones, caches, hosts)
        .prop_flat_map(move |(zones, caches, hosts)| {
            let zones: Vec<String> = zones.into_iter().collect();
            let caches: Vec<String> = caches.into_iter().collect();
            let routes: Vec<_> = hosts
                .into_iter()
                .map(|h| route(h, zones.clone(), caches.clone(), url_host.clone()))
                .collect();
            let rate_limits: Vec<_> = zones
                .iter()
                .map(|n| {
                    let n = n.clone();
                    (1u32..=100_000, 0u32..=100_000, 1u32..=1024).prop_map(move |(r, b, z)| {
                        RateLimit {
                            name: n.clone(),
                            requests_per_second: r,
                            burst: b,
                            zone_size_mib: z,
                        }
                    })
                })
                .collect();
            let cache_zones: Vec<_> = caches
                .iter()
                .map(|n| {
                    let n = n.clone();
                    (1u32..=1024 * 1024, duration(), duration()).prop_map(move |(s, i, v)| Cache {
                        name: n.clone(),
                        size_mib: s,
                        inactive: Duration::new(&i),
                        valid: Duration::new(&v),
                    })
                })
                .collect();
            (
                routes,
                rate_limits,
                cache_zones,
                gateway_target(),
                prop::option::of(dns_label()),
                (ip(), two_ports()),
                (any::<bool>(), any::<bool>(), any::<bool>()),
                prop::option::of(security_headers()),
                prop::option::of(dns_label()),
                prop::option::of(prop_oneof![Just(WafMode::DetectionOnly), Just(WafMode::On)]),
                any::<bool>(),
            )
        })
        .prop_map(
            |(
                routes,
                rate_limits,
                caches,
                target,
                guest,
                (address, (http_port, https_port)),
                (server_tokens, http2, gzip),
                security_headers,
                certificate_authority,
                waf,
                retain,
            )| {
                let guest = match &target.ssh {
                    Some(s) if s.host.is_none() => guest.or(Some("gateway".into())),
                    _ => guest,
                };
                GatewaySpec {
                    guest,
                    target,
                    listen: Listen {
                        address,
                        http_port,
                        https_port,
                    },
                    server_tokens,
                    http2,
                    gzip,
                    security_headers,
                    certificate_authority,
                    rate_limits,
                    caches,
                    waf: waf.map(|mode| Waf { mode }),
                    routes,
                    deletion_policy: if retain {
                        DeletionPolicy::Retain
                    } else {
                        DeletionPolicy::Delete
                    },
                }
            },
        )
        .boxed()
}

fn gateway_target() -> BoxedStrategy<GatewayTarget> {
    prop_oneof![
        prop::option::of(relative_path()).prop_map(|config_dir| GatewayTarget {
            local: Some(LocalNginx {
                config_dir,
                ..LocalNginx::default()
            }),
            ssh: None,
        }),
        (ssh_target(), prop::option::of(relative_path())).prop_map(|(t, config_dir)| {
            GatewayTarget {
                local: None,
                ssh: Some(SshNginx {
                    host: t.host,
                    port: t.port,
                    user: t.user,
                    secret_ref: t.secret_ref,
                    config_dir,
                    nginx_binary: None,
                    runtime: None,
                }),
            }
        }),
    ]
    .boxed()
}

fn security_headers() -> BoxedStrategy<SecurityHeaders> {
    (
        any::<bool>(),
        prop::option::of(prop_oneof![
            Just(FrameOptions::Deny),
            Just(FrameOptions::Sameorigin)
        ]),
        any::<bool>(),
        prop::option::of(prop_oneof![
            4 => config_quoted(120),
            1 => Just("default-src 'self'; img-src * data:; script-src 'none'".to_string()),
        ]),
        prop::option::of(prop::sample::select(
            phoenix_api::validation::rules::REFERRER_POLICIES,
        )),
    )
        .prop_map(
            |(hsts, frame_options, nosniff, csp, referrer)| SecurityHeaders {
                hsts,
                frame_options,
                content_type_options: nosniff,
                content_security_policy: csp,
                referrer_policy: referrer.map(str::to_string),
            },
        )
        .boxed()
}

// ---- Mesh -------------------------------------------------------------------------------

/// A Mesh backend: a URL or a guest with a port (no mesh, no weight); `scheme` fixes the
/// scheme (Caddy: one per service).
fn mesh_backend(url_host: BoxedStrategy<String>, fixed: Option<Scheme>) -> BoxedStrategy<Backend> {
    let schemes: &'static [&'static str] = match fixed {
        None => &["http", "https"],
        Some(Scheme::Http) => &["http"],
        Some(Scheme::Https) => &["https"],
    };
    let guest_scheme = match fixed {
        None => prop::option::of(scheme()).boxed(),
        Some(Scheme::Http) => prop_oneof![Just(None), Just(Some(Scheme::Http))].boxed(),
        Some(Scheme::Https) => Just(Some(Scheme::Https)).boxed(),
    };
    prop_oneof![
        url(schemes, url_host).prop_map(|u| Backend {
            url: Some(u),
            ..Backend::default()
        }),
        (dns_label(), port(), guest_scheme).prop_map(|(g, p, scheme)| Backend {
            guest: Some(g),
            port: Some(p),
            scheme,
            ..Backend::default()
        }),
    ]
    .boxed()
}

/// `interval` and a shorter `timeout`, in ms or s.
fn health_check() -> BoxedStrategy<HealthCheck> {
    (url_path(), 2u64..600_000)
        .prop_flat_map(|(path, interval)| (Just(path), Just(interval), 1..interval))
        .prop_map(|(path, interval, timeout)| {
            let fmt = |ms: u64| {
                if ms.is_multiple_of(1000) {
                    format!("{}s", ms / 1000)
                } else {
                    format!("{ms}ms")
                }
            };
            HealthCheck {
                path,
                interval: Duration::new(fmt(interval)),
                timeout: Duration::new(fmt(timeout)),
            }
        })
        .boxed()
}

fn mesh_service(
    name: String,
    caddy: bool,
    url_host: BoxedStrategy<String>,
) -> BoxedStrategy<MeshService> {
    let backends = if caddy {
        scheme()
            .prop_flat_map(move |s| {
                prop::collection::vec(mesh_backend(url_host.clone(), Some(s)), 1..4)
            })
            .boxed()
    } else {
        prop::collection::vec(mesh_backend(url_host, None), 1..4).boxed()
    };
    (
        prop::option::of(hostname()),
        url_path(),
        any::<bool>(),
        backends,
        any::<bool>(),
        prop::option::of(dns_label()),
        any::<bool>(),
        prop::option::of(health_check()),
    )
        .prop_map(
            move |(host, path_prefix, strip, backends, tls, secret, pass, health_check)| {
                MeshService {
                    name: name.clone(),
                    host,
                    strip_prefix: strip && path_prefix != "/",
                    path_prefix,
                    backends,
                    tls,
                    tls_secret: if tls { secret } else { None },
                    pass_host_header: pass,
                    health_check,
                }
            },
        )
        .boxed()
}

/// A valid Mesh spec with backend URL hosts from [`url_host`].
pub fn mesh_spec() -> BoxedStrategy<MeshSpec> {
    mesh_spec_with(url_host())
}

/// A valid Mesh spec (Traefik or Caddy) whose backend URLs take their hosts from `url_host`.
pub fn mesh_spec_with(url_host: BoxedStrategy<String>) -> BoxedStrategy<MeshSpec> {
    let names = prop_oneof![
        9 => prop::collection::btree_set(dns_label(), 0..6),
        1 => prop::collection::btree_set(dns_label(), 20..40),
    ];
    (any::<bool>(), names)
        .prop_flat_map(move |(caddy, names)| {
            let services: Vec<_> = names
                .into_iter()
                .map(|n| mesh_service(n, caddy, url_host.clone()))
                .collect();
            let target = if caddy {
                (
                    url(
                        &["http", "https"],
                        prop_oneof![ipv4(), ipv6(), hostname()].boxed(),
                    ),
                    duration(),
                )
                    .prop_map(|(url, grace)| MeshTarget {
                        caddy_admin: Some(CaddyAdminTarget {
                            url,
                            grace_period: Duration::new(&grace),
                        }),
                        ..MeshTarget::default()
                    })
                    .boxed()
            } else {
                prop_oneof![
                    (
                        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}\\.(yaml|yml)",
                        prop::option::of(ssh_target())
                    )
                        .prop_map(|(path, ssh)| MeshTarget {
                            file: Some(FileTarget { path, ssh }),
                            ..MeshTarget::default()
                        }),
                    (
                        ip(),
                        port(),
                        prop::option::of(dns_label()),
                        prop::option::of(dns_label())
                    )
                        .prop_map(|(ip, port, token, tls)| MeshTarget {
                            http: Some(HttpTarget {
                                listen: if ip.contains(':') {
                                    format!("[{ip}]:{port}")
                                } else {
                                    format!("{ip}:{port}")
                                },
                                token_secret_ref: token,
                                tls_secret_ref: tls,
                            }),
                            ..MeshTarget::default()
                        }),
                ]
                .boxed()
            };
            (
                Just(caddy),
                services,
                target,
                // A service's default host is NAME.DOMAIN: leave room for a 63-character name.
                hostname().prop_filter("room for a service name", |d| d.len() <= 253 - 64),
                prop::option::of(dns_label()),
                prop::option::of(dns_label()),
                (
                    prop::option::of(prop_oneof![hostname(), ip()]),
                    two_ports(),
                    scheme(),
                ),
                any::<bool>(),
            )
        })
        .prop_map(
            |(
                caddy,
                services,
                target,
                domain,
                guest,
                ca,
                (host, (port, tls_port), scheme),
                retain,
            )| {
                let needs_guest = host.is_none()
                    || target
                        .file
                        .as_ref()
                        .and_then(|f| f.ssh.as_ref())
                        .is_some_and(|s| s.host.is_none());
                let mut spec = MeshSpec {
                    guest: if needs_guest {
                        guest.or(Some("mesh".into()))
                    } else {
                        guest
                    },
                    provider: if caddy {
                        MeshProvider::Caddy
                    } else {
                        MeshProvider::Traefik
                    },
                    domain,
                    certificate_authority: ca,
                    target,
                    entry_point: EntryPoint {
                        host,
                        port,
                        tls_port,
                        scheme,
                    },
                    services: Vec::new(),
                    deletion_policy: if retain {
                        DeletionPolicy::Retain
                    } else {
                        DeletionPolicy::Delete
                    },
                };
                // One service per host and path prefix.
                let mut seen = BTreeSet::new();
                for s in services {
                    if seen.insert((spec.host_of(&s), s.path_prefix.clone())) {
                        spec.services.push(s);
                    }
                }
                spec
            },
        )
        .boxed()
}

// ---- Stack ------------------------------------------------------------------------------

/// An environment variable name.
pub fn env_name() -> BoxedStrategy<String> {
    prop_oneof![3 => "[A-Z][A-Z0-9_]{0,10}", 1 => "[A-Za-z_][A-Za-z0-9_]{0,30}"].boxed()
}

/// An env value: any text without control characters but tab (quotes, `$`, `;`, unicode).
fn env_value() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[ -~]{0,30}",
        1 => "[ -~\t\u{a0}-\u{2fff}]{0,30}",
        1 => Just("'; rm -rf / #\"$HOME${X}`id`".to_string()),
    ]
    .prop_map(|s: String| {
        s.chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect()
    })
    .boxed()
}

/// Text safe inside a compose string: no `$` but the escape `$$`.
fn compose_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[ -#%-~]{0,20}",
        1 => "[ -#%-~]{0,10}".prop_map(|s| format!("{s}$$HOME")),
    ]
    .boxed()
}

/// A value referring to one of `vars` (or to an unset one with a default).
fn reference(vars: Vec<String>) -> BoxedStrategy<String> {
    let unset = "[A-Z]{1,6}".prop_map(|v| format!("${{PHOENIX_UNSET_{v}:-fallback}}"));
    if vars.is_empty() {
        return unset.boxed();
    }
    let v = prop::sample::select(vars);
    prop_oneof![
        v.clone().prop_map(|v| format!("${{{v}}}")),
        v.clone().prop_map(|v| format!("x-${{{v}:-d}}-y")),
        v.prop_map(|v| format!("${{{v}-}}")),
        unset,
    ]
    .boxed()
}

fn compose_service(vars: Vec<String>, volumes: Vec<String>) -> BoxedStrategy<Value> {
    let image = prop_oneof![
        Just("busybox".to_string()),
        "[a-z0-9]{1,10}(:[a-z0-9._-]{1,10})?",
        "registry\\.example\\.test:5000/[a-z]{1,8}/[a-z0-9]{1,8}:v[0-9]\\.[0-9]",
        "[a-f0-9]{64}".prop_map(|h| format!("alpine@sha256:{h}")),
    ];
    let value = prop_oneof![3 => compose_text(), 1 => reference(vars)];
    let volume = if volumes.is_empty() {
        Just(None).boxed()
    } else {
        prop::option::of(
            (prop::sample::select(volumes), url_path())
                .prop_map(|(v, p)| format!("{v}:{}", if p == "/" { "/data".into() } else { p })),
        )
        .boxed()
    };
    (
        image,
        prop::option::of(prop::collection::vec(value.clone(), 1..4)),
        prop::collection::btree_map(env_name(), value.clone(), 0..4),
        prop::collection::vec((port(), port()), 0..3),
        prop::sample::select(vec![
            "no",
            "always",
            "on-failure",
            "unless-stopped",
            "on-failure:3",
        ]),
        volume,
        prop::collection::btree_map("[a-z][a-z0-9.-]{0,20}", value, 0..3),
        prop::option::of(0u32..5),
        any::<bool>(),
    )
        .prop_map(
            |(image, command, environment, ports, restart, volume, labels, replicas, hc)| {
                let mut s = json!({"image": image, "restart": restart});
                if let Some(c) = command {
                    s["command"] = json!(c);
                }
                if !environment.is_empty() {
                    s["environment"] = json!(environment);
                }
                if !ports.is_empty() {
                    s["ports"] = json!(
                        ports
                            .iter()
                            .map(|(h, c)| format!("127.0.0.1:{h}:{c}"))
                            .collect::<Vec<_>>()
                    );
                }
                if let Some(v) = volume {
                    s["volumes"] = json!([v]);
                }
                if !labels.is_empty() {
                    s["labels"] = json!(labels);
                }
                if let Some(r) = replicas {
                    s["deploy"] = json!({"replicas": r});
                }
                if hc {
                    s["healthcheck"] = json!({"test": ["CMD", "true"], "interval": "10s"});
                }
                s
            },
        )
        .boxed()
}

/// A valid Stack spec: a compose file (YAML or JSON) with 1..4 services whose strings refer to
/// the spec's `env`/`envFrom` variables, and those variables.
pub fn stack_spec() -> BoxedStrategy<StackSpec> {
    let env = prop::collection::btree_map(env_name(), env_value(), 0..4);
    let env_from = prop::collection::btree_map(
        env_name(),
        (dns_label(), "[A-Za-z0-9._-]{1,20}")
            .prop_map(|(secret_ref, key)| SecretKeyRef { secret_ref, key }),
        0..3,
    );
    (env, env_from)
        .prop_flat_map(|(env, mut env_from)| {
            env_from.retain(|k, _| !env.contains_key(k));
            let vars: Vec<String> = env.keys().chain(env_from.keys()).cloned().collect();
            let volumes = prop::collection::btree_set("[a-z][a-z0-9_-]{0,10}", 0..3);
            (Just(env), Just(env_from), Just(vars), volumes)
        })
        .prop_flat_map(|(env, env_from, vars, volumes)| {
            let volumes: Vec<String> = volumes.into_iter().collect();
            let services = prop::collection::btree_map(
                "[a-z0-9][a-z0-9_.-]{0,15}",
                compose_service(vars, volumes.clone()),
                1..4,
            );
            (
                Just(env),
                Just(env_from),
                Just(volumes),
                services,
                any::<bool>(),
                prop::option::of("[a-z0-9][a-z0-9_-]{0,20}"),
                stack_target(),
                prop::option::of(dns_label()),
                any::<bool>(),
            )
        })
        .prop_map(
            |(env, env_from, volumes, services, json_text, project_name, target, guest, rm)| {
                let mut doc = json!({"services": services});
                if !volumes.is_empty() {
                    doc["volumes"] = json!(
                        volumes
                            .iter()
                            .map(|v| (v.clone(), json!({})))
                            .collect::<BTreeMap<_, _>>()
                    );
                }
                let compose = if json_text {
                    serde_json::to_string_pretty(&doc).unwrap()
                } else {
                    to_yaml(&doc)
                };
                let guest = match &target.ssh {
                    Some(s) if s.host.is_none() => guest.or(Some("docker".into())),
                    _ => guest,
                };
                StackSpec {
                    guest,
                    target,
                    compose,
                    env,
                    env_from,
                    project_name,
                    deletion_policy: DeletionPolicy::Delete,
                    remove_volumes: rm,
                }
            },
        )
        .boxed()
}

/// Block YAML of a JSON value, every string double-quoted with JSON escapes (a YAML subset).
fn to_yaml(v: &Value) -> String {
    fn go(v: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, val) in m {
                    out.push_str(&format!("{pad}{}:", Value::String(k.clone())));
                    scalar_or_block(val, indent, out);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for val in a {
                    out.push_str(&format!("{pad}-"));
                    scalar_or_block(val, indent, out);
                }
            }
            other => out.push_str(&format!("{pad}{other}\n")),
        }
    }
    fn scalar_or_block(val: &Value, indent: usize, out: &mut String) {
        match val {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                go(val, indent + 2, out);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                go(val, indent + 2, out);
            }
            other => out.push_str(&format!(" {other}\n")),
        }
    }
    let mut out = String::new();
    go(v, 0, &mut out);
    out
}

fn stack_target() -> BoxedStrategy<StackTarget> {
    prop_oneof![
        ssh_target().prop_map(|s| StackTarget {
            ssh: Some(s),
            docker: None,
        }),
        (
            prop_oneof![
                relative_path().prop_map(|p| format!("unix:///{p}")),
                (prop_oneof![ipv4(), hostname()], port())
                    .prop_map(|(h, p)| format!("tcp://{h}:{p}")),
            ],
            prop::option::of(dns_label())
        )
            .prop_map(|(endpoint, secret_ref)| StackTarget {
                ssh: None,
                docker: Some(DockerTarget {
                    endpoint,
                    secret_ref,
                }),
            }),
    ]
    .boxed()
}

// ---- DnsZone ----------------------------------------------------------------------------

/// A label key (`[prefix/]name`).
pub fn label_key() -> BoxedStrategy<String> {
    (
        prop::option::of(hostname()),
        "[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?",
    )
        .prop_map(|(p, n)| match p {
            Some(p) => format!("{p}/{n}"),
            None => n,
        })
        .boxed()
}

/// A label value (may be empty).
pub fn label_value() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        "[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?"
    ]
    .boxed()
}

fn static_record(zone: String) -> BoxedStrategy<StaticRecord> {
    let z = zone.clone();
    let name = prop_oneof![
        Just("@".to_string()),
        dns_label(),
        (dns_label(), any::<bool>()).prop_map({
            let z = z.clone();
            move |(l, deep)| {
                if deep {
                    format!("*.{l}.{z}")
                } else {
                    format!("*.{z}")
                }
            }
        }),
        (dns_label(), dns_label()).prop_map(move |(a, b)| format!("{a}.{b}.{z}")),
        Just(zone.clone()),
    ]
    .prop_filter("fits in 253 characters", move |n| {
        phoenix_api::kinds::dns_zone::qualify(n, &zone).len() <= 253
    });
    (name, any::<bool>())
        .prop_flat_map(|(name, v6)| {
            let value = if v6 { ipv6() } else { ipv4() };
            (Just(name), Just(v6), value)
        })
        .prop_map(|(name, v6, value)| StaticRecord {
            name,
            type_: if v6 { RecordType::Aaaa } else { RecordType::A },
            value,
        })
        .boxed()
}

/// A valid DnsZone spec.
pub fn dns_zone_spec() -> BoxedStrategy<DnsZoneSpec> {
    hostname()
        .prop_flat_map(|zone| {
            let target = prop_oneof![
                (ip(), port(), dns_label()).prop_map(|(ip, port, tsig)| DnsZoneTarget {
                    rfc2136: Some(Rfc2136Target {
                        server: if ip.contains(':') {
                            format!("[{ip}]:{port}")
                        } else {
                            format!("{ip}:{port}")
                        },
                        tsig_secret_ref: tsig,
                    }),
                    hosts_dir: None,
                }),
                (relative_path(), prop::option::of(ssh_target())).prop_map(|(path, ssh)| {
                    DnsZoneTarget {
                        rfc2136: None,
                        hosts_dir: Some(HostsDirTarget {
                            path,
                            ssh: ssh.map(|mut s| {
                                s.host.get_or_insert_with(|| "10.0.0.53".into());
                                s
                            }),
                        }),
                    }
                }),
            ];
            let ttl = prop_oneof![
                (1u64..=2_147_483_647).prop_map(|s| format!("{s}s")),
                (1u64..=10_000).prop_map(|m| format!("{m}m")),
                Just("5m".to_string()),
            ];
            (
                Just(zone.clone()),
                target,
                ttl,
                prop::collection::vec(dns_label(), 0..3),
                prop::collection::vec(dns_label(), 0..3),
                prop::option::of(prop::collection::btree_map(
                    label_key(),
                    label_value(),
                    0..3,
                )),
                prop::collection::vec(static_record(zone), 0..8),
            )
        })
        .prop_map(
            |(zone, target, ttl, gateways, meshes, selector, static_records)| DnsZoneSpec {
                zone,
                target,
                ttl: Duration::new(&ttl),
                records: DnsRecordSources {
                    gateways,
                    meshes,
                    guests: selector.map(|selector| GuestRecords { selector }),
                    static_records,
                },
                deletion_policy: DeletionPolicy::Delete,
            },
        )
        .boxed()
}

// ---- hostile text -----------------------------------------------------------------------

/// Pieces of YAML and JSON syntax, Phoenix field names and troublesome scalars.
const TOKENS: &[&str] = &[
    "apiVersion: phoenix.thinkheads.ai/v1alpha1\n",
    "kind: Gateway\n",
    "kind: Mesh\n",
    "kind: Stack\n",
    "kind: DnsZone\n",
    "kind: Guest\n",
    "kind: Secret\n",
    "metadata: {name: x}\n",
    "spec:\n",
    "  routes:\n",
    "  - host: a.test\n",
    "    locations: [{path: /, backends: [{url: 'http://10.0.0.1'}]}]\n",
    "  target: {local: {}}\n",
    "---\n",
    "...\n",
    ":",
    ": ",
    "- ",
    "? ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!str ",
    "!!binary ",
    "!custom ",
    "|\n",
    ">-\n",
    "'",
    "\"",
    "\\u0000",
    "#",
    "\n",
    "  ",
    "\t",
    "%YAML 1.2\n",
    "%TAG ! tag:x,2000:\n",
    "0x1F",
    "1e999",
    "-0",
    ".nan",
    "~",
    "null",
    "yes",
    "18446744073709551616",
    "\u{feff}",
    "\u{202e}",
    "\r\n",
    "\0",
];

/// Text made of [`TOKENS`] and random characters.
pub fn hostile_text() -> BoxedStrategy<String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(TOKENS).prop_map(str::to_string),
            1 => any::<char>().prop_map(String::from),
            1 => "[a-zA-Z0-9 ]{1,8}",
        ],
        0..64,
    )
    .prop_map(|v| v.concat())
    .boxed()
}

/// One edit of a text: delete, insert a token, duplicate or swap a byte range.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Delete `len` bytes at the position.
    Delete(prop::sample::Index, usize),
    /// Insert a token at the position.
    Insert(prop::sample::Index, &'static str),
    /// Repeat `len` bytes at the position.
    Duplicate(prop::sample::Index, usize),
    /// Replace the byte at the position.
    Byte(prop::sample::Index, u8),
}

/// `text` with 1..8 random edits (bytes: edits may split a UTF-8 character).
pub fn mutated(text: String) -> BoxedStrategy<Vec<u8>> {
    let edit = prop_oneof![
        (any::<prop::sample::Index>(), 1usize..40).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<prop::sample::Index>(), prop::sample::select(TOKENS))
            .prop_map(|(i, t)| Edit::Insert(i, t)),
        (any::<prop::sample::Index>(), 1usize..80).prop_map(|(i, n)| Edit::Duplicate(i, n)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i, b)),
    ];
    prop::collection::vec(edit, 1..8)
        .prop_map(move |edits| {
            let mut b = text.clone().into_bytes();
            for e in edits {
                let len = b.len().max(1);
                match e {
                    Edit::Delete(i, n) => {
                        let at = i.index(len).min(b.len());
                        let end = (at + n).min(b.len());
                        b.drain(at..end);
                    }
                    Edit::Insert(i, t) => {
                        let at = i.index(len).min(b.len());
                        b.splice(at..at, t.bytes());
                    }
                    Edit::Duplicate(i, n) => {
                        let at = i.index(len).min(b.len());
                        let end = (at + n).min(b.len());
                        let part = b[at..end].to_vec();
                        b.splice(at..at, part);
                    }
                    Edit::Byte(i, v) => {
                        if !b.is_empty() {
                            let at = i.index(b.len());
                            b[at] = v;
                        }
                    }
                }
            }
            b
        })
        .boxed()
}

// ---- string leaves ----------------------------------------------------------------------

/// Every string in `v` as (JSON pointer, Phoenix field path, value); map keys are not
/// leaves. `root` is the path prefix (`spec`).
pub fn string_leaves(v: &Value, root: &str) -> Vec<(String, String, String)> {
    fn go(v: &Value, ptr: String, path: String, out: &mut Vec<(String, String, String)>) {
        match v {
            Value::String(s) => out.push((ptr, path, s.clone())),
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    go(x, format!("{ptr}/{i}"), format!("{path}[{i}]"), out);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    let esc = k.replace('~', "~0").replace('/', "~1");
                    go(x, format!("{ptr}/{esc}"), format!("{path}.{k}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    go(v, String::new(), root.to_string(), &mut out);
    out
}

/// `v` with the string at `pointer` replaced by `value`.
pub fn with_leaf(v: &Value, pointer: &str, value: &str) -> Value {
    let mut v = v.clone();
    if let Some(slot) = v.pointer_mut(pointer) {
        *slot = Value::String(value.to_string());
    }
    v
}

/// An error path as [`string_leaves`] writes paths: map keys `["k"]` become `.k`.
pub fn normalize_path(path: &str) -> String {
    path.replace("[\"", ".").replace("\"]", "")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// No generated host name has a reserved label (hyphens 3rd and 4th, e.g. a random
        /// `xn--` one) other than the valid IDNA ones: CI once drew
        /// `xn---6-49r-v4--uz4m-...`, which admission rightly refused.
        #[test]
        fn host_names_have_no_reserved_labels(host in hostname()) {
            for label in host.split('.') {
                prop_assert!(
                    label.get(2..4) != Some("--") || IDNA.contains(&label),
                    "{host}"
                );
            }
        }
    }

    #[test]
    fn reserved_labels_are_mended() {
        assert_eq!(unreserved("xn---6-49r".into()), "xn-a-6-49r");
        assert_eq!(unreserved("ab--cd".into()), "ab-acd");
        assert_eq!(unreserved("a--b".into()), "a--b");
        assert_eq!(unreserved("ab".into()), "ab");
    }
}
