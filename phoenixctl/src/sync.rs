//! `phoenixctl sync gitsync NAME`: sync a GitSync now and wait for the result, like
//! `flux reconcile`.

use std::time::Duration;

use clap::Args;
use phoenix_api::client::{Client, ClientError};
use phoenix_api::condition::{READY, find_condition};
use phoenix_api::kinds::GitSync;
use phoenix_api::kinds::git_sync::SYNC_AT_ANNOTATION;
use phoenix_api::{ConditionStatus, Kind, Object};

use crate::conn::ConnArgs;
use crate::exit::{CmdResult, Code, Failure};
use crate::wait::{parse_timeout, until_fn};

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The kind: `gitsync` (or `gs`).
    kind: String,
    /// The object's name.
    name: String,
    /// Give up waiting after this long (`30s`, `5m`).
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    timeout: Duration,
    /// Request the sync and return without waiting for it.
    #[arg(long)]
    no_wait: bool,
}

/// Whether the sync that handled `value` has finished: `lastHandledSyncAt` echoes it and
/// Ready is not `Progressing` (a `wait: true` GitSync waiting for its objects).
fn finished(gs: &GitSync, value: &str) -> bool {
    let Some(status) = &gs.status else {
        return false;
    };
    status.last_handled_sync_at.as_deref() == Some(value)
        && find_condition(&status.conditions, READY)
            .is_some_and(|c| !(c.status == ConditionStatus::False && c.reason == "Progressing"))
}

/// Sets the sync-at annotation to `value` (compare-and-swap, retried on conflicts).
async fn request(client: &Client, name: &str, value: &str) -> Result<(), Failure> {
    let mut attempts = 0;
    loop {
        let mut o = client.get(Kind::GitSync, name).await?;
        let Object::GitSync(gs) = &mut o else {
            return Err(Failure::new(
                Code::Failure,
                "the server answered another kind",
            ));
        };
        if gs.spec.suspend {
            return Err(Failure::new(
                Code::Failure,
                format!("gitsync/{name} is suspended (spec.suspend: true): it will not sync"),
            ));
        }
        gs.metadata
            .annotations
            .insert(SYNC_AT_ANNOTATION.into(), value.into());
        match client.update_metadata(&o).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Conflict(_)) if attempts < 5 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

pub async fn run(args: &SyncArgs, conn: &ConnArgs) -> CmdResult {
    let kind = crate::get::parse_kind(&args.kind)?;
    if kind != Kind::GitSync {
        return Err(Failure::new(
            Code::Failure,
            format!(
                "{}s cannot be synced: only gitsync (gs)",
                kind.name().to_ascii_lowercase()
            ),
        ));
    }
    let name = &args.name;
    let client = conn.connect().await?;
    let value = jiff::Timestamp::now().to_string();
    request(&client, name, &value).await?;
    if args.no_wait {
        outln!("gitsync/{name} sync requested ({SYNC_AT_ANNOTATION}={value})");
        return Ok(());
    }
    let done = |o: Option<&Object>| match o {
        None => true,
        Some(Object::GitSync(gs)) => finished(gs, &value),
        Some(_) => false,
    };
    let met = until_fn(&client, Kind::GitSync, name, done, args.timeout).await?;
    let gs = match client.get(Kind::GitSync, name).await? {
        Object::GitSync(gs) => gs,
        _ => {
            return Err(Failure::new(
                Code::Failure,
                "the server answered another kind",
            ));
        }
    };
    let status = gs.status.clone().unwrap_or_default();
    let ready = find_condition(&status.conditions, READY);
    if !met {
        return Err(Failure::new(
            Code::Failure,
            format!(
                "timed out after {:?} waiting for gitsync/{name} to sync{}",
                args.timeout,
                ready
                    .map(|c| format!(
                        "; Ready={:?} {}: {}",
                        c.status,
                        c.reason,
                        crate::exit::one_line(&c.message)
                    ))
                    .unwrap_or_default()
            ),
        ));
    }
    let revision = status
        .last_attempted_revision
        .or(status.last_applied_revision)
        .unwrap_or_else(|| "(no revision)".into());
    match ready {
        Some(c) if c.status == ConditionStatus::True => {
            outln!("gitsync/{name} synced {revision}: {}", c.message);
            Ok(())
        }
        Some(c) => {
            eprintln!("gitsync/{name} {revision}: {}: {}", c.reason, c.message);
            Err(Failure::new(
                Code::Failure,
                format!(
                    "gitsync/{name} sync failed ({}): {}",
                    c.reason,
                    crate::exit::one_line(&c.message)
                ),
            ))
        }
        None => Err(Failure::new(
            Code::Failure,
            format!("gitsync/{name} reports no Ready condition"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_is_finished_once_handled_and_not_progressing() {
        let text = "apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: GitSync\nmetadata: {name: e}\nspec: {url: \"file:///r.git\", ref: {branch: main}}\n";
        let Object::GitSync(mut gs) = phoenix_api::decode::decode_str("g.yaml", text)
            .unwrap()
            .remove(0)
        else {
            panic!("not a GitSync");
        };
        assert!(!finished(&gs, "t1"));
        let mut status = phoenix_api::kinds::git_sync::GitSyncStatus {
            last_handled_sync_at: Some("t1".into()),
            ..Default::default()
        };
        phoenix_api::condition::mark_progressing(&mut status, None, "Progressing", "waiting");
        gs.status = Some(status.clone());
        assert!(!finished(&gs, "t1"));
        phoenix_api::condition::mark_ready(&mut status, None, "Synced", "ok");
        gs.status = Some(status);
        assert!(finished(&gs, "t1"));
        assert!(!finished(&gs, "t0"));
    }
}
