//! The renderers: every Traefik document (samples, the seeds' Mesh, each feature, 5,000
//! services) validates against Traefik's published JSON schema for the file provider
//! (`tests/schemas/traefik-v3-file-provider.json`, from schemastore.org) in both encodings;
//! snapshots pin the output; Caddy's is checked by `caddy validate` in the e2e tests.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use phoenix_api::kinds::mesh::MeshSpec;
use phoenix_api::{Object, Source, load_source};
use phoenix_mesh::caddy::{self, CaddyOptions};
use phoenix_mesh::plan::{Certificate, Plan};
use phoenix_mesh::resolve;
use phoenix_mesh::traefik::{self, Format, TraefikOptions};

mod support;
use support::check_traefik;

fn mesh_spec(yaml: &str) -> MeshSpec {
    let source = Source {
        name: "test.yaml".into(),
        bytes: yaml.as_bytes().to_vec(),
    };
    match load_source(&source).remove(0) {
        Ok(d) => match d.object {
            Object::Mesh(m) => m.spec,
            other => panic!("not a Mesh: {other:?}"),
        },
        Err(e) => panic!("{}", e.lines().join("\n")),
    }
}

fn addresses(name: &str) -> Option<IpAddr> {
    match name {
        "portainer" => Some("10.0.0.102".parse().unwrap()),
        "dr-phoenix" => Some("10.0.0.150".parse().unwrap()),
        "v6" => Some("fd00::7".parse().unwrap()),
        _ => None,
    }
}

fn fake_cert(host: &str) -> Certificate {
    Certificate {
        chain_pem: format!("-----BEGIN CERTIFICATE-----\nMIIB{host}\n-----END CERTIFICATE-----\n"),
        key_pem: "-----BEGIN PRIVATE KEY-----\nMIIEkey\n-----END PRIVATE KEY-----\n".into(),
    }
}

const FEATURES: &str = r#"
apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Mesh
metadata: {name: features}
spec:
  domain: internal.test
  entryPoint: {host: 127.0.0.1, port: 8080, tlsPort: 8443}
  target: {file: {path: phoenix.yaml}}
  services:
    - name: portainer
      tls: true
      backends: [{guest: portainer, port: 9000}]
    - name: api
      host: app.internal.test
      pathPrefix: /api
      stripPrefix: true
      passHostHeader: false
      healthCheck: {path: /health, interval: 1500ms, timeout: 1s}
      backends: [{url: "http://10.0.0.5:8000"}, {url: "http://backend.internal.test:8001"}]
    - name: app
      host: app.internal.test
      backends: [{guest: v6, port: 3000, scheme: https}]
"#;

fn features_plan() -> Plan {
    let certs = BTreeMap::from([(
        "portainer.internal.test".to_string(),
        fake_cert("portainer"),
    )]);
    resolve::plan(&mesh_spec(FEATURES), &addresses, &certs).unwrap()
}

fn caddy_options() -> CaddyOptions {
    CaddyOptions {
        admin_listen: "127.0.0.1:2019".into(),
        listen_address: Some("127.0.0.1".parse().unwrap()),
        port: 8080,
        tls_port: 8443,
        grace_period: Duration::from_secs(10),
    }
}

