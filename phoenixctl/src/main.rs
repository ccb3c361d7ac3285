//! `phoenixctl`: the Phoenix command-line client.

#![forbid(unsafe_code)]

/// Writes to stdout; a closed pipe (`phoenixctl get ... | head`) ends the process quietly.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::stdout_write(format_args!($($t)*), false)
    };
}

/// Like [`out!`], with a newline.
macro_rules! outln {
    () => {
        $crate::stdout_write(format_args!(""), true)
    };
    ($($t:tt)*) => {
        $crate::stdout_write(format_args!($($t)*), true)
    };
}

mod apply;
mod conn;
mod delete;
mod describe;
mod diff;
mod exit;
mod explain;
mod get;
mod metadata;
mod sync;
mod table;
mod wait;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::exit::{CmdResult, Code, Failure};

/// The Phoenix command-line client: apply, inspect and explain Phoenix objects.
#[derive(Debug, Parser)]
#[command(name = "phoenixctl", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    conn: conn::ConnArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply manifests from files, directories (recursively) or stdin (`-`).
    Apply(apply::ApplyArgs),
    /// List objects of a kind, or show one.
    Get(get::GetArgs),
    /// Show an object in detail: metadata, spec, status, conditions, events.
    Describe(describe::DescribeArgs),
    /// Delete objects by kind and name, or those defined in files.
    Delete(delete::DeleteArgs),
    /// Show what applying manifests would change (exit 1 when anything would).
    Diff(diff::DiffArgs),
    /// Wait for a condition of an object, or for its deletion.
    Wait(wait::WaitArgs),
    /// Set (`KEY=VALUE`) or remove (`KEY-`) annotations, also of an object being deleted.
    Annotate(metadata::MetadataArgs),
    /// Set (`KEY=VALUE`) or remove (`KEY-`) labels of an object.
    Label(metadata::MetadataArgs),
    /// Sync a GitSync now (`sync gitsync NAME`) and wait for the result.
    Sync(sync::SyncArgs),
    /// Show the type and documentation of a kind or field, e.g. `guest.spec.networks`.
    Explain {
        /// KIND[.field.path]
        field: String,
    },
    /// Print the client version.
    Version,
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
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

/// Writes `args` to stdout; exits quietly when the reader went away.
fn stdout_write(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let r = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> CmdResult {
    let conn = &cli.conn;
    match cli.command {
        Command::Apply(args) => apply::run(&args, conn).await,
        Command::Get(args) => get::run(&args, conn).await,
        Command::Describe(args) => describe::run(&args, conn).await,
        Command::Delete(args) => delete::run(&args, conn).await,
        Command::Diff(args) => diff::run(&args, conn).await,
        Command::Wait(args) => wait::run(&args, conn).await,
        Command::Annotate(args) => metadata::run(&args, metadata::Field::Annotations, conn).await,
        Command::Label(args) => metadata::run(&args, metadata::Field::Labels, conn).await,
        Command::Sync(args) => sync::run(&args, conn).await,
        Command::Explain { field } => explain::run(&field),
        Command::Version => {
            outln!("phoenixctl {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "phoenixctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Code::Failure, format!("cannot start the runtime: {e}")))
        .and_then(|rt| rt.block_on(run(cli)));
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
