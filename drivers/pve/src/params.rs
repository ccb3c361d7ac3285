//! Request parameters as PVE reads them, and paths as metrics name them.
//!
//! PVE takes parameters as a query string (GET, DELETE) or a form body (POST, PUT). Booleans
//! are `1`/`0`, lists repeat the name, and JSON `null` means "not given".

use serde_json::{Map, Value};

/// An ordered list of `name=value` parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Params(Vec::new())
    }

    /// Adds `name=value`.
    pub fn set(mut self, name: &str, value: impl ToString) -> Self {
        self.0.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds `name=value` when `value` is `Some`.
    pub fn opt(self, name: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(value) => self.set(name, value),
            None => self,
        }
    }

    /// Adds a boolean as PVE wants it: `1` or `0`.
    pub fn flag(self, name: &str, value: bool) -> Self {
        self.set(name, if value { 1 } else { 0 })
    }

    /// Adds a JSON value: strings as they are, numbers in decimal, booleans as `1`/`0`, arrays
    /// as the name repeated, `null` not at all, objects as their JSON text.
    pub fn value(mut self, name: &str, value: &Value) -> Self {
        match value {
            Value::Null => {}
            Value::Bool(b) => return self.flag(name, *b),
            Value::Number(n) => self.0.push((name.to_string(), n.to_string())),
            Value::String(s) => self.0.push((name.to_string(), s.clone())),
            Value::Array(items) => {
                for item in items {
                    self = self.value(name, item);
                }
            }
            Value::Object(_) => self.0.push((name.to_string(), value.to_string())),
        }
        self
    }

    /// Adds every entry of a JSON object (a guest config, say) with [`Params::value`].
    pub fn extend_map(mut self, map: &Map<String, Value>) -> Self {
        for (name, value) in map {
            self = self.value(name, value);
        }
        self
    }

    /// The value of the first parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// True when no parameter is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The parameters, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// `application/x-www-form-urlencoded` text of the parameters.
    pub fn encode(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.0 {
            out.append_pair(name, value);
        }
        out.finish()
    }
}

/// Segments after which PVE's paths hold an id, and the placeholder that names it.
const ID_AFTER: &[(&str, &str)] = &[
    ("nodes", "{node}"),
    ("lxc", "{vmid}"),
    ("qemu", "{vmid}"),
    ("tasks", "{upid}"),
    ("storage", "{storage}"),
    ("content", "{volume}"),
    ("rules", "{pos}"),
    ("snapshot", "{snapname}"),
    ("pools", "{poolid}"),
    ("ipset", "{name}"),
    ("aliases", "{name}"),
    ("groups", "{group}"),
    ("users", "{userid}"),
    ("token", "{tokenid}"),
];

/// The path with its ids replaced by placeholders, for metric labels: `/nodes/pve1/lxc/100/config`
/// becomes `/nodes/{node}/lxc/{vmid}/config`. Query strings are dropped; any other segment
/// made of digits, or holding a UPID, is replaced too, so no raw id reaches a label.
pub fn endpoint_template(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let mut out = String::with_capacity(path.len());
    let mut previous: Option<&str> = None;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        let placeholder = previous
            .and_then(|prev| ID_AFTER.iter().find(|(after, _)| *after == prev))
            .map(|(_, name)| *name);
        match placeholder {
            Some(name) => out.push_str(name),
            None if segment.starts_with("UPID:") => out.push_str("{upid}"),
            None if segment.bytes().all(|b| b.is_ascii_digit()) => out.push_str("{id}"),
            None => out.push_str(segment),
        }
        previous = Some(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_values_as_pve_reads_them() {
        let config = json!({
            "cores": 2, "onboot": true, "unprivileged": false, "description": "a b&c=d",
            "nameserver": null, "ssh-public-keys": ["ssh-ed25519 AAA", "ssh-rsa BBB"],
        });
        let params = Params::new()
            .extend_map(config.as_object().unwrap())
            .set("digest", "abc");
        assert_eq!(params.get("cores"), Some("2"));
        assert_eq!(params.get("onboot"), Some("1"));
        assert_eq!(params.get("unprivileged"), Some("0"));
        assert_eq!(params.get("nameserver"), None);
        let encoded = params.encode();
        assert!(encoded.contains("description=a+b%26c%3Dd"), "{encoded}");
        assert!(
            encoded.contains("ssh-public-keys=ssh-ed25519+AAA&ssh-public-keys=ssh-rsa+BBB"),
            "{encoded}"
        );
        assert!(encoded.ends_with("digest=abc"), "{encoded}");
    }

    #[test]
    fn templates_never_hold_raw_ids() {
        for (path, template) in [
            (
                "/nodes/pve1/lxc/100/config",
                "/nodes/{node}/lxc/{vmid}/config",
            ),
            ("/nodes/pve1/lxc", "/nodes/{node}/lxc"),
            (
                "/nodes/pve2/qemu/1002/status/current",
                "/nodes/{node}/qemu/{vmid}/status/current",
            ),
            (
                "/nodes/pve1/tasks/UPID:pve1:000003E8:00001B58:6B028B65:vzcreate:100:root@pam:/status",
                "/nodes/{node}/tasks/{upid}/status",
            ),
            ("/nodes/pve1/tasks", "/nodes/{node}/tasks"),
            ("/cluster/resources?type=vm", "/cluster/resources"),
            ("/cluster/nextid", "/cluster/nextid"),
            (
                "/nodes/pve1/lxc/101/firewall/rules/3",
                "/nodes/{node}/lxc/{vmid}/firewall/rules/{pos}",
            ),
            (
                "/nodes/pve1/lxc/101/firewall/rules",
                "/nodes/{node}/lxc/{vmid}/firewall/rules",
            ),
            (
                "/nodes/pve1/lxc/101/snapshot/before",
                "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}",
            ),
            (
                "/nodes/pve1/storage/local/content",
                "/nodes/{node}/storage/{storage}/content",
            ),
            ("/storage/quickOS-lxc-disks", "/storage/{storage}"),
            ("/access/ticket", "/access/ticket"),
            ("/version", "/version"),
            ("/some/42/thing", "/some/{id}/thing"),
            ("/", "/"),
        ] {
            assert_eq!(endpoint_template(path), template, "{path}");
        }
    }
}
