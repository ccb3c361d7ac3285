//! Properties of decoding and admission (docs/fuzzing.md):
//! - no input panics the decoder or admission: arbitrary bytes, YAML-ish token soup, and the
//!   shipped example manifests with random edits, as manifest files and as the API server's
//!   JSON request bodies; every error names a position (line) or a field path;
//! - the shared generators (`phoenix-generators`) produce only specs admission accepts, as
//!   objects and as manifest text: the renderers' property tests rely on that;
//! - the injection corpus in any string of a generated spec is refused with that string's
//!   field path, or accepted (then the renderers' tests show it stays inert).
//!
//! Case counts: `PROPTEST_CASES` when set, else the small CI defaults below.

use std::path::Path;

use phoenix_api::decode::{DecodeError, Source, decode_source};
use phoenix_api::kinds::{DnsZone, Gateway, Mesh, Stack};
use phoenix_api::validation::injection::ATTACKS;
use phoenix_api::{ManifestError, Object, admit, load_source};
use phoenix_generators as generate;
use proptest::prelude::*;

/// Every decode error names where: a line, or a field path, or is about the whole input.
fn assert_located(e: &DecodeError) {
    match e {
        DecodeError::Field { path, .. } => assert!(!path.is_empty(), "{e}"),
        DecodeError::TypeMeta { .. } => {}
        DecodeError::NotUtf8 { at } => assert!(at.line.is_some(), "{e}"),
        DecodeError::Syntax { at, .. } => {
            assert!(at.line.is_some() || at.document.is_some(), "{e}")
        }
        DecodeError::TooLarge { .. } => {}
        DecodeError::Read { .. } | DecodeError::NoManifests { .. } => {
            panic!("no I/O happens here: {e}")
        }
    }
}

fn check_source(bytes: Vec<u8>) {
    let source = Source {
        name: "fuzz.yaml".into(),
        bytes,
    };
    for r in decode_source(&source) {
        if let Err(e) = r {
            assert_located(&e);
        }
    }
    for r in load_source(&source) {
        match r {
            Err(ManifestError::Decode(e)) => assert_located(&e),
            Err(ManifestError::Invalid { errors, .. }) => {
                assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    assert!(!e.path.is_empty() && !e.reason.is_empty(), "{e}");
                }
            }
            Ok(_) => {}
        }
    }
}

fn examples() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/phoenix");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    assert!(out.len() >= 5, "the examples are there");
    out
}

/// The API's wire format: `decode_json` then admission, as the API server does.
fn check_json(bytes: &[u8]) {
    match phoenix_api::decode::decode_json("request", bytes) {
        Err(e) => assert_located(&e),
        Ok(object) => {
            if let Err(errors) = admit(object) {
                for e in &errors.0 {
                    assert!(!e.path.is_empty() && !e.reason.is_empty(), "{e}");
                }
            }
        }
    }
}

