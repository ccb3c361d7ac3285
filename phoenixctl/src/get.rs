//! `phoenixctl get KIND [NAME]`: tables, YAML, JSON or names; `-w` follows changes.
//! `phoenixctl get all`: every kind at once (Events aside), one table per kind.

use clap::{Args, ValueEnum};
use futures::StreamExt;
use jiff::Timestamp;
use phoenix_api::client::WatchEvent;
use phoenix_api::{Kind, Object};

use crate::conn::ConnArgs;
use crate::exit::{CmdResult, Code, Failure};
use crate::table;
use phoenix_api::selector::Selector;

#[derive(Debug, Args)]
pub struct GetArgs {
    /// guest, gateway, mesh, certificateauthority (ca), stack, secret, event (singular,
    /// plural or short), or `all`: every kind but events.
    kind: String,
    /// One object; all when omitted.
    name: Option<String>,
    /// Output format (default: a table).
    #[arg(short, long, value_enum)]
    output: Option<GetFormat>,
    /// Label selector: `key=value,key!=value,key,!key`.
    #[arg(short = 'l', long = "selector")]
    selector: Option<String>,
    /// After the list, print one row per change until interrupted.
    #[arg(short, long)]
    watch: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetFormat {
    /// YAML documents.
    Yaml,
    /// A JSON object, or a List.
    Json,
    /// The table with more columns.
    Wide,
    /// `kind/name` per line.
    Name,
}

/// Parses a CLI kind name or fails with the list of kinds.
pub fn parse_kind(s: &str) -> Result<Kind, Failure> {
    Kind::parse_cli(s).ok_or_else(|| {
        Failure::new(
            Code::NotFound,
            format!(
                "unknown kind {s:?} (kinds: guest, gateway, mesh, certificateauthority, stack, gitsync, dnszone, secret, event)"
            ),
        )
    })
}

fn print_one_row(o: &Object, format: Option<GetFormat>, widths: &[usize]) -> CmdResult {
    match format {
        None | Some(GetFormat::Wide) => {
            let r = table::row(o, format == Some(GetFormat::Wide), Timestamp::now());
            outln!("{}", table::line(&r, widths));
        }
        Some(GetFormat::Name) => outln!("{}", o.key()),
        Some(GetFormat::Json) => outln!("{}", table::json(std::slice::from_ref(o), true)),
        Some(GetFormat::Yaml) => out!("---\n{}", table::yaml(o)?),
    }
    Ok(())
}

/// The kinds `get all` lists: every kind but Event (a record of what happened, not an object
/// anyone declared; `get events` lists them), in the order manifests are applied.
fn all_kinds() -> impl Iterator<Item = Kind> {
    Kind::ALL.into_iter().filter(|k| *k != Kind::Event)
}

/// `get all`: one table per kind that has objects (the names as `kind/name`, as kubectl
/// prints them), or every object as names, YAML or one JSON `List`.
async fn run_all(args: &GetArgs, conn: &ConnArgs, selector: &Selector) -> CmdResult {
    if args.name.is_some() {
        return Err(Failure::new(
            Code::Invalid,
            "get all takes no name (use get KIND NAME)",
        ));
    }
    if args.watch {
        return Err(Failure::new(
            Code::Invalid,
            "get all cannot watch (use get KIND -w)",
        ));
    }
    let client = conn.connect().await?;
    let mut by_kind = Vec::new();
    for kind in all_kinds() {
        let mut items = client.list_all(kind, &selector.to_string()).await?.items;
        items.sort_by(|a, b| a.name().cmp(b.name()));
        if !items.is_empty() {
            by_kind.push((kind, items));
        }
    }
    if by_kind.is_empty() {
        eprintln!("No objects found.");
        return Ok(());
    }
    match args.output {
        None | Some(GetFormat::Wide) => {
            let wide = args.output == Some(GetFormat::Wide);
            let now = Timestamp::now();
            for (i, (kind, items)) in by_kind.iter().enumerate() {
                if i > 0 {
                    outln!();
                }
                let mut rows = vec![
                    table::headers(*kind, wide)
                        .into_iter()
                        .map(String::from)
                        .collect::<Vec<_>>(),
                ];
                rows.extend(items.iter().map(|o| {
                    let mut r = table::row(o, wide, now);
                    r[0] = o.key();
                    r
                }));
                for l in table::render(&rows) {
                    outln!("{l}");
                }
            }
        }
        Some(GetFormat::Name) => {
            for o in by_kind.iter().flat_map(|(_, items)| items) {
                outln!("{}", o.key());
            }
        }
        Some(GetFormat::Json) => {
            let all: Vec<Object> = by_kind.into_iter().flat_map(|(_, items)| items).collect();
            outln!("{}", table::json(&all, false));
        }
        Some(GetFormat::Yaml) => {
            for (i, o) in by_kind.iter().flat_map(|(_, items)| items).enumerate() {
                if i > 0 {
                    outln!("---");
                }
                out!("{}", table::yaml(o)?);
            }
        }
    }
    Ok(())
}

pub async fn run(args: &GetArgs, conn: &ConnArgs) -> CmdResult {
    if args.kind.eq_ignore_ascii_case("all") {
        let selector = Selector::parse(args.selector.as_deref().unwrap_or(""))
            .map_err(|e| Failure::new(Code::Invalid, e.to_string()))?;
        return run_all(args, conn, &selector).await;
    }
    let kind = parse_kind(&args.kind)?;
    let selector = Selector::parse(args.selector.as_deref().unwrap_or(""))
        .map_err(|e| Failure::new(Code::Invalid, e.to_string()))?;
    let client = conn.connect().await?;
    let (items, rv) = match &args.name {
        Some(name) if !args.watch => {
            let o = client.get(kind, name).await?;
            let rv = o.metadata().resource_version.clone().unwrap_or_default();
            (vec![o], rv)
        }
        _ => {
            let page = client.list_all(kind, &selector.to_string()).await?;
            let mut items: Vec<Object> = page
                .items
                .into_iter()
                .filter(|o| args.name.as_deref().is_none_or(|n| o.name() == n))
                .collect();
            items.sort_by(|a, b| a.name().cmp(b.name()));
            if let Some(n) = &args.name
                && items.is_empty()
            {
                return Err(Failure::new(
                    Code::NotFound,
                    format!("{}/{n} not found", kind.name().to_ascii_lowercase()),
                ));
            }
            (items, page.resource_version)
        }
    };
    let wide = args.output == Some(GetFormat::Wide);
    let mut widths = Vec::new();
    match args.output {
        None | Some(GetFormat::Wide) => {
            let now = Timestamp::now();
            let mut rows = vec![
                table::headers(kind, wide)
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            ];
            rows.extend(items.iter().map(|o| table::row(o, wide, now)));
            widths = table::widths(&rows);
            if items.is_empty() && !args.watch {
                eprintln!("No {} found.", kind.plural());
            } else {
                for l in rows.iter().map(|r| table::line(r, &widths)) {
                    outln!("{l}");
                }
            }
        }
        Some(GetFormat::Name) => {
            for o in &items {
                outln!("{}", o.key());
            }
        }
        Some(GetFormat::Json) => {
            if args.watch {
                for o in &items {
                    outln!("{}", table::json(std::slice::from_ref(o), true));
                }
            } else {
                outln!("{}", table::json(&items, args.name.is_some()));
            }
        }
        Some(GetFormat::Yaml) => {
            for (i, o) in items.iter().enumerate() {
                if i > 0 || args.watch {
                    outln!("---");
                }
                out!("{}", table::yaml(o)?);
            }
        }
    }
    if !args.watch {
        return Ok(());
    }
    // Resumes on another server of the context when this one goes away.
    let mut stream = Box::pin(client.watch_resuming(
        kind,
        &selector.to_string(),
        &rv,
        std::time::Duration::from_secs(60),
    ));
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(ev) = ev else {
            return Err(Failure::new(
                Code::Connection,
                "the server closed the watch",
            ));
        };
        let ev = ev?;
        if let WatchEvent::Bookmark(_) = ev {
            continue;
        }
        if let Some(o) = ev.object()
            && args.name.as_deref().is_none_or(|n| o.name() == n)
        {
            print_one_row(o, args.output, &widths)?;
        }
    }
}
