//! What to issue and when: the wanted certificates of a CertificateAuthority (its own requests,
//! then the `tls` hosts of the Gateways and Meshes that name it), what an issued certificate
//! holds, when it is due, and the per-certificate backoff. Pure functions.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use phoenix_api::kinds::{CertificateAuthority, Gateway, Mesh};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

/// A certificate to keep issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Name in `status.certificates`.
    pub name: String,
    /// Host names, in request order.
    pub dns_names: Vec<String>,
    /// The Secret (type `tls`) that holds it.
    pub secret: String,
}

/// A DNS label made of `prefix` and `text`: readable when it fits in 63 characters, else
/// shortened with a hash of `text` so that distinct texts stay distinct.
pub fn label(prefix: &str, text: &str) -> String {
    let slug: String = text
        .replace("*.", "wildcard.")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let full = format!("{prefix}{slug}");
    let full = full.trim_matches('-');
    if full.len() <= 63 {
        return full.to_string();
    }
    let hash = hex::encode(&Sha256::digest(text.as_bytes())[..4]);
    let mut short = full[..63 - 1 - hash.len()].to_string();
    while short.ends_with('-') {
        short.pop();
    }
    format!("{short}-{hash}")
}

/// The Secret of a request without `secretName`: `cert-NAME`.
pub fn secret_of(name: &str) -> String {
    label("cert-", name)
}

/// The Secret that keeps the ACME account of `ca`.
pub fn account_secret(ca: &str) -> String {
    label("", &format!("{ca}-acme-account"))
}

/// Every certificate `ca` must keep issued: `spec.certificates` in order, then one per `tls`
/// route host (without `tlsSecret`) of the Gateways naming it, then one per `tls` service
/// host of the Meshes naming it; a host already covered is not requested twice.
pub fn wanted(
    ca: &CertificateAuthority,
    gateways: &[Arc<Gateway>],
    meshes: &[Arc<Mesh>],
) -> Vec<Wanted> {
    let me = ca.metadata.name.as_str();
    let mut out: Vec<Wanted> = ca
        .spec
        .certificates
        .iter()
        .map(|r| Wanted {
            name: r.name.clone(),
            dns_names: r.dns_names.clone(),
            secret: r.secret_name.clone().unwrap_or_else(|| secret_of(&r.name)),
        })
        .collect();
    let mut covered: BTreeSet<String> = out
        .iter()
        .flat_map(|w| w.dns_names.iter().cloned())
        .collect();
    let mut hosts = Vec::new();
    let mut gateways: Vec<&Arc<Gateway>> = gateways
        .iter()
        .filter(|g| g.spec.certificate_authority.as_deref() == Some(me))
        .collect();
    gateways.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for g in gateways {
        for r in &g.spec.routes {
            if r.tls && r.tls_secret.is_none() {
                hosts.push(r.host.clone());
            }
        }
    }
    let mut meshes: Vec<&Arc<Mesh>> = meshes
        .iter()
        .filter(|m| m.spec.certificate_authority.as_deref() == Some(me))
        .collect();
    meshes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for m in meshes {
        for s in &m.spec.services {
            if s.tls {
                hosts.push(
                    s.host
                        .clone()
                        .unwrap_or_else(|| format!("{}.{}", s.name, m.spec.domain)),
                );
            }
        }
    }
    let mut names: BTreeSet<String> = out.iter().map(|w| w.name.clone()).collect();
    for host in hosts {
        if !covered.insert(host.clone()) {
            continue;
        }
        let mut name = label("", &host);
        if names.contains(&name) {
            name = label(
                "",
                &format!(
                    "{host}-{}",
                    hex::encode(&Sha256::digest(host.as_bytes())[..2])
                ),
            );
        }
        names.insert(name.clone());
        out.push(Wanted {
            secret: secret_of(&name),
            name,
            dns_names: vec![host],
        });
    }
    out
}

/// What an issued certificate (the leaf of a `tls.crt`) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
    /// Its DNS subject alternative names.
    pub dns_names: Vec<String>,
}

/// Reads the first certificate of a PEM chain.
///
/// # Errors
/// No PEM certificate, or one that does not parse.
pub fn parse_leaf(chain_pem: &str) -> Result<Leaf, String> {
    let der = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or("no PEM certificate")?
        .map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let ts = |t: i64| Timestamp::from_second(t).map_err(|e| e.to_string());
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                dns_names.push(d.to_string());
            }
        }
    }
    Ok(Leaf {
        serial: hex::encode(cert.raw_serial()),
        not_before: ts(cert.validity().not_before.timestamp())?,
        not_after: ts(cert.validity().not_after.timestamp())?,
        dns_names,
    })
}

