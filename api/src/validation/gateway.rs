//! Rules of the `Gateway` kind.

use std::collections::{BTreeMap, BTreeSet};

use super::Validator;
use super::common::{backend, exactly_one, in_range, one_scheme, ssh_target, unique};
use super::rules;
use crate::decode::quote;
use crate::kinds::gateway::{GatewaySpec, NginxRuntime};

/// The operator's flags that replace fields a spec may no longer set (ADR 0021), per target.
struct OperatorFlags {
    binary: &'static str,
    root: &'static str,
}

const LOCAL_FLAGS: OperatorFlags = OperatorFlags {
    binary: "--gateway-nginx-binary",
    root: "--gateway-config-root",
};
const SSH_FLAGS: OperatorFlags = OperatorFlags {
    binary: "--gateway-ssh-nginx-binary",
    root: "--gateway-ssh-config-root",
};

/// Executables and roots belong to the operator: `configDir` is a relative path under the
/// root flag; `nginxBinary` and `runtime` are refused with the flag to use instead.
fn operator_owned(
    config_dir: Option<&str>,
    nginx_binary: Option<&str>,
    runtime: Option<&NginxRuntime>,
    flags: &OperatorFlags,
    v: &mut Validator<'_>,
) {
    if let Some(d) = config_dir {
        if d.starts_with('/') {
            v.at("configDir").error(format!(
                "{} is an absolute directory; the root is the operator's ({}), a Gateway names at most a relative sub-directory of it (ADR 0021)",
                quote(d),
                flags.root
            ));
        } else {
            v.at("configDir").check(rules::relative_path(d));
        }
    }
    if nginx_binary.is_some() {
        v.at("nginxBinary").error(format!(
            "is not a Gateway field any more: the nginx binary is the operator's ({}; ADR 0021)",
            flags.binary
        ));
    }
    if runtime.is_some() {
        v.at("runtime").error(
            "is not a Gateway field any more: nginx's run-time paths are the operator's (--gateway-runtime-dir, --gateway-nginx-user; ADR 0021)",
        );
    }
}

