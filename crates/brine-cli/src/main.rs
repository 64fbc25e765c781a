//! `brine`: the operator's command for Brine stores (CONTRACT §7).
//!
//! - `brine db check|buckets|keys|get|stats|compact PATH …`: the `bbolt` commands of
//!   Bacalhau's `bbolt` commands, on a Brine store directory of either kind;
//! - `brine recover`: restart recovery with a policy table, printing its report;
//! - `brine simulate`: the demo, a requester and a compute node under a workload with a
//!   hard restart in the middle;
//! - `brine purge` and `brine archive get`: purge old jobs to archive files (BOINC's `db_purge`)
//!   and read them back;
//! - `brine migrate status|up PATH`: a store's format version and the steps that
//!   upgrade it.
//!
//! Every command that prints data takes `--json`. Exit statuses ([`EXIT_STATUS`]): 0
//! success, 1 an error (one line on stderr), 2 a usage error (clap's message and the
//! usage), 3 problems found (`db check`, and `simulate`'s final check). A closed stdout
//! (`brine … | head`) ends a command quietly with 0 (`docs/BAD_INPUT.md`).

mod backend;
mod db;
mod migrate;
mod purge;
mod recover;
mod simulate;
mod ui;

use std::io::Write;
use std::process::ExitCode;

/// mimalloc: long runs (purge, recovery, check) allocate and free millions of small
/// records, where it is markedly faster than the system allocator (purge throughput
/// +13% in `cargo xtask bench-purge`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// The exit statuses, as every `--help` lists them.
pub(crate) const EXIT_STATUS: &str = "\
Exit status:
  0  success (also when stdout is closed early, as in `brine ... | head`)
  1  an error: one line on stderr naming what failed
  2  a usage error: an unknown command or flag, a missing or unparsable value
  3  problems found: `db check` (or `simulate`'s final check) found inconsistencies or corruption";

/// The environment, as `brine --help` lists it.
pub(crate) const ENVIRONMENT: &str = "\
Environment (each BRINE_* name falls back to Bacalhau's BACALHAU_* name):
  BRINE_DIR                 where stores and archives live (default ~/.brine)
  BRINE_NODE_ID             this node's id, part of its store file names (default node-0;
                            no '/', not starting with '.')
  BRINE_JOB_STORE_TYPE      the requester store's backend: rocksdb (default; boltdb names it
                            too), inmemory or postgres
  BRINE_COMPUTE_STORE_TYPE  the compute store's backend, likewise
  BRINE_JOB_STORE_PATH      the requester store (default {BRINE_DIR}/{NODE_ID}-requester.db)
  BRINE_COMPUTE_STORE_PATH  the compute store (default {BRINE_DIR}/{NODE_ID}-compute.db)
  BRINE_DATABASE_URL        the PostgreSQL database of the postgres backend
  BRINE_LOG                 what to log on stderr: error, warn (default), info, debug, trace";

/// What every `--help` ends with: the environment and the exit statuses.
fn footer() -> String {
    format!("{ENVIRONMENT}\n\n{EXIT_STATUS}")
}

/// The exit status of a command that found problems.
const EXIT_PROBLEMS: u8 = 3;

/// Inspect, repair and exercise Brine stores.
#[derive(Debug, Parser)]
#[command(name = "brine", version, about, propagate_version = true, after_help = footer())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect a store directory (the bbolt commands: check, buckets, keys, get, stats, compact).
    Db(db::DbArgs),
    /// Run restart recovery on a compute store and print its report.
    Recover(recover::RecoverArgs),
    /// Run the demo: a requester and a compute node under a workload, with a hard restart.
    Simulate(simulate::SimulateArgs),
    /// Archive old terminal jobs to files, then delete them from the store (db_purge).
    Purge(purge::PurgeArgs),
    /// Read purged jobs back from the archives.
    Archive(purge::ArchiveArgs),
    /// A store's format version, and the steps that upgrade a store written by an older brine.
    Migrate(migrate::MigrateArgs),
}

/// What a command asks `main` to exit with.
pub(crate) enum Outcome {
    /// Success.
    Ok,
    /// The command ran but found problems (exit status 3).
    Problems,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BRINE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    // Usage errors exit with clap's 2; help and version with 0. Printing them to a
    // closed pipe is not an error.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Db(args) => db::run(args).await,
            Command::Recover(args) => recover::run(args).await,
            Command::Simulate(args) => simulate::run(args).await,
            Command::Purge(args) => purge::run_purge(args).await,
            Command::Archive(args) => purge::run_archive(args).await,
            Command::Migrate(args) => migrate::run(args).await,
        }
    });
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Problems) => ExitCode::from(EXIT_PROBLEMS),
        Err(e) if ui::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Nowhere to report a failure to write to stderr.
            let _ = writeln!(std::io::stderr(), "error: {}", ui::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