/// The example objects as JSON request bodies.
fn example_json() -> Vec<String> {
    examples()
        .iter()
        .flat_map(|text| phoenix_api::decode::decode_str("example.yaml", text).unwrap())
        .map(|o| String::from_utf8(o.to_json_bytes()).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(generate::config(256))]

    #[test]
    fn arbitrary_json_bodies_never_panic_and_errors_are_located(
        bytes in prop::collection::vec(any::<u8>(), 0..600)
    ) {
        check_json(&bytes);
    }

    #[test]
    fn edited_json_objects_never_panic_and_errors_are_located(
        bytes in prop::sample::select(example_json()).prop_flat_map(generate::mutated)
    ) {
        check_json(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_errors_are_located(
        bytes in prop::collection::vec(any::<u8>(), 0..600)
    ) {
        check_source(bytes);
    }

    #[test]
    fn yamlish_text_never_panics_and_errors_are_located(text in generate::hostile_text()) {
        check_source(text.into_bytes());
    }

    #[test]
    fn edited_examples_never_panic_and_errors_are_located(
        bytes in prop::sample::select(examples()).prop_flat_map(generate::mutated)
    ) {
        check_source(bytes);
    }
}

/// `object` as JSON manifest text, decoded and admitted again.
fn admitted_as_text(object: &Object) -> Result<Object, String> {
    let text = match object {
        Object::Gateway(o) => serde_json::to_string(o),
        Object::Mesh(o) => serde_json::to_string(o),
        Object::Stack(o) => serde_json::to_string(o),
        Object::DnsZone(o) => serde_json::to_string(o),
        other => panic!("not generated: {other:?}"),
    }
    .unwrap();
    let mut objects = phoenix_api::decode::decode_str("gen.json", &text)
        .map_err(|e| format!("decode: {e}\n{text}"))?;
    admit(objects.remove(0)).map_err(|e| format!("admission: {e}\n{text}"))
}

fn assert_admitted(object: Object) {
    if let Err(e) = admit(object.clone()) {
        panic!("the generator made a spec admission refuses:\n{e}\n{object:#?}");
    }
    if let Err(e) = admitted_as_text(&object) {
        panic!("as manifest text: {e}");
    }
}

proptest! {
    #![proptest_config(generate::config(128))]

    #[test]
    fn generated_gateways_are_admitted(spec in generate::gateway_spec()) {
        assert_admitted(Object::Gateway(Gateway::new("gen", spec)));
    }

    #[test]
    fn generated_meshes_are_admitted(spec in generate::mesh_spec()) {
        assert_admitted(Object::Mesh(Mesh::new("gen", spec)));
    }

    #[test]
    fn generated_stacks_are_admitted(spec in generate::stack_spec()) {
        assert_admitted(Object::Stack(Stack::new("gen", spec)));
    }

    #[test]
    fn generated_dns_zones_are_admitted(spec in generate::dns_zone_spec()) {
        assert_admitted(Object::DnsZone(DnsZone::new("gen", spec)));
    }
}

/// Puts `attack` into the string at `leaf` (front, middle or end) of `object`'s spec and
/// admits the result through manifest text. Refused: an error names that string's field (or
/// a field below it). Accepted: fine here; the renderers' property tests check the output.
fn inject(object: Object, leaf: prop::sample::Index, attack: &str, place: u8) {
    let (kind, spec) = match &object {
        Object::Gateway(o) => ("Gateway", serde_json::to_value(&o.spec)),
        Object::Mesh(o) => ("Mesh", serde_json::to_value(&o.spec)),
        Object::Stack(o) => ("Stack", serde_json::to_value(&o.spec)),
        Object::DnsZone(o) => ("DnsZone", serde_json::to_value(&o.spec)),
        _ => unreachable!(),
    };
    let spec = spec.unwrap();
    let leaves = generate::string_leaves(&spec, "spec");
    if leaves.is_empty() {
        return;
    }
    let (pointer, path, value) = &leaves[leaf.index(leaves.len())];
    let cut = value
        .char_indices()
        .nth(value.chars().count() / 2)
        .map_or(value.len(), |(i, _)| i);
    let bad = match place % 3 {
        0 => format!("{value}{attack}"),
        1 => format!("{attack}{value}"),
        _ => format!("{}{attack}{}", &value[..cut], &value[cut..]),
    };
    let spec = generate::with_leaf(&spec, pointer, &bad);
    let text = serde_json::json!({
        "apiVersion": phoenix_api::API_VERSION,
        "kind": kind,
        "metadata": {"name": "gen"},
        "spec": spec,
    })
    .to_string();
    let related = |p: &str| {
        let p = generate::normalize_path(p);
        // A long map key is cut in error paths ("…"): compare the part shown.
        if let Some((shown, _)) = p.split_once('…') {
            return path.starts_with(shown);
        }
        p == *path || p.starts_with(&format!("{path}.")) || p.starts_with(&format!("{path}["))
    };
    match phoenix_api::decode::decode_str("inject.json", &text) {
        Err(DecodeError::Field { path: p, .. }) => {
            assert!(related(&p), "decode error at {p}, not at {path}")
        }
        Err(e) => {
            panic!("a JSON manifest with one changed string fails to decode without a field: {e}")
        }
        Ok(mut objects) => {
            if let Err(errors) = admit(objects.remove(0)) {
                assert!(
                    errors.0.iter().any(|e| related(&e.path)),
                    "{attack:?} in {path} was refused, but no error names it:\n{errors}"
                );
            }
        }
    }
}

fn attack() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        9 => prop::sample::select(ATTACKS).prop_map(|(_, a)| a),
        1 => Just(phoenix_api::validation::injection::overlong().leak() as &str),
    ]
}

