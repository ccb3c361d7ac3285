//! ACME accounts per CertificateAuthority: cached in memory, restored from the account Secret
//! (owned by the CA; never logged), registered when there is none, and backed off per CA when
//! the set-up fails (no ACME server, a refused registration).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use instant_acme::{Account, AccountCredentials, ExternalAccountKey};
use jiff::Timestamp;
use phoenix_api::kinds::CertificateAuthority;
use phoenix_api::kinds::certificate_authority::Acme;
use phoenix_api::kinds::secret::{Secret, SecretType};
use phoenix_runtime::Context;

use crate::acme::{self, AcmeHttp};
use crate::metrics::CaMetrics;
use crate::plan;
use crate::secrets::{b64, owned_by, owned_secret};

/// Key of the account Secret.
const CREDENTIALS_KEY: &str = "credentials.json";

/// A restored or registered account, with what it was made for.
pub(crate) struct CachedAccount {
    /// The spec's `acme` when it was made: a change of directory, roots, contact or binding
    /// makes a new client (and, for another directory, a new account).
    acme: Acme,
    /// The account.
    pub(crate) account: Account,
}

/// A failed account set-up.
#[derive(Clone)]
struct AccountFailure {
    acme: Acme,
    at: Timestamp,
    count: u32,
    message: String,
}

/// Why no account is available.
#[derive(Debug)]
pub(crate) enum Unavailable {
    /// A recent set-up failed; nothing is tried until the time in the message.
    Waiting(String),
    /// Setting it up failed now.
    Failed(String),
}

/// The accounts of every CertificateAuthority this process reconciles.
pub(crate) struct Accounts {
    metrics: CaMetrics,
    backoff_base: Duration,
    backoff_max: Duration,
    cache: Mutex<HashMap<String, Arc<CachedAccount>>>,
    failures: Mutex<HashMap<String, AccountFailure>>,
}

