//! The injection corpus: every attempt in every field that reaches the configuration is
//! rejected at admission with its field path, and refused by the renderer with the same path
//! when it is called directly on the unvalidated spec. Values the renderer emits inside double
//! quotes (header values, CSP) may carry `'` and `;`: those are accepted and stay one quoted
//! argument of one directive.

mod support;

use support::estate;

use std::collections::BTreeMap;

use phoenix_api::{GatewaySpec, Object};
use phoenix_nginx::{GatewayInput, RenderError, RenderOptions, TlsCertificate, render};

/// Attempts embedded into otherwise valid values: the corpus every renderer is tested with.
use phoenix_api::validation::injection::ATTACKS;

/// Attempts that a double-quoted value may carry: they cannot leave the quotes.
const CONTAINED: &[&str] = &[
    ";",
    "'",
    "; include /etc/passwd",
    " load_module /tmp/evil.so",
];

/// A field that reaches the configuration: where admission reports it, where the renderer
/// reports it, and how to put a value into it.
struct Field {
    admission: &'static str,
    render: &'static str,
    set: fn(&mut GatewaySpec, &str),
    /// For values emitted in double quotes: the whole value for an attack.
    quoted: Option<fn(&str) -> String>,
}

fn loc(s: &mut GatewaySpec) -> &mut phoenix_api::kinds::gateway::Location {
    &mut s.routes[0].locations[0]
}

fn fields() -> Vec<Field> {
    vec![
        Field {
            admission: "spec.routes[0].host",
            render: "spec.routes[0].host",
            set: |s, a| s.routes[0].host = format!("app{a}.example.test"),
            quoted: None,
        },
        Field {
            admission: "spec.routes[0].locations[0].path",
            render: "spec.routes[0].locations[0].path",
            set: |s, a| loc(s).path = format!("/api{a}"),
            quoted: None,
        },
        Field {
            admission: "spec.routes[0].locations[0].backends[0].url",
            render: "spec.routes[0].locations[0].backends[0]",
            set: |s, a| loc(s).backends[0].url = Some(format!("http://backend{a}.test:8000")),
            quoted: None,
        },
        Field {
            admission: "spec.routes[0].locations[0].backends[1].guest",
            render: "spec.routes[0].locations[0].backends[1]",
            set: |s, a| loc(s).backends[1].guest = Some(format!("portainer{a}")),
            quoted: None,
        },
        Field {
            admission: "spec.routes[0].locations[0].backends[2].mesh",
            render: "spec.routes[0].locations[0].backends[2]",
            set: |s, a| loc(s).backends[2].mesh = Some(format!("internal{a}")),
            quoted: None,
        },
        Field {
            admission: "spec.routes[0].locations[0].allow[0]",
            render: "spec.routes[0].locations[0].allow[0]",
            set: |s, a| loc(s).allow = vec![format!("10.0.0.0/24{a}")],
            quoted: None,
        },
        Field {
            admission: "spec.routes[0].locations[0].deny[0]",
            render: "spec.routes[0].locations[0].deny[0]",
            set: |s, a| loc(s).deny = vec![format!("10.0.0.66{a}")],
            quoted: None,
        },
        Field {
            admission: "spec.routes[0].locations[0].rateLimit",
            render: "spec.routes[0].locations[0].rateLimit",
            set: |s, a| loc(s).rate_limit = Some(format!("api{a}")),
            quoted: None,
        },
        Field {
            admission: "spec.routes[0].locations[0].cache",
            render: "spec.routes[0].locations[0].cache",
            set: |s, a| loc(s).cache = Some(format!("pages{a}")),
            quoted: None,
        },
        Field {
            admission: "spec.routes[0].locations[0].setHeaders[",
            render: "spec.routes[0].locations[0].setHeaders[",
            set: |s, a| {
                loc(s).set_headers.insert(format!("X-Name{a}"), "v".into());
            },
            quoted: None,
        },
        Field {
            admission: "spec.routes[0].locations[0].setHeaders[\"X-Team\"]",
            render: "spec.routes[0].locations[0].setHeaders[\"X-Team\"]",
            set: |s, a| {
                loc(s)
                    .set_headers
                    .insert("X-Team".into(), format!("ops{a}"));
            },
            quoted: Some(|a| format!("ops{a}")),
        },
        Field {
            admission: "spec.securityHeaders.contentSecurityPolicy",
            render: "spec.securityHeaders.contentSecurityPolicy",
            set: |s, a| {
                s.security_headers
                    .get_or_insert_with(Default::default)
                    .content_security_policy = Some(format!("default-src 'self'{a}"))
            },
            quoted: Some(|a| format!("default-src 'self'{a}")),
        },
        Field {
            admission: "spec.securityHeaders.referrerPolicy",
            render: "spec.securityHeaders.referrerPolicy",
            set: |s, a| {
                s.security_headers
                    .get_or_insert_with(Default::default)
                    .referrer_policy = Some(format!("no-referrer{a}"))
            },
            quoted: None,
        },
        Field {
            admission: "spec.rateLimits[0].name",
            render: "spec.rateLimits[0].name",
            set: |s, a| s.rate_limits[0].name = format!("api{a}"),
            quoted: None,
        },
        Field {
            admission: "spec.caches[0].name",
            render: "spec.caches[0].name",
            set: |s, a| s.caches[0].name = format!("pages{a}"),
            quoted: None,
        },
        Field {
            admission: "spec.caches[0].inactive",
            render: "spec.caches[0].inactive",
            set: |s, a| {
                s.caches[0].inactive = phoenix_api::duration::Duration::new(format!("60m{a}"))
            },
            quoted: None,
        },
        Field {
            admission: "spec.listen.address",
            render: "spec.listen.address",
            set: |s, a| s.listen.address = format!("0.0.0.0{a}"),
            quoted: None,
        },
    ]
}

