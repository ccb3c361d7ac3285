//! Rules of the `Mesh` kind.

use super::Validator;
use super::common::{backend, duplicates, exactly_one, unique};
use super::rules;
use crate::decode::quote;
use crate::kinds::mesh::{MeshProvider, MeshSpec};

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
        t.at("file").at("path").check(rules::file_path(&f.path));
        if !(f.path.ends_with(".yaml") || f.path.ends_with(".yml")) {
            t.at("file").at("path").error("must end in .yaml or .yml");
        }
    }
    if let Some(h) = &s.target.http {
        t.at("http")
            .at("listen")
            .check(rules::listen_address(&h.listen));
    }
    if let Some(c) = &s.target.caddy_admin {
        t.at("caddyAdmin")
            .at("url")
            .check(rules::url(&c.url, &["http", "https"], true));
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
        if svc.backends.is_empty() {
            sv.at("backends").error("must have at least one backend");
        }
        for (k, b) in svc.backends.iter().enumerate() {
            backend(b, false, &mut sv.at("backends").idx(k));
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
        s.services.iter().enumerate().map(|(i, x)| {
            let host = x.host.as_deref().unwrap_or_default();
            (i, format!("{host}{}", x.path_prefix))
        }),
        |i, _| {
            format!(
                "{} with this pathPrefix is already routed by another service",
                quote(s.services[i].host.as_deref().unwrap_or_default())
            )
        },
    );
}
