//! `brine purge` (BOINC's `db_purge`) and `brine archive get`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use brine::{StoreConfig, StoreType};
use brine_purge::{purge, Compression, PurgeOptions, PurgeReport, Source};
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
    #[command(after_help = crate::help::page(
        &[
            "brine archive get job-0000004                     # looks in {BRINE_DIR}/archive, then archive-compute",
            "brine archive get job-0000004 --archive-dir /srv/brine/archive --json",
        ],
        &["BRINE_DIR", "BRINE_LOG"],
    ))]
    Get {
        /// The job id.
        id: String,
        /// The archive directory (default: {BRINE_DIR}/archive, then
        /// {BRINE_DIR}/archive-compute).
        #[arg(long, value_name = "DIR")]
        archive_dir: Option<PathBuf>,
        /// Print compact JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the archive files, oldest first, with their sizes.
    #[command(after_help = crate::help::page(
        &[
            "brine archive list --archive-dir /srv/brine/archive",
        ],
        &["BRINE_DIR", "BRINE_LOG"],
    ))]
    List {
        /// The archive directory (default: {BRINE_DIR}/archive).
        #[arg(long, value_name = "DIR")]
        archive_dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check an archive directory: every file decodes to its end, every index line
    /// names a job its archive holds, no id is indexed twice for one archive, no
    /// archived job is missing from the index. Exits with 3 when it finds problems.
    #[command(after_help = crate::help::page(
        &[
            "brine archive verify --archive-dir /srv/brine/archive",
            "brine archive verify --json | jq .problems",
        ],
        &["BRINE_DIR", "BRINE_LOG"],
    ))]
    Verify {
        /// The archive directory (default: {BRINE_DIR}/archive).
        #[arg(long, value_name = "DIR")]
        archive_dir: Option<PathBuf>,
        /// Print JSON.
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

/// Prints a pass's report; the first pass's text starts with what was opened and where
/// archives go (printed with the report, so a run that fails prints only its error).
fn print(
    report: &PurgeReport,
    opened: &str,
    archive_dir: &std::path::Path,
    json: bool,
    first: bool,
) -> anyhow::Result<()> {
    if json {
        let mut value = ui::with_opened(report, opened)?;
        value["archive_dir"] = archive_dir.display().to_string().into();
        ui::print_json(&value)
    } else {
        if first {
            outln!("opened {opened}")?;
            outln!("archive directory: {}", archive_dir.display())?;
        }
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
    let archive_dir = match (args.archive_dir, &source) {
        (Some(d), _) => d,
        (None, Source::Jobs(_)) => default_archive_dir()?,
        (None, Source::Executions(_)) => StoreConfig::from_env()?.dir.join("archive-compute"),
    };

    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(tokio::sync::Notify::new());
    // Ctrl-C or SIGTERM lets the archive file in progress finish, then stops.
    ui::watch_signals(stop.clone(), wake.clone(), "finishing the archive file in progress")?;
    let compression = match (args.gzip, args.zstd) {
        (true, _) => Compression::Gzip,
        (_, true) => Compression::Zstd,
        _ => Compression::None,
    };
    let mut first = true;
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
            print(&report?, &opened, &archive_dir, args.json, first)?;
            first = false;
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
    // A daemon stops on a signal by design; a single run stopped by one was cut short.
    if !args.daemon && stop.load(Ordering::Acquire) {
        let _ = writeln!(
            std::io::stderr(),
            "interrupted: the purge stopped after the archive file in progress; the store and its archives are \
             consistent (run it again to go on)"
        );
        return Ok(Outcome::Interrupted);
    }
    Ok(Outcome::Ok)
}

/// Looks `id` up in `dirs` in turn (the first that exists and names it wins), warning
/// on stderr about index lines that had to be skipped.
fn look_up(dirs: &[PathBuf], id: &str) -> anyhow::Result<(serde_json::Value, PathBuf)> {
    let existing: Vec<&PathBuf> = dirs.iter().filter(|d| d.is_dir()).collect();
    if existing.is_empty() {
        let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        bail!("no archive directory at {}", names.join(" or "));
    }
    let mut searched = Vec::new();
    let mut last_error = None;
    for dir in existing {
        let lookup = match brine_purge::find_archived(dir, id) {
            Ok(lookup) => lookup,
            // With several default directories, one without an index is not the answer.
            Err(e @ brine_purge::PurgeError::NoIndex { .. }) if dirs.len() > 1 => {
                last_error = Some(e);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let index = dir.join(brine_purge::INDEX_FILE);
        for line in &lookup.skipped_lines {
            let _ =
                writeln!(std::io::stderr(), "warning: {} line {line}: not an index line (skipped)", index.display());
        }
        if let (Some(record), Some(file)) = (lookup.record, lookup.file) {
            return Ok((record, file));
        }
        searched.push(index.display().to_string());
    }
    match (searched.is_empty(), last_error) {
        (true, Some(e)) => Err(e.into()),
        _ => bail!("{id} is not in the archive index {}", searched.join(" nor ")),
    }
}

/// The archive directory a command names, else `{BRINE_DIR}/archive`.
fn archive_dir_or_default(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    dir.map_or_else(default_archive_dir, Ok)
}

pub(crate) async fn run_archive(args: ArchiveArgs) -> anyhow::Result<Outcome> {
    match args.command {
        ArchiveCommand::Get { id, archive_dir, json } => {
            // Job and execution ids share their rules; a bad one cannot be in any index.
            brine_store::model::validate_name("id", &id, brine_store::model::MAX_ID_LEN)?;
            let dirs = match archive_dir {
                Some(d) => vec![d],
                None => {
                    let base = StoreConfig::from_env()?.dir;
                    vec![base.join("archive"), base.join("archive-compute")]
                }
            };
            let (record, file) = tokio::task::spawn_blocking(move || look_up(&dirs, &id))
                .await
                .context("the archive lookup failed")??;
            tracing::debug!(file = %file.display(), "read from the archive");
            if json {
                ui::print_json(&record)?;
            } else {
                outln!("{}", serde_json::to_string_pretty(&record)?)?;
            }
            Ok(Outcome::Ok)
        }
        ArchiveCommand::List { archive_dir, json } => {
            let dir = archive_dir_or_default(archive_dir)?;
            let files = brine_purge::verify::list(&dir)?;
            if json {
                ui::print_json(&serde_json::json!({ "archive_dir": dir, "files": files }))?;
                return Ok(Outcome::Ok);
            }
            outln!("{:<40} {:>12} {:>6} {}", "file", "size", "kind", "created (UTC)")?;
            for f in &files {
                let created = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(f.created));
                let kind = serde_json::to_value(f.compression)?;
                outln!("{:<40} {:>12} {:>6} {created}", f.name, ui::bytes(f.bytes), kind.as_str().unwrap_or(""))?;
            }
            outln!("{} archive file(s) in {}", files.len(), dir.display())?;
            Ok(Outcome::Ok)
        }
        ArchiveCommand::Verify { archive_dir, json } => {
            let dir = archive_dir_or_default(archive_dir)?;
            let bar = ui::progress(None, "archive files read", json);
            let (b, owned) = (bar.clone(), dir.clone());
            let report =
                tokio::task::spawn_blocking(move || brine_purge::verify::verify(&owned, |n| b.set_position(n)))
                    .await
                    .context("the verification failed")?;
            bar.finish_and_clear();
            let report = report?;
            let outcome = if report.is_ok() { Outcome::Ok } else { Outcome::Problems };
            let printed = if json {
                let mut value = serde_json::to_value(&report)?;
                value["archive_dir"] = dir.display().to_string().into();
                value["ok"] = report.is_ok().into();
                ui::print_json(&value)
            } else {
                (|| {
                    for p in &report.problems {
                        outln!("{p}")?;
                    }
                    for marker in &report.pending {
                        outln!("{marker}: an interrupted purge (the next purge finishes it)")?;
                    }
                    let jobs: u64 = report.files.iter().filter_map(|f| f.jobs).sum();
                    let summary = format!(
                        "{} archive file(s), {jobs} job(s), {} index line(s) in {}",
                        report.files.len(),
                        report.index_lines,
                        dir.display()
                    );
                    if report.is_ok() {
                        outln!("OK: {summary}")
                    } else {
                        outln!("{} problem(s); {summary}", report.problems.len())
                    }
                })()
            };
            ui::printed(printed, outcome)
        }
    }
}