pub(super) fn gateway(s: &GatewaySpec, v: &mut Validator<'_>) {
    v.opt("guest", s.guest.as_deref(), rules::dns_label);
    let mut t = v.at("target");
    exactly_one(
        &mut t,
        &[
            ("local", s.target.local.is_some()),
            ("ssh", s.target.ssh.is_some()),
        ],
    );
    if let Some(l) = &s.target.local {
        operator_owned(
            l.config_dir.as_deref(),
            l.nginx_binary.as_deref(),
            l.runtime.as_ref(),
            &LOCAL_FLAGS,
            &mut t.at("local"),
        );
    }
    if let Some(ssh) = &s.target.ssh {
        let mut sv = t.at("ssh");
        ssh_target(&ssh.ssh(), s.guest.as_deref(), &mut sv);
        operator_owned(
            ssh.config_dir.as_deref(),
            ssh.nginx_binary.as_deref(),
            ssh.runtime.as_ref(),
            &SSH_FLAGS,
            &mut sv,
        );
    }
    let mut lv = v.at("listen");
    lv.at("address").check(rules::ip(&s.listen.address));
    lv.at("httpPort").check(rules::port(s.listen.http_port));
    lv.at("httpsPort").check(rules::port(s.listen.https_port));
    if s.listen.http_port == s.listen.https_port {
        lv.at("httpsPort").error("must differ from httpPort");
    }
    if let Some(h) = &s.security_headers {
        let mut hv = v.at("securityHeaders");
        hv.opt(
            "contentSecurityPolicy",
            h.content_security_policy.as_deref(),
            rules::config_quoted,
        );
        hv.opt(
            "referrerPolicy",
            h.referrer_policy.as_deref(),
            rules::referrer_policy,
        );
    }
    v.opt(
        "certificateAuthority",
        s.certificate_authority.as_deref(),
        rules::dns_label,
    );
    for (i, r) in s.rate_limits.iter().enumerate() {
        let mut l = v.at("rateLimits");
        let mut rv = l.idx(i);
        rv.at("name").check(rules::dns_label(&r.name));
        in_range(
            &mut rv,
            "requestsPerSecond",
            Some(r.requests_per_second.into()),
            1,
            100_000,
        );
        in_range(&mut rv, "burst", Some(r.burst.into()), 0, 100_000);
        in_range(
            &mut rv,
            "zoneSizeMiB",
            Some(r.zone_size_mib.into()),
            1,
            1024,
        );
    }
    unique(
        v,
        "rateLimits",
        "name",
        s.rate_limits.iter().map(|r| r.name.as_str()),
    );
    for (i, c) in s.caches.iter().enumerate() {
        let mut l = v.at("caches");
        let mut cv = l.idx(i);
        cv.at("name").check(rules::dns_label(&c.name));
        in_range(&mut cv, "sizeMiB", Some(c.size_mib.into()), 1, 1024 * 1024);
        cv.at("inactive").check(rules::duration(&c.inactive.0));
        cv.at("valid").check(rules::duration(&c.valid.0));
    }
    unique(
        v,
        "caches",
        "name",
        s.caches.iter().map(|c| c.name.as_str()),
    );
    let zones: BTreeSet<&str> = s.rate_limits.iter().map(|r| r.name.as_str()).collect();
    let caches: BTreeSet<&str> = s.caches.iter().map(|c| c.name.as_str()).collect();
    for (i, r) in s.routes.iter().enumerate() {
        let mut l = v.at("routes");
        let mut rv = l.idx(i);
        rv.at("host").check(rules::hostname_or_wildcard(&r.host));
        rv.opt("tlsSecret", r.tls_secret.as_deref(), rules::dns_label);
        if r.tls_secret.is_some() && !r.tls {
            rv.at("tlsSecret").error("needs tls: true");
        }
        if r.redirect_http && !r.tls {
            rv.at("redirectHttp").error("needs tls: true");
        }
        if r.locations.is_empty() {
            rv.at("locations").error("must have at least one location");
        }
        for (j, loc) in r.locations.iter().enumerate() {
            let mut l = rv.at("locations");
            let mut lv = l.idx(j);
            lv.at("path").check(rules::url_path(&loc.path));
            if loc.backends.is_empty() {
                lv.at("backends").error("must have at least one backend");
            }
            for (k, b) in loc.backends.iter().enumerate() {
                backend(b, true, &mut lv.at("backends").idx(k));
            }
            one_scheme(&loc.backends, &mut lv.at("backends"));
            if let Some(z) = &loc.rate_limit
                && !zones.contains(z.as_str())
            {
                lv.at("rateLimit")
                    .error(format!("{} is not a name in spec.rateLimits", quote(z)));
            }
            if let Some(c) = &loc.cache
                && !caches.contains(c.as_str())
            {
                lv.at("cache")
                    .error(format!("{} is not a name in spec.caches", quote(c)));
            }
            for (k, a) in loc.allow.iter().enumerate() {
                lv.at("allow").idx(k).check(rules::ip_or_cidr(a));
            }
            for (k, a) in loc.deny.iter().enumerate() {
                lv.at("deny").idx(k).check(rules::ip_or_cidr(a));
            }
            headers(&loc.set_headers, &mut lv.at("setHeaders"));
        }
        unique(
            &mut rv,
            "locations",
            "path",
            r.locations.iter().map(|l| l.path.as_str()),
        );
    }
    unique(
        v,
        "routes",
        "host",
        s.routes.iter().map(|r| r.host.as_str()),
    );
}

fn headers(h: &BTreeMap<String, String>, v: &mut Validator<'_>) {
    for (k, val) in h {
        let mut e = v.key(k);
        e.check(rules::header_name(k));
        e.check(rules::config_quoted(val));
    }
}
