//! The shipped examples and samples: all admitted, and lossless through YAML and JSON.

use std::path::Path;

use phoenix_api::{Kind, Object, decode, load_paths};

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .display()
        .to_string()
}

fn load(path: &str) -> Vec<Object> {
    match load_paths(&[repo(path)]) {
        Ok(docs) => docs.into_iter().map(|d| d.object).collect(),
        Err(problems) => panic!("{path} has errors:\n{}", problems.join("\n")),
    }
}

#[test]
fn the_phoenix_estate_is_admitted() {
    let objects = load("manifests/examples/phoenix");
    let keys: Vec<String> = objects.iter().map(Object::key).collect();
    for expected in [
        "guest/base-template",
        "guest/nginx-gateway",
        "guest/traefik",
        "guest/step-ca",
        "guest/portainer",
        "guest/dr-phoenix",
        "gateway/external",
        "mesh/internal",
        "certificateauthority/step-ca",
        "stack/qdrant",
        "stack/vllm",
        "stack/ollama",
        "stack/n8n",
    ] {
        assert!(
            keys.contains(&expected.to_string()),
            "missing {expected} in {keys:?}"
        );
    }
    // LXC 101 as seed 002 describes it.
    let Some(Object::Guest(gw)) = objects.iter().find(|o| o.key() == "guest/nginx-gateway") else {
        panic!("no nginx-gateway");
    };
    let s = &gw.spec;
    assert_eq!(s.vmid, Some(101));
    assert_eq!(
        (s.cores, s.memory_mib, s.swap_mib),
        (Some(4), Some(4096), Some(512))
    );
    let rootfs = s.rootfs.as_ref().unwrap();
    assert_eq!(
        (rootfs.storage.as_str(), rootfs.size_gib),
        ("quickOS-lxc-disks", 32)
    );
    let net = &s.networks[0];
    assert_eq!(net.ipv4.as_deref(), Some("10.0.0.153/24"));
    assert_eq!(net.gateway.as_deref(), Some("10.0.0.1"));
    assert_eq!(net.bridge, "vmbr0");
    assert!(s.unprivileged && s.features.unwrap().nesting && s.firewall.as_ref().unwrap().enabled);
    assert!(s.start_on_boot);
    let startup = s.startup.as_ref().unwrap();
    assert_eq!(startup.order, Some(1));
    assert_eq!(
        startup
            .up_delay
            .as_ref()
            .unwrap()
            .parse()
            .unwrap()
            .as_secs(),
        5
    );
    // Defaults applied at admission.
    assert_eq!(s.hostname.as_deref(), Some("nginx-phoenix"));
    let Some(Object::Guest(pt)) = objects.iter().find(|o| o.key() == "guest/portainer") else {
        panic!("no portainer");
    };
    assert_eq!(pt.spec.hostname.as_deref(), Some("portainer"));
}

#[test]
fn there_is_one_sample_per_kind() {
    let objects = load("manifests/samples");
    for kind in [
        Kind::Guest,
        Kind::Gateway,
        Kind::Mesh,
        Kind::CertificateAuthority,
        Kind::Stack,
        Kind::GitSync,
        Kind::DnsZone,
    ] {
        assert_eq!(
            objects.iter().filter(|o| o.kind() == kind).count(),
            1,
            "samples for {kind}"
        );
    }
}

fn assert_round_trips(objects: &[Object]) {
    for object in objects {
        let yaml = object.to_yaml();
        let back = decode::decode_str("roundtrip.yaml", &yaml)
            .unwrap_or_else(|e| panic!("{}: {e}\n{yaml}", object.key()));
        assert_eq!(
            back,
            vec![object.clone()],
            "YAML round trip of {}",
            object.key()
        );
        let json = object.to_json_bytes();
        let back = decode::decode_json("roundtrip.json", &json)
            .unwrap_or_else(|e| panic!("{}: {e}", object.key()));
        assert_eq!(&back, object, "JSON round trip of {}", object.key());
        // Admission of an admitted object changes nothing (defaults are idempotent).
        assert_eq!(&phoenix_api::admit(back).unwrap(), object);
    }
}

#[test]
fn examples_and_samples_round_trip_losslessly() {
    assert_round_trips(&load("manifests/examples/phoenix"));
    assert_round_trips(&load("manifests/samples"));
}

#[test]
fn a_directory_is_read_recursively_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("b/c")).unwrap();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    let doc = |name: &str| {
        format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {{name: {name}}}\n"
        )
    };
    std::fs::write(dir.path().join("b/c/z.yml"), doc("z")).unwrap();
    std::fs::write(dir.path().join("a.json"), r#"{"apiVersion":"phoenix.thinkheads.ai/v1alpha1","kind":"Secret","metadata":{"name":"a"}}"#).unwrap();
    std::fs::write(dir.path().join("b/m.yaml"), doc("m")).unwrap();
    std::fs::write(dir.path().join("b/readme.md"), "not a manifest").unwrap();
    std::fs::write(dir.path().join(".git/x.yaml"), "not: [valid").unwrap();
    let docs = load_paths(&[dir.path().display().to_string()]).unwrap();
    let names: Vec<&str> = docs.iter().map(|d| d.object.name()).collect();
    // Sorted by full path, as a depth-first lexical walk gives: a.json, b/c/z.yml, b/m.yaml.
    assert_eq!(names, ["a", "z", "m"]);
}

#[test]
fn duplicate_objects_across_files_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let doc = "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {name: same}\n";
    std::fs::write(dir.path().join("1.yaml"), doc).unwrap();
    std::fs::write(dir.path().join("2.yaml"), doc).unwrap();
    let problems = load_paths(&[dir.path().display().to_string()]).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].contains("2.yaml (document 1): secret/same is also defined in"),
        "{}",
        problems[0]
    );
}
