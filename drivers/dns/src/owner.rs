//! Ownership as external-dns keeps it: every name Phoenix writes carries a TXT record
//! `"heritage=phoenix,phoenix/owner=OWNER"` beside its A and AAAA records. A name without
//! that record (or with another owner's) is never changed: [`plan`] reports it as foreign.
//!
//! At a name it owns, Phoenix manages the A and AAAA records and its own TXT record; other
//! TXT records and other types there are left alone. Phoenix never writes CNAME records.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::{Prerequisite, Record, RecordData, Update};

/// The TXT value that marks `owner`'s names.
pub fn owner_txt(owner: &str) -> String {
    format!("heritage=phoenix,phoenix/owner={owner}")
}

/// The addresses wanted at each fully qualified name.
pub type Desired = BTreeMap<String, BTreeSet<IpAddr>>;

/// What one update does to a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new name: its records and the ownership TXT, only if no A or AAAA is there yet.
    Create,
    /// An owned name whose addresses changed.
    Change,
    /// An owned name no longer wanted: its A, AAAA and ownership TXT go.
    Delete,
}

/// One update, all or nothing, of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameChange {
    /// The name.
    pub name: String,
    /// What it does.
    pub kind: ChangeKind,
    /// Conditions the server checks first.
    pub prerequisites: Vec<Prerequisite>,
    /// The changes.
    pub updates: Vec<Update>,
}

/// The difference between a zone and what `owner` wants in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// One update per name to change.
    pub changes: Vec<NameChange>,
    /// Names wanted but holding records someone else made (or another owner's): left alone.
    pub foreign: Vec<String>,
    /// Names owned and already as wanted.
    pub unchanged: usize,
}

/// What the zone holds at one name.
#[derive(Default)]
struct AtName {
    addresses: BTreeSet<IpAddr>,
    ttls: BTreeSet<u32>,
    ours: bool,
    other_owner: bool,
    other_types: bool,
}

/// Plans the updates that make `zone_records` (a transfer of the zone) hold `desired` for
/// `owner`, with `ttl` on every record written.
///
/// # Guarantees
/// No update touches a name that lacks `owner`'s TXT record, except to create a name with
/// no A, AAAA or CNAME record, and that create is conditional on the server still having no
/// A or AAAA record there (so a record made meanwhile wins).
pub fn plan(zone_records: &[Record], owner: &str, desired: &Desired, ttl: u32) -> Plan {
    let marker = owner_txt(owner);
    let mut zone: BTreeMap<&str, AtName> = BTreeMap::new();
    for r in zone_records {
        let at = zone.entry(r.name.as_str()).or_default();
        match &r.data {
            RecordData::A(ip) => {
                at.addresses.insert(IpAddr::V4(*ip));
                at.ttls.insert(r.ttl);
            }
            RecordData::Aaaa(ip) => {
                at.addresses.insert(IpAddr::V6(*ip));
                at.ttls.insert(r.ttl);
            }
            RecordData::Txt(t) if *t == marker => at.ours = true,
            RecordData::Txt(t) if t.starts_with("heritage=phoenix,") => at.other_owner = true,
            RecordData::Txt(_) => {}
            RecordData::Other(t) if t == "CNAME" => at.other_types = true,
            RecordData::Other(_) => {}
        }
    }
    let mut plan = Plan::default();
    for (name, want) in desired {
        let at = zone.get(name.as_str());
        let ours = at.is_some_and(|a| a.ours);
        if ours {
            let at = at.expect("ours implies present");
            if at.addresses == *want && at.ttls.iter().all(|t| *t == ttl) {
                plan.unchanged += 1;
                continue;
            }
            let mut updates = delete_addresses(name);
            updates.extend(adds(name, want, ttl));
            plan.changes.push(NameChange {
                name: name.clone(),
                kind: ChangeKind::Change,
                prerequisites: vec![present_txt(name)],
                updates,
            });
        } else if at.is_some_and(|a| !a.addresses.is_empty() || a.other_owner || a.other_types) {
            plan.foreign.push(name.clone());
        } else {
            let mut updates = adds(name, want, ttl);
            updates.push(Update::Add(Record {
                name: name.clone(),
                ttl,
                data: RecordData::Txt(marker.clone()),
            }));
            plan.changes.push(NameChange {
                name: name.clone(),
                kind: ChangeKind::Create,
                prerequisites: ["A", "AAAA"]
                    .iter()
                    .map(|t| Prerequisite::RrsetAbsent {
                        name: name.clone(),
                        type_name: (*t).to_string(),
                    })
                    .collect(),
                updates,
            });
        }
    }
    for (name, at) in &zone {
        if at.ours && !desired.contains_key(*name) {
            let mut updates = delete_addresses(name);
            updates.push(Update::Delete(Record {
                name: name.to_string(),
                ttl: 0,
                data: RecordData::Txt(marker.clone()),
            }));
            plan.changes.push(NameChange {
                name: name.to_string(),
                kind: ChangeKind::Delete,
                prerequisites: vec![present_txt(name)],
                updates,
            });
        }
    }
    plan
}

