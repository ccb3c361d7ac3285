//! API semantics against a real in-process server on the embedded store, through the typed
//! client over TLS: admission, generation, apply outcomes, finalizers, conflicts, watches,
//! auth, and a restart.

use std::time::Duration;

use futures::StreamExt;
use phoenix_api::client::{ApplyOutcome, Client, ClientConfig, ClientError, WatchEvent};
use phoenix_api::{Kind, Object, decode};
use phoenix_apiserver::serve::{self, Running, ServeArgs};

fn args(dir: &std::path::Path) -> ServeArgs {
    ServeArgs::local(dir)
}

async fn client(running: &Running) -> Client {
    let cfg = ClientConfig::load(&running.admin_config).unwrap();
    Client::connect(cfg.context(None).unwrap()).await.unwrap()
}

fn guest(name: &str, cores: u32) -> Object {
    decode::decode_str(
        "t.yaml",
        &format!(
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Guest\nmetadata:\n  name: {name}\n  labels: {{app: web}}\nspec:\n  type: lxc\n  source: {{template: \"local:vztmpl/debian-12.tar.zst\"}}\n  cores: {cores}\n"
        ),
    )
    .unwrap()
    .remove(0)
}

fn meta(o: &Object) -> &phoenix_api::ObjectMeta {
    o.metadata()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_generation_finalizers_conflicts_watch_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let running = serve::start(args(dir.path())).await.unwrap();
    let c = client(&running).await;

    // Create, then unchanged, then a spec change bumps generation; labels alone do not.
    let (created, outcome) = c.apply(&guest("web", 2), false).await.unwrap();
    assert_eq!(outcome, ApplyOutcome::Created);
    assert_eq!(meta(&created).generation, Some(1));
    assert!(meta(&created).uid.is_some() && meta(&created).creation_timestamp.is_some());
    let (_, outcome) = c.apply(&guest("web", 2), false).await.unwrap();
    assert_eq!(outcome, ApplyOutcome::Unchanged);
    let (changed, outcome) = c.apply(&guest("web", 4), false).await.unwrap();
    assert_eq!(outcome, ApplyOutcome::Configured);
    assert_eq!(meta(&changed).generation, Some(2));
    let mut relabelled = guest("web", 4);
    relabelled
        .metadata_mut()
        .labels
        .insert("tier".into(), "front".into());
    let (relabelled, outcome) = c.apply(&relabelled, false).await.unwrap();
    assert_eq!(outcome, ApplyOutcome::Configured);
    assert_eq!(meta(&relabelled).generation, Some(2));
    assert_eq!(meta(&relabelled).uid, meta(&created).uid);

    // Status writes never touch spec or generation; a stale resourceVersion conflicts.
    let Object::Guest(mut g) = relabelled.clone() else {
        unreachable!()
    };
    g.status = Some(phoenix_api::kinds::GuestStatus {
        vmid: Some(150),
        ..Default::default()
    });
    g.spec.cores = Some(64);
    let Object::Guest(after) = c.update_status(&Object::Guest(g.clone())).await.unwrap() else {
        unreachable!()
    };
    assert_eq!(after.spec.cores, Some(4));
    assert_eq!(after.status.unwrap().vmid, Some(150));
    assert_eq!(after.metadata.generation, Some(2));
    let stale = c.update_status(&Object::Guest(g)).await.unwrap_err();
    assert!(matches!(stale, ClientError::Conflict(_)), "{stale}");
    // Apply keeps status.
    let (again, _) = c.apply(&guest("web", 4), false).await.unwrap();
    let Object::Guest(again) = again else {
        unreachable!()
    };
    assert_eq!(again.status.unwrap().vmid, Some(150));

    // Admission rejects with every error and stores nothing.
    let bad = decode::decode_json(
        "x",
        br#"{"apiVersion":"phoenix.thinkheads.ai/v1alpha1","kind":"Guest","metadata":{"name":"bad"},"spec":{"type":"lxc","cores":0,"source":{"template":"nope"}}}"#,
    )
    .unwrap();
    let err = c.apply(&bad, false).await.unwrap_err();
    let ClientError::Invalid(msg) = err else {
        panic!("{err}")
    };
    assert!(msg.contains("spec.cores: 0 is out of range"), "{msg}");
    assert!(
        msg.contains("spec.source.template: \"nope\" is not a volume id"),
        "{msg}"
    );
    assert!(matches!(
        c.get(Kind::Guest, "bad").await,
        Err(ClientError::NotFound(_))
    ));

    // A watch from a revision sees exactly the later changes.
    let list = c.list(Kind::Guest, "app=web", 0, "").await.unwrap();
    assert_eq!(list.items.len(), 1);
    let mut watch = Box::pin(
        c.watch(Kind::Guest, "", &list.resource_version)
            .await
            .unwrap(),
    );
    c.apply(&guest("db", 1), false).await.unwrap();

    // Delete with a finalizer: marked, waits; removing the finalizer deletes it.
    let mut with_fin = guest("fin", 1);
    with_fin.metadata_mut().finalizers = vec!["example.com/cleanup".into()];
    c.apply(&with_fin, false).await.unwrap();
    let (marked, gone) = c.delete(Kind::Guest, "fin", None, false).await.unwrap();
    assert!(!gone);
    assert!(meta(&marked).deletion_timestamp.is_some());
    let err = c.apply(&with_fin, false).await.unwrap_err();
    assert!(matches!(err, ClientError::Conflict(_)), "{err}");
    let mut cleared = marked.clone();
    cleared.metadata_mut().finalizers.clear();
    c.update_metadata(&cleared).await.unwrap();
    assert!(matches!(
        c.get(Kind::Guest, "fin").await,
        Err(ClientError::NotFound(_))
    ));

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("watch event in time")
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Added(o) => seen.push(format!("added {}", o.name())),
            WatchEvent::Modified(o) => seen.push(format!("modified {}", o.name())),
            WatchEvent::Deleted(o) => seen.push(format!("deleted {}", o.name())),
        }
    }
    assert_eq!(
        seen,
        ["added db", "added fin", "modified fin", "deleted fin"]
    );

    // Delete with a stale precondition conflicts.
    let db = c.get(Kind::Guest, "db").await.unwrap();
    c.apply(&guest("db", 2), false).await.unwrap();
    let err = c
        .delete(
            Kind::Guest,
            "db",
            meta(&db).resource_version.as_deref(),
            false,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Conflict(_)), "{err}");

    // A restart keeps every object and resumes watches from a resourceVersion.
    let rv = c
        .list(Kind::Guest, "", 0, "")
        .await
        .unwrap()
        .resource_version;
    running.stop().await;
    let running = serve::start(args(dir.path())).await.unwrap();
    let c = client(&running).await;
    let names: Vec<String> = c
        .list_all(Kind::Guest, "")
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    assert_eq!(names, ["db", "web"]);
    let mut watch = Box::pin(c.watch(Kind::Guest, "", &rv).await.unwrap());
    c.delete(Kind::Guest, "db", None, false).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Deleted(o) => {
                assert_eq!(o.name(), "db");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_references_cascade() {
    let dir = tempfile::tempdir().unwrap();
    let running = serve::start(args(dir.path())).await.unwrap();
    let c = client(&running).await;
    let (owner, _) = c.apply(&guest("owner", 1), false).await.unwrap();
    let mut dep = guest("dependent", 1);
    dep.metadata_mut().owner_references = vec![phoenix_api::OwnerReference {
        api_version: phoenix_api::API_VERSION.into(),
        kind: "Guest".into(),
        name: "owner".into(),
        uid: meta(&owner).uid.clone().unwrap(),
        controller: false,
    }];
    c.apply(&dep, false).await.unwrap();
    c.delete(Kind::Guest, "owner", None, false).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match c.get(Kind::Guest, "dependent").await {
            Err(ClientError::NotFound(_)) => break,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("dependent not collected: {other:?}"),
        }
    }
    running.stop().await;
}

