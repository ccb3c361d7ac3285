//! [`Api<K>`]: the client for one kind, taking and returning `K` instead of [`Object`], the way
//! kube-rs' `Api<K>` does. The conversion from the wire happens here, once; an object of
//! another kind from the server is an error ([`ClientError::UnexpectedKind`]), not a silent
//! `None`.

use std::marker::PhantomData;

use futures::{Stream, StreamExt};

use crate::client::{ApplyOutcome, Client, ClientError, ListPage, WatchEvent};
use crate::resource::{Object, Resource};

/// The typed client of kind `K`. Cheap to clone (it holds a [`Client`] clone).
pub struct Api<K> {
    client: Client,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Resource> std::fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("kind", &K::KIND)
            .field("server", &self.client.server())
            .finish()
    }
}

/// `object` as a `K`, or [`ClientError::UnexpectedKind`].
fn typed<K: Resource + TryFrom<Object>>(object: Object) -> Result<K, ClientError> {
    let (found, name) = (object.kind(), object.name().to_string());
    K::try_from(object).map_err(|_| ClientError::UnexpectedKind {
        expected: K::KIND,
        found,
        name,
    })
}

impl<K: Resource + Into<Object> + TryFrom<Object>> Api<K> {
    /// The client of kind `K` over `client`.
    pub fn new(client: Client) -> Self {
        Api {
            client,
            kind: PhantomData,
        }
    }

    /// The untyped client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Reads the object `name`.
    ///
    /// # Errors
    /// [`ClientError::NotFound`] when it does not exist; any error of [`Client::get`].
    pub async fn get(&self, name: &str) -> Result<K, ClientError> {
        typed(self.client.get(K::KIND, name).await?)
    }

    /// Reads the object `name`; `None` when it does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>, ClientError> {
        match self.get(name).await {
            Ok(k) => Ok(Some(k)),
            Err(ClientError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object matching `selector` (empty: all), following continue tokens; watch from
    /// the returned `resource_version` to miss nothing.
    pub async fn list(&self, selector: &str) -> Result<ListPage<K>, ClientError> {
        let page = self.client.list_all(K::KIND, selector).await?;
        Ok(ListPage {
            items: page
                .items
                .into_iter()
                .map(typed)
                .collect::<Result<_, _>>()?,
            resource_version: page.resource_version,
            continue_token: page.continue_token,
        })
    }

    /// Watches the kind from `resource_version`, with the guarantees of [`Client::watch`].
    pub async fn watch(
        &self,
        selector: &str,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent<K>, ClientError>> + Send + 'static, ClientError>
    {
        let events = self
            .client
            .watch(K::KIND, selector, resource_version)
            .await?;
        Ok(events.map(|e| e.and_then(|e| e.try_map(typed))))
    }

    /// Creates or updates `object`; returns it as stored and what happened.
    pub async fn apply(&self, object: &K) -> Result<(K, ApplyOutcome), ClientError> {
        let (written, outcome) = self.client.apply(&object.clone().into(), false).await?;
        Ok((typed(written)?, outcome))
    }

    /// Writes `object`'s status (compare-and-swap on its resourceVersion); returns it as
    /// stored.
    ///
    /// # Errors
    /// [`ClientError::Conflict`] when the object changed since it was read.
    pub async fn update_status(&self, object: &K) -> Result<K, ClientError> {
        typed(self.client.update_status(&object.clone().into()).await?)
    }

    /// Writes `object`'s metadata (finalizers, labels, annotations, owners; compare-and-swap
    /// on its resourceVersion); returns it as stored.
    ///
    /// # Errors
    /// [`ClientError::Conflict`] when the object changed since it was read.
    pub async fn update_metadata(&self, object: &K) -> Result<K, ClientError> {
        typed(self.client.update_metadata(&object.clone().into()).await?)
    }

    /// Deletes `name` (only at `resource_version`, when given), or marks it for deletion
    /// while finalizers remain. Returns its last state and whether it is gone.
    pub async fn delete(
        &self,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<(K, bool), ClientError> {
        let (last, gone) = self
            .client
            .delete(K::KIND, name, resource_version, false)
            .await?;
        Ok((typed(last)?, gone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;
    use crate::kinds::{Guest, Secret};

    #[test]
    fn another_kind_is_an_error_naming_both_kinds() {
        let secret = Secret {
            api_version: crate::API_VERSION.into(),
            kind: "Secret".into(),
            metadata: crate::ObjectMeta::named("s"),
            type_: Default::default(),
            data: Default::default(),
            string_data: Default::default(),
        };
        let e = typed::<Guest>(secret.clone().into()).unwrap_err();
        assert!(
            matches!(
                &e,
                ClientError::UnexpectedKind { expected: Kind::Guest, found: Kind::Secret, name } if name == "s"
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "expected a Guest, the server sent Secret \"s\""
        );
        assert_eq!(typed::<Secret>(secret.clone().into()).unwrap(), secret);
    }
}
