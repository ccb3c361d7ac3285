//! JSON schemas of the kinds (draft 2020-12, as yaml-language-server reads them) and the
//! field lookup behind `phoenixctl explain`.

use schemars::{JsonSchema, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use crate::kinds::{
    CertificateAuthority, DnsZone, Event, Gateway, GitSync, Guest, Mesh, Secret, Stack,
};
use crate::resource::Kind;

/// The JSON schema of `kind`, with `apiVersion` and `kind` pinned to their only values.
pub fn schema_for(kind: Kind) -> Value {
    fn gen_for<T: JsonSchema>() -> Value {
        let generator = SchemaSettings::draft2020_12()
            .for_deserialize()
            .into_generator();
        generator.into_root_schema_for::<T>().to_value()
    }
    let mut schema = match kind {
        Kind::Guest => gen_for::<Guest>(),
        Kind::Gateway => gen_for::<Gateway>(),
        Kind::Mesh => gen_for::<Mesh>(),
        Kind::CertificateAuthority => gen_for::<CertificateAuthority>(),
        Kind::Stack => gen_for::<Stack>(),
        Kind::GitSync => gen_for::<GitSync>(),
        Kind::DnsZone => gen_for::<DnsZone>(),
        Kind::Secret => gen_for::<Secret>(),
        Kind::Event => gen_for::<Event>(),
    };
    let obj = schema.as_object_mut().expect("a root schema is an object");
    obj.insert(
        "$id".into(),
        json!(format!(
            "https://phoenix.thinkheads.ai/schemas/v1alpha1/{}.json",
            kind.name().to_ascii_lowercase()
        )),
    );
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        props.insert(
            "apiVersion".into(),
            json!({"const": crate::API_VERSION, "description": "Always phoenix.thinkheads.ai/v1alpha1.", "type": "string"}),
        );
        props.insert(
            "kind".into(),
            json!({"const": kind.name(), "description": format!("Always {}.", kind.name()), "type": "string"}),
        );
    }
    schema
}

/// The schema file name of `kind` in `manifests/schemas/`.
pub fn schema_file_name(kind: Kind) -> String {
    format!("{}.json", kind.name().to_ascii_lowercase())
}

/// Every schema file: `(file name, pretty JSON text with a trailing newline)`.
pub fn schema_files() -> Vec<(String, String)> {
    Kind::ALL
        .iter()
        .map(|k| {
            let text = serde_json::to_string_pretty(&schema_for(*k)).expect("schema serializes");
            (schema_file_name(*k), text + "\n")
        })
        .collect()
}

/// What `explain` shows for one field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDoc {
    /// The path asked for, e.g. `Guest.spec.networks`.
    pub path: String,
    /// A type summary, e.g. `[]object`, `string`, `integer (uint32)`, `enum: lxc | vm`.
    pub type_name: String,
    /// Whether the field must be present in its parent.
    pub required: bool,
    /// The documentation.
    pub description: String,
    /// The default, if the schema declares one.
    pub default: Option<Value>,
    /// Sub-fields (name, type, required, first line of description), for objects.
    pub fields: Vec<(String, String, bool, String)>,
}

/// Why `explain` could not find a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// The kind is not known.
    #[error("unknown kind {0:?}")]
    UnknownKind(String),
    /// A path segment names no field.
    #[error("{kind} has no field {path:?}")]
    NoSuchField {
        /// The kind.
        kind: String,
        /// The path up to and including the missing segment.
        path: String,
    },
}

