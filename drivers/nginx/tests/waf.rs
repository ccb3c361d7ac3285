//! ModSecurity with the OWASP core rule set (Debian's `libnginx-mod-http-modsecurity` and
//! `modsecurity-crs`), rendered only when asked: DetectionOnly logs, On blocks.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use phoenix_nginx::{BackendDirectory, Outcome, WafPaths};
use support::{TestBackend, TestNginx, gateway};

fn spec(mode: &str, backend: &TestBackend) -> phoenix_api::GatewaySpec {
    gateway(&format!(
        r#"
  target: {{local: {{}}}}
  waf: {{mode: {mode}}}
  routes:
    - host: waf.test
      locations:
        - {{path: /, backends: [{{url: "{}"}}]}}
"#,
        backend.url()
    ))
}

#[tokio::test]
async fn modsecurity_logs_in_detection_only_and_blocks_when_on() {
    let paths = WafPaths::default();
    for p in [&paths.module, &paths.crs_setup, &paths.crs_rules_dir] {
        assert!(
            Path::new(p).exists(),
            "{p} is missing: run hack/install-deps.sh (installs libnginx-mod-http-modsecurity and modsecurity-crs)"
        );
    }
    let app = TestBackend::start("127.0.0.2", "app").await;
    let mut nginx = TestNginx::new();
    let dir = BackendDirectory::default();
    let certs = BTreeMap::new();
    nginx
        .serve(&spec("DetectionOnly", &app), &dir, &certs)
        .await;
    let c = nginx.client(&["waf.test"], &[]);
    let attack = "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let status = |path: &'static str| {
        let c = c.clone();
        let url = nginx.http("waf.test", path);
        async move {
            c.get(url)
                .header("user-agent", "Mozilla/5.0")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        status(attack).await,
        200,
        "DetectionOnly passes the request"
    );
    assert_eq!(app.hits(), 1);
    let audit = Path::new(&nginx.options.runtime.log_dir).join("modsec_audit.log");
    // ModSecurity writes its audit entry in the log phase, after the answer was sent.
    support::eventually("the attack in the audit log", || {
        let logged = std::fs::read_to_string(&audit).unwrap_or_default();
        async move { logged.contains("XSS").then_some(()) }
    })
    .await;

    let tree = nginx.render(&spec("On", &app), &dir, &certs);
    assert_eq!(
        nginx.deliver(&tree).await.unwrap().outcome,
        Outcome::Reloaded
    );
    assert_eq!(status(attack).await, 403, "On blocks the request");
    assert_eq!(app.hits(), 1, "the backend never saw it");
    assert_eq!(status("/search?q=phoenix").await, 200);
}
