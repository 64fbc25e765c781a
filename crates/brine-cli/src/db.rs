//! `brine db`: Bacalhau's `bbolt` inspection commands on a Brine store directory.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use brine_rocksdb::readable;
use brine_rocksdb::{Cf, Inspector};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::ui::{self, outln};
use crate::Outcome;

#[derive(Debug, Args)]
pub(crate) struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Verify the store: values decode, indexes match records, counters match, the event
    /// log has no gap, checkpoints are at or below the head. Prints OK or each problem;
    /// exits with 2 when there are problems. With `--database-url`, checks every store in
    /// a PostgreSQL database instead (the job store and each compute node's).
    #[command(after_help = crate::help::page(
        &[
            "brine db check /var/lib/brine/node-0-compute.db",
            "brine db check --json /var/lib/brine/node-0-compute.db | jq .problems",
            "brine db check --database-url postgresql://brine@db/brine",
        ],
        &["BRINE_LOG"],
    ))]
    Check {
        /// The store directory.
        #[arg(required_unless_present = "database_url")]
        path: Option<PathBuf>,
        /// Check the stores of this PostgreSQL database (instead of a directory).
        #[arg(long, value_name = "URL", conflicts_with = "path")]
        database_url: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the column families (the buckets).
    #[command(after_help = crate::help::page(
        &[
            "brine db buckets /var/lib/brine/node-0-compute.db",
        ],
        &["BRINE_LOG"],
    ))]
    Buckets {
        /// The store directory.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the keys of a column family, in order, as their layout reads: parts joined
    /// by `/`, numbers as numbers, states by name (`Running/e-job-0000004-4`).
    #[command(after_help = crate::help::page(
        &[
            "brine db keys /var/lib/brine/node-0-compute.db idx_executions_by_state --prefix Running --limit 20",
            "brine db keys /var/lib/brine/node-0-compute.db executions --start-after e-job-0000019-19 --limit 20",
            "brine db keys /var/lib/brine/node-0-compute.db executions --count",
        ],
        &["BRINE_LOG"],
    ))]
    Keys {
        /// The store directory.
        path: PathBuf,
        /// The column family.
        cf: String,
        /// Only keys starting with this, written as `keys` prints them (`Running`,
        /// `job-0000004/`, `Running/e-job-00`).
        #[arg(long)]
        prefix: Option<String>,
        /// Only keys after this one (as `keys` prints it): give the last key of a page to
        /// get the next.
        #[arg(long, value_name = "KEY")]
        start_after: Option<String>,
        /// At most this many keys.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Print only how many keys there are.
        #[arg(long, conflicts_with_all = ["values", "keys_only", "limit", "start_after"])]
        count: bool,
        /// Print the keys alone (the default).
        #[arg(long, conflicts_with = "values")]
        keys_only: bool,
        /// Print each key with its value, decoded: `KEY<TAB>JSON` per line.
        #[arg(long)]
        values: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print one value, decoded, as pretty JSON (times also as RFC 3339). In
    /// `executions`, a job id lists that job's executions.
    #[command(after_help = crate::help::page(
        &[
            "brine db get /var/lib/brine/node-0-compute.db executions e-job-0000004-4",
            "brine db get /var/lib/brine/node-0-compute.db executions job-0000004          # that job's executions",
            "brine db get /var/lib/brine/node-0-compute.db meta count/Running --json",
        ],
        &["BRINE_LOG"],
    ))]
    Get {
        /// The store directory.
        path: PathBuf,
        /// The column family.
        cf: String,
        /// The key, as `keys` prints it.
        key: String,
        /// Print compact JSON with the family and key.
        #[arg(long)]
        json: bool,
    },
    /// Stream a family as JSON lines: `{"key": …, "value": …}` per key, in order.
    #[command(after_help = crate::help::page(
        &[
            "brine db dump /var/lib/brine/node-0-compute.db executions > executions.jsonl",
            "brine db dump /var/lib/brine/node-0-compute.db idx_executions_by_state --prefix Failed",
        ],
        &["BRINE_LOG"],
    ))]
    Dump {
        /// The store directory.
        path: PathBuf,
        /// The column family.
        cf: String,
        /// Only keys starting with this (as `keys` prints them).
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Per family: keys, data size, SST files; and the size on disk.
    #[command(after_help = crate::help::page(
        &[
            "brine db stats /var/lib/brine/node-0-compute.db",
            "brine db stats --json /var/lib/brine/node-0-compute.db",
        ],
        &["BRINE_LOG"],
    ))]
    Stats {
        /// The store directory.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take a consistent copy of the store at DEST while its node keeps writing, check
    /// the copy, and report. Restore by opening the copy (point the node's store path at
    /// it, or copy it into place while the node is stopped).
    #[command(after_help = crate::help::page(
        &[
            "brine db backup /var/lib/brine/node-0-compute.db /backup/node-0-compute-2026-11-28.db",
            "brine db backup --json /var/lib/brine/node-0-requester.db /backup/requester.db",
        ],
        &["BRINE_LOG"],
    ))]
    Backup {
        /// The store directory.
        path: PathBuf,
        /// Where to write the copy (must not exist, or be empty; not inside the store).
        dest: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The store's NOSPACE alarm (BRINE_QUOTA_BYTES): list it, or disarm it once space
    /// was freed.
    #[command(subcommand)]
    Alarm(AlarmCommand),
    /// Copy the store into a fresh, compacted one at DEST.
    #[command(after_help = crate::help::page(
        &[
            "brine db compact /var/lib/brine/node-0-compute.db -o /var/lib/brine/compacted.db",
        ],
        &["BRINE_LOG"],
    ))]
    Compact {
        /// The store directory.
        path: PathBuf,
        /// Where to write the copy (must not exist, or be empty).
        #[arg(short = 'o', long = "output", value_name = "DEST")]
        dest: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AlarmCommand {
    /// Print the store's NOSPACE alarm, if raised: when, and the size and quota then
    /// (read-only, beside a running node).
    #[command(after_help = crate::help::page(
        &[
            "brine db alarm list /var/lib/brine/node-0-compute.db",
            "brine db alarm list --json /var/lib/brine/node-0-requester.db",
        ],
        &["BRINE_LOG"],
    ))]
    List {
        /// The store directory.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disarm the NOSPACE alarm, after freeing space (brine purge, then a restart or
    /// compaction): writes that add data are taken again, and raise the alarm anew if
    /// the store is still past its quota. Opens the store for writing: stop its node.
    #[command(after_help = crate::help::page(
        &[
            "brine db alarm disarm /var/lib/brine/node-0-compute.db",
        ],
        &["BRINE_LOG"],
    ))]
    Disarm {
        /// The store directory.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// When an alarm was raised, in RFC 3339.
fn raised_at(alarm: &brine_rocksdb::Alarm) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(alarm.raised_at.as_nanos());
    humantime::format_rfc3339_seconds(at).to_string()
}