impl Accounts {
    /// No accounts yet; set-up failures back off `base × 2^(n-1)` capped at `max`.
    pub(crate) fn new(metrics: CaMetrics, backoff_base: Duration, backoff_max: Duration) -> Self {
        Accounts {
            metrics,
            backoff_base,
            backoff_max,
            cache: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The account of `ca`: cached, else restored from its Secret, else registered.
    ///
    /// # Errors
    /// [`Unavailable::Waiting`] while an earlier failure of the same `spec.acme` backs off
    /// (no request is sent); [`Unavailable::Failed`] when setting it up fails now.
    pub(crate) async fn get(
        &self,
        ca: &CertificateAuthority,
        ctx: &Context<CertificateAuthority>,
    ) -> Result<Arc<CachedAccount>, Unavailable> {
        let name = &ca.metadata.name;
        let last = self.failures.lock().unwrap().get(name).cloned();
        if let Some(f) = last.filter(|f| f.acme == ca.spec.acme) {
            let wait = plan::backoff(f.count, self.backoff_base, self.backoff_max);
            if let Some(until) = jiff::SignedDuration::try_from(wait)
                .ok()
                .and_then(|w| f.at.checked_add(w).ok())
                .filter(|u| Timestamp::now() < *u)
            {
                return Err(Unavailable::Waiting(format!(
                    "not attempted until {until}: {}",
                    f.message
                )));
            }
        }
        match self.restore_or_register(ca, ctx).await {
            Ok(a) => {
                self.failures.lock().unwrap().remove(name);
                Ok(a)
            }
            Err(message) => {
                let mut failures = self.failures.lock().unwrap();
                let count = failures
                    .get(name)
                    .filter(|f| f.acme == ca.spec.acme)
                    .map_or(1, |f| f.count.saturating_add(1));
                failures.insert(
                    name.clone(),
                    AccountFailure {
                        acme: ca.spec.acme.clone(),
                        at: Timestamp::now(),
                        count,
                        message: message.clone(),
                    },
                );
                Err(Unavailable::Failed(message))
            }
        }
    }

    /// Drops the cached account of `ca` (the server no longer knows it).
    pub(crate) fn forget(&self, ca: &str) {
        self.cache.lock().unwrap().remove(ca);
    }

    /// The account of `ca`: cached, else restored from its Secret, else registered.
    async fn restore_or_register(
        &self,
        ca: &CertificateAuthority,
        ctx: &Context<CertificateAuthority>,
    ) -> Result<Arc<CachedAccount>, String> {
        let directory = &ca.spec.acme.directory_url;
        if let Some(a) = self.cache.lock().unwrap().get(&ca.metadata.name)
            && a.acme == ca.spec.acme
        {
            return Ok(a.clone());
        }
        let name = plan::account_secret(&ca.metadata.name);
        let stored = ctx
            .api::<Secret>()
            .get_opt(&name)
            .await
            .map_err(|e| format!("reading the account Secret {name:?}: {e}"))?;
        if let Some(secret) = stored.filter(|s| owned_by(s, ca))
            && let Some(json) = secret.text(CREDENTIALS_KEY)
            && serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| {
                    v.get("directory")
                        .and_then(|d| d.as_str())
                        .map(|d| d == directory)
                })
                == Some(true)
            && let Ok(credentials) = serde_json::from_str::<AccountCredentials>(&json)
        {
            let http = self.http(ca)?;
            let account = acme::restore(http, credentials)
                .await
                .map_err(|e| format!("ACME directory {directory}: {}", acme::describe(&e)))?;
            let cached = Arc::new(CachedAccount {
                acme: ca.spec.acme.clone(),
                account,
            });
            self.cache
                .lock()
                .unwrap()
                .insert(ca.metadata.name.clone(), cached.clone());
            return Ok(cached);
        }
        self.register(ca, ctx).await
    }

    fn http(&self, ca: &CertificateAuthority) -> Result<AcmeHttp, String> {
        AcmeHttp::new(
            &ca.metadata.name,
            ca.spec.acme.ca_bundle.as_deref(),
            self.metrics.clone(),
        )
        .map_err(|e| e.to_string())
    }

    /// Registers a new account (e.g. after `accountDoesNotExist`) and stores its credentials in the account Secret.
    pub(crate) async fn register(
        &self,
        ca: &CertificateAuthority,
        ctx: &Context<CertificateAuthority>,
    ) -> Result<Arc<CachedAccount>, String> {
        let directory = ca.spec.acme.directory_url.clone();
        let eab = match &ca.spec.acme.external_account_secret_ref {
            Some(name) => Some(self.external_account(ctx, name).await?),
            None => None,
        };
        let http = self.http(ca)?;
        let (account, credentials) = acme::register(
            http,
            &directory,
            ca.spec.acme.email.as_deref(),
            eab.as_ref(),
        )
        .await
        .map_err(|e| {
            format!(
                "registering the ACME account at {directory}: {}",
                acme::describe(&e)
            )
        })?;
        let json = serde_json::to_string(&credentials)
            .map_err(|e| format!("encoding the account credentials: {e}"))?;
        let name = plan::account_secret(&ca.metadata.name);
        let secret = owned_secret(
            ca,
            &name,
            SecretType::Opaque,
            BTreeMap::from([(CREDENTIALS_KEY.into(), b64(&json))]),
        );
        ctx.client
            .apply(&secret.into(), false)
            .await
            .map_err(|e| format!("storing the account Secret {name:?}: {e}"))?;
        tracing::info!(ca = %ca.metadata.name, account = %account.id(), "ACME account registered");
        let cached = Arc::new(CachedAccount {
            acme: ca.spec.acme.clone(),
            account,
        });
        self.cache
            .lock()
            .unwrap()
            .insert(ca.metadata.name.clone(), cached.clone());
        Ok(cached)
    }

    /// The external account binding from Secret `name` (`keyId`, `hmacKey` base64url).
    async fn external_account(
        &self,
        ctx: &Context<CertificateAuthority>,
        name: &str,
    ) -> Result<ExternalAccountKey, String> {
        let field = "spec.acme.externalAccountSecretRef";
        let secret = ctx
            .api::<Secret>()
            .get_opt(name)
            .await
            .map_err(|e| format!("{field}: reading Secret {name:?}: {e}"))?
            .ok_or_else(|| format!("{field}: Secret {name:?} not found"))?;
        let key_id = secret
            .text("keyId")
            .ok_or_else(|| format!("{field}: Secret {name:?} has no keyId"))?;
        let hmac = secret
            .text("hmacKey")
            .ok_or_else(|| format!("{field}: Secret {name:?} has no hmacKey"))?;
        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(hmac.trim().trim_end_matches('='))
            .map_err(|_| format!("{field}: Secret {name:?}: hmacKey is not base64url"))?;
        Ok(ExternalAccountKey::new(key_id.trim().to_string(), &key))
    }
}
