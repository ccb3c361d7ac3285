//! Rules of the `Secret` kind. Never echo a value: it is secret.

use base64::Engine;

use super::Validator;
use super::rules;
use crate::kinds::secret::{Secret, SecretType};

pub(super) fn secret(s: &Secret, v: &mut Validator<'_>) {
    let engine = base64::engine::general_purpose::STANDARD;
    for (k, val) in &s.data {
        let mut parent = v.at("data");
        let mut e = parent.key(k);
        let ok = !k.is_empty()
            && k.len() <= 253
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            e.error("is not a valid key (letters, digits, '.', '_', '-')");
        }
        // Never echo the value: it is secret.
        if engine.decode(val.as_bytes()).is_err() {
            e.error("is not valid base64");
        }
    }
    for key in s.type_.required_keys() {
        if !s.data.contains_key(*key) {
            v.at("data").key(key).error(format!(
                "is required for a Secret of type {}",
                serde_json::to_string(&s.type_).unwrap_or_default()
            ));
        }
    }
    let pem_of = |key: &str| {
        s.data
            .get(key)
            .and_then(|b| engine.decode(b.as_bytes()).ok())
            .and_then(|b| String::from_utf8(b).ok())
    };
    if s.type_ == SecretType::Tls {
        if let Some(crt) = pem_of("tls.crt")
            && rules::pem(&crt, &["CERTIFICATE"]).is_err()
        {
            v.at("data")
                .key("tls.crt")
                .error("is not a PEM certificate");
        }
        if let Some(key) = pem_of("tls.key")
            && rules::pem(&key, &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"]).is_err()
        {
            v.at("data")
                .key("tls.key")
                .error("is not a PEM private key");
        }
    }
    if s.type_ == SecretType::Ssh
        && let Some(key) = pem_of("ssh-privatekey")
        && rules::pem(
            &key,
            &[
                "OPENSSH PRIVATE KEY",
                "PRIVATE KEY",
                "RSA PRIVATE KEY",
                "EC PRIVATE KEY",
            ],
        )
        .is_err()
    {
        v.at("data")
            .key("ssh-privatekey")
            .error("is not a PEM/OpenSSH private key");
    }
}