fn base() -> Object {
    let text = r#"
apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Gateway
metadata: {name: edge}
spec:
  target: {local: {configDir: phoenix}}
  rateLimits: [{name: api, requestsPerSecond: 10}]
  caches: [{name: pages, sizeMiB: 10}]
  routes:
    - host: app.example.test
      locations:
        - path: /api
          backends: [{url: "http://10.0.0.5:8080"}, {guest: portainer, port: 9000}, {mesh: internal}]
          rateLimit: api
          cache: pages
          setHeaders: {X-Team: ops}
"#;
    let mut objects = phoenix_api::decode::decode_str("base.yaml", text).unwrap();
    let object = objects.remove(0);
    phoenix_api::admit(object.clone()).expect("the base is admitted");
    object
}

fn spec_of(o: &Object) -> &GatewaySpec {
    match o {
        Object::Gateway(g) => &g.spec,
        _ => unreachable!(),
    }
}

fn spec_mut(o: &mut Object) -> &mut GatewaySpec {
    match o {
        Object::Gateway(g) => &mut g.spec,
        _ => unreachable!(),
    }
}

/// Renders without admission, as a caller that skipped it would.
fn render_unvalidated(spec: &GatewaySpec) -> Result<phoenix_nginx::ConfigTree, RenderError> {
    let options = RenderOptions::from_spec(spec)?;
    render(&GatewayInput {
        spec,
        backends: &estate(),
        certificates: &BTreeMap::<String, TlsCertificate>::new(),
        options: &options,
    })
}

fn admission_errors(o: &Object) -> Vec<String> {
    match phoenix_api::admit(o.clone()) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|f| f.path.clone()).collect(),
    }
}

