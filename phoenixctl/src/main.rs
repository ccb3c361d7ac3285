//! `phoenixctl`: the Phoenix command-line client.

#![forbid(unsafe_code)]

mod apply;
mod exit;
mod explain;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The Phoenix command-line client: apply, inspect and explain Phoenix objects.
#[derive(Debug, Parser)]
#[command(name = "phoenixctl", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply manifests from files, directories (recursively) or stdin (`-`).
    Apply(apply::ApplyArgs),
    /// Show the type and documentation of a kind or field, e.g. `guest.spec.networks`.
    Explain {
        /// KIND[.field.path]
        field: String,
    },
    /// Print the client version.
    Version,
}

/// Output formats shared by commands that print objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// YAML documents.
    Yaml,
    /// A JSON object, or a list of them.
    Json,
    /// `kind/name` per line.
    Name,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Apply(args) => apply::run(&args),
        Command::Explain { field } => explain::run(&field),
        Command::Version => {
            println!("phoenixctl {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("error: {}", e.message);
            }
            ExitCode::from(e.code as u8)
        }
    }
}