/// Why a certificate is (re)issued; cert-manager's reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Never issued (or its Secret is gone or unreadable).
    DoesNotExist,
    /// The requested names differ from the issued certificate's.
    RequestChanged,
    /// Past `notAfter`.
    Expired,
    /// At or past its renewal time.
    Renewing,
}

impl Reason {
    /// The condition reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DoesNotExist => "DoesNotExist",
            Reason::RequestChanged => "RequestChanged",
            Reason::Expired => "Expired",
            Reason::Renewing => "Renewing",
        }
    }
}

/// When `leaf` renews: `renew_before` ahead of `notAfter` (a third of the lifetime when
/// unset or not shorter than the lifetime), minus a jitter of up to 2% of the lifetime (at
/// most 5 minutes) derived from the serial, so that certificates issued together spread out
/// and the time stays the same on every reconcile.
pub fn renewal_time(leaf: &Leaf, renew_before: Option<Duration>) -> Timestamp {
    let lifetime = leaf.not_after.duration_since(leaf.not_before);
    let lifetime = if lifetime.is_negative() {
        SignedDuration::ZERO
    } else {
        lifetime
    };
    let before = match renew_before.and_then(|d| SignedDuration::try_from(d).ok()) {
        Some(d) if d < lifetime => d,
        _ => lifetime / 3,
    };
    let window = (lifetime / 50).min(SignedDuration::from_mins(5));
    let spread = u64::from_be_bytes(
        Sha256::digest(leaf.serial.as_bytes())[..8]
            .try_into()
            .unwrap(),
    );
    let jitter = window.mul_f64((spread % 1000) as f64 / 1000.0);
    leaf.not_after - before - jitter
}

/// Whether a certificate must be issued now, given what its Secret holds.
pub fn due(
    wanted: &Wanted,
    leaf: Option<&Leaf>,
    renewal: Option<Timestamp>,
    now: Timestamp,
) -> Option<Reason> {
    let Some(leaf) = leaf else {
        return Some(Reason::DoesNotExist);
    };
    let want: BTreeSet<&str> = wanted.dns_names.iter().map(String::as_str).collect();
    let have: BTreeSet<&str> = leaf.dns_names.iter().map(String::as_str).collect();
    if want != have {
        return Some(Reason::RequestChanged);
    }
    if now >= leaf.not_after {
        return Some(Reason::Expired);
    }
    if renewal.is_some_and(|r| now >= r) {
        return Some(Reason::Renewing);
    }
    None
}

