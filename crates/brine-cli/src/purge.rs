//! `brine purge` (BOINC's `db_purge`) and `brine archive get`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use brine::{StoreConfig, StoreType};
use brine_purge::{purge, read_archived, Compression, PurgeOptions, PurgeReport, Source};
use brine_rocksdb::StoreKind;
use clap::{Args, Subcommand};

use crate::ui::{self, outln};
use crate::Outcome;

#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// The store to purge: a requester store (jobs) or a compute store (executions)
    /// (default: BRINE_JOB_STORE_PATH, else {BRINE_DIR}/{NODE_ID}-requester.db).
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,
    /// The backend (default: BRINE_JOB_STORE_TYPE, else rocksdb). A memory store starts
    /// empty, so there is nothing to purge.
    #[arg(long, value_enum)]
    backend: Option<crate::backend::BackendArg>,
    /// The PostgreSQL database of the postgres backend (default: BRINE_DATABASE_URL).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Where archive files and the index go (default: {BRINE_DIR}/archive for a requester
    /// store, {BRINE_DIR}/archive-compute for a compute store; created if missing).
    #[arg(long, value_name = "DIR")]
    archive_dir: Option<PathBuf>,
    /// Purge only jobs whose last change is at least this many days old.
    #[arg(long, default_value_t = 7.0, value_name = "N")]
    min_age_days: f64,
    /// Purge at most N jobs (at least 1), then stop (each daemon pass likewise); leave it
    /// out for no limit.
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// Write at most N jobs to each archive file.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_per_file: usize,
    /// Compress archive files with gzip.
    #[arg(long, conflicts_with = "zstd")]
    gzip: bool,
    /// Compress archive files with zstd.
    #[arg(long)]
    zstd: bool,
    /// Report what would be archived; write and delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Keep running, a pass every --interval, until SIGTERM or SIGINT (which let the
    /// archive file in progress finish). Not with --dry-run.
    #[arg(long)]
    daemon: bool,
    /// Time between daemon passes (90s, 15m, 1h…; at least 1s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h", requires = "daemon")]
    interval: Duration,
    /// Print JSON (one object per pass).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ArchiveArgs {
    #[command(subcommand)]
    command: ArchiveCommand,
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// Read a purged job back from its archive, through the index.
    Get {
        /// The job id (an execution id, for a compute store's archives).
        id: String,
        /// The archive directory (default: {BRINE_DIR}/archive).
        #[arg(long, value_name = "DIR")]
        archive_dir: Option<PathBuf>,
        /// Print compact JSON.
        #[arg(long)]
        json: bool,
    },
}

fn default_archive_dir() -> anyhow::Result<PathBuf> {
    Ok(StoreConfig::from_env()?.dir.join("archive"))
}

/// Opens the store to purge through the facade: on RocksDB the store at the path, as
/// whichever kind it is; otherwise the configured job store. Returns it with the words
/// that say what was opened.
async fn open_source(mut config: StoreConfig, path: Option<PathBuf>) -> anyhow::Result<(Source, String)> {
    let options = brine::Options { create_if_missing: false, ..brine::Options::default() };
    if config.job_store_type != StoreType::RocksDb {
        let store = brine::open_job_store_with(&config, &options).await?;
        return Ok((Source::Jobs(store), brine::describe(&config, brine::Side::Requester)));
    }
    let path = path.unwrap_or_else(|| config.job_store_path.clone());
    Ok(match brine_rocksdb::store_kind_at(&path)? {
        StoreKind::Requester => {
            config.job_store_path = path;
            let store = brine::open_job_store_with(&config, &options).await?;
            (Source::Jobs(store), brine::describe(&config, brine::Side::Requester))
        }
        StoreKind::Compute => {
            (config.compute_store_type, config.compute_store_path) = (StoreType::RocksDb, path);
            let store = brine::open_execution_store_with(&config, &options).await?;
            (Source::Executions(store), brine::describe(&config, brine::Side::Compute))
        }
    })
}

