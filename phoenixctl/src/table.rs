//! Printing objects: tables with per-kind columns, ages, YAML and JSON.

use jiff::Timestamp;
use phoenix_api::{Kind, Object};
use serde_json::Value;

use crate::exit::{Code, Failure};

/// `45s`, `12m`, `3h`, `5d` for a duration in seconds (negative: `0s`).
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The age of `t` at `now`, or `<unknown>`.
pub fn age_since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => age(now.as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

fn ptr<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    v.pointer(path).filter(|v| !v.is_null())
}

fn text(v: &Value, path: &str) -> String {
    match ptr(v, path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(other) => other.to_string(),
        None => "-".into(),
    }
}

fn count(v: &Value, path: &str) -> Option<usize> {
    match ptr(v, path)? {
        Value::Array(a) => Some(a.len()),
        Value::Object(o) => Some(o.len()),
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        _ => None,
    }
}

fn count_text(v: &Value, path: &str) -> String {
    count(v, path).map_or("-".into(), |n| n.to_string())
}

/// The `Ready` condition's status, or `-`.
pub fn ready(v: &Value) -> String {
    ptr(v, "/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .and_then(|c| c.get("status").and_then(Value::as_str))
        .unwrap_or("-")
        .to_string()
}

/// The column headers of `kind`'s table.
pub fn headers(kind: Kind, wide: bool) -> Vec<&'static str> {
    let mut h = vec!["NAME"];
    h.extend_from_slice(match kind {
        Kind::Guest => &["TYPE", "VMID", "NODE", "STATE"][..],
        Kind::Gateway => &["ROUTES"],
        Kind::Mesh => &["PROVIDER", "SERVICES"],
        Kind::CertificateAuthority => &["CERTIFICATES"],
        Kind::Stack => &["SERVICES"],
        Kind::GitSync => &["URL", "REVISION"],
        Kind::DnsZone => &["ZONE", "RECORDS"],
        Kind::Secret => &["TYPE", "DATA"],
        Kind::Event => &["TYPE", "REASON", "OBJECT", "MESSAGE", "COUNT"],
    });
    if kind.has_spec() {
        h.push("READY");
    }
    h.push("AGE");
    if wide {
        h.extend(["GENERATION", "RESOURCEVERSION"]);
        if kind == Kind::Guest {
            h.push("ADDRESSES");
        }
    }
    h
}

/// One table row for `o` at `now`, matching [`headers`].
pub fn row(o: &Object, wide: bool, now: Timestamp) -> Vec<String> {
    let v = o.to_json_value();
    let kind = o.kind();
    let mut r = vec![o.name().to_string()];
    match kind {
        Kind::Guest => {
            r.push(text(&v, "/spec/type"));
            let vmid = text(&v, "/status/vmid");
            r.push(if vmid == "-" {
                text(&v, "/spec/vmid")
            } else {
                vmid
            });
            let node = text(&v, "/status/node");
            r.push(if node == "-" {
                text(&v, "/spec/node")
            } else {
                node
            });
            r.push(text(&v, "/status/state"));
        }
        Kind::Gateway => r.push(match ptr(&v, "/status/routes") {
            Some(n) => n.to_string(),
            None => count_text(&v, "/spec/routes"),
        }),
        Kind::Mesh => {
            r.push(text(&v, "/spec/provider"));
            r.push(count_text(&v, "/spec/services"));
        }
        Kind::CertificateAuthority => r.push(count_text(&v, "/spec/certificates")),
        Kind::Stack => r.push(count_text(&v, "/status/services")),
        Kind::DnsZone => {
            r.push(text(&v, "/spec/zone"));
            r.push(text(&v, "/status/records"));
        }
        Kind::GitSync => {
            r.push(text(&v, "/spec/url"));
            r.push(text(&v, "/status/lastAppliedRevision"));
        }
        Kind::Secret => {
            r.push(text(&v, "/type"));
            let n = count(&v, "/data").unwrap_or(0) + count(&v, "/stringData").unwrap_or(0);
            r.push(n.to_string());
        }
        Kind::Event => {
            r.push(text(&v, "/type"));
            r.push(text(&v, "/reason"));
            r.push(format!(
                "{}/{}",
                text(&v, "/involvedObject/kind").to_ascii_lowercase(),
                text(&v, "/involvedObject/name")
            ));
            r.push(text(&v, "/message"));
            r.push(text(&v, "/count"));
        }
    }
    if kind.has_spec() {
        r.push(ready(&v));
    }
    r.push(age_since(o.metadata().creation_timestamp, now));
    if wide {
        let m = o.metadata();
        r.push(m.generation.map_or("-".into(), |g| g.to_string()));
        r.push(m.resource_version.clone().unwrap_or_else(|| "-".into()));
        if kind == Kind::Guest {
            let addrs: Vec<String> = ptr(&v, "/status/addresses")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .flat_map(|x| {
                            ["ipv4", "ipv6"]
                                .into_iter()
                                .filter_map(|f| x.get(f).and_then(Value::as_str))
                                .map(str::to_string)
                                .collect::<Vec<_>>()
                        })
                        .collect()
                })
                .unwrap_or_default();
            r.push(if addrs.is_empty() {
                "-".into()
            } else {
                addrs.join(",")
            });
        }
    }
    r
}

