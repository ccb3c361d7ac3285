//! A guest's firewall: options (`enable`, `policy_in`, `policy_out`) and rules.
//!
//! Rules are positional, as in PVE: the list converges to `spec.firewall.rules` exactly. A
//! rule at a position that differs is updated in place (fields not declared are deleted), a
//! missing one is added (PVE puts it on top) and moved to its position, rules beyond the list
//! are deleted from the last. Every write carries the digest of what it was computed from, so a
//! concurrent change makes it fail (and the next reconcile computes again) instead of
//! clobbering it. Without `spec.firewall` nothing is managed.

use phoenix_api::kinds::guest::{Direction, FirewallAction, GuestFirewall};
use phoenix_pve::{FirewallRule, GuestRef, PveClient, PveError};
use serde_json::{Map, Value};

/// One firewall setting that differed and was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The spec field, e.g. `spec.firewall.rules[1]`.
    pub field: String,
    /// The value declared (empty: removed).
    pub expected: String,
    /// The value found (empty: absent).
    pub found: String,
}

fn action(a: FirewallAction) -> &'static str {
    match a {
        FirewallAction::Accept => "ACCEPT",
        FirewallAction::Drop => "DROP",
        FirewallAction::Reject => "REJECT",
    }
}

/// Rule fields Phoenix manages, as PVE names them.
const FIELDS: &[&str] = &[
    "type", "action", "proto", "source", "dest", "sport", "dport", "iface", "enable", "comment",
    "macro", "log",
];

/// A declared rule as PVE's fields (`enable` always present).
fn declared(rule: &phoenix_api::kinds::guest::FirewallRule) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (
            "type",
            match rule.direction {
                Direction::In => "in",
                Direction::Out => "out",
            }
            .to_string(),
        ),
        ("action", action(rule.action).to_string()),
    ];
    for (k, v) in [
        ("proto", &rule.protocol),
        ("source", &rule.source),
        ("dest", &rule.dest),
        ("sport", &rule.source_port),
        ("dport", &rule.dest_port),
        ("iface", &rule.iface),
        ("comment", &rule.comment),
    ] {
        if let Some(v) = v {
            out.push((k, v.clone()));
        }
    }
    out.push(("enable", u8::from(rule.enabled).to_string()));
    out
}

/// A rule PVE holds as the same fields.
fn found(rule: &FirewallRule) -> Vec<(&'static str, String)> {
    let mut out = vec![("type", rule.kind.clone()), ("action", rule.action.clone())];
    for (k, v) in [
        ("proto", &rule.proto),
        ("source", &rule.source),
        ("dest", &rule.dest),
        ("sport", &rule.sport),
        ("dport", &rule.dport),
        ("iface", &rule.iface),
        ("comment", &rule.comment),
        ("macro", &rule.macro_name),
        ("log", &rule.log.clone().filter(|l| l != "nolog")),
    ] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            out.push((k, v.clone()));
        }
    }
    out.push(("enable", rule.enable.unwrap_or(0).to_string()));
    out
}

