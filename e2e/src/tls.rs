//! A test certificate authority for TLS peers started by tests (git over HTTPS, nginx
//! backends, ...): a fresh self-signed CA per test and server certificates it signs.

/// A self-signed CA (PEM) and the issuer of server certificates.
pub struct TestCa {
    /// The CA certificate, PEM: what clients are told to trust.
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA whose subject is `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("generating a CA key");
        let cert = params.self_signed(&key).expect("self-signing the CA");
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// `(certificate PEM, key PEM)` of a server certificate for `host` (a DNS name, or an
    /// IP address such as `127.0.0.1`, which becomes an IP SAN), signed by this CA.
    pub fn issue(&self, host: &str) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec![host.to_string()]).expect("a host name or IP");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, host);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("generating a server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing the server certificate");
        (cert.pem(), key.serialize_pem())
    }
}