/// cert-manager's backoff: `base × 2^(failures-1)`, capped at `max`; zero without failures.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(31));
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(serial: &str, from: i64, to: i64, names: &[&str]) -> Leaf {
        Leaf {
            serial: serial.into(),
            not_before: Timestamp::from_second(from).unwrap(),
            not_after: Timestamp::from_second(to).unwrap(),
            dns_names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn object<T: serde::de::DeserializeOwned>(
        kind: &str,
        name: &str,
        spec: serde_json::Value,
    ) -> Arc<T> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "phoenix.thinkheads.ai/v1alpha1", "kind": kind,
                "metadata": {"name": name}, "spec": spec,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn gateway_and_mesh_hosts_are_wanted_once_each_after_the_own_requests() {
        let ca: Arc<CertificateAuthority> = object(
            "CertificateAuthority",
            "step",
            serde_json::json!({
                "acme": {"directoryUrl": "https://ca.test/dir"},
                "challenge": {"http01": {"listen": "127.0.0.1:80"}},
                "certificates": [{"name": "own", "dnsNames": ["a.test"], "secretName": "mine"}],
            }),
        );
        let route = |host: &str, tls: bool, secret: Option<&str>| {
            serde_json::json!({
                "host": host, "tls": tls, "tlsSecret": secret,
                "locations": [{"path": "/", "backends": [{"url": "http://127.0.0.1:1"}]}],
            })
        };
        let gw = |name: &str, ca: &str, routes: Vec<serde_json::Value>| -> Arc<Gateway> {
            object(
                "Gateway",
                name,
                serde_json::json!({
                    "target": {"local": {"configDir": "/tmp"}}, "certificateAuthority": ca, "routes": routes,
                }),
            )
        };
        let gateways = vec![
            gw(
                "z",
                "step",
                vec![route("b.test", true, None), route("a.test", true, None)],
            ),
            gw(
                "y",
                "step",
                vec![
                    route("c.test", false, None),
                    route("d.test", true, Some("own-secret")),
                ],
            ),
            gw("x", "other", vec![route("e.test", true, None)]),
        ];
        let mesh: Arc<Mesh> = object(
            "Mesh",
            "internal",
            serde_json::json!({
                "provider": "traefik", "domain": "internal.test", "certificateAuthority": "step",
                "target": {"file": {"path": "phoenix.yaml"}},
                "services": [
                    {"name": "portainer", "backends": [{"url": "http://127.0.0.1:2"}], "tls": true},
                    {"name": "plain", "backends": [{"url": "http://127.0.0.1:3"}]},
                    {"name": "dup", "host": "b.test", "backends": [{"url": "http://127.0.0.1:4"}], "tls": true},
                ],
            }),
        );
        let got: Vec<(String, Vec<String>, String)> = wanted(&ca, &gateways, &[mesh])
            .into_iter()
            .map(|w| (w.name, w.dns_names, w.secret))
            .collect();
        let s = |v: &str| v.to_string();
        assert_eq!(
            got,
            [
                (s("own"), vec![s("a.test")], s("mine")),
                (s("b-test"), vec![s("b.test")], s("cert-b-test")),
                (
                    s("portainer-internal-test"),
                    vec![s("portainer.internal.test")],
                    s("cert-portainer-internal-test")
                ),
            ]
        );
    }

    #[test]
    fn labels_fit_and_stay_distinct() {
        assert_eq!(
            label("", "api.phoenix.thinkheads.ai"),
            "api-phoenix-thinkheads-ai"
        );
        assert_eq!(label("cert-", "*.x.test"), "cert-wildcard-x-test");
        let a = label("cert-", &format!("{}.a", "b".repeat(80)));
        let b = label("cert-", &format!("{}.c", "b".repeat(80)));
        assert!(a.len() <= 63 && b.len() <= 63 && a != b, "{a} {b}");
        for n in [a, b, account_secret(&"x".repeat(63))] {
            phoenix_api::validation::rules::dns_label(&n).unwrap();
        }
    }

    #[test]
    fn renewal_defaults_to_a_third_of_the_lifetime_with_a_small_stable_jitter() {
        let l = leaf("0a", 0, 90 * 86400, &["a"]);
        let r = renewal_time(&l, None);
        let third = Timestamp::from_second(60 * 86400).unwrap();
        assert!(
            r <= third && third.duration_since(r) <= SignedDuration::from_mins(5),
            "{r}"
        );
        assert_eq!(r, renewal_time(&l, None), "stable");
        // Distinct serials spread out.
        let times: BTreeSet<Timestamp> = (0..50)
            .map(|i| renewal_time(&leaf(&format!("{i:x}"), 0, 120, &["a"]), None))
            .collect();
        assert!(times.len() > 10, "{times:?}");
        // renewBefore shorter than the lifetime is used; longer falls back to a third.
        let r8 = renewal_time(&l, Some(Duration::from_secs(8 * 3600)));
        assert!(r8 > third);
        assert_eq!(renewal_time(&l, Some(Duration::from_secs(365 * 86400))), r);
    }

    #[test]
    fn due_names_the_reason() {
        let w = Wanted {
            name: "a".into(),
            dns_names: vec!["a.test".into(), "b.test".into()],
            secret: "cert-a".into(),
        };
        let t = |s| Timestamp::from_second(s).unwrap();
        assert_eq!(due(&w, None, None, t(0)), Some(Reason::DoesNotExist));
        let l = leaf("1", 0, 100, &["b.test", "a.test"]);
        assert_eq!(due(&w, Some(&l), Some(t(60)), t(10)), None);
        assert_eq!(
            due(&w, Some(&l), Some(t(60)), t(60)),
            Some(Reason::Renewing)
        );
        assert_eq!(
            due(&w, Some(&l), Some(t(60)), t(100)),
            Some(Reason::Expired)
        );
        let other = leaf("1", 0, 100, &["a.test"]);
        assert_eq!(
            due(&w, Some(&other), Some(t(60)), t(10)),
            Some(Reason::RequestChanged)
        );
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let h = Duration::from_secs(3600);
        let max = Duration::from_secs(32 * 3600);
        let got: Vec<u64> = (0..9)
            .map(|n| backoff(n, h, max).as_secs() / 3600)
            .collect();
        assert_eq!(got, [0, 1, 2, 4, 8, 16, 32, 32, 32]);
        assert_eq!(backoff(u32::MAX, h, max), max);
    }
}