#[test]
fn every_feature_renders_to_a_valid_traefik_document() {
    let plan = features_plan();
    let yaml = traefik::render(&plan, &TraefikOptions::default(), Format::Yaml).unwrap();
    let doc = check_traefik(&yaml.body);
    insta::assert_snapshot!(
        "features_traefik_yaml",
        String::from_utf8(yaml.body.clone()).unwrap()
    );
    let json = traefik::render(&plan, &TraefikOptions::default(), Format::Json).unwrap();
    assert_eq!(check_traefik(&json.body), doc, "YAML and JSON say the same");
    // What each feature became.
    let r = &doc["http"]["routers"];
    assert_eq!(
        r["api"]["rule"],
        "Host(`app.internal.test`) && PathPrefix(`/api`)"
    );
    assert_eq!(r["api"]["middlewares"][0], "api-strip-prefix");
    assert_eq!(r["portainer"]["entryPoints"][0], "websecure");
    assert!(r["portainer"]["tls"].is_object() && r["api"].get("tls").is_none());
    let s = &doc["http"]["services"];
    assert_eq!(
        s["portainer"]["loadBalancer"]["servers"][0]["url"],
        "http://10.0.0.102:9000"
    );
    assert_eq!(
        s["app"]["loadBalancer"]["servers"][0]["url"],
        "https://[fd00::7]:3000"
    );
    assert_eq!(s["api"]["loadBalancer"]["passHostHeader"], false);
    assert_eq!(
        s["api"]["loadBalancer"]["healthCheck"]["interval"],
        "1500ms"
    );
    assert_eq!(
        doc["tls"]["certificates"][0]["certFile"],
        fake_cert("portainer").chain_pem
    );
}

#[test]
fn output_is_deterministic_and_hashed() {
    let a = traefik::render(&features_plan(), &TraefikOptions::default(), Format::Yaml).unwrap();
    let b = traefik::render(&features_plan(), &TraefikOptions::default(), Format::Yaml).unwrap();
    assert_eq!(a, b);
    assert!(
        a.hash.starts_with("sha256:") && a.hash.len() == 7 + 64,
        "{}",
        a.hash
    );
    let mut other = features_plan();
    other.services[0].pass_host_header = false;
    let c = traefik::render(&other, &TraefikOptions::default(), Format::Yaml).unwrap();
    assert_ne!(a.hash, c.hash);
    assert!(
        !format!("{a:?}").contains("PRIVATE KEY"),
        "Debug hides the body"
    );
}

#[test]
fn an_empty_plan_is_a_valid_document_with_no_routes() {
    let yaml = traefik::render(&Plan::default(), &TraefikOptions::default(), Format::Yaml).unwrap();
    let doc = check_traefik(&yaml.body);
    assert_eq!(doc, serde_json::json!({}));
    let c = caddy::render(&Plan::default(), &caddy_options()).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    let routes = &doc["apps"]["http"]["servers"]["mesh-http"]["routes"];
    assert_eq!(routes.as_array().unwrap().len(), 1, "only the 404 route");
    assert_eq!(routes[0]["handle"][0]["status_code"], 404);
    assert_eq!(
        doc["admin"]["listen"], "127.0.0.1:2019",
        "the admin listener is kept"
    );
}

#[test]
fn the_samples_and_the_seeds_mesh_render_valid_documents() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests");
    for file in ["samples/mesh.yaml", "examples/phoenix/mesh.yaml"] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let spec = mesh_spec(&text);
        let seeds = |name: &str| -> Option<IpAddr> {
            Some(match name {
                "portainer" => "10.0.0.99".parse().unwrap(),
                "dr-phoenix" => "10.0.0.101".parse().unwrap(),
                _ => return None,
            })
        };
        let certs: BTreeMap<String, Certificate> = spec
            .services
            .iter()
            .map(|s| (spec.host_of(s), fake_cert(&s.name)))
            .collect();
        let plan = resolve::plan(&spec, &seeds, &certs).unwrap();
        let out = traefik::render(&plan, &TraefikOptions::default(), Format::Yaml).unwrap();
        check_traefik(&out.body);
        let name = file.replace(['/', '.'], "_");
        insta::assert_snapshot!(name, String::from_utf8(out.body).unwrap());
    }
}

