//! Rules of the `CertificateAuthority` kind.

use super::Validator;
use super::common::{duplicates, exactly_one, unique};
use super::rules;
use crate::kinds::certificate_authority::CertificateAuthoritySpec;

pub(super) fn certificate_authority(s: &CertificateAuthoritySpec, v: &mut Validator<'_>) {
    v.opt("guest", s.guest.as_deref(), rules::dns_label);
    let mut a = v.at("acme");
    a.at("directoryUrl")
        .check(rules::url(&s.acme.directory_url, &["https"], false));
    a.opt("caBundle", s.acme.ca_bundle.as_deref(), |p| {
        rules::pem(p, &["CERTIFICATE"])
    });
    a.opt("email", s.acme.email.as_deref(), rules::email);
    a.opt(
        "externalAccountSecretRef",
        s.acme.external_account_secret_ref.as_deref(),
        rules::dns_label,
    );
    let mut c = v.at("challenge");
    exactly_one(
        &mut c,
        &[
            ("http01", s.challenge.http01.is_some()),
            ("tlsAlpn01", s.challenge.tls_alpn01.is_some()),
            ("dns01", s.challenge.dns01.is_some()),
        ],
    );
    if let Some(h) = &s.challenge.http01 {
        c.at("http01")
            .at("listen")
            .check(rules::listen_address(&h.listen));
    }
    if let Some(h) = &s.challenge.tls_alpn01 {
        c.at("tlsAlpn01")
            .at("listen")
            .check(rules::listen_address(&h.listen));
    }
    if let Some(d) = &s.challenge.dns01 {
        let mut dv = c.at("dns01");
        dv.at("nameserver").check(rules::host_port(&d.nameserver));
        dv.at("zone").check(rules::hostname(&d.zone));
        match d.tsig_secret_ref.as_deref() {
            Some(r) => dv.at("tsigSecretRef").check(rules::dns_label(r)),
            None => dv
                .at("tsigSecretRef")
                .error("required: RFC 2136 updates are signed with a TSIG key"),
        }
    }
    let zone = s
        .challenge
        .dns01
        .as_ref()
        .map(|d| d.zone.trim_end_matches('.').to_ascii_lowercase());
    v.opt("renewBefore", s.renew_before.as_ref(), |d| {
        rules::duration(&d.0)
    });
    for (i, cert) in s.certificates.iter().enumerate() {
        let mut l = v.at("certificates");
        let mut cv = l.idx(i);
        cv.at("name").check(rules::dns_label(&cert.name));
        if cert.dns_names.is_empty() {
            cv.at("dnsNames").error("must list at least one name");
        }
        for (k, n) in cert.dns_names.iter().enumerate() {
            cv.at("dnsNames")
                .idx(k)
                .check(rules::hostname_or_wildcard(n));
            let base = n.strip_prefix("*.").unwrap_or(n).to_ascii_lowercase();
            match &zone {
                // ACME servers offer only dns-01 for a wildcard (RFC 8555 §7.1.3).
                None if n.starts_with("*.") => cv.at("dnsNames").idx(k).error(format!(
                    "{} is a wildcard, which only challenge.dns01 can prove",
                    crate::decode::quote(n)
                )),
                Some(z) if base != *z && !base.ends_with(&format!(".{z}")) => {
                    cv.at("dnsNames").idx(k).error(format!(
                        "{} is not in spec.challenge.dns01.zone {}",
                        crate::decode::quote(n),
                        crate::decode::quote(z)
                    ))
                }
                _ => {}
            }
            if cert.dns_names[..k].contains(n) {
                cv.at("dnsNames")
                    .idx(k)
                    .error(format!("{} is a duplicate", crate::decode::quote(n)));
            }
        }
        cv.opt("secretName", cert.secret_name.as_deref(), rules::dns_label);
    }
    unique(
        v,
        "certificates",
        "name",
        s.certificates.iter().map(|c| c.name.as_str()),
    );
    // Two requests in one Secret would overwrite each other's certificate on every issuance.
    duplicates(
        v,
        "certificates",
        "secretName",
        s.certificates.iter().enumerate().map(|(i, c)| {
            (
                i,
                c.secret_name
                    .clone()
                    .unwrap_or_else(|| format!("cert-{}", c.name)),
            )
        }),
        |_, secret| {
            format!(
                "Secret {} already receives another request's certificate",
                crate::decode::quote(secret)
            )
        },
    );
}