/// An alarm as `db alarm` prints it in JSON.
fn alarm_json(alarm: &brine_rocksdb::Alarm) -> serde_json::Value {
    json!({
        "alarm": "nospace", "raised_at": alarm.raised_at.as_nanos(), "raised_at_rfc3339": raised_at(alarm),
        "size": alarm.size, "quota": alarm.quota,
    })
}

/// An alarm in words.
fn alarm_line(alarm: &brine_rocksdb::Alarm) -> String {
    format!(
        "NOSPACE alarm raised at {}: the store held {} ({} bytes), past its quota of {} ({} bytes)",
        raised_at(alarm),
        ui::bytes(alarm.size),
        alarm.size,
        ui::bytes(alarm.quota),
        alarm.quota
    )
}

/// `brine db alarm list|disarm PATH`.
async fn alarm(command: &AlarmCommand) -> anyhow::Result<Outcome> {
    match command {
        AlarmCommand::List { path, json } => {
            let ins = Inspector::open(path).map_err(opened)?;
            let alarm = ins.alarm();
            ins.close().await?;
            let alarm = alarm?;
            if *json {
                ui::print_json(&json!({ "path": path, "alarms": alarm.iter().map(alarm_json).collect::<Vec<_>>() }))?;
            } else {
                match &alarm {
                    Some(a) => outln!("{}", alarm_line(a))?,
                    None => outln!("no alarm")?,
                }
            }
        }
        AlarmCommand::Disarm { path, json } => {
            let options = brine_rocksdb::OpenOptions { create_if_missing: false, ..Default::default() };
            let was = match brine_rocksdb::store_kind_at(path).map_err(opened)? {
                brine_rocksdb::StoreKind::Compute => {
                    let store = brine_rocksdb::RocksExecutionStore::open(path, &options)?;
                    let was = store.disarm_alarm().await;
                    brine::ExecutionStore::close(&store).await?;
                    was?
                }
                brine_rocksdb::StoreKind::Requester => {
                    let store = brine_rocksdb::RocksJobStore::open(path, &options)?;
                    let was = store.disarm_alarm().await;
                    brine::JobStore::close(&store).await?;
                    was?
                }
            };
            if *json {
                ui::print_json(&json!({ "path": path, "disarmed": was.iter().map(alarm_json).collect::<Vec<_>>() }))?;
            } else {
                match &was {
                    Some(a) => outln!("disarmed: {}", alarm_line(a))?,
                    None => outln!("no alarm was raised")?,
                }
            }
        }
    }
    Ok(Outcome::Ok)
}

