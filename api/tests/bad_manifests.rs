//! The bad-manifest corpus: every file under `tests/bad/` must be rejected with the exact
//! field path and reason its `# expect:` lines give, and nothing in it may be admitted.
//! Generated cases cover what is impractical to keep as a file (10 MB, non-UTF-8 bytes).

use std::path::Path;

use phoenix_api::{Source, load_source};

/// Every problem line for `source` and the number of documents admitted.
fn problems(source: &Source) -> (Vec<String>, usize) {
    let mut lines = Vec::new();
    let mut admitted = 0;
    for r in load_source(source) {
        match r {
            Ok(_) => admitted += 1,
            Err(e) => lines.extend(e.lines()),
        }
    }
    (lines, admitted)
}

#[test]
fn every_bad_manifest_is_rejected_with_its_field_path_and_reason() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 60, "the corpus has {} files", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no # expect: line",
            file.display()
        );
        let source = Source {
            name: file.display().to_string(),
            bytes,
        };
        let (lines, admitted) = problems(&source);
        if admitted != 0 {
            failures.push(format!(
                "{}: {admitted} document(s) admitted",
                file.display()
            ));
        }
        for expect in expects {
            if !lines.iter().any(|l| l.contains(expect)) {
                failures.push(format!(
                    "{}: expected an error containing\n    {expect}\n  got\n    {}",
                    file.display(),
                    lines.join("\n    ")
                ));
            }
        }
        for l in &lines {
            assert!(
                l.starts_with(&source.name),
                "every error names its file: {l}"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_ten_megabyte_document_is_rejected_before_parsing() {
    let mut text = String::from(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Stack\nmetadata: {name: big}\nspec:\n  compose: |\n",
    );
    while text.len() < 10 * 1024 * 1024 {
        text.push_str("    # padding padding padding padding padding padding padding padding\n");
    }
    let (lines, admitted) = problems(&Source {
        name: "big.yaml".into(),
        bytes: text.into_bytes(),
    });
    assert_eq!(admitted, 0);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].contains("big.yaml (document 1) line 1: the document is")
            && lines[0].contains("more than the limit of 1048576 bytes"),
        "{}",
        lines[0]
    );
}

#[test]
fn non_utf8_bytes_are_rejected_with_their_position() {
    let mut bytes =
        b"apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: we".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, b'\n']);
    let (lines, admitted) = problems(&Source {
        name: "latin1.yaml".into(),
        bytes,
    });
    assert_eq!(admitted, 0);
    assert_eq!(
        lines,
        vec!["latin1.yaml line 4 column 11: the input is not valid UTF-8".to_string()]
    );
}

#[test]
fn one_bad_document_does_not_hide_the_others() {
    let text = "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata: {name: a}\nspec: {type: lxc, cores: x}\n---\napiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata: {name: B}\nspec: {type: lxc, source: {template: \"local:vztmpl/x.tar.zst\"}}\n";
    let (lines, admitted) = problems(&Source {
        name: "two.yaml".into(),
        bytes: text.as_bytes().to_vec(),
    });
    assert_eq!(admitted, 0);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("two.yaml (document 1) line 4 column"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with("spec.cores: invalid u32"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(
            "two.yaml (document 2, line 5): guest/B: metadata.name: \"B\" is not a valid name"
        ),
        "{}",
        lines[1]
    );
}
