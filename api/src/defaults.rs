//! Defaults that depend on the object itself, applied in this one place by admission.
//!
//! Defaults that are constants live on the types (`#[serde(default)]`), so that the JSON
//! schema and `phoenixctl explain` show them; this module fills in the rest:
//! `Guest.spec.hostname` = `metadata.name`, `Mesh.spec.services[].host` = `NAME.DOMAIN`,
//! `Stack.spec.projectName` = `metadata.name`, `GitSync.spec.retryInterval` =
//! `interval`, `CertificateAuthority.spec.certificates[].secretName`
//! = `cert-NAME`, a guest backend's `scheme` = `http`, and `Secret.stringData` merged into
//! `data`.

use base64::Engine;

use crate::kinds::common::{Backend, Scheme};
use crate::resource::Object;

/// Fills in every object-dependent default. Idempotent.
pub fn apply(object: &mut Object) {
    match object {
        Object::Guest(g) => {
            if g.spec.hostname.is_none() {
                g.spec.hostname = Some(g.metadata.name.clone());
            }
        }
        Object::Gateway(gw) => {
            for route in &mut gw.spec.routes {
                for location in &mut route.locations {
                    location.backends.iter_mut().for_each(default_backend);
                }
            }
        }
        Object::Mesh(m) => {
            for service in &mut m.spec.services {
                if service.host.is_none() {
                    service.host = Some(format!("{}.{}", service.name, m.spec.domain));
                }
                service.backends.iter_mut().for_each(default_backend);
            }
        }
        Object::CertificateAuthority(ca) => {
            for cert in &mut ca.spec.certificates {
                if cert.secret_name.is_none() {
                    cert.secret_name = Some(format!("cert-{}", cert.name));
                }
            }
        }
        Object::Stack(s) => {
            if s.spec.project_name.is_none() {
                s.spec.project_name = Some(s.metadata.name.clone());
            }
        }
        Object::Secret(s) => {
            for (k, v) in std::mem::take(&mut s.string_data) {
                s.data
                    .insert(k, base64::engine::general_purpose::STANDARD.encode(v));
            }
        }
        Object::GitSync(g) => {
            if g.spec.retry_interval.is_none() {
                g.spec.retry_interval = Some(g.spec.interval.clone());
            }
        }
        Object::DnsZone(_) | Object::Event(_) => {}
    }
}

fn default_backend(b: &mut Backend) {
    if b.guest.is_some() && b.scheme.is_none() {
        b.scheme = Some(Scheme::Http);
    }
}
