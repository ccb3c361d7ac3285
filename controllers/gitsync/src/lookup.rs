//! What a sync needs to know of existing objects (their owner label, whether they are Ready),
//! read from the controller's watch caches instead of listing every kind at every sync.
//!
//! Guarantees: an object the caches do not hold yet is looked up in the API before a sync
//! could take it over (one `get` each, or one list of its kind when many are missing, as on
//! a first sync); a converged GitSync reads nothing from the API.

use std::collections::{BTreeMap, BTreeSet};

use phoenix_api::client::ClientError;
use phoenix_api::condition::ready_at_generation;
use phoenix_api::kinds::git_sync::GITSYNC_LABEL;
use phoenix_api::kinds::{
    CertificateAuthority, DnsZone, Gateway, GitSync, Guest, Mesh, Secret, Stack,
};
use phoenix_api::{Kind, Object, Resource};
use phoenix_runtime::{Cache, Context, Controller, Reconciler};

/// More objects of one kind missing from the cache than this: list the kind once instead of
/// one `get` each.
const GETS: usize = 16;

/// What is known of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// It does not exist.
    Absent,
    /// It exists, with this `phoenix.thinkheads.ai/gitsync` label (if any); `ready`: Ready=True
    /// for its generation, or a kind without status.
    Present {
        /// The owner label.
        owner: Option<String>,
        /// Ready for its generation.
        ready: bool,
    },
}

/// Declares watches of every kind a GitSync can apply, so their caches exist. A change of
/// an object labelled for a `wait: true` GitSync syncs that GitSync (it may be Ready now);
/// other changes trigger nothing.
pub fn watch_kinds<R: Reconciler<Kind = GitSync>>(c: Controller<R>) -> Controller<R> {
    // A Secret syncs the GitSyncs fetching with it (a fixed key or known_hosts retries at
    // once); an inventory Secret needs no mapping (Secrets count as ready).
    c.watches::<Secret>(|s, gitsyncs| {
        gitsyncs
            .find(|g| g.spec.secret_ref.as_deref() == Some(s.metadata.name.as_str()))
            .iter()
            .map(|g| g.metadata.name.clone())
            .collect()
    })
    .watches::<Guest>(waiting_owner)
    .watches::<CertificateAuthority>(waiting_owner)
    .watches::<Mesh>(waiting_owner)
    .watches::<Gateway>(waiting_owner)
    .watches::<Stack>(waiting_owner)
    .watches::<DnsZone>(waiting_owner)
}

/// The GitSync that labelled `o`, when it waits for its objects to be Ready.
fn waiting_owner<W: Resource>(o: &W, gitsyncs: &Cache<GitSync>) -> Vec<String> {
    match o.metadata().labels.get(GITSYNC_LABEL) {
        Some(owner) if gitsyncs.get(owner).is_some_and(|g| g.spec.wait) => vec![owner.clone()],
        _ => Vec::new(),
    }
}

fn from_cache<R: Resource + TryFrom<Object>>(
    ctx: &Context<GitSync>,
    name: &str,
    ready: fn(&R) -> bool,
) -> Option<Seen> {
    let cache = ctx.cache_of::<R>()?;
    Some(match cache.get(name) {
        None => Seen::Absent,
        Some(o) => Seen::Present {
            owner: o.metadata().labels.get(GITSYNC_LABEL).cloned(),
            ready: ready(&o),
        },
    })
}

/// What the controller's caches hold of `kind/name`; `None` when the kind has no cache here.
fn cached(ctx: &Context<GitSync>, kind: Kind, name: &str) -> Option<Seen> {
    match kind {
        Kind::Secret => from_cache::<Secret>(ctx, name, |_| true),
        Kind::Guest => from_cache::<Guest>(ctx, name, ready_at_generation),
        Kind::CertificateAuthority => {
            from_cache::<CertificateAuthority>(ctx, name, ready_at_generation)
        }
        Kind::Mesh => from_cache::<Mesh>(ctx, name, ready_at_generation),
        Kind::Gateway => from_cache::<Gateway>(ctx, name, ready_at_generation),
        Kind::Stack => from_cache::<Stack>(ctx, name, ready_at_generation),
        Kind::DnsZone => from_cache::<DnsZone>(ctx, name, ready_at_generation),
        Kind::GitSync => Some(match ctx.cache.get(name) {
            None => Seen::Absent,
            Some(o) => Seen::Present {
                owner: o.metadata.labels.get(GITSYNC_LABEL).cloned(),
                ready: ready_at_generation(&*o),
            },
        }),
        Kind::Event => None,
    }
}

/// What the API says of `o` (read, not cached).
fn seen_object(o: &Object) -> Seen {
    let v = o.to_json_value();
    let generation = v.pointer("/metadata/generation").and_then(|g| g.as_i64());
    let ready = !o.kind().has_spec()
        || (v
            .pointer("/status/observedGeneration")
            .and_then(|g| g.as_i64())
            == generation
            && v.pointer("/status/conditions")
                .and_then(|c| c.as_array())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.get("type").and_then(|t| t.as_str()) == Some("Ready")
                            && c.get("status").and_then(|t| t.as_str()) == Some("True")
                    })
                }));
    Seen::Present {
        owner: o.metadata().labels.get(GITSYNC_LABEL).cloned(),
        ready,
    }
}

/// What exists of `keys` (`(kind, name)`), by key: from the caches, and from the API for
/// those the caches do not hold (they may lag behind a write made just now).
pub async fn seen(
    ctx: &Context<GitSync>,
    keys: &[(Kind, String)],
) -> Result<BTreeMap<(Kind, String), Seen>, ClientError> {
    let mut out = BTreeMap::new();
    let mut ask: BTreeMap<Kind, Vec<&str>> = BTreeMap::new();
    for (kind, name) in keys {
        match cached(ctx, *kind, name) {
            Some(s @ Seen::Present { .. }) => {
                out.insert((*kind, name.clone()), s);
            }
            Some(Seen::Absent) | None => ask.entry(*kind).or_default().push(name),
        }
    }
    for (kind, names) in ask {
        if names.len() > GETS {
            let wanted: BTreeSet<&str> = names.iter().copied().collect();
            let mut found = BTreeMap::new();
            for o in ctx.client.list_all(kind, "").await?.items {
                if wanted.contains(o.name()) {
                    found.insert(o.name().to_string(), seen_object(&o));
                }
            }
            for name in names {
                let s = found.remove(name).unwrap_or(Seen::Absent);
                out.insert((kind, name.to_string()), s);
            }
        } else {
            for name in names {
                let s = match ctx.client.get(kind, name).await {
                    Ok(o) => seen_object(&o),
                    Err(ClientError::NotFound(_)) => Seen::Absent,
                    Err(e) => return Err(e),
                };
                out.insert((kind, name.to_string()), s);
            }
        }
    }
    Ok(out)
}