/// Column widths fitting every row.
pub fn widths(rows: &[Vec<String>]) -> Vec<usize> {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// One line of a table, columns padded to `widths` and separated by three spaces.
pub fn line(row: &[String], widths: &[usize]) -> String {
    let mut s = String::new();
    for (i, cell) in row.iter().enumerate() {
        if i + 1 == row.len() {
            s.push_str(cell);
        } else {
            let w = widths.get(i).copied().unwrap_or(0);
            s.push_str(cell);
            s.push_str(&" ".repeat(w.saturating_sub(cell.chars().count()) + 3));
        }
    }
    s
}

/// A whole table (header included) as lines.
pub fn render(rows: &[Vec<String>]) -> Vec<String> {
    let w = widths(rows);
    rows.iter().map(|r| line(r, &w)).collect()
}

/// One object as YAML (without the leading `---`).
pub fn yaml(o: &Object) -> Result<String, Failure> {
    yaml_value(&o.to_json_value())
}

/// A JSON value as YAML.
pub fn yaml_value(v: &Value) -> Result<String, Failure> {
    serde_saphyr::to_string(v)
        .map_err(|e| Failure::new(Code::Failure, format!("cannot print YAML: {e}")))
}

/// Objects as pretty JSON: one object, or a `List` of them.
pub fn json(objects: &[Object], single: bool) -> String {
    let v = if single && objects.len() == 1 {
        objects[0].to_json_value()
    } else {
        serde_json::json!({
            "apiVersion": phoenix_api::API_VERSION,
            "kind": "List",
            "items": objects.iter().map(Object::to_json_value).collect::<Vec<_>>(),
        })
    };
    serde_json::to_string_pretty(&v).expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(yaml: &str) -> Object {
        phoenix_api::decode::decode_json(
            "t",
            &serde_json::to_vec(&serde_saphyr::from_str::<Value>(yaml).unwrap()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn ages_use_the_largest_unit() {
        assert_eq!(age(-5), "0s");
        assert_eq!(age(45), "45s");
        assert_eq!(age(60), "1m");
        assert_eq!(age(12 * 60 + 59), "12m");
        assert_eq!(age(3 * 3600 + 1), "3h");
        assert_eq!(age(5 * 86400 + 7), "5d");
    }

    #[test]
    fn table_lines_are_aligned() {
        let rows = vec![
            vec!["NAME".to_string(), "AGE".to_string()],
            vec!["nginx-gateway".to_string(), "3h".to_string()],
        ];
        assert_eq!(
            render(&rows),
            vec!["NAME            AGE", "nginx-gateway   3h"]
        );
    }

    #[test]
    fn guest_rows_show_status_and_ready() {
        let o = decode(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: web\n  creationTimestamp: '2026-01-01T00:00:00Z'\n  generation: 2\n  resourceVersion: '17'\nspec:\n  type: lxc\n  source: {template: 'local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst'}\n  networks: [{name: eth0, bridge: vmbr0, ipv4: dhcp}]\nstatus:\n  vmid: 120\n  node: pve1\n  state: running\n  addresses: [{interface: eth0, ipv4: 10.0.0.5}]\n  conditions:\n  - {type: Ready, status: 'True', reason: Converged, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}\n",
        );
        let now: Timestamp = "2026-01-01T03:00:30Z".parse().unwrap();
        assert_eq!(
            headers(Kind::Guest, true),
            vec![
                "NAME",
                "TYPE",
                "VMID",
                "NODE",
                "STATE",
                "READY",
                "AGE",
                "GENERATION",
                "RESOURCEVERSION",
                "ADDRESSES"
            ]
        );
        assert_eq!(
            row(&o, true, now),
            vec![
                "web", "lxc", "120", "pve1", "running", "True", "3h", "2", "17", "10.0.0.5"
            ]
        );
        assert_eq!(row(&o, false, now).len(), headers(Kind::Guest, false).len());
    }

    #[test]
    fn secret_rows_count_keys_and_have_no_ready() {
        let o = decode(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {name: s}\ntype: basic-auth\nstringData: {username: a, password: b}\n",
        );
        let now = Timestamp::now();
        assert_eq!(
            headers(Kind::Secret, false),
            vec!["NAME", "TYPE", "DATA", "AGE"]
        );
        assert_eq!(
            row(&o, false, now),
            vec!["s", "basic-auth", "2", "<unknown>"]
        );
    }
}
