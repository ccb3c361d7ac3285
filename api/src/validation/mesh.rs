//! Rules of the `Mesh` kind.

use super::Validator;
use super::common::{backend, duplicates, exactly_one, one_scheme, ssh_target, unique};
use super::rules::{self, Check};
use crate::decode::quote;
use crate::kinds::mesh::{MeshProvider, MeshSpec};

/// The `file` target's path: a file name under the operator's `--mesh-file-root` (ADR 0021).
/// One component of `A-Za-z0-9._-` (Traefik's watcher misses files in subdirectories), not
/// `.` or `..`, ending in `.yaml` or `.yml`.
fn file_name(s: &str) -> Check {
    if s.starts_with('/') {
        return Err(format!(
            "{} is an absolute path; the directory belongs to the operator: name a file relative to the controller's --mesh-file-root (ADR 0021)",
            quote(s)
        ));
    }
    if s.contains('/') {
        return Err(format!(
            "{} has a directory part; name a file directly in --mesh-file-root (Traefik's watcher misses files in subdirectories)",
            quote(s)
        ));
    }
    rules::relative_path(s)?;
    rules::ensure(s.len() <= 255, s, "is longer than a file name can be (255)")?;
    rules::ensure(
        s.ends_with(".yaml") || s.ends_with(".yml"),
        s,
        "must end in .yaml or .yml",
    )
}

pub(super) fn mesh(s: &MeshSpec, v: &mut Validator<'_>) {
    v.opt("guest", s.guest.as_deref(), rules::dns_label);
    v.at("domain").check(rules::hostname(&s.domain));
    v.opt(
        "certificateAuthority",
        s.certificate_authority.as_deref(),
        rules::dns_label,
    );
    let mut t = v.at("target");
    exactly_one(
        &mut t,
        &[
            ("file", s.target.file.is_some()),
            ("http", s.target.http.is_some()),
            ("caddyAdmin", s.target.caddy_admin.is_some()),
        ],
    );
    if let Some(f) = &s.target.file {
        let mut fv = t.at("file");
        fv.at("path").check(file_name(&f.path));
        if let Some(ssh) = &f.ssh {
            ssh_target(ssh, s.guest.as_deref(), &mut fv.at("ssh"));
        }
    }
    if let Some(h) = &s.target.http {
        let mut hv = t.at("http");
        hv.at("listen").check(rules::listen_address(&h.listen));
        hv.opt(
            "tokenSecretRef",
            h.token_secret_ref.as_deref(),
            rules::dns_label,
        );
        hv.opt(
            "tlsSecretRef",
            h.tls_secret_ref.as_deref(),
            rules::dns_label,
        );
    }
    if let Some(c) = &s.target.caddy_admin {
        let mut cv = t.at("caddyAdmin");
        cv.at("url")
            .check(rules::url(&c.url, &["http", "https"], true));
        cv.at("gracePeriod")
            .check(rules::duration(&c.grace_period.0));
    }
    match s.provider {
        MeshProvider::Traefik if s.target.caddy_admin.is_some() => {
            t.at("caddyAdmin").error("needs provider: caddy")
        }
        MeshProvider::Caddy if s.target.file.is_some() || s.target.http.is_some() => {
            t.error("provider caddy needs target caddyAdmin")
        }
        _ => {}
    }
    let mut ev = v.at("entryPoint");
    ev.opt("host", s.entry_point.host.as_deref(), rules::host);
    ev.at("port").check(rules::port(s.entry_point.port));
    ev.at("tlsPort").check(rules::port(s.entry_point.tls_port));
    if s.entry_point.port == s.entry_point.tls_port {
        ev.at("tlsPort").error("must differ from port");
    }
    if s.entry_point.host.is_none() && s.guest.is_none() {
        ev.at("host")
            .error("is required when spec.guest is not set");
    }
    for (i, svc) in s.services.iter().enumerate() {
        let mut l = v.at("services");
        let mut sv = l.idx(i);
        sv.at("name").check(rules::dns_label(&svc.name));
        sv.opt("host", svc.host.as_deref(), rules::hostname);
        sv.at("pathPrefix").check(rules::url_path(&svc.path_prefix));
        sv.opt("tlsSecret", svc.tls_secret.as_deref(), rules::dns_label);
        if svc.tls_secret.is_some() && !svc.tls {
            sv.at("tlsSecret").error("needs tls: true");
        }
        if svc.strip_prefix && svc.path_prefix == "/" {
            sv.at("stripPrefix")
                .error("needs a pathPrefix other than /");
        }
        if let Some(h) = &svc.health_check {
            let mut hv = sv.at("healthCheck");
            hv.at("path").check(rules::url_path(&h.path));
            hv.at("interval").check(rules::duration(&h.interval.0));
            hv.at("timeout").check(rules::duration(&h.timeout.0));
            if let (Ok(i), Ok(t)) = (h.interval.parse(), h.timeout.parse())
                && t >= i
            {
                hv.at("timeout").error("must be shorter than interval");
            }
        }
        if svc.backends.is_empty() {
            sv.at("backends").error("must have at least one backend");
        }
        if s.provider == MeshProvider::Caddy {
            one_scheme(&svc.backends, &mut sv.at("backends"));
        }
        for (k, b) in svc.backends.iter().enumerate() {
            let mut bv = sv.at("backends");
            let mut bv = bv.idx(k);
            backend(b, false, &mut bv);
            if b.weight.is_some() {
                bv.at("weight").error(
                    "is only allowed in Gateway backends (mesh backends share load equally)",
                );
            }
        }
    }
    unique(
        v,
        "services",
        "name",
        s.services.iter().map(|x| x.name.as_str()),
    );
    duplicates(
        v,
        "services",
        "host",
        s.services
            .iter()
            .enumerate()
            .map(|(i, x)| (i, (s.host_of(x), x.path_prefix.clone()))),
        |i, _| {
            format!(
                "{} with this pathPrefix is already routed by another service",
                quote(&s.host_of(&s.services[i]))
            )
        },
    );
}
