//! Prometheus metrics as cert-manager has them, named `phoenix_ca_*`: expiry and renewal time
//! per certificate, issuance attempts by result, ACME requests by endpoint and status.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a certificate.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// The CertificateAuthority.
    pub ca: String,
    /// The certificate's name in its status.
    pub certificate: String,
}

/// Labels of an issuance attempt.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// The CertificateAuthority.
    pub ca: String,
    /// `success` or `failure`.
    pub result: String,
}

/// Labels of an ACME request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The CertificateAuthority.
    pub ca: String,
    /// `directory`, `newNonce`, `newAccount`, `newOrder`, `authorization`, `challenge`,
    /// `order`, `finalize`, `certificate`.
    pub endpoint: String,
    /// HTTP status code, or `error` when no response came.
    pub status: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The controller's metrics. Cheap to clone; clones share their values.
#[derive(Debug, Clone, Default)]
pub struct CaMetrics {
    expiration: Family<CertLabels, FloatGauge>,
    renewal: Family<CertLabels, FloatGauge>,
    ready: Family<CertLabels, Gauge>,
    attempts: Family<AttemptLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
}

impl CaMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> CaMetrics {
        let m = CaMetrics::default();
        registry.register(
            "phoenix_ca_certificate_expiration_timestamp_seconds",
            "Unix time at which the certificate expires (cert-manager's certificate_expiration_timestamp_seconds)",
            m.expiration.clone(),
        );
        registry.register(
            "phoenix_ca_certificate_renewal_timestamp_seconds",
            "Unix time at which the certificate will be renewed",
            m.renewal.clone(),
        );
        registry.register(
            "phoenix_ca_certificate_ready_status",
            "1 when the certificate is issued, valid and for the requested names, else 0",
            m.ready.clone(),
        );
        registry.register(
            "phoenix_ca_issuance_attempts",
            "ACME issuance attempts by result",
            m.attempts.clone(),
        );
        registry.register(
            "phoenix_ca_acme_client_requests",
            "Requests to ACME servers by endpoint and HTTP status",
            m.requests.clone(),
        );
        m
    }

    /// Counts one ACME request.
    pub fn acme_request(&self, ca: &str, endpoint: &str, status: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                ca: ca.into(),
                endpoint: endpoint.into(),
                status: status.into(),
            })
            .inc();
    }

    /// Counts one issuance attempt.
    pub fn attempt(&self, ca: &str, success: bool) {
        self.attempts
            .get_or_create(&AttemptLabels {
                ca: ca.into(),
                result: if success { "success" } else { "failure" }.into(),
            })
            .inc();
    }

    /// Sets a certificate's times (Unix seconds) and readiness.
    pub fn certificate(&self, ca: &str, certificate: &str, times: Option<(f64, f64)>, ready: bool) {
        let labels = CertLabels {
            ca: ca.into(),
            certificate: certificate.into(),
        };
        match times {
            Some((expires, renews)) => {
                self.expiration.get_or_create(&labels).set(expires);
                self.renewal.get_or_create(&labels).set(renews);
            }
            None => {
                self.expiration.remove(&labels);
                self.renewal.remove(&labels);
            }
        }
        self.ready.get_or_create(&labels).set(i64::from(ready));
    }

    /// Drops a certificate's series (it is no longer wanted).
    pub fn forget(&self, ca: &str, certificate: &str) {
        let labels = CertLabels {
            ca: ca.into(),
            certificate: certificate.into(),
        };
        self.expiration.remove(&labels);
        self.renewal.remove(&labels);
        self.ready.remove(&labels);
    }
}