/// A token made as `phoenix token create` makes it for a running server on the embedded
/// store: a request file the server applies.
async fn new_token(
    dir: &std::path::Path,
    name: &str,
    role: phoenix_apiserver::auth::Role,
) -> String {
    use phoenix_apiserver::auth::{self, Outcome, Request};
    let (token, entry) = auth::generate(name, role).unwrap();
    let outcome = auth::request(dir, &Request::Create(entry), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Applied);
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let running = serve::start(args(dir.path())).await.unwrap();
    let admin = ClientConfig::load(&running.admin_config).unwrap();
    let ctx = admin.context(None).unwrap().clone();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&running.admin_config)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // No token.
    let anon = Client::connect(&phoenix_api::client::Context {
        token: String::new(),
        ..ctx.clone()
    })
    .await
    .unwrap();
    assert!(matches!(
        anon.list(Kind::Guest, "", 0, "").await,
        Err(ClientError::Unauthenticated(_))
    ));
    // Viewer reads, cannot write.
    let viewer_token = new_token(
        dir.path(),
        "ci-viewer",
        phoenix_apiserver::auth::Role::Viewer,
    )
    .await;
    let viewer = Client::connect(&phoenix_api::client::Context {
        token: viewer_token,
        ..ctx.clone()
    })
    .await
    .unwrap();
    assert!(viewer.list(Kind::Guest, "", 0, "").await.is_ok());
    assert!(matches!(
        viewer.apply(&guest("x", 1), false).await,
        Err(ClientError::Forbidden(_))
    ));
    // Editor writes Secrets but cannot read their data; admin can.
    let editor_token = new_token(
        dir.path(),
        "ci-editor",
        phoenix_apiserver::auth::Role::Editor,
    )
    .await;
    let editor = Client::connect(&phoenix_api::client::Context {
        token: editor_token,
        ..ctx.clone()
    })
    .await
    .unwrap();
    let secret = decode::decode_str(
        "s.yaml",
        "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: hunter2}\n",
    )
    .unwrap()
    .remove(0);
    let secret = phoenix_api::admit(secret).unwrap();
    let (applied, _) = editor.apply(&secret, false).await.unwrap();
    let Object::Secret(s) = applied else {
        unreachable!()
    };
    assert!(s.data.is_empty(), "an editor gets no secret data back");
    let Object::Secret(s) = editor.get(Kind::Secret, "s").await.unwrap() else {
        unreachable!()
    };
    assert!(s.data.is_empty());
    let admin_client = Client::connect(&ctx).await.unwrap();
    let Object::Secret(s) = admin_client.get(Kind::Secret, "s").await.unwrap() else {
        unreachable!()
    };
    assert_eq!(
        s.data.get("password").map(String::as_str),
        Some("aHVudGVyMg==")
    );
    // A client that trusts another CA fails the TLS handshake.
    let other = tempfile::tempdir().unwrap();
    let other_pki = phoenix_apiserver::pki::load_or_create(other.path(), &[], None).unwrap();
    let err = Client::connect(&phoenix_api::client::Context {
        certificate_authority_data: Some(other_pki.ca_pem),
        ..ctx.clone()
    })
    .await
    .and(Ok(()));
    let err = match err {
        Err(e) => e.to_string(),
        Ok(()) => {
            let c = Client::connect(&phoenix_api::client::Context {
                certificate_authority_data: Some(
                    phoenix_apiserver::pki::load_or_create(other.path(), &[], None)
                        .unwrap()
                        .ca_pem,
                ),
                ..ctx.clone()
            })
            .await
            .unwrap();
            c.list(Kind::Guest, "", 0, "")
                .await
                .unwrap_err()
                .to_string()
        }
    };
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("invalid peer"),
        "{err}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_batch_keeps_per_object_results_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let running = serve::start(args(dir.path())).await.unwrap();
    let c = client(&running).await;
    let (known, _) = c.apply(&guest("known", 1), false).await.unwrap();
    let mut bad = guest("bad", 1);
    bad.metadata_mut().name = "Not_A_Name".into();
    // New objects (one batched create), a name twice, an invalid object, a known object
    // changed, in this order.
    let mut batch: Vec<Object> = (0..100).map(|i| guest(&format!("g{i:03}"), 1)).collect();
    batch.push(guest("g000", 1));
    batch.push(bad);
    batch.push(guest("known", 3));
    let results = c.apply_batch(&batch, false).await.unwrap();
    assert_eq!(results.len(), 103);
    for (i, r) in results.iter().take(100).enumerate() {
        let (o, outcome) = r.as_ref().unwrap_or_else(|e| panic!("g{i:03}: {e}"));
        assert_eq!(*outcome, ApplyOutcome::Created, "g{i:03}");
        assert_eq!(o.name(), format!("g{i:03}"));
        assert_eq!(meta(o).generation, Some(1));
        assert!(meta(o).uid.is_some() && meta(o).creation_timestamp.is_some());
        let stored = c.get(Kind::Guest, o.name()).await.unwrap();
        assert_eq!(&stored, o, "the answer is the object as stored");
    }
    assert_eq!(results[100].as_ref().unwrap().1, ApplyOutcome::Unchanged);
    assert!(
        matches!(&results[101], Err(ClientError::Invalid(_))),
        "{:?}",
        results[101]
    );
    let (changed, outcome) = results[102].as_ref().unwrap();
    assert_eq!(*outcome, ApplyOutcome::Configured);
    assert_eq!(meta(changed).generation, Some(2));
    assert_eq!(meta(changed).uid, meta(&known).uid);
    assert!(matches!(
        c.get(Kind::Guest, "Not_A_Name").await,
        Err(ClientError::NotFound(_)) | Err(ClientError::Invalid(_))
    ));
    // Again, outcomes only: everything unchanged, the invalid object still refused.
    let outcomes = c.apply_batch_outcomes(&batch, false).await.unwrap();
    assert_eq!(outcomes.len(), 103);
    assert!(
        outcomes[..101]
            .iter()
            .chain(&outcomes[102..])
            .all(|o| matches!(o, Ok(ApplyOutcome::Unchanged))),
        "{outcomes:?}"
    );
    assert!(matches!(&outcomes[101], Err(ClientError::Invalid(_))));
    // A dry run creates nothing.
    let dry = c
        .apply_batch_outcomes(&[guest("dry", 1)], true)
        .await
        .unwrap();
    assert!(matches!(dry[0], Ok(ApplyOutcome::Created)));
    assert!(matches!(
        c.get(Kind::Guest, "dry").await,
        Err(ClientError::NotFound(_))
    ));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_creates_fall_back_to_updates_for_objects_the_cache_missed() {
    use phoenix_apiserver::metrics::Metrics;
    use phoenix_apiserver::objects::{Objects, key};
    use phoenix_store::Store;
    use phoenix_store::embedded::{EmbeddedConfig, EmbeddedStore};
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(EmbeddedStore::open(dir.path(), EmbeddedConfig::default()).unwrap());
    let objects = Objects::new(store.clone(), std::sync::Arc::new(Metrics::new()));
    // Created behind the caller's back (another server, a cache that lags).
    let (taken, _) = objects
        .apply_object(&guest("taken", 1), false, false)
        .await
        .unwrap();
    let fresh = guest("fresh", 1);
    let again = guest("taken", 5);
    let results = objects.create_many(&[&fresh, &again]).await;
    let created = results[0]
        .as_ref()
        .unwrap()
        .as_ref()
        .expect("fresh created");
    let rv: i64 = meta(created)
        .resource_version
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    let kv = store
        .get(&key(Kind::Guest, "fresh"))
        .await
        .unwrap()
        .kv
        .unwrap();
    assert_eq!(kv.mod_revision, rv);
    assert!(
        matches!(results[1], Ok(None)),
        "a taken name is left to the update path"
    );
    // Applying it as "likely absent" tries the create, finds the object and updates it.
    let (updated, outcome) = objects.apply_object(&again, false, true).await.unwrap();
    assert_eq!(outcome, ApplyOutcome::Configured);
    assert_eq!(updated.value["metadata"]["generation"], 2);
    assert_eq!(
        updated.value["metadata"]["uid"],
        taken.value["metadata"]["uid"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_secrets_and_cached_lists_stay_redacted_for_editors() {
    let dir = tempfile::tempdir().unwrap();
    let running = serve::start(args(dir.path())).await.unwrap();
    let admin = client(&running).await;
    let ctx = ClientConfig::load(&running.admin_config)
        .unwrap()
        .context(None)
        .unwrap()
        .clone();
    let token = new_token(
        dir.path(),
        "batch-editor",
        phoenix_apiserver::auth::Role::Editor,
    )
    .await;
    let editor = Client::connect(&phoenix_api::client::Context { token, ..ctx })
        .await
        .unwrap();
    let secret = phoenix_api::admit(
        decode::decode_str(
            "s.yaml",
            "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Secret\nmetadata: {name: s2}\nstringData: {password: hunter2}\n",
        )
        .unwrap()
        .remove(0),
    )
    .unwrap();
    let results = editor.apply_batch(&[secret], false).await.unwrap();
    let Ok((Object::Secret(s), ApplyOutcome::Created)) = &results[0] else {
        panic!("{results:?}")
    };
    assert!(s.data.is_empty(), "an editor gets no secret data back");
    // Lists come from the cache; the redacted copy is made once and never served to admins.
    for _ in 0..2 {
        let page = editor.list_all(Kind::Secret, "").await.unwrap();
        let Object::Secret(s) = &page.items[0] else {
            unreachable!()
        };
        assert!(s.data.is_empty());
        let page = admin.list_all(Kind::Secret, "").await.unwrap();
        let Object::Secret(s) = &page.items[0] else {
            unreachable!()
        };
        assert_eq!(
            s.data.get("password").map(String::as_str),
            Some("aHVudGVyMg==")
        );
    }
    running.stop().await;
}

/// Two servers with their own data directories, given one CA by flag, are trusted by one
/// client configuration; a server that ran with its own CA before issues itself a new server
/// certificate from the given CA on the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_given_one_ca_are_trusted_by_one_client() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = phoenix_apiserver::pki::load_or_create(ca_dir.path(), &[], None).unwrap();
    let (cert, key) = (
        ca_dir.path().join("pki/ca.crt"),
        ca_dir.path().join("pki/ca.key"),
    );
    let with_ca = |dir: &std::path::Path| ServeArgs {
        tls_ca_cert_file: Some(cert.clone()),
        tls_ca_key_file: Some(key.clone()),
        ..args(dir)
    };

    // B first runs with a CA of its own, then with the given one.
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b_before = serve::start(args(b_dir.path())).await.unwrap();
    let own_ca = b_before.admin_context.certificate_authority_data.clone();
    assert_ne!(own_ca.as_deref(), Some(ca.ca_pem.as_str()));
    b_before.stop().await;

    let a = serve::start(with_ca(a_dir.path())).await.unwrap();
    let b = serve::start(with_ca(b_dir.path())).await.unwrap();
    for running in [&a, &b] {
        assert_eq!(
            running.admin_context.certificate_authority_data.as_deref(),
            Some(ca.ca_pem.as_str()),
            "admin.yaml names the given CA"
        );
        // Only the given CA's PEM, as a client of the other server has it, is trusted.
        let ctx = phoenix_api::client::Context {
            certificate_authority_data: Some(ca.ca_pem.clone()),
            ..running.admin_context.clone()
        };
        let c = Client::connect(&ctx).await.unwrap();
        c.apply(&guest("web", 1), false).await.unwrap();
    }
    // B's data directory kept its own CA files: the flag chose, nothing was overwritten.
    assert_eq!(
        std::fs::read_to_string(b_dir.path().join("pki/ca.crt")).ok(),
        own_ca
    );
    a.stop().await;
    b.stop().await;
}
