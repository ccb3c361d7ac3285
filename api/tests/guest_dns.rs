//! `nameservers`/`searchDomain`: absent (not managed) and empty (removed) stay distinct through
//! decoding, admission and YAML; the shipped examples decode as before.

use std::path::Path;

use phoenix_api::kinds::Guest;
use phoenix_api::{Object, admit, decode, load_paths};

fn guest(tail: &str) -> Guest {
    let yaml = format!(
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: web\nspec:\n  type: lxc\n  vmid: 150\n  source:\n    template: local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst\n  rootfs: {{storage: local-lvm, sizeGiB: 8}}\n{tail}"
    );
    let object = decode::decode_str("test", &yaml).unwrap().remove(0);
    let object = admit(object).unwrap_or_else(|e| panic!("{e}"));
    Guest::try_from(object).unwrap()
}

fn round_trip(g: &Guest) -> Guest {
    let yaml = Object::Guest(g.clone()).to_yaml();
    let back = decode::decode_str("again", &yaml)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
        .remove(0);
    Guest::try_from(back).unwrap()
}

#[test]
fn absent_and_empty_are_distinct() {
    let absent = guest("");
    assert_eq!(absent.spec.nameservers, None);
    assert_eq!(absent.spec.search_domain, None);
    let yaml = Object::Guest(absent.clone()).to_yaml();
    assert!(
        !yaml.contains("nameservers") && !yaml.contains("searchDomain"),
        "{yaml}"
    );

    let empty = guest("  nameservers: []\n  searchDomain: \"\"\n");
    assert_eq!(empty.spec.nameservers, Some(vec![]));
    assert_eq!(empty.spec.search_domain.as_deref(), Some(""));
    let back = round_trip(&empty);
    assert_eq!(back.spec.nameservers, Some(vec![]));
    assert_eq!(back.spec.search_domain.as_deref(), Some(""));

    let set = guest("  nameservers: [10.0.0.1, 10.0.0.2]\n  searchDomain: internal.example\n");
    assert_eq!(
        set.spec.nameservers,
        Some(vec!["10.0.0.1".to_string(), "10.0.0.2".to_string()])
    );
    assert_eq!(round_trip(&set).spec, set.spec);
}

#[test]
fn a_bad_search_domain_is_still_refused() {
    let yaml = "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: web\nspec:\n  type: lxc\n  vmid: 150\n  source:\n    template: local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst\n  rootfs: {storage: local-lvm, sizeGiB: 8}\n  searchDomain: \"not a domain\"\n";
    let object = decode::decode_str("test", yaml).unwrap().remove(0);
    let err = admit(object).unwrap_err().to_string();
    assert!(err.contains("spec.searchDomain"), "{err}");
}

#[test]
fn the_shipped_examples_decode_as_before() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/examples")
        .display()
        .to_string();
    let docs = load_paths(&[dir]).unwrap_or_else(|p| panic!("{}", p.join("\n")));
    let mut with = 0;
    let mut without = 0;
    for doc in docs {
        let Ok(g) = Guest::try_from(doc.object) else {
            continue;
        };
        // Before, a list was declared exactly when it was non-empty; absent meant unmanaged.
        match &g.spec.nameservers {
            Some(list) => {
                assert!(
                    !list.is_empty(),
                    "{}: an example empties the list",
                    g.metadata.name
                );
                with += 1;
            }
            None => without += 1,
        }
        assert_ne!(
            g.spec.search_domain.as_deref(),
            Some(""),
            "{}",
            g.metadata.name
        );
    }
    assert!(with > 0 && without > 0, "with {with}, without {without}");
}