#[test]
fn five_thousand_services_render_a_valid_document() {
    let mut yaml = String::from(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Mesh\nmetadata: {name: big}\nspec:\n  domain: big.test\n  entryPoint: {host: 127.0.0.1}\n  target: {http: {listen: \"127.0.0.1:9180\"}}\n  services:\n",
    );
    for i in 0..5000 {
        yaml.push_str(&format!(
            "    - {{name: s{i}, tls: {}, pathPrefix: /p{}, backends: [{{url: \"http://10.1.{}.{}:80\"}}]}}\n",
            i % 2 == 0,
            i % 7,
            i / 250,
            i % 250
        ));
    }
    let spec = mesh_spec(&yaml);
    let plan = resolve::plan(&spec, &addresses, &BTreeMap::new()).unwrap();
    for format in [Format::Yaml, Format::Json] {
        let out = traefik::render(&plan, &TraefikOptions::default(), format).unwrap();
        assert_eq!(out.services, 5000);
        let doc = check_traefik(&out.body);
        assert_eq!(doc["http"]["routers"].as_object().unwrap().len(), 5000);
    }
    let c = caddy::render(&plan, &caddy_options()).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    // No certificate: the tls services stay on plain HTTP (reported by the controller).
    assert_eq!(
        doc["apps"]["http"]["servers"]["mesh-http"]["routes"]
            .as_array()
            .unwrap()
            .len(),
        5001
    );
}

#[test]
fn caddy_routes_match_host_and_path_longest_first() {
    let c = caddy::render(&features_plan(), &caddy_options()).unwrap();
    insta::assert_snapshot!(
        "features_caddy_json",
        String::from_utf8(c.body.clone()).unwrap()
    );
    let doc: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    let plain = &doc["apps"]["http"]["servers"]["mesh-http"];
    assert_eq!(plain["listen"][0], "127.0.0.1:8080");
    assert_eq!(
        plain["routes"][0]["match"][0]["path"][0], "/api*",
        "longest path first"
    );
    assert_eq!(plain["routes"][0]["handle"][0]["strip_path_prefix"], "/api");
    let proxy = &plain["routes"][0]["handle"][1];
    assert_eq!(proxy["upstreams"][1]["dial"], "backend.internal.test:8001");
    assert_eq!(proxy["health_checks"]["active"]["uri"], "/health");
    assert_eq!(
        proxy["headers"]["request"]["set"]["X-Real-Ip"][0],
        "{http.request.remote.host}"
    );
    let tls = &doc["apps"]["http"]["servers"]["mesh-https"];
    assert_eq!(tls["listen"][0], "127.0.0.1:8443");
    assert_eq!(
        tls["routes"][0]["match"][0]["host"][0],
        "portainer.internal.test"
    );
    assert_eq!(
        doc["apps"]["tls"]["certificates"]["load_pem"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(doc["apps"]["http"]["grace_period"], "10s");
}

#[test]
fn caddy_refuses_a_service_mixing_schemes() {
    let mut plan = features_plan();
    let mut https = plan.services[1].upstreams[0].clone();
    https.scheme = phoenix_api::kinds::common::Scheme::Https;
    plan.services[1].upstreams.push(https);
    let e = caddy::render(&plan, &caddy_options()).unwrap_err();
    assert!(
        e.to_string().starts_with("spec.services[1].backends"),
        "{e}"
    );
}

#[test]
fn a_guest_without_an_address_leaves_out_only_its_backend_or_service() {
    let mut spec = mesh_spec(FEATURES);
    spec.services[0].backends[0].guest = Some("nowhere".into());
    spec.services[1].backends[0].url = None;
    spec.services[1].backends[0].guest = Some("dhcp".into());
    spec.services[1].backends[0].port = Some(80);
    let plan = resolve::plan(&spec, &addresses, &BTreeMap::new()).unwrap();
    let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["api", "app"],
        "portainer waits, api keeps its other backend"
    );
    assert_eq!(plan.services[0].upstreams.len(), 1);
    assert_eq!(
        plan.waiting,
        [
            "spec.services[0].backends[0]: Guest \"nowhere\" has no address yet",
            "spec.services[1].backends[0]: Guest \"dhcp\" has no address yet"
        ]
    );
    check_traefik(
        &traefik::render(&plan, &TraefikOptions::default(), Format::Yaml)
            .unwrap()
            .body,
    );
}
