//! `phoenixctl annotate` and `phoenixctl label`: change an object's annotations or labels.
//!
//! Only metadata is written (the server's metadata update, compare-and-swap on the object's
//! resourceVersion, retried on a conflict), so it also works on an object that is being
//! deleted, whose spec can no longer change: this is how the
//! `phoenix.thinkheads.ai/deletion-policy: Retain` annotation frees a stuck deletion
//! (ADR 0022).

use std::collections::BTreeMap;

use clap::Args;
use phoenix_api::client::ClientError;

use crate::conn::ConnArgs;
use crate::exit::{CmdResult, Code, Failure};
use crate::get::parse_kind;

/// Arguments shared by `annotate` and `label`.
#[derive(Debug, Args)]
pub struct MetadataArgs {
    /// The object's kind.
    kind: String,
    /// The object's name.
    name: String,
    /// `KEY=VALUE` to set, `KEY-` to remove.
    #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
    changes: Vec<String>,
    /// Replace a key that already has another value (without it, that is an error).
    #[arg(long)]
    overwrite: bool,
}

/// Which map of the metadata a command changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `metadata.annotations`.
    Annotations,
    /// `metadata.labels`.
    Labels,
}

impl Field {
    fn singular(self) -> &'static str {
        match self {
            Field::Annotations => "annotation",
            Field::Labels => "label",
        }
    }
}

/// One requested change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Set(String, String),
    Remove(String),
}

fn parse_change(s: &str) -> Result<Change, Failure> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => return Ok(Change::Set(k.to_string(), v.to_string())),
        Some(_) => {}
        None => match s.strip_suffix('-') {
            Some(k) if !k.is_empty() => return Ok(Change::Remove(k.to_string())),
            _ => {}
        },
    }
    Err(Failure::new(
        Code::Failure,
        format!("{s:?}: expected KEY=VALUE to set or KEY- to remove"),
    ))
}

/// Applies `changes` to `map`; `Ok(false)` when nothing would change. A key set to another
/// value needs `overwrite`.
fn apply_changes(
    map: &mut BTreeMap<String, String>,
    changes: &[Change],
    overwrite: bool,
    field: Field,
) -> Result<bool, Failure> {
    let mut changed = false;
    for c in changes {
        match c {
            Change::Set(k, v) => match map.get(k) {
                Some(old) if old == v => {}
                Some(_) if !overwrite => {
                    return Err(Failure::new(
                        Code::Conflict,
                        format!(
                            "{} {k:?} already has a value; pass --overwrite to replace it",
                            field.singular()
                        ),
                    ));
                }
                _ => {
                    map.insert(k.clone(), v.clone());
                    changed = true;
                }
            },
            Change::Remove(k) => changed |= map.remove(k).is_some(),
        }
    }
    Ok(changed)
}

/// Runs `annotate` or `label`.
pub async fn run(args: &MetadataArgs, field: Field, conn: &ConnArgs) -> CmdResult {
    let kind = parse_kind(&args.kind)?;
    let changes = args
        .changes
        .iter()
        .map(|s| parse_change(s))
        .collect::<Result<Vec<_>, _>>()?;
    let client = conn.connect().await?;
    // A controller may write the object's status or finalizers meanwhile: read again and
    // retry on a conflict, a few times.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut object = client.get(kind, &args.name).await?;
        let meta = object.metadata_mut();
        let map = match field {
            Field::Annotations => &mut meta.annotations,
            Field::Labels => &mut meta.labels,
        };
        if !apply_changes(map, &changes, args.overwrite, field)? {
            outln!("{} unchanged", object.key());
            return Ok(());
        }
        match client.update_metadata(&object).await {
            Ok(o) => {
                outln!("{} {}", o.key(), past(field));
                return Ok(());
            }
            Err(ClientError::Conflict(_)) if attempt < 5 => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn past(field: Field) -> &'static str {
    match field {
        Field::Annotations => "annotated",
        Field::Labels => "labeled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse() {
        assert_eq!(
            parse_change("a/b=c").unwrap(),
            Change::Set("a/b".into(), "c".into())
        );
        assert_eq!(
            parse_change("k=").unwrap(),
            Change::Set("k".into(), "".into())
        );
        assert_eq!(parse_change("k-").unwrap(), Change::Remove("k".into()));
        for bad in ["k", "=v", "-", ""] {
            let e = parse_change(bad).unwrap_err();
            assert!(e.message.contains("KEY=VALUE"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn overwrite_is_needed_to_replace_a_value() {
        let mut m = BTreeMap::from([("k".to_string(), "a".to_string())]);
        let set_b = [Change::Set("k".into(), "b".into())];
        let e = apply_changes(&mut m, &set_b, false, Field::Labels).unwrap_err();
        assert!(
            e.message.contains("label \"k\" already has a value"),
            "{}",
            e.message
        );
        assert_eq!(m["k"], "a");
        assert!(apply_changes(&mut m, &set_b, true, Field::Labels).unwrap());
        assert_eq!(m["k"], "b");
        // The same value again, or removing a missing key: nothing to write.
        assert!(!apply_changes(&mut m, &set_b, false, Field::Labels).unwrap());
        assert!(
            !apply_changes(&mut m, &[Change::Remove("x".into())], false, Field::Labels).unwrap()
        );
        assert!(
            apply_changes(&mut m, &[Change::Remove("k".into())], false, Field::Labels).unwrap()
        );
        assert!(m.is_empty());
    }
}
