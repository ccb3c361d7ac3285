//! ACME HTTP-01 through a real nginx: with `RenderOptions::acme_challenge` set, every route's
//! plain-HTTP server passes `/.well-known/acme-challenge/` to the responder, also on a route
//! that redirects everything else to HTTPS; without it the path is not special.

mod support;

use std::collections::BTreeMap;

use phoenix_nginx::{BackendDirectory, self_signed};
use support::{TestBackend, TestNginx, fields, gateway};

#[tokio::test]
async fn challenges_reach_the_responder_before_the_https_redirect() {
    let site = TestBackend::start("127.0.0.2", "site").await;
    let responder = TestBackend::start("127.0.0.3", "acme").await;
    let spec = gateway(&format!(
        r#"
  target: {{local: {{}}}}
  routes:
    - host: secure.test
      tls: true
      redirectHttp: true
      locations:
        - {{path: /, backends: [{{url: "{}"}}]}}
    - host: plain.test
      locations:
        - {{path: /, backends: [{{url: "{}"}}]}}
"#,
        site.url(),
        site.url()
    ));
    let certs = BTreeMap::from([(
        "secure.test".to_string(),
        self_signed("secure.test", 1).unwrap(),
    )]);
    let mut nginx = TestNginx::new();
    nginx.options.acme_challenge = Some(responder.addr);
    nginx
        .serve(&spec, &BackendDirectory::default(), &certs)
        .await;
    // No redirects followed.
    let client = nginx.client(&["secure.test", "plain.test"], &[]);
    for host in ["secure.test", "plain.test"] {
        let rsp = client
            .get(nginx.http(host, "/.well-known/acme-challenge/tok3n"))
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200, "{host}");
        let f = fields(&rsp.text().await.unwrap());
        assert_eq!(f["backend"], "acme", "{host}");
        assert_eq!(f["uri"], "/.well-known/acme-challenge/tok3n");
        assert_eq!(f["host"], host, "the Host header reaches the responder");
    }
    // Everything else on the redirecting route still redirects.
    let rsp = client
        .get(nginx.http("secure.test", "/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 308);
    assert_eq!(responder.hits(), 2);

    // Without a responder the path is an ordinary one: redirected like the rest.
    nginx.options.acme_challenge = None;
    let tree = nginx.render(&spec, &BackendDirectory::default(), &certs);
    nginx.deliver(&tree).await.unwrap();
    let rsp = client
        .get(nginx.http("secure.test", "/.well-known/acme-challenge/tok3n"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 308);
    assert_eq!(responder.hits(), 2);
}
