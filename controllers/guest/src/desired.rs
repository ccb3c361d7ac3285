//! What a Guest's spec asks of PVE's config, and the smallest change that gets there.
//!
//! Only the fields this controller manages are compared: `cores`, `memory`, `swap`,
//! `hostname`, `onboot`, `tags` (compared as PVE normalises them: lowercased, sorted, without
//! duplicates) and the marker in `description`. Keys PVE holds that the spec does not name
//! are left alone.

use phoenix_api::kinds::Guest;
use serde_json::{Map, Value};

/// The tag every guest Phoenix created carries.
pub const MANAGED_TAG: &str = "phoenix-managed";

/// The line of `description` that names the owning object.
pub fn marker(uid: &str) -> String {
    format!("phoenix-uid: {uid}")
}

/// Whether `description` carries the marker of `uid`.
pub fn has_marker(description: Option<&str>, uid: &str) -> bool {
    description.is_some_and(|d| d.lines().any(|l| l.trim() == marker(uid)))
}

/// The Phoenix uid named in `description`, if any.
pub fn marker_uid(description: Option<&str>) -> Option<&str> {
    description?
        .lines()
        .find_map(|l| l.trim().strip_prefix("phoenix-uid: "))
        .map(str::trim)
}

/// `description` without any Phoenix marker line.
pub fn without_marker(description: &str) -> String {
    description
        .lines()
        .filter(|l| !l.trim().starts_with("phoenix-uid: "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Tags as PVE keeps them: lowercased, sorted, deduplicated, `;`-joined.
pub fn normalise_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> String {
    let mut all: Vec<String> = tags
        .into_iter()
        .flat_map(|t| t.split([';', ',', ' ']))
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    all.sort();
    all.dedup();
    all.join(";")
}

/// A config value as text, the way PVE's API compares it (`1` for true).
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => u8::from(*b).to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One managed key: the PVE key, the spec field it comes from, the desired value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// PVE config key.
    pub key: &'static str,
    /// Spec field path, e.g. `spec.cores`.
    pub field: &'static str,
    /// Desired value as text.
    pub value: String,
}

/// The managed keys and their desired values for `guest` (whose object uid is `uid`).
pub fn wanted(guest: &Guest, uid: &str) -> Vec<Wanted> {
    let spec = &guest.spec;
    let mut out = Vec::new();
    let mut push = |key, field, value: Option<String>| {
        if let Some(value) = value {
            out.push(Wanted { key, field, value });
        }
    };
    push("cores", "spec.cores", spec.cores.map(|v| v.to_string()));
    push(
        "memory",
        "spec.memoryMiB",
        spec.memory_mib.map(|v| v.to_string()),
    );
    push("swap", "spec.swapMiB", spec.swap_mib.map(|v| v.to_string()));
    push(
        "hostname",
        "spec.hostname",
        Some(
            spec.hostname
                .clone()
                .unwrap_or_else(|| guest.metadata.name.clone()),
        ),
    );
    push(
        "onboot",
        "spec.startOnBoot",
        Some(u8::from(spec.start_on_boot).to_string()),
    );
    push(
        "tags",
        "spec.tags",
        Some(normalise_tags(
            spec.tags.iter().map(String::as_str).chain([MANAGED_TAG]),
        )),
    );
    push("description", "metadata.uid", Some(marker(uid)));
    out
}

/// A managed key whose value in PVE differs from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// What was wanted.
    pub wanted: Wanted,
    /// What PVE holds (empty when absent).
    pub found: String,
    /// The value to send.
    pub send: String,
}

/// Compares `wanted` with PVE's `config`; the differences carry the value to send.
pub fn differences(wanted: &[Wanted], config: &Map<String, Value>) -> Vec<Difference> {
    wanted
        .iter()
        .filter_map(|w| {
            let found = config.get(w.key).map(text).unwrap_or_default();
            let send = match w.key {
                "tags" => {
                    if normalise_tags(found.split(';')) == w.value {
                        return None;
                    }
                    w.value.clone()
                }
                "onboot" => {
                    let on = found == "1";
                    if on == (w.value == "1") {
                        return None;
                    }
                    w.value.clone()
                }
                "description" => {
                    // The marker must be there; anything else a user wrote stays, except
                    // another object's marker.
                    let uid = w.value.trim_start_matches("phoenix-uid: ");
                    if has_marker(Some(&found), uid) && marker_uid(Some(&found)) == Some(uid) {
                        return None;
                    }
                    let rest = without_marker(&found);
                    if rest.trim().is_empty() {
                        w.value.clone()
                    } else {
                        format!("{}\n{}", rest.trim_end(), w.value)
                    }
                }
                _ => {
                    if found == w.value {
                        return None;
                    }
                    w.value.clone()
                }
            };
            Some(Difference {
                wanted: w.clone(),
                found,
                send,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_api::kinds::GuestSpec;
    use serde_json::json;

    fn guest() -> Guest {
        let spec: GuestSpec = serde_json::from_value(json!({
            "type": "lxc", "vmid": 120, "cores": 2, "memoryMiB": 1024,
            "tags": ["Web", "prod"],
        }))
        .unwrap();
        Guest::new("web", spec)
    }

    #[test]
    fn tags_compare_as_pve_normalises_them() {
        assert_eq!(
            normalise_tags(["Web", "prod", "web", "phoenix-managed"]),
            "phoenix-managed;prod;web"
        );
        let w = wanted(&guest(), "u1");
        let config = json!({
            "cores": 2, "memory": 1024, "hostname": "web", "onboot": 0,
            "tags": "phoenix-managed;prod;web", "description": "phoenix-uid: u1\n",
        });
        assert!(differences(&w, config.as_object().unwrap()).is_empty());
    }

    #[test]
    fn differences_name_the_field_and_the_value_found() {
        let w = wanted(&guest(), "u1");
        let config = json!({
            "cores": 4, "memory": 1024, "hostname": "other", "onboot": 1,
            "tags": "prod", "description": "notes\nphoenix-uid: u2",
        });
        let d = differences(&w, config.as_object().unwrap());
        let by_key: Vec<(&str, &str, &str)> = d
            .iter()
            .map(|d| (d.wanted.key, d.found.as_str(), d.send.as_str()))
            .collect();
        assert_eq!(
            by_key,
            vec![
                ("cores", "4", "2"),
                ("hostname", "other", "web"),
                ("onboot", "1", "0"),
                ("tags", "prod", "phoenix-managed;prod;web"),
                (
                    "description",
                    "notes\nphoenix-uid: u2",
                    "notes\nphoenix-uid: u1"
                ),
            ]
        );
        assert_eq!(d[0].wanted.field, "spec.cores");
    }

    #[test]
    fn markers_are_found_and_removed() {
        assert_eq!(marker_uid(Some("x\nphoenix-uid: abc\n")), Some("abc"));
        assert_eq!(marker_uid(Some("x")), None);
        assert_eq!(without_marker("x\nphoenix-uid: abc"), "x");
        assert!(has_marker(Some("phoenix-uid: abc"), "abc"));
        assert!(!has_marker(None, "abc"));
    }
}
