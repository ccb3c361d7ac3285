//! The pure steps of one sync: decoding a snapshot as one unit, ownership, pruning plans.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use phoenix_api::kinds::git_sync::{GITSYNC_LABEL, InventoryEntry};
use phoenix_api::{Kind, Object, Source, load_source};

use crate::git::Snapshot;

/// One document of a file, decoded and admitted (or its problems).
#[derive(Debug, Clone)]
enum FileDoc {
    Object {
        object: Box<Object>,
        /// `FILE (document N, line L)`.
        here: String,
    },
    Problems(Vec<String>),
}

/// The decoded documents of the files of the last snapshot, by path, with the bytes they
/// came from: a file whose bytes did not change is not decoded again (decoding is
/// deterministic). Holds only the files of the last snapshot decoded with it.
#[derive(Debug, Default)]
pub struct DecodeCache {
    files: HashMap<String, (Vec<u8>, Vec<FileDoc>)>,
}

impl DecodeCache {
    /// How many files it holds.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether it holds no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Decodes one file's documents.
fn decode_file(path: &str, bytes: &[u8]) -> Vec<FileDoc> {
    let source = Source {
        name: path.to_string(),
        bytes: bytes.to_vec(),
    };
    load_source(&source)
        .into_iter()
        .map(|result| match result {
            Err(e) => FileDoc::Problems(e.lines()),
            Ok(doc) => FileDoc::Object {
                here: format!("{} (document {}, line {})", doc.source, doc.index, doc.line),
                object: Box::new(doc.object),
            },
        })
        .collect()
}

/// Decodes the files `todo` (indices into `files`), on up to 4 threads when there are many.
fn decode_files(files: &[(String, Vec<u8>)], todo: &[usize]) -> Vec<(usize, Vec<FileDoc>)> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    let one = |i: usize| (i, decode_file(&files[i].0, &files[i].1));
    if threads < 2 || todo.len() < 32 {
        return todo.iter().map(|&i| one(i)).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = todo
            .chunks(todo.len().div_ceil(threads))
            .map(|ids| scope.spawn(move || ids.iter().map(|&i| one(i)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a decoding thread panicked"))
            .collect()
    })
}

/// Decodes and admits every document of `snapshot` exactly as `phoenixctl apply` does, and
/// labels each object with `phoenix.thinkheads.ai/gitsync: owner`.
///
/// # Guarantees
/// All or nothing: `Ok` only when every document of every file is valid and no `kind/name`
/// appears twice; objects come in apply order (dependencies first, [`Kind::ALL`]).
///
/// # Errors
/// Every problem, one line each: `FILE (document N, line L): kind/name: FIELD: REASON`.
/// Events and GitSyncs that would label themselves are rejected too.
pub fn decode_snapshot(snapshot: &Snapshot, owner: &str) -> Result<Vec<Object>, Vec<String>> {
    decode_snapshot_cached(snapshot, owner, &mut DecodeCache::default())
}

/// [`decode_snapshot`], decoding only the files whose bytes differ from those in `cache`;
/// `cache` then holds this snapshot's files. Same result as [`decode_snapshot`].
pub fn decode_snapshot_cached(
    snapshot: &Snapshot,
    owner: &str,
    cache: &mut DecodeCache,
) -> Result<Vec<Object>, Vec<String>> {
    let mut previous = std::mem::take(&mut cache.files);
    let mut decoded: Vec<Option<Vec<FileDoc>>> = snapshot
        .files
        .iter()
        .map(|(path, bytes)| match previous.remove(path) {
            Some((old, docs)) if old == *bytes => Some(docs),
            _ => None,
        })
        .collect();
    let todo: Vec<usize> = (0..decoded.len())
        .filter(|&i| decoded[i].is_none())
        .collect();
    for (i, docs) in decode_files(&snapshot.files, &todo) {
        decoded[i] = Some(docs);
    }
    let mut problems = Vec::new();
    let mut objects: Vec<Object> = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for ((path, bytes), docs) in snapshot.files.iter().zip(decoded) {
        let docs = docs.expect("every file is decoded");
        for doc in &docs {
            match doc {
                FileDoc::Problems(lines) => problems.extend(lines.iter().cloned()),
                FileDoc::Object { object, here } => {
                    let key = object.key();
                    if object.kind() == Kind::Event {
                        problems.push(format!("{here}: {key}: Events are not applied from Git"));
                    }
                    if let Some(first) = seen.insert(key.clone(), here.clone()) {
                        problems.push(format!("{here}: {key} is also defined in {first}"));
                    }
                    objects.push((**object).clone());
                }
            }
        }
        cache.files.insert(path.clone(), (bytes.clone(), docs));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    for object in &mut objects {
        object
            .metadata_mut()
            .labels
            .insert(GITSYNC_LABEL.to_string(), owner.to_string());
    }
    objects.sort_by_key(|o| Kind::ALL.iter().position(|k| *k == o.kind()));
    Ok(objects)
}

/// The inventory entry of an object.
pub fn entry_of(object: &Object) -> InventoryEntry {
    InventoryEntry {
        kind: object.kind().name().to_string(),
        name: object.name().to_string(),
    }
}

/// Who owns an existing object, as its label says.
pub fn owner_of(existing: &Object) -> Option<&str> {
    existing
        .metadata()
        .labels
        .get(GITSYNC_LABEL)
        .map(String::as_str)
}

/// Why `existing` may not be taken over by GitSync `owner`, or `None` when it may.
pub fn conflict(existing: &Object, owner: &str) -> Option<String> {
    conflict_of(&existing.key(), owner_of(existing), owner)
}

/// [`conflict`] for the object `key` whose label names `existing_owner`.
pub fn conflict_of(key: &str, existing_owner: Option<&str>, owner: &str) -> Option<String> {
    match existing_owner {
        Some(o) if o == owner => None,
        Some(other) => Some(format!("{key} belongs to GitSync {other:?}")),
        None => Some(format!(
            "{key} exists and is not managed by a GitSync (no {GITSYNC_LABEL} label)"
        )),
    }
}

/// The entries of `previous` that `current` no longer holds, in reverse apply order
/// (dependents first).
pub fn to_prune(previous: &[InventoryEntry], current: &[InventoryEntry]) -> Vec<InventoryEntry> {
    let keep: BTreeSet<&InventoryEntry> = current.iter().collect();
    let mut gone: Vec<InventoryEntry> = previous
        .iter()
        .filter(|e| !keep.contains(e))
        .cloned()
        .collect();
    gone.sort_by_key(|e| {
        std::cmp::Reverse(
            e.kind
                .parse::<Kind>()
                .ok()
                .and_then(|k| Kind::ALL.iter().position(|x| *x == k)),
        )
    });
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(files: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            commit: "0".repeat(40),
            files: files
                .iter()
                .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
                .collect(),
        }
    }

    const SECRET: &str = "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {name: NAME}\ntype: Opaque\nstringData: {k: v}\n";

    #[test]
    fn valid_documents_are_labelled_and_ordered_dependencies_first() {
        let stack = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../manifests/samples/stack.yaml"
        ))
        .unwrap();
        let a = SECRET.replace("NAME", "a");
        let b = SECRET.replace("NAME", "b");
        let multi = format!("{stack}---\n{a}");
        let snap = snapshot(&[("apps/all.yaml", &multi), ("z/b.yml", &b)]);
        let objects = decode_snapshot(&snap, "estate").unwrap();
        let keys: Vec<String> = objects.iter().map(Object::key).collect();
        assert_eq!(keys, ["secret/a", "secret/b", "stack/demo"]);
        for o in &objects {
            assert_eq!(o.metadata().labels[GITSYNC_LABEL], "estate");
        }
    }

