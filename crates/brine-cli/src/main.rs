//! `brine`: the operator's command for Brine stores (CONTRACT §7).
//!
//! - `brine db check|buckets|keys|get|dump|stats|compact|backup PATH …`: the `bbolt` commands of
//!   Bacalhau's `bbolt` commands, on a Brine store directory of either kind;
//! - `brine recover`: restart recovery with a policy table, printing its report;
//! - `brine simulate`: the demo, a requester and a compute node under a workload with a
//!   hard restart in the middle;
//! - `brine purge` and `brine archive get`: purge old jobs to archive files (BOINC's `db_purge`)
//!   and read them back;
//! - `brine migrate status|up PATH`: a store's format version and the steps that
//!   upgrade it; `brine migrate copy --from STORE --to STORE`: a store moved to another
//!   backend;
//! - `brine export` and `brine import`: a store's whole content as a dump file, loaded
//!   back into an empty store of any backend.
//!
//! Every command that prints data takes `--json`. Exit statuses (`help::EXIT_STATUS`): 0
//! success, 1 an error (one line on stderr), 2 a usage error (clap's message and the
//! usage), 3 problems found (`db check`, and `simulate`'s final check). A closed stdout
//! (`brine … | head`) ends a command quietly with 0 (`docs/BAD_INPUT.md`).

mod backend;
mod db;
mod help;
mod migrate;
mod purge;
mod recover;
mod simulate;
mod transfer;
mod ui;

use std::io::Write;
use std::process::ExitCode;

/// mimalloc: long runs (purge, recovery, check) allocate and free millions of small
/// records, where it is markedly faster than the system allocator (purge throughput
/// +13% in `cargo xtask bench-purge`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// The exit status of a command that found problems.
const EXIT_PROBLEMS: u8 = 3;

/// Inspect, repair and exercise Brine stores.
#[derive(Debug, Parser)]
#[command(name = "brine", version, about, propagate_version = true, after_help = help::footer())]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect a store directory, read-only (the bbolt commands: check, buckets, keys, get,
    /// dump, stats, compact, backup).
    Db(db::DbArgs),
    /// Run restart recovery on a compute store and print its report.
    #[command(after_help = help::page(
        &[
            "brine recover --dry-run --preset fail-live        # the configured compute store",
            "brine recover --store /var/lib/brine/node-0-compute.db --policy policy.toml",
            "brine recover --backend postgres --database-url postgresql://brine@db/brine --json",
        ],
        &["BRINE_DIR", "BRINE_NODE_ID", "BRINE_COMPUTE_STORE_TYPE", "BRINE_COMPUTE_STORE_PATH", "BRINE_DATABASE_URL", "BRINE_QUOTA_BYTES", "BRINE_LOG"],
    ))]
    Recover(recover::RecoverArgs),
    /// Run the demo: a requester and a compute node under a workload, with a hard restart.
    #[command(after_help = help::page(
        &[
            "brine simulate                                     # 2000 jobs in a new temp directory",
            "brine simulate --executions 500 --seed 7 --dir /tmp/demo --json",
            "brine simulate --backend postgres --database-url postgresql:///brine_demo",
        ],
        &["BRINE_DATABASE_URL", "BRINE_QUOTA_BYTES", "BRINE_LOG"],
    ))]
    Simulate(simulate::SimulateArgs),
    /// Archive old terminal jobs to files, then delete them from the store (db_purge).
    #[command(after_help = help::page(
        &[
            "brine purge --dry-run                              # what would go, from the configured job store",
            "brine purge --min-age-days 30 --zstd --archive-dir /srv/brine/archive",
            "brine purge --daemon --interval 1h --store /var/lib/brine/node-0-requester.db",
        ],
        &["BRINE_DIR", "BRINE_NODE_ID", "BRINE_JOB_STORE_TYPE", "BRINE_JOB_STORE_PATH", "BRINE_DATABASE_URL", "BRINE_QUOTA_BYTES", "BRINE_LOG"],
    ))]
    Purge(purge::PurgeArgs),
    /// Read purged jobs back from the archives.
    Archive(purge::ArchiveArgs),
    /// A store's format version, the steps that upgrade a store written by an older
    /// brine, and copying a store to another backend.
    Migrate(migrate::MigrateArgs),
    /// Write a store's whole content to a dump file (JSON lines, zstd optional).
    #[command(after_help = crate::help::page(
        &[
            "brine export --store /var/lib/brine/node-0-compute.db --output compute.jsonl.zst",
            "brine export --store postgres:postgresql://brine@db/brine --kind requester > jobs.jsonl",
            "brine export --store /var/lib/brine/node-0-requester.db --zstd --json -o jobs.jsonl.zst",
        ],
        &["BRINE_NODE_ID", "BRINE_LOG"],
    ))]
    Export(transfer::ExportArgs),
    /// Load a dump into an empty store of any backend, keeping ids, revisions, sequence
    /// numbers and checkpoints.
    #[command(after_help = crate::help::page(
        &[
            "brine import compute.jsonl.zst --store /var/lib/brine/node-0-compute.db",
            "brine import jobs.jsonl --store postgres:postgresql://brine@db/brine",
            "zstdcat compute.jsonl.zst | brine import - --store memory:   # check that a dump loads",
        ],
        &["BRINE_NODE_ID", "BRINE_QUOTA_BYTES", "BRINE_LOG"],
    ))]
    Import(transfer::ImportArgs),
}

/// What a command asks `main` to exit with.
pub(crate) enum Outcome {
    /// Success.
    Ok,
    /// The command ran but found problems (exit status 3).
    Problems,
    /// Interrupted (SIGINT or SIGTERM): the command stopped at a safe point and said
    /// so (exit status 130, as a shell reports a command ended by Ctrl-C).
    Interrupted,
}

fn main() -> ExitCode {
    // Colour only for a person at a terminal: a log file or a pipe gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BRINE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
            Command::Export(args) => transfer::run_export(args).await,
            Command::Import(args) => transfer::run_import(args).await,
        }
    });
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Problems) => ExitCode::from(EXIT_PROBLEMS),
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Err(e) if ui::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Nowhere to report a failure to write to stderr.
            let _ = writeln!(std::io::stderr(), "error: {}", ui::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
