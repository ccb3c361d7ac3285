//! One reconcile: work out the wanted certificates, issue those due (in parallel, each on its
//! own), store them, report per certificate, and requeue at the next renewal or retry time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use instant_acme::Account;
use jiff::Timestamp;
use phoenix_api::ConditionStatus;
use phoenix_api::condition::{Condition, set_condition};
use phoenix_api::kinds::certificate_authority::{
    CertificateAuthorityStatus, Dns01, IssuedCertificate,
};
use phoenix_api::kinds::secret::{Secret, SecretType};
use phoenix_api::kinds::{CertificateAuthority, Gateway, Mesh};
use phoenix_runtime::{Action, Context, ReconcileError, ReconcileResult, Reconciler};

use crate::CaOptions;
use crate::accounts::{Accounts, Unavailable};
use crate::acme::{self, OrderError};
use crate::challenge::{Prover, Responders, Solver};
use crate::dns01::{Dns01Error, Dns01Solver};
use crate::plan::{self, Leaf, Reason, Wanted};
use crate::secrets::{b64, owned_by, owned_secret};

/// The `Issuing` condition type (cert-manager's).
pub const ISSUING: &str = "Issuing";
/// The reconcile logic of [`crate::controller`].
pub struct CaReconciler {
    options: CaOptions,
    responders: Responders,
    accounts: Accounts,
    /// The last certificate this process stored per (CA, Secret): the Secret cache may not
    /// have caught up with the write when the next reconcile runs.
    stored: Mutex<HashMap<(String, String), Leaf>>,
    /// The certificate entries this process last wrote per CA (by uid): the cached object a
    /// reconcile gets can lag behind that write, and failure counts must not go back.
    written: Mutex<HashMap<String, Vec<IssuedCertificate>>>,
}

impl std::fmt::Debug for CaReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaReconciler")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl CaReconciler {
    /// A reconciler with `options`.
    pub fn new(options: CaOptions) -> Self {
        CaReconciler {
            accounts: Accounts::new(
                options.metrics.clone(),
                options.backoff_base,
                options.backoff_max,
            ),
            options,
            responders: Responders::default(),
            stored: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
        }
    }
}

