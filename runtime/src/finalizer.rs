//! Finalizers: added before any external action, removed only after cleanup succeeded,
//! always by compare-and-swap on resourceVersion, never touching other controllers'
//! finalizers.

use phoenix_api::client::{Client, ClientError};
use phoenix_api::{Api, Object, Resource};

/// Outcome of a finalizer edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edited<K> {
    /// Written; the object as stored now.
    Written(K),
    /// Already as wanted; nothing written.
    Unchanged,
    /// The object is gone.
    Gone,
}

async fn edit<K>(
    client: &Client,
    object: &K,
    finalizer: &str,
    add: bool,
) -> Result<Edited<K>, ClientError>
where
    K: Resource + Into<Object> + TryFrom<Object>,
{
    let api = Api::<K>::new(client.clone());
    let mut current = object.clone();
    for attempt in 1..=5 {
        let has = current.metadata().finalizers.iter().any(|f| f == finalizer);
        if has == add {
            return Ok(Edited::Unchanged);
        }
        if add && current.metadata().deletion_timestamp.is_some() {
            // The server refuses new finalizers on an object being deleted; nothing to guard.
            return Ok(Edited::Unchanged);
        }
        let mut next = current.clone();
        let list = &mut next.metadata_mut().finalizers;
        if add {
            list.push(finalizer.to_string());
        } else {
            list.retain(|f| f != finalizer);
        }
        match api.update_metadata(&next).await {
            Ok(written) => return Ok(Edited::Written(written)),
            Err(ClientError::NotFound(_)) => return Ok(Edited::Gone),
            Err(ClientError::Conflict(_)) if attempt < 5 => {
                match api.get_opt(current.name()).await? {
                    Some(fresh) => current = fresh,
                    None => return Ok(Edited::Gone),
                }
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// Adds `finalizer` to `object` unless present.
pub async fn add<K>(client: &Client, object: &K, finalizer: &str) -> Result<Edited<K>, ClientError>
where
    K: Resource + Into<Object> + TryFrom<Object>,
{
    edit(client, object, finalizer, true).await
}

/// Removes `finalizer` from `object` if present (the object goes away when it was the last
/// one and deletion was requested).
pub async fn remove<K>(
    client: &Client,
    object: &K,
    finalizer: &str,
) -> Result<Edited<K>, ClientError>
where
    K: Resource + Into<Object> + TryFrom<Object>,
{
    edit(client, object, finalizer, false).await
}
