//! The injection corpus (`phoenix_api::validation::injection`, shared with the Gateway) in
//! every Mesh field that reaches a configuration: admission refuses each attempt with the
//! field's path, and the resolver in front of both renderers refuses it too when called on
//! the unvalidated spec, with the same path.

use std::collections::BTreeMap;
use std::net::IpAddr;

use phoenix_api::Object;
use phoenix_api::kinds::mesh::MeshSpec;
use phoenix_api::validation::injection::{ATTACKS, overlong};
use phoenix_mesh::resolve;

/// A field: where admission reports it, where the resolver reports it (None: the value never
/// reaches a rendered document, only admission guards it), how to set it.
struct Field {
    admission: &'static str,
    render: Option<&'static str>,
    set: fn(&mut MeshSpec, &str),
}

fn fields() -> Vec<Field> {
    vec![
        Field {
            admission: "spec.domain",
            render: Some("spec.domain"),
            set: |s, a| s.domain = format!("internal{a}.test"),
        },
        Field {
            admission: "spec.services[0].name",
            render: Some("spec.services[0].name"),
            set: |s, a| s.services[0].name = format!("web{a}"),
        },
        Field {
            admission: "spec.services[0].host",
            render: Some("spec.services[0].host"),
            set: |s, a| s.services[0].host = Some(format!("app{a}.internal.test")),
        },
        Field {
            admission: "spec.services[0].pathPrefix",
            render: Some("spec.services[0].pathPrefix"),
            set: |s, a| s.services[0].path_prefix = format!("/api{a}"),
        },
        Field {
            admission: "spec.services[0].backends[0].url",
            render: Some("spec.services[0].backends[0].url"),
            set: |s, a| {
                s.services[0].backends[0].url = Some(format!("http://backend{a}.test:8000"))
            },
        },
        Field {
            admission: "spec.services[0].healthCheck.path",
            render: Some("spec.services[0].healthCheck.path"),
            set: |s, a| s.services[0].health_check.as_mut().unwrap().path = format!("/health{a}"),
        },
        Field {
            admission: "spec.services[0].healthCheck.interval",
            render: Some("spec.services[0].healthCheck.interval"),
            set: |s, a| {
                s.services[0].health_check.as_mut().unwrap().interval =
                    phoenix_api::duration::Duration::new(format!("10s{a}"))
            },
        },
        Field {
            admission: "spec.services[1].backends[0].guest",
            render: None,
            set: |s, a| s.services[1].backends[0].guest = Some(format!("portainer{a}")),
        },
        Field {
            admission: "spec.services[1].tlsSecret",
            render: None,
            set: |s, a| s.services[1].tls_secret = Some(format!("cert{a}")),
        },
        Field {
            admission: "spec.target.file.path",
            render: None,
            set: |s, a| s.target.file.as_mut().unwrap().path = format!("phoenix{a}.yaml"),
        },
        Field {
            admission: "spec.entryPoint.host",
            render: None,
            set: |s, a| s.entry_point.host = Some(format!("mesh{a}.internal.test")),
        },
        Field {
            admission: "spec.certificateAuthority",
            render: None,
            set: |s, a| s.certificate_authority = Some(format!("step-ca{a}")),
        },
    ]
}

const BASE: &str = r#"
apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Mesh
metadata: {name: internal}
spec:
  domain: internal.test
  certificateAuthority: step-ca
  entryPoint: {host: 127.0.0.1}
  target: {file: {path: phoenix.yaml}}
  services:
    - name: web
      healthCheck: {path: /health}
      backends: [{url: "http://10.0.0.5:8080"}]
    - name: portainer
      tls: true
      tlsSecret: cert
      backends: [{guest: portainer, port: 9000}]
"#;

fn base() -> Object {
    let mut objects = phoenix_api::decode::decode_str("base.yaml", BASE).unwrap();
    let object = objects.remove(0);
    phoenix_api::admit(object.clone()).expect("the base is admitted");
    object
}

fn spec_mut(o: &mut Object) -> &mut MeshSpec {
    match o {
        Object::Mesh(m) => &mut m.spec,
        _ => unreachable!(),
    }
}

fn address(_: &str) -> Option<IpAddr> {
    Some("10.0.0.9".parse().unwrap())
}

#[test]
fn every_attempt_in_every_field_is_refused_by_admission_and_by_the_resolver() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for field in fields() {
        let attacks = ATTACKS
            .iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .chain([("overlong".to_string(), overlong())]);
        for (name, attack) in attacks {
            let mut o = base();
            (field.set)(spec_mut(&mut o), &attack);
            checked += 1;
            match phoenix_api::admit(o.clone()) {
                Ok(_) => failures.push(format!("admission accepted {name} in {}", field.admission)),
                Err(e) => {
                    if !e.0.iter().any(|f| f.path.starts_with(field.admission)) {
                        failures.push(format!(
                            "admission refused {name} elsewhere than {}: {e}",
                            field.admission
                        ));
                    }
                    let text = e.to_string();
                    if text.contains('\r') || text.chars().any(|c| c == '\u{202e}') {
                        failures.push(format!("raw attack in the error text: {text:?}"));
                    }
                }
            }
            let Some(render) = field.render else { continue };
            match resolve::plan(spec_mut(&mut o), &address, &BTreeMap::new()) {
                Ok(_) => failures.push(format!("resolver accepted {name} in {render}")),
                Err(e) => {
                    let text = e.to_string();
                    if !text.starts_with(render) {
                        failures.push(format!(
                            "resolver refused {name} elsewhere than {render}: {text}"
                        ));
                    }
                    if text.contains('\n') || text.contains('\r') {
                        failures.push(format!("error text carries a line break: {text:?}"));
                    }
                }
            }
        }
    }
    assert!(checked > 300, "{checked} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
