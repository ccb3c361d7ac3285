//! The JSON schemas in `manifests/schemas/` must match the types. Regenerate them with
//! `hack/gen-schemas.sh` (which runs this test with `PHOENIX_UPDATE_SCHEMAS=1`).

use std::path::Path;

use phoenix_api::schema;

#[test]
fn schemas_are_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/schemas");
    let update = std::env::var_os("PHOENIX_UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (name, text) in schema::schema_files() {
        let path = dir.join(&name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON schemas in manifests/schemas: {stale:?}; run hack/gen-schemas.sh and commit the result"
    );
}

#[test]
fn schemas_pin_api_version_and_kind_and_forbid_unknown_fields() {
    let guest = schema::schema_for(phoenix_api::Kind::Guest);
    assert_eq!(
        guest["properties"]["apiVersion"]["const"],
        phoenix_api::API_VERSION
    );
    assert_eq!(guest["properties"]["kind"]["const"], "Guest");
    assert_eq!(guest["additionalProperties"], false);
    assert_eq!(guest["$defs"]["GuestSpec"]["additionalProperties"], false);
    let required = guest["$defs"]["GuestSpec"]["required"].as_array().unwrap();
    assert!(required.contains(&"type".into()));
}

#[test]
fn explain_finds_fields_through_lists_and_options() {
    let doc = schema::explain("guest.spec.networks.ipv4").unwrap();
    assert_eq!(doc.path, "Guest.spec.networks.ipv4");
    assert!(doc.description.contains("dhcp"), "{}", doc.description);
    assert!(!doc.required);
    let doc = schema::explain("gw.spec.routes.locations.loadBalancing").unwrap();
    assert_eq!(doc.type_name, "enum: round_robin | least_conn | ip_hash");
    assert_eq!(doc.default, Some("round_robin".into()));
    let doc = schema::explain("Guest.spec").unwrap();
    assert!(doc.fields.iter().any(|(n, _, req, _)| n == "type" && *req));
    assert!(
        doc.fields
            .iter()
            .any(|(n, t, _, _)| n == "networks" && t == "[]object")
    );
    assert!(schema::explain("guest.spec.nope").is_err());
    assert!(schema::explain("pod").is_err());
}
