//! `phoenixctl apply -f PATH`: decode, default and validate manifests locally, then apply
//! them to the server in batches (or, with `--dry-run=client`, only print them).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use futures::StreamExt;
use phoenix_api::client::{ApplyOutcome, Client};
use phoenix_api::{Document, Kind, Object};

use crate::OutputFormat;
use crate::conn::ConnArgs;
use crate::exit::{CmdResult, Code, Failure, code_of, one_line};
use phoenix_api::selector::Selector;

/// Objects per ApplyBatch call.
const BATCH: usize = 250;
/// ApplyBatch calls in flight at once (for objects of one kind).
const IN_FLIGHT: usize = 4;
/// Applies larger than this report progress on a terminal.
const PROGRESS_OVER: usize = 200;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A file, a directory (recursive: .yaml, .yml, .json) or `-` for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// `client`: check and print locally, contact no server; `server`: the server admits
    /// the objects but stores nothing.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "client")]
    dry_run: Option<DryRun>,
    /// Print the objects instead of a summary.
    #[arg(short, long, value_enum)]
    output: Option<OutputFormat>,
    /// Delete objects matching `-l` that are not in the files (of the applied kinds, or of
    /// every kind with `--prune-all-kinds`).
    #[arg(long, requires = "selector")]
    prune: bool,
    /// With `--prune`: consider every kind, not only the applied ones.
    #[arg(long, requires = "prune")]
    prune_all_kinds: bool,
    /// Label selector for `--prune`: `key=value,key!=value,key,!key`.
    #[arg(short = 'l', long = "selector")]
    selector: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// Decode, default and validate locally.
    Client,
    /// Ask the server to admit the objects without storing them.
    Server,
}

/// Decodes and admits every document of every path, or prints every problem (one line
/// each, with file, document, line and field path) and fails.
pub fn load(paths: &[String]) -> Result<Vec<Document>, Failure> {
    phoenix_api::load_paths(paths).map_err(|problems| {
        for p in &problems {
            eprintln!("error: {p}");
        }
        Failure::new(
            Code::Invalid,
            format!(
                "{} error{} found; nothing was applied",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            ),
        )
    })
}

fn print_objects(objects: &[&Object], format: OutputFormat) -> CmdResult {
    match format {
        OutputFormat::Name => {
            for o in objects {
                outln!("{}", o.key());
            }
        }
        OutputFormat::Json => {
            let owned: Vec<Object> = objects.iter().map(|o| (*o).clone()).collect();
            outln!("{}", crate::table::json(&owned, true));
        }
        OutputFormat::Yaml => {
            for (i, o) in objects.iter().enumerate() {
                if i > 0 {
                    outln!("---");
                }
                out!("{}", crate::table::yaml(o)?);
            }
        }
    }
    Ok(())
}