/// Why the store could not be opened for inspection. `brine db` is the RocksDB
/// inspector: a path that holds no RocksDB store is refused saying so.
fn opened(e: brine_rocksdb::OpenError) -> anyhow::Error {
    match e {
        e @ brine_rocksdb::OpenError::NotABrineStore { .. } => {
            anyhow!("{e} (brine db inspects the RocksDB stores of the embedded backend)")
        }
        e => e.into(),
    }
}

/// `brine db backup PATH DEST` through the facade (`brine::backup`): the copy of a
/// frozen state of the store, then its read-only check, reported with the check.
async fn backup(path: &std::path::Path, dest: &std::path::Path, json: bool) -> anyhow::Result<Outcome> {
    let mut config = brine::StoreConfig::from_env()?;
    config.compute_store_type = brine::StoreType::RocksDb;
    config.compute_store_path = path.to_path_buf();
    let bar = ui::progress(None, "copying keys", json);
    let b = bar.clone();
    let done = brine::backup::backup(&config, brine::Side::Compute, dest, move |n| b.set_position(n)).await;
    bar.finish_and_clear();
    let done = match done {
        Ok(done) => done,
        Err(brine::backup::BackupError::Open { source, doing }) if doing.starts_with("cannot open the copy") => {
            return Err(anyhow!("{doing}: {source}"))
        }
        Err(brine::backup::BackupError::Open { source, .. }) => return Err(opened(source)),
        Err(brine::backup::BackupError::Store { source, .. }) => return Err(source.into()),
        Err(e) => return Err(e.into()),
    };
    let (report, keys, bytes) = (&done.check, done.keys, done.bytes);
    let ok = report.is_ok();
    if json {
        ui::print_json(&json!({
            "source": path, "destination": dest, "keys": keys, "bytes": bytes,
            "source_was_open": done.source_was_open,
            "check": { "ok": ok, "keys_checked": report.keys_checked, "problems": report.problems.iter().map(ToString::to_string).collect::<Vec<_>>() },
        }))?;
    } else {
        outln!("backed up {} to {}: {keys} keys, {}", path.display(), dest.display(), ui::bytes(bytes))?;
        if ok {
            outln!("check: OK")?;
        } else {
            for p in &report.problems {
                outln!("{p}")?;
            }
            outln!("check: {} problem(s) in the copy", report.problems.len())?;
        }
    }
    Ok(if ok { Outcome::Ok } else { Outcome::Problems })
}

/// Runs a blocking read on the store off the async workers.
async fn blocking<T: Send + 'static>(
    ins: &Arc<Inspector>,
    f: impl FnOnce(&Inspector) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let ins = Arc::clone(ins);
    tokio::task::spawn_blocking(move || f(&ins)).await.context("the inspection task failed")?
}

fn family(ins: &Inspector, name: &str) -> anyhow::Result<Cf> {
    Cf::from_name(name).filter(|cf| ins.families().contains(cf)).ok_or_else(|| {
        let known: Vec<&str> = ins.families().iter().map(|c| c.name()).collect();
        anyhow!("unknown column family {name:?} (this {} store has: {})", ins.kind().as_str(), known.join(", "))
    })
}

/// A key of `cf` as typed (the form `keys` prints), whole or (`prefix`) its start.
fn key_bytes(cf: Cf, text: &str, prefix: bool) -> anyhow::Result<Vec<u8>> {
    readable::parse(cf, text, prefix).map_err(|reason| anyhow!("bad key {text:?}: {reason}"))
}

