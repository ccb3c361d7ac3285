//! What deleting a Gateway does to nginx (ADR 0022): the policy in force, and the empty
//! configuration delivered under `Delete`.

use phoenix_api::kinds::Gateway;
use phoenix_api::kinds::common::DeletionPolicy;
use phoenix_api::kinds::gateway::GatewaySpec;

pub use phoenix_api::kinds::common::DELETION_POLICY_ANNOTATION;

/// The policy in force: the annotation when it says `Delete` or `Retain`, else the spec's.
pub fn policy(gateway: &Gateway) -> DeletionPolicy {
    DeletionPolicy::in_force(&gateway.metadata, gateway.spec.deletion_policy)
}

/// `spec` with nothing to serve: same target and listen (so nginx keeps its ports and
/// run-time files and the delivery reloads it as usual), no routes, zones, WAF, security
/// headers or certificates. Rendered, it is nginx's default server alone: 404 for every host
/// (`/healthz` still answers), and no TLS server (the HTTPS port is closed).
pub fn emptied(spec: &GatewaySpec) -> GatewaySpec {
    GatewaySpec {
        guest: spec.guest.clone(),
        target: spec.target.clone(),
        listen: spec.listen.clone(),
        server_tokens: false,
        http2: spec.http2,
        gzip: false,
        security_headers: None,
        certificate_authority: None,
        rate_limits: Vec::new(),
        caches: Vec::new(),
        waf: None,
        routes: Vec::new(),
        deletion_policy: spec.deletion_policy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(policy: &str, annotation: Option<&str>) -> Gateway {
        let mut g: Gateway = serde_json::from_value(serde_json::json!({
            "apiVersion": "phoenix.thinkheads.ai/v1alpha1",
            "kind": "Gateway",
            "metadata": {"name": "edge"},
            "spec": {
                "target": {"local": {}},
                "deletionPolicy": policy,
                "rateLimits": [{"name": "api", "requestsPerSecond": 1}],
                "waf": {"mode": "On"},
                "routes": [{"host": "a.test", "locations": [
                    {"path": "/", "rateLimit": "api", "backends": [{"url": "http://10.0.0.1:80"}]}
                ]}]
            }
        }))
        .unwrap();
        if let Some(a) = annotation {
            g.metadata
                .annotations
                .insert(DELETION_POLICY_ANNOTATION.into(), a.into());
        }
        g
    }

    #[test]
    fn the_annotation_wins_over_the_spec_and_nonsense_is_ignored() {
        assert_eq!(policy(&gateway("Delete", None)), DeletionPolicy::Delete);
        assert_eq!(policy(&gateway("Retain", None)), DeletionPolicy::Retain);
        assert_eq!(
            policy(&gateway("Delete", Some("Retain"))),
            DeletionPolicy::Retain
        );
        assert_eq!(
            policy(&gateway("Retain", Some("Delete"))),
            DeletionPolicy::Delete
        );
        assert_eq!(
            policy(&gateway("Delete", Some("retain"))),
            DeletionPolicy::Delete
        );
    }

    #[test]
    fn the_empty_spec_keeps_target_and_listen_and_serves_nothing() {
        let g = gateway("Delete", None);
        let e = emptied(&g.spec);
        assert_eq!((&e.target, &e.listen), (&g.spec.target, &g.spec.listen));
        assert!(e.routes.is_empty() && e.rate_limits.is_empty() && e.caches.is_empty());
        assert_eq!(e.waf, None);
    }
}