/// How the challenges of a CertificateAuthority are answered (from its spec).
#[derive(Debug, Clone, Copy)]
enum Method<'a> {
    /// A listener of this process on `ADDRESS:PORT`.
    Listen(Solver, &'a str),
    /// DNS-01 through RFC 2136.
    Dns(&'a Dns01),
}

/// One wanted certificate as this reconcile sees it.
struct Item {
    wanted: Wanted,
    entry: IssuedCertificate,
    leaf: Option<Leaf>,
    due: Option<Reason>,
    /// Why it cannot be issued at all (its Secret belongs to someone else).
    blocked: Option<String>,
    /// Failed in this reconcile without an attempt (the account is backing off): no event.
    quiet: bool,
}

fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

fn until(t: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[async_trait]
impl Reconciler for CaReconciler {
    type Kind = CertificateAuthority;

    async fn reconcile(
        &self,
        ca: Arc<CertificateAuthority>,
        ctx: &Context<CertificateAuthority>,
    ) -> ReconcileResult {
        let spec = &ca.spec;
        let method = if let Some(h) = &spec.challenge.http01 {
            Method::Listen(Solver::Http01, &h.listen)
        } else if let Some(t) = &spec.challenge.tls_alpn01 {
            Method::Listen(Solver::TlsAlpn01, &t.listen)
        } else if let Some(d) = &spec.challenge.dns01 {
            Method::Dns(d)
        } else {
            return Err(ReconcileError::invalid(
                "NoChallenge",
                "spec.challenge: set one of http01, tlsAlpn01, dns01",
            ));
        };
        let gateways = ctx
            .cache_of::<Gateway>()
            .map(|c| c.list())
            .unwrap_or_default();
        let meshes = ctx.cache_of::<Mesh>().map(|c| c.list()).unwrap_or_default();
        let secrets = ctx.cache_of::<Secret>();
        let wanted = plan::wanted(&ca, &gateways, &meshes);
        let uid = ca.metadata.uid.clone().unwrap_or_default();
        let remembered = self.written.lock().unwrap().get(&uid).cloned();
        let previous: HashMap<String, IssuedCertificate> = remembered
            .or_else(|| ca.status.as_ref().map(|s| s.certificates.clone()))
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        let renew_before = spec.renew_before.as_ref().and_then(|d| d.parse().ok());
        let now = Timestamp::now();

        let mut items: Vec<Item> = Vec::with_capacity(wanted.len());
        for w in wanted {
            let secret = secrets.as_ref().and_then(|c| c.get(&w.secret));
            let blocked = secret
                .as_ref()
                .filter(|s| !owned_by(s, &ca))
                .map(|_| {
                    format!(
                        "Secret {:?} exists and is not owned by CertificateAuthority {:?}; not overwritten",
                        w.secret, ca.metadata.name
                    )
                });
            let leaf = secret
                .as_ref()
                .filter(|_| blocked.is_none())
                .filter(|s| s.type_ == SecretType::Tls)
                .and_then(|s| s.text("tls.crt"))
                .and_then(|pem| plan::parse_leaf(&pem).ok());
            let leaf = self.current_leaf(&ca, ctx, &w.secret, leaf).await?;
            let mut entry = match previous.get(&w.name) {
                Some(p) if p.dns_names == w.dns_names => p.clone(),
                _ => IssuedCertificate {
                    name: w.name.clone(),
                    dns_names: w.dns_names.clone(),
                    serial: None,
                    not_before: None,
                    not_after: None,
                    renewal_time: None,
                    secret: w.secret.clone(),
                    failed_attempts: 0,
                    last_failure_time: None,
                    last_failure_message: None,
                },
            };
            entry.secret = w.secret.clone();
            // A certificate the status does not know yet was issued after the failures it
            // lists (the cached object can lag behind our own last status write).
            if let Some(l) = &leaf
                && entry.serial.as_ref() != Some(&l.serial)
            {
                entry.failed_attempts = 0;
                entry.last_failure_time = None;
                entry.last_failure_message = None;
            }
            set_leaf(&mut entry, leaf.as_ref(), renew_before);
            let due = if blocked.is_some() {
                None
            } else {
                plan::due(&w, leaf.as_ref(), entry.renewal_time, now)
            };
            if let Some(b) = &blocked {
                entry.last_failure_message = Some(b.clone());
            }
            items.push(Item {
                wanted: w,
                entry,
                leaf,
                due,
                blocked,
                quiet: false,
            });
        }

        // Due and not backing off.
        let ready_now: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.due.is_some() && self.retry_at(&i.entry).is_none_or(|t| t <= now))
            .map(|(n, _)| n)
            .collect();

        let mut account_url = ca.status.as_ref().and_then(|s| s.account_url.clone());
        if !ready_now.is_empty() {
            let first = items[ready_now[0]].due.unwrap_or(Reason::DoesNotExist);
            let message = format!(
                "issuing {} certificate(s): {}",
                ready_now.len(),
                ready_now
                    .iter()
                    .map(|n| format!(
                        "{} ({})",
                        items[*n].wanted.name,
                        items[*n].due.map(Reason::as_str).unwrap_or("")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let generation = ca.metadata.generation;
            let entries: Vec<IssuedCertificate> = items.iter().map(|i| i.entry.clone()).collect();
            ctx.update_status(&ca, |s| {
                s.certificates = entries.clone();
                set_condition(
                    &mut s.conditions,
                    Condition::new(
                        ISSUING,
                        ConditionStatus::True,
                        first.as_str(),
                        &message,
                        generation,
                    ),
                );
            })
            .await?;
            match self
                .issue_all(&ca, ctx, method, &ready_now, &mut items)
                .await
            {
                Ok(url) => account_url = Some(url),
                Err((message, attempted)) => {
                    for n in &ready_now {
                        fail(&mut items[*n].entry, &message);
                        items[*n].quiet = !attempted;
                        if attempted {
                            self.options.metrics.attempt(&ca.metadata.name, false);
                        }
                    }
                }
            }
        }

        self.report(&ca, ctx, items, account_url, now).await
    }
}

impl CaReconciler {
    /// What the Secret holds: the cache's copy, or what this process stored last when that is
    /// newer (the cache may lag behind a write); when the cache has no Secret but this process
    /// stored one, the API decides (it may have been deleted).
    async fn current_leaf(
        &self,
        ca: &CertificateAuthority,
        ctx: &Context<CertificateAuthority>,
        secret: &str,
        cached: Option<Leaf>,
    ) -> Result<Option<Leaf>, ReconcileError> {
        let key = (ca.metadata.name.clone(), secret.to_string());
        let stored = self.stored.lock().unwrap().get(&key).cloned();
        Ok(match (cached, stored) {
            (Some(c), Some(s)) if s.not_before > c.not_before => Some(s),
            (None, Some(_)) => {
                let fresh = ctx.api::<Secret>().get_opt(secret).await?;
                let leaf = fresh
                    .filter(|s| owned_by(s, ca) && s.type_ == SecretType::Tls)
                    .and_then(|s| s.text("tls.crt"))
                    .and_then(|pem| plan::parse_leaf(&pem).ok());
                if leaf.is_none() {
                    self.stored.lock().unwrap().remove(&key);
                }
                leaf
            }
            (c, _) => c,
        })
    }

    /// When a failed certificate may be tried again.
    fn retry_at(&self, entry: &IssuedCertificate) -> Option<Timestamp> {
        let last = entry.last_failure_time?;
        if entry.failed_attempts == 0 {
            return None;
        }
        let wait = plan::backoff(
            entry.failed_attempts,
            self.options.backoff_base,
            self.options.backoff_max,
        );
        last.checked_add(jiff::SignedDuration::try_from(wait).ok()?)
            .ok()
    }

    /// Issues the certificates `due` (indexes into `items`), each on its own; returns the
    /// account URL, or a message when nothing could be tried (no account, no responder) and
    /// whether anything was attempted (false while a failed account set-up backs off).
    async fn issue_all(
        &self,
        ca: &CertificateAuthority,
        ctx: &Context<CertificateAuthority>,
        method: Method<'_>,
        due: &[usize],
        items: &mut [Item],
    ) -> Result<String, (String, bool)> {
        // The account first: a CA that cannot be reached binds no port.
        let mut account = match self.accounts.get(ca, ctx).await {
            Ok(a) => a,
            Err(Unavailable::Waiting(m)) => return Err((m, false)),
            Err(Unavailable::Failed(m)) => return Err((m, true)),
        };
        let prover = match method {
            Method::Listen(solver, listen) => Prover::Listen(
                self.responders
                    .ensure(solver, listen)
                    .await
                    .map_err(|e| (e.to_string(), true))?,
            ),
            Method::Dns(d) => Prover::Dns(
                dns01_solver(ctx, d)
                    .await
                    .map_err(|e| (e.to_string(), true))?,
            ),
        };
        let mut todo: Vec<usize> = due.to_vec();
        for round in 0..2 {
            let results: Vec<(usize, Result<Leaf, OrderError>)> =
                futures::stream::iter(todo.iter().copied())
                    .map(|n| {
                        let account = account.clone();
                        let names = items[n].wanted.dns_names.clone();
                        let secret = items[n].wanted.secret.clone();
                        let prover = &prover;
                        async move {
                            (
                                n,
                                self.issue_one(ca, ctx, &account.account, prover, &names, &secret)
                                    .await,
                            )
                        }
                    })
                    .buffer_unordered(self.options.parallel_orders.max(1))
                    .collect()
                    .await;
            let mut gone = Vec::new();
            for (n, result) in results {
                match result {
                    Ok(leaf) => {
                        self.options.metrics.attempt(&ca.metadata.name, true);
                        let entry = &mut items[n].entry;
                        entry.failed_attempts = 0;
                        entry.last_failure_time = None;
                        entry.last_failure_message = None;
                        set_leaf(
                            entry,
                            Some(&leaf),
                            ca.spec.renew_before.as_ref().and_then(|d| d.parse().ok()),
                        );
                        items[n].leaf = Some(leaf);
                        items[n].due = None;
                    }
                    Err(OrderError::AccountGone(m)) if round == 0 => {
                        tracing::info!(ca = %ca.metadata.name, problem = %m, "ACME account unknown to the server; registering again");
                        gone.push(n);
                    }
                    Err(e) => {
                        self.options.metrics.attempt(&ca.metadata.name, false);
                        fail(&mut items[n].entry, &e.to_string());
                    }
                }
            }
            if gone.is_empty() {
                break;
            }
            self.accounts.forget(&ca.metadata.name);
            match self.accounts.register(ca, ctx).await {
                Ok(a) => account = a,
                Err(m) => {
                    // Only those that met the unknown account fail; the others stand.
                    for n in &gone {
                        self.options.metrics.attempt(&ca.metadata.name, false);
                        fail(&mut items[*n].entry, &m);
                    }
                    break;
                }
            }
            todo = gone;
        }
        Ok(account.account.id().to_string())
    }

    /// Orders one certificate and stores it in its Secret.
    async fn issue_one(
        &self,
        ca: &CertificateAuthority,
        ctx: &Context<CertificateAuthority>,
        account: &Account,
        prover: &Prover,
        names: &[String],
        secret: &str,
    ) -> Result<Leaf, OrderError> {
        let issued = acme::order(account, names, prover).await?;
        let leaf = plan::parse_leaf(&issued.chain_pem)
            .map_err(|e| OrderError::Acme(format!("the issued certificate does not parse: {e}")))?;
        let object = owned_secret(
            ca,
            secret,
            SecretType::Tls,
            BTreeMap::from([
                ("tls.crt".into(), b64(&issued.chain_pem)),
                ("tls.key".into(), b64(&issued.key_pem)),
            ]),
        );
        ctx.client
            .apply(&object.into(), false)
            .await
            .map_err(|e| OrderError::Acme(format!("storing Secret {secret:?}: {e}")))?;
        self.stored
            .lock()
            .unwrap()
            .insert((ca.metadata.name.clone(), secret.to_string()), leaf.clone());
        tracing::info!(ca = %ca.metadata.name, secret, serial = %leaf.serial, not_after = %leaf.not_after, "certificate issued");
        Ok(leaf)
    }

    /// Writes the status (entries, Ready, Issuing), the metrics and events; picks the requeue.
    async fn report(
        &self,
        ca: &CertificateAuthority,
        ctx: &Context<CertificateAuthority>,
        items: Vec<Item>,
        account_url: Option<String>,
        now: Timestamp,
    ) -> ReconcileResult {
        let name = &ca.metadata.name;
        let metrics = &self.options.metrics;
        let previous: Vec<String> = ca
            .status
            .as_ref()
            .map(|s| s.certificates.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        for p in &previous {
            if !items.iter().any(|i| &i.entry.name == p) {
                metrics.forget(name, p);
            }
        }
        let mut next: Option<Timestamp> = None;
        let mut earliest = |t: Timestamp| {
            next = Some(next.map_or(t, |n: Timestamp| n.min(t)));
        };
        let mut not_ready: Vec<(Reason, String)> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut blocked: Vec<String> = Vec::new();
        for i in &items {
            let valid = i.leaf.as_ref().is_some_and(|l| now < l.not_after)
                && i.due != Some(Reason::RequestChanged)
                && i.blocked.is_none();
            let times = i
                .entry
                .not_after
                .zip(i.entry.renewal_time)
                .map(|(a, r)| (seconds(a), seconds(r)));
            metrics.certificate(name, &i.entry.name, times, valid);
            if let Some(b) = &i.blocked {
                blocked.push(format!("{}: {b}", i.entry.name));
                continue;
            }
            if !valid {
                let reason = match (&i.leaf, i.due) {
                    (None, _) => Reason::DoesNotExist,
                    (_, Some(r)) => r,
                    _ => Reason::Expired,
                };
                not_ready.push((reason, i.entry.name.clone()));
            }
            if i.entry.failed_attempts > 0 {
                let retry = self.retry_at(&i.entry);
                failures.push(format!(
                    "{}: {} (attempt {}, next at {})",
                    i.entry.name,
                    i.entry.last_failure_message.as_deref().unwrap_or(""),
                    i.entry.failed_attempts,
                    retry.map(|t| t.to_string()).unwrap_or_default()
                ));
                if let Some(t) = retry {
                    earliest(t);
                }
            } else if i.due.is_none()
                && let Some(r) = i.entry.renewal_time
            {
                earliest(r);
            }
        }
        let generation = ca.metadata.generation;
        let entries: Vec<IssuedCertificate> = items.iter().map(|i| i.entry.clone()).collect();
        self.written
            .lock()
            .unwrap()
            .insert(ca.metadata.uid.clone().unwrap_or_default(), entries.clone());
        let total = entries.len();
        let (ready, ready_reason, ready_message) = if let Some(b) = blocked.first() {
            (
                ConditionStatus::False,
                "SecretConflict".to_string(),
                b.clone(),
            )
        } else if let Some((reason, _)) = not_ready.first() {
            let names: Vec<String> = not_ready
                .iter()
                .map(|(r, n)| format!("{n} ({})", r.as_str()))
                .collect();
            let mut message = format!(
                "{} of {total} certificate(s) not ready: {}",
                not_ready.len(),
                names.join(", ")
            );
            if !failures.is_empty() {
                message.push_str("; ");
                message.push_str(&failures.join("; "));
            }
            (ConditionStatus::False, reason.as_str().to_string(), message)
        } else {
            (
                ConditionStatus::True,
                "Ready".to_string(),
                format!("{total} certificate(s) issued and valid"),
            )
        };
        let (issuing, issuing_reason, issuing_message) = if failures.is_empty() {
            (
                ConditionStatus::False,
                "UpToDate",
                "nothing to issue until the next renewal time".to_string(),
            )
        } else {
            (
                ConditionStatus::False,
                "Failed",
                format!(
                    "issuance failed and will be retried: {}",
                    failures.join("; ")
                ),
            )
        };
        ctx.update_status(ca, |s: &mut CertificateAuthorityStatus| {
            s.certificates = entries.clone();
            if account_url.is_some() {
                s.account_url = account_url.clone();
            }
            let c = &mut s.conditions;
            set_condition(
                c,
                Condition::new("Ready", ready, &ready_reason, &ready_message, generation),
            );
            set_condition(
                c,
                Condition::new(
                    "Reconciling",
                    ConditionStatus::from(!failures.is_empty()),
                    if failures.is_empty() {
                        "UpToDate"
                    } else {
                        "RetryingAfterError"
                    },
                    "",
                    generation,
                ),
            );
            set_condition(
                c,
                Condition::new(
                    ISSUING,
                    issuing,
                    issuing_reason,
                    &issuing_message,
                    generation,
                ),
            );
            s.observed_generation = generation;
        })
        .await?;
        // One event per failed attempt of this reconcile (not per look at an old failure).
        let failed_now: Vec<String> = items
            .iter()
            .filter(|i| {
                i.entry.last_failure_time.is_some_and(|t| t >= now)
                    && i.blocked.is_none()
                    && !i.quiet
            })
            .map(|i| {
                format!(
                    "{}: {}",
                    i.entry.name,
                    i.entry.last_failure_message.as_deref().unwrap_or("")
                )
            })
            .collect();
        if !failed_now.is_empty() {
            ctx.recorder
                .warning(ca, "IssuanceFailed", &failed_now.join("; "))
                .await;
        }
        Ok(match next {
            Some(t) => Action::requeue(until(t, Timestamp::now()).max(Duration::from_millis(100))),
            None => Action::done(),
        })
    }
}

/// The DNS-01 solver of `dns01`, with the TSIG key read from its Secret now (so a rotated key
/// is used from the next order on).
async fn dns01_solver(
    ctx: &Context<CertificateAuthority>,
    dns01: &Dns01,
) -> Result<Dns01Solver, Dns01Error> {
    let name = dns01.tsig_secret_ref.as_deref().ok_or(Dns01Error::NoKey)?;
    let secret = ctx
        .api::<Secret>()
        .get_opt(name)
        .await
        .map_err(|e| Dns01Error::SecretRead {
            name: name.to_string(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| Dns01Error::SecretMissing(name.to_string()))?;
    let key = phoenix_dns::TsigKey::from_secret_data(&secret.data).map_err(|source| {
        Dns01Error::InvalidKey {
            name: name.to_string(),
            source,
        }
    })?;
    Dns01Solver::new(&dns01.nameserver, &dns01.zone, key).await
}

/// Copies what `leaf` says into `entry` (or clears it).
fn set_leaf(entry: &mut IssuedCertificate, leaf: Option<&Leaf>, renew_before: Option<Duration>) {
    match leaf {
        Some(l) => {
            entry.serial = Some(l.serial.clone());
            entry.not_before = Some(l.not_before);
            entry.not_after = Some(l.not_after);
            entry.renewal_time = Some(plan::renewal_time(l, renew_before));
        }
        None => {
            entry.serial = None;
            entry.not_before = None;
            entry.not_after = None;
            entry.renewal_time = None;
        }
    }
}

/// Records a failed attempt.
fn fail(entry: &mut IssuedCertificate, message: &str) {
    entry.failed_attempts = entry.failed_attempts.saturating_add(1);
    entry.last_failure_time = Some(Timestamp::now());
    entry.last_failure_message = Some(message.to_string());
}
