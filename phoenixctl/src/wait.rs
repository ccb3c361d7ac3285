//! `phoenixctl wait KIND NAME --for=...`, and the watch loop `delete --wait` uses.

use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use phoenix_api::client::{Client, ClientError, WatchEvent};
use phoenix_api::{Kind, Object};

use crate::conn::ConnArgs;
use crate::exit::{CmdResult, Code, Failure};

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The object's kind.
    kind: String,
    /// The object's name.
    name: String,
    /// `condition=TYPE[=True|False|Unknown]` (status defaults to True) or `delete`.
    #[arg(long = "for", value_name = "CONDITION")]
    for_: String,
    /// Give up after this long (`30s`, `5m`).
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    timeout: Duration,
}

/// Parses `60s`, `5m`, `1h30m`.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    phoenix_api::duration::parse_duration(s).map_err(|e| e.to_string())
}

/// What to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Until {
    /// The condition has the status.
    Condition(String, String),
    /// The object is gone.
    Deleted,
}

impl Until {
    /// Parses `--for`.
    pub fn parse(s: &str) -> Result<Until, String> {
        if s == "delete" {
            return Ok(Until::Deleted);
        }
        let Some(rest) = s.strip_prefix("condition=") else {
            return Err(format!(
                "--for={s:?}: expected condition=TYPE[=STATUS] or delete"
            ));
        };
        let (t, status) = rest.split_once('=').unwrap_or((rest, "True"));
        if t.is_empty() || !matches!(status, "True" | "False" | "Unknown") {
            return Err(format!(
                "--for={s:?}: expected condition=TYPE[=True|False|Unknown]"
            ));
        }
        Ok(Until::Condition(t.to_string(), status.to_string()))
    }

    /// Whether `o` (None: gone) satisfies this.
    pub fn holds(&self, o: Option<&Object>) -> bool {
        match (self, o) {
            (Until::Deleted, o) => o.is_none(),
            (Until::Condition(..), None) => false,
            (Until::Condition(t, s), Some(o)) => o
                .to_json_value()
                .pointer("/status/conditions")
                .and_then(|c| c.as_array())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.get("type").and_then(|v| v.as_str()) == Some(t.as_str())
                            && c.get("status").and_then(|v| v.as_str()) == Some(s.as_str())
                    })
                }),
        }
    }
}

/// Watches `kind/name` until `until` holds; `Ok(false)` on timeout.
pub async fn until(
    client: &Client,
    kind: Kind,
    name: &str,
    until: &Until,
    timeout: Duration,
) -> Result<bool, Failure> {
    until_fn(client, kind, name, |o| until.holds(o), timeout).await
}

/// Watches `kind/name` until `holds` says yes for it (`None`: gone); `Ok(false)` on timeout.
pub async fn until_fn(
    client: &Client,
    kind: Kind,
    name: &str,
    holds: impl Fn(Option<&Object>) -> bool,
    timeout: Duration,
) -> Result<bool, Failure> {
    let until = Holds(holds);
    let watch = async {
        loop {
            let rv = match client.get(kind, name).await {
                Ok(o) => {
                    if until.holds(Some(&o)) {
                        return Ok(());
                    }
                    o.metadata().resource_version.clone().unwrap_or_default()
                }
                Err(ClientError::NotFound(_)) => {
                    if until.holds(None) {
                        return Ok(());
                    }
                    client.list_all(kind, "").await?.resource_version
                }
                Err(e) => return Err(Failure::from(e)),
            };
            let mut stream = Box::pin(client.watch(kind, "", &rv).await?);
            while let Some(ev) = stream.next().await {
                match ev {
                    Err(ClientError::TooOld(_)) => break,
                    Err(e) => return Err(e.into()),
                    Ok(WatchEvent::Bookmark(_)) => {}
                    Ok(WatchEvent::Deleted(o)) if o.name() == name => {
                        if until.holds(None) {
                            return Ok(());
                        }
                    }
                    Ok(ev) => {
                        if let Some(o) = ev.object()
                            && o.name() == name
                            && until.holds(Some(o))
                        {
                            return Ok(());
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    match tokio::time::timeout(timeout, watch).await {
        Ok(r) => r.map(|()| true),
        Err(_) => Ok(false),
    }
}

pub async fn run(args: &WaitArgs, conn: &ConnArgs) -> CmdResult {
    let kind = crate::get::parse_kind(&args.kind)?;
    let u = Until::parse(&args.for_).map_err(|e| Failure::new(Code::Failure, e))?;
    let client = conn.connect().await?;
    let key = format!("{}/{}", kind.name().to_ascii_lowercase(), args.name);
    if until(&client, kind, &args.name, &u, args.timeout).await? {
        match &u {
            Until::Deleted => outln!("{key} deleted"),
            Until::Condition(t, s) => outln!("{key} condition met ({t}={s})"),
        }
        Ok(())
    } else {
        Err(Failure::new(
            Code::Failure,
            format!(
                "timed out after {:?} waiting for {key} ({})",
                args.timeout, args.for_
            ),
        ))
    }
}

/// A predicate with the shape of [`Until::holds`].
struct Holds<F>(F);

impl<F: Fn(Option<&Object>) -> bool> Holds<F> {
    fn holds(&self, o: Option<&Object>) -> bool {
        (self.0)(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_for() {
        assert_eq!(
            Until::parse("condition=Ready").unwrap(),
            Until::Condition("Ready".into(), "True".into())
        );
        assert_eq!(
            Until::parse("condition=Ready=False").unwrap(),
            Until::Condition("Ready".into(), "False".into())
        );
        assert_eq!(Until::parse("delete").unwrap(), Until::Deleted);
        assert!(Until::parse("Ready").is_err());
        assert!(Until::parse("condition=Ready=maybe").is_err());
        assert!(Until::Deleted.holds(None));
        assert!(!Until::parse("condition=Ready").unwrap().holds(None));
        assert_eq!(parse_timeout("90s").unwrap(), Duration::from_secs(90));
    }
}