#[test]
fn every_attempt_in_every_field_is_refused_by_admission_and_by_the_renderer() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for field in fields() {
        let mut attacks: Vec<(String, String)> = ATTACKS
            .iter()
            .filter(|(_, a)| !(field.quoted.is_some() && CONTAINED.contains(a)))
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect();
        // Overlong: past every name, host, path and header limit.
        attacks.push((
            "overlong".into(),
            if field.quoted.is_some() {
                "a".repeat(5000)
            } else {
                "a".repeat(1100)
            },
        ));
        for (name, attack) in attacks {
            let mut o = base();
            (field.set)(spec_mut(&mut o), &attack);
            checked += 1;
            let paths = admission_errors(&o);
            if !paths.iter().any(|p| p.starts_with(field.admission)) {
                failures.push(format!(
                    "admission accepted {name} in {}: {paths:?}",
                    field.admission
                ));
            }
            match render_unvalidated(spec_of(&o)) {
                Ok(_) => failures.push(format!("renderer accepted {name} in {}", field.render)),
                Err(e) if !e.field().starts_with(field.render) => failures.push(format!(
                    "renderer refused {name} in {} at the wrong field: {e}",
                    field.render
                )),
                Err(e) => {
                    // Errors quote escaped values: no raw line break reaches a log line.
                    let text = e.to_string();
                    if text.contains('\n') || text.contains('\r') {
                        failures.push(format!("error text carries a line break: {text:?}"));
                    }
                }
            }
        }
    }
    assert!(checked >= 400, "{checked} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn quoted_values_keep_what_they_may_carry_inside_one_argument() {
    for field in fields() {
        let Some(value) = field.quoted else { continue };
        for attack in CONTAINED {
            let mut o = base();
            (field.set)(spec_mut(&mut o), attack);
            assert!(
                admission_errors(&o).is_empty(),
                "{attack:?} in {}",
                field.admission
            );
            let tree = render_unvalidated(spec_of(&o)).unwrap();
            let site = tree.text("sites/app.example.test.conf").unwrap();
            let expected = format!("\"{}\" always;", value(attack));
            let lines: Vec<&str> = site.lines().filter(|l| l.contains(&expected)).collect();
            assert_eq!(lines.len(), 1, "{attack:?} in {}:\n{site}", field.admission);
            let line = lines[0].trim();
            assert!(line.starts_with("add_header "), "{line}");
            // Exactly two double quotes: the value cannot leave its argument.
            assert_eq!(line.matches('"').count(), 2, "{line}");
            assert_eq!(line.split('"').nth(1), Some(value(attack).as_str()));
            // And no new directive appeared: the file has as many lines as without it.
            let mut plain = base();
            (field.set)(spec_mut(&mut plain), "");
            let baseline = render_unvalidated(spec_of(&plain)).unwrap();
            assert_eq!(
                site.lines().count(),
                baseline
                    .text("sites/app.example.test.conf")
                    .unwrap()
                    .lines()
                    .count()
            );
        }
    }
}

#[test]
fn nothing_outside_the_tree_is_referenced_by_route_values() {
    // Paths in the tree come from the options only; no route value becomes a file path other
    // than the tree's own `sites/` and `tls/` files named after a checked host.
    let mut o = base();
    spec_mut(&mut o).routes[0].tls = true;
    let spec = spec_of(&o).clone();
    let options = RenderOptions::from_spec(&spec).unwrap();
    let certs = BTreeMap::from([(
        "app.example.test".to_string(),
        phoenix_nginx::self_signed("app.example.test", 1).unwrap(),
    )]);
    let tree = render(&GatewayInput {
        spec: &spec,
        backends: &estate(),
        certificates: &certs,
        options: &options,
    })
    .unwrap();
    let paths: Vec<&str> = tree.files().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "nginx.conf",
            "sites/app.example.test.conf",
            "tls/app.example.test.crt",
            "tls/app.example.test.key",
            "upstreams.conf"
        ]
    );
    for (_, text) in tree.files().filter(|(p, _)| p.ends_with(".conf")) {
        let text = std::str::from_utf8(&text.contents).unwrap();
        for line in text.lines() {
            let l = line.trim();
            if l.starts_with("include ") {
                assert!(
                    l.starts_with("include sites/") || l == "include upstreams.conf;",
                    "{l}"
                );
            }
            assert!(!l.starts_with("load_module"), "{l}");
        }
    }
}

#[test]
fn a_specs_runtime_paths_never_reach_the_tree() {
    // Stored before ADR 0021 or sent past admission: `target.*.runtime` is ignored; where
    // nginx writes is the operator's (RenderOptions), Debian's paths by default.
    let mut o = base();
    spec_mut(&mut o).target.local.as_mut().unwrap().runtime =
        Some(phoenix_api::kinds::gateway::NginxRuntime {
            pid_file: Some("/etc/cron.d/x".into()),
            log_dir: Some("/etc/cron.d".into()),
            user: Some("root".into()),
            ..Default::default()
        });
    assert!(
        phoenix_api::admit(o.clone()).is_err(),
        "refused at admission"
    );
    let tree = render_unvalidated(spec_of(&o)).unwrap();
    let main = tree.text("nginx.conf").unwrap();
    assert!(!main.contains("/etc/cron.d"), "{main}");
    assert!(!main.contains("user root"), "{main}");
    assert!(main.contains("/var/log/nginx/error.log"), "{main}");
}
