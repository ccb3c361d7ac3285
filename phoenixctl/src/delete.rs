//! `phoenixctl delete KIND NAME...` or `delete -f PATH`, optionally waiting until gone.

use std::time::Duration;

use clap::Args;
use phoenix_api::Kind;

use crate::conn::ConnArgs;
use crate::exit::{CmdResult, Code, Failure, code_of, one_line};
use crate::wait::{Until, parse_timeout, until};

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// KIND NAME... (omit with -f).
    args: Vec<String>,
    /// Delete the objects defined in these files or directories.
    #[arg(short = 'f', long = "filename", conflicts_with = "args")]
    files: Vec<String>,
    /// Wait until the objects are gone (finalizers done).
    #[arg(long)]
    wait: bool,
    /// With `--wait`: give up after this long.
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    timeout: Duration,
}

pub async fn run(args: &DeleteArgs, conn: &ConnArgs) -> CmdResult {
    let targets: Vec<(Kind, String)> = if !args.files.is_empty() {
        crate::apply::load(&args.files)?
            .into_iter()
            .rev()
            .map(|d| (d.object.kind(), d.object.name().to_string()))
            .collect()
    } else {
        let Some((kind, names)) = args.args.split_first() else {
            return Err(Failure::new(
                Code::Failure,
                "delete needs KIND NAME... or -f FILE",
            ));
        };
        if names.is_empty() {
            return Err(Failure::new(
                Code::Failure,
                "delete needs at least one NAME",
            ));
        }
        let kind = crate::get::parse_kind(kind)?;
        names.iter().map(|n| (kind, n.clone())).collect()
    };
    let client = conn.connect().await?;
    let mut worst: Option<Code> = None;
    let mut waiting = Vec::new();
    for (kind, name) in &targets {
        let key = format!("{}/{name}", kind.name().to_ascii_lowercase());
        match client.delete(*kind, name, None, false).await {
            Ok((_, true)) => outln!("{key} deleted"),
            Ok((o, false)) => {
                outln!(
                    "{key} marked for deletion (waiting for finalizers: {})",
                    o.metadata().finalizers.join(", ")
                );
                waiting.push((*kind, name.clone(), key));
            }
            Err(e) => {
                let code = code_of(&e);
                worst = Some(worst.map_or(code, |w| w.max(code)));
                eprintln!("error: {key}: {}", one_line(&e.to_string()));
            }
        }
    }
    if args.wait {
        let deadline = tokio::time::Instant::now() + args.timeout;
        for (kind, name, key) in waiting {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if until(&client, kind, &name, &Until::Deleted, left).await? {
                outln!("{key} deleted");
            } else {
                return Err(Failure::new(
                    Code::Failure,
                    format!("timed out after {:?} waiting for {key} to go", args.timeout),
                ));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some(code) => Err(Failure::new(code, "")),
    }
}
