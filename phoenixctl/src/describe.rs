//! `phoenixctl describe KIND NAME`: metadata, spec, status, conditions and recent events.

use clap::Args;
use jiff::Timestamp;
use phoenix_api::{Kind, Object};
use serde_json::Value;

use crate::conn::ConnArgs;
use crate::exit::CmdResult;
use crate::table::{self, age_since};

/// How many events `describe` shows.
const RECENT_EVENTS: usize = 20;

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The object's kind.
    kind: String,
    /// The object's name.
    name: String,
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

fn map_lines(label: &str, m: &std::collections::BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return format!("{label:<18}<none>\n");
    }
    let mut s = String::new();
    for (i, (k, v)) in m.iter().enumerate() {
        let l = if i == 0 { label } else { "" };
        s.push_str(&format!("{l:<18}{k}={v}\n"));
    }
    s
}

/// The description of `o` with its `events` (already filtered), at `now`.
pub fn render(
    o: &Object,
    events: &[Object],
    now: Timestamp,
) -> Result<String, crate::exit::Failure> {
    let m = o.metadata();
    let mut s = String::new();
    s.push_str(&format!("{:<18}{}\n", "Name:", m.name));
    s.push_str(&format!("{:<18}{}\n", "Kind:", o.kind()));
    s.push_str(&map_lines("Labels:", &m.labels));
    s.push_str(&map_lines("Annotations:", &m.annotations));
    let opt = |v: Option<String>| v.unwrap_or_else(|| "<none>".into());
    s.push_str(&format!("{:<18}{}\n", "UID:", opt(m.uid.clone())));
    s.push_str(&format!(
        "{:<18}{}\n",
        "ResourceVersion:",
        opt(m.resource_version.clone())
    ));
    s.push_str(&format!(
        "{:<18}{}\n",
        "Generation:",
        opt(m.generation.map(|g| g.to_string()))
    ));
    s.push_str(&format!(
        "{:<18}{}\n",
        "Created:",
        match m.creation_timestamp {
            Some(t) => format!("{t} ({} ago)", age_since(Some(t), now)),
            None => "<none>".into(),
        }
    ));
    if let Some(t) = m.deletion_timestamp {
        s.push_str(&format!("{:<18}{t}\n", "Deleting since:"));
    }
    s.push_str(&format!(
        "{:<18}{}\n",
        "Finalizers:",
        if m.finalizers.is_empty() {
            "<none>".into()
        } else {
            m.finalizers.join(", ")
        }
    ));
    if !m.owner_references.is_empty() {
        let owners: Vec<String> = m
            .owner_references
            .iter()
            .map(|r| format!("{}/{}", r.kind.to_ascii_lowercase(), r.name))
            .collect();
        s.push_str(&format!("{:<18}{}\n", "Owners:", owners.join(", ")));
    }
    let mut v = o.to_json_value();
    let obj = v.as_object_mut().expect("objects serialize to maps");
    obj.remove("apiVersion");
    obj.remove("kind");
    obj.remove("metadata");
    let status = obj.remove("status");
    if o.kind().has_spec() {
        if let Some(spec) = obj.remove("spec") {
            s.push_str("Spec:\n");
            s.push_str(&indent(&table::yaml_value(&spec)?, 2));
        }
    } else if !obj.is_empty() {
        if let Some(d) = obj.get_mut("data").and_then(Value::as_object_mut) {
            // Never print secret values.
            for val in d.values_mut() {
                *val = Value::String("<redacted>".into());
            }
        }
        if let Some(d) = obj.get_mut("stringData").and_then(Value::as_object_mut) {
            for val in d.values_mut() {
                *val = Value::String("<redacted>".into());
            }
        }
        s.push_str("Content:\n");
        s.push_str(&indent(&table::yaml_value(&Value::Object(obj.clone()))?, 2));
    }
    let mut conditions = Vec::new();
    if let Some(Value::Object(mut st)) = status {
        if let Some(Value::Array(cs)) = st.remove("conditions") {
            conditions = cs;
        }
        s.push_str("Status:\n");
        if st.is_empty() {
            s.push_str("  <none>\n");
        } else {
            s.push_str(&indent(&table::yaml_value(&Value::Object(st))?, 2));
        }
    } else if o.kind().has_spec() {
        s.push_str("Status:\n  <none>\n");
    }
    if o.kind().has_spec() {
        s.push_str("Conditions:\n");
        if conditions.is_empty() {
            s.push_str("  <none>\n");
        } else {
            let field =
                |c: &Value, f: &str| c.get(f).and_then(Value::as_str).unwrap_or("").to_string();
            let mut rows = vec![
                ["TYPE", "STATUS", "REASON", "MESSAGE", "AGE"]
                    .map(String::from)
                    .to_vec(),
            ];
            for c in &conditions {
                let t = field(c, "lastTransitionTime").parse::<Timestamp>().ok();
                rows.push(vec![
                    field(c, "type"),
                    field(c, "status"),
                    field(c, "reason"),
                    field(c, "message"),
                    age_since(t, now),
                ]);
            }
            for l in table::render(&rows) {
                s.push_str(&format!("  {l}\n"));
            }
        }
    }
    s.push_str("Events:\n");
    if events.is_empty() {
        s.push_str("  <none>\n");
    } else {
        let mut rows = vec![
            ["TYPE", "REASON", "AGE", "COUNT", "MESSAGE"]
                .map(String::from)
                .to_vec(),
        ];
        for e in events {
            if let Object::Event(e) = e {
                rows.push(vec![
                    format!("{:?}", e.type_),
                    e.reason.clone(),
                    age_since(Some(e.last_timestamp), now),
                    e.count.to_string(),
                    e.message.clone(),
                ]);
            }
        }
        for l in table::render(&rows) {
            s.push_str(&format!("  {l}\n"));
        }
    }
    Ok(s)
}

/// Events about `kind/name`, oldest first.
pub fn events_for(all: Vec<Object>, kind: Kind, name: &str) -> Vec<Object> {
    let mut evs: Vec<Object> = all
        .into_iter()
        .filter(|e| match e {
            Object::Event(e) => {
                e.involved_object.kind == kind.name() && e.involved_object.name == name
            }
            _ => false,
        })
        .collect();
    evs.sort_by_key(|e| match e {
        Object::Event(e) => Some(e.last_timestamp),
        _ => None,
    });
    // The most recent ones.
    let skip = evs.len().saturating_sub(RECENT_EVENTS);
    evs.split_off(skip)
}

pub async fn run(args: &DescribeArgs, conn: &ConnArgs) -> CmdResult {
    let kind = crate::get::parse_kind(&args.kind)?;
    let client = conn.connect().await?;
    let o = client.get(kind, &args.name).await?;
    let events = match client.list_all(Kind::Event, "").await {
        Ok(page) => events_for(page.items, kind, &args.name),
        Err(e) => {
            eprintln!("warning: cannot list events: {e}");
            Vec::new()
        }
    };
    out!("{}", render(&o, &events, Timestamp::now())?);
    Ok(())
}