pub async fn run(args: &ApplyArgs, conn: &ConnArgs) -> CmdResult {
    let selector = match &args.selector {
        Some(s) => {
            Some(Selector::parse(s).map_err(|e| Failure::new(Code::Invalid, e.to_string()))?)
        }
        None => None,
    };
    // Decoding (on every core) and connecting overlap; decoding problems are reported first.
    let files = args.files.clone();
    let loading = tokio::task::spawn_blocking(move || load(&files));
    let (docs, client) = if args.dry_run == Some(DryRun::Client) {
        (loading.await, None)
    } else {
        let (docs, client) = tokio::join!(loading, conn.connect());
        (docs, Some(client))
    };
    let docs = docs.map_err(|e| Failure::new(Code::Failure, format!("decoding failed: {e}")))??;
    let mut objects: Vec<Object> = docs.into_iter().map(|d| d.object).collect();
    if args.dry_run == Some(DryRun::Client) {
        let refs: Vec<&Object> = objects.iter().collect();
        return match args.output {
            None => {
                for o in &refs {
                    outln!("{} checked (dry run)", o.key());
                }
                Ok(())
            }
            Some(f) => print_objects(&refs, f),
        };
    }
    let dry_run = args.dry_run == Some(DryRun::Server);
    let suffix = if dry_run { " (server dry run)" } else { "" };
    // Dependencies first; the order within a kind is the files' order.
    objects.sort_by_key(|o| Kind::ALL.iter().position(|k| *k == o.kind()));
    let client = client.expect("connected unless a client dry run")?;
    let total = objects.len();
    let progress = total > PROGRESS_OVER && std::io::stderr().is_terminal();
    let mut worst: Option<Code> = None;
    let mut failed = 0usize;
    let mut applied: Vec<Object> = Vec::new();
    let mut done = 0usize;
    let want_objects = args.output.is_some();
    // Batches of one kind are sent IN_FLIGHT at a time; the next kind starts once every
    // object of the previous one was answered (dependencies first).
    for same_kind in objects.chunk_by(|a, b| a.kind() == b.kind()) {
        let mut answers = futures::stream::iter(same_kind.chunks(BATCH))
            .map(|chunk| {
                let client = &client;
                async move {
                    let results = if want_objects {
                        client.apply_batch(chunk, dry_run).await.map(|r| {
                            r.into_iter()
                                .map(|r| r.map(|(o, outcome)| (Some(o), outcome)))
                                .collect::<Vec<_>>()
                        })
                    } else {
                        client
                            .apply_batch_outcomes(chunk, dry_run)
                            .await
                            .map(|r| r.into_iter().map(|r| r.map(|o| (None, o))).collect())
                    };
                    (chunk, results)
                }
            })
            .buffered(IN_FLIGHT);
        while let Some((chunk, results)) = answers.next().await {
            let results = results?;
            if results.len() != chunk.len() {
                return Err(Failure::new(
                    Code::Failure,
                    format!(
                        "the server answered {} results for {} objects",
                        results.len(),
                        chunk.len()
                    ),
                ));
            }
            // One write per batch: the summary lines of its successes, then its errors.
            let mut summary = String::new();
            let mut errors = String::new();
            for (sent, result) in chunk.iter().zip(results) {
                match result {
                    Ok((obj, outcome)) => {
                        if args.output.is_none() {
                            let what = match outcome {
                                ApplyOutcome::Created => "created",
                                ApplyOutcome::Configured => "configured",
                                ApplyOutcome::Unchanged => "unchanged",
                                ApplyOutcome::Unspecified => "applied",
                            };
                            let _ = writeln!(summary, "{} {what}{suffix}", sent.key());
                        }
                        applied.extend(obj);
                    }
                    Err(e) => {
                        failed += 1;
                        let code = code_of(&e);
                        worst = Some(worst.map_or(code, |w| w.max(code)));
                        let _ = writeln!(
                            errors,
                            "error: {}: {}",
                            sent.key(),
                            one_line(&e.to_string())
                        );
                    }
                }
            }
            out!("{summary}");
            eprint!("{errors}");
            done += chunk.len();
            if progress {
                eprintln!("applied {done}/{total}");
            }
        }
    }
    if let Some(f) = args.output {
        let refs: Vec<&Object> = applied.iter().collect();
        print_objects(&refs, f)?;
    }
    if args.prune
        && let Some(sel) = &selector
    {
        let kinds: BTreeSet<Kind> = if args.prune_all_kinds {
            Kind::ALL.into_iter().collect()
        } else {
            objects.iter().map(Object::kind).collect()
        };
        let keep: BTreeSet<String> = objects.iter().map(Object::key).collect();
        prune(
            &client,
            &kinds,
            sel,
            &keep,
            dry_run,
            suffix,
            &mut worst,
            &mut failed,
        )
        .await?;
    }
    match worst {
        None => Ok(()),
        Some(code) => Err(Failure::new(
            code,
            format!("{failed} of {total} objects failed"),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
async fn prune(
    client: &Client,
    kinds: &BTreeSet<Kind>,
    sel: &Selector,
    keep: &BTreeSet<String>,
    dry_run: bool,
    suffix: &str,
    worst: &mut Option<Code>,
    failed: &mut usize,
) -> CmdResult {
    // Dependents last applied, first pruned.
    for kind in Kind::ALL.iter().rev().filter(|k| kinds.contains(k)) {
        let page = client.list_all(*kind, &sel.to_string()).await?;
        for o in page.items {
            if keep.contains(&o.key()) || !sel.matches(&o.metadata().labels) {
                continue;
            }
            match client.delete(*kind, o.name(), None, dry_run).await {
                Ok(_) => outln!("{} pruned{suffix}", o.key()),
                Err(e) => {
                    *failed += 1;
                    let code = code_of(&e);
                    *worst = Some(worst.map_or(code, |w| w.max(code)));
                    eprintln!("error: {}: {}", o.key(), one_line(&e.to_string()));
                }
            }
        }
    }
    Ok(())
}