/// Looks up `KIND[.field.path]` (kind in any CLI form, list fields traversed by name).
pub fn explain(query: &str) -> Result<FieldDoc, ExplainError> {
    let mut parts = query.split('.');
    let kind_part = parts.next().unwrap_or_default();
    let kind =
        Kind::parse_cli(kind_part).ok_or_else(|| ExplainError::UnknownKind(kind_part.into()))?;
    let root = schema_for(kind);
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut node = resolve(&root, &defs);
    let mut required = true;
    let mut path = kind.name().to_string();
    for seg in parts {
        path.push('.');
        path.push_str(seg);
        let object = object_of(&node, &defs);
        let Some(child) = object.get("properties").and_then(|p| p.get(seg)).cloned() else {
            return Err(ExplainError::NoSuchField {
                kind: kind.name().into(),
                path,
            });
        };
        required = object
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|x| x == seg));
        node = child;
    }
    let description = description_of(&node, &defs);
    let default = node.get("default").cloned();
    let type_name = type_of(&node, &defs);
    let object = object_of(&node, &defs);
    let req: Vec<&Value> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    let fields = object
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(name, schema)| {
                    (
                        name.clone(),
                        type_of(schema, &defs),
                        req.iter().any(|r| *r == name),
                        description_of(schema, &defs)
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(FieldDoc {
        path,
        type_name,
        required,
        description,
        default,
        fields,
    })
}

/// Follows `$ref` and unwraps `Option`'s `anyOf: [X, null]`.
fn resolve(node: &Value, defs: &Map<String, Value>) -> Value {
    let mut current = node.clone();
    for _ in 0..16 {
        if let Some(r) = current.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches("#/$defs/");
            let mut target = defs.get(name).cloned().unwrap_or(Value::Null);
            if let (Some(t), Some(d)) = (target.as_object_mut(), current.get("description")) {
                t.insert("description".into(), d.clone());
            }
            current = target;
            continue;
        }
        if let Some(any) = current.get("anyOf").and_then(Value::as_array) {
            let non_null: Vec<&Value> = any
                .iter()
                .filter(|s| s.get("type") != Some(&json!("null")))
                .collect();
            if non_null.len() == 1 {
                let mut inner = non_null[0].clone();
                if let (Some(t), Some(d)) = (inner.as_object_mut(), current.get("description")) {
                    t.entry("description").or_insert(d.clone());
                }
                current = inner;
                continue;
            }
        }
        break;
    }
    current
}

/// The object schema of a node: itself, or its item schema for arrays.
fn object_of(node: &Value, defs: &Map<String, Value>) -> Value {
    let r = resolve(node, defs);
    match r.get("items") {
        Some(items) if r.get("properties").is_none() => resolve(items, defs),
        _ => r,
    }
}

fn description_of(node: &Value, defs: &Map<String, Value>) -> String {
    node.get("description")
        .or_else(|| {
            resolve(node, defs)
                .get("description")
                .cloned()
                .as_ref()
                .map(|_| &Value::Null)
        })
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            resolve(node, defs)
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        })
}

fn type_of(node: &Value, defs: &Map<String, Value>) -> String {
    let r = resolve(node, defs);
    if let Some(values) = enum_values(&r) {
        return format!("enum: {}", values.join(" | "));
    }
    match r.get("type") {
        Some(Value::String(t)) if t == "array" => {
            let items = r.get("items").map(|i| type_of(i, defs)).unwrap_or_default();
            format!("[]{items}")
        }
        Some(Value::String(t))
            if t == "object" && r.get("additionalProperties").is_some_and(Value::is_object) =>
        {
            let v = r
                .get("additionalProperties")
                .map(|a| type_of(a, defs))
                .unwrap_or_default();
            format!("map[string]{v}")
        }
        Some(Value::String(t)) => match r.get("format").and_then(Value::as_str) {
            Some(f) => format!("{t} ({f})"),
            None => t.clone(),
        },
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "object".into(),
    }
}

fn enum_values(r: &Value) -> Option<Vec<String>> {
    if let Some(e) = r.get("enum").and_then(Value::as_array) {
        return Some(
            e.iter()
                .map(|v| v.as_str().unwrap_or("?").to_string())
                .collect(),
        );
    }
    let one_of = r.get("oneOf").and_then(Value::as_array)?;
    one_of
        .iter()
        .map(|v| {
            v.get("const")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    v.get("enum")
                        .and_then(Value::as_array)
                        .and_then(|e| e.first())
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
        })
        .collect()
}
