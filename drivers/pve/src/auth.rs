//! Authentication state: a fixed token header, or a ticket session that is renewed.
//!
//! Tickets: `POST /access/ticket` with the user and password gives a ticket (sent as the
//! `PVEAuthCookie` cookie) and a CSRF token (sent as the `CSRFPreventionToken` header on every
//! write). PVE accepts a ticket for 2 hours; the client logs in again once it is older than
//! `ticket_renew_after`, and once more when PVE answers 401 (the ticket was revoked, or the
//! node restarted with a new key). Logins are serialised: callers that need one at the same
//! time share it.

use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use tokio::sync::Mutex;

use crate::credentials::{Credentials, Secret};

/// PVE's ticket lifetime.
pub(crate) const TICKET_LIFETIME: Duration = Duration::from_secs(2 * 60 * 60);

/// What a request must carry to be authenticated.
#[derive(Clone, Debug)]
pub(crate) enum AuthHeaders {
    /// `Authorization: PVEAPIToken=...`.
    Token(HeaderValue),
    /// `Cookie: PVEAuthCookie=...` and, on writes, `CSRFPreventionToken`.
    Ticket {
        cookie: HeaderValue,
        csrf: HeaderValue,
        generation: u64,
    },
    /// Nothing: the login request itself.
    None,
}

/// A logged-in session.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub(crate) cookie: HeaderValue,
    pub(crate) csrf: HeaderValue,
    pub(crate) obtained: Instant,
    pub(crate) generation: u64,
}

/// The client's authentication.
#[derive(Debug)]
pub(crate) enum Auth {
    Token {
        header: HeaderValue,
    },
    Ticket {
        user: String,
        password: Secret,
        renew_after: Duration,
        session: Mutex<Option<Session>>,
    },
}

/// Why a header could not be built from a credential (a control character in it).
#[derive(Debug, thiserror::Error)]
#[error("the {0} contains characters not allowed in an HTTP header")]
pub struct HeaderError(pub &'static str);

pub(crate) fn sensitive(value: &str, what: &'static str) -> Result<HeaderValue, HeaderError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| HeaderError(what))?;
    header.set_sensitive(true);
    Ok(header)
}

impl Auth {
    pub(crate) fn new(
        credentials: &Credentials,
        renew_after: Duration,
    ) -> Result<Self, HeaderError> {
        Ok(match credentials {
            Credentials::Token { token_id, secret } => Auth::Token {
                header: sensitive(
                    &format!("PVEAPIToken={token_id}={}", secret.expose()),
                    "API token",
                )?,
            },
            Credentials::Password { user, password } => Auth::Ticket {
                user: user.clone(),
                password: password.clone(),
                renew_after,
                session: Mutex::new(None),
            },
        })
    }

    /// The session to use now, or `None` when a login is needed first (no session, or it is
    /// due for renewal).
    pub(crate) fn session_if_fresh(
        session: &Option<Session>,
        renew_after: Duration,
    ) -> Option<Session> {
        session
            .as_ref()
            .filter(|s| s.obtained.elapsed() < renew_after)
            .cloned()
    }

    /// True when an old session may still be used after a renewal failed: PVE accepts it
    /// until its 2 hours are up (a minute's margin).
    pub(crate) fn still_valid(session: &Session) -> bool {
        session.obtained.elapsed() + Duration::from_secs(60) < TICKET_LIFETIME
    }
}
