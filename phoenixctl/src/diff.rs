//! `phoenixctl diff -f PATH`: what applying would change (spec, labels, annotations), as a
//! unified diff; exit 0 without differences, 1 with.

use clap::Args;
use phoenix_api::Object;
use phoenix_api::client::ClientError;
use serde_json::Value;

use crate::conn::ConnArgs;
use crate::exit::{CmdResult, Code, Failure};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// A file, a directory (recursive) or `-`. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
}

/// One line of an edit script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// In both.
    Same(&'a str),
    /// Only in the old text.
    Del(&'a str),
    /// Only in the new text.
    Add(&'a str),
}

/// A shortest edit script from `a` to `b` (longest common subsequence of lines).
pub fn lcs<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<Op<'a>> {
    let pre = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let (n, m) = (am.len(), bm.len());
    // t[i][j]: LCS length of am[i..] and bm[j..].
    let mut t = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            t[i][j] = if am[i] == bm[j] {
                t[i + 1][j + 1] + 1
            } else {
                t[i + 1][j].max(t[i][j + 1])
            };
        }
    }
    let mut ops: Vec<Op> = a[..pre].iter().map(|l| Op::Same(l)).collect();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && am[i] == bm[j] {
            ops.push(Op::Same(am[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || t[i + 1][j] >= t[i][j + 1]) {
            ops.push(Op::Del(am[i]));
            i += 1;
        } else {
            ops.push(Op::Add(bm[j]));
            j += 1;
        }
    }
    ops.extend(a[a.len() - suf..].iter().map(|l| Op::Same(l)));
    ops
}

/// A unified diff of `old` and `new` with `context` lines around changes; `None` when equal.
pub fn unified(
    old_name: &str,
    new_name: &str,
    old: &str,
    new: &str,
    context: usize,
) -> Option<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = lcs(&a, &b);
    let changes: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| !matches!(o, Op::Same(_)))
        .map(|(i, _)| i)
        .collect();
    if changes.is_empty() {
        return None;
    }
    // Group changes into hunks whose contexts touch.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &c in &changes {
        let start = c.saturating_sub(context);
        let end = (c + context + 1).min(ops.len());
        match hunks.last_mut() {
            Some(h) if start <= h.1 => h.1 = end,
            _ => hunks.push((start, end)),
        }
    }
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    for (start, end) in hunks {
        let before = &ops[..start];
        let a_start = before.iter().filter(|o| !matches!(o, Op::Add(_))).count();
        let b_start = before.iter().filter(|o| !matches!(o, Op::Del(_))).count();
        let body = &ops[start..end];
        let a_len = body.iter().filter(|o| !matches!(o, Op::Add(_))).count();
        let b_len = body.iter().filter(|o| !matches!(o, Op::Del(_))).count();
        let pos = |s: usize, l: usize| if l == 0 { s } else { s + 1 };
        out.push_str(&format!(
            "@@ -{},{a_len} +{},{b_len} @@\n",
            pos(a_start, a_len),
            pos(b_start, b_len)
        ));
        for o in body {
            match o {
                Op::Same(l) => out.push_str(&format!(" {l}\n")),
                Op::Del(l) => out.push_str(&format!("-{l}\n")),
                Op::Add(l) => out.push_str(&format!("+{l}\n")),
            }
        }
    }
    Some(out)
}

/// What `diff` compares: the object without status and server-set metadata.
pub fn comparable(o: &Object) -> Value {
    let mut v = o.to_json_value();
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
        let m = o.metadata();
        let mut meta = serde_json::Map::new();
        meta.insert("name".into(), Value::String(m.name.clone()));
        if !m.labels.is_empty() {
            meta.insert(
                "labels".into(),
                serde_json::to_value(&m.labels).expect("maps"),
            );
        }
        if !m.annotations.is_empty() {
            meta.insert(
                "annotations".into(),
                serde_json::to_value(&m.annotations).expect("maps"),
            );
        }
        map.insert("metadata".into(), Value::Object(meta));
    }
    v
}