/// The A and AAAA records `owner` holds in `zone_records`.
pub fn owned_addresses(zone_records: &[Record], owner: &str) -> Desired {
    let marker = owner_txt(owner);
    let owned: BTreeSet<&str> = zone_records
        .iter()
        .filter(|r| matches!(&r.data, RecordData::Txt(t) if *t == marker))
        .map(|r| r.name.as_str())
        .collect();
    let mut out = Desired::new();
    for r in zone_records {
        if !owned.contains(r.name.as_str()) {
            continue;
        }
        let ip = match r.data {
            RecordData::A(ip) => IpAddr::V4(ip),
            RecordData::Aaaa(ip) => IpAddr::V6(ip),
            _ => continue,
        };
        out.entry(r.name.clone()).or_default().insert(ip);
    }
    for name in owned {
        out.entry(name.to_string()).or_default();
    }
    out
}

fn present_txt(name: &str) -> Prerequisite {
    Prerequisite::RrsetPresent {
        name: name.to_string(),
        type_name: "TXT".into(),
    }
}

fn delete_addresses(name: &str) -> Vec<Update> {
    ["A", "AAAA"]
        .iter()
        .map(|t| Update::DeleteRrset {
            name: name.to_string(),
            type_name: (*t).to_string(),
        })
        .collect()
}

fn adds(name: &str, want: &BTreeSet<IpAddr>, ttl: u32) -> Vec<Update> {
    want.iter()
        .map(|ip| {
            Update::Add(Record {
                name: name.to_string(),
                ttl,
                data: match ip {
                    IpAddr::V4(v4) => RecordData::A(*v4),
                    IpAddr::V6(v6) => RecordData::Aaaa(*v6),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, data: RecordData) -> Record {
        Record {
            name: name.into(),
            ttl: 300,
            data,
        }
    }
    fn a(name: &str, ip: &str) -> Record {
        rec(name, RecordData::A(ip.parse().unwrap()))
    }
    fn txt(name: &str, t: &str) -> Record {
        rec(name, RecordData::Txt(t.into()))
    }
    fn want(pairs: &[(&str, &str)]) -> Desired {
        let mut d = Desired::new();
        for (n, ip) in pairs {
            d.entry(n.to_string())
                .or_default()
                .insert(ip.parse().unwrap());
        }
        d
    }

    #[test]
    fn new_names_are_created_only_where_nobody_wrote_addresses() {
        let zone = vec![a("hand.z", "10.0.0.9"), txt("spf.z", "v=spf1 -all")];
        let p = plan(
            &zone,
            "ext",
            &want(&[
                ("hand.z", "10.0.0.1"),
                ("new.z", "10.0.0.1"),
                ("spf.z", "10.0.0.2"),
            ]),
            300,
        );
        assert_eq!(p.foreign, vec!["hand.z".to_string()]);
        let kinds: Vec<_> = p
            .changes
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![("new.z", ChangeKind::Create), ("spf.z", ChangeKind::Create)]
        );
        let create = &p.changes[0];
        assert!(create.prerequisites.contains(&Prerequisite::RrsetAbsent {
            name: "new.z".into(),
            type_name: "A".into()
        }));
        assert!(
            create
                .updates
                .contains(&Update::Add(txt("new.z", &owner_txt("ext"))))
        );
    }

    #[test]
    fn owned_names_change_and_go_and_other_owners_are_foreign() {
        let zone = vec![
            a("www.z", "10.0.0.1"),
            txt("www.z", &owner_txt("ext")),
            a("old.z", "10.0.0.3"),
            txt("old.z", &owner_txt("ext")),
            a("same.z", "10.0.0.4"),
            txt("same.z", &owner_txt("ext")),
            a("theirs.z", "10.0.0.5"),
            txt("theirs.z", &owner_txt("other")),
        ];
        let p = plan(
            &zone,
            "ext",
            &want(&[
                ("www.z", "10.0.0.2"),
                ("same.z", "10.0.0.4"),
                ("theirs.z", "10.0.0.6"),
            ]),
            300,
        );
        assert_eq!(p.unchanged, 1);
        assert_eq!(p.foreign, vec!["theirs.z".to_string()]);
        let kinds: Vec<_> = p
            .changes
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![("www.z", ChangeKind::Change), ("old.z", ChangeKind::Delete)]
        );
        assert!(p.changes[1].updates.contains(&Update::Delete(Record {
            ttl: 0,
            ..txt("old.z", &owner_txt("ext"))
        })));
        assert_eq!(owned_addresses(&zone, "ext").len(), 3);
    }

    #[test]
    fn a_ttl_change_rewrites_the_name() {
        let zone = vec![a("www.z", "10.0.0.1"), txt("www.z", &owner_txt("ext"))];
        let p = plan(&zone, "ext", &want(&[("www.z", "10.0.0.1")]), 60);
        assert_eq!(p.changes.len(), 1);
        assert_eq!(p.changes[0].kind, ChangeKind::Change);
    }
}