/// `value` with every time field (`…_time`, `time`: nanoseconds since the epoch) also
/// given as RFC 3339 in a `…_rfc3339` field beside it.
fn with_times(mut value: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(fields) => {
                let mut times = Vec::new();
                for (name, field) in fields.iter_mut() {
                    match field.as_u64() {
                        Some(ns) if name == "time" || name.ends_with("_time") => {
                            let at = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
                            times.push((format!("{name}_rfc3339"), humantime::format_rfc3339_nanos(at).to_string()));
                        }
                        _ => walk(field),
                    }
                }
                for (name, text) in times {
                    fields.insert(name, text.into());
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

/// Prints a check report as `db check` does, and says whether it is clean (also when
/// stdout was closed before all of it was printed).
fn print_check(report: &brine_store::CheckReport, json: bool) -> anyhow::Result<Outcome> {
    let printed = (|| {
        if json {
            let problems: Vec<_> =
                report.problems.iter().map(|p| json!({ "cf": p.place, "key": p.key, "problem": p.what })).collect();
            ui::print_json(&json!({
                "ok": report.is_ok(),
                "keys_checked": report.keys_checked,
                "problems": problems,
            }))
        } else if report.is_ok() {
            outln!("OK")
        } else {
            for p in &report.problems {
                outln!("{p}")?;
            }
            outln!("{} problem(s) in {} keys", report.problems.len(), report.keys_checked)
        }
    })();
    ui::printed(printed, if report.is_ok() { Outcome::Ok } else { Outcome::Problems })
}

/// `db check --database-url`: every store of a PostgreSQL database, one report.
async fn check_database(url: &str, json: bool) -> anyhow::Result<Outcome> {
    let stores = brine_postgres::check_database(url, brine_postgres::PgOptions::default()).await?;
    let mut all = brine_store::CheckReport::default();
    for (store, report) in stores {
        tracing::debug!(store, keys = report.keys_checked, problems = report.problems.len(), "checked");
        all.keys_checked += report.keys_checked;
        for p in report.problems {
            all.problem(format!("{store}: {}", p.place), p.key, p.what);
        }
    }
    print_check(&all, json)
}

pub(crate) async fn run(args: DbArgs) -> anyhow::Result<Outcome> {
    if let DbCommand::Check { database_url: Some(url), json, .. } = &args.command {
        return check_database(url, *json).await;
    }
    if let DbCommand::Backup { path, dest, json } = &args.command {
        return backup(path, dest, *json).await;
    }
    if let DbCommand::Alarm(command) = &args.command {
        return alarm(command).await;
    }
    let path = match &args.command {
        DbCommand::Check { path, .. } => path.clone().context("give the store directory or --database-url")?,
        DbCommand::Buckets { path, .. }
        | DbCommand::Keys { path, .. }
        | DbCommand::Dump { path, .. }
        | DbCommand::Get { path, .. }
        | DbCommand::Stats { path, .. }
        | DbCommand::Compact { path, .. } => path.clone(),
        DbCommand::Backup { .. } | DbCommand::Alarm(_) => {
            unreachable!("backups and alarms are sent on above, before an inspection opens")
        }
    };
    let ins = match Inspector::open(&path) {
        Ok(ins) => Arc::new(ins),
        // Damaged files are what `check` is for: a problem it reports, not an error.
        Err(e) if matches!(args.command, DbCommand::Check { .. }) && brine_rocksdb::reports_corruption(&e) => {
            let json = matches!(args.command, DbCommand::Check { json: true, .. });
            let mut report = brine_store::CheckReport::default();
            report.problem(
                "store",
                path.display().to_string(),
                format!("RocksDB reports corruption, so it cannot be opened: {e}"),
            );
            return print_check(&report, json);
        }
        Err(e) => return Err(opened(e)),
    };
    tracing::debug!(
        path = %path.display(),
        kind = ins.kind().as_str(),
        marked_open = ins.marked_open(),
        "opened the store read-only (a RocksDB secondary instance)"
    );
    let result = run_on(&ins, &path, args.command).await;
    let closed = ins.close().await;
    let outcome = result?;
    closed?;
    tracing::debug!(path = %path.display(), "db command done");
    Ok(outcome)
}

async fn run_on(ins: &Arc<Inspector>, path: &std::path::Path, command: DbCommand) -> anyhow::Result<Outcome> {
    let outcome = match command {
        DbCommand::Check { json, .. } => {
            let report = blocking(ins, |i| Ok(i.check()?)).await?;
            print_check(&report, json)?
        }
        DbCommand::Buckets { json, .. } => {
            let names: Vec<&str> = ins.families().iter().map(|c| c.name()).collect();
            if json {
                ui::print_json(&json!({ "kind": ins.kind().as_str(), "buckets": names }))?;
            } else {
                for n in &names {
                    outln!("{n}")?;
                }
            }
            Outcome::Ok
        }
        DbCommand::Keys { cf, prefix, start_after, limit, count, values, json, .. } => {
            let cf = family(ins, &cf)?;
            let prefix = prefix.as_deref().map(|p| key_bytes(cf, p, true)).transpose()?.unwrap_or_default();
            let after = start_after.as_deref().map(|k| key_bytes(cf, k, false)).transpose()?;
            let limit = limit.unwrap_or(usize::MAX);
            let listing = Listing { cf, json, values, count };
            blocking(ins, move |i| listing.run(i, &prefix, after.as_deref(), limit)).await?;
            Outcome::Ok
        }
        DbCommand::Dump { cf, prefix, .. } => {
            let cf = family(ins, &cf)?;
            let prefix = prefix.as_deref().map(|p| key_bytes(cf, p, true)).transpose()?.unwrap_or_default();
            blocking(ins, move |i| {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                let mut failed = None;
                i.scan(cf, &prefix, None, |k, v| {
                    let line = entry_json(cf, k, v)
                        .and_then(|e| serde_json::to_string(&e).map_err(anyhow::Error::from))
                        .and_then(|t| writeln!(out, "{t}").map_err(ui::stdout_error));
                    line.map_err(|e| failed = Some(e)).is_ok()
                })?;
                if let Some(e) = failed {
                    return Err(e);
                }
                out.flush().map_err(ui::stdout_error)
            })
            .await?;
            Outcome::Ok
        }
        DbCommand::Get { cf, key, json, .. } => {
            let family = family(ins, &cf)?;
            if key.is_empty() {
                bail!("bad key \"\": empty (every key Brine writes has at least one byte)");
            }
            let bytes = key_bytes(family, &key, false)?;
            let value = match ins.get_json(family, &bytes) {
                Ok(Some(v)) => with_times(v),
                Ok(None) if family == Cf::Executions => return job_executions(ins, &key, json).await,
                Ok(None) => bail!("key not found: {} {key}", family.name()),
                Err(e) if e.is_corrupt() => bail!(e),
                Err(e) => return Err(e.into()),
            };
            if json {
                ui::print_json(&json!({ "cf": family.name(), "key": readable::show(family, &bytes), "value": value }))?;
            } else {
                outln!("{}", serde_json::to_string_pretty(&value)?)?;
            }
            Outcome::Ok
        }
        DbCommand::Stats { json, .. } => {
            let stats = blocking(ins, |i| Ok(i.stats()?)).await?;
            if json {
                ui::print_json(&stats)?;
            } else {
                print_stats(path, &stats)?;
            }
            Outcome::Ok
        }
        DbCommand::Backup { .. } | DbCommand::Alarm(_) => {
            unreachable!("run sends backups and alarms on before opening the store for inspection")
        }
        DbCommand::Compact { dest, json, .. } => {
            let bar = ui::progress(None, "copying keys", json);
            let b = bar.clone();
            let target = dest.clone();
            let (before, after) =
                blocking(ins, move |i| Ok(i.compact_into(&target, 10_000, |n| b.set_position(n))?)).await?;
            bar.finish_and_clear();
            let gain = before as f64 / after.max(1) as f64;
            if json {
                ui::print_json(&json!({
                    "source": path, "destination": dest, "before": before, "after": after, "gain": gain,
                }))?;
            } else {
                outln!("{before} -> {after} bytes (gain={gain:.2}x)")?;
            }
            Outcome::Ok
        }
    };
    Ok(outcome)
}

/// One key and its decoded value, as `dump` and `keys --values --json` give it.
fn entry_json(cf: Cf, key: &[u8], raw: &[u8]) -> anyhow::Result<serde_json::Value> {
    let value = brine_rocksdb::inspect::decode_json(cf, key, raw)?;
    Ok(json!({ "key": readable::show(cf, key), "value": with_times(value) }))
}

/// What `keys` prints, and how.
struct Listing {
    cf: Cf,
    json: bool,
    values: bool,
    count: bool,
}

impl Listing {
    /// Streams the listing to stdout; a closed stdout ends it quietly.
    fn run(&self, ins: &Inspector, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> anyhow::Result<()> {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let (mut n, mut failed) = (0usize, None);
        if self.json && !self.count {
            write!(out, "[").map_err(ui::stdout_error)?;
        }
        ins.scan(self.cf, prefix, after, |k, v| {
            if n >= limit {
                return false;
            }
            n += 1;
            if self.count {
                return true;
            }
            match self.line(&mut out, n, k, v) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        match (self.count, self.json) {
            (true, true) => writeln!(out, "{}", json!({ "count": n })),
            (true, false) => writeln!(out, "{n}"),
            (false, true) => writeln!(out, "]"),
            (false, false) => Ok(()),
        }
        .and_then(|()| out.flush())
        .map_err(ui::stdout_error)
    }

    fn line(&self, out: &mut impl Write, n: usize, key: &[u8], raw: &[u8]) -> anyhow::Result<()> {
        let sep = if n == 1 { "" } else { "," };
        let shown = readable::show(self.cf, key);
        let written = match (self.values, self.json) {
            (false, false) => writeln!(out, "{shown}"),
            (false, true) => write!(out, "{sep}{}", serde_json::to_string(&shown)?),
            (true, false) => {
                let value = with_times(brine_rocksdb::inspect::decode_json(self.cf, key, raw)?);
                writeln!(out, "{shown}\t{}", serde_json::to_string(&value)?)
            }
            (true, true) => write!(out, "{sep}{}", serde_json::to_string(&entry_json(self.cf, key, raw)?)?),
        };
        written.map_err(ui::stdout_error)
    }
}

/// `db get S executions JOB`: the executions of job `job` (an operator often has the
/// job id, not the execution id), or the not-found error when it has none.
async fn job_executions(ins: &Arc<Inspector>, job: &str, json: bool) -> anyhow::Result<Outcome> {
    let prefix = readable::parse(Cf::IdxExecutionsByJobId, &format!("{job}/"), true).ok();
    let job_name = job.to_owned();
    let found = blocking(ins, move |i| {
        let mut found = Vec::new();
        let Some(prefix) = prefix else { return Ok(found) };
        let mut ids = Vec::new();
        i.keys(Cf::IdxExecutionsByJobId, &prefix, |k| {
            ids.push(k[prefix.len()..].to_vec());
            true
        })?;
        for id in ids {
            if let Some(v) = i.get_json(Cf::Executions, &id)? {
                found.push(json!({ "key": readable::show(Cf::Executions, &id), "value": with_times(v) }));
            }
        }
        Ok(found)
    })
    .await?;
    if found.is_empty() {
        bail!("key not found: executions {job_name} (neither an execution id nor a job with executions)");
    }
    if json {
        ui::print_json(&json!({ "cf": "executions", "job_id": job_name, "executions": found }))?;
    } else {
        let values: Vec<&serde_json::Value> = found.iter().map(|f| &f["value"]).collect();
        outln!("{}", serde_json::to_string_pretty(&values)?)?;
    }
    Ok(Outcome::Ok)
}

fn print_stats(path: &std::path::Path, stats: &brine_rocksdb::inspect::StoreStats) -> anyhow::Result<()> {
    outln!("Statistics for {} ({} store), {} on disk", path.display(), stats.kind, ui::bytes(stats.disk_bytes))?;
    outln!(
        "{:<36} {:>10} {:>11} {:>11} {:>5} {:>11} {:>11}",
        "family",
        "keys",
        "data",
        "live est.",
        "ssts",
        "sst bytes",
        "memtable"
    )?;
    let (mut keys, mut data, mut ssts, mut sst_bytes) = (0, 0, 0, 0);
    for f in &stats.families {
        outln!(
            "{:<36} {:>10} {:>11} {:>11} {:>5} {:>11} {:>11}",
            f.name,
            f.keys,
            ui::bytes(f.logical_bytes),
            ui::bytes(f.live_data_bytes),
            f.sst_files,
            ui::bytes(f.sst_bytes),
            ui::bytes(f.memtable_bytes)
        )?;
        keys += f.keys;
        data += f.logical_bytes;
        ssts += f.sst_files;
        sst_bytes += f.sst_bytes;
    }
    outln!(
        "{:<36} {:>10} {:>11} {:>11} {:>5} {:>11}",
        format!("total ({} families)", stats.families.len()),
        keys,
        ui::bytes(data),
        "",
        ssts,
        ui::bytes(sst_bytes)
    )?;
    Ok(())
}