/// Sets `stop` on SIGTERM or SIGINT and wakes the daemon's sleep.
fn watch_signals(stop: Arc<AtomicBool>, wake: Arc<tokio::sync::Notify>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stop requested: finishing the archive file in progress");
        stop.store(true, Ordering::Release);
        wake.notify_one();
    });
    Ok(())
}

fn print(report: &PurgeReport, opened: &str, json: bool) -> anyhow::Result<()> {
    if json {
        ui::print_json(&ui::with_opened(report, opened)?)
    } else {
        outln!("{report}")?;
        for f in &report.files {
            outln!("  {f}")?;
        }
        Ok(())
    }
}

pub(crate) async fn run_purge(args: PurgeArgs) -> anyhow::Result<Outcome> {
    let min_age = Duration::try_from_secs_f64(args.min_age_days * 86_400.0).map_err(|_| {
        anyhow::anyhow!("--min-age-days must be a number of days, 0 or more (got {})", args.min_age_days)
    })?;
    if args.max_per_file == 0 {
        bail!("--max-per-file must be at least 1");
    }
    if args.max == Some(0) {
        bail!("--max must be at least 1 (leave it out for no limit)");
    }
    if args.daemon && args.interval < Duration::from_secs(1) {
        bail!("--interval must be at least 1s (got {})", humantime::format_duration(args.interval));
    }
    if args.daemon && args.dry_run {
        bail!("--daemon and --dry-run together would repeat the same report forever: give one of them");
    }
    let mut config = StoreConfig::from_env()?;
    config.job_store_type = crate::backend::choose(args.backend, config.job_store_type, args.store.as_deref())?;
    let backend = config.job_store_type;
    crate::backend::database_url(&mut config, backend, args.database_url.clone())?;
    let (source, opened) = open_source(config, args.store).await?;
    tracing::debug!(%opened, dry_run = args.dry_run, "purging");
    if !args.json {
        outln!("opened {opened}")?;
    }
    let archive_dir = match (args.archive_dir, &source) {
        (Some(d), _) => d,
        (None, Source::Jobs(_)) => default_archive_dir()?,
        (None, Source::Executions(_)) => StoreConfig::from_env()?.dir.join("archive-compute"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(tokio::sync::Notify::new());
    if args.daemon {
        watch_signals(stop.clone(), wake.clone())?;
    }
    let compression = match (args.gzip, args.zstd) {
        (true, _) => Compression::Gzip,
        (_, true) => Compression::Zstd,
        _ => Compression::None,
    };
    let result: anyhow::Result<()> = async {
        loop {
            let bar = ui::progress(None, if args.dry_run { "jobs (dry run)" } else { "jobs archived" }, args.json);
            let b = bar.clone();
            let options = PurgeOptions {
                min_age,
                max: args.max,
                max_per_file: args.max_per_file,
                compression,
                dry_run: args.dry_run,
                stop: Some(stop.clone()),
                progress: Some(Arc::new(move |n| b.set_position(n))),
                ..PurgeOptions::new(&archive_dir)
            };
            let report = purge(&source, &options).await;
            bar.finish_and_clear();
            print(&report?, &opened, args.json)?;
            if !args.daemon || stop.load(Ordering::Acquire) {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(args.interval) => {}
                _ = wake.notified() => {}
            }
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
        }
    }
    .await;
    // A purge error says more than a close error after it.
    let closed = source.close().await;
    result?;
    closed?;
    Ok(Outcome::Ok)
}

pub(crate) async fn run_archive(args: ArchiveArgs) -> anyhow::Result<Outcome> {
    match args.command {
        ArchiveCommand::Get { id, archive_dir, json } => {
            // Job and execution ids share their rules; a bad one cannot be in any index.
            brine_store::model::validate_name("id", &id, brine_store::model::MAX_ID_LEN)?;
            let dir = match archive_dir {
                Some(d) => d,
                None => default_archive_dir()?,
            };
            let Some(record) = read_archived(&dir, &id)? else {
                bail!("{id} is not in the archive index {}", dir.join(brine_purge::INDEX_FILE).display());
            };
            if json {
                ui::print_json(&record)?;
            } else {
                outln!("{}", serde_json::to_string_pretty(&record)?)?;
            }
            Ok(Outcome::Ok)
        }
    }
}