    #[test]
    fn one_invalid_document_rejects_the_whole_snapshot_naming_file_document_line_and_field() {
        let good = SECRET.replace("NAME", "good");
        let bad = "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Stack\nmetadata: {name: bad}\nspec:\n  target: {docker: {endpoint: \"unix:///d.sock\"}}\n  compose: |\n    services: {web: {image: x}}\n  env: {\"1x\": y}\n";
        let snap = snapshot(&[("a.yaml", &good), ("b.yaml", &format!("{good}---\n{bad}"))]);
        let problems = decode_snapshot(&snap, "estate").unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("b.yaml (document 2, line ")
                    && p.contains("stack/bad: spec.env[\"1x\"]")),
            "{problems:?}"
        );
    }

    #[test]
    fn the_cache_decodes_changed_files_only_and_gives_the_same_result() {
        let a = SECRET.replace("NAME", "a");
        let b = SECRET.replace("NAME", "b");
        let mut cache = DecodeCache::default();
        let first = snapshot(&[("a.yaml", &a), ("b.yaml", &b)]);
        let plain = decode_snapshot(&first, "o").unwrap();
        assert_eq!(
            decode_snapshot_cached(&first, "o", &mut cache).unwrap(),
            plain
        );
        assert_eq!(cache.len(), 2);
        // Same bytes again: served from the cache, same objects.
        assert_eq!(
            decode_snapshot_cached(&first, "o", &mut cache).unwrap(),
            plain
        );
        // A changed file is decoded again; a removed one leaves the cache.
        let bad =
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {name: Bad_}\n";
        let second = snapshot(&[("a.yaml", bad)]);
        let problems = decode_snapshot_cached(&second, "o", &mut cache).unwrap_err();
        assert_eq!(problems, decode_snapshot(&second, "o").unwrap_err());
        assert_eq!(cache.len(), 1);
        // Duplicates across cached files are still found.
        let third = snapshot(&[("a.yaml", &a), ("c.yaml", &a)]);
        let problems = decode_snapshot_cached(&third, "o", &mut cache).unwrap_err();
        assert!(
            problems[0].contains("is also defined in a.yaml"),
            "{problems:?}"
        );
    }

    #[test]
    fn many_files_decode_on_threads_in_file_order_with_problems_found() {
        let texts: Vec<(String, String)> = (0..40)
            .map(|i| {
                (
                    format!("f{i:02}.yaml"),
                    SECRET.replace("NAME", &format!("s{i:02}")),
                )
            })
            .collect();
        let files: Vec<(&str, &str)> = texts
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        let objects = decode_snapshot(&snapshot(&files), "o").unwrap();
        let keys: Vec<String> = objects.iter().map(Object::key).collect();
        let expected: Vec<String> = (0..40).map(|i| format!("secret/s{i:02}")).collect();
        assert_eq!(keys, expected);
        let mut with_dup = files.clone();
        with_dup.push(("z.yaml", files[3].1));
        let problems = decode_snapshot(&snapshot(&with_dup), "o").unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("z.yaml (document 1"),
            "{problems:?}"
        );
        assert!(
            problems[0].contains("secret/s03 is also defined in f03.yaml"),
            "{problems:?}"
        );
    }

    #[test]
    fn duplicates_and_events_are_problems() {
        let a = SECRET.replace("NAME", "a");
        let problems =
            decode_snapshot(&snapshot(&[("x.yaml", &a), ("y.yaml", &a)]), "o").unwrap_err();
        assert!(
            problems[0].contains("secret/a is also defined in x.yaml"),
            "{problems:?}"
        );
    }

    #[test]
    fn only_own_objects_may_be_taken_over() {
        let mut o: Object = phoenix_api::decode::decode_str("s.yaml", &SECRET.replace("NAME", "s"))
            .unwrap()
            .remove(0);
        assert!(
            conflict(&o, "estate")
                .unwrap()
                .contains("not managed by a GitSync")
        );
        o.metadata_mut()
            .labels
            .insert(GITSYNC_LABEL.into(), "other".into());
        assert!(
            conflict(&o, "estate")
                .unwrap()
                .contains("GitSync \"other\"")
        );
        assert_eq!(conflict(&o, "other"), None);
    }

    #[test]
    fn prune_takes_only_what_left_the_inventory_dependents_first() {
        let e = |k: &str, n: &str| InventoryEntry {
            kind: k.into(),
            name: n.into(),
        };
        let previous = [e("Secret", "s"), e("Stack", "a"), e("Stack", "b")];
        let current = [e("Stack", "a")];
        assert_eq!(
            to_prune(&previous, &current),
            [e("Stack", "b"), e("Secret", "s")]
        );
        assert!(to_prune(&current, &previous).is_empty());
    }

    #[test]
    fn problems_in_a_secret_never_echo_its_values() {
        for doc in [
            "stringData: s3cr3t\n",
            "data: {k: s3cr3t}\n",
            "stringData: {k: [s3cr3t]}\n",
            "stringData: {k: \"s3cr3t\n",
        ] {
            let text = format!(
                "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {{name: s}}\ntype: Opaque\n{doc}"
            );
            let problems = decode_snapshot(&snapshot(&[("f.yaml", &text)]), "o").unwrap_err();
            assert!(!problems.is_empty());
            for p in problems {
                assert!(p.starts_with("f.yaml (document 1"), "{p}");
                assert!(!p.contains("s3cr3t"), "{p}");
            }
        }
    }
}