/// Hides Secret values in both sides, marking the ones that change.
pub fn redact(live: &mut Value, local: &mut Value) {
    let live_data = live.get("data").cloned().unwrap_or(Value::Null);
    for (v, is_local) in [(local, true), (live, false)] {
        if let Some(d) = v.get_mut("data").and_then(Value::as_object_mut) {
            for (k, val) in d.iter_mut() {
                let changed = is_local && live_data.get(k) != Some(&*val);
                *val = Value::String(if changed {
                    "<redacted, changed>".into()
                } else {
                    "<redacted>".into()
                });
            }
        }
    }
}

pub async fn run(args: &DiffArgs, conn: &ConnArgs) -> CmdResult {
    let docs = crate::apply::load(&args.files)?;
    let client = conn.connect().await?;
    let mut differs = false;
    for d in &docs {
        let local = &d.object;
        let key = local.key();
        let mut want = comparable(local);
        let live = match client.get(local.kind(), local.name()).await {
            Ok(o) => {
                let mut live = comparable(&o);
                redact(&mut live, &mut want);
                crate::table::yaml_value(&live)?
            }
            Err(ClientError::NotFound(_)) => {
                redact(&mut want.clone(), &mut want);
                String::new()
            }
            Err(e) => return Err(e.into()),
        };
        let want = crate::table::yaml_value(&want)?;
        if let Some(text) = unified(
            &format!("live/{key}"),
            &format!("local/{key}"),
            &live,
            &want,
            3,
        ) {
            differs = true;
            out!("{text}");
        }
    }
    if differs {
        Err(Failure::new(Code::Failure, ""))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a", "b", "x\ny\n", "x\ny\n", 3), None);
    }

    #[test]
    fn one_changed_line_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\n";
        assert_eq!(
            unified("live", "local", old, new, 2).unwrap(),
            "--- live\n+++ local\n@@ -3,5 +3,5 @@\n c\n d\n-e\n+E\n f\n g\n"
        );
    }

    #[test]
    fn new_object_is_all_additions() {
        assert_eq!(
            unified("live", "local", "", "x\ny\n", 3).unwrap(),
            "--- live\n+++ local\n@@ -0,0 +1,2 @@\n+x\n+y\n"
        );
    }

    #[test]
    fn far_apart_changes_make_two_hunks() {
        let old: String = (0..20).map(|i| format!("{i}\n")).collect();
        let new: String = (0..20)
            .map(|i| match i {
                2 => "two\n".to_string(),
                17 => "seventeen\n".to_string(),
                i => format!("{i}\n"),
            })
            .collect();
        let d = unified("a", "b", &old, &new, 1).unwrap();
        assert_eq!(d.matches("@@ -").count(), 2, "{d}");
        assert!(d.contains("-2\n+two\n"), "{d}");
        assert!(d.contains("-17\n+seventeen\n"), "{d}");
    }

    #[test]
    fn secret_values_are_hidden_but_changes_show() {
        let mut live = serde_json::json!({"data": {"a": "MQ==", "b": "Mg=="}});
        let mut local = serde_json::json!({"data": {"a": "MQ==", "b": "Mw==", "c": "NA=="}});
        redact(&mut live, &mut local);
        assert_eq!(live["data"]["b"], "<redacted>");
        assert_eq!(local["data"]["a"], "<redacted>");
        assert_eq!(local["data"]["b"], "<redacted, changed>");
        assert_eq!(local["data"]["c"], "<redacted, changed>");
    }

    #[test]
    fn lcs_keeps_common_lines() {
        let ops = lcs(&["a", "b", "c"], &["a", "x", "c"]);
        assert_eq!(
            ops,
            vec![Op::Same("a"), Op::Del("b"), Op::Add("x"), Op::Same("c")]
        );
    }
}
