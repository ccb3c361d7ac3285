//! Shared by the mesh tests: Traefik's published JSON schema for the file provider
//! (`tests/schemas/traefik-v3-file-provider.json`, from schemastore.org).
#![allow(dead_code)]

use std::sync::OnceLock;

pub fn schema() -> (boon::Schemas, boon::SchemaIndex) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/schemas/traefik-v3-file-provider.json"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.add_resource("file:///traefik.json", doc).unwrap();
    let idx = compiler
        .compile("file:///traefik.json", &mut schemas)
        .unwrap();
    (schemas, idx)
}

/// Validates a rendered Traefik document (YAML or JSON) against the schema; returns it.
pub fn check_traefik(body: &[u8]) -> serde_json::Value {
    let text = std::str::from_utf8(body).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(text).expect("parses as YAML");
    let (schemas, idx) = compiled();
    if let Err(e) = schemas.validate(&doc, *idx) {
        panic!("schema violation: {e:#}\n{text}");
    }
    doc
}

/// The schema, compiled once per test binary.
pub fn compiled() -> &'static (boon::Schemas, boon::SchemaIndex) {
    static SCHEMA: OnceLock<(boon::Schemas, boon::SchemaIndex)> = OnceLock::new();
    SCHEMA.get_or_init(schema)
}
