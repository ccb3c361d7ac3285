//! Status writes: only when the status changed, re-applied on a conflict. The conditions
//! themselves (constructors, `mark_ready`, `mark_progressing`, `mark_failed`, "ready at this
//! generation") live in [`phoenix_api::condition`], beside the types.

use phoenix_api::client::{Client, ClientError};
use phoenix_api::{Api, HasStatus, Object};

/// Sets `object`'s status to what `change` makes of it.
///
/// # Guarantees
/// Writes only when the result differs from the stored status. On a conflict (someone else
/// wrote meanwhile) it reads the object again and re-applies `change` (status belongs to one
/// controller, so that is safe), up to 5 attempts.
///
/// # Errors
/// The last write's error, or the read's (e.g. [`ClientError::NotFound`] once the object is
/// gone). Returns the written object, or `None` when nothing changed.
pub async fn update_status<K>(
    client: &Client,
    object: &K,
    change: impl Fn(&mut K::Status),
) -> Result<Option<K>, ClientError>
where
    K: HasStatus + Into<Object> + TryFrom<Object>,
{
    let api = Api::<K>::new(client.clone());
    let mut current = object.clone();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = current.status().cloned().unwrap_or_default();
        let mut next = current.clone();
        change(next.status_mut());
        if next.status().is_some_and(|s| *s == before) {
            return Ok(None);
        }
        match api.update_status(&next).await {
            Ok(written) => return Ok(Some(written)),
            Err(ClientError::Conflict(_)) if attempt < 5 => {
                current = api.get(current.name()).await?;
            }
            Err(e) => return Err(e),
        }
    }
}