proptest! {
    #![proptest_config(generate::config(256))]

    #[test]
    fn injected_gateway_strings_are_refused_at_their_field(
        spec in generate::gateway_spec(), leaf in any::<prop::sample::Index>(),
        attack in attack(), place in any::<u8>()
    ) {
        inject(Object::Gateway(Gateway::new("gen", spec)), leaf, attack, place);
    }

    #[test]
    fn injected_mesh_strings_are_refused_at_their_field(
        spec in generate::mesh_spec(), leaf in any::<prop::sample::Index>(),
        attack in attack(), place in any::<u8>()
    ) {
        inject(Object::Mesh(Mesh::new("gen", spec)), leaf, attack, place);
    }

    #[test]
    fn injected_stack_strings_are_refused_at_their_field(
        spec in generate::stack_spec(), leaf in any::<prop::sample::Index>(),
        attack in attack(), place in any::<u8>()
    ) {
        inject(Object::Stack(Stack::new("gen", spec)), leaf, attack, place);
    }

    #[test]
    fn injected_dns_zone_strings_are_refused_at_their_field(
        spec in generate::dns_zone_spec(), leaf in any::<prop::sample::Index>(),
        attack in attack(), place in any::<u8>()
    ) {
        inject(Object::DnsZone(DnsZone::new("gen", spec)), leaf, attack, place);
    }
}

/// Found by the nginx property test: a location mixing `http` and `https` backends was
/// admitted and then refused by the renderer (one upstream group speaks one scheme); the
/// same for a Caddy Mesh service. Admission now refuses both at `...backends`.
#[test]
fn mixed_backend_schemes_are_refused_where_the_peer_would_refuse_them() {
    let load = |text: &str| {
        let source = Source {
            name: "mixed.yaml".into(),
            bytes: text.as_bytes().to_vec(),
        };
        load_source(&source).remove(0)
    };
    let gateway = "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  target: {local: {}}\n  routes:\n    - host: a.test\n      locations:\n        - path: /\n          backends: [{url: 'http://10.0.0.1:80'}, {guest: app, port: 443, scheme: https}]\n";
    match load(gateway) {
        Err(ManifestError::Invalid { errors, .. }) => {
            assert_eq!(errors.0.len(), 1, "{errors}");
            assert_eq!(errors.0[0].path, "spec.routes[0].locations[0].backends");
            assert!(
                errors.0[0].reason.contains("mixes http and https"),
                "{errors}"
            );
        }
        other => panic!("admitted or wrong error: {other:?}"),
    }
    let same = gateway.replace("scheme: https", "scheme: http");
    assert!(load(&same).is_ok(), "one scheme is fine");
    let with_mesh = gateway.replace("{guest: app, port: 443, scheme: https}", "{mesh: internal}");
    assert!(
        load(&with_mesh).is_ok(),
        "a mesh's scheme is known at run time only"
    );

    let mesh = "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec:\n  provider: caddy\n  domain: internal.test\n  entryPoint: {host: 127.0.0.1}\n  target: {caddyAdmin: {url: 'http://127.0.0.1:2019'}}\n  services:\n    - name: app\n      backends: [{url: 'https://10.0.0.1:443'}, {url: 'http://10.0.0.2:80'}]\n";
    match load(mesh) {
        Err(ManifestError::Invalid { errors, .. }) => {
            assert_eq!(errors.0[0].path, "spec.services[0].backends", "{errors}");
        }
        other => panic!("admitted or wrong error: {other:?}"),
    }
    let traefik = mesh
        .replace("provider: caddy", "provider: traefik")
        .replace(
            "{caddyAdmin: {url: 'http://127.0.0.1:2019'}}",
            "{file: {path: m.yaml}}",
        );
    assert!(
        load(&traefik).is_ok(),
        "Traefik load-balances mixed schemes"
    );
}

/// Found by the nginx injection property: `http://HOST\` parses as `http://HOST/` (a
/// backslash is a slash to the URL parser), so admission took it, and the renderer refused
/// the backslash. Admission now refuses it at the URL's field.
#[test]
fn a_backslash_in_a_backend_url_is_refused_at_its_field() {
    let text = "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  target: {local: {}}\n  routes:\n    - host: a.test\n      locations: [{path: /, backends: [{url: 'http://10.0.0.1:80\\'}]}]\n";
    let source = Source {
        name: "backslash.yaml".into(),
        bytes: text.as_bytes().to_vec(),
    };
    match load_source(&source).remove(0) {
        Err(ManifestError::Invalid { errors, .. }) => {
            assert_eq!(
                errors.0[0].path,
                "spec.routes[0].locations[0].backends[0].url"
            );
            assert!(errors.0[0].reason.contains("backslash"), "{errors}");
        }
        other => panic!("admitted or wrong error: {other:?}"),
    }
}
