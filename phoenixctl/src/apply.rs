//! `phoenixctl apply -f PATH`: decode, default and validate manifests; with
//! `--dry-run=client`, print what would be applied.

use clap::{Args, ValueEnum};
use phoenix_api::{Document, Object};

use crate::OutputFormat;
use crate::exit::{CmdResult, Code, Failure};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A file, a directory (recursive: .yaml, .yml, .json) or `-` for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// `client`: check and print locally, contact no server.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "client")]
    dry_run: Option<DryRun>,
    /// Print the objects instead of a summary.
    #[arg(short, long, value_enum)]
    output: Option<OutputFormat>,
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

pub fn run(args: &ApplyArgs) -> CmdResult {
    let docs = load(&args.files)?;
    match args.dry_run {
        Some(DryRun::Client) => {}
        Some(DryRun::Server) | None => {
            return Err(Failure::new(
                Code::Connection,
                "no API server to apply to yet: `phoenix serve` lands with the API server; use --dry-run=client",
            ));
        }
    }
    let objects: Vec<&Object> = docs.iter().map(|d| &d.object).collect();
    match args.output {
        None => {
            for o in &objects {
                println!("{} checked (dry run)", o.key());
            }
        }
        Some(OutputFormat::Name) => {
            for o in &objects {
                println!("{}", o.key());
            }
        }
        Some(OutputFormat::Json) => {
            let values: Vec<serde_json::Value> =
                objects.iter().map(|o| o.to_json_value()).collect();
            let out = if values.len() == 1 {
                serde_json::to_string_pretty(&values[0])
            } else {
                serde_json::to_string_pretty(&values)
            };
            println!("{}", out.expect("JSON values serialize"));
        }
        Some(OutputFormat::Yaml) => {
            for (i, o) in objects.iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                let text = serde_saphyr::to_string(&o.to_json_value())
                    .map_err(|e| Failure::new(Code::Failure, format!("cannot print YAML: {e}")))?;
                print!("{text}");
            }
        }
    }
    Ok(())
}