fn show(fields: &[(&'static str, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn same(a: &[(&'static str, String)], b: &[(&'static str, String)]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

fn as_map(fields: &[(&'static str, String)]) -> Map<String, Value> {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect()
}

/// Converges the firewall of `at` to `spec`; returns what was changed.
pub async fn converge(
    pve: &PveClient,
    at: &GuestRef,
    spec: &GuestFirewall,
) -> Result<Vec<Change>, PveError> {
    let mut changes = Vec::new();

    // Options.
    let options = pve.firewall_options(at).await?;
    let get = |k: &str| options.values.get(k).map(crate::desired::text);
    let mut set = Map::new();
    let enable = u8::from(spec.enabled).to_string();
    if get("enable").unwrap_or_else(|| "0".into()) != enable {
        changes.push(Change {
            field: "spec.firewall.enabled".into(),
            expected: enable.clone(),
            found: get("enable").unwrap_or_default(),
        });
        set.insert("enable".into(), Value::String(enable));
    }
    for (key, field, want) in [
        ("policy_in", "spec.firewall.policyIn", spec.policy_in),
        ("policy_out", "spec.firewall.policyOut", spec.policy_out),
    ] {
        if let Some(want) = want.map(action)
            && get(key).as_deref() != Some(want)
        {
            changes.push(Change {
                field: field.into(),
                expected: want.into(),
                found: get(key).unwrap_or_default(),
            });
            set.insert(key.into(), Value::String(want.into()));
        }
    }
    if !set.is_empty() {
        pve.set_firewall_options(at, &set, &[], options.digest.as_deref())
            .await?;
    }

    // Rules, by position.
    let want: Vec<_> = spec.rules.iter().map(declared).collect();
    let mut rules = pve.firewall_rules(at).await?;
    let digest = |rules: &[FirewallRule]| rules.first().and_then(|r| r.digest.clone());
    for (i, w) in want.iter().enumerate() {
        let pos = u32::try_from(i).unwrap_or(u32::MAX);
        let field = format!("spec.firewall.rules[{i}]");
        match rules.get(i) {
            Some(have) => {
                let have_fields = found(have);
                if same(w, &have_fields) {
                    continue;
                }
                let delete: Vec<String> = have_fields
                    .iter()
                    .map(|(k, _)| *k)
                    .filter(|k| !w.iter().any(|(wk, _)| wk == k) && FIELDS.contains(k))
                    .map(str::to_string)
                    .collect();
                pve.update_firewall_rule(at, pos, &as_map(w), &delete, digest(&rules).as_deref())
                    .await?;
                changes.push(Change {
                    field,
                    expected: show(w),
                    found: show(&have_fields),
                });
            }
            None => {
                pve.create_firewall_rule(at, &as_map(w), digest(&rules).as_deref())
                    .await?;
                // PVE put it on top: move it behind the others.
                let count = u32::try_from(rules.len() + 1).unwrap_or(u32::MAX);
                if count > 1 {
                    let after = pve.firewall_rules(at).await?;
                    let moveto: Map<String, Value> = [("moveto".to_string(), Value::from(count))]
                        .into_iter()
                        .collect();
                    pve.update_firewall_rule(at, 0, &moveto, &[], digest(&after).as_deref())
                        .await?;
                }
                changes.push(Change {
                    field,
                    expected: show(w),
                    found: String::new(),
                });
            }
        }
        rules = pve.firewall_rules(at).await?;
    }
    while rules.len() > want.len() {
        let last = rules.len() - 1;
        changes.push(Change {
            field: format!("spec.firewall.rules[{last}]"),
            expected: String::new(),
            found: show(&found(&rules[last])),
        });
        pve.delete_firewall_rule(
            at,
            u32::try_from(last).unwrap_or(u32::MAX),
            digest(&rules).as_deref(),
        )
        .await?;
        rules = pve.firewall_rules(at).await?;
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn declared_rules_compare_with_what_pve_lists() {
        let rule: phoenix_api::kinds::guest::FirewallRule = serde_json::from_value(json!({
            "direction": "in", "action": "ACCEPT", "protocol": "tcp", "destPort": "80,443",
            "comment": "web",
        }))
        .unwrap();
        let listed: FirewallRule = serde_json::from_value(json!({
            "pos": 0, "type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "80,443",
            "comment": "web", "enable": 1, "ipversion": 4, "digest": "abc",
        }))
        .unwrap();
        assert!(same(&declared(&rule), &found(&listed)));
        let other: FirewallRule = serde_json::from_value(json!({
            "pos": 0, "type": "in", "action": "DROP", "proto": "tcp", "dport": "80,443",
            "comment": "web", "enable": 1, "source": "10.0.0.0/24",
        }))
        .unwrap();
        assert!(!same(&declared(&rule), &found(&other)));
        assert_eq!(
            show(&declared(&rule)),
            "type=in,action=ACCEPT,proto=tcp,dport=80,443,comment=web,enable=1"
        );
    }
}
